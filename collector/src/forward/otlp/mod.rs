//! OTLP/HTTP logs (`type = "otlp"`): each batch is one
//! `ExportLogsServiceRequest` (OTLP protobuf, opentelemetry-proto v1.10.0
//! via the `opentelemetry-proto` crate), `POST`ed to the logs endpoint with
//! `Content-Type: application/x-protobuf`, gzip-compressed by default.
//!
//! The answer decides what the framework does with the batch:
//! - 2xx: sent. An `ExportLogsPartialSuccess` with `rejected_log_records`
//!   is not retried (OTLP says so): the rejected records are counted and
//!   the receiver's message logged.
//! - 413: the batch is split in two and each half sent (down to one
//!   event, then rejected). A half sent before the other failed is sent
//!   again with it: duplicates carry the same `log.record.uid`.
//! - 400 and the other 4xx: rejected (counted and skipped by the
//!   framework), with the receiver's `google.rpc.Status` message — except
//!   401, 403, 404, 407 and 408, which say nothing about the batch
//!   (credentials, a wrong endpoint, a timeout) and are retried.
//! - 429 and every 5xx: retried. OTLP lists 429/502/503/504 as retryable;
//!   500 is retried too, because dropping an audit trail on a broken
//!   receiver is worse than waiting for it (the stall shows in the
//!   counters). A `Retry-After` (seconds or an HTTP date, at most 5
//!   minutes) is honoured: until then, `send` answers Retry without a
//!   request.

pub mod convert;

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    client::conn::http1::SendRequest,
    header::{self, HeaderName, HeaderValue},
    Request, StatusCode, Uri,
};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use rustls_pki_types::ServerName;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;

pub use self::convert::BodyFormat;
use super::{
    client_tls::{self, ClientTlsError},
    Destination, ForwardError, SendFuture,
};

/// The OTLP/HTTP path of logs.
pub const LOGS_PATH: &str = "/v1/logs";
/// Largest answer read (an export response or a `google.rpc.Status`).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_mins(5);

/// `[[forward]]` with `type = "otlp"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The logs endpoint, e.g. `https://otel.example.com:4318/v1/logs`; a
    /// URL with no path gets `/v1/logs`. `http://` only to a loopback
    /// address.
    pub endpoint: String,
    /// PEM CA bundle; default: the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key (mTLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Sent as `Authorization: Bearer <token>`; prefer `token_file` (0600).
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Extra request headers (a tenant, an API key header).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `gzip` (default) or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// `json` (default: `body` is the event's JSON text) or `map` (the
    /// event as a structured `kvlist_value`).
    #[serde(default)]
    pub body: BodyFormat,
    /// Connect + request + answer.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

fn default_timeout_ms() -> u64 {
    30_000
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("otlp forwarder: {field}: {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },
    #[error("otlp forwarder: TLS")]
    Tls(#[from] ClientTlsError),
}

fn invalid(field: &'static str, problem: impl Into<String>) -> OtlpError {
    OtlpError::Config {
        field,
        problem: problem.into(),
    }
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct OtlpCounters {
    pub requests: AtomicU64,
    pub batches_sent: AtomicU64,
    pub records_sent: AtomicU64,
    /// Records the receiver accepted the request of but rejected
    /// (`partial_success.rejected_log_records`): lost there.
    pub records_rejected: AtomicU64,
    /// Batches refused for good (4xx): the framework skips them.
    pub batches_rejected: AtomicU64,
    /// Failed attempts (network, 429, 5xx, …).
    pub batches_failed: AtomicU64,
    /// 413 answers that made us split a batch.
    pub splits: AtomicU64,
    /// Answers with `Retry-After`.
    pub retry_after: AtomicU64,
    /// Body bytes sent (compressed), for acknowledged requests.
    pub bytes_sent: AtomicU64,
    pub connects: AtomicU64,
    /// `trace_id`/`span_id` that were not hex ids (sent without them).
    pub bad_ids: AtomicU64,
    /// Events without a usable `time` (sent with time 0, "unknown").
    pub bad_times: AtomicU64,
    /// Answers that could not be decoded (2xx body not an
    /// `ExportLogsServiceResponse`): taken as success, counted.
    pub bad_responses: AtomicU64,
}

impl OtlpCounters {
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BTreeMap::from([
            ("requests", g(&self.requests)),
            ("batches_sent", g(&self.batches_sent)),
            ("records_sent", g(&self.records_sent)),
            ("records_rejected", g(&self.records_rejected)),
            ("batches_rejected", g(&self.batches_rejected)),
            ("batches_failed", g(&self.batches_failed)),
            ("splits", g(&self.splits)),
            ("retry_after", g(&self.retry_after)),
            ("bytes_sent", g(&self.bytes_sent)),
            ("connects", g(&self.connects)),
            ("bad_ids", g(&self.bad_ids)),
            ("bad_times", g(&self.bad_times)),
            ("bad_responses", g(&self.bad_responses)),
        ])
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer (only the
/// fields we read; `details` is skipped as an unknown field).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// How one request ended.
enum Answer {
    Ok,
    TooLarge,
    Reject(String),
    Retry(String),
}

struct Conn {
    sender: Option<SendRequest<Full<Bytes>>>,
    /// No request before this (`Retry-After`).
    not_before: Option<Instant>,
}

/// An OTLP/HTTP logs receiver. One connection (HTTP/1.1 keep-alive), one
/// request in flight.
pub struct OtlpDestination {
    host: String,
    port: u16,
    path: String,
    authority: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    headers: Vec<(HeaderName, HeaderValue)>,
    compression: Compression,
    body: BodyFormat,
    timeout: Duration,
    conn: tokio::sync::Mutex<Conn>,
    counters: Arc<OtlpCounters>,
}

impl OtlpDestination {
    /// Checks the configuration and loads the TLS material and token;
    /// connects at the first batch.
    pub fn new(cfg: &OtlpConfig) -> Result<Self, OtlpError> {
        let uri: Uri = cfg
            .endpoint
            .parse()
            .map_err(|e| invalid("endpoint", format!("{:?}: {e}", cfg.endpoint)))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid("endpoint", "an http:// or https:// URL")),
        };
        let host = uri
            .host()
            .ok_or_else(|| invalid("endpoint", "no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !https && !client_tls::is_loopback(&host) {
            return Err(invalid(
                "endpoint",
                "http:// (plaintext) only to a loopback address; use https://",
            ));
        }
        if uri.query().is_some() {
            return Err(invalid("endpoint", "no query string"));
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = match uri.path() {
            "" | "/" => LOGS_PATH.to_owned(),
            p => p.to_owned(),
        };
        let authority = match (uri.port_u16(), host.contains(':')) {
            (Some(p), true) => format!("[{host}]:{p}"),
            (Some(p), false) => format!("{host}:{p}"),
            (None, true) => format!("[{host}]"),
            (None, false) => host.clone(),
        };
        let tls = if https {
            let config = client_tls::client_config(
                cfg.ca_file.as_deref(),
                cfg.client_cert.as_deref(),
                cfg.client_key.as_deref(),
                &[b"http/1.1"],
            )?;
            Some((
                tokio_rustls::TlsConnector::from(config),
                client_tls::server_name(&host)?,
            ))
        } else {
            if cfg.ca_file.is_some() || cfg.client_cert.is_some() {
                return Err(invalid("endpoint", "ca_file and client_cert need https://"));
            }
            None
        };
        let headers = request_headers(cfg)?;
        if cfg.timeout_ms == 0 {
            return Err(invalid("timeout_ms", "must be > 0"));
        }
        Ok(Self {
            host,
            port,
            path,
            authority,
            tls,
            headers,
            compression: cfg.compression,
            body: cfg.body,
            timeout: Duration::from_millis(cfg.timeout_ms),
            conn: tokio::sync::Mutex::new(Conn {
                sender: None,
                not_before: None,
            }),
            counters: Arc::new(OtlpCounters::default()),
        })
    }

    pub fn counters(&self) -> Arc<OtlpCounters> {
        Arc::clone(&self.counters)
    }

    /// The request body of a batch (protobuf, compressed as configured).
    pub fn encode(&self, batch: &[Value]) -> Bytes {
        let observed = chrono::Utc::now()
            .timestamp_nanos_opt()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        let mut notes = convert::Notes::default();
        let req = convert::request(batch, self.body, observed, &mut notes);
        add(&self.counters.bad_ids, notes.bad_ids);
        add(&self.counters.bad_times, notes.bad_times);
        let raw = req.encode_to_vec();
        match self.compression {
            Compression::None => Bytes::from(raw),
            Compression::Gzip => {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(raw.len() / 4),
                    flate2::Compression::fast(),
                );
                // Writing to a Vec cannot fail.
                let _ = gz.write_all(&raw);
                Bytes::from(gz.finish().unwrap_or_default())
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let sender = if let Some((connector, name)) = &self.tls {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| format!("HTTP: {e}"))?;
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "otlp connection closed");
                }
            });
            sender
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("HTTP: {e}"))?;
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(%error, "otlp connection closed");
                }
            });
            sender
        };
        add(&self.counters.connects, 1);
        Ok(sender)
    }

    /// One request: the status, its `Retry-After`, and the body.
    async fn exchange(
        &self,
        conn: &mut Conn,
        body: Bytes,
    ) -> Result<(StatusCode, Option<Duration>, Bytes), String> {
        let mut sender = match conn.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender.ready().await.map_err(|e| format!("HTTP: {e}"))?;
        let mut req = Request::post(&self.path)
            .header(header::HOST, &self.authority)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(
                header::USER_AGENT,
                concat!("aitrail-collector/", env!("CARGO_PKG_VERSION")),
            );
        if self.compression == Compression::Gzip {
            req = req.header(header::CONTENT_ENCODING, "gzip");
        }
        for (n, v) in &self.headers {
            req = req.header(n, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        add(&self.counters.requests, 1);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        // Reusable once the answer is read whole.
        conn.sender = Some(sender);
        Ok((status, retry_after, body))
    }

    /// Sends one request for `batch` and classifies the answer.
    async fn post(&self, conn: &mut Conn, batch: &[Value]) -> Answer {
        let body = self.encode(batch);
        let len = body.len() as u64;
        let (status, retry_after, answer) =
            match tokio::time::timeout(self.timeout, self.exchange(conn, body)).await {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => {
                    conn.sender = None;
                    return Answer::Retry(e);
                }
                Err(_) => {
                    conn.sender = None;
                    return Answer::Retry(format!(
                        "no answer within {} ms",
                        self.timeout.as_millis()
                    ));
                }
            };
        if let Some(wait) = retry_after {
            add(&self.counters.retry_after, 1);
            conn.not_before = Some(Instant::now() + wait.min(MAX_RETRY_AFTER));
        }
        if status.is_success() {
            match ExportLogsServiceResponse::decode(answer.as_ref()) {
                Ok(r) => {
                    if let Some(p) = r.partial_success.filter(|p| p.rejected_log_records > 0) {
                        let n = u64::try_from(p.rejected_log_records).unwrap_or(0);
                        add(&self.counters.records_rejected, n);
                        tracing::warn!(
                            rejected = n,
                            message = %crate::forward::event_fields::cut(&p.error_message, 300),
                            "otlp receiver rejected log records"
                        );
                    }
                }
                Err(_) => add(&self.counters.bad_responses, 1),
            }
            add(&self.counters.bytes_sent, len);
            return Answer::Ok;
        }
        let message = RpcStatus::decode(answer.as_ref())
            .ok()
            .map(|s| s.message)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
        let what = format!(
            "{status}: {}",
            crate::forward::event_fields::cut(message.trim(), 300)
        );
        match status.as_u16() {
            413 => Answer::TooLarge,
            401 | 403 | 404 | 407 | 408 | 429 => Answer::Retry(what),
            400..=499 => Answer::Reject(what),
            _ => Answer::Retry(what),
        }
    }

    async fn send_batch(&self, batch: &[Value]) -> Result<(), ForwardError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.lock().await;
        if let Some(t) = conn.not_before {
            let now = Instant::now();
            if t > now {
                add(&self.counters.batches_failed, 1);
                return Err(ForwardError::Retry(format!(
                    "otlp {}: Retry-After: {} ms left",
                    self.authority,
                    (t - now).as_millis()
                )));
            }
            conn.not_before = None;
        }
        // 413: split, depth-first, in order; a stack keeps it iterative.
        let mut todo = vec![batch];
        while let Some(part) = todo.pop() {
            match self.post(&mut conn, part).await {
                Answer::Ok => {
                    add(&self.counters.records_sent, part.len() as u64);
                }
                Answer::TooLarge if part.len() > 1 => {
                    add(&self.counters.splits, 1);
                    let (a, b) = part.split_at(part.len() / 2);
                    todo.push(b);
                    todo.push(a);
                }
                Answer::TooLarge => {
                    add(&self.counters.batches_rejected, 1);
                    return Err(ForwardError::Reject(format!(
                        "otlp {}: one event is larger than the receiver accepts (413)",
                        self.authority
                    )));
                }
                Answer::Reject(what) => {
                    add(&self.counters.batches_rejected, 1);
                    return Err(ForwardError::Reject(format!(
                        "otlp {}: {what}",
                        self.authority
                    )));
                }
                Answer::Retry(what) => {
                    add(&self.counters.batches_failed, 1);
                    return Err(ForwardError::Retry(format!(
                        "otlp {}: {what}",
                        self.authority
                    )));
                }
            }
        }
        add(&self.counters.batches_sent, 1);
        Ok(())
    }
}

/// `Authorization` from `token`/`token_file`, then `headers`; all marked
/// sensitive (hyper keeps them out of its debug output).
fn request_headers(cfg: &OtlpConfig) -> Result<Vec<(HeaderName, HeaderValue)>, OtlpError> {
    let mut headers = Vec::new();
    let token = match (&cfg.token, &cfg.token_file) {
        (Some(t), None) => Some(t.clone()),
        (None, Some(p)) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| invalid("token_file", format!("{}: {e}", p.display())))?
                .trim_end()
                .to_owned(),
        ),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(invalid("token", "token or token_file, not both")),
    };
    if let Some(t) = token {
        if t.is_empty() {
            return Err(invalid("token", "empty"));
        }
        let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| invalid("token", "not a valid header value"))?;
        v.set_sensitive(true);
        headers.push((header::AUTHORIZATION, v));
    }
    for (name, value) in &cfg.headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid("headers", format!("{name:?} is not a header name")))?;
        if [
            header::HOST,
            header::CONTENT_TYPE,
            header::CONTENT_ENCODING,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::CONNECTION,
        ]
        .contains(&n)
        {
            return Err(invalid(
                "headers",
                format!("{name} is set by the forwarder"),
            ));
        }
        let mut v = HeaderValue::from_str(value)
            .map_err(|_| invalid("headers", format!("{name}: not a valid header value")))?;
        v.set_sensitive(true);
        headers.push((n, v));
    }
    Ok(headers)
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = (at.to_utc() - chrono::Utc::now()).num_milliseconds();
    Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

impl Destination for OtlpDestination {
    fn kind(&self) -> &'static str {
        "otlp"
    }

    fn send<'a>(&'a self, batch: &'a [Value]) -> SendFuture<'a> {
        Box::pin(self.send_batch(batch))
    }
}

#[cfg(test)]
mod tests;
