//! Processes already talking TLS when the daemon starts on a whole host.
//!
//! On a whole host, TLS probes are attached to a process at its first
//! `connect()`. An agent that was running before the daemon and keeps one
//! keep-alive connection to its API open would never connect again; so at
//! start the processes holding an established TCP connection to an HTTPS
//! port are found from /proc (sockets in /proc/net/tcp{,6}, owners from
//! /proc/PID/fd) and attached at once.

use std::{collections::HashSet, fs};

/// TCP state "established" in /proc/net/tcp.
const ESTABLISHED: &str = "01";

/// Socket inodes of established TCP connections whose remote port is one of
/// `ports`, from the text of /proc/net/tcp or /proc/net/tcp6.
pub fn established_to(table: &str, ports: &[u16]) -> HashSet<u64> {
    let mut out = HashSet::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        let (Some(rem), Some(st), Some(inode)) = (f.get(2), f.get(3), f.get(9)) else {
            continue;
        };
        if *st != ESTABLISHED {
            continue;
        }
        let Some(port) = rem
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if ports.contains(&port) {
            if let Ok(i) = inode.parse::<u64>() {
                if i != 0 {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Pids that hold one of the socket inodes open.
fn owners(inodes: &HashSet<u64>) -> Vec<u32> {
    let mut pids = Vec::new();
    if inodes.is_empty() {
        return pids;
    }
    let Ok(rd) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).ok().is_some_and(|l| {
                l.to_str()
                    .and_then(|s| s.strip_prefix("socket:["))
                    .and_then(|s| s.strip_suffix(']'))
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|i| inodes.contains(&i))
            })
        });
        if holds {
            pids.push(pid);
        }
    }
    pids
}

/// Pids with an established TCP connection to one of `ports`.
pub fn pids_connected_to(ports: &[u16]) -> Vec<u32> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(t) = fs::read_to_string(table) {
            inodes.extend(established_to(&t, ports));
        }
    }
    let mut pids = owners(&inodes);
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn parses_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:A1B2 0100007F:01BB 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n\
   1: 0100007F:A1B3 0100007F:01BB 0A 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1\n\
   2: 0100007F:A1B4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4244 1 0000000000000000 20 4 30 10 -1\n\
   garbage line\n";
        assert_eq!(established_to(table, &[443]), HashSet::from([4242]));
        assert_eq!(
            established_to(table, &[443, 8080]),
            HashSet::from([4242, 4244])
        );
        assert!(established_to("", &[443]).is_empty());
    }

    #[test]
    fn finds_this_process_by_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (_server, _) = listener.accept().expect("accept");
        let pids = pids_connected_to(&[port]);
        assert!(
            pids.contains(&std::process::id()),
            "{pids:?} for port {port}"
        );
        assert!(!pids_connected_to(&[1]).contains(&std::process::id()));
    }
}
