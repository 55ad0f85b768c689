//! Tests of the MCP decoder, from captures in tests/fixtures/mcp run
//! through the HTTP parser exactly as the daemon does, and properties on
//! hostile bodies.

use proptest::prelude::*;

use super::{
    decode, is_mcp_jsonrpc, may_be_mcp, JoinKey, McpCall, McpExchange, SseJoin, Transport,
    MAX_MESSAGES, MAX_TEXT_BYTES,
};
use crate::event::Role;
use crate::http::testutil::{exchanges, fixture, fixture_names, only_exchange, run};
use crate::http::{Exchange, Limits, Request, Response};

const HOST: &str = "mcp.files.example.com";
const SESSION: &str = "6c0c1b3e-5e5d-4a48-9a8e-0f6b2d3c4a51";
const LEGACY_SESSION: &str = "9f2e4c1a7b3d4e5f8a6b0c2d1e3f4a5b";

fn mcp(name: &str) -> McpExchange {
    let ex = only_exchange(&format!("mcp/{name}.cap"));
    let m = decode(&ex).unwrap_or_else(|| panic!("{name}: not recognised as MCP"));
    assert!(m.problems.is_empty(), "{name}: {:?}", m.problems);
    m
}

fn only_call(m: &McpExchange) -> &McpCall {
    assert_eq!(m.calls.len(), 1, "{:?}", m.calls);
    &m.calls[0]
}

fn assert_streamable(m: &McpExchange, version: Option<&str>, status: u16) {
    assert_eq!(m.role, Role::Client);
    assert_eq!((m.server.host.as_str(), m.server.port), (HOST, 443));
    assert_eq!(m.path, "/mcp");
    assert_eq!(m.transport, Transport::StreamableHttp);
    assert_eq!(m.session.as_deref(), Some(SESSION));
    assert_eq!(m.protocol_version.as_deref(), version);
    assert_eq!(m.status, Some(status));
}

#[test]
fn initialize_is_mcp_without_a_call_and_takes_the_assigned_session() {
    let m = mcp("mcp_initialize");
    // No MCP header on initialize: recognised by its JSON-RPC method; the
    // session is the one the server assigned in its answer.
    assert_streamable(&m, None, 200);
    assert!(m.calls.is_empty());
    assert_eq!(m.other, ["initialize", "response"]);
}

#[test]
fn notification_answered_202_without_body() {
    let m = mcp("mcp_notification_accepted");
    assert_streamable(&m, Some("2025-06-18"), 202);
    assert!(m.calls.is_empty());
    assert_eq!(m.other, ["notifications/initialized"]);
}

#[test]
fn tools_list_is_counted_not_a_call() {
    let m = mcp("mcp_tools_list");
    assert_streamable(&m, Some("2025-06-18"), 200);
    assert!(m.calls.is_empty());
    assert_eq!(m.other, ["tools/list", "response"]);
}

#[test]
fn tools_call_json() {
    let m = mcp("mcp_tools_call_json");
    assert_streamable(&m, Some("2025-06-18"), 200);
    assert!(m.other.is_empty());
    assert_eq!(
        only_call(&m),
        &McpCall {
            id: "2".into(),
            name: "read_file".into(),
            arguments: r#"{"path":"/srv/app/README.md"}"#.into(),
            result: Some("# app\nA demo service.\n".into()),
            is_error: Some(false),
            error: None,
            truncated: false,
        }
    );
    let info = m.info(&m.calls[0]);
    assert_eq!(info.method, "tools/call");
    assert_eq!(info.transport, "streamable_http");
    assert_eq!(info.session.as_deref(), Some(SESSION));
    assert_eq!(info.status, Some(200));
    assert_eq!(info.error, None);
}

#[test]
fn tools_call_sse_with_progress_and_mixed_content() {
    let m = mcp("mcp_tools_call_sse");
    assert_streamable(&m, Some("2025-06-18"), 200);
    assert_eq!(m.other, ["notifications/progress"]);
    assert_eq!(
        only_call(&m),
        &McpCall {
            id: "call-7".into(),
            name: "read_file".into(),
            arguments: r#"{"path":"/srv/app/logo.png"}"#.into(),
            result: Some(
                "logo.png, 2 KiB\n[image image/png]\nalt: the app logo\n\
                 [resource_link file:///srv/app/logo.svg]"
                    .into()
            ),
            is_error: Some(false),
            error: None,
            truncated: false,
        }
    );
}

#[test]
fn batch_pairs_results_by_id() {
    let m = mcp("mcp_batch");
    assert_streamable(&m, Some("2025-03-26"), 200);
    assert_eq!(m.other, ["notifications/roots/list_changed"]);
    let got: Vec<_> = m
        .calls
        .iter()
        .map(|c| {
            (
                c.id.as_str(),
                c.arguments.as_str(),
                c.result.as_deref(),
                c.is_error,
                c.truncated,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "10",
                r#"{"path":"/srv/app/a.txt"}"#,
                Some("ay"),
                Some(false),
                false
            ),
            (
                "11",
                r#"{"path":"/srv/app/b.txt"}"#,
                Some("bee"),
                Some(false),
                false
            ),
        ]
    );
}

#[test]
fn is_error_result() {
    let m = mcp("mcp_tools_call_is_error");
    let c = only_call(&m);
    assert_eq!(c.id, "3");
    assert_eq!(c.arguments, r#"{"path":"/etc/shadow"}"#);
    assert_eq!(c.result.as_deref(), Some("permission denied: /etc/shadow"));
    assert_eq!(c.is_error, Some(true));
    assert_eq!(c.error, None);
    assert!(!c.truncated);
}

#[test]
fn jsonrpc_error() {
    let m = mcp("mcp_jsonrpc_error");
    let c = only_call(&m);
    assert_eq!((c.id.as_str(), c.name.as_str()), ("4", "delete_file"));
    assert_eq!(c.result, None);
    assert_eq!(c.is_error, Some(true));
    assert_eq!(
        c.error.as_deref(),
        Some("-32602: Unknown tool: delete_file")
    );
    assert!(!c.truncated);
    assert_eq!(
        m.info(c).error.as_deref(),
        Some("-32602: Unknown tool: delete_file")
    );
}

#[test]
fn structured_content_when_no_content() {
    let m = mcp("mcp_structured_content");
    let c = only_call(&m);
    assert_eq!(c.name, "stat_file");
    assert_eq!(c.result.as_deref(), Some(r#"{"mode":"0644","size":2}"#));
    assert_eq!(c.is_error, Some(false));
}

#[test]
fn server_side_role() {
    let m = mcp("mcp_server_side");
    assert_eq!(m.role, Role::Server);
    assert_eq!(m.info(only_call(&m)).role, Role::Server);
    let c = only_call(&m);
    assert_eq!((c.id.as_str(), c.result.as_deref()), ("6", Some("# app")));
}

#[test]
fn legacy_post_has_the_call_without_its_result() {
    let m = mcp("mcp_legacy_sse_post");
    assert_eq!(m.transport, Transport::Sse);
    assert_eq!(
        m.path,
        "/messages/?session_id=9f2e4c1a7b3d4e5f8a6b0c2d1e3f4a5b"
    );
    assert_eq!(m.session.as_deref(), Some(LEGACY_SESSION));
    assert_eq!(m.protocol_version, None);
    assert_eq!(m.status, Some(202));
    let c = only_call(&m);
    assert_eq!((c.id.as_str(), c.name.as_str()), ("8", "read_file"));
    assert_eq!(c.result, None);
    assert_eq!(c.is_error, None);
    // Not cut: the answer is on the stream, joined by `SseJoin`.
    assert!(!c.truncated);
    assert!(m.answers.is_empty());
    assert_eq!(m.info(c).transport, "sse");
}

#[test]
fn legacy_stream_keeps_its_answers_by_id_and_names_its_session() {
    let m = mcp("mcp_legacy_sse_stream");
    assert_eq!(m.transport, Transport::Sse);
    assert_eq!(m.path, "/sse");
    // From the endpoint its first event names.
    assert_eq!(m.session.as_deref(), Some(LEGACY_SESSION));
    assert!(m.calls.is_empty());
    assert!(m.other.is_empty(), "{:?}", m.other);
    assert_eq!(
        m.answers,
        [McpCall {
            id: "8".into(),
            result: Some("# app".into()),
            is_error: Some(false),
            ..McpCall::default()
        }]
    );
}

#[test]
fn a_whole_legacy_session_stream_answers_every_request_by_id() {
    let m = mcp("mcp_legacy_sse_session_stream");
    assert_eq!(m.transport, Transport::Sse);
    assert_eq!(m.session.as_deref(), Some(LEGACY_SESSION));
    assert_eq!(m.status, Some(200));
    let ids: Vec<&str> = m.answers.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["0", "1", "8", "9"]);
    assert_eq!(m.answers[2].result.as_deref(), Some("# app"));
    assert_eq!(m.answers[2].is_error, Some(false));
    assert_eq!(m.answers[3].result, None);
    assert_eq!(m.answers[3].is_error, Some(true));
    assert_eq!(
        m.answers[3].error.as_deref(),
        Some("-32602: Unknown tool: delete_file")
    );
    // The log notification; the ping comment is no message.
    assert_eq!(m.other, ["notifications/message"]);
}

/// The two halves of each call, from their captures, through `SseJoin` as
/// the pipeline does: held when posted, released with the stream's answer.
#[test]
fn legacy_posts_are_joined_to_their_answers_on_the_stream() {
    use crate::event::{kind, ToolCall};
    use crate::util::Envelope;

    let env = Envelope::new();
    let mut join = SseJoin::new(16, u64::MAX);
    let key = |m: &McpExchange| JoinKey {
        tgid: 77,
        host: m.server.host.clone(),
        port: m.server.port,
        session: m.session.clone().expect("a session"),
    };
    for name in ["mcp_legacy_sse_post", "mcp_legacy_sse_post_unknown_tool"] {
        let m = mcp(name);
        let c = only_call(&m);
        let mut ev = env.event(kind::TOOL_CALL, 1, None);
        ev.tool = Some(ToolCall {
            mcp: Some(m.info(c)),
            call_id: c.id.clone(),
            name: c.name.clone(),
            arguments: c.arguments.clone(),
            ..ToolCall::default()
        });
        assert!(join.hold(key(&m), c.id.clone(), ev, 1).is_empty());
    }
    let stream = mcp("mcp_legacy_sse_session_stream");
    let out = join.answer(&key(&stream), &stream.answers, true, 2);
    assert_eq!(out.len(), 2);
    assert!(join.is_empty());
    assert_eq!((join.joined, join.released_unanswered), (2, 0));
    let t8 = out[0].tool.as_ref().unwrap();
    assert_eq!(
        (t8.call_id.as_str(), t8.result.as_deref(), t8.is_error),
        ("8", Some("# app"), Some(false))
    );
    assert!(!t8.truncated);
    let t9 = out[1].tool.as_ref().unwrap();
    assert_eq!((t9.call_id.as_str(), t9.is_error), ("9", Some(true)));
    assert_eq!(
        t9.mcp.as_ref().unwrap().error.as_deref(),
        Some("-32602: Unknown tool: delete_file")
    );
    assert_eq!(t9.mcp.as_ref().unwrap().transport, "sse");
}

#[test]
fn other_jsonrpc_is_not_mcp() {
    let ex = only_exchange("mcp/jsonrpc_not_mcp.cap");
    assert!(decode(&ex).is_none());
    assert!(matches!(crate::llm::decode(&ex), Ok(None)));
}

#[test]
fn llm_fixtures_are_not_mcp() {
    for name in fixture_names("llm") {
        for ex in exchanges(&run(&fixture(&name), Limits::default())) {
            assert!(decode(&ex).is_none(), "{name}");
        }
    }
}

// ------------------------------------------------------------ hand-made

fn exchange(headers: &[(&str, &str)], body: &str, resp: Option<(&str, &[u8])>) -> Exchange {
    let mut h = vec![("Host".to_owned(), HOST.to_owned())];
    h.extend(
        headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Exchange {
        role: Role::Client,
        request: Request {
            method: "POST".into(),
            path: "/mcp".into(),
            headers: h,
            body: body.as_bytes().to_vec(),
            ..Request::default()
        },
        response: resp.map(|(ct, b)| Response {
            status: 200,
            headers: vec![("Content-Type".into(), ct.into())],
            body: b.to_vec(),
            ..Response::default()
        }),
        t_request_start: 1,
        t_request_end: 2,
        t_response_start: None,
        t_first_body: None,
        t_response_end: Some(3),
        truncated: false,
        websocket: false,
    }
}

#[test]
fn bad_json_with_mcp_headers_is_counted() {
    let ex = exchange(&[("Mcp-Session-Id", "s")], "{not json", None);
    let m = decode(&ex).unwrap();
    assert_eq!(m.problems.len(), 1);
    assert_eq!(m.problems[0].name(), "mcp_bad_request_json");
    let ex = exchange(&[], "{not json", None);
    assert!(decode(&ex).is_none());
}

#[test]
fn bad_stream_event_is_counted_and_the_rest_read() {
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
    let body = b"data: {oops\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}}\n\n";
    let m = decode(&exchange(&[], call, Some(("text/event-stream", body)))).unwrap();
    assert_eq!(m.problems[0].name(), "mcp_bad_stream_json");
    assert_eq!(m.calls[0].arguments, "{}");
    assert_eq!(m.calls[0].result.as_deref(), Some("ok"));
}

#[test]
fn long_results_and_arguments_are_capped() {
    let big = "é".repeat(MAX_TEXT_BYTES);
    let call = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"x","arguments":{"a":big}}})
    .to_string();
    let answer = serde_json::json!({"jsonrpc":"2.0","id":1,
        "result":{"content":[{"type":"text","text":big}]}})
    .to_string();
    let m = decode(&exchange(
        &[],
        &call,
        Some(("application/json", answer.as_bytes())),
    ))
    .unwrap();
    let c = &m.calls[0];
    assert!(c.truncated);
    assert!(c.arguments.len() <= MAX_TEXT_BYTES);
    assert!(c.result.as_ref().unwrap().len() <= MAX_TEXT_BYTES);
}

#[test]
fn huge_batches_are_bounded() {
    let one = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
    let body = format!("[{}]", vec![one; MAX_MESSAGES + 10].join(","));
    let m = decode(&exchange(&[], &body, None)).unwrap();
    assert_eq!(m.calls.len(), MAX_MESSAGES);
    assert_eq!(m.problems[0].name(), "mcp_too_many_messages");
}

#[test]
fn unanswerable_error_fails_every_call() {
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#;
    let answer = br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;
    let m = decode(&exchange(&[], call, Some(("application/json", answer)))).unwrap();
    assert_eq!(m.calls[0].error.as_deref(), Some("-32700: Parse error"));
    assert_eq!(m.calls[0].is_error, Some(true));
}

/// JSON-RPC-looking text: most random bytes fail at the first byte.
fn jsonish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(r#"{"jsonrpc":"2.0","#.to_owned()),
        Just(r#""id":"#.to_owned()),
        Just(r#""method":"tools/call","#.to_owned()),
        Just(r#""params":{"name":"a","arguments":"#.to_owned()),
        Just(r#""result":{"content":[{"type":"text","text":"t"},"#.to_owned()),
        Just(r#""isError":true"#.to_owned()),
        Just(r#""error":{"code":1}"#.to_owned()),
        Just("data: ".to_owned()),
        Just("event: endpoint\n".to_owned()),
        Just("\n\n".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("}".to_owned()),
        Just(",".to_owned()),
        "[0-9a-z\"{}:,\\[\\] ]{0,8}",
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// What the full decode finds of a body no header vouches for: whether
/// it is JSON-RPC of MCP's.
fn value_says_mcp(body: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(items)) => is_mcp_jsonrpc(&items),
        Ok(v @ serde_json::Value::Object(_)) => is_mcp_jsonrpc(&[v]),
        _ => false,
    }
}

#[test]
fn the_skim_says_maybe_to_every_mcp_body_and_no_to_llm_requests() {
    for name in fixture_names("mcp") {
        for ex in exchanges(&run(&fixture(&name), Limits::default())) {
            let body = &ex.request.body;
            if value_says_mcp(body) {
                assert!(may_be_mcp(body), "{name}");
            }
        }
    }
    let mut llm_requests = 0;
    for name in fixture_names("llm") {
        for ex in exchanges(&run(&fixture(&name), Limits::default())) {
            // What the skim is for: a model's request costs no tree
            // (unless it is not JSON, which the full decode then reports).
            let body = &ex.request.body;
            if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
                assert!(!may_be_mcp(body), "{name}");
                llm_requests += 1;
            }
        }
    }
    assert!(llm_requests >= 40, "{llm_requests}");
    for (body, maybe) in [
        (r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#, true),
        (" \r\n\t[{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}]", true),
        // Escaped key and value: the skim reads them as the full decode does.
        (
            r#"{"json\u0072pc":"2\u002e0","method":"tools\/list"}"#,
            true,
        ),
        (r#"{"jsonrpc":"2.0","method":"eth_call"}"#, false),
        // Neither the key's bytes nor an escape: no JSON-RPC.
        (
            r#"{"model":"m","messages":[{"role":"user","content":"tools/call"}]}"#,
            false,
        ),
        (r#"{"json\"rpc":"2.0","method":"ping"}"#, false),
        (r#"{"jsonrpc":"1.0","method":"tools/call"}"#, false),
        (
            r#"[{"jsonrpc":"2.0","method":"tools/call"},{"method":"ping"}]"#,
            false,
        ),
        ("[]", false),
        ("\"tools/call\"", false),
        ("\u{feff}{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}", false),
        // Not the types the skim reads, or a key twice: "may be", and
        // the full decode decides.
        (r#"{"jsonrpc":2.0,"method":"tools/call"}"#, true),
        (r#"{"jsonrpc":"1.0","jsonrpc":"2.0","method":"ping"}"#, true),
        (r#"[{"jsonrpc":"2.0","method":"ping"},7]"#, true),
    ] {
        assert_eq!(may_be_mcp(body.as_bytes()), maybe, "{body}");
        if !maybe {
            assert!(!value_says_mcp(body.as_bytes()), "{body}");
        }
    }
}

/// JSON-RPC messages with every field varied: the skim's subject.
fn jsonrpc_body() -> impl Strategy<Value = String> {
    let version = prop_oneof![
        Just(r#""jsonrpc":"2.0","#),
        Just(r#""jsonrpc":"1.0","#),
        Just(r#""jsonrpc":2,"#),
        Just(r#""jsonrpc":null,"#),
        Just(r#""json\u0072pc":"2.0","#),
        Just(""),
    ];
    let method = prop_oneof![
        Just(r#""method":"tools/call","#),
        Just(r#""method":"initialize","#),
        Just(r#""method":"eth_call","#),
        Just(r#""method":["ping"],"#),
        Just(r#""method":null,"#),
        Just(r#""method":"ping","method":"x","#),
        Just(""),
    ];
    let rest = prop_oneof![
        Just(r#""id":1"#),
        Just(r#""id":1,"params":{"name":"a","arguments":{"b":[1,2,{"c":"\u00e9"}]}}"#),
        Just(r#""result":{"content":[]}"#),
        Just(r#""id":"#),
    ];
    let message = (version, method, rest).prop_map(|(v, m, r)| format!("{{{v}{m}{r}}}"));
    prop_oneof![
        message.clone(),
        proptest::collection::vec(message, 0..4).prop_map(|v| format!("[{}]", v.join(","))),
        jsonish(),
    ]
    .prop_map(|b| format!(" {b}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The skim says "not MCP" only of bodies the full decode finds are
    /// not MCP's.
    #[test]
    fn the_skim_never_turns_away_what_the_full_decode_takes(body in jsonrpc_body()) {
        if !may_be_mcp(body.as_bytes()) {
            prop_assert!(!value_says_mcp(body.as_bytes()), "{}", body);
        }
    }

    /// Any bodies, JSON-like or raw, with or without MCP headers, as JSON
    /// or SSE: decoding returns, within its bounds.
    #[test]
    fn decode_is_total(
        req in prop_oneof![jsonish(), ".{0,200}"],
        resp in prop_oneof![jsonish().prop_map(String::into_bytes),
                            proptest::collection::vec(any::<u8>(), 0..300)],
        headers in any::<bool>(),
        sse in any::<bool>(),
        get in any::<bool>(),
        cut in any::<bool>(),
        legacy in any::<bool>(),
    ) {
        let h: &[(&str, &str)] = if headers { &[("MCP-Protocol-Version", "2025-06-18")] } else { &[] };
        let ct = if sse { "text/event-stream" } else { "application/json" };
        // The older transport: a stream that opens with its endpoint, and
        // posts to that endpoint.
        let resp = if legacy {
            [b"event: endpoint\r\ndata: /messages/?session_id=s1\r\n\r\n".as_slice(), &resp].concat()
        } else {
            resp
        };
        let mut ex = exchange(h, &req, Some((ct, &resp)));
        if legacy {
            ex.request.path = "/messages/?session_id=s1".into();
        }
        if get {
            ex.request.method = "GET".into();
        }
        if let Some(r) = &mut ex.response {
            r.body_truncated = cut;
        }
        if let Some(m) = decode(&ex) {
            prop_assert!(m.calls.len() + m.answers.len() <= MAX_MESSAGES);
            if m.transport != Transport::Sse {
                prop_assert!(m.answers.is_empty());
            }
            for c in m.calls.iter().chain(&m.answers) {
                prop_assert!(c.arguments.len() <= MAX_TEXT_BYTES);
                prop_assert!(c.result.as_ref().is_none_or(|r| r.len() <= MAX_TEXT_BYTES));
            }
            for p in &m.problems {
                prop_assert!(p.name().starts_with("mcp_"));
            }
        }
    }
}
