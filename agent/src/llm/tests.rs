//! Tests of the LLM decoders, from captures in tests/fixtures/llm run
//! through the HTTP parser exactly as the daemon does.

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::{decode, decode_lenient, LlmError};
use crate::event::{LlmCall, Message, Output, Role, ToolCallSpec};
use crate::http::testutil::only_exchange;
use crate::http::{Exchange, Request, Response};
use crate::redact::fingerprint_key;

const OPENAI_KEY: &str = "sk-proj-Zx81QmA7cYbT0nKe4WvLr2Hs9DgUfPj6oBiN3tEa5yCqRw1M";
const ANTHROPIC_KEY: &str = "sk-ant-api03-Jd93kLmQpR7sT2vWxYz4AbCdEfGh6iJkLmNoPqRs8tUvWxYz-AAAAAA";

fn call(name: &str) -> LlmCall {
    let ex = only_exchange(&format!("llm/{name}.cap"));
    match decode(&ex) {
        Ok(Some(c)) => c,
        other => panic!("{name}: {other:?}"),
    }
}

fn spec(id: &str, name: &str, arguments: &str) -> ToolCallSpec {
    ToolCallSpec {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    }
}

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

// ---------------------------------------------------------------- OpenAI

#[test]
fn openai_plain() {
    let c = call("openai_chat_plain");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("openai", "chat")
    );
    assert_eq!(c.role, Role::Client);
    assert_eq!(
        (c.server.host.as_str(), c.server.port),
        ("api.openai.com", 443)
    );
    assert_eq!(c.path, "/v1/chat/completions");
    assert_eq!(c.model.as_deref(), Some("gpt-4o"));
    assert!(!c.stream);
    assert_eq!(c.status, Some(200));
    let system = c.system.as_ref().unwrap();
    assert_eq!(
        system.text,
        "You are a terse assistant.\nAnswer in English."
    );
    assert_eq!(system.sha256, sha(&system.text));
    let roles: Vec<_> = c
        .messages
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_str()))
        .collect();
    assert_eq!(
        roles,
        [
            ("system", "You are a terse assistant."),
            ("developer", "Answer in English."),
            ("user", "What is the capital of France?"),
        ]
    );
    assert_eq!(c.api_user.as_deref(), Some("user-1234"));
    assert_eq!(c.api_key_id, Some(fingerprint_key(OPENAI_KEY)));
    assert_eq!(c.output.text, "Paris.");
    assert_eq!(c.output.finish_reason.as_deref(), Some("stop"));
    assert_eq!(c.output.refusal, None);
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(25), Some(12))
    );
    // Request at T0, last response byte 3 ms after the 400 ms head.
    assert!(
        (c.latency_ms.unwrap() - 403.0).abs() < 1e-6,
        "{:?}",
        c.latency_ms
    );
    assert_eq!(c.ttft_ms, None);
    assert!(!c.truncated);
    assert_eq!(c.error, None);
}

#[test]
fn openai_gzip_reply_with_parallel_tool_calls() {
    let c = call("openai_chat_gzip_parallel_tool_calls");
    assert_eq!(
        c.output.tool_calls,
        [
            spec(
                "call_Vx1aB2cD3eF4gH5iJ6kL7mN8",
                "run_shell",
                r#"{"command":"df -h /"}"#
            ),
            spec(
                "call_Op9qR0sT1uV2wX3yZ4aB5cD6",
                "get_weather",
                r#"{"city":"Paris"}"#
            ),
        ]
    );
    assert_eq!(c.output.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(c.output.text, "");
    assert_eq!(c.tools, ["run_shell", "get_weather"]);
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(118), Some(52))
    );
    // The history: assistant tool call, then its result.
    assert_eq!(
        c.messages[2].tool_calls,
        [spec("call_prev01", "run_shell", r#"{"command":"uptime"}"#)]
    );
    assert_eq!(
        c.messages[3],
        Message {
            role: "tool".into(),
            content: " 10:15:01 up 3 days,  2 users,  load average: 0.10".into(),
            tool_call_id: Some("call_prev01".into()),
            ..Message::default()
        }
    );
}

#[test]
fn openai_stream_with_usage() {
    let c = call("openai_chat_stream");
    assert!(c.stream);
    assert_eq!(c.output.text, "Hello there!");
    assert_eq!(c.output.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(14), Some(3))
    );
    assert_eq!(c.model.as_deref(), Some("gpt-4o-mini"));
    assert!(!c.truncated);
    // Head at +250 ms, first event 20 ms later; request written at T0.
    assert!((c.ttft_ms.unwrap() - 270.0).abs() < 1e-6, "{:?}", c.ttft_ms);
    assert!(
        (c.latency_ms.unwrap() - 410.0).abs() < 1e-6,
        "{:?}",
        c.latency_ms
    );
}

#[test]
fn openai_stream_parallel_tool_calls() {
    let c = call("openai_chat_stream_tool_calls");
    assert_eq!(
        c.output.tool_calls,
        [
            spec(
                "call_a1B2c3D4e5F6g7H8i9J0k1L2",
                "run_shell",
                r#"{"command": "ls -la /tmp"}"#
            ),
            spec(
                "call_M3n4O5p6Q7r8S9t0U1v2W3x4",
                "get_weather",
                r#"{"city": "Oslo"}"#
            ),
        ]
    );
    assert_eq!(c.tools, ["run_shell", "get_weather", "legacy_lookup"]);
    assert_eq!(c.output.finish_reason.as_deref(), Some("tool_calls"));
    assert!(!c.truncated);
}

#[test]
fn openai_refusal() {
    let c = call("openai_chat_refusal");
    assert_eq!(
        c.output.refusal.as_deref(),
        Some("I'm sorry, but I can't help with that request.")
    );
    assert_eq!(c.output.text, "");
}

#[test]
fn openai_401_error() {
    let c = call("openai_error_401");
    assert_eq!(c.status, Some(401));
    assert!(
        c.error
            .as_deref()
            .unwrap()
            .starts_with("invalid_api_key: Incorrect API key provided"),
        "{:?}",
        c.error
    );
    assert_eq!(c.output.text, "");
    assert!(!c.truncated);
}

#[test]
fn openai_truncated_stream() {
    let c = call("openai_chat_stream_truncated");
    assert_eq!(c.output.text, "1, 2, 3");
    assert!(c.truncated);
    assert_eq!(c.output.finish_reason, None);
}

#[test]
fn openai_malformed_request_json_is_an_error() {
    let ex = only_exchange("llm/openai_malformed_request_json.cap");
    let err = decode(&ex).unwrap_err();
    assert_eq!(err.name(), "llm_bad_request_json");
    assert!(matches!(
        err,
        LlmError::BadRequestJson {
            provider: "openai",
            ..
        }
    ));
}

// ------------------------------------------------------------- Anthropic

#[test]
fn anthropic_plain_gzip() {
    let c = call("anthropic_messages_plain");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("anthropic", "messages")
    );
    assert_eq!(c.server.host, "api.anthropic.com");
    assert_eq!(c.model.as_deref(), Some("claude-3-5-sonnet-20241022"));
    assert_eq!(c.system.as_ref().unwrap().text, "You are a calculator.");
    assert_eq!(c.messages.len(), 1);
    assert_eq!(c.messages[0].content, "What is 2+2?");
    assert_eq!(c.api_user.as_deref(), Some("team-a/alice"));
    assert_eq!(c.api_key_id, Some(fingerprint_key(ANTHROPIC_KEY)));
    assert_eq!(c.output.text, "2 + 2 = 4");
    assert_eq!(c.output.finish_reason.as_deref(), Some("end_turn"));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(18), Some(9))
    );
    assert!(!c.stream && !c.truncated);
}

#[test]
fn anthropic_parallel_tool_use_and_history() {
    let c = call("anthropic_messages_parallel_tool_use");
    assert_eq!(
        c.system.as_ref().unwrap().text,
        "You are a careful SRE agent.\nNever run destructive commands."
    );
    assert_eq!(c.tools, ["bash", "read_file"]);
    assert_eq!(c.output.text, "I'll check both at once.");
    assert_eq!(
        c.output.tool_calls,
        [
            spec(
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "bash",
                r#"{"command":"ps aux | grep -i http"}"#
            ),
            spec(
                "toolu_01UzqnbAYRtqn6rEDYMvC9Xh",
                "read_file",
                r#"{"path":"/etc/nginx/nginx.conf"}"#
            ),
        ]
    );
    assert_eq!(c.output.finish_reason.as_deref(), Some("tool_use"));
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
    assert_eq!(
        history,
        [
            (
                "user",
                "Is the web server healthy? Check its config too.",
                None,
                None
            ),
            ("assistant", "Let me look at the service.", None, None),
            (
                "tool",
                "Unit nginx.service could not be found.",
                Some("toolu_01A09q90qw90lq917835lq9"),
                Some(true)
            ),
            ("user", "Try harder.", None, None),
        ]
    );
    assert_eq!(
        c.messages[1].tool_calls,
        [spec(
            "toolu_01A09q90qw90lq917835lq9",
            "bash",
            r#"{"command":"systemctl status nginx"}"#
        )]
    );
}

#[test]
fn anthropic_stream() {
    let c = call("anthropic_messages_stream");
    assert!(c.stream);
    assert_eq!(c.output.text, "Hi there!");
    assert_eq!(c.output.finish_reason.as_deref(), Some("end_turn"));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(12), Some(6))
    );
    assert_eq!(c.model.as_deref(), Some("claude-3-5-haiku-20241022"));
    assert!(!c.truncated);
    assert!(c.ttft_ms.is_some());
}

#[test]
fn anthropic_stream_thinking_and_tool_use() {
    let c = call("anthropic_messages_stream_tool_use");
    assert_eq!(
        c.output.reasoning.as_deref(),
        Some("The user wants the hosts file. read_file fits.")
    );
    assert_eq!(c.output.text, "Reading it now.");
    // Streamed input is re-serialised compactly, like a non-streamed one.
    assert_eq!(
        c.output.tool_calls,
        [
            spec(
                "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                "read_file",
                r#"{"path":"/etc/hosts"}"#
            ),
            spec(
                "toolu_01Rk5Xq3NdPw8YtGh2LsVb7m",
                "bash",
                r#"{"command":"getent hosts"}"#
            ),
        ]
    );
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(380), Some(89))
    );
    assert!(!c.truncated);
}

#[test]
fn anthropic_refusal() {
    let c = call("anthropic_refusal");
    assert_eq!(c.output.finish_reason.as_deref(), Some("refusal"));
    assert_eq!(c.output.refusal.as_deref(), Some("I can't help with that."));
}

#[test]
fn anthropic_529_error() {
    let c = call("anthropic_error_529");
    assert_eq!(c.status, Some(529));
    assert_eq!(c.error.as_deref(), Some("overloaded_error: Overloaded"));
}

#[test]
fn anthropic_stream_error_event() {
    let c = call("anthropic_stream_error_event");
    assert_eq!(c.error.as_deref(), Some("overloaded_error: Overloaded"));
    assert_eq!(c.output.text, "Hel");
    // An error event ends the stream: not a truncation.
    assert!(!c.truncated);
}

#[test]
fn anthropic_truncated_stream() {
    let c = call("anthropic_stream_truncated");
    assert!(c.truncated);
    assert_eq!(c.output.text, "Autumn moonlight—\na worm digs silently");
    assert_eq!(c.usage.input_tokens, Some(11));
}

#[test]
fn anthropic_malformed_response_json() {
    let ex = only_exchange("llm/anthropic_malformed_response_json.cap");
    let err = decode(&ex).unwrap_err();
    assert_eq!(err.name(), "llm_bad_response_json");
    // The lenient decoder keeps the request.
    let d = decode_lenient(&ex);
    let c = d.call.expect("call kept");
    assert_eq!(d.problems.len(), 1);
    assert_eq!(c.messages[0].content, "hello");
    assert!(c.error.is_some());
}

#[test]
fn non_json_response_keeps_the_request() {
    let c = call("anthropic_html_502");
    assert_eq!(c.status, Some(502));
    assert_eq!(c.model.as_deref(), Some("claude-3-5-sonnet-20241022"));
    let err = c.error.unwrap();
    assert!(err.starts_with("HTTP 502: <html>"), "{err}");
}

// ---------------------------------------------------------- built in code

fn exchange(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    response: Option<Response>,
) -> Exchange {
    Exchange {
        role: Role::Client,
        request: Request {
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            body: body.as_bytes().to_vec(),
            body_truncated: false,
            api_key_id: None,
            headers_unknown: false,
        },
        response,
        t_request_start: 1_000_000,
        t_request_end: 2_000_000,
        t_response_start: None,
        t_first_body: None,
        t_response_end: None,
        truncated: false,
        websocket: false,
    }
}

fn json_response(status: u16, body: &str) -> Response {
    Response {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
        body_truncated: false,
        body_cut: false,
        ..Response::default()
    }
}

/// The openai SDK stops reading after `data: [DONE]`, before the chunked
/// terminator: the answer is whole. Bytes lost inside the stream are not.
#[test]
fn an_ended_stream_is_whole_unless_bytes_were_lost() {
    let sse = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",",
        "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",",
        "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n"
    );
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#;
    let response = |truncated: bool, cut: bool| Response {
        status: 200,
        headers: vec![("Content-Type".into(), "text/event-stream".into())],
        body: sse.as_bytes().to_vec(),
        body_truncated: truncated,
        body_cut: cut,
        ..Response::default()
    };
    let unterminated = exchange(
        "POST",
        "/v1/chat/completions",
        &[],
        body,
        Some(response(true, false)),
    );
    let call = decode(&unterminated).unwrap().unwrap();
    assert_eq!(call.output.text, "hi");
    assert!(
        !call.truncated,
        "an ended stream whose framing did not finish is whole"
    );
    let gapped = exchange(
        "POST",
        "/v1/chat/completions",
        &[],
        body,
        Some(response(true, true)),
    );
    assert!(
        decode(&gapped).unwrap().unwrap().truncated,
        "bytes were lost inside it"
    );
}

#[test]
fn unknown_exchanges_are_not_calls() {
    for ex in [
        exchange("GET", "/favicon.ico", &[], "", None),
        exchange("GET", "/v1/chat/completions", &[], "", None),
        exchange("POST", "/upload", &[], "not json", None),
        exchange("POST", "/v1/responses/resp_1/cancel", &[], "{}", None),
        exchange("POST", "/v1beta/models/m:countTokens", &[], "{}", None),
    ] {
        assert!(matches!(decode(&ex), Ok(None)), "{}", ex.request.path);
    }
}

#[test]
fn recognised_by_path_variants() {
    let body = r#"{"model":"m","messages":[]}"#;
    for (path, provider) in [
        (
            "/openai/deployments/gpt4/chat/completions?api-version=2024-06-01",
            "openai",
        ),
        ("/api/v1/chat/completions", "openai"),
        ("/v1/messages?beta=true", "anthropic"),
        ("/anthropic/v1/messages", "anthropic"),
    ] {
        let c = decode(&exchange("POST", path, &[], body, None))
            .unwrap()
            .unwrap();
        assert_eq!(c.provider, provider, "{path}");
        assert!(c.truncated, "no response: truncated by the exchange");
        assert_eq!(c.status, None);
    }
}

#[test]
fn recognised_by_body_shape() {
    let openai = r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
    let c = decode(&exchange("POST", "/gateway", &[], openai, None))
        .unwrap()
        .unwrap();
    assert_eq!(c.provider, "openai");
    let c = decode(&exchange(
        "POST",
        "/gateway",
        &[("anthropic-version", "2023-06-01")],
        openai,
        None,
    ))
    .unwrap()
    .unwrap();
    assert_eq!(c.provider, "anthropic");
    let anthropic = r#"{"model":"m","system":"s","messages":[]}"#;
    let c = decode(&exchange("POST", "/gateway", &[], anthropic, None))
        .unwrap()
        .unwrap();
    assert_eq!(c.provider, "anthropic");
}

#[test]
fn host_header_forms() {
    let body = r#"{"model":"m","messages":[]}"#;
    for (host, want) in [
        ("localhost:8080", ("localhost", 8080)),
        ("[::1]:8443", ("::1", 8443)),
        ("[::1]", ("::1", 443)),
        ("API.example.com", ("api.example.com", 443)),
        ("h:notaport", ("h", 443)),
    ] {
        let c = decode(&exchange(
            "POST",
            "/v1/messages",
            &[("Host", host)],
            body,
            None,
        ))
        .unwrap()
        .unwrap();
        assert_eq!((c.server.host.as_str(), c.server.port), want, "{host}");
    }
}

#[test]
fn request_not_object_and_truncated_request() {
    let err = decode(&exchange("POST", "/v1/messages", &[], "[1,2]", None)).unwrap_err();
    assert_eq!(err.name(), "llm_request_not_object");
    // A cut request body is truncation, not malformation.
    let mut ex = exchange("POST", "/v1/messages", &[], r#"{"model":"m","mess"#, None);
    ex.request.body_truncated = true;
    let c = decode(&ex).unwrap().unwrap();
    assert!(c.truncated);
    assert_eq!(c.model, None);
}

#[test]
fn bad_stream_event_json() {
    let mut resp = json_response(
        200,
        "data: {\"choices\":[]}\n\ndata: {broken\n\ndata: [DONE]\n\n",
    );
    resp.headers = vec![("Content-Type".into(), "text/event-stream".into())];
    let ex = exchange(
        "POST",
        "/v1/chat/completions",
        &[],
        r#"{"model":"m","messages":[]}"#,
        Some(resp),
    );
    let err = decode(&ex).unwrap_err();
    assert_eq!(err.name(), "llm_bad_stream_json");
    assert!(matches!(err, LlmError::BadStreamJson { index: 1, .. }));
}

#[test]
fn openai_error_inside_a_stream() {
    let mut resp = json_response(
        200,
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"error\":{\"message\":\"server_error\"}}\n\n",
    );
    resp.headers = vec![("Content-Type".into(), "text/event-stream".into())];
    let ex = exchange(
        "POST",
        "/v1/chat/completions",
        &[],
        r#"{"model":"m","messages":[],"stream":true}"#,
        Some(resp),
    );
    let c = decode(&ex).unwrap().unwrap();
    assert_eq!(c.error.as_deref(), Some("server_error"));
    assert!(!c.truncated);
}

#[test]
fn openai_reasoning_content_and_legacy_function_call() {
    let resp = json_response(
        200,
        r#"{"model":"deepseek-reasoner","choices":[{"index":0,"finish_reason":"function_call","message":{"role":"assistant","content":"ok","reasoning_content":"think","function_call":{"name":"f","arguments":"{}"}}}]}"#,
    );
    let ex = exchange(
        "POST",
        "/v1/chat/completions",
        &[],
        r#"{"model":"deepseek-reasoner","messages":[]}"#,
        Some(resp),
    );
    let c = decode(&ex).unwrap().unwrap();
    assert_eq!(c.output.reasoning.as_deref(), Some("think"));
    assert_eq!(c.output.tool_calls, [spec("", "f", "{}")]);
}

mod bedrock;
mod compat;
mod gemini;
mod ollama;
mod props;
mod responses;
mod typed;
mod unknown_headers;
