//! Detection: rules over events, raising `finding` events.
//!
//! CONTRACT (the detection helper fills in the implementation; these
//! signatures do not change, other code builds on them):
//! - `Detector::new(&DetectConfig)` loads the built-in rule pack
//!   (config/rules/*.toml, embedded) and the user's rule directory; a rule
//!   error names the file and line.
//! - `Detector::on_event(&mut self, &Event)` looks at one event *before*
//!   redaction and returns the findings it raises, as complete `finding`
//!   events (envelope filled, in the trace of their evidence, `severity`
//!   set, `finding.class` one of the classes listed on `FindingInfo`), never
//!   carrying a matched value.
//! - `Detector::counters()` gives what it counted (rules loaded, findings by
//!   class, state evictions) for `agent.health`.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

use crate::{event::Event, util::Envelope};

/// `[detect]` in the agent's config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Load the built-in rule pack.
    pub builtin: bool,
    /// A directory of the user's own `*.toml` rule files.
    pub rules_dir: Option<PathBuf>,
    /// Rule ids turned off.
    pub disabled: Vec<String>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            builtin: true,
            rules_dir: None,
            disabled: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}:{line}: {problem}")]
    Invalid {
        file: String,
        line: usize,
        problem: String,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

pub struct Detector {
    env: Envelope,
}

impl Detector {
    pub fn new(cfg: &DetectConfig, env: Envelope) -> Result<Self, RuleError> {
        let _ = cfg;
        Ok(Self { env })
    }

    /// The findings `ev` raises.
    pub fn on_event(&mut self, ev: &Event) -> Vec<Event> {
        // Placeholder until the detection work lands: raises nothing.
        let _ = (ev, &self.env);
        Vec::new()
    }

    pub fn counters(&self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
}
