//! The checker every validation step reports to: errors and warnings
//! collected with their place in the file, and the readers of durations,
//! sizes, addresses and choices, which check bounds as they read.

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::Sp;
use super::{Pos, Problem};

/// The longest duration any field takes: ten years.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The largest count any field takes (connections, concurrency, queue).
pub(super) const MAX_COUNT: u64 = 1_000_000;

/// Collects problems while walking the file.
#[derive(Default)]
pub(super) struct Check {
    pub(super) errors: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

fn pos<T>(sp: &Sp<T>) -> Option<Pos> {
    Some(Pos {
        line: sp.referenced.line(),
        column: sp.referenced.column(),
    })
}

impl Check {
    pub(super) fn error<T>(&mut self, at: &Sp<T>, field: &str, message: impl Into<String>) {
        self.errors.push(Problem {
            pos: pos(at),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn warn<T>(&mut self, at: &Sp<T>, field: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            pos: pos(at),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// The value `v` names among `choices`; otherwise an error listing them.
    pub(super) fn choice<T: Copy>(
        &mut self,
        v: &Sp<String>,
        field: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == v.value) {
            return Some(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let hint = match names.as_slice() {
            [only] => format!("the only value is `{only}`"),
            [rest @ .., last] => format!("use {} or {last}", rest.join(", ")),
            [] => "no value is accepted".to_owned(),
        };
        self.error(v, field, format!("`{}`: {hint}", v.value));
        None
    }

    pub(super) fn duration(&mut self, v: &Sp<String>, field: &str) -> Option<Duration> {
        match humantime::parse_duration(v.value.trim()) {
            // Longer would overflow the clock arithmetic it is used in;
            // what `check` accepts, `run` must run.
            Ok(d) if d > MAX_DURATION => {
                self.error(
                    v,
                    field,
                    format!("`{}` is longer than the most allowed, 10 years", v.value),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    v,
                    field,
                    format!(
                        "`{}` is not a duration ({e}); write e.g. 100ms, 30s, 5m, 24h, 7d",
                        v.value
                    ),
                );
                None
            }
        }
    }

    pub(super) fn positive(&mut self, v: &Sp<String>, field: &str) -> Option<Duration> {
        let d = self.duration(v, field)?;
        if d.is_zero() {
            self.error(v, field, "must be greater than zero");
            return None;
        }
        Some(d)
    }

    pub(super) fn size(&mut self, v: &Sp<String>, field: &str) -> Option<u64> {
        match v.value.trim().parse::<bytesize::ByteSize>() {
            Ok(s) if s.as_u64() > 0 => Some(s.as_u64()),
            Ok(_) => {
                self.error(v, field, "must be greater than zero");
                None
            }
            Err(e) => {
                self.error(
                    v,
                    field,
                    format!(
                        "`{}` is not a size ({e}); write e.g. 512KiB, 1MiB, 256MiB",
                        v.value
                    ),
                );
                None
            }
        }
    }

    pub(super) fn addr(&mut self, v: &Sp<String>, field: &str) -> Option<SocketAddr> {
        match v.value.trim().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    v,
                    field,
                    format!("`{}` is not an address such as 0.0.0.0:8080", v.value),
                );
                None
            }
        }
    }
}
