//! sinks: the only stage that writes events out (stdout, files, collector).
//!
//! Design. [`Sinks::send`] serialises an event once, to one NDJSON line (JSON
//! object + `\n`), and hands the same line to every sink. Each sink is one
//! writer thread fed by its own bounded `flume` channel ([`QUEUE_CAPACITY`]
//! lines), so a slow sink never holds another back for longer than its queue
//! takes to fill. Lines travel in parcels: one line each by default; the
//! pipeline, after [`Sinks::hold_until_flush`], gathers up to
//! [`PARCEL_LINES`] per sink and sends them with [`Sinks::flush`] after each
//! batch of kernel records, so a writer thread is woken once per parcel
//! instead of once per event (those wake-ups were most of the cost of
//! writing an event out).
//!
//! Guarantees:
//! - Backpressure, not loss: `send` blocks while a sink's queue is full.
//!   The only lines that are not written are those a sink failed to write
//!   (counted in `write_errors` and `lines_dropped`) or those sent to a
//!   writer that is gone (counted in `lines_dropped`). Nothing is dropped
//!   without a counter.
//! - Whole lines: a writer batches lines into one buffer and writes the batch
//!   at once; a file sink that fails mid-batch cuts the file back to where the
//!   batch began, so a reader never sees half a JSON object.
//! - Latency: a batch is written when the queue is empty, when it reaches
//!   [`BATCH_BYTES`], or at the latest [`FLUSH_INTERVAL`] after its first line.
//! - Shutdown ([`Sinks::shutdown`], or drop) drains every queue, writes the
//!   last batch, fsyncs files and joins the threads.
//!
//! Counters are monotonic (`lines_queued` in, `lines_written` and
//! `lines_dropped` out); a queue's depth is their difference.

mod collector;
mod file;
mod stdout;
mod store;
mod writer;

#[cfg(test)]
mod tests;

use std::{
    fmt, io,
    path::PathBuf,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    event::{kind, Event},
    ship::{CollectorSpec, ShipError, ShipHandle, ShipStats},
};

/// Lines each sink's queue holds before `send` blocks (parcels of
/// [`PARCEL_LINES`] when held until flushed).
pub const QUEUE_CAPACITY: usize = 8192;
/// Most lines a sink gathers before it sends them without waiting for
/// [`Sinks::flush`].
pub const PARCEL_LINES: usize = 64;
/// Longest time a written line waits in a writer's buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// A batch this large is written without waiting for the queue to empty.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Where events go: `stdout`, `file:PATH` or `collector:https://HOST:PORT`.
///
/// Parsed from, displayed as and (de)serialised as those strings; in a
/// config file a table `{ type = "file", path = "…" }` is accepted too. A
/// collector's settings come from the agent config's `[collector]` section
/// (see [`crate::ship::CollectorSection`]); parsed alone, it has the
/// defaults.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SinkSpec {
    Stdout,
    File(PathBuf),
    Collector(Box<CollectorSpec>),
    /// An embedded store directory (one host, no collector server), with
    /// the config's `[store]` settings.
    Store(Box<StoreSpec>),
}

/// A `store:DIR` sink: the directory and the `[store]` settings (defaults
/// when parsed alone; the config gives its own, see `Config::resolve_sink`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreSpec {
    pub dir: PathBuf,
    pub settings: aitrail_collector::config::StoreSection,
}

impl SinkSpec {
    /// A `store:` sink for `dir` with default settings.
    pub fn store(dir: PathBuf) -> Self {
        Self::Store(Box::new(StoreSpec {
            dir,
            settings: aitrail_collector::config::StoreSection::default(),
        }))
    }
}

impl FromStr for SinkSpec {
    type Err = SinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| SinkError::InvalidSpec {
            spec: s.to_owned(),
            reason,
        };
        if s == "stdout" {
            return Ok(Self::Stdout);
        }
        match s.split_once(':') {
            Some(("file", "")) => Err(invalid(
                "file: needs a path, e.g. file:/var/log/aitrail/events.ndjson",
            )),
            Some(("file", path)) => Ok(Self::File(PathBuf::from(path))),
            Some(("store", "")) => Err(invalid(
                "store: needs a directory, e.g. store:/var/lib/aitrail/store",
            )),
            Some(("store", dir)) => Ok(Self::store(PathBuf::from(dir))),
            Some(("collector", url)) => CollectorSpec::from_url(url)
                .map(|c| Self::Collector(Box::new(c)))
                .map_err(|_| invalid("collector: needs https://HOST[:PORT]")),
            _ => Err(invalid(
                "expected `stdout`, `file:PATH`, `store:DIR` or `collector:https://HOST:PORT`",
            )),
        }
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stdout => f.write_str("stdout"),
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Collector(c) => write!(f, "collector:{}", c.url),
            Self::Store(s) => write!(f, "store:{}", s.dir.display()),
        }
    }
}

impl Serialize for SinkSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SinkSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
        enum Table {
            // `{}`, not a unit variant: serde ignores deny_unknown_fields
            // on unit variants of internally tagged enums.
            Stdout {},
            File { path: PathBuf },
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Table(Table),
        }
        match Repr::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "a sink is `stdout`, `file:PATH`, or a table { type = \"stdout\" | \"file\", path = PATH }",
            )
        })? {
            Repr::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Repr::Table(Table::Stdout {}) => Ok(Self::Stdout),
            Repr::Table(Table::File { path }) if path.as_os_str().is_empty() => {
                Err(serde::de::Error::custom("file sink: empty path"))
            }
            Repr::Table(Table::File { path }) => Ok(Self::File(path)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid sink `{spec}`: {reason}")]
    InvalidSpec { spec: String, reason: &'static str },
    #[error("no sink given: events would go nowhere")]
    NoSinks,
    #[error("file sink {path}: directory {dir} does not exist")]
    NoParentDir { path: PathBuf, dir: PathBuf },
    #[error("file sink {path}: cannot open")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sink `{sink}`: cannot start its writer thread")]
    Spawn {
        sink: String,
        #[source]
        source: io::Error,
    },
    #[error("sink `{sink}`: final flush or fsync failed")]
    Finish {
        sink: String,
        #[source]
        source: io::Error,
    },
    #[error("sink `{sink}`: writer thread panicked")]
    WriterPanicked { sink: String },
    #[error("sink `{sink}`: cannot start")]
    Ship {
        sink: String,
        #[source]
        source: ShipError,
    },
}

/// Counters of one sink, since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkStat {
    /// The sink, as `stdout` or `file:PATH`.
    pub sink: String,
    /// Lines handed to the sink's queue.
    pub lines_queued: u64,
    /// Lines written (and flushed) to the sink.
    pub lines_written: u64,
    /// Bytes of those lines, newlines included.
    pub bytes_written: u64,
    /// Failed writes (one failed write may lose a batch of lines).
    pub write_errors: u64,
    /// Lines lost: in a failed write, or queued for a writer that is gone.
    pub lines_dropped: u64,
    /// A collector sink's spool and sender ("written" = spooled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ship: Option<ShipStats>,
}

/// Counters of every sink, in the order they were given.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SinkStats {
    pub sinks: Vec<SinkStat>,
    /// Events that could not be serialised (sent to no sink).
    pub serialize_errors: u64,
}

impl SinkStats {
    /// Lines lost across all sinks, serialisation failures and events a
    /// collector sink dropped after spooling them included.
    pub fn lines_dropped(&self) -> u64 {
        self.serialize_errors
            + self
                .sinks
                .iter()
                .map(|s| s.lines_dropped + s.ship.as_ref().map_or(0, ShipStats::events_dropped))
                .sum::<u64>()
    }
}

/// One NDJSON line, shared by every sink's queue.
#[derive(Clone)]
struct Line {
    bytes: Arc<[u8]>,
    /// A `finding` event: a collector's spool keeps batches with findings
    /// longest.
    finding: bool,
}

#[derive(Debug, Default)]
struct Counters {
    lines_queued: AtomicU64,
    lines_written: AtomicU64,
    bytes_written: AtomicU64,
    write_errors: AtomicU64,
    lines_dropped: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Lines sent to a writer together.
type Parcel = Vec<Line>;

struct SinkHandle {
    name: String,
    tx: Option<flume::Sender<Parcel>>,
    /// Lines gathered for the next parcel (only while held).
    pending: std::sync::Mutex<Parcel>,
    thread: Option<JoinHandle<io::Result<()>>>,
    counters: Arc<Counters>,
    /// Set once the writer is found gone, so that is logged once.
    gone_logged: std::sync::atomic::AtomicBool,
    ship: Option<ShipHandle>,
}

fn stat(name: &str, c: &Counters, ship: Option<&ShipHandle>) -> SinkStat {
    SinkStat {
        sink: name.to_owned(),
        lines_queued: c.lines_queued.load(Ordering::Relaxed),
        lines_written: c.lines_written.load(Ordering::Relaxed),
        bytes_written: c.bytes_written.load(Ordering::Relaxed),
        write_errors: c.write_errors.load(Ordering::Relaxed),
        lines_dropped: c.lines_dropped.load(Ordering::Relaxed),
        ship: ship.map(ShipHandle::stats),
    }
}

/// Reads the sinks' counters from another thread (the `/metrics` server)
/// while the pipeline owns [`Sinks`].
#[derive(Clone)]
pub struct StatsHandle {
    sinks: Vec<(String, Arc<Counters>, Option<ShipHandle>)>,
    serialize_errors: Arc<AtomicU64>,
}

impl StatsHandle {
    pub fn stats(&self) -> SinkStats {
        SinkStats {
            sinks: self
                .sinks
                .iter()
                .map(|(name, c, ship)| stat(name, c, ship.as_ref()))
                .collect(),
            serialize_errors: self.serialize_errors.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatsHandle")
            .field("sinks", &self.sinks.len())
            .finish_non_exhaustive()
    }
}

impl SinkHandle {
    fn stat(&self) -> SinkStat {
        stat(&self.name, &self.counters, self.ship.as_ref())
    }

    /// Closes the queue, waits for the writer to drain it, and returns the
    /// writer's final flush/fsync result.
    /// Queues `parcel` (blocking while the queue is full); counts it as
    /// dropped when the writer is gone.
    fn send(&self, parcel: Parcel) {
        let Some(tx) = &self.tx else { return };
        let lines = parcel.len() as u64;
        if lines == 0 {
            return;
        }
        if tx.send(parcel).is_err() {
            // The writer thread has ended (it only does so on panic before
            // shutdown): the lines are lost, and counted.
            Counters::add(&self.counters.lines_dropped, lines);
            if !self.gone_logged.swap(true, Ordering::Relaxed) {
                tracing::error!(sink = %self.name, "sink writer is gone; its lines are dropped and counted");
            }
        }
    }

    /// Sends what was gathered for the next parcel.
    fn flush(&self) {
        let parcel = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.send(parcel);
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.flush();
        drop(self.tx.take());
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(SinkError::Finish {
                sink: self.name.clone(),
                source,
            }),
            Err(_) => {
                // Whatever was queued and neither written nor counted as
                // dropped died with the writer: count it now.
                let c = &self.counters;
                let lost = c
                    .lines_queued
                    .load(Ordering::Relaxed)
                    .saturating_sub(c.lines_written.load(Ordering::Relaxed))
                    .saturating_sub(c.lines_dropped.load(Ordering::Relaxed));
                Counters::add(&c.lines_dropped, lost);
                Err(SinkError::WriterPanicked {
                    sink: self.name.clone(),
                })
            }
        }
    }
}

/// The running sinks. `send` may be called from several threads at once.
pub struct Sinks {
    handles: Vec<SinkHandle>,
    serialize_errors: Arc<AtomicU64>,
    /// Lines wait for [`Sinks::flush`] (or a full parcel) instead of being
    /// sent one by one.
    held: bool,
}

impl Sinks {
    /// Opens every sink and starts its writer thread. Fails, having started
    /// nothing that keeps running, if any sink cannot be opened.
    pub fn start(specs: &[SinkSpec]) -> Result<Sinks, SinkError> {
        if specs.is_empty() {
            return Err(SinkError::NoSinks);
        }
        // Open everything first: a bad path must not leave threads behind.
        let mut outputs: Vec<(String, Box<dyn writer::Output>, Option<ShipHandle>)> =
            Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            // The config's sinks and the command line's are merged: the same
            // sink given in both is used once, not written to twice.
            if specs[..i].contains(spec) {
                tracing::warn!(sink = %spec, "sink given twice; used once");
                continue;
            }
            let mut ship = None;
            let output: Box<dyn writer::Output> = match spec {
                SinkSpec::Stdout => Box::new(stdout::StdoutOutput::new()),
                SinkSpec::File(path) => Box::new(file::FileOutput::open(path)?),
                SinkSpec::Store(s) => Box::new(store::StoreOutput::open(s)?),
                SinkSpec::Collector(c) => {
                    let out =
                        collector::CollectorOutput::start(c).map_err(|source| SinkError::Ship {
                            sink: spec.to_string(),
                            source,
                        })?;
                    ship = Some(out.handle());
                    Box::new(out)
                }
            };
            outputs.push((spec.to_string(), output, ship));
        }
        let sinks = Self::start_outputs_with(outputs)?;
        for s in &sinks.handles {
            tracing::info!(sink = %s.name, "sink started");
        }
        Ok(sinks)
    }

    /// Starts one writer thread per output (tests use it with in-memory and
    /// failing outputs).
    #[cfg(test)]
    fn start_outputs(outputs: Vec<(String, Box<dyn writer::Output>)>) -> Result<Sinks, SinkError> {
        Self::start_outputs_with(outputs.into_iter().map(|(n, o)| (n, o, None)).collect())
    }

    fn start_outputs_with(
        outputs: Vec<(String, Box<dyn writer::Output>, Option<ShipHandle>)>,
    ) -> Result<Sinks, SinkError> {
        let mut sinks = Sinks {
            handles: Vec::with_capacity(outputs.len()),
            serialize_errors: Arc::new(AtomicU64::new(0)),
            held: false,
        };
        for (name, output, ship) in outputs {
            let (tx, rx) = flume::bounded::<Parcel>(QUEUE_CAPACITY / PARCEL_LINES);
            let counters = Arc::new(Counters::default());
            let thread = std::thread::Builder::new()
                .name(format!("sink-{}", name.split(':').next().unwrap_or("sink")))
                .spawn({
                    let counters = Arc::clone(&counters);
                    let name = name.clone();
                    move || writer::run(&name, output, &rx, &counters)
                })
                .map_err(|source| SinkError::Spawn {
                    sink: name.clone(),
                    source,
                })?; // `sinks` is dropped here: the threads already started are joined.
            sinks.handles.push(SinkHandle {
                name,
                tx: Some(tx),
                pending: std::sync::Mutex::new(Vec::new()),
                thread: Some(thread),
                counters,
                gone_logged: std::sync::atomic::AtomicBool::new(false),
                ship,
            });
        }
        Ok(sinks)
    }

    /// From now on, lines are gathered into parcels of up to
    /// [`PARCEL_LINES`] and sent by [`Sinks::flush`] (which the caller must
    /// call, at the latest before its events may wait: the pipeline does
    /// after each batch of records) or when a parcel is full.
    pub fn hold_until_flush(&mut self) {
        self.held = true;
    }

    /// Sends every line gathered since the last flush.
    pub fn flush(&self) {
        for sink in &self.handles {
            sink.flush();
        }
    }

    /// Serialises `ev` once and queues the line on every sink, blocking while
    /// a queue is full.
    pub fn send(&self, ev: &Event) {
        self.send_to(ev, None);
    }

    /// The position of a sink, for [`Sinks::send_to`]; `None` when it is not
    /// one of the running sinks.
    pub fn index_of(&self, spec: &SinkSpec) -> Option<usize> {
        let name = spec.to_string();
        self.handles.iter().position(|s| s.name == name)
    }

    /// Number of running sinks (duplicates given once).
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Like [`Sinks::send`], to the sinks whose bit is set in `only` (bit
    /// `i` = the sink at position `i`), or to all with `None`.
    pub fn send_to(&self, ev: &Event, only: Option<u64>) {
        if only == Some(0) {
            return;
        }
        let mut buf = match serde_json::to_vec(ev) {
            Ok(buf) => buf,
            Err(error) => {
                self.serialize_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, kind = %ev.kind, id = %ev.id, "event not serialisable; dropped");
                return;
            }
        };
        buf.push(b'\n');
        let line = Line {
            bytes: buf.into(),
            finding: ev.kind == kind::FINDING,
        };
        for (i, sink) in self.handles.iter().enumerate() {
            if only.is_some_and(|mask| i >= 64 || mask & (1 << i) == 0) {
                continue;
            }
            if sink.tx.is_none() {
                continue;
            }
            Counters::add(&sink.counters.lines_queued, 1);
            if !self.held {
                sink.send(vec![line.clone()]);
                continue;
            }
            let full = {
                let mut pending = sink
                    .pending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                pending.push(line.clone());
                (pending.len() >= PARCEL_LINES).then(|| std::mem::take(&mut *pending))
            };
            if let Some(parcel) = full {
                sink.send(parcel);
            }
        }
    }

    /// A handle that reads the counters from any thread.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            sinks: self
                .handles
                .iter()
                .map(|s| (s.name.clone(), Arc::clone(&s.counters), s.ship.clone()))
                .collect(),
            serialize_errors: Arc::clone(&self.serialize_errors),
        }
    }

    /// Counters of every sink so far.
    pub fn stats(&self) -> SinkStats {
        SinkStats {
            sinks: self.handles.iter().map(SinkHandle::stat).collect(),
            serialize_errors: self.serialize_errors.load(Ordering::Relaxed),
        }
    }

    /// Drains every queue, writes and flushes the last lines, fsyncs files,
    /// and joins the writer threads. Returns the final counters, or the first
    /// sink that failed to finish (all are finished and failures logged).
    pub fn shutdown(mut self) -> Result<SinkStats, SinkError> {
        let mut first_error = None;
        for sink in &mut self.handles {
            if let Err(error) = sink.close() {
                tracing::error!(sink = %sink.name, error = %error, "sink did not finish cleanly");
                first_error.get_or_insert(error);
            }
        }
        let stats = self.stats();
        for s in &stats.sinks {
            tracing::info!(
                sink = %s.sink,
                lines = s.lines_written,
                bytes = s.bytes_written,
                write_errors = s.write_errors,
                dropped = s.lines_dropped,
                "sink closed"
            );
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(stats),
        }
    }
}

impl Drop for Sinks {
    /// Dropping the sinks without `shutdown` still drains and closes them, so
    /// an early return in the daemon does not lose the tail of the events.
    fn drop(&mut self) {
        for sink in &mut self.handles {
            if let Err(error) = sink.close() {
                tracing::error!(sink = %sink.name, error = %error, "sink did not finish cleanly");
            }
        }
    }
}

impl fmt::Debug for Sinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sinks")
            .field("stats", &self.stats())
            .finish()
    }
}
