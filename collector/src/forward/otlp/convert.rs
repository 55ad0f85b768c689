//! Stored events → an OTLP `ExportLogsServiceRequest`.
//!
//! One `LogRecord` per event, grouped in one `ResourceLogs` per host
//! (`service.name = aitrail`, `host.name`, `host.id`) with one scope
//! (`aitrail`, the collector's version). Attribute names follow the
//! OpenTelemetry semantic conventions v1.37.0 ([`SCHEMA_URL`]): the `GenAI`
//! attributes there are at "development" stability, so the version is
//! pinned and named in the schema URL. The mapping table is in
//! docs/shipping.md.

use std::collections::HashMap;

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};
use serde_json::Value;

use crate::forward::event_fields::{self as ef, Severity};

/// The semantic conventions the attributes follow.
pub const SEMCONV_VERSION: &str = "1.37.0";
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.37.0";
pub const SCOPE_NAME: &str = "aitrail";

/// How the event goes into `LogRecord.body`.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// The event as stored, a JSON text (`string_value`).
    #[default]
    Json,
    /// The event as a structured `kvlist_value`.
    Map,
}

/// `gen_ai.provider.name` of an aitrail `llm.provider` (semconv 1.37.0
/// well-known values; others pass through as they are).
pub fn provider_name(provider: &str) -> &str {
    match provider {
        "azure.openai" => "azure.ai.openai",
        "gemini" => "gcp.gemini",
        "vertex_ai" => "gcp.vertex_ai",
        "mistral" => "mistral_ai",
        "xai" => "x_ai",
        other => other,
    }
}

/// `gen_ai.operation.name` of an aitrail `llm.operation`.
pub fn operation_name(operation: &str) -> &str {
    match operation {
        // Anthropic Messages and the OpenAI Responses API are chat APIs.
        "messages" | "responses" => "chat",
        "generate" => "text_completion",
        other => other,
    }
}

pub fn severity_number(s: Severity) -> SeverityNumber {
    match s {
        Severity::Info => SeverityNumber::Info,
        Severity::Low => SeverityNumber::Warn,
        Severity::Medium => SeverityNumber::Warn2,
        Severity::High => SeverityNumber::Error,
        Severity::Critical => SeverityNumber::Fatal,
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.to_owned())
}

/// JSON → `AnyValue`. Integers beyond i64 become strings rather than lose
/// precision as doubles.
pub fn any_value(v: &Value) -> AnyValue {
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(any_value::Value::BoolValue(*b)),
        Value::Number(n) => Some(if let Some(i) = n.as_i64() {
            any_value::Value::IntValue(i)
        } else if n.is_u64() {
            any_value::Value::StringValue(n.to_string())
        } else {
            any_value::Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Some(string(s)),
        Value::Array(a) => Some(any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().map(any_value).collect(),
        })),
        Value::Object(o) => Some(any_value::Value::KvlistValue(KeyValueList {
            values: o
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(any_value(v)),
                    ..Default::default()
                })
                .collect(),
        })),
    };
    AnyValue { value }
}

/// `n` lowercase hex digits → n/2 bytes; anything else → empty (the
/// proto's "no trace").
fn hex_id(s: Option<&str>, digits: usize) -> Option<Vec<u8>> {
    let s = s?;
    if s.len() != digits {
        return None;
    }
    let bytes = hex::decode(s).ok()?;
    // All-zero ids are invalid in OTLP.
    bytes.iter().any(|b| *b != 0).then_some(bytes)
}

/// Attributes of one event.
#[derive(Default)]
struct Attrs(Vec<KeyValue>);

impl Attrs {
    fn str(&mut self, key: &str, v: Option<&str>) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            self.0.push(kv(key, string(v)));
        }
    }

    fn int(&mut self, key: &str, v: Option<i64>) {
        if let Some(v) = v {
            self.0.push(kv(key, any_value::Value::IntValue(v)));
        }
    }

    fn double(&mut self, key: &str, v: Option<f64>) {
        if let Some(v) = v {
            self.0.push(kv(key, any_value::Value::DoubleValue(v)));
        }
    }

    fn strings(&mut self, key: &str, v: Option<&Value>) {
        let Some(list) = v.and_then(Value::as_array) else {
            return;
        };
        let values: Vec<AnyValue> = list
            .iter()
            .filter_map(Value::as_str)
            .map(|s| AnyValue {
                value: Some(string(s)),
            })
            .collect();
        if !values.is_empty() {
            self.0
                .push(kv(key, any_value::Value::ArrayValue(ArrayValue { values })));
        }
    }
}

/// What the conversion could not use, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Notes {
    /// `trace_id`/`span_id` present but not 32/16 hex digits.
    pub bad_ids: u64,
    /// `time` missing or not RFC 3339 (`time_unix_nano` = 0: unknown).
    pub bad_times: u64,
}

/// One event as a log record.
#[expect(
    clippy::too_many_lines,
    reason = "one flat mapping table per kind reads best in one place"
)]
pub fn log_record(
    event: &Value,
    body: BodyFormat,
    observed_ns: u64,
    notes: &mut Notes,
) -> LogRecord {
    let kind = ef::kind(event);
    let s = |path: &[&str]| ef::str_at(event, path);
    let i = |path: &[&str]| ef::i64_at(event, path);
    let sev = Severity::of(event);
    let mut a = Attrs::default();
    let event_name = format!("aitrail.{kind}");

    a.str("event.name", Some(&event_name));
    a.str("log.record.uid", s(&["id"]));
    a.str("host.name", s(&["host", "name"]));
    a.int("process.pid", i(&["process", "pid"]));
    a.int("process.parent_pid", i(&["process", "ppid"]));
    a.str("process.executable.path", s(&["process", "exe"]));
    a.str("process.executable.name", s(&["process", "comm"]));
    a.strings("process.command_args", ef::get(event, &["process", "args"]));
    a.int("process.user.id", i(&["process", "uid"]));
    a.str("process.user.name", s(&["process", "user"]));
    a.str("aitrail.process.exec_id", s(&["process", "exec_id"]));

    match kind {
        "llm.call" => {
            if let Some(p) = s(&["llm", "provider"]) {
                let name = provider_name(p);
                a.str("gen_ai.provider.name", Some(name));
                // Deprecated in 1.37.0 for gen_ai.provider.name; many
                // backends still key on it.
                a.str("gen_ai.system", Some(name));
            }
            a.str(
                "gen_ai.operation.name",
                s(&["llm", "operation"]).map(operation_name),
            );
            // aitrail keeps one model name: the response's when it names
            // one, else the request's.
            let model = s(&["llm", "model"]);
            a.str("gen_ai.request.model", model);
            if ef::get(event, &["llm", "status"]).is_some() {
                a.str("gen_ai.response.model", model);
            }
            a.str("gen_ai.response.id", s(&["llm", "response_id"]));
            if let Some(r) = s(&["llm", "output", "finish_reason"]) {
                a.strings(
                    "gen_ai.response.finish_reasons",
                    Some(&Value::from(vec![r])),
                );
            }
            a.int(
                "gen_ai.usage.input_tokens",
                i(&["llm", "usage", "input_tokens"]),
            );
            a.int(
                "gen_ai.usage.output_tokens",
                i(&["llm", "usage", "output_tokens"]),
            );
            a.str("server.address", s(&["llm", "server", "host"]));
            a.int("server.port", i(&["llm", "server", "port"]));
            a.str("url.path", s(&["llm", "path"]));
            a.int("http.response.status_code", i(&["llm", "status"]));
            a.str("aitrail.llm.api_key_id", s(&["llm", "api_key_id"]));
            a.str("aitrail.llm.error", s(&["llm", "error"]));
        }
        "tool.call" => {
            a.str("gen_ai.operation.name", Some("execute_tool"));
            a.str("gen_ai.tool.name", s(&["tool", "name"]));
            a.str("gen_ai.tool.call.id", s(&["tool", "call_id"]));
            a.double(
                "aitrail.tool.confidence",
                ef::f64_at(event, &["tool", "confidence"]),
            );
            if ef::get(event, &["tool", "mcp"]).is_some() {
                a.str("mcp.method.name", s(&["tool", "mcp", "method"]));
                a.str("mcp.session.id", s(&["tool", "mcp", "session"]));
                a.str("server.address", s(&["tool", "mcp", "server", "host"]));
                a.int("server.port", i(&["tool", "mcp", "server", "port"]));
            }
        }
        "process.exec" | "process.exit" => {
            a.str("aitrail.exec.filename", s(&["exec", "filename"]));
            a.int("process.exit.code", i(&["exec", "exit_code"]));
            a.int("aitrail.exec.signal", i(&["exec", "signal"]));
        }
        "file.open" => {
            a.str("file.path", s(&["file", "path"]));
            a.strings("aitrail.file.flags", ef::get(event, &["file", "flags"]));
            a.int("aitrail.file.result", i(&["file", "result"]));
            a.str("error.type", s(&["file", "error"]));
        }
        "net.connect" => {
            a.str("network.type", s(&["net", "family"]));
            a.str("network.peer.address", s(&["net", "address"]));
            a.int("network.peer.port", i(&["net", "port"]));
            a.int("aitrail.net.result", i(&["net", "result"]));
            a.str("error.type", s(&["net", "error"]));
        }
        "finding" => {
            a.str("security_rule.name", s(&["finding", "rule"]));
            a.str("security_rule.category", s(&["finding", "class"]));
            a.str("aitrail.finding.title", s(&["finding", "title"]));
            a.strings(
                "aitrail.finding.evidence",
                ef::get(event, &["finding", "evidence"]),
            );
            a.strings(
                "aitrail.finding.mitre",
                ef::get(event, &["finding", "mitre"]),
            );
        }
        _ => {}
    }

    let time_unix_nano = ef::time(event)
        .and_then(|t| t.timestamp_nanos_opt())
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or_else(|| {
            notes.bad_times += 1;
            0
        });
    let mut id = |key: &str, digits: usize| {
        let raw = s(&[key]);
        let decoded = hex_id(raw, digits);
        if raw.is_some() && decoded.is_none() {
            notes.bad_ids += 1;
        }
        decoded.unwrap_or_default()
    };
    let trace_id = id("trace_id", 32);
    let span_id = id("span_id", 16);
    LogRecord {
        time_unix_nano,
        observed_time_unix_nano: observed_ns,
        severity_number: severity_number(sev) as i32,
        severity_text: sev.as_str().to_owned(),
        body: Some(match body {
            BodyFormat::Json => AnyValue {
                value: Some(any_value::Value::StringValue(
                    serde_json::to_string(event).unwrap_or_default(),
                )),
            },
            BodyFormat::Map => any_value(event),
        }),
        attributes: a.0,
        dropped_attributes_count: 0,
        flags: 0,
        trace_id,
        span_id,
        event_name,
    }
}

/// A batch as one export request: one `ResourceLogs` per host, in the
/// order hosts first appear, records in batch order.
pub fn request(
    batch: &[Value],
    body: BodyFormat,
    observed_ns: u64,
    notes: &mut Notes,
) -> ExportLogsServiceRequest {
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut out: Vec<ResourceLogs> = Vec::new();
    for event in batch {
        let host = (
            ef::str_at(event, &["host", "name"]).unwrap_or(""),
            ef::str_at(event, &["host", "id"]).unwrap_or(""),
        );
        let at = *index.entry(host).or_insert_with(|| {
            let mut attrs = Attrs::default();
            attrs.str("service.name", Some("aitrail"));
            attrs.str("host.name", Some(host.0));
            attrs.str("host.id", Some(host.1));
            out.push(ResourceLogs {
                resource: Some(Resource {
                    attributes: attrs.0,
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    log_records: Vec::new(),
                    schema_url: SCHEMA_URL.into(),
                }],
                schema_url: SCHEMA_URL.into(),
            });
            out.len() - 1
        });
        out[at].scope_logs[0]
            .log_records
            .push(log_record(event, body, observed_ns, notes));
    }
    ExportLogsServiceRequest { resource_logs: out }
}
