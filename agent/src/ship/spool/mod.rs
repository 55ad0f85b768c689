//! The disk spool: compressed batches waiting for the collector's ack.
//!
//! # On-disk format
//!
//! One directory (mode 0700) holds one file per batch, a *segment*, named
//! `{seq:020}.seg` (mode 0600) where `seq` grows by one per segment, so the
//! names sort oldest first. A segment is a 64-byte header followed by the
//! payload, one zstd frame (with zstd's own content checksum) holding the
//! batch's NDJSON lines. All integers are little-endian.
//!
//! ```text
//! off len
//!   0   4  magic "ATSG"
//!   4   2  format version (1)
//!   6   2  header length (64)
//!   8  16  batch id (UUID v7): the Idempotency-Key sent with the batch
//!  24   8  creation time, ms since the Unix epoch
//!  32   8  payload length (compressed bytes)
//!  40   4  events in the batch
//!  44   4  of which findings
//!  48   4  uncompressed length
//!  52   4  CRC-32 (IEEE) of the payload
//!  56   4  CRC-32 (IEEE) of header bytes 0..56
//!  60   4  reserved (0)
//! ```
//!
//! A segment is written to `{seq:020}.tmp`, fsynced (per [`FsyncPolicy`]),
//! renamed to its final name, and the directory is fsynced: a `.seg` file is
//! either whole or detectably torn. At start every segment is read and
//! checked (magic, version, lengths, both CRCs); a bad one is moved to
//! `quarantine/` and counted, never sent and never fatal. Leftover `.tmp`
//! files (a crash mid-write) are deleted and counted as torn.
//!
//! # Bounds and the full policy
//!
//! The spool holds at most `max_bytes` (headers included) and segments no
//! older than `max_age`. Expired segments are dropped first (cause
//! `expired`). When a new segment does not fit, the oldest segments *without*
//! findings are dropped first (cause `full`); a batch with findings may then
//! evict the oldest segments with findings, a batch without findings may
//! not: it is dropped itself (cause `full`), so findings go last. The
//! segment being sent is never dropped under the sender's feet. The file
//! system may run out of room before `max_bytes` (ENOSPC or EDQUOT on any
//! step of a segment write): the same policy then evicts one segment at a
//! time and tries again (each refusal counted in `no_space`). A batch
//! larger than the whole spool is refused (the sink counts its lines as
//! dropped). Every dropped event is counted by cause, and dropped findings
//! once more on their own.
//!
//! # What a crash can lose
//!
//! Only events not yet in a renamed segment: those in the sink's queue (at
//! most `sinks::QUEUE_CAPACITY` lines), those the pipeline gathered for its
//! next parcel (at most `sinks::PARCEL_LINES`, sent after each batch of
//! records) and in the open batch (at most
//! `batch_max_events` / `batch_max_bytes`, at most `batch_max_wait_ms` old).
//! A process crash loses nothing that was spooled, whatever the fsync policy
//! (the page cache outlives the process). A power loss or kernel crash loses
//! nothing spooled with `fsync = "segment"`; with `fsync = "never"` it may
//! also lose the segments written within the kernel's writeback delay
//! (`vm.dirty_expire_centisecs`, 30 s by default), and the torn ones are
//! quarantined at the next start. A segment sent but not yet deleted when
//! the crash hits is sent again with the same batch id and event ids; the
//! collector drops the duplicates by event id.

mod segment;
#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use self::segment::read_segment;
pub use self::segment::{Header, HEADER_LEN, MAGIC, VERSION};
/// Name of the directory (inside the spool) that holds bad segments.
pub const QUARANTINE: &str = "quarantine";

/// When spooled segments are forced to disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Each segment and its directory entry are fsynced before the batch
    /// counts as written (one or two fsyncs per batch).
    #[default]
    Segment,
    /// The kernel writes back when it likes: cheaper, and a power loss may
    /// lose the last ~30 s of segments (see the module doc).
    Never,
}

#[derive(Clone, Debug)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub fsync: FsyncPolicy,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {op} failed")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("spool {dir}: a batch of {bytes} bytes is larger than the whole spool ({max} bytes)")]
    TooLarge { dir: PathBuf, bytes: u64, max: u64 },
    #[error("spool segment {path}: {problem}; moved to quarantine")]
    Corrupt {
        path: PathBuf,
        problem: &'static str,
    },
}

impl SpoolError {
    /// The file system (or a quota) has no room left.
    pub fn is_no_space(&self) -> bool {
        matches!(self, Self::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)))
    }
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// A spooled segment, as the index knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub seq: u64,
    pub header: Header,
}

impl Segment {
    pub fn file_len(&self) -> u64 {
        HEADER_LEN as u64 + self.header.payload_len
    }
}

/// Why events left the spool without an ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// Evicted to make room (full policy).
    Full,
    /// Older than `max_age`.
    Expired,
    /// The collector refused the batch for good (e.g. 400, 413).
    Rejected,
    /// Failed its checks (quarantined).
    Corrupt,
}

/// Counters of a spool since start (all monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SpoolStats {
    pub segments_written: u64,
    pub segments_acked: u64,
    pub events_written: u64,
    pub events_acked: u64,
    pub dropped_full: u64,
    pub dropped_expired: u64,
    pub dropped_rejected: u64,
    pub dropped_corrupt: u64,
    /// Of all dropped events, those that were findings.
    pub findings_dropped: u64,
    /// Segments moved to `quarantine/` (their event count may be unknown).
    pub segments_quarantined: u64,
    /// `.tmp` files found at start: batches a crash cut mid-write.
    pub segments_torn: u64,
    /// Segment writes refused with ENOSPC/EDQUOT (each then made room by
    /// the full policy, or dropped the batch).
    pub no_space: u64,
    /// Now: segments and bytes on disk (a gauge, for the spool depth).
    pub segments_now: u64,
    pub bytes_now: u64,
}

#[derive(Debug, Default)]
struct Counters {
    segments_written: AtomicU64,
    segments_acked: AtomicU64,
    events_written: AtomicU64,
    events_acked: AtomicU64,
    dropped_full: AtomicU64,
    dropped_expired: AtomicU64,
    dropped_rejected: AtomicU64,
    dropped_corrupt: AtomicU64,
    findings_dropped: AtomicU64,
    segments_quarantined: AtomicU64,
    segments_torn: AtomicU64,
    no_space: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[derive(Debug, Default)]
struct Index {
    segments: BTreeMap<u64, Segment>,
    bytes: u64,
    next_seq: u64,
    /// The segment the sender holds; never evicted.
    in_flight: Option<u64>,
}

/// The spool. Shared by the sink's writer (append) and the sender (oldest,
/// ack, drop); every method takes `&self`.
#[derive(Debug)]
pub struct Spool {
    cfg: SpoolConfig,
    index: Mutex<Index>,
    counters: Counters,
    /// Set at the first ENOSPC of a streak, so it is logged once.
    no_space_logged: AtomicBool,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Spool {
    /// Opens (creating it 0700 if needed) the spool directory, checks every
    /// segment in it, and applies the bounds.
    pub fn open(cfg: SpoolConfig) -> Result<Self, SpoolError> {
        let dir = cfg.dir.clone();
        make_private_dir(&dir)?;
        make_private_dir(&dir.join(QUARANTINE))?;
        let spool = Self {
            cfg,
            index: Mutex::new(Index::default()),
            counters: Counters::default(),
            no_space_logged: AtomicBool::new(false),
        };
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir, "read_dir"))? {
            let entry = entry.map_err(io_err(&dir, "read_dir"))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                tracing::warn!(path = %path.display(), "spool: removing a segment a crash cut mid-write");
                add(&spool.counters.segments_torn, 1);
                fs::remove_file(&path).map_err(io_err(&path, "remove"))?;
            } else if let Some(seq) = name.strip_suffix(".seg").and_then(|s| s.parse().ok()) {
                names.push((seq, path));
            } else if name != QUARANTINE {
                tracing::warn!(path = %path.display(), "spool: ignoring an unknown file");
            }
        }
        names.sort_unstable();
        {
            let mut index = spool.lock();
            for (seq, path) in names {
                index.next_seq = index.next_seq.max(seq + 1);
                match read_segment(&path) {
                    Ok((header, _)) => {
                        index.bytes += HEADER_LEN as u64 + header.payload_len;
                        index.segments.insert(seq, Segment { seq, header });
                    }
                    Err(SpoolError::Corrupt { problem, .. }) => {
                        spool.quarantine(&path, problem, None);
                    }
                    Err(e) => return Err(e),
                }
            }
            spool.expire(&mut index, now_ms());
            tracing::info!(
                dir = %dir.display(),
                segments = index.segments.len(),
                bytes = index.bytes,
                "spool opened"
            );
        }
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves a consistent index (every
        // update is a single insert/remove plus a byte count).
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path_of(&self, seq: u64, ext: &str) -> PathBuf {
        self.cfg.dir.join(format!("{seq:020}.{ext}"))
    }

    /// Writes a batch as a new segment, making room first (see the module
    /// doc). `payload` is the zstd frame of `raw_len` NDJSON bytes. `None`:
    /// the full policy dropped this batch itself (counted), because room
    /// could only be made by evicting findings for a batch without any, or
    /// the file system is full and nothing is left to evict.
    pub fn append(
        &self,
        batch_id: [u8; 16],
        payload: &[u8],
        raw_len: u32,
        events: u32,
        findings: u32,
    ) -> Result<Option<Segment>, SpoolError> {
        let header = Header {
            batch_id,
            created_ms: now_ms(),
            payload_len: payload.len() as u64,
            events,
            findings,
            raw_len,
            payload_crc: crc32fast::hash(payload),
        };
        let len = HEADER_LEN as u64 + header.payload_len;
        if len > self.cfg.max_bytes {
            return Err(SpoolError::TooLarge {
                dir: self.cfg.dir.clone(),
                bytes: len,
                max: self.cfg.max_bytes,
            });
        }
        let mut index = self.lock();
        self.expire(&mut index, header.created_ms);
        let has_findings = findings > 0;
        while index.bytes + len > self.cfg.max_bytes {
            let Some(victim) = victim(&index, has_findings) else {
                self.refuse(events, findings, "the spool is full of findings");
                return Ok(None);
            };
            self.drop_segment(&mut index, victim, DropCause::Full);
        }
        let seq = index.next_seq;
        // The byte bound is ours; the file system may run out first (a
        // small partition, other files): then the same policy makes room.
        loop {
            match self.write_segment(seq, &header, payload) {
                Ok(()) => break,
                Err(e) if e.is_no_space() => {
                    add(&self.counters.no_space, 1);
                    let Some(victim) = victim(&index, has_findings) else {
                        self.refuse(events, findings, "the file system is full");
                        return Ok(None);
                    };
                    if !self.no_space_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            dir = %self.cfg.dir.display(),
                            bytes = index.bytes,
                            "spool: no space left on the file system below spool_max_bytes; \
                             dropping the oldest segments (counted as full)"
                        );
                    }
                    self.drop_segment(&mut index, victim, DropCause::Full);
                }
                Err(e) => return Err(e),
            }
        }
        self.no_space_logged.store(false, Ordering::Relaxed);
        index.next_seq += 1;
        index.bytes += len;
        let segment = Segment { seq, header };
        index.segments.insert(seq, segment);
        add(&self.counters.segments_written, 1);
        add(&self.counters.events_written, u64::from(events));
        Ok(Some(segment))
    }

    /// A batch the full policy drops instead of an older one: counted like
    /// an evicted segment.
    fn refuse(&self, events: u32, findings: u32, why: &str) {
        tracing::debug!(events, findings, why, "spool: new batch dropped");
        self.count_drop(DropCause::Full, u64::from(events), u64::from(findings));
    }

    /// `{seq}.tmp` written, fsynced, renamed to `{seq}.seg`, the directory
    /// fsynced (per the policy). On error the temp file is removed.
    fn write_segment(&self, seq: u64, header: &Header, payload: &[u8]) -> Result<(), SpoolError> {
        let tmp = self.path_of(seq, "tmp");
        let seg = self.path_of(seq, "seg");
        let written = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp, "create"))?;
            f.write_all(&header.encode())
                .and_then(|()| f.write_all(payload))
                .map_err(io_err(&tmp, "write"))?;
            if self.cfg.fsync == FsyncPolicy::Segment {
                f.sync_data().map_err(io_err(&tmp, "fsync"))?;
            }
            fs::rename(&tmp, &seg).map_err(io_err(&seg, "rename"))?;
            if self.cfg.fsync == FsyncPolicy::Segment {
                File::open(&self.cfg.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_err(&self.cfg.dir, "fsync"))?;
            }
            Ok(())
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Drops segments older than `max_age`.
    fn expire(&self, index: &mut Index, now: u64) {
        let max_ms = u64::try_from(self.cfg.max_age.as_millis()).unwrap_or(u64::MAX);
        let old: Vec<u64> = index
            .segments
            .values()
            .filter(|s| {
                Some(s.seq) != index.in_flight && now.saturating_sub(s.header.created_ms) > max_ms
            })
            .map(|s| s.seq)
            .collect();
        for seq in old {
            self.drop_segment(index, seq, DropCause::Expired);
        }
    }

    fn drop_segment(&self, index: &mut Index, seq: u64, cause: DropCause) {
        let Some(s) = index.segments.remove(&seq) else {
            return;
        };
        index.bytes -= s.file_len();
        let path = self.path_of(seq, "seg");
        if let Err(error) = fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %error, "spool: cannot remove a dropped segment");
        }
        self.count_drop(
            cause,
            u64::from(s.header.events),
            u64::from(s.header.findings),
        );
        tracing::debug!(
            seq,
            ?cause,
            events = s.header.events,
            findings = s.header.findings,
            "spool: segment dropped"
        );
    }

    fn count_drop(&self, cause: DropCause, events: u64, findings: u64) {
        let c = &self.counters;
        let counter = match cause {
            DropCause::Full => &c.dropped_full,
            DropCause::Expired => &c.dropped_expired,
            DropCause::Rejected => &c.dropped_rejected,
            DropCause::Corrupt => &c.dropped_corrupt,
        };
        add(counter, events);
        add(&c.findings_dropped, findings);
    }

    /// Moves a bad file to `quarantine/` (deleting it if that fails) and
    /// counts it; `known` are its events and findings when the index knew
    /// them.
    fn quarantine(&self, path: &Path, problem: &str, known: Option<(u32, u32)>) {
        tracing::error!(path = %path.display(), problem, "spool: corrupt segment quarantined");
        add(&self.counters.segments_quarantined, 1);
        if let Some((events, findings)) = known {
            self.count_drop(DropCause::Corrupt, u64::from(events), u64::from(findings));
        }
        let to = self
            .cfg
            .dir
            .join(QUARANTINE)
            .join(path.file_name().unwrap_or_default());
        if fs::rename(path, &to).is_err() {
            let _ = fs::remove_file(path);
        }
    }

    /// The oldest segment, marked as in flight (kept out of eviction) until
    /// [`Spool::acked`], [`Spool::rejected`] or [`Spool::release`].
    pub fn take_oldest(&self) -> Option<Segment> {
        let mut index = self.lock();
        self.expire(&mut index, now_ms());
        let s = index.segments.values().next().copied()?;
        index.in_flight = Some(s.seq);
        Some(s)
    }

    /// Reads and checks a segment's payload. A corrupt one is quarantined
    /// and dropped from the index.
    pub fn read(&self, segment: &Segment) -> Result<Vec<u8>, SpoolError> {
        let path = self.path_of(segment.seq, "seg");
        match read_segment(&path) {
            Ok((_, payload)) => Ok(payload),
            Err(e @ SpoolError::Corrupt { problem, .. }) => {
                let mut index = self.lock();
                if let Some(s) = index.segments.remove(&segment.seq) {
                    index.bytes -= s.file_len();
                }
                index.in_flight = None;
                self.quarantine(
                    &path,
                    problem,
                    Some((segment.header.events, segment.header.findings)),
                );
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The collector acknowledged the segment: delete it.
    pub fn acked(&self, segment: &Segment) -> Result<(), SpoolError> {
        let mut index = self.lock();
        index.in_flight = None;
        if index.segments.remove(&segment.seq).is_some() {
            index.bytes -= segment.file_len();
            add(&self.counters.segments_acked, 1);
            add(
                &self.counters.events_acked,
                u64::from(segment.header.events),
            );
        }
        let path = self.path_of(segment.seq, "seg");
        fs::remove_file(&path).map_err(io_err(&path, "remove"))
    }

    /// The collector refused the segment for good: drop it, counted.
    pub fn rejected(&self, segment: &Segment) {
        let mut index = self.lock();
        index.in_flight = None;
        self.drop_segment(&mut index, segment.seq, DropCause::Rejected);
    }

    /// The send failed; the segment stays and may be evicted again.
    pub fn release(&self) {
        self.lock().in_flight = None;
    }

    pub fn is_empty(&self) -> bool {
        self.lock().segments.is_empty()
    }

    pub fn stats(&self) -> SpoolStats {
        let (segments_now, bytes_now) = {
            let index = self.lock();
            (index.segments.len() as u64, index.bytes)
        };
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SpoolStats {
            segments_written: get(&c.segments_written),
            segments_acked: get(&c.segments_acked),
            events_written: get(&c.events_written),
            events_acked: get(&c.events_acked),
            dropped_full: get(&c.dropped_full),
            dropped_expired: get(&c.dropped_expired),
            dropped_rejected: get(&c.dropped_rejected),
            dropped_corrupt: get(&c.dropped_corrupt),
            findings_dropped: get(&c.findings_dropped),
            segments_quarantined: get(&c.segments_quarantined),
            segments_torn: get(&c.segments_torn),
            no_space: get(&c.no_space),
            segments_now,
            bytes_now,
        }
    }
}

/// The segment the full policy evicts next for a new batch: the oldest
/// without findings; for a batch with findings, else the oldest with
/// findings. A batch without findings never pushes a finding out. The
/// segment being sent is never chosen.
fn victim(index: &Index, new_has_findings: bool) -> Option<u64> {
    let evictable = || {
        index
            .segments
            .values()
            .filter(|s| Some(s.seq) != index.in_flight)
    };
    evictable()
        .find(|s| s.header.findings == 0)
        .or_else(|| evictable().find(|_| new_has_findings))
        .map(|s| s.seq)
}

/// Creates `dir` with mode 0700, or tightens an existing one to 0700: the
/// spool holds prompts and command lines.
fn make_private_dir(dir: &Path) -> Result<(), SpoolError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir, "create_dir"))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir, "chmod"))
}
