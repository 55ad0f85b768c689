//! The userspace pipeline: records in, events out.
//!
//! One thread owns the process table, the TLS streams and the correlator,
//! so nothing here needs a lock. It turns kernel records into events, runs
//! the HTTP and LLM decoders, links effects to tool calls, and hands events
//! to the sinks. Every loss it sees (record gaps, parse failures, evictions)
//! is counted and reported in `agent.health`.

mod convert;
mod health;
mod mcp;
mod timing;

pub use timing::Stage;
use timing::StageClock;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    blindspot::BlindSpots,
    capture::{Command, KernelCounters, Record},
    config::Config,
    correlate::{Correlator, Effect, LlmObservation},
    detect::Detector,
    event::{kind, Event, ExecInfo},
    http::{HttpOutput, Limits},
    mcp::SseJoin,
    metrics::AgentMetrics,
    opinion::{field_text, Opinion},
    procs::ProcTable,
    redact::{RedactStats, Redactor},
    route::Router,
    sinks::Sinks,
    streams::{StreamOutput, Streams},
    util::{boot_ns, Envelope},
};

/// The stages after correlation, built (and their config checked) before
/// the probes are loaded.
pub struct Stages {
    pub detector: Detector,
    pub blind_spots: BlindSpots,
    pub redactor: Redactor,
    pub router: Router,
    pub opinion: Option<Opinion>,
}

/// Processes whose exec placement is remembered for their exit, at most.
const MAX_PLACES: usize = 65536;

pub struct Pipeline {
    procs: ProcTable,
    streams: Streams,
    corr: Correlator,
    /// MCP HTTP+SSE calls waiting for their answer on the `GET` stream.
    mcp_join: SseJoin,
    env: Envelope,
    detector: Detector,
    blind_spots: BlindSpots,
    redactor: Redactor,
    redacted: RedactStats,
    router: Router,
    opinion: Option<Opinion>,
    sinks: Sinks,
    commands: flume::Sender<Command>,
    /// Pids already reported to the kernel as watched.
    watched: HashSet<u32>,
    /// Trace and parent span of each process's exec event, for its exit.
    exec_place: HashMap<u32, (String, Option<String>)>,
    last_seq: HashMap<u32, u64>,
    /// Time per stage, for `replay --bench` (off otherwise).
    clock: StageClock,
    dropped: BTreeMap<String, u64>,
    counters: BTreeMap<String, u64>,
    /// Findings emitted, by class.
    findings: BTreeMap<String, u64>,
    kernel: KernelCounters,
    events_emitted: u64,
    records_received: u64,
    started: Instant,
    /// Replaying a recording: the clock is the latest record's time, not
    /// this host's, and nothing is read from this host's /proc.
    replay_now: Option<u64>,
    last_health_ns: u64,
    last_tick_ns: u64,
    idle_ns: u64,
    health_every_ns: u64,
    /// TLS plaintext bytes received.
    tls_bytes: u64,
    /// Records received by kind, events delivered by kind (for metrics).
    records_by_kind: BTreeMap<&'static str, u64>,
    events_by_kind: BTreeMap<String, u64>,
    /// Where the figures go for `/metrics`, and when they last went.
    metrics: Option<(Arc<AgentMetrics>, Instant)>,
}

/// What one run of the pipeline saw and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub records: u64,
    pub events: u64,
    pub llm_calls: u64,
    pub tls_bytes: u64,
    /// Time per stage, when [`Pipeline::time_stages`] was called.
    pub stages: Vec<(Stage, Duration)>,
}

/// How often expiry runs, on the pipeline's clock.
const TICK_NS: u64 = 500_000_000;
/// MCP HTTP+SSE `tools/call`s held for their answer, at most, and for how
/// long: the answer comes when the client closes its `GET` stream.
const MCP_SSE_MAX_HELD: usize = 4096;
const MCP_SSE_HOLD_NS: u64 = 600 * 1_000_000_000;

/// The connection streams the configuration bounds.
pub fn streams_of(cfg: &Config) -> Streams {
    let limits = Limits {
        max_body_bytes: cfg.pipeline.max_body_bytes,
        max_ws_message_bytes: cfg.pipeline.max_ws_message_bytes,
        ..Limits::default()
    };
    Streams::new(
        limits,
        cfg.pipeline.max_connections,
        cfg.pipeline.max_buffered_bytes,
    )
}

impl Pipeline {
    pub fn new(
        cfg: &Config,
        stages: Stages,
        mut sinks: Sinks,
        commands: flume::Sender<Command>,
    ) -> Self {
        // Events go out in parcels, after each batch of records (run).
        sinks.hold_until_flush();
        let env = Envelope::new();
        Self {
            procs: ProcTable::new(),
            streams: streams_of(cfg),
            corr: Correlator::new(
                env.clone(),
                cfg.pipeline
                    .tool_effect_window_secs
                    .saturating_mul(1_000_000_000),
            ),
            mcp_join: SseJoin::new(MCP_SSE_MAX_HELD, MCP_SSE_HOLD_NS),
            env,
            detector: stages.detector,
            blind_spots: stages.blind_spots,
            redactor: stages.redactor,
            redacted: RedactStats::default(),
            router: stages.router,
            opinion: stages.opinion,
            sinks,
            commands,
            watched: HashSet::new(),
            exec_place: HashMap::new(),
            last_seq: HashMap::new(),
            dropped: BTreeMap::new(),
            counters: BTreeMap::new(),
            findings: BTreeMap::new(),
            kernel: Vec::new(),
            events_emitted: 0,
            records_received: 0,
            started: Instant::now(),
            replay_now: None,
            last_health_ns: boot_ns(),
            last_tick_ns: boot_ns(),
            idle_ns: cfg.pipeline.idle_timeout_secs.saturating_mul(1_000_000_000),
            health_every_ns: cfg
                .pipeline
                .health_interval_secs
                .max(1)
                .saturating_mul(1_000_000_000),
            tls_bytes: 0,
            records_by_kind: BTreeMap::new(),
            events_by_kind: BTreeMap::new(),
            metrics: None,
            clock: StageClock::default(),
        }
    }

    /// Times each stage of the pipeline thread (for `replay --bench`); the
    /// figures come back in [`RunSummary::stages`].
    pub fn time_stages(&mut self) {
        self.clock.enable();
    }

    /// A pipeline for a recording: events carry the recorded host and its
    /// clock, time advances with the records (ticks, idle expiry and
    /// health events fall at the same records on every run), and the
    /// process table knows only what the records say.
    pub fn replaying(
        cfg: &Config,
        stages: Stages,
        sinks: Sinks,
        env: Envelope,
        boot_id: &str,
    ) -> Self {
        // The kernel is not there to be told which processes to watch.
        let (commands, _) = flume::bounded(1);
        let mut p = Self::new(cfg, stages, sinks, commands);
        p.corr = Correlator::new(
            env.clone(),
            cfg.pipeline
                .tool_effect_window_secs
                .saturating_mul(1_000_000_000),
        );
        p.env = env;
        p.procs = ProcTable::offline(boot_id);
        p.replay_now = Some(0);
        p.last_tick_ns = 0;
        p.last_health_ns = 0;
        p
    }

    /// Now on the pipeline's clock: this host's boot time, or in a replay
    /// the latest record's.
    fn now(&self) -> u64 {
        self.replay_now.unwrap_or_else(boot_ns)
    }

    /// Seeds the process table with processes older than the daemon.
    pub fn seed(&mut self, pids: &[u32]) {
        for &p in pids {
            self.procs.seed(p);
        }
    }

    /// Runs until the capture side hangs up, then drains and flushes.
    pub fn run(
        mut self,
        records: &flume::Receiver<Vec<Record>>,
        kernel: &flume::Receiver<KernelCounters>,
    ) -> Result<RunSummary, crate::sinks::SinkError> {
        loop {
            match records.recv_timeout(Duration::from_millis(200)) {
                Ok(batch) => {
                    for r in batch {
                        self.clock.enter(Stage::Records);
                        self.on_record(r);
                        self.clock.leave();
                    }
                    self.publish(false);
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(k) = kernel.try_recv() {
                self.kernel = k;
            }
            if let Some(o) = &mut self.opinion {
                for f in o.answered() {
                    self.deliver(f);
                }
            }
            if self.now().saturating_sub(self.last_tick_ns) >= TICK_NS {
                self.tick();
            }
            self.publish(false);
            self.clock.enter(Stage::Deliver);
            self.sinks.flush();
            self.clock.leave();
        }
        while let Ok(k) = kernel.try_recv() {
            self.kernel = k;
        }
        // Drain: what is in flight is finished, not lost.
        let now = self.now();
        let mut outs = Vec::new();
        self.streams.finish_all(now, &mut outs);
        self.on_stream_outputs(outs);
        for ev in self.mcp_join.drain() {
            self.emit(ev);
        }
        for ev in self.corr.flush(now, None) {
            self.emit(ev);
        }
        if let Some(o) = self.opinion.take() {
            let counters = o.counters();
            for f in o.finish() {
                self.deliver(f);
            }
            for (name, v) in counters {
                self.counters.insert(name.to_owned(), v);
            }
        }
        let health = self.health_event();
        self.emit(health);
        self.publish(true);
        let stats = self.sinks.shutdown()?;
        tracing::info!(events = self.events_emitted, ?stats, "pipeline drained");
        Ok(RunSummary {
            records: self.records_received,
            events: self.events_emitted,
            llm_calls: self.counters.get("llm_calls").copied().unwrap_or(0),
            tls_bytes: self.tls_bytes,
            stages: self.clock.spent(),
        })
    }

    fn tick(&mut self) {
        let now = self.now();
        self.last_tick_ns = now;
        let mut outs = Vec::new();
        self.streams.expire(now, self.idle_ns, &mut outs);
        self.on_stream_outputs(outs);
        for ev in self.corr.expire(now) {
            self.emit(ev);
        }
        for ev in self.mcp_join.expire(now) {
            self.emit(ev);
        }
        for ev in self.blind_spots.expire(now) {
            self.emit(ev);
        }
        if now.saturating_sub(self.last_health_ns) >= self.health_every_ns {
            let h = self.health_event();
            self.emit(h);
            self.last_health_ns = now;
        }
    }

    fn count(&mut self, name: &str) {
        *self.counters.entry(name.to_owned()).or_default() += 1;
    }

    fn drop_one(&mut self, name: &str) {
        *self.dropped.entry(name.to_owned()).or_default() += 1;
    }

    fn emit_all(&mut self, events: impl IntoIterator<Item = Event>) {
        for ev in events {
            self.emit(ev);
        }
    }

    /// Detection sees the event as captured; then secrets are redacted out
    /// of it, and it is routed and written with the findings it raised
    /// (which hold positions, never values).
    fn emit(&mut self, mut ev: Event) {
        self.clock.enter(Stage::Detect);
        let findings = self.detector.on_event(&ev);
        self.clock.leave();
        self.clock.enter(Stage::Redact);
        let mut stats = self.redactor.redact_event(&mut ev);
        // Findings hold positions, not values; they pass the redactor all
        // the same, so nothing is written that did not.
        let findings: Vec<Event> = findings
            .into_iter()
            .map(|mut f| {
                stats.add(&self.redactor.redact_event(&mut f));
                f
            })
            .collect();
        self.clock.leave();
        self.redacted.add(&stats);
        let texts: Vec<Option<String>> =
            findings.iter().map(|f| self.opinion_text(f, &ev)).collect();
        self.deliver(ev);
        for (f, text) in findings.into_iter().zip(texts) {
            let back = match (text, self.opinion.as_mut()) {
                (Some(text), Some(o)) => o.submit(f, text),
                _ => Some(f),
            };
            if let Some(f) = back {
                self.deliver(f);
            }
        }
    }

    /// The text a second opinion on `f` is asked about: the fields of `ev`
    /// it matched, as they will be written.
    fn opinion_text(&self, f: &Event, ev: &Event) -> Option<String> {
        let info = f.finding.as_ref()?;
        if !self.opinion.as_ref()?.wants(&info.class) {
            return None;
        }
        let mut fields: Vec<&str> = info
            .matches
            .iter()
            .filter(|m| m.event == ev.id)
            .map(|m| m.field.as_str())
            .collect();
        fields.dedup();
        let texts: Vec<String> = fields.iter().filter_map(|f| field_text(ev, f)).collect();
        (!texts.is_empty()).then(|| texts.join("\n"))
    }

    #[expect(
        clippy::needless_pass_by_value,
        reason = "a delivered event is done with: the sinks serialise it once"
    )]
    /// Writes an event that went through `emit` (or carries no captured
    /// text: health).
    fn deliver(&mut self, ev: Event) {
        self.clock.enter(Stage::Deliver);
        self.events_emitted += 1;
        match self.events_by_kind.get_mut(&ev.kind) {
            Some(n) => *n += 1,
            None => {
                self.events_by_kind.insert(ev.kind.clone(), 1);
            }
        }
        if ev.kind == kind::FINDING {
            let class = ev.finding.as_ref().map_or("", |f| f.class.as_str());
            *self
                .findings
                .entry(format!("findings_{class}"))
                .or_default() += 1;
        }
        let mask = self.router.targets(&ev);
        self.sinks.send_to(&ev, Some(mask));
        self.clock.leave();
    }

    fn on_record(&mut self, r: Record) {
        self.records_received += 1;
        *self.records_by_kind.entry(r.kind_name()).or_default() += 1;
        let h = *r.header();
        if let Some(now) = self.replay_now {
            if now == 0 {
                // The recording's first record starts its clock.
                self.last_tick_ns = h.ktime_ns;
                self.last_health_ns = h.ktime_ns;
            }
            self.replay_now = Some(now.max(h.ktime_ns));
        }
        // The kernel numbers records per CPU before it tries to send them:
        // a gap is records the ring buffer could not take.
        if let Some(last) = self.last_seq.insert(h.cpu, h.seq) {
            if h.seq > last + 1 {
                *self
                    .dropped
                    .entry("ringbuf_records_lost".into())
                    .or_default() += h.seq - last - 1;
            }
        }
        let tgid = r.tgid();
        match r {
            Record::Tls(c) => self.on_plaintext(tgid, &c),
            Record::Exec(e) => {
                let info = self.procs.on_exec(
                    tgid,
                    e.ppid,
                    e.uid,
                    &e.comm,
                    &e.filename,
                    &e.args,
                    h.ktime_ns,
                );
                // argv as redacted by the process table: never the raw one.
                let args = info.args.clone();
                let mut ev = self.env.event(kind::PROCESS_EXEC, h.ktime_ns, Some(info));
                ev.exec = Some(ExecInfo {
                    filename: e.filename.clone(),
                    args: args.clone(),
                    args_truncated: e.flags & agent_common::exec_flags::ARGS_TRUNCATED != 0,
                    ..ExecInfo::default()
                });
                let finding = self.place(
                    &mut ev,
                    tgid,
                    h.ktime_ns,
                    &Effect::Exec {
                        filename: &e.filename,
                        args: &args,
                    },
                );
                self.remember_place(tgid, &ev);
                self.emit(ev);
                self.emit_all(finding);
            }
            Record::Fork(f) => {
                self.procs.on_fork(f.parent_tgid, f.child_tgid, h.ktime_ns);
                self.corr.on_fork(f.parent_tgid, f.child_tgid);
                if let Some(p) = self.exec_place.get(&f.parent_tgid).cloned() {
                    if self.exec_place.len() < MAX_PLACES {
                        self.exec_place.insert(f.child_tgid, p);
                    }
                }
            }
            Record::Exit(x) => self.on_exit(tgid, x.code, h.ktime_ns),
            Record::FileOpen(f) => {
                // A relative path is resolved against the process's cwd,
                // which a replay does not have.
                let path = if self.replay_now.is_some() {
                    f.path.clone()
                } else {
                    convert::absolute_path(tgid, f.dfd, &f.path)
                };
                let proc = self.procs.get(tgid).map(|p| p.info.clone());
                let mut ev = self.env.event(kind::FILE_OPEN, h.ktime_ns, proc);
                ev.file = Some(convert::file_info(&path, f.flags, f.ret));
                let finding = self.place(&mut ev, tgid, h.ktime_ns, &Effect::File { path: &path });
                self.emit(ev);
                self.emit_all(finding);
            }
            Record::Connect(c) => {
                let net = convert::net_info(&c.addr, c.ret);
                let proc = self.procs.get(tgid).map(|p| p.info.clone());
                let mut ev = self.env.event(kind::NET_CONNECT, h.ktime_ns, proc);
                let (address, port) = (net.address.clone(), net.port);
                ev.net = Some(net);
                let eff = Effect::Connect {
                    address: &address,
                    port,
                };
                let finding = self.place(&mut ev, tgid, h.ktime_ns, &eff);
                self.blind_spots.on_connect(tgid, &ev, h.ktime_ns);
                self.emit(ev);
                self.emit_all(finding);
            }
            Record::LibOpen(_) => self.count("tls_library_opens"),
            Record::ConnectHint(_) => self.count("connect_hints"),
        }
    }

    /// Captured plaintext (TLS or plain HTTP) into its connection's stream.
    fn on_plaintext(&mut self, tgid: u32, c: &crate::capture::records::TlsChunk) {
        self.blind_spots.on_plaintext(tgid);
        self.tls_bytes += c.data.len() as u64;
        let mut outs = Vec::new();
        self.clock.enter(Stage::Http);
        self.streams.on_chunk(c, &mut outs);
        self.clock.leave();
        self.on_stream_outputs(outs);
    }

    /// Keeps where a process's exec went, for its exit. Bounded: entries go
    /// at exit; past the bound (exits lost) an exit gets a trace of its own.
    fn remember_place(&mut self, tgid: u32, ev: &Event) {
        if self.exec_place.len() < MAX_PLACES || self.exec_place.contains_key(&tgid) {
            self.exec_place
                .insert(tgid, (ev.trace_id.clone(), ev.parent_span_id.clone()));
        }
    }

    /// Lets the correlator place an exec/file/net event in its trace.
    /// Returns a finding about it (an effect no tool call asked for), to be
    /// emitted after the event.
    fn place(
        &mut self,
        ev: &mut Event,
        tgid: u32,
        ktime_ns: u64,
        eff: &Effect<'_>,
    ) -> Option<Event> {
        self.clock.enter(Stage::Correlate);
        let procs = &mut self.procs;
        let finding = self
            .corr
            .place(ev, tgid, || procs.ancestors(tgid), ktime_ns, eff);
        self.clock.leave();
        finding
    }

    fn on_exit(&mut self, tgid: u32, code: u32, ktime_ns: u64) {
        let mut outs = Vec::new();
        self.streams.close_process(tgid, ktime_ns, &mut outs);
        self.on_stream_outputs(outs);
        for ev in self.mcp_join.release_process(tgid) {
            self.emit(ev);
        }
        let blind = self.blind_spots.on_exit(tgid);
        self.emit_all(blind);
        if let Some(info) = self.procs.on_exit(tgid) {
            let mut ev = self
                .env
                .event(kind::PROCESS_EXIT, ktime_ns, Some(info.clone()));
            let status = (code >> 8) & 0xff;
            let signal = code & 0x7f;
            ev.exec = Some(ExecInfo {
                filename: info.exe.clone(),
                args: info.args.clone(),
                exit_code: Some(i32::try_from(status).unwrap_or(0)),
                signal: (signal != 0).then(|| i32::try_from(signal).unwrap_or(0)),
                args_truncated: false,
            });
            if let Some((trace, parent)) = self.exec_place.remove(&tgid) {
                ev.trace_id = trace;
                ev.parent_span_id = parent;
            }
            self.emit(ev);
        }
        if self.corr.is_caller(tgid) {
            for ev in self.corr.flush(ktime_ns, Some(tgid)) {
                self.emit(ev);
            }
            self.corr.forget_process(tgid);
        }
        self.corr.on_exit(tgid, code);
        self.watched.remove(&tgid);
    }

    fn on_stream_outputs(&mut self, outs: Vec<StreamOutput>) {
        for (key, o) in outs {
            match o {
                HttpOutput::Exchange(ex) => {
                    self.count("http_exchanges");
                    // JSON-RPC bodies are not any LLM API's, so MCP goes
                    // first and what it takes the LLM decoders never see.
                    self.clock.enter(Stage::Decode);
                    let mcp = crate::mcp::decode(&ex);
                    self.clock.leave();
                    if let Some(m) = mcp {
                        self.on_mcp(key.tgid, &ex, m);
                        continue;
                    }
                    self.clock.enter(Stage::Decode);
                    let decoded = crate::llm::decode(&ex);
                    self.clock.leave();
                    match decoded {
                        Ok(Some(call)) => {
                            self.count("llm_calls");
                            if self.watched.insert(key.tgid) {
                                let _ = self.commands.send(Command::Watch(key.tgid));
                            }
                            let process = self.procs.get(key.tgid).map(|p| p.info.clone());
                            let obs = LlmObservation {
                                call,
                                process,
                                tgid: key.tgid,
                                start_ns: ex.t_request_start,
                                end_ns: ex.t_response_end.unwrap_or(ex.t_request_end),
                            };
                            self.clock.enter(Stage::Correlate);
                            let events = self.corr.on_llm_call(obs);
                            self.clock.leave();
                            for ev in events {
                                self.emit(ev);
                            }
                        }
                        Ok(None) => self.count("http_exchanges_not_llm"),
                        Err(e) => self.drop_one(e.name()),
                    }
                }
                HttpOutput::Error(e) => self.drop_one(e.name()),
            }
        }
    }
}
