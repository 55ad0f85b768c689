//! Configuration: a serde layer that mirrors config/agent.toml (unknown keys
//! are errors), validated into the runtime [`Config`]. Command-line options
//! add to the file (sinks, pids, cgroups) or override it (caps).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{
    blindspot::BlindSpotConfig, detect::DetectConfig, metrics::MetricsSection,
    opinion::OpinionConfig, redact::RedactConfig, route::RouteConfig, ship::CollectorSection,
    sinks::SinkSpec,
};

/// `[store]`: settings of every `store:` sink (and `aitrail run`'s store):
/// encryption, retention, archive. The same section as the collector's
/// (see config/collector.toml).
pub use aitrail_collector::config::StoreSection;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("config: {field} {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

/// `[scope]`: empty means the whole host.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSection {
    /// Processes watched with all their descendants.
    #[serde(default)]
    pub pids: Vec<u32>,
    /// cgroup v2 directories whose subtrees are watched.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
}

/// `[capture]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureSection {
    /// Plaintext bytes copied from one TLS read or write call at most (default 256 KiB).
    pub tls_cap_bytes: u32,
    /// Kernel → userspace ring buffer (default 4 MiB; a power of two). Its
    /// pages are mapped twice, so it counts double in the daemon's RSS.
    pub ringbuf_bytes: u32,
    /// Process names watched from their exec on (file and network events).
    pub watch_comm: Vec<String>,
    /// Executables watched from their exec on.
    pub watch_exe: Vec<PathBuf>,
    /// Watch every process in scope (tests, small scopes).
    pub watch_all_in_scope: bool,
    /// Where hook offsets found by code signature (stripped programs such
    /// as Codex CLI, Bun, Claude Code) are kept per build, so a restart or a new process of a
    /// known build does not search again. Empty: in memory only.
    pub hook_cache_dir: PathBuf,
    /// Where the daemon writes `agent-PID.json`: its TLS attach decisions
    /// and counters, which `aitrail doctor` reads. Empty: not written.
    pub status_dir: PathBuf,
    /// Remote TCP ports whose plain-HTTP (no TLS) traffic is captured
    /// from in-scope clients, decoded like TLS plaintext: local model
    /// servers. Empty: off.
    pub plain_http_ports: Vec<u16>,
}

/// Ollama, vLLM (and where `SGLang` and TGI usually listen), llama.cpp's
/// `llama-server`, `LiteLLM`'s proxy.
pub const DEFAULT_PLAIN_HTTP_PORTS: [u16; 4] = [11434, 8000, 8080, 4000];

impl Default for CaptureSection {
    fn default() -> Self {
        Self {
            tls_cap_bytes: agent_common::DEFAULT_TLS_CAP,
            ringbuf_bytes: 4 * 1024 * 1024,
            watch_comm: Vec::new(),
            watch_exe: Vec::new(),
            watch_all_in_scope: false,
            hook_cache_dir: PathBuf::from("/var/cache/aitrail/hooks"),
            status_dir: PathBuf::from(DEFAULT_STATUS_DIR),
            plain_http_ports: DEFAULT_PLAIN_HTTP_PORTS.to_vec(),
        }
    }
}

/// `[capture] status_dir` by default (systemd's `RuntimeDirectory`).
pub const DEFAULT_STATUS_DIR: &str = "/run/aitrail";

/// `[pipeline]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// An unanswered request is emitted as truncated after this long.
    pub idle_timeout_secs: u64,
    /// Decoded body bytes kept per message.
    pub max_body_bytes: usize,
    /// Decoded bytes kept per WebSocket message.
    pub max_ws_message_bytes: usize,
    /// How long a tool call waits for its result before it is emitted.
    pub tool_effect_window_secs: u64,
    /// Period of `agent.health` events (one is always sent at shutdown).
    pub health_interval_secs: u64,
    /// TLS connections tracked at once.
    pub max_connections: usize,
    /// Bytes all HTTP parsers together may hold (partial messages); past
    /// it the connection holding the most is finished, marked truncated.
    pub max_buffered_bytes: usize,
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 120,
            max_body_bytes: 16 * 1024 * 1024,
            max_ws_message_bytes: 16 * 1024 * 1024,
            tool_effect_window_secs: 300,
            health_interval_secs: 60,
            max_connections: 4096,
            max_buffered_bytes: 256 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub scope: ScopeSection,
    #[serde(default)]
    pub capture: CaptureSection,
    #[serde(default)]
    pub pipeline: PipelineSection,
    /// `stdout` or `file:PATH`: sinks that take every event.
    #[serde(default)]
    pub sinks: Vec<String>,
    #[serde(default)]
    pub detect: DetectConfig,
    #[serde(default)]
    pub redact: RedactConfig,
    #[serde(default)]
    pub blind_spot: BlindSpotConfig,
    #[serde(default)]
    pub second_opinion: OpinionConfig,
    /// `[[route]]`: which sinks see which events (see `route`).
    #[serde(default)]
    pub route: Vec<RouteConfig>,
    /// Settings of every `collector:` sink (see `ship`).
    #[serde(default)]
    pub collector: CollectorSection,
    /// Settings of every `store:` sink.
    #[serde(default)]
    pub store: StoreSection,
    /// The `/metrics` listener (see `metrics`).
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// The validated configuration the daemon runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub scope: ScopeSection,
    pub capture: CaptureSection,
    pub pipeline: PipelineSection,
    /// Sinks that take every event.
    pub sinks: Vec<SinkSpec>,
    pub detect: DetectConfig,
    pub redact: RedactConfig,
    pub blind_spot: BlindSpotConfig,
    pub second_opinion: OpinionConfig,
    pub routes: Vec<RouteConfig>,
    pub collector: CollectorSection,
    pub store: StoreSection,
    /// Where `/metrics` listens (loopback only); `None`: off.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Config {
    /// Gives a `collector:` sink (e.g. from `--sink`) the `[collector]`
    /// settings; other sinks are returned as they are.
    pub fn resolve_sink(&self, spec: SinkSpec) -> SinkSpec {
        with_settings(spec, &self.collector, &self.store)
    }

    /// Adds sinks that take every event (the command line's `--sink`).
    pub fn add_sinks(&mut self, specs: &[SinkSpec]) {
        for s in specs {
            let s = self.resolve_sink(s.clone());
            self.sinks.push(s);
        }
    }
}

fn with_settings(spec: SinkSpec, section: &CollectorSection, store: &StoreSection) -> SinkSpec {
    match spec {
        SinkSpec::Collector(mut c) => {
            c.settings = section.clone();
            SinkSpec::Collector(c)
        }
        SinkSpec::Store(mut s) => {
            s.settings = store.clone();
            SinkSpec::Store(s)
        }
        other => other,
    }
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source,
        })
    }

    pub fn validate(self) -> Result<Config, ConfigError> {
        let c = &self.capture;
        if !(4096..=agent_common::MAX_TLS_CAP).contains(&c.tls_cap_bytes) {
            return Err(ConfigError::Invalid {
                field: "capture.tls_cap_bytes",
                problem: format!(
                    "is {}, must be 4096..={}",
                    c.tls_cap_bytes,
                    agent_common::MAX_TLS_CAP
                ),
            });
        }
        if !c.ringbuf_bytes.is_power_of_two() || c.ringbuf_bytes < 65536 {
            return Err(ConfigError::Invalid {
                field: "capture.ringbuf_bytes",
                problem: format!("is {}, must be a power of two ≥ 65536", c.ringbuf_bytes),
            });
        }
        if let Some(long) = c.watch_comm.iter().find(|n| n.len() > 15) {
            return Err(ConfigError::Invalid {
                field: "capture.watch_comm",
                problem: format!("{long:?} is longer than the kernel's 15-byte comm"),
            });
        }
        if c.plain_http_ports.contains(&0) {
            return Err(ConfigError::Invalid {
                field: "capture.plain_http_ports",
                problem: "port 0 is no port".to_owned(),
            });
        }
        if c.plain_http_ports.len() > agent_common::MAX_PLAIN_PORTS as usize {
            return Err(ConfigError::Invalid {
                field: "capture.plain_http_ports",
                problem: format!(
                    "{} ports, at most {}",
                    c.plain_http_ports.len(),
                    agent_common::MAX_PLAIN_PORTS
                ),
            });
        }
        let mut sinks = Vec::new();
        for s in &self.sinks {
            let spec = s.parse::<SinkSpec>().map_err(|e| ConfigError::Invalid {
                field: "sinks",
                problem: format!("{s:?}: {e}"),
            })?;
            sinks.push(with_settings(spec, &self.collector, &self.store));
        }
        let mut route = self.route;
        for r in &mut route {
            r.sinks = std::mem::take(&mut r.sinks)
                .into_iter()
                .map(|s| with_settings(s, &self.collector, &self.store))
                .collect();
        }
        for s in &sinks {
            if let SinkSpec::Collector(c) = s {
                c.validate().map_err(|e| ConfigError::Invalid {
                    field: "collector",
                    problem: e.to_string(),
                })?;
            }
        }
        self.redact.validate().map_err(|e| ConfigError::Invalid {
            field: "redact",
            problem: e.to_string(),
        })?;
        let mut distinct = sinks.clone();
        distinct.extend(crate::route::Router::sink_specs(&route));
        distinct.sort_by_key(ToString::to_string);
        distinct.dedup();
        if distinct.len() > crate::route::MAX_SINKS {
            return Err(ConfigError::Invalid {
                field: "route",
                problem: format!("more than {} distinct sinks", crate::route::MAX_SINKS),
            });
        }
        let metrics_listen = self.metrics.validate().map_err(|e| ConfigError::Invalid {
            field: "metrics.listen",
            problem: e.to_string(),
        })?;
        if let Some(r) = route.iter().find(|r| r.sinks.is_empty()) {
            return Err(ConfigError::Invalid {
                field: "route",
                problem: format!("route {:?} has no sinks", r.name),
            });
        }
        Ok(Config {
            scope: self.scope,
            capture: self.capture,
            pipeline: self.pipeline,
            sinks,
            detect: self.detect,
            redact: self.redact,
            blind_spot: self.blind_spot,
            second_opinion: self.second_opinion,
            routes: route,
            collector: self.collector,
            store: self.store,
            metrics_listen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agent.toml");
        let cfg = FileConfig::load(Path::new(path)).expect("config/agent.toml parses");
        cfg.validate().expect("config/agent.toml is valid");
    }

    #[test]
    fn defaults_and_errors() {
        let c = FileConfig::parse("", "x").unwrap().validate().unwrap();
        assert_eq!(c.capture.tls_cap_bytes, 262_144);
        assert!(c.sinks.is_empty());
        assert!(FileConfig::parse("[capture]\nbogus = 1\n", "x").is_err());
        let bad = FileConfig::parse("[capture]\ntls_cap_bytes = 10\n", "x").unwrap();
        assert!(bad.validate().is_err());
        let bad = FileConfig::parse("sinks = [\"ftp:x\"]\n", "x").unwrap();
        assert!(bad.validate().is_err());
        assert_eq!(c.metrics_listen, None, "no /metrics unless asked");
        assert_eq!(
            c.capture.plain_http_ports,
            [11434, 8000, 8080, 4000],
            "Ollama, vLLM, llama.cpp, LiteLLM by default"
        );
        let off = FileConfig::parse("[capture]\nplain_http_ports = []\n", "x").unwrap();
        assert!(off.validate().unwrap().capture.plain_http_ports.is_empty());
        let zero = FileConfig::parse("[capture]\nplain_http_ports = [0]\n", "x").unwrap();
        assert!(zero.validate().is_err());
        let many: Vec<String> = (1..=65).map(|p| p.to_string()).collect();
        let many = format!("[capture]\nplain_http_ports = [{}]\n", many.join(","));
        assert!(FileConfig::parse(&many, "x").unwrap().validate().is_err());
        assert!(FileConfig::parse("[capture]\nplain_http_ports = [70000]\n", "x").is_err());
        let on = FileConfig::parse("[metrics]\nlisten = \"127.0.0.1:9464\"\n", "x").unwrap();
        assert_eq!(
            on.validate().unwrap().metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let v6 = FileConfig::parse("[metrics]\nlisten = \"[::1]:9464\"\n", "x").unwrap();
        assert!(v6.validate().is_ok());
        for bad in [
            "0.0.0.0:9464",
            "10.1.2.3:9464",
            "[::]:9464",
            "localhost:9464",
            "9464",
        ] {
            let c = FileConfig::parse(&format!("[metrics]\nlisten = \"{bad}\"\n"), "x").unwrap();
            assert!(c.validate().is_err(), "{bad} accepted");
        }
    }
}
