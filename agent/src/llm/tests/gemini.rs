//! Gemini fixtures.
#![allow(clippy::wildcard_imports, reason = "the parent test module's helpers")]

use super::*;

const GEMINI_KEY: &str = "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY";
const SYSTEM: &str = "You are Gemini CLI, an interactive CLI agent.";

#[test]
fn generate_content_with_function_calls() {
    let c = call("gemini_generate_function_call");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("gemini", "generate_content")
    );
    assert_eq!(
        (c.server.host.as_str(), c.server.port),
        ("generativelanguage.googleapis.com", 443)
    );
    assert_eq!(c.path, "/v1beta/models/gemini-2.5-pro:generateContent");
    assert_eq!(c.model.as_deref(), Some("gemini-2.5-pro"));
    assert!(!c.stream);
    assert_eq!(c.status, Some(200));
    assert_eq!(c.api_key_id, Some(fingerprint_key(GEMINI_KEY)));
    let system = c.system.as_ref().unwrap();
    assert_eq!(
        (system.text.as_str(), system.sha256.clone()),
        (SYSTEM, sha(SYSTEM))
    );
    assert_eq!(
        c.messages,
        [Message {
            role: "user".into(),
            content: "Show the disk usage and read /etc/hostname.".into(),
            ..Message::default()
        }]
    );
    assert_eq!(c.tools, ["run_shell_command", "read_file", "googleSearch"]);
    assert_eq!(c.api_user, None);
    assert_eq!(c.output.text, "Checking both.");
    // Ids are synthesised: position, then a hash of name and arguments.
    let ids: Vec<&str> = c.output.tool_calls.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["gemini-0-1fc45785", "gemini-1-567073e3"]);
    assert_eq!(
        c.output.tool_calls,
        [
            spec(ids[0], "run_shell_command", r#"{"command":"df -h"}"#),
            spec(ids[1], "read_file", r#"{"absolute_path":"/etc/hostname"}"#),
        ]
    );
    assert_eq!(c.output.finish_reason.as_deref(), Some("STOP"));
    assert_eq!(c.output.refusal, None);
    assert_eq!(c.output.reasoning, None);
    // Output counts the thoughts, as they are billed.
    assert_eq!(
        (
            c.usage.input_tokens,
            c.usage.output_tokens,
            c.usage.reasoning_tokens
        ),
        (Some(412), Some(43 + 96), Some(96))
    );
    assert_eq!(c.response_id, None);
    assert!(!c.truncated);
    assert_eq!(c.error, None);
}

/// The follow-up's function responses name the calls of the answer above
/// by the same synthesised ids, so the correlator closes them.
#[test]
fn follow_up_function_responses_match_the_calls() {
    let answer = call("gemini_generate_function_call");
    let c = call("gemini_followup_function_response");
    let history: Vec<_> = c
        .messages
        .iter()
        .map(|m| {
            (
                m.role.as_str(),
                m.content.as_str(),
                m.tool_call_id.as_deref(),
                m.is_error,
            )
        })
        .collect();
    let (a, b) = (
        answer.output.tool_calls[0].id.as_str(),
        answer.output.tool_calls[1].id.as_str(),
    );
    assert_eq!(
        history,
        [
            (
                "user",
                "Show the disk usage and read /etc/hostname.",
                None,
                None
            ),
            ("assistant", "Checking both.", None, None),
            (
                "tool",
                r#"{"output":"/dev/sda1  40G  12G  28G  30% /"}"#,
                Some(a),
                None
            ),
            (
                "tool",
                r#"{"error":"EACCES: permission denied"}"#,
                Some(b),
                Some(true)
            ),
        ]
    );
    // The replayed model turn decodes exactly as the answer did.
    assert_eq!(c.messages[1].tool_calls, answer.output.tool_calls);
    assert_eq!(
        c.output.text,
        "The root disk is 30% full; /etc/hostname could not be read."
    );
    assert!(c.output.tool_calls.is_empty());
    assert_eq!(
        (
            c.usage.input_tokens,
            c.usage.output_tokens,
            c.usage.reasoning_tokens
        ),
        (Some(530), Some(17), None)
    );
}

#[test]
fn stream_text_thoughts_and_usage_in_the_last_chunk() {
    let c = call("gemini_stream_text_usage");
    assert!(c.stream);
    assert_eq!(c.model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(
        c.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(c.messages[0].content, "Name three Linux init systems.");
    assert_eq!(c.system, None);
    assert_eq!(c.output.text, "systemd, OpenRC and runit.");
    assert_eq!(
        c.output.reasoning.as_deref(),
        Some("Listing well-known init systems.")
    );
    assert_eq!(c.output.finish_reason.as_deref(), Some("STOP"));
    assert_eq!(
        (
            c.usage.input_tokens,
            c.usage.output_tokens,
            c.usage.reasoning_tokens
        ),
        (Some(8), Some(9 + 57), Some(57))
    );
    assert!(c.ttft_ms.is_some());
    // No end marker in Gemini streams: the finish reason ends it.
    assert!(!c.truncated);
}

#[test]
fn safety_stop_is_a_refusal() {
    let c = call("gemini_safety_block");
    assert_eq!(c.output.finish_reason.as_deref(), Some("SAFETY"));
    assert_eq!(
        c.output.refusal.as_deref(),
        Some("SAFETY (HARM_CATEGORY_DANGEROUS_CONTENT=HIGH)")
    );
    assert_eq!(c.output.text, "");
    assert!(c.output.tool_calls.is_empty());
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(12), None)
    );
    assert!(!c.truncated);
    assert_eq!(c.error, None);
}

#[test]
fn rate_limit_429_with_the_key_in_the_query() {
    let c = call("gemini_error_429");
    assert_eq!(c.status, Some(429));
    assert_eq!(
        c.error.as_deref(),
        Some("rate_limit: RESOURCE_EXHAUSTED: You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.")
    );
    let key = fingerprint_key(GEMINI_KEY);
    assert_eq!(c.api_key_id.as_deref(), Some(key.as_str()));
    assert!(!c.path.contains(GEMINI_KEY), "{}", c.path);
    assert_eq!(c.model.as_deref(), Some("gemini-2.5-pro"));
    // A content without a role is the user's.
    assert_eq!(c.messages[0].role, "user");
}

#[test]
fn error_500_on_a_stream_request() {
    let c = call("gemini_error_500");
    assert_eq!(c.status, Some(500));
    assert!(c.stream, "asked for a stream, in the method");
    assert_eq!(
        c.error.as_deref(),
        Some("INTERNAL: An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting")
    );
    assert!(!c.truncated);
}

#[test]
fn blocked_prompt_and_a_list_body() {
    // streamGenerateContent without alt=sse answers a JSON list.
    let resp = json_response(
        200,
        r#"[{"promptFeedback":{"blockReason":"PROHIBITED_CONTENT","safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","probability":"MEDIUM"}]},"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7},"modelVersion":"gemini-2.0-flash"}]"#,
    );
    let ex = exchange(
        "POST",
        "/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.0-flash:streamGenerateContent",
        &[("Host", "us-central1-aiplatform.googleapis.com")],
        r#"{"contents":[{"role":"user","parts":[{"text":"x"}]}],"system_instruction":{"parts":[{"text":"s"}]}}"#,
        Some(resp),
    );
    let c = decode(&ex).unwrap().unwrap();
    assert_eq!(c.provider, "vertex_ai");
    assert_eq!(c.model.as_deref(), Some("gemini-2.0-flash"));
    assert_eq!(c.system.as_ref().unwrap().text, "s");
    assert_eq!(
        c.output.refusal.as_deref(),
        Some("prompt blocked: PROHIBITED_CONTENT (HARM_CATEGORY_HARASSMENT=MEDIUM)")
    );
    assert_eq!(c.output.finish_reason, None);
    assert_eq!(c.usage.input_tokens, Some(7));
}

#[test]
fn embed_content_batch() {
    let c = call("gemini_embed_content");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("gemini", "embeddings")
    );
    assert_eq!(c.model.as_deref(), Some("gemini-embedding-001"));
    assert_eq!(c.input_count, Some(2));
    assert!(c.messages.is_empty());
    assert_eq!(c.output, Output::default());
    assert_eq!((c.usage.input_tokens, c.usage.output_tokens), (None, None));
    assert!(!c.stream && !c.truncated);
    assert_eq!(c.error, None);
}

/// Gemini CLI replays the call with an id of its own, which the answer
/// never had: the replayed call still decodes to the answer's call, and
/// the function response that names the CLI's id answers it.
#[test]
fn gemini_cli_replayed_ids_answer_the_derived_call() {
    let answer = call("gemini_cli_stream_function_call");
    assert!(answer.stream);
    assert_eq!(answer.model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(answer.tools, ["read_file", "run_shell_command"]);
    // The two text parts of the user turn are one message.
    assert_eq!(answer.messages.len(), 1);
    assert!(answer.messages[0]
        .content
        .ends_with("</session_context>Count the lines of /etc/hosts."));
    assert_eq!(answer.output.tool_calls.len(), 1);
    let derived = answer.output.tool_calls[0].id.clone();
    assert!(derived.starts_with("gemini-0-"), "{derived}");
    assert_eq!(
        answer.output.tool_calls[0],
        spec(
            &derived,
            "run_shell_command",
            r#"{"command":"wc -l /etc/hosts"}"#
        )
    );
    assert_eq!(
        (answer.usage.input_tokens, answer.usage.output_tokens),
        (Some(8123), Some(27 + 64))
    );

    let c = call("gemini_cli_followup_replayed_id");
    let roles: Vec<&str> = c.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool"]);
    assert_eq!(c.messages[1].tool_calls, answer.output.tool_calls);
    let result = &c.messages[2];
    assert_eq!(result.tool_call_id.as_deref(), Some(derived.as_str()));
    assert!(result.content.contains("Output: 7 /etc/hosts"));
    assert_eq!(result.is_error, None);
    assert_eq!(c.output.text, "/etc/hosts has 7 lines.");
    assert_eq!(c.output.finish_reason.as_deref(), Some("STOP"));
}

/// The same two calls through the correlator: one trace, and the
/// `tool.call` closed with the CLI's result.
#[test]
fn gemini_cli_turn_closes_its_tool_call_in_one_trace() {
    use crate::correlate::{Correlator, LlmObservation};
    use crate::event::kind;
    use crate::util::Envelope;

    let obs = |call: LlmCall, t: u64| LlmObservation {
        call,
        process: None,
        tgid: 4242,
        start_ns: t,
        end_ns: t + 10,
    };
    let mut c = Correlator::new(Envelope::new(), 60_000_000_000);
    let first = c.on_llm_call(obs(call("gemini_cli_stream_function_call"), 1_000));
    assert_eq!(first.len(), 1);
    let second = c.on_llm_call(obs(call("gemini_cli_followup_replayed_id"), 2_000));
    assert_eq!(second.len(), 2, "llm.call, then the closed tool.call");
    assert_eq!(second[0].trace_id, first[0].trace_id, "one conversation");
    assert_eq!(second[1].kind, kind::TOOL_CALL);
    assert_eq!(second[1].trace_id, first[0].trace_id);
    assert_eq!(
        second[1].parent_span_id.as_deref(),
        Some(first[0].span_id.as_str())
    );
    let tool = second[1].tool.as_ref().unwrap();
    assert_eq!(tool.name, "run_shell_command");
    assert!(tool
        .result
        .as_deref()
        .is_some_and(|r| r.contains("Output: 7 /etc/hosts")));
}
