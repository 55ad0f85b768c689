//! One host: `aitrail run` into an embedded store, read back by
//! `aitrail search` and `aitrail trace`.

use super::*;

// ------------------------------------------------------------------ one host

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn aitrail_run_stores_events_that_search_and_trace_find() {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("run-store");
    let pki = make_cert(&dir);
    let mut mock = MockServer::start(&dir, &pki);
    let w = make_work(&dir, "run-store");
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": format!("Read it.\nFILE: {}\n", w.file)}],
        "tools": [{"type": "function", "function": {"name": "read_file",
            "parameters": {"type": "object", "properties": {}}}}],
    });
    let args = vec![
        "-sS".to_string(),
        "--fail-with-body".into(),
        "--cacert".into(),
        pki.ca.display().to_string(),
        "-H".into(),
        format!("Authorization: Bearer {OPENAI_KEY}"),
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        body.to_string(),
        format!("{}/v1/chat/completions", mock.base_url),
    ];
    let mut client = Launched::spawn(&dir, "run-store", &common::curl(), &args, &[]);
    let store = dir.join("daemon/store");
    let mut daemon = Daemon::start_command(
        &dir,
        "run",
        &[
            "--store".into(),
            store.display().to_string(),
            "--pid".into(),
            client.pid().to_string(),
        ],
    );
    client.release();
    client.wait_success(CLIENT_TIMEOUT);
    common::grace();
    daemon.stop();
    mock.stop();
    common::assert_no_secrets(&daemon);

    let aitrail = std::env::var("AITRAIL_E2E_DAEMON_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_aitrail").to_owned());
    let query = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = std::process::Command::new(&aitrail)
            .args(args)
            .args(["--store", &store.display().to_string()])
            .output()
            .expect("run aitrail");
        assert!(
            out.status.success(),
            "aitrail {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("NDJSON"))
            .collect()
    };
    let calls = query(&["search", "--kind", "llm.call"]);
    assert_eq!(calls.len(), 1, "llm.calls in the store: {calls:?}");
    assert_eq!(calls[0]["llm"]["model"], "gpt-4o-mini");
    // Full text: a word of the prompt finds it; a word it lacks does not.
    // (curl's exec and exit carry the body in their argv: they match too.)
    let found = query(&["search", "Read"]);
    assert!(found.iter().any(|e| e["kind"] == "llm.call"), "{found:?}");
    assert!(
        found.iter().all(|e| e["kind"] != "agent.health"),
        "{found:?}"
    );
    assert!(query(&["search", "--kind", "llm.call", "nonexistentword"]).is_empty());
    let trace = calls[0]["trace_id"].as_str().expect("trace id");
    let in_trace = query(&["trace", trace]);
    assert!(
        in_trace.iter().any(|e| e["kind"] == "llm.call"),
        "trace {trace}: {in_trace:?}"
    );
    // The file sink got the same events as the store.
    let file = Events::read(&daemon.events);
    let stored = query(&["search", "--limit", "1000"]);
    assert_eq!(
        stored.len(),
        file.all.len(),
        "store and file hold the same events"
    );
}
