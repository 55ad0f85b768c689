//! MCP `tools/call`s: placed in the caller's trace, under the model's call.

use super::*;
use crate::event::McpInfo;

fn mcp_obs(name: &str, args: &str, tgid: u32, t: u64) -> McpObservation {
    McpObservation {
        tool: ToolCall {
            call_id: "7".into(),
            name: name.into(),
            arguments: args.into(),
            result: Some("hello".into()),
            is_error: Some(false),
            mcp: Some(McpInfo {
                method: "tools/call".into(),
                ..McpInfo::default()
            }),
            ..ToolCall::default()
        },
        process: None,
        tgid,
        start_ns: t,
        end_ns: t + 5,
    }
}

fn user(text: &str) -> Vec<Message> {
    vec![msg("user", text)]
}

#[test]
fn mcp_call_is_a_child_of_the_model_call_it_carries_out() {
    let mut c = Correlator::new(Envelope::new(), 1_000_000_000_000);
    let out = c.on_llm_call(obs(
        call(
            user("read two files"),
            vec![
                spec("call_a", "mcp__files__read_file", r#"{"path":"/a"}"#),
                spec("call_b", "mcp__files__read_file", r#"{"path": "/b"}"#),
            ],
        ),
        100,
        1000,
    ));
    let trace = out[0].trace_id.clone();

    // Arguments compared as JSON: key order and spacing do not matter.
    let ev = c.on_mcp_call(mcp_obs("read_file", r#"{ "path" : "/b" }"#, 100, 2000));
    assert_eq!(ev.kind, kind::TOOL_CALL);
    assert_eq!(ev.trace_id, trace);
    let b_span = c.pending[1].span_id.clone();
    assert_eq!(ev.parent_span_id.as_deref(), Some(b_span.as_str()));
    let tool = ev.tool.as_ref().unwrap();
    assert!((tool.confidence - 0.9).abs() < 1e-9);
    assert_eq!(tool.reasons, ["mcp call, arguments match: call_b"]);
    assert_eq!(tool.mcp.as_ref().unwrap().method, "tools/call");

    // The model's call lists the MCP call as an effect when it is emitted.
    let next = c.on_llm_call(obs(
        call(
            vec![
                msg("user", "read two files"),
                Message {
                    role: "tool".into(),
                    content: "hello".into(),
                    tool_call_id: Some("call_b".into()),
                    ..Message::default()
                },
            ],
            Vec::new(),
        ),
        100,
        3000,
    ));
    let model_call = next
        .iter()
        .find(|e| e.tool.as_ref().is_some_and(|t| t.call_id == "call_b"))
        .unwrap();
    let t = model_call.tool.as_ref().unwrap();
    assert_eq!(t.effects, std::slice::from_ref(&ev.id));
    assert_eq!(t.reasons, ["mcp call, arguments match"]);
    assert!((t.confidence - 0.9).abs() < 1e-9);
}

#[test]
fn name_alone_matches_only_a_single_candidate() {
    let mut c = Correlator::new(Envelope::new(), 1_000_000_000_000);
    let out = c.on_llm_call(obs(
        call(
            user("read"),
            vec![spec("call_1", "read_file", r#"{"path":"/a"}"#)],
        ),
        100,
        1000,
    ));
    // The agent rewrote the arguments (a default filled in).
    let ev = c.on_mcp_call(mcp_obs(
        "read_file",
        r#"{"path":"/a","encoding":"utf-8"}"#,
        100,
        2000,
    ));
    assert_eq!(
        ev.parent_span_id.as_deref(),
        Some(c.pending[0].span_id.as_str())
    );
    assert!((ev.tool.as_ref().unwrap().confidence - 0.7).abs() < 1e-9);
    assert_eq!(ev.trace_id, out[0].trace_id);

    // A second MCP call does not take the same model call again: it stays
    // in the caller's trace, with no parent.
    let again = c.on_mcp_call(mcp_obs("read_file", r#"{"path":"/a"}"#, 100, 2100));
    assert_eq!(again.trace_id, out[0].trace_id);
    assert_eq!(again.parent_span_id, None);
    assert!(again.tool.as_ref().unwrap().reasons.is_empty());
}

#[test]
fn other_tools_names_and_processes_do_not_match() {
    let mut c = Correlator::new(Envelope::new(), 1_000_000_000_000);
    let out = c.on_llm_call(obs(
        call(
            user("x"),
            vec![
                spec("c1", "unread_file", r#"{"path":"/a"}"#),
                spec("c2", "read_file_v2", r#"{"path":"/a"}"#),
            ],
        ),
        100,
        1000,
    ));
    let ev = c.on_mcp_call(mcp_obs("read_file", r#"{"path":"/a"}"#, 100, 2000));
    assert_eq!(ev.trace_id, out[0].trace_id);
    assert_eq!(ev.parent_span_id, None);

    // An MCP server (or any process that never called a model): a trace
    // of its own.
    let server = c.on_mcp_call(mcp_obs("read_file", r#"{"path":"/a"}"#, 555, 2000));
    assert_ne!(server.trace_id, out[0].trace_id);
    assert_eq!(server.parent_span_id, None);
}

#[test]
fn a_tool_child_process_calling_mcp_acts_for_its_caller() {
    let mut c = Correlator::new(Envelope::new(), 1_000_000_000_000);
    c.on_llm_call(obs(
        call(
            user("x"),
            vec![spec("c1", "files.read_file", r#"{"path":"/a"}"#)],
        ),
        100,
        1000,
    ));
    c.on_fork(100, 200);
    let ev = c.on_mcp_call(mcp_obs("read_file", r#"{"path":"/a"}"#, 200, 2000));
    assert_eq!(
        ev.parent_span_id.as_deref(),
        Some(c.pending[0].span_id.as_str())
    );
}
