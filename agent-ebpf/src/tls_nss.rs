//! NSS plaintext (the shared entry/return logic is in `tls`).
//!
//! NSS has no I/O functions of its own: an application reads and writes an
//! SSL socket through NSPR's generic calls, which dispatch to the top
//! layer's methods (`fd->methods->write(fd, …)`), and NSS's SSL layer
//! (`ssl_Write`, `ssl_Send`, … in libssl3.so) is static, not exported. So
//! the hooks are NSPR's, in libnspr4.so:
//! - `PRInt32 PR_Write(PRFileDesc *fd, const void *buf, PRInt32 amount)`
//! - `PRInt32 PR_Send(PRFileDesc *fd, const void *buf, PRInt32 amount, PRIntn flags, PRIntervalTime timeout)`
//! - `PRInt32 PR_Read(PRFileDesc *fd, void *buf, PRInt32 amount)`
//! - `PRInt32 PR_Recv(PRFileDesc *fd, void *buf, PRInt32 amount, PRIntn flags, PRIntervalTime timeout)`
//! - `PRStatus PR_Close(PRFileDesc *fd)`: the end of the connection
//!
//! and one in libssl3.so:
//! - `PRFileDesc *SSL_ImportFD(PRFileDesc *model, PRFileDesc *fd)`, whose
//!   return is the new SSL socket: its top layer's `identity` is the SSL
//!   layer's identity in this process (`ssl_layer_id`, handed out at run
//!   time by `PR_GetUniqueIdentity`, so not known in advance).
//!
//! Tested with Debian 12's NSS 3.87 / NSPR 4.35 (tstclnt, a client that
//! pushes its own layer over SSL as Firefox does).
//!
//! `PR_*` serve every NSPR descriptor — files, pipes, plain sockets — so an
//! entry copies nothing unless the descriptor's layer stack holds the SSL
//! layer: the walk down `fd->lower` compares each layer's `identity` with
//! the one learned at `SSL_ImportFD` (what NSS itself does to find its
//! layer, `PR_GetIdentitiesLayer`). Tools that copy every `PR_Write` and
//! `PR_Read` record the application's files and plain sockets as TLS
//! plaintext, and a peer's response echoed to a terminal as a second copy.
//!
//! A process whose last `SSL_ImportFD` came before aitrail attached to it
//! (whole-host mode, attached at its first connect) has no identity learned
//! yet; there the SSL layer is recognised by its shape: a layered
//! descriptor (`methods->file_type == PR_DESC_LAYERED`) above another,
//! whose private data is NSS's `sslSocket`, which starts with a pointer back
//! to its layer (`ss->fd`, set at import and refreshed on every lookup; it
//! may still name the top of the stack just after another layer was pushed
//! on top). The identity learned so is kept and counted
//! (`nss_ssl_layer_by_shape`).
//!
//! `PR_Recv(…, PR_MSG_PEEK, …)` leaves the bytes in place for the next
//! read (Firefox's liveness check): it is not captured, or those bytes
//! would be seen twice. The connection is the `PRFileDesc *` the caller
//! holds (the top of its stack: NSPR keeps that pointer the top when
//! layers are pushed).

use agent_common::{counter, dir};
use aya_ebpf::{
    cty::c_void,
    helpers::generated::bpf_probe_read_user,
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};

use crate::{
    count,
    tls::{self, ret, stack, Missing, TlsArgs},
};

/// tgid → identity of NSS's SSL layer in that process.
#[map]
pub(crate) static NSS_SSL_ID: LruHashMap<u32, i32> = LruHashMap::with_max_entries(16384, 0);

/// `struct PRFileDesc` (prio.h; stable since NSPR 3): `methods` at 0,
/// `secret` at 8, `lower` at 16, `higher` at 24, `dtor` at 32, `identity`
/// (`PRIntn`) at 40.
const FD_METHODS: u64 = 0;
const FD_SECRET: u64 = 8;
const FD_LOWER: u64 = 16;
const FD_IDENTITY: u64 = 40;
/// `PRIOMethods.file_type`, first member; `PR_DESC_LAYERED`.
const PR_DESC_LAYERED: i32 = 4;
/// prio.h `PR_MSG_PEEK`.
const PR_MSG_PEEK: u64 = 2;
/// Layers walked down from the caller's descriptor. NSS's SSL layer sits
/// right above NSPR's socket, under at most a layer or two of the
/// application's (Firefox has one).
const MAX_LAYERS: u32 = 4;

#[inline(always)]
fn read_user<T: Copy + Default>(addr: u64) -> Option<T> {
    let mut v = T::default();
    // SAFETY: the helper checks the address; a failure returns an error.
    let rc = unsafe {
        bpf_probe_read_user(
            (&raw mut v).cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
            addr as *const c_void,
        )
    };
    (rc == 0).then_some(v)
}

/// Does the layer stack under `fd` hold NSS's SSL layer?
#[inline(always)]
fn is_ssl_fd(tgid: u32, fd: u64) -> bool {
    if fd == 0 {
        return false;
    }
    // SAFETY: read-only lookup, copied at once.
    let known = unsafe { NSS_SSL_ID.get(&tgid) }.copied();
    let mut layer = fd;
    for _ in 0..MAX_LAYERS {
        let Some(id) = read_user::<i32>(layer + FD_IDENTITY) else {
            return false;
        };
        let Some(lower) = read_user::<u64>(layer + FD_LOWER) else {
            return false;
        };
        match known {
            Some(ssl_id) => {
                if id == ssl_id {
                    return true;
                }
            }
            None => {
                if id > 0 && lower != 0 && looks_like_ssl_layer(fd, layer) {
                    let _ = NSS_SSL_ID.insert(&tgid, &id, 0);
                    count(counter::NSS_SSL_LAYER_BY_SHAPE, 1);
                    return true;
                }
            }
        }
        if lower == 0 {
            return false;
        }
        layer = lower;
    }
    false
}

/// A layered descriptor whose private data starts with a pointer back to
/// the layer (or to the top of the stack): NSS's `sslSocket`.
#[inline(always)]
fn looks_like_ssl_layer(top: u64, layer: u64) -> bool {
    let Some(methods) = read_user::<u64>(layer + FD_METHODS) else {
        return false;
    };
    if methods == 0 || read_user::<i32>(methods) != Some(PR_DESC_LAYERED) {
        return false;
    }
    let Some(secret) = read_user::<u64>(layer + FD_SECRET) else {
        return false;
    };
    if secret == 0 {
        return false;
    }
    read_user::<u64>(secret).is_some_and(|back| back == layer || back == top)
}

#[inline(always)]
fn save_if_ssl(ctx: &ProbeContext, direction: u8) -> u32 {
    let Some(pid_tgid) = tls::current_in_scope() else {
        return 0;
    };
    let fd: u64 = ctx.arg(0).unwrap_or(0);
    if !is_ssl_fd((pid_tgid >> 32) as u32, fd) {
        return 0;
    }
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    tls::save(
        pid_tgid,
        &TlsArgs::new(stack::NSS, fd, buf, direction, ret::INT),
    )
}

/// Entry of `PR_Write` and `PR_Send`.
#[uprobe]
pub fn tls_nss_write(ctx: ProbeContext) -> u32 {
    save_if_ssl(&ctx, dir::WRITE)
}

/// Entry of `PR_Read`.
#[uprobe]
pub fn tls_nss_read(ctx: ProbeContext) -> u32 {
    save_if_ssl(&ctx, dir::READ)
}

/// Entry of `PR_Recv`: a peek is not a read.
#[uprobe]
pub fn tls_nss_recv(ctx: ProbeContext) -> u32 {
    let flags: u64 = ctx.arg(3).unwrap_or(0);
    if flags & PR_MSG_PEEK != 0 {
        return 0;
    }
    save_if_ssl(&ctx, dir::READ)
}

/// Return of `PR_Write`, `PR_Send`, `PR_Read` and `PR_Recv`. Most calls were
/// not on SSL descriptors and saved nothing: a missing entry is expected.
#[uretprobe]
pub fn tls_nss_io_ret(ctx: RetProbeContext) -> u32 {
    tls::finish(&ctx, stack::NSS, Missing::Expected)
}

#[uprobe]
pub fn tls_nss_close(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = tls::current_in_scope() else {
        return 0;
    };
    let fd: u64 = ctx.arg(0).unwrap_or(0);
    if !is_ssl_fd((pid_tgid >> 32) as u32, fd) {
        return 0;
    }
    tls::close(fd)
}

/// Return of `SSL_ImportFD`: learns the SSL layer's identity.
#[uretprobe]
pub fn tls_nss_import_fd_ret(ctx: RetProbeContext) -> u32 {
    let Some(pid_tgid) = tls::current_in_scope() else {
        return 0;
    };
    let fd: u64 = ctx.ret();
    if fd == 0 {
        return 0;
    }
    if let Some(id) = read_user::<i32>(fd + FD_IDENTITY) {
        if id > 0 {
            let _ = NSS_SSL_ID.insert(&((pid_tgid >> 32) as u32), &id, 0);
        }
    } else {
        count(counter::READ_FAILED, 1);
    }
    0
}
