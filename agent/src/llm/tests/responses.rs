//! OpenAI Responses API fixtures.
#![allow(clippy::wildcard_imports, reason = "the parent test module's helpers")]

use super::*;

const INSTRUCTIONS: &str = "You are a coding agent. Use tools.";
const SUMMARY: &str = "**Listing files**\n\nThe user wants the files in /tmp; run_shell fits.";

fn ls_call() -> ToolCallSpec {
    spec(
        "call_Qk7mW2xR9vB4nT1pL6sD3fH8",
        "run_shell",
        r#"{"command":"ls -la /tmp"}"#,
    )
}

#[test]
fn plain_function_call_after_reasoning() {
    let c = call("openai_responses_function_call");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("openai", "responses")
    );
    assert_eq!(
        (c.server.host.as_str(), c.server.port),
        ("api.openai.com", 443)
    );
    assert_eq!(c.path, "/v1/responses");
    assert_eq!(c.model.as_deref(), Some("gpt-5"));
    assert!(!c.stream);
    assert_eq!(c.status, Some(200));
    let system = c.system.as_ref().unwrap();
    assert_eq!(system.text, INSTRUCTIONS);
    assert_eq!(system.sha256, sha(INSTRUCTIONS));
    assert_eq!(
        c.messages,
        [Message {
            role: "user".into(),
            content: "What is in /tmp?".into(),
            ..Message::default()
        }]
    );
    assert_eq!(c.tools, ["run_shell", "web_search"]);
    assert_eq!(c.api_user.as_deref(), Some("user-42"));
    assert_eq!(c.api_key_id, Some(fingerprint_key(OPENAI_KEY)));
    assert_eq!(
        c.response_id.as_deref(),
        Some("resp_68a59d8a2b0c8190aa11bb22cc33dd44")
    );
    assert_eq!(c.previous_response_id, None);
    assert_eq!(c.output.text, "");
    assert_eq!(c.output.tool_calls, [ls_call()]);
    assert_eq!(c.output.reasoning.as_deref(), Some(SUMMARY));
    assert_eq!(c.output.refusal, None);
    assert_eq!(c.output.finish_reason.as_deref(), Some("completed"));
    assert_eq!(
        (
            c.usage.input_tokens,
            c.usage.output_tokens,
            c.usage.reasoning_tokens
        ),
        (Some(84), Some(147), Some(128))
    );
    assert_eq!(c.input_count, None);
    assert!(c.latency_ms.is_some() && c.ttft_ms.is_none());
    assert!(!c.truncated);
    assert_eq!(c.error, None);
}

#[test]
fn stream_with_reasoning_summary_and_argument_deltas() {
    let c = call("openai_responses_stream_function_call_reasoning");
    assert_eq!(c.operation, "responses");
    assert!(c.stream);
    assert_eq!(c.system.as_ref().unwrap().text, INSTRUCTIONS);
    assert_eq!(c.messages.len(), 1);
    assert_eq!(
        (c.messages[0].role.as_str(), c.messages[0].content.as_str()),
        ("user", "What is in /tmp?")
    );
    assert_eq!(c.tools, ["run_shell"]);
    assert_eq!(
        c.response_id.as_deref(),
        Some("resp_68a59e01aa0c8190bb22cc33dd44ee55")
    );
    assert_eq!(c.output.tool_calls, [ls_call()]);
    assert_eq!(c.output.reasoning.as_deref(), Some(SUMMARY));
    assert_eq!(c.output.text, "");
    assert_eq!(c.output.finish_reason.as_deref(), Some("completed"));
    assert_eq!(
        (
            c.usage.input_tokens,
            c.usage.output_tokens,
            c.usage.reasoning_tokens
        ),
        (Some(75), Some(141), Some(128))
    );
    assert!(c.ttft_ms.is_some());
    assert!(!c.truncated);
    assert_eq!(c.error, None);
}

/// Without `response.completed` the answer is rebuilt from the deltas.
#[test]
fn stream_cut_before_completion_keeps_the_deltas() {
    let mut ex = only_exchange("llm/openai_responses_stream_function_call_reasoning.cap");
    let resp = ex.response.as_mut().unwrap();
    let body = String::from_utf8(resp.body.clone()).unwrap();
    // Cut in the middle of the arguments.
    let cut = body
        .find("event: response.function_call_arguments.done")
        .unwrap();
    let cut = body[..cut]
        .rfind("event: response.function_call_arguments.delta")
        .unwrap();
    resp.body.truncate(cut);
    resp.body_truncated = true;
    resp.body_cut = true;
    let c = decode(&ex).unwrap().unwrap();
    assert!(c.truncated);
    assert_eq!(
        c.output.tool_calls,
        [spec(
            "call_Qk7mW2xR9vB4nT1pL6sD3fH8",
            "run_shell",
            r#"{"command":"ls -la"#
        )]
    );
    assert_eq!(c.output.reasoning.as_deref(), Some(SUMMARY));
    assert_eq!(c.output.finish_reason, None);
    assert_eq!(
        c.response_id.as_deref(),
        Some("resp_68a59e01aa0c8190bb22cc33dd44ee55")
    );
    assert_eq!(c.usage.input_tokens, None);
}

#[test]
fn follow_up_carries_the_tool_result_and_the_previous_response() {
    let c = call("openai_responses_followup_function_call_output");
    assert_eq!(
        c.previous_response_id.as_deref(),
        Some("resp_68a59d8a2b0c8190aa11bb22cc33dd44")
    );
    assert_eq!(
        c.response_id.as_deref(),
        Some("resp_68a59d9d4e2e8190dd44ee55ff667788")
    );
    // The result closes the call of the earlier answer.
    assert_eq!(
        c.messages,
        [Message {
            role: "tool".into(),
            content: "total 8\ndrwxrwxrwt  2 root root 4096 Aug 20 09:00 .\n".into(),
            tool_call_id: Some(ls_call().id),
            ..Message::default()
        }]
    );
    assert_eq!(c.output.text, "/tmp is empty.");
    assert!(c.output.tool_calls.is_empty());
    assert_eq!(c.output.reasoning, None);
    assert_eq!(
        (
            c.usage.input_tokens,
            c.usage.output_tokens,
            c.usage.reasoning_tokens
        ),
        (Some(260), Some(9), None)
    );
    assert!(!c.truncated);
}

#[test]
fn refusal_part() {
    let c = call("openai_responses_refusal");
    assert_eq!(c.model.as_deref(), Some("gpt-4o"));
    assert_eq!(c.system, None);
    assert_eq!(
        c.messages[0].content,
        "Write ransomware that encrypts a disk."
    );
    assert_eq!(
        c.output.refusal.as_deref(),
        Some("I'm sorry, but I can't help with that.")
    );
    assert_eq!(c.output.text, "");
    assert_eq!(c.output.finish_reason.as_deref(), Some("completed"));
    assert_eq!(c.tools, Vec::<String>::new());
}

#[test]
fn stream_that_fails() {
    let c = call("openai_responses_stream_failed");
    assert!(c.stream);
    assert_eq!(c.status, Some(200));
    assert_eq!(
        c.error.as_deref(),
        Some("server_error: An error occurred while processing your request. You can retry your request, or contact us through our help center at help.openai.com if the error persists.")
    );
    assert_eq!(c.output.finish_reason.as_deref(), Some("failed"));
    assert_eq!(c.output.text, "");
    assert_eq!(
        c.response_id.as_deref(),
        Some("resp_68a5a0b2cc3d8190ff66778899aabbcc")
    );
    // A failure ends the stream: not a truncation.
    assert!(!c.truncated);
}

#[test]
fn error_500() {
    let c = call("openai_responses_error_500");
    assert_eq!(c.status, Some(500));
    let e = c.error.unwrap();
    assert!(
        e.starts_with("server_error: The server had an error processing your request."),
        "{e}"
    );
    assert_eq!(c.response_id, None);
    assert_eq!(c.messages[0].content, "hi");
    assert!(!c.truncated);
}

/// Codex resends the whole conversation (`store: false`): assistant
/// message items and the calls that follow them are one assistant turn,
/// flattened as the answer that produced it was.
#[test]
fn resent_history_groups_an_assistant_turn_like_its_answer() {
    let body = r#"{"model":"gpt-5-codex","store":false,"instructions":"sys","input":[
        {"type":"message","role":"developer","content":[{"type":"input_text","text":"env: linux"}]},
        {"type":"message","role":"user","content":[{"type":"input_text","text":"fix it"}]},
        {"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAAA"},
        {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Looking."}]},
        {"type":"function_call","call_id":"call_1","name":"shell","arguments":"{\"command\":[\"ls\"]}"},
        {"type":"custom_tool_call","call_id":"call_2","name":"apply_patch","input":"*** Begin Patch"},
        {"type":"function_call_output","call_id":"call_1","output":"a.rs"},
        {"type":"custom_tool_call_output","call_id":"call_2","output":[{"type":"input_text","text":"ok"}]},
        {"type":"local_shell_call","call_id":"call_3","action":{"type":"exec","command":["pwd"]}},
        {"type":"local_shell_call_output","id":"call_3","output":"/src"}
    ],"tools":[{"type":"function","name":"shell"},{"type":"custom","name":"apply_patch"},
        {"type":"local_shell"},{"type":"mcp","server_label":"docs"}]}"#;
    let c = decode(&exchange("POST", "/v1/responses", &[], body, None))
        .unwrap()
        .unwrap();
    assert_eq!(c.system.as_ref().unwrap().text, "sys\nenv: linux");
    assert_eq!(c.tools, ["shell", "apply_patch", "local_shell", "mcp:docs"]);
    let flat: Vec<_> = c
        .messages
        .iter()
        .map(|m| {
            (
                m.role.as_str(),
                m.content.as_str(),
                m.tool_call_id.as_deref(),
                m.tool_calls
                    .iter()
                    .map(|t| t.id.as_str())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        flat,
        [
            ("developer", "env: linux", None, vec![]),
            ("user", "fix it", None, vec![]),
            ("assistant", "Looking.", None, vec!["call_1", "call_2"]),
            ("tool", "a.rs", Some("call_1"), vec![]),
            ("tool", "ok", Some("call_2"), vec![]),
            ("assistant", "", None, vec!["call_3"]),
            ("tool", "/src", Some("call_3"), vec![]),
        ]
    );
    assert_eq!(
        c.messages[5].tool_calls[0],
        spec(
            "call_3",
            "local_shell",
            r#"{"command":["pwd"],"type":"exec"}"#
        )
    );
    assert_eq!(c.messages[2].tool_calls[1].arguments, "*** Begin Patch");
}

#[test]
fn incomplete_by_content_filter_is_a_refusal() {
    let resp = json_response(
        200,
        r#"{"id":"resp_9","object":"response","status":"incomplete","incomplete_details":{"reason":"content_filter"},"output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Step one"}]}],"usage":{"input_tokens":5,"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0}}}"#,
    );
    let ex = exchange(
        "POST",
        "/openai/v1/responses",
        &[("Host", "contoso.openai.azure.com")],
        r#"{"model":"gpt-4.1","input":"x"}"#,
        Some(resp),
    );
    let c = decode(&ex).unwrap().unwrap();
    assert_eq!(c.provider, "azure.openai");
    assert_eq!(c.output.finish_reason.as_deref(), Some("content_filter"));
    assert_eq!(c.output.refusal.as_deref(), Some("content_filter"));
    assert_eq!(c.output.text, "Step one");
    assert_eq!(c.usage.reasoning_tokens, None);
}

#[test]
fn error_event_ends_a_stream() {
    let mut resp = json_response(
        200,
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\nevent: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"Slow down\",\"param\":null,\"sequence_number\":3}\n\n",
    );
    resp.headers = vec![("Content-Type".into(), "text/event-stream".into())];
    let ex = exchange(
        "POST",
        "/v1/responses",
        &[],
        r#"{"model":"m","input":"x","stream":true}"#,
        Some(resp),
    );
    let c = decode(&ex).unwrap().unwrap();
    assert_eq!(c.output.text, "Hi");
    assert_eq!(c.error.as_deref(), Some("rate_limit_exceeded: Slow down"));
    assert!(!c.truncated);
}
