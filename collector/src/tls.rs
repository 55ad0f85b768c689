//! The collector's TLS: its certificate, and optional client certificates
//! (mTLS) checked against `tls.client_ca`.

use std::{path::Path, sync::Arc};

use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use sha2::Digest as _;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {problem}")]
    Pem { path: String, problem: String },
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("client CA")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn pem_err(path: &Path) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::Pem {
        path: path.display().to_string(),
        problem: e.to_string(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(pem_err(path))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.display().to_string(),
            problem: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

/// The server configuration: HTTP/1.1 only (ALPN), TLS 1.2 and 1.3.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c)?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let mut config = builder.with_single_cert(certs(cert)?, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How an mTLS-only agent is named: `cert:` and the first 16 hex digits of
/// its certificate's SHA-256.
pub fn cert_name(cert: &CertificateDer<'_>) -> String {
    let digest = sha2::Sha256::digest(cert.as_ref());
    format!("cert:{}", &hex::encode(digest)[..16])
}
