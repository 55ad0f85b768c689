//! What the syslog, OTLP and end-to-end tests share: events with hard
//! characters, forwarder specs, paths, and waiting.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use aitrail_collector::forward::{ForwardSection, ForwardSpec};
use serde_json::{json, Value};

/// Text that needs escaping in every format, and is not ASCII.
pub const NASTY: &str =
    "quote \" backslash \\ bracket ] equals = pipe | newline \n tab \t cr \r Ünïcödé 日本語 🦀";

pub const KINDS: [&str; 8] = [
    "llm.call",
    "tool.call",
    "process.exec",
    "process.exit",
    "file.open",
    "net.connect",
    "finding",
    "agent.health",
];

pub fn id(i: usize) -> String {
    format!("019ac5f0a1b27c3d{i:016x}")
}

/// Event `i` of a test stream: every kind in turn, every field that the
/// formats map, and [`NASTY`] text where a user or a model controls it.
pub fn event(i: usize) -> Value {
    let kind = KINDS[i % KINDS.len()];
    let severity = ["info", "low", "medium", "high", "critical"][i % 5];
    let mut e = json!({
        "v": 1,
        "id": id(i),
        "time": format!("2026-11-27T12:{:02}:{:02}.{:09}Z", (i / 60) % 60, i % 60, 123_456_789 + i),
        "kind": kind,
        "host": {"name": if i.is_multiple_of(3) { "hôte-7.example.com" } else { "build-7" }, "id": "4c4c4544003510"},
        "trace_id": format!("8f14e45fceea167a{i:016x}"),
        "span_id": format!("a87f{i:012x}"),
        "severity": severity,
        "process": {"pid": 4000 + i, "ppid": 4000, "uid": 1000, "user": "dév", "comm": "python3",
            "exe": "/opt/agent \"q\" \\ ]/bin/python-日本", "args": ["python3", "agent.py", NASTY],
            "exec_id": "3c59dc048e885024"},
    });
    let payload = match kind {
        "llm.call" => json!({"llm": {"provider": "openai", "operation": "chat", "role": "client",
            "server": {"host": "api.openai.com", "port": 443}, "path": "/v1/chat/completions",
            "model": "gpt-4o-mini", "stream": false, "status": 200,
            "messages": [{"role": "user", "content": NASTY}], "tools": ["run_shell"],
            "output": {"text": NASTY, "finish_reason": "tool_calls",
                "tool_calls": [{"id": format!("call_{i}"), "name": "run_shell", "arguments": "{\"cmd\":\"ls /etc\"}"}]},
            "usage": {"input_tokens": 52 + i, "output_tokens": 18}, "latency_ms": 812.4, "truncated": false}}),
        "tool.call" => json!({"tool": {"call_id": format!("call_{i}"), "name": "run_shell",
            "arguments": format!("{{\"cmd\":{}}}", serde_json::to_string(NASTY).unwrap()),
            "result": NASTY, "effects": [], "confidence": 0.95}}),
        "process.exec" => json!({"exec": {"filename": "/usr/bin/ls", "args": ["ls", NASTY]}}),
        "process.exit" => {
            json!({"exec": {"filename": "/usr/bin/ls", "args": ["ls"], "exit_code": 2}})
        }
        "file.open" => json!({"file": {"path": format!("/tmp/{NASTY}/{i}"), "flags": ["O_RDONLY"],
            "result": -13, "error": "EACCES"}}),
        "net.connect" => {
            json!({"net": {"family": "ipv4", "address": "203.0.113.7", "port": 8080, "result": 0}})
        }
        "finding" => json!({"finding": {"rule": "file.shadow", "title": format!("title {NASTY}"),
            "evidence": [id(i - 1)], "class": "sensitive_file", "mitre": ["T1003.008"]}}),
        _ => json!({"health": {"uptime_s": 60, "events_emitted": 1234, "records_received": 5678,
            "dropped": {"ringbuf_records_lost": 1}, "counters": {}, "bytes_shipped": 1, "spool_depth": 0}}),
    };
    for (k, v) in payload.as_object().unwrap() {
        e[k] = v.clone();
    }
    if kind == "agent.health" {
        e.as_object_mut().unwrap().remove("process");
    }
    e
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Polls `f` until it returns Some, or panics after `limit` with `what`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `max` bytes of a file, for failure messages.
pub fn tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b[b.len().saturating_sub(max)..]).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The python interpreter (`AITRAIL_TEST_PYTHON`, else python3's own path,
/// not a pyenv shim).
pub fn python() -> String {
    if let Ok(p) = std::env::var("AITRAIL_TEST_PYTHON") {
        if !p.is_empty() {
            return p;
        }
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("cannot run python3: run tests/setup-test-deps.sh or set AITRAIL_TEST_PYTHON");
    assert!(out.status.success(), "python3 failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The value after control characters became U+FFFD (what syslog SD
/// values carry).
pub fn without_controls(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// A `[[forward]]` table (without the header) through the collector's
/// validation and the type's `prepare`, as config loading does.
pub fn spec(table: &str) -> ForwardSpec {
    let mut spec = toml::from_str::<ForwardSection>(table)
        .unwrap_or_else(|e| panic!("{e}\n{table}"))
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{table}"));
    aitrail_collector::forward::prepare(&mut spec).unwrap_or_else(|e| panic!("{e}\n{table}"));
    spec
}

pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
