//! LLM API calls: one HTTP exchange in, one [`LlmCall`] out.
//!
//! `route.rs` tells the wire format from the request path (each API has its
//! own), or else from the shape of a JSON request body, and names who
//! serves it from the Host header. Each format's module fills the request
//! side (model, system prompt, messages, declared tools) and the response
//! side, from a JSON body, a server-sent event stream, or (Ollama) one
//! JSON object per line:
//!
//! | module | API |
//! |---|---|
//! | `openai.rs` | OpenAI chat completions (and compatible servers) |
//! | `anthropic.rs` | Anthropic messages |
//! | `responses.rs`, `responses_stream.rs` | OpenAI Responses API |
//! | `gemini.rs` | Gemini `generateContent` / `streamGenerateContent` |
//! | `ollama.rs` | Ollama `/api/chat`, `/api/generate` |
//! | `embeddings.rs` | OpenAI, Gemini and Ollama embeddings |
//! | `bedrock.rs` | Amazon Bedrock Converse and InvokeModel (event-stream framing) |
//!
//! What we do not understand is kept rather than guessed: unknown content
//! parts are skipped, fields of an unexpected type are left empty, and a
//! response that is not JSON still yields the call with its request and an
//! `error`. Invalid JSON where JSON is due is an error, except at the end
//! of a body that was cut, where it is truncation. Text accumulated from
//! stream fragments is capped ([`MAX_TEXT_BYTES`], [`MAX_TOOL_CALLS`]);
//! hitting a cap marks the call `truncated`.

#![expect(
    clippy::doc_markdown,
    reason = "provider and product names are prose, not code"
)]

mod anthropic;
mod bedrock;
mod embeddings;
pub(crate) mod fast;
mod gemini;
mod ollama;
mod openai;
mod responses;
mod responses_stream;
pub(crate) mod route;
mod synth;

#[cfg(test)]
mod tests;

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use self::route::Api;
use crate::event::{LlmCall, SystemPrompt, ToolCallSpec};
use crate::http::eventstream;
use crate::http::sse::{self, SseEvent};
use crate::http::{Exchange, Response};

/// Most bytes kept of one text accumulated from stream fragments (the
/// answer, its reasoning, one tool call's arguments).
pub(crate) const MAX_TEXT_BYTES: usize = 4 * 1024 * 1024;
/// Most tool calls kept from one answer.
pub const MAX_TOOL_CALLS: usize = 256;
/// How much of an error message (or of a non-JSON error body) goes into
/// `error`.
const ERROR_TEXT_CHARS: usize = 300;

/// Why an exchange on a known LLM API could not be decoded. Each is
/// counted under [`LlmError::name`].
#[derive(thiserror::Error, Debug)]
pub enum LlmError {
    #[error("{provider} request body is not valid JSON")]
    BadRequestJson {
        provider: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{provider} request body is not a JSON object")]
    RequestNotObject { provider: &'static str },
    #[error("{provider} response body is not valid JSON")]
    BadResponseJson {
        provider: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{provider} stream event {index} is not valid JSON")]
    BadStreamJson {
        provider: &'static str,
        index: usize,
        #[source]
        source: serde_json::Error,
    },
}

impl LlmError {
    /// The counter this error is reported under.
    pub fn name(&self) -> &'static str {
        match self {
            LlmError::BadRequestJson { .. } => "llm_bad_request_json",
            LlmError::RequestNotObject { .. } => "llm_request_not_object",
            LlmError::BadResponseJson { .. } => "llm_bad_response_json",
            LlmError::BadStreamJson { .. } => "llm_bad_stream_json",
        }
    }
}

/// What [`decode_lenient`] could read, and what it could not.
#[derive(Debug, Default)]
pub struct Decoded {
    /// None when the exchange is not an LLM call we know, or when its
    /// request could not be read at all.
    pub call: Option<LlmCall>,
    /// Each should be counted; the call, if any, holds the rest.
    pub problems: Vec<LlmError>,
}

/// Decodes one HTTP exchange. `Ok(None)` when it is not an LLM API call we
/// know (not an error: e.g. `GET /favicon.ico`). Invalid JSON in the
/// request or response gives `Err`; use [`decode_lenient`] to keep what
/// could be read in that case too.
pub fn decode(ex: &Exchange) -> Result<Option<LlmCall>, LlmError> {
    let mut d = decode_lenient(ex);
    if d.problems.is_empty() {
        Ok(d.call)
    } else {
        Err(d.problems.swap_remove(0))
    }
}

/// Like [`decode`], but a malformed response or stream event still yields
/// the call with everything else (marked with `error`), next to the
/// problems to count.
pub fn decode_lenient(ex: &Exchange) -> Decoded {
    let mut problems = Vec::new();
    let call = decode_inner(ex, true, &mut problems);
    Decoded { call, problems }
}

/// [`decode_lenient`] without the typed decoding (`fast.rs`): every
/// request body and stream event read as a `Value`, as before it. The tests check
/// both ways give the same; the decoder benchmarks measure both.
#[doc(hidden)]
pub fn decode_lenient_by_value(ex: &Exchange) -> Decoded {
    let mut problems = Vec::new();
    let call = decode_inner(ex, false, &mut problems);
    Decoded { call, problems }
}

fn decode_inner(ex: &Exchange, typed: bool, problems: &mut Vec<LlmError>) -> Option<LlmCall> {
    let req = &ex.request;
    // HTTP/2 picked up mid-way may not know the method; a body says POST.
    let method_unknown = req.headers_unknown && req.method.is_empty() && !req.body.is_empty();
    // A WebSocket exchange is one message on a `GET` upgrade.
    if !req.method.eq_ignore_ascii_case("POST") && !method_unknown && !ex.websocket {
        return None;
    }
    // The APIs with typed request decoding (`fast.rs`), when the body
    // takes it; the others, and bodies it does not take, as a `Value`.
    let fast = (typed && !ex.websocket)
        .then(|| route::by_path(&req.path))
        .flatten()
        .and_then(|api| Some((api, fast::request(api, &req.body)?)));
    if let Some((api, request)) = fast {
        let mut call = new_call(ex, api);
        request.fill(&mut call);
        return Some(finish_call(ex, api, call, typed, problems));
    }
    let parsed: Result<Value, serde_json::Error> = serde_json::from_slice(&req.body);
    let by_path = if ex.websocket {
        match websocket_api(req, parsed.as_ref().ok()) {
            WsApi::Known(a) => Some(a),
            WsApi::ByShape => None,
            WsApi::NotLlm => return None,
        }
    } else {
        route::by_path(&req.path)
    };
    let mut api = match (by_path, &parsed) {
        (Some(a), _) => a,
        (None, Ok(v)) => route::by_shape(req, v)?,
        (None, Err(_)) => return None,
    };
    if let (Api::BedrockInvoke { stream, .. }, Ok(v)) = (api, &parsed) {
        let model = route::model_from_path(&req.path);
        api = Api::BedrockInvoke {
            stream,
            vendor: bedrock::vendor(model.as_deref(), v),
        };
    }

    let mut call = new_call(ex, api);
    match parsed {
        Ok(v) if v.is_object() => fill_request(api, &v, &mut call),
        // A cut body does not parse; that is truncation, already marked.
        _ if req.body_truncated => {}
        Ok(_) => {
            problems.push(LlmError::RequestNotObject {
                provider: api.family(),
            });
            return None;
        }
        Err(source) => {
            problems.push(LlmError::BadRequestJson {
                provider: api.family(),
                source,
            });
            return None;
        }
    }
    Some(finish_call(ex, api, call, typed, problems))
}

/// The call's fields that come from the exchange rather than the body.
fn new_call(ex: &Exchange, api: Api) -> LlmCall {
    let req = &ex.request;
    let server = route::server_of(req);
    let mut call = LlmCall {
        transport: ex.websocket.then(|| "websocket".to_owned()),
        provider: route::provider(api, &server),
        operation: api.operation().to_owned(),
        role: ex.role,
        server,
        path: req.path.clone(),
        api_key_id: req.api_key_id.clone(),
        // No response is a missing part, whatever the exchange says.
        truncated: ex.truncated || req.body_truncated || ex.response.is_none(),
        ..LlmCall::default()
    };
    if let (Some(end), Some(_)) = (ex.t_response_end, &ex.response) {
        call.latency_ms = Some(ms(end.saturating_sub(ex.t_request_start)));
    }

    if matches!(api, Api::BedrockConverse { .. } | Api::BedrockInvoke { .. }) {
        // The body names no model: the path does.
        call.model = route::model_from_path(&req.path);
    }
    call
}

/// What follows the request body: the stream flag of the APIs that say it
/// in the method, the model from the path, the response.
fn finish_call(
    ex: &Exchange,
    api: Api,
    mut call: LlmCall,
    typed: bool,
    problems: &mut Vec<LlmError>,
) -> LlmCall {
    let req = &ex.request;
    match api {
        // Gemini and Bedrock say it in the method, not in the body.
        Api::Gemini { stream }
        | Api::BedrockConverse { stream }
        | Api::BedrockInvoke { stream, .. } => call.stream = stream,
        _ => {}
    }
    if call.model.is_none() {
        call.model = route::model_from_path(&req.path);
    }

    if let Some(resp) = &ex.response {
        decode_response(ex, resp, api, &mut call, typed, problems);
    }
    call
}

/// What a WebSocket message is.
enum WsApi {
    Known(Api),
    /// Decide by the body's shape.
    ByShape,
    NotLlm,
}

/// The API of a WebSocket exchange. The Responses API's WebSocket mode
/// sends `response.create` messages whose other fields are a Responses
/// request body; a request cut before its type could be read, on the
/// Responses path, is still one (its answer says so).
fn websocket_api(req: &crate::http::Request, v: Option<&Value>) -> WsApi {
    match v.map(|v| str_at(v, "type")) {
        Some(Some("response.create")) => WsApi::Known(Api::Responses),
        Some(Some(_)) => WsApi::NotLlm,
        _ => match route::by_path(&req.path) {
            Some(Api::Responses) => WsApi::Known(Api::Responses),
            _ => WsApi::ByShape,
        },
    }
}

fn fill_request(api: Api, v: &Value, call: &mut LlmCall) {
    match api {
        Api::OpenAiChat => openai::fill_request(v, call),
        Api::Anthropic => anthropic::fill_request(v, call),
        Api::Responses => responses::fill_request(v, call),
        Api::Gemini { .. } => gemini::fill_request(v, call),
        Api::OllamaChat => ollama::fill_chat_request(v, call),
        Api::OllamaGenerate => ollama::fill_generate_request(v, call),
        Api::Embeddings(e) => embeddings::fill_request(e, v, call),
        Api::BedrockConverse { .. } => bedrock::fill_converse_request(v, call),
        Api::BedrockInvoke { vendor, .. } => bedrock::fill_invoke_request(vendor, v, call),
    }
}

/// A JSON (not streamed) answer.
fn fill_response(api: Api, v: &Value, call: &mut LlmCall) {
    match api {
        Api::OpenAiChat => openai::fill_response(v, call),
        Api::Anthropic => anthropic::fill_response(v, call),
        Api::Responses => responses::fill_response(v, call),
        Api::Gemini { .. } => gemini::fill_response(v, call),
        Api::OllamaChat | Api::OllamaGenerate => {
            let end = ollama::fill_ndjson(std::slice::from_ref(v), call);
            call.truncated |= end.capped;
        }
        Api::Embeddings(e) => embeddings::fill_response(e, v, call),
        Api::BedrockConverse { .. } => bedrock::fill_converse_response(v, call),
        Api::BedrockInvoke { vendor, .. } => bedrock::fill_invoke_response(vendor, v, call),
    }
}

/// How a response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Sse,
    /// One JSON object per line: Ollama's streams.
    Ndjson,
    /// AWS event-stream binary messages: Bedrock's streams.
    EventStream,
    Json,
    Other,
}

fn framing(api: Api, resp: &Response) -> Framing {
    let content_type = resp
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/vnd.amazon.eventstream")
        || (content_type.is_empty() && eventstream::looks_like(&resp.body))
    {
        return Framing::EventStream;
    }
    let body = resp.body.trim_ascii_start();
    if content_type.starts_with("text/event-stream")
        || (content_type.is_empty() && (body.starts_with(b"data:") || body.starts_with(b"event:")))
    {
        return Framing::Sse;
    }
    let ollama = matches!(api, Api::OllamaChat | Api::OllamaGenerate);
    // Ollama streams unless told not to; a proxy may relabel the type.
    let several_lines = body.trim_ascii_end().contains(&b'\n') && body.starts_with(b"{");
    if content_type.contains("ndjson") || (ollama && several_lines) {
        return Framing::Ndjson;
    }
    if content_type.contains("json") || body.starts_with(b"{") || body.starts_with(b"[") {
        Framing::Json
    } else {
        Framing::Other
    }
}

fn decode_response(
    ex: &Exchange,
    resp: &Response,
    api: Api,
    call: &mut LlmCall,
    typed: bool,
    problems: &mut Vec<LlmError>,
) {
    call.status = Some(resp.status);
    call.truncated |= resp.body_truncated;
    let framing = framing(api, resp);
    if framing == Framing::EventStream && resp.status < 400 {
        call.stream = true;
        if let (Some(first), Some(_)) = (ex.t_first_body, ex.t_response_end) {
            call.ttft_ms = Some(ms(first.saturating_sub(ex.t_request_end)));
        }
        let end = match api {
            Api::BedrockInvoke { vendor, .. } => {
                bedrock::fill_invoke_stream(vendor, &resp.body, call)
            }
            _ => bedrock::fill_converse_stream(&resp.body, call),
        };
        finish_stream(end, api, resp, ex, call, problems);
        return;
    }
    if matches!(framing, Framing::Sse | Framing::Ndjson) {
        call.stream = true;
        if let (Some(first), Some(_)) = (ex.t_first_body, ex.t_response_end) {
            call.ttft_ms = Some(ms(first.saturating_sub(ex.t_request_end)));
        }
        let end = if framing == Framing::Sse {
            let events = sse::parse_sse(&resp.body);
            match api {
                Api::OpenAiChat => openai::fill_stream(&events, call, typed),
                Api::Anthropic => anthropic::fill_stream(&events, call, typed),
                Api::Responses => responses_stream::fill_stream(&events, call),
                Api::Gemini { .. } => gemini::fill_stream(&events, call),
                // Not a format these APIs stream in: read what parses.
                Api::OllamaChat
                | Api::OllamaGenerate
                | Api::Embeddings(_)
                | Api::BedrockConverse { .. }
                | Api::BedrockInvoke { .. } => {
                    let values = json_events(&events);
                    ollama::fill_ndjson(&values, call)
                }
            }
        } else {
            ollama::fill_ndjson_body(&resp.body, call)
        };
        finish_stream(end, api, resp, ex, call, problems);
        return;
    }
    if framing == Framing::Other {
        if !resp.body.trim_ascii().is_empty() || resp.status >= 400 {
            call.error = Some(non_json_error(resp));
        }
        return;
    }
    match serde_json::from_slice::<Value>(&resp.body) {
        Ok(v) => {
            let aws = matches!(api, Api::BedrockConverse { .. } | Api::BedrockInvoke { .. });
            if let Some(msg) = aws
                .then(|| aws_error(resp, &v))
                .flatten()
                .or_else(|| error_message(&v))
            {
                call.error = Some(msg);
            } else if resp.status >= 400 {
                call.error = Some(format!("HTTP {}", resp.status));
            }
            if resp.status < 400 {
                fill_response(api, &v, call);
            }
        }
        Err(_) if call.truncated => {}
        Err(source) => {
            problems.push(LlmError::BadResponseJson {
                provider: api.family(),
                source,
            });
            call.error = Some(format!("HTTP {}: response is not valid JSON", resp.status));
        }
    }
    if resp.status == 429 {
        mark_rate_limit(call);
    }
}

fn finish_stream(
    end: StreamEnd,
    api: Api,
    resp: &Response,
    ex: &Exchange,
    call: &mut LlmCall,
    problems: &mut Vec<LlmError>,
) {
    if let Some((index, source)) = end.bad_json {
        problems.push(LlmError::BadStreamJson {
            provider: api.family(),
            index,
            source,
        });
        call.error
            .get_or_insert_with(|| format!("stream event {index} is not valid JSON"));
    }
    if end.ended {
        // The provider's end marker says the answer is whole, even when
        // the client closed the connection before reading the chunked
        // terminator (the openai SDK does).
        // Events lost in the middle still make it truncated.
        call.truncated = ex.request.body_truncated || resp.body_cut || end.capped;
    } else {
        call.truncated = true;
    }
}

/// A 429 answer's error starts with `rate_limit`, whatever each provider
/// calls it (`rate_limit_exceeded`, `rate_limit_error`,
/// `RESOURCE_EXHAUSTED`, `insufficient_quota`), so that rules and
/// dashboards find rate limits with one prefix.
fn mark_rate_limit(call: &mut LlmCall) {
    match &mut call.error {
        Some(e) if e.starts_with("rate_limit") => {}
        Some(e) => e.insert_str(0, "rate_limit: "),
        None => call.error = Some("rate_limit: HTTP 429".to_owned()),
    }
}

/// Events of a stream in a format the API does not use, as JSON values;
/// what does not parse is skipped.
fn json_events(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter_map(|e| serde_json::from_str(e.data.trim()).ok())
        .collect()
}

/// Nanoseconds to milliseconds.
fn ms(ns: u64) -> f64 {
    Duration::from_nanos(ns).as_secs_f64() * 1e3
}

/// The provider's error in a JSON body, as `<code or type>: <message>`:
/// OpenAI's `{"error":{"message","type","code"}}`, Anthropic's
/// `{"type":"error","error":{"type","message"}}`, Gemini's
/// `{"error":{"code":429,"status","message"}}` (inside a list when a
/// stream is not SSE), and Ollama's and proxies' `{"error":"…"}`. The
/// code comes first because it is the stable, specific part
/// (`rate_limit_exceeded`, `invalid_api_key`); messages carry request
/// details and are cut.
fn error_message(v: &Value) -> Option<String> {
    let v = match v {
        Value::Array(items) => items.first()?,
        _ => v,
    };
    error_text(v.get("error")?)
}

/// The text of an `error` member: a string, `code`/`status`/`type` and
/// `message` of an object, or its JSON; None for null.
fn error_text(err: &Value) -> Option<String> {
    let text = match err {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Object(_) => {
            let kind = str_at(err, "code")
                .or_else(|| str_at(err, "status"))
                .or_else(|| str_at(err, "type"))
                .filter(|k| !k.is_empty());
            match (kind, str_at(err, "message")) {
                (Some(k), Some(m)) => format!("{k}: {m}"),
                (Some(k), None) => k.to_owned(),
                (None, Some(m)) => m.to_owned(),
                (None, None) => compact(err),
            }
        }
        other => compact(other),
    };
    Some(cap_chars(&text))
}

/// An AWS error answer: the type from `x-amzn-ErrorType` (`Throttling
/// Exception:http://…`, the part before `:`) or the body's `__type`, and
/// the body's `message`.
fn aws_error(resp: &Response, v: &Value) -> Option<String> {
    if resp.status < 400 {
        return None;
    }
    let kind = resp
        .header("x-amzn-errortype")
        .or_else(|| str_at(v, "__type"))
        .map(|t| t.split(':').next().unwrap_or(t))
        .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned());
    let message = str_at(v, "message").or_else(|| str_at(v, "Message"));
    let text = match (kind, message) {
        (Some(k), Some(m)) => format!("{k}: {m}"),
        (Some(k), None) => k,
        (None, Some(m)) => m.to_owned(),
        (None, None) => return None,
    };
    Some(cap_chars(&text))
}

/// At most [`ERROR_TEXT_CHARS`] characters, whitespace runs folded.
fn cap_chars(text: &str) -> String {
    let text: String = text.chars().take(ERROR_TEXT_CHARS).collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn non_json_error(resp: &Response) -> String {
    let text = cap_chars(&String::from_utf8_lossy(&resp.body));
    if text.is_empty() {
        format!("HTTP {}", resp.status)
    } else {
        format!("HTTP {}: {text}", resp.status)
    }
}

fn system_prompt(text: String) -> SystemPrompt {
    let sha256 = hex::encode(Sha256::digest(text.as_bytes()));
    SystemPrompt { text, sha256 }
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

fn u64_at(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn array_at<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Compact JSON text of a value (serialising a `Value` cannot fail).
fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// Re-serialises streamed JSON compactly so that a streamed tool call's
/// arguments read the same as the non-streamed one's; keeps the text as
/// is when it does not parse (a cut stream).
fn compact_text(text: &str) -> String {
    serde_json::from_str::<Value>(text).map_or_else(|_| text.to_owned(), |v| compact(&v))
}

/// What a stream decoder saw of the stream's end.
#[derive(Debug, Default)]
struct StreamEnd {
    /// The provider's end marker (or a terminal error) was seen.
    ended: bool,
    /// The first event whose JSON is invalid, unless it is the last event
    /// of a stream that did not end (cut mid-event: truncation).
    bad_json: Option<(usize, serde_json::Error)>,
    /// Something was dropped at a cap: the call is truncated even though
    /// the stream ended.
    capped: bool,
}

/// Parses one event's JSON, telling a cut last event from a bad one.
fn event_json(
    events: &[SseEvent],
    index: usize,
    ended: bool,
    end: &mut StreamEnd,
) -> Option<Value> {
    let data = events.get(index)?.data.trim();
    match serde_json::from_str(data) {
        Ok(v) => Some(v),
        Err(e) => {
            let cut_tail = index + 1 == events.len() && !ended;
            if !cut_tail && end.bad_json.is_none() {
                end.bad_json = Some((index, e));
            }
            None
        }
    }
}

/// Appends to an optional string, creating it; capped like
/// [`push_capped`].
fn push_opt(slot: &mut Option<String>, s: &str, capped: &mut bool) {
    push_capped(slot.get_or_insert_with(String::new), s, capped);
}

/// Appends at most up to [`MAX_TEXT_BYTES`] in all (cut at a character
/// boundary); sets `capped` when something was left out.
fn push_capped(dst: &mut String, s: &str, capped: &mut bool) {
    let room = MAX_TEXT_BYTES.saturating_sub(dst.len());
    if s.len() <= room {
        dst.push_str(s);
        return;
    }
    let mut cut = room;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    dst.push_str(&s[..cut]);
    *capped = true;
}

/// Sets a text given whole (a `.done` event, a final object), capped.
fn set_capped(dst: &mut String, s: &str, capped: &mut bool) {
    dst.clear();
    push_capped(dst, s, capped);
}

fn tool_call(id: &str, name: &str, arguments: String) -> ToolCallSpec {
    ToolCallSpec {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments,
    }
}
