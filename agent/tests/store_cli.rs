//! The store commands of the `aitrail` binary, run as a user would:
//! `tail -f` (follows, filters, stops on SIGINT and when its reader goes
//! away), `release`, `forget`, `search --kind tombstone|release`, `keygen`,
//! `store-encrypt`, `archive cat|ls`. No privileges needed.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use aitrail_collector::{
    ingest,
    store::{archive::Archiver, ArchiveConfig, Store, StoreOptions},
};

fn aitrail() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aitrail"))
}

fn run(args: &[&str]) -> Output {
    aitrail().args(args).output().expect("run aitrail")
}

fn ok_lines(args: &[&str]) -> Vec<serde_json::Value> {
    let out = run(args);
    assert!(
        out.status.success(),
        "aitrail {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("NDJSON"))
        .collect()
}

fn event(id: &str, user: &str, kind: &str, words: &str) -> String {
    let mut e = serde_json::json!({
        "v": 1, "id": id, "time": "2026-11-27T12:00:00Z", "kind": kind,
        "host": {"name": "h1", "id": "x"}, "trace_id": format!("{:0>32}", id.len()),
        "severity": if kind == "finding" { "high" } else { "info" },
        "process": {"pid": 7, "user": user},
        "llm": {"messages": [{"role": "user", "content": words}]},
    });
    if kind == "finding" {
        e["finding"] =
            serde_json::json!({"rule": "secret.in_prompt", "title": "Secret", "evidence": []});
    }
    e.to_string()
}

fn put(store: &Store, lines: &[String]) {
    let parsed = ingest::parse_batch(lines.join("\n").as_bytes());
    assert_eq!(parsed.invalid, 0);
    store.insert("test", 1, &parsed.rows).unwrap();
}

/// Lines of a child's stdout, through a channel (reads never block the
/// test).
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_id(rx: &mpsc::Receiver<String>) -> String {
    let l = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a line from tail");
    let v: serde_json::Value = serde_json::from_str(&l).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("aitrail tail did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigint(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGINT) };
    assert_eq!(rc, 0);
}

fn tail(dir: &Path, extra: &[&str]) -> Child {
    aitrail()
        .args(["tail", "-f", "--interval-ms", "50", "--store"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn tail_follows_new_events_through_filters_and_stops_on_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir).unwrap();
    put(
        &store,
        &[
            event("old-1", "bob", "llm.call", "one"),
            event("old-2", "bob", "file.open", "two"),
            event("old-3", "bob", "llm.call", "three"),
            event("old-4", "bob", "llm.call", "four"),
        ],
    );
    let mut child = tail(&dir, &["-n", "2", "--kind", "llm.call"]);
    let rx = lines_of(&mut child);
    assert_eq!(next_id(&rx), "old-3");
    assert_eq!(next_id(&rx), "old-4");
    // Events stored while it follows: the matching ones, in store order.
    for round in 0..3 {
        put(
            &store,
            &[
                event(&format!("new-{round}-a"), "bob", "llm.call", "x"),
                event(&format!("new-{round}-b"), "bob", "process.exec", "x"),
                event(&format!("new-{round}-c"), "alice", "llm.call", "x"),
            ],
        );
        assert_eq!(next_id(&rx), format!("new-{round}-a"));
        assert_eq!(next_id(&rx), format!("new-{round}-c"));
    }
    // A large burst comes through whole, page by page.
    let burst: Vec<String> = (0..1200)
        .map(|i| event(&format!("burst-{i:04}"), "bob", "llm.call", "y"))
        .collect();
    put(&store, &burst);
    for i in 0..1200 {
        assert_eq!(next_id(&rx), format!("burst-{i:04}"));
    }
    sigint(&child);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success(), "tail exited with {status}");
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "nothing more"
    );
}

#[test]
fn tail_exits_when_its_reader_goes_away() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open(&dir).unwrap();
    put(&store, &[event("e1", "bob", "llm.call", "one")]);
    // Idle, the reader closes the pipe: tail notices without a write.
    let mut child = tail(&dir, &[]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(first.contains("\"e1\""));
    drop(out);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success(), "idle tail: {status}");
    // Busy, a write hits the closed pipe (EPIPE): exit 0, no error spew.
    let mut child = tail(&dir, &[]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    drop(out);
    put(&store, &[event("e2", "bob", "llm.call", "two")]);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(status.success(), "busy tail: {status}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!err.contains("Error"), "{err}");
}

#[test]
fn release_forget_and_their_records_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let d = dir.to_str().unwrap();
    {
        let store = Store::open(&dir).unwrap();
        put(
            &store,
            &[
                event("a-call", "alice", "llm.call", "alicemarkerq1"),
                event("a-find", "alice", "finding", "alicemarkerq2"),
                event("b-call", "bob", "llm.call", "bobmarkerq3"),
            ],
        );
    }
    // Held: refused, with what to do.
    let out = run(&["forget", "--user", "alice", "--yes", "--store", d]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("still held") && err.contains("a-find"),
        "{err}"
    );
    // No --yes and no terminal: refused.
    let out = aitrail()
        .args(["forget", "--user", "alice", "--store", d])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));

    let rep = ok_lines(&["release", "a-find", "--note", "case closed", "--store", d]);
    assert_eq!(rep[0]["released"], 1);
    let out = run(&["release", "no-such-id", "--store", d]);
    assert!(!out.status.success(), "an unknown id is an error");

    let stone = ok_lines(&[
        "forget", "--user", "alice", "--yes", "--reason", "ticket 9", "--store", d,
    ]);
    assert_eq!(stone[0]["kind"], "tombstone");
    assert_eq!(stone[0]["tombstone"]["events_deleted"], 2);
    assert!(stone[0]["tombstone"]["by"]
        .as_str()
        .unwrap()
        .starts_with("cli:"));
    assert!(ok_lines(&["search", "alicemarkerq1", "--store", d]).is_empty());
    assert_eq!(ok_lines(&["search", "bobmarkerq3", "--store", d]).len(), 1);
    let found = ok_lines(&[
        "search",
        "--kind",
        "tombstone",
        "--user",
        "alice",
        "--store",
        d,
    ]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], stone[0]["id"]);
    assert!(!found[0].to_string().contains("alice"));
    let releases = ok_lines(&["search", "--kind", "release", "--store", d]);
    assert_eq!(releases[0]["release"]["note"], "case closed");
    // tail does not follow the audit log.
    assert!(!run(&["tail", "--kind", "tombstone", "--store", d])
        .status
        .success());
}

#[test]
fn keygen_store_encrypt_and_archive_cat_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let d = dir.to_str().unwrap();
    {
        let store = Store::open_with(
            &dir,
            StoreOptions {
                key: None,
                archive: Some(ArchiveConfig {
                    dir: dir.join("archive"),
                    segment_max_bytes: 1 << 20,
                    segment_max_age: Duration::from_hours(1),
                    retention: None,
                    s3: None,
                }),
            },
        )
        .unwrap();
        put(
            &store,
            &(0..20)
                .map(|i| {
                    event(
                        &format!("e{i}"),
                        "bob",
                        "llm.call",
                        &format!("plainword{i}"),
                    )
                })
                .collect::<Vec<_>>(),
        );
        let mut a = Archiver::new(&store).unwrap();
        a.step().unwrap();
        a.close().unwrap();
    }
    let key = tmp.path().join("store.key");
    let k = key.to_str().unwrap();
    assert!(run(&["keygen", k]).status.success());
    assert!(!run(&["keygen", k]).status.success(), "never overwritten");
    let out = run(&["store-encrypt", "--store", d, "--key-file", k]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Encrypted: no word on disk in the database, searchable with the key.
    let db = std::fs::read(dir.join("events.db")).unwrap();
    assert!(!db.windows(10).any(|w| w == b"plainword1"));
    assert!(!run(&["search", "plainword3", "--store", d])
        .status
        .success());
    let hits = ok_lines(&["search", "plainword3", "--store", d, "--key-file", k]);
    assert_eq!(hits.len(), 1);
    // The archive's segments, listed and read back.
    let segs = ok_lines(&["archive", "ls", "--store", d, "--key-file", k]);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0]["events"], 20);
    let file = segs[0]["local"].as_str().unwrap();
    let lines = ok_lines(&["archive", "cat", file]);
    assert_eq!(lines.len(), 20);
    assert_eq!(lines[0]["id"], "e0");
}
