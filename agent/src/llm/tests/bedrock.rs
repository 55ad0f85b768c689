//! Amazon Bedrock fixtures (tests/fixtures/llm/make_bedrock_fixtures.py).
#![allow(clippy::wildcard_imports, reason = "the parent test module's helpers")]

use super::*;

const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
const SYSTEM: &str = "You are a careful ops assistant.";

fn user(text: &str) -> Message {
    Message {
        role: "user".into(),
        content: text.into(),
        ..Message::default()
    }
}

#[test]
fn converse_tool_call() {
    let c = call("bedrock_converse_tool_use");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("aws.bedrock", "converse")
    );
    assert_eq!(
        (c.server.host.as_str(), c.server.port),
        ("bedrock-runtime.us-east-1.amazonaws.com", 443)
    );
    assert_eq!(
        c.path,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert_eq!(c.model.as_deref(), Some(MODEL));
    assert!(!c.stream);
    assert_eq!(c.status, Some(200));
    // The SigV4 access key id names the caller; the signature is not kept.
    assert_eq!(c.api_key_id, Some(fingerprint_key(ACCESS_KEY)));
    assert_eq!(c.system.as_ref().map(|s| s.text.as_str()), Some(SYSTEM));
    assert_eq!(c.messages, [user("How full is the root disk?")]);
    assert_eq!(c.tools, ["run_shell"]);
    assert_eq!(c.output.text, "I will check with df.");
    assert_eq!(
        c.output.tool_calls,
        [spec(
            "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
            "run_shell",
            r#"{"command":"df -h /"}"#
        )]
    );
    assert_eq!(c.output.finish_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(412), Some(58))
    );
    assert!(!c.truncated);
    assert_eq!(c.error, None);
}

#[test]
fn converse_tool_result_and_reasoning() {
    let c = call("bedrock_converse_tool_result");
    assert_eq!(c.messages.len(), 3);
    assert_eq!(
        c.messages[1].tool_calls,
        [spec(
            "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
            "run_shell",
            r#"{"command":"df -h /"}"#
        )]
    );
    let result = &c.messages[2];
    assert_eq!(result.role, "tool");
    assert_eq!(
        result.tool_call_id.as_deref(),
        Some("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q")
    );
    assert_eq!(
        result.content,
        "/dev/vda 252G 57G 35G 62% /\n{\"exit_code\":0}"
    );
    assert_eq!(result.is_error, Some(false));
    assert_eq!(c.output.text, "The root disk is 62% full.");
    assert_eq!(c.output.reasoning.as_deref(), Some("62% used, fine."));
    assert_eq!(c.output.finish_reason.as_deref(), Some("end_turn"));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(530), Some(21))
    );
}

#[test]
fn converse_stream_with_a_tool_call() {
    let c = call("bedrock_converse_stream_tool_use");
    assert_eq!(c.operation, "converse");
    assert!(c.stream);
    assert_eq!(c.model.as_deref(), Some(MODEL));
    assert_eq!(c.output.text, "Let me look.");
    assert_eq!(
        c.output.tool_calls,
        [spec(
            "tooluse_Qm1x2Y3z4A5b6C7d8E9f0g",
            "run_shell",
            r#"{"command":"ls -la /tmp"}"#
        )]
    );
    assert_eq!(c.output.finish_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(388), Some(44))
    );
    assert!(c.ttft_ms.is_some());
    assert!(!c.truncated);
    assert_eq!(c.error, None);
}

#[test]
fn a_stream_exception_is_the_error() {
    let c = call("bedrock_converse_stream_exception");
    assert_eq!(c.output.text, "Partial");
    assert_eq!(
        c.error.as_deref(),
        Some("modelStreamErrorException: The model stream failed.")
    );
}

#[test]
fn a_guardrail_is_a_content_filter() {
    let c = call("bedrock_converse_guardrail");
    assert_eq!(
        c.output.finish_reason.as_deref(),
        Some("guardrail_intervened")
    );
    assert_eq!(c.output.refusal.as_deref(), Some("guardrail_intervened"));
}

#[test]
fn throttling_is_a_rate_limit() {
    let c = call("bedrock_converse_throttled");
    assert_eq!(c.status, Some(429));
    assert_eq!(
        c.error.as_deref(),
        Some(
            "rate_limit: ThrottlingException: Too many requests, please wait before trying again."
        )
    );
}

#[test]
fn invoke_stream_of_an_anthropic_model() {
    let c = call("bedrock_invoke_anthropic_stream");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("aws.bedrock", "invoke_model")
    );
    assert!(c.stream);
    // The path's model id, not the one inside Anthropic's events.
    assert_eq!(c.model.as_deref(), Some(MODEL));
    assert_eq!(
        c.system.as_ref().map(|s| s.text.as_str()),
        Some("You are terse.")
    );
    assert_eq!(c.messages, [user("Say hi.")]);
    assert_eq!(c.output.text, "Hi!");
    assert_eq!(c.output.finish_reason.as_deref(), Some("end_turn"));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(15), Some(4))
    );
    assert!(!c.truncated);
}

#[test]
fn invoke_of_a_llama_model() {
    let c = call("bedrock_invoke_llama");
    assert_eq!(c.model.as_deref(), Some("meta.llama3-1-8b-instruct-v1:0"));
    assert_eq!(c.messages.len(), 1);
    assert!(c.messages[0].content.contains("Name a prime."));
    assert_eq!(c.output.text, "7");
    assert_eq!(c.output.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(18), Some(2))
    );
}

/// Every cut of a streamed fixture decodes without panic, and a cut stream
/// is truncated.
#[test]
fn cut_streams_are_truncated() {
    let ex = only_exchange("llm/bedrock_converse_stream_tool_use.cap");
    let body = ex.response.as_ref().unwrap().body.clone();
    for cut in (0..body.len()).step_by(7) {
        let mut ex = ex.clone();
        let resp = ex.response.as_mut().unwrap();
        resp.body.truncate(cut);
        resp.body_cut = true;
        let d = decode_lenient(&ex);
        let c = d.call.expect("the request still decodes");
        assert!(c.truncated, "cut at {cut}");
    }
}
