//! `cargo xtask bench decoders`: the per-decoder criterion benchmarks
//! (agent/benches/decode.rs, whose doc lists the groups and inputs), run in
//! the release profile, then their medians as a Markdown table for
//! docs/benchmarks.md: decoder, input, bytes per iteration, MB/s and, for
//! the LLM groups (one `llm.call` per iteration), calls/s.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use super::report;
use crate::util;

#[derive(clap::Args)]
pub struct DecodersArgs {
    /// Short runs: 1 s warm-up and 2 s measurement per benchmark (criterion
    /// defaults: 3 s and 5 s).
    #[arg(long)]
    quick: bool,
    /// Criterion's warm-up time per benchmark, in seconds.
    #[arg(long)]
    warm_up_time: Option<f64>,
    /// Criterion's measurement time per benchmark, in seconds.
    #[arg(long)]
    measurement_time: Option<f64>,
    /// Only the benchmarks whose id matches this regex (criterion filter),
    /// e.g. `^llm/`.
    filter: Option<String>,
    /// Append the table to docs/benchmarks.md (default: print it only).
    #[arg(long)]
    write: bool,
}

/// One criterion result.
struct Row {
    group: String,
    input: String,
    bytes: Option<u64>,
    median_ns: f64,
}

pub fn run(args: &DecodersArgs) -> anyhow::Result<()> {
    let warm = args
        .warm_up_time
        .unwrap_or(if args.quick { 1.0 } else { 3.0 });
    let measure = args
        .measurement_time
        .unwrap_or(if args.quick { 2.0 } else { 5.0 });
    let started = SystemTime::now()
        .checked_sub(Duration::from_secs(1))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut cmd = util::cargo();
    cmd.args(["bench", "--package", "aitrail", "--bench", "decode", "--"])
        .args(["--warm-up-time", &warm.to_string()])
        .args(["--measurement-time", &measure.to_string()]);
    if let Some(f) = &args.filter {
        cmd.arg(f);
    }
    eprintln!("xtask: running {}", util::show(&cmd));
    let status = cmd.status().context("run cargo bench")?;
    if !status.success() {
        bail!("the decode bench failed ({status})");
    }
    let dir = util::target_dir()?.join("criterion");
    let mut rows = collect(&dir, started)?;
    if rows.is_empty() {
        bail!(
            "no criterion result newer than this run in {}",
            dir.display()
        );
    }
    rows.sort_by(|a, b| (&a.group, &a.input).cmp(&(&b.group, &b.input)));
    let (date, rev) = report::stamp();
    let mut s = String::new();
    writeln!(
        s,
        "## Decoders (criterion) — {} — {}",
        date.trim(),
        rev.trim()
    )?;
    writeln!(s)?;
    writeln!(
        s,
        "- Command: `cargo xtask bench decoders{}` (release profile; warm-up {warm} s, \
         measurement {measure} s per benchmark; medians)",
        if args.quick { " --quick" } else { "" }
    )?;
    writeln!(s, "- Machine: {}", report::machine())?;
    writeln!(s)?;
    s.push_str(&table(&rows));
    println!("\n{s}");
    if args.write {
        report::append_to_doc(&s)
    } else {
        Ok(())
    }
}

/// The Markdown table. calls/s only for the LLM groups, where each
/// iteration decodes one call.
#[expect(
    clippy::cast_precision_loss,
    reason = "byte counts of benchmark inputs are far below 2^52"
)]
fn table(rows: &[Row]) -> String {
    let mut s =
        String::from("| decoder | input | bytes | MB/s | calls/s |\n|---|---|---:|---:|---:|\n");
    for r in rows {
        let secs = r.median_ns / 1e9;
        let mbs = r.bytes.map_or_else(
            || "—".to_owned(),
            |b| format!("{:.1}", b as f64 / secs / 1e6),
        );
        let calls = if r.group.starts_with("llm") {
            format!("{:.0}", 1.0 / secs)
        } else {
            "—".to_owned()
        };
        let bytes = r.bytes.map_or_else(|| "—".to_owned(), |b| b.to_string());
        let _ = writeln!(
            s,
            "| {} | {} | {bytes} | {mbs} | {calls} |",
            r.group, r.input
        );
    }
    s
}

/// Every `<group>/<bench>/new/` of criterion's output written since
/// `since`.
fn collect(dir: &Path, since: SystemTime) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let groups = fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?;
    for group in groups.flatten() {
        let Ok(benches) = fs::read_dir(group.path()) else {
            continue;
        };
        for bench in benches.flatten() {
            let new = bench.path().join("new");
            let estimates = new.join("estimates.json");
            let fresh = fs::metadata(&estimates)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since);
            if !fresh {
                continue;
            }
            let read = |p: &Path| -> anyhow::Result<Value> {
                let text = fs::read(p).with_context(|| format!("read {}", p.display()))?;
                serde_json::from_slice(&text).with_context(|| format!("parse {}", p.display()))
            };
            let est = read(&estimates)?;
            let meta = read(&new.join("benchmark.json"))?;
            let Some(median_ns) = est["median"]["point_estimate"].as_f64() else {
                bail!("{}: no median", estimates.display());
            };
            rows.push(Row {
                group: meta["group_id"].as_str().unwrap_or_default().to_owned(),
                input: meta["function_id"].as_str().unwrap_or_default().to_owned(),
                bytes: meta["throughput"]["Bytes"].as_u64(),
                median_ns,
            });
        }
    }
    Ok(rows)
}
