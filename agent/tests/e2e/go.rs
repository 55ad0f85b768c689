//! Go's crypto/tls: a Go agent (tests/clients/agent_go.go, net/http) built
//! normally and stripped, over HTTP/1.1 (mock_llm.py) and HTTP/2
//! (mock_h2.js), plain and streamed, under the daemon; and the resolver's
//! reading of those binaries (pclntab, RET offsets) against `go tool
//! objdump`, and on corrupted copies.

use std::{collections::BTreeMap, fs, path::Path, process::Command};

use aitrail::capture::{
    stacks::{
        go::{analyse, pclntab::Pclntab},
        Elf, Method, Stack,
    },
    targets::{resolve, TargetError},
};
use common::{go_cache_dir, go_client, go_version, GoBuild, Run};

use super::*;

// ------------------------------------------------------------------ under the daemon

/// Runs the Go client as `aitrail agent -- agent_go …`: the daemon holds the
/// command before its exec and attaches the binary's crypto/tls to it
/// first. (A Go client attached only at its exec has sent its first request
/// before the probes are in: see docs/coverage.md.)
fn run_go_scenario(name: &str, build: GoBuild, h2: bool, stream: bool) -> Run {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new(name);
    let pki = make_cert(&dir);
    let mut mock = if h2 {
        MockServer::start_h2(&dir, &pki)
    } else {
        MockServer::start(&dir, &pki)
    };
    let w = make_work(&dir, name);
    let bin = go_client(build).display().to_string();
    let mut command = vec![
        "--".to_string(),
        bin.clone(),
        "--base-url".into(),
        mock.base_url.clone(),
        "--ca".into(),
        pki.ca.display().to_string(),
        "--file".into(),
        w.file.clone(),
        "--command".into(),
        w.command.clone(),
    ];
    if stream {
        command.push("--stream".into());
    }
    let mut daemon = Daemon::start_with_env(
        &dir,
        "agent",
        &command,
        &[("OPENAI_API_KEY", OPENAI_KEY.to_string())],
    );
    daemon.wait_exit(CLIENT_TIMEOUT);
    mock.stop();
    let events = Events::read(&daemon.events);
    common::assert_no_secrets(&daemon);
    let client_pid = events
        .of_kind(kind::PROCESS_EXEC)
        .iter()
        .filter_map(|e| e.process.as_ref())
        .find(|p| p.exe == bin || p.args.first() == Some(&bin))
        .map_or_else(
            || panic!("no process.exec of {bin}: {}", events.summary(&[])),
            |p| p.pid,
        );
    let mock_records = chat_records(&mock);
    assert_eq!(mock_records.len(), 3, "the Go client made 3 LLM calls");
    Run {
        daemon_dir: daemon.dir.clone(),
        client_stdout: fs::read_to_string(&daemon.stdout).unwrap_or_default(),
        dir,
        client: Client::Go { build, h2 },
        stream,
        port: mock.port,
        file: w.file,
        file_content: w.file_content,
        workdir: w.workdir,
        command: w.command,
        client_pid,
        mock_records,
        events,
        outsider_pid: None,
        outsider_requests: 0,
    }
}

/// The mock's answered chat completions (mock_h2.js records no
/// `provider`, which `llm_records` looks for).
fn chat_records(mock: &MockServer) -> Vec<serde_json::Value> {
    mock.records()
        .into_iter()
        .filter(|r| r["status"] == 200 && r["path"] == "/v1/chat/completions")
        .collect()
}

fn run_go(name: &str, build: GoBuild, h2: bool, stream: bool) {
    let run = run_go_scenario(name, build, h2, stream);
    check_conversation(&run);
    let mut c = Checker::default();
    // The protocol the client really spoke (Go's transport picks it by
    // ALPN); the client's stderr is the daemon's.
    let log = fs::read_to_string(run.daemon_dir.join("daemon.stderr.log")).unwrap_or_default();
    let proto = if h2 {
        "PROTO HTTP/2.0"
    } else {
        "PROTO HTTP/1.1"
    };
    c.eq(
        &format!("replies over {proto}"),
        3,
        log.matches(proto).count(),
    );
    // How the daemon found the hooks.
    let method = match build {
        GoBuild::Normal => "method=symbol",
        GoBuild::Stripped => "method=pclntab",
    };
    c.check(
        log.lines()
            .any(|l| l.contains("stack=go-crypto-tls") && l.contains(method)),
        || format!("the daemon log does not say it found go-crypto-tls by {method}"),
    );
    let health = run.events.of_kind(kind::AGENT_HEALTH);
    let last = health
        .last()
        .and_then(|h| h.health.as_ref())
        .expect("a final agent.health");
    let counter = |k: &str| {
        last.counters
            .get(k)
            .or_else(|| last.dropped.get(k))
            .copied()
            .unwrap_or(0)
    };
    c.eq(
        "kernel_tls_targets_refused",
        0,
        counter("kernel_tls_targets_refused"),
    );
    c.eq(
        "kernel_tls_no_entry (a RET without its entry)",
        0,
        counter("kernel_tls_no_entry"),
    );
    c.eq("kernel_tls_args_full", 0, counter("kernel_tls_args_full"));
    c.check(counter("kernel_tls_calls") >= 6, || {
        format!("too few TLS calls captured: {:?}", last.counters)
    });
    c.finish(
        &run.events,
        &run.related(),
        &format!("Go {build:?} h2={h2} stream={stream}"),
    );
}

#[test]
#[ignore = "privileged: needs root, eBPF and go; run by cargo xtask test"]
fn go_http1_plain() {
    run_go("go-h1", GoBuild::Normal, false, false);
}

#[test]
#[ignore = "privileged: needs root, eBPF and go; run by cargo xtask test"]
fn go_http1_stream() {
    run_go("go-h1-stream", GoBuild::Normal, false, true);
}

#[test]
#[ignore = "privileged: needs root, eBPF and go; run by cargo xtask test"]
fn go_stripped_http1_plain() {
    run_go("go-s-h1", GoBuild::Stripped, false, false);
}

#[test]
#[ignore = "privileged: needs root, eBPF and go; run by cargo xtask test"]
fn go_stripped_http1_stream() {
    run_go("go-s-h1-stream", GoBuild::Stripped, false, true);
}

#[test]
#[ignore = "privileged: needs root, eBPF and go; run by cargo xtask test"]
fn go_http2_plain() {
    run_go("go-h2", GoBuild::Normal, true, false);
}

#[test]
#[ignore = "privileged: needs root, eBPF and go; run by cargo xtask test"]
fn go_http2_stream() {
    run_go("go-h2-stream", GoBuild::Normal, true, true);
}

#[test]
#[ignore = "privileged: needs root, eBPF and go; run by cargo xtask test"]
fn go_stripped_http2_plain() {
    run_go("go-s-h2", GoBuild::Stripped, true, false);
}

#[test]
#[ignore = "privileged: needs root, eBPF and go; run by cargo xtask test"]
fn go_stripped_http2_stream() {
    run_go("go-s-h2-stream", GoBuild::Stripped, true, true);
}

// ------------------------------------------------------------------ the client alone

#[test]
#[ignore = "needs go, python3, node and openssl; run by cargo xtask test"]
fn harness_go_client_against_both_mocks() {
    for (build, h2) in [(GoBuild::Normal, false), (GoBuild::Stripped, true)] {
        let _serial = common::serial();
        let name = format!("h-go-{build:?}-{h2}");
        let dir = TestDir::new(&name);
        let pki = make_cert(&dir);
        let mut mock = if h2 {
            MockServer::start_h2(&dir, &pki)
        } else {
            MockServer::start(&dir, &pki)
        };
        let w = make_work(&dir, &name);
        let bin = go_client(build);
        let args = vec![
            "--base-url".to_string(),
            mock.base_url.clone(),
            "--ca".into(),
            pki.ca.display().to_string(),
            "--file".into(),
            w.file.clone(),
            "--command".into(),
            w.command.clone(),
        ];
        let mut l = Launched::spawn(
            &dir,
            &name,
            &bin.display().to_string(),
            &args,
            &[("OPENAI_API_KEY", OPENAI_KEY.to_string())],
        );
        l.release();
        let out = l.wait_success(Duration::from_secs(60));
        mock.stop();
        assert!(out.contains("FINAL: done: 2 tools used"), "{name}: {out}");
        let steps: Vec<u64> = chat_records(&mock)
            .iter()
            .filter_map(|r| r["step"].as_u64())
            .collect();
        assert_eq!(steps, vec![0, 1, 2], "{name}");
    }
}

// ------------------------------------------------------------------ the resolver on real binaries

/// The RET addresses of `function` by `go tool objdump` (the Go toolchain's
/// own disassembler): the oracle for ours.
fn objdump_returns(bin: &Path, function: &str) -> Vec<u64> {
    let go = common::which("go");
    let pattern = format!("^{}$", regex_escape(function));
    let out = Command::new(&go)
        .args(["tool", "objdump", "-s", &pattern])
        .arg(bin)
        .env("GOCACHE", go_cache_dir().join("gocache"))
        .output()
        .expect("go tool objdump");
    assert!(
        out.status.success(),
        "go tool objdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rets = Vec::new();
    for line in text.lines() {
        // "  conn.go:1179\t\t0x5a63f2\t\tc3\t\t\tRET\t"
        let f: Vec<&str> = line
            .split('\t')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if f.len() >= 4 && f[3] == "RET" {
            let a = f[1].trim_start_matches("0x");
            rets.push(u64::from_str_radix(a, 16).expect("hex address"));
        }
    }
    assert!(!text.is_empty(), "objdump printed nothing for {function}");
    rets
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "()*.[]".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

fn analysed(bin: &Path) -> aitrail::capture::stacks::go::GoTls {
    let data = fs::read(bin).expect("read the Go client");
    let obj = object::File::parse(&*data).expect("an ELF file");
    let elf = Elf {
        path: bin,
        data: &data,
        obj: &obj,
    };
    analyse(&elf)
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()))
        .expect("crypto/tls found")
}

#[test]
#[ignore = "needs go; run by cargo xtask test"]
fn resolver_reads_normal_and_stripped_go_binaries() {
    let normal = go_client(GoBuild::Normal);
    let stripped = go_client(GoBuild::Stripped);
    eprintln!("{}", go_version());
    let n = analysed(&normal);
    let s = analysed(&stripped);
    assert_eq!(n.method, Method::Symbol);
    assert_eq!(s.method, Method::Pclntab);
    // `-s -w` drops tables, not code: the same functions at the same
    // addresses, found by two different methods.
    let by_name = |g: &aitrail::capture::stacks::go::GoTls| -> BTreeMap<&str, (u64, Vec<u64>)> {
        g.functions
            .iter()
            .map(|f| (f.name, (f.entry, f.returns.clone())))
            .collect()
    };
    assert_eq!(by_name(&n), by_name(&s));
    let names: Vec<&str> = n.functions.iter().map(|f| f.name).collect();
    assert_eq!(
        names,
        [
            "crypto/tls.(*Conn).Write",
            "crypto/tls.(*Conn).Read",
            "crypto/tls.(*Conn).Close",
            "internal/poll.(*FD).Read"
        ]
    );
    for f in &n.functions {
        // Only Read has return probes (Write is copied at entry).
        if f.name == "crypto/tls.(*Conn).Read" {
            let want = objdump_returns(&normal, f.name);
            assert_eq!(
                f.returns, want,
                "{}: RETs differ from go tool objdump",
                f.name
            );
            assert!(!f.returns.is_empty());
            // File offsets are what the probes attach at: the byte there is RET.
            let data = fs::read(&normal).unwrap();
            for &off in &f.return_offsets {
                assert_eq!(
                    data[usize::try_from(off).unwrap()],
                    0xc3,
                    "{}: {off:#x}",
                    f.name
                );
            }
        } else {
            assert!(f.returns.is_empty(), "{}: entry-only", f.name);
        }
    }
    // The whole path the daemon takes.
    for (bin, method) in [(&normal, Method::Symbol), (&stripped, Method::Pclntab)] {
        let t = resolve(bin).expect("a Go TLS target");
        assert_eq!(t.stack, Stack::GoTls);
        assert_eq!(t.method, method);
        assert!(!t.library);
        let rets = t
            .hooks
            .iter()
            .filter(|h| h.program.ends_with("_ret"))
            .count();
        assert_eq!(
            rets,
            n.functions.iter().map(|f| f.returns.len()).sum::<usize>()
        );
    }
}

/// Copies `src` to `dir/name` with `edit` applied.
fn corrupt(
    dir: &TestDir,
    src: &Path,
    name: &str,
    edit: impl FnOnce(&mut Vec<u8>),
) -> std::path::PathBuf {
    let mut data = fs::read(src).expect("read");
    edit(&mut data);
    let p = dir.join(name);
    fs::write(&p, &data).expect("write the corrupted copy");
    p
}

fn section(data: &[u8], name: &str) -> (usize, usize) {
    use object::{Object, ObjectSection};
    let obj = object::File::parse(data).expect("ELF");
    let s = obj.section_by_name(name).expect("section");
    let (off, size) = s.file_range().expect("in the file");
    (
        usize::try_from(off).unwrap(),
        usize::try_from(size).unwrap(),
    )
}

#[test]
#[ignore = "needs go; run by cargo xtask test"]
fn resolver_refuses_corrupted_go_binaries_without_panicking() {
    let stripped = go_client(GoBuild::Stripped);
    let normal = go_client(GoBuild::Normal);
    let dir = TestDir::new("go-corrupt");
    let good = fs::read(&stripped).unwrap();
    let (pc_off, pc_len) = section(&good, ".gopclntab");
    let found = analysed(&stripped);
    let write = found.functions[0].clone();
    let read = found.functions[1].clone();
    assert_eq!(read.name, "crypto/tls.(*Conn).Read");

    // The pclntab's function count made absurd: refused, with the reason.
    let p = corrupt(&dir, &stripped, "nfunc", |d| {
        d[pc_off + 8..pc_off + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    });
    match resolve(&p) {
        Err(TargetError::Refused { stack, reason, .. }) => {
            assert_eq!(stack, Stack::GoTls);
            assert!(reason.contains("pclntab"), "{reason}");
        }
        other => panic!("a broken pclntab must be refused: {other:?}"),
    }

    // An unknown magic: not recognised as Go at all.
    let p = corrupt(&dir, &stripped, "magic", |d| d[pc_off] ^= 0x55);
    assert!(resolve(&p).is_err());

    // Garbage in the middle of Read: a RET can no longer be placed safely.
    let p = corrupt(&dir, &stripped, "code", |d| {
        let at = usize::try_from(read.entry_offset).unwrap() + 0x20;
        d[at..at + 8].copy_from_slice(&[0x0f, 0x0b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    });
    match resolve(&p) {
        Err(TargetError::Refused { reason, .. }) => {
            assert!(reason.contains("crypto/tls.(*Conn).Read"), "{reason}");
        }
        other => panic!("damaged code must be refused: {other:?}"),
    }

    // The stack-ABI prologue (Go before 1.17) in place of the register one.
    let p = corrupt(&dir, &stripped, "abi", |d| {
        let start = usize::try_from(write.entry_offset).unwrap();
        // `cmp rsp|r12, [r14+0x10]` (REX.B set, ModRM 0x66) becomes
        // `cmp rsp|r12, [rcx+0x10]`.
        let at = (start..start + 16)
            .find(|&p| matches!(d[p], 0x49 | 0x4d) && d[p + 1..p + 4] == [0x3b, 0x66, 0x10])
            .expect("the register-ABI stack check in Write's prologue");
        d[at] &= !1;
        d[at + 2] = 0x61;
    });
    match resolve(&p) {
        Err(TargetError::Refused { reason, .. }) => {
            assert!(reason.contains("register ABI"), "{reason}");
        }
        other => panic!("a stack-ABI prologue must be refused: {other:?}"),
    }

    // A symbol that disagrees with the pclntab (normal build: Write's
    // symbol moved by one byte).
    let p = corrupt(&dir, &normal, "symbol", |d| {
        use object::{Object, ObjectSymbol};
        let data = d.clone();
        let obj = object::File::parse(&*data).unwrap();
        let sym = obj
            .symbols()
            .find(|s| s.name() == Ok("crypto/tls.(*Conn).Write"))
            .unwrap();
        let (st_off, _) = section(&data, ".symtab");
        let index = sym.index().0;
        // Elf64_Sym: name u32, info u8, other u8, shndx u16, value u64, size u64
        let at = st_off + index * 24 + 8;
        let v = u64::from_le_bytes(d[at..at + 8].try_into().unwrap()) + 1;
        d[at..at + 8].copy_from_slice(&v.to_le_bytes());
    });
    match resolve(&p) {
        Err(TargetError::Refused { reason, .. }) => {
            assert!(reason.contains("disagrees"), "{reason}");
        }
        other => panic!("a symbol off the pclntab must be refused: {other:?}"),
    }

    // Hundreds of random byte flips through the pclntab and Read's code:
    // whatever comes out, nothing panics, and what is accepted still has
    // every RET on a real RET byte.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let code_start = usize::try_from(read.entry_offset).unwrap();
    let code_len = usize::try_from(read.returns.last().unwrap() - read.entry).unwrap() + 1;
    let mut refused = 0;
    for i in 0..300 {
        let mut d = good.clone();
        let (base, len) = if i % 2 == 0 {
            (pc_off, pc_len.min(1 << 16))
        } else {
            (code_start, code_len)
        };
        for _ in 0..=next() % 4 {
            let at = base + usize::try_from(next() % len as u64).unwrap();
            d[at] = u8::try_from(next() & 0xff).unwrap();
        }
        let obj = object::File::parse(&*d).unwrap();
        let elf = Elf {
            path: Path::new("fuzzed"),
            data: &d,
            obj: &obj,
        };
        match analyse(&elf) {
            Ok(Some(g)) => {
                for f in &g.functions {
                    for &off in &f.return_offsets {
                        assert_eq!(d[usize::try_from(off).unwrap()], 0xc3);
                    }
                }
            }
            Ok(None) | Err(_) => refused += 1,
        }
    }
    eprintln!("fuzzed copies refused or not recognised: {refused}/300");
    // The header itself still parses on the good copy.
    Pclntab::parse(&good[pc_off..pc_off + pc_len], None).expect("good pclntab");
}
