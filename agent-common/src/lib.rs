//! Records that cross the kernel ↔ userspace boundary.
//!
//! Every record written to the ring buffer starts with [`RecordHeader`]; the
//! decoder reads `kind` first and checks the length before it casts. Variable
//! length records (TLS chunks, exec, file paths) are sent with only the bytes
//! they use: the fixed part, then `*_len` bytes of their trailing array.
//!
//! Kind ids are explicit and never reused.
#![no_std]
#![expect(
    clippy::pub_underscore_fields,
    reason = "explicit padding of #[repr(C)] records shared with the kernel"
)]

use core::mem::size_of;

/// Kind ids of ring-buffer records. Never renumber, never reuse.
pub mod kind {
    pub const TLS_CHUNK: u32 = 1;
    pub const EXEC: u32 = 2;
    pub const FORK: u32 = 3;
    pub const EXIT: u32 = 4;
    pub const FILE_OPEN: u32 = 5;
    pub const NET_CONNECT: u32 = 6;
    /// An in-scope process opened a file that looks like a TLS library
    /// (`libssl.so*`, `libgnutls.so*`, `libssl3.so`, `libnspr4.so`):
    /// userspace attaches to it.
    pub const LIB_OPEN: u32 = 7;
    /// First `connect()` of an in-scope process that is not yet attached:
    /// the cue for on-demand uprobe attach on a whole host.
    pub const CONNECT_HINT: u32 = 8;
}

/// Header of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u32,
    pub cpu: u32,
    /// Per-CPU sequence number: a gap means records were lost on that CPU.
    pub seq: u64,
    /// `bpf_ktime_get_boot_ns()` when the record was made.
    pub ktime_ns: u64,
    /// `bpf_get_current_pid_tgid()`: tgid in the high 32 bits, tid low.
    pub pid_tgid: u64,
}
const _: () = assert!(size_of::<RecordHeader>() == 32);

/// Direction of TLS plaintext, as seen by the watched process.
pub mod dir {
    /// `SSL_write`, `gnutls_record_send`, `PR_Write`: the process sent this.
    pub const WRITE: u8 = 0;
    /// `SSL_read`, `gnutls_record_recv`, `PR_Read`: the process received this.
    pub const READ: u8 = 1;
}

/// Flags of [`TlsChunkRaw`].
pub mod tls_flags {
    /// The call moved more than the capture cap: bytes past it were not copied.
    pub const TRUNCATED: u8 = 1;
    /// Last chunk of this call.
    pub const LAST: u8 = 2;
    /// `bpf_probe_read_user` failed for this chunk: `data_len` bytes are zero.
    pub const READ_FAILED: u8 = 4;
    /// `SSL_free`, `gnutls_deinit`, `PR_Close`: the connection is gone (no data).
    pub const CLOSE: u8 = 8;
    /// rustls: `conn` is the record key (aws-lc `EVP_AEAD_CTX *`) of data
    /// written before its socket was known; a `LINK` record names the
    /// connection it belongs to.
    pub const UNLINKED: u8 = 16;
    /// rustls: no plaintext; `data` holds the 8-byte record key (native
    /// endian) that earlier `UNLINKED` chunks of this process carried, and
    /// `conn` the connection they belong to.
    pub const LINK: u8 = 32;
    /// Plain HTTP: socket data of a connection to one of the configured
    /// model-server ports (`[capture] plain_http_ports`), no TLS. `conn` is
    /// the socket cookie with [`PLAIN_CONN_TAG`] set.
    pub const PLAIN: u8 = 64;
}

/// Set in the `conn` of plain-HTTP chunks (the socket cookie): user-space
/// addresses (`SSL *`, rustls record keys) and bare cookies (rustls
/// connections) never have it, so a plain connection never shares a stream
/// with a TLS one.
pub const PLAIN_CONN_TAG: u64 = 1 << 63;
/// Most remote ports `[capture] plain_http_ports` may name.
pub const MAX_PLAIN_PORTS: u32 = 64;

/// Bytes of plaintext carried by one TLS chunk record at most.
pub const TLS_CHUNK_DATA: usize = 16 * 1024;
/// Default cap of plaintext copied from one TLS read or write call.
pub const DEFAULT_TLS_CAP: u32 = 256 * 1024;
/// Largest cap the kernel programs can honour (their chunk loop is bounded).
pub const MAX_TLS_CAP: u32 = 256 * 1024;

/// Plaintext moved by one TLS read or write call (`SSL_read`/`SSL_write`
/// and their `_ex` variants, `gnutls_record_recv`/`send`, NSPR's
/// `PR_Read`/`PR_Write`/`PR_Recv`/`PR_Send` on an SSL socket), or one chunk
/// of it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsChunkRaw {
    pub hdr: RecordHeader,
    /// The connection object of the call (`SSL *`, `gnutls_session_t`, the
    /// NSPR `PRFileDesc *`): with the tgid it names the connection.
    pub conn: u64,
    /// Byte offset of this chunk within the call.
    pub offset: u32,
    /// Bytes the call moved in all (its return value).
    pub total_len: u32,
    /// Bytes of `data` that are valid.
    pub data_len: u32,
    /// Socket fd learned inside the call, or -1.
    pub fd: i32,
    pub dir: u8,
    pub flags: u8,
    pub _pad: [u8; 6],
    pub data: [u8; TLS_CHUNK_DATA],
}
pub const TLS_CHUNK_FIXED: usize = size_of::<TlsChunkRaw>() - TLS_CHUNK_DATA;
const _: () = assert!(TLS_CHUNK_FIXED == 64);

pub const COMM_LEN: usize = 16;
pub const EXEC_FILENAME_MAX: usize = 512;
pub const EXEC_ARGS_MAX: usize = 4096;

/// Flags of [`ExecRaw`].
pub mod exec_flags {
    /// argv was longer than `EXEC_ARGS_MAX`.
    pub const ARGS_TRUNCATED: u32 = 1;
    /// argv could not be read.
    pub const ARGS_FAILED: u32 = 2;
}

/// A successful exec (`sched_process_exec`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRaw {
    pub hdr: RecordHeader,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    /// Previous pid of the exec'ing thread (differs from the tgid when a
    /// non-leader thread called exec).
    pub old_pid: u32,
    pub filename_len: u32,
    pub args_len: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
    pub filename: [u8; EXEC_FILENAME_MAX],
    /// argv, NUL-separated, as in `/proc/PID/cmdline`.
    pub args: [u8; EXEC_ARGS_MAX],
}
pub const EXEC_FIXED: usize = size_of::<ExecRaw>() - EXEC_ARGS_MAX;
const _: () = assert!(size_of::<ExecRaw>() == 32 + 32 + 16 + 512 + 4096);

/// A new process (not a thread): `sched_process_fork` where the child leads
/// its own thread group.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkRaw {
    pub hdr: RecordHeader,
    pub parent_tgid: u32,
    pub child_tgid: u32,
}
const _: () = assert!(size_of::<ForkRaw>() == 40);

/// A process ended: its last thread exited (`sched_process_exit` with
/// `group_dead`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitRaw {
    pub hdr: RecordHeader,
    /// `task_struct.exit_code` of the last thread: `(status << 8) | signal`.
    pub code: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ExitRaw>() == 40);

pub const PATH_MAX_CAPTURE: usize = 512;

/// `openat`/`openat2` returned (`do_sys_openat2`), or a TLS library was opened.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileOpenRaw {
    pub hdr: RecordHeader,
    pub flags: u64,
    /// fd on success, `-errno` on failure.
    pub ret: i64,
    pub dfd: i32,
    pub path_len: u32,
    pub path: [u8; PATH_MAX_CAPTURE],
}
pub const FILE_OPEN_FIXED: usize = size_of::<FileOpenRaw>() - PATH_MAX_CAPTURE;
const _: () = assert!(FILE_OPEN_FIXED == 56);

pub const SOCKADDR_MAX: usize = 112;

/// `connect()` returned (`__sys_connect`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NetConnectRaw {
    pub hdr: RecordHeader,
    pub fd: i32,
    /// 0 on success, `-errno` on failure (`-EINPROGRESS` for non-blocking).
    pub ret: i32,
    /// Bytes of `addr` copied from the caller's `sockaddr`.
    pub addr_len: u32,
    pub _pad: u32,
    pub addr: [u8; SOCKADDR_MAX],
}
const _: () = assert!(size_of::<NetConnectRaw>() == 32 + 16 + 112);

/// Indices of the per-CPU counters the kernel side keeps (`COUNTERS` map).
pub mod counter {
    /// A record could not be written: ring buffer full.
    pub const RINGBUF_FULL: u32 = 0;
    /// Plaintext bytes lost because the ring buffer was full.
    pub const TLS_BYTES_LOST: u32 = 1;
    /// `bpf_probe_read_*` failed.
    pub const READ_FAILED: u32 = 2;
    /// TLS calls whose plaintext was cut at the cap.
    pub const TLS_TRUNCATED: u32 = 3;
    /// A return probe found no saved entry arguments (map full or missed entry).
    pub const TLS_NO_ENTRY: u32 = 4;
    /// The entry-argument map was full.
    pub const TLS_ARGS_FULL: u32 = 5;
    /// Scope or watch maps were full: a child could not be added.
    pub const SCOPE_FULL: u32 = 6;
    /// TLS calls captured.
    pub const TLS_CALLS: u32 = 7;
    /// Records written.
    pub const RECORDS: u32 = 8;
    /// Processes whose NSS SSL layer was recognised by its shape, not
    /// learned at `SSL_ImportFD` (their connections predate the attach).
    pub const NSS_SSL_LAYER_BY_SHAPE: u32 = 9;
    /// A TLS return probe could not hand over to the copy program (its
    /// program-array slot was empty): that call's plaintext was lost.
    pub const TLS_TAIL_CALL_FAILED: u32 = 10;
    /// rustls: write keys tied to their socket (one per connection).
    pub const RUSTLS_LINKS: u32 = 11;
    /// rustls: records decrypted on a thread with no socket receive seen
    /// before: sent unlinked, parsed without their other direction.
    pub const RUSTLS_UNLINKED_READS: u32 = 12;
    /// rustls: TLS 1.3 records whose padding was longer than the kernel
    /// scans for the content type: their plaintext was not sent.
    pub const RUSTLS_PADDING_LOST: u32 = 13;
    /// Plain HTTP: socket sends and receives copied.
    pub const PLAIN_CALLS: u32 = 14;
    /// Plain HTTP: calls whose data was cut at the cap (or at the iovec
    /// limit): the bytes past it were not copied.
    pub const PLAIN_TRUNCATED: u32 = 15;
    /// Plain HTTP: bytes lost because the ring buffer was full.
    pub const PLAIN_BYTES_LOST: u32 = 16;
    /// Plain HTTP: socket I/O of a watched connection made by a call whose
    /// buffer the kernel programs cannot find (`sendfile`, `splice`,
    /// `sendmmsg`, `io_uring`, …): its bytes were not copied.
    pub const PLAIN_UNSUPPORTED: u32 = 17;
    /// Plain HTTP: bytes of such calls.
    pub const PLAIN_UNSUPPORTED_BYTES: u32 = 18;
    pub const COUNT: u32 = 19;
    pub const NAMES: [&str; COUNT as usize] = [
        "ringbuf_full",
        "tls_bytes_lost",
        "read_failed",
        "tls_truncated",
        "tls_no_entry",
        "tls_args_full",
        "scope_full",
        "tls_calls",
        "records",
        "nss_ssl_layer_by_shape",
        "tls_tail_call_failed",
        "rustls_links",
        "rustls_unlinked_reads",
        "rustls_padding_lost",
        "plain_calls",
        "plain_truncated",
        "plain_bytes_lost",
        "plain_unsupported",
        "plain_unsupported_bytes",
    ];
}

/// Bits of the `SCOPE_FLAGS` global.
pub mod scope_flags {
    /// Only processes in the `SCOPE` map (and their descendants) are captured.
    pub const PIDS: u32 = 1;
    /// Only processes in one of the `CGROUPS` subtrees are captured.
    pub const CGROUPS: u32 = 2;
    /// Every in-scope process is also watched (file and network events).
    pub const WATCH_ALL: u32 = 4;
}

/// Bits of values in the `WATCHED` map.
pub mod watch {
    /// Userspace marked it (LLM call seen, or configured exe/comm).
    pub const MARKED: u8 = 1;
    /// Inherited from a watched parent at fork.
    pub const INHERITED: u8 = 2;
    /// The kernel saw it send an HTTP request over TLS.
    pub const TLS_REQUEST: u8 = 4;
}

pub const MAX_CGROUPS: u32 = 8;

/// One cgroup v2 subtree of the scope: `id` is the cgroup's inode number, and
/// `level` its depth (root = 0) for `bpf_get_current_ancestor_cgroup_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CgroupScope {
    pub id: u64,
    pub level: u32,
    pub _pad: u32,
}

/// Kernel structure offsets learned from BTF by userspace and handed to the
/// programs as globals (aya has no CO-RE field relocations for Rust programs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_mm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub bprm_filename: u32,
    pub task_exit_code: u32,
    /// `struct sock_common`: remote port (network order) and family.
    pub sock_dport: u32,
    pub sock_family: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], Copy, with no implicit padding and no
    // pointers; any bit pattern is valid.
    unsafe impl aya::Pod for super::CgroupScope {}
    unsafe impl aya::Pod for super::KernelOffsets {}
}
