//! `aitrail`: the host daemon and its command line.

mod commands;

use std::{
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
};

use aitrail::{
    blindspot::BlindSpots,
    capture::{Capture, CaptureConfig},
    config::{Config, FileConfig},
    detect::Detector,
    metrics::{AgentMetrics, MetricsServer},
    opinion::Opinion,
    pipeline::{Pipeline, Stages},
    redact::Redactor,
    replay::{Recorder, RecordingHeader},
    route::Router,
    sinks::{SinkSpec, Sinks},
    util::Envelope,
};
use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "aitrail",
    version,
    about = "See what AI agents on this host really say and do"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the capture daemon.
    Agent(AgentArgs),
    /// Measure detection on the labelled corpus: precision and recall per
    /// finding class, false positives on benign cases, time per llm.call.
    DetectEval(DetectEvalArgs),
    /// Run the collector: HTTPS ingest from agents, the store, the query API.
    Collector(CollectorArgs),
    /// One host, nothing else to install: the daemon writing into an
    /// embedded store (`--store`, default /var/lib/aitrail/store) that
    /// `aitrail search`, `trace` and `tail` read; other sinks as for
    /// `agent`. The config's [store] section applies (encryption,
    /// retention, archive).
    Run(RunArgs),
    /// Search a store: events newest first, as NDJSON.
    Search(commands::query::SearchArgs),
    /// Every event of one trace (a conversation), as NDJSON.
    Trace(commands::query::TraceArgs),
    /// The last events of a store, and with -f every new one as it is
    /// stored, as NDJSON; filters as for search.
    Tail(commands::query::TailArgs),
    /// Release findings from the hold: retention then treats them and
    /// their traces like any event.
    Release(commands::admin::ReleaseArgs),
    /// Erase a user's events from a store, its index and its archive
    /// (object storage included), leaving a tombstone.
    Forget(commands::admin::ForgetArgs),
    /// Write a new random store key file (for `[store] encryption_key_file`).
    Keygen(commands::admin::KeygenArgs),
    /// Encrypt a plaintext store in place (not while it is in use).
    StoreEncrypt(commands::admin::EncryptArgs),
    /// Read archive segments, list a store's segments.
    #[command(subcommand)]
    Archive(commands::archive::ArchiveCmd),
    /// Run a recording (`agent --record`) through the whole userspace
    /// pipeline (decode, HTTP, LLM, correlation, detection, redaction,
    /// routing, sinks) without a kernel or root; events go to stdout unless
    /// `--sink` or the config says otherwise.
    Replay(commands::replay::ReplayArgs),
    /// Check that this host can run the daemon (kernel, BTF, privileges,
    /// configuration), show what the running daemons attached (each TLS
    /// stack, the method that found its hooks, refusals and why) and which
    /// TLS stacks are on this host.
    Doctor(commands::doctor::DoctorArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The store directory (created 0700) [default: the config's [store]
    /// dir, else /var/lib/aitrail/store].
    #[arg(long)]
    store: Option<PathBuf>,
    #[command(flatten)]
    agent: AgentArgs,
}

#[derive(clap::Args)]
struct DetectEvalArgs {
    /// The directory of `*.jsonl` cases (see docs/detection.md; its
    /// heldout.jsonl is left out), or one `.jsonl` file.
    #[arg(long, default_value = "tests/corpus")]
    corpus: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Exit non-zero when a goal is missed (recall >= 0.95 per class, benign
    /// false positives <= 0.5%, p99 per llm.call <= 1 ms).
    #[arg(long)]
    goals: bool,
    /// Runs of the whole corpus, for stable latency percentiles.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

#[derive(clap::Args)]
struct CollectorArgs {
    /// TOML configuration (see config/collector.toml).
    #[arg(long)]
    config: PathBuf,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// TOML configuration (see config/agent.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where events go: `stdout`, `file:PATH`, `store:DIR` or
    /// `collector:https://HOST:PORT` (repeatable; adds to the config's).
    #[arg(long = "sink")]
    sinks: Vec<SinkSpec>,
    /// Capture only this process and its descendants (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Capture only this cgroup v2 subtree (repeatable).
    #[arg(long = "cgroup")]
    cgroups: Vec<PathBuf>,
    /// Plaintext bytes copied from one TLS read or write call at most.
    #[arg(long)]
    tls_cap: Option<u32>,
    /// Watch processes with this name from their exec on (repeatable).
    #[arg(long = "watch-comm")]
    watch_comm: Vec<String>,
    /// Also write every kernel record, unredacted, to FILE (created 0600;
    /// it must not exist) for `aitrail replay`. WARNING: the recording
    /// holds the captured plaintext (prompts, responses, API keys, tokens)
    /// before any redaction. Keep it like a secret; delete it when done.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Watch every process in scope (file and network events for all).
    #[arg(long)]
    watch_all: bool,
    /// Run this command inside the scope (after `--`): it starts once the
    /// probes are attached, and the daemon stops when it exits, with its
    /// exit status. Under sudo it runs as the invoking user.
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    // Few threads, little contention: glibc's default of one arena per core
    // per thread only keeps freed memory (startup parses the kernel's BTF)
    // resident.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt has no preconditions; it runs before other threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AITRAIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Agent(args) => run_agent(args),
        Cmd::DetectEval(args) => detect_eval(&args),
        Cmd::Collector(args) => run_collector(&args),
        Cmd::Run(mut args) => {
            let dir = match args.store {
                Some(d) => d,
                None => args
                    .agent
                    .config
                    .as_deref()
                    .map(FileConfig::load)
                    .transpose()?
                    .and_then(|f| f.store.dir)
                    .unwrap_or_else(|| PathBuf::from(commands::store::DEFAULT_STORE)),
            };
            args.agent.sinks.push(SinkSpec::store(dir));
            run_agent(args.agent)
        }
        Cmd::Search(args) => commands::query::search(&args),
        Cmd::Trace(args) => commands::query::trace(&args),
        Cmd::Tail(args) => commands::query::tail(&args),
        Cmd::Release(args) => commands::admin::release(&args),
        Cmd::Forget(args) => commands::admin::forget(&args),
        Cmd::Keygen(args) => commands::admin::keygen(&args),
        Cmd::StoreEncrypt(args) => commands::admin::store_encrypt(&args),
        Cmd::Archive(cmd) => commands::archive::run(&cmd),
        Cmd::Replay(args) => commands::replay::replay(&args),
        Cmd::Doctor(args) => commands::doctor::doctor(&args),
    }
}

fn detect_eval(args: &DetectEvalArgs) -> anyhow::Result<()> {
    let report = aitrail::eval::run(&aitrail::eval::EvalOptions {
        corpus: args.corpus.clone(),
        rounds: args.rounds,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    if args.goals && !report.goals_met() {
        let missed: Vec<&str> = report
            .missed_goals()
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        // A missed goal is a result, not a failure of the program: no error
        // chain or backtrace, just the exit status for CI.
        eprintln!("aitrail: detection goals missed: {}", missed.join(", "));
        std::io::Write::flush(&mut std::io::stdout())?;
        std::process::exit(1);
    }
    Ok(())
}

/// Serves until SIGINT or SIGTERM; requests in flight finish first.
fn run_collector(args: &CollectorArgs) -> anyhow::Result<()> {
    let cfg = aitrail_collector::config::FileConfig::load(&args.config)?.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        let collector = aitrail_collector::Collector::bind(cfg).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("signal handler")?;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        collector
            .run(async {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            })
            .await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        Ok(())
    })
}

/// The configuration file, with the command line's additions.
fn file_config(args: &AgentArgs) -> anyhow::Result<FileConfig> {
    let mut file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    file.scope.pids.extend(&args.pids);
    file.scope.cgroups.extend(args.cgroups.iter().cloned());
    if let Some(cap) = args.tls_cap {
        file.capture.tls_cap_bytes = cap;
    }
    file.capture
        .watch_comm
        .extend(args.watch_comm.iter().cloned());
    file.capture.watch_all_in_scope |= args.watch_all;
    Ok(file)
}

/// Gives the memory freed after start-up back to the system.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The sinks and the stages after correlation, their configs checked.
/// `env` stamps findings: this host's, or a recording's.
fn stages(cfg: &Config, env: Envelope) -> anyhow::Result<(Sinks, Stages)> {
    let detector = Detector::new(&cfg.detect, env.clone()).context("detection rules")?;
    let redactor = Redactor::new(&cfg.redact).context("redaction")?;
    let mut all_sinks = cfg.sinks.clone();
    all_sinks.extend(Router::sink_specs(&cfg.routes));
    let sinks = Sinks::start(&all_sinks)?;
    let router = Router::new(&cfg.routes, &cfg.sinks, &sinks)?;
    let opinion = Opinion::start(&cfg.second_opinion)?;
    let blind_spots = BlindSpots::start(&cfg.blind_spot, env);
    let stages = Stages {
        detector,
        blind_spots,
        redactor,
        router,
        opinion,
    };
    Ok((sinks, stages))
}

/// The `/metrics` server when `[metrics] listen` asks for one: it reads the
/// sinks' counters and what the pipeline publishes (`publish_to`).
fn metrics(
    cfg: &Config,
    sinks: &Sinks,
) -> anyhow::Result<Option<(Arc<AgentMetrics>, MetricsServer)>> {
    let Some(addr) = cfg.metrics_listen else {
        return Ok(None);
    };
    let m = AgentMetrics::new(sinks.stats_handle());
    let server = MetricsServer::start(addr, m.registry())?;
    Ok(Some((m, server)))
}

/// What the kernel side is told.
fn capture_config(cfg: &Config) -> CaptureConfig {
    CaptureConfig {
        scope_pids: cfg.scope.pids.clone(),
        scope_cgroups: cfg.scope.cgroups.clone(),
        tls_cap: cfg.capture.tls_cap_bytes,
        ringbuf_bytes: cfg.capture.ringbuf_bytes,
        watch_all: cfg.capture.watch_all_in_scope,
        watch_comm: cfg.capture.watch_comm.clone(),
        watch_exe: cfg.capture.watch_exe.clone(),
        hook_cache_dir: cfg.capture.hook_cache_dir.clone(),
        status_dir: cfg.capture.status_dir.clone(),
        plain_http_ports: cfg.capture.plain_http_ports.clone(),
        preattach: Vec::new(),
    }
}

/// `--record`: the recording, created (0600, never over an existing file)
/// with this host's header.
fn recorder(path: &std::path::Path) -> anyhow::Result<Recorder> {
    let header = RecordingHeader::this_host(&Envelope::new());
    let r = Recorder::create(path, &header)?;
    tracing::warn!(
        path = %path.display(),
        "recording every kernel record, plaintext included, unredacted"
    );
    Ok(r)
}

/// The flag SIGTERM sets to stop the daemon, and SIGINT too unless a
/// command runs in scope: then Ctrl-C belongs to it (an interactive shell
/// ignores it at its prompt) and the daemon stops when the command exits.
fn stop_flag(with_command: bool) -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))
        .context("signal handler")?;
    if with_command {
        // SAFETY: ignoring a signal has no preconditions.
        unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    } else {
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))
            .context("signal handler")?;
    }
    Ok(stop)
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the parsed command line is consumed here"
)]
fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    let mut file = file_config(&args)?;
    // A command to run in scope: forked now, held until the probes are in.
    let mut gated = if args.command.is_empty() {
        None
    } else {
        let g = aitrail::launch::spawn_gated(&args.command)
            .with_context(|| format!("cannot start {:?}", args.command[0]))?;
        file.scope.pids.push(g.pid());
        Some(g)
    };
    let preattach: Vec<(u32, std::path::PathBuf)> = gated
        .iter()
        .map(|g| (g.pid(), g.program().to_path_buf()))
        .collect();
    let mut cfg = file.validate()?;
    cfg.add_sinks(&args.sinks);
    if cfg.sinks.is_empty() && cfg.routes.is_empty() {
        cfg.sinks.push(SinkSpec::Stdout);
    }
    if !nix::unistd::geteuid().is_root() {
        tracing::warn!("not running as root: loading eBPF programs needs CAP_BPF and CAP_PERFMON");
    }
    if cfg.scope.pids.is_empty() && cfg.scope.cgroups.is_empty() {
        tracing::warn!("no --pid or --cgroup: capturing the whole host");
    }

    let stop = stop_flag(gated.is_some())?;

    let mut capture_cfg = capture_config(&cfg);
    capture_cfg.preattach = preattach;
    // Batches of up to 1024 records.
    let (rec_tx, rec_rx) = flume::bounded(64);
    let (cmd_tx, cmd_rx) = flume::unbounded();
    let (kc_tx, kc_rx) = flume::bounded(16);
    let (ready_tx, ready_rx) = flume::bounded(1);
    // Created before the probes load: a path that cannot be written stops
    // the daemon before anything is captured.
    let recorder = args.record.as_deref().map(recorder).transpose()?;
    let cap_stop = Arc::clone(&stop);
    let capture = std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || match Capture::load(capture_cfg) {
            Ok(mut c) => {
                if let Some(r) = recorder {
                    c.record_to(r);
                }
                let _ = ready_tx.send(Ok(()));
                c.run(&rec_tx, &cmd_rx, &cap_stop, &kc_tx);
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        })
        .context("spawn capture thread")?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = capture.join();
            return Err(anyhow::Error::new(e).context("cannot start capture"));
        }
        Err(_) => bail!("capture thread ended before it was ready"),
    }
    // Built once the probes are loaded: parsing the kernel's BTF and
    // compiling the rules are the two peaks of the daemon's memory, and
    // one after the other they do not add up. A refused config still stops
    // the daemon before anything is captured or written.
    let started = stages(&cfg, Envelope::new())
        .and_then(|(sinks, stages)| Ok((metrics(&cfg, &sinks)?, sinks, stages)));
    let (metrics, sinks, stages) = match started {
        Ok(s) => s,
        Err(e) => {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            drop(rec_rx);
            let _ = capture.join();
            return Err(e);
        }
    };
    trim_heap();
    let mut pipeline = Pipeline::new(&cfg, stages, sinks, cmd_tx);
    pipeline.seed(&aitrail::capture::descendants(&cfg.scope.pids));
    if let Some((m, _)) = &metrics {
        pipeline.publish_to(Arc::clone(m));
    }
    tracing::info!("probes attached; capturing");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    // The command's end stops the daemon, which then drains.
    let waiter = gated.take().map(|mut g| {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let status = g.wait();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            status
        })
    });
    let result = pipeline.run(&rec_rx, &kc_rx);
    let _ = capture.join();
    drop(metrics);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    result?;
    tracing::info!("stopped");
    if let Some(w) = waiter {
        let status = w
            .join()
            .map_err(|_| anyhow::anyhow!("command waiter panicked"))?
            .context("waiting for the command")?;
        std::process::exit(status.code().unwrap_or(128 + 1));
    }
    Ok(())
}
