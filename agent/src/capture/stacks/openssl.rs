//! OpenSSL: `SSL_write`, `SSL_write_ex`, `SSL_read`, `SSL_read_ex` (entry and
//! return) and `SSL_free`, found by their exported symbols, in `libssl.so.*`
//! and in executables that link OpenSSL statically and export it (node).
//! The programs are in agent-ebpf/src/tls_openssl.rs.

use super::{find_symbols, hooks, is_versioned, Elf, Method, Resolved, Stack};

/// (function, entry program, return program).
const FUNCTIONS: [(&str, Option<&str>, Option<&str>); 5] = [
    (
        "SSL_write",
        Some("tls_openssl_ssl_write"),
        Some("tls_openssl_ssl_write_ret"),
    ),
    (
        "SSL_write_ex",
        Some("tls_openssl_ssl_write_ex"),
        Some("tls_openssl_ssl_write_ex_ret"),
    ),
    (
        "SSL_read",
        Some("tls_openssl_ssl_read"),
        Some("tls_openssl_ssl_read_ret"),
    ),
    (
        "SSL_read_ex",
        Some("tls_openssl_ssl_read_ex"),
        Some("tls_openssl_ssl_read_ex_ret"),
    ),
    ("SSL_free", Some("tls_openssl_ssl_free"), None),
];

pub const PROGRAMS: &[&str] = &[
    "tls_openssl_ssl_write",
    "tls_openssl_ssl_write_ret",
    "tls_openssl_ssl_write_ex",
    "tls_openssl_ssl_write_ex_ret",
    "tls_openssl_ssl_read",
    "tls_openssl_ssl_read_ret",
    "tls_openssl_ssl_read_ex",
    "tls_openssl_ssl_read_ex_ret",
    "tls_openssl_ssl_free",
];

/// `libssl.so`, `libssl.so.3`, `libssl.so.1.1`, … (not NSS's `libssl3.so`).
pub fn is_library_name(name: &str) -> bool {
    is_versioned(name, "libssl.so")
}

/// Claims a file that exports `SSL_write` or `SSL_read`.
pub fn resolve(elf: &Elf<'_>) -> Result<Option<Resolved>, String> {
    let offsets = find_symbols(elf.obj, FUNCTIONS.map(|(f, ..)| f));
    if offsets[0].is_none() && offsets[2].is_none() {
        return Ok(None);
    }
    Ok(Some(Resolved {
        stack: Stack::OpenSsl,
        method: Method::Symbol,
        hooks: hooks(&FUNCTIONS, &offsets),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        assert!(is_library_name("libssl.so.3"));
        assert!(is_library_name("libssl.so"));
        assert!(is_library_name("libssl.so.1.1"));
        assert!(!is_library_name("libssl3.so"));
        assert!(!is_library_name("libssl.a"));
        assert!(!is_library_name("libcrypto.so.3"));
    }
}
