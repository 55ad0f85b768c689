//! Forwarders: the collector sends what it stores on to SIEMs and search
//! engines, each destination at its own pace.
//!
//! Design and guarantees:
//! - Each `[[forward]]` table is one forwarder: a [`Destination`] (a format
//!   and its transport) and a task ([`runner`]) that reads the **store**,
//!   not a queue fed by ingest. Its position is a durable cursor (the last
//!   `seq` it is done with, in the store's `forward_cursor` table, see
//!   [`crate::store::forward`]), moved only after the destination
//!   acknowledged a batch. So nothing is lost across a collector restart or
//!   a destination outage, and a slow or dead destination slows neither
//!   ingest nor the other forwarders: it only falls behind (`lag`).
//! - Batches close at `batch_max_events`, `batch_max_bytes` (of the stored
//!   events) or `batch_max_wait_ms` after their first event.
//! - [`ForwardError::Retry`] (network, timeout, 429, 5xx, auth): the same
//!   batch again after an exponential backoff with jitter, forever unless
//!   `retry_max_attempts` is set (then the batch is dropped and counted).
//! - [`ForwardError::Reject`] (the destination refused the data for good):
//!   a batch of several events is split in two and each half sent again,
//!   down to the single event that is refused; that event is counted in
//!   `events_rejected`, logged with its id, and skipped. The others go
//!   through, each exactly once.
//! - Exactly once, given a graceful stop: a batch is resent only when the
//!   collector stopped (crashed) between the destination's ack and the
//!   cursor's commit. Elasticsearch/OpenSearch dedupe a resend by `_id`
//!   (the event id); other receivers can dedupe on the event id.
//! - Counters per forwarder: [`ForwardCounters`], plain atomics reachable
//!   from the collector's state (`Running::forwarders`).
//!
//! Adding a destination type: a module with a type implementing
//! [`Destination`], a constructor taking the [`ForwardSpec`] (its own keys
//! are in `spec.options`; parse them with [`ForwardSpec::options`], which
//! refuses unknown keys), and one arm in [`build_destination`] and
//! [`prepare`].

pub mod cef;
pub mod client;
pub mod config;
pub mod ecs;
pub mod elastic;
pub mod event_fields;
pub mod format;
pub mod hec;
pub mod http;
pub mod ocsf;
pub mod otlp;
pub mod runner;
pub mod syslog;
#[cfg(test)]
mod tests;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

pub use self::config::{ForwardConfigError, ForwardSection, ForwardSpec, StartAt};
use self::format::Format;

pub type SendFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ForwardError>> + Send + 'a>>;

/// One destination: a format and its transport.
pub trait Destination: Send + Sync {
    /// Names the destination type in logs and counters, e.g. `"splunk_hec"`.
    fn kind(&self) -> &'static str;
    /// Sends one batch of stored events (as stored: one JSON object each, oldest first).
    /// Ok only when the destination acknowledged the whole batch.
    fn send<'a>(&'a self, batch: &'a [serde_json::Value]) -> SendFuture<'a>;
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Worth retrying: network errors, timeouts, 429, 5xx.
    #[error("retryable: {0}")]
    Retry(String),
    /// Refused for good (other 4xx, an event the format cannot express): counted, then skipped.
    #[error("rejected: {0}")]
    Reject(String),
}

/// Counters of one forwarder since the collector started (except
/// `events_expired`, which is the store's total for this forwarder).
#[derive(Debug, Default)]
pub struct ForwardCounters {
    /// Events the destination acknowledged.
    pub events_sent: AtomicU64,
    /// Events refused for good (a rejected single-event batch, or an item
    /// a bulk answer refused), skipped.
    pub events_rejected: AtomicU64,
    /// Events the destination already had (Elasticsearch `create` → 409 on
    /// a resend): delivered, not twice.
    pub events_duplicate: AtomicU64,
    /// Events given up after `retry_max_attempts` failed sends.
    pub events_dropped: AtomicU64,
    /// Events retention deleted before this forwarder sent them.
    pub events_expired: AtomicU64,
    /// Stored rows that were not JSON objects (never expected: ingest
    /// checks them), skipped.
    pub events_invalid: AtomicU64,
    /// Batches the destination acknowledged.
    pub batches_sent: AtomicU64,
    /// Failed sends that will be tried again.
    pub batches_retried: AtomicU64,
    /// Batches refused for good (each split until the refused events are
    /// found).
    pub batches_rejected: AtomicU64,
    /// Every failed send (retried or rejected) and every store error.
    pub errors: AtomicU64,
    /// The cursor: every event up to this `seq` is done with.
    pub cursor: AtomicU64,
    /// The newest `seq` in the store, when last read.
    pub newest: AtomicU64,
    /// `newest − cursor`: events stored and not yet done with.
    pub lag: AtomicU64,
    /// Unix time (ms) of the last acknowledged batch; 0 before the first.
    pub last_ack_unix_ms: AtomicU64,

    // What the transport saw. Every type counts `connects` and
    // `bytes_sent`; the others are counted by the types named.
    /// Connections opened (TCP, and TLS when used).
    pub connects: AtomicU64,
    /// Request bodies (after compression) the destination answered with
    /// success (HTTP 2xx), or syslog frames its TCP acknowledged.
    pub bytes_sent: AtomicU64,
    /// syslog, cef: connections found reset, failed mid-write or without
    /// an acknowledgement in time (each may have discarded what the
    /// receiver had not read yet: see `events_resent`).
    pub connection_resets: AtomicU64,
    /// syslog, cef: events sent again on a new connection after a reset
    /// (the replay window); the receiver may get them twice, same id.
    pub events_resent: AtomicU64,
    /// syslog: events sent with bulky parts left out to fit
    /// `max_message_bytes` (listed in the SD parameter `omitted`).
    pub events_trimmed: AtomicU64,
    /// syslog, cef: events cut at `max_message_bytes`.
    pub events_truncated: AtomicU64,
    /// otlp: event fields left out because the format could not carry
    /// them (a trace or span id that is not hex, a time that does not
    /// parse); the event itself was sent.
    pub fields_dropped: AtomicU64,
    /// Answers not understood: otlp, a success whose body is not an
    /// `ExportLogsServiceResponse` (taken as success); syslog, cef: reads
    /// that returned data (a syslog receiver sends none).
    pub answers_unexpected: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl ForwardCounters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub(crate) fn set_position(&self, cursor: i64, newest: i64) {
        let cursor = u64::try_from(cursor).unwrap_or(0);
        let newest = u64::try_from(newest).unwrap_or(0).max(cursor);
        self.cursor.store(cursor, Ordering::Relaxed);
        self.newest.store(newest, Ordering::Relaxed);
        self.lag.store(newest - cursor, Ordering::Relaxed);
    }
}

/// One configured forwarder: what the collector's state holds.
pub struct Forwarder {
    pub spec: ForwardSpec,
    pub destination: Arc<dyn Destination>,
    pub counters: Arc<ForwardCounters>,
}

impl Forwarder {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn kind(&self) -> &'static str {
        self.destination.kind()
    }
}

/// The destination types this collector can build, as `type = …` names
/// them.
pub const TYPES: &[&str] = &[
    "splunk_hec",
    "elasticsearch",
    "opensearch",
    "http",
    "syslog",
    "cef",
    "otlp",
];

/// Parses a forwarder's own keys without building anything (no file is
/// read), and narrows its default `kinds` to what its format expresses:
/// config validation calls it, so that a typo fails at load.
pub fn prepare(spec: &mut ForwardSpec) -> Result<(), ForwardConfigError> {
    if matches!(
        spec.kind.as_str(),
        "splunk_hec" | "elasticsearch" | "opensearch" | "http" | "otlp"
    ) {
        client::Target::parse(spec)?;
    }
    let format = match spec.kind.as_str() {
        "splunk_hec" => hec::Options::parse(spec)?.format,
        "elasticsearch" | "opensearch" => elastic::Options::parse(spec)?.format,
        "http" => http::Options::parse(spec)?.format,
        // RFC 5424 carries the event as stored in MSG, CEF has a mapping
        // for every kind, and OTLP carries the event as stored in `body`
        // (its attributes are OpenTelemetry's): all express every kind.
        "syslog" | "cef" => {
            syslog::Options::parse(spec)?;
            Format::Native
        }
        "otlp" => {
            otlp::Options::parse(spec)?;
            Format::Native
        }
        other => {
            return Err(spec.invalid(
                "type",
                format!("unknown type {other:?} (known: {})", TYPES.join(", ")),
            ))
        }
    };
    spec.restrict_kinds(format.unsupported_kinds(), format.name())
}

/// Builds the destination of `spec` (reads its CA, certificate and token
/// files). `counters` are the forwarder's, for destinations that count
/// per-item outcomes themselves (bulk answers).
pub fn build_destination(
    spec: &ForwardSpec,
    counters: &Arc<ForwardCounters>,
) -> Result<Arc<dyn Destination>, ForwardConfigError> {
    Ok(match spec.kind.as_str() {
        "splunk_hec" => Arc::new(hec::SplunkHec::new(spec, Arc::clone(counters))?),
        "elasticsearch" | "opensearch" => Arc::new(elastic::Bulk::new(spec, Arc::clone(counters))?),
        "http" => Arc::new(http::NdjsonHttp::new(spec, Arc::clone(counters))?),
        "syslog" => Arc::new(syslog::SyslogDestination::new(
            spec,
            syslog::Format::Rfc5424,
            Arc::clone(counters),
        )?),
        "cef" => Arc::new(syslog::SyslogDestination::new(
            spec,
            syslog::Format::Cef,
            Arc::clone(counters),
        )?),
        "otlp" => Arc::new(otlp::OtlpDestination::new(spec, Arc::clone(counters))?),
        other => {
            return Err(spec.invalid(
                "type",
                format!("unknown type {other:?} (known: {})", TYPES.join(", ")),
            ))
        }
    })
}

/// Builds every configured forwarder.
pub fn build_all(specs: &[ForwardSpec]) -> Result<Vec<Arc<Forwarder>>, ForwardConfigError> {
    specs
        .iter()
        .map(|spec| {
            let counters = Arc::new(ForwardCounters::default());
            let destination = build_destination(spec, &counters)?;
            Ok(Arc::new(Forwarder {
                spec: spec.clone(),
                destination,
                counters,
            }))
        })
        .collect()
}
