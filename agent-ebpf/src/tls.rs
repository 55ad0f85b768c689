//! TLS plaintext, shared by every stack: an entry uprobe saves the call's
//! arguments per thread, a uretprobe copies what the call really moved.
//!
//! The stacks differ only in how an entry finds its connection and buffer
//! and in how a return says how many bytes moved ([`ret`]); the per-stack
//! files (`tls_openssl`, `tls_gnutls`, `tls_nss`) hold thin programs over
//! [`save`], [`finish`] and [`close`].
//!
//! Every return program ends in a tail call to one program, [`tls_copy`],
//! which holds the chunked copy: the verifier walks each iteration of that
//! loop (about two seconds of load time per program that contains it), so
//! it is verified once, not once per hooked function.
//!
//! Plaintext is copied on return: node retries a write after WANT_READ, and
//! an entry copy would record it several times. One call's plaintext goes out
//! in chunks of `TLS_CHUNK_DATA` bytes up to `TLS_CAP`; bytes past the cap are
//! not copied and the call is marked truncated. Each record carries only the
//! bytes it holds.

use agent_common::{
    counter, dir, kind, tls_flags, watch, RecordHeader, TlsChunkRaw, TLS_CHUNK_DATA,
    TLS_CHUNK_FIXED,
};
use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
        generated::bpf_probe_read_user,
    },
    macros::{map, uretprobe},
    maps::{HashMap, PerCpuArray, ProgramArray},
    programs::RetProbeContext,
};

use crate::{count, global_u32, in_scope, COUNTERS, EVENTS, SEQ, TLS_CAP, WATCHED};

/// How a hooked function's return value says how many bytes it moved.
pub(crate) mod ret {
    /// `int`: the byte count, or ≤ 0 (`SSL_write`, `SSL_read`, NSPR's
    /// `PRInt32`). The upper half of the register is junk.
    pub const INT: u8 = 0;
    /// `int` 1 on success, the count in `*len_ptr` (`SSL_write_ex`).
    pub const EX: u8 = 1;
    /// `ssize_t`: the byte count, or a negative GnuTLS error. After
    /// `GNUTLS_E_AGAIN`/`GNUTLS_E_INTERRUPTED` a write is still pending: the
    /// caller must call again with the same data or with `NULL, 0`.
    pub const GNUTLS: u8 = 2;
    /// Known at entry: the count is `len_ptr` itself (Go's `Write`, copied
    /// at its entry with all of `b`; see `tls_go`).
    pub const KNOWN: u8 = 3;
}

/// Which stack saved a call: a return probe takes only its own stack's
/// entries, so the return of an NSPR call that its entry filtered out never
/// consumes another stack's entry left on the thread.
pub(crate) mod stack {
    pub const OPENSSL: u8 = 1;
    pub const GNUTLS: u8 = 2;
    pub const NSS: u8 = 3;
    pub const GO: u8 = 4;
}

const GNUTLS_E_AGAIN: i64 = -28;
const GNUTLS_E_INTERRUPTED: i64 = -52;

/// Arguments saved at entry, keyed by thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct TlsArgs {
    /// The connection object (`SSL *`, `gnutls_session_t`, `PRFileDesc *`).
    pub conn: u64,
    pub buf: u64,
    /// `size_t *written` / `*readbytes` of the `_ex` variants, else 0.
    pub len_ptr: u64,
    pub dir: u8,
    /// One of [`ret`].
    pub ret: u8,
    /// A GnuTLS write that returned `E_AGAIN`: kept for its retry.
    pub pending: u8,
    /// One of [`stack`].
    pub stack: u8,
    /// The socket, when the stack knows it (Go), else -1.
    pub fd: i32,
}

impl TlsArgs {
    #[inline(always)]
    pub fn new(stack: u8, conn: u64, buf: u64, dir: u8, ret: u8) -> Self {
        Self {
            conn,
            buf,
            len_ptr: 0,
            dir,
            ret,
            pending: 0,
            stack,
            fd: -1,
        }
    }
}

#[map]
pub(crate) static TLS_ARGS: HashMap<u64, TlsArgs> = HashMap::with_max_entries(16384, 0);

/// Slot 0: [`tls_copy`], set by userspace after load.
#[map]
static TLS_COPY: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Scratch space for one chunk: too large for the 512-byte BPF stack.
#[map]
pub(crate) static TLS_SCRATCH: PerCpuArray<TlsChunkRaw> = PerCpuArray::with_max_entries(1, 0);

/// Most chunks one call may produce: bounds the copy loop for the verifier
/// (256 KiB, the largest cap userspace accepts; the verifier walks each
/// iteration, and 64 of them exceed its budget).
const MAX_CHUNKS: u32 = 16;

/// The current `pid_tgid` when the process is in the capture scope.
#[inline(always)]
pub(crate) fn current_in_scope() -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    in_scope((pid_tgid >> 32) as u32).then_some(pid_tgid)
}

/// Saves a call's arguments for its return probe.
#[inline(always)]
pub(crate) fn save(pid_tgid: u64, args: &TlsArgs) -> u32 {
    if TLS_ARGS.insert(&pid_tgid, args, 0).is_err() {
        count(counter::TLS_ARGS_FULL, 1);
    }
    0
}

/// What a return probe does when no entry was saved for this thread.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Count it (`tls_no_entry`): the entry was missed or the map was full.
    Count,
    /// Expected, not counted: the entry filtered the call out (NSPR I/O on
    /// a file or a plain socket), or the return is the outer one of a
    /// wrapper whose inner call was captured already (`gnutls_record_send`
    /// tail-calls `gnutls_record_send2`: both return through one address).
    Expected,
}

/// The return probe of every stack: when this thread's saved call is one
/// of `stack`'s, hands over to [`tls_copy`].
#[inline(always)]
pub(crate) fn finish(ctx: &RetProbeContext, stack: u8, missing: Missing) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: read-only lookup.
    let mine = unsafe { TLS_ARGS.get(&pid_tgid) }.is_some_and(|a| a.stack == stack);
    if !mine {
        if missing == Missing::Count {
            count(counter::TLS_NO_ENTRY, 1);
        }
        return 0;
    }
    // SAFETY: the context is this program's; on success this never returns.
    unsafe { TLS_COPY.tail_call(ctx, 0) };
    // Only reached when the slot is empty: the call's plaintext is lost.
    count(counter::TLS_TAIL_CALL_FAILED, 1);
    let _ = TLS_ARGS.remove(&pid_tgid);
    0
}

/// Hands this thread's saved call to [`tls_copy`] now (Go's programs, which
/// keep their own state per goroutine and save a call just before).
#[inline(always)]
pub(crate) fn copy_saved<C: aya_ebpf::EbpfContext>(ctx: &C, pid_tgid: u64) -> u32 {
    // SAFETY: the context is this program's; on success this never returns.
    unsafe { TLS_COPY.tail_call(ctx, 0) };
    count(counter::TLS_TAIL_CALL_FAILED, 1);
    let _ = TLS_ARGS.remove(&pid_tgid);
    0
}

/// Copies what the saved call of this thread moved (tail-called by the
/// return program of every hooked function).
#[uretprobe]
pub fn tls_copy(ctx: RetProbeContext) -> u32 {
    capture(&ctx)
}

#[inline(always)]
fn capture(ctx: &RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: read-only lookup; the value is copied out at once.
    let Some(args) = (unsafe { TLS_ARGS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    if args.pending != 0 {
        // The outer return of an interrupted wrapped write: the inner one
        // already kept it for the retry.
        return 0;
    }

    let total: u64 = match args.ret {
        ret::EX => {
            let r: i32 = ctx.ret();
            let _ = TLS_ARGS.remove(&pid_tgid);
            if r != 1 || args.len_ptr == 0 {
                return 0;
            }
            let mut moved: u64 = 0;
            // SAFETY: reads a size_t from the caller's memory through the helper.
            let rc = unsafe {
                bpf_probe_read_user(
                    (&raw mut moved).cast::<c_void>(),
                    8,
                    args.len_ptr as *const c_void,
                )
            };
            if rc != 0 {
                count(counter::READ_FAILED, 1);
                return 0;
            }
            moved
        }
        ret::KNOWN => {
            let _ = TLS_ARGS.remove(&pid_tgid);
            args.len_ptr
        }
        ret::GNUTLS => {
            let r: i64 = ctx.ret();
            if args.dir == dir::WRITE && (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
                let kept = TlsArgs { pending: 1, ..args };
                let _ = TLS_ARGS.insert(&pid_tgid, &kept, 0);
                return 0;
            }
            let _ = TLS_ARGS.remove(&pid_tgid);
            if r <= 0 {
                return 0;
            }
            r as u64
        }
        _ => {
            let r: i32 = ctx.ret();
            let _ = TLS_ARGS.remove(&pid_tgid);
            if r <= 0 {
                return 0;
            }
            r as u64
        }
    };
    if total == 0 {
        return 0;
    }
    count(counter::TLS_CALLS, 1);

    let cap = u64::from(global_u32(&TLS_CAP));
    let to_copy = if total > cap { cap } else { total };
    let truncated = total > cap;
    if truncated {
        count(counter::TLS_TRUNCATED, 1);
    }

    // A process that sends an HTTP request over TLS is watched from now on:
    // its tools' effects may follow the answer within microseconds, long
    // before userspace has parsed anything.
    if args.dir == dir::WRITE {
        mark_if_request(pid_tgid, args.buf);
    }

    let Some(rec) = TLS_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let (Some(seq), Some(sent), Some(full), Some(lost), Some(read_failed)) = (
        SEQ.get_ptr_mut(0),
        COUNTERS.get_ptr_mut(counter::RECORDS),
        COUNTERS.get_ptr_mut(counter::RINGBUF_FULL),
        COUNTERS.get_ptr_mut(counter::TLS_BYTES_LOST),
        COUNTERS.get_ptr_mut(counter::READ_FAILED),
    ) else {
        return 0;
    };
    // The sequence number is taken per chunk below, so it has no gaps.
    let hdr = RecordHeader {
        kind: kind::TLS_CHUNK,
        // SAFETY: helpers with no arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        seq: 0,
        // SAFETY: as above.
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid_tgid,
    };
    let trunc_flag = if truncated { tls_flags::TRUNCATED } else { 0 };
    // The loop body is kept free of branches but the chunk-size choice: the
    // verifier walks every iteration, and each branch would double its work.
    let mut off: u64 = 0;
    for _ in 0..MAX_CHUNKS {
        if off >= to_copy {
            break;
        }
        let rem = to_copy - off;
        let n: u64 = if rem >= TLS_CHUNK_DATA as u64 {
            TLS_CHUNK_DATA as u64
        } else {
            rem & (TLS_CHUNK_DATA as u64 - 1)
        };
        let last = u8::from(off + n >= to_copy);
        // SAFETY: `rec` is this CPU's scratch value and the counter and
        // sequence pointers are this CPU's slots; `n <= TLS_CHUNK_DATA`.
        unsafe {
            *seq += 1;
            (*rec).hdr = RecordHeader { seq: *seq, ..hdr };
            (*rec).conn = args.conn;
            (*rec).offset = off as u32;
            (*rec).total_len = total as u32;
            (*rec).data_len = n as u32;
            (*rec).fd = args.fd;
            (*rec).dir = args.dir;
            let rc = bpf_probe_read_user(
                (*rec).data.as_mut_ptr().cast::<c_void>(),
                n as u32,
                (args.buf + off) as *const c_void,
            );
            let failed = u8::from(rc != 0);
            *read_failed += u64::from(failed);
            (*rec).flags = last * (tls_flags::LAST | trunc_flag) | failed * tls_flags::READ_FAILED;
            let bytes = core::slice::from_raw_parts(rec.cast::<u8>(), TLS_CHUNK_FIXED + n as usize);
            let ok = u64::from(EVENTS.output::<[u8]>(bytes, crate::RB_NO_WAKEUP).is_ok());
            *sent += ok;
            *full += 1 - ok;
            // Lost plaintext is counted per byte so userspace can say how much.
            *lost += (1 - ok) * n;
        }
        off += n;
    }
    0
}

/// Marks the process watched when `buf` starts like an HTTP request that
/// carries a body (POST) or the HTTP/2 preface.
#[inline(always)]
pub(crate) fn mark_if_request(pid_tgid: u64, buf: u64) {
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: read-only lookup.
    if unsafe { WATCHED.get(&tgid) }.is_some() {
        return;
    }
    let mut head = [0u8; 4];
    // SAFETY: reads 4 bytes of the caller's buffer through the helper.
    let rc =
        unsafe { bpf_probe_read_user(head.as_mut_ptr().cast::<c_void>(), 4, buf as *const c_void) };
    if rc != 0 {
        return;
    }
    if &head == b"POST" || &head == b"PRI " {
        let _ = WATCHED.insert(&tgid, &watch::TLS_REQUEST, 0);
    }
}

/// Tells userspace that connection `conn` of the current process is gone
/// (`SSL_free`, `gnutls_deinit`, `PR_Close`), so a response that ends with
/// the connection is finished at once.
#[inline(always)]
pub(crate) fn close(conn: u64) -> u32 {
    close_with_fd(conn, -1)
}

/// [`close`], with the connection's socket when known.
#[inline(always)]
pub(crate) fn close_with_fd(conn: u64, fd: i32) -> u32 {
    let Some(rec) = TLS_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: `rec` is this CPU's scratch value.
    unsafe {
        (*rec).hdr = crate::header(kind::TLS_CHUNK);
        (*rec).conn = conn;
        (*rec).offset = 0;
        (*rec).total_len = 0;
        (*rec).data_len = 0;
        (*rec).fd = fd;
        (*rec).dir = dir::READ;
        (*rec).flags = tls_flags::CLOSE | tls_flags::LAST;
    }
    crate::emit(rec.cast::<u8>(), TLS_CHUNK_FIXED);
    0
}
