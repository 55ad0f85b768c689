//! MCP over HTTP: one HTTP exchange in, the `tools/call`s it carried out.
//!
//! Agents reach many tools through MCP servers; a `tools/call` is a tool
//! call that runs in another process, often on another host, so the kernel
//! of this host sees none of its effects. What we can show is the call
//! itself: which server, which tool, with which arguments, and what it
//! answered.
//!
//! Transports (MCP spec 2024-11-05, 2025-03-26, 2025-06-18):
//! - streamable HTTP: the client `POST`s one JSON-RPC 2.0 message (or,
//!   in 2025-03-26 only, a batch: a JSON array) to the server's endpoint
//!   (often `/mcp`), with `Accept: application/json, text/event-stream`,
//!   `Mcp-Session-Id` once initialised and `MCP-Protocol-Version` from
//!   2025-06-18 on. The answer is `application/json` (one message or a
//!   batch), an SSE stream whose `data:` events each carry one message
//!   (the server may send its own requests and notifications first), or
//!   `202 Accepted` with no body for notifications and responses.
//! - HTTP+SSE (2024-11-05): the client `GET`s `/sse`, whose stream first
//!   names the endpoint (`event: endpoint`, `data: /messages?sessionId=…`),
//!   then `POST`s messages there and gets `202 Accepted`; answers arrive as
//!   `event: message` on the long-lived `GET` stream. A `tools/call` of this
//!   transport is decoded without its result; the stream's responses are
//!   kept by JSON-RPC id in [`McpExchange::answers`], and [`SseJoin`]
//!   pairs the two exchanges by process, server, session and id (the
//!   session is in the endpoint's query, which the stream's first event
//!   names). The stream is one HTTP exchange that ends when the client
//!   closes it, so its answers come then.
//!
//! Recognised as MCP: a `POST` with an `Mcp-Session-Id` or
//! `MCP-Protocol-Version` header, or whose body is JSON-RPC 2.0 with at
//! least one method of MCP's (`initialize`, `ping`, `tools/…`,
//! `notifications/…`, `resources/…`, …: other JSON-RPC APIs, such as
//! Ethereum's, are not MCP); a `GET` with those headers or whose answer is
//! an SSE stream that opens with `event: endpoint`.
//!
//! Total and bounded, like every parser here: at most [`MAX_MESSAGES`]
//! JSON-RPC messages are read per exchange, and arguments and results are
//! cut at [`MAX_TEXT_BYTES`] (marked truncated).

mod join;
#[cfg(test)]
mod tests;

pub use join::{JoinKey, SseJoin};

use serde_json::Value;

use crate::event::{McpInfo, Role, Server};
use crate::http::sse;
use crate::http::{Exchange, Request, Response};
use crate::llm::fast::{Obj, Str, S};
use crate::llm::route::server_of;

/// Most bytes kept of one call's arguments, and of its result text.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most JSON-RPC messages read from one exchange (both directions).
pub const MAX_MESSAGES: usize = 1024;
/// How much of a JSON-RPC error message is kept.
const ERROR_TEXT_CHARS: usize = 300;
/// The one method that is a tool call.
pub const TOOLS_CALL: &str = "tools/call";

/// Why part of an MCP exchange could not be read. Each is counted under
/// [`McpError::name`]; the exchange keeps what could be read.
#[derive(thiserror::Error, Debug)]
pub enum McpError {
    #[error("MCP request body is not valid JSON")]
    BadRequestJson {
        #[source]
        source: serde_json::Error,
    },
    #[error("MCP response body is not valid JSON")]
    BadResponseJson {
        #[source]
        source: serde_json::Error,
    },
    #[error("MCP stream event {index} is not valid JSON")]
    BadStreamJson {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("more than {limit} JSON-RPC messages in one exchange, rest skipped")]
    TooManyMessages { limit: usize },
}

impl McpError {
    /// The counter this error is reported under.
    pub fn name(&self) -> &'static str {
        match self {
            McpError::BadRequestJson { .. } => "mcp_bad_request_json",
            McpError::BadResponseJson { .. } => "mcp_bad_response_json",
            McpError::BadStreamJson { .. } => "mcp_bad_stream_json",
            McpError::TooManyMessages { .. } => "mcp_too_many_messages",
        }
    }
}

/// Which MCP transport an exchange belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    StreamableHttp,
    /// The older HTTP+SSE transport (answers on a separate `GET` stream).
    Sse,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "streamable_http",
            Transport::Sse => "sse",
        }
    }
}

/// One `tools/call` request and, when it was in the same exchange, its
/// answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McpCall {
    /// The JSON-RPC id, as text (`7`, `"abc"`).
    pub id: String,
    /// `params.name`.
    pub name: String,
    /// `params.arguments` as compact JSON text (`{}` when absent).
    pub arguments: String,
    /// The text of `result.content[]` (text items as they are, other
    /// items as `[image image/png]`, `[resource file:///x]`, …, joined by
    /// newlines), or `structuredContent` as JSON when there is no content.
    pub result: Option<String>,
    /// `result.isError` (false when absent), or true for a JSON-RPC error.
    pub is_error: Option<bool>,
    /// A JSON-RPC `error` answer, `<code>: <message>`.
    pub error: Option<String>,
    /// Arguments or result cut at [`MAX_TEXT_BYTES`], or no answer seen.
    pub truncated: bool,
}

/// What an MCP exchange carried.
#[derive(Debug)]
pub struct McpExchange {
    pub role: Role,
    pub server: Server,
    pub path: String,
    pub transport: Transport,
    pub session: Option<String>,
    pub protocol_version: Option<String>,
    pub status: Option<u16>,
    pub calls: Vec<McpCall>,
    /// Responses on an HTTP+SSE `GET` stream, which answer calls posted in
    /// other exchanges: `id` and the answer's fields, no name or arguments.
    pub answers: Vec<McpCall>,
    /// The other messages, by method (`initialize`, `tools/list`,
    /// `notifications/initialized`, …; `response` for answers to anything
    /// but a `tools/call` of this exchange).
    pub other: Vec<String>,
    /// Each should be counted.
    pub problems: Vec<McpError>,
}

impl McpExchange {
    /// `tool.mcp` for one of this exchange's calls.
    pub fn info(&self, call: &McpCall) -> McpInfo {
        McpInfo {
            server: self.server.clone(),
            path: self.path.clone(),
            role: self.role,
            method: TOOLS_CALL.to_owned(),
            transport: self.transport.name().to_owned(),
            session: self.session.clone(),
            protocol_version: self.protocol_version.clone(),
            status: self.status,
            error: call.error.clone(),
        }
    }
}

/// Decodes one HTTP exchange; `None` when it is not MCP.
pub fn decode(ex: &Exchange) -> Option<McpExchange> {
    let req = &ex.request;
    let headers_say =
        req.header("mcp-session-id").is_some() || req.header("mcp-protocol-version").is_some();
    if req.method.eq_ignore_ascii_case("GET") {
        let opens_with_endpoint = ex.response.as_ref().is_some_and(|r| {
            is_sse(r)
                && sse::parse_sse(&r.body)
                    .first()
                    .is_some_and(|e| e.event.as_deref() == Some("endpoint"))
        });
        if !headers_say && !opens_with_endpoint {
            return None;
        }
        let mut m = exchange(
            ex,
            if headers_say {
                Transport::StreamableHttp
            } else {
                Transport::Sse
            },
        );
        if m.transport == Transport::Sse && m.session.is_none() {
            m.session = ex.response.as_ref().and_then(endpoint_session);
        }
        let mut budget = MAX_MESSAGES;
        if let Some(resp) = &ex.response {
            read_response(ex, resp, &mut m, &mut budget);
        }
        return Some(m);
    }
    // HTTP/2 picked up mid-way may not know the method; a body says POST.
    let method_unknown = req.headers_unknown && req.method.is_empty() && !req.body.is_empty();
    if !req.method.eq_ignore_ascii_case("POST") && !method_unknown {
        return None;
    }
    if !headers_say && !may_be_mcp(&req.body) {
        return None;
    }
    let messages = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Array(items)) => items,
        Ok(v @ Value::Object(_)) => vec![v],
        Ok(_) => return headers_say.then(|| exchange(ex, transport_of(req))),
        Err(source) => {
            if !headers_say {
                return None;
            }
            let mut m = exchange(ex, transport_of(req));
            if !req.body_truncated {
                m.problems.push(McpError::BadRequestJson { source });
            }
            return Some(m);
        }
    };
    if !(headers_say || is_mcp_jsonrpc(&messages)) {
        return None;
    }
    let mut m = exchange(ex, transport_of(req));
    let mut budget = MAX_MESSAGES;
    for v in &messages {
        if !take(&mut budget, &mut m) {
            break;
        }
        read_request_message(v, &mut m);
    }
    if let Some(resp) = &ex.response {
        read_response(ex, resp, &mut m, &mut budget);
    }
    // The older transport answers on its stream: such a call is not cut,
    // its answer is elsewhere (the caller joins it, or marks it truncated).
    if m.transport == Transport::StreamableHttp {
        for c in &mut m.calls {
            if c.result.is_none() && c.error.is_none() {
                c.truncated = true;
            }
        }
    }
    Some(m)
}

/// Messages that are all JSON-RPC 2.0, at least one with a method of
/// MCP's.
fn is_mcp_jsonrpc(messages: &[Value]) -> bool {
    let jsonrpc = !messages.is_empty()
        && messages
            .iter()
            .all(|v| v.get("jsonrpc").and_then(Value::as_str) == Some("2.0"));
    jsonrpc
        && messages.iter().any(|v| {
            v.get("method")
                .and_then(Value::as_str)
                .is_some_and(is_mcp_method)
        })
}

/// The two fields of a JSON-RPC message that tell MCP's from others'.
#[derive(serde::Deserialize)]
struct Head<'b> {
    #[serde(default, borrow)]
    jsonrpc: Str<'b>,
    #[serde(default, borrow)]
    method: Str<'b>,
}

impl Head<'_> {
    fn is_jsonrpc(&self) -> bool {
        self.jsonrpc.as_ref().map(S::as_str) == Some("2.0")
    }
    fn has_mcp_method(&self) -> bool {
        self.method
            .as_ref()
            .is_some_and(|m| is_mcp_method(m.as_str()))
    }
}

/// False when a body no MCP header vouches for is surely not MCP's, as
/// the full decode below would find: it is not a JSON object or array, or
/// it reads, field types all as expected, as messages that are not all
/// JSON-RPC 2.0 or carry no MCP method. True otherwise (the full decode
/// decides). Every request an agent sends to a model passes here, and this
/// reads two fields without building the body's tree: only what may be
/// MCP pays for the `Value` parse. A field of another type, a key given
/// twice, or JSON this skim cannot read all say "may be", so the answer
/// never differs from the full decode's.
fn may_be_mcp(body: &[u8]) -> bool {
    // A key that reads "jsonrpc" is written with those bytes or with a
    // `\u` escape (no other escape gives a letter): without either, no
    // message here is JSON-RPC, and finding that costs a byte search.
    if memchr::memmem::find(body, b"jsonrpc").is_none()
        && memchr::memmem::find(body, b"\\u").is_none()
    {
        return false;
    }
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    match first {
        Some(b'{') => serde_json::from_slice::<Obj<Head>>(body)
            .map_or(true, |Obj(h)| h.is_jsonrpc() && h.has_mcp_method()),
        Some(b'[') => serde_json::from_slice::<Vec<Obj<Head>>>(body).map_or(true, |batch| {
            !batch.is_empty()
                && batch.iter().all(|Obj(h)| h.is_jsonrpc())
                && batch.iter().any(|Obj(h)| h.has_mcp_method())
        }),
        // A scalar or not JSON: the full decode returns None for either.
        _ => false,
    }
}

/// The session of the endpoint an HTTP+SSE stream's first event names
/// (`/messages/?session_id=…`, or a full URL).
fn endpoint_session(resp: &Response) -> Option<String> {
    let first = sse::parse_sse(&resp.body).into_iter().next()?;
    if first.event.as_deref() != Some("endpoint") {
        return None;
    }
    legacy_session(first.data.trim())
}

fn exchange(ex: &Exchange, transport: Transport) -> McpExchange {
    let req = &ex.request;
    let resp = ex.response.as_ref();
    let session = req
        .header("mcp-session-id")
        // `initialize` is answered with the session the server assigned.
        .or_else(|| resp.and_then(|r| r.header("mcp-session-id")))
        .map(str::to_owned)
        .or_else(|| legacy_session(&req.path));
    McpExchange {
        role: ex.role,
        server: server_of(req),
        path: req.path.clone(),
        transport,
        session,
        protocol_version: req.header("mcp-protocol-version").map(str::to_owned),
        status: resp.map(|r| r.status),
        calls: Vec::new(),
        answers: Vec::new(),
        other: Vec::new(),
        problems: Vec::new(),
    }
}

/// The older transport posts to the endpoint its stream named, which
/// carries the session in the query; the newer one uses a header.
fn transport_of(req: &Request) -> Transport {
    if req.header("mcp-session-id").is_none() && legacy_session(&req.path).is_some() {
        Transport::Sse
    } else {
        Transport::StreamableHttp
    }
}

/// The session in the query of the older transport's endpoint:
/// `sessionId` (TypeScript SDK) or `session_id` (python SDK).
fn legacy_session(target: &str) -> Option<String> {
    query_param(target, "sessionId").or_else(|| query_param(target, "session_id"))
}

fn query_param(target: &str, name: &str) -> Option<String> {
    let (_, query) = target.split_once('?')?;
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

fn is_mcp_method(method: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "tools/",
        "resources/",
        "prompts/",
        "notifications/",
        "completion/",
        "logging/",
        "sampling/",
        "roots/",
        "elicitation/",
    ];
    matches!(method, "initialize" | "ping") || PREFIXES.iter().any(|p| method.starts_with(p))
}

/// Counts one more message; false (and a problem, once) past the bound.
fn take(budget: &mut usize, m: &mut McpExchange) -> bool {
    if *budget == 0 {
        if !m
            .problems
            .iter()
            .any(|p| matches!(p, McpError::TooManyMessages { .. }))
        {
            m.problems.push(McpError::TooManyMessages {
                limit: MAX_MESSAGES,
            });
        }
        for c in &mut m.calls {
            c.truncated = true;
        }
        return false;
    }
    *budget -= 1;
    true
}

fn read_request_message(v: &Value, m: &mut McpExchange) {
    let Some(method) = v.get("method").and_then(Value::as_str) else {
        // The client answering a request of the server (sampling, roots).
        m.other.push("response".to_owned());
        return;
    };
    let id = v.get("id").filter(|id| !id.is_null());
    let (true, Some(id)) = (method == TOOLS_CALL, id) else {
        m.other.push(cap(method, 64).0);
        return;
    };
    let params = v.get("params");
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let arguments = params
        .and_then(|p| p.get("arguments"))
        .map_or_else(|| "{}".to_owned(), compact);
    let (name, name_cut) = cap(name, MAX_TEXT_BYTES);
    let (arguments, args_cut) = cap(&arguments, MAX_TEXT_BYTES);
    m.calls.push(McpCall {
        id: id_text(id),
        name,
        arguments,
        truncated: name_cut || args_cut,
        ..McpCall::default()
    });
}

fn is_sse(resp: &Response) -> bool {
    let content_type = resp
        .header("content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = resp.body.trim_ascii_start();
    content_type.starts_with("text/event-stream")
        || (content_type.is_empty() && (body.starts_with(b"data:") || body.starts_with(b"event:")))
}

fn read_response(ex: &Exchange, resp: &Response, m: &mut McpExchange, budget: &mut usize) {
    let cut = resp.body_truncated || ex.truncated;
    if is_sse(resp) {
        let events = sse::parse_sse(&resp.body);
        let n = events.len();
        for (index, e) in events.iter().enumerate() {
            // The older transport's first event names where to post.
            if e.event.as_deref() == Some("endpoint") {
                continue;
            }
            let data = e.data.trim();
            if data.is_empty() {
                continue;
            }
            match serde_json::from_str::<Value>(data) {
                Ok(v) => {
                    if !read_response_value(&v, m, budget) {
                        return;
                    }
                }
                // A cut stream's last event is truncation, not an error.
                Err(_) if cut && index + 1 == n => {}
                Err(source) => m.problems.push(McpError::BadStreamJson { index, source }),
            }
        }
        return;
    }
    let body = resp.body.trim_ascii();
    let json = resp
        .header("content-type")
        .is_some_and(|t| t.to_ascii_lowercase().contains("json"))
        || body.starts_with(b"{")
        || body.starts_with(b"[");
    // `202 Accepted` may say so in text (the older transport does).
    if body.is_empty() || !json {
        fail_unanswered(resp, m);
        return;
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            read_response_value(&v, m, budget);
        }
        Err(_) if cut => {}
        Err(source) => {
            if resp.status < 400 {
                m.problems.push(McpError::BadResponseJson { source });
            }
        }
    }
    fail_unanswered(resp, m);
}

/// A transport-level refusal (no session, bad origin, auth) answers no
/// JSON-RPC id: every unanswered call of the exchange failed.
fn fail_unanswered(resp: &Response, m: &mut McpExchange) {
    if resp.status < 400 {
        return;
    }
    let err = format!("HTTP {}", resp.status);
    for c in m
        .calls
        .iter_mut()
        .filter(|c| c.error.is_none() && c.result.is_none())
    {
        c.error = Some(err.clone());
        c.is_error = Some(true);
    }
}

/// One JSON body or event: a message or a batch. False once the budget
/// is spent.
fn read_response_value(v: &Value, m: &mut McpExchange, budget: &mut usize) -> bool {
    let items = match v {
        Value::Array(items) => items.as_slice(),
        _ => std::slice::from_ref(v),
    };
    for item in items {
        if !take(budget, m) {
            return false;
        }
        read_response_message(item, m);
    }
    true
}

fn read_response_message(v: &Value, m: &mut McpExchange) {
    if let Some(method) = v.get("method").and_then(Value::as_str) {
        // The server's own requests and notifications (progress, logging,
        // sampling) on the stream that answers.
        m.other.push(cap(method, 64).0);
        return;
    }
    let id = v.get("id").filter(|id| !id.is_null()).map(id_text);
    if id.is_none() {
        // An error the server could not tie to a request (a parse error
        // of the whole body): every unanswered call of the exchange failed.
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let err = rpc_error(err);
            for c in m
                .calls
                .iter_mut()
                .filter(|c| c.error.is_none() && c.result.is_none())
            {
                c.error = Some(err.clone());
                c.is_error = Some(true);
            }
        }
        m.other.push("response".to_owned());
        return;
    }
    let call = id.as_deref().and_then(|id| {
        m.calls
            .iter_mut()
            .find(|c| c.id == id && c.result.is_none() && c.error.is_none())
    });
    let call = match (call, m.transport) {
        (Some(call), _) => call,
        // A response on the older transport's stream: kept by id, for the
        // call posted in another exchange. Answers to anything but a
        // `tools/call` are kept too (they are told apart when joined).
        (None, Transport::Sse) if v.get("result").is_some() || v.get("error").is_some() => {
            m.answers.push(McpCall {
                id: id.unwrap_or_default(),
                ..McpCall::default()
            });
            m.answers.last_mut().expect("just pushed")
        }
        (None, _) => {
            m.other.push("response".to_owned());
            return;
        }
    };
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        call.error = Some(rpc_error(err));
        call.is_error = Some(true);
        return;
    }
    let Some(result) = v.get("result") else {
        m.other.push("response".to_owned());
        return;
    };
    let (text, cut) = result_text(result);
    call.result = Some(text);
    call.truncated |= cut;
    call.is_error = Some(
        result
            .get("isError")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    );
}

/// The text of a `CallToolResult`.
fn result_text(result: &Value) -> (String, bool) {
    let items = result
        .get("content")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut parts: Vec<String> = Vec::new();
    for item in items {
        let ty = item.get("type").and_then(Value::as_str).unwrap_or_default();
        let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default();
        let part = match ty {
            "text" => s("text").to_owned(),
            "image" | "audio" => format!("[{ty} {}]", s("mimeType")),
            "resource" => {
                let r = item.get("resource").unwrap_or(&Value::Null);
                match r.get("text").and_then(Value::as_str) {
                    Some(t) => t.to_owned(),
                    None => format!(
                        "[resource {}]",
                        r.get("uri").and_then(Value::as_str).unwrap_or_default()
                    ),
                }
            }
            "resource_link" => format!("[resource_link {}]", s("uri")),
            other => format!("[{}]", cap(other, 64).0),
        };
        parts.push(part);
        if parts.iter().map(String::len).sum::<usize>() > MAX_TEXT_BYTES {
            break;
        }
    }
    let text = if parts.is_empty() {
        result
            .get("structuredContent")
            .map(compact)
            .unwrap_or_default()
    } else {
        parts.join("\n")
    };
    let more_items = parts.len() < items.len();
    let (text, cut) = cap(&text, MAX_TEXT_BYTES);
    (text, cut || more_items)
}

/// `<code>: <message>` of a JSON-RPC error object.
fn rpc_error(err: &Value) -> String {
    let code = err.get("code").map(compact);
    let msg = err.get("message").and_then(Value::as_str);
    let text = match (code, msg) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        (None, Some(m)) => m.to_owned(),
        (None, None) => compact(err),
    };
    let text: String = text.chars().take(ERROR_TEXT_CHARS).collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn id_text(id: &Value) -> String {
    match id {
        Value::String(s) => cap(s, 256).0,
        other => cap(&compact(other), 256).0,
    }
}

fn compact(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// At most `max` bytes, cut at a character boundary; true when cut.
fn cap(s: &str, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s.to_owned(), false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_owned(), true)
}
