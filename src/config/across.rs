//! Checks across rules: unique names, routes that would shadow each other,
//! keys two rules could both render, and keys that leave out a host when
//! the proxy serves several.

use super::check::Check;
use super::raw::{RawRule, Sp};
use crate::rules::{Rule, Var};

/// When some rules name a host, the proxy serves several: a caching rule
/// that matches any host and whose key leaves `{host}` out would serve one
/// host's answer for another's.
pub(super) fn host_warnings(c: &mut Check, rules: &[Rule], spans: &[&Sp<RawRule>]) {
    if rules.iter().all(|r| r.host.is_none()) {
        return;
    }
    for (r, at) in rules.iter().zip(spans) {
        if r.cache && r.host.is_none() && !r.key.uses(&Var::Host) {
            c.warn(
                *at,
                "key",
                format!(
                    "rule `{}` matches any host but its key `{}` leaves out {{host}}: \
                     two hosts' answers would share one entry",
                    r.name, r.key
                ),
            );
        }
    }
}

/// Names must be unique; two rules must not match the same requests on the
/// same path; two caching rules must not be able to render the same key.
pub(super) fn cross_rule_checks(c: &mut Check, rules: &[Rule], spans: &[&Sp<RawRule>]) {
    for (j, b) in rules.iter().enumerate() {
        for a in &rules[..j] {
            let at = spans[j];
            if a.name == b.name {
                c.error(at, "name", format!("rule name `{}` is used twice", b.name));
                continue;
            }
            let same_route = a.path == b.path
                && a.host == b.host
                && a.methods.iter().any(|m| b.methods.contains(m));
            if same_route {
                c.error(at, "match", format!("rule `{}` matches the same path, host and methods as `{}` before it, so it would never be used", b.name, a.name));
                continue;
            }
            if !(a.cache && b.cache) {
                continue;
            }
            // One key template over `{path}` keeps rules on different paths
            // apart; on the same path only `{host}` can (with other hosts).
            let shared_url_key = a.key == b.key
                && a.key.uses(&Var::Path)
                && (a.path != b.path || (a.key.uses(&Var::Host) && a.host != b.host));
            if !shared_url_key && a.key.may_overlap(&b.key) {
                c.error(at, "key", format!("key `{}` of rule `{}` can render the same key as `{}` of rule `{}`; give each rule its own key prefix", b.key, b.name, a.key, a.name));
            }
        }
    }
}
