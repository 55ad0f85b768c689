//! Ollama's native API (`POST /api/chat`, `POST /api/generate`), usually
//! plain HTTP on port 11434. Its OpenAI-compatible `/v1/chat/completions`
//! is decoded by `openai.rs` and named `ollama` by its port.
//!
//! Request (ollama-python `ChatRequest` / `GenerateRequest`): `model`,
//! `stream` (true when absent), chat `messages[]` {`role`, `content`,
//! `thinking`, `tool_calls[]` {`function` {`name`, `arguments` as an
//! object}}, `tool_name` on tool results}, `tools[].function.name`;
//! generate `prompt`, `system`.
//! Response (`ChatResponse` / `GenerateResponse`): one JSON object per line
//! while streaming (`application/x-ndjson`), or one object with
//! `"stream": false`: chat `message` {`content`, `thinking`,
//! `tool_calls`}, generate `response` / `thinking`; the last has
//! `"done": true`, `done_reason`, `prompt_eval_count`, `eval_count`.
//! Errors are `{"error": "…"}`, as the body of a 4xx/5xx or as a line of a
//! stream.
//!
//! Tool calls have no id (newer servers may send one): see `synth.rs`.

use serde_json::Value;

use super::synth::{call_id, OpenCalls};
use super::{
    array_at, compact, push_capped, push_opt, str_at, system_prompt, tool_call, u64_at, StreamEnd,
    MAX_TOOL_CALLS,
};
use crate::event::{LlmCall, Message, ToolCallSpec};

fn stream_flag(v: &Value) -> bool {
    // Ollama streams unless the request says `"stream": false`.
    v.get("stream").and_then(Value::as_bool).unwrap_or(true)
}

pub(super) fn fill_chat_request(v: &Value, call: &mut LlmCall) {
    call.model = str_at(v, "model").map(str::to_owned);
    call.stream = stream_flag(v);
    let mut system = Vec::new();
    let mut open = OpenCalls::default();
    for m in array_at(v, "messages") {
        let role = str_at(m, "role").unwrap_or_default();
        let content = str_at(m, "content").unwrap_or_default().to_owned();
        if role == "system" {
            system.push(content.clone());
        }
        let tool_calls: Vec<ToolCallSpec> = array_at(m, "tool_calls")
            .iter()
            .enumerate()
            .map(|(i, tc)| spec_of(tc, i))
            .collect();
        if role == "assistant" {
            open.open(&tool_calls);
        }
        let tool_call_id = if role == "tool" {
            str_at(m, "tool_call_id")
                .map(str::to_owned)
                .or_else(|| open.answer(str_at(m, "tool_name")))
        } else {
            None
        };
        call.messages.push(Message {
            role: role.to_owned(),
            content,
            tool_call_id,
            tool_calls,
            is_error: None,
        });
    }
    if !system.is_empty() {
        call.system = Some(system_prompt(system.join("\n")));
    }
    for t in array_at(v, "tools") {
        if let Some(name) = t.get("function").and_then(|f| str_at(f, "name")) {
            call.tools.push(name.to_owned());
        }
    }
}

pub(super) fn fill_generate_request(v: &Value, call: &mut LlmCall) {
    call.model = str_at(v, "model").map(str::to_owned);
    call.stream = stream_flag(v);
    if let Some(s) = str_at(v, "system") {
        call.system = Some(system_prompt(s.to_owned()));
    }
    if let Some(p) = str_at(v, "prompt") {
        call.messages.push(Message {
            role: "user".to_owned(),
            content: p.to_owned(),
            ..Message::default()
        });
    }
}

/// `{"function":{"name","arguments":{…}}}`; `index` is the call's place
/// in its message.
fn spec_of(tc: &Value, index: usize) -> ToolCallSpec {
    let f = tc.get("function").unwrap_or(&Value::Null);
    let name = str_at(f, "name").unwrap_or_default();
    let args = f.get("arguments").unwrap_or(&Value::Null);
    let id = str_at(tc, "id")
        .filter(|s| !s.is_empty())
        .map_or_else(|| call_id("ollama", index, name, args), str::to_owned);
    let arguments = match args {
        // OpenAI-style servers behind the same path send a JSON text.
        Value::String(s) => s.clone(),
        Value::Null => "{}".to_owned(),
        other => compact(other),
    };
    tool_call(&id, name, arguments)
}

/// A streamed body: one JSON object per line. A last line that does not
/// parse, in a stream that did not end, was cut; any other is an error.
pub(super) fn fill_ndjson_body(body: &[u8], call: &mut LlmCall) -> StreamEnd {
    let text = String::from_utf8_lossy(body);
    let lines: Vec<&str> = text
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut end = StreamEnd::default();
    let mut values = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => {
                end.ended |= v.get("done").and_then(Value::as_bool) == Some(true);
                values.push(v);
            }
            Err(e) => {
                let cut_tail = i + 1 == lines.len() && !end.ended;
                if !cut_tail && end.bad_json.is_none() {
                    end.bad_json = Some((i, e));
                }
            }
        }
    }
    let read = fill_ndjson(&values, call);
    end.ended |= read.ended;
    end.capped |= read.capped;
    end
}

/// Adds each response object of a stream (or the one of a plain answer).
pub(super) fn fill_ndjson(values: &[Value], call: &mut LlmCall) -> StreamEnd {
    let mut end = StreamEnd::default();
    let mut capped = false;
    for v in values {
        if let Some(msg) = super::error_message(v) {
            call.error = Some(msg);
            end.ended = true;
            continue;
        }
        if call.model.is_none() {
            call.model = str_at(v, "model").map(str::to_owned);
        }
        let out = &mut call.output;
        // Chat: `message`; generate: `response` and `thinking` at the top.
        let (text, thinking) = match v.get("message") {
            Some(m) => (str_at(m, "content"), str_at(m, "thinking")),
            None => (str_at(v, "response"), str_at(v, "thinking")),
        };
        if let Some(t) = text {
            push_capped(&mut out.text, t, &mut capped);
        }
        if let Some(t) = thinking.filter(|t| !t.is_empty()) {
            push_opt(&mut out.reasoning, t, &mut capped);
        }
        let calls = v
            .get("message")
            .map_or(&[][..], |m| array_at(m, "tool_calls"));
        for tc in calls {
            if out.tool_calls.len() >= MAX_TOOL_CALLS {
                capped = true;
                break;
            }
            let spec = spec_of(tc, out.tool_calls.len());
            out.tool_calls.push(spec);
        }
        if v.get("done").and_then(Value::as_bool) == Some(true) {
            end.ended = true;
            out.finish_reason = str_at(v, "done_reason").map(str::to_owned);
            call.usage.input_tokens = u64_at(v, "prompt_eval_count");
            call.usage.output_tokens = u64_at(v, "eval_count");
        }
    }
    end.capped = capped;
    end
}
