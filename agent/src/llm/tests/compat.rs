//! OpenAI-compatible servers, provider names, embeddings and errors.
#![allow(clippy::wildcard_imports, reason = "the parent test module's helpers")]

use super::*;

#[test]
fn groq_is_named_from_its_host() {
    let c = call("groq_chat_plain");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("groq", "chat")
    );
    assert_eq!(c.path, "/openai/v1/chat/completions");
    assert_eq!(c.model.as_deref(), Some("llama-3.3-70b-versatile"));
    assert_eq!(c.messages[0].content, "One word for fast?");
    assert_eq!(c.output.text, "Swift.");
    assert_eq!(c.output.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(41), Some(3))
    );
    assert!(c.api_key_id.is_some());
    assert!(!c.truncated);
}

#[test]
fn azure_deployment_gives_the_model() {
    let c = call("azure_openai_deployment_chat");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("azure.openai", "chat")
    );
    assert_eq!(c.server.host, "contoso-ai.openai.azure.com");
    assert_eq!(c.model.as_deref(), Some("gpt-4o-prod"));
    assert_eq!(
        c.api_key_id,
        Some(fingerprint_key("3f9c2a7b4e1d4c8a9b0e6f5d2c1a7b3e"))
    );
    assert_eq!(c.output.text, "Hi!");
    assert_eq!(c.output.refusal, None);
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(9), Some(3))
    );
}

#[test]
fn openai_embeddings() {
    let c = call("openai_embeddings");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("openai", "embeddings")
    );
    assert_eq!(c.model.as_deref(), Some("text-embedding-3-small"));
    assert_eq!(c.input_count, Some(2));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(2), None)
    );
    assert!(c.messages.is_empty() && c.tools.is_empty());
    assert_eq!(c.output, Output::default());
    assert!(!c.stream && !c.truncated);
}

#[test]
fn openai_429_is_a_rate_limit() {
    let c = call("openai_error_429_rate_limit");
    assert_eq!(c.status, Some(429));
    let e = c.error.unwrap();
    assert!(
        e.starts_with("rate_limit_exceeded: Rate limit reached for gpt-4o"),
        "{e}"
    );
    assert!(e.chars().count() <= 300, "capped: {e}");
}

#[test]
fn every_429_error_starts_with_rate_limit() {
    for (body, want) in [
        (
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
            "rate_limit_error: slow",
        ),
        (
            r#"{"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
            "rate_limit: insufficient_quota: quota",
        ),
        ("{}", "rate_limit: HTTP 429"),
    ] {
        let ex = exchange(
            "POST",
            "/v1/chat/completions",
            &[],
            r#"{"model":"m","messages":[]}"#,
            Some(json_response(429, body)),
        );
        assert_eq!(decode(&ex).unwrap().unwrap().error.as_deref(), Some(want));
    }
}

#[test]
fn provider_names_by_host_and_port() {
    let body = r#"{"model":"m","messages":[]}"#;
    for (host, path, want) in [
        ("openrouter.ai", "/api/v1/chat/completions", "openrouter"),
        ("api.deepseek.com", "/chat/completions", "deepseek"),
        ("api.mistral.ai", "/v1/chat/completions", "mistral"),
        ("api.x.ai", "/v1/chat/completions", "xai"),
        ("localhost:11434", "/v1/chat/completions", "ollama"),
        (
            "res.openai.azure.com",
            "/openai/v1/responses",
            "azure.openai",
        ),
        (
            "generativelanguage.googleapis.com",
            "/v1beta/openai/chat/completions",
            "gemini",
        ),
        // vLLM, LiteLLM: unknown hosts keep the format's owner.
        ("127.0.0.1:8000", "/v1/chat/completions", "openai"),
        ("litellm.internal:4000", "/v1/embeddings", "openai"),
        ("api.x.ai", "/v1/messages", "anthropic"),
    ] {
        let c = decode(&exchange("POST", path, &[("Host", host)], body, None))
            .unwrap()
            .unwrap();
        assert_eq!(c.provider, want, "{host}{path}");
    }
}

#[test]
fn recognised_by_body_shape() {
    let c = decode(&exchange(
        "POST",
        "/gateway",
        &[],
        r#"{"model":"gpt-5","input":[{"role":"user","content":"hi"}]}"#,
        None,
    ))
    .unwrap()
    .unwrap();
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("openai", "responses")
    );
    let c = decode(&exchange(
        "POST",
        "/gateway",
        &[],
        r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
        None,
    ))
    .unwrap()
    .unwrap();
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("gemini", "generate_content")
    );
    assert_eq!(c.messages[0].content, "hi");
}

#[test]
fn chat_content_filter_is_a_refusal() {
    let resp = json_response(
        200,
        r#"{"choices":[{"index":0,"finish_reason":"content_filter","message":{"role":"assistant","content":null}}]}"#,
    );
    let ex = exchange(
        "POST",
        "/openai/deployments/d/chat/completions?api-version=2024-10-21",
        &[("Host", "x.openai.azure.com")],
        r#"{"messages":[]}"#,
        Some(resp),
    );
    let c = decode(&ex).unwrap().unwrap();
    assert_eq!(c.output.finish_reason.as_deref(), Some("content_filter"));
    assert_eq!(c.output.refusal.as_deref(), Some("content_filter"));
    assert_eq!(c.model.as_deref(), Some("d"));
}

#[test]
fn embeddings_input_counts() {
    for (body, want) in [
        (r#"{"model":"m","input":"one"}"#, 1),
        (r#"{"model":"m","input":[1,2,3]}"#, 1),
        (r#"{"model":"m","input":[[1,2],[3]]}"#, 2),
        (r#"{"model":"m","input":["a","b","c"]}"#, 3),
    ] {
        let c = decode(&exchange("POST", "/v1/embeddings", &[], body, None))
            .unwrap()
            .unwrap();
        assert_eq!(c.input_count, Some(want), "{body}");
    }
}

/// Text accumulated from fragments stops at the cap, at a character
/// boundary, and the call says it was cut even though the stream ended.
#[test]
fn accumulated_text_is_capped_and_marked_truncated() {
    let big = "é".repeat(crate::llm::MAX_TEXT_BYTES / 2 + 8);
    let chunk = serde_json::json!({"choices":[{"index":0,"delta":{"content": big}}]});
    let body = format!(
        "data: {chunk}\n\ndata: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\ndata: [DONE]\n\n"
    );
    let mut resp = json_response(200, &body);
    resp.headers = vec![("Content-Type".into(), "text/event-stream".into())];
    let ex = exchange(
        "POST",
        "/v1/chat/completions",
        &[],
        r#"{"model":"m","messages":[],"stream":true}"#,
        Some(resp),
    );
    let c = decode(&ex).unwrap().unwrap();
    assert_eq!(c.output.text.len(), crate::llm::MAX_TEXT_BYTES);
    assert_eq!(c.output.finish_reason.as_deref(), Some("stop"));
    assert!(c.truncated);
}
