//! RFC 5424 messages, one per event:
//!
//! ```text
//! <PRI>1 TIMESTAMP HOSTNAME aitrail PROCID MSGID [aitrail@PEN key="value" …] BOM{event JSON}
//! ```
//!
//! - PRI = facility × 8 + the syslog severity of the event's `severity`;
//! - TIMESTAMP = the event's `time` in UTC with microseconds (RFC 5424
//!   allows six fraction digits; the JSON keeps the nanoseconds);
//! - HOSTNAME = the event's `host.name` (the host where it happened, not
//!   the collector), PROCID = `process.pid`, MSGID = `kind`; each is
//!   printable ASCII without spaces (others become `_`) or `-`;
//! - one SD-ELEMENT with key fields for indexing (values escaped: `"`, `\`,
//!   `]`; control characters become U+FFFD; at most [`SD_VALUE_MAX`] bytes
//!   each, the full value stays in MSG);
//! - MSG = UTF-8 BOM + the event as stored (compact JSON).
//!
//! A message longer than `max_message_bytes` is made to fit: first the
//! bulky, repeated parts are left out of the JSON (`llm.messages` — the
//! whole history, resent every turn —, `llm.system.text`,
//! `llm.output.reasoning`, `tool.result`), named in the SD parameter
//! `omitted`; if it still does not fit, MSG is cut on a character boundary
//! and `truncated` gives its full length in bytes.
//!
//! The CEF variant (see [`super::super::cef`]) uses the same header with
//! no structured data and the CEF line as MSG, without a BOM (CEF parsers
//! expect `CEF:` right after the header; RFC 5424's MSG-ANY allows it).

use std::fmt::Write as _;

use serde_json::Value;

use crate::forward::event_fields::{self as ef, Severity};

pub const APP_NAME: &str = "aitrail";
/// Largest SD-PARAM value, escaped.
pub const SD_VALUE_MAX: usize = 256;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The parts of the header that come from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// 0 (kern) … 23 (local7).
    pub facility: u8,
    /// SD-ID: `aitrail@<enterprise number>`.
    pub sd_id: String,
    pub max_message_bytes: usize,
}

/// One formatted message and what had to be done to it.
#[derive(Debug, Default)]
pub struct Message {
    pub bytes: Vec<u8>,
    /// Parts left out of the JSON to fit (`omitted`).
    pub trimmed: bool,
    /// MSG cut (`truncated`).
    pub truncated: bool,
}

/// RFC 5424 severity (0 emergency … 7 debug) of an event.
pub fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 6,     // informational
        Severity::Low => 5,      // notice
        Severity::Medium => 4,   // warning
        Severity::High => 3,     // error
        Severity::Critical => 2, // critical
    }
}

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID ` (with the trailing
/// space; STRUCTURED-DATA comes next).
pub fn header(event: &Value, s: &Settings) -> String {
    let pri = u16::from(s.facility) * 8 + u16::from(syslog_severity(Severity::of(event)));
    let time = ef::time(event).map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    );
    let host = header_field(ef::str_at(event, &["host", "name"]).unwrap_or(""), 255);
    let procid =
        ef::u64_at(event, &["process", "pid"]).map_or_else(|| "-".into(), |p| p.to_string());
    let msgid = header_field(ef::kind(event), 32);
    format!("<{pri}>1 {time} {host} {APP_NAME} {procid} {msgid} ")
}

/// A header field: PRINTUSASCII (33–126), at most `max` characters, `-`
/// when empty.
fn header_field(value: &str, max: usize) -> String {
    let out: String = value
        .chars()
        .take(max)
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .collect();
    if out.is_empty() {
        "-".into()
    } else {
        out
    }
}

/// Appends `value` escaped as an SD PARAM-VALUE, stopping before
/// [`SD_VALUE_MAX`] bytes.
fn push_sd_value(out: &mut String, value: &str) {
    let start = out.len();
    for c in value.chars() {
        let (esc, c) = match c {
            '"' | '\\' | ']' => (true, c),
            c if c.is_control() => (false, '\u{FFFD}'),
            c => (false, c),
        };
        if out.len() - start + usize::from(esc) + c.len_utf8() > SD_VALUE_MAX {
            break;
        }
        if esc {
            out.push('\\');
        }
        out.push(c);
    }
}

/// The SD parameters of an event: envelope, process and the key fields of
/// its kind (docs/shipping.md has the table).
pub fn sd_params(event: &Value) -> Vec<(&'static str, String)> {
    let mut p: Vec<(&'static str, String)> = Vec::new();
    let mut s = |name: &'static str, path: &[&str]| {
        if let Some(v) = ef::get(event, path) {
            match v {
                Value::String(t) if !t.is_empty() => p.push((name, t.clone())),
                Value::Number(n) => p.push((name, n.to_string())),
                Value::Bool(b) => p.push((name, b.to_string())),
                _ => {}
            }
        }
    };
    s("id", &["id"]);
    s("severity", &["severity"]);
    s("trace_id", &["trace_id"]);
    s("span_id", &["span_id"]);
    s("parent_span_id", &["parent_span_id"]);
    s("host_id", &["host", "id"]);
    s("pid", &["process", "pid"]);
    s("ppid", &["process", "ppid"]);
    s("uid", &["process", "uid"]);
    s("user", &["process", "user"]);
    s("comm", &["process", "comm"]);
    s("exe", &["process", "exe"]);
    s("exec_id", &["process", "exec_id"]);
    match ef::kind(event) {
        "llm.call" => {
            s("provider", &["llm", "provider"]);
            s("operation", &["llm", "operation"]);
            s("model", &["llm", "model"]);
            s("server", &["llm", "server", "host"]);
            s("status", &["llm", "status"]);
            s("input_tokens", &["llm", "usage", "input_tokens"]);
            s("output_tokens", &["llm", "usage", "output_tokens"]);
            s("finish_reason", &["llm", "output", "finish_reason"]);
            s("api_key_id", &["llm", "api_key_id"]);
        }
        "tool.call" => {
            s("tool", &["tool", "name"]);
            s("call_id", &["tool", "call_id"]);
            s("confidence", &["tool", "confidence"]);
        }
        "process.exec" | "process.exit" => {
            s("filename", &["exec", "filename"]);
            s("exit_code", &["exec", "exit_code"]);
            s("signal", &["exec", "signal"]);
        }
        "file.open" => {
            s("path", &["file", "path"]);
            s("result", &["file", "result"]);
            s("error", &["file", "error"]);
        }
        "net.connect" => {
            s("address", &["net", "address"]);
            s("port", &["net", "port"]);
            s("result", &["net", "result"]);
            s("error", &["net", "error"]);
        }
        "finding" => {
            s("rule", &["finding", "rule"]);
            s("class", &["finding", "class"]);
            s("title", &["finding", "title"]);
        }
        _ => {}
    }
    p
}

fn structured_data(sd_id: &str, params: &[(&'static str, String)]) -> String {
    let mut out = String::with_capacity(64 + params.len() * 24);
    out.push('[');
    out.push_str(sd_id);
    for (name, value) in params {
        let _ = write!(out, " {name}=\"");
        push_sd_value(&mut out, value);
        out.push('"');
    }
    out.push(']');
    out
}

/// What may be left out of an event's JSON to fit, biggest first.
fn omittable(kind: &str) -> &'static [&'static [&'static str]] {
    match kind {
        "llm.call" => &[
            &["llm", "messages"],
            &["llm", "system", "text"],
            &["llm", "output", "reasoning"],
        ],
        "tool.call" => &[&["tool", "result"]],
        _ => &[],
    }
}

fn remove_path(v: &mut Value, path: &[&str]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = v;
    for k in parents {
        let Some(next) = cur.get_mut(*k) else {
            return false;
        };
        cur = next;
    }
    cur.as_object_mut()
        .is_some_and(|o| o.remove(*last).is_some())
}

/// The RFC 5424 message of one event (JSON in MSG).
pub fn rfc5424(event: &Value, s: &Settings) -> Message {
    let header = header(event, s);
    let mut params = sd_params(event);
    let mut json = serde_json::to_string(event).unwrap_or_default();
    let fits = |params: &[(&'static str, String)], json_len: usize| {
        header.len() + structured_data(&s.sd_id, params).len() + 1 + BOM.len() + json_len
            <= s.max_message_bytes
    };
    let mut msg = Message::default();
    if !fits(&params, json.len()) {
        let mut trimmed = event.clone();
        let mut omitted = Vec::new();
        for path in omittable(ef::kind(event)) {
            if remove_path(&mut trimmed, path) {
                omitted.push(path.join("."));
                json = serde_json::to_string(&trimmed).unwrap_or_default();
                let mut with = params.clone();
                with.push(("omitted", omitted.join(" ")));
                if fits(&with, json.len()) {
                    break;
                }
            }
        }
        if !omitted.is_empty() {
            params.push(("omitted", omitted.join(" ")));
            msg.trimmed = true;
        }
    }
    if !fits(&params, json.len()) {
        params.push(("truncated", json.len().to_string()));
        let room = s.max_message_bytes.saturating_sub(
            header.len() + structured_data(&s.sd_id, &params).len() + 1 + BOM.len(),
        );
        json = ef::cut(&json, room).to_owned();
        msg.truncated = true;
    }
    let sd = structured_data(&s.sd_id, &params);
    let mut bytes = Vec::with_capacity(header.len() + sd.len() + 4 + json.len());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(sd.as_bytes());
    bytes.push(b' ');
    bytes.extend_from_slice(BOM);
    bytes.extend_from_slice(json.as_bytes());
    msg.bytes = bytes;
    msg
}

/// The CEF variant: same header, no structured data, the CEF line as MSG
/// (cut on a character boundary, never inside an escape, when too long).
pub fn cef(event: &Value, s: &Settings, device_version: &str) -> Message {
    let mut bytes = header(event, s).into_bytes();
    bytes.extend_from_slice(b"- ");
    let line = crate::forward::cef::line(event, device_version);
    let room = s.max_message_bytes.saturating_sub(bytes.len());
    let mut kept = ef::cut(&line, room);
    let truncated = kept.len() < line.len();
    if truncated {
        // An odd run of trailing backslashes would escape what follows.
        let slashes = kept.bytes().rev().take_while(|b| *b == b'\\').count();
        if slashes % 2 == 1 {
            kept = &kept[..kept.len() - 1];
        }
    }
    bytes.extend_from_slice(kept.as_bytes());
    Message {
        bytes,
        trimmed: false,
        truncated,
    }
}

/// RFC 5425 octet-counting frame: `MSG-LEN SP SYSLOG-MSG`.
pub fn frame(msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
}
