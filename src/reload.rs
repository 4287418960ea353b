//! Hot reload: SIGHUP, `POST /reload` and a change in the config file's
//! folder (Kubernetes swaps a ConfigMap by replacing a symlink there) read
//! the file again. A config that does not validate is refused, its errors
//! logged with line and column, and the old one keeps serving. A valid one
//! is swapped in whole: requests already running finish on the snapshot
//! they started with.
//!
//! Rules, the admin token and everything under them take effect at once.
//! Listen addresses, `upstream`, `memory` (but `memory.warm`, whose list is
//! fetched again), `limits`, `redis`, `region`, `regions` and
//! `invalidation` take effect on restart;
//! the report says when the new file changes them. L1 entries survive for
//! rules whose key template and tier are unchanged; those of other rules
//! are dropped (by the template's literal prefix, or all of L1 when the
//! template starts with a placeholder).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::proxy::Proxy;

/// How long a burst of file events is let settle before reading the file.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// What a successful reload did.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Rules now in effect.
    pub rules: usize,
    /// Sections the new file changes that take effect on restart only.
    pub not_applied: Vec<String>,
    /// Warnings the new file raised.
    pub warnings: Vec<String>,
}

/// Reads the config file again and puts it in effect if it validates.
pub async fn reload(proxy: &Arc<Proxy>) -> Result<Report, ConfigError> {
    // One reload at a time, so an older file never replaces a newer one.
    static RELOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = RELOADING.lock().await;
    let old = proxy.config();
    let loaded = match Config::load(&old.source) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("config reload refused; the old config keeps serving:\n{e}");
            metrics::counter!(crate::metrics::RELOADS, "result" => "failed").increment(1);
            return Err(e);
        }
    };
    let warnings = loaded
        .warnings
        .iter()
        .map(|w| w.display(&old.source).to_string())
        .collect();
    let mut new = loaded.config;
    let mut not_applied = Vec::new();
    let mut listens = (new.listen, new.admin.listen);
    keep_old(
        &mut not_applied,
        "listen, admin.listen",
        &mut listens,
        &(old.listen, old.admin.listen),
    );
    (new.listen, new.admin.listen) = listens;
    keep_old(
        &mut not_applied,
        "upstream",
        &mut new.upstream,
        &old.upstream,
    );
    // The warm-up list applies at once (it is fetched again below); the
    // L1 bounds on restart.
    let mut bounds = (new.memory.max_size, new.memory.max_object_size);
    keep_old(
        &mut not_applied,
        "memory",
        &mut bounds,
        &(old.memory.max_size, old.memory.max_object_size),
    );
    (new.memory.max_size, new.memory.max_object_size) = bounds;
    keep_old(&mut not_applied, "limits", &mut new.limits, &old.limits);
    keep_old(&mut not_applied, "redis", &mut new.redis, &old.redis);
    keep_old(
        &mut not_applied,
        "region, regions",
        &mut new.regions,
        &old.regions,
    );
    keep_old(
        &mut not_applied,
        "invalidation",
        &mut new.invalidation,
        &old.invalidation,
    );
    let rules = new.rules.rules().len();
    let new = Arc::new(new);
    proxy.swap_config(new.clone());
    // After the swap, so requests on the old rules cannot refill what goes.
    let cache = proxy.cache();
    for rule in old.rules.rules() {
        let kept = new
            .rules
            .rules()
            .iter()
            .any(|n| n.key == rule.key && n.tier == rule.tier);
        if kept || !rule.cache {
            continue;
        }
        match rule.key.literal_prefix() {
            "" => {
                cache.clear_l1();
                break;
            }
            prefix => {
                cache.evict_prefix(prefix).await;
            }
        }
    }
    if let Some(warm) = &new.memory.warm {
        let (proxy, warm) = (proxy.clone(), warm.clone());
        crate::metrics::spawn(async move { proxy.warm_up(&warm, false).await });
    }
    tracing::info!(rules, ?not_applied, "config reloaded");
    metrics::counter!(crate::metrics::RELOADS, "result" => "ok").increment(1);
    Ok(Report {
        rules,
        not_applied,
        warnings,
    })
}

/// A section that applies only on restart: when the new file changes it,
/// the old value stays and the section is reported as not applied.
fn keep_old<T: PartialEq + Clone>(not_applied: &mut Vec<String>, name: &str, new: &mut T, old: &T) {
    if new != old {
        not_applied.push(name.to_owned());
        *new = old.clone();
    }
}

/// Reloads on every SIGHUP until `shutdown`.
pub async fn on_sighup(proxy: Arc<Proxy>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload with POST /reload");
            return;
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    let _ = reload(&proxy).await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (proxy, shutdown);
    }
}

/// Watches the config file's folder and reloads when the file's content
/// changes, until `shutdown`.
pub async fn watch(proxy: Arc<Proxy>, shutdown: CancellationToken) {
    use notify::Watcher as _;
    let source: PathBuf = proxy.config().source.clone();
    let folder = match source.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    // notify calls back on its own thread; a full channel just means a
    // reload is already pending.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config; reload with SIGHUP or POST /reload");
            return;
        }
    };
    if let Err(e) = watcher.watch(&folder, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(folder = %folder.display(), error = %e, "cannot watch the config folder; reload with SIGHUP or POST /reload");
        return;
    }
    let mut last = std::fs::read(&source).ok();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            got = rx.recv() => if got.is_none() { return },
        }
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        let now = std::fs::read(&source).ok();
        if now.is_some() && now != last {
            last = now;
            let _ = reload(&proxy).await;
        }
    }
}
