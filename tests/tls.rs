//! An `https://` backend: reached over TLS with the server name from the
//! URL, trusted through a configured CA, refused when untrusted.

mod support;

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::*;

/// A backend serving HTTPS with the certificate in `dir` (for `localhost`
/// and `127.0.0.1`), asking clients for a certificate from the same CA when
/// `client_auth`; answers JSON and counts what it served.
async fn https_backend(dir: &Path, client_auth: bool) -> (u16, Arc<AtomicUsize>) {
    let chain = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let builder = rustls::ServerConfig::builder();
    let builder = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return; // An untrusting client gives up during the handshake.
                };
                let svc = service_fn(move |_req| {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        let mut res =
                            http::Response::new(Full::new(Bytes::from(format!("{{\"n\":{n}}}"))));
                        res.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, served)
}

const RULES: &str = r#"
upstream: { url: UPSTREAM, ca: "CA" }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
"#;

/// Through a configured CA, the HTTPS backend's answer is fetched,
/// stored and then answered from memory; SNI comes from the URL's name.
#[tokio::test]
async fn https_backend_with_a_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (port, served) = https_backend(dir.path(), false).await;
    let ca = dir.path().join("ca.pem").display().to_string();
    let proxy = Proxy::start(
        &RULES.replace("\"CA\"", &format!("\"{ca}\"")),
        &format!("\"https://localhost:{port}\""),
        None,
    )
    .await;
    let first = get(&proxy.url("/products/1"), &[]).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.cache_status());
    assert_eq!(first.body, "{\"n\":1}");
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    await_hit(&proxy.url("/products/1"), &[]).await;
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

/// A backend whose certificate the system's roots do not vouch for is not
/// trusted: 502, and it served nothing.
#[tokio::test]
async fn untrusted_https_backend_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (port, served) = https_backend(dir.path(), false).await;
    let rules = RULES.replace(
        "upstream: { url: UPSTREAM, ca: \"CA\" }",
        "upstream: { url: UPSTREAM }",
    );
    let proxy = Proxy::start(&rules, &format!("\"https://localhost:{port}\""), None).await;
    let got = get(&proxy.url("/products/1"), &[]).await;
    assert_eq!(
        got.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        got.cache_status()
    );
    assert_eq!(served.load(Ordering::SeqCst), 0);
}

/// A backend that asks for a client certificate gets the configured one;
/// without it, the handshake fails and the client gets 502.
#[tokio::test]
async fn client_certificate_for_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let (port, served) = https_backend(dir.path(), true).await;
    let file = |name: &str| dir.path().join(name).display().to_string();
    let with_cert = format!(
        "upstream: {{ url: UPSTREAM, ca: \"{}\", client_cert: \"{}\", client_key: \"{}\" }}",
        file("ca.pem"),
        file("client.pem"),
        file("client.key")
    );
    let url = format!("\"https://localhost:{port}\"");
    let rules = RULES.replace("upstream: { url: UPSTREAM, ca: \"CA\" }", &with_cert);
    let proxy = Proxy::start(&rules, &url, None).await;
    let got = get(&proxy.url("/products/1"), &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.cache_status());
    assert_eq!(served.load(Ordering::SeqCst), 1);

    let without = RULES.replace("\"CA\"", &format!("\"{}\"", file("ca.pem")));
    let proxy = Proxy::start(&without, &url, None).await;
    let got = get(&proxy.url("/products/2"), &[]).await;
    assert_eq!(
        got.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        got.cache_status()
    );
    assert_eq!(served.load(Ordering::SeqCst), 1);
}
