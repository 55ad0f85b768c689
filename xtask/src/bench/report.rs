//! The results table, in Markdown, and docs/benchmarks.md.

use std::{fmt::Write as _, fs, path::Path, process::Command};

use anyhow::Context as _;

use super::{median, per_op_us, BenchArgs, Results, Sample, Workload};
use crate::util::{self, output};

pub(super) fn append_to_doc(report: &str) -> anyhow::Result<()> {
    let path = util::root().join("docs/benchmarks.md");
    let mut doc = fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    if !doc.ends_with('\n') {
        doc.push('\n');
    }
    doc.push('\n');
    doc.push_str(report);
    fs::write(&path, doc).with_context(|| format!("write {}", path.display()))?;
    println!("bench: results appended to {}", path.display());
    Ok(())
}

pub(super) fn machine() -> String {
    let kernel = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpu_model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, m)| m.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    // Other tenants' load is the main source of noise on shared machines.
    let load = fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!(
        "Linux {}, {cpus} CPUs (nproc), {cpu_model}; load average {load} at the end",
        kernel.trim()
    )
}

/// The UTC date and the git revision (`describe --dirty`) a section of
/// docs/benchmarks.md is stamped with.
pub(super) fn stamp() -> (String, String) {
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default();
    let rev = output(
        Command::new("git")
            .arg("-C")
            .arg(util::root())
            .args(["describe", "--always", "--dirty"]),
    )
    .unwrap_or_else(|| "unknown".into());
    (date, rev)
}

pub(super) fn report(args: &BenchArgs, results: &[(Workload, Results)]) -> anyhow::Result<String> {
    let (date, rev) = stamp();
    let python = output(
        Command::new(
            args.python
                .as_deref()
                .unwrap_or(Path::new("/usr/bin/python3")),
        )
        .args([
            "-c",
            "import ssl,sys; print(sys.version.split()[0], ssl.OPENSSL_VERSION)",
        ]),
    )
    .unwrap_or_default();
    let mut cmdline: Vec<String> = std::env::args().skip(1).collect();
    cmdline.insert(0, "cargo xtask".into());
    let mut s = String::new();
    writeln!(s, "## {} — {}", date.trim(), rev.trim())?;
    writeln!(s)?;
    writeln!(s, "- Command: `{}`", cmdline.join(" "))?;
    writeln!(s, "- Machine: {}", machine())?;
    writeln!(s, "- Workloads: python {}", python.trim())?;
    writeln!(
        s,
        "- Rounds: {} (each: one run without, one with the daemon, order alternating)",
        args.rounds
    )?;
    writeln!(s)?;
    writeln!(
        s,
        "| workload | ops/run | without µs/op | with µs/op | Δ µs/op | ratio (loop CPU) | ratio (process CPU) | ratio (wall) |"
    )?;
    writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for (w, r) in results {
        let ops = r.base.first().map_or(0, |x| x.ops);
        let m = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
        let base = m(&r.base, |x| per_op_us(x.loop_cpu_s, x.ops));
        let with = m(&r.with, |x| per_op_us(x.loop_cpu_s, x.ops));
        let proc_ratio = m(&r.with, |x| x.proc_cpu_s) / m(&r.base, |x| x.proc_cpu_s);
        let wall_ratio = m(&r.with, |x| x.loop_wall_s) / m(&r.base, |x| x.loop_wall_s);
        writeln!(
            s,
            "| {} | {ops} | {base:.2} | {with:.2} | {:+.2} | {:.3} | {proc_ratio:.3} | {wall_ratio:.3} |",
            w.title(),
            with - base,
            with / base,
        )?;
    }
    if let Some((_, r)) = results.iter().find(|(w, _)| *w == Workload::Https) {
        let hwm = r.daemon.iter().map(|d| d.vm_hwm_kib).max().unwrap_or(0);
        let requests = r.with.first().map_or(0, |x| x.ops);
        let cpu = median(
            r.daemon
                .iter()
                .map(|d| per_op_us(d.cpu_s, requests))
                .collect(),
        );
        let events: Vec<String> = r.daemon.iter().map(|d| d.llm_events.to_string()).collect();
        writeln!(s)?;
        #[expect(clippy::cast_precision_loss, reason = "KiB counts are small")]
        let hwm_mib = hwm as f64 / 1024.0;
        writeln!(
            s,
            "- (c) daemon peak RSS (VmHWM) during (a): {hwm_mib:.1} MiB (max over rounds)"
        )?;
        writeln!(s, "- daemon CPU during (a): {cpu:.1} µs per request (median; /proc/PID/stat, 10 ms ticks)")?;
        writeln!(
            s,
            "- `llm.call` events written per run of (a), of {requests} requests: {}",
            events.join(", ")
        )?;
        if r.daemon.iter().any(|d| d.llm_events < requests) {
            writeln!(
                s,
                "- WARNING: the daemon did not report every request of (a); its overhead there may be understated"
            )?;
        }
    }
    Ok(s)
}
