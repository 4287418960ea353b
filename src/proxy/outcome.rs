//! What became of a request, as one value: every step of the pipeline
//! returns its response together with its [`Outcome`], and
//! [`Proxy::handle`](super::Proxy::handle) renders it once, as the
//! `Cache-Status` header (RFC 9211), the `outcome` metric label and the
//! log field. Each variant carries exactly what its header says, so a
//! state such as "a 502 served as a stale hit" cannot be written down.
//!
//! Longer than most files because every outcome and its rendering are
//! kept side by side (a third of it is their tests): a new outcome is
//! added in one place.

use std::fmt::Write as _;

use bytes::Bytes;
use http::HeaderValue;
use http::header::HeaderName;

use super::storable::NoStore;
use super::upstream::UpstreamError;
use crate::cache::Layer;
use crate::metrics::Label;
use crate::offload::Served;
use crate::rules::KeyRefusal;

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from a fresh entry.
    Hit {
        /// The layer it came from.
        layer: Layer,
        /// Freshness left, in seconds.
        ttl: i64,
    },
    /// Answered from an expired entry.
    Stale {
        /// Which window allowed it.
        why: Stale,
        /// Freshness left, in seconds (negative).
        ttl: i64,
    },
    /// Answered with the entry another request fetched.
    Collapsed {
        /// Why the cache went forward.
        fwd: Fwd,
        /// Freshness left, in seconds.
        ttl: i64,
    },
    /// A stale entry the backend confirmed with a 304, answered from the
    /// entry without the body crossing the wire again.
    Revalidated {
        /// Freshness left, in seconds.
        ttl: i64,
        /// Whether the refreshed entry is kept.
        stored: Stored,
    },
    /// Fetched from the backend under a rule.
    Miss {
        /// Why the cache went forward.
        fwd: Fwd,
        /// The backend's status.
        status: u16,
        /// Whether the answer is kept.
        stored: Stored,
    },
    /// Forwarded without the cache.
    Pass {
        /// Why.
        why: Pass,
        /// The backend's status.
        status: u16,
    },
    /// The backend gave no usable answer.
    Error {
        /// Why the cache went forward.
        fwd: Fwd,
        /// The backend's status, when it sent one that could not be used.
        status: Option<u16>,
    },
    /// Refused before it reached the backend.
    Rejected(Rejected),
    /// Refused by the rule's rate limit (429).
    RateLimited,
    /// A `PURGE` request, answered by the proxy itself.
    Purge,
}

/// Which stale window an expired entry was answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// `stale-while-revalidate`: one background request refreshes it.
    Revalidating,
    /// `stale-if-error`: the backend failed, with this status if it sent one.
    IfError(Option<u16>),
}

/// Whether an answer from the backend is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Kept, fresh for this many more seconds.
    Yes {
        /// Freshness left, in seconds.
        ttl: i64,
    },
    /// Not kept, for this reason.
    No(NoStore),
}

/// Why a request was forwarded without the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// No rule matches it.
    NoRule,
    /// Its rule says `cache: false`.
    Rule,
    /// It carries `Authorization` and the rule does not allow it.
    Authorization,
    /// Its key cannot be rendered exactly.
    Key(KeyRefusal),
    /// A Range request the cache could not answer itself.
    Range(Fwd),
    /// A write (any method but GET and HEAD); whether a purge it made
    /// waits for Redis in the outbox (other replicas do not know of it yet).
    Write {
        /// The purge is pending.
        purge_pending: bool,
    },
    /// Outside its rule's `rollout` share.
    Rollout,
    /// It carries a cookie or header its rule's `pass_if` names.
    PassIf,
}

/// Why a request was refused before the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// It could not be read safely (see `headers::sanitize_request`).
    BadRequest,
    /// Its body went over a limit.
    BodyTooLarge,
    /// Its body stalled or was broken.
    ClientBody,
    /// Too many requests already wait on the backend.
    BackendBusy,
}

/// Why the cache went to the backend (RFC 9211 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// No rule, or a rule with `cache: false`.
    Bypass,
    /// The method is not answered from cache.
    Method,
    /// Nothing stored under the key.
    UriMiss,
    /// Something stored, but not for this request's varied headers.
    VaryMiss,
    /// Stored, but stale.
    Stale,
    /// The request asked for a forward (e.g. carried Authorization).
    Request,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
        }
    }
}

impl Outcome {
    /// Why the backend's answer was not stored, when it was fetched and
    /// refused.
    pub fn not_stored(&self) -> Option<NoStore> {
        match self {
            Outcome::Miss {
                stored: Stored::No(why),
                ..
            }
            | Outcome::Revalidated {
                stored: Stored::No(why),
                ..
            } => Some(*why),
            _ => None,
        }
    }
}

impl Pass {
    /// The RFC 9211 `fwd` it reports.
    pub fn fwd(self) -> Fwd {
        match self {
            Pass::NoRule | Pass::Rule | Pass::Key(_) | Pass::Rollout => Fwd::Bypass,
            Pass::Authorization | Pass::PassIf => Fwd::Request,
            Pass::Range(fwd) => fwd,
            Pass::Write { .. } => Fwd::Method,
        }
    }

    /// The `Cache-Status` detail (none for a write).
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Pass::NoRule => "no-rule",
            Pass::Rule => "rule",
            Pass::Authorization => "authorization",
            Pass::Key(why) => why.as_str(),
            Pass::Range(_) => "range",
            Pass::Rollout => "rollout",
            Pass::PassIf => "pass-if",
            Pass::Write { .. } => return None,
        })
    }

    /// The `Cache-Status` detail: [`Pass::as_str`], or `purge-pending` for
    /// a write whose purge waits for Redis.
    pub fn detail(self) -> Option<&'static str> {
        match self {
            Pass::Write {
                purge_pending: true,
            } => Some("purge-pending"),
            other => other.as_str(),
        }
    }
}

impl Rejected {
    /// The `Cache-Status` detail and the `reason` of `sidecache_rejected_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::BadRequest => "bad-request",
            Rejected::BodyTooLarge => "body-too-large",
            Rejected::ClientBody => "client-body",
            Rejected::BackendBusy => "backend-busy",
        }
    }
}

/// `Cache-Status` detail of an answer the backend never gave.
const UPSTREAM_ERROR: &str = "upstream-error";

impl Outcome {
    /// The outcome of a request the backend gave no answer: the proxy's
    /// own refusals (busy backend, a client body over the limit or
    /// broken) are rejections, the rest backend errors.
    pub fn no_answer(e: &UpstreamError, fwd: Fwd) -> Outcome {
        match e {
            UpstreamError::Overloaded => Outcome::Rejected(Rejected::BackendBusy),
            UpstreamError::BodyTooLarge => Outcome::Rejected(Rejected::BodyTooLarge),
            UpstreamError::ClientStalled(_) | UpstreamError::ClientBody(_) => {
                Outcome::Rejected(Rejected::ClientBody)
            }
            UpstreamError::Connect(_) | UpstreamError::Timeout(_) | UpstreamError::Broken(_) => {
                Outcome::Error { fwd, status: None }
            }
        }
    }

    /// How the offload report counts it.
    pub fn served(self) -> Served {
        match self {
            Outcome::Hit { .. }
            | Outcome::Collapsed { .. }
            | Outcome::Stale {
                why: Stale::Revalidating,
                ..
            } => Served::FromCache,
            Outcome::Revalidated { .. } => Served::Revalidated,
            Outcome::Miss { .. } => Served::Miss,
            Outcome::Stale {
                why: Stale::IfError(_),
                ..
            }
            | Outcome::Pass { .. }
            | Outcome::Error { .. }
            | Outcome::Rejected(_)
            | Outcome::RateLimited
            | Outcome::Purge => Served::Other,
        }
    }

    /// The `outcome` label of metrics and logs.
    pub fn label(self) -> Label {
        match self {
            Outcome::Hit {
                layer: Layer::Memory,
                ..
            } => Label::HitMemory,
            Outcome::Hit {
                layer: Layer::Redis,
                ..
            } => Label::HitRedis,
            Outcome::Stale { .. } => Label::Stale,
            Outcome::Collapsed { .. } => Label::Collapsed,
            Outcome::Revalidated { .. } => Label::Revalidated,
            Outcome::Miss { .. } => Label::Miss,
            Outcome::Pass { .. } => Label::Pass,
            Outcome::Error { .. } => Label::Error,
            Outcome::Rejected(_) => Label::Rejected,
            Outcome::RateLimited => Label::RateLimited,
            Outcome::Purge => Label::Purge,
        }
    }

    /// The `Cache-Status` value, in RFC 9211 order.
    pub fn cache_status(self) -> HeaderValue {
        let mut s = Parts::default();
        match self {
            Outcome::Hit { layer, ttl } => {
                s.hit = true;
                s.ttl = Some(ttl);
                s.detail = Some(layer.as_str());
            }
            Outcome::Stale { why, ttl } => {
                s.hit = true;
                s.fwd = Some(Fwd::Stale);
                s.ttl = Some(ttl);
                s.detail = Some(match why {
                    Stale::Revalidating => "revalidating",
                    Stale::IfError(status) => {
                        s.fwd_status = status;
                        "stale-if-error"
                    }
                });
            }
            Outcome::Collapsed { fwd, ttl } => {
                s.fwd = Some(fwd);
                s.collapsed = true;
                s.ttl = Some(ttl);
            }
            Outcome::Revalidated { ttl, stored } => {
                s.fwd = Some(Fwd::Stale);
                s.fwd_status = Some(304);
                s.stored(stored);
                s.ttl = Some(ttl);
            }
            Outcome::Miss {
                fwd,
                status,
                stored,
            } => {
                s.fwd = Some(fwd);
                s.fwd_status = Some(status);
                s.stored(stored);
            }
            Outcome::Pass { why, status } => {
                s.fwd = Some(why.fwd());
                s.fwd_status = Some(status);
                s.detail = why.detail();
            }
            Outcome::Error { fwd, status } => {
                s.fwd = Some(fwd);
                s.fwd_status = status;
                s.detail = Some(UPSTREAM_ERROR);
            }
            Outcome::Rejected(why) => s.detail = Some(why.as_str()),
            Outcome::RateLimited => s.detail = Some("rate-limited"),
            Outcome::Purge => s.detail = Some("purge"),
        }
        s.render()
    }
}

/// The fields of one `Cache-Status` entry.
#[derive(Default)]
struct Parts {
    hit: bool,
    fwd: Option<Fwd>,
    fwd_status: Option<u16>,
    stored: bool,
    collapsed: bool,
    ttl: Option<i64>,
    detail: Option<&'static str>,
}

impl Parts {
    fn stored(&mut self, stored: Stored) {
        match stored {
            Stored::Yes { ttl } => {
                self.stored = true;
                self.ttl = self.ttl.or(Some(ttl));
            }
            Stored::No(why) => self.detail = Some(why.as_str()),
        }
    }

    fn render(&self) -> HeaderValue {
        // Room for the longest combination, so the string never regrows.
        let mut s = String::with_capacity(96);
        s.push_str("sidecache");
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            let _ = write!(s, "; fwd={}", f.as_str());
        }
        if let Some(code) = self.fwd_status {
            let _ = write!(s, "; fwd-status={code}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(t) = self.ttl {
            let _ = write!(s, "; ttl={t}");
        }
        if let Some(d) = self.detail {
            let _ = write!(s, "; detail={d}");
        }
        // Handed over without a copy; only ASCII was written.
        HeaderValue::from_maybe_shared(Bytes::from(s))
            .unwrap_or(HeaderValue::from_static("sidecache"))
    }
}

/// The `Cache-Status` header name.
pub fn cache_status_name() -> HeaderName {
    HeaderName::from_static("cache-status")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cache-Status renders in RFC 9211 order, each outcome with its detail.
    #[test]
    fn cache_status_text() {
        let cases = [
            (
                Outcome::Miss {
                    fwd: Fwd::UriMiss,
                    status: 200,
                    stored: Stored::Yes { ttl: 60 },
                },
                "sidecache; fwd=uri-miss; fwd-status=200; stored; ttl=60",
            ),
            (
                Outcome::Hit {
                    layer: Layer::Memory,
                    ttl: 5,
                },
                "sidecache; hit; ttl=5; detail=memory",
            ),
            (
                Outcome::Stale {
                    why: Stale::IfError(Some(503)),
                    ttl: -3,
                },
                "sidecache; hit; fwd=stale; fwd-status=503; ttl=-3; detail=stale-if-error",
            ),
            (
                Outcome::Pass {
                    why: Pass::NoRule,
                    status: 201,
                },
                "sidecache; fwd=bypass; fwd-status=201; detail=no-rule",
            ),
            (
                Outcome::Pass {
                    why: Pass::Write {
                        purge_pending: false,
                    },
                    status: 204,
                },
                "sidecache; fwd=method; fwd-status=204",
            ),
            (
                Outcome::Miss {
                    fwd: Fwd::Stale,
                    status: 200,
                    stored: Stored::No(NoStore::Private),
                },
                "sidecache; fwd=stale; fwd-status=200; detail=private",
            ),
            (
                Outcome::Error {
                    fwd: Fwd::UriMiss,
                    status: None,
                },
                "sidecache; fwd=uri-miss; detail=upstream-error",
            ),
            (Outcome::RateLimited, "sidecache; detail=rate-limited"),
        ];
        for (outcome, text) in cases {
            assert_eq!(outcome.cache_status(), text, "{outcome:?}");
        }
    }

    /// Each outcome counts under its own label.
    #[test]
    fn labels() {
        let redis = Outcome::Hit {
            layer: Layer::Redis,
            ttl: 1,
        };
        assert_eq!(redis.label(), Label::HitRedis);
        assert_eq!(
            Outcome::Rejected(Rejected::BodyTooLarge).label(),
            Label::Rejected
        );
        assert_eq!(Outcome::Purge.label(), Label::Purge);
        assert_eq!(
            Outcome::Revalidated {
                ttl: 1,
                stored: Stored::Yes { ttl: 1 }
            }
            .label(),
            Label::Revalidated
        );
    }
}
