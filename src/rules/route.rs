//! Route patterns: matchit's syntax (`/products/{id}`, `/img-{id}.png`,
//! `/static/{*rest}`), plus the segments legacy URLs need and matchit cannot
//! hold: several parameters in one segment (`/catalogue/{slug}_{pk}/`) and a
//! parameter with a pattern (`{pk:[0-9]+}`). Such a segment is routed as one
//! whole-segment parameter, then matched against a regular expression built
//! from it; a parameter without a pattern takes one or more characters, the
//! earlier ones as many as they can (`a_b_7` is `slug=a_b`, `pk=7`).

use regex::Regex;

/// The name a refined segment is routed under: `~` is not a character a
/// parameter name of the config may hold, so it never meets one.
const SLOT: char = '~';

/// A compiled path pattern.
#[derive(Debug, Clone)]
pub struct Route {
    /// The pattern as written.
    pub pattern: String,
    /// The pattern matchit routes: refined segments as `{~N}`.
    pub router: String,
    refined: Vec<Refined>,
}

/// One segment matched by a regular expression.
#[derive(Debug, Clone)]
struct Refined {
    /// Its parameter in the matchit pattern (`~N`).
    slot: String,
    regex: Regex,
    names: Vec<String>,
}

/// One piece of a segment: literal text or a parameter.
enum Piece<'a> {
    Text(&'a str),
    Param {
        name: &'a str,
        pattern: Option<&'a str>,
    },
}

/// The pieces of one segment, or why it cannot be read.
fn pieces(segment: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = segment;
    while !rest.is_empty() {
        let Some(open) = rest.find('{') else {
            if rest.contains('}') {
                return Err(format!("`{segment}` has a `}}` without its `{{`"));
            }
            out.push(Piece::Text(rest));
            break;
        };
        if open > 0 {
            out.push(Piece::Text(&rest[..open]));
        }
        let Some(len) = rest[open..].find('}') else {
            return Err(format!("`{segment}` has a `{{` without its `}}`"));
        };
        let inner = &rest[open + 1..open + len];
        let (name, pattern) = match inner.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (inner, None),
        };
        out.push(Piece::Param { name, pattern });
        rest = &rest[open + len + 1..];
    }
    Ok(out)
}

/// Whether `name` can name a parameter (and a regex group).
fn valid_name(name: &str) -> bool {
    let name = name.strip_prefix('*').unwrap_or(name);
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

impl Route {
    /// Compiles `pattern`, or says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        if pattern.contains("{{") || pattern.contains("}}") {
            // matchit's escapes for literal braces, which no URL a browser
            // sends holds unescaped: kept as they are.
            return Ok(Self {
                pattern: pattern.to_owned(),
                router: pattern.to_owned(),
                refined: Vec::new(),
            });
        }
        let mut router = Vec::new();
        let mut refined = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let segments: Vec<&str> = pattern.split('/').collect();
        for (at, segment) in segments.iter().enumerate() {
            let pieces = pieces(segment)?;
            let params: Vec<(&str, Option<&str>)> = pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Param { name, pattern } => Some((*name, *pattern)),
                    Piece::Text(_) => None,
                })
                .collect();
            for (name, _) in &params {
                if !valid_name(name) {
                    return Err(format!(
                        "`{{{name}}}`: a parameter is named with letters, digits and `_`"
                    ));
                }
                let bare = name.trim_start_matches('*');
                if seen.contains(&bare) {
                    return Err(format!("`{{{bare}}}` appears twice"));
                }
                seen.push(bare);
            }
            let catch_all = params.iter().any(|(n, _)| n.starts_with('*'));
            if catch_all && at + 1 != segments.len() {
                return Err("a catch-all (`{*rest}`) can only end the path".to_owned());
            }
            if params.len() < 2 && params.iter().all(|(_, p)| p.is_none()) {
                router.push((*segment).to_owned());
                continue;
            }
            if catch_all {
                return Err(format!(
                    "`{segment}`: a catch-all takes the rest of the path, alone and without a pattern"
                ));
            }
            let mut regex = String::from("^");
            for piece in &pieces {
                match piece {
                    Piece::Text(t) => regex.push_str(&regex::escape(t)),
                    Piece::Param { name, pattern } => {
                        if pattern.is_some_and(|p| p.is_empty() || p.contains('/')) {
                            let pattern = pattern.unwrap_or_default();
                            return Err(format!(
                                "`{{{name}:{pattern}}}`: a parameter's pattern is not empty and matches within one segment (no `/`)"
                            ));
                        }
                        let pattern = pattern.unwrap_or("[^/]+");
                        if let Err(e) = Regex::new(pattern) {
                            return Err(format!("`{{{name}:{pattern}}}` is not a pattern: {e}"));
                        }
                        regex.push_str(&format!("(?P<{name}>(?:{pattern}))"));
                    }
                }
            }
            regex.push('$');
            let regex =
                Regex::new(&regex).map_err(|e| format!("`{segment}` cannot be matched: {e}"))?;
            let slot = format!("{SLOT}{}", refined.len());
            router.push(format!("{{{slot}}}"));
            refined.push(Refined {
                slot,
                regex,
                names: params.iter().map(|(n, _)| (*n).to_owned()).collect(),
            });
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            router: router.join("/"),
            refined,
        })
    }

    /// The parameters of a path matchit routed here (`found`), its refined
    /// segments matched; `None` when one does not match.
    pub fn params<'p>(
        &'p self,
        found: impl Iterator<Item = (&'p str, &'p str)>,
    ) -> Option<Vec<(&'p str, &'p str)>> {
        let mut out = Vec::new();
        for (name, value) in found {
            let Some(seg) = self.refined.iter().find(|r| r.slot == name) else {
                out.push((name, value));
                continue;
            };
            let caps = seg.regex.captures(value)?;
            for n in &seg.names {
                out.push((n.as_str(), caps.name(n)?.as_str()));
            }
        }
        Some(out)
    }
}

/// Parameter names in a pattern, `{*rest}` as `rest` and `{pk:[0-9]+}` as
/// `pk`.
pub fn route_params(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for segment in path.split('/') {
        for piece in pieces(segment).unwrap_or_default() {
            if let Piece::Param { name, .. } = piece {
                out.push(name.trim_start_matches('*').to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(route: &Route, path: &str) -> Option<Vec<(String, String)>> {
        let mut router = matchit::Router::new();
        router.insert(route.router.as_str(), ()).ok()?;
        let found = router.at(path).ok()?;
        let params = route.params(found.params.iter())?;
        Some(
            params
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_segment_holds_several_parameters() {
        let r = Route::parse("/catalogue/{slug}_{pk}/").unwrap();
        assert_eq!(r.router, "/catalogue/{~0}/");
        assert_eq!(
            at(&r, "/catalogue/frob-item_number-10_10/").unwrap(),
            pairs(&[("slug", "frob-item_number-10"), ("pk", "10")])
        );
        assert!(at(&r, "/catalogue/nounderscore/").is_none());
    }

    #[test]
    fn a_parameter_can_have_a_pattern() {
        let r = Route::parse("/p/{pk:[0-9]+}/{name}").unwrap();
        assert_eq!(
            at(&r, "/p/42/x").unwrap(),
            pairs(&[("pk", "42"), ("name", "x")])
        );
        assert!(at(&r, "/p/4a/x").is_none());
        let plain = Route::parse("/p/{id}/img-{n}.png").unwrap();
        assert_eq!(plain.router, "/p/{id}/img-{n}.png");
    }

    #[test]
    fn bad_patterns_say_why() {
        for (bad, says) in [
            ("/a/{x:[0-9}", "not a pattern"),
            ("/a/{x", "without its"),
            ("/a/{x:(}", "not a pattern"),
            ("/a/{x}_{x}", "twice"),
            ("/a/{*r}/b", "end the path"),
            ("/a/x{*r}_{y}", "catch-all"),
            ("/a/{x-y}", "letters"),
            ("/a/{x:}", "not empty"),
        ] {
            let e = Route::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn names_come_without_patterns() {
        assert_eq!(
            route_params("/c/{slug}_{pk:[0-9]+}/{*rest}"),
            vec!["slug", "pk", "rest"]
        );
    }
}
