use super::*;
use crate::event::{NetInfo, ProcessInfo};

fn spots(hosts: &[&str], grace_secs: u64) -> BlindSpots {
    let cfg = BlindSpotConfig {
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        grace_secs,
        ..BlindSpotConfig::default()
    };
    let b = BlindSpots::start(
        &BlindSpotConfig {
            enabled: false,
            ..cfg.clone()
        },
        Envelope::new(),
    );
    // Resolve in the test's thread: no timing games with the resolver.
    *b.dests.write().unwrap() = resolve(&cfg.hosts);
    b
}

fn connect(pid: u32, address: &str, port: u16, result: i64) -> Event {
    let mut ev = Envelope::new().event(
        kind::NET_CONNECT,
        0,
        Some(ProcessInfo {
            pid,
            exe: "/usr/bin/wget".into(),
            ..ProcessInfo::default()
        }),
    );
    ev.net = Some(NetInfo {
        family: "ipv4".into(),
        address: address.into(),
        port,
        result,
        ..NetInfo::default()
    });
    ev
}

#[test]
fn a_connection_without_plaintext_is_reported_once() {
    let mut b = spots(&["127.0.0.1:8443"], 10);
    let ev = connect(7, "127.0.0.1", 8443, 0);
    b.on_connect(7, &ev, 1_000);
    assert!(b.expire(5_000_000_000).is_empty(), "still within grace");
    let found = b.expire(11_000_000_000);
    assert_eq!(found.len(), 1);
    let f = found[0].finding.as_ref().unwrap();
    assert_eq!(f.class, "blind_spot");
    assert_eq!(f.evidence, vec![ev.id.clone()]);
    assert!(f.detail.as_deref().unwrap().contains("/usr/bin/wget"));
    assert_eq!(found[0].trace_id, ev.trace_id);
    // The same process again: already reported.
    b.on_connect(7, &connect(7, "127.0.0.1", 8443, 0), 20_000_000_000);
    assert!(b.expire(40_000_000_000).is_empty());
}

#[test]
fn plaintext_exit_and_other_destinations() {
    let mut b = spots(&["127.0.0.1:8443", "::1"], 10);
    // Plaintext came: capture works for this process.
    b.on_connect(1, &connect(1, "127.0.0.1", 8443, -115), 0);
    b.on_plaintext(1);
    assert!(b.expire(u64::MAX).is_empty());
    // Another destination, or a failed connect: nothing to ask.
    b.on_connect(2, &connect(2, "127.0.0.1", 9999, 0), 0);
    b.on_connect(3, &connect(3, "127.0.0.1", 8443, -111), 0);
    assert!(b.expire(u64::MAX).is_empty());
    // The process ends before its grace: answered at exit.
    b.on_connect(4, &connect(4, "127.0.0.1", 8443, 0), 0);
    assert!(b.on_exit(4).is_some());
    // IPv6 literal, default port 443.
    let mut ev = connect(5, "::1", 443, 0);
    ev.net.as_mut().unwrap().family = "ipv6".into();
    b.on_connect(5, &ev, 0);
    assert_eq!(b.expire(u64::MAX).len(), 1);
    assert_eq!(b.raised, 2);
}

#[test]
fn build_ids_are_read_from_the_head_of_an_executable() {
    let exe = std::fs::read("/proc/self/exe").unwrap();
    let head = &exe[..exe.len().min(64 * 1024)];
    let id = elf_build_id(head).expect("rustc links a build-id");
    assert!(id.len() >= 8);
    assert_eq!(build_id(std::process::id(), None), Some(hex::encode(id)));
    // A process that is gone: the executable's path is read instead.
    let me = std::env::current_exe().unwrap();
    assert_eq!(build_id(u32::MAX, me.to_str()), Some(hex::encode(id)));
    assert_eq!(build_id(u32::MAX, Some("relative/path")), None);
    assert_eq!(elf_build_id(b"not an elf"), None);
    assert_eq!(
        elf_build_id(&head[..100]),
        None,
        "cut headers: no id, no panic"
    );
}

#[test]
fn a_refused_tls_stack_is_cited_by_build_id() {
    // This test process stands for the client: its build-id is read from
    // /proc/self/exe, as the daemon reads a client's.
    use crate::capture::{
        stacks::{self, boringssl::Refusal, Stack},
        targets::{outcome, TargetError},
    };
    let pid = std::process::id();
    let id = build_id(pid, None).expect("the test binary has a GNU build-id");
    let refused = Err(TargetError::Refused {
        path: "/usr/local/bin/claude".into(),
        stack: Stack::BoringSsl,
        reason: Refusal::NoWrite.to_string(),
    });
    stacks::note_outcome(&id, outcome(&refused).expect("a refusal is cited"));
    let mut b = spots(&["127.0.0.1:8443"], 1);
    b.on_connect(pid, &connect(pid, "127.0.0.1", 8443, 0), 1_000);
    let found = b.expire(5_000_000_000);
    assert_eq!(found.len(), 1);
    let detail = found[0].finding.as_ref().unwrap().detail.clone().unwrap();
    assert!(detail.contains(&format!("(build-id {id})")), "{detail}");
    assert!(
        detail.contains("its TLS stack (boringssl) was found but no probe was attached")
            && detail.contains("no function matches SSL_write"),
        "{detail}"
    );
}

#[test]
fn an_ipv4_host_reached_through_a_dual_stack_socket_is_asked_about() {
    // Java connects AF_INET6 sockets to IPv4 hosts at ::ffff:a.b.c.d.
    let mut b = spots(&["127.0.0.1:8443"], 10);
    let mut ev = connect(9, "::ffff:127.0.0.1", 8443, -115);
    ev.net.as_mut().unwrap().family = "ipv6".into();
    b.on_connect(9, &ev, 0);
    assert_eq!(b.expire(u64::MAX).len(), 1);
}
