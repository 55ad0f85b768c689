//! OTLP/HTTP logs (`type = "otlp"`): each batch is one
//! `ExportLogsServiceRequest` (OTLP protobuf, opentelemetry-proto v1.10.0
//! via the `opentelemetry-proto` crate), `POST`ed to the logs endpoint with
//! `Content-Type: application/x-protobuf`, gzip-compressed by default, over
//! the framework's HTTP client ([`super::client`]).
//!
//! The answer decides what the framework does with the batch:
//! - 2xx: sent. An `ExportLogsPartialSuccess` with `rejected_log_records`
//!   is not retried (OTLP says so): the rejected records are counted in
//!   `events_rejected` and the receiver's message logged.
//! - 413, 400 and the other 4xx: rejected, with the receiver's
//!   `google.rpc.Status` message; the framework splits the batch down to
//!   the events that are refused (a 413 batch thus goes in halves) —
//!   except 401, 403, 404, 407, 408, 425 and 429, which say nothing about
//!   the batch (credentials, a wrong endpoint, a timeout, a busy
//!   receiver) and are retried.
//! - every 5xx: retried. OTLP lists 429/502/503/504 as retryable; 500 is
//!   retried too, because dropping an audit trail on a broken receiver is
//!   worse than waiting for it (the stall shows in the counters). A
//!   `Retry-After` (seconds or an HTTP date, at most 5 minutes) is
//!   honoured: until then, `send` answers Retry without a request.

pub mod convert;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper::{
    header::{self, HeaderName, HeaderValue},
    Method,
};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use serde::Deserialize;
use serde_json::Value;

pub use self::convert::BodyFormat;
use super::{
    add,
    client::{Compression, HttpClient, Response, Target},
    config::ForwardSpec,
    event_fields::cut,
    Destination, ForwardConfigError, ForwardCounters, ForwardError, SendFuture,
};

/// The OTLP/HTTP path of logs, used when the URL has none.
pub const LOGS_PATH: &str = "/v1/logs";
/// Largest answer read (an export response or a `google.rpc.Status`).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_mins(5);

/// The own keys of `type = "otlp"`. The endpoint is the forwarder's `url`
/// (or `endpoint`), e.g. `https://otel.example.com:4318/v1/logs` (a URL
/// with no path gets `/v1/logs`); `token`/`token_file` is sent as
/// `Authorization: Bearer …`; `ca_file`, `client_cert`/`client_key` and
/// `timeout_ms` are the forwarder's common keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Extra request headers (a tenant, an API key header).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `gzip` (default) or `none`.
    #[serde(default = "gzip")]
    pub compression: Compression,
    /// `json` (default: `body` is the event's JSON text) or `map` (the
    /// event as a structured `kvlist_value`).
    #[serde(default)]
    pub body: BodyFormat,
}

fn gzip() -> Compression {
    Compression::Gzip
}

/// Headers the forwarder sets itself.
const OWN_HEADERS: [HeaderName; 7] = [
    header::HOST,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::AUTHORIZATION,
];

impl Options {
    /// Checks the forwarder's own keys (no file is read).
    pub fn parse(spec: &ForwardSpec) -> Result<Self, ForwardConfigError> {
        let o: Self = spec.options()?;
        let target = Target::parse(spec)?;
        if !target.tls && (spec.ca_file.is_some() || spec.client_cert.is_some()) {
            return Err(spec.invalid("url", "ca_file and client_cert need https://"));
        }
        for (name, value) in &o.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| spec.invalid("headers", format!("{name:?} is not a header name")))?;
            if OWN_HEADERS.contains(&n) {
                return Err(spec.invalid(
                    "headers",
                    format!(
                        "{name} is set by the forwarder (the token goes in token or token_file)"
                    ),
                ));
            }
            HeaderValue::from_str(value).map_err(|_| {
                spec.invalid("headers", format!("{name}: not a valid header value"))
            })?;
        }
        if let Some(t) = &spec.token {
            HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| spec.invalid("token", "not a valid header value"))?;
        }
        Ok(o)
    }
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

/// An OTLP/HTTP logs receiver. One connection (HTTP/1.1 keep-alive), one
/// request in flight.
pub struct OtlpDestination {
    client: HttpClient,
    /// Appended to the URL's path: `/v1/logs` when it has none.
    path: &'static str,
    headers: Vec<(HeaderName, String)>,
    options: Options,
    /// No request before this (`Retry-After`).
    not_before: Mutex<Option<Instant>>,
    counters: Arc<ForwardCounters>,
}

impl OtlpDestination {
    /// Checks the configuration and loads the TLS material; connects at
    /// the first batch.
    pub fn new(
        spec: &ForwardSpec,
        counters: Arc<ForwardCounters>,
    ) -> Result<Self, ForwardConfigError> {
        let options = Options::parse(spec)?;
        let client = HttpClient::new(spec, MAX_RESPONSE_BYTES)?.counting(Arc::clone(&counters));
        let path = if client.target().base_path.is_empty() {
            LOGS_PATH
        } else {
            ""
        };
        let mut headers = vec![(header::CONTENT_TYPE, "application/x-protobuf".to_owned())];
        if let Some(t) = &spec.token {
            headers.push((header::AUTHORIZATION, format!("Bearer {t}")));
        }
        for (name, value) in &options.headers {
            // Checked by Options::parse.
            if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                headers.push((n, value.clone()));
            }
        }
        Ok(Self {
            client,
            path,
            headers,
            options,
            not_before: Mutex::new(None),
            counters,
        })
    }

    /// The request of a batch, protobuf-encoded and not compressed, and
    /// what the conversion left out.
    fn request(&self, batch: &[Value]) -> (Vec<u8>, convert::Notes) {
        let observed = chrono::Utc::now()
            .timestamp_nanos_opt()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        let mut notes = convert::Notes::default();
        let req = convert::request(batch, self.options.body, observed, &mut notes);
        (req.encode_to_vec(), notes)
    }

    /// The request body of a batch (protobuf, compressed as configured).
    pub fn encode(&self, batch: &[Value]) -> bytes::Bytes {
        let mut headers = Vec::new();
        self.options
            .compression
            .apply(self.request(batch).0, &mut headers)
    }

    fn wait_left(&self) -> Option<Duration> {
        let mut slot = self
            .not_before
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let left = (*slot)?.checked_duration_since(Instant::now());
        if left.is_none() {
            *slot = None;
        }
        left
    }

    async fn send_batch(&self, batch: &[Value]) -> Result<(), ForwardError> {
        if batch.is_empty() {
            return Ok(());
        }
        let authority = &self.client.target().authority;
        if let Some(left) = self.wait_left() {
            return Err(ForwardError::Retry(format!(
                "otlp {authority}: Retry-After: {} ms left",
                left.as_millis()
            )));
        }
        let (raw, notes) = self.request(batch);
        let mut headers = self.headers.clone();
        let body = self.options.compression.apply(raw, &mut headers);
        let resp = self
            .client
            .request(Method::POST, self.path, &headers, body)
            .await?;
        if let Some(wait) = resp
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
        {
            let wait = wait.min(MAX_RETRY_AFTER);
            tracing::debug!(%authority, ?wait, "otlp receiver asks to wait (Retry-After)");
            *self
                .not_before
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now() + wait);
        }
        if resp.status.is_success() {
            self.acknowledged(&resp, batch.len(), &notes);
            return Ok(());
        }
        let message = RpcStatus::decode(resp.body.as_ref())
            .ok()
            .map(|s| s.message)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| resp.snippet());
        let what = format!(
            "otlp {authority}: HTTP {}: {}",
            resp.status.as_u16(),
            cut(message.trim(), 300)
        );
        Err(match resp.status.as_u16() {
            401 | 403 | 404 | 407 | 408 | 425 | 429 => ForwardError::Retry(what),
            400..=499 => ForwardError::Reject(what),
            _ => ForwardError::Retry(what),
        })
    }

    /// Counts what a success answer says: records the receiver rejected
    /// (partial success: lost there, not retried), an answer that is not
    /// an export response, and the fields the conversion left out.
    fn acknowledged(&self, resp: &Response, events: usize, notes: &convert::Notes) {
        let c = &self.counters;
        add(&c.fields_dropped, notes.bad_ids + notes.bad_times);
        match ExportLogsServiceResponse::decode(resp.body.as_ref()) {
            Ok(r) => {
                if let Some(p) = r.partial_success.filter(|p| p.rejected_log_records > 0) {
                    // The framework takes these out of events_sent.
                    let n = u64::try_from(p.rejected_log_records)
                        .unwrap_or(0)
                        .min(events as u64);
                    add(&c.events_rejected, n);
                    tracing::warn!(
                        authority = %self.client.target().authority,
                        rejected = n,
                        message = %cut(&p.error_message, 300),
                        "otlp receiver rejected log records (counted in events_rejected)"
                    );
                }
            }
            Err(_) => add(&c.answers_unexpected, 1),
        }
    }
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
