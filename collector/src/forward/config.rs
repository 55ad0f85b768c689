//! `[[forward]]` tables of collector.toml: the keys every forwarder has
//! (serde layer [`ForwardSection`], validated into [`ForwardSpec`]); each
//! type's own keys stay in `options` and are parsed by its module.

use std::{path::PathBuf, time::Duration};

use serde::{de::DeserializeOwned, Deserialize};

use crate::store::forward::{Filter, Registration};

/// Event kinds a filter may name (docs/events.md).
pub const KINDS: &[&str] = &[
    "llm.call",
    "tool.call",
    "process.exec",
    "process.exit",
    "file.open",
    "net.connect",
    "finding",
    "agent.health",
];

#[derive(Debug, thiserror::Error)]
pub enum ForwardConfigError {
    #[error("forward {name:?}: {field}: {problem}")]
    Invalid {
        name: String,
        field: &'static str,
        problem: String,
    },
    #[error("forward {name:?}: {path}: cannot read")]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a forwarder seen for the first time starts.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// From the oldest stored event (a backfill).
    #[default]
    Oldest,
    /// After the newest stored event: only what arrives from now on.
    Newest,
}

/// One `[[forward]]` table as written. No `deny_unknown_fields` here:
/// every key not listed lands in `options`, and the type's own parser
/// refuses the ones it does not know.
#[derive(Clone, Debug, Deserialize)]
pub struct ForwardSection {
    /// Unique; names the cursor in the store (renaming restarts it).
    pub name: String,
    /// `splunk_hec`, `elasticsearch`, `opensearch`, `http`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Where to send (`https://…`; `http://` only to a loopback address).
    #[serde(alias = "endpoint")]
    pub url: String,
    /// Secret for the destination (HEC token, Elasticsearch API key,
    /// bearer token); prefer `token_file` (mode 0600).
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// PEM CA the destination's certificate must chain to (default: the
    /// system bundle).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for destinations that want mTLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Only these event kinds (default: every kind the format expresses).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only events at least this severe (`info` … `critical`).
    #[serde(default)]
    pub min_severity: Option<String>,
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: u32,
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: u64,
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// Backoff cap: waits start at 200 ms and double up to this.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Give a batch up after this many failed sends (counted in
    /// `events_dropped`); 0 retries forever.
    #[serde(default)]
    pub retry_max_attempts: u32,
    /// Connect + request + answer, per attempt.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub start_at: StartAt,
    /// How long retention keeps events this forwarder has not sent, past
    /// `store.retention_days`, before deleting them anyway (counted).
    #[serde(default = "default_hold_days")]
    pub hold_days: u32,
    /// The type's own keys.
    #[serde(flatten)]
    pub options: toml::Table,
}

fn default_batch_max_events() -> u32 {
    500
}
fn default_batch_max_bytes() -> u64 {
    4 * 1024 * 1024
}
fn default_batch_max_wait_ms() -> u64 {
    1000
}
fn default_retry_max_ms() -> u64 {
    30_000
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_hold_days() -> u32 {
    7
}

/// A validated forwarder configuration. Its `Debug` leaves the token and
/// the values of the type's own keys (a password may be one) out.
#[derive(Clone)]
pub struct ForwardSpec {
    pub name: String,
    pub kind: String,
    pub url: String,
    /// The token itself (read from `token_file` when given).
    pub token: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub filter: Filter,
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub batch_max_wait: Duration,
    pub retry_max: Duration,
    pub retry_max_attempts: u32,
    pub timeout: Duration,
    pub start_at: StartAt,
    pub hold: Duration,
    pub options: toml::Table,
}

impl std::fmt::Debug for ForwardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("filter", &self.filter)
            .field("batch_max_events", &self.batch_max_events)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("batch_max_wait", &self.batch_max_wait)
            .field("retry_max", &self.retry_max)
            .field("retry_max_attempts", &self.retry_max_attempts)
            .field("timeout", &self.timeout)
            .field("start_at", &self.start_at)
            .field("hold", &self.hold)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

pub fn severity_rank(s: &str) -> Option<u8> {
    Some(match s {
        "info" => 0,
        "low" => 1,
        "medium" => 2,
        "high" => 3,
        "critical" => 4,
        _ => return None,
    })
}

impl ForwardSection {
    pub fn validate(self) -> Result<ForwardSpec, ForwardConfigError> {
        let name = self.name.clone();
        let invalid = |field, problem: &str| ForwardConfigError::Invalid {
            name: name.clone(),
            field,
            problem: problem.to_owned(),
        };
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid("name", "1 to 64 of A-Z a-z 0-9 - _ ."));
        }
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid("token", "give token or token_file, not both"))
            }
            (Some(t), None) => Some(t.clone()),
            (None, Some(p)) => {
                let text =
                    std::fs::read_to_string(p).map_err(|source| ForwardConfigError::Read {
                        name: name.clone(),
                        path: p.clone(),
                        source,
                    })?;
                Some(text.trim_end().to_owned())
            }
            (None, None) => None,
        };
        if token.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("token", "empty"));
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(invalid(
                "client_cert",
                "give client_cert and client_key together",
            ));
        }
        let mut kinds = self.kinds.clone();
        kinds.sort();
        kinds.dedup();
        if let Some(k) = kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
            return Err(invalid(
                "kinds",
                &format!("unknown kind {k:?} (known: {})", KINDS.join(", ")),
            ));
        }
        let min_severity = match self.min_severity.as_deref() {
            None => 0,
            Some(s) => severity_rank(s)
                .ok_or_else(|| invalid("min_severity", "info, low, medium, high or critical"))?,
        };
        if self.batch_max_events == 0 || self.batch_max_events > 100_000 {
            return Err(invalid("batch_max_events", "1 to 100000"));
        }
        if self.batch_max_bytes < 1024 || self.batch_max_bytes > 256 * 1024 * 1024 {
            return Err(invalid("batch_max_bytes", "1 KiB to 256 MiB"));
        }
        if self.batch_max_wait_ms > 3_600_000 {
            return Err(invalid("batch_max_wait_ms", "at most one hour"));
        }
        if self.retry_max_ms < 200 {
            return Err(invalid("retry_max_ms", "at least 200"));
        }
        if self.timeout_ms < 100 {
            return Err(invalid("timeout_ms", "at least 100"));
        }
        if self.hold_days > 3650 {
            return Err(invalid("hold_days", "at most 3650"));
        }
        Ok(ForwardSpec {
            name: self.name,
            kind: self.kind,
            url: self.url,
            token,
            ca_file: self.ca_file,
            client_cert: self.client_cert,
            client_key: self.client_key,
            filter: Filter {
                kinds,
                min_severity,
            },
            batch_max_events: self.batch_max_events as usize,
            batch_max_bytes: usize::try_from(self.batch_max_bytes).unwrap_or(usize::MAX),
            batch_max_wait: Duration::from_millis(self.batch_max_wait_ms),
            retry_max: Duration::from_millis(self.retry_max_ms),
            retry_max_attempts: self.retry_max_attempts,
            timeout: Duration::from_millis(self.timeout_ms),
            start_at: self.start_at,
            hold: Duration::from_secs(u64::from(self.hold_days) * 86_400),
            options: self.options,
        })
    }
}

impl ForwardSpec {
    pub fn invalid(&self, field: &'static str, problem: impl Into<String>) -> ForwardConfigError {
        ForwardConfigError::Invalid {
            name: self.name.clone(),
            field,
            problem: problem.into(),
        }
    }

    /// The type's own keys as `T` (which should deny unknown fields).
    pub fn options<T: DeserializeOwned>(&self) -> Result<T, ForwardConfigError> {
        toml::Value::Table(self.options.clone())
            .try_into()
            .map_err(|e: toml::de::Error| self.invalid("options", e.message().to_owned()))
    }

    /// A forwarder whose format cannot express some kinds: when `kinds` is
    /// not set, only the others are sent; naming one of them is an error.
    pub fn restrict_kinds(
        &mut self,
        unsupported: &[&str],
        format: &str,
    ) -> Result<(), ForwardConfigError> {
        if unsupported.is_empty() {
            return Ok(());
        }
        if self.filter.kinds.is_empty() {
            self.filter.kinds = KINDS
                .iter()
                .filter(|k| !unsupported.contains(k))
                .map(|k| (*k).to_owned())
                .collect();
            return Ok(());
        }
        if let Some(k) = self
            .filter
            .kinds
            .iter()
            .find(|k| unsupported.contains(&k.as_str()))
        {
            return Err(self.invalid("kinds", format!("format {format} cannot express {k}")));
        }
        Ok(())
    }

    pub fn registration(&self) -> Registration {
        Registration {
            name: self.name.clone(),
            filter: self.filter.clone(),
            hold_ns: i64::try_from(self.hold.as_nanos()).unwrap_or(i64::MAX),
            start_at_newest: self.start_at == StartAt::Newest,
        }
    }
}
