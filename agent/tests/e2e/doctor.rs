//! `aitrail doctor` against a running daemon: the daemon's status file
//! lists each TLS stack it found (stack, method, probes) and, for a program
//! that embeds its stack (node), how long after the exec its probes were
//! in; doctor shows them while the daemon runs and forgets the daemon once
//! it stopped.

use std::{fs, process::Command, time::Instant};

use serde_json::Value;

use super::*;

fn doctor(config: &std::path::Path) -> Value {
    let exe = std::env::var("AITRAIL_E2E_DAEMON_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_aitrail").to_owned());
    let out = Command::new(&exe)
        .args(["doctor", "--json", "--no-scan", "--config"])
        .arg(config)
        .env("AITRAIL_LOG", "warn")
        .output()
        .expect("run aitrail doctor");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor printed no JSON ({e}); status {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The live daemon `pid` in a doctor report.
fn daemon_of(report: &Value, pid: u32) -> Option<&Value> {
    report["daemons"]
        .as_array()?
        .iter()
        .find(|d| d["alive"] == true && d["status"]["pid"] == pid)
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn doctor_shows_what_the_running_daemon_attached() {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("doctor");
    let status_dir = dir.join("run");
    let config = dir.join("agent.toml");
    fs::write(
        &config,
        format!(
            "[capture]\nstatus_dir = \"{}\"\nhook_cache_dir = \"\"\n",
            status_dir.display()
        ),
    )
    .unwrap();
    // node embeds OpenSSL: attached to its own process at its exec.
    let mut client = Launched::spawn(
        &dir,
        "node-idle",
        &common::node(),
        &["-e".into(), "setTimeout(() => {}, 2500)".into()],
        &[],
    );
    let mut daemon = Daemon::start_scoped(
        &dir,
        &[
            "--config".into(),
            config.display().to_string(),
            "--pid".into(),
            client.pid().to_string(),
        ],
    );
    let daemon_pid = daemon.pid();
    client.release();

    let start = Instant::now();
    let report = loop {
        let r = doctor(&config);
        let attached = daemon_of(&r, daemon_pid).is_some_and(|d| {
            d["status"]["decisions"]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x["outcome"] == "attached"))
        });
        if attached || start.elapsed() > Duration::from_secs(10) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    client.wait(CLIENT_TIMEOUT);
    let mode = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&status_dir), 0o700);
    assert_eq!(
        mode(&status_dir.join(format!("agent-{daemon_pid}.json"))),
        0o600
    );

    let d = daemon_of(&report, daemon_pid)
        .unwrap_or_else(|| panic!("daemon {daemon_pid} not in the report:\n{report:#}"));
    let st = &d["status"];
    assert_eq!(st["scope"], format!("pids {}", client.pid()), "{st:#}");
    let counter = |name: &str| {
        st["counters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c[0] == name)
            .and_then(|c| c[1].as_u64())
            .unwrap_or_else(|| panic!("no counter {name}: {st:#}"))
    };
    assert!(counter("tls_attach_links") > 0, "{st:#}");
    assert_eq!(counter("tls_attach_failed"), 0, "{st:#}");
    let decisions = st["decisions"].as_array().unwrap();
    // The system libssl, found by its symbols at start.
    let libssl = decisions
        .iter()
        .find(|x| {
            x["outcome"] == "found"
                && x["stack"] == "openssl"
                && x["path"].as_str().is_some_and(|p| p.contains("libssl.so"))
        })
        .unwrap_or_else(|| panic!("no libssl decision: {st:#}"));
    assert_eq!(libssl["method"], "symbol");
    assert!(libssl["probes"].as_u64().unwrap() >= 4, "{libssl}");
    assert!(
        libssl["build_id"].as_str().is_some_and(|b| b.len() >= 16),
        "{libssl}"
    );
    // node's own OpenSSL, attached at its exec within a second.
    let node = decisions
        .iter()
        .find(|x| x["outcome"] == "attached")
        .unwrap_or_else(|| panic!("no attach at exec: {st:#}"));
    assert_eq!(node["stack"], "openssl", "{node}");
    assert_eq!(node["pid"], client.pid(), "{node}");
    let delay = node["exec_to_attach_ms"].as_f64().unwrap();
    eprintln!("e2e: node's probes in {delay:.1} ms after its exec");
    assert!(delay > 0.0 && delay < 1000.0, "exec → probes {delay} ms");
    assert_eq!(
        report["kernel"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["level"] == "fail")
            .count(),
        0,
        "{report:#}"
    );

    daemon.stop();
    let after = doctor(&config);
    assert!(
        daemon_of(&after, daemon_pid).is_none(),
        "a stopped daemon is not listed as running: {after:#}"
    );
    assert!(!status_dir.join(format!("agent-{daemon_pid}.json")).exists());
}
