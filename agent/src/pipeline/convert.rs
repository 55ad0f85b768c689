//! Kernel values into event fields: open flags, errno names, socket
//! addresses, paths relative to a directory fd.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::event::{FileInfo, NetInfo};

const AT_FDCWD: i32 = -100;

fn errno_name(neg: i64) -> Option<String> {
    if neg >= 0 {
        return None;
    }
    let n = i32::try_from(-neg).unwrap_or(0);
    Some(format!("{:?}", nix::errno::Errno::from_raw(n)))
}

/// `O_*` names of open flags.
pub fn open_flags(flags: u64) -> Vec<String> {
    let f = i32::try_from(flags & 0xffff_ffff).unwrap_or(0);
    let mut out = vec![match f & libc::O_ACCMODE {
        libc::O_WRONLY => "O_WRONLY",
        libc::O_RDWR => "O_RDWR",
        _ => "O_RDONLY",
    }
    .to_owned()];
    for (bit, name) in [
        (libc::O_CREAT, "O_CREAT"),
        (libc::O_EXCL, "O_EXCL"),
        (libc::O_TRUNC, "O_TRUNC"),
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_DIRECTORY, "O_DIRECTORY"),
        (libc::O_NOFOLLOW, "O_NOFOLLOW"),
        (libc::O_CLOEXEC, "O_CLOEXEC"),
        (libc::O_PATH, "O_PATH"),
        (libc::O_TMPFILE & !libc::O_DIRECTORY, "O_TMPFILE"),
    ] {
        if f & bit == bit && bit != 0 {
            out.push(name.to_owned());
        }
    }
    out
}

pub fn file_info(path: &str, flags: u64, ret: i64) -> FileInfo {
    FileInfo {
        path: path.to_owned(),
        flags: open_flags(flags),
        result: ret,
        error: errno_name(ret),
    }
}

/// A path relative to the cwd made absolute while the process still lives;
/// left as it is otherwise.
pub fn absolute_path(pid: u32, dfd: i32, path: &str) -> String {
    if path.starts_with('/') || path.is_empty() {
        return path.to_owned();
    }
    let base = if dfd == AT_FDCWD {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
    } else {
        std::fs::read_link(format!("/proc/{pid}/fd/{dfd}"))
    };
    match base {
        Ok(b) => b.join(path).display().to_string(),
        Err(_) => path.to_owned(),
    }
}

/// Decodes a raw `sockaddr`.
pub fn net_info(addr: &[u8], ret: i32) -> NetInfo {
    let result = i64::from(ret);
    let error = errno_name(result);
    let family = if addr.len() >= 2 {
        u16::from_ne_bytes([addr[0], addr[1]])
    } else {
        0
    };
    let port = if addr.len() >= 4 {
        u16::from_be_bytes([addr[2], addr[3]])
    } else {
        0
    };
    let (family, address, port) = match i32::from(family) {
        libc::AF_INET if addr.len() >= 8 => (
            "ipv4".to_owned(),
            Ipv4Addr::new(addr[4], addr[5], addr[6], addr[7]).to_string(),
            port,
        ),
        libc::AF_INET6 if addr.len() >= 24 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&addr[8..24]);
            ("ipv6".to_owned(), Ipv6Addr::from(b).to_string(), port)
        }
        libc::AF_UNIX => {
            let p = &addr[2.min(addr.len())..];
            let text = if p.first() == Some(&0) {
                format!(
                    "@{}",
                    String::from_utf8_lossy(&p[1..]).trim_end_matches('\0')
                )
            } else {
                let end = memchr::memchr(0, p).unwrap_or(p.len());
                String::from_utf8_lossy(&p[..end]).into_owned()
            };
            ("unix".to_owned(), text, 0)
        }
        f => (format!("af_{f}"), String::new(), 0),
    };
    NetInfo {
        family,
        address,
        port,
        result,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&2u16.to_ne_bytes());
        v4[2..4].copy_from_slice(&443u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        let n = net_info(&v4, 0);
        assert_eq!(
            (n.family.as_str(), n.address.as_str(), n.port),
            ("ipv4", "127.0.0.1", 443)
        );
        let n = net_info(&v4, -111);
        assert_eq!(n.error.as_deref(), Some("ECONNREFUSED"));
        let mut un = 1u16.to_ne_bytes().to_vec();
        un.extend_from_slice(b"/run/x.sock\0");
        assert_eq!(net_info(&un, 0).address, "/run/x.sock");
        assert_eq!(net_info(&[], 0).family, "af_0");
    }

    #[test]
    fn flags() {
        let f = u64::try_from(libc::O_WRONLY | libc::O_CREAT | libc::O_CLOEXEC).unwrap();
        assert_eq!(open_flags(f), vec!["O_WRONLY", "O_CREAT", "O_CLOEXEC"]);
        assert_eq!(open_flags(0), vec!["O_RDONLY"]);
        assert_eq!(file_info("/x", 0, -2).error.as_deref(), Some("ENOENT"));
    }
}
