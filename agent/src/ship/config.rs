//! The collector sink's settings: `collector:https://HOST:PORT` names the
//! collector; the agent config's `[collector]` section holds the rest.

use std::{fmt, path::PathBuf};

use serde::Deserialize;

use super::spool::FsyncPolicy;

/// `[collector]` in the agent config: how events are batched, spooled and
/// sent to every `collector:` sink. Each key has the default shown in
/// `Default` (and in config/agent.toml).
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorSection {
    /// Bearer token sent with every batch (prefer `token_file`).
    pub token: Option<String>,
    /// File holding the token (trailing whitespace ignored).
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate(s) the collector's certificate must chain to.
    /// Without it the system's roots in /etc/ssl/certs are used.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mTLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// A batch is closed at this many events, …
    pub batch_max_events: u32,
    /// … at this many uncompressed bytes, …
    pub batch_max_bytes: u32,
    /// … or this long after its first event.
    pub batch_max_wait_ms: u64,
    /// A batch holding a finding closes at most this long after the
    /// finding joined it (so an alert is searchable at the collector within
    /// about a second, while a burst of findings still shares batches).
    pub finding_max_wait_ms: u64,
    /// Segments waiting for the collector's ack.
    pub spool_dir: PathBuf,
    /// Bound of the spool (see `ship::spool` for the full policy).
    pub spool_max_bytes: u64,
    /// Segments older than this are dropped (counted as `expired`).
    pub spool_max_age_secs: u64,
    /// `segment` (fsync each segment) or `never` (see `ship::spool`).
    pub fsync: FsyncPolicy,
    /// Longest wait between two retries (exponential backoff with jitter
    /// from 200 ms up to this).
    pub retry_max_ms: u64,
    /// At shutdown, how long the sender keeps sending what is spooled;
    /// what is left stays in the spool for the next start.
    pub shutdown_drain_ms: u64,
    /// Connect and request timeout.
    pub timeout_ms: u64,
}

impl Default for CollectorSection {
    fn default() -> Self {
        Self {
            token: None,
            token_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            batch_max_events: 5000,
            batch_max_bytes: 4 * 1024 * 1024,
            batch_max_wait_ms: 2000,
            finding_max_wait_ms: 100,
            spool_dir: PathBuf::from("/var/lib/aitrail/spool"),
            spool_max_bytes: 1024 * 1024 * 1024,
            spool_max_age_secs: 7 * 24 * 3600,
            fsync: FsyncPolicy::Segment,
            retry_max_ms: 30_000,
            shutdown_drain_ms: 5000,
            timeout_ms: 30_000,
        }
    }
}

impl fmt::Debug for CollectorSection {
    /// The token is a secret: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectorSection")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("spool_dir", &self.spool_dir)
            .finish_non_exhaustive()
    }
}

/// A collector sink: where, and how.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CollectorSpec {
    /// As given, `https://HOST[:PORT][/]`.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub settings: CollectorSection,
}

#[derive(Debug, thiserror::Error)]
pub enum ShipConfigError {
    #[error("collector url `{url}`: {problem}")]
    Url { url: String, problem: &'static str },
    #[error("collector sink: {problem}")]
    Invalid { problem: String },
}

/// The path batches are posted to.
pub const INGEST_PATH: &str = "/v1/ingest";

impl CollectorSpec {
    /// Parses `https://HOST[:PORT][/]` (an IPv6 host in brackets), with the
    /// default settings.
    pub fn from_url(url: &str) -> Result<Self, ShipConfigError> {
        let bad = |problem| ShipConfigError::Url {
            url: url.to_owned(),
            problem,
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("must start with https:// (events are never sent in clear)"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') {
            return Err(bad("no path expected: batches go to /v1/ingest"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 443,
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
        };
        Ok(Self {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            settings: CollectorSection::default(),
        })
    }

    /// Checks the settings that need no file access.
    pub fn validate(&self) -> Result<(), ShipConfigError> {
        let s = &self.settings;
        let invalid = |problem: &str| {
            Err(ShipConfigError::Invalid {
                problem: problem.to_owned(),
            })
        };
        if s.token.is_some() && s.token_file.is_some() {
            return invalid("give token or token_file, not both");
        }
        if s.client_cert.is_some() != s.client_key.is_some() {
            return invalid("client_cert and client_key go together");
        }
        if s.token.is_none() && s.token_file.is_none() && s.client_cert.is_none() {
            return invalid(
                "no credentials: set [collector] token_file (or token) and/or client_cert + client_key",
            );
        }
        if s.batch_max_events == 0 || s.batch_max_bytes == 0 || s.batch_max_wait_ms == 0 {
            return invalid("batch_max_events, batch_max_bytes and batch_max_wait_ms must be > 0");
        }
        if s.spool_max_bytes < 2 * u64::from(s.batch_max_bytes) {
            return invalid("spool_max_bytes must hold at least two full batches");
        }
        if s.spool_max_age_secs == 0 || s.timeout_ms == 0 || s.retry_max_ms < 200 {
            return invalid("spool_max_age_secs and timeout_ms must be > 0, retry_max_ms ≥ 200");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = CollectorSpec::from_url("https://c.example:8443").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("c.example", 8443));
        let s = CollectorSpec::from_url("https://c.example/").unwrap();
        assert_eq!(s.port, 443);
        let s = CollectorSpec::from_url("https://[::1]:9000").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("::1", 9000));
        for bad in [
            "http://c:1",
            "https://",
            "https://c:x",
            "https://c:1/other",
            "https://[::1",
        ] {
            assert!(CollectorSpec::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_are_required_and_the_token_is_never_printed() {
        let mut s = CollectorSpec::from_url("https://c:1").unwrap();
        assert!(s.validate().is_err());
        s.settings.token = Some("sekrit-token".into());
        s.validate().unwrap();
        assert!(!format!("{s:?}").contains("sekrit"));
        s.settings.client_cert = Some("/c.pem".into());
        assert!(s.validate().is_err(), "cert without key");
    }
}
