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
//!   the next one (counted in `events_resent`; duplicates carry the same
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

use std::{collections::VecDeque, sync::Arc, time::Duration};

use hyper::Uri;
use rustls_pki_types::ServerName;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;

use self::conn::{Broken, Peer, Stream};
use super::{
    add,
    client::{is_loopback, tls_config},
    config::ForwardSpec,
    Destination, ForwardConfigError, ForwardCounters, ForwardError, SendFuture,
};

/// IANA's example enterprise number (RFC 5612): replace it with your
/// organisation's own private enterprise number.
pub const DEFAULT_ENTERPRISE_ID: &str = "32473";
/// Syslog over TLS (RFC 5425), the port of a `tls://` URL without one.
pub const TLS_PORT: u16 = 6514;

/// The own keys of `type = "syslog"` and `type = "cef"`. The receiver is
/// the forwarder's `url`: `tls://HOST[:PORT]` (port 6514 by default), or
/// `tcp://HOST:PORT`, plaintext, accepted only to a loopback address (a
/// local relay). `ca_file`, `client_cert`/`client_key` and `timeout_ms`
/// (connect + write + TCP acknowledgement of one batch) are the
/// forwarder's common keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Name the receiver's certificate must carry; default: the URL's host.
    pub server_name: Option<String>,
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
    /// Messages kept to send again after a reset (see the module doc); 0
    /// turns that off.
    #[serde(default = "default_replay_bytes")]
    pub replay_bytes: usize,
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
fn default_replay_bytes() -> usize {
    1024 * 1024
}

const MIN_MESSAGE_BYTES: usize = 8192;
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
const MAX_REPLAY_BYTES: usize = 256 * 1024 * 1024;

/// RFC 5424 facility numbers.
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// Where a syslog forwarder connects, from its `url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receiver {
    pub tls: bool,
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
}

impl Receiver {
    pub fn parse(spec: &ForwardSpec) -> Result<Self, ForwardConfigError> {
        let bad = |problem: &str| spec.invalid("url", format!("{}: {problem}", spec.url));
        let uri: Uri = spec
            .url
            .parse()
            .map_err(|_| bad("not a URL (tls://HOST:PORT)"))?;
        let tls = match uri.scheme_str() {
            Some("tls") => true,
            Some("tcp") => false,
            _ => {
                return Err(bad(
                    "tls://HOST[:PORT] expected (or tcp:// to a loopback relay)",
                ))
            }
        };
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(bad("no credentials in the URL"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("no path or query expected"));
        }
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = match (uri.port_u16(), tls) {
            (Some(0), _) => return Err(bad("port 0")),
            (Some(p), _) => p,
            (None, true) => TLS_PORT,
            (None, false) => return Err(bad("tcp:// needs a port")),
        };
        if !tls && !is_loopback(&host) {
            return Err(bad(
                "tcp:// (plaintext) is allowed only to a loopback address; use tls://",
            ));
        }
        Ok(Self { tls, host, port })
    }
}

impl Options {
    /// Checks the forwarder's URL and own keys (no file is read).
    pub fn parse(spec: &ForwardSpec) -> Result<Self, ForwardConfigError> {
        let o: Self = spec.options()?;
        let receiver = Receiver::parse(spec)?;
        if spec.token.is_some() {
            return Err(spec.invalid(
                "token",
                "syslog carries no token; authenticate with client_cert",
            ));
        }
        if !receiver.tls
            && (spec.ca_file.is_some() || spec.client_cert.is_some() || o.server_name.is_some())
        {
            return Err(spec.invalid(
                "url",
                "ca_file, client_cert and server_name need a tls:// URL",
            ));
        }
        if !FACILITIES.contains(&o.facility.as_str()) {
            return Err(spec.invalid(
                "facility",
                format!("{:?}: one of {}", o.facility, FACILITIES.join(", ")),
            ));
        }
        let id = &o.enterprise_id;
        if id.is_empty()
            || id.len() > 24
            || !id.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            || id.starts_with('.')
            || id.ends_with('.')
            || id.contains("..")
        {
            return Err(spec.invalid(
                "enterprise_id",
                format!("{id:?}: a private enterprise number, digits and dots"),
            ));
        }
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&o.max_message_bytes) {
            return Err(spec.invalid(
                "max_message_bytes",
                format!("{MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES}"),
            ));
        }
        if o.replay_bytes > MAX_REPLAY_BYTES {
            return Err(spec.invalid("replay_bytes", format!("at most {MAX_REPLAY_BYTES}")));
        }
        if let Some(name) = &o.server_name {
            ServerName::try_from(name.as_str())
                .map_err(|_| spec.invalid("server_name", "not a DNS name or IP address"))?;
        }
        Ok(o)
    }
}

/// RFC 5424 with the event JSON, or CEF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Cef,
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
    counters: Arc<ForwardCounters>,
}

impl SyslogDestination {
    /// Checks the configuration and loads the TLS material; connects at
    /// the first batch.
    pub fn new(
        spec: &ForwardSpec,
        format: Format,
        counters: Arc<ForwardCounters>,
    ) -> Result<Self, ForwardConfigError> {
        let o = Options::parse(spec)?;
        let Receiver { tls, host, port } = Receiver::parse(spec)?;
        let tls = if tls {
            // The framework's TLS settings (CA, client certificate, ring),
            // without its HTTP ALPN.
            let mut config = (*tls_config(spec)?).clone();
            config.alpn_protocols.clear();
            let name = o.server_name.clone().unwrap_or_else(|| host.clone());
            let name = ServerName::try_from(name)
                .map_err(|_| spec.invalid("server_name", "not a DNS name or IP address"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        let facility = FACILITIES
            .iter()
            .position(|f| *f == o.facility)
            .and_then(|f| u8::try_from(f).ok())
            .unwrap_or(16);
        Ok(Self {
            format,
            host,
            port,
            tls,
            settings: format::Settings {
                facility,
                sd_id: format!("aitrail@{}", o.enterprise_id),
                max_message_bytes: o.max_message_bytes,
            },
            timeout: spec.timeout,
            replay_bytes: o.replay_bytes,
            link: tokio::sync::Mutex::new(Link::default()),
            counters,
        })
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
                    tracing::debug!(host = %self.host, "syslog receiver closed the connection");
                    link.stream = None;
                    link.window.clear();
                    link.window_bytes = 0;
                }
                Peer::Reset => {
                    add(&self.counters.connection_resets, 1);
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
                Err(e) => return Err(e),
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
            add(&self.counters.events_resent, link.window.len() as u64);
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
                add(&self.counters.connection_resets, 1);
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
        add(&self.counters.answers_unexpected, unexpected);
        let err = match outcome {
            Ok(Ok(())) => {
                link.remember(&buf, &ends, self.replay_bytes);
                // The framework counts the events and the batch.
                let c = &self.counters;
                add(&c.bytes_sent, buf.len() as u64);
                add(&c.events_trimmed, trimmed);
                add(&c.events_truncated, truncated);
                return Ok(());
            }
            Ok(Err(e)) => e,
            Err(_) => {
                add(&self.counters.connection_resets, 1);
                link.stream = None;
                link.owe_replay = true;
                format!("no acknowledgement within {} ms", self.timeout.as_millis())
            }
        };
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
