//! Ollama fixtures.
#![allow(clippy::wildcard_imports, reason = "the parent test module's helpers")]

use super::*;

#[test]
fn chat_ndjson_stream_with_a_tool_call() {
    let c = call("ollama_chat_stream_tool_call");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("ollama", "chat")
    );
    assert_eq!(
        (c.server.host.as_str(), c.server.port),
        ("localhost", 11434)
    );
    assert_eq!(c.path, "/api/chat");
    assert_eq!(c.model.as_deref(), Some("qwen3:8b"));
    assert!(c.stream);
    assert_eq!(c.status, Some(200));
    assert_eq!(
        c.system.as_ref().unwrap().text,
        "You are a local ops agent."
    );
    assert_eq!(c.tools, ["run_shell"]);
    assert_eq!(c.api_key_id, None);
    // The earlier call and its result (named by tool_name) share an id.
    let earlier = &c.messages[2].tool_calls;
    assert_eq!(earlier.len(), 1);
    assert_eq!(
        (earlier[0].name.as_str(), earlier[0].arguments.as_str()),
        ("run_shell", r#"{"command":"df -h /"}"#)
    );
    assert!(earlier[0].id.starts_with("ollama-0-"), "{}", earlier[0].id);
    assert_eq!(
        c.messages[3],
        Message {
            role: "tool".into(),
            content: "/dev/sda1 40G 12G 28G 30% /".into(),
            tool_call_id: Some(earlier[0].id.clone()),
            ..Message::default()
        }
    );
    assert_eq!(
        c.messages
            .iter()
            .map(|m| m.role.as_str())
            .collect::<Vec<_>>(),
        ["system", "user", "assistant", "tool"]
    );
    assert_eq!(c.output.text, "");
    assert_eq!(
        c.output.reasoning.as_deref(),
        Some("Disk known; now list /tmp.")
    );
    assert_eq!(c.output.tool_calls.len(), 1);
    let t = &c.output.tool_calls[0];
    assert_eq!(
        (t.name.as_str(), t.arguments.as_str()),
        ("run_shell", r#"{"command":"ls -la /tmp"}"#)
    );
    assert!(
        t.id.starts_with("ollama-0-") && t.id != earlier[0].id,
        "{}",
        t.id
    );
    assert_eq!(c.output.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(183), Some(31))
    );
    assert!(c.ttft_ms.is_some());
    assert!(!c.truncated);
    assert_eq!(c.error, None);
}

#[test]
fn generate_not_streamed() {
    let c = call("ollama_generate_plain");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("ollama", "generate")
    );
    assert_eq!(c.model.as_deref(), Some("llama3.2"));
    assert!(!c.stream);
    assert_eq!(c.system.as_ref().unwrap().text, "Answer in one sentence.");
    assert_eq!(
        c.messages,
        [Message {
            role: "user".into(),
            content: "Why is the sky blue?".into(),
            ..Message::default()
        }]
    );
    assert_eq!(
        c.output.text,
        "Sunlight scatters off air molecules, and blue light scatters most."
    );
    assert_eq!(c.output.finish_reason.as_deref(), Some("stop"));
    assert_eq!(
        (c.usage.input_tokens, c.usage.output_tokens),
        (Some(26), Some(15))
    );
    assert!(!c.truncated);
}

#[test]
fn embed() {
    let c = call("ollama_embed");
    assert_eq!(
        (c.provider.as_str(), c.operation.as_str()),
        ("ollama", "embeddings")
    );
    assert_eq!(c.model.as_deref(), Some("nomic-embed-text"));
    assert_eq!(c.input_count, Some(3));
    assert_eq!(c.usage.input_tokens, Some(9));
    assert!(c.messages.is_empty());
    assert_eq!(c.output, Output::default());
}

#[test]
fn error_404() {
    let c = call("ollama_error_404");
    assert_eq!(c.status, Some(404));
    assert_eq!(
        c.error.as_deref(),
        Some(r#"model "llama9" not found, try pulling it first"#)
    );
    // `stream` absent: Ollama streams by default.
    assert!(c.stream);
}

#[test]
fn error_line_and_cut_stream() {
    let body = "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n{\"error\":\"an error was encountered while running the model\"}\n";
    let mut resp = json_response(200, body);
    resp.headers = vec![("Content-Type".into(), "application/x-ndjson".into())];
    let req = r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
    let c = decode(&exchange("POST", "/api/chat", &[], req, Some(resp.clone())))
        .unwrap()
        .unwrap();
    assert_eq!(c.output.text, "Hel");
    assert_eq!(
        c.error.as_deref(),
        Some("an error was encountered while running the model")
    );
    assert!(!c.truncated);
    // Cut inside the second line: truncation, not an error.
    resp.body = body.as_bytes()[..90].to_vec();
    resp.body_truncated = true;
    resp.body_cut = true;
    let c = decode(&exchange("POST", "/api/chat", &[], req, Some(resp.clone())))
        .unwrap()
        .unwrap();
    assert!(c.truncated);
    assert_eq!(c.output.text, "Hel");
    // A bad line in the middle is an error.
    resp.body = b"{\"done\":false}\n{bad\n{\"done\":true}\n".to_vec();
    let err = decode(&exchange("POST", "/api/chat", &[], req, Some(resp))).unwrap_err();
    assert!(matches!(
        err,
        LlmError::BadStreamJson {
            provider: "ollama",
            index: 1,
            ..
        }
    ));
}
