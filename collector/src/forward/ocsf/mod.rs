//! aitrail events as OCSF 1.8.0 events (<https://schema.ocsf.io/1.8.0/>).
//!
//! Why 1.8.0: it is the first release with the `ai_operation` profile
//! (`ai_model`, `message_context` on API Activity), which is where an LLM
//! call belongs. The output is checked against the real 1.8.0 schema
//! (every class with the profiles it declares in `metadata.profiles`,
//! `additionalProperties: false`) by the `forward_formats` test.
//!
//! | kind | class | activity |
//! |---|---|---|
//! | `process.exec` | Process Activity (1007) | Launch (1) |
//! | `process.exit` | Process Activity (1007) | Terminate (2) |
//! | `file.open` | File System Activity (1001) | Open (14) |
//! | `net.connect` | Network Activity (4001) | Open (1) |
//! | `llm.call` | API Activity (6003), profile `ai_operation` | Create (1) |
//! | `tool.call` | API Activity (6003), profile `ai_operation` | Other (99) "Tool Call" |
//! | `finding` | Detection Finding (2004) | Create (1) |
//!
//! `agent.health` has no OCSF class (it is the sensor's own metrics): an
//! OCSF forwarder does not send it. Every class gets `metadata` (product
//! aitrail, `uid` = event id, `correlation_uid` = trace id), `device` (the
//! host, profile `host`), `severity_id`, `time` in ms, and `observables`.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use self::api::{llm_call, tool_call};
use super::format::{get, Unmappable};

mod api;

/// The OCSF version these events follow.
pub const VERSION: &str = "1.8.0";
/// Kinds with no OCSF class.
pub const UNSUPPORTED_KINDS: &[&str] = &["agent.health"];

struct Class {
    uid: u32,
    name: &'static str,
    category_uid: u32,
    category_name: &'static str,
}

const PROCESS_ACTIVITY: Class = Class {
    uid: 1007,
    name: "Process Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const FILE_ACTIVITY: Class = Class {
    uid: 1001,
    name: "File System Activity",
    category_uid: 1,
    category_name: "System Activity",
};
const NETWORK_ACTIVITY: Class = Class {
    uid: 4001,
    name: "Network Activity",
    category_uid: 4,
    category_name: "Network Activity",
};
const API_ACTIVITY: Class = Class {
    uid: 6003,
    name: "API Activity",
    category_uid: 6,
    category_name: "Application Activity",
};
const DETECTION_FINDING: Class = Class {
    uid: 2004,
    name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
};

/// OCSF status ids.
const STATUS_UNKNOWN: u32 = 0;
const STATUS_SUCCESS: u32 = 1;
const STATUS_FAILURE: u32 = 2;

/// Observable type ids (OCSF 1.8.0 `observable.type_id`).
mod obs {
    pub const HOSTNAME: u32 = 1;
    pub const IP: u32 = 2;
    pub const USER_NAME: u32 = 4;
    pub const FILE_NAME: u32 = 7;
    pub const PROCESS_NAME: u32 = 9;
    pub const PORT: u32 = 11;
    pub const COMMAND_LINE: u32 = 13;
    pub const FILE_PATH: u32 = 45;
}

fn unmappable(ev: &Value, problem: &str) -> Unmappable {
    Unmappable {
        format: "ocsf",
        id: get::str(ev, "/id").unwrap_or("?").to_owned(),
        problem: problem.to_owned(),
    }
}

/// `info` … `critical` → OCSF `severity_id` (1 Informational … 5 Critical).
fn severity(ev: &Value) -> (u32, &'static str) {
    match get::str(ev, "/severity").unwrap_or("info") {
        "low" => (2, "Low"),
        "medium" => (3, "Medium"),
        "high" => (4, "High"),
        "critical" => (5, "Critical"),
        _ => (1, "Informational"),
    }
}

/// Builds one OCSF event.
struct Out {
    map: Map<String, Value>,
    observables: Vec<Value>,
    unmapped: Map<String, Value>,
}

impl Out {
    fn new(
        ev: &Value,
        class: &Class,
        activity_id: u32,
        activity_name: &str,
        profiles: &[&str],
    ) -> Result<Self, Unmappable> {
        let time_ns = get::time_ns(ev).ok_or_else(|| unmappable(ev, "no valid time"))?;
        let id = get::str(ev, "/id").ok_or_else(|| unmappable(ev, "no id"))?;
        let (severity_id, severity_name) = severity(ev);
        let mut metadata = json!({
            "version": VERSION,
            "uid": id,
            "product": {
                "name": "aitrail",
                "vendor_name": "aitrail",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "log_name": "aitrail",
            "event_code": get::str(ev, "/kind").unwrap_or(""),
            "original_time": get::str(ev, "/time").unwrap_or(""),
            "profiles": profiles,
        });
        if let Some(t) = get::str(ev, "/trace_id") {
            metadata["correlation_uid"] = t.into();
        }
        let mut map = Map::new();
        map.insert("class_uid".into(), class.uid.into());
        map.insert("class_name".into(), class.name.into());
        map.insert("category_uid".into(), class.category_uid.into());
        map.insert("category_name".into(), class.category_name.into());
        map.insert("activity_id".into(), activity_id.into());
        map.insert("activity_name".into(), activity_name.into());
        map.insert(
            "type_uid".into(),
            (u64::from(class.uid) * 100 + u64::from(activity_id)).into(),
        );
        map.insert(
            "type_name".into(),
            format!("{}: {activity_name}", class.name).into(),
        );
        map.insert("time".into(), (time_ns.div_euclid(1_000_000)).into());
        map.insert("severity_id".into(), severity_id.into());
        map.insert("severity".into(), severity_name.into());
        map.insert("metadata".into(), metadata);
        let mut out = Self {
            map,
            observables: Vec::new(),
            unmapped: Map::new(),
        };
        if let Some(device) = device(ev) {
            if let Some(h) = device.get("hostname").and_then(Value::as_str) {
                out.observe("device.hostname", obs::HOSTNAME, h);
            }
            out.map.insert("device".into(), device);
        }
        for (k, field) in [
            ("span_id", "/span_id"),
            ("parent_span_id", "/parent_span_id"),
        ] {
            if let Some(s) = get::str(ev, field) {
                out.unmapped.insert(k.into(), s.into());
            }
        }
        Ok(out)
    }

    fn set(&mut self, key: &str, v: impl Into<Value>) {
        self.map.insert(key.into(), v.into());
    }

    fn observe(&mut self, name: &str, type_id: u32, value: impl std::fmt::Display) {
        self.observables
            .push(json!({"name": name, "type_id": type_id, "value": value.to_string()}));
    }

    fn status(&mut self, id: u32, code: Option<&str>, detail: Option<String>) {
        self.set("status_id", id);
        self.set(
            "status",
            match id {
                STATUS_SUCCESS => "Success",
                STATUS_FAILURE => "Failure",
                _ => "Unknown",
            },
        );
        if let Some(c) = code {
            self.set("status_code", c);
        }
        if let Some(d) = detail {
            self.set("status_detail", d);
        }
    }

    /// `actor` with the event's process and its user; observables for both.
    fn actor_from_process(&mut self, ev: &Value) {
        let mut actor = Map::new();
        if let Some(p) = process(ev) {
            if let Some(name) = p.get("name").and_then(Value::as_str) {
                self.observe("actor.process.name", obs::PROCESS_NAME, name);
            }
            actor.insert("process".into(), p);
        }
        if let Some(u) = user(ev) {
            if let Some(name) = u.get("name").and_then(Value::as_str) {
                self.observe("actor.user.name", obs::USER_NAME, name);
            }
            actor.insert("user".into(), u);
        }
        if !actor.is_empty() {
            self.set("actor", Value::Object(actor));
        }
    }

    fn finish(mut self) -> Value {
        if !self.observables.is_empty() {
            self.map
                .insert("observables".into(), Value::Array(self.observables));
        }
        if !self.unmapped.is_empty() {
            self.map
                .insert("unmapped".into(), Value::Object(self.unmapped));
        }
        Value::Object(self.map)
    }
}

fn device(ev: &Value) -> Option<Value> {
    let name = get::str(ev, "/host/name").filter(|s| !s.is_empty());
    let id = get::str(ev, "/host/id").filter(|s| !s.is_empty());
    if name.is_none() && id.is_none() {
        return None;
    }
    let mut d = json!({"type_id": 0, "type": "Unknown", "os": {"type_id": 200, "type": "Linux", "name": "Linux"}});
    if let Some(n) = name {
        d["hostname"] = n.into();
        d["name"] = n.into();
    }
    if let Some(i) = id {
        d["uid"] = i.into();
    }
    Some(d)
}

fn user(ev: &Value) -> Option<Value> {
    let uid = get::i64(ev, "/process/uid");
    let name = get::str(ev, "/process/user");
    if uid.is_none() && name.is_none() {
        return None;
    }
    let mut u = json!({});
    if let Some(uid) = uid {
        u["uid"] = uid.to_string().into();
    }
    if let Some(n) = name {
        u["name"] = n.into();
    }
    Some(u)
}

fn cmd_line(args: &[String]) -> String {
    args.join(" ")
}

/// The event's process as an OCSF `process`.
fn process(ev: &Value) -> Option<Value> {
    let p = ev.get("process")?;
    let pid = p.get("pid").and_then(Value::as_i64)?;
    let mut out = json!({"pid": pid});
    if let Some(x) = get::str(p, "/exec_id") {
        out["uid"] = x.into();
    }
    if let Some(c) = get::str(p, "/comm") {
        out["name"] = c.into();
    }
    let args = get::strings(p, "/args");
    if !args.is_empty() {
        out["cmd_line"] = cmd_line(&args).into();
    }
    if let Some(exe) = get::str(p, "/exe").filter(|s| !s.is_empty()) {
        out["file"] =
            json!({"name": get::basename(exe), "path": exe, "type_id": 1, "type": "Regular File"});
    }
    if let Some(u) = user(ev) {
        out["user"] = u;
    }
    if let Some(ppid) = get::i64(p, "/ppid") {
        let mut parent = json!({"pid": ppid});
        if let Some(x) = get::str(p, "/parent_exec_id") {
            parent["uid"] = x.into();
        }
        out["parent_process"] = parent;
    }
    Some(out)
}

/// One stored event as OCSF.
pub fn map(ev: &Value) -> Result<Value, Unmappable> {
    match get::str(ev, "/kind").unwrap_or("") {
        "process.exec" => process_exec(ev),
        "process.exit" => process_exit(ev),
        "file.open" => file_open(ev),
        "net.connect" => net_connect(ev),
        "llm.call" => llm_call(ev),
        "tool.call" => tool_call(ev),
        "finding" => finding(ev),
        other => Err(unmappable(ev, &format!("no OCSF class for kind {other:?}"))),
    }
}

fn need_device(ev: &Value, o: &Out) -> Result<(), Unmappable> {
    if o.map.contains_key("device") {
        Ok(())
    } else {
        Err(unmappable(ev, "no host"))
    }
}

fn process_exec(ev: &Value) -> Result<Value, Unmappable> {
    let mut o = Out::new(ev, &PROCESS_ACTIVITY, 1, "Launch", &["host"])?;
    need_device(ev, &o)?;
    let mut p = process(ev).ok_or_else(|| unmappable(ev, "no process"))?;
    let args = get::strings(ev, "/exec/args");
    if !args.is_empty() {
        p["cmd_line"] = cmd_line(&args).into();
    }
    if let Some(f) = get::str(ev, "/exec/filename").filter(|s| !s.is_empty()) {
        p["file"] =
            json!({"name": get::basename(f), "path": f, "type_id": 1, "type": "Regular File"});
    }
    if let Some(c) = p.get("cmd_line").and_then(Value::as_str) {
        o.observe("process.cmd_line", obs::COMMAND_LINE, c);
    }
    if let Some(n) = p.get("name").and_then(Value::as_str) {
        o.observe("process.name", obs::PROCESS_NAME, n);
    }
    // The actor of a launch is the parent that exec'd it.
    let mut actor = Map::new();
    if let Some(parent) = p.get("parent_process").cloned() {
        actor.insert("process".into(), parent);
    }
    if let Some(u) = user(ev) {
        if let Some(n) = u.get("name").and_then(Value::as_str) {
            o.observe("actor.user.name", obs::USER_NAME, n);
        }
        actor.insert("user".into(), u);
    }
    if actor.is_empty() {
        return Err(unmappable(ev, "no parent process and no user"));
    }
    o.set("actor", Value::Object(actor));
    o.set("process", p);
    if get::bool(ev, "/exec/args_truncated") == Some(true) {
        o.map["metadata"]["is_truncated"] = true.into();
    }
    o.status(STATUS_SUCCESS, None, None);
    Ok(o.finish())
}

fn process_exit(ev: &Value) -> Result<Value, Unmappable> {
    let mut o = Out::new(ev, &PROCESS_ACTIVITY, 2, "Terminate", &["host"])?;
    need_device(ev, &o)?;
    let p = process(ev).ok_or_else(|| unmappable(ev, "no process"))?;
    if let Some(n) = p.get("name").and_then(Value::as_str) {
        o.observe("process.name", obs::PROCESS_NAME, n);
    }
    o.actor_from_process(ev);
    o.set("process", p);
    let code = get::i64(ev, "/exec/exit_code");
    let signal = get::i64(ev, "/exec/signal");
    if let Some(c) = code {
        o.set("exit_code", c);
    }
    match (code, signal) {
        (_, Some(s)) => o.status(STATUS_FAILURE, None, Some(format!("killed by signal {s}"))),
        (Some(0), None) => o.status(STATUS_SUCCESS, None, None),
        (Some(c), None) => o.status(STATUS_FAILURE, None, Some(format!("exit code {c}"))),
        (None, None) => o.status(STATUS_UNKNOWN, None, None),
    }
    Ok(o.finish())
}

fn file_open(ev: &Value) -> Result<Value, Unmappable> {
    let mut o = Out::new(ev, &FILE_ACTIVITY, 14, "Open", &["host"])?;
    need_device(ev, &o)?;
    let path = get::str(ev, "/file/path")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unmappable(ev, "no file path"))?;
    let flags = get::strings(ev, "/file/flags");
    let (type_id, type_name) = if flags.iter().any(|f| f == "O_DIRECTORY") {
        (2, "Folder")
    } else {
        (0, "Unknown")
    };
    let name = get::basename(path);
    o.set(
        "file",
        json!({"name": name, "path": path, "type_id": type_id, "type": type_name}),
    );
    o.observe("file.name", obs::FILE_NAME, name);
    o.observe("file.path", obs::FILE_PATH, path);
    o.actor_from_process(ev);
    if !o.map.contains_key("actor") {
        return Err(unmappable(ev, "no process"));
    }
    let result = get::i64(ev, "/file/result");
    match result {
        Some(r) if r >= 0 => o.status(STATUS_SUCCESS, None, None),
        Some(r) => {
            let err = get::str(ev, "/file/error");
            o.status(
                STATUS_FAILURE,
                err,
                Some(format!(
                    "open failed: {}",
                    err.map_or_else(|| format!("errno {}", -r), str::to_owned)
                )),
            );
        }
        None => o.status(STATUS_UNKNOWN, None, None),
    }
    if !flags.is_empty() {
        o.unmapped.insert("file_flags".into(), json!(flags));
    }
    if let Some(r) = result {
        o.unmapped.insert("file_result".into(), r.into());
    }
    Ok(o.finish())
}

fn net_connect(ev: &Value) -> Result<Value, Unmappable> {
    let mut o = Out::new(ev, &NETWORK_ACTIVITY, 1, "Open", &["host"])?;
    let family = get::str(ev, "/net/family").unwrap_or("");
    let address = get::str(ev, "/net/address")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unmappable(ev, "no address"))?;
    let port = get::i64(ev, "/net/port").unwrap_or(0);
    let (dst, ver) = match family {
        "ipv4" | "ipv6" if address.parse::<std::net::IpAddr>().is_ok() => {
            o.observe("dst_endpoint.ip", obs::IP, address);
            o.observe("dst_endpoint.port", obs::PORT, port);
            (
                json!({"ip": address, "port": port}),
                if family == "ipv4" {
                    (4, "Internet Protocol version 4 (IPv4)")
                } else {
                    (6, "Internet Protocol version 6 (IPv6)")
                },
            )
        }
        // A unix socket's path, or an address family OCSF has no field for.
        _ => (json!({"name": address}), (99, "Other")),
    };
    o.set("dst_endpoint", dst);
    let mut conn = json!({"direction_id": 2, "direction": "Outbound", "protocol_ver_id": ver.0, "protocol_ver": ver.1});
    if family == "unix" {
        conn["protocol_name"] = "unix".into();
        conn["direction_id"] = 4.into();
        conn["direction"] = "Local".into();
    }
    o.set("connection_info", conn);
    if let Some(h) = get::str(ev, "/host/name") {
        o.set("src_endpoint", json!({"hostname": h}));
    }
    o.actor_from_process(ev);
    match get::i64(ev, "/net/result") {
        Some(0) => o.status(STATUS_SUCCESS, None, None),
        // A non-blocking connect: started, its outcome not seen.
        Some(-115) => o.status(
            STATUS_UNKNOWN,
            Some("EINPROGRESS"),
            Some("connect in progress (non-blocking)".into()),
        ),
        Some(r) => {
            let err = get::str(ev, "/net/error");
            o.status(
                STATUS_FAILURE,
                err,
                Some(format!(
                    "connect failed: {}",
                    err.map_or_else(|| format!("errno {}", -r), str::to_owned)
                )),
            );
        }
        None => o.status(STATUS_UNKNOWN, None, None),
    }
    o.unmapped.insert("net_family".into(), family.into());
    Ok(o.finish())
}

fn finding(ev: &Value) -> Result<Value, Unmappable> {
    let mut o = Out::new(ev, &DETECTION_FINDING, 1, "Create", &["host"])?;
    let f = ev
        .get("finding")
        .ok_or_else(|| unmappable(ev, "no finding member"))?;
    let rule = get::str(f, "/rule").unwrap_or("unknown");
    let title = get::str(f, "/title").unwrap_or(rule);
    let id = get::str(ev, "/id").unwrap_or("");
    let time = o.map["time"].clone();
    let mut info = json!({
        "uid": id,
        "title": title,
        "analytic": {"uid": rule, "name": rule, "type_id": 1, "type": "Rule"},
        "created_time": time.clone(),
        "first_seen_time": time.clone(),
        "last_seen_time": time,
        "product": {"name": "aitrail", "vendor_name": "aitrail", "version": env!("CARGO_PKG_VERSION")},
    });
    if let Some(d) = get::str(f, "/detail") {
        info["desc"] = d.into();
    }
    if let Some(c) = get::str(f, "/class") {
        info["types"] = json!([c]);
        info["analytic"]["category"] = c.into();
    }
    let evidence = get::strings(f, "/evidence");
    if !evidence.is_empty() {
        info["related_events"] = evidence.iter().map(|e| json!({"uid": e})).collect();
        info["related_events_count"] = evidence.len().into();
    }
    let attacks: Vec<Value> = get::strings(f, "/mitre")
        .iter()
        .map(|t| {
            // T1003.008 is a sub-technique of T1003; ATLAS ids (AML.T0051)
            // and plain techniques are techniques.
            match t.strip_prefix('T').and_then(|r| r.split_once('.')) {
                Some((base, _)) => {
                    json!({"technique": {"uid": format!("T{base}")}, "sub_technique": {"uid": t}})
                }
                None => json!({"technique": {"uid": t}}),
            }
        })
        .collect();
    if !attacks.is_empty() {
        info["attacks"] = Value::Array(attacks);
    }
    o.set("finding_info", info);
    o.set(
        "is_alert",
        get::str(ev, "/severity").unwrap_or("info") != "info",
    );
    o.set("status_id", 1);
    o.set("status", "New");
    o.actor_from_process(ev);
    o.set("message", title);
    for k in ["matches", "verdict"] {
        if let Some(v) = f.get(k) {
            o.unmapped.insert(format!("finding_{k}"), v.clone());
        }
    }
    Ok(o.finish())
}
