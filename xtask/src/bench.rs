//! `cargo xtask bench`: what the daemon costs other processes, measured on
//! the whole process, against a baseline taken in the same run.
//!
//! Workloads (python scripts in tests/bench/, each reports the CPU time of
//! its own loop):
//! - (a) `https`: small chat-completion POSTs over one keep-alive HTTPS
//!   connection to a local server; the client is in the daemon's scope.
//! - (b) `open`: open + close of a small file, in a process outside the
//!   daemon's scope (the daemon is scoped to an idle `sleep`).
//! - (c) the daemon's peak RSS (`VmHWM`) during (a).
//! - (d) `tls`: in-memory TLS (`SSLObject` over `MemoryBIO`), 64-byte writes and
//!   reads, no syscalls, outside the daemon's scope.
//!
//! Each round runs every workload once without and once with the daemon, the
//! order alternating between rounds so that drift (thermal, other tenants)
//! falls on both sides. Ratios are medians of "with" over medians of
//! "without". The daemon always runs scoped (`--pid`): never host-wide here.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{net::UnixDatagram, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::util::{self, output};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Rounds; each runs every workload with and without the daemon.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// HTTPS requests per run of (a).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// open+close pairs per run of (b).
    #[arg(long, default_value_t = 200_000)]
    opens: usize,
    /// TLS write+read pairs per run of (d).
    #[arg(long, default_value_t = 200_000)]
    tls_ops: usize,
    /// Only these workloads (https, open, tls); default all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Workload>,
    /// The python interpreter for the workloads (default /usr/bin/python3,
    /// which links the system libssl, else python3 on PATH).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Use the existing target/release/aitrail instead of building it.
    #[arg(long)]
    no_build: bool,
    /// Measure this daemon binary (e.g. an older build) instead of
    /// target/release/aitrail; implies --no-build.
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Print the results only; do not append them to docs/benchmarks.md.
    #[arg(long)]
    no_write: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    Https,
    Open,
    Tls,
}

impl Workload {
    fn title(self) -> &'static str {
        match self {
            Self::Https => "(a) HTTPS POST loop, watched (in scope)",
            Self::Open => "(b) open+close loop, not watched",
            Self::Tls => "(d) in-memory TLS 64 B write+read, not watched",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Https => "request",
            Self::Open => "open+close",
            Self::Tls => "write+read",
        }
    }
}

/// One run of a workload.
#[derive(Clone, Copy, Debug)]
struct Sample {
    ops: u64,
    /// user+sys of the workload's loop, from its own getrusage.
    loop_cpu_s: f64,
    loop_wall_s: f64,
    /// user+sys of the whole workload process, from wait4.
    proc_cpu_s: f64,
}

/// What the daemon did during one "with" run.
#[derive(Clone, Copy, Debug, Default)]
struct DaemonSample {
    cpu_s: f64,
    vm_hwm_kib: u64,
    llm_events: u64,
}

#[derive(Default)]
struct Results {
    base: Vec<Sample>,
    with: Vec<Sample>,
    daemon: Vec<DaemonSample>,
}

/// Files and processes shared by all runs.
struct Env {
    python: PathBuf,
    daemon: PathBuf,
    dir: PathBuf,
    scripts: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    https_port: Option<u16>,
    /// The idle process the daemon is scoped to for (b) and (d).
    idle_pid: u32,
    runs: usize,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("bench loads eBPF programs: run it as root");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let workloads: Vec<Workload> = if args.only.is_empty() {
        vec![Workload::Https, Workload::Open, Workload::Tls]
    } else {
        args.only.clone()
    };
    if !args.no_build && args.daemon.is_none() {
        util::build_release(&[])?;
    }
    let daemon = match &args.daemon {
        Some(d) => d.clone(),
        None => util::daemon_binary()?,
    };
    if !daemon.is_file() {
        bail!(
            "{} not found: build it (cargo xtask build)",
            daemon.display()
        );
    }
    let python = args.python.clone().unwrap_or_else(|| {
        if Path::new("/usr/bin/python3").is_file() {
            "/usr/bin/python3".into()
        } else {
            "python3".into()
        }
    });
    let dir = util::target_dir()?
        .join("bench")
        .join(std::process::id().to_string());
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    println!("bench: scratch files and daemon logs in {}", dir.display());

    let (cert, key) = make_cert(&dir)?;
    let mut guards = Guards::default();
    let idle = Command::new("sleep")
        .arg("1000000")
        .spawn()
        .context("start the idle scope process (sleep)")?;
    let idle_pid = idle.id();
    guards.0.push(idle);
    let mut env = Env {
        python,
        daemon,
        scripts: util::root().join("tests/bench"),
        dir,
        cert,
        key,
        https_port: None,
        idle_pid,
        runs: 0,
    };
    if workloads.contains(&Workload::Https) {
        let (server, port) = start_https_server(&env)?;
        guards.0.push(server);
        env.https_port = Some(port);
    }

    let mut results: Vec<(Workload, Results)> =
        workloads.iter().map(|w| (*w, Results::default())).collect();
    for round in 0..args.rounds {
        for (w, r) in &mut results {
            // Alternate the order so drift does not favour one side.
            for with_daemon in [round % 2 == 1, round % 2 == 0] {
                let (sample, daemon) = env.run_once(*w, args, with_daemon)?;
                println!(
                    "bench: round {}/{} {:<5} {:<14} {:>8.2} µs/{} (loop CPU), {:>8.2} µs wall",
                    round + 1,
                    args.rounds,
                    format!("{w:?}").to_lowercase(),
                    if with_daemon {
                        "with daemon"
                    } else {
                        "without"
                    },
                    per_op_us(sample.loop_cpu_s, sample.ops),
                    w.unit(),
                    per_op_us(sample.loop_wall_s, sample.ops),
                );
                if with_daemon {
                    r.with.push(sample);
                    r.daemon.push(daemon.unwrap_or_default());
                } else {
                    r.base.push(sample);
                }
            }
        }
    }
    drop(guards);

    let report = report(args, &results)?;
    println!("\n{report}");
    if args.no_write {
        println!("bench: --no-write: docs/benchmarks.md left as it is");
        return Ok(());
    }
    append_to_doc(&report)
}

fn append_to_doc(report: &str) -> anyhow::Result<()> {
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

impl Env {
    fn script(&self, name: &str) -> PathBuf {
        self.scripts.join(name)
    }

    fn run_once(
        &mut self,
        w: Workload,
        args: &BenchArgs,
        with_daemon: bool,
    ) -> anyhow::Result<(Sample, Option<DaemonSample>)> {
        self.runs += 1;
        let mut cmd = Command::new(&self.python);
        match w {
            Workload::Https => {
                let port = self.https_port.context("no HTTPS server")?;
                cmd.arg(self.script("https_client.py"))
                    .arg(port.to_string())
                    .arg(&self.cert)
                    .arg(args.requests.to_string());
            }
            Workload::Open => {
                cmd.arg(self.script("open_loop.py"))
                    .arg(self.dir.join("open-target.txt"))
                    .arg(args.opens.to_string());
            }
            Workload::Tls => {
                cmd.arg(self.script("tls_loop.py"))
                    .arg(&self.cert)
                    .arg(&self.key)
                    .arg(args.tls_ops.to_string());
            }
        }
        let mut load = Load::start(&mut cmd)?;
        if !with_daemon {
            return Ok((load.go()?, None));
        }
        // (a) watches the workload itself; (b) and (d) watch an idle process.
        let scope = if w == Workload::Https {
            load.pid()
        } else {
            self.idle_pid
        };
        let daemon = Daemon::start(self, scope)?;
        let cpu0 = daemon.cpu_s()?;
        let sample = load.go();
        let cpu1 = daemon.cpu_s()?;
        let vm_hwm_kib = daemon.vm_hwm_kib()?;
        let events = daemon.events.clone();
        daemon.stop()?;
        let sample = sample?;
        let llm_events = count_llm_calls(&events);
        // Counted; the daemon's log stays for inspection, the events go.
        fs::remove_file(&events).ok();
        Ok((
            sample,
            Some(DaemonSample {
                cpu_s: cpu1 - cpu0,
                vm_hwm_kib,
                llm_events,
            }),
        ))
    }
}

fn per_op_us(s: f64, ops: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "op counts are far below 2^52")]
    let ops = ops.max(1) as f64;
    s * 1e6 / ops
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

fn make_cert(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args([
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run openssl (apt-get install openssl)")?
        .success();
    if !ok {
        bail!("openssl could not make a test certificate");
    }
    Ok((cert, key))
}

fn start_https_server(env: &Env) -> anyhow::Result<(Child, u16)> {
    let mut child = Command::new(&env.python)
        .arg(env.script("https_server.py"))
        .arg(&env.cert)
        .arg(&env.key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("start tests/bench/https_server.py")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?)
        .read_line(&mut line)
        .context("read the server's port")?;
    let port = line
        .trim()
        .parse()
        .with_context(|| format!("server said {line:?}, not a port"))?;
    Ok((child, port))
}

/// Children killed and reaped when the bench ends, even on error.
#[derive(Default)]
struct Guards(Vec<Child>);

impl Drop for Guards {
    fn drop(&mut self) {
        for c in &mut self.0 {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// A workload process, stopped at its `ready` line.
struct Load {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    reaped: bool,
}

impl Load {
    fn start(cmd: &mut Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", util::show(cmd)))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut load = Self {
            child,
            stdin,
            stdout,
            reaped: false,
        };
        let line = load.line()?;
        if line.trim() != "ready" {
            bail!("workload said {line:?} instead of `ready`");
        }
        Ok(load)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .context("read from the workload")?;
        if line.is_empty() {
            bail!("the workload ended early");
        }
        Ok(line)
    }

    /// Starts the loop; returns its sample once the process has exited.
    fn go(&mut self) -> anyhow::Result<Sample> {
        writeln!(self.stdin, "go").context("tell the workload to go")?;
        self.stdin.flush().ok();
        let line = self.line()?;
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("workload result {line:?}"))?;
        let (status, proc_cpu_s) = self.wait4()?;
        if !status.success() {
            bail!("workload failed: {status}");
        }
        Ok(Sample {
            ops: v["ops"].as_u64().context("no ops")?,
            loop_cpu_s: v["cpu_s"].as_f64().context("no cpu_s")?,
            loop_wall_s: v["wall_s"].as_f64().context("no wall_s")?,
            proc_cpu_s,
        })
    }

    /// Reaps the process with `wait4`, for its rusage (std's `wait` drops it).
    fn wait4(&mut self) -> anyhow::Result<(ExitStatus, f64)> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid")?;
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our unreaped child; status and ru are valid for writes.
        let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut ru) };
        if r != pid {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        self.reaped = true;
        #[expect(
            clippy::cast_precision_loss,
            reason = "CPU seconds and µs are far below 2^52"
        )]
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok((
            ExitStatus::from_raw(status),
            tv(ru.ru_utime) + tv(ru.ru_stime),
        ))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if !self.reaped {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// The daemon under test, started scoped and ready (probes attached).
struct Daemon {
    child: Child,
    events: PathBuf,
    log: PathBuf,
    stopped: bool,
}

impl Daemon {
    #[expect(
        clippy::duration_suboptimal_units,
        reason = "from_mins needs Rust 1.91; rust-version is 1.87"
    )]
    const READY_TIMEOUT: Duration = Duration::from_secs(120);
    #[expect(
        clippy::duration_suboptimal_units,
        reason = "from_mins needs Rust 1.91; rust-version is 1.87"
    )]
    const STOP_TIMEOUT: Duration = Duration::from_secs(60);

    fn start(env: &Env, scope_pid: u32) -> anyhow::Result<Self> {
        let n = env.runs;
        let sock_path = env.dir.join(format!("notify-{n}.sock"));
        let events = env.dir.join(format!("events-{n}.ndjson"));
        let log = env.dir.join(format!("daemon-{n}.log"));
        fs::remove_file(&sock_path).ok();
        let sock = UnixDatagram::bind(&sock_path)
            .with_context(|| format!("bind {}", sock_path.display()))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let log_file =
            fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new(&env.daemon);
        cmd.args(["agent", "--pid", &scope_pid.to_string()])
            .arg("--sink")
            .arg(format!("file:{}", events.display()))
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", util::show(&cmd)))?;
        let mut daemon = Self {
            child,
            events,
            log,
            stopped: false,
        };
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match sock.recv(&mut buf) {
                Ok(n)
                    if String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == "READY=1") =>
                {
                    break
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e).context("read the notify socket"),
            }
            if let Some(status) = daemon.child.try_wait()? {
                daemon.stopped = true;
                bail!(
                    "the daemon exited before READY=1 ({status}); `{}`; its log:\n{}",
                    util::show(&cmd),
                    daemon.log_tail()
                );
            }
            if start.elapsed() > Self::READY_TIMEOUT {
                bail!(
                    "no READY=1 from the daemon within {:?}; its log:\n{}",
                    Self::READY_TIMEOUT,
                    daemon.log_tail()
                );
            }
        }
        fs::remove_file(&sock_path).ok();
        Ok(daemon)
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn status_field(&self, name: &str) -> anyhow::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/PID/status"))
    }

    fn vm_hwm_kib(&self) -> anyhow::Result<u64> {
        self.status_field("VmHWM:")
    }

    /// user+sys of the daemon so far, from /proc/PID/stat.
    fn cpu_s(&self) -> anyhow::Result<f64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command (which may hold spaces) start at state.
        let after = stat.rsplit_once(')').context("bad /proc/PID/stat")?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?; // utime, stime
                                                                        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        #[expect(clippy::cast_precision_loss, reason = "tick counts are far below 2^52")]
        Ok(ticks as f64 / hz as f64)
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid")?;
        // SAFETY: pid is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if start.elapsed() > Self::STOP_TIMEOUT {
                bail!(
                    "the daemon did not stop within {:?} of SIGTERM",
                    Self::STOP_TIMEOUT
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.stopped = true;
        if !status.success() {
            bail!(
                "the daemon exited with {status} after SIGTERM; its log:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.stopped {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

fn count_llm_calls(events: &Path) -> u64 {
    fs::read_to_string(events).map_or(0, |s| {
        s.lines()
            .filter(|l| l.contains(r#""kind":"llm.call""#))
            .count() as u64
    })
}

fn machine() -> String {
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

fn report(args: &BenchArgs, results: &[(Workload, Results)]) -> anyhow::Result<String> {
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])).unwrap_or_default();
    let rev = output(
        Command::new("git")
            .args(["-C"])
            .arg(util::root())
            .args(["describe", "--always", "--dirty"]),
    )
    .unwrap_or_else(|| "unknown".into());
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
