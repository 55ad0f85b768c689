//! One forwarder's task: read the store from the cursor, batch, send,
//! retry or split, and move the cursor once the destination acknowledged.
//!
//! The loop, in short:
//! 1. read events after `read_upto` (the filter applied in SQL) into the
//!    pending batch, up to the batch limits;
//! 2. nothing pending: move the cursor over what the filter left out,
//!    then sleep until ingest stores something (or a second passes);
//! 3. a batch not full yet waits up to `batch_max_wait` from its first
//!    event, reading more as ingest wakes it;
//! 4. send it: on `Retry`, the same batch again after a backoff; on
//!    `Reject`, split it in two and send each half, down to the event that
//!    is refused (counted, logged with its id, skipped);
//! 5. commit the cursor (`read_upto`) and start over.
//!
//! A stop lets the attempt in flight finish, commits the cursor up to the
//! events acknowledged, and ends the task; nothing else is sent.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::watch;

use super::{add, ForwardCounters, ForwardError, Forwarder};
use crate::store::{
    forward::{Chunk, CursorState, ForwardReader},
    Store,
};

/// First retry wait; doubles up to `retry_max`.
const RETRY_BASE: Duration = Duration::from_millis(200);
/// With nothing to send, the store is looked at this often even when no
/// ingest woke the forwarder.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// After a store error, wait this long before reading again.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// How often the persisted `expired` count is read back.
const EXPIRED_POLL: Duration = Duration::from_secs(5);

/// Exponential backoff with equal jitter: the n-th wait is drawn from
/// [d/2, d] with d = min(max, base·2ⁿ), so forwarders that lost the same
/// destination do not all come back at once, and no wait is near zero.
#[derive(Debug)]
pub struct Backoff {
    failures: u32,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Self { failures: 0, max }
    }

    pub fn next_wait(&mut self) -> Duration {
        let d = RETRY_BASE
            .saturating_mul(1 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// How one send of a range ended.
enum Outcome {
    /// Acknowledged; `events_rejected` before the send (a bulk answer may
    /// refuse single items, which the destination counts itself).
    Acked { rejected_before: u64 },
    /// Refused for good.
    Rejected,
    /// `retry_max_attempts` failed sends.
    GaveUp(String),
}

/// What the task gets from the collector.
pub struct Context {
    pub store: Arc<Store>,
    /// Bumped by ingest after each commit that stored events.
    pub wake: watch::Receiver<u64>,
    /// `true` (or the sender gone): stop.
    pub stop: watch::Receiver<bool>,
}

struct Runner {
    fwd: Arc<Forwarder>,
    store: Arc<Store>,
    reader: Arc<Mutex<ForwardReader>>,
    wake: watch::Receiver<u64>,
    wake_open: bool,
    stop: watch::Receiver<bool>,
    /// Persisted position: every event up to here is done with.
    cursor: i64,
    /// Every event up to here was read (into `values`, or left out).
    read_upto: i64,
    newest: i64,
    seqs: Vec<i64>,
    values: Vec<Value>,
    bytes: usize,
    first_at: Option<Instant>,
    backoff: Backoff,
    failing: bool,
    expired_checked: Option<Instant>,
}

/// Runs a forwarder until stopped.
pub async fn run(fwd: Arc<Forwarder>, start: CursorState, ctx: Context) {
    let reader = match ctx.store.forward_reader() {
        Ok(r) => Arc::new(Mutex::new(r)),
        Err(error) => {
            add(&fwd.counters.errors, 1);
            tracing::error!(forwarder = fwd.name(), %error, "forwarder cannot open the store; not started");
            return;
        }
    };
    fwd.counters
        .events_expired
        .store(start.expired, std::sync::atomic::Ordering::Relaxed);
    fwd.counters.set_position(start.cursor, start.cursor);
    let mut r = Runner {
        backoff: Backoff::new(fwd.spec.retry_max),
        fwd,
        store: ctx.store,
        reader,
        wake: ctx.wake,
        wake_open: true,
        stop: ctx.stop,
        cursor: start.cursor,
        read_upto: start.cursor,
        newest: start.cursor,
        seqs: Vec::new(),
        values: Vec::new(),
        bytes: 0,
        first_at: None,
        failing: false,
        expired_checked: None,
    };
    tracing::info!(
        forwarder = r.fwd.name(),
        kind = r.fwd.kind(),
        cursor = r.cursor,
        "forwarder started"
    );
    r.run().await;
    tracing::info!(
        forwarder = r.fwd.name(),
        cursor = r.cursor,
        "forwarder stopped"
    );
}

impl Runner {
    fn counters(&self) -> &ForwardCounters {
        &self.fwd.counters
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    /// Sleeps `d`, or less when ingest stored something or a stop came.
    async fn pause(&mut self, d: Duration) {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            r = self.wake.changed(), if self.wake_open => {
                if r.is_err() {
                    self.wake_open = false;
                }
            }
            _ = self.stop.changed() => {}
        }
    }

    /// Sleeps `d` unless a stop comes; `false` when stopped.
    async fn backoff_sleep(&mut self, d: Duration) -> bool {
        if self.stopped() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            _ = self.stop.changed() => {}
        }
        !self.stopped()
    }

    async fn run(&mut self) {
        while !self.stopped() {
            let spec = &self.fwd.spec;
            let full =
                self.values.len() >= spec.batch_max_events || self.bytes >= spec.batch_max_bytes;
            if !full && !self.fill().await {
                self.pause(STORE_RETRY).await;
                continue;
            }
            if self.values.is_empty() {
                if self.read_upto > self.cursor {
                    // Only events the filter left out (or unreadable rows).
                    self.commit(self.read_upto).await;
                }
                self.first_at = None;
                self.pause(IDLE_POLL).await;
                continue;
            }
            let spec = &self.fwd.spec;
            let full = self.values.len() >= spec.batch_max_events
                || self.bytes >= spec.batch_max_bytes
                // A limit stopped the read: more is waiting already.
                || self.read_upto < self.newest;
            let first = *self.first_at.get_or_insert_with(Instant::now);
            let due = first + spec.batch_max_wait;
            if !full && Instant::now() < due {
                self.pause(due - Instant::now()).await;
                continue;
            }
            let done = self.deliver().await;
            let upto = if done == self.values.len() {
                self.read_upto
            } else if done > 0 {
                self.seqs[done - 1]
            } else {
                self.cursor
            };
            if upto > self.cursor {
                self.commit(upto).await;
            }
            self.values.clear();
            self.seqs.clear();
            self.bytes = 0;
            self.read_upto = self.cursor;
            self.first_at = None;
        }
    }

    /// Reads more events into the pending batch; `false` on a store error.
    async fn fill(&mut self) -> bool {
        let spec = &self.fwd.spec;
        let max_events = spec.batch_max_events - self.values.len();
        let max_bytes = spec.batch_max_bytes.saturating_sub(self.bytes).max(1);
        let filter = spec.filter.clone();
        let after = self.read_upto;
        let reader = Arc::clone(&self.reader);
        let check_expired = self
            .expired_checked
            .is_none_or(|t| t.elapsed() >= EXPIRED_POLL);
        let store = Arc::clone(&self.store);
        let name = self.fwd.spec.name.clone();
        let read = tokio::task::spawn_blocking(move || {
            let chunk = reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .read(after, &filter, max_events, max_bytes)?;
            let state = if check_expired {
                store.forward_state(&name)?
            } else {
                None
            };
            Ok::<_, crate::store::StoreError>((chunk, state))
        })
        .await;
        let (chunk, state) = match read {
            Ok(Ok(r)) => r,
            Ok(Err(error)) => {
                add(&self.counters().errors, 1);
                tracing::warn!(forwarder = self.fwd.name(), %error, "forwarder cannot read the store");
                return false;
            }
            Err(_) => {
                add(&self.counters().errors, 1);
                tracing::error!(forwarder = self.fwd.name(), "forwarder store read panicked");
                return false;
            }
        };
        if check_expired {
            self.expired_checked = Some(Instant::now());
            if let Some(s) = state {
                self.counters()
                    .events_expired
                    .store(s.expired, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.take(chunk).await;
        true
    }

    async fn take(&mut self, chunk: Chunk) {
        if chunk.newest < self.cursor {
            // The store has fewer events than the cursor says: it was
            // replaced or restored from an older copy. Events stored from
            // now on get seq above `newest`; without this they would be
            // skipped as "already sent".
            tracing::warn!(
                forwarder = self.fwd.name(),
                cursor = self.cursor,
                newest = chunk.newest,
                "forwarder cursor is past the newest stored event; moving it back"
            );
            let (store, name, to) = (
                Arc::clone(&self.store),
                self.fwd.spec.name.clone(),
                chunk.newest,
            );
            if let Ok(Err(error)) =
                tokio::task::spawn_blocking(move || store.forward_reset(&name, to)).await
            {
                add(&self.counters().errors, 1);
                tracing::warn!(forwarder = self.fwd.name(), %error, "cannot store the forwarder cursor");
            }
            self.cursor = chunk.newest;
            self.read_upto = chunk.newest;
            self.newest = chunk.newest;
            self.values.clear();
            self.seqs.clear();
            self.bytes = 0;
            self.counters().set_position(self.cursor, self.newest);
            return;
        }
        for (seq, body) in chunk.rows {
            match serde_json::from_str::<Value>(&body) {
                Ok(v) if v.is_object() => {
                    self.bytes += body.len();
                    self.seqs.push(seq);
                    self.values.push(v);
                }
                _ => {
                    add(&self.counters().events_invalid, 1);
                    tracing::warn!(
                        forwarder = self.fwd.name(),
                        seq,
                        "stored event is not a JSON object; skipped"
                    );
                }
            }
        }
        self.read_upto = chunk.read_upto;
        self.newest = chunk.newest;
        self.counters().set_position(self.cursor, self.newest);
    }

    async fn refresh_newest(&mut self) {
        let reader = Arc::clone(&self.reader);
        let newest = tokio::task::spawn_blocking(move || {
            reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .newest()
        })
        .await;
        if let Ok(Ok(n)) = newest {
            self.newest = self.newest.max(n);
            self.counters().set_position(self.cursor, self.newest);
        }
    }

    /// Commits the cursor (it moves in memory even when the commit fails:
    /// the events were sent; a restart would send them again).
    async fn commit(&mut self, upto: i64) {
        let (store, name) = (Arc::clone(&self.store), self.fwd.spec.name.clone());
        match tokio::task::spawn_blocking(move || store.forward_ack(&name, upto)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                add(&self.counters().errors, 1);
                tracing::warn!(forwarder = self.fwd.name(), %error, "cannot store the forwarder cursor; a restart resends from the last stored one");
            }
            Err(_) => add(&self.counters().errors, 1),
        }
        self.cursor = upto;
        self.counters().set_position(self.cursor, self.newest);
    }

    /// Sends the pending batch; returns how many of its events (a prefix)
    /// are done with: all of them, unless a stop came first.
    async fn deliver(&mut self) -> usize {
        let values = std::mem::take(&mut self.values);
        let done = self.deliver_range(&values).await;
        self.values = values;
        done
    }

    async fn deliver_range(&mut self, batch: &[Value]) -> usize {
        let fwd = Arc::clone(&self.fwd);
        let c = &fwd.counters;
        let cap = fwd.spec.retry_max_attempts;
        // Ranges still to send, the leftmost on top: the prefix before the
        // range on top is done with.
        let mut todo = vec![(0usize, batch.len())];
        while let Some(&(a, b)) = todo.last() {
            let part = &batch[a..b];
            let mut attempts = 0u32;
            let outcome = loop {
                if self.stopped() {
                    return a;
                }
                let rejected_before = ForwardCounters::get(&c.events_rejected);
                let sent = fwd.destination.send(part).await;
                match sent {
                    Ok(()) => break Outcome::Acked { rejected_before },
                    Err(ForwardError::Retry(why)) => {
                        add(&c.errors, 1);
                        add(&c.batches_retried, 1);
                        attempts += 1;
                        if self.failing {
                            tracing::debug!(forwarder = fwd.name(), attempts, error = %why, "forward failed again");
                        } else {
                            tracing::warn!(forwarder = fwd.name(), kind = fwd.kind(), events = part.len(), error = %why, "forward failed; retrying with backoff");
                            self.failing = true;
                        }
                        if cap > 0 && attempts >= cap {
                            break Outcome::GaveUp(why);
                        }
                        // Keep `lag` true while the destination is down.
                        self.refresh_newest().await;
                        let wait = self.backoff.next_wait();
                        if !self.backoff_sleep(wait).await {
                            return a;
                        }
                    }
                    Err(ForwardError::Reject(why)) => {
                        add(&c.errors, 1);
                        add(&c.batches_rejected, 1);
                        if part.len() > 1 {
                            tracing::debug!(forwarder = fwd.name(), events = part.len(), error = %why, "batch refused; splitting it to find the refused events");
                        }
                        break Outcome::Rejected;
                    }
                }
            };
            todo.pop();
            match outcome {
                Outcome::Rejected if part.len() > 1 => {
                    let mid = a + part.len() / 2;
                    todo.push((mid, b));
                    todo.push((a, mid));
                }
                Outcome::Rejected => {
                    add(&c.events_rejected, 1);
                    tracing::error!(
                        forwarder = fwd.name(),
                        kind = fwd.kind(),
                        id = part[0].get("id").and_then(serde_json::Value::as_str).unwrap_or("?"),
                        "destination refused an event for good; skipped (counted in events_rejected)"
                    );
                }
                Outcome::Acked { rejected_before } => {
                    // Items a bulk answer refused were counted by the
                    // destination; the rest were delivered.
                    let refused = ForwardCounters::get(&c.events_rejected) - rejected_before;
                    add(&c.events_sent, (part.len() as u64).saturating_sub(refused));
                    add(&c.batches_sent, 1);
                    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
                    c.last_ack_unix_ms
                        .store(now_ms, std::sync::atomic::Ordering::Relaxed);
                    self.backoff.reset();
                    if self.failing {
                        tracing::info!(forwarder = fwd.name(), "destination acknowledges again");
                        self.failing = false;
                    }
                }
                Outcome::GaveUp(why) => {
                    add(&c.events_dropped, part.len() as u64);
                    tracing::error!(
                        forwarder = fwd.name(),
                        kind = fwd.kind(),
                        events = part.len(),
                        first = part[0].get("id").and_then(serde_json::Value::as_str).unwrap_or("?"),
                        attempts,
                        error = %why,
                        "retry_max_attempts reached; batch dropped (counted in events_dropped)"
                    );
                }
            }
        }
        batch.len()
    }
}
