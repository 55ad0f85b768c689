//! The record file: writing it from the capture thread, reading it back.
//! The format is described in the module above (`replay`).

use std::{
    fs,
    io::{self, BufReader, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{event::Host, util::Envelope};

pub const MAGIC: &[u8; 8] = b"AITRREC\n";
pub const VERSION: u32 = 1;
/// No ring-buffer record is near this; a longer length is corruption.
pub const MAX_RECORD: usize = 1 << 20;
/// Batches queued for the writer thread before the capture thread drops.
const QUEUE: usize = 256;
/// Header JSON larger than this is corruption.
const MAX_HEADER: usize = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not an aitrail recording (bad magic)")]
    NotARecording { path: PathBuf },
    #[error("{path}: recording version {found}, this aitrail reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: bad header")]
    Header {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: recorded on a {found}-endian host, this one is {here}-endian")]
    Endian {
        path: PathBuf,
        found: String,
        here: &'static str,
    },
    #[error("{path}: truncated after {records} records ({reason})")]
    Truncated {
        path: PathBuf,
        records: u64,
        reason: String,
    },
    #[error("{path}: corrupt after {records} records: record length {len} > {MAX_RECORD}")]
    Corrupt {
        path: PathBuf,
        records: u64,
        len: usize,
    },
}

impl RecordingError {
    /// Records read before the error, for errors met in the middle.
    pub fn records_before(&self) -> Option<u64> {
        match self {
            Self::Truncated { records, .. } | Self::Corrupt { records, .. } => Some(*records),
            _ => None,
        }
    }
}

/// What a replay needs to know of the recorded host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingHeader {
    /// The recording aitrail's version.
    pub aitrail_version: String,
    /// "little" or "big": record fields are in the host's byte order.
    pub endian: String,
    /// Wall-clock ns minus boot-time ns on the recorded host: record times
    /// are boot-time ns.
    pub boot_to_wall_ns: i128,
    /// The recorded host's boot id (process exec ids are derived from it).
    pub boot_id: String,
    pub host: Host,
    /// True when the records were synthesised (`aitrail replay --synth`),
    /// not read from a kernel.
    #[serde(default)]
    pub synthetic: bool,
}

fn endian_here() -> &'static str {
    if cfg!(target_endian = "little") {
        "little"
    } else {
        "big"
    }
}

impl RecordingHeader {
    /// This host, now.
    pub fn this_host(env: &Envelope) -> Self {
        Self {
            aitrail_version: env!("CARGO_PKG_VERSION").to_owned(),
            endian: endian_here().to_owned(),
            boot_to_wall_ns: env.boot_to_wall_ns(),
            boot_id: fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            host: env.host().clone(),
            synthetic: false,
        }
    }

    /// The envelope replayed events get: the recorded host and clock.
    pub fn envelope(&self) -> Envelope {
        Envelope::replayed(self.host.clone(), self.boot_to_wall_ns)
    }
}

/// Writes a recording. The capture thread only copies record bytes into a
/// batch and hands full batches to a writer thread (which compresses and
/// writes) through a bounded queue: when the disk or the compressor falls
/// behind, batches are dropped and counted, the capture never waits.
pub struct Recorder {
    batch: Vec<u8>,
    batch_records: u64,
    tx: Option<flume::Sender<(Vec<u8>, u64)>>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Creates `path` (0600; it must not exist: an existing file or a
    /// symlink planted there is refused) and writes the header.
    pub fn create(path: &Path, header: &RecordingHeader) -> Result<Self, RecordingError> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| RecordingError::Io {
                path: path.to_owned(),
                action: "cannot create the recording",
                source,
            })?;
        let mut enc = start(file, header).map_err(|source| RecordingError::Io {
            path: path.to_owned(),
            action: "cannot write the header",
            source,
        })?;
        let (tx, rx) = flume::bounded::<(Vec<u8>, u64)>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("record".into())
            .spawn({
                let dropped = Arc::clone(&dropped);
                let written = Arc::clone(&written);
                let path = path.to_owned();
                move || {
                    if let Err(e) = write_loop(&mut enc, &rx, &written, &dropped) {
                        tracing::warn!(path = %path.display(), error = %e, "recording stopped: write failed");
                        return;
                    }
                    if let Err(e) = enc.finish().and_then(|mut f| f.flush()) {
                        tracing::warn!(path = %path.display(), error = %e, "recording: final write failed");
                    }
                }
            })
            .map_err(|source| RecordingError::Io {
                path: path.to_owned(),
                action: "cannot start the writer thread",
                source,
            })?;
        Ok(Self {
            batch: Vec::with_capacity(64 * 1024),
            batch_records: 0,
            tx: Some(tx),
            dropped,
            written,
            thread: Some(thread),
        })
    }

    /// Adds one record's bytes, exactly as read from the ring buffer.
    pub fn push(&mut self, rec: &[u8]) {
        push_record(&mut self.batch, rec);
        self.batch_records += 1;
    }

    /// Hands the batch to the writer; a full queue drops it (counted).
    pub fn end_batch(&mut self) {
        if self.batch_records == 0 {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(64 * 1024));
        let n = std::mem::take(&mut self.batch_records);
        let sent = self
            .tx
            .as_ref()
            .is_some_and(|tx| tx.try_send((batch, n)).is_ok());
        if !sent {
            self.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Records not written: the queue was full or the writer failed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Writes what is queued, ends the compressed stream and closes.
    pub fn finish(mut self) -> u64 {
        self.end_batch();
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.written()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Encoder = zstd::stream::write::Encoder<'static, io::BufWriter<fs::File>>;

fn start(file: fs::File, header: &RecordingHeader) -> io::Result<Encoder> {
    let mut w = io::BufWriter::with_capacity(256 * 1024, file);
    w.write_all(MAGIC)?;
    w.write_all(&VERSION.to_le_bytes())?;
    // Level 3: cheap enough for one core to keep up with a busy host.
    let mut enc = zstd::stream::write::Encoder::new(w, 3)?;
    let json = serde_json::to_vec(header).map_err(io::Error::other)?;
    push_record_to(&mut enc, &json)?;
    Ok(enc)
}

fn write_loop(
    enc: &mut Encoder,
    rx: &flume::Receiver<(Vec<u8>, u64)>,
    written: &AtomicU64,
    dropped: &AtomicU64,
) -> io::Result<()> {
    let mut dirty = false;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok((batch, n)) => {
                if let Err(e) = enc.write_all(&batch) {
                    dropped.fetch_add(n, Ordering::Relaxed);
                    return Err(e);
                }
                written.fetch_add(n, Ordering::Relaxed);
                dirty = true;
            }
            // A quiet second: flush, so a killed daemon leaves a file
            // readable up to here.
            Err(flume::RecvTimeoutError::Timeout) => {
                if dirty {
                    enc.flush()?;
                    dirty = false;
                }
            }
            Err(flume::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

fn push_record(buf: &mut Vec<u8>, rec: &[u8]) {
    buf.extend_from_slice(&u32::try_from(rec.len()).unwrap_or(u32::MAX).to_le_bytes());
    buf.extend_from_slice(rec);
}

fn push_record_to(w: &mut impl Write, rec: &[u8]) -> io::Result<()> {
    w.write_all(&u32::try_from(rec.len()).unwrap_or(u32::MAX).to_le_bytes())?;
    w.write_all(rec)
}

/// Writes a whole recording at once (synthesised records, tests).
pub fn write_all(
    path: &Path,
    header: &RecordingHeader,
    records: impl IntoIterator<Item = Vec<u8>>,
) -> Result<u64, RecordingError> {
    let io_err = |action| {
        let path = path.to_owned();
        move |source| RecordingError::Io {
            path,
            action,
            source,
        }
    };
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("cannot create the recording"))?;
    let mut enc = start(file, header).map_err(io_err("cannot write the header"))?;
    let mut n = 0;
    for r in records {
        push_record_to(&mut enc, &r).map_err(io_err("write failed"))?;
        n += 1;
    }
    enc.finish()
        .and_then(|mut w| w.flush())
        .map_err(io_err("write failed"))?;
    Ok(n)
}

/// Reads a recording record by record.
pub struct Reader {
    path: PathBuf,
    dec: zstd::stream::read::Decoder<'static, BufReader<fs::File>>,
    header: RecordingHeader,
    records: u64,
    done: bool,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Self, RecordingError> {
        let mut file = fs::File::open(path).map_err(|source| RecordingError::Io {
            path: path.to_owned(),
            action: "cannot open the recording",
            source,
        })?;
        let mut pre = [0u8; 12];
        if file.read_exact(&mut pre).is_err() || &pre[..8] != MAGIC {
            return Err(RecordingError::NotARecording {
                path: path.to_owned(),
            });
        }
        let found = u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]);
        if found != VERSION {
            return Err(RecordingError::Version {
                path: path.to_owned(),
                found,
            });
        }
        let dec = zstd::stream::read::Decoder::new(file).map_err(|source| RecordingError::Io {
            path: path.to_owned(),
            action: "cannot start decompression",
            source,
        })?;
        let mut r = Self {
            path: path.to_owned(),
            dec,
            header: RecordingHeader::default(),
            records: 0,
            done: false,
        };
        let json = match r.next_frame(MAX_HEADER) {
            Some(Ok(j)) => j,
            Some(Err(e)) => return Err(e),
            None => {
                return Err(RecordingError::Truncated {
                    path: path.to_owned(),
                    records: 0,
                    reason: "no header".into(),
                })
            }
        };
        r.header = serde_json::from_slice(&json).map_err(|source| RecordingError::Header {
            path: path.to_owned(),
            source,
        })?;
        if r.header.endian != endian_here() {
            return Err(RecordingError::Endian {
                path: path.to_owned(),
                found: r.header.endian.clone(),
                here: endian_here(),
            });
        }
        Ok(r)
    }

    pub fn header(&self) -> &RecordingHeader {
        &self.header
    }

    /// Records returned so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn truncated(&mut self, reason: String) -> RecordingError {
        self.done = true;
        RecordingError::Truncated {
            path: self.path.clone(),
            records: self.records,
            reason,
        }
    }

    fn next_frame(&mut self, max: usize) -> Option<Result<Vec<u8>, RecordingError>> {
        if self.done {
            return None;
        }
        let mut len = [0u8; 4];
        // EOF exactly at a record boundary is the normal end.
        match read_full(&mut self.dec, &mut len) {
            Ok(0) => {
                self.done = true;
                return None;
            }
            Ok(4) => {}
            Ok(n) => return Some(Err(self.truncated(format!("{n} of 4 length bytes")))),
            Err(e) => return Some(Err(self.truncated(e.to_string()))),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > max {
            self.done = true;
            return Some(Err(RecordingError::Corrupt {
                path: self.path.clone(),
                records: self.records,
                len,
            }));
        }
        let mut buf = vec![0u8; len];
        match read_full(&mut self.dec, &mut buf) {
            Ok(n) if n == len => Some(Ok(buf)),
            Ok(n) => Some(Err(self.truncated(format!("{n} of {len} record bytes")))),
            Err(e) => Some(Err(self.truncated(e.to_string()))),
        }
    }
}

impl Iterator for Reader {
    type Item = Result<Vec<u8>, RecordingError>;

    /// The next record's raw bytes; after an error, `None`.
    fn next(&mut self) -> Option<Self::Item> {
        let r = self.next_frame(MAX_RECORD)?;
        if r.is_ok() {
            self.records += 1;
        }
        Some(r)
    }
}

/// Reads until `buf` is full or the stream ends; the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
