//! ship: the collector sink's engine. Batches of NDJSON lines are compressed
//! (zstd), written to a disk spool (see [`spool`] for the format, bounds and
//! crash-loss bound), and sent over HTTPS by a sender thread that deletes a
//! segment only when the collector acks it (see [`sender`]).
//!
//! The sinks layer drives it: its writer thread closes batches by
//! `batch_max_events` / `batch_max_bytes` / `batch_max_wait_ms` and hands
//! each to [`Shipper::spool_batch`], which returns once the batch is on disk.
//! The writer therefore waits for the disk, never for the network: a
//! collector that is down fills the spool, whose full policy then drops
//! (and counts) the oldest non-finding batches first.

pub mod config;
pub mod sender;
pub mod spool;

use std::{
    io,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::Serialize;

pub use self::config::{CollectorSection, CollectorSpec, ShipConfigError};
use self::{
    sender::SendCounters,
    spool::{Spool, SpoolConfig, SpoolError, SpoolStats},
};

/// zstd level: 3 is zstd's default, a good ratio on JSON at a few hundred
/// MB/s of one core.
const ZSTD_LEVEL: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Config(#[from] ShipConfigError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("collector sink: {path}: {problem}")]
    Credentials {
        path: std::path::PathBuf,
        problem: String,
    },
    #[error("collector sink: TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("collector sink: zstd compression failed")]
    Compress(#[source] io::Error),
    #[error("collector sink: a batch of more than 4 GiB")]
    BatchTooLarge,
    #[error("collector sink: cannot start the sender thread")]
    Spawn(#[source] io::Error),
}

/// Counters of one collector sink since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShipStats {
    #[serde(flatten)]
    pub spool: SpoolStats,
    /// POSTs made (each try of each batch).
    pub batches_sent: u64,
    pub batches_acked: u64,
    /// Failed tries that will be retried.
    pub batches_retried: u64,
    /// Batches the collector refused for good (their events are in
    /// `spool.dropped_rejected`).
    pub batches_rejected: u64,
    /// Compressed bytes the collector acked.
    pub bytes_acked: u64,
    /// Events the collector already had (a resend after a lost ack).
    pub events_duplicate: u64,
    /// Lines the collector could not use.
    pub events_invalid: u64,
}

impl ShipStats {
    /// Events lost after they were spooled, every cause.
    pub fn events_dropped(&self) -> u64 {
        let s = &self.spool;
        s.dropped_full
            + s.dropped_expired
            + s.dropped_rejected
            + s.dropped_corrupt
            + self.events_invalid
    }
}

/// What the sinks layer keeps to read the counters.
#[derive(Clone)]
pub struct ShipHandle {
    spool: Arc<Spool>,
    counters: Arc<SendCounters>,
}

impl ShipHandle {
    pub fn stats(&self) -> ShipStats {
        let c = &self.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        ShipStats {
            spool: self.spool.stats(),
            batches_sent: get(&c.batches_sent),
            batches_acked: get(&c.batches_acked),
            batches_retried: get(&c.batches_retried),
            batches_rejected: get(&c.batches_rejected),
            bytes_acked: get(&c.bytes_acked),
            events_duplicate: get(&c.events_duplicate),
            events_invalid: get(&c.events_invalid),
        }
    }
}

/// A running collector sink: the spool and its sender thread.
pub struct Shipper {
    handle: ShipHandle,
    compressor: zstd::bulk::Compressor<'static>,
    wake: flume::Sender<()>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Shipper {
    /// Checks the config, reads the credentials, opens the spool (sending
    /// what an earlier run left in it) and starts the sender thread.
    pub fn start(spec: &CollectorSpec) -> Result<Self, ShipError> {
        spec.validate()?;
        let s = &spec.settings;
        let client = sender::Client::new(spec)?;
        let spool = Arc::new(Spool::open(SpoolConfig {
            dir: s.spool_dir.clone(),
            max_bytes: s.spool_max_bytes,
            max_age: Duration::from_secs(s.spool_max_age_secs),
            fsync: s.fsync,
        })?);
        let mut compressor =
            zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(ShipError::Compress)?;
        // zstd's own checksum of the content, on top of the spool's CRC of
        // the compressed bytes: the collector checks it as it decompresses.
        compressor
            .include_checksum(true)
            .map_err(ShipError::Compress)?;
        let counters = Arc::new(SendCounters::default());
        let (wake_tx, wake_rx) = flume::bounded(1);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = sender::Shared {
            spool: Arc::clone(&spool),
            counters: Arc::clone(&counters),
            wake: wake_rx,
            stop: Arc::clone(&stop),
            drain: Duration::from_millis(s.shutdown_drain_ms),
            retry_max: Duration::from_millis(s.retry_max_ms),
        };
        let thread = std::thread::Builder::new()
            .name("sink-collector".into())
            .spawn(move || sender::run(client, &shared))
            .map_err(ShipError::Spawn)?;
        tracing::info!(collector = %spec.url, spool = %s.spool_dir.display(), "collector sender started");
        Ok(Self {
            handle: ShipHandle { spool, counters },
            compressor,
            wake: wake_tx,
            stop,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> ShipHandle {
        self.handle.clone()
    }

    /// Compresses one batch of whole NDJSON lines and spools it; returns
    /// once it is on disk (per the fsync policy).
    pub fn spool_batch(
        &mut self,
        ndjson: &[u8],
        events: u64,
        findings: u64,
    ) -> Result<(), ShipError> {
        let raw_len = u32::try_from(ndjson.len()).map_err(|_| ShipError::BatchTooLarge)?;
        let payload = self
            .compressor
            .compress(ndjson)
            .map_err(ShipError::Compress)?;
        let events = u32::try_from(events).map_err(|_| ShipError::BatchTooLarge)?;
        let findings = u32::try_from(findings).map_err(|_| ShipError::BatchTooLarge)?;
        let id = uuid::Uuid::now_v7().into_bytes();
        // `None`: dropped by the full policy, and counted there.
        if self
            .handle
            .spool
            .append(id, &payload, raw_len, events, findings)?
            .is_some()
        {
            let _ = self.wake.try_send(());
        }
        Ok(())
    }

    /// Stops the sender after it has sent what is spooled (for at most
    /// `shutdown_drain_ms`) and joins it.
    pub fn finish(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.try_send(());
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| io::Error::other("collector sender thread panicked"))?;
        }
        Ok(())
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        if let Err(error) = self.finish() {
            tracing::error!(%error, "collector sink did not stop cleanly");
        }
    }
}
