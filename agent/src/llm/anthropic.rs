//! Anthropic messages (`POST /v1/messages`).
//!
//! Request: `model`, `system` (a string or text blocks), `messages[]` whose
//! `content` is a string or blocks (`text`, assistant `tool_use` with an
//! `input` object, user `tool_result` with `tool_use_id`, `content`,
//! `is_error`), `tools[].name`, `metadata.user_id`, `stream`.
//! Response: `content[]` blocks (`text`, `tool_use`, `thinking`),
//! `stop_reason`, `usage.input_tokens` / `output_tokens`.
//! Stream: `message_start` (model, input usage), then per block
//! `content_block_start` / `content_block_delta` (`text_delta`,
//! `input_json_delta` with `partial_json`, `thinking_delta`) /
//! `content_block_stop`, then `message_delta` (stop reason, cumulative
//! output usage) and `message_stop`; `ping` anywhere; `error` ends it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::fast::{Named, Obj, Present, Str, StrOr, Valid, S};
use super::{
    array_at, compact, compact_text, event_json, push_capped, push_opt, str_at, system_prompt,
    tool_call, u64_at, StreamEnd, MAX_TOOL_CALLS,
};
use crate::event::{LlmCall, Message, Output};
use crate::http::sse::SseEvent;

pub(super) fn fill_request(v: &Value, call: &mut LlmCall) {
    call.model = str_at(v, "model").map(str::to_owned);
    call.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    call.api_user = v
        .get("metadata")
        .and_then(|m| str_at(m, "user_id"))
        .map(str::to_owned);
    match v.get("system") {
        Some(Value::String(s)) => call.system = Some(system_prompt(s.clone())),
        Some(blocks @ Value::Array(_)) => call.system = Some(system_prompt(flatten_text(blocks))),
        _ => {}
    }
    for m in array_at(v, "messages") {
        push_message(m, &mut call.messages);
    }
    for t in array_at(v, "tools") {
        if let Some(name) = str_at(t, "name") {
            call.tools.push(name.to_owned());
        }
    }
}

/// One request message: `tool_result` blocks become `tool` messages (they
/// come first in a user turn, as the API requires), the rest one message
/// with the text and the `tool_use` blocks as tool calls.
fn push_message(m: &Value, messages: &mut Vec<Message>) {
    let role = str_at(m, "role").unwrap_or_default().to_owned();
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            messages.push(Message {
                role,
                content: s.clone(),
                ..Message::default()
            });
            return;
        }
        Some(Value::Array(blocks)) => blocks.as_slice(),
        _ => &[],
    };
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    let mut results = 0;
    for b in blocks {
        match str_at(b, "type") {
            Some("text") => texts.push(str_at(b, "text").unwrap_or_default()),
            Some("tool_use") => tool_calls.push(tool_call(
                str_at(b, "id").unwrap_or_default(),
                str_at(b, "name").unwrap_or_default(),
                b.get("input").map_or_else(|| "{}".to_owned(), compact),
            )),
            Some("tool_result") => {
                results += 1;
                messages.push(Message {
                    role: "tool".to_owned(),
                    content: b.get("content").map(flatten_text).unwrap_or_default(),
                    tool_call_id: str_at(b, "tool_use_id").map(str::to_owned),
                    tool_calls: Vec::new(),
                    is_error: Some(b.get("is_error").and_then(Value::as_bool).unwrap_or(false)),
                });
            }
            // Images, documents, thinking replayed in history: no text.
            _ => {}
        }
    }
    if !texts.is_empty() || !tool_calls.is_empty() || results == 0 {
        messages.push(Message {
            role,
            content: texts.join("\n"),
            tool_calls,
            ..Message::default()
        });
    }
}

/// A messages request body, typed (see `fast.rs`): the fields
/// [`fill_request`] reads, nothing else.
#[derive(Deserialize)]
pub(super) struct MessagesRequest<'a> {
    #[serde(default, borrow)]
    model: Str<'a>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    metadata: Option<Obj<Metadata<'a>>>,
    #[serde(default, borrow)]
    system: Option<StrOr<'a, Obj<TextBlock<'a>>>>,
    #[serde(default, borrow)]
    messages: Option<Vec<Obj<TypedMessage<'a>>>>,
    #[serde(default, borrow)]
    tools: Option<Vec<Obj<Named<'a>>>>,
}

#[derive(Deserialize)]
pub(super) struct Metadata<'a> {
    #[serde(default, borrow)]
    user_id: Str<'a>,
}

/// A block of which only text is kept (system, tool results).
#[derive(Deserialize)]
pub(super) struct TextBlock<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Str<'a>,
    #[serde(default, borrow)]
    text: Str<'a>,
}

#[derive(Deserialize)]
pub(super) struct TypedMessage<'a> {
    #[serde(default, borrow)]
    role: Str<'a>,
    #[serde(default, borrow)]
    content: Option<StrOr<'a, Obj<TypedBlock<'a>>>>,
}

/// A content block: text, tool_use, tool_result (others are skipped).
#[derive(Deserialize)]
pub(super) struct TypedBlock<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Str<'a>,
    #[serde(default, borrow)]
    text: Str<'a>,
    #[serde(default, borrow)]
    id: Str<'a>,
    #[serde(default, borrow)]
    name: Str<'a>,
    #[serde(default)]
    input: Present,
    #[serde(default, borrow)]
    content: Option<StrOr<'a, Obj<TextBlock<'a>>>>,
    #[serde(default, borrow)]
    tool_use_id: Str<'a>,
    #[serde(default)]
    is_error: Option<bool>,
}

fn string_of(s: Str<'_>) -> String {
    s.map_or_else(String::new, S::into_string)
}

/// [`flatten_text`] of a typed string or block list.
fn typed_text(v: StrOr<'_, Obj<TextBlock<'_>>>) -> String {
    match v {
        StrOr::Text(s) => s.into_string(),
        StrOr::List(blocks) => blocks
            .iter()
            .filter(|b| b.0.kind.as_ref().is_none_or(|t| t.as_str() == "text"))
            .filter_map(|b| b.0.text.as_ref().map(S::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// [`fill_request`] from the typed body: the same call.
pub(super) fn fill_typed_request(r: MessagesRequest<'_>, call: &mut LlmCall) {
    call.model = r.model.map(S::into_string);
    call.stream = r.stream.unwrap_or(false);
    call.api_user = r.metadata.and_then(|m| m.0.user_id).map(S::into_string);
    if let Some(system) = r.system {
        call.system = Some(system_prompt(typed_text(system)));
    }
    for Obj(m) in r.messages.unwrap_or_default() {
        push_typed_message(m, &mut call.messages);
    }
    for Obj(t) in r.tools.unwrap_or_default() {
        if let Some(name) = t.name {
            call.tools.push(name.into_string());
        }
    }
}

/// [`push_message`] of a typed message.
fn push_typed_message(m: TypedMessage<'_>, messages: &mut Vec<Message>) {
    let role = string_of(m.role);
    let blocks = match m.content {
        Some(StrOr::Text(s)) => {
            messages.push(Message {
                role,
                content: s.into_string(),
                ..Message::default()
            });
            return;
        }
        Some(StrOr::List(blocks)) => blocks,
        None => Vec::new(),
    };
    let mut texts: Vec<S<'_>> = Vec::new();
    let mut tool_calls = Vec::new();
    let mut results = 0;
    for Obj(b) in blocks {
        match b.kind.as_ref().map(S::as_str) {
            Some("text") => texts.push(b.text.unwrap_or(S(std::borrow::Cow::Borrowed("")))),
            Some("tool_use") => tool_calls.push(crate::event::ToolCallSpec {
                id: string_of(b.id),
                name: string_of(b.name),
                arguments: b.input.0.map_or_else(|| "{}".to_owned(), |v| compact(&v)),
            }),
            Some("tool_result") => {
                results += 1;
                messages.push(Message {
                    role: "tool".to_owned(),
                    content: b.content.map(typed_text).unwrap_or_default(),
                    tool_call_id: b.tool_use_id.map(S::into_string),
                    tool_calls: Vec::new(),
                    is_error: Some(b.is_error.unwrap_or(false)),
                });
            }
            _ => {}
        }
    }
    if !texts.is_empty() || !tool_calls.is_empty() || results == 0 {
        messages.push(Message {
            role,
            content: texts.iter().map(S::as_str).collect::<Vec<_>>().join("\n"),
            tool_calls,
            ..Message::default()
        });
    }
}

/// A string, or the `text` of text blocks joined by `\n`.
fn flatten_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| str_at(b, "type").is_none_or(|t| t == "text"))
            .filter_map(|b| str_at(b, "text"))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

pub(super) fn fill_response(v: &Value, call: &mut LlmCall) {
    if call.model.is_none() {
        call.model = str_at(v, "model").map(str::to_owned);
    }
    if let Some(u) = v.get("usage") {
        call.usage.input_tokens = u64_at(u, "input_tokens");
        call.usage.output_tokens = u64_at(u, "output_tokens");
    }
    let out = &mut call.output;
    for b in array_at(v, "content") {
        match str_at(b, "type") {
            Some("text") => out.text.push_str(str_at(b, "text").unwrap_or_default()),
            Some("tool_use") => out.tool_calls.push(tool_call(
                str_at(b, "id").unwrap_or_default(),
                str_at(b, "name").unwrap_or_default(),
                b.get("input").map_or_else(|| "{}".to_owned(), compact),
            )),
            Some("thinking") => join_reasoning(
                &mut out.reasoning,
                str_at(b, "thinking").unwrap_or_default(),
                &mut false,
            ),
            _ => {}
        }
    }
    set_stop_reason(out, str_at(v, "stop_reason"));
}

/// A block of a streamed message, by its index.
enum Block {
    Text(String),
    ToolUse {
        id: String,
        name: String,
        /// `input` of `content_block_start` (usually `{}`).
        initial: Option<Value>,
        partial_json: String,
    },
    Thinking(String),
    Other,
}

pub(super) fn fill_stream(events: &[SseEvent], call: &mut LlmCall, typed: bool) -> StreamEnd {
    let mut end = StreamEnd::default();
    let mut blocks: BTreeMap<u64, Block> = BTreeMap::new();
    let mut stop_reason: Option<String> = None;
    for (i, ev) in events.iter().enumerate() {
        let data = ev.data.trim();
        if data.is_empty() {
            continue;
        }
        // Deltas, most of a stream, read the typed way; any other event
        // goes the `Value` way, which also reports bad JSON.
        if typed
            && ev
                .event
                .as_deref()
                .is_none_or(|e| e == "content_block_delta")
        {
            if let Some(d) = typed_delta(data) {
                let index = d.index.unwrap_or(0);
                add_delta(&mut blocks, index, &d.parts(), &mut end.capped);
                continue;
            }
        }
        let Some(v) = event_json(events, i, end.ended, &mut end) else {
            continue;
        };
        // The `type` inside the data is authoritative; `event:` repeats it.
        let kind = str_at(&v, "type")
            .or(ev.event.as_deref())
            .unwrap_or_default();
        match kind {
            "message_start" => {
                let Some(m) = v.get("message") else { continue };
                if call.model.is_none() {
                    call.model = str_at(m, "model").map(str::to_owned);
                }
                if let Some(u) = m.get("usage") {
                    call.usage.input_tokens = u64_at(u, "input_tokens");
                    call.usage.output_tokens = u64_at(u, "output_tokens");
                }
            }
            "content_block_start" => {
                let index = u64_at(&v, "index").unwrap_or(0);
                if !blocks.contains_key(&index) && blocks.len() >= MAX_TOOL_CALLS {
                    end.capped = true;
                    continue;
                }
                let cb = v.get("content_block").unwrap_or(&Value::Null);
                let block = match str_at(cb, "type") {
                    Some("text") => Block::Text(str_at(cb, "text").unwrap_or_default().to_owned()),
                    Some("tool_use") => Block::ToolUse {
                        id: str_at(cb, "id").unwrap_or_default().to_owned(),
                        name: str_at(cb, "name").unwrap_or_default().to_owned(),
                        initial: cb.get("input").cloned(),
                        partial_json: String::new(),
                    },
                    Some("thinking") => {
                        Block::Thinking(str_at(cb, "thinking").unwrap_or_default().to_owned())
                    }
                    _ => Block::Other,
                };
                blocks.insert(index, block);
            }
            "content_block_delta" => {
                let index = u64_at(&v, "index").unwrap_or(0);
                let delta = BlockDelta::of(v.get("delta").unwrap_or(&Value::Null));
                add_delta(&mut blocks, index, &delta, &mut end.capped);
            }
            "message_delta" => {
                if let Some(r) = v.get("delta").and_then(|d| str_at(d, "stop_reason")) {
                    stop_reason = Some(r.to_owned());
                }
                // Usage here is cumulative: the last one wins.
                if let Some(u) = v.get("usage") {
                    if let Some(n) = u64_at(u, "output_tokens") {
                        call.usage.output_tokens = Some(n);
                    }
                    if let Some(n) = u64_at(u, "input_tokens") {
                        call.usage.input_tokens = Some(n);
                    }
                }
            }
            "message_stop" => end.ended = true,
            "error" => {
                call.error = super::error_message(&v).or_else(|| Some("stream error".to_owned()));
                end.ended = true;
            }
            // ping, content_block_stop, and future event types.
            _ => {}
        }
    }
    add_blocks(blocks, &mut call.output, &mut end.capped);
    set_stop_reason(&mut call.output, stop_reason.as_deref());
    end
}

/// The answer the stream's blocks make, in index order.
fn add_blocks(blocks: BTreeMap<u64, Block>, out: &mut Output, capped: &mut bool) {
    for block in blocks.into_values() {
        match block {
            Block::Text(t) => push_capped(&mut out.text, &t, capped),
            Block::ToolUse {
                id,
                name,
                initial,
                partial_json,
            } => {
                let arguments = if partial_json.trim().is_empty() {
                    initial.as_ref().map_or_else(|| "{}".to_owned(), compact)
                } else {
                    compact_text(&partial_json)
                };
                out.tool_calls.push(tool_call(&id, &name, arguments));
            }
            Block::Thinking(t) => join_reasoning(&mut out.reasoning, &t, capped),
            Block::Other => {}
        }
    }
}

/// Applies a `content_block_delta`; a delta whose block start was not
/// seen (lost) starts the block from the delta's type. Not past
/// [`MAX_TOOL_CALLS`] blocks.
fn add_delta(
    blocks: &mut BTreeMap<u64, Block>,
    index: u64,
    delta: &BlockDelta<'_>,
    capped: &mut bool,
) {
    if !blocks.contains_key(&index) && blocks.len() >= MAX_TOOL_CALLS {
        *capped = true;
        return;
    }
    let entry = blocks.entry(index);
    match delta.kind {
        Some("text_delta") => {
            if let Block::Text(t) = entry.or_insert_with(|| Block::Text(String::new())) {
                push_capped(t, delta.text, capped);
            }
        }
        Some("input_json_delta") => {
            let block = entry.or_insert_with(|| Block::ToolUse {
                id: String::new(),
                name: String::new(),
                initial: None,
                partial_json: String::new(),
            });
            if let Block::ToolUse { partial_json, .. } = block {
                push_capped(partial_json, delta.partial_json, capped);
            }
        }
        Some("thinking_delta") => {
            if let Block::Thinking(t) = entry.or_insert_with(|| Block::Thinking(String::new())) {
                push_capped(t, delta.thinking, capped);
            }
        }
        // signature_delta, citations_delta: nothing we report.
        _ => {}
    }
}

/// What a `content_block_delta` carries, however the event was read
/// (a missing or non-string text is empty).
#[derive(Default)]
struct BlockDelta<'v> {
    kind: Option<&'v str>,
    text: &'v str,
    partial_json: &'v str,
    thinking: &'v str,
}

impl<'v> BlockDelta<'v> {
    fn of(delta: &'v Value) -> Self {
        let text = |key| str_at(delta, key).unwrap_or_default();
        BlockDelta {
            kind: str_at(delta, "type"),
            text: text("text"),
            partial_json: text("partial_json"),
            thinking: text("thinking"),
        }
    }
}

/// A `content_block_delta` event, typed (see `fast.rs`, whose rules it
/// follows); None for any other event or shape.
#[derive(Deserialize)]
pub(super) struct TypedDelta<'a> {
    #[serde(rename = "type", borrow)]
    kind: S<'a>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    delta: Option<Obj<TypedBlockDelta<'a>>>,
}

#[derive(Deserialize)]
struct TypedBlockDelta<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Str<'a>,
    #[serde(default, borrow)]
    text: Str<'a>,
    #[serde(default, borrow)]
    partial_json: Str<'a>,
    #[serde(default, borrow)]
    thinking: Str<'a>,
}

impl TypedDelta<'_> {
    fn parts(&self) -> BlockDelta<'_> {
        self.delta
            .as_ref()
            .map_or_else(BlockDelta::default, |Obj(t)| BlockDelta {
                kind: t.kind.as_ref().map(S::as_str),
                text: t.text.as_ref().map_or("", S::as_str),
                partial_json: t.partial_json.as_ref().map_or("", S::as_str),
                thinking: t.thinking.as_ref().map_or("", S::as_str),
            })
    }
}

pub(super) fn typed_delta(data: &str) -> Option<TypedDelta<'_>> {
    serde_json::from_str::<Valid>(data).ok()?;
    let Obj(d) = serde_json::from_str::<Obj<TypedDelta<'_>>>(data).ok()?;
    (d.kind.as_str() == "content_block_delta").then_some(d)
}

fn join_reasoning(reasoning: &mut Option<String>, text: &str, capped: &mut bool) {
    if reasoning.is_some() {
        push_opt(reasoning, "\n", capped);
    }
    push_opt(reasoning, text, capped);
}

/// `stop_reason` is the finish reason; `refusal` also marks the output as
/// a refusal, whose text is what the model wrote before stopping.
fn set_stop_reason(out: &mut Output, reason: Option<&str>) {
    out.finish_reason = reason.map(str::to_owned);
    if reason == Some("refusal") {
        out.refusal = Some(if out.text.is_empty() {
            "refusal".to_owned()
        } else {
            out.text.clone()
        });
    }
}
