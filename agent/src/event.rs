//! The event model: the contract every sink, test and user relies on.
//!
//! One JSON object per event. Fields may be added; none is renamed or removed
//! without bumping [`SCHEMA_VERSION`]. See docs/events.md.

use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

/// Event kinds, as written in `kind`.
pub mod kind {
    pub const LLM_CALL: &str = "llm.call";
    pub const TOOL_CALL: &str = "tool.call";
    pub const PROCESS_EXEC: &str = "process.exec";
    pub const PROCESS_EXIT: &str = "process.exit";
    pub const FILE_OPEN: &str = "file.open";
    pub const NET_CONNECT: &str = "net.connect";
    pub const FINDING: &str = "finding";
    pub const AGENT_HEALTH: &str = "agent.health";
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Info,
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    pub id: String,
}

/// The process an event belongs to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub comm: String,
    pub exe: String,
    pub args: Vec<String>,
    /// Stable and unique for one exec of one process on one host boot.
    pub exec_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_exec_id: Option<String>,
}

/// One event. Exactly one of the kind-specific members is set, the one
/// `kind` names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    /// Unique; the idempotency key.
    pub id: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    pub kind: String,
    pub host: Host,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<NetInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<FindingInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

/// Which side of TLS we watched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Client,
    Server,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemPrompt {
    pub text: String,
    /// sha256 of `text`, lowercase hex.
    pub sha256: String,
}

/// One message of the request's history, flattened to text.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, `tool` (`OpenAI`'s tool results; Anthropic
    /// `tool_result` blocks are given this role too).
    pub role: String,
    pub content: String,
    /// For `tool` messages: the tool call this is the result of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For `assistant` messages: the tool calls it asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallSpec>,
    /// For `tool` messages: the client marked the result as an error
    /// (Anthropic `is_error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
}

/// A tool call as the model asked for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallSpec {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (a JSON text for both providers).
    pub arguments: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Output {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub tool_calls: Vec<ToolCallSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// The part of `output_tokens` spent on reasoning (`reasoning_tokens`
    /// of `OpenAI`, `thoughtsTokenCount` of Gemini).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
}

/// `llm` of an `llm.call` event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LlmCall {
    /// Who serves the call: `openai`, `azure.openai`, `anthropic`,
    /// `gemini`, `vertex_ai`, `aws.bedrock`, `ollama`, `groq`, `openrouter`, `deepseek`,
    /// `mistral`, `xai`, …
    pub provider: String,
    /// The API: `chat`, `messages`, `responses`, `generate_content`,
    /// `converse`, `invoke_model` (Bedrock),
    /// `generate`, `embeddings`.
    pub operation: String,
    pub role: Role,
    pub server: Server,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub stream: bool,
    /// HTTP status; absent when no response was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemPrompt>,
    pub messages: Vec<Message>,
    /// Declared tool names.
    pub tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_user: Option<String>,
    /// Fingerprint of the API key (`sk-…cdef#a1b2c3d4`); never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    pub output: Output,
    pub usage: Usage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// Some part of the exchange was cut (caps) or missing (loss, timeout).
    pub truncated: bool,
    /// The provider's error, for 4xx/5xx answers and failed streams:
    /// `<code or type>: <message>`, cut to a few hundred characters; a 429
    /// answer's starts with `rate_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `OpenAI` Responses API: the `id` of the response, which a later
    /// request names in `previous_response_id` to continue the
    /// conversation without resending it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    /// `OpenAI` Responses API: the response this request continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    /// Embeddings calls: how many inputs were sent to be embedded (their
    /// text is not kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_count: Option<u64>,
    /// How the call travelled when not one HTTP request: `websocket` (the
    /// Responses API's WebSocket mode, one call per `response.create` on
    /// an upgraded connection). Absent for HTTP/1.1 and HTTP/2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

/// `tool` of a `tool.call` event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    /// The result the agent sent back to the model, from the next request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Ids of the exec/file/net events this call caused.
    pub effects: Vec<String>,
    /// 0..=1: how sure the effect links are.
    pub confidence: f64,
    /// Why the effects were linked (argument match, lineage, time window).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The result says the call failed: MCP `result.isError`, or a
    /// JSON-RPC `error` answer. Absent when nothing said either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// `arguments` or `result` was cut at a cap, or the answer is missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Set when the call went to an MCP server over HTTP: the `tools/call`
    /// request itself, seen on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpInfo>,
}

/// `tool.mcp` of a `tool.call` event: where an MCP `tools/call` went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct McpInfo {
    /// The MCP server (Host header of the request).
    pub server: Server,
    /// The endpoint's request target (`/mcp`, `/messages?sessionId=…`).
    pub path: String,
    /// `client` when the watched process sent the request (the agent),
    /// `server` when it read it (the MCP server).
    pub role: Role,
    /// The JSON-RPC method: `tools/call`.
    pub method: String,
    /// `streamable_http` (2025-03-26 and later) or `sse` (the older
    /// HTTP+SSE transport, whose answers come on another stream).
    pub transport: String,
    /// `Mcp-Session-Id` (or the `sessionId` query of the older transport).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// `MCP-Protocol-Version` of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// HTTP status of the answer; absent when none was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// A JSON-RPC `error` answer: `<code>: <message>`, cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecInfo {
    pub filename: String,
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Signal that ended the process, for `process.exit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_truncated: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FileInfo {
    pub path: String,
    /// `O_*` names, e.g. `["O_RDONLY", "O_CLOEXEC"]`.
    pub flags: Vec<String>,
    /// fd on success, `-errno` on failure.
    pub result: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetInfo {
    /// `ipv4`, `ipv6`, `unix`, or `af_N`.
    pub family: String,
    pub address: String,
    pub port: u16,
    /// 0 on success, `-errno` on failure.
    pub result: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FindingInfo {
    /// The rule's id, e.g. `inj.override`.
    pub rule: String,
    pub title: String,
    /// Ids of the events that show it, the triggering one first.
    pub evidence: Vec<String>,
    /// The threat class: `prompt_injection`, `secret`, `pii`,
    /// `sensitive_file`, `dangerous_command`, `destructive_sql`,
    /// `exfiltration`, `denial_of_wallet`, `refusal_probing`, `blind_spot`,
    /// `claimed_vs_actual`, `unrequested_effect`, `system_prompt_change`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub class: String,
    /// MITRE ATLAS / ATT&CK technique ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mitre: Vec<String>,
    /// Where it matched: field and byte range, never the matched value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<FindingMatch>,
    /// A short explanation written by the rule (never captured secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The optional second opinion's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// One place a rule matched, without the value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FindingMatch {
    /// The event the match is in.
    pub event: String,
    /// The field, e.g. `llm.messages[3].content`.
    pub field: String,
    /// What matched: a data class (`aws_key`) or the rule's matcher name.
    pub what: String,
    /// Byte range in the field's captured text (before redaction).
    pub start: usize,
    pub end: usize,
}

/// A second opinion on a finding, from a configured classifier endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub source: String,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// `health` of an `agent.health` event: counters since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub uptime_s: u64,
    pub events_emitted: u64,
    pub records_received: u64,
    /// Drops and parse failures, by cause. Every loss has a counter here.
    pub dropped: std::collections::BTreeMap<String, u64>,
    /// Other counters (kernel-side, parsers, attach).
    pub counters: std::collections::BTreeMap<String, u64>,
    pub bytes_shipped: u64,
    pub spool_depth: u64,
}
