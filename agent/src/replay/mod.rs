//! Record and replay: the kernel's records written to a file by the daemon
//! (`aitrail agent --record FILE`), and run again through the whole
//! userspace pipeline without a kernel or root (`aitrail replay FILE`).
//! Deterministic tests, bug reports and benchmarks use it.
//!
//! **A recording holds plaintext**: every prompt, response, API key and
//! token the watched processes sent or received over TLS, unredacted, plus
//! their command lines and the files they opened. Redaction runs in the
//! pipeline, after the recording point. Treat a recording like the
//! credentials it contains; it is only ever written when `--record` asks.
//!
//! ## Format (version 1)
//!
//! ```text
//! offset 0   8 bytes  magic "AITRREC\n"
//! offset 8   u32 LE   format version (1)
//! offset 12  a zstd stream (one or more frames) of length-prefixed frames:
//!              u32 LE length, then that many bytes
//!            frame 0 is the header, JSON (`RecordingHeader`): the recording
//!              aitrail's version, the host's byte order, its boot-to-wall
//!              clock offset (record times are boot-time ns; with it replayed
//!              events carry the original wall times), its boot id (process
//!              exec ids derive from it), its host name and machine id, and
//!              whether the records were synthesised
//!            every later frame is one record, byte for byte as read from the
//!              ring buffer (`agent-common` layouts, the host's byte order)
//! ```
//!
//! Guarantees: the writer never blocks the capture thread (batches go to a
//! writer thread through a bounded queue; a full queue drops the batch and
//! counts it as `kernel_record_file_dropped` in `agent.health`); it flushes
//! the compressor after each quiet second, so a killed daemon leaves a file
//! readable up to about a second before. A reader stops at the first bad or
//! missing byte with an error that says how many records came before it;
//! `aitrail replay` still runs those records.
//!
//! ## What still varies between two replays
//!
//! Event ids, trace ids and span ids are random; `agent.health`'s
//! `uptime_s` is this run's, and its `bytes_shipped` and `spool_depth` are
//! how far the sinks' threads had got at that instant; a configured second opinion answers when it
//! answers. Everything else (kinds, times, processes, content, findings) is
//! a function of the recording and the config. The process table starts
//! empty (no /proc of this host) and knows no user names (no /etc/passwd);
//! relative paths of file opens stay relative (no /proc/PID/cwd).

pub mod mix;
pub mod recording;
pub mod synth;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, path::Path, time::Duration};

pub use self::recording::{Reader, Recorder, RecordingError, RecordingHeader};
use crate::{
    capture::records::{self, Record},
    config::Config,
    http::HttpOutput,
    pipeline::{Pipeline, RunSummary},
    sinks::SinkError,
    streams::StreamOutput,
};

/// A recording read into memory.
pub struct Loaded {
    pub header: RecordingHeader,
    pub records: Vec<Vec<u8>>,
    /// The error that ended reading early (truncation, corruption): the
    /// records before it are in `records`.
    pub error: Option<RecordingError>,
}

/// Reads a whole recording. A bad start (not a recording, bad header) is an
/// error; a bad middle ends reading and is reported in `Loaded::error`.
pub fn load(path: &Path) -> Result<Loaded, RecordingError> {
    let mut reader = Reader::open(path)?;
    let header = reader.header().clone();
    let mut records = Vec::new();
    let mut error = None;
    for r in reader.by_ref() {
        match r {
            Ok(b) => records.push(b),
            Err(e) => error = Some(e),
        }
    }
    Ok(Loaded {
        header,
        records,
        error,
    })
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplaySummary {
    pub pipeline: RunSummary,
    /// Records `records::decode` refused, by reason.
    pub decode_errors: BTreeMap<&'static str, u64>,
}

/// Records per batch, as the capture thread sends them.
const BATCH: usize = 1024;

/// Decodes `raw` (as the capture thread does) and runs `pipeline` over it
/// until it drains. Decode errors reach `agent.health` as the capture
/// thread's would (`kernel_record_*`).
pub fn run(pipeline: Pipeline, raw: &[Vec<u8>]) -> Result<ReplaySummary, SinkError> {
    let (rec_tx, rec_rx) = flume::bounded::<Vec<Record>>(64);
    let (kc_tx, kc_rx) = flume::bounded(4);
    std::thread::scope(|s| {
        let feeder = s.spawn(move || {
            let mut errors = BTreeMap::<&'static str, u64>::new();
            for chunk in raw.chunks(BATCH) {
                let mut batch = Vec::with_capacity(chunk.len());
                for b in chunk {
                    match records::decode(b) {
                        Ok(r) => batch.push(r),
                        Err(e) => *errors.entry(e.name()).or_default() += 1,
                    }
                }
                if rec_tx.send(batch).is_err() {
                    break;
                }
            }
            // Before the records channel closes, so the drain sees them.
            let _ = kc_tx.send(errors.iter().map(|(k, v)| (*k, *v)).collect());
            errors
        });
        let summary = pipeline.run(&rec_rx, &kc_rx);
        let decode_errors = feeder.join().unwrap_or_default();
        Ok(ReplaySummary {
            pipeline: summary?,
            decode_errors,
        })
    })
}

/// CPU time used by this process so far (all threads, user and system).
/// What [`decode_only`] decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeSummary {
    pub tls_bytes: u64,
    pub exchanges: u64,
    pub llm_calls: u64,
    pub mcp_exchanges: u64,
}

/// The records through decode only: connection streams, HTTP/1, HTTP/2,
/// SSE and WebSocket framing, then the MCP and LLM decoders, as the
/// pipeline runs them, and nothing after (no correlation, detection,
/// redaction or output). The stage issue 3's throughput goal names,
/// measured on its own by `aitrail replay --bench`.
pub fn decode_only(cfg: &Config, raw: &[Vec<u8>]) -> DecodeSummary {
    let mut streams = crate::pipeline::streams_of(cfg);
    let mut sum = DecodeSummary::default();
    let mut outs = Vec::new();
    let mut last_ns = 0;
    for b in raw {
        let Ok(r) = records::decode(b) else { continue };
        last_ns = r.header().ktime_ns;
        match &r {
            Record::Tls(c) => {
                sum.tls_bytes += c.data.len() as u64;
                streams.on_chunk(c, &mut outs);
            }
            Record::Exit(_) => streams.close_process(r.tgid(), last_ns, &mut outs),
            _ => {}
        }
        decode_outputs(&mut outs, &mut sum);
    }
    streams.finish_all(last_ns, &mut outs);
    decode_outputs(&mut outs, &mut sum);
    sum
}

fn decode_outputs(outs: &mut Vec<StreamOutput>, sum: &mut DecodeSummary) {
    for (_, out) in outs.drain(..) {
        let HttpOutput::Exchange(ex) = out else {
            continue;
        };
        sum.exchanges += 1;
        if crate::mcp::decode(&ex).is_some() {
            sum.mcp_exchanges += 1;
        } else if matches!(crate::llm::decode(&ex), Ok(Some(_))) {
            sum.llm_calls += 1;
        }
    }
}

pub fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
