//! TLS toward the backend: the client config an `https://` upstream is
//! reached with, built when the config is read so that `check` reports a
//! bad certificate or key at its place. The server's name (SNI) comes from
//! the URL.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS client config of an `https://` upstream.
#[derive(Clone, Debug)]
pub struct UpstreamTls {
    /// What the connector uses.
    pub config: Arc<rustls::ClientConfig>,
    /// The PEM it was made from, which tells two configs apart.
    source: Vec<Vec<u8>>,
}

/// Two configs are the same when they were made from the same files.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// The client config trusting the CA certificates in `ca` (PEM), or the
/// system's root certificates without one, and presenting `client` (a PEM
/// certificate chain and its PEM key) when given.
pub fn upstream_tls(
    ca: Option<&[u8]>,
    client: Option<(&[u8], &[u8])>,
) -> Result<UpstreamTls, String> {
    let builder = rustls::ClientConfig::builder();
    let builder = match ca {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("not a usable CA certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("holds no PEM certificate".into());
            }
            builder.with_root_certificates(roots)
        }
        None => {
            use hyper_rustls::ConfigBuilderExt as _;
            builder.with_native_roots().map_err(|e| {
                format!("the system's root certificates cannot be read ({e}): give upstream.ca")
            })?
        }
    };
    let config = match client {
        Some((chain, key)) => {
            let chain = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("client_cert: not a PEM certificate: {e}"))?;
            if chain.is_empty() {
                return Err("client_cert holds no PEM certificate".into());
            }
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("client_key: not a PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client_cert and client_key do not go together: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    let mut source = vec![ca.unwrap_or_default().to_vec()];
    if let Some((chain, key)) = client {
        source.extend([chain.to_vec(), key.to_vec()]);
    }
    Ok(UpstreamTls {
        config: Arc::new(config),
        source,
    })
}
