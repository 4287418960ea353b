//! `redis:` and `regions:`: where the shared tier is (one server or a
//! cluster's seed nodes, with TLS), and the other regions' Redis.

use super::check::Check;
use super::raw::{RawConfig, RawRedis, RawRegionRedis, Sp};
use super::*;

/// `redis:`: one server's `url` or a `cluster`'s seed nodes, and the
/// settings both share.
pub(super) fn redis(c: &mut Check, r: &Sp<RawRedis>) -> Option<RedisConfig> {
    redis_at(c, &r.value, r, "redis")
}

/// `region:` and `regions:`: each other region's Redis, with this
/// region's own Redis to record purges in first.
pub(super) fn regions(
    c: &mut Check,
    raw: &RawConfig,
    local: Option<&RedisConfig>,
) -> Option<Regions> {
    let Some(list) = &raw.regions else {
        if let Some(r) = &raw.region {
            c.warn(
                r,
                "region",
                "no `regions:` are listed: purges stay in this region",
            );
        }
        return None;
    };
    let Some(here) = &raw.region else {
        c.error(
            list,
            "regions",
            "needs `region:`, the name of this replica's own region",
        );
        return None;
    };
    let here_ok = region_name(c, here, here.value.trim(), "region");
    if raw.redis.is_none() {
        c.error(
            list,
            "regions",
            "needs `redis:`: a purge is recorded in this region's Redis before it is relayed",
        );
        return None;
    }
    let local = local?;
    let mut others = Vec::with_capacity(list.value.len());
    for (name, region) in &list.value {
        let at = format!("regions.{name}");
        if !region_name(c, region, name, &at) {
            continue;
        }
        if name == here.value.trim() {
            c.error(
                region,
                &at,
                "names this replica's own region: list only the other regions",
            );
            continue;
        }
        let field = format!("{at}.redis");
        let redis = match &region.value.redis.value {
            RawRegionRedis::Url(url) => {
                let Some(url) = url_or_error(c, url, &region.value.redis, &field) else {
                    continue;
                };
                RedisConfig {
                    servers: RedisServers::Url(url),
                    key_prefix: local.key_prefix.clone(),
                    timeout: DEFAULT_REGION_TIMEOUT,
                    disconnect_grace: local.disconnect_grace,
                    ca: None,
                }
            }
            RawRegionRedis::Map(map) => {
                let Some(mut r) = redis_at(c, map, &region.value.redis, &field) else {
                    continue;
                };
                if map.key_prefix.is_none() {
                    r.key_prefix.clone_from(&local.key_prefix);
                }
                if map.timeout.is_none() {
                    r.timeout = DEFAULT_REGION_TIMEOUT;
                }
                if let Some(g) = &map.disconnect_grace {
                    c.warn(
                        g,
                        &format!("{field}.disconnect_grace"),
                        "applies to this region's own Redis only; ignored here",
                    );
                }
                r
            }
        };
        if let RedisServers::Url(u) = &redis.servers
            && u.starts_with("redis+unix")
        {
            c.error(
                &region.value.redis,
                &field,
                "another region is reached over TCP: redis://host:port or rediss://host:port",
            );
            continue;
        }
        if redis.servers == local.servers {
            c.error(
                &region.value.redis,
                &field,
                "is this region's own Redis (`redis:`): give the other region's",
            );
            continue;
        }
        others.push(Region {
            name: name.clone(),
            redis,
        });
    }
    if others.is_empty() && list.value.is_empty() {
        c.warn(
            list,
            "regions",
            "lists no region: purges stay in this region",
        );
    }
    here_ok.then(|| Regions {
        here: here.value.trim().to_owned(),
        others,
    })
}

/// A `redis:` map found at `at` (`redis`, `regions.us.redis`).
pub(super) fn redis_at<T>(
    c: &mut Check,
    raw: &RawRedis,
    r: &Sp<T>,
    at: &str,
) -> Option<RedisConfig> {
    let field = |f: &str| format!("{at}.{f}");
    let servers = match (&raw.url, &raw.cluster) {
        (Some(url), None) => {
            let url = url_or_error(c, &url.value, url, &field("url"))?;
            RedisServers::Url(url)
        }
        (None, Some(seeds)) => {
            if seeds.value.is_empty() {
                c.error(seeds, &field("cluster"), "lists no node: give at least one");
                return None;
            }
            let mut urls = Vec::with_capacity(seeds.value.len());
            for seed in &seeds.value {
                let url = url_or_error(c, &seed.value, seed, &field("cluster"))?;
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    c.error(
                        seed,
                        &field("cluster"),
                        "a cluster node is reached over TCP: redis://host:port or rediss://host:port",
                    );
                    return None;
                }
                urls.push(url);
            }
            if urls.iter().any(|u| u.starts_with("rediss://"))
                && !urls.iter().all(|u| u.starts_with("rediss://"))
            {
                c.error(
                    seeds,
                    &field("cluster"),
                    "mixes rediss:// and redis://: a cluster's nodes speak TLS or none do",
                );
                return None;
            }
            RedisServers::Cluster(urls)
        }
        (Some(url), Some(_)) => {
            c.error(
                url,
                &field("url"),
                "give `url` (one server) or `cluster` (its nodes), not both",
            );
            return None;
        }
        (None, None) => {
            c.error(
                r,
                at,
                "needs `url` (one server) or `cluster` (a Redis Cluster's nodes)",
            );
            return None;
        }
    };
    let cluster = matches!(servers, RedisServers::Cluster(_));
    let key_prefix = raw
        .key_prefix
        .as_ref()
        .map_or(DEFAULT_KEY_PREFIX.to_owned(), |p| {
            // An empty prefix would let a prefix purge reach every key of
            // the database, other applications' included.
            if p.value.is_empty() || p.value.contains('#') {
                c.error(
                    p,
                    &field("key_prefix"),
                    "must not be empty or hold `#`: sidecache's keys must be told apart from others'",
                );
            }
            // Braces in the prefix would decide every key's cluster slot.
            if cluster && p.value.contains(['{', '}']) {
                c.error(
                    p,
                    &field("key_prefix"),
                    "must not hold `{` or `}` on a cluster: they would put every key in one slot",
                );
            }
            p.value.clone()
        });
    let ca = raw
        .ca
        .as_ref()
        .and_then(|ca| redis_ca(c, ca, servers.tls(), &field("ca")));
    Some(RedisConfig {
        servers,
        key_prefix,
        timeout: raw
            .timeout
            .as_ref()
            .and_then(|t| c.positive(t, &field("timeout")))
            .unwrap_or(DEFAULT_REDIS_TIMEOUT),
        disconnect_grace: raw
            .disconnect_grace
            .as_ref()
            .and_then(|t| c.duration(t, &field("disconnect_grace")))
            .unwrap_or(DEFAULT_DISCONNECT_GRACE),
        ca,
    })
}

/// A region's name: what metrics and `/readyz` label it with.
pub(super) fn region_name(
    c: &mut Check,
    at: &Sp<impl std::fmt::Debug>,
    name: &str,
    field: &str,
) -> bool {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
    if !fine {
        c.error(
            at,
            field,
            format!("`{name}` is not a region name: letters, digits, `-` and `_`, at most 64"),
        );
    }
    fine
}

/// A Redis URL the client accepts, trimmed.
pub(super) fn url_or_error<T>(c: &mut Check, url: &str, at: &Sp<T>, field: &str) -> Option<String> {
    let trimmed = url.trim();
    match redis::Client::open(trimmed) {
        Ok(_) => Some(trimmed.to_owned()),
        Err(e) => {
            c.error(at, field, format!("not a Redis URL: {e}"));
            None
        }
    }
}

/// `redis.ca`: a readable PEM file holding at least one certificate, for a
/// `rediss://` URL.
pub(super) fn redis_ca(c: &mut Check, ca: &Sp<String>, tls: bool, field: &str) -> Option<Vec<u8>> {
    if !tls {
        c.error(ca, field, "only a rediss:// URL uses TLS");
        return None;
    }
    let pem = match std::fs::read(ca.value.trim()) {
        Ok(pem) => pem,
        Err(e) => {
            c.error(ca, field, format!("cannot read `{}`: {e}", ca.value));
            return None;
        }
    };
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .filter(Result::is_ok)
        .count();
    if certs == 0 {
        c.error(ca, field, "holds no PEM certificate");
        return None;
    }
    Some(pem)
}
