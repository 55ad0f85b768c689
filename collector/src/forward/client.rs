//! A small HTTP/1.1 client for forwarders: one kept-alive connection per
//! destination (one request in flight: a forwarder sends one batch at a
//! time), hyper over tokio-rustls with the `ring` provider, a timeout on
//! the whole exchange and a bound on the answer's size.
//!
//! `https://` always; `http://` only to a loopback address (`127.0.0.0/8`,
//! `::1`, `localhost`): a sidecar on the same host (a local OpenTelemetry
//! collector, Vector, a test), never plaintext across a network — the
//! events hold prompts and command lines.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    client::conn::http1::SendRequest, header, HeaderMap, Method, Request, StatusCode, Uri,
};
use hyper_util::rt::TokioIo;
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use tokio::sync::Mutex;

use super::{add, config::ForwardSpec, ForwardConfigError, ForwardCounters, ForwardError};

/// Roots used when `ca_file` is not set (Debian/Ubuntu/Fedora bundle path).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {authority}")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {authority} failed")]
    Tls {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot build the request")]
    Request(#[source] hyper::http::Error),
}

impl From<ClientError> for ForwardError {
    fn from(e: ClientError) -> Self {
        // Every transport failure is worth another try; say why in full.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        ForwardError::Retry(text)
    }
}

/// A parsed destination URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// Host without brackets (an IPv6 address is bare).
    pub host: String,
    pub port: u16,
    /// `host:port` as the Host header wants it.
    pub authority: String,
    /// Path of the URL without a trailing `/` (`""` for none).
    pub base_path: String,
}

/// Whether `host` (a name, or an address without brackets) is this
/// machine: `localhost`, `127.0.0.0/8` or `::1`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Target {
    pub fn parse(spec: &ForwardSpec) -> Result<Self, ForwardConfigError> {
        let bad = |problem: &str| spec.invalid("url", format!("{}: {problem}", spec.url));
        let uri: Uri = spec.url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("https:// expected")),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !tls && !is_loopback(&host) {
            return Err(bad(
                "http:// is allowed only to a loopback address; use https://",
            ));
        }
        if uri.query().is_some() {
            return Err(bad("no query string expected"));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(bad("no credentials in the URL; use token or token_file"));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Self {
            tls,
            host,
            port,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
        })
    }
}

/// What came back.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The start of the body, for logs and errors.
    pub fn snippet(&self) -> String {
        let b = &self.body[..self.body.len().min(300)];
        String::from_utf8_lossy(b).trim().to_owned()
    }
}

fn read_err<'a>(spec: &'a ForwardSpec, path: &Path) -> impl Fn(String) -> ForwardConfigError + 'a {
    let path = path.to_owned();
    move |problem| spec.invalid("tls", format!("{}: {problem}", path.display()))
}

/// The TLS client configuration of a forwarder: its CA (or the system's)
/// and, for mTLS, its client certificate.
pub fn tls_config(spec: &ForwardSpec) -> Result<Arc<ClientConfig>, ForwardConfigError> {
    let ca = spec
        .ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_ROOTS));
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&ca)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| read_err(spec, &ca)(e.to_string()))?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| read_err(spec, &ca)(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(read_err(spec, &ca)("no CA certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| spec.invalid("tls", e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&spec.client_cert, &spec.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| read_err(spec, cert)(e.to_string()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| read_err(spec, key)(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| spec.invalid("tls", e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One destination's connection, opened on first use and again after it
/// breaks.
pub struct HttpClient {
    target: Target,
    server_name: ServerName<'static>,
    connector: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    max_answer: usize,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
    /// Where `connects` and `bytes_sent` are counted, when set.
    counters: Option<Arc<ForwardCounters>>,
}

impl HttpClient {
    /// `max_answer`: largest answer body read (a bigger one is an error).
    pub fn new(spec: &ForwardSpec, max_answer: usize) -> Result<Self, ForwardConfigError> {
        let target = Target::parse(spec)?;
        let server_name = ServerName::try_from(target.host.clone())
            .map_err(|_| spec.invalid("url", "host is not a DNS name or IP address"))?;
        let connector = if target.tls {
            Some(tokio_rustls::TlsConnector::from(tls_config(spec)?))
        } else {
            None
        };
        Ok(Self {
            target,
            server_name,
            connector,
            timeout: spec.timeout,
            max_answer,
            conn: Mutex::new(None),
            counters: None,
        })
    }

    /// Counts this client's connections and acknowledged bytes in
    /// `counters` (the forwarder's `connects` and `bytes_sent`).
    #[must_use]
    pub fn counting(mut self, counters: Arc<ForwardCounters>) -> Self {
        self.counters = Some(counters);
        self
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let authority = || self.target.authority.clone();
        let tcp = tokio::net::TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(|source| ClientError::Connect {
                authority: authority(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = if let Some(connector) = &self.connector {
            let tls = connector
                .connect(self.server_name.clone(), tcp)
                .await
                .map_err(|source| ClientError::Tls {
                    authority: authority(),
                    source,
                })?;
            let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(ClientError::Http)?;
            (s, tokio::spawn(c))
        } else {
            let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(ClientError::Http)?;
            (s, tokio::spawn(c))
        };
        drop(conn); // runs until the connection closes
        if let Some(c) = &self.counters {
            add(&c.connects, 1);
        }
        Ok(sender)
    }

    /// Sends one request to `path_and_query` (appended to the URL's path)
    /// and reads the whole answer.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(header::HeaderName, String)],
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let exchange = async {
            let mut slot = self.conn.lock().await;
            let mut sender = match slot.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            sender.ready().await.map_err(ClientError::Http)?;
            let mut uri = format!("{}{path_and_query}", self.target.base_path);
            if uri.is_empty() {
                uri.push('/');
            }
            let mut req = Request::builder()
                .method(method)
                .uri(uri)
                .header(header::HOST, &self.target.authority)
                .header(
                    header::USER_AGENT,
                    concat!("aitrail-collector/", env!("CARGO_PKG_VERSION")),
                );
            for (name, value) in headers {
                req = req.header(name, value);
            }
            let sent = body.len() as u64;
            let req = req.body(Full::new(body)).map_err(ClientError::Request)?;
            let resp = sender.send_request(req).await.map_err(ClientError::Http)?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, self.max_answer)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(e) => ClientError::Http(*e),
                    Err(_) => ClientError::TooLarge(self.max_answer),
                })?
                .to_bytes();
            // Reusable once the answer was read whole.
            *slot = Some(sender);
            if let (Some(c), true) = (&self.counters, parts.status.is_success()) {
                add(&c.bytes_sent, sent);
            }
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }
}

/// How an HTTP status is taken, for destinations without a finer rule:
/// success; worth retrying (the destination is busy or down, or refuses
/// our credentials or URL — a configuration to fix, not data to drop); or
/// refused for good (the request itself: 400, 413, 422, …).
pub fn classify(resp: &Response) -> Result<(), ForwardError> {
    let s = resp.status;
    if s.is_success() {
        return Ok(());
    }
    let text = format!("HTTP {}: {}", s.as_u16(), resp.snippet());
    match s.as_u16() {
        401 | 403 | 404 | 407 | 408 | 425 | 429 => Err(ForwardError::Retry(text)),
        400..=499 => Err(ForwardError::Reject(text)),
        _ => Err(ForwardError::Retry(text)),
    }
}

/// Gzip, for destinations that take `Content-Encoding: gzip`.
pub fn gzip(data: &[u8]) -> Bytes {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}

/// `compression = "none" | "gzip"`.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl Compression {
    /// The body to send and the header that says how it is encoded.
    pub fn apply(self, body: Vec<u8>, headers: &mut Vec<(header::HeaderName, String)>) -> Bytes {
        match self {
            Self::None => Bytes::from(body),
            Self::Gzip => {
                headers.push((header::CONTENT_ENCODING, "gzip".into()));
                gzip(&body)
            }
        }
    }
}
