//! `GnuTLS`: `gnutls_record_send`, `gnutls_record_send2`,
//! `gnutls_record_recv`, `gnutls_record_recv_seq` (entry and return) and
//! `gnutls_deinit`, found by their exported symbols in `libgnutls.so.*`.
//! The programs are in agent-ebpf/src/tls_gnutls.rs.
//!
//! Not hooked: `gnutls_record_recv_packet` (zero-copy receive, used by
//! DTLS servers), the early-data calls (0-RTT, client and server) and
//! `gnutls_record_send_file` (kTLS `sendfile`: the plaintext never passes
//! through user memory). Since `GnuTLS` 3.6.3 `gnutls_record_send` is a
//! wrapper of `gnutls_record_send2`; both are hooked (see the programs).

use super::{find_symbols, hooks, is_versioned, Elf, Method, Resolved, Stack};

/// (function, entry program, return program).
const FUNCTIONS: [(&str, Option<&str>, Option<&str>); 5] = [
    (
        "gnutls_record_send",
        Some("tls_gnutls_send"),
        Some("tls_gnutls_send_ret"),
    ),
    (
        "gnutls_record_send2",
        Some("tls_gnutls_send"),
        Some("tls_gnutls_send_ret"),
    ),
    (
        "gnutls_record_recv",
        Some("tls_gnutls_recv"),
        Some("tls_gnutls_recv_ret"),
    ),
    (
        "gnutls_record_recv_seq",
        Some("tls_gnutls_recv"),
        Some("tls_gnutls_recv_ret"),
    ),
    ("gnutls_deinit", Some("tls_gnutls_deinit"), None),
];

pub const PROGRAMS: &[&str] = &[
    "tls_gnutls_send",
    "tls_gnutls_send_ret",
    "tls_gnutls_recv",
    "tls_gnutls_recv_ret",
    "tls_gnutls_deinit",
];

/// `libgnutls.so`, `libgnutls.so.30`, `libgnutls.so.30.34.3`, … (not
/// `libgnutls-openssl.so.27`, its OpenSSL-API shim, whose calls end in
/// `gnutls_record_*` anyway, nor `libgnutlsxx`).
pub fn is_library_name(name: &str) -> bool {
    is_versioned(name, "libgnutls.so")
}

/// Claims a file that exports `gnutls_record_send` or `gnutls_record_recv`.
pub fn resolve(elf: &Elf<'_>) -> Result<Option<Resolved>, String> {
    let offsets = find_symbols(elf.obj, FUNCTIONS.map(|(f, ..)| f));
    if offsets[0].is_none() && offsets[2].is_none() {
        return Ok(None);
    }
    Ok(Some(Resolved {
        stack: Stack::GnuTls,
        method: Method::Symbol,
        hooks: hooks(&FUNCTIONS, &offsets),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        assert!(is_library_name("libgnutls.so.30"));
        assert!(is_library_name("libgnutls.so.30.34.3"));
        assert!(is_library_name("libgnutls.so"));
        assert!(!is_library_name("libgnutls-openssl.so.27"));
        assert!(!is_library_name("libgnutlsxx.so.30"));
        assert!(!is_library_name("libgnutls.a"));
    }
}
