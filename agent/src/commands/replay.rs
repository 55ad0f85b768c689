//! `aitrail replay`: a recording through the whole userspace pipeline, its
//! throughput (`--bench`), or a synthesised recording (`--synth`).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use aitrail::{
    capture::records,
    config::{Config, FileConfig},
    pipeline::{Pipeline, RunSummary, Stage},
    replay::{self, mix, recording, synth, RecordingHeader},
    sinks::SinkSpec,
    util::Envelope,
};
use anyhow::{bail, Context as _};

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The recording (`aitrail agent --record FILE`). It holds captured
    /// plaintext, unredacted: keep it like a secret.
    file: PathBuf,
    /// TOML configuration (see config/agent.toml): detection, redaction,
    /// routes and sinks as the daemon would use them.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where events go (as for `agent`; default stdout).
    #[arg(long = "sink")]
    sinks: Vec<SinkSpec>,
    /// Measure: run the pipeline over the recording `--rounds` times, events
    /// to a null output, and print plaintext MB/s, llm.call/s and events/s
    /// per core (CPU time of the whole process).
    #[arg(long)]
    bench: bool,
    #[arg(long, default_value_t = 5, requires = "bench")]
    rounds: u32,
    /// Write a synthesised recording to FILE instead (no kernel, no root):
    /// agent processes making `--calls` streamed `OpenAI` and Anthropic calls
    /// with tool calls (see `aitrail::replay::synth`). FILE must not exist.
    #[arg(long, conflicts_with_all = ["bench", "sinks", "config"])]
    synth: bool,
    #[arg(long, default_value_t = 1000, requires = "synth")]
    calls: usize,
    /// With `--synth`: every N-th file a tool reads is a private key
    /// (a `sensitive_file` finding); 0: never.
    #[arg(long, default_value_t = 0, requires = "synth")]
    sensitive_every: usize,
    /// With `--synth`: also replay every `*.cap` capture fixture of DIR
    /// (e.g. tests/fixtures/llm: every provider), each as a process of its
    /// own, spread between the agent sessions (repeatable).
    #[arg(long = "fixtures", requires = "synth")]
    fixtures: Vec<PathBuf>,
    /// With `--fixtures`: how many times each fixture is replayed.
    #[arg(long, default_value_t = 1, requires = "fixtures")]
    fixture_copies: usize,
}

pub fn replay(args: &ReplayArgs) -> anyhow::Result<()> {
    if args.synth {
        let mut header = RecordingHeader::this_host(&Envelope::new());
        header.synthetic = true;
        let mut captures = Vec::new();
        for dir in &args.fixtures {
            captures.extend(mix::load_dir(dir).with_context(|| format!("{}", dir.display()))?);
        }
        let files = captures.len();
        let captures: Vec<mix::Capture> = (0..args.fixture_copies)
            .flat_map(|_| captures.iter().cloned())
            .collect();
        let recs = synth::records_mixed(args.calls, args.sensitive_every, &captures);
        let n = recording::write_all(&args.file, &header, recs.iter().map(records::encode))?;
        eprintln!(
            "aitrail: wrote {n} synthesised records ({} llm calls, {} connections from {files} capture fixtures) to {}",
            args.calls,
            captures.len(),
            args.file.display()
        );
        return Ok(());
    }
    let loaded = replay::load(&args.file)?;
    if let Some(e) = &loaded.error {
        eprintln!(
            "aitrail: {e}; replaying the {} records before it",
            loaded.records.len()
        );
    }
    let mut file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    // The kernel side's settings mean nothing here; the pipeline's do.
    file.scope = FileConfig::default().scope;
    let mut cfg = file.validate()?;
    if args.bench {
        bench(&mut cfg, &loaded, args.rounds)?;
    } else {
        cfg.add_sinks(&args.sinks);
        if cfg.sinks.is_empty() && cfg.routes.is_empty() {
            cfg.sinks.push(SinkSpec::Stdout);
        }
        let env = loaded.header.envelope();
        let (sinks, stages) = crate::stages(&cfg, env.clone())?;
        let metrics = crate::metrics(&cfg, &sinks)?;
        let mut p = Pipeline::replaying(&cfg, stages, sinks, env, &loaded.header.boot_id);
        if let Some((m, _)) = &metrics {
            p.publish_to(std::sync::Arc::clone(m));
        }
        let s = replay::run(p, &loaded.records)?;
        drop(metrics);
        eprintln!(
            "aitrail: replayed {} records: {} events, {} llm calls{}",
            s.pipeline.records,
            s.pipeline.events,
            s.pipeline.llm_calls,
            if s.decode_errors.is_empty() {
                String::new()
            } else {
                format!(", records refused: {:?}", s.decode_errors)
            }
        );
    }
    if let Some(e) = loaded.error {
        return Err(anyhow::Error::new(e).context("the recording is damaged"));
    }
    Ok(())
}

/// The pipeline thread's time by stage, and the throughput through decode
/// (the http and decode stages: captured bytes to LLM calls).
#[expect(
    clippy::cast_precision_loss,
    reason = "rates for people to read; f64 is plenty"
)]
fn print_stages(round: &RunSummary) {
    let stages: Vec<Duration> = round.stages.iter().map(|(_, d)| *d).collect();
    let sum: f64 = stages.iter().map(Duration::as_secs_f64).sum();
    println!(
        "pipeline thread by stage (one more round, timed: {sum:.3} s of wall time inside \
         stages; deliver includes waits on the sinks' thread):"
    );
    for (stage, d) in Stage::ALL.iter().zip(&stages) {
        let secs = d.as_secs_f64();
        println!(
            "  {:<10} {:>8.3} s {:>5.1} %",
            stage.name(),
            secs,
            100.0 * secs / sum.max(1e-9)
        );
    }
    let decode: f64 = Stage::ALL
        .iter()
        .zip(&stages)
        .filter(|(s, _)| matches!(s, Stage::Http | Stage::Decode))
        .map(|(_, d)| d.as_secs_f64())
        .sum();
    println!(
        "through decode (http + decode): {:.0} MB/s plaintext, {:.0} llm.call/s ({decode:.3} s)",
        round.tls_bytes as f64 / 1e6 / decode.max(1e-9),
        round.llm_calls as f64 / decode.max(1e-9),
    );
}

fn pipeline(cfg: &Config, header: &RecordingHeader) -> anyhow::Result<Pipeline> {
    let env = header.envelope();
    let (sinks, stages) = crate::stages(cfg, env.clone())?;
    Ok(Pipeline::replaying(
        cfg,
        stages,
        sinks,
        env,
        &header.boot_id,
    ))
}

#[expect(
    clippy::cast_precision_loss,
    reason = "rates for people to read; f64 is plenty"
)]
fn bench(cfg: &mut Config, loaded: &replay::Loaded, rounds: u32) -> anyhow::Result<()> {
    if loaded.records.is_empty() {
        bail!("the recording holds no records");
    }
    cfg.sinks = vec![SinkSpec::File(PathBuf::from("/dev/null"))];
    cfg.routes.clear();
    let rounds = rounds.max(1);
    // Decode alone first: the kernel-record boundary's cost.
    let cpu0 = replay::cpu_time();
    let mut tls = 0u64;
    for _ in 0..rounds {
        for b in &loaded.records {
            if let Ok(records::Record::Tls(c)) = records::decode(b) {
                tls += c.data.len() as u64;
            }
        }
    }
    let decode_cpu = replay::cpu_time().saturating_sub(cpu0).as_secs_f64();

    let mut total = RunSummary::default();
    let mut cpu = 0.0;
    let mut wall = 0.0;
    for _ in 0..rounds {
        // Building the stages (compiling rules) is start-up, not throughput.
        let p = pipeline(cfg, &loaded.header).context("building the pipeline")?;
        let (c0, w0) = (replay::cpu_time(), Instant::now());
        let s = replay::run(p, &loaded.records)?;
        cpu += replay::cpu_time().saturating_sub(c0).as_secs_f64();
        wall += w0.elapsed().as_secs_f64();
        total.records += s.pipeline.records;
        total.events += s.pipeline.events;
        total.llm_calls += s.pipeline.llm_calls;
        total.tls_bytes += s.pipeline.tls_bytes;
    }
    let mb = total.tls_bytes as f64 / 1e6;
    println!(
        "recording: {} records, {:.1} MB of TLS plaintext, {} llm calls ({:.1} KB of plaintext \
         per llm call), {} events per round{}",
        loaded.records.len(),
        mb / f64::from(rounds),
        total.llm_calls / u64::from(rounds),
        total.tls_bytes as f64 / 1e3 / (total.llm_calls as f64).max(1.0),
        total.events / u64::from(rounds),
        if loaded.header.synthetic {
            " (synthesised)"
        } else {
            ""
        }
    );
    println!(
        "kernel records alone: {:.0} MB/s per core ({:.3} s CPU for {rounds} rounds)",
        tls as f64 / 1e6 / decode_cpu.max(1e-9),
        decode_cpu
    );
    println!(
        "full pipeline: {:.1} MB/s plaintext per core, {:.0} llm.call/s per core, \
         {:.0} events/s per core ({rounds} rounds, {cpu:.3} s CPU, {wall:.3} s wall)",
        mb / cpu.max(1e-9),
        total.llm_calls as f64 / cpu.max(1e-9),
        total.events as f64 / cpu.max(1e-9),
    );
    // The goal's stage on its own: no clock reads inside, CPU time of
    // rounds of their own.
    let mut dec = replay::DecodeSummary::default();
    let c0 = replay::cpu_time();
    for _ in 0..rounds {
        let s = replay::decode_only(cfg, &loaded.records);
        dec.tls_bytes += s.tls_bytes;
        dec.llm_calls += s.llm_calls;
    }
    let dec_cpu = replay::cpu_time().saturating_sub(c0).as_secs_f64();
    println!(
        "through decode alone (streams, HTTP, SSE, WebSocket, provider and MCP decoders): \
         {:.0} MB/s plaintext per core, {:.0} llm.call/s per core ({rounds} rounds, {dec_cpu:.3} s CPU)",
        dec.tls_bytes as f64 / 1e6 / dec_cpu.max(1e-9),
        dec.llm_calls as f64 / dec_cpu.max(1e-9),
    );
    // Timing the stages costs clock reads: a round of its own, after.
    let mut p = pipeline(cfg, &loaded.header).context("building the pipeline")?;
    p.time_stages();
    let timed = replay::run(p, &loaded.records)?;
    print_stages(&timed.pipeline);
    Ok(())
}
