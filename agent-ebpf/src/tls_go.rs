//! Go `crypto/tls` plaintext. `Write` is copied at its entry: Go's HTTP
//! clients write on one goroutine and read on another, and a response may
//! be read (on another CPU) before the writer gets back from its `Write`,
//! so a copy on return could follow the answer it caused. A Go `Write`
//! sends all of `b` or fails the connection, so there is no retry to count
//! twice (the reason OpenSSL is copied on return). `Read` is copied on
//! return, when `n` is known: a uprobe on its entry saves the arguments and
//! a uprobe on each of its `RET`s copies what it read.
//!
//! Hooked (Go 1.17+ on amd64, register ABI `ABIInternal`; tested with
//! Debian 12's Go 1.19, normal and stripped builds):
//! - `func (c *Conn) Write(b []byte) (int, error)`: at entry RAX = `c`,
//!   RBX/RCX/RDI = `b`'s pointer/length/capacity; at `RET` RAX = `n`.
//! - `func (c *Conn) Read(b []byte) (int, error)`: the same.
//! - `func (c *Conn) Close() error`: RAX = `c` (the connection ends).
//! - `func (fd *internal/poll.FD) Read(p []byte) (int, error)`: RAX = `fd`,
//!   whose `Sysfd int` follows the 16-byte `fdMutex` (Go 1.9 to 1.24).
//!
//! Never uretprobes: they overwrite the return address on the goroutine's
//! stack, which Go copies elsewhere when the stack grows and walks when it
//! unwinds. Userspace (agent/src/capture/stacks/go.rs) places the return
//! probes on instruction boundaries where the frame is popped.
//!
//! Goroutines move between threads, even in the middle of a call, so
//! `Read`'s entry state is keyed by the goroutine (`g`, in R14 under the
//! register ABI) and the process, not by thread. A goroutine holds at most
//! two reads at once (TLS over TLS, e.g. through an HTTPS proxy: the inner
//! `Read` calls the outer one); an entry that repeats the top call (the
//! runtime restarts a function from its entry after growing the stack)
//! replaces it.
//!
//! Both hand the call to the copy program shared by every stack
//! (`tls::tls_copy`) through this thread's `TLS_ARGS` slot, saved just
//! before the tail call: the goroutine cannot move between the two.
//!
//! The connection is the `*Conn` pointer. Its socket fd is learned when a
//! `poll.FD` read runs under a `Read` on the same goroutine (the first one
//! of a connection always does), and remembered per connection for the
//! writes and the reads served from buffered data.

use agent_common::{counter, dir};
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};

use crate::{
    count, in_scope,
    tls::{self, ret, stack, TlsArgs},
};

#[repr(C)]
#[derive(Clone, Copy)]
struct GoKey {
    /// The goroutine: `g` in R14.
    g: u64,
    tgid: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct GoFrame {
    conn: u64,
    buf: u64,
    len: u64,
    fd: i32,
    dir: u8,
    _pad: [u8; 3],
}

const NO_FRAME: GoFrame = GoFrame {
    conn: 0,
    buf: 0,
    len: 0,
    fd: -1,
    dir: 0,
    _pad: [0; 3],
};

/// The TLS calls a goroutine is inside, innermost last.
#[repr(C)]
#[derive(Clone, Copy)]
struct GoCalls {
    depth: u32,
    _pad: u32,
    frames: [GoFrame; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ConnKey {
    conn: u64,
    tgid: u32,
    _pad: u32,
}

/// Calls in flight, by goroutine. LRU: a call whose return was never seen
/// (a panic unwound through it) does not hold its slot forever.
#[map]
static GO_CALLS: LruHashMap<GoKey, GoCalls> = LruHashMap::with_max_entries(16384, 0);

/// Socket fd of a connection, once learned.
#[map]
static GO_CONN_FD: LruHashMap<ConnKey, i32> = LruHashMap::with_max_entries(16384, 0);

/// Largest fd believed: anything above is not a `Sysfd`.
const MAX_FD: i64 = 1 << 24;

#[inline(always)]
fn regs(ctx: &ProbeContext) -> (u64, u64, u64, u64) {
    // SAFETY: a uprobe's context is the task's saved user registers.
    unsafe {
        let r = &*ctx.regs;
        (r.rax, r.rbx, r.rcx, r.r14)
    }
}

#[inline(always)]
fn enter(ctx: &ProbeContext, direction: u8) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !in_scope(tgid) {
        return 0;
    }
    let (conn, buf, len, g) = regs(ctx);
    let key = GoKey { g, tgid, _pad: 0 };
    let frame = GoFrame {
        conn,
        buf,
        len,
        fd: -1,
        dir: direction,
        _pad: [0; 3],
    };
    let Some(c) = GO_CALLS.get_ptr_mut(&key) else {
        let calls = GoCalls {
            depth: 1,
            _pad: 0,
            frames: [frame, NO_FRAME],
        };
        if GO_CALLS.insert(&key, &calls, 0).is_err() {
            count(counter::TLS_ARGS_FULL, 1);
        }
        return 0;
    };
    // SAFETY: this goroutine's entry; a goroutine runs on one thread at a
    // time, so nothing else writes it now.
    unsafe {
        let same = |f: &GoFrame| f.conn == conn && f.dir == direction;
        match (*c).depth {
            0 => {
                (*c).frames[0] = frame;
                (*c).depth = 1;
            }
            1 => {
                if same(&(*c).frames[0]) {
                    (*c).frames[0] = frame;
                } else {
                    (*c).frames[1] = frame;
                    (*c).depth = 2;
                }
            }
            _ => {
                if !same(&(*c).frames[1]) {
                    // Deeper than two: the outermost call is given up.
                    count(counter::TLS_ARGS_FULL, 1);
                    (*c).frames[0] = (*c).frames[1];
                }
                (*c).frames[1] = frame;
                (*c).depth = 2;
            }
        }
    }
    0
}

#[inline(always)]
fn leave(ctx: &ProbeContext, direction: u8) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let (n, _, _, g) = regs(ctx);
    let key = GoKey { g, tgid, _pad: 0 };
    let Some(c) = GO_CALLS.get_ptr_mut(&key) else {
        count(counter::TLS_NO_ENTRY, 1);
        return 0;
    };
    // SAFETY: as in `enter`.
    let frame = unsafe {
        match (*c).depth {
            1 => {
                let f = (*c).frames[0];
                let _ = GO_CALLS.remove(&key);
                f
            }
            2 => {
                (*c).depth = 1;
                (*c).frames[1]
            }
            _ => {
                count(counter::TLS_NO_ENTRY, 1);
                return 0;
            }
        }
    };
    if frame.dir != direction {
        // The top call is not this function's: a missed entry or return.
        count(counter::TLS_NO_ENTRY, 1);
        return 0;
    }
    let n = n as i64;
    if n <= 0 {
        return 0;
    }
    // `n` never exceeds `len(b)`; the bound keeps a bad value from reading
    // past the buffer.
    let total = if (n as u64) < frame.len {
        n as u64
    } else {
        frame.len
    };
    let fd = if frame.fd >= 0 {
        frame.fd
    } else {
        conn_fd(frame.conn, tgid)
    };
    let args = TlsArgs {
        len_ptr: total,
        fd,
        ..TlsArgs::new(stack::GO, frame.conn, frame.buf, direction, ret::KNOWN)
    };
    tls::save(pid_tgid, &args);
    tls::copy_saved(ctx, pid_tgid)
}

/// `(*Conn).Write` entry: `b` is what will be sent, all of it.
#[uprobe]
pub fn tls_go_write(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !in_scope(tgid) {
        return 0;
    }
    let (conn, buf, len, _) = regs(&ctx);
    if len == 0 {
        return 0;
    }
    let args = TlsArgs {
        len_ptr: len,
        fd: conn_fd(conn, tgid),
        ..TlsArgs::new(stack::GO, conn, buf, dir::WRITE, ret::KNOWN)
    };
    tls::save(pid_tgid, &args);
    tls::copy_saved(&ctx, pid_tgid)
}

/// The socket fd of a connection, when learned, else -1.
#[inline(always)]
fn conn_fd(conn: u64, tgid: u32) -> i32 {
    let ck = ConnKey {
        conn,
        tgid,
        _pad: 0,
    };
    // SAFETY: read-only lookup, copied out at once.
    unsafe { GO_CONN_FD.get(&ck) }.copied().unwrap_or(-1)
}

#[uprobe]
pub fn tls_go_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, dir::READ)
}

#[uprobe]
pub fn tls_go_read_ret(ctx: ProbeContext) -> u32 {
    leave(&ctx, dir::READ)
}

/// `(*Conn).Close`: the connection is gone.
#[uprobe]
pub fn tls_go_close(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !in_scope(tgid) {
        return 0;
    }
    let (conn, ..) = regs(&ctx);
    let ck = ConnKey {
        conn,
        tgid,
        _pad: 0,
    };
    // SAFETY: read-only lookup, copied out at once.
    let fd = unsafe { GO_CONN_FD.get(&ck) }.copied().unwrap_or(-1);
    let _ = GO_CONN_FD.remove(&ck);
    tls::close_with_fd(conn, fd)
}

/// `(*poll.FD).Read` entry: under a TLS `Read` of this goroutine, the fd it
/// reads is the connection's socket.
#[uprobe]
pub fn tls_go_fd_io(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let (pfd, _, _, g) = regs(&ctx);
    let key = GoKey { g, tgid, _pad: 0 };
    let Some(c) = GO_CALLS.get_ptr_mut(&key) else {
        return 0;
    };
    // SAFETY: as in `enter`.
    unsafe {
        let i = match (*c).depth {
            1 => 0,
            2 => 1,
            _ => return 0,
        };
        if (*c).frames[i].fd >= 0 {
            return 0;
        }
        let mut sysfd: i64 = -1;
        let rc = bpf_probe_read_user(
            (&raw mut sysfd).cast::<c_void>(),
            8,
            (pfd + 16) as *const c_void,
        );
        if rc != 0 {
            count(counter::READ_FAILED, 1);
            return 0;
        }
        if !(0..MAX_FD).contains(&sysfd) {
            return 0;
        }
        let fd = sysfd as i32;
        (*c).frames[i].fd = fd;
        let ck = ConnKey {
            conn: (*c).frames[i].conn,
            tgid,
            _pad: 0,
        };
        let _ = GO_CONN_FD.insert(&ck, &fd, 0);
    }
    0
}
