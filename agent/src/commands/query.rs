//! `aitrail search` and `aitrail trace`: read an embedded store (the one
//! `aitrail run` writes, or a collector's store directory) and print the
//! events as NDJSON, newest first, for `jq` and friends.

use std::{io::Write as _, path::PathBuf};

use aitrail::event::Severity;
use aitrail_collector::store::{query::Query, Store};
use anyhow::Context as _;

/// Where `aitrail run` keeps its store unless told otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/aitrail/store";

#[derive(clap::Args)]
pub struct SearchArgs {
    /// The store directory.
    #[arg(long, default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// Event kind (`finding`, `llm.call`, `process.exec`, …).
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    host: Option<String>,
    /// The process's user name.
    #[arg(long)]
    user: Option<String>,
    /// A trace id (32 hex digits).
    #[arg(long)]
    trace: Option<String>,
    /// At least this severity: info, low, medium, high, critical.
    #[arg(long)]
    severity: Option<String>,
    /// A finding's rule id.
    #[arg(long)]
    rule: Option<String>,
    /// Only events at or after this time: RFC 3339, or an age like `90m`,
    /// `24h`, `7d`.
    #[arg(long)]
    since: Option<String>,
    /// Only events before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// At most this many events (at most 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Words that must all appear in the event's text (prompts, outputs,
    /// tool arguments, command lines, paths).
    words: Vec<String>,
}

#[derive(clap::Args)]
pub struct TraceArgs {
    /// The trace id.
    id: String,
    /// The store directory.
    #[arg(long, default_value = DEFAULT_STORE)]
    store: PathBuf,
}

fn open(dir: &std::path::Path) -> anyhow::Result<Store> {
    anyhow::ensure!(
        dir.join("events.db").exists() || dir.is_dir(),
        "no store at {}",
        dir.display()
    );
    Store::open(dir).with_context(|| format!("opening the store {}", dir.display()))
}

fn print(lines: &[String]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

pub fn search(args: &SearchArgs) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let time = |s: &Option<String>| -> anyhow::Result<Option<i64>> {
        s.as_deref().map(|s| parse_time(s, now)).transpose()
    };
    let min_severity = args
        .severity
        .as_deref()
        .map(|s| {
            serde_json::from_value::<Severity>(serde_json::Value::String(s.to_owned()))
                .map(|sev| sev as u8)
                .map_err(|_| {
                    anyhow::anyhow!("--severity {s:?}: info, low, medium, high or critical")
                })
        })
        .transpose()?;
    let q = Query {
        since: time(&args.since)?,
        until: time(&args.until)?,
        kind: args.kind.clone(),
        host: args.host.clone(),
        user: args.user.clone(),
        trace: args.trace.clone(),
        min_severity,
        rule: args.rule.clone(),
        text: (!args.words.is_empty()).then(|| args.words.join(" ")),
        limit: args.limit,
    };
    print(&open(&args.store)?.search(&q)?)
}

pub fn trace(args: &TraceArgs) -> anyhow::Result<()> {
    let events = open(&args.store)?.trace(&args.id)?;
    anyhow::ensure!(!events.is_empty(), "no events in trace {}", args.id);
    print(&events)
}

/// RFC 3339, or an age (`45s`, `90m`, `24h`, `7d`) before `now`, as ns
/// since the Unix epoch.
fn parse_time(s: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<i64> {
    let bad = || anyhow::anyhow!("{s:?}: expected RFC 3339 or an age like 90m, 24h, 7d");
    let t = if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&chrono::Utc)
    } else {
        let split = s.len().checked_sub(1).ok_or_else(bad)?;
        let (n, unit) = s.split_at(split);
        let n: i64 = n.parse().map_err(|_| bad())?;
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86400,
            _ => return Err(bad()),
        };
        now - chrono::Duration::seconds(secs)
    };
    t.timestamp_nanos_opt().ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let hour = 3_600_000_000_000;
        assert_eq!(
            parse_time("1h", now).unwrap(),
            now.timestamp_nanos_opt().unwrap() - hour
        );
        assert_eq!(
            parse_time("2026-11-27T11:00:00Z", now).unwrap(),
            now.timestamp_nanos_opt().unwrap() - hour
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("", now).is_err());
        assert!(parse_time("5w", now).is_err());
    }
}
