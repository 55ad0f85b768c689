//! OpenSSL: `SSL_write`, `SSL_write_ex`, `SSL_read`, `SSL_read_ex` (entry and
//! return) and `SSL_free`, found by their exported symbols, in `libssl.so.*`
//! and in executables that link OpenSSL statically and export it (node).
//! The programs are in agent-ebpf/src/tls_openssl.rs.

use object::{Object, ObjectSymbol};

use super::{symbol_file_offset, Elf, Hook, Method, Resolved, Stack};

/// (function, entry program, return program).
const FUNCTIONS: [(&str, &str, Option<&str>); 5] = [
    (
        "SSL_write",
        "tls_openssl_ssl_write",
        Some("tls_openssl_ssl_write_ret"),
    ),
    (
        "SSL_write_ex",
        "tls_openssl_ssl_write_ex",
        Some("tls_openssl_ssl_write_ex_ret"),
    ),
    (
        "SSL_read",
        "tls_openssl_ssl_read",
        Some("tls_openssl_ssl_read_ret"),
    ),
    (
        "SSL_read_ex",
        "tls_openssl_ssl_read_ex",
        Some("tls_openssl_ssl_read_ex_ret"),
    ),
    ("SSL_free", "tls_openssl_ssl_free", None),
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
    name.strip_prefix("libssl.so")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Claims a file that exports `SSL_write` or `SSL_read`.
pub fn resolve(elf: &Elf<'_>) -> Result<Option<Resolved>, String> {
    let mut offsets = [None; FUNCTIONS.len()];
    for sym in elf.obj.dynamic_symbols().chain(elf.obj.symbols()) {
        let Ok(name) = sym.name() else { continue };
        let Some(i) = FUNCTIONS.iter().position(|(f, ..)| *f == name) else {
            continue;
        };
        if offsets[i].is_some() {
            continue;
        }
        offsets[i] = symbol_file_offset(elf.obj, &sym);
        // The dynamic symbols come first and usually have them all: stop
        // before the full symbol table (megabytes in node) is touched.
        if offsets.iter().all(Option::is_some) {
            break;
        }
    }
    if offsets[0].is_none() && offsets[2].is_none() {
        return Ok(None);
    }
    let mut hooks = Vec::new();
    for ((function, entry, ret), off) in FUNCTIONS.iter().zip(offsets) {
        let Some(offset) = off else { continue };
        for program in std::iter::once(*entry).chain(*ret) {
            hooks.push(Hook {
                function,
                program,
                offset,
            });
        }
    }
    Ok(Some(Resolved {
        stack: Stack::OpenSsl,
        method: Method::Symbol,
        hooks,
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
