//! TLS client settings shared by the syslog and OTLP destinations: the CA
//! the receiver's certificate must chain to (the system bundle by default),
//! an optional client certificate (mTLS), rustls with the `ring` provider.
//!
//! Plaintext transports (`transport = "tcp"` for syslog, `http://` for OTLP)
//! carry prompts and tool output, so they are accepted only towards a
//! loopback address (a local relay that forwards over TLS).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName};

/// Roots used when `ca_file` is not set (Debian/Ubuntu/Fedora bundle path).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
    #[error("client_cert and client_key go together")]
    HalfClientCert,
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("{name:?} is not a DNS name or IP address to check the certificate against")]
    ServerName { name: String },
}

fn file_err(path: &Path) -> impl Fn(String) -> ClientTlsError + '_ {
    move |problem| ClientTlsError::File {
        path: path.to_owned(),
        problem,
    }
}

/// TLS 1.2 and 1.3 with `ring`; `alpn` is offered when not empty.
pub fn client_config(
    ca_file: Option<&Path>,
    client_cert: Option<&Path>,
    client_key: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, ClientTlsError> {
    let ca = ca_file.unwrap_or(Path::new(SYSTEM_ROOTS));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| file_err(ca)(e.to_string()))? {
        let cert = cert.map_err(|e| file_err(ca)(e.to_string()))?;
        roots.add(cert).map_err(|e| file_err(ca)(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(file_err(ca)("no CA certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match (client_cert, client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| file_err(cert)(e.to_string()))?;
            if chain.is_empty() {
                return Err(file_err(cert)("no certificate in it".into()));
            }
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key)(e.to_string()))?;
            builder.with_client_auth_cert(chain, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(ClientTlsError::HalfClientCert),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name the receiver's certificate is checked against.
pub fn server_name(name: &str) -> Result<ServerName<'static>, ClientTlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| ClientTlsError::ServerName {
        name: name.to_owned(),
    })
}

/// Whether `host` (a name or an IP, IPv6 with or without brackets) is
/// this machine: `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Splits `HOST:PORT` (`[v6]:PORT` for IPv6) into the host and the port.
pub fn split_host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')?
    } else if host.contains(':') {
        return None; // an IPv6 address needs its brackets
    } else {
        host
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_addresses() {
        for h in ["localhost", "127.0.0.1", "127.3.2.1", "::1", "[::1]"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["10.0.0.1", "example.com", "::2", "localhost.example.com"] {
            assert!(!is_loopback(h), "{h}");
        }
        assert_eq!(
            split_host_port("siem.example.com:6514"),
            Some(("siem.example.com".into(), 6514))
        );
        assert_eq!(split_host_port("[::1]:6514"), Some(("::1".into(), 6514)));
        assert_eq!(split_host_port("::1:6514"), None);
        assert_eq!(split_host_port("host:0"), None);
        assert_eq!(split_host_port("host"), None);
        assert_eq!(split_host_port(":6514"), None);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = std::env::temp_dir().join(format!("aitrail-ctls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = client_config(Some(&empty), None, None, &[]).unwrap_err();
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let missing = dir.join("missing.pem");
        assert!(client_config(Some(&missing), None, None, &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
