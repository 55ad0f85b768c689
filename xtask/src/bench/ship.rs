//! `cargo xtask bench ship`: shipping figures (zstd ratio per batch size,
//! ingest events/s and CPU, side effect → searchable finding latency),
//! measured by the `ship` bench of the aitrail crate (agent/benches/ship.rs,
//! whose doc says how) and appended to docs/benchmarks.md.

use std::fmt::Write as _;

use anyhow::{bail, Context as _};

use super::report;
use crate::util;

#[derive(clap::Args)]
pub struct ShipArgs {
    /// Finding-latency samples per setting (at least 100 for a p99).
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Skip the finding latency (it needs root and the eBPF programs).
    #[arg(long)]
    no_latency: bool,
    /// Synthesised LLM calls replayed for the events.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Ingest: batches, events per batch, connections.
    #[arg(long, default_value_t = 60)]
    batches: usize,
    #[arg(long, default_value_t = 1000)]
    batch_events: usize,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Print the results only; do not append them to docs/benchmarks.md.
    #[arg(long)]
    no_write: bool,
}

pub fn run(args: &ShipArgs) -> anyhow::Result<()> {
    if !args.no_latency && !util::is_root() {
        bail!("the finding latency loads eBPF programs: run as root, or pass --no-latency");
    }
    let mut cmd = util::cargo();
    cmd.args(["bench", "--package", "aitrail", "--bench", "ship", "--"])
        .args(["--samples", &args.samples.to_string()])
        .args(["--calls", &args.calls.to_string()])
        .args(["--batches", &args.batches.to_string()])
        .args(["--batch-events", &args.batch_events.to_string()])
        .args(["--connections", &args.connections.to_string()]);
    if args.no_latency {
        cmd.arg("--no-latency");
    } else if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        eprintln!(
            "xtask: AYA_BUILD_SKIP ignored: the finding latency needs the real eBPF programs"
        );
        cmd.env_remove("AYA_BUILD_SKIP");
    }
    eprintln!("xtask: running {}", util::show(&cmd));
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("run cargo bench")?;
    if !out.status.success() {
        bail!("the ship bench failed ({})", out.status);
    }
    let figures = String::from_utf8_lossy(&out.stdout);
    let (date, rev) = report::stamp();
    let mut cmdline: Vec<String> = std::env::args().skip(1).collect();
    cmdline.insert(0, "cargo xtask".into());
    let mut s = String::new();
    writeln!(s, "## Shipping — {} — {}", date.trim(), rev.trim())?;
    writeln!(s)?;
    writeln!(s, "- Command: `{}` (release build)", cmdline.join(" "))?;
    writeln!(s, "- Machine: {}", report::machine())?;
    s.push_str(&figures);
    println!("\n{s}");
    if args.no_write {
        println!("bench: --no-write: docs/benchmarks.md left as it is");
        return Ok(());
    }
    report::append_to_doc(&s)
}
