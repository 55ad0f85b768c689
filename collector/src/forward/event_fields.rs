//! Total accessors over a stored event (docs/events.md). Stored events were
//! checked at ingest only for `id`, `kind` and `time`; everything else may
//! be missing or of the wrong type (an agent of another version, or a
//! compromised one), so every read is an `Option` and a wrong type is
//! treated as absent.

use chrono::{DateTime, Utc};
use serde_json::Value;

pub fn get<'a>(event: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(event, |v, key| v.get(key))
}

pub fn str_at<'a>(event: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(event, path)?.as_str()
}

pub fn u64_at(event: &Value, path: &[&str]) -> Option<u64> {
    get(event, path)?.as_u64()
}

pub fn i64_at(event: &Value, path: &[&str]) -> Option<i64> {
    get(event, path)?.as_i64()
}

pub fn f64_at(event: &Value, path: &[&str]) -> Option<f64> {
    get(event, path)?.as_f64()
}

pub fn kind(event: &Value) -> &str {
    str_at(event, &["kind"]).unwrap_or("")
}

/// `time` (RFC 3339), in UTC.
pub fn time(event: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(str_at(event, &["time"])?)
        .ok()
        .map(|t| t.to_utc())
}

/// The event's `severity`; unknown or missing values count as `info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn of(event: &Value) -> Self {
        match str_at(event, &["severity"]) {
            Some("low") => Self::Low,
            Some("medium") => Self::Medium,
            Some("high") => Self::High,
            Some("critical") => Self::Critical,
            _ => Self::Info,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The last path component (`/usr/bin/ls` → `ls`).
pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn wrong_types_are_absent() {
        let e =
            json!({"kind": 3, "process": {"pid": "12"}, "severity": ["high"], "time": "yesterday"});
        assert_eq!(kind(&e), "");
        assert_eq!(u64_at(&e, &["process", "pid"]), None);
        assert_eq!(str_at(&e, &["process", "pid"]), Some("12"));
        assert_eq!(u64_at(&e, &["process", "pid", "deeper"]), None);
        assert_eq!(Severity::of(&e), Severity::Info);
        assert_eq!(time(&e), None);
        let t = time(&json!({"time": "2026-11-27T13:00:03.141592653+01:00"})).unwrap();
        assert_eq!(t.timestamp_nanos_opt(), Some(1_795_780_803_141_592_653));
    }

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("日本", 5), "日");
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(basename("/usr/bin/ls"), "ls");
        assert_eq!(basename("ls"), "ls");
    }
}
