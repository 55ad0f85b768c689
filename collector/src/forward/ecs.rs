//! aitrail events as Elastic Common Schema 9.4.0 documents.
//!
//! Why 9.x and not 8.11: `gen_ai.*` (the LLM fields) entered ECS with 9.0;
//! 8.x has no place for a model, a provider or token counts. The output is
//! checked against the ECS 9.4.0 field definitions (`@elastic/ecs` 9.4.0:
//! every field known, of its type, categorization values allowed and
//! consistent) by the `forward_formats` test.
//!
//! What has no ECS field (prompts, answers, tool arguments and results,
//! the finding's evidence) goes under `aitrail.*`, the custom namespace ECS
//! asks for, never into an ECS field with another meaning.

use serde_json::{json, Map, Value};

use super::format::{get, Unmappable};

/// The ECS version these documents follow (`ecs.version`).
pub const VERSION: &str = "9.4.0";

fn unmappable(ev: &Value, problem: &str) -> Unmappable {
    Unmappable {
        format: "ecs",
        id: get::str(ev, "/id").unwrap_or("?").to_owned(),
        problem: problem.to_owned(),
    }
}

fn severity(ev: &Value) -> (&str, i64) {
    let s = get::str(ev, "/severity").unwrap_or("info");
    let n = match s {
        "low" => 2,
        "medium" => 3,
        "high" => 4,
        "critical" => 5,
        _ => 1,
    };
    (s, n)
}

/// Sets `value` at a dotted `path` in `doc`, creating objects on the way.
fn put(doc: &mut Map<String, Value>, path: &str, value: impl Into<Value>) {
    let mut parts = path.split('.').peekable();
    let mut cur = doc;
    while let Some(p) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(p.to_owned(), value.into());
            return;
        }
        let slot = cur
            .entry(p.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else {
            return;
        };
        cur = next;
    }
}

/// Copies `from` (a pointer into the event) to `to`, when present.
fn copy(doc: &mut Map<String, Value>, ev: &Value, from: &str, to: &str) {
    if let Some(v) = ev.pointer(from).filter(|v| !v.is_null()) {
        put(doc, to, v.clone());
    }
}

fn outcome(doc: &mut Map<String, Value>, ok: Option<bool>) {
    put(
        doc,
        "event.outcome",
        match ok {
            Some(true) => "success",
            Some(false) => "failure",
            None => "unknown",
        },
    );
}

/// One stored event as an ECS document.
pub fn map(ev: &Value) -> Result<Value, Unmappable> {
    let kind = get::str(ev, "/kind").ok_or_else(|| unmappable(ev, "no kind"))?;
    let time = get::str(ev, "/time").ok_or_else(|| unmappable(ev, "no time"))?;
    let id = get::str(ev, "/id").ok_or_else(|| unmappable(ev, "no id"))?;
    let mut d = Map::new();
    put(&mut d, "@timestamp", time);
    put(&mut d, "ecs.version", VERSION);
    put(&mut d, "event.id", id);
    put(&mut d, "event.action", kind);
    put(&mut d, "event.module", "aitrail");
    put(&mut d, "event.provider", "aitrail");
    put(
        &mut d,
        "event.dataset",
        format!("aitrail.{}", kind.replace('.', "_")),
    );
    let (sev_name, sev) = severity(ev);
    put(&mut d, "event.severity", sev);
    put(&mut d, "log.level", sev_name);
    put(&mut d, "agent.type", "aitrail");
    copy(&mut d, ev, "/host/name", "host.name");
    copy(&mut d, ev, "/host/name", "host.hostname");
    copy(&mut d, ev, "/host/id", "host.id");
    put(&mut d, "host.os.type", "linux");
    copy(&mut d, ev, "/trace_id", "trace.id");
    copy(&mut d, ev, "/span_id", "span.id");
    copy(&mut d, ev, "/parent_span_id", "aitrail.parent_span_id");
    copy(&mut d, ev, "/v", "aitrail.schema_version");
    if let Some(p) = ev.get("process").filter(|p| p.is_object()) {
        copy(&mut d, p, "/pid", "process.pid");
        copy(&mut d, p, "/ppid", "process.parent.pid");
        copy(&mut d, p, "/exec_id", "process.entity_id");
        copy(&mut d, p, "/parent_exec_id", "process.parent.entity_id");
        copy(&mut d, p, "/comm", "process.name");
        copy(&mut d, p, "/exe", "process.executable");
        let args = get::strings(p, "/args");
        if !args.is_empty() {
            put(&mut d, "process.command_line", args.join(" "));
            put(&mut d, "process.args_count", args.len());
            put(&mut d, "process.args", json!(args));
        }
        if let Some(uid) = get::i64(p, "/uid") {
            put(&mut d, "user.id", uid.to_string());
        }
        copy(&mut d, p, "/user", "user.name");
        if let Some(Value::String(u)) = p.get("user") {
            put(&mut d, "related.user", json!([u]));
        }
    }
    if let Some(h) = get::str(ev, "/host/name") {
        put(&mut d, "related.hosts", json!([h]));
    }
    match kind {
        "process.exec" => process_exec(ev, &mut d),
        "process.exit" => process_exit(ev, &mut d),
        "file.open" => file_open(ev, &mut d),
        "net.connect" => net_connect(ev, &mut d),
        "llm.call" => llm_call(ev, &mut d),
        "tool.call" => tool_call(ev, &mut d),
        "finding" => finding(ev, &mut d),
        "agent.health" => {
            put(&mut d, "event.kind", "metric");
            put(&mut d, "event.category", json!(["host"]));
            put(&mut d, "event.type", json!(["info"]));
            copy(&mut d, ev, "/health", "aitrail.health");
            put(&mut d, "message", "aitrail agent health");
        }
        other => {
            // A kind newer than this collector: still an event, its
            // members kept under aitrail.*.
            put(&mut d, "event.kind", "event");
            if let Some(obj) = ev.as_object() {
                for (k, v) in obj {
                    if !matches!(
                        k.as_str(),
                        "v" | "id"
                            | "time"
                            | "kind"
                            | "host"
                            | "trace_id"
                            | "span_id"
                            | "parent_span_id"
                            | "severity"
                            | "process"
                    ) {
                        put(
                            &mut d,
                            &format!("aitrail.{}", k.replace('.', "_")),
                            v.clone(),
                        );
                    }
                }
            }
            put(&mut d, "message", format!("aitrail {other}"));
        }
    }
    Ok(Value::Object(d))
}

fn base(d: &mut Map<String, Value>, category: &str, types: &[&str]) {
    put(d, "event.kind", "event");
    put(d, "event.category", json!([category]));
    put(d, "event.type", json!(types));
}

fn process_exec(ev: &Value, d: &mut Map<String, Value>) {
    base(d, "process", &["start"]);
    copy(d, ev, "/exec/filename", "process.executable");
    let args = get::strings(ev, "/exec/args");
    if !args.is_empty() {
        put(d, "process.command_line", args.join(" "));
        put(d, "process.args_count", args.len());
        put(d, "process.args", json!(args));
    }
    copy(d, ev, "/exec/args_truncated", "aitrail.exec.args_truncated");
    outcome(d, Some(true));
    let what = get::str(ev, "/exec/filename").unwrap_or("?");
    put(d, "message", format!("exec {what}"));
}

fn process_exit(ev: &Value, d: &mut Map<String, Value>) {
    base(d, "process", &["end"]);
    copy(d, ev, "/exec/exit_code", "process.exit_code");
    copy(d, ev, "/exec/signal", "aitrail.exec.signal");
    let code = get::i64(ev, "/exec/exit_code");
    let signal = get::i64(ev, "/exec/signal");
    outcome(
        d,
        match (code, signal) {
            (_, Some(_)) => Some(false),
            (Some(c), None) => Some(c == 0),
            (None, None) => None,
        },
    );
    let what = get::str(ev, "/process/comm").unwrap_or("?");
    put(
        d,
        "message",
        match (code, signal) {
            (_, Some(s)) => format!("{what} killed by signal {s}"),
            (Some(c), None) => format!("{what} exited with {c}"),
            (None, None) => format!("{what} exited"),
        },
    );
}

fn file_open(ev: &Value, d: &mut Map<String, Value>) {
    base(d, "file", &["access"]);
    if let Some(path) = get::str(ev, "/file/path").filter(|s| !s.is_empty()) {
        put(d, "file.path", path);
        let name = get::basename(path);
        put(d, "file.name", name);
        if let Some((dir, _)) = path.rsplit_once('/') {
            put(d, "file.directory", if dir.is_empty() { "/" } else { dir });
        }
        if let Some((stem, ext)) = name.rsplit_once('.') {
            if !stem.is_empty() && !ext.is_empty() {
                put(d, "file.extension", ext);
            }
        }
        put(d, "message", format!("open {path}"));
    }
    copy(d, ev, "/file/flags", "aitrail.file.flags");
    copy(d, ev, "/file/result", "aitrail.file.result");
    copy(d, ev, "/file/error", "error.code");
    outcome(d, get::i64(ev, "/file/result").map(|r| r >= 0));
}

fn net_connect(ev: &Value, d: &mut Map<String, Value>) {
    base(d, "network", &["connection", "start"]);
    let family = get::str(ev, "/net/family").unwrap_or("");
    let address = get::str(ev, "/net/address").unwrap_or("");
    let port = get::i64(ev, "/net/port");
    put(d, "network.direction", "egress");
    if matches!(family, "ipv4" | "ipv6") && address.parse::<std::net::IpAddr>().is_ok() {
        put(d, "network.type", family);
        put(d, "destination.ip", address);
        put(d, "related.ip", json!([address]));
        if let Some(p) = port {
            put(d, "destination.port", p);
        }
    }
    if !address.is_empty() {
        put(d, "destination.address", address);
    }
    put(d, "aitrail.net.family", family);
    copy(d, ev, "/net/result", "aitrail.net.result");
    copy(d, ev, "/net/error", "error.code");
    outcome(
        d,
        match get::i64(ev, "/net/result") {
            Some(0) => Some(true),
            Some(-115) | None => None, // EINPROGRESS: started, outcome not seen
            Some(_) => Some(false),
        },
    );
    put(
        d,
        "message",
        match port {
            Some(p) if family != "unix" => format!("connect {address} port {p}"),
            _ => format!("connect {address}"),
        },
    );
}

fn llm_call(ev: &Value, d: &mut Map<String, Value>) {
    base(d, "api", &["access"]);
    let Some(llm) = ev.get("llm") else {
        return;
    };
    let provider = get::str(llm, "/provider").unwrap_or("unknown");
    let operation = get::str(llm, "/operation").unwrap_or("unknown");
    put(d, "gen_ai.system", provider);
    put(d, "gen_ai.operation.name", operation);
    copy(d, llm, "/model", "gen_ai.request.model");
    copy(d, llm, "/response_id", "gen_ai.response.id");
    copy(d, llm, "/usage/input_tokens", "gen_ai.usage.input_tokens");
    copy(d, llm, "/usage/output_tokens", "gen_ai.usage.output_tokens");
    put(d, "gen_ai.output.type", "text");
    if let Some(h) = get::str(llm, "/server/host").filter(|s| !s.is_empty()) {
        put(d, "destination.domain", h);
        put(d, "url.domain", h);
        put(d, "url.scheme", "https");
        if let Some(p) = get::i64(llm, "/server/port") {
            put(d, "destination.port", p);
            put(d, "url.port", p);
        }
        if let Some(p) = get::str(llm, "/path") {
            put(d, "url.path", p.split('?').next().unwrap_or(p));
        }
    }
    copy(d, llm, "/status", "http.response.status_code");
    if let Some(ms) = get::f64(llm, "/latency_ms") {
        // ECS durations are ns.
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a latency in ns fits i64; `as` saturates"
        )]
        put(d, "event.duration", (ms * 1e6).round() as i64);
    }
    if let Some(e) = get::str(llm, "/error") {
        put(d, "error.message", e);
        put(d, "error.code", e.split(':').next().unwrap_or(e).trim());
    }
    let status = get::i64(llm, "/status");
    outcome(
        d,
        status.map(|s| (200..300).contains(&s) && get::str(llm, "/error").is_none()),
    );
    for k in [
        "role",
        "stream",
        "path",
        "system",
        "messages",
        "tools",
        "api_user",
        "api_key_id",
        "output",
        "usage",
        "ttft_ms",
        "latency_ms",
        "truncated",
        "previous_response_id",
        "input_count",
    ] {
        copy(d, llm, &format!("/{k}"), &format!("aitrail.llm.{k}"));
    }
    let model = get::str(llm, "/model").unwrap_or("?");
    put(d, "message", format!("{provider} {operation} {model}"));
}

fn tool_call(ev: &Value, d: &mut Map<String, Value>) {
    base(d, "api", &["access"]);
    let Some(tool) = ev.get("tool") else {
        return;
    };
    copy(d, tool, "/name", "gen_ai.tool.name");
    copy(d, tool, "/call_id", "gen_ai.tool.call.id");
    let mcp = tool.get("mcp").filter(|m| m.is_object());
    put(
        d,
        "gen_ai.tool.type",
        if mcp.is_some() {
            "extension"
        } else {
            "function"
        },
    );
    for k in [
        "arguments",
        "result",
        "effects",
        "confidence",
        "reasons",
        "is_error",
        "truncated",
        "mcp",
    ] {
        copy(d, tool, &format!("/{k}"), &format!("aitrail.tool.{k}"));
    }
    if let Some(m) = mcp {
        if let Some(h) = get::str(m, "/server/host").filter(|s| !s.is_empty()) {
            put(d, "destination.domain", h);
            copy(d, m, "/server/port", "destination.port");
        }
        copy(d, m, "/error", "error.message");
    }
    outcome(d, get::bool(tool, "/is_error").map(|e| !e));
    let name = get::str(tool, "/name").unwrap_or("?");
    put(d, "message", format!("tool call {name}"));
}

fn finding(ev: &Value, d: &mut Map<String, Value>) {
    put(d, "event.kind", "alert");
    put(d, "event.category", json!(["intrusion_detection"]));
    put(d, "event.type", json!(["info"]));
    let Some(f) = ev.get("finding") else {
        return;
    };
    copy(d, f, "/rule", "rule.id");
    copy(d, f, "/title", "rule.name");
    copy(d, f, "/detail", "rule.description");
    copy(d, f, "/class", "rule.category");
    put(d, "rule.ruleset", "aitrail");
    put(d, "rule.author", json!(["aitrail"]));
    let mitre = get::strings(f, "/mitre");
    if !mitre.is_empty() {
        let atlas = mitre.iter().all(|t| t.starts_with("AML."));
        put(
            d,
            "threat.framework",
            if atlas { "MITRE ATLAS" } else { "MITRE ATT&CK" },
        );
        let (subs, techs): (Vec<&String>, Vec<&String>) = mitre
            .iter()
            .partition(|t| t.starts_with('T') && t.contains('.'));
        let mut technique_ids: Vec<String> = techs.iter().map(|t| (*t).clone()).collect();
        for s in &subs {
            if let Some((base, _)) = s.split_once('.') {
                if !technique_ids.iter().any(|t| t == base) {
                    technique_ids.push(base.to_owned());
                }
            }
        }
        put(d, "threat.technique.id", json!(technique_ids));
        if !subs.is_empty() {
            put(d, "threat.technique.subtechnique.id", json!(subs));
        }
    }
    for k in ["evidence", "class", "matches", "verdict"] {
        copy(d, f, &format!("/{k}"), &format!("aitrail.finding.{k}"));
    }
    let title = get::str(f, "/title").unwrap_or("finding");
    put(d, "message", title);
}
