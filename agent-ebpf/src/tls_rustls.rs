//! rustls plaintext (aws-lc-rs provider): one TLS record at a time, where
//! aws-lc seals and opens it. The offsets come from a signature search in
//! the (stripped) program; see agent/src/capture/stacks/rustls.rs.
//!
//! Hooked (aws-lc's public AEAD API; tested with Codex CLI 0.171.0: rustls
//! 0.23.46, aws-lc-rs 1.18.1):
//! - `int EVP_AEAD_CTX_seal(const EVP_AEAD_CTX *ctx, uint8_t *out,
//!   size_t *out_len, size_t max_out_len, const uint8_t *nonce,
//!   size_t nonce_len, const uint8_t *in, size_t in_len, const uint8_t *ad,
//!   size_t ad_len)`: TLS 1.3 records written (entry: the plaintext is
//!   encrypted in place).
//! - `int EVP_AEAD_CTX_seal_scatter(ctx, out, out_tag, out_tag_len,
//!   max_out_tag_len, nonce, nonce_len, in, in_len, extra_in, extra_in_len,
//!   ad, ad_len)`: TLS 1.2 records written.
//! - `int EVP_AEAD_CTX_open(…same as seal…)`: records read (return: the
//!   plaintext is there only once the call succeeded).
//!
//! A call is a TLS record only when its additional data is a record header
//! of the right length: TLS 1.3 `17 03 03 <len>` with `len` the ciphertext
//! length, TLS 1.2 `seq(8) type 03 0x <len>`. Of TLS 1.3 records only the
//! inner content type `application_data` is sent (the type is the last
//! non-zero byte of the plaintext); a `close_notify` alert closes the
//! connection.
//!
//! Connections. A record key (`EVP_AEAD_CTX *`) serves one direction of one
//! connection; the HTTP parsers need both directions under one id. The id is
//! the kernel's socket cookie, learned on the same thread: rustls decrypts
//! records right after `read_tls` received them (tokio-rustls `read_io`,
//! rustls' `Stream`), so a record opened on a thread belongs to the socket
//! that thread last received from (tracepoint `sock:sock_recv_length`); it
//! encrypts records in `write` and sends them right after (`write_tls`), so
//! a key whose socket is not known yet is tied to the next socket its thread
//! sends on (`sock:sock_send_length`). Both are BTF tracepoints: this
//! kernel refuses fentry programs, and a raw tracepoint costs other
//! processes one call and a map lookup per socket send or receive, only
//! while a rustls process is watched. Records sealed before that are sent `UNLINKED` (with the
//! key as id) and a `LINK` record follows; userspace (streams) holds them
//! until then. A key's address may be reused by a later key: a key is
//! recognised by its nonce, whose first 8 bytes stay the same for all of its
//! records (TLS 1.3 and ChaCha20: IV xor a 64-bit sequence number below
//! 2^32; TLS 1.2 GCM: a fixed salt and a big-endian sequence number).
//!
//!
//! The socket programs run only for processes that userspace registered in
//! `RUSTLS_PROCS` (those with rustls probes), and are attached only once the
//! first such process is.

use agent_common::{counter, dir, kind, tls_flags, TLS_CHUNK_DATA, TLS_CHUNK_FIXED};
use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_socket_cookie, bpf_probe_read_user},
    },
    macros::{btf_tracepoint, map, uprobe, uretprobe},
    maps::{HashMap, LruHashMap},
    programs::{BtfTracePointContext, ProbeContext, RetProbeContext},
};

use crate::{
    count, in_scope,
    tls::{mark_if_request, TLS_SCRATCH},
};

/// A record key of one process.
#[repr(C)]
#[derive(Clone, Copy)]
struct KeyId {
    tgid: u32,
    _pad: u32,
    ctx: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct KeyState {
    /// First 8 bytes of the nonce of the first record seen with this key.
    nonce_head: u64,
    /// Socket cookie of its connection, 0 while unknown.
    conn: u64,
}

/// Saved at `EVP_AEAD_CTX_open` entry for its return.
#[repr(C)]
#[derive(Clone, Copy)]
struct OpenArgs {
    ctx: u64,
    conn: u64,
    out: u64,
    out_len: u64,
    /// 13 for TLS 1.3 (type inside the plaintext), else the TLS 1.2 type.
    record: u8,
    flags: u8,
    _pad: [u8; 6],
}

/// tgid → 1 for processes with rustls probes (written by userspace).
#[map]
static RUSTLS_PROCS: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

#[map]
static RUSTLS_KEYS: LruHashMap<KeyId, KeyState> = LruHashMap::with_max_entries(16384, 0);

/// Thread → socket cookie of its last TCP receive.
#[map]
static RUSTLS_RECV: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16384, 0);

/// Thread → a write key waiting for its socket.
#[map]
static RUSTLS_PENDING: LruHashMap<u64, KeyId> = LruHashMap::with_max_entries(16384, 0);

/// Thread → the open in progress (LRU: an entry whose return probe was
/// missed must not keep a slot forever).
#[map]
static RUSTLS_OPEN_ARGS: LruHashMap<u64, OpenArgs> = LruHashMap::with_max_entries(16384, 0);

const TAG_LEN: u64 = 16;
const NONCE_LEN: u64 = 12;
const CONTENT_ALERT: u8 = 0x15;
const CONTENT_APPLICATION_DATA: u8 = 0x17;
/// `OpenArgs::record` of a TLS 1.3 record.
const TLS13: u8 = 13;
/// Trailing bytes scanned for a TLS 1.3 record's content type.
const TAIL: usize = 64;

#[inline(always)]
fn read_user<T: Copy>(addr: u64, out: &mut T) -> bool {
    // SAFETY: the helper checks the user address; `out` is a local of
    // exactly `size_of::<T>()` bytes.
    unsafe {
        bpf_probe_read_user(
            (out as *mut T).cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
            addr as *const c_void,
        ) == 0
    }
}

/// Stack argument `n` (1 = the 7th argument) at a function's entry.
#[inline(always)]
fn stack_arg(ctx: &ProbeContext, n: u64) -> u64 {
    // SAFETY: `regs` is the probe's register set.
    let rsp = unsafe { (*ctx.regs).rsp };
    let mut v: u64 = 0;
    if read_user(rsp + 8 * n, &mut v) {
        v
    } else {
        0
    }
}

/// What a record's additional data says: `Some(13)` for TLS 1.3, the
/// content type for TLS 1.2, `None` when it is no TLS record header
/// matching `ct_len` (the ciphertext length, tag included).
#[inline(always)]
fn record_kind(ad: u64, ad_len: u64, ct_len: u64) -> Option<u8> {
    if ad_len == 5 {
        let mut h = [0u8; 5];
        if !read_user(ad, &mut h) {
            return None;
        }
        let len = u64::from(h[3]) << 8 | u64::from(h[4]);
        (h[0] == CONTENT_APPLICATION_DATA && h[1] == 3 && h[2] == 3 && len == ct_len)
            .then_some(TLS13)
    } else if ad_len == 13 {
        let mut h = [0u8; 13];
        if !read_user(ad, &mut h) {
            return None;
        }
        // TLS 1.2's header length is the plaintext's.
        let len = u64::from(h[11]) << 8 | u64::from(h[12]);
        (h[9] == 3 && h[10] >= 1 && h[10] <= 3 && len + TAG_LEN == ct_len).then_some(h[8])
    } else {
        None
    }
}

/// A TLS 1.3 inner plaintext of `len` bytes at `buf`: (content type,
/// content length), the type being its last non-zero byte.
#[inline(always)]
fn inner_type(buf: u64, len: u64) -> Option<(u8, u64)> {
    if len == 0 {
        return None;
    }
    let n = if len >= TAIL as u64 { TAIL as u64 } else { len };
    let Some(scratch) = TLS_SCRATCH.get_ptr_mut(0) else {
        return None;
    };
    // The chunk scratch is free until the record is sent; its data array
    // holds the tail for the scan.
    // SAFETY: this CPU's scratch value; `n <= TAIL` bytes into its array.
    let tail = unsafe { &mut (*scratch).data };
    // SAFETY: helper call; bounded size.
    let rc = unsafe {
        bpf_probe_read_user(
            tail.as_mut_ptr().cast::<c_void>(),
            (n & (TAIL as u64 * 2 - 1)) as u32,
            (buf + len - n) as *const c_void,
        )
    };
    if rc != 0 {
        count(counter::READ_FAILED, 1);
        return None;
    }
    let mut i = n;
    for _ in 0..TAIL {
        if i == 0 {
            break;
        }
        i -= 1;
        let b = *tail.get(i as usize)?;
        if b != 0 {
            return Some((b, len - n + i));
        }
    }
    count(counter::RUSTLS_PADDING_LOST, 1);
    None
}

/// Is the record at `buf` a `close_notify` alert?
#[inline(always)]
fn is_close_notify(buf: u64, len: u64) -> bool {
    let mut a = [0u8; 2];
    len == 2 && read_user(buf, &mut a) && a[1] == 0
}

/// The key's state, (re)started when `nonce_head` shows a new key at a
/// reused address.
#[inline(always)]
fn key_state(id: &KeyId, nonce: u64) -> Option<KeyState> {
    let mut head: u64 = 0;
    if !read_user(nonce, &mut head) {
        return None;
    }
    // SAFETY: read-only lookup; the value is copied out.
    if let Some(s) = unsafe { RUSTLS_KEYS.get(id) }.copied() {
        if s.nonce_head == head {
            return Some(s);
        }
    }
    let s = KeyState {
        nonce_head: head,
        conn: 0,
    };
    let _ = RUSTLS_KEYS.insert(id, &s, 0);
    Some(s)
}

/// Sends a `CLOSE` for `conn`.
#[inline(always)]
fn emit_close(conn: u64, flags: u8) {
    let Some(rec) = TLS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch value.
    unsafe {
        (*rec).hdr = crate::header(kind::TLS_CHUNK);
        (*rec).conn = conn;
        (*rec).offset = 0;
        (*rec).total_len = 0;
        (*rec).data_len = 0;
        (*rec).fd = -1;
        (*rec).dir = dir::READ;
        (*rec).flags = tls_flags::CLOSE | tls_flags::LAST | flags;
    }
    crate::emit(rec.cast::<u8>(), TLS_CHUNK_FIXED);
}

/// Sends one record's `len` plaintext bytes at `buf` as one TLS chunk. A
/// TLS record holds at most 16 KiB ([`TLS_CHUNK_DATA`]), so there is no
/// chunk loop here; the shared copy program of `tls.rs` (tail-called, with
/// per-thread call state) is for calls whose length only their return
/// tells, which a record's is not. The chunk layout and the counters are
/// the same.
#[inline(always)]
fn emit_record(pid_tgid: u64, conn: u64, direction: u8, buf: u64, len: u64, flags: u8) {
    if len == 0 {
        return;
    }
    count(counter::TLS_CALLS, 1);
    if direction == dir::WRITE {
        mark_if_request(pid_tgid, buf);
    }
    let cap = u64::from(crate::global_u32(&crate::TLS_CAP));
    let limit = if cap < TLS_CHUNK_DATA as u64 {
        cap
    } else {
        TLS_CHUNK_DATA as u64
    };
    let (n, truncated) = if len > limit {
        count(counter::TLS_TRUNCATED, 1);
        (limit, tls_flags::TRUNCATED)
    } else {
        (len, 0)
    };
    let Some(rec) = TLS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let n = n & (TLS_CHUNK_DATA as u64 * 2 - 1);
    if n > TLS_CHUNK_DATA as u64 {
        return;
    }
    // SAFETY: this CPU's scratch value; `n <= TLS_CHUNK_DATA`.
    unsafe {
        (*rec).hdr = crate::header(kind::TLS_CHUNK);
        (*rec).conn = conn;
        (*rec).offset = 0;
        (*rec).total_len = len as u32;
        (*rec).data_len = n as u32;
        (*rec).fd = -1;
        (*rec).dir = direction;
        let rc = bpf_probe_read_user(
            (*rec).data.as_mut_ptr().cast::<c_void>(),
            n as u32,
            buf as *const c_void,
        );
        let failed = if rc != 0 {
            count(counter::READ_FAILED, 1);
            tls_flags::READ_FAILED
        } else {
            0
        };
        (*rec).flags = tls_flags::LAST | truncated | failed | flags;
    }
    if !crate::emit(rec.cast::<u8>(), TLS_CHUNK_FIXED + n as usize) {
        count(counter::TLS_BYTES_LOST, n);
    }
}

/// A record about to be encrypted: `in_len` plaintext bytes at `inp`.
#[inline(always)]
fn seal(
    ctx: &ProbeContext,
    nonce: u64,
    nonce_len: u64,
    inp: u64,
    in_len: u64,
    ad: u64,
    ad_len: u64,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !in_scope(tgid) || nonce_len != NONCE_LEN {
        return;
    }
    let Some(record) = record_kind(ad, ad_len, in_len + TAG_LEN) else {
        return;
    };
    let (content, len) = if record == TLS13 {
        let Some(t) = inner_type(inp, in_len) else {
            return;
        };
        t
    } else {
        (record, in_len)
    };
    if content != CONTENT_APPLICATION_DATA && content != CONTENT_ALERT {
        return;
    }
    let id = KeyId {
        tgid,
        _pad: 0,
        ctx: ctx.arg(0).unwrap_or(0),
    };
    let Some(state) = key_state(&id, nonce) else {
        return;
    };
    let (conn, flags) = if state.conn != 0 {
        (state.conn, 0)
    } else {
        let _ = RUSTLS_PENDING.insert(&pid_tgid, &id, 0);
        (id.ctx, tls_flags::UNLINKED)
    };
    if content == CONTENT_ALERT {
        if is_close_notify(inp, len) {
            emit_close(conn, flags);
        }
        return;
    }
    emit_record(pid_tgid, conn, dir::WRITE, inp, len, flags);
}

#[uprobe]
pub fn tls_rustls_seal(ctx: ProbeContext) -> u32 {
    let nonce: u64 = ctx.arg(4).unwrap_or(0);
    let nonce_len: u64 = ctx.arg(5).unwrap_or(0);
    seal(
        &ctx,
        nonce,
        nonce_len,
        stack_arg(&ctx, 1),
        stack_arg(&ctx, 2),
        stack_arg(&ctx, 3),
        stack_arg(&ctx, 4),
    );
    0
}

#[uprobe]
pub fn tls_rustls_seal_scatter(ctx: ProbeContext) -> u32 {
    let nonce: u64 = ctx.arg(5).unwrap_or(0);
    // extra_in (stack 4, 5) is empty for TLS records; its length is added
    // to nothing, so a non-empty one is not a record we know.
    if stack_arg(&ctx, 5) != 0 {
        return 0;
    }
    seal(
        &ctx,
        nonce,
        stack_arg(&ctx, 1),
        stack_arg(&ctx, 2),
        stack_arg(&ctx, 3),
        stack_arg(&ctx, 6),
        stack_arg(&ctx, 7),
    );
    0
}

#[uprobe]
pub fn tls_rustls_open(ctx: ProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !in_scope(tgid) {
        return 0;
    }
    let nonce: u64 = ctx.arg(4).unwrap_or(0);
    let nonce_len: u64 = ctx.arg(5).unwrap_or(0);
    if nonce_len != NONCE_LEN {
        return 0;
    }
    let in_len = stack_arg(&ctx, 2);
    let Some(record) = record_kind(stack_arg(&ctx, 3), stack_arg(&ctx, 4), in_len) else {
        return 0;
    };
    if record != TLS13 && record != CONTENT_APPLICATION_DATA && record != CONTENT_ALERT {
        return 0;
    }
    let id = KeyId {
        tgid,
        _pad: 0,
        ctx: ctx.arg(0).unwrap_or(0),
    };
    let Some(state) = key_state(&id, nonce) else {
        return 0;
    };
    // SAFETY: read-only lookup.
    let recv = unsafe { RUSTLS_RECV.get(&pid_tgid) }.copied().unwrap_or(0);
    let (conn, flags) = if recv != 0 {
        if state.conn != recv {
            let s = KeyState {
                conn: recv,
                ..state
            };
            let _ = RUSTLS_KEYS.insert(&id, &s, 0);
        }
        (recv, 0)
    } else if state.conn != 0 {
        (state.conn, 0)
    } else {
        count(counter::RUSTLS_UNLINKED_READS, 1);
        (id.ctx, tls_flags::UNLINKED)
    };
    let args = OpenArgs {
        ctx: id.ctx,
        conn,
        out: ctx.arg(1).unwrap_or(0),
        out_len: ctx.arg(2).unwrap_or(0),
        record,
        flags,
        _pad: [0; 6],
    };
    if RUSTLS_OPEN_ARGS.insert(&pid_tgid, &args, 0).is_err() {
        count(counter::TLS_ARGS_FULL, 1);
    }
    0
}

#[uretprobe]
pub fn tls_rustls_open_ret(ctx: RetProbeContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: read-only lookup; the value is copied out at once.
    let Some(args) = (unsafe { RUSTLS_OPEN_ARGS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = RUSTLS_OPEN_ARGS.remove(&pid_tgid);
    let ret: i32 = ctx.ret();
    if ret != 1 {
        return 0;
    }
    let mut out_len: u64 = 0;
    if !read_user(args.out_len, &mut out_len) {
        count(counter::READ_FAILED, 1);
        return 0;
    }
    let (content, len) = if args.record == TLS13 {
        let Some(t) = inner_type(args.out, out_len) else {
            return 0;
        };
        t
    } else {
        (args.record, out_len)
    };
    if content == CONTENT_ALERT {
        if is_close_notify(args.out, len) {
            emit_close(args.conn, args.flags);
        }
        return 0;
    }
    if content == CONTENT_APPLICATION_DATA {
        emit_record(pid_tgid, args.conn, dir::READ, args.out, len, args.flags);
    }
    0
}

/// `sock:sock_recv_length(struct sock *sk, int ret, int flags)`, after a
/// socket receive: remembers the socket a rustls thread last read from.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn tls_rustls_sock_recv(ctx: BtfTracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: read-only lookup.
    if unsafe { RUSTLS_PROCS.get(&((pid_tgid >> 32) as u32)) }.is_none() {
        return 0;
    }
    // Argument 1 of the tracepoint is an int.
    let ret: i32 = ctx.arg(1);
    if ret <= 0 {
        return 0;
    }
    // Argument 0 is the BTF-typed `struct sock *`.
    let sk: *mut c_void = ctx.arg(0);
    // SAFETY: as above; the helper takes the socket pointer.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let _ = RUSTLS_RECV.insert(&pid_tgid, &cookie, 0);
    0
}

/// `sock:sock_send_length(struct sock *sk, int ret, int flags)`, after a
/// socket send: ties a write key sealed on this thread to that socket.
#[btf_tracepoint(function = "sock_send_length")]
pub fn tls_rustls_sock_send(ctx: BtfTracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: read-only lookups.
    if unsafe { RUSTLS_PROCS.get(&((pid_tgid >> 32) as u32)) }.is_none() {
        return 0;
    }
    // SAFETY: as above.
    let Some(id) = (unsafe { RUSTLS_PENDING.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = RUSTLS_PENDING.remove(&pid_tgid);
    // Argument 0 is the BTF-typed `struct sock *`.
    let sk: *mut c_void = ctx.arg(0);
    // SAFETY: as above; the helper takes the socket pointer.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    let Some(state) = RUSTLS_KEYS.get_ptr_mut(&id) else {
        return 0;
    };
    // SAFETY: a map value of this key; a concurrent writer at worst writes
    // the same connection.
    unsafe { (*state).conn = cookie };
    count(counter::RUSTLS_LINKS, 1);
    let Some(rec) = TLS_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's scratch value.
    unsafe {
        (*rec).hdr = crate::header(kind::TLS_CHUNK);
        (*rec).conn = cookie;
        (*rec).offset = 0;
        (*rec).total_len = 8;
        (*rec).data_len = 8;
        (*rec).fd = -1;
        (*rec).dir = dir::WRITE;
        (*rec).flags = tls_flags::LINK | tls_flags::LAST;
        (&mut (*rec).data)[..8].copy_from_slice(&id.ctx.to_ne_bytes());
    }
    crate::emit(rec.cast::<u8>(), TLS_CHUNK_FIXED + 8);
    0
}
