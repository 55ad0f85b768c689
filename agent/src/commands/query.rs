//! `aitrail search`, `aitrail trace` and `aitrail tail`: read an embedded
//! store (the one `aitrail run` writes, or a collector's store directory)
//! and print the events as NDJSON, for `jq` and friends.

use std::{
    io::Write as _,
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use aitrail::event::Severity;
use aitrail_collector::store::query::Query;
use anyhow::Context as _;

use super::store::StoreArgs;

/// Filters shared by `search` and `tail`.
#[derive(clap::Args)]
pub struct FilterArgs {
    /// Event kind (`finding`, `llm.call`, `process.exec`, …); `tombstone`
    /// and `release` list the store's records of forgets and releases.
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    host: Option<String>,
    /// The process's user name (with --kind tombstone: that user's
    /// tombstones, found by the name's keyed hash).
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
    /// Words that must all appear in the event's text (prompts, outputs,
    /// tool arguments, command lines, paths).
    words: Vec<String>,
}

impl FilterArgs {
    fn query(&self, limit: u32) -> anyhow::Result<Query> {
        let now = chrono::Utc::now();
        let time = |s: &Option<String>| -> anyhow::Result<Option<i64>> {
            s.as_deref().map(|s| parse_time(s, now)).transpose()
        };
        let min_severity = self
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
        Ok(Query {
            since: time(&self.since)?,
            until: time(&self.until)?,
            kind: self.kind.clone(),
            host: self.host.clone(),
            user: self.user.clone(),
            trace: self.trace.clone(),
            min_severity,
            rule: self.rule.clone(),
            text: (!self.words.is_empty()).then(|| self.words.join(" ")),
            limit,
        })
    }
}

#[derive(clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    filters: FilterArgs,
    /// At most this many events (at most 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(clap::Args)]
pub struct TraceArgs {
    /// The trace id.
    id: String,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    filters: FilterArgs,
    /// Keep following: print events as they are stored, until Ctrl-C or
    /// until the reader goes away.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Print the last N matching events first.
    #[arg(short = 'n', long, default_value_t = 10)]
    lines: u32,
    /// How often to look for new events, in milliseconds.
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
}

/// Events read per look (the memory a look may take is bounded by it).
const TAIL_PAGE: u32 = 500;

fn print(lines: &[String]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

pub fn search(args: &SearchArgs) -> anyhow::Result<()> {
    let q = args.filters.query(args.limit)?;
    print(&args.store.open(false)?.search(&q)?)
}

pub fn trace(args: &TraceArgs) -> anyhow::Result<()> {
    let events = args.store.open(false)?.trace(&args.id)?;
    anyhow::ensure!(!events.is_empty(), "no events in trace {}", args.id);
    print(&events)
}

/// Whether the reader of stdout (a pipe or socket) has gone away.
fn stdout_closed() -> bool {
    let mut fds = [libc::pollfd {
        fd: std::io::stdout().as_raw_fd(),
        events: 0,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, no timeout.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    n > 0 && fds[0].revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Writes lines; `false` when stdout is closed (EPIPE).
fn emit(lines: &[String]) -> anyhow::Result<bool> {
    let mut out = std::io::stdout().lock();
    let written = lines
        .iter()
        .try_for_each(|l| writeln!(out, "{l}"))
        .and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// `aitrail tail [-f]`: the last matching events, then (with -f) every new
/// one in the order it was stored, until SIGINT/SIGTERM or until stdout's
/// reader goes away (SIGPIPE is ignored, as in every Rust program: a write
/// to a closed pipe fails with EPIPE and tail exits 0).
pub fn tail(args: &TailArgs) -> anyhow::Result<()> {
    let q = args.filters.query(TAIL_PAGE)?;
    anyhow::ensure!(
        q.audit_kind().is_none(),
        "tail follows events; use search --kind for tombstones and releases"
    );
    let store = args.store.open(false)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }
    let (last, mut after) = store.tail_start(&q, args.lines.min(TAIL_PAGE))?;
    if !emit(&last)? || !args.follow {
        return Ok(());
    }
    let interval = Duration::from_millis(args.interval_ms.clamp(10, 60_000));
    while !stop.load(Ordering::Relaxed) {
        let (events, next) = store.tail_next(&q, after, TAIL_PAGE)?;
        let moved = next != after;
        after = next;
        if !emit(&events)? {
            return Ok(());
        }
        if !moved {
            // Nothing new: wait, in small steps so that a signal or a
            // closed pipe ends the wait at once.
            let mut waited = Duration::ZERO;
            while waited < interval && !stop.load(Ordering::Relaxed) {
                if stdout_closed() {
                    return Ok(());
                }
                let nap = Duration::from_millis(50).min(interval.saturating_sub(waited));
                std::thread::sleep(nap);
                waited += nap;
            }
        }
    }
    Ok(())
}

/// RFC 3339, or an age (`45s`, `90m`, `24h`, `7d`) before `now`, as ns
/// since the Unix epoch.
pub(crate) fn parse_time(s: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<i64> {
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
