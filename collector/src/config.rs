//! collector.toml: the serde layer (`FileConfig`, documented defaults) and
//! its validation into the runtime [`Config`]. See config/collector.toml.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid collector config")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("collector config: {field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("collector config")]
    Forward(#[from] crate::forward::ForwardConfigError),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `HOST:PORT` to listen on (HTTPS only).
    pub listen: SocketAddr,
    pub tls: TlsSection,
    /// One entry per agent name. An agent authenticates with its token
    /// (`Authorization: Bearer …`). With no agents, ingest needs mTLS
    /// (`tls.client_ca`) and the agent is named by its certificate.
    #[serde(default)]
    pub agents: BTreeMap<String, AgentSection>,
    #[serde(default)]
    pub limits: LimitsSection,
    pub store: StoreSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Forwarders (`[[forward]]`), see docs/shipping.md.
    #[serde(default)]
    pub forward: Vec<crate::forward::ForwardSection>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain and private key of the collector.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM CA that client certificates must chain to. When set, every
    /// client must present one (mTLS), tokens or not.
    pub client_ca: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest compressed body accepted (413 above, refused before it is
    /// read when Content-Length says so).
    pub max_body_bytes: u64,
    /// Largest decompressed batch (413 above; decompression stops there,
    /// so a zstd bomb costs at most this much).
    pub max_decompressed_bytes: u64,
    /// Batches per second per agent (token bucket), and the burst.
    pub rate_per_sec: f64,
    pub rate_burst: u32,
    /// Concurrent connections at most.
    pub max_connections: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            rate_per_sec: 50.0,
            rate_burst: 200,
            max_connections: 1024,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Directory of the embedded store (created 0700).
    pub dir: PathBuf,
    /// Events older than this are deleted, except findings and the traces
    /// and events they cite. 0 keeps everything.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// How often retention runs.
    #[serde(default = "default_retention_interval")]
    pub retention_interval_secs: u64,
}

fn default_retention_days() -> u32 {
    90
}

fn default_retention_interval() -> u64 {
    3600
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Tokens allowed to query (`/api/…`). Agent tokens cannot query.
    /// Empty: the query API is off.
    pub tokens: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Tokens allowed to read `GET /metrics` (Prometheus; neither agent nor
    /// query tokens). Empty: `/metrics` is off.
    pub tokens: Vec<String>,
}

/// Query and metrics tokens: long enough, and each kind its own (a token
/// that ingests cannot query, one that scrapes can do nothing else).
fn check_reader_tokens(
    agent_tokens: &BTreeMap<String, String>,
    api: &[String],
    metrics: &[String],
) -> Result<(), ConfigError> {
    let invalid = |field, problem: &str| ConfigError::Invalid {
        field,
        problem: problem.to_owned(),
    };
    if api.iter().any(|t| t.len() < 16) {
        return Err(invalid("api", "token shorter than 16 characters"));
    }
    if api.iter().any(|t| agent_tokens.contains_key(t)) {
        return Err(invalid("api", "an API token is also an agent token"));
    }
    if metrics.iter().any(|t| t.len() < 16) {
        return Err(invalid("metrics", "token shorter than 16 characters"));
    }
    if metrics
        .iter()
        .any(|t| agent_tokens.contains_key(t) || api.contains(t))
    {
        return Err(invalid(
            "metrics",
            "a metrics token is also an agent or API token: give the scraper its own",
        ));
    }
    Ok(())
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub client_ca: Option<PathBuf>,
    /// token → agent name.
    pub agent_tokens: BTreeMap<String, String>,
    pub limits: LimitsSection,
    pub store_dir: PathBuf,
    pub retention: Option<Duration>,
    pub retention_interval: Duration,
    pub api_tokens: Vec<String>,
    /// Bearer tokens of `/metrics`; empty: off.
    pub metrics_tokens: Vec<String>,
    pub forward: Vec<crate::forward::ForwardSpec>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let invalid = |field, problem: &str| ConfigError::Invalid {
            field,
            problem: problem.to_owned(),
        };
        let mut agent_tokens = BTreeMap::new();
        for (name, a) in &self.agents {
            let token = match (&a.token, &a.token_file) {
                (Some(t), None) => t.clone(),
                (None, Some(p)) => std::fs::read_to_string(p)
                    .map_err(|source| ConfigError::Read {
                        path: p.clone(),
                        source,
                    })?
                    .trim_end()
                    .to_owned(),
                _ => {
                    return Err(invalid(
                        "agents",
                        &format!("{name}: give token or token_file"),
                    ))
                }
            };
            if token.len() < 16 {
                return Err(invalid(
                    "agents",
                    &format!("{name}: token shorter than 16 characters"),
                ));
            }
            if agent_tokens.insert(token, name.clone()).is_some() {
                return Err(invalid(
                    "agents",
                    &format!("{name}: token shared with another agent"),
                ));
            }
        }
        if agent_tokens.is_empty() && self.tls.client_ca.is_none() {
            return Err(invalid(
                "agents",
                "no agent tokens and no tls.client_ca: ingest would be open to anyone",
            ));
        }
        let l = &self.limits;
        if l.max_body_bytes == 0 || l.max_decompressed_bytes < l.max_body_bytes {
            return Err(invalid(
                "limits",
                "max_body_bytes > 0 and max_decompressed_bytes ≥ max_body_bytes",
            ));
        }
        if l.rate_per_sec.is_nan()
            || l.rate_per_sec <= 0.0
            || l.rate_burst == 0
            || l.max_connections == 0
        {
            return Err(invalid(
                "limits",
                "rate_per_sec, rate_burst and max_connections must be > 0",
            ));
        }
        check_reader_tokens(&agent_tokens, &self.api.tokens, &self.metrics.tokens)?;
        let mut forward = Vec::with_capacity(self.forward.len());
        for section in self.forward {
            let mut spec = section.validate()?;
            crate::forward::prepare(&mut spec)?;
            if forward
                .iter()
                .any(|f: &crate::forward::ForwardSpec| f.name == spec.name)
            {
                return Err(invalid(
                    "forward",
                    &format!("{}: name used twice", spec.name),
                ));
            }
            forward.push(spec);
        }
        Ok(Config {
            listen: self.listen,
            tls_cert: self.tls.cert,
            tls_key: self.tls.key,
            client_ca: self.tls.client_ca,
            agent_tokens,
            limits: self.limits,
            store_dir: self.store.dir,
            retention: (self.store.retention_days > 0)
                .then(|| Duration::from_secs(u64::from(self.store.retention_days) * 86400)),
            retention_interval: Duration::from_secs(self.store.retention_interval_secs.max(1)),
            api_tokens: self.api.tokens,
            metrics_tokens: self.metrics.tokens,
            forward,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/collector.toml");
        let c = FileConfig::load(Path::new(path)).expect("config/collector.toml parses");
        assert_eq!(c.agents.len(), 2);
        assert_eq!(
            c.limits.max_body_bytes,
            LimitsSection::default().max_body_bytes
        );
    }

    #[test]
    fn open_ingest_and_weak_tokens_are_refused() {
        let base = r#"
            listen = "127.0.0.1:0"
            [tls]
            cert = "/c"
            key = "/k"
            [store]
            dir = "/s"
        "#;
        let parse = |extra: &str| toml::from_str::<FileConfig>(&format!("{base}{extra}")).unwrap();
        assert!(parse("").validate().is_err(), "no tokens, no mTLS");
        assert!(parse("[agents.a]\ntoken = \"short\"").validate().is_err());
        let ok = parse("[agents.a]\ntoken = \"0123456789abcdef\"")
            .validate()
            .unwrap();
        assert_eq!(ok.agent_tokens["0123456789abcdef"], "a");
        let shared =
            "[agents.a]\ntoken = \"0123456789abcdef\"\n[api]\ntokens = [\"0123456789abcdef\"]";
        assert!(
            parse(shared).validate().is_err(),
            "an agent token cannot query"
        );
        assert!(toml::from_str::<FileConfig>(&format!("{base}bogus = 1")).is_err());
        let agent = "[agents.a]\ntoken = \"0123456789abcdef\"\n";
        assert!(
            parse(&format!(
                "{agent}[metrics]\ntokens = [\"0123456789abcdef\"]"
            ))
            .validate()
            .is_err(),
            "an agent token cannot scrape"
        );
        assert!(parse(&format!("{agent}[metrics]\ntokens = [\"short\"]"))
            .validate()
            .is_err());
        let ok = parse(&format!(
            "{agent}[metrics]\ntokens = [\"metrics-0123456789\"]"
        ))
        .validate()
        .unwrap();
        assert_eq!(ok.metrics_tokens, ["metrics-0123456789"]);
    }
}
