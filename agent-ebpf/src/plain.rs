//! Plain HTTP to local model servers (Ollama, vLLM, llama.cpp, LiteLLM):
//! the data of sockets whose remote port is one of `[capture]
//! plain_http_ports`, copied after each send and receive, and sent as the
//! same chunks as TLS plaintext (flag `PLAIN`), so userspace decodes them
//! on the same stream path.
//!
//! Hooked: the BTF tracepoints
//! - `sock:sock_send_length(struct sock *sk, int ret, int flags)`, at the
//!   end of `sock_sendmsg` (every `write`, `writev`, `send`, `sendto`,
//!   `sendmsg` on a socket), and
//! - `sock:sock_recv_length(struct sock *sk, int ret, int flags)`, at the
//!   end of `sock_recvmsg` (`read`, `readv`, `recv`, `recvfrom`, `recvmsg`).
//!
//! Tested on Linux 6.18 (x86-64).
//!
//! Why there: these fire only for socket I/O, never for file or pipe I/O,
//! and in the context of the process that did it, after the bytes moved
//! (`ret` is what really moved). They carry the socket, whose remote port
//! and cookie say whether and which connection to copy, but not the
//! buffer: that is read from the task's user registers (the syscall's
//! arguments, `bpf_task_pt_regs`), so the syscall number says where the
//! bytes are. This kernel refuses fentry on `tcp_sendmsg`/`tcp_recvmsg`,
//! and syscall tracepoints on read/write would cost every process on the
//! host ~1 µs per call; a BTF tracepoint is a direct call, and these
//! programs return after one map lookup for processes out of scope (one
//! more, of the port, for in-scope sockets to other ports). Per-process
//! uprobes on libc's send/recv would miss Go (no libc) and make a watched
//! process pay a uprobe on every file read and write.
//!
//! The remote port is read from the socket at each call, not remembered
//! from `connect`: a connection made before the daemon started, or before
//! the process entered the scope, is covered too, and a reused file
//! descriptor cannot be mistaken for the connection it once was. The
//! connection id is the socket cookie (never reused), tagged with
//! `PLAIN_CONN_TAG` so it never meets a TLS stream's id.
//!
//! A third BTF tracepoint, `sock:inet_sock_set_state`, ends the stream when
//! the client closes the connection ([`plain_sock_state`]).
//!
//! Only the client side is copied (the remote port is the server's): a
//! model server in the scope does not double every exchange. A receive of
//! 0 bytes (the server closed) closes the stream; a receive with
//! `MSG_PEEK` is not a read. Calls whose buffer the programs cannot find
//! (`sendfile`, `splice`, `sendmmsg`, io_uring) send no bytes, only a
//! truncated marker so userspace knows of the gap, and are counted.

use agent_common::{
    counter, dir, kind, tls_flags, RecordHeader, MAX_PLAIN_PORTS, PLAIN_CONN_TAG, TLS_CHUNK_DATA,
    TLS_CHUNK_FIXED,
};
use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_task_btf, bpf_get_socket_cookie, bpf_probe_read_user, bpf_task_pt_regs,
        },
    },
    macros::{btf_tracepoint, map},
    maps::{HashMap, PerCpuArray},
    programs::BtfTracePointContext,
};

use crate::{
    count, global_u32, in_scope, offsets, tls::mark_if_request, tls::TLS_SCRATCH, COUNTERS, EVENTS,
    SEQ, TLS_CAP,
};

/// Remote ports (host order) whose connections are copied → 1.
#[map]
static PLAIN_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PLAIN_PORTS, 0);

/// The iovec copy's position in the call and bytes skipped, and the
/// call's buffer, iovec array and count (see [`copy`]).
#[map]
static PLAIN_CURSOR: PerCpuArray<[u64; 5]> = PerCpuArray::with_max_entries(1, 0);

/// Chunks of one buffer at most (the largest cap, as `tls_copy`).
const MAX_CHUNKS: u32 = 16;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const MSG_PEEK: i32 = 2;

/// x86-64 syscall numbers whose buffer we know how to find.
const NR_READ: u64 = 0;
const NR_WRITE: u64 = 1;
const NR_READV: u64 = 19;
const NR_WRITEV: u64 = 20;
const NR_SENDTO: u64 = 44;
const NR_RECVFROM: u64 = 45;
const NR_SENDMSG: u64 = 46;
const NR_RECVMSG: u64 = 47;

/// Offsets in x86-64 `struct pt_regs` (its layout is the kernel's entry
/// ABI, fixed).
const REG_DX: u64 = 96;
const REG_SI: u64 = 104;
const REG_DI: u64 = 112;
const REG_ORIG_AX: u64 = 120;

/// `struct msghdr` (user ABI): `msg_iov` and `msg_iovlen`.
const MSGHDR_IOV: u64 = 16;
const MSGHDR_IOVLEN: u64 = 24;

/// iovecs of one call read at most, and one chunk (`TLS_CHUNK_DATA`) of
/// each; bytes past those are not copied (counted truncated). HTTP clients
/// write a head and a body, or a few pieces.
const MAX_IOV: u64 = 8;

#[btf_tracepoint(function = "sock_send_length")]
pub fn plain_sock_send(ctx: BtfTracePointContext) -> u32 {
    on_socket_io(&ctx, dir::WRITE)
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn plain_sock_recv(ctx: BtfTracePointContext) -> u32 {
    on_socket_io(&ctx, dir::READ)
}

/// TCP states entered by a local `close()` or `shutdown(SHUT_WR)`, in the
/// closing process: `FIN_WAIT1` (it closes first) and `LAST_ACK` (after
/// the peer did).
const TCP_FIN_WAIT1: i32 = 4;
const TCP_LAST_ACK: i32 = 9;

/// `sock:inet_sock_set_state(const struct sock *sk, int oldstate, int
/// newstate)`: a client that closes its connection to a model server ends
/// the stream at once (as `SSL_free` does for TLS). Without it, a response
/// the client stopped reading early (an SDK that closes a streamed
/// response after its last event, before the chunked terminator) would
/// end only at the idle timeout, after the tool calls it asked for had
/// already run. Runs on TCP state changes only, a few per connection.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn plain_sock_state(ctx: BtfTracePointContext) -> u32 {
    let newstate: i32 = ctx.arg(2);
    if newstate != TCP_FIN_WAIT1 && newstate != TCP_LAST_ACK {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !in_scope((pid_tgid >> 32) as u32) {
        return 0;
    }
    let sk: *mut c_void = ctx.arg(0);
    if !plain_port(sk as u64) {
        return 0;
    }
    // SAFETY: the helper takes the tracepoint's socket pointer.
    let conn = unsafe { bpf_get_socket_cookie(sk) } | PLAIN_CONN_TAG;
    marker(
        pid_tgid,
        conn,
        -1,
        dir::READ,
        0,
        tls_flags::CLOSE | tls_flags::LAST,
    );
    0
}

#[inline(always)]
fn kernel_u64(addr: u64) -> u64 {
    // SAFETY: the helper checks the kernel address.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.unwrap_or(u64::MAX)
}

#[inline(always)]
fn kernel_u16(addr: u64) -> u16 {
    // SAFETY: as above.
    unsafe { bpf_probe_read_kernel(addr as *const u16) }.unwrap_or(0)
}

#[inline(always)]
fn user_u64(addr: u64) -> Option<u64> {
    let mut v: u64 = 0;
    // SAFETY: the helper checks the user address; `v` is 8 bytes.
    let rc =
        unsafe { bpf_probe_read_user((&raw mut v).cast::<c_void>(), 8, addr as *const c_void) };
    (rc == 0).then_some(v)
}

/// Is `sk` an IPv4/IPv6 socket whose remote port is configured?
#[inline(always)]
fn plain_port(sk: u64) -> bool {
    let off = offsets();
    let family = kernel_u16(sk + u64::from(off.sock_family));
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    let port = u16::from_be(kernel_u16(sk + u64::from(off.sock_dport)));
    // SAFETY: read-only lookup.
    port != 0 && unsafe { PLAIN_PORTS.get(&port) }.is_some()
}

#[inline(always)]
fn on_socket_io(ctx: &BtfTracePointContext, direction: u8) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let ret: i32 = ctx.arg(1);
    if ret < 0 || !in_scope((pid_tgid >> 32) as u32) {
        return 0;
    }
    // Argument 0 is the BTF-typed `struct sock *` (its `sock_common` first).
    let sk: *mut c_void = ctx.arg(0);
    if !plain_port(sk as u64) {
        return 0;
    }
    if direction == dir::READ {
        let flags: i32 = ctx.arg(2);
        if flags & MSG_PEEK != 0 {
            return 0;
        }
    }
    // SAFETY: the helper takes the tracepoint's socket pointer.
    let conn = unsafe { bpf_get_socket_cookie(sk) } | PLAIN_CONN_TAG;
    // SAFETY: helpers on the current task; the registers are read through
    // the kernel-read helper.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    let nr = kernel_u64(regs + REG_ORIG_AX);
    let fd = kernel_u64(regs + REG_DI) as i32;
    if ret == 0 {
        if direction == dir::READ
            && (nr == NR_READ || nr == NR_RECVFROM || nr == NR_READV || nr == NR_RECVMSG)
        {
            marker(
                pid_tgid,
                conn,
                fd,
                direction,
                0,
                tls_flags::CLOSE | tls_flags::LAST,
            );
        }
        return 0;
    }
    let total = ret as u64;
    let arg1 = kernel_u64(regs + REG_SI);
    let simple = if direction == dir::WRITE {
        nr == NR_WRITE || nr == NR_SENDTO
    } else {
        nr == NR_READ || nr == NR_RECVFROM
    };
    let vector = if direction == dir::WRITE {
        nr == NR_WRITEV
    } else {
        nr == NR_READV
    };
    let msg = if direction == dir::WRITE {
        nr == NR_SENDMSG
    } else {
        nr == NR_RECVMSG
    };
    let (buf, iov, iovcnt) = if simple {
        (arg1, 0, 0)
    } else if vector {
        (0, arg1, kernel_u64(regs + REG_DX))
    } else if msg {
        match (user_u64(arg1 + MSGHDR_IOV), user_u64(arg1 + MSGHDR_IOVLEN)) {
            (Some(iov), Some(n)) => (0, iov, n),
            _ => {
                count(counter::READ_FAILED, 1);
                gap(pid_tgid, conn, fd, direction, total);
                return 0;
            }
        }
    } else {
        count(counter::PLAIN_UNSUPPORTED, 1);
        count(counter::PLAIN_UNSUPPORTED_BYTES, total);
        gap(pid_tgid, conn, fd, direction, total);
        return 0;
    };
    count(counter::PLAIN_CALLS, 1);
    if direction == dir::WRITE && simple {
        mark_if_request(pid_tgid, buf);
    }
    copy(pid_tgid, conn, fd, direction, total, buf, iov, iovcnt);
    0
}

/// A record with no data: `CLOSE`, or the `LAST | TRUNCATED` end of a
/// call whose bytes from `offset` on were not copied.
#[inline(always)]
fn marker(pid_tgid: u64, conn: u64, fd: i32, direction: u8, total: u64, flags: u8) {
    marker_at(pid_tgid, conn, fd, direction, 0, total, flags);
}

#[inline(always)]
fn marker_at(pid_tgid: u64, conn: u64, fd: i32, direction: u8, offset: u64, total: u64, flags: u8) {
    let Some(rec) = TLS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch value.
    unsafe {
        (*rec).hdr = RecordHeader {
            pid_tgid,
            ..crate::header(kind::TLS_CHUNK)
        };
        (*rec).conn = conn;
        (*rec).offset = offset as u32;
        (*rec).total_len = total as u32;
        (*rec).data_len = 0;
        (*rec).fd = fd;
        (*rec).dir = direction;
        (*rec).flags = flags | tls_flags::PLAIN;
    }
    crate::emit(rec.cast::<u8>(), TLS_CHUNK_FIXED);
}

/// A call none of whose `total` bytes are copied.
#[inline(always)]
fn gap(pid_tgid: u64, conn: u64, fd: i32, direction: u8, total: u64) {
    count(counter::PLAIN_TRUNCATED, 1);
    marker(
        pid_tgid,
        conn,
        fd,
        direction,
        total,
        tls_flags::LAST | tls_flags::TRUNCATED,
    );
}

/// Copies the `total` bytes one call moved, from `buf` (in chunks of
/// `TLS_CHUNK_DATA` up to `TLS_CAP`, as `tls_copy` does) or from the iovecs
/// at `iov` (one chunk of each of the first [`MAX_IOV`]; the rest of a
/// longer iovec is a hole the records' offsets show).
///
/// The iovec loop keeps its position in [`PLAIN_CURSOR`], not in
/// registers: iovec lengths are user data, every comparison on them would
/// fork the verifier's state, and states that differ in a register do not
/// merge. Read back from a map each step, the position is one unknown
/// value and the verifier walks each step once.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "one call's fields, kept in registers"
)]
fn copy(
    pid_tgid: u64,
    conn: u64,
    fd: i32,
    direction: u8,
    total: u64,
    buf: u64,
    iov: u64,
    iovcnt: u64,
) {
    let cap = u64::from(global_u32(&TLS_CAP));
    let to_copy = if total > cap { cap } else { total };
    let end_flags = if total > cap {
        tls_flags::LAST | tls_flags::TRUNCATED
    } else {
        tls_flags::LAST
    };
    let (Some(rec), Some(seq), Some(sent), Some(full), Some(lost), Some(read_failed), Some(cur)) = (
        TLS_SCRATCH.get_ptr_mut(0),
        SEQ.get_ptr_mut(0),
        COUNTERS.get_ptr_mut(counter::RECORDS),
        COUNTERS.get_ptr_mut(counter::RINGBUF_FULL),
        COUNTERS.get_ptr_mut(counter::PLAIN_BYTES_LOST),
        COUNTERS.get_ptr_mut(counter::READ_FAILED),
        PLAIN_CURSOR.get_ptr_mut(0),
    ) else {
        return;
    };
    // The syscalls decoded above reach here on separate verifier paths with
    // different known values; a round trip through the map makes them one,
    // so each copy loop below is verified once.
    // SAFETY: this CPU's cursor.
    let (buf, iov, iovcnt) = unsafe {
        core::ptr::write_volatile(&raw mut (*cur)[2], buf);
        core::ptr::write_volatile(&raw mut (*cur)[3], iov);
        core::ptr::write_volatile(&raw mut (*cur)[4], iovcnt);
        (
            core::ptr::read_volatile(&raw const (*cur)[2]),
            core::ptr::read_volatile(&raw const (*cur)[3]),
            core::ptr::read_volatile(&raw const (*cur)[4]),
        )
    };
    let call = Call {
        hdr: RecordHeader {
            kind: kind::TLS_CHUNK,
            // SAFETY: helpers with no arguments.
            cpu: unsafe { bpf_get_smp_processor_id() },
            seq: 0,
            // SAFETY: as above.
            ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
            pid_tgid,
        },
        conn,
        fd,
        direction,
        total,
        end_flags,
        rec,
        seq,
        sent,
        full,
        lost,
        read_failed,
    };
    // SAFETY: this CPU's cursor.
    unsafe {
        core::ptr::write_volatile(&raw mut (*cur)[0], 0);
        core::ptr::write_volatile(&raw mut (*cur)[1], 0);
    }
    if iov == 0 {
        for _ in 0..MAX_CHUNKS {
            // The position goes through the map too (see above).
            // SAFETY: as above.
            let off = unsafe { core::ptr::read_volatile(&raw const (*cur)[0]) };
            if off >= to_copy {
                break;
            }
            let rem = to_copy - off;
            let n: u64 = if rem >= TLS_CHUNK_DATA as u64 {
                TLS_CHUNK_DATA as u64
            } else {
                rem & (TLS_CHUNK_DATA as u64 - 1)
            };
            call.chunk(off, n, buf + off, u8::from(off + n >= to_copy));
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(&raw mut (*cur)[0], off + n) };
        }
        if total > cap {
            count(counter::PLAIN_TRUNCATED, 1);
        }
        return;
    }
    for i in 0..MAX_IOV {
        // SAFETY: as above.
        let off = unsafe { core::ptr::read_volatile(&raw const (*cur)[0]) };
        if off >= to_copy || i >= iovcnt {
            break;
        }
        let at = iov + 16 * i;
        let (Some(base), Some(len)) = (user_u64(at), user_u64(at + 8)) else {
            count(counter::READ_FAILED, 1);
            break;
        };
        let want = to_copy - off;
        let seg = if len < want { len } else { want };
        let n: u64 = if seg >= TLS_CHUNK_DATA as u64 {
            TLS_CHUNK_DATA as u64
        } else {
            seg & (TLS_CHUNK_DATA as u64 - 1)
        };
        call.chunk(off, n, base, 0);
        // SAFETY: as above.
        unsafe {
            let skipped = core::ptr::read_volatile(&raw const (*cur)[1]);
            core::ptr::write_volatile(&raw mut (*cur)[0], off + seg);
            core::ptr::write_volatile(&raw mut (*cur)[1], skipped + (seg - n));
        }
    }
    // SAFETY: as above.
    let (off, skipped) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*cur)[0]),
            core::ptr::read_volatile(&raw const (*cur)[1]),
        )
    };
    let cut = total > cap || skipped > 0 || off < to_copy;
    if cut {
        count(counter::PLAIN_TRUNCATED, 1);
    }
    // The call's end: past iovecs not read, or the cut tail, is a gap.
    marker_at(
        pid_tgid,
        conn,
        fd,
        direction,
        off,
        total,
        if cut {
            tls_flags::LAST | tls_flags::TRUNCATED
        } else {
            tls_flags::LAST
        },
    );
}

/// What every chunk of one call shares, and this CPU's scratch record,
/// sequence and counter slots.
struct Call {
    hdr: RecordHeader,
    conn: u64,
    fd: i32,
    direction: u8,
    total: u64,
    end_flags: u8,
    rec: *mut agent_common::TlsChunkRaw,
    seq: *mut u64,
    sent: *mut u64,
    full: *mut u64,
    lost: *mut u64,
    read_failed: *mut u64,
}

impl Call {
    /// Sends `n` (≤ `TLS_CHUNK_DATA`) bytes at `src`, at `off` in the
    /// call; `last` (0 or 1) marks the call's end.
    #[inline(always)]
    fn chunk(&self, off: u64, n: u64, src: u64, last: u8) {
        let rec = self.rec;
        // SAFETY: the pointers are this CPU's map slots; `n <=
        // TLS_CHUNK_DATA`, the size of the record's data array.
        unsafe {
            *self.seq += 1;
            (*rec).hdr = RecordHeader {
                seq: *self.seq,
                ..self.hdr
            };
            (*rec).conn = self.conn;
            (*rec).offset = off as u32;
            (*rec).total_len = self.total as u32;
            (*rec).data_len = n as u32;
            (*rec).fd = self.fd;
            (*rec).dir = self.direction;
            let rc = bpf_probe_read_user(
                (*rec).data.as_mut_ptr().cast::<c_void>(),
                n as u32,
                src as *const c_void,
            );
            let failed = u8::from(rc != 0);
            *self.read_failed += u64::from(failed);
            (*rec).flags =
                tls_flags::PLAIN | last * self.end_flags | failed * tls_flags::READ_FAILED;
            let bytes = core::slice::from_raw_parts(rec.cast::<u8>(), TLS_CHUNK_FIXED + n as usize);
            let ok = u64::from(EVENTS.output::<[u8]>(bytes, crate::RB_NO_WAKEUP).is_ok());
            *self.sent += ok;
            *self.full += 1 - ok;
            *self.lost += (1 - ok) * n;
        }
    }
}
