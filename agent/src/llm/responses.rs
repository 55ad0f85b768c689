//! OpenAI Responses API (`POST …/responses`): what Codex CLI and the
//! newer SDKs speak, also served by Azure OpenAI.
//!
//! Request (openai-python `ResponseCreateParams`): `model`, `instructions`
//! (the system prompt), `input` as a string or a list of items — messages
//! (`role`, `content` as a string or `input_text` / `output_text` /
//! `refusal` parts), `function_call` {`call_id`, `name`, `arguments`},
//! `function_call_output` {`call_id`, `output`}, `custom_tool_call(_output)`,
//! `local_shell_call(_output)`, `reasoning` (opaque, skipped) —
//! `tools` (function and custom tools by name, built-in tools by type),
//! `previous_response_id`, `stream`, `user` / `safety_identifier`.
//!
//! Response (`Response`): `id`, `status`, `incomplete_details.reason`,
//! `error` {`code`, `message`}, `output` items (`message` with
//! `output_text` / `refusal` parts, tool calls, `reasoning` with
//! `summary_text` parts), `usage` {`input_tokens`, `output_tokens`,
//! `output_tokens_details.reasoning_tokens`}.
//!
//! History is flattened as the correlator hashes it: an assistant turn is
//! its message items' text plus the tool calls that follow them, exactly
//! as the answer that produced it is flattened, so that a client that
//! resends the whole conversation (Codex does, with `store: false`) joins
//! the same trace.

#![expect(
    clippy::doc_markdown,
    reason = "provider and product names are prose, not code"
)]

use serde_json::Value;

use super::{
    array_at, compact, push_capped, push_opt, set_capped, str_at, system_prompt, tool_call, u64_at,
    MAX_TOOL_CALLS,
};
use crate::event::{LlmCall, Message, Output, ToolCallSpec, Usage};

pub(super) fn fill_request(v: &Value, call: &mut LlmCall) {
    call.model = str_at(v, "model").map(str::to_owned);
    call.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    call.previous_response_id = str_at(v, "previous_response_id").map(str::to_owned);
    call.api_user = str_at(v, "user")
        .or_else(|| str_at(v, "safety_identifier"))
        .or_else(|| v.get("metadata").and_then(|m| str_at(m, "user_id")))
        .map(str::to_owned);

    let mut system = Vec::new();
    match v.get("instructions") {
        Some(Value::String(s)) => system.push(s.clone()),
        // Instructions can also be a list of input messages.
        Some(Value::Array(items)) => system.extend(items.iter().map(message_text)),
        _ => {}
    }
    match v.get("input") {
        Some(Value::String(s)) => call.messages.push(Message {
            role: "user".to_owned(),
            content: s.clone(),
            ..Message::default()
        }),
        Some(Value::Array(items)) => push_items(items, &mut call.messages, &mut system),
        _ => {}
    }
    if !system.is_empty() {
        call.system = Some(system_prompt(system.join("\n")));
    }
    for t in array_at(v, "tools") {
        if let Some(name) = tool_name(t) {
            call.tools.push(name);
        }
    }
}

/// Function and custom tools by name; built-in tools by their type
/// (`web_search`, `local_shell`, …); MCP servers as `mcp:<label>`.
fn tool_name(t: &Value) -> Option<String> {
    let kind = str_at(t, "type").unwrap_or_default();
    if let Some(name) = str_at(t, "name") {
        return Some(name.to_owned());
    }
    if kind == "mcp" {
        return str_at(t, "server_label").map(|l| format!("mcp:{l}"));
    }
    (!kind.is_empty()).then(|| kind.to_owned())
}

fn push_items(items: &[Value], messages: &mut Vec<Message>, system: &mut Vec<String>) {
    for item in items {
        let kind = str_at(item, "type").unwrap_or("message");
        match kind {
            "message" => {
                let role = str_at(item, "role").unwrap_or("user");
                let text = message_text(item);
                if role == "system" || role == "developer" {
                    system.push(text.clone());
                }
                if role == "assistant" {
                    let turn = assistant_turn(messages);
                    join_text(&mut turn.content, &text, &mut false);
                } else {
                    messages.push(Message {
                        role: role.to_owned(),
                        content: text,
                        ..Message::default()
                    });
                }
            }
            _ => {
                if let Some(spec) = tool_call_of(item) {
                    assistant_turn(messages).tool_calls.push(spec);
                } else if let Some(result) = tool_result_of(item) {
                    messages.push(result);
                }
                // reasoning (encrypted), item references, server-side
                // tool calls (web search, file search): no text to keep.
            }
        }
    }
}

/// The assistant message the next assistant item belongs to: the last
/// message when it is an assistant's, else a new one.
fn assistant_turn(messages: &mut Vec<Message>) -> &mut Message {
    if messages.last().is_none_or(|m| m.role != "assistant") {
        messages.push(Message {
            role: "assistant".to_owned(),
            ..Message::default()
        });
    }
    let last = messages.len() - 1;
    &mut messages[last]
}

/// The text of a message item: a string, or its text parts joined.
fn message_text(item: &Value) -> String {
    match item.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| str_at(p, "text").or_else(|| str_at(p, "refusal")))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// A tool call the client must run: `function_call`, `custom_tool_call`
/// (free-form input, e.g. Codex's apply_patch), `local_shell_call` and
/// `shell_call` (the command as the arguments). Server-side tools are
/// not: OpenAI runs them, nothing on this host does.
pub(super) fn tool_call_of(item: &Value) -> Option<ToolCallSpec> {
    let id = str_at(item, "call_id")
        .or_else(|| str_at(item, "id"))
        .unwrap_or_default();
    match str_at(item, "type")? {
        "function_call" => Some(tool_call(
            id,
            str_at(item, "name").unwrap_or_default(),
            text_or_json(item.get("arguments")),
        )),
        "custom_tool_call" => Some(tool_call(
            id,
            str_at(item, "name").unwrap_or_default(),
            text_or_json(item.get("input")),
        )),
        "local_shell_call" => Some(tool_call(
            id,
            "local_shell",
            item.get("action").map(compact).unwrap_or_default(),
        )),
        "shell_call" => Some(tool_call(
            id,
            "shell",
            item.get("action").map(compact).unwrap_or_default(),
        )),
        _ => None,
    }
}

/// The result of a tool call, sent back in `input`: a `tool` message
/// whose `tool_call_id` is the call's `call_id`.
fn tool_result_of(item: &Value) -> Option<Message> {
    let kind = str_at(item, "type")?;
    if !matches!(
        kind,
        "function_call_output"
            | "custom_tool_call_output"
            | "local_shell_call_output"
            | "shell_call_output"
    ) {
        return None;
    }
    let content = match item.get("output") {
        Some(Value::String(s)) => s.clone(),
        // A list of content parts (`input_text`, images, files), or a
        // shell call's outputs: their text.
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| {
                str_at(p, "text")
                    .or_else(|| str_at(p, "stdout"))
                    .map(str::to_owned)
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) if !other.is_null() => compact(other),
        _ => String::new(),
    };
    Some(Message {
        role: "tool".to_owned(),
        content,
        tool_call_id: str_at(item, "call_id")
            .or_else(|| str_at(item, "id"))
            .map(str::to_owned),
        ..Message::default()
    })
}

/// Arguments are a JSON text; anything else is serialised.
fn text_or_json(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => compact(other),
    }
}

/// A whole `Response` object: the answer of a plain call, and the one
/// `response.completed` (or `.failed`, `.incomplete`) carries in a stream.
pub(super) fn fill_response(v: &Value, call: &mut LlmCall) {
    fill_response_object(v, call, &mut false);
}

/// As [`fill_response`], telling whether a cap cut something.
pub(super) fn fill_response_object(v: &Value, call: &mut LlmCall, capped: &mut bool) {
    fill_meta(v, call);
    let mut out = Output::default();
    for item in array_at(v, "output") {
        add_output_item(item, &mut out, capped);
    }
    finish_output(v, &mut out);
    call.output = out;
}

/// Id, model, usage and error of a `Response` object.
pub(super) fn fill_meta(v: &Value, call: &mut LlmCall) {
    if let Some(id) = str_at(v, "id") {
        call.response_id = Some(id.to_owned());
    }
    if call.model.is_none() {
        call.model = str_at(v, "model").map(str::to_owned);
    }
    if call.previous_response_id.is_none() {
        call.previous_response_id = str_at(v, "previous_response_id").map(str::to_owned);
    }
    if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
        call.usage = Usage {
            input_tokens: u64_at(u, "input_tokens"),
            output_tokens: u64_at(u, "output_tokens"),
            reasoning_tokens: u
                .get("output_tokens_details")
                .and_then(|d| u64_at(d, "reasoning_tokens"))
                .filter(|n| *n > 0),
        };
    }
    if let Some(e) = v.get("error").filter(|e| e.is_object()) {
        call.error = super::error_message(&serde_json::json!({ "error": e }));
    }
}

/// Adds one output item (a message, a tool call, reasoning) to `out`.
pub(super) fn add_output_item(item: &Value, out: &mut Output, capped: &mut bool) {
    match str_at(item, "type") {
        Some("message") => {
            let mut text = String::new();
            for part in array_at(item, "content") {
                match str_at(part, "type") {
                    Some("output_text") => {
                        join_text(&mut text, str_at(part, "text").unwrap_or_default(), capped);
                    }
                    Some("refusal") => push_opt(
                        &mut out.refusal,
                        str_at(part, "refusal").unwrap_or_default(),
                        capped,
                    ),
                    _ => {}
                }
            }
            join_text(&mut out.text, &text, capped);
        }
        Some("reasoning") => {
            let parts = array_at(item, "summary")
                .iter()
                .chain(array_at(item, "content"))
                .filter_map(|p| str_at(p, "text"));
            for text in parts {
                let mut r = out.reasoning.take().unwrap_or_default();
                join_text(&mut r, text, capped);
                out.reasoning = Some(r);
            }
        }
        _ => {
            if let Some(mut spec) = tool_call_of(item) {
                if out.tool_calls.len() >= MAX_TOOL_CALLS {
                    *capped = true;
                    return;
                }
                let args = std::mem::take(&mut spec.arguments);
                set_capped(&mut spec.arguments, &args, capped);
                out.tool_calls.push(spec);
            }
        }
    }
}

/// Texts of separate parts and items are joined by `\n`, on the request
/// side (an assistant turn's message items) as on the answer side.
pub(super) fn join_text(dst: &mut String, text: &str, capped: &mut bool) {
    if !dst.is_empty() && !text.is_empty() {
        push_capped(dst, "\n", capped);
    }
    push_capped(dst, text, capped);
}

/// The finish reason is why an incomplete response stopped
/// (`max_output_tokens`, `content_filter`), else its status
/// (`completed`, `failed`, `cancelled`). A content filter is a refusal.
pub(super) fn finish_output(v: &Value, out: &mut Output) {
    let incomplete = v
        .get("incomplete_details")
        .and_then(|d| str_at(d, "reason"));
    out.finish_reason = incomplete
        .or_else(|| str_at(v, "status"))
        .map(str::to_owned);
    if incomplete == Some("content_filter") && out.refusal.is_none() {
        out.refusal = Some("content_filter".to_owned());
    }
}
