//! OpenSSL plaintext: uprobes on entry save the arguments, uretprobes copy
//! what the call really moved.
//!
//! Hooked (OpenSSL 1.1.1 and 3.x; tested with Debian's 3.0 libssl.so.3 and
//! node 20's statically linked 3.0):
//! - `int SSL_write(SSL *ssl, const void *buf, int num)`
//! - `int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)`
//! - `int SSL_read(SSL *ssl, void *buf, int num)`
//! - `int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)`
//!
//! OpenSSL 3's `SSL_write` does not call `SSL_write_ex` (nor read likewise),
//! and python's `_ssl` calls only the `_ex` variants, so all four are hooked.
//! Plaintext is copied on return: node retries a write after WANT_READ, and
//! an entry copy would record it several times.
//!
//! One call's plaintext goes out in chunks of `TLS_CHUNK_DATA` bytes up to
//! `TLS_CAP`; bytes past the cap are not copied and the call is marked
//! truncated. Each record carries only the bytes it holds.

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
    macros::{map, uprobe, uretprobe},
    maps::{HashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
};

use crate::{count, global_u32, in_scope, COUNTERS, EVENTS, SEQ, TLS_CAP, WATCHED};

/// Arguments saved at entry, keyed by thread.
#[repr(C)]
#[derive(Clone, Copy)]
struct TlsArgs {
    ssl: u64,
    buf: u64,
    /// `size_t *written` / `*readbytes` of the `_ex` variants, else 0.
    len_ptr: u64,
    dir: u8,
    ex: u8,
    _pad: [u8; 6],
}

#[map]
static TLS_ARGS: HashMap<u64, TlsArgs> = HashMap::with_max_entries(16384, 0);

/// Scratch space for one chunk: too large for the 512-byte BPF stack.
#[map]
pub(crate) static TLS_SCRATCH: PerCpuArray<TlsChunkRaw> = PerCpuArray::with_max_entries(1, 0);

/// Most chunks one call may produce: bounds the copy loop for the verifier
/// (256 KiB, the largest cap userspace accepts; the verifier walks each
/// iteration, and 64 of them exceed its budget).
const MAX_CHUNKS: u32 = 16;

#[inline(always)]
fn save_args(ctx: &ProbeContext, direction: u8, ex: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !in_scope((pid_tgid >> 32) as u32) {
        return 0;
    }
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let len_ptr: u64 = if ex { ctx.arg(3).unwrap_or(0) } else { 0 };
    let args = TlsArgs {
        ssl,
        buf,
        len_ptr,
        dir: direction,
        ex: u8::from(ex),
        _pad: [0; 6],
    };
    if TLS_ARGS.insert(&pid_tgid, &args, 0).is_err() {
        count(counter::TLS_ARGS_FULL, 1);
    }
    0
}

#[inline(always)]
fn capture(ctx: &RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: read-only lookup; the value is copied out at once.
    let Some(args) = (unsafe { TLS_ARGS.get(&pid_tgid) }).copied() else {
        count(counter::TLS_NO_ENTRY, 1);
        return 0;
    };
    let _ = TLS_ARGS.remove(&pid_tgid);

    // Both variants return an int; the upper half of the register is junk.
    let ret: i32 = ctx.ret();
    let total: u64 = if args.ex != 0 {
        if ret != 1 || args.len_ptr == 0 {
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
    } else {
        if ret <= 0 {
            return 0;
        }
        ret as u64
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
            (*rec).conn = args.ssl;
            (*rec).offset = off as u32;
            (*rec).total_len = total as u32;
            (*rec).data_len = n as u32;
            (*rec).fd = -1;
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

/// `void SSL_free(SSL *ssl)`: tells userspace the connection is gone, so a
/// response that ends with the connection is finished at once.
#[uprobe]
pub fn tls_openssl_ssl_free(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !in_scope((pid_tgid >> 32) as u32) {
        return 0;
    }
    let Some(rec) = TLS_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: `rec` is this CPU's scratch value.
    unsafe {
        (*rec).hdr = crate::header(kind::TLS_CHUNK);
        (*rec).conn = ctx.arg(0).unwrap_or(0);
        (*rec).offset = 0;
        (*rec).total_len = 0;
        (*rec).data_len = 0;
        (*rec).fd = -1;
        (*rec).dir = dir::READ;
        (*rec).flags = tls_flags::CLOSE | tls_flags::LAST;
    }
    crate::emit(rec.cast::<u8>(), TLS_CHUNK_FIXED);
    0
}

#[uprobe]
pub fn tls_openssl_ssl_write(ctx: ProbeContext) -> u32 {
    save_args(&ctx, dir::WRITE, false)
}

#[uretprobe]
pub fn tls_openssl_ssl_write_ret(ctx: RetProbeContext) -> u32 {
    capture(&ctx)
}

#[uprobe]
pub fn tls_openssl_ssl_write_ex(ctx: ProbeContext) -> u32 {
    save_args(&ctx, dir::WRITE, true)
}

#[uretprobe]
pub fn tls_openssl_ssl_write_ex_ret(ctx: RetProbeContext) -> u32 {
    capture(&ctx)
}

#[uprobe]
pub fn tls_openssl_ssl_read(ctx: ProbeContext) -> u32 {
    save_args(&ctx, dir::READ, false)
}

#[uretprobe]
pub fn tls_openssl_ssl_read_ret(ctx: RetProbeContext) -> u32 {
    capture(&ctx)
}

#[uprobe]
pub fn tls_openssl_ssl_read_ex(ctx: ProbeContext) -> u32 {
    save_args(&ctx, dir::READ, true)
}

#[uretprobe]
pub fn tls_openssl_ssl_read_ex_ret(ctx: RetProbeContext) -> u32 {
    capture(&ctx)
}
