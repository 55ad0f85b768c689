//! Syslog destinations: RFC 5424 messages with the event JSON
//! (`type = "syslog"`) or CEF lines (`type = "cef"`), sent over TLS
//! (RFC 5425) with octet-counting framing, `LEN SP MSG`.
//!
//! Syslog has no application-level acknowledgement, so "sent" is defined
//! here as: every byte of the batch was written, flushed, and acknowledged
//! by the receiver's TCP (Linux `SIOCOUTQ` reads 0). What that leaves open
//! is data the receiver's kernel acknowledged but the syslog daemon had not
//! read when the connection went down. A socket closed with unread data
//! answers with a reset, so:
//!
//! - an orderly close (FIN, `close_notify`) means the daemon read all we
//!   sent: nothing to do;
//! - a reset, a failed write or a timeout may have discarded data: the last
//!   `replay_bytes` of messages sent on that connection are sent again on
//!   the next one (counted in `messages_resent`; duplicates carry the same
//!   event `id`).
//!
//! So a message is lost only when, at a reset, the receiver held more than
//! `replay_bytes` acknowledged-but-unread bytes, or when the collector
//! itself stops between a reset and the next connection (the replay window
//! is in memory). What the daemon had read but not yet written (its own
//! queues) is its durability, not ours: give it a disk-assisted queue.
//!
//! The batch whose write failed is returned as [`ForwardError::Retry`]; the
//! framework sends it again, so the messages of it that did get through
//! arrive twice.

mod conn;
pub mod format;

use std::{
    collections::{BTreeMap, VecDeque},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use rustls_pki_types::ServerName;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;

use self::conn::{Broken, Peer, Stream};
use super::{
    client_tls::{self, ClientTlsError},
    Destination, ForwardError, SendFuture,
};

/// IANA's example enterprise number (RFC 5612): replace it with your
/// organisation's own private enterprise number.
pub const DEFAULT_ENTERPRISE_ID: &str = "32473";

/// `[[forward]]` with `type = "syslog"` or `type = "cef"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `HOST:PORT` of the receiver (`[v6]:PORT`); 6514 is syslog over TLS.
    pub address: String,
    /// `tls` (default), or `tcp`: plaintext, accepted only to a loopback
    /// address (a local relay).
    #[serde(default)]
    pub transport: Transport,
    /// Name the receiver's certificate must carry; default: the host of
    /// `address`.
    pub server_name: Option<String>,
    /// PEM CA bundle; default: the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for receivers that require them.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// `kern` … `local7`; default `local0`.
    #[serde(default = "default_facility")]
    pub facility: String,
    /// Private enterprise number in the SD-ID `aitrail@<n>` (digits and
    /// dots); default 32473, IANA's example number.
    #[serde(default = "default_enterprise_id")]
    pub enterprise_id: String,
    /// Largest message (without the frame's length prefix), ≥ 8192; the
    /// receiver must accept it (rsyslog: `global(maxMessageSize=…)`).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Connect + write + acknowledgement of one batch.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Messages kept to send again after a reset (see the module doc); 0
    /// turns that off.
    #[serde(default = "default_replay_bytes")]
    pub replay_bytes: usize,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tls,
    Tcp,
}

fn default_facility() -> String {
    "local0".into()
}
fn default_enterprise_id() -> String {
    DEFAULT_ENTERPRISE_ID.into()
}
fn default_max_message_bytes() -> usize {
    64 * 1024
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_replay_bytes() -> usize {
    1024 * 1024
}

const MIN_MESSAGE_BYTES: usize = 8192;
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// RFC 5424 facility numbers.
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("syslog forwarder: {field}: {problem}")]
    Config {
        field: &'static str,
        problem: String,
    },
    #[error("syslog forwarder: TLS")]
    Tls(#[from] ClientTlsError),
}

fn invalid(field: &'static str, problem: impl Into<String>) -> SyslogError {
    SyslogError::Config {
        field,
        problem: problem.into(),
    }
}

/// RFC 5424 with the event JSON, or CEF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Cef,
}

/// Counters since start; every message is counted once, when the batch
/// that carries it is acknowledged.
#[derive(Debug, Default)]
pub struct SyslogCounters {
    pub batches_sent: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Batches that failed (returned as Retry).
    pub batches_failed: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Connections found reset (or failed mid-write, or timed out).
    pub resets: AtomicU64,
    /// Connections the receiver closed in order.
    pub closed_by_peer: AtomicU64,
    /// Messages sent again from the replay window after a reset.
    pub messages_resent: AtomicU64,
    /// Messages whose bulky parts were left out to fit (`omitted`).
    pub messages_trimmed: AtomicU64,
    /// Messages cut to `max_message_bytes` (`truncated`).
    pub messages_truncated: AtomicU64,
    /// Bytes the receiver sent us, discarded (a syslog receiver sends none).
    pub unexpected_bytes: AtomicU64,
}

impl SyslogCounters {
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BTreeMap::from([
            ("batches_sent", g(&self.batches_sent)),
            ("messages_sent", g(&self.messages_sent)),
            ("bytes_sent", g(&self.bytes_sent)),
            ("batches_failed", g(&self.batches_failed)),
            ("connects", g(&self.connects)),
            ("connect_failures", g(&self.connect_failures)),
            ("resets", g(&self.resets)),
            ("closed_by_peer", g(&self.closed_by_peer)),
            ("messages_resent", g(&self.messages_resent)),
            ("messages_trimmed", g(&self.messages_trimmed)),
            ("messages_truncated", g(&self.messages_truncated)),
            ("unexpected_bytes", g(&self.unexpected_bytes)),
        ])
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The connection and what was recently sent on it.
#[derive(Default)]
struct Link {
    stream: Option<Stream>,
    /// Frames (length prefix included) of the last acknowledged messages,
    /// oldest first, at most `replay_bytes` in all.
    window: VecDeque<Vec<u8>>,
    window_bytes: usize,
    /// The connection the window was sent on may have discarded some of
    /// it: send it again first on the next one.
    owe_replay: bool,
}

impl Link {
    /// Keeps the last frames of a batch just acknowledged (`ends` are the
    /// end offsets of the frames in `buf`).
    fn remember(&mut self, buf: &[u8], ends: &[usize], limit: usize) {
        if limit == 0 {
            return;
        }
        let mut first = ends.len();
        let mut bytes = 0;
        while first > 0 {
            let start = if first >= 2 { ends[first - 2] } else { 0 };
            let len = ends[first - 1] - start;
            if bytes + len > limit {
                break;
            }
            bytes += len;
            first -= 1;
        }
        for i in first..ends.len() {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            self.window.push_back(buf[start..ends[i]].to_vec());
            self.window_bytes += ends[i] - start;
        }
        while self.window_bytes > limit {
            let Some(f) = self.window.pop_front() else {
                break;
            };
            self.window_bytes -= f.len();
        }
    }
}

/// A syslog receiver over TLS (or loopback TCP). One connection, one batch
/// in flight.
pub struct SyslogDestination {
    format: Format,
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    settings: format::Settings,
    timeout: Duration,
    replay_bytes: usize,
    link: tokio::sync::Mutex<Link>,
    counters: Arc<SyslogCounters>,
}

impl SyslogDestination {
    /// `type = "syslog"`: RFC 5424 with the event JSON as MSG.
    pub fn syslog(cfg: &SyslogConfig) -> Result<Self, SyslogError> {
        Self::new(cfg, Format::Rfc5424)
    }

    /// `type = "cef"`: CEF lines as MSG.
    pub fn cef(cfg: &SyslogConfig) -> Result<Self, SyslogError> {
        Self::new(cfg, Format::Cef)
    }

    /// Checks the configuration and loads the TLS material; connects at
    /// the first batch.
    pub fn new(cfg: &SyslogConfig, format: Format) -> Result<Self, SyslogError> {
        let (host, port) = client_tls::split_host_port(&cfg.address)
            .ok_or_else(|| invalid("address", format!("{:?} is not HOST:PORT", cfg.address)))?;
        let facility = FACILITIES
            .iter()
            .position(|f| *f == cfg.facility)
            .ok_or_else(|| {
                invalid(
                    "facility",
                    format!("{:?}: one of {}", cfg.facility, FACILITIES.join(", ")),
                )
            })?;
        let id = &cfg.enterprise_id;
        if id.is_empty()
            || id.len() > 24
            || !id.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            || id.starts_with('.')
            || id.ends_with('.')
            || id.contains("..")
        {
            return Err(invalid(
                "enterprise_id",
                format!("{id:?}: a private enterprise number, digits and dots"),
            ));
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&cfg.max_message_bytes) {
            return Err(invalid(
                "max_message_bytes",
                format!("{MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES}"),
            ));
        }
        if cfg.timeout_ms == 0 {
            return Err(invalid("timeout_ms", "must be > 0"));
        }
        let tls = match cfg.transport {
            Transport::Tls => {
                let config = client_tls::client_config(
                    cfg.ca_file.as_deref(),
                    cfg.client_cert.as_deref(),
                    cfg.client_key.as_deref(),
                    &[],
                )?;
                let name = client_tls::server_name(cfg.server_name.as_deref().unwrap_or(&host))?;
                Some((tokio_rustls::TlsConnector::from(config), name))
            }
            Transport::Tcp => {
                if !client_tls::is_loopback(&host) {
                    return Err(invalid(
                        "transport",
                        "tcp (plaintext) only to a loopback address; use tls",
                    ));
                }
                if cfg.ca_file.is_some() || cfg.client_cert.is_some() || cfg.server_name.is_some() {
                    return Err(invalid(
                        "transport",
                        "ca_file, client_cert and server_name need transport = \"tls\"",
                    ));
                }
                None
            }
        };
        Ok(Self {
            format,
            host,
            port,
            tls,
            settings: format::Settings {
                facility: u8::try_from(facility).unwrap_or(16),
                sd_id: format!("aitrail@{id}"),
                max_message_bytes: cfg.max_message_bytes,
            },
            timeout: Duration::from_millis(cfg.timeout_ms),
            replay_bytes: cfg.replay_bytes,
            link: tokio::sync::Mutex::new(Link::default()),
            counters: Arc::new(SyslogCounters::default()),
        })
    }

    pub fn counters(&self) -> Arc<SyslogCounters> {
        Arc::clone(&self.counters)
    }

    /// The message of one event, unframed.
    pub fn message(&self, event: &Value) -> format::Message {
        match self.format {
            Format::Rfc5424 => format::rfc5424(event, &self.settings),
            Format::Cef => format::cef(event, &self.settings, env!("CARGO_PKG_VERSION")),
        }
    }

    async fn connect(&self) -> Result<Stream, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect to {}:{}: {e}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Stream::Tcp(tcp)),
            Some((connector, name)) => connector
                .connect(name.clone(), tcp)
                .await
                .map(|s| Stream::Tls(Box::new(s)))
                .map_err(|e| format!("TLS handshake with {}:{}: {e}", self.host, self.port)),
        }
    }

    /// Writes (the replay window, then) the batch and waits for its
    /// acknowledgement by the receiver's TCP.
    async fn deliver(
        &self,
        link: &mut Link,
        buf: &[u8],
        unexpected: &mut u64,
    ) -> Result<(), String> {
        if let Some(stream) = link.stream.as_mut() {
            match stream.probe(unexpected).await {
                Peer::Alive => {}
                Peer::Closed => {
                    add(&self.counters.closed_by_peer, 1);
                    tracing::debug!(host = %self.host, "syslog receiver closed the connection");
                    link.stream = None;
                    link.window.clear();
                    link.window_bytes = 0;
                }
                Peer::Reset => {
                    add(&self.counters.resets, 1);
                    tracing::warn!(host = %self.host, "syslog connection reset: the last messages will be sent again");
                    link.stream = None;
                    link.owe_replay = true;
                }
            }
        }
        if link.stream.is_none() {
            match self.connect().await {
                Ok(s) => {
                    add(&self.counters.connects, 1);
                    link.stream = Some(s);
                }
                Err(e) => {
                    add(&self.counters.connect_failures, 1);
                    return Err(e);
                }
            }
        }
        let Some(stream) = link.stream.as_mut() else {
            return Err("no connection".into());
        };
        let fail = |link: &mut Link, reset: bool, what: String| {
            link.stream = None;
            if reset {
                link.owe_replay = true;
            }
            what
        };
        if link.owe_replay && !link.window.is_empty() {
            let replay: Vec<u8> = link.window.iter().flatten().copied().collect();
            if let Err(e) = stream.write_all(&replay).await {
                return Err(fail(link, true, format!("write: {e}")));
            }
            add(&self.counters.messages_resent, link.window.len() as u64);
        }
        if let Err(e) = stream.write_all(buf).await {
            return Err(fail(link, true, format!("write: {e}")));
        }
        match stream.drain(unexpected).await {
            Ok(()) => {
                link.owe_replay = false;
                Ok(())
            }
            Err(e @ Broken::Closed { .. }) => {
                add(&self.counters.closed_by_peer, 1);
                // An orderly close: what was acknowledged before was read.
                // Unless a replay is still owed (it went out on this
                // connection and may not have been), forget the window.
                if !link.owe_replay {
                    link.window.clear();
                    link.window_bytes = 0;
                }
                Err(fail(link, false, e.to_string()))
            }
            Err(e @ Broken::Io(_)) => {
                add(&self.counters.resets, 1);
                Err(fail(
                    link,
                    true,
                    format!(
                        "{e}: {}",
                        std::error::Error::source(&e).map_or_else(String::new, ToString::to_string)
                    ),
                ))
            }
        }
    }

    async fn send_batch(&self, batch: &[Value]) -> Result<(), ForwardError> {
        let mut buf = Vec::new();
        let mut ends = Vec::with_capacity(batch.len());
        let (mut trimmed, mut truncated) = (0, 0);
        for event in batch {
            let m = self.message(event);
            trimmed += u64::from(m.trimmed);
            truncated += u64::from(m.truncated);
            format::frame(&m.bytes, &mut buf);
            ends.push(buf.len());
        }
        let mut unexpected = 0;
        let mut link = self.link.lock().await;
        let outcome =
            tokio::time::timeout(self.timeout, self.deliver(&mut link, &buf, &mut unexpected))
                .await;
        add(&self.counters.unexpected_bytes, unexpected);
        let err = match outcome {
            Ok(Ok(())) => {
                link.remember(&buf, &ends, self.replay_bytes);
                let c = &self.counters;
                add(&c.batches_sent, 1);
                add(&c.messages_sent, batch.len() as u64);
                add(&c.bytes_sent, buf.len() as u64);
                add(&c.messages_trimmed, trimmed);
                add(&c.messages_truncated, truncated);
                return Ok(());
            }
            Ok(Err(e)) => e,
            Err(_) => {
                add(&self.counters.resets, 1);
                link.stream = None;
                link.owe_replay = true;
                format!("no acknowledgement within {} ms", self.timeout.as_millis())
            }
        };
        add(&self.counters.batches_failed, 1);
        tracing::debug!(host = %self.host, error = %err, "syslog batch not delivered");
        Err(ForwardError::Retry(format!(
            "syslog {}:{}: {err}",
            self.host, self.port
        )))
    }
}

impl Destination for SyslogDestination {
    fn kind(&self) -> &'static str {
        match self.format {
            Format::Rfc5424 => "syslog",
            Format::Cef => "cef",
        }
    }

    fn send<'a>(&'a self, batch: &'a [Value]) -> SendFuture<'a> {
        Box::pin(self.send_batch(batch))
    }
}

#[cfg(test)]
mod tests;
