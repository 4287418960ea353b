//! Edge Side Includes (`esi: true` on a rule), as Varnish and Akamai read
//! them: a page shared by everyone with holes for what is personal (a CSRF
//! token, a mini basket), each hole filled per client by a request through
//! the proxy under the fragment's own rule.
//!
//! The stored HTML is read once, when it is fetched, by a streaming HTML
//! rewriter (lol_html): `<esi:remove>…</esi:remove>` is dropped,
//! `<!--esi …-->` unwrapped, and each `<esi:include src="/path"/>` cut out,
//! its place and `src` kept in an internal header ([`ESI_HEADER`]) that is
//! stored with the entry (in memory and Redis alike). Serving cuts the body
//! at those places: no HTML is parsed on a hit.
//!
//! Bounds: [`MAX_INCLUDES`] includes a page, fragments [`MAX_DEPTH`] deep,
//! each read within the backend timeout and up to [`MAX_FRAGMENT`] bytes.
//! A fragment that fails (an error status, a timeout, an encoded or
//! oversized body, a `src` that is not a path on this site) is left empty
//! and counted; the page is still answered.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header, request};
use http_body_util::{BodyExt, Empty};
use lol_html::errors::RewritingError;
use lol_html::html_content::ContentType;
use lol_html::{HtmlRewriter, Settings, doc_comments, element};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::body::{BoxError, ProxyBody, ReadAhead, full, read_ahead};
use super::{Answer, Proxy};
use crate::metrics;

/// The internal header that carries an entry's includes: `OFFSET SRC`
/// pairs, comma-separated, `SRC` percent-encoded.
pub const ESI_HEADER: &str = "sidecache-esi";

/// Includes a page may hold; later ones are left empty.
pub const MAX_INCLUDES: usize = 32;

/// How deep fragments may include fragments.
pub const MAX_DEPTH: u8 = 3;

/// The largest fragment body.
pub const MAX_FRAGMENT: usize = 1024 * 1024;

/// What a `src` is written with in [`ESI_HEADER`].
const SRC: &AsciiSet = &CONTROLS.add(b' ').add(b',').add(b'%').add(b'"');

/// How deep the request is in ESI fragments: a request extension, never
/// sent anywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Depth(pub u8);

/// An HTML body with its includes cut out.
#[derive(Debug, PartialEq)]
pub struct Prepared {
    /// The body without ESI markup.
    pub body: Bytes,
    /// Where each include goes in `body`, with its `src`, in order.
    pub includes: Vec<(usize, String)>,
}

impl Prepared {
    /// The [`ESI_HEADER`] value, `None` without includes.
    pub fn header(&self) -> Option<HeaderValue> {
        if self.includes.is_empty() {
            return None;
        }
        let text: Vec<String> = self
            .includes
            .iter()
            .map(|(at, src)| format!("{at} {}", utf8_percent_encode(src, SRC)))
            .collect();
        HeaderValue::from_str(&text.join(", ")).ok()
    }
}

/// The includes an [`ESI_HEADER`] value lists, in order; `None` when it
/// cannot be read (a Redis value that is not ours) or one lies past `len`.
pub fn includes(value: &HeaderValue, len: usize) -> Option<Vec<(usize, String)>> {
    let mut out = Vec::new();
    let mut last = 0;
    for pair in value.to_str().ok()?.split(", ") {
        let (at, src) = pair.split_once(' ')?;
        let at: usize = at.parse().ok()?;
        if at < last || at > len {
            return None;
        }
        last = at;
        out.push((at, percent_decode_str(src).decode_utf8().ok()?.into_owned()));
    }
    Some(out)
}

/// Reads `html` once: drops `<esi:remove>`, unwraps `<!--esi …-->` and cuts
/// out each `<esi:include>` (see the module's comment). An error is HTML
/// the rewriter could not read.
pub fn prepare(html: &[u8]) -> Result<Prepared, RewritingError> {
    // `<!--esi <esi:include …/> -->`: the comment's content is markup that
    // takes effect when ESI is on, read in a second pass.
    let unwrapped;
    let html = if memchr::memmem::find(html, b"<!--esi").is_some() {
        let settings = Settings {
            document_content_handlers: vec![doc_comments!(|c| {
                if let Some(inner) = c.text().strip_prefix("esi") {
                    c.replace(inner, ContentType::Html);
                }
                Ok(())
            })],
            ..Settings::new()
        };
        unwrapped = rewrite(html, settings)?;
        &unwrapped[..]
    } else {
        html
    };
    // Each include becomes a marker no page holds (a random nonce), found
    // and cut afterwards: the rewriter writes output in its own chunks.
    let nonce = format!("<!--sidecache-esi-{:016x}-->", fastrand::u64(..));
    let srcs = std::cell::RefCell::new(Vec::new());
    let settings = Settings {
        element_content_handlers: vec![
            element!("esi\\:include", |el| {
                let src = el.get_attribute("src").unwrap_or_default();
                srcs.borrow_mut().push(src.replace("&amp;", "&"));
                el.before(&nonce, ContentType::Html);
                if el.is_self_closing() {
                    // `<esi:include …/>` has no end tag, and HTML gives an
                    // unknown element none: the parent's would be taken.
                    el.start_tag().remove();
                } else {
                    el.remove_and_keep_content();
                }
                Ok(())
            }),
            element!("esi\\:remove", |el| {
                el.remove();
                Ok(())
            }),
        ],
        ..Settings::new()
    };
    let out = rewrite(html, settings)?;
    let srcs = srcs.into_inner();
    let mut body = BytesMut::with_capacity(out.len());
    let mut includes = Vec::new();
    let mut rest = &out[..];
    let marker = memchr::memmem::Finder::new(nonce.as_bytes());
    for src in srcs {
        let Some(at) = marker.find(rest) else { break };
        body.extend_from_slice(&rest[..at]);
        includes.push((body.len(), src));
        rest = &rest[at + nonce.len()..];
    }
    body.extend_from_slice(rest);
    Ok(Prepared {
        body: body.freeze(),
        includes,
    })
}

/// What a page's fragments are requested with: the client's own request
/// (its cookies: a CSRF fragment must see the client's token), taken before
/// the key's head replaced it.
#[derive(Debug)]
pub struct Page {
    headers: HeaderMap,
    depth: u8,
    head: bool,
}

impl Page {
    /// The page request `client` made.
    pub fn of(client: &request::Parts) -> Self {
        Self {
            headers: client.headers.clone(),
            depth: client.extensions.get::<Depth>().map_or(0, |d| d.0),
            head: client.method == Method::HEAD,
        }
    }

    /// The request for fragment `src`, `None` when it is not a path on
    /// this site (`/…`; a fragment elsewhere is never fetched for a client).
    fn fragment(&self, src: &str) -> Option<Request<Empty<Bytes>>> {
        if !src.starts_with('/') || src.starts_with("//") {
            return None;
        }
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(src)
            .body(Empty::new())
            .ok()?;
        let headers = req.headers_mut();
        *headers = self.headers.clone();
        for name in [
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
            header::RANGE,
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::TRANSFER_ENCODING,
            header::EXPECT,
        ] {
            headers.remove(name);
        }
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        req.extensions_mut().insert(Depth(self.depth + 1));
        Some(req)
    }
}

/// A fragment as a page takes it in.
struct Fragment {
    body: Bytes,
    cookies: Vec<HeaderValue>,
    /// It set a cookie or was marked private: the page is one client's.
    private: bool,
}

impl Proxy {
    /// Fills the includes of a page answered for `page` (see the module's
    /// comment). An answer without [`ESI_HEADER`] is passed on as it is.
    pub(super) async fn assemble(
        self: &Arc<Self>,
        answer: Answer,
        page: Page,
        ip: IpAddr,
        rule: &str,
    ) -> Answer {
        let (res, outcome) = answer;
        let (mut parts, body) = res.into_parts();
        let Some(value) = parts.headers.remove(ESI_HEADER) else {
            return (Response::from_parts(parts, body), outcome);
        };
        if page.head || parts.status != StatusCode::OK {
            // The length the entry says is the page's without its fragments.
            parts.headers.remove(header::CONTENT_LENGTH);
            return (Response::from_parts(parts, body), outcome);
        }
        let html = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                tracing::warn!(rule, error = %e, "an ESI page's body could not be read");
                let res =
                    super::respond::error(StatusCode::BAD_GATEWAY, "the page could not be read");
                return (res, outcome);
            }
        };
        let Some(list) = includes(&value, html.len()) else {
            tracing::warn!(rule, "an ESI entry's include list could not be read");
            count(rule, "failed");
            return (Response::from_parts(parts, full(html)), outcome);
        };
        let timeout = self.upstream.timeout();
        let tasks: Vec<_> = list
            .iter()
            .enumerate()
            .map(|(i, (_, src))| {
                let req = (i < MAX_INCLUDES && page.depth < MAX_DEPTH)
                    .then(|| page.fragment(src))
                    .flatten()?;
                let proxy = self.clone();
                Some(crate::metrics::spawn(fragment(proxy, req, ip, timeout)))
            })
            .collect();
        let mut out = BytesMut::with_capacity(html.len() + 256 * list.len());
        let mut from = 0;
        let mut private = false;
        for ((at, _), task) in list.iter().zip(tasks) {
            out.extend_from_slice(&html[from..*at]);
            from = *at;
            let Some(task) = task else {
                count(rule, "skipped");
                continue;
            };
            match task.await.ok().flatten() {
                Some(f) => {
                    count(rule, "ok");
                    out.extend_from_slice(&f.body);
                    for c in f.cookies {
                        parts.headers.append(header::SET_COOKIE, c);
                    }
                    private |= f.private;
                }
                None => count(rule, "failed"),
            }
        }
        out.extend_from_slice(&html[from..]);
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
        if private {
            // A CSRF token or a basket is one client's: no shared cache
            // downstream may keep the page it is in.
            parts.headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
        }
        (Response::from_parts(parts, full(out.freeze())), outcome)
    }
}

/// An `esi` rule's answer from the backend, as it is stored and served:
/// a 200 HTML answer in no content encoding, read whole (up to `limit`),
/// its markup prepared and its includes listed in [`ESI_HEADER`]. Its
/// validators go: the page a client gets holds fragments they do not
/// describe. Any other answer, or one that cannot be read as HTML, is
/// passed on untouched (and its markup reaches the client: logged).
pub(super) async fn prepare_fetched(
    res: &mut http::response::Parts,
    body: ProxyBody,
    limit: usize,
    rule: &str,
) -> Result<ProxyBody, BoxError> {
    let html = res
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    let encoded = res
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() != b"identity");
    // Only what this proxy read from the page says where includes go.
    res.headers.remove(ESI_HEADER);
    if res.status != StatusCode::OK || !html || encoded {
        return Ok(body);
    }
    let whole = match read_ahead(body, limit).await? {
        ReadAhead::Whole(bytes) => bytes,
        ReadAhead::Longer(body) => {
            tracing::warn!(
                rule,
                limit,
                "an ESI page longer than max_object_size is not read for includes"
            );
            return Ok(body);
        }
    };
    let prepared = match prepare(&whole) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(rule, error = %e, "an ESI page could not be read as HTML");
            return Ok(full(whole));
        }
    };
    for name in [header::ETAG, header::LAST_MODIFIED, header::ACCEPT_RANGES] {
        res.headers.remove(name);
    }
    res.headers.remove(header::TRANSFER_ENCODING);
    res.headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(prepared.body.len()),
    );
    if let Some(value) = prepared.header() {
        res.headers.insert(ESI_HEADER, value);
    }
    Ok(full(prepared.body))
}

impl Proxy {
    /// A fragment's request through the pipeline, boxed as `dyn`: its
    /// future holds the page's, which holds this one.
    fn fragment_request(
        self: Arc<Self>,
        req: Request<Empty<Bytes>>,
        ip: IpAddr,
    ) -> std::pin::Pin<Box<dyn Future<Output = Response<super::ProxyBody>> + Send>> {
        Box::pin(async move { self.handle(req, ip).await })
    }
}

impl Proxy {
    /// Fills the includes of a page of `rule` that passed the cache (read
    /// as a fetched one is, then assembled).
    pub(super) async fn assemble_passed(
        self: &Arc<Self>,
        answer: Answer,
        page: Page,
        ip: IpAddr,
        rule: &crate::rules::Rule,
    ) -> Answer {
        let (res, outcome) = answer;
        let (mut parts, body) = res.into_parts();
        let limit = usize::try_from(rule.max_object_size).unwrap_or(usize::MAX);
        match prepare_fetched(&mut parts, body, limit, &rule.name).await {
            Ok(body) => {
                let answer = (Response::from_parts(parts, body), outcome);
                self.assemble(answer, page, ip, &rule.name).await
            }
            Err(e) => {
                tracing::warn!(rule = %rule.name, error = %e, "backend body failed");
                let res = super::respond::error(
                    StatusCode::BAD_GATEWAY,
                    "the backend's answer was cut short",
                );
                (res, outcome)
            }
        }
    }
}

/// Fetches one fragment through the pipeline, within `timeout`.
async fn fragment(
    proxy: Arc<Proxy>,
    req: Request<Empty<Bytes>>,
    ip: IpAddr,
    timeout: std::time::Duration,
) -> Option<Fragment> {
    let work = async move {
        let res = proxy.fragment_request(req, ip).await;
        let encoded = res
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes() != b"identity");
        if !res.status().is_success() || encoded {
            return None;
        }
        let (parts, mut body) = res.into_parts();
        let mut got = BytesMut::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.ok()?.into_data() {
                if got.len() + data.len() > MAX_FRAGMENT {
                    return None;
                }
                got.extend_from_slice(&data);
            }
        }
        let body = got.freeze();
        let cookies: Vec<HeaderValue> = parts
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        let marked = parts
            .headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                let v = v.to_ascii_lowercase();
                v.contains("private") || v.contains("no-store")
            });
        Some(Fragment {
            body,
            private: marked || !cookies.is_empty(),
            cookies,
        })
    };
    tokio::time::timeout(timeout, work).await.ok().flatten()
}

fn count(rule: &str, result: &'static str) {
    ::metrics::counter!(metrics::ESI_FRAGMENTS, "rule" => rule.to_owned(), "result" => result)
        .increment(1);
}

/// Runs `html` through a rewriter with `settings`.
fn rewrite(html: &[u8], settings: Settings<'_, '_>) -> Result<Vec<u8>, RewritingError> {
    let mut out = Vec::with_capacity(html.len());
    let mut rewriter = HtmlRewriter::new(settings, |c: &[u8]| out.extend_from_slice(c));
    rewriter.write(html)?;
    rewriter.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(html: &str) -> (String, Vec<(usize, String)>) {
        let p = prepare(html.as_bytes()).unwrap();
        (String::from_utf8(p.body.to_vec()).unwrap(), p.includes)
    }

    #[test]
    fn includes_are_cut_out_with_their_place() {
        let (body, inc) = cut(
            r#"<p>a</p><form><esi:include src="/esi/csrf/"/><button>b</button></form><esi:include src="/x?a=1&amp;b=2"></esi:include>!"#,
        );
        assert_eq!(body, "<p>a</p><form><button>b</button></form>!");
        assert_eq!(
            inc,
            vec![(14, "/esi/csrf/".to_owned()), (39, "/x?a=1&b=2".to_owned())]
        );
    }

    #[test]
    fn remove_and_comments() {
        let (body, inc) = cut(
            "<p><esi:remove><a href=/basket>basket</a></esi:remove><!--esi <esi:include src=\"/b\"/> --><!-- plain --></p>",
        );
        assert_eq!(body, "<p>  <!-- plain --></p>");
        assert_eq!(inc, vec![(4, "/b".to_owned())]);
    }

    #[test]
    fn the_header_round_trips() {
        let p = prepare(br#"a<esi:include src="/x y,%z"/>b<esi:include src="/c"/>"#).unwrap();
        let h = p.header().unwrap();
        assert_eq!(includes(&h, p.body.len()).unwrap(), p.includes);
        assert!(
            includes(&h, 1).is_none(),
            "an offset past the body is refused"
        );
        assert!(includes(&HeaderValue::from_static("x /a"), 9).is_none());
        assert!(prepare(b"<p>plain</p>").unwrap().header().is_none());
    }
}
