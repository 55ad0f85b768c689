//! Google Gemini (`POST …/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`), as the Gemini API and Vertex AI
//! serve it and Gemini CLI and the google-genai SDKs speak it.
//!
//! Request (google-genai `GenerateContentParameters`, JSON in lowerCamel;
//! the REST API also takes the proto's snake_case names, so both are
//! read): `contents[]` {`role` user|model, `parts[]` with `text`,
//! `functionCall` {`name`, `args`, optional `id`}, `functionResponse`
//! {`name`, `response`, optional `id`}, `thought`}, `systemInstruction`,
//! `tools[].functionDeclarations[].name` (and built-in tools such as
//! `googleSearch`), `generationConfig`. The model is in the path.
//! Response (`GenerateContentResponse`): `candidates[].content.parts`,
//! `finishReason`, `safetyRatings`, `promptFeedback.blockReason`,
//! `usageMetadata` {`promptTokenCount`, `candidatesTokenCount`,
//! `thoughtsTokenCount`}, `modelVersion`. A stream is a sequence of such
//! responses, one per SSE event (or, without `alt=sse`, a JSON list); the
//! text is spread over them, usage is cumulative and the last chunk holds
//! the finish reason.
//!
//! Function calls usually have no id, and clients that replay them make
//! one up (Gemini CLI: `run_shell_command_<ms>_<n>`), so a call's id is
//! always derived from the call (`synth.rs`), in the answer and in every
//! history, whether or not the wire carries one; a `functionResponse`
//! that names an id answers the call replayed with that id. Output tokens are
//! `candidatesTokenCount + thoughtsTokenCount` — what is billed as output,
//! and what OpenAI's `output_tokens` counts (reasoning included).

#![expect(
    clippy::doc_markdown,
    reason = "provider and product names are prose, not code"
)]

use serde_json::Value;

use super::synth::{call_id, OpenCalls};
use super::{
    compact, event_json, push_capped, push_opt, str_at, system_prompt, tool_call, StreamEnd,
    MAX_TOOL_CALLS,
};
use crate::event::{LlmCall, Message, ToolCallSpec};
use crate::http::sse::SseEvent;

/// Finish and block reasons that mean a filter stopped the answer.
const FILTERED: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "MODEL_ARMOR",
    "JAILBREAK",
];

/// A field by its JSON (lowerCamel) name or its proto (snake_case) name.
fn get<'v>(v: &'v Value, camel: &str, snake: &str) -> Option<&'v Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn list<'v>(v: &'v Value, camel: &str, snake: &str) -> &'v [Value] {
    get(v, camel, snake)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn parts(content: &Value) -> &[Value] {
    list(content, "parts", "parts")
}

pub(super) fn fill_request(v: &Value, call: &mut LlmCall) {
    if let Some(m) = str_at(v, "model") {
        call.model = Some(m.trim_start_matches("models/").to_owned());
    }
    if let Some(si) = get(v, "systemInstruction", "system_instruction") {
        let text = match si {
            Value::String(s) => s.clone(),
            content => text_of(content, "\n"),
        };
        call.system = Some(system_prompt(text));
    }
    let mut open = OpenCalls::default();
    for content in list(v, "contents", "contents") {
        push_content(content, &mut call.messages, &mut open);
    }
    for t in list(v, "tools", "tools") {
        let Some(obj) = t.as_object() else { continue };
        for (key, val) in obj {
            if key == "functionDeclarations" || key == "function_declarations" {
                let names = val.as_array().map_or(&[][..], Vec::as_slice);
                call.tools.extend(
                    names
                        .iter()
                        .filter_map(|d| str_at(d, "name").map(str::to_owned)),
                );
            } else {
                // googleSearch, codeExecution, urlContext, …
                call.tools.push(key.clone());
            }
        }
    }
}

/// The non-thought text parts of a content, joined by `sep`.
fn text_of(content: &Value, sep: &str) -> String {
    parts(content)
        .iter()
        .filter(|p| !is_thought(p))
        .filter_map(|p| str_at(p, "text"))
        .collect::<Vec<_>>()
        .join(sep)
}

fn is_thought(part: &Value) -> bool {
    part.get("thought").and_then(Value::as_bool) == Some(true)
}

/// One content of the history. A model turn is an assistant message with
/// its text and function calls; the function responses of a user turn
/// become `tool` messages, first, matched to the calls they answer.
fn push_content(content: &Value, messages: &mut Vec<Message>, open: &mut OpenCalls) {
    let model = str_at(content, "role") == Some("model");
    let mut calls = Vec::new();
    let mut replayed = Vec::new();
    let mut results = 0;
    for part in parts(content) {
        if let Some(fc) = get(part, "functionCall", "function_call") {
            calls.push(function_call(fc, calls.len()));
            replayed.push(
                str_at(fc, "id")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        } else if let Some(fr) = get(part, "functionResponse", "function_response") {
            results += 1;
            let name = str_at(fr, "name");
            let named = str_at(fr, "id").filter(|s| !s.is_empty());
            // The call replayed with the id this response names; else the
            // first open call of its name (responses without ids); else
            // the id as it is (a call this history does not hold).
            let id = named
                .and_then(|i| open.answer_replayed(i))
                .or_else(|| open.answer(name))
                .or_else(|| named.map(str::to_owned));
            let response = fr.get("response").unwrap_or(&Value::Null);
            messages.push(Message {
                role: "tool".to_owned(),
                content: compact(response),
                tool_call_id: id,
                tool_calls: Vec::new(),
                // Gemini CLI and the SDKs' automatic function calling
                // report a failed call as `{"error": …}`.
                is_error: response.get("error").map(|_| true),
            });
        }
    }
    let text = text_of(content, "");
    if model {
        open.open_replayed(&calls, &replayed);
    }
    if !text.is_empty() || !calls.is_empty() || results == 0 {
        messages.push(Message {
            role: if model { "assistant" } else { "user" }.to_owned(),
            content: text,
            tool_calls: calls,
            ..Message::default()
        });
    }
}

/// A `functionCall` part; `index` is its place among the turn's calls.
/// Its id is derived, never read: see the module's comment.
fn function_call(fc: &Value, index: usize) -> ToolCallSpec {
    let name = str_at(fc, "name").unwrap_or_default();
    let args = fc.get("args").unwrap_or(&Value::Null);
    let id = call_id("gemini", index, name, args);
    let arguments = if args.is_null() {
        "{}".to_owned()
    } else {
        compact(args)
    };
    tool_call(&id, name, arguments)
}

/// A plain answer: one response, or (`streamGenerateContent` without
/// `alt=sse`) a list of them.
pub(super) fn fill_response(v: &Value, call: &mut LlmCall) {
    let mut capped = false;
    match v {
        Value::Array(chunks) => {
            for c in chunks {
                add_chunk(c, call, &mut capped);
            }
        }
        _ => {
            add_chunk(v, call, &mut capped);
        }
    }
    call.truncated |= capped;
}

pub(super) fn fill_stream(events: &[SseEvent], call: &mut LlmCall) -> StreamEnd {
    let mut end = StreamEnd::default();
    for i in 0..events.len() {
        if events[i].data.trim().is_empty() {
            continue;
        }
        let Some(v) = event_json(events, i, end.ended, &mut end) else {
            continue;
        };
        if let Some(msg) = super::error_message(&v) {
            call.error = Some(msg);
            end.ended = true;
            continue;
        }
        end.ended |= add_chunk(&v, call, &mut end.capped);
    }
    end
}

/// Adds one `GenerateContentResponse`; true when it ends the answer (a
/// finish reason, or a blocked prompt).
fn add_chunk(v: &Value, call: &mut LlmCall, capped: &mut bool) -> bool {
    if call.model.is_none() {
        call.model = str_at(v, "modelVersion")
            .or_else(|| str_at(v, "model_version"))
            .map(str::to_owned);
    }
    if let Some(u) = get(v, "usageMetadata", "usage_metadata") {
        let n = |camel, snake| get(u, camel, snake).and_then(Value::as_u64);
        let candidates = n("candidatesTokenCount", "candidates_token_count");
        let thoughts = n("thoughtsTokenCount", "thoughts_token_count");
        call.usage.input_tokens = n("promptTokenCount", "prompt_token_count");
        call.usage.output_tokens = match (candidates, thoughts) {
            (None, None) => None,
            (c, t) => Some(c.unwrap_or(0) + t.unwrap_or(0)),
        };
        call.usage.reasoning_tokens = thoughts;
    }
    let mut ended = false;
    if let Some(fb) = get(v, "promptFeedback", "prompt_feedback") {
        if let Some(reason) = get(fb, "blockReason", "block_reason").and_then(Value::as_str) {
            let mut why = format!("prompt blocked: {}", filter_reason(reason, fb));
            if let Some(m) =
                get(fb, "blockReasonMessage", "block_reason_message").and_then(Value::as_str)
            {
                why = format!("{why}: {m}");
            }
            call.output.refusal = Some(why);
            ended = true;
        }
    }
    let candidates = list(v, "candidates", "candidates");
    let candidate = candidates
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        .or_else(|| candidates.first());
    let Some(candidate) = candidate else {
        return ended;
    };
    let out = &mut call.output;
    for part in candidate.get("content").map_or(&[][..], parts) {
        if let Some(fc) = get(part, "functionCall", "function_call") {
            if out.tool_calls.len() >= MAX_TOOL_CALLS {
                *capped = true;
                continue;
            }
            let spec = function_call(fc, out.tool_calls.len());
            out.tool_calls.push(spec);
        } else if let Some(text) = str_at(part, "text") {
            if is_thought(part) {
                push_opt(&mut out.reasoning, text, capped);
            } else {
                push_capped(&mut out.text, text, capped);
            }
        }
    }
    if let Some(reason) = get(candidate, "finishReason", "finish_reason").and_then(Value::as_str) {
        out.finish_reason = Some(reason.to_owned());
        if FILTERED.contains(&reason) {
            let mut why = filter_reason(reason, candidate);
            if let Some(m) =
                get(candidate, "finishMessage", "finish_message").and_then(Value::as_str)
            {
                why = format!("{why}: {m}");
            }
            out.refusal = Some(why);
        }
        ended = true;
    }
    ended
}

/// `SAFETY (HARM_CATEGORY_DANGEROUS_CONTENT=HIGH)`: the reason and the
/// ratings that were blocked or at least MEDIUM.
fn filter_reason(reason: &str, holder: &Value) -> String {
    let flagged: Vec<String> = list(holder, "safetyRatings", "safety_ratings")
        .iter()
        .filter(|r| {
            r.get("blocked").and_then(Value::as_bool) == Some(true)
                || matches!(str_at(r, "probability"), Some("MEDIUM" | "HIGH"))
        })
        .map(|r| {
            format!(
                "{}={}",
                str_at(r, "category").unwrap_or("?"),
                str_at(r, "probability").unwrap_or("?")
            )
        })
        .collect();
    if flagged.is_empty() {
        reason.to_owned()
    } else {
        format!("{reason} ({})", flagged.join(", "))
    }
}
