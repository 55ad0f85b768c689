//! OpenAI Responses API, streamed: `response.*` server-sent events.
//!
//! Every event's data carries its `type` (the SSE `event:` field repeats
//! it) and output items are addressed by `output_index`:
//! `response.created` / `.in_progress` (the response's id and model),
//! `response.output_item.added` (an item starts: a message, a
//! `function_call` with its `call_id` and name, `reasoning`),
//! `response.output_text.delta`, `response.refusal.delta`,
//! `response.function_call_arguments.delta` / `.done`,
//! `response.custom_tool_call_input.delta`,
//! `response.reasoning_summary_text.delta` / `.done`,
//! `response.output_item.done` (the item, whole), and one terminal event:
//! `response.completed`, `response.incomplete` or `response.failed`, each
//! holding the whole `Response` with its usage — or `error`.
//!
//! The terminal response is authoritative when it lists the output;
//! otherwise (a cut stream, or a server that sends it without output) the
//! answer is rebuilt from the items and deltas seen.

use std::collections::BTreeMap;

use serde_json::Value;

use super::responses::{
    add_output_item, fill_meta, fill_response_object, finish_output, join_text, tool_call_of,
};
use super::{event_json, push_capped, set_capped, str_at, u64_at, StreamEnd, MAX_TOOL_CALLS};
use crate::event::{LlmCall, Output, ToolCallSpec};
use crate::http::sse::SseEvent;

/// An output item being streamed.
#[derive(Debug)]
enum Item {
    Message {
        text: String,
        refusal: String,
    },
    Call(ToolCallSpec),
    /// Summary parts by `summary_index`.
    Reasoning(BTreeMap<u64, String>),
    /// Whole from `response.output_item.done`.
    Done(Value),
    Other,
}

impl Item {
    fn from_added(item: &Value) -> Item {
        match str_at(item, "type") {
            Some("message") => Item::Message {
                text: String::new(),
                refusal: String::new(),
            },
            Some("reasoning") => Item::Reasoning(BTreeMap::new()),
            _ => tool_call_of(item).map_or(Item::Other, Item::Call),
        }
    }
}

/// Most output items followed in one stream.
const MAX_ITEMS: usize = MAX_TOOL_CALLS * 2;

#[derive(Default)]
struct State {
    items: BTreeMap<u64, Item>,
    /// The response of the terminal event.
    terminal: Option<Value>,
    capped: bool,
}

impl State {
    /// The item at `index`; a delta whose item start was lost starts a
    /// message or a call from the delta's kind.
    fn item(&mut self, index: u64, make: fn() -> Item) -> Option<&mut Item> {
        if !self.items.contains_key(&index) && self.items.len() >= MAX_ITEMS {
            self.capped = true;
            return None;
        }
        Some(self.items.entry(index).or_insert_with(make))
    }
}

fn new_message() -> Item {
    Item::Message {
        text: String::new(),
        refusal: String::new(),
    }
}

fn new_call() -> Item {
    Item::Call(ToolCallSpec::default())
}

fn new_reasoning() -> Item {
    Item::Reasoning(BTreeMap::new())
}

pub(super) fn fill_stream(events: &[SseEvent], call: &mut LlmCall) -> StreamEnd {
    let mut end = StreamEnd::default();
    let mut st = State::default();
    for (i, ev) in events.iter().enumerate() {
        if ev.data.trim().is_empty() || ev.data.trim() == "[DONE]" {
            continue;
        }
        let Some(v) = event_json(events, i, end.ended, &mut end) else {
            continue;
        };
        let kind = str_at(&v, "type")
            .or(ev.event.as_deref())
            .unwrap_or_default();
        let index = u64_at(&v, "output_index").unwrap_or(0);
        let delta = str_at(&v, "delta").unwrap_or_default();
        match kind {
            "response.created" | "response.in_progress" | "response.queued" => {
                if let Some(r) = v.get("response") {
                    fill_meta(r, call);
                }
            }
            "response.output_item.added" => {
                let item = Item::from_added(v.get("item").unwrap_or(&Value::Null));
                if let Some(slot) = st.item(index, || Item::Other) {
                    *slot = item;
                }
            }
            "response.output_item.done" => {
                let item = v.get("item").cloned().unwrap_or(Value::Null);
                if let Some(slot) = st.item(index, || Item::Other) {
                    *slot = Item::Done(item);
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                let mut c = false;
                if let Some(Item::Message { text, refusal }) = st.item(index, new_message) {
                    let dst = if kind == "response.output_text.delta" {
                        text
                    } else {
                        refusal
                    };
                    push_capped(dst, delta, &mut c);
                }
                st.capped |= c;
            }
            "response.function_call_arguments.delta" | "response.custom_tool_call_input.delta" => {
                let mut c = false;
                if let Some(Item::Call(spec)) = st.item(index, new_call) {
                    push_capped(&mut spec.arguments, delta, &mut c);
                }
                st.capped |= c;
            }
            "response.function_call_arguments.done" => {
                let mut c = false;
                if let Some(Item::Call(spec)) = st.item(index, new_call) {
                    let args = str_at(&v, "arguments").unwrap_or_default();
                    set_capped(&mut spec.arguments, args, &mut c);
                }
                st.capped |= c;
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_summary_text.done" => {
                let part = u64_at(&v, "summary_index").unwrap_or(0);
                let mut c = false;
                if let Some(Item::Reasoning(parts)) = st.item(index, new_reasoning) {
                    let text = parts.entry(part).or_default();
                    if kind == "response.reasoning_summary_text.done" {
                        set_capped(text, str_at(&v, "text").unwrap_or_default(), &mut c);
                    } else {
                        push_capped(text, delta, &mut c);
                    }
                }
                st.capped |= c;
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                st.terminal = v.get("response").cloned();
                end.ended = true;
            }
            "error" => {
                // `{"type":"error","code","message","param"}`.
                let err = serde_json::json!({ "error": {
                    "code": v.get("code"), "message": v.get("message"),
                }});
                call.error = super::error_message(&err);
                end.ended = true;
            }
            // Content-part bookkeeping, text `.done` events, annotations,
            // built-in tool progress: nothing the deltas did not say.
            _ => {}
        }
    }
    finish(st, call, &mut end);
    end
}

/// The answer: the terminal response's when it lists the output, else
/// rebuilt from the items seen.
fn finish(st: State, call: &mut LlmCall, end: &mut StreamEnd) {
    end.capped |= st.capped;
    if let Some(r) = &st.terminal {
        if !super::array_at(r, "output").is_empty() {
            fill_response_object(r, call, &mut end.capped);
            return;
        }
        fill_meta(r, call);
    }
    let mut out = Output::default();
    let capped = &mut end.capped;
    for item in st.items.into_values() {
        match item {
            Item::Message { text, refusal } => {
                join_text(&mut out.text, &text, capped);
                if !refusal.is_empty() {
                    let mut r = out.refusal.take().unwrap_or_default();
                    push_capped(&mut r, &refusal, capped);
                    out.refusal = Some(r);
                }
            }
            Item::Call(spec) => {
                if out.tool_calls.len() < MAX_TOOL_CALLS {
                    out.tool_calls.push(spec);
                } else {
                    *capped = true;
                }
            }
            Item::Reasoning(parts) => {
                for text in parts.values() {
                    let mut r = out.reasoning.take().unwrap_or_default();
                    join_text(&mut r, text, capped);
                    out.reasoning = Some(r);
                }
            }
            Item::Done(v) => add_output_item(&v, &mut out, capped),
            Item::Other => {}
        }
    }
    if let Some(r) = &st.terminal {
        finish_output(r, &mut out);
    }
    call.output = out;
}
