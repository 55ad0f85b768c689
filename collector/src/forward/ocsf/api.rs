//! API Activity (6003) with the `ai_operation` profile: `llm.call` and
//! `tool.call`.

use serde_json::{json, Map, Value};

use super::super::format::{get, Unmappable};
use super::*;

/// `trace` (profile `trace`): the conversation and this event's span.
fn trace(ev: &Value, start_ms: i64, end_ms: i64) -> Option<Value> {
    let trace_id = get::str(ev, "/trace_id")?;
    let mut t = json!({"uid": trace_id});
    if let Some(span) = get::str(ev, "/span_id") {
        let mut s = json!({"uid": span, "start_time": start_ms, "end_time": end_ms, "operation": get::str(ev, "/kind").unwrap_or("")});
        if let Some(p) = get::str(ev, "/parent_span_id") {
            s["parent_uid"] = p.into();
        }
        t["span"] = s;
    }
    Some(t)
}

/// What the API Activity classes share: `src_endpoint` (this host, where
/// the call was seen), the actor, `trace`.
fn api_common(ev: &Value, o: &mut Out, duration_ms: Option<i64>) -> Result<(), Unmappable> {
    let host = get::str(ev, "/host/name")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unmappable(ev, "no host"))?;
    o.set("src_endpoint", json!({"hostname": host}));
    o.actor_from_process(ev);
    if !o.map.contains_key("actor") {
        // API Activity needs an actor; name the application at least.
        o.set("actor", json!({"app_name": "unknown"}));
    }
    let end = o.map["time"].as_i64().unwrap_or(0);
    let start = end - duration_ms.unwrap_or(0).max(0);
    if let Some(d) = duration_ms {
        o.set("duration", d.max(0));
        o.set("start_time", start);
        o.set("end_time", end);
    }
    if let Some(t) = trace(ev, start, end) {
        o.set("trace", t);
    }
    Ok(())
}

/// `api.request.data` (what was asked: model, system prompt, messages,
/// tools) and `api.response` (status, the answer, the error).
fn llm_request_response(llm: &Value, status: Option<i64>) -> (Map<String, Value>, Value) {
    let mut request_data = Map::new();
    for k in [
        "model",
        "stream",
        "path",
        "system",
        "messages",
        "tools",
        "api_user",
        "previous_response_id",
        "input_count",
    ] {
        if let Some(v) = llm.get(k) {
            request_data.insert(k.into(), v.clone());
        }
    }
    let mut response = json!({});
    if let Some(s) = status {
        response["code"] = s.into();
    }
    if let Some(out) = llm.get("output") {
        response["data"] = out.clone();
        if let Some(f) = get::str(out, "/finish_reason") {
            response["message"] = f.into();
        }
    }
    if let Some(e) = get::str(llm, "/error") {
        response["error"] = e.split(':').next().unwrap_or(e).trim().into();
        response["error_message"] = e.into();
    }
    (request_data, response)
}

pub(super) fn llm_call(ev: &Value) -> Result<Value, Unmappable> {
    let mut o = Out::new(
        ev,
        &API_ACTIVITY,
        1,
        "Create",
        &["host", "ai_operation", "trace"],
    )?;
    let llm = ev
        .get("llm")
        .ok_or_else(|| unmappable(ev, "no llm member"))?;
    let provider = get::str(llm, "/provider").unwrap_or("unknown");
    let operation = get::str(llm, "/operation")
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a latency in ms fits i64; `as` saturates"
    )]
    let latency = get::f64(llm, "/latency_ms").map(|f| f.round() as i64);
    api_common(ev, &mut o, latency)?;
    let status = get::i64(llm, "/status");
    let (request_data, response) = llm_request_response(llm, status);
    let api = json!({
        "operation": operation,
        "service": {"name": provider},
        "request": {"uid": get::str(ev, "/id").unwrap_or(""), "data": Value::Object(request_data)},
        "response": response,
    });
    if let Some(r) = get::str(llm, "/response_id") {
        // `api.response` has no uid in 1.8.0.
        o.unmapped.insert("response_id".into(), r.into());
    }
    o.set("api", api);
    if let Some(server) = get::str(llm, "/server/host").filter(|s| !s.is_empty()) {
        let port = get::i64(llm, "/server/port").unwrap_or(443);
        o.set("dst_endpoint", json!({"hostname": server, "port": port}));
        o.observe("dst_endpoint.hostname", obs::HOSTNAME, server);
        let mut url = json!({"hostname": server, "port": port, "scheme": "https"});
        if let Some(p) = get::str(llm, "/path").filter(|s| !s.is_empty()) {
            url["path"] = p.into();
        } else {
            url["path"] = "/".into();
        }
        o.set("http_request", json!({"url": url}));
    }
    if let Some(s) = status {
        o.set("http_response", json!({"code": s}));
    }
    if let Some(model) = get::str(llm, "/model").filter(|s| !s.is_empty()) {
        o.set("ai_model", json!({"name": model, "ai_provider": provider}));
    }
    let input = get::i64(llm, "/usage/input_tokens");
    let output = get::i64(llm, "/usage/output_tokens");
    let mut ctx = json!({"ai_role_id": 2, "ai_role": "Assistant", "service": {"name": provider}});
    if let Some(c) = get::str(ev, "/process/comm") {
        ctx["application"] = json!({"name": c});
    }
    if let Some(i) = input {
        ctx["prompt_tokens"] = i.into();
    }
    if let Some(x) = output {
        ctx["completion_tokens"] = x.into();
    }
    if let (Some(i), Some(x)) = (input, output) {
        ctx["total_tokens"] = (i + x).into();
    }
    o.set("message_context", ctx);
    if let Some(k) = get::str(llm, "/api_key_id") {
        o.unmapped.insert("api_key_id".into(), k.into());
    }
    if let Some(r) = get::str(llm, "/role") {
        o.unmapped.insert("llm_role".into(), r.into());
    }
    if let Some(t) = get::f64(llm, "/ttft_ms") {
        o.unmapped.insert("ttft_ms".into(), t.into());
    }
    if get::bool(llm, "/truncated") == Some(true) {
        o.map["metadata"]["is_truncated"] = true.into();
    }
    match status {
        Some(s) if (200..300).contains(&s) && get::str(llm, "/error").is_none() => {
            o.status(STATUS_SUCCESS, Some(&s.to_string()), None);
        }
        Some(s) => o.status(
            STATUS_FAILURE,
            Some(&s.to_string()),
            get::str(llm, "/error").map(str::to_owned),
        ),
        None => o.status(STATUS_UNKNOWN, None, Some("no response seen".into())),
    }
    let model = get::str(llm, "/model").unwrap_or("?");
    let mut message = format!("{provider} {operation} {model}");
    if let (Some(i), Some(x)) = (input, output) {
        let _ = write!(message, ": {i} input, {x} output tokens");
    }
    o.set("message", message);
    Ok(o.finish())
}

pub(super) fn tool_call(ev: &Value) -> Result<Value, Unmappable> {
    let mut o = Out::new(
        ev,
        &API_ACTIVITY,
        99,
        "Tool Call",
        &["host", "ai_operation", "trace"],
    )?;
    let tool = ev
        .get("tool")
        .ok_or_else(|| unmappable(ev, "no tool member"))?;
    let name = get::str(tool, "/name")
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    api_common(ev, &mut o, None)?;
    let call_id = get::str(tool, "/call_id").unwrap_or("");
    let mut request = json!({"uid": call_id});
    if let Some(a) = tool.get("arguments") {
        request["data"] = json!({"arguments": a});
    }
    let mut response = json!({});
    if let Some(r) = tool.get("result") {
        response["data"] = json!({"result": r});
    }
    let mcp = tool.get("mcp");
    if let Some(e) = mcp.and_then(|m| get::str(m, "/error")) {
        response["error"] = e.split(':').next().unwrap_or(e).trim().into();
        response["error_message"] = e.into();
    }
    if let Some(s) = mcp.and_then(|m| get::i64(m, "/status")) {
        response["code"] = s.into();
    }
    let service = mcp
        .and_then(|m| get::str(m, "/server/host"))
        .map_or_else(|| "agent".to_owned(), |h| format!("mcp:{h}"));
    o.set(
        "api",
        json!({"operation": name, "service": {"name": service}, "request": request, "response": response}),
    );
    if let Some(m) = mcp {
        if let Some(h) = get::str(m, "/server/host").filter(|s| !s.is_empty()) {
            let port = get::i64(m, "/server/port").unwrap_or(443);
            o.set("dst_endpoint", json!({"hostname": h, "port": port}));
            o.observe("dst_endpoint.hostname", obs::HOSTNAME, h);
        }
        o.unmapped.insert("mcp".into(), m.clone());
    }
    let mut ctx = json!({"ai_role_id": 3, "ai_role": "Tool", "service": {"name": service}});
    if let Some(c) = get::str(ev, "/process/comm") {
        ctx["application"] = json!({"name": c});
    }
    o.set("message_context", ctx);
    for k in ["effects", "confidence", "reasons"] {
        if let Some(v) = tool.get(k) {
            o.unmapped.insert(format!("tool_{k}"), v.clone());
        }
    }
    if get::bool(tool, "/truncated") == Some(true) {
        o.map["metadata"]["is_truncated"] = true.into();
    }
    match get::bool(tool, "/is_error") {
        Some(true) => o.status(
            STATUS_FAILURE,
            None,
            Some("the tool reported an error".into()),
        ),
        Some(false) => o.status(STATUS_SUCCESS, None, None),
        None => o.status(STATUS_UNKNOWN, None, None),
    }
    o.set("message", format!("tool call {name}"));
    Ok(o.finish())
}
