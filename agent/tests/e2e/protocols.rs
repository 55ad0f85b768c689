//! Protocols and APIs beyond HTTP/1.1 chat: HTTP/2, the Responses API
//! (over HTTPS and over a WebSocket), Gemini.

use aitrail::event::Event;

use super::*;

// ------------------------------------------------------------------ HTTP/2

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn curl_http2_plain_and_streamed() {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("h2");
    let pki = make_cert(&dir);
    let mut mock = MockServer::start_h2(&dir, &pki);
    let body = |stream: bool| {
        serde_json::json!({
            "model": "gpt-4o-mini",
            "stream": stream,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "You are the aitrail h2 test."},
                {"role": "user", "content": format!("Read it.\nFILE: /tmp/h2-{stream}.txt\n")},
            ],
            "tools": [{"type": "function", "function": {"name": "read_file",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}],
        })
        .to_string()
    };
    // One curl, two requests on one HTTP/2 connection (`--next`): a plain
    // one, then a streamed one.
    let request = |b: String| {
        vec![
            "--http2".to_string(),
            "--compressed".into(),
            "--cacert".into(),
            pki.ca.display().to_string(),
            "-H".into(),
            format!("Authorization: Bearer {OPENAI_KEY}"),
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data-binary".into(),
            b,
            format!("{}/v1/chat/completions", mock.base_url),
        ]
    };
    let mut args = vec!["-sS".to_string(), "--fail-with-body".into()];
    args.extend(request(body(false)));
    args.push("--next".into());
    args.extend(request(body(true)));
    let mut client = Launched::spawn(&dir, "h2", &common::curl(), &args, &[]);
    let mut daemon = Daemon::start(&dir, client.pid());
    client.release();
    let out = client.wait_success(CLIENT_TIMEOUT);
    assert!(out.contains("read_file"), "curl output: {out}");
    common::grace();
    daemon.stop();
    mock.stop();
    common::assert_no_secrets(&daemon);

    let ev = Events::read(&daemon.events);
    let mut c = Checker::default();
    let calls = ev.llm_calls();
    c.eq("llm.calls over h2", 2, calls.len());
    for (e, stream) in calls.iter().zip([false, true]) {
        let l = e.llm.as_ref().expect("llm");
        c.eq("path", "/v1/chat/completions", l.path.as_str());
        c.eq("provider", "openai", l.provider.as_str());
        c.eq("stream", stream, l.stream);
        c.eq("status", Some(200), l.status);
        c.eq("model", Some("gpt-4o-mini"), l.model.as_deref());
        c.check(l.api_key_id.is_some(), || "no api_key_id".into());
        let want = format!("/tmp/h2-{stream}.txt");
        c.check(
            l.output
                .tool_calls
                .iter()
                .any(|t| t.name == "read_file" && t.arguments.contains(&want)),
            || {
                format!(
                    "stream={stream}: no read_file tool call for {want}: {:?}",
                    l.output.tool_calls
                )
            },
        );
        c.check(l.usage.output_tokens.is_some(), || {
            format!("stream={stream}: no usage")
        });
    }
    c.finish(&ev, &[], "curl --http2");
}

// ------------------------------------------------------------------ more APIs

/// Runs one client (held by the launcher) under the daemon against the
/// HTTP/1.1 mock, and returns the events and the client's output.
fn run_client(
    name: &str,
    program: &str,
    args: impl FnOnce(&MockServer, &common::Pki, &str) -> Vec<String>,
    env: impl FnOnce(&common::Pki) -> Vec<(&'static str, String)>,
    secrets: &[&str],
) -> (Events, String) {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new(name);
    let pki = make_cert(&dir);
    let mut mock = MockServer::start(&dir, &pki);
    let file = dir.join("work/notes.txt").display().to_string();
    let args = args(&mock, &pki, &file);
    let env = env(&pki);
    let mut client = Launched::spawn(&dir, name, program, &args, &env);
    let mut daemon = Daemon::start(&dir, client.pid());
    client.release();
    let out = client.wait_success(CLIENT_TIMEOUT);
    common::grace();
    daemon.stop();
    mock.stop();
    common::assert_no_secrets(&daemon);
    let hits = common::find_secrets(&daemon.dir, secrets);
    assert!(
        hits.is_empty(),
        "secrets reached disk:\n{}",
        hits.join("\n")
    );
    (Events::read(&daemon.events), out)
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn openai_responses_api_with_the_python_sdk() {
    let script = common::repo_root().join("tests/clients/responses_sdk.py");
    let (ev, out) = run_client(
        "responses",
        &python(),
        |mock, pki, file| {
            vec![
                script.display().to_string(),
                "--base-url".into(),
                mock.base_url.clone(),
                "--ca".into(),
                pki.ca.display().to_string(),
                "--file".into(),
                file.to_owned(),
            ]
        },
        |_| vec![("OPENAI_API_KEY", OPENAI_KEY.to_string())],
        &[],
    );
    let mut c = Checker::default();
    let calls = ev.llm_calls();
    c.eq("llm.calls", 2, calls.len());
    for (e, stream) in calls.iter().zip([false, true]) {
        let l = e.llm.as_ref().expect("llm");
        c.eq("operation", "responses", l.operation.as_str());
        c.eq("provider", "openai", l.provider.as_str());
        c.eq("stream", stream, l.stream);
        c.eq("model", Some("gpt-5-mini"), l.model.as_deref());
        c.check(
            l.response_id.as_deref().is_some_and(|id| out.contains(id)),
            || {
                format!(
                    "stream={stream}: response_id {:?} not in the client's output {out}",
                    l.response_id
                )
            },
        );
        c.check(
            l.system
                .as_ref()
                .is_some_and(|s| s.text.contains("aitrail responses test")),
            || format!("stream={stream}: instructions not the system prompt"),
        );
        c.check(
            l.output
                .tool_calls
                .iter()
                .any(|t| t.name == "read_file" && t.arguments.contains("notes.txt")),
            || {
                format!(
                    "stream={stream}: no read_file call: {:?}",
                    l.output.tool_calls
                )
            },
        );
        c.check(l.usage.input_tokens.is_some(), || {
            format!("stream={stream}: no usage")
        });
    }
    c.finish(&ev, &[], "responses API");
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn gemini_stream_generate_content_with_node_fetch() {
    let script = common::repo_root().join("tests/clients/gemini_fetch.js");
    let key = "AIzaSyAITRAIL-SECRET-0123456789abcdefXYZ";
    let (ev, out) = run_client(
        "gemini",
        &common::node(),
        |mock, _, file| {
            vec![
                script.display().to_string(),
                "--base-url".into(),
                mock.base_url.clone(),
                "--file".into(),
                file.to_owned(),
            ]
        },
        |pki| {
            vec![
                ("NODE_EXTRA_CA_CERTS", pki.ca.display().to_string()),
                ("GEMINI_API_KEY", key.to_string()),
            ]
        },
        &[key],
    );
    assert!(out.contains("read_file"), "client output: {out}");
    let mut c = Checker::default();
    let calls = ev.llm_calls();
    c.eq("llm.calls", 1, calls.len());
    if let Some(e) = calls.first() {
        let l = e.llm.as_ref().expect("llm");
        c.eq("provider", "gemini", l.provider.as_str());
        c.eq("stream", true, l.stream);
        c.eq("model", Some("gemini-2.5-flash"), l.model.as_deref());
        c.check(l.api_key_id.is_some(), || {
            "no api_key_id from x-goog-api-key".into()
        });
        c.check(
            l.output
                .tool_calls
                .iter()
                .any(|t| t.name == "read_file" && t.arguments.contains("notes.txt")),
            || format!("no read_file call: {:?}", l.output.tool_calls),
        );
        c.check(l.usage.output_tokens.is_some(), || {
            "no usageMetadata".into()
        });
    }
    c.finish(&ev, &[], "gemini");
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn an_mcp_tools_call_over_https_becomes_a_tool_call() {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("mcp");
    let pki = make_cert(&dir);
    let mut mock = MockServer::start_mcp(&dir, &pki);
    let file = dir.join("work/mcp-notes.txt");
    std::fs::write(&file, "notes for the mcp test\n").expect("write work file");
    let script = common::repo_root().join("tests/clients/mcp_client.py");
    let args = vec![
        script.display().to_string(),
        "--url".into(),
        format!("{}/mcp", mock.base_url),
        "--ca".into(),
        pki.ca.display().to_string(),
        "--file".into(),
        file.display().to_string(),
    ];
    let mut client = Launched::spawn(&dir, "mcp", &python(), &args, &[]);
    let mut daemon = Daemon::start(&dir, client.pid());
    client.release();
    let out = client.wait_success(CLIENT_TIMEOUT);
    let session = out
        .lines()
        .find_map(|l| l.strip_prefix("session "))
        .expect("the client printed its session")
        .to_owned();
    common::grace();
    daemon.stop();
    mock.stop();
    common::assert_no_secrets(&daemon);

    let methods: Vec<String> = mock
        .records()
        .iter()
        .flat_map(|r| r["methods"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect();
    assert!(
        methods.iter().any(|m| m == "tools/call"),
        "the mock saw {methods:?}"
    );

    let ev = Events::read(&daemon.events);
    let mut c = Checker::default();
    let calls: Vec<_> = ev.of_kind(kind::TOOL_CALL);
    c.eq("tool.call events (one tools/call)", 1, calls.len());
    if let Some(e) = calls.first() {
        let t = e.tool.as_ref().expect("tool");
        c.eq("name", "read_file", t.name.as_str());
        c.eq("call id", "7", t.call_id.as_str());
        c.check(t.arguments.contains("mcp-notes.txt"), || {
            format!("arguments: {}", t.arguments)
        });
        c.check(
            t.result
                .as_deref()
                .is_some_and(|r| r.contains("notes for the mcp test")),
            || format!("result: {:?}", t.result),
        );
        let mcp = serde_json::to_value(t).expect("json")["mcp"].clone();
        c.eq(
            "mcp.method",
            "tools/call",
            mcp["method"].as_str().unwrap_or(""),
        );
        c.eq(
            "mcp.session",
            session.as_str(),
            mcp["session"].as_str().unwrap_or(""),
        );
        c.eq(
            "mcp.server.port",
            u64::from(mock.port),
            mcp["server"]["port"].as_u64().unwrap_or(0),
        );
    }
    c.finish(&ev, &[], "mcp");
}

// ------------------------------------------------------------------ WebSocket

/// The Responses API's WebSocket mode: a python `websockets` client over
/// python's ssl (OpenSSL uprobes) does two turns on one socket with
/// permessage-deflate (context takeover), really running the command the
/// model asked for in between.
#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn responses_api_over_websocket_with_permessage_deflate() {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("ws");
    let pki = make_cert(&dir);
    let mut mock = MockServer::start_ws(&dir, &pki);
    let marker = dir.join("work/ws-marker.txt");
    std::fs::write(&marker, "ws-was-here\n").expect("write marker");
    let command = format!("cat {}", marker.display());
    let script = common::repo_root().join("tests/clients/responses_ws.py");
    let args = vec![
        script.display().to_string(),
        "--url".into(),
        format!("wss://127.0.0.1:{}/v1/responses", mock.port),
        "--ca".into(),
        pki.ca.display().to_string(),
        "--command".into(),
        command.clone(),
    ];
    let env = [("OPENAI_API_KEY", OPENAI_KEY.to_string())];
    let mut client = Launched::spawn(&dir, "ws", &python(), &args, &env);
    let mut daemon = Daemon::start(&dir, client.pid());
    client.release();
    let out = client.wait_success(CLIENT_TIMEOUT);
    common::grace();
    daemon.stop();
    mock.stop();
    common::assert_no_secrets(&daemon);
    assert!(
        out.contains("EXTENSIONS permessage-deflate"),
        "the socket did not negotiate permessage-deflate: {out}"
    );
    let call_id = out
        .lines()
        .find_map(|l| l.strip_prefix("CALL "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the client printed no CALL line: {out}"))
        .to_owned();
    let ids: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("RESPONSE "))
        .collect();

    let ev = Events::read(&daemon.events);
    let mut c = Checker::default();
    let calls = ev.llm_calls();
    c.eq("llm.calls on the socket", 2, calls.len());
    for (i, e) in calls.iter().enumerate() {
        let l = e.llm.as_ref().expect("llm");
        c.eq("provider", "openai", l.provider.as_str());
        c.eq("operation", "responses", l.operation.as_str());
        c.eq("transport", Some("websocket"), l.transport.as_deref());
        c.eq("path", "/v1/responses", l.path.as_str());
        c.eq("stream", true, l.stream);
        c.eq("truncated", false, l.truncated);
        c.eq("model", Some("gpt-5-mini"), l.model.as_deref());
        c.eq("usage.input", Some(57), l.usage.input_tokens);
        c.eq("usage.output", Some(23), l.usage.output_tokens);
        c.check(l.api_key_id.is_some(), || {
            format!("call {i}: no api_key_id")
        });
        c.eq("response_id", ids.get(i).copied(), l.response_id.as_deref());
    }
    let mut tool_span = None;
    if let [first, second] = calls[..] {
        let l = first.llm.as_ref().expect("llm");
        c.check(
            l.system
                .as_ref()
                .is_some_and(|s| s.text.contains("aitrail WebSocket test agent")),
            || "first turn: instructions not the system prompt".into(),
        );
        c.eq(
            "reasoning",
            Some("Deciding what to run."),
            l.output.reasoning.as_deref(),
        );
        c.check(
            l.output.tool_calls.iter().any(|t| {
                t.id == call_id && t.name == "run_command" && t.arguments.contains(&command)
            }),
            || {
                format!(
                    "first turn: no run_command {call_id}: {:?}",
                    l.output.tool_calls
                )
            },
        );
        let l2 = second.llm.as_ref().expect("llm");
        c.eq(
            "previous_response_id",
            l.response_id.as_deref(),
            l2.previous_response_id.as_deref(),
        );
        c.check(l2.output.text.contains("ws-was-here"), || {
            format!(
                "second turn: the answer {:?} lacks the command output",
                l2.output.text
            )
        });
        let tools: Vec<&Event> = ev
            .of_kind(kind::TOOL_CALL)
            .into_iter()
            .filter(|e| e.tool.as_ref().is_some_and(|t| t.call_id == call_id))
            .collect();
        c.eq("tool.calls for the call", 1, tools.len());
        if let Some(t) = tools.first() {
            c.eq(
                "tool.call parent",
                Some(first.span_id.as_str()),
                t.parent_span_id.as_deref(),
            );
            let tc = t.tool.as_ref().expect("tool");
            c.eq("tool name", "run_command", tc.name.as_str());
            c.check(
                tc.result
                    .as_deref()
                    .is_some_and(|r| r.contains("ws-was-here")),
                || format!("tool result {:?}", tc.result),
            );
            tool_span = Some((t.span_id.clone(), tc.effects.clone()));
        }
    }
    // The command the client ran for the model (`/bin/sh -c CMD`; the
    // launcher's own exec carries CMD among the client's arguments): a
    // child span of the tool call, and one of its effects.
    let execs: Vec<&Event> = ev
        .of_kind(kind::PROCESS_EXEC)
        .into_iter()
        .filter(|e| {
            e.exec
                .as_ref()
                .is_some_and(|x| x.args.len() == 3 && x.args[1] == "-c" && x.args[2] == command)
        })
        .collect();
    c.check(!execs.is_empty(), || format!("no exec of `{command}`"));
    if let (Some(x), Some((span, effects))) = (execs.first(), &tool_span) {
        c.eq(
            "exec parent",
            Some(span.as_str()),
            x.parent_span_id.as_deref(),
        );
        c.check(effects.contains(&x.id), || {
            format!(
                "the exec {} is not among the tool's effects {effects:?}",
                x.id
            )
        });
    }
    // Nothing on the socket went unread.
    match ev
        .of_kind(kind::AGENT_HEALTH)
        .last()
        .and_then(|h| h.health.as_ref())
    {
        Some(h) => {
            let ws: Vec<_> = h
                .dropped
                .iter()
                .filter(|(k, _)| k.starts_with("ws_"))
                .collect();
            c.check(ws.is_empty(), || format!("WebSocket drops: {ws:?}"));
        }
        None => c.fail("no agent.health".into()),
    }
    c.finish(&ev, &[], "responses API over WebSocket");
}
