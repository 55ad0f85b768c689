//! CEF (`ArcSight` Common Event Format, version 0) lines, one per event, sent
//! as the MSG of an RFC 5424 message by the syslog destination
//! (`type = "cef"`):
//!
//! ```text
//! CEF:0|aitrail|aitrail|<version>|<signature id>|<name>|<severity 0-10>|<extension>
//! ```
//!
//! Header fields escape `\` and `|` with a backslash and have no line
//! breaks; extension values escape `\` and `=` and write CR and LF as `\r`
//! and `\n`; other control characters become U+FFFD. Each value is cut to
//! the length the CEF specification gives its key (in characters). CEF is a
//! summary: prompts, answers and tool results are not in it (the JSON
//! syslog and OTLP forwarders carry them). The field mapping is in
//! docs/shipping.md.

use std::fmt::Write as _;

use serde_json::Value;

use crate::forward::event_fields::{self as ef, Severity};

pub const VENDOR: &str = "aitrail";
pub const PRODUCT: &str = "aitrail";

/// CEF severity (0–10) of an event.
pub fn cef_severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// A header field: `\` and `|` escaped, line breaks as spaces, at most
/// `max` characters.
fn header_field(out: &mut String, value: &str, max: usize) {
    for c in value.chars().take(max) {
        match c {
            '\\' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '\r' | '\n' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// The extension: `key=value` pairs separated by spaces.
#[derive(Default)]
struct Extension {
    out: String,
}

impl Extension {
    /// Adds `key=value`, the value cut to `max` characters and escaped;
    /// nothing when the value is empty.
    fn put(&mut self, key: &str, value: &str, max: usize) {
        if value.is_empty() {
            return;
        }
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        self.out.push_str(key);
        self.out.push('=');
        for c in value.chars().take(max) {
            match c {
                '\\' | '=' => {
                    self.out.push('\\');
                    self.out.push(c);
                }
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                c if c.is_control() => self.out.push('\u{FFFD}'),
                c => self.out.push(c),
            }
        }
    }

    fn opt(&mut self, key: &str, value: Option<&str>, max: usize) {
        if let Some(v) = value {
            self.put(key, v, max);
        }
    }

    fn num(&mut self, key: &str, value: Option<impl std::fmt::Display>) {
        if let Some(v) = value {
            self.put(key, &v.to_string(), 64);
        }
    }

    /// A custom field and its label (`cs1=… cs1Label=…`).
    fn custom(&mut self, key: &str, label: &str, value: Option<&str>, max: usize) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.put(key, v, max);
            self.put(&format!("{key}Label"), label, 1023);
        }
    }

    fn custom_num(&mut self, key: &str, label: &str, value: Option<impl std::fmt::Display>) {
        if let Some(v) = value {
            self.put(key, &v.to_string(), 64);
            self.put(&format!("{key}Label"), label, 1023);
        }
    }
}

/// Strings of a JSON list, joined by `sep`.
fn joined(event: &Value, path: &[&str], sep: &str) -> Option<String> {
    let list = ef::get(event, path)?.as_array()?;
    let parts: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    (!parts.is_empty()).then(|| parts.join(sep))
}

fn outcome(ok: Option<bool>) -> Option<&'static str> {
    ok.map(|ok| if ok { "success" } else { "failure" })
}

/// The CEF line of one event.
#[expect(
    clippy::too_many_lines,
    reason = "one flat mapping table per kind reads best in one place"
)]
pub fn line(event: &Value, device_version: &str) -> String {
    let kind = ef::kind(event);
    let s = |path: &[&str]| ef::str_at(event, path);
    let mut x = Extension::default();
    let signature: String;
    let name: String;

    // Envelope and process, on every event.
    x.num("rt", ef::time(event).map(|t| t.timestamp_millis()));
    x.opt("externalId", s(&["id"]), 40);
    x.opt("dvchost", s(&["host", "name"]), 100);
    x.opt("shost", s(&["host", "name"]), 1023);
    x.num("spid", ef::u64_at(event, &["process", "pid"]));
    x.opt("sproc", s(&["process", "comm"]), 1023);
    x.opt("suser", s(&["process", "user"]), 1023);
    x.num("suid", ef::u64_at(event, &["process", "uid"]));
    x.custom("cs1", "traceId", s(&["trace_id"]), 4000);

    match kind {
        "llm.call" => {
            let op = s(&["llm", "operation"]).unwrap_or("call");
            let model = s(&["llm", "model"]).unwrap_or("");
            signature = kind.into();
            name = format!("LLM {op} {model}").trim_end().to_owned();
            x.put("cat", kind, 1023);
            x.put("act", op, 63);
            let host = s(&["llm", "server", "host"]);
            let port = ef::u64_at(event, &["llm", "server", "port"]);
            x.opt("dhost", host, 1023);
            x.num("dpt", port);
            if let (Some(h), Some(path)) = (host, s(&["llm", "path"])) {
                let url = match port {
                    Some(443) | None => format!("https://{h}{path}"),
                    Some(p) => format!("https://{h}:{p}{path}"),
                };
                x.put("request", &url, 1023);
            }
            x.opt("duser", s(&["llm", "api_user"]), 1023);
            x.opt(
                "outcome",
                outcome(ef::u64_at(event, &["llm", "status"]).map(|c| (200..300).contains(&c))),
                63,
            );
            x.opt("reason", s(&["llm", "output", "finish_reason"]), 1023);
            x.opt(
                "msg",
                s(&["llm", "error"]).or(s(&["llm", "output", "refusal"])),
                1023,
            );
            x.custom("cs2", "llmProvider", s(&["llm", "provider"]), 4000);
            x.custom("cs3", "llmModel", s(&["llm", "model"]), 4000);
            let tools = ef::get(event, &["llm", "output", "tool_calls"])
                .and_then(Value::as_array)
                .map(|calls| {
                    calls
                        .iter()
                        .filter_map(|c| c.get("name").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(",")
                });
            x.custom("cs4", "toolName", tools.as_deref(), 4000);
            x.custom_num(
                "cn1",
                "inputTokens",
                ef::u64_at(event, &["llm", "usage", "input_tokens"]),
            );
            x.custom_num(
                "cn2",
                "outputTokens",
                ef::u64_at(event, &["llm", "usage", "output_tokens"]),
            );
        }
        "tool.call" => {
            let tool = s(&["tool", "name"]).unwrap_or("");
            signature = kind.into();
            name = format!("Tool call {tool}").trim_end().to_owned();
            x.put("cat", kind, 1023);
            x.put("act", "tool_call", 63);
            x.opt(
                "outcome",
                outcome(
                    ef::get(event, &["tool", "is_error"])
                        .and_then(Value::as_bool)
                        .map(|e| !e),
                ),
                63,
            );
            x.opt("dhost", s(&["tool", "mcp", "server", "host"]), 1023);
            x.num("dpt", ef::u64_at(event, &["tool", "mcp", "server", "port"]));
            x.custom("cs4", "toolName", Some(tool), 4000);
            x.custom("cs5", "toolArguments", s(&["tool", "arguments"]), 4000);
            x.custom("cs6", "toolCallId", s(&["tool", "call_id"]), 4000);
            x.custom_num(
                "cfp1",
                "confidence",
                ef::f64_at(event, &["tool", "confidence"]),
            );
        }
        "process.exec" | "process.exit" => {
            let file = s(&["exec", "filename"]).unwrap_or("");
            let exit = kind == "process.exit";
            signature = kind.into();
            name = format!(
                "Process {} {}",
                if exit { "exit" } else { "exec" },
                ef::basename(file)
            )
            .trim_end()
            .to_owned();
            x.put("cat", kind, 1023);
            x.put("act", if exit { "exit" } else { "exec" }, 63);
            x.put("filePath", file, 1023);
            x.put("fname", ef::basename(file), 1023);
            if exit {
                let code = ef::i64_at(event, &["exec", "exit_code"]);
                let signal = ef::i64_at(event, &["exec", "signal"]);
                x.opt(
                    "outcome",
                    outcome(match (code, signal) {
                        (_, Some(_)) => Some(false),
                        (Some(c), None) => Some(c == 0),
                        (None, None) => None,
                    }),
                    63,
                );
                x.custom_num("cn3", "exitCode", code);
                x.opt(
                    "reason",
                    signal.map(|n| format!("signal {n}")).as_deref(),
                    1023,
                );
            } else {
                x.opt(
                    "msg",
                    joined(event, &["exec", "args"], " ").as_deref(),
                    1023,
                );
            }
        }
        "file.open" => {
            let path = s(&["file", "path"]).unwrap_or("");
            signature = kind.into();
            name = "File open".into();
            x.put("cat", kind, 1023);
            x.put("act", "open", 63);
            x.put("filePath", path, 1023);
            x.put("fname", ef::basename(path), 1023);
            x.opt(
                "outcome",
                outcome(ef::i64_at(event, &["file", "result"]).map(|r| r >= 0)),
                63,
            );
            x.opt("reason", s(&["file", "error"]), 1023);
            x.opt(
                "msg",
                joined(event, &["file", "flags"], "|").as_deref(),
                1023,
            );
        }
        "net.connect" => {
            signature = kind.into();
            name = "Network connect".into();
            x.put("cat", kind, 1023);
            x.put("act", "connect", 63);
            let address = s(&["net", "address"]).unwrap_or("");
            match s(&["net", "family"]) {
                Some("ipv4") => x.put("dst", address, 64),
                Some("ipv6") => x.custom("c6a3", "destinationIPv6Address", Some(address), 64),
                Some("unix") => x.put("filePath", address, 1023),
                _ => x.put("dhost", address, 1023),
            }
            x.num(
                "dpt",
                ef::u64_at(event, &["net", "port"]).filter(|p| *p > 0),
            );
            x.opt(
                "outcome",
                outcome(ef::i64_at(event, &["net", "result"]).map(|r| r >= 0)),
                63,
            );
            x.opt("reason", s(&["net", "error"]), 1023);
        }
        "finding" => {
            signature = s(&["finding", "rule"]).unwrap_or(kind).to_owned();
            name = s(&["finding", "title"]).unwrap_or("finding").to_owned();
            x.put("cat", s(&["finding", "class"]).unwrap_or(kind), 1023);
            x.opt("msg", s(&["finding", "detail"]), 1023);
            x.custom(
                "cs5",
                "evidence",
                joined(event, &["finding", "evidence"], ",").as_deref(),
                4000,
            );
            x.custom(
                "cs6",
                "mitre",
                joined(event, &["finding", "mitre"], ",").as_deref(),
                4000,
            );
        }
        "agent.health" => {
            signature = kind.into();
            name = "Agent health".into();
            x.put("cat", kind, 1023);
            let mut dropped = String::new();
            if let Some(d) = ef::get(event, &["health", "dropped"]).and_then(Value::as_object) {
                for (k, v) in d {
                    if let Some(n) = v.as_u64().filter(|n| *n > 0) {
                        let _ = write!(
                            dropped,
                            "{}{k}: {n}",
                            if dropped.is_empty() { "" } else { ", " }
                        );
                    }
                }
            }
            x.put("msg", &dropped, 1023);
        }
        other => {
            signature = other.into();
            name = other.into();
            x.put("cat", other, 1023);
        }
    }

    let mut out = String::with_capacity(128 + x.out.len());
    out.push_str("CEF:0|");
    header_field(&mut out, VENDOR, 63);
    out.push('|');
    header_field(&mut out, PRODUCT, 63);
    out.push('|');
    header_field(&mut out, device_version, 31);
    out.push('|');
    header_field(&mut out, &signature, 1023);
    out.push('|');
    header_field(&mut out, &name, 512);
    let _ = write!(out, "|{}|", cef_severity(Severity::of(event)));
    out.push_str(&x.out);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Splits a CEF line into its 7 header fields (unescaped) and the
    /// extension's pairs (unescaped), as a CEF parser does.
    fn parse(line: &str) -> (Vec<String>, Vec<(String, String)>) {
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars();
        while fields.len() < 7 {
            match chars.next().expect("7 header fields") {
                '\\' => cur.push(chars.next().unwrap()),
                '|' => fields.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        let ext: String = chars.collect();
        // Keys start after a space and end at an unescaped `=`.
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut key = String::new();
        let mut val = String::new();
        let mut in_key = true;
        let mut it = ext.chars().peekable();
        while let Some(c) = it.next() {
            if in_key {
                if c == '=' {
                    in_key = false;
                } else {
                    key.push(c);
                }
                continue;
            }
            match c {
                '\\' => match it.next() {
                    Some('n') => val.push('\n'),
                    Some('r') => val.push('\r'),
                    Some(o) => val.push(o),
                    None => {}
                },
                ' ' => {
                    // A space followed by `word=` starts the next pair.
                    let rest: String = it.clone().collect();
                    let next_is_key = rest.split_once('=').is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric())
                    });
                    if next_is_key {
                        pairs.push((std::mem::take(&mut key), std::mem::take(&mut val)));
                        in_key = true;
                    } else {
                        val.push(' ');
                    }
                }
                c => val.push(c),
            }
        }
        if !key.is_empty() {
            pairs.push((key, val));
        }
        (fields, pairs)
    }

    fn get<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
        pairs.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn file_open_line_escapes_and_maps() {
        let e = json!({"v":1,"id":"019ac5f0a1b27c3d8e9f00112233aabf","time":"2026-11-27T12:00:05.000000000Z","kind":"file.open",
            "host":{"name":"build-7","id":"4c4c"},"trace_id":"8f14e45fceea167a5a36dedd4bea2543","span_id":"45c48cce2e2d7fbd","severity":"info",
            "process":{"pid":4251,"ppid":4242,"uid":1000,"user":"dev","comm":"cat","exe":"/usr/bin/cat","args":["cat"],"exec_id":"a3c6"},
            "file":{"path":"/tmp/a=b\\c\nd|e 日本","flags":["O_RDONLY","O_CLOEXEC"],"result":-13,"error":"EACCES"}});
        let l = line(&e, "0.1.0");
        assert_eq!(
            l,
            "CEF:0|aitrail|aitrail|0.1.0|file.open|File open|1|rt=1795780805000 \
             externalId=019ac5f0a1b27c3d8e9f00112233aabf dvchost=build-7 shost=build-7 spid=4251 \
             sproc=cat suser=dev suid=1000 cs1=8f14e45fceea167a5a36dedd4bea2543 cs1Label=traceId \
             cat=file.open act=open filePath=/tmp/a\\=b\\\\c\\nd|e 日本 fname=a\\=b\\\\c\\nd|e 日本 \
             outcome=failure reason=EACCES msg=O_RDONLY|O_CLOEXEC"
        );
        let (h, x) = parse(&l);
        assert_eq!(
            h,
            [
                "CEF:0",
                "aitrail",
                "aitrail",
                "0.1.0",
                "file.open",
                "File open",
                "1"
            ]
        );
        assert_eq!(get(&x, "filePath"), Some("/tmp/a=b\\c\nd|e 日本"));
        assert_eq!(get(&x, "outcome"), Some("failure"));
    }

    #[test]
    fn finding_header_is_escaped() {
        let e = json!({"id":"f1","time":"2026-11-27T12:00:05.000000100Z","kind":"finding","severity":"critical",
            "host":{"name":"h"},"finding":{"rule":"x|y\\z","title":"pipe | back\\slash\nnew line","class":"exfiltration",
            "evidence":["e1","e2"],"mitre":["T1048"],"detail":"a=b"}});
        let l = line(&e, "9");
        assert!(
            l.starts_with("CEF:0|aitrail|aitrail|9|x\\|y\\\\z|pipe \\| back\\\\slash new line|10|"),
            "{l}"
        );
        let (h, x) = parse(&l);
        assert_eq!(h[4], "x|y\\z");
        assert_eq!(h[5], "pipe | back\\slash new line");
        assert_eq!(h[6], "10");
        assert_eq!(get(&x, "cat"), Some("exfiltration"));
        assert_eq!(get(&x, "msg"), Some("a=b"));
        assert_eq!(get(&x, "cs5"), Some("e1,e2"));
        assert_eq!(get(&x, "cs6Label"), Some("mitre"));
    }

    #[test]
    fn every_kind_maps_its_key_fields() {
        let llm = json!({"kind":"llm.call","id":"a","severity":"info","llm":{"provider":"anthropic","operation":"messages",
            "server":{"host":"api.anthropic.com","port":443},"path":"/v1/messages","model":"claude","status":429,
            "api_user":"u1","error":"rate_limit: slow down","usage":{"input_tokens":5,"output_tokens":7},
            "output":{"finish_reason":"end_turn","tool_calls":[{"id":"t1","name":"read"},{"id":"t2","name":"write"}]}}});
        let (h, x) = parse(&line(&llm, "1"));
        assert_eq!(h[5], "LLM messages claude");
        for (k, v) in [
            ("act", "messages"),
            ("dhost", "api.anthropic.com"),
            ("dpt", "443"),
            ("request", "https://api.anthropic.com/v1/messages"),
            ("duser", "u1"),
            ("outcome", "failure"),
            ("reason", "end_turn"),
            ("msg", "rate_limit: slow down"),
            ("cs2", "anthropic"),
            ("cs3", "claude"),
            ("cs4", "read,write"),
            ("cn1", "5"),
            ("cn2", "7"),
            ("cn2Label", "outputTokens"),
        ] {
            assert_eq!(get(&x, k), Some(v), "{k}");
        }
        let tool = json!({"kind":"tool.call","tool":{"name":"run_shell","call_id":"c1","arguments":"{\"cmd\":\"ls\"}",
            "confidence":0.9,"is_error":true,"mcp":{"server":{"host":"mcp.local","port":8443}}}});
        let (h, x) = parse(&line(&tool, "1"));
        assert_eq!(h[5], "Tool call run_shell");
        for (k, v) in [
            ("cs5", "{\"cmd\":\"ls\"}"),
            ("cs6", "c1"),
            ("cfp1", "0.9"),
            ("outcome", "failure"),
            ("dhost", "mcp.local"),
            ("dpt", "8443"),
        ] {
            assert_eq!(get(&x, k), Some(v), "{k}");
        }
        let exit = json!({"kind":"process.exit","exec":{"filename":"/usr/bin/ls","exit_code":0}});
        let (h, x) = parse(&line(&exit, "1"));
        assert_eq!(h[5], "Process exit ls");
        assert_eq!(get(&x, "outcome"), Some("success"));
        assert_eq!(get(&x, "cn3"), Some("0"));
        let exec =
            json!({"kind":"process.exec","exec":{"filename":"/bin/sh","args":["sh","-c","a=1 b"]}});
        let (_, x) = parse(&line(&exec, "1"));
        assert_eq!(get(&x, "msg"), Some("sh -c a=1 b"));
        let v6 = json!({"kind":"net.connect","net":{"family":"ipv6","address":"2001:db8::1","port":443,"result":0}});
        let (_, x) = parse(&line(&v6, "1"));
        assert_eq!(get(&x, "c6a3"), Some("2001:db8::1"));
        assert_eq!(get(&x, "dst"), None);
        let v4 = json!({"kind":"net.connect","net":{"family":"ipv4","address":"203.0.113.7","port":8080,"result":-111,"error":"ECONNREFUSED"}});
        let (_, x) = parse(&line(&v4, "1"));
        assert_eq!(get(&x, "dst"), Some("203.0.113.7"));
        assert_eq!(get(&x, "reason"), Some("ECONNREFUSED"));
        let health = json!({"kind":"agent.health","health":{"dropped":{"a":0,"b":3}}});
        let (_, x) = parse(&line(&health, "1"));
        assert_eq!(get(&x, "msg"), Some("b: 3"));
    }

    #[test]
    fn values_are_cut_to_the_spec_lengths() {
        let e = json!({"kind":"tool.call","id":"x".repeat(100),"tool":{"name":"n","arguments":"é".repeat(5000)}});
        let (_, x) = parse(&line(&e, "1"));
        assert_eq!(get(&x, "externalId").unwrap().chars().count(), 40);
        assert_eq!(get(&x, "cs5").unwrap().chars().count(), 4000);
    }
}
