//! LLM API calls: one HTTP exchange in, one [`LlmCall`] out.
//!
//! A provider is recognised by the request path (`…/chat/completions` is
//! OpenAI's chat API, also spoken by most compatible servers; `/v1/messages`
//! is Anthropic's), or else by the shape of a JSON request body. Each
//! provider module fills the request side (model, system prompt, messages,
//! declared tools) and the response side, from a JSON body or from a
//! server-sent event stream.
//!
//! What we do not understand is kept rather than guessed: unknown content
//! parts are skipped, fields of an unexpected type are left empty, and a
//! response that is not JSON still yields the call with its request and an
//! `error`. Invalid JSON where JSON is due is an error, except at the end
//! of a body that was cut, where it is truncation.

#![expect(
    clippy::doc_markdown,
    reason = "provider and product names are prose, not code"
)]

mod anthropic;
mod openai;

#[cfg(test)]
mod tests;

use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::{LlmCall, Server, SystemPrompt, ToolCallSpec};
use crate::http::sse::{self, SseEvent};
use crate::http::{Exchange, Request, Response};

pub const PROVIDER_OPENAI: &str = "openai";
pub const PROVIDER_ANTHROPIC: &str = "anthropic";

/// TLS is what we watch: a Host without a port means 443.
const DEFAULT_PORT: u16 = 443;
/// How much of a non-JSON error body goes into `error`.
const ERROR_TEXT_CHARS: usize = 200;

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
    let call = decode_inner(ex, &mut problems);
    Decoded { call, problems }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => PROVIDER_OPENAI,
            Provider::Anthropic => PROVIDER_ANTHROPIC,
        }
    }

    fn operation(self) -> &'static str {
        match self {
            Provider::OpenAi => "chat",
            Provider::Anthropic => "messages",
        }
    }
}

fn decode_inner(ex: &Exchange, problems: &mut Vec<LlmError>) -> Option<LlmCall> {
    let req = &ex.request;
    // HTTP/2 picked up mid-way may not know the method; a body says POST.
    let method_unknown = req.headers_unknown && req.method.is_empty() && !req.body.is_empty();
    if !req.method.eq_ignore_ascii_case("POST") && !method_unknown {
        return None;
    }
    let by_path = provider_by_path(&req.path);
    let parsed: Result<Value, serde_json::Error> = serde_json::from_slice(&req.body);
    let provider = match (by_path, &parsed) {
        (Some(p), _) => p,
        (None, Ok(v)) => provider_by_shape(req, v)?,
        (None, Err(_)) => return None,
    };

    let mut call = LlmCall {
        provider: provider.name().to_owned(),
        operation: provider.operation().to_owned(),
        role: ex.role,
        server: server_of(req),
        path: req.path.clone(),
        api_key_id: req.api_key_id.clone(),
        // No response is a missing part, whatever the exchange says.
        truncated: ex.truncated || req.body_truncated || ex.response.is_none(),
        ..LlmCall::default()
    };
    if let (Some(end), Some(_)) = (ex.t_response_end, &ex.response) {
        call.latency_ms = Some(ms(end.saturating_sub(ex.t_request_start)));
    }

    match parsed {
        Ok(v) if v.is_object() => match provider {
            Provider::OpenAi => openai::fill_request(&v, &mut call),
            Provider::Anthropic => anthropic::fill_request(&v, &mut call),
        },
        // A cut body does not parse; that is truncation, already marked.
        _ if req.body_truncated => {}
        Ok(_) => {
            problems.push(LlmError::RequestNotObject {
                provider: provider.name(),
            });
            return None;
        }
        Err(source) => {
            problems.push(LlmError::BadRequestJson {
                provider: provider.name(),
                source,
            });
            return None;
        }
    }

    if let Some(resp) = &ex.response {
        decode_response(ex, resp, provider, &mut call, problems);
    }
    Some(call)
}

fn decode_response(
    ex: &Exchange,
    resp: &Response,
    provider: Provider,
    call: &mut LlmCall,
    problems: &mut Vec<LlmError>,
) {
    call.status = Some(resp.status);
    call.truncated |= resp.body_truncated;
    let content_type = resp
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = resp.body.trim_ascii_start();
    let is_sse = content_type.starts_with("text/event-stream")
        || (content_type.is_empty() && (body.starts_with(b"data:") || body.starts_with(b"event:")));
    if is_sse {
        call.stream = true;
        if let (Some(first), Some(_)) = (ex.t_first_body, ex.t_response_end) {
            call.ttft_ms = Some(ms(first.saturating_sub(ex.t_request_end)));
        }
        let events = sse::parse_sse(&resp.body);
        let end = match provider {
            Provider::OpenAi => openai::fill_stream(&events, call),
            Provider::Anthropic => anthropic::fill_stream(&events, call),
        };
        if let Some((index, source)) = end.bad_json {
            problems.push(LlmError::BadStreamJson {
                provider: provider.name(),
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
            call.truncated = ex.request.body_truncated || resp.body_cut;
        } else {
            call.truncated = true;
        }
        return;
    }
    let looks_json =
        content_type.contains("json") || body.starts_with(b"{") || body.starts_with(b"[");
    if !looks_json {
        if !body.is_empty() || resp.status >= 400 {
            call.error = Some(non_json_error(resp));
        }
        return;
    }
    match serde_json::from_slice::<Value>(&resp.body) {
        Ok(v) => {
            if let Some(msg) = error_message(&v) {
                call.error = Some(msg);
            } else if resp.status >= 400 {
                call.error = Some(format!("HTTP {}", resp.status));
            }
            if resp.status < 400 {
                match provider {
                    Provider::OpenAi => openai::fill_response(&v, call),
                    Provider::Anthropic => anthropic::fill_response(&v, call),
                }
            }
        }
        Err(_) if call.truncated => {}
        Err(source) => {
            problems.push(LlmError::BadResponseJson {
                provider: provider.name(),
                source,
            });
            call.error = Some(format!("HTTP {}: response is not valid JSON", resp.status));
        }
    }
}

fn provider_by_path(target: &str) -> Option<Provider> {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_end_matches('/');
    if path.ends_with("/chat/completions") {
        Some(Provider::OpenAi)
    } else if path == "/v1/messages" || path.ends_with("/v1/messages") {
        Some(Provider::Anthropic)
    } else {
        None
    }
}

/// A chat request on a path we do not know (a proxy, a gateway, or HTTP/2
/// headers we could not decode): a JSON object with a model and a list of
/// messages. Anthropic's shape differs by its version header, its
/// top-level `system`, or its content blocks. A Responses API body
/// (`input`, no `messages`) is not a chat request and is not decoded.
fn provider_by_shape(req: &Request, v: &Value) -> Option<Provider> {
    let messages = v.get("messages")?.as_array()?;
    v.get("model")?.as_str()?;
    let anthropic_blocks = messages.iter().any(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .is_some_and(|blocks| {
                blocks.iter().any(|b| {
                    matches!(
                        b.get("type").and_then(Value::as_str),
                        Some("tool_use" | "tool_result")
                    )
                })
            })
    });
    let anthropic = req.header("anthropic-version").is_some()
        || v.get("system").is_some()
        || anthropic_blocks
        || (req.headers_unknown && anthropic_without_headers(v, messages));
    if anthropic {
        Some(Provider::Anthropic)
    } else {
        Some(Provider::OpenAi)
    }
}

/// Without headers, a plain Anthropic request (no system prompt, no tool
/// blocks) is told from an OpenAI one by what each API requires or
/// refuses: Anthropic requires `max_tokens` and refuses `system`,
/// `developer` and `tool` roles inside `messages`; `max_completion_tokens`,
/// `stream_options` and `n` exist only in OpenAI's API. A heuristic: an
/// OpenAI request that sets the legacy `max_tokens` and nothing else
/// OpenAI-only still reads as Anthropic.
fn anthropic_without_headers(v: &Value, messages: &[Value]) -> bool {
    let openai_role = messages.iter().any(|m| {
        matches!(
            m.get("role").and_then(Value::as_str),
            Some("system" | "developer" | "tool")
        )
    });
    let openai_param = ["max_completion_tokens", "stream_options", "n"]
        .iter()
        .any(|k| v.get(k).is_some());
    v.get("max_tokens").is_some() && !openai_role && !openai_param
}

/// Host and port from the Host header (`h`, `h:p`, `[v6]:p`).
fn server_of(req: &Request) -> Server {
    let host = req.header("host").unwrap_or_default().trim();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => (v6, tail.strip_prefix(':')),
            None => (host, None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (host, None),
        }
    };
    Server {
        host: name.to_ascii_lowercase(),
        port: port.and_then(|p| p.parse().ok()).unwrap_or(DEFAULT_PORT),
    }
}

/// Nanoseconds to milliseconds.
fn ms(ns: u64) -> f64 {
    Duration::from_nanos(ns).as_secs_f64() * 1e3
}

/// The provider's error message in a JSON body: OpenAI's
/// `{"error":{"message"}}`, Anthropic's `{"type":"error","error":{...}}`,
/// and the common `{"error":"…"}` / `{"message":"…"}` of proxies.
fn error_message(v: &Value) -> Option<String> {
    let err = v.get("error")?;
    if let Some(s) = err.as_str() {
        return Some(s.to_owned());
    }
    str_at(err, "message")
        .or_else(|| str_at(err, "type"))
        .or_else(|| str_at(err, "code"))
        .map(str::to_owned)
        .or_else(|| (!err.is_null()).then(|| compact(err)))
}

fn non_json_error(resp: &Response) -> String {
    let text: String = String::from_utf8_lossy(&resp.body)
        .chars()
        .take(ERROR_TEXT_CHARS)
        .collect();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
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

/// Appends to an optional string, creating it.
fn push_opt(slot: &mut Option<String>, s: &str) {
    slot.get_or_insert_with(String::new).push_str(s);
}

fn tool_call(id: &str, name: &str, arguments: String) -> ToolCallSpec {
    ToolCallSpec {
        id: id.to_owned(),
        name: name.to_owned(),
        arguments,
    }
}
