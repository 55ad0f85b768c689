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
//! - (e) `gnutls`: calls of `gnutls_record_send` + `gnutls_record_recv` (they
//!   return at once: no handshake), outside the daemon's scope.
//! - (f) `nspr`: NSPR `PR_Write` to /dev/null + `PR_Read` from /dev/zero
//!   (the NSS hooks), outside the daemon's scope.
//! - (g) `sock`: 64-byte `send` + `recv` over a TCP loopback connection
//!   (the plain-HTTP hooks on every socket send and receive), outside the
//!   daemon's scope.
//!
//! Each round runs every workload once without and once with the daemon, the
//! order alternating between rounds so that drift (thermal, other tenants)
//! falls on both sides. Ratios are medians of "with" over medians of
//! "without". The daemon always runs scoped (`--pid`): never host-wide here.
//!
//! `cargo xtask bench ship` measures shipping instead (see [`ship`]), and
//! `cargo xtask bench decoders` the decoders' throughput (see [`decoders`]).

mod decoders;
mod procs;
mod report;
mod ship;

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context as _};

use self::procs::{Daemon, Guards, Load};
use crate::util;

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// `ship`: the shipping figures instead (see `cargo xtask bench ship --help`);
    /// `decoders`: the decoders' throughput.
    #[command(subcommand)]
    what: Option<BenchWhat>,
    /// Rounds; each runs every workload with and without the daemon.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// HTTPS requests per run of (a).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// open+close pairs per run of (b).
    #[arg(long, default_value_t = 200_000)]
    opens: usize,
    /// TLS write+read pairs per run of (d), and call pairs of (e), (f), (g).
    #[arg(long, default_value_t = 200_000)]
    tls_ops: usize,
    /// Only these workloads (https, open, tls, gnutls, nspr, sock); default all.
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

#[derive(clap::Subcommand)]
enum BenchWhat {
    /// zstd ratio per batch size, collector ingest events/s and CPU, and
    /// the time from a side effect to its finding being searchable at the
    /// collector (root); appended to docs/benchmarks.md.
    Ship(ship::ShipArgs),
    /// Criterion benchmarks per decoder (HTTP/1.1, HTTP/2, WebSocket, SSE,
    /// each LLM provider, MCP); prints a Markdown table of MB/s and calls/s.
    Decoders(decoders::DecodersArgs),
}

impl BenchWhat {
    fn run(&self) -> anyhow::Result<()> {
        match self {
            BenchWhat::Ship(ship) => ship::run(ship),
            BenchWhat::Decoders(d) => decoders::run(d),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    Https,
    Open,
    Tls,
    Gnutls,
    Nspr,
    Sock,
}

impl Workload {
    const ALL: [Self; 6] = [
        Self::Https,
        Self::Open,
        Self::Tls,
        Self::Gnutls,
        Self::Nspr,
        Self::Sock,
    ];

    fn title(self) -> &'static str {
        match self {
            Self::Https => "(a) HTTPS POST loop, watched (in scope)",
            Self::Open => "(b) open+close loop, not watched",
            Self::Tls => "(d) in-memory TLS 64 B write+read, not watched",
            Self::Gnutls => "(e) gnutls_record_send+recv calls, not watched",
            Self::Nspr => "(f) NSPR PR_Write+PR_Read 64 B, not watched",
            Self::Sock => "(g) TCP loopback send+recv 64 B, not watched",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Https => "request",
            Self::Open => "open+close",
            Self::Tls | Self::Nspr => "write+read",
            Self::Gnutls | Self::Sock => "send+recv",
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
    if let Some(what) = &args.what {
        return what.run();
    }
    if !util::is_root() {
        bail!("bench loads eBPF programs: run it as root");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let workloads: Vec<Workload> = if args.only.is_empty() {
        Workload::ALL.to_vec()
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

    let report = report::report(args, &results)?;
    println!("\n{report}");
    if args.no_write {
        println!("bench: --no-write: docs/benchmarks.md left as it is");
        return Ok(());
    }
    report::append_to_doc(&report)
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
            Workload::Gnutls => {
                cmd.arg(self.script("gnutls_loop.py"))
                    .arg(args.tls_ops.to_string());
            }
            Workload::Nspr => {
                cmd.arg(self.script("nspr_loop.py"))
                    .arg(args.tls_ops.to_string());
            }
            Workload::Sock => {
                cmd.arg(self.script("sock_loop.py"))
                    .arg(args.tls_ops.to_string());
            }
        }
        let mut load = Load::start(&mut cmd)?;
        if !with_daemon {
            return Ok((load.go()?, None));
        }
        // (a) watches the workload itself; the others watch an idle process.
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

fn count_llm_calls(events: &Path) -> u64 {
    fs::read_to_string(events).map_or(0, |s| {
        s.lines()
            .filter(|l| l.contains(r#""kind":"llm.call""#))
            .count() as u64
    })
}
