//! Decoding of ring-buffer records into owned userspace records.
//!
//! Pure and total: a record that is too short or of an unknown kind is an
//! error, never a panic. The kernel and userspace share the layouts in
//! `agent-common`; the header's `kind` is read first and every length is
//! checked before a cast.

use agent_common::{
    kind, ExitRaw, ForkRaw, RecordHeader, COMM_LEN, EXEC_ARGS_MAX, EXEC_FILENAME_MAX,
    FILE_OPEN_FIXED, PATH_MAX_CAPTURE, SOCKADDR_MAX, TLS_CHUNK_DATA, TLS_CHUNK_FIXED,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its fixed part ({need})")]
    Short { len: usize, need: usize },
    #[error("unknown record kind {kind}")]
    UnknownKind { kind: u32 },
    #[error("record says {claimed} data bytes but carries {have}")]
    BadLength { claimed: usize, have: usize },
}

impl DecodeError {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Short { .. } => "record_short",
            Self::UnknownKind { .. } => "record_unknown_kind",
            Self::BadLength { .. } => "record_bad_length",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsChunk {
    pub hdr: RecordHeader,
    pub conn: u64,
    pub offset: u32,
    pub total_len: u32,
    pub fd: i32,
    pub dir: u8,
    pub flags: u8,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    pub hdr: RecordHeader,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    pub old_pid: u32,
    pub comm: String,
    pub filename: String,
    pub args: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub hdr: RecordHeader,
    pub flags: u64,
    pub ret: i64,
    pub dfd: i32,
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRecord {
    pub hdr: RecordHeader,
    pub fd: i32,
    pub ret: i32,
    pub addr: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Tls(TlsChunk),
    Exec(ExecRecord),
    Fork(ForkRaw),
    Exit(ExitRaw),
    FileOpen(FileRecord),
    LibOpen(FileRecord),
    Connect(ConnectRecord),
    ConnectHint(ConnectRecord),
}

impl Record {
    /// The record's kind as metrics label it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Tls(_) => "tls_chunk",
            Self::Exec(_) => "exec",
            Self::Fork(_) => "fork",
            Self::Exit(_) => "exit",
            Self::FileOpen(_) => "file_open",
            Self::LibOpen(_) => "lib_open",
            Self::Connect(_) => "connect",
            Self::ConnectHint(_) => "connect_hint",
        }
    }

    pub fn header(&self) -> &RecordHeader {
        match self {
            Self::Tls(r) => &r.hdr,
            Self::Exec(r) => &r.hdr,
            Self::Fork(r) => &r.hdr,
            Self::Exit(r) => &r.hdr,
            Self::FileOpen(r) | Self::LibOpen(r) => &r.hdr,
            Self::Connect(r) | Self::ConnectHint(r) => &r.hdr,
        }
    }

    pub fn tgid(&self) -> u32 {
        (self.header().pid_tgid >> 32) as u32
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_ne_bytes(a)
}

fn i32_at(b: &[u8], off: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    i32::from_ne_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_ne_bytes(a)
}

fn header_of(b: &[u8]) -> RecordHeader {
    RecordHeader {
        kind: u32_at(b, 0),
        cpu: u32_at(b, 4),
        seq: u64_at(b, 8),
        ktime_ns: u64_at(b, 16),
        pid_tgid: u64_at(b, 24),
    }
}

fn need(b: &[u8], n: usize) -> Result<(), DecodeError> {
    if b.len() < n {
        Err(DecodeError::Short {
            len: b.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

/// Text up to the first NUL, lossily decoded.
fn c_string(b: &[u8]) -> String {
    let end = memchr::memchr(0, b).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Splits NUL-separated argv (as in `/proc/PID/cmdline`).
pub fn split_args(b: &[u8]) -> Vec<String> {
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    if b.is_empty() {
        return Vec::new();
    }
    b.split(|&c| c == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Decodes one ring-buffer record.
#[expect(clippy::too_many_lines, reason = "one arm per record kind, each short")]
pub fn decode(b: &[u8]) -> Result<Record, DecodeError> {
    const HDR: usize = size_of::<RecordHeader>();
    need(b, HDR)?;
    let hdr = header_of(b);
    match hdr.kind {
        kind::TLS_CHUNK => {
            need(b, TLS_CHUNK_FIXED)?;
            let data_len = u32_at(b, 48) as usize;
            let have = b.len() - TLS_CHUNK_FIXED;
            if data_len > TLS_CHUNK_DATA || data_len > have {
                return Err(DecodeError::BadLength {
                    claimed: data_len,
                    have,
                });
            }
            Ok(Record::Tls(TlsChunk {
                hdr,
                conn: u64_at(b, 32),
                offset: u32_at(b, 40),
                total_len: u32_at(b, 44),
                fd: i32_at(b, 52),
                dir: b[56],
                flags: b[57],
                data: b[TLS_CHUNK_FIXED..TLS_CHUNK_FIXED + data_len].to_vec(),
            }))
        }
        kind::EXEC => {
            const FIXED: usize = agent_common::EXEC_FIXED;
            need(b, FIXED)?;
            let filename_len = (u32_at(b, 52) as usize).min(EXEC_FILENAME_MAX);
            let args_len = u32_at(b, 56) as usize;
            let have = b.len() - FIXED;
            if args_len > EXEC_ARGS_MAX || args_len > have {
                return Err(DecodeError::BadLength {
                    claimed: args_len,
                    have,
                });
            }
            let comm_at = 64;
            let filename_at = comm_at + COMM_LEN;
            Ok(Record::Exec(ExecRecord {
                hdr,
                ppid: u32_at(b, 32),
                uid: u32_at(b, 36),
                gid: u32_at(b, 40),
                flags: u32_at(b, 44),
                old_pid: u32_at(b, 48),
                comm: c_string(&b[comm_at..comm_at + COMM_LEN]),
                filename: c_string(&b[filename_at..filename_at + filename_len]),
                args: split_args(&b[FIXED..FIXED + args_len]),
            }))
        }
        kind::FORK => {
            need(b, size_of::<ForkRaw>())?;
            Ok(Record::Fork(ForkRaw {
                hdr,
                parent_tgid: u32_at(b, 32),
                child_tgid: u32_at(b, 36),
            }))
        }
        kind::EXIT => {
            need(b, size_of::<ExitRaw>())?;
            Ok(Record::Exit(ExitRaw {
                hdr,
                code: u32_at(b, 32),
                _pad: 0,
            }))
        }
        kind::FILE_OPEN | kind::LIB_OPEN => {
            need(b, FILE_OPEN_FIXED)?;
            let path_len = u32_at(b, 52) as usize;
            let have = b.len() - FILE_OPEN_FIXED;
            if path_len > PATH_MAX_CAPTURE || path_len > have {
                return Err(DecodeError::BadLength {
                    claimed: path_len,
                    have,
                });
            }
            let rec = FileRecord {
                hdr,
                flags: u64_at(b, 32),
                ret: u64_at(b, 40).cast_signed(),
                dfd: i32_at(b, 48),
                path: c_string(&b[FILE_OPEN_FIXED..FILE_OPEN_FIXED + path_len]),
            };
            Ok(if hdr.kind == kind::FILE_OPEN {
                Record::FileOpen(rec)
            } else {
                Record::LibOpen(rec)
            })
        }
        kind::NET_CONNECT | kind::CONNECT_HINT => {
            const FIXED: usize = 48;
            need(b, FIXED + SOCKADDR_MAX)?;
            let addr_len = (u32_at(b, 40) as usize).min(SOCKADDR_MAX);
            let rec = ConnectRecord {
                hdr,
                fd: i32_at(b, 32),
                ret: i32_at(b, 36),
                addr: b[FIXED..FIXED + addr_len].to_vec(),
            };
            Ok(if hdr.kind == kind::NET_CONNECT {
                Record::Connect(rec)
            } else {
                Record::ConnectHint(rec)
            })
        }
        other => Err(DecodeError::UnknownKind { kind: other }),
    }
}

/// Encodes a record as the kernel lays it out: the inverse of [`decode`].
/// Recordings synthesised without a kernel (`aitrail replay --synth`) and
/// tests use it.
pub fn encode(r: &Record) -> Vec<u8> {
    fn put(b: &mut Vec<u8>, off: usize, v: &[u8]) {
        if b.len() < off + v.len() {
            b.resize(off + v.len(), 0);
        }
        b[off..off + v.len()].copy_from_slice(v);
    }
    fn len32(n: usize) -> [u8; 4] {
        u32::try_from(n).unwrap_or(u32::MAX).to_ne_bytes()
    }
    let h = r.header();
    let mut b = Vec::with_capacity(256);
    put(&mut b, 0, &h.kind.to_ne_bytes());
    put(&mut b, 4, &h.cpu.to_ne_bytes());
    put(&mut b, 8, &h.seq.to_ne_bytes());
    put(&mut b, 16, &h.ktime_ns.to_ne_bytes());
    put(&mut b, 24, &h.pid_tgid.to_ne_bytes());
    match r {
        Record::Tls(c) => {
            let data = &c.data[..c.data.len().min(TLS_CHUNK_DATA)];
            put(&mut b, 32, &c.conn.to_ne_bytes());
            put(&mut b, 40, &c.offset.to_ne_bytes());
            put(&mut b, 44, &c.total_len.to_ne_bytes());
            put(&mut b, 48, &len32(data.len()));
            put(&mut b, 52, &c.fd.to_ne_bytes());
            put(&mut b, 56, &[c.dir, c.flags]);
            put(&mut b, TLS_CHUNK_FIXED, data);
            b.truncate(TLS_CHUNK_FIXED + data.len());
        }
        Record::Exec(e) => {
            let mut args = Vec::new();
            for a in &e.args {
                args.extend_from_slice(a.as_bytes());
                args.push(0);
            }
            args.truncate(EXEC_ARGS_MAX);
            let comm = &e.comm.as_bytes()[..e.comm.len().min(COMM_LEN - 1)];
            let file = &e.filename.as_bytes()[..e.filename.len().min(EXEC_FILENAME_MAX - 1)];
            put(&mut b, 32, &e.ppid.to_ne_bytes());
            put(&mut b, 36, &e.uid.to_ne_bytes());
            put(&mut b, 40, &e.gid.to_ne_bytes());
            put(&mut b, 44, &e.flags.to_ne_bytes());
            put(&mut b, 48, &e.old_pid.to_ne_bytes());
            put(&mut b, 52, &len32(file.len()));
            put(&mut b, 56, &len32(args.len()));
            put(&mut b, 64, comm);
            put(&mut b, 64 + COMM_LEN, file);
            b.resize(agent_common::EXEC_FIXED, 0);
            b.extend_from_slice(&args);
        }
        Record::Fork(f) => {
            put(&mut b, 32, &f.parent_tgid.to_ne_bytes());
            put(&mut b, 36, &f.child_tgid.to_ne_bytes());
        }
        Record::Exit(x) => {
            put(&mut b, 32, &x.code.to_ne_bytes());
            put(&mut b, 36, &0u32.to_ne_bytes());
        }
        Record::FileOpen(f) | Record::LibOpen(f) => {
            let path = &f.path.as_bytes()[..f.path.len().min(PATH_MAX_CAPTURE)];
            put(&mut b, 32, &f.flags.to_ne_bytes());
            put(&mut b, 40, &f.ret.to_ne_bytes());
            put(&mut b, 48, &f.dfd.to_ne_bytes());
            put(&mut b, 52, &len32(path.len()));
            put(&mut b, FILE_OPEN_FIXED, path);
        }
        Record::Connect(c) | Record::ConnectHint(c) => {
            let addr = &c.addr[..c.addr.len().min(SOCKADDR_MAX)];
            put(&mut b, 32, &c.fd.to_ne_bytes());
            put(&mut b, 36, &c.ret.to_ne_bytes());
            put(&mut b, 40, &len32(addr.len()));
            put(&mut b, 48, addr);
            b.resize(48 + SOCKADDR_MAX, 0);
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use agent_common::{ExecRaw, TlsChunkRaw};

    use super::*;

    fn as_bytes<T>(v: &T, len: usize) -> Vec<u8> {
        // SAFETY: test helper over plain-old-data records.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), len) }.to_vec()
    }

    #[test]
    fn tls_chunk_round_trip() {
        // SAFETY: all-zero is a valid TlsChunkRaw.
        let mut raw: TlsChunkRaw = unsafe { std::mem::zeroed() };
        raw.hdr = RecordHeader {
            kind: kind::TLS_CHUNK,
            cpu: 1,
            seq: 7,
            ktime_ns: 99,
            pid_tgid: (0x2a << 32) | 0x2b,
        };
        raw.conn = 0xdead;
        raw.total_len = 5;
        raw.data_len = 5;
        raw.dir = 1;
        raw.flags = agent_common::tls_flags::LAST;
        raw.data[..5].copy_from_slice(b"hello");
        let b = as_bytes(&raw, TLS_CHUNK_FIXED + 5);
        let Record::Tls(c) = decode(&b).unwrap() else {
            panic!("not tls")
        };
        assert_eq!(c.data, b"hello");
        assert_eq!(c.conn, 0xdead);
        assert_eq!(c.hdr.pid_tgid >> 32, 42);
        assert_eq!(c.dir, 1);
    }

    #[test]
    fn exec_round_trip() {
        // SAFETY: all-zero is a valid ExecRaw.
        let mut raw: ExecRaw = unsafe { std::mem::zeroed() };
        raw.hdr.kind = kind::EXEC;
        raw.ppid = 3;
        raw.comm[..3].copy_from_slice(b"cat");
        raw.filename[..8].copy_from_slice(b"/bin/cat");
        raw.filename_len = 8;
        let args = b"cat\0/etc/passwd\0";
        raw.args[..args.len()].copy_from_slice(args);
        raw.args_len = u32::try_from(args.len()).unwrap();
        let b = as_bytes(&raw, agent_common::EXEC_FIXED + args.len());
        let Record::Exec(e) = decode(&b).unwrap() else {
            panic!("not exec")
        };
        assert_eq!(e.comm, "cat");
        assert_eq!(e.filename, "/bin/cat");
        assert_eq!(e.args, vec!["cat", "/etc/passwd"]);
    }

    #[test]
    fn short_and_lying_records_are_errors() {
        assert!(matches!(decode(&[0; 5]), Err(DecodeError::Short { .. })));
        let mut b = vec![0u8; TLS_CHUNK_FIXED + 4];
        b[0..4].copy_from_slice(&kind::TLS_CHUNK.to_ne_bytes());
        b[48..52].copy_from_slice(&100u32.to_ne_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::BadLength { .. })));
        let mut b = vec![0u8; 64];
        b[0..4].copy_from_slice(&999u32.to_ne_bytes());
        assert_eq!(decode(&b), Err(DecodeError::UnknownKind { kind: 999 }));
    }

    proptest::proptest! {
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6000)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_is_total_for_each_kind(k in 0u32..10, rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6000)) {
            let mut b = k.to_ne_bytes().to_vec();
            b.extend_from_slice(&rest);
            let _ = decode(&b);
        }
    }
}
