//! Exchanges whose HTTP/2 headers could not be decoded (a connection
//! picked up mid-way): no path, maybe no method; the body tells.
#![allow(clippy::wildcard_imports, reason = "the parent test module's helpers")]

use super::*;

/// An exchange with unknown headers: empty method and path.
fn headless(body: &str) -> Exchange {
    let mut ex = exchange("", "", &[], body, Some(json_response(200, "{}")));
    ex.request.headers_unknown = true;
    ex
}

fn provider(body: &str) -> Option<String> {
    decode(&headless(body)).unwrap().map(|c| c.provider)
}

#[test]
fn openai_chat_by_shape() {
    let body = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"s"},{"role":"user","content":"x"}],"max_tokens":5}"#;
    assert_eq!(provider(body).as_deref(), Some("openai"));
    // Plain user messages, but an OpenAI-only parameter.
    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5,"stream_options":{"include_usage":true}}"#;
    assert_eq!(provider(body).as_deref(), Some("openai"));
    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
    assert_eq!(provider(body).as_deref(), Some("openai"));
}

#[test]
fn anthropic_by_shape_without_its_version_header() {
    let body = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{"role":"user","content":"x"}]}"#;
    let c = decode(&headless(body)).unwrap().unwrap();
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("anthropic", "messages")
    );
    assert_eq!(c.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(c.path, "");
    // The same body with headers known but no version header is OpenAI's
    // shape: the heuristic applies only when headers are unknown.
    let mut ex = headless(body);
    ex.request.headers_unknown = false;
    ex.request.method = "POST".into();
    assert_eq!(decode(&ex).unwrap().unwrap().provider, "openai");
}

#[test]
fn responses_api_and_non_chat_bodies_are_not_decoded() {
    assert_eq!(provider(r#"{"model":"gpt-5","input":"hello"}"#), None);
    assert_eq!(provider(r#"{"hello":"world"}"#), None);
    assert_eq!(provider("not json"), None);
}

#[test]
fn unknown_method_needs_unknown_headers_and_a_body() {
    let body = r#"{"model":"m","messages":[]}"#;
    let mut ex = headless(body);
    ex.request.headers_unknown = false;
    assert!(decode(&ex).unwrap().is_none());
    let mut ex = headless("");
    ex.request.body.clear();
    assert!(decode(&ex).unwrap().is_none());
}
