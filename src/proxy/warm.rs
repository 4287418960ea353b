//! Warming: a starting replica's warm-up ([`Proxy::warm_up`]: the keys
//! hottest across replicas copied from L2, `memory.warm.from: hot`, then
//! the URL list fetched through the pipeline, `memory.warm.urls`), and
//! `warm_on`.
//!
//! `warm_on`: after a 2xx answer to a write that a rule's `warm_on`
//! matches, the target it names (rendered from the write, as trigger
//! templates are) is fetched through the whole pipeline in the background,
//! as a GET from the same client: it is stored under the rule's key, tier
//! and TTL exactly as that client's own GET would be, and joins a fetch of
//! the same key already in flight. It carries the write's cookies or
//! `Authorization` only where the entry says `forward`. At most
//! `limits.warm_in_flight` run at once; more are dropped and counted.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Empty};

use super::Proxy;
use crate::cache::Tier;
use crate::cache::hot::Hotness;
use crate::cache::tiered::Warmed;
use crate::config::WarmUp;
use crate::metrics;
use crate::rules::{Bodies, RequestView, Rule, RuleSet, Snapshot};

/// The `warm_on` entries one write matched.
pub(super) struct Warms {
    matched: Vec<(Arc<Rule>, usize, Snapshot)>,
}

impl Warms {
    /// The entries of `rules` the write `view` matches.
    pub(super) fn of(rules: &RuleSet, view: &RequestView<'_>) -> Self {
        Self {
            matched: rules
                .warmed(view.method, view.path)
                .into_iter()
                .map(|(m, i)| (m.rule.clone(), i, Snapshot::of(view, &m.params)))
                .collect(),
        }
    }

    /// Whether a target reads the write's JSON body.
    pub(super) fn reads_request(&self) -> bool {
        self.matched
            .iter()
            .any(|(r, i, _)| r.warm_on[*i].target.reads_request())
    }

    /// Whether a target reads the answer's JSON body.
    pub(super) fn reads_body(&self) -> bool {
        self.matched
            .iter()
            .any(|(r, i, _)| r.warm_on[*i].target.reads_body())
    }

    /// The GETs to make, each with its rule's name.
    fn requests(&self, bodies: Bodies<'_>) -> Vec<(String, Request<Empty<Bytes>>)> {
        let mut out = Vec::new();
        for (rule, i, snap) in &self.matched {
            let warm = &rule.warm_on[*i];
            let Some(path) = snap.render(&[&warm.target], bodies).pop() else {
                // A value it names is missing from the write or its answer.
                continue;
            };
            let mut req = Request::new(Empty::new());
            *req.method_mut() = Method::GET;
            let Ok(uri) = path.parse() else {
                continue;
            };
            *req.uri_mut() = uri;
            let headers = req.headers_mut();
            if let Ok(host) = HeaderValue::from_str(snap.host()) {
                headers.insert(header::HOST, host);
            }
            let from = snap.headers();
            let carried = [
                (warm.forward_cookie, header::COOKIE),
                (warm.forward_authorization, header::AUTHORIZATION),
            ];
            for (on, name) in carried {
                if on {
                    for v in from.get_all(&name) {
                        headers.append(name.clone(), v.clone());
                    }
                }
            }
            out.push((rule.name.clone(), req));
        }
        out
    }
}

impl Proxy {
    /// Starts the warm fetches of `warms` in the background, as GETs from
    /// `client`; the ones over `limits.warm_in_flight` are dropped.
    pub(super) fn warm(self: &Arc<Self>, warms: &Warms, bodies: Bodies<'_>, client: IpAddr) {
        for (rule, req) in warms.requests(bodies) {
            let Ok(permit) = self.warm_permits.clone().try_acquire_owned() else {
                ::metrics::counter!(metrics::WARMS, "rule" => rule, "result" => "dropped")
                    .increment(1);
                continue;
            };
            let this = self.clone();
            crate::metrics::spawn(async move {
                let res = this.handle(req, client).await;
                let ok = res.status().is_success();
                // Reading the body to its end is what stores it.
                let read = res.into_body().collect().await.is_ok();
                let result = if ok && read { "fetched" } else { "failed" };
                ::metrics::counter!(metrics::WARMS, "rule" => rule, "result" => result)
                    .increment(1);
                drop(permit);
            });
        }
    }
}

/// Warm-up fetches in flight at once.
const WARM_UP_AT_ONCE: usize = 8;

/// Hot keys copied from L2 at once (their reads go to Redis together).
const HOT_AT_ONCE: usize = 64;

impl Proxy {
    /// The warm-up of a starting replica (`from_hot`) or of a reload: the
    /// hottest keys across replicas copied from L2 (on start only), then
    /// the URL list. Counted in `sidecache_warmup_total` as it goes; its
    /// time in `sidecache_warmup_seconds`.
    pub async fn warm_up(self: &Arc<Self>, warm: &WarmUp, from_hot: bool) {
        let start = std::time::Instant::now();
        if from_hot && let (Some(top), Some(redis)) = (warm.hot, &self.redis) {
            self.warm_hot(redis, top).await;
        }
        let (fetched, failed) = self.warm_urls(&warm.urls).await;
        ::metrics::gauge!(metrics::WARMUP_SECONDS).set(start.elapsed().as_secs_f64());
        tracing::info!(fetched, failed, took = ?start.elapsed(), "warm-up done");
    }

    /// Copies the `top` keys hottest across replicas (of the rules now in
    /// effect that use both tiers) from L2 into L1, hottest first; answers
    /// how many were copied.
    async fn warm_hot(self: &Arc<Self>, redis: &crate::redis::Redis, top: usize) -> usize {
        let config = self.config();
        let rules: Vec<String> = config
            .rules
            .rules()
            .iter()
            .filter(|r| r.cache && r.tier == Tier::Both)
            .map(|r| r.name.clone())
            .collect();
        let hot = match Hotness::read(redis, &rules, top).await {
            Ok(hot) => hot,
            Err(e) => {
                tracing::warn!(error = %e, "hot keys not read from redis; warming from them skipped");
                ::metrics::counter!(metrics::WARMUP, "source" => "hot", "result" => "failed")
                    .increment(1);
                return 0;
            }
        };
        let mut copied = 0;
        for chunk in hot.chunks(HOT_AT_ONCE) {
            let each = chunk
                .iter()
                .map(|h| self.cache.warm_l1(&h.key, &*self.invalidator));
            for warmed in futures_util::future::join_all(each).await {
                copied += usize::from(warmed == Warmed::Copied);
                let result = warmed.as_str();
                ::metrics::counter!(metrics::WARMUP, "source" => "hot", "result" => result)
                    .increment(1);
            }
        }
        tracing::info!(copied, of = hot.len(), "hot keys copied into memory");
        copied
    }

    /// Fetches each of `urls` (absolute URLs, or paths asked of `localhost`)
    /// through the pipeline, [`WARM_UP_AT_ONCE`] at a time, so each is
    /// stored as a client's GET would be; answers how many were fetched and
    /// how many failed.
    async fn warm_urls(self: &Arc<Self>, urls: &[String]) -> (usize, usize) {
        let (mut fetched, mut failed) = (0, 0);
        for chunk in urls.chunks(WARM_UP_AT_ONCE) {
            let each: Vec<_> = chunk.iter().map(|u| self.warm_one(u)).collect();
            for ok in futures_util::future::join_all(each).await {
                let result = if ok { "fetched" } else { "failed" };
                ::metrics::counter!(metrics::WARMUP, "source" => "urls", "result" => result)
                    .increment(1);
                if ok {
                    fetched += 1;
                } else {
                    failed += 1;
                }
            }
        }
        (fetched, failed)
    }

    /// One warm-up GET; whether it was answered 2xx and read whole.
    async fn warm_one(self: &Arc<Self>, url: &str) -> bool {
        let Ok(uri) = url.parse::<http::Uri>() else {
            return false;
        };
        let mut req = Request::new(Empty::<Bytes>::new());
        // A bare path is asked of `localhost`: list whole URLs where rules
        // or keys depend on the host.
        let host = uri.authority().map_or("localhost", |a| a.host());
        let Ok(host) = HeaderValue::from_str(host) else {
            return false;
        };
        req.headers_mut().insert(header::HOST, host);
        let Ok(path) = uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str)
            .parse::<http::Uri>()
        else {
            return false;
        };
        *req.uri_mut() = path;
        let res = self.handle(req, IpAddr::from([127, 0, 0, 1])).await;
        let ok = res.status().is_success();
        ok && res.into_body().collect().await.is_ok()
    }
}
