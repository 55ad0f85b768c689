//! GnuTLS plaintext (the shared entry/return logic is in `tls`).
//!
//! Hooked (GnuTLS 3.x; tested with Debian 12's 3.7.9 libgnutls.so.30, as
//! used by wget, gnutls-cli and libcurl3-gnutls):
//! - `ssize_t gnutls_record_send(gnutls_session_t session, const void *data, size_t data_size)`
//! - `ssize_t gnutls_record_send2(gnutls_session_t session, const void *data, size_t data_size, size_t pad, unsigned flags)`
//! - `ssize_t gnutls_record_recv(gnutls_session_t session, void *data, size_t data_size)`
//! - `ssize_t gnutls_record_recv_seq(gnutls_session_t session, void *data, size_t data_size, unsigned char *seq)`
//! - `void gnutls_deinit(gnutls_session_t session)`: the end of the connection
//!
//! The connection is the session pointer. Since 3.6.3 `gnutls_record_send`
//! tail-calls `gnutls_record_send2` through the PLT: both entries fire with
//! the same arguments (the second overwrites the first), both returns fire
//! at the one return, the first captures and the second finds nothing,
//! which is expected there and not counted. Hooking both keeps builds where
//! the compiler inlined `send2` into `send` (no semantic interposition)
//! covered. A write interrupted with `GNUTLS_E_AGAIN` may be retried with
//! `NULL, 0` (GnuTLS's documented API): the interrupted call's buffer is
//! kept for that retry.

use agent_common::dir;
use aya_ebpf::{
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use crate::tls::{self, ret, stack, Missing, TlsArgs, TLS_ARGS};

/// Entry of `gnutls_record_send` and `gnutls_record_send2`.
#[uprobe]
pub fn tls_gnutls_send(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = tls::current_in_scope() else {
        return 0;
    };
    let session: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let size: u64 = ctx.arg(2).unwrap_or(0);
    if buf == 0 && size == 0 {
        // SAFETY: read-only lookup, copied at once.
        if let Some(prev) = unsafe { TLS_ARGS.get(&pid_tgid) }.copied() {
            if prev.stack == stack::GNUTLS && prev.conn == session && prev.dir == dir::WRITE {
                // The retry of an interrupted write (or send2 entered from
                // such a retry of send): it sends the kept buffer.
                return tls::save(pid_tgid, &TlsArgs { pending: 0, ..prev });
            }
        }
    }
    tls::save(
        pid_tgid,
        &TlsArgs::new(stack::GNUTLS, session, buf, dir::WRITE, ret::GNUTLS),
    )
}

/// Return of `gnutls_record_send` and `gnutls_record_send2`.
#[uretprobe]
pub fn tls_gnutls_send_ret(ctx: RetProbeContext) -> u32 {
    tls::finish(&ctx, stack::GNUTLS, Missing::Expected)
}

/// Entry of `gnutls_record_recv` and `gnutls_record_recv_seq`.
#[uprobe]
pub fn tls_gnutls_recv(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = tls::current_in_scope() else {
        return 0;
    };
    let session: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    tls::save(
        pid_tgid,
        &TlsArgs::new(stack::GNUTLS, session, buf, dir::READ, ret::GNUTLS),
    )
}

/// Return of `gnutls_record_recv` and `gnutls_record_recv_seq`.
#[uretprobe]
pub fn tls_gnutls_recv_ret(ctx: RetProbeContext) -> u32 {
    tls::finish(&ctx, stack::GNUTLS, Missing::Count)
}

#[uprobe]
pub fn tls_gnutls_deinit(ctx: ProbeContext) -> u32 {
    if tls::current_in_scope().is_none() {
        return 0;
    }
    tls::close(ctx.arg(0).unwrap_or(0))
}
