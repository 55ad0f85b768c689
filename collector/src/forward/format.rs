//! The event formats forwarders can send: the event as stored (`native`),
//! OCSF ([`super::ocsf`]) or ECS ([`super::ecs`]).

use serde::Deserialize;
use serde_json::Value;

/// `format = "native" | "ocsf" | "ecs"`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The aitrail event exactly as stored (docs/events.md).
    Native,
    Ocsf,
    Ecs,
}

/// Why an event was not rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{format} cannot express event {id}: {problem}")]
pub struct Unmappable {
    pub format: &'static str,
    pub id: String,
    pub problem: String,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Ocsf => "ocsf",
            Self::Ecs => "ecs",
        }
    }

    /// Kinds this format has no class for: not sent by default, refused
    /// in `kinds`.
    pub fn unsupported_kinds(self) -> &'static [&'static str] {
        match self {
            Self::Ocsf => super::ocsf::UNSUPPORTED_KINDS,
            Self::Native | Self::Ecs => &[],
        }
    }

    /// One stored event in this format.
    pub fn render(self, event: &Value) -> Result<Value, Unmappable> {
        match self {
            Self::Native => Ok(event.clone()),
            Self::Ocsf => super::ocsf::map(event),
            Self::Ecs => super::ecs::map(event),
        }
    }
}

/// Helpers for reading stored events.
pub(crate) mod get {
    use serde_json::Value;

    pub fn str<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
        v.pointer(pointer).and_then(Value::as_str)
    }

    pub fn i64(v: &Value, pointer: &str) -> Option<i64> {
        v.pointer(pointer).and_then(Value::as_i64)
    }

    pub fn f64(v: &Value, pointer: &str) -> Option<f64> {
        v.pointer(pointer).and_then(Value::as_f64)
    }

    pub fn bool(v: &Value, pointer: &str) -> Option<bool> {
        v.pointer(pointer).and_then(Value::as_bool)
    }

    pub fn strings(v: &Value, pointer: &str) -> Vec<String> {
        v.pointer(pointer)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The event's time as ns since the Unix epoch.
    pub fn time_ns(v: &Value) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(str(v, "/time")?)
            .ok()?
            .timestamp_nanos_opt()
    }

    /// The last path component.
    pub fn basename(path: &str) -> &str {
        path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path)
    }
}
