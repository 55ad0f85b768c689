//! `aitrail doctor`: can the daemon work on this host, and what did it
//! decide about each TLS stack?
//!
//! Four parts, each a list of checks marked `ok`, `warn` or `FAIL`:
//! - the kernel: BTF and the offsets the programs need, the uprobe PMU,
//!   the tracepoints, privileges, the embedded eBPF object;
//! - the configuration file, when there is one;
//! - the daemons running now: their scope, attach counters and the last TLS
//!   decisions (stack, method — symbol, pclntab, signature —, probes,
//!   refusals and why, exec → probes delay), from `[capture] status_dir`;
//! - the TLS stacks on this host as the daemon would find them at start,
//!   plus `--binary` files and the libraries and program of `--pid`
//!   processes, analysed here (nothing is attached).
//!
//! Exit status 1 when a check failed.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Instant,
};

use aitrail::{
    capture::{
        self, btf,
        decisions::{self, Decision, Outcome},
        targets::{self, Targets},
    },
    config::{FileConfig, DEFAULT_STATUS_DIR},
};
use serde::Serialize;

#[derive(clap::Args)]
pub struct DoctorArgs {
    /// The daemon's configuration (default /etc/aitrail/agent.toml when it
    /// exists): checked, and where to find the running daemons' status.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also analyse this file (an agent's executable or a TLS library).
    #[arg(long = "binary")]
    binaries: Vec<PathBuf>,
    /// Also analyse what this process maps and runs.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Skip the host scan (libraries and known runtimes).
    #[arg(long)]
    no_scan: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub level: Level,
    pub what: String,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct Daemon {
    pub status_file: String,
    pub alive: bool,
    pub status: decisions::AgentStatus,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub kernel: Vec<Check>,
    pub config: Vec<Check>,
    pub daemons: Vec<Daemon>,
    /// What the host scan, `--binary` and `--pid` found.
    pub tls: Vec<Decision>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.kernel
            .iter()
            .chain(&self.config)
            .any(|c| c.level == Level::Fail)
    }
}

fn check(level: Level, what: &str, detail: impl Into<String>) -> Check {
    Check {
        level,
        what: what.to_owned(),
        detail: detail.into(),
    }
}

pub fn doctor(args: &DoctorArgs) -> anyhow::Result<()> {
    let report = build(args);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if report.failed() {
        std::process::exit(1);
    }
    Ok(())
}

pub fn build(args: &DoctorArgs) -> Report {
    let mut report = Report {
        kernel: kernel_checks(),
        ..Report::default()
    };
    let config = args.config.clone().or_else(|| {
        let p = PathBuf::from("/etc/aitrail/agent.toml");
        p.is_file().then_some(p)
    });
    let mut status_dir = PathBuf::from(DEFAULT_STATUS_DIR);
    if let Some(path) = &config {
        match FileConfig::load(path).and_then(FileConfig::validate) {
            Ok(cfg) => {
                report
                    .config
                    .push(check(Level::Ok, "config", path.display().to_string()));
                status_dir.clone_from(&cfg.capture.status_dir);
                report.config.extend(config_checks(&cfg));
            }
            Err(e) => report
                .config
                .push(check(Level::Fail, "config", e.to_string())),
        }
    }
    if !status_dir.as_os_str().is_empty() {
        for (path, status, alive) in decisions::read_statuses(&status_dir) {
            report.daemons.push(Daemon {
                status_file: path.display().to_string(),
                alive,
                status,
            });
        }
    }
    report.tls = scan(args);
    report
}

/// What the programs need from the kernel, checked the way the daemon
/// uses it.
fn kernel_checks() -> Vec<Check> {
    let mut out = Vec::new();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
    out.push(check(Level::Ok, "kernel", release));
    match btf::kernel_offsets(Path::new(btf::VMLINUX_BTF)) {
        Ok(_) => out.push(check(
            Level::Ok,
            "BTF",
            format!(
                "{} has the task and sock fields the programs read",
                btf::VMLINUX_BTF
            ),
        )),
        Err(e) => out.push(check(
            Level::Fail,
            "BTF",
            format!("{}: {e}", btf::VMLINUX_BTF),
        )),
    }
    let exists = |p: &str| Path::new(p).exists();
    out.push(if exists("/sys/bus/event_source/devices/uprobe/type") {
        check(Level::Ok, "uprobes", "uprobe PMU present")
    } else {
        check(
            Level::Warn,
            "uprobes",
            "no uprobe PMU: aya falls back to tracefs uprobe_events (slower attach)",
        )
    });
    let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .find(|d| exists(&format!("{d}/events")));
    match tracefs {
        Some(d) => {
            let missing: Vec<&str> = [
                "syscalls/sys_enter_openat",
                "syscalls/sys_enter_connect",
                "sched/sched_process_exec",
                "sched/sched_process_fork",
                "sched/sched_process_exit",
            ]
            .into_iter()
            .filter(|t| !exists(&format!("{d}/events/{t}")))
            .collect();
            out.push(if missing.is_empty() {
                check(
                    Level::Ok,
                    "tracepoints",
                    format!("{d}: syscall and sched tracepoints"),
                )
            } else {
                check(
                    Level::Fail,
                    "tracepoints",
                    format!("{d}: missing {missing:?}"),
                )
            });
        }
        None => out.push(check(
            Level::Warn,
            "tracepoints",
            "tracefs not mounted: the daemon mounts it at /sys/kernel/tracing",
        )),
    }
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    out.push(check(
        Level::Ok,
        "BPF LSM",
        if lsm.split(',').any(|l| l.trim() == "bpf") {
            "enabled (not needed)"
        } else {
            "not enabled (not needed)"
        },
    ));
    out.push(capabilities());
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(p) = paranoid {
        out.push(check(
            if p > 2 { Level::Warn } else { Level::Ok },
            "perf_event_paranoid",
            if p > 2 {
                format!("{p}: attaching uprobes needs CAP_SYS_ADMIN too")
            } else {
                p.to_string()
            },
        ));
    }
    let len = capture::ebpf_object_len();
    out.push(if len > 4096 {
        check(Level::Ok, "eBPF object", format!("{len} bytes embedded"))
    } else {
        check(
            Level::Fail,
            "eBPF object",
            "placeholder only (built with AYA_BUILD_SKIP): this binary cannot capture",
        )
    });
    out
}

/// The capabilities the daemon needs, from this process's effective set.
fn capabilities() -> Check {
    const NEEDED: [(u32, &str); 4] = [
        (39, "CAP_BPF"),
        (38, "CAP_PERFMON"),
        (19, "CAP_SYS_PTRACE"),
        (2, "CAP_DAC_READ_SEARCH"),
    ];
    let eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(bit, _)| eff & (1 << bit) == 0)
        .map(|(_, n)| *n)
        .collect();
    if missing.is_empty() {
        check(
            Level::Ok,
            "privileges",
            "CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH",
        )
    } else {
        check(
            Level::Warn,
            "privileges",
            format!("this shell lacks {missing:?}: run doctor as root to see what the daemon sees"),
        )
    }
}

fn config_checks(cfg: &aitrail::config::Config) -> Vec<Check> {
    let mut out = Vec::new();
    let scope = if cfg.scope.pids.is_empty() && cfg.scope.cgroups.is_empty() {
        "whole host".to_owned()
    } else {
        format!("pids {:?}, cgroups {:?}", cfg.scope.pids, cfg.scope.cgroups)
    };
    out.push(check(Level::Ok, "scope", scope));
    let sinks: Vec<String> = cfg.sinks.iter().map(|s| format!("{s:?}")).collect();
    out.push(check(
        if sinks.is_empty() && cfg.routes.is_empty() {
            Level::Warn
        } else {
            Level::Ok
        },
        "sinks",
        if sinks.is_empty() {
            "none in the file (the command line may add some)".to_owned()
        } else {
            format!("{} configured", sinks.len())
        },
    ));
    for (what, dir) in [
        ("hook_cache_dir", &cfg.capture.hook_cache_dir),
        ("status_dir", &cfg.capture.status_dir),
    ] {
        out.push(dir_check(what, dir));
    }
    out
}

/// A directory the daemon writes private files to: absent (created 0700 at
/// start) or present and not readable by others.
fn dir_check(what: &str, dir: &Path) -> Check {
    use std::os::unix::fs::PermissionsExt as _;
    if dir.as_os_str().is_empty() {
        return check(Level::Ok, what, "off");
    }
    match std::fs::metadata(dir) {
        Err(_) => check(
            Level::Ok,
            what,
            format!("{} (created 0700 at start)", dir.display()),
        ),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => check(
            Level::Warn,
            what,
            format!(
                "{} is mode {:o}: others can read what the daemon writes there",
                dir.display(),
                m.permissions().mode() & 0o777
            ),
        ),
        Ok(_) => check(Level::Ok, what, dir.display().to_string()),
    }
}

/// The TLS stacks the daemon would find, analysed here.
fn scan(args: &DoctorArgs) -> Vec<Decision> {
    let mut t = Targets::default();
    if !args.no_scan {
        t.discover_host();
    }
    for pid in &args.pids {
        t.discover_process(*pid);
        t.learn(Path::new(&format!("/proc/{pid}/exe")));
    }
    // A --binary that holds no stack we hook is worth saying too.
    let mut not_tls = Vec::new();
    for b in &args.binaries {
        let before = t.decisions.iter().count() + usize::try_from(t.decisions.evicted).unwrap_or(0);
        let started = Instant::now();
        if t.learn(b).is_none()
            && t.decisions.iter().count() + usize::try_from(t.decisions.evicted).unwrap_or(0)
                == before
        {
            let mut d = Decision::new(Outcome::NotTls, b);
            d.reason = targets::resolve(b).err().map(|e| e.to_string());
            d.took_ms = started.elapsed().as_secs_f64() * 1e3;
            not_tls.push(d);
        }
    }
    t.decisions.iter().cloned().chain(not_tls).collect()
}

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let mark = |l: Level| match l {
        Level::Ok => "ok  ",
        Level::Warn => "warn",
        Level::Fail => "FAIL",
    };
    let _ = writeln!(s, "Kernel and privileges");
    for c in &r.kernel {
        let _ = writeln!(s, "  {} {:<20} {}", mark(c.level), c.what, c.detail);
    }
    if !r.config.is_empty() {
        let _ = writeln!(s, "\nConfiguration");
        for c in &r.config {
            let _ = writeln!(s, "  {} {:<20} {}", mark(c.level), c.what, c.detail);
        }
    }
    let _ = writeln!(s, "\nRunning daemons");
    if r.daemons.iter().all(|d| !d.alive) {
        let _ = writeln!(s, "  none (no live agent-PID.json in the status directory)");
    }
    for d in r.daemons.iter().filter(|d| d.alive) {
        let st = &d.status;
        let _ = writeln!(
            s,
            "  pid {} (aitrail {}), since {}, scope: {}, updated {}",
            st.pid, st.version, st.started_at, st.scope, st.updated_at
        );
        let counters: Vec<String> = st
            .counters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(s, "    {}", counters.join(" "));
        if st.decisions_evicted > 0 {
            let _ = writeln!(s, "    ({} older decisions not kept)", st.decisions_evicted);
        }
        for dec in &st.decisions {
            let _ = writeln!(s, "    {}", decision_line(dec));
        }
    }
    let stale = r.daemons.iter().filter(|d| !d.alive).count();
    if stale > 0 {
        let _ = writeln!(s, "  ({stale} status file(s) of daemons no longer running)");
    }
    let _ = writeln!(
        s,
        "\nTLS stacks found here (analysed now, nothing attached)"
    );
    if r.tls.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for d in &r.tls {
        let _ = writeln!(s, "  {}", decision_line(d));
    }
    s
}

fn decision_line(d: &Decision) -> String {
    let mut s = format!("{:<13} ", serde_plain(d.outcome));
    if let Some(stack) = &d.stack {
        let _ = write!(s, "{stack}");
        if let Some(m) = &d.method {
            let _ = write!(s, " by {m}");
        }
        s.push(' ');
    }
    let _ = write!(s, "{}", d.path);
    if let Some(pid) = d.pid {
        let _ = write!(s, " (pid {pid})");
    }
    if d.probes > 0 {
        let _ = write!(s, ", {} probes", d.probes);
    }
    if !d.functions.is_empty() {
        let _ = write!(s, " on {}", d.functions.join(","));
    }
    let _ = write!(s, ", {:.1} ms", d.took_ms);
    if let Some(ms) = d.exec_to_attach_ms {
        let _ = write!(s, ", {ms:.1} ms after exec");
    }
    if let Some(b) = &d.build_id {
        let _ = write!(s, ", build-id {b}");
    }
    if let Some(r) = &d.reason {
        let _ = write!(s, ": {r}");
    }
    s
}

fn serde_plain(o: Outcome) -> &'static str {
    match o {
        Outcome::Found => "hooked",
        Outcome::Refused => "refused",
        Outcome::AttachFailed => "attach-failed",
        Outcome::Attached => "attached",
        Outcome::NotTls => "no-tls",
    }
}
