//! collector.toml: the serde layer (`FileConfig`, documented defaults) and
//! its validation into the runtime [`Config`]. See config/collector.toml.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::store::{archive::S3Config, ArchiveConfig, StoreConfig};

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
    #[serde(default)]
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

/// `[store]`: the embedded store. Shared by collector.toml and agent.toml
/// (`aitrail run` and `store:` sinks), and read by the `aitrail` commands
/// that take `--config`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Directory of the embedded store (created 0700). Required by the
    /// collector; for the agent, `store:DIR` and `--store` name it.
    pub dir: Option<PathBuf>,
    /// Events older than this are deleted, except findings still held and
    /// the traces and events they cite. 0 keeps everything.
    pub retention_days: u32,
    /// How often retention runs.
    pub retention_interval_secs: u64,
    /// 64 hex digits (32 random bytes), mode 0600: the database and the
    /// archive are encrypted with keys derived from it. Must exist.
    pub encryption_key_file: Option<PathBuf>,
    pub archive: ArchiveSection,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            dir: None,
            retention_days: 90,
            retention_interval_secs: 3600,
            encryption_key_file: None,
            archive: ArchiveSection::default(),
        }
    }
}

/// `[store.archive]`: compressed NDJSON segments for cold storage.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(default, deny_unknown_fields)]
pub struct ArchiveSection {
    pub enabled: bool,
    /// Default: `archive` in the store directory.
    pub dir: Option<PathBuf>,
    /// A segment closes at this many uncompressed bytes …
    pub segment_max_bytes: u64,
    /// … or this long after it opened.
    pub segment_max_secs: u64,
    /// Segments of days older than this are deleted (here and in object
    /// storage). 0 keeps them.
    pub retention_days: u32,
    pub s3: Option<S3Section>,
}

impl Default for ArchiveSection {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: None,
            segment_max_bytes: 64 * 1024 * 1024,
            segment_max_secs: 900,
            retention_days: 365,
            s3: None,
        }
    }
}

/// `[store.archive.s3]`: closed segments go to S3 or an S3-compatible
/// server.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    pub bucket: String,
    /// Object keys are `PREFIX/YYYY-MM-DD/NNNNNN.ndjson.zst`. One prefix
    /// per collector.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// URL of an S3-compatible server; AWS when absent.
    pub endpoint: Option<String>,
    /// Credentials; when absent, the environment's (AWS_* variables, web
    /// identity, instance metadata).
    pub access_key_id: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub session_token_file: Option<PathBuf>,
    /// Path-style URLs; default: on with `endpoint`, off for AWS.
    pub path_style: Option<bool>,
    /// Plain HTTP to the endpoint (only for a server on this host).
    #[serde(default)]
    pub allow_http: bool,
    /// PEM CA(s) of the endpoint, instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// AWS server-side encryption with this KMS key.
    pub sse_kms_key_id: Option<String>,
    /// Delete a segment's local file once it is uploaded (and its size
    /// checked).
    #[serde(default)]
    pub delete_local_after_upload: bool,
    #[serde(default = "default_s3_timeout")]
    pub timeout_secs: u64,
}

fn default_prefix() -> String {
    "aitrail/".into()
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_s3_timeout() -> u64 {
    120
}

fn read_secret(path: &Path) -> Result<zeroize::Zeroizing<String>, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| zeroize::Zeroizing::new(s.trim_end().to_owned()))
        .map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })
}

fn days(d: u32) -> Option<Duration> {
    (d > 0).then(|| Duration::from_secs(u64::from(d) * 86400))
}

impl StoreSection {
    /// Validates the section for the store in `dir`.
    pub fn validate(&self, dir: &Path) -> Result<StoreConfig, ConfigError> {
        let invalid = |field, problem: &str| ConfigError::Invalid {
            field,
            problem: problem.to_owned(),
        };
        let a = &self.archive;
        let archive = if a.enabled {
            if a.segment_max_bytes < 4096 || a.segment_max_secs == 0 {
                return Err(invalid(
                    "store.archive",
                    "segment_max_bytes ≥ 4096 and segment_max_secs > 0",
                ));
            }
            let s3 = a.s3.as_ref().map(S3Section::validate).transpose()?;
            Some(ArchiveConfig {
                dir: a.dir.clone().unwrap_or_else(|| dir.join("archive")),
                segment_max_bytes: a.segment_max_bytes,
                segment_max_age: Duration::from_secs(a.segment_max_secs),
                retention: days(a.retention_days),
                s3,
            })
        } else {
            if a.s3.is_some() {
                return Err(invalid(
                    "store.archive.s3",
                    "set store.archive.enabled = true to upload segments",
                ));
            }
            None
        };
        Ok(StoreConfig {
            dir: dir.to_owned(),
            key_file: self.encryption_key_file.clone(),
            retention: days(self.retention_days),
            retention_interval: Duration::from_secs(self.retention_interval_secs.max(1)),
            archive,
        })
    }
}

impl S3Section {
    fn validate(&self) -> Result<S3Config, ConfigError> {
        let invalid = |problem: &str| ConfigError::Invalid {
            field: "store.archive.s3",
            problem: problem.to_owned(),
        };
        if self.bucket.is_empty() {
            return Err(invalid("bucket is empty"));
        }
        let mut prefix = self.prefix.trim_start_matches('/').to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        if let Some(e) = &self.endpoint {
            if e.starts_with("http://") && !self.allow_http {
                return Err(invalid(
                    "endpoint is http://: set allow_http = true (a server on this host only)",
                ));
            }
            if !e.starts_with("http://") && !e.starts_with("https://") {
                return Err(invalid("endpoint must be an http(s):// URL"));
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key_file.is_some() {
            return Err(invalid(
                "give access_key_id and secret_access_key_file together (or neither: the environment's credentials)",
            ));
        }
        Ok(S3Config {
            bucket: self.bucket.clone(),
            prefix,
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self
                .secret_access_key_file
                .as_deref()
                .map(read_secret)
                .transpose()?,
            session_token: self
                .session_token_file
                .as_deref()
                .map(read_secret)
                .transpose()?,
            path_style: self.path_style.unwrap_or(self.endpoint.is_some()),
            allow_http: self.allow_http,
            ca_file: self.ca_file.clone(),
            sse_kms_key_id: self.sse_kms_key_id.clone(),
            delete_local_after_upload: self.delete_local_after_upload,
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Tokens allowed to query (`/api/…`). Agent tokens cannot query.
    /// Empty: the query API is off.
    pub tokens: Vec<String>,
    /// Tokens that may also change the store: `POST /api/release` and
    /// `POST /api/forget` (and query). Not agent or query tokens.
    pub admin_tokens: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Tokens allowed to read `GET /metrics` (Prometheus; neither agent nor
    /// query tokens). Empty: `/metrics` is off.
    pub tokens: Vec<String>,
}

/// Query, admin and metrics tokens: long enough, and each kind its own (a
/// token that ingests cannot query, one that queries cannot change the
/// store, one that scrapes can do nothing else).
fn check_reader_tokens(
    agent_tokens: &BTreeMap<String, String>,
    api: &[String],
    admin: &[String],
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
    if admin.iter().any(|t| t.len() < 16) {
        return Err(invalid("api", "admin token shorter than 16 characters"));
    }
    if admin
        .iter()
        .any(|t| agent_tokens.contains_key(t) || api.contains(t) || metrics.contains(t))
    {
        return Err(invalid(
            "api",
            "an admin token is also an agent, query or metrics token",
        ));
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
    pub store: StoreConfig,
    pub api_tokens: Vec<String>,
    pub admin_tokens: Vec<String>,
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
        check_reader_tokens(
            &agent_tokens,
            &self.api.tokens,
            &self.api.admin_tokens,
            &self.metrics.tokens,
        )?;
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
        let dir = self
            .store
            .dir
            .clone()
            .ok_or_else(|| invalid("store.dir", "the store directory is required"))?;
        let store = self.store.validate(&dir)?;
        Ok(Config {
            listen: self.listen,
            tls_cert: self.tls.cert,
            tls_key: self.tls.key,
            client_ca: self.tls.client_ca,
            agent_tokens,
            limits: self.limits,
            store,
            api_tokens: self.api.tokens,
            admin_tokens: self.api.admin_tokens,
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

    #[test]
    fn store_sections_are_checked() {
        let dir = Path::new("/var/lib/aitrail/store");
        let parse = |t: &str| toml::from_str::<StoreSection>(t).unwrap();
        let plain = parse("").validate(dir).unwrap();
        assert_eq!(plain.retention, Some(Duration::from_hours(90 * 24)));
        assert!(plain.archive.is_none() && plain.key_file.is_none());
        let a = parse("retention_days = 0\n[archive]\nenabled = true\nretention_days = 0")
            .validate(dir)
            .unwrap();
        assert!(a.retention.is_none());
        let arch = a.archive.unwrap();
        assert_eq!(arch.dir, dir.join("archive"));
        assert!(arch.retention.is_none() && arch.s3.is_none());
        // S3 without the archive, plain HTTP without allow_http, a key id
        // without its secret, a tiny segment: refused.
        for bad in [
            "[archive.s3]\nbucket = \"b\"",
            "[archive]\nenabled = true\n[archive.s3]\nbucket = \"b\"\nendpoint = \"http://127.0.0.1:9000\"",
            "[archive]\nenabled = true\n[archive.s3]\nbucket = \"b\"\naccess_key_id = \"AK\"",
            "[archive]\nenabled = true\nsegment_max_bytes = 10",
            "[archive]\nenabled = true\n[archive.s3]\nbucket = \"\"",
        ] {
            assert!(parse(bad).validate(dir).is_err(), "{bad}");
        }
        assert!(toml::from_str::<StoreSection>("[archive]\nbogus = 1").is_err());
        let tmp = tempfile::tempdir().unwrap();
        let secret = tmp.path().join("s3.secret");
        std::fs::write(&secret, "wJalrXUtnFEMI\n").unwrap();
        let s3 = parse(&format!(
            "[archive]\nenabled = true\n[archive.s3]\nbucket = \"b\"\nprefix = \"/c1\"\n\
             endpoint = \"https://minio:9000\"\naccess_key_id = \"AK\"\n\
             secret_access_key_file = \"{}\"",
            secret.display()
        ))
        .validate(dir)
        .unwrap()
        .archive
        .unwrap()
        .s3
        .unwrap();
        assert_eq!(s3.prefix, "c1/");
        assert!(s3.path_style, "path style with an endpoint");
        assert_eq!(
            s3.secret_access_key.as_deref().map(String::as_str),
            Some("wJalrXUtnFEMI")
        );
        assert!(
            !format!("{s3:?}").contains("wJalr"),
            "the secret is not printed"
        );
    }
}
