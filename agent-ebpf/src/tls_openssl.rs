//! OpenSSL plaintext (the shared entry/return logic is in `tls`).
//!
//! Hooked (OpenSSL 1.1.1 and 3.x; tested with Debian's 3.0 libssl.so.3 and
//! node 20's statically linked 3.0):
//! - `int SSL_write(SSL *ssl, const void *buf, int num)`
//! - `int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)`
//! - `int SSL_read(SSL *ssl, void *buf, int num)`
//! - `int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)`
//! - `void SSL_free(SSL *ssl)`: the end of the connection
//!
//! OpenSSL 3's `SSL_write` does not call `SSL_write_ex` (nor read likewise),
//! and python's `_ssl` calls only the `_ex` variants, so all four are hooked.
//! The connection is the `SSL *`.

use agent_common::dir;
use aya_ebpf::{
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use crate::tls::{self, ret, stack, Missing, TlsArgs};

#[inline(always)]
fn save_args(ctx: &ProbeContext, direction: u8, ex: bool) -> u32 {
    let Some(pid_tgid) = tls::current_in_scope() else {
        return 0;
    };
    let ssl: u64 = ctx.arg(0).unwrap_or(0);
    let buf: u64 = ctx.arg(1).unwrap_or(0);
    let mut args = TlsArgs::new(
        stack::OPENSSL,
        ssl,
        buf,
        direction,
        if ex { ret::EX } else { ret::INT },
    );
    if ex {
        args.len_ptr = ctx.arg(3).unwrap_or(0);
    }
    tls::save(pid_tgid, &args)
}

#[inline(always)]
fn capture(ctx: &RetProbeContext) -> u32 {
    tls::finish(ctx, stack::OPENSSL, Missing::Count)
}

#[uprobe]
pub fn tls_openssl_ssl_free(ctx: ProbeContext) -> u32 {
    if tls::current_in_scope().is_none() {
        return 0;
    }
    tls::close(ctx.arg(0).unwrap_or(0))
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
