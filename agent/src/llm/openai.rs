//! OpenAI chat completions (`POST …/chat/completions`), as spoken by
//! OpenAI, Azure OpenAI and most compatible servers (vLLM, Ollama,
//! LiteLLM, DeepSeek, …).
//!
//! Request: `model`, `messages[]` (`role`, `content` as a string or parts,
//! assistant `tool_calls[]`, tool `tool_call_id`), `tools[].function.name`
//! (legacy `functions[].name`), `user`, `stream`.
//! Response: `choices[0].message` with `content`, `refusal`, `tool_calls`;
//! `finish_reason`; `usage.prompt_tokens` / `completion_tokens`.
//! Stream: `data: {chat.completion.chunk}` events whose `choices[].delta`
//! carry fragments — tool calls arrive by `index`, the id and name in the
//! first fragment, the arguments spread over the following ones — then an
//! optional usage-only chunk (`stream_options.include_usage`) and
//! `data: [DONE]`.

#![expect(
    clippy::doc_markdown,
    reason = "provider and product names are prose, not code"
)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::fast::{Content, Named, Obj, Present, Str, StrOr, Valid, S};
use super::{
    array_at, compact, event_json, push_capped, push_opt, str_at, system_prompt, tool_call, u64_at,
    StreamEnd, MAX_TOOL_CALLS,
};
use crate::event::{LlmCall, Message, Output, ToolCallSpec, Usage};
use crate::http::sse::SseEvent;

/// Where a legacy streamed `function_call` is kept among indexed tool calls.
const LEGACY_FUNCTION_INDEX: u64 = u64::MAX;

pub(super) fn fill_request(v: &Value, call: &mut LlmCall) {
    call.model = str_at(v, "model").map(str::to_owned);
    call.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
    call.api_user = str_at(v, "user")
        .or_else(|| str_at(v, "safety_identifier"))
        .map(str::to_owned);

    let mut system = Vec::new();
    for m in array_at(v, "messages") {
        let role = str_at(m, "role").unwrap_or_default().to_owned();
        let content = flatten_content(m.get("content").unwrap_or(&Value::Null));
        if role == "system" || role == "developer" {
            system.push(content.clone());
        }
        let mut tool_calls: Vec<ToolCallSpec> =
            array_at(m, "tool_calls").iter().map(spec_of).collect();
        if let Some(fc) = m.get("function_call").filter(|f| f.is_object()) {
            tool_calls.push(tool_call(
                "",
                str_at(fc, "name").unwrap_or_default(),
                arguments_of(fc),
            ));
        }
        call.messages.push(Message {
            role,
            content,
            tool_call_id: str_at(m, "tool_call_id").map(str::to_owned),
            tool_calls,
            is_error: None,
        });
    }
    if !system.is_empty() {
        call.system = Some(system_prompt(system.join("\n")));
    }

    for t in array_at(v, "tools") {
        // `{"type":"function","function":{"name"}}`, or a custom tool.
        let name = t
            .get("function")
            .and_then(|f| str_at(f, "name"))
            .or_else(|| t.get("custom").and_then(|c| str_at(c, "name")))
            .or_else(|| str_at(t, "name"));
        if let Some(name) = name {
            call.tools.push(name.to_owned());
        }
    }
    for f in array_at(v, "functions") {
        if let Some(name) = str_at(f, "name") {
            call.tools.push(name.to_owned());
        }
    }
}

/// A chat request body, typed (see `fast.rs`): the fields
/// [`fill_request`] reads, nothing else.
#[derive(Deserialize)]
pub(super) struct ChatRequest<'a> {
    #[serde(default, borrow)]
    model: Str<'a>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    user: Str<'a>,
    #[serde(default, borrow)]
    safety_identifier: Str<'a>,
    #[serde(default, borrow)]
    messages: Option<Vec<Obj<ChatMessage<'a>>>>,
    #[serde(default, borrow)]
    tools: Option<Vec<Obj<ToolDecl<'a>>>>,
    #[serde(default, borrow)]
    functions: Option<Vec<Obj<Named<'a>>>>,
}

#[derive(Deserialize)]
pub(super) struct ChatMessage<'a> {
    #[serde(default, borrow)]
    role: Str<'a>,
    #[serde(default, borrow)]
    content: Option<Content<'a>>,
    #[serde(default, borrow)]
    tool_call_id: Str<'a>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<Obj<TypedToolCall<'a>>>>,
    #[serde(default, borrow)]
    function_call: Option<Obj<TypedFunction<'a>>>,
}

#[derive(Deserialize)]
pub(super) struct TypedToolCall<'a> {
    #[serde(default, borrow)]
    id: Str<'a>,
    #[serde(default, borrow)]
    function: Option<Obj<TypedFunction<'a>>>,
}

/// `{"name","arguments"}`; arguments given as anything but a string (or
/// null) fail the typed parse (the walk serialises them).
#[derive(Deserialize)]
pub(super) struct TypedFunction<'a> {
    #[serde(default, borrow)]
    name: Str<'a>,
    #[serde(default, borrow)]
    arguments: Str<'a>,
}

#[derive(Deserialize)]
pub(super) struct ToolDecl<'a> {
    #[serde(default, borrow)]
    function: Option<Obj<Named<'a>>>,
    #[serde(default, borrow)]
    custom: Option<Obj<Named<'a>>>,
    #[serde(default, borrow)]
    name: Str<'a>,
}

fn string_of(s: Str<'_>) -> String {
    s.map_or_else(String::new, S::into_string)
}

fn typed_spec(id: Str<'_>, f: Option<TypedFunction<'_>>) -> ToolCallSpec {
    let (name, arguments) = f.map_or((None, None), |f| (f.name, f.arguments));
    ToolCallSpec {
        id: string_of(id),
        name: string_of(name),
        arguments: string_of(arguments),
    }
}

/// [`fill_request`] from the typed body: the same call.
pub(super) fn fill_typed_request(r: ChatRequest<'_>, call: &mut LlmCall) {
    call.model = r.model.map(S::into_string);
    call.stream = r.stream.unwrap_or(false);
    call.api_user = r.user.or(r.safety_identifier).map(S::into_string);

    let mut system = Vec::new();
    for Obj(m) in r.messages.unwrap_or_default() {
        let role = string_of(m.role);
        let content = match m.content {
            Some(StrOr::Text(s)) => s.into_string(),
            Some(StrOr::List(parts)) => parts
                .iter()
                .filter_map(|p| p.0.as_ref().map(S::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            None => String::new(),
        };
        if role == "system" || role == "developer" {
            system.push(content.clone());
        }
        let mut tool_calls: Vec<ToolCallSpec> = m
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .map(|Obj(tc)| typed_spec(tc.id, tc.function.map(|f| f.0)))
            .collect();
        if let Some(Obj(fc)) = m.function_call {
            tool_calls.push(typed_spec(None, Some(fc)));
        }
        call.messages.push(Message {
            role,
            content,
            tool_call_id: m.tool_call_id.map(S::into_string),
            tool_calls,
            is_error: None,
        });
    }
    if !system.is_empty() {
        call.system = Some(system_prompt(system.join("\n")));
    }

    for Obj(t) in r.tools.unwrap_or_default() {
        let name = t
            .function
            .and_then(|f| f.0.name)
            .or_else(|| t.custom.and_then(|c| c.0.name))
            .or(t.name);
        if let Some(name) = name {
            call.tools.push(name.into_string());
        }
    }
    for Obj(f) in r.functions.unwrap_or_default() {
        if let Some(name) = f.name {
            call.tools.push(name.into_string());
        }
    }
}

pub(super) fn fill_response(v: &Value, call: &mut LlmCall) {
    if call.model.is_none() {
        call.model = str_at(v, "model").map(str::to_owned);
    }
    if let Some(usage) = v.get("usage") {
        call.usage = usage_of(usage);
    }
    let Some(choice) = first_choice(v) else {
        return;
    };
    let out = &mut call.output;
    out.finish_reason = str_at(choice, "finish_reason").map(str::to_owned);
    let Some(message) = choice.get("message") else {
        filtered_is_refusal(out);
        return;
    };
    out.text = flatten_content(message.get("content").unwrap_or(&Value::Null));
    out.refusal = str_at(message, "refusal").map(str::to_owned);
    out.reasoning = str_at(message, "reasoning_content")
        .or_else(|| str_at(message, "reasoning"))
        .map(str::to_owned);
    out.tool_calls = array_at(message, "tool_calls")
        .iter()
        .map(spec_of)
        .collect();
    if let Some(fc) = message.get("function_call").filter(|f| f.is_object()) {
        out.tool_calls.push(tool_call(
            "",
            str_at(fc, "name").unwrap_or_default(),
            arguments_of(fc),
        ));
    }
    filtered_is_refusal(out);
}

/// `content_filter` (Azure's content filter, and OpenAI's) stopped the
/// answer: a refusal by the platform rather than the model.
fn filtered_is_refusal(out: &mut Output) {
    if out.finish_reason.as_deref() == Some("content_filter") && out.refusal.is_none() {
        out.refusal = Some("content_filter".to_owned());
    }
}

pub(super) fn fill_stream(events: &[SseEvent], call: &mut LlmCall, typed: bool) -> StreamEnd {
    let mut end = StreamEnd::default();
    let mut tools: BTreeMap<u64, ToolCallSpec> = BTreeMap::new();
    for (i, ev) in events.iter().enumerate() {
        let data = ev.data.trim();
        if data == "[DONE]" {
            end.ended = true;
            continue;
        }
        if data.is_empty() {
            continue;
        }
        // Most chunks read the typed way; any other goes the `Value` way,
        // which also reports bad JSON.
        if let Some(chunk) = typed.then(|| typed_chunk(data)).flatten() {
            add_typed_chunk(chunk, call, &mut tools, &mut end);
            continue;
        }
        // Only `[DONE]` proves nothing follows: a cut after the
        // finish_reason chunk (usage chunk, `[DONE]`) is still a cut.
        let Some(chunk) = event_json(events, i, end.ended, &mut end) else {
            continue;
        };
        add_chunk(&chunk, call, &mut tools, &mut end);
    }
    let out = &mut call.output;
    out.tool_calls = tools.into_values().collect();
    filtered_is_refusal(out);
    // A finish_reason says the answer is complete even if `[DONE]` was
    // not captured.
    end.ended |= out.finish_reason.is_some();
    end
}

/// One chunk, walked as a `Value`.
fn add_chunk(
    chunk: &Value,
    call: &mut LlmCall,
    tools: &mut BTreeMap<u64, ToolCallSpec>,
    end: &mut StreamEnd,
) {
    if let Some(msg) = super::error_message(chunk) {
        // A mid-stream error ends the stream.
        call.error = Some(msg);
        end.ended = true;
    }
    if call.model.is_none() {
        call.model = str_at(chunk, "model").map(str::to_owned);
    }
    if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
        call.usage = usage_of(usage);
    }
    for choice in array_at(chunk, "choices") {
        // Only the first choice (n > 1 is rare, and one answer is
        // what an agent acts on).
        if u64_at(choice, "index").unwrap_or(0) != 0 {
            continue;
        }
        let finish_reason = str_at(choice, "finish_reason");
        let Some(delta) = choice.get("delta") else {
            add_delta(
                &mut call.output,
                tools,
                finish_reason,
                None,
                &mut end.capped,
            );
            continue;
        };
        let parts = DeltaParts {
            content: str_at(delta, "content"),
            refusal: str_at(delta, "refusal"),
            reasoning: str_at(delta, "reasoning_content").or_else(|| str_at(delta, "reasoning")),
            tool_calls: array_at(delta, "tool_calls"),
            function_call: delta.get("function_call"),
        };
        add_delta(
            &mut call.output,
            tools,
            finish_reason,
            Some(parts),
            &mut end.capped,
        );
    }
}

/// What a chunk's first choice carries, however the chunk was read.
struct DeltaParts<'v> {
    content: Option<&'v str>,
    refusal: Option<&'v str>,
    reasoning: Option<&'v str>,
    tool_calls: &'v [Value],
    function_call: Option<&'v Value>,
}

/// Adds a chunk's first choice to the answer: the one place both ways of
/// reading a chunk meet, so they cannot differ in what they make of it.
fn add_delta(
    out: &mut Output,
    tools: &mut BTreeMap<u64, ToolCallSpec>,
    finish_reason: Option<&str>,
    delta: Option<DeltaParts<'_>>,
    capped: &mut bool,
) {
    if let Some(reason) = finish_reason {
        out.finish_reason = Some(reason.to_owned());
    }
    let Some(d) = delta else { return };
    if let Some(s) = d.content {
        push_capped(&mut out.text, s, capped);
    }
    if let Some(s) = d.refusal {
        push_opt(&mut out.refusal, s, capped);
    }
    if let Some(s) = d.reasoning {
        push_opt(&mut out.reasoning, s, capped);
    }
    for (pos, tc) in d.tool_calls.iter().enumerate() {
        let index = u64_at(tc, "index").unwrap_or(pos as u64);
        if let Some(spec) = tool_slot(tools, index, capped) {
            merge_fragment(spec, tc.get("id"), tc.get("function"), capped);
        }
    }
    if let Some(fc) = d.function_call.filter(|f| f.is_object()) {
        if let Some(spec) = tool_slot(tools, LEGACY_FUNCTION_INDEX, capped) {
            merge_fragment(spec, None, Some(fc), capped);
        }
    }
}

/// A streamed chunk, typed (see `fast.rs`, whose rules it follows: valid
/// JSON first, strict types, objects where objects are due, no key twice;
/// anything else goes the `Value` way). The hot fields are read borrowed;
/// `error`, `usage` and tool-call fragments, rare or small, are kept as
/// `Value`s and read by the same code as the walk's.
#[derive(Deserialize)]
pub(super) struct Chunk<'a> {
    #[serde(default)]
    error: Present,
    #[serde(default, borrow)]
    model: Str<'a>,
    #[serde(default)]
    usage: Present,
    #[serde(default, borrow)]
    choices: Option<Vec<Obj<ChunkChoice<'a>>>>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default, borrow)]
    finish_reason: Str<'a>,
    #[serde(default, borrow)]
    delta: Option<Obj<ChunkDelta<'a>>>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(default, borrow)]
    content: Str<'a>,
    #[serde(default, borrow)]
    refusal: Str<'a>,
    #[serde(default, borrow)]
    reasoning_content: Str<'a>,
    #[serde(default, borrow)]
    reasoning: Str<'a>,
    #[serde(default)]
    tool_calls: Present,
    #[serde(default)]
    function_call: Present,
}

pub(super) fn typed_chunk(data: &str) -> Option<Chunk<'_>> {
    serde_json::from_str::<Valid>(data).ok()?;
    serde_json::from_str::<Obj<Chunk<'_>>>(data)
        .ok()
        .map(|Obj(c)| c)
}

/// [`add_chunk`] for a typed chunk: the same steps in the same order.
fn add_typed_chunk(
    chunk: Chunk<'_>,
    call: &mut LlmCall,
    tools: &mut BTreeMap<u64, ToolCallSpec>,
    end: &mut StreamEnd,
) {
    if let Some(msg) = chunk.error.0.as_ref().and_then(super::error_text) {
        call.error = Some(msg);
        end.ended = true;
    }
    if call.model.is_none() {
        call.model = chunk.model.map(S::into_string);
    }
    if let Some(usage) = chunk.usage.0.as_ref().filter(|u| u.is_object()) {
        call.usage = usage_of(usage);
    }
    for Obj(choice) in chunk.choices.into_iter().flatten() {
        if choice.index.unwrap_or(0) != 0 {
            continue;
        }
        let finish_reason = choice.finish_reason.as_ref().map(S::as_str);
        let Some(Obj(d)) = &choice.delta else {
            add_delta(
                &mut call.output,
                tools,
                finish_reason,
                None,
                &mut end.capped,
            );
            continue;
        };
        let parts = DeltaParts {
            content: d.content.as_ref().map(S::as_str),
            refusal: d.refusal.as_ref().map(S::as_str),
            reasoning: d
                .reasoning_content
                .as_ref()
                .or(d.reasoning.as_ref())
                .map(S::as_str),
            tool_calls: d
                .tool_calls
                .0
                .as_ref()
                .and_then(Value::as_array)
                .map_or(&[], Vec::as_slice),
            function_call: d.function_call.0.as_ref(),
        };
        add_delta(
            &mut call.output,
            tools,
            finish_reason,
            Some(parts),
            &mut end.capped,
        );
    }
}

/// The tool call at `index`, unless [`MAX_TOOL_CALLS`] are already held.
fn tool_slot<'t>(
    tools: &'t mut BTreeMap<u64, ToolCallSpec>,
    index: u64,
    capped: &mut bool,
) -> Option<&'t mut ToolCallSpec> {
    if !tools.contains_key(&index) && tools.len() >= MAX_TOOL_CALLS {
        *capped = true;
        return None;
    }
    Some(tools.entry(index).or_default())
}

/// Adds one streamed tool-call fragment. The id and name come once (some
/// servers repeat them in every fragment, so they are set, not appended);
/// arguments are appended.
fn merge_fragment(
    spec: &mut ToolCallSpec,
    id: Option<&Value>,
    function: Option<&Value>,
    capped: &mut bool,
) {
    if let Some(id) = id.and_then(Value::as_str).filter(|s| !s.is_empty()) {
        if spec.id.is_empty() {
            id.clone_into(&mut spec.id);
        }
    }
    let Some(f) = function else { return };
    if let Some(name) = str_at(f, "name").filter(|s| !s.is_empty()) {
        if spec.name.is_empty() {
            name.clone_into(&mut spec.name);
        }
    }
    if let Some(args) = str_at(f, "arguments") {
        push_capped(&mut spec.arguments, args, capped);
    }
}

fn first_choice(v: &Value) -> Option<&Value> {
    let choices = array_at(v, "choices");
    choices
        .iter()
        .find(|c| u64_at(c, "index") == Some(0))
        .or_else(|| choices.first())
}

/// `{"id","type":"function","function":{"name","arguments"}}`.
fn spec_of(tc: &Value) -> ToolCallSpec {
    let f = tc.get("function").unwrap_or(&Value::Null);
    tool_call(
        str_at(tc, "id").unwrap_or_default(),
        str_at(f, "name").unwrap_or_default(),
        arguments_of(f),
    )
}

/// Arguments are a JSON text; a server that sends an object gets it
/// serialised.
fn arguments_of(f: &Value) -> String {
    match f.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => compact(other),
    }
}

fn usage_of(u: &Value) -> Usage {
    Usage {
        input_tokens: u64_at(u, "prompt_tokens").or_else(|| u64_at(u, "input_tokens")),
        output_tokens: u64_at(u, "completion_tokens").or_else(|| u64_at(u, "output_tokens")),
        // Reported as 0 by models that do not reason: that says nothing.
        reasoning_tokens: u
            .get("completion_tokens_details")
            .and_then(|d| u64_at(d, "reasoning_tokens"))
            .filter(|n| *n > 0),
    }
}

/// A content string, or the text of its parts joined by `\n`; images,
/// audio and files are skipped.
fn flatten_content(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                _ => str_at(p, "text").or_else(|| str_at(p, "refusal")),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}
