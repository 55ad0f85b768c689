//! Helpers of the collector's integration tests: event lines with marker
//! strings, a raw-byte grep of every file under a directory, reading an
//! archive back.

#![allow(dead_code, reason = "each test binary uses a part")]

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aitrail_collector::{
    ingest,
    store::{archive::segment, ArchiveConfig, Store},
};

pub const DAY_NS: i64 = 86_400 * 1_000_000_000;
/// 2026-11-27T00:00:00Z.
pub const T0: i64 = 1_795_737_600_000_000_000;

/// Marker strings of one event: one per field that holds captured
/// content (prompt, answer, tool arguments, command line, path).
pub fn markers(user: &str, n: usize) -> Vec<String> {
    ["prompt", "answer", "toolarg", "argv", "path"]
        .iter()
        .map(|f| format!("zq{user}{n:04}{f}secret"))
        .collect()
}

/// One event line of `user`, with its markers in every content field.
pub fn event(user: &str, n: usize, kind: &str) -> String {
    let m = markers(user, n);
    let mut e = serde_json::json!({
        "v": 1,
        "id": format!("{user}-{n:04}-{kind}"),
        "time": "2026-11-27T12:00:00.000000001Z",
        "kind": kind,
        "host": {"name": "h1", "id": "host-1"},
        "trace_id": format!("{:032x}", n + if user == "alice" { 0 } else { 1 << 20 }),
        "span_id": format!("{:016x}", n),
        "severity": if kind == "finding" { "high" } else { "info" },
        "process": {"pid": 100 + n, "uid": 1000, "user": user, "comm": "python3",
            "exe": "/usr/bin/python3", "args": ["python3", "agent.py", m[3]]},
        "llm": {"provider": "openai", "messages": [{"role": "user", "content": format!("please {}", m[0])}],
            "output": {"text": format!("sure {}", m[1]),
                "tool_calls": [{"id": "call_1", "name": "read_file",
                    "arguments": format!("{{\"path\":\"/home/{user}/{}\",\"x\":\"{}\"}}", m[4], m[2])}]}},
    });
    if kind == "finding" {
        e["finding"] = serde_json::json!({"rule": "secret.in_prompt", "title": "Secret in a prompt",
            "evidence": [format!("{user}-{n:04}-llm.call")]});
    }
    e.to_string()
}

/// An event with a prompt of `kb` KiB (the store keeps it in overflow
/// pages) and its markers in the middle of it.
pub fn big_event(user: &str, n: usize, kb: usize) -> String {
    let mut e: serde_json::Value = serde_json::from_str(&event(user, n, "llm.call")).unwrap();
    let filler = "lorem ipsum dolor sit amet ".repeat(kb * 1024 / 27 / 2);
    e["llm"]["messages"][0]["content"] =
        format!("{filler} please {} {filler}", markers(user, n)[0]).into();
    e.to_string()
}

/// Stores `lines` as one batch received at `received_ns`.
pub fn store_lines(store: &Store, received_ns: i64, lines: &[String]) {
    let batch = lines.join("\n");
    let parsed = ingest::parse_batch(batch.as_bytes());
    assert_eq!(parsed.invalid, 0);
    let done = store.insert("agent-1", received_ns, &parsed.rows).unwrap();
    assert_eq!(done.accepted, lines.len() as u64);
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The files under `dir` whose raw bytes contain `needle`.
pub fn grep(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
        .collect()
}

/// Every line of every closed segment under an archive directory (read
/// with the store's key when sealed), as JSON.
pub fn archive_lines(
    dir: &Path,
    key: Option<&aitrail_collector::store::keys::Secret>,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in files_under(dir) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".ndjson.zst") || name.ends_with(".ndjson.zst.enc")) {
            continue;
        }
        segment::for_each_line(std::fs::File::open(&p).unwrap(), key, |l| {
            out.push(serde_json::from_slice(l).unwrap());
            Ok(())
        })
        .unwrap();
    }
    out
}

pub fn ids(lines: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

pub fn archive_config(dir: &Path, max_bytes: u64) -> ArchiveConfig {
    ArchiveConfig {
        dir: dir.to_owned(),
        segment_max_bytes: max_bytes,
        segment_max_age: Duration::from_hours(1),
        retention: None,
        s3: None,
    }
}

pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}
