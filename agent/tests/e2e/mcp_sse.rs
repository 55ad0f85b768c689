//! MCP's older HTTP+SSE transport (protocol 2024-11-05) with the official
//! `mcp` Python SDK at both ends, over TLS: the client `GET`s `/sse`, whose
//! first event names `/messages/?session_id=…`; it `POST`s its requests
//! there (`202 Accepted`) and reads the answers as `event: message` on the
//! stream. The daemon watches the client only; each `tools/call` must come
//! out as one `tool.call` with the result the stream carried for its id.

use aitrail::event::Event;

use super::*;

/// The SDK's venv (tests/setup-test-deps.sh, tests/clients/requirements-mcp.txt).
const MCP_SDK_VENV: &str = "mcp-venv-2.3.0";

fn mcp_sdk_python() -> String {
    let cache = std::env::var_os("AITRAIL_TEST_CACHE").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            std::path::Path::new(&home).join(".cache/aitrail-tests")
        },
        std::path::PathBuf::from,
    );
    let py = cache.join(MCP_SDK_VENV).join("bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run tests/setup-test-deps.sh (it installs the pinned mcp SDK)",
        py.display()
    );
    py.display().to_string()
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn mcp_tools_calls_over_http_sse_get_their_results_from_the_stream() {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("mcp-sse");
    let pki = make_cert(&dir);
    let py = mcp_sdk_python();
    let mut server = MockServer::start_mcp_sse(&dir, &pki, &py);
    let file = dir.join("work/mcp-sse-notes.txt");
    std::fs::write(&file, "notes for the sse test\n").expect("write work file");
    let script = common::repo_root().join("tests/clients/mcp_sse_client.py");
    let args = vec![
        script.display().to_string(),
        "--url".into(),
        format!("{}/sse", server.base_url),
        "--ca".into(),
        pki.ca.display().to_string(),
        "--file".into(),
        file.display().to_string(),
    ];
    let mut client = Launched::spawn(&dir, "mcp-sse", &py, &args, &[]);
    let mut daemon = Daemon::start(&dir, client.pid());
    client.release();
    let out = client.wait_success(CLIENT_TIMEOUT);
    let session = out
        .lines()
        .find_map(|l| l.strip_prefix("session "))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("the client printed no session: {out}"))
        .to_owned();
    assert!(out.contains("notes for the sse test"), "client: {out}");
    assert!(out.contains("unknown True"), "client: {out}");
    common::grace();
    daemon.stop();
    server.stop();
    common::assert_no_secrets(&daemon);

    let ev = Events::read(&daemon.events);
    let mut c = Checker::default();
    let calls: Vec<&Event> = ev.of_kind(kind::TOOL_CALL);
    c.eq("tool.call events (two tools/call)", 2, calls.len());
    let named = |name: &str| {
        calls
            .iter()
            .find(|e| e.tool.as_ref().is_some_and(|t| t.name == name))
            .copied()
    };
    for e in &calls {
        let t = e.tool.as_ref().expect("tool");
        let mcp = serde_json::to_value(t).expect("json")["mcp"].clone();
        c.eq(
            "mcp.transport",
            "sse",
            mcp["transport"].as_str().unwrap_or(""),
        );
        c.eq(
            "mcp.session",
            session.as_str(),
            mcp["session"].as_str().unwrap_or(""),
        );
        c.eq(
            "mcp.method",
            "tools/call",
            mcp["method"].as_str().unwrap_or(""),
        );
        c.eq(
            "mcp.path",
            format!("/messages/?session_id={session}"),
            mcp["path"].as_str().unwrap_or("").to_owned(),
        );
        c.eq(
            "mcp.server.port",
            u64::from(server.port),
            mcp["server"]["port"].as_u64().unwrap_or(0),
        );
        c.check(!t.truncated, || format!("{} truncated", t.name));
        c.check(t.arguments.contains("mcp-sse-notes.txt"), || {
            format!("{} arguments: {}", t.name, t.arguments)
        });
    }
    if let Some(e) = named("read_file") {
        let t = e.tool.as_ref().expect("tool");
        c.check(
            t.result
                .as_deref()
                .is_some_and(|r| r.contains("notes for the sse test")),
            || format!("read_file result: {:?}", t.result),
        );
        c.eq("read_file is_error", Some(false), t.is_error);
    } else {
        c.fail("no read_file tool.call".into());
    }
    if let Some(e) = named("delete_file") {
        let t = e.tool.as_ref().expect("tool");
        c.eq("delete_file is_error", Some(true), t.is_error);
        c.check(
            t.result
                .as_deref()
                .is_some_and(|r| r.contains("Unknown tool")),
            || format!("delete_file result: {:?}", t.result),
        );
    } else {
        c.fail("no delete_file tool.call".into());
    }
    if let Some(h) = ev
        .of_kind(kind::AGENT_HEALTH)
        .last()
        .and_then(|h| h.health.as_ref())
    {
        c.eq("mcp_sse_joined", Some(&2), h.counters.get("mcp_sse_joined"));
        c.eq(
            "mcp_sse_unanswered",
            Some(&0),
            h.dropped.get("mcp_sse_unanswered"),
        );
    } else {
        c.fail("no agent.health".into());
    }
    c.finish(&ev, &[], "mcp http+sse");
}
