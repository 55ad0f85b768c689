//! The writer thread of one sink: batches queued lines, writes whole
//! batches, counts what was written and what was lost.

use std::{
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{Counters, Line, BATCH_BYTES, FLUSH_INTERVAL};

/// When a writer closes a batch.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchPolicy {
    pub max_bytes: usize,
    pub max_lines: u64,
    /// Longest time the first line of a batch waits.
    pub max_wait: Duration,
    /// Longest time a `finding` line waits (when shorter than `max_wait`).
    pub finding_max_wait: Option<Duration>,
    /// Also close the batch whenever the queue is empty (low latency for
    /// local outputs; a collector wants full batches instead).
    pub when_idle: bool,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            max_bytes: BATCH_BYTES,
            max_lines: u64::MAX,
            max_wait: FLUSH_INTERVAL,
            finding_max_wait: None,
            when_idle: true,
        }
    }
}

/// A closed batch of whole lines.
pub(super) struct Pending<'a> {
    pub bytes: &'a [u8],
    pub lines: u64,
    /// Lines that are `finding` events.
    pub findings: u64,
}

/// Where a writer thread puts its lines.
pub(super) trait Output: Send {
    /// Writes one batch of whole lines and flushes it out of any user-space
    /// buffer. On error, as little of the batch as possible is left behind.
    fn write_batch(&mut self, batch: &Pending<'_>) -> io::Result<()>;
    /// Makes what was written durable (fsync for files); called once, last.
    fn finish(&mut self) -> io::Result<()>;
    /// How this output wants its batches cut.
    fn policy(&self) -> BatchPolicy {
        BatchPolicy::default()
    }
}

/// Runs until every sender is gone and the queue is empty, then writes the
/// last batch and finishes the output.
pub(super) fn run(
    name: &str,
    mut output: Box<dyn Output>,
    rx: &flume::Receiver<Vec<Line>>,
    counters: &Arc<Counters>,
) -> io::Result<()> {
    let policy = output.policy();
    let mut batch = Batch {
        buf: Vec::with_capacity(BATCH_BYTES),
        lines: 0,
        findings: 0,
        failing: false,
    };
    // When the oldest unwritten line must be written at the latest.
    let mut deadline: Option<Instant> = None;
    loop {
        let next = match deadline {
            None => rx
                .recv()
                .map_err(|flume::RecvError::Disconnected| flume::RecvTimeoutError::Disconnected),
            Some(at) => rx.recv_deadline(at),
        };
        match next {
            Ok(parcel) => {
                let last = parcel.len().saturating_sub(1);
                for (i, line) in parcel.into_iter().enumerate() {
                    if batch.lines == 0 {
                        deadline = Some(Instant::now() + policy.max_wait);
                    }
                    if let (true, Some(wait)) = (line.finding, policy.finding_max_wait) {
                        let at = Instant::now() + wait;
                        deadline = Some(deadline.map_or(at, |d| d.min(at)));
                    }
                    batch.buf.extend_from_slice(&line.bytes);
                    batch.lines += 1;
                    batch.findings += u64::from(line.finding);
                    // Write when caught up (low latency when quiet) or when
                    // the batch is big (few syscalls under load).
                    if batch.buf.len() >= policy.max_bytes
                        || batch.lines >= policy.max_lines
                        || (policy.when_idle && i == last && rx.is_empty())
                    {
                        batch.write(name, output.as_mut(), counters);
                        deadline = None;
                    }
                }
            }
            Err(flume::RecvTimeoutError::Timeout) => {
                batch.write(name, output.as_mut(), counters);
                deadline = None;
            }
            Err(flume::RecvTimeoutError::Disconnected) => break,
        }
    }
    batch.write(name, output.as_mut(), counters);
    output.finish()
}

struct Batch {
    buf: Vec<u8>,
    lines: u64,
    findings: u64,
    /// The last write failed: further failures are logged at debug only.
    failing: bool,
}

impl Batch {
    fn write(&mut self, name: &str, output: &mut dyn Output, counters: &Counters) {
        if self.lines == 0 {
            return;
        }
        let bytes = self.buf.len() as u64;
        let pending = Pending {
            bytes: &self.buf,
            lines: self.lines,
            findings: self.findings,
        };
        match output.write_batch(&pending) {
            Ok(()) => {
                Counters::add(&counters.lines_written, self.lines);
                Counters::add(&counters.bytes_written, bytes);
                if self.failing {
                    tracing::info!(sink = %name, "sink writes again");
                    self.failing = false;
                }
            }
            Err(error) => {
                Counters::add(&counters.write_errors, 1);
                Counters::add(&counters.lines_dropped, self.lines);
                if self.failing {
                    tracing::debug!(sink = %name, %error, lines = self.lines, "sink write failed again; lines dropped");
                } else {
                    tracing::warn!(
                        sink = %name,
                        %error,
                        lines = self.lines,
                        "sink write failed; lines dropped and counted (further failures at debug level)"
                    );
                    self.failing = true;
                }
            }
        }
        self.buf.clear();
        self.lines = 0;
        self.findings = 0;
        // One huge event must not pin a huge buffer for the daemon's life.
        if self.buf.capacity() > 4 * BATCH_BYTES {
            self.buf = Vec::with_capacity(BATCH_BYTES);
        }
    }
}
