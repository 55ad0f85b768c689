//! Forwarders: the collector sends stored events on to other systems.
//!
//! This file holds only the contract between the forwarding framework
//! (cursor, batching, retries, counters — on the `fwd` branch, which owns
//! this file) and the destinations of the `fwd2` branch: syslog RFC 5424
//! and CEF over TLS ([`syslog`], [`cef`]) and OTLP/HTTP logs ([`otlp`]).

pub mod cef;
pub mod client_tls;
pub mod event_fields;
pub mod otlp;
pub mod syslog;

/// What [`Destination::send`] returns.
pub type SendFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ForwardError>> + Send + 'a>>;

/// One place events are forwarded to.
pub trait Destination: Send + Sync {
    /// e.g. `"syslog"`, `"otlp"`.
    fn kind(&self) -> &'static str;
    /// Sends one batch of stored events (as stored: one JSON object each,
    /// oldest first). Ok only when the destination acknowledged the whole
    /// batch.
    fn send<'a>(&'a self, batch: &'a [serde_json::Value]) -> SendFuture<'a>;
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Network, timeouts, 429, 5xx: the same batch is sent again later.
    #[error("retryable: {0}")]
    Retry(String),
    /// Refused for good: counted, skipped.
    #[error("rejected: {0}")]
    Reject(String),
}
