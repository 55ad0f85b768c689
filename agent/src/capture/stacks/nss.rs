//! NSS: its applications read and write SSL sockets through NSPR's generic
//! `PR_Write`, `PR_Send`, `PR_Read`, `PR_Recv` (entry and return) and close
//! them with `PR_Close`, in `libnspr4.so`; the SSL layer's identity, which
//! the programs need to tell SSL sockets from every other NSPR descriptor,
//! comes from the return of `SSL_ImportFD` in `libssl3.so`. NSS's own I/O
//! functions (`ssl_Read`, `ssl_Write`, …) are static: there is no exported
//! NSS function to hook for plaintext. Why and how the programs filter is
//! in agent-ebpf/src/tls_nss.rs.
//!
//! Two files make one stack: each is resolved on its own (the NSPR part,
//! the SSL part, or both when Mozilla's builds fold them into
//! `libnss3.so`). Not hooked: `PR_Writev`, `PR_TransmitFile` and
//! `PR_SendFile` (no NSS user we know sends request bodies with them).

use super::{find_symbols, hooks, Elf, Method, Resolved, Stack};

/// (function, entry program, return program).
const FUNCTIONS: [(&str, Option<&str>, Option<&str>); 6] = [
    ("PR_Write", Some("tls_nss_write"), Some("tls_nss_io_ret")),
    ("PR_Send", Some("tls_nss_write"), Some("tls_nss_io_ret")),
    ("PR_Read", Some("tls_nss_read"), Some("tls_nss_io_ret")),
    ("PR_Recv", Some("tls_nss_recv"), Some("tls_nss_io_ret")),
    ("PR_Close", Some("tls_nss_close"), None),
    ("SSL_ImportFD", None, Some("tls_nss_import_fd_ret")),
];

pub const PROGRAMS: &[&str] = &[
    "tls_nss_write",
    "tls_nss_read",
    "tls_nss_recv",
    "tls_nss_io_ret",
    "tls_nss_close",
    "tls_nss_import_fd_ret",
];

/// `libssl3.so` (NSS's SSL), `libnspr4.so` (NSPR), and `libnss3.so`, which
/// holds both in Mozilla's own Firefox and Thunderbird builds (Debian's is
/// NSS proper, and no target).
pub fn is_library_name(name: &str) -> bool {
    matches!(name, "libssl3.so" | "libnspr4.so" | "libnss3.so")
}

/// Claims a file that exports NSPR's `PR_Write` and `PR_Read`, or NSS's
/// `SSL_ImportFD`.
pub fn resolve(elf: &Elf<'_>) -> Result<Option<Resolved>, String> {
    let offsets = find_symbols(elf.obj, FUNCTIONS.map(|(f, ..)| f));
    let nspr = offsets[0].is_some() && offsets[2].is_some();
    let ssl = offsets[5].is_some();
    if !nspr && !ssl {
        return Ok(None);
    }
    Ok(Some(Resolved {
        stack: Stack::Nss,
        method: Method::Symbol,
        hooks: hooks(&FUNCTIONS, &offsets),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        assert!(is_library_name("libssl3.so"));
        assert!(is_library_name("libnspr4.so"));
        assert!(is_library_name("libnss3.so"));
        assert!(!is_library_name("libssl.so.3"));
        assert!(!is_library_name("libnssutil3.so"));
        assert!(!is_library_name("libnss_files.so.2"));
    }
}
