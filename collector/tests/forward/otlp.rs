//! OTLP/HTTP protobuf logs, decoded by an independent decoder: the python
//! `opentelemetry-proto` package in `tests/mock/otlp_receiver.py`.

use std::{
    collections::HashMap,
    fs::File,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc},
    time::Duration,
};

use aitrail_collector::forward::{
    otlp::OtlpDestination, Destination, ForwardCounters, ForwardError,
};
use serde_json::{json, Value};

use crate::{
    pki::Pki,
    support::{event, get, python, repo_root, spec, tail},
};

pub const TOKEN: &str = "otlp-token-0123456789";

/// `tests/mock/otlp_receiver.py`, started on 127.0.0.1 (HTTPS with the test
/// PKI's server certificate, or plain HTTP), killed on drop.
pub struct Receiver {
    child: Child,
    pub port: u16,
    record: PathBuf,
    log: PathBuf,
}

impl Receiver {
    /// `script`: answers to give first (see the receiver's doc);
    /// `max_body`: larger decoded bodies get 413 (0: no limit).
    pub fn start(dir: &Path, tls: Option<&Pki>, script: &Value, max_body: usize) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let record = dir.join("requests.jsonl");
        let log = dir.join("receiver.log");
        let script_file = dir.join("script.json");
        std::fs::write(&script_file, script.to_string()).unwrap();
        let mut cmd = Command::new(python());
        cmd.arg(repo_root().join("tests/mock/otlp_receiver.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--token", TOKEN])
            .arg("--record")
            .arg(&record)
            .arg("--script")
            .arg(&script_file)
            .args(["--max-body", &max_body.to_string()])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap());
        if let Some(pki) = tls {
            cmd.arg("--cert")
                .arg(&pki.server_cert)
                .arg("--key")
                .arg(&pki.server_key);
        }
        let mut child = cmd.spawn().expect("cannot start python");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = line.strip_prefix("PORT ") {
                    let _ = tx.send(p.trim().parse::<u16>().ok());
                }
            }
        });
        let Ok(Some(port)) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "otlp_receiver.py did not start (run tests/setup-test-deps.sh for opentelemetry-proto):\n{}",
                tail(&log, 4000)
            );
        };
        Self {
            child,
            port,
            record,
            log,
        }
    }

    /// Every request, in order: status, headers and (when accepted) the
    /// decoded `ExportLogsServiceRequest`.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The log records of the accepted requests, in order, each with its
    /// resource and scope.
    pub fn records(&self) -> Vec<(Value, Value, Value)> {
        let mut out = Vec::new();
        for r in self.requests() {
            let Some(req) = r.get("request") else {
                continue;
            };
            for rl in req["resource_logs"].as_array().unwrap() {
                for sl in rl["scope_logs"].as_array().unwrap() {
                    for rec in sl["log_records"].as_array().unwrap() {
                        out.push((rl.clone(), sl.clone(), rec.clone()));
                    }
                }
            }
        }
        out
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("otlp_receiver log:\n{}", tail(&self.log, 4000));
        }
    }
}

/// An `otlp` forwarder's destination (through the collector's config
/// validation), and its counters.
fn build(
    endpoint: &str,
    pki: Option<&Pki>,
    extra: &str,
) -> (OtlpDestination, Arc<ForwardCounters>) {
    let ca = pki.map_or(String::new(), |p| {
        format!("ca_file = \"{}\"\n", p.ca.display())
    });
    let spec = spec(&format!(
        "name = \"otel\"\ntype = \"otlp\"\nendpoint = \"{endpoint}\"\ntoken = \"{TOKEN}\"\ntimeout_ms = 10000\n{ca}{extra}"
    ));
    let counters = Arc::new(ForwardCounters::default());
    let dest = OtlpDestination::new(&spec, Arc::clone(&counters)).unwrap_or_else(|e| panic!("{e}"));
    (dest, counters)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An `AnyValue` in the proto3 JSON mapping, back to plain JSON.
pub fn plain(v: &Value) -> Value {
    let o = v.as_object().unwrap();
    if let Some(s) = o.get("string_value") {
        return s.clone();
    }
    if let Some(i) = o.get("int_value") {
        return json!(i.as_str().unwrap().parse::<i64>().unwrap());
    }
    if let Some(d) = o.get("double_value") {
        return d.clone();
    }
    if let Some(b) = o.get("bool_value") {
        return b.clone();
    }
    if let Some(a) = o.get("array_value") {
        return Value::Array(
            a.get("values")
                .and_then(Value::as_array)
                .map(|vs| vs.iter().map(plain).collect())
                .unwrap_or_default(),
        );
    }
    if let Some(kv) = o.get("kvlist_value") {
        let mut m = serde_json::Map::new();
        for p in kv
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            m.insert(
                p["key"].as_str().unwrap().to_owned(),
                p.get("value").map_or(Value::Null, plain),
            );
        }
        return Value::Object(m);
    }
    assert!(o.is_empty(), "unknown AnyValue {v}");
    Value::Null
}

pub fn attrs(list: &Value) -> HashMap<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| (kv["key"].as_str().unwrap().to_owned(), plain(&kv["value"])))
        .collect()
}

fn b64_hex(v: &Value) -> String {
    // The proto3 JSON mapping writes bytes as standard base64.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let s = v.as_str().unwrap_or("");
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let d = u32::try_from(ALPHABET.iter().position(|a| *a == c).unwrap()).unwrap();
        bits = (bits << 6) | d;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push(u8::try_from((bits >> n) & 0xff).unwrap());
        }
    }
    hex::encode(out)
}

fn ns(time: &str) -> u64 {
    let t = chrono::DateTime::parse_from_rfc3339(time).unwrap();
    u64::try_from(t.timestamp_nanos_opt().unwrap()).unwrap()
}

#[test]
fn every_record_decodes_with_the_official_protos() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let rx = Receiver::start(&dir.path().join("rx"), Some(&pki), &json!([]), 0);
    let (dest, c) = build(&format!("https://127.0.0.1:{}", rx.port), Some(&pki), "");
    assert_eq!(dest.kind(), "otlp");
    let events: Vec<Value> = (0..240).map(event).collect();
    let rt = runtime();
    rt.block_on(async {
        for chunk in events.chunks(80) {
            dest.send(chunk).await.unwrap();
        }
    });
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r["content_type"], "application/x-protobuf");
        assert_eq!(r["content_encoding"], "gzip");
        assert_eq!(r["authorization"], format!("Bearer {TOKEN}"));
        assert_eq!(r["path"], "/v1/logs");
        assert!(r["body_bytes"].as_u64().unwrap() < r["decoded_bytes"].as_u64().unwrap());
    }
    let records = rx.records();
    assert_eq!(records.len(), events.len());
    let by_id: HashMap<&str, &Value> = events
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for (rl, sl, rec) in &records {
        let a = attrs(&rec["attributes"]);
        let id = a["log.record.uid"].as_str().unwrap();
        assert!(seen.insert(id.to_owned()), "{id} twice");
        let e = by_id[id];
        let kind = e["kind"].as_str().unwrap();
        // Envelope.
        assert_eq!(
            rec["time_unix_nano"],
            ns(e["time"].as_str().unwrap()).to_string()
        );
        assert!(
            rec["observed_time_unix_nano"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 0
        );
        assert_eq!(b64_hex(&rec["trace_id"]), e["trace_id"]);
        assert_eq!(b64_hex(&rec["span_id"]), e["span_id"]);
        assert_eq!(rec["severity_text"], e["severity"]);
        let sev = ["info", "low", "medium", "high", "critical"]
            .iter()
            .position(|s| *s == e["severity"])
            .unwrap();
        assert_eq!(rec["severity_number"], [9, 13, 14, 17, 21][sev]);
        assert_eq!(rec["event_name"], format!("aitrail.{kind}"));
        assert_eq!(a["event.name"], format!("aitrail.{kind}"));
        let body = rec["body"]["string_value"].as_str().unwrap();
        assert_eq!(
            &serde_json::from_str::<Value>(body).unwrap(),
            e,
            "body is the event"
        );
        // Resource and scope.
        let resource = attrs(&rl["resource"]["attributes"]);
        assert_eq!(resource["service.name"], "aitrail");
        assert_eq!(resource["host.name"], e["host"]["name"]);
        assert_eq!(resource["host.id"], e["host"]["id"]);
        assert_eq!(a["host.name"], e["host"]["name"]);
        assert_eq!(sl["scope"]["name"], "aitrail");
        assert_eq!(sl["scope"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(sl["schema_url"], "https://opentelemetry.io/schemas/1.37.0");
        if let Some(p) = e.get("process") {
            assert_eq!(a["process.pid"], p["pid"]);
            assert_eq!(a["process.executable.path"], p["exe"]);
            assert_eq!(a["process.command_args"], p["args"]);
            assert_eq!(a["process.user.name"], p["user"]);
        }
        kind_attributes(kind, e, &a);
    }
    let body_bytes: u64 = reqs.iter().map(|r| r["body_bytes"].as_u64().unwrap()).sum();
    assert_eq!(get(&c.bytes_sent), body_bytes, "compressed bodies, counted");
    assert_eq!((get(&c.fields_dropped), get(&c.connects)), (0, 1));
    assert_eq!(
        (get(&c.events_rejected), get(&c.answers_unexpected)),
        (0, 0)
    );
}

/// The attributes of each kind (semconv 1.37.0 and `aitrail.*`).
fn kind_attributes(kind: &str, e: &Value, a: &HashMap<String, Value>) {
    match kind {
        "llm.call" => {
            let l = &e["llm"];
            assert_eq!(a["gen_ai.provider.name"], "openai");
            assert_eq!(a["gen_ai.system"], "openai");
            assert_eq!(a["gen_ai.operation.name"], "chat");
            assert_eq!(a["gen_ai.request.model"], l["model"]);
            assert_eq!(a["gen_ai.response.model"], l["model"]);
            assert_eq!(a["gen_ai.usage.input_tokens"], l["usage"]["input_tokens"]);
            assert_eq!(a["gen_ai.usage.output_tokens"], l["usage"]["output_tokens"]);
            assert_eq!(a["gen_ai.response.finish_reasons"], json!(["tool_calls"]));
            assert_eq!(a["server.address"], "api.openai.com");
            assert_eq!(a["server.port"], 443);
        }
        "tool.call" => {
            assert_eq!(a["gen_ai.operation.name"], "execute_tool");
            assert_eq!(a["gen_ai.tool.name"], e["tool"]["name"]);
            assert_eq!(a["gen_ai.tool.call.id"], e["tool"]["call_id"]);
            assert_eq!(a["aitrail.tool.confidence"], e["tool"]["confidence"]);
        }
        "file.open" => {
            assert_eq!(a["file.path"], e["file"]["path"]);
            assert_eq!(a["error.type"], "EACCES");
        }
        "net.connect" => {
            assert_eq!(a["network.peer.address"], "203.0.113.7");
            assert_eq!(a["network.peer.port"], 8080);
        }
        "process.exit" => assert_eq!(a["process.exit.code"], 2),
        "finding" => {
            assert_eq!(a["security_rule.name"], "file.shadow");
            assert_eq!(a["security_rule.category"], "sensitive_file");
            assert_eq!(a["aitrail.finding.evidence"], e["finding"]["evidence"]);
        }
        _ => {}
    }
}

#[test]
fn structured_body_over_plain_http_to_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&dir.path().join("rx"), None, &json!([]), 0);
    let (dest, _) = build(
        &format!("http://127.0.0.1:{}/v1/logs", rx.port),
        None,
        "compression = \"none\"\nbody = \"map\"\n",
    );
    let events: Vec<Value> = (0..40).map(event).collect();
    runtime().block_on(dest.send(&events)).unwrap();
    let reqs = rx.requests();
    assert_eq!(reqs[0]["content_encoding"], Value::Null);
    let records = rx.records();
    assert_eq!(records.len(), 40);
    // Records are grouped by host: match them by id.
    let by_id: HashMap<&str, &Value> = events
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e))
        .collect();
    for (_, _, rec) in &records {
        let body = plain(&rec["body"]);
        assert_eq!(
            &body,
            by_id[body["id"].as_str().unwrap()],
            "kvlist body is the event"
        );
    }
}

#[test]
fn receiver_answers_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let script = json!([
        {"status": 429, "retry_after": "1", "message": "slow down"},
        {"status": 503, "message": "busy"},
        {"status": 200, "partial_rejected": 2, "message": "2 records too old"},
        {"status": 400, "message": "bad data"},
        {"status": 401, "message": "who are you"},
    ]);
    let rx = Receiver::start(&dir.path().join("rx"), None, &script, 0);
    let (dest, c) = build(&format!("http://127.0.0.1:{}", rx.port), None, "");
    let rt = runtime();
    let a: Vec<Value> = (0..10).map(event).collect();
    let b: Vec<Value> = (10..20).map(event).collect();
    let err = rt.block_on(dest.send(&a)).unwrap_err();
    assert!(
        matches!(&err, ForwardError::Retry(m) if m.contains("429")),
        "{err}"
    );
    // Within Retry-After: no request at all.
    let err = rt.block_on(dest.send(&a)).unwrap_err();
    assert!(err.to_string().contains("Retry-After"), "{err}");
    assert_eq!(rx.requests().len(), 1);
    std::thread::sleep(Duration::from_millis(1100));
    let err = rt.block_on(dest.send(&a)).unwrap_err();
    assert!(
        matches!(&err, ForwardError::Retry(m) if m.contains("503") && m.contains("busy")),
        "{err}"
    );
    rt.block_on(dest.send(&a)).unwrap(); // partial success: sent, 2 counted
    let err = rt.block_on(dest.send(&b)).unwrap_err();
    assert!(
        matches!(&err, ForwardError::Reject(m) if m.contains("bad data")),
        "{err}"
    );
    let err = rt.block_on(dest.send(&b)).unwrap_err();
    assert!(
        matches!(&err, ForwardError::Retry(m) if m.contains("401")),
        "{err}"
    );
    rt.block_on(dest.send(&b)).unwrap();
    let reqs = rx.requests();
    let statuses: Vec<u64> = reqs.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [429, 503, 200, 400, 401, 200]);
    let t = |i: usize| reqs[i]["t"].as_f64().unwrap();
    assert!(t(1) - t(0) >= 1.0, "Retry-After honoured: {}", t(1) - t(0));
    // The partial success's records, for the framework to take out of
    // events_sent; the 400 is the framework's to count.
    assert_eq!(get(&c.events_rejected), 2);
    assert_eq!(get(&c.connects), 1, "one kept-alive connection");
}

#[test]
fn too_large_is_a_rejection_for_the_framework_to_split() {
    let dir = tempfile::tempdir().unwrap();
    let one = {
        let (d, _) = build("http://127.0.0.1:1", None, "compression = \"none\"");
        d.encode(&[event(0)]).len()
    };
    // Room for two events, not four.
    let rx = Receiver::start(&dir.path().join("rx"), None, &json!([]), one * 5 / 2);
    let (dest, c) = build(&format!("http://127.0.0.1:{}", rx.port), None, "");
    let rt = runtime();
    let events: Vec<Value> = (0..4)
        .map(|i| {
            let mut e = event(0);
            e["id"] = json!(crate::support::id(i));
            e
        })
        .collect();
    // 413 refuses the request, not the events: the framework splits the
    // batch (collector/tests/forward/end_to_end.rs sees it through).
    let err = rt.block_on(dest.send(&events)).unwrap_err();
    assert!(
        matches!(&err, ForwardError::Reject(m) if m.contains("413")),
        "{err}"
    );
    rt.block_on(dest.send(&events[..2])).unwrap();
    rt.block_on(dest.send(&events[2..])).unwrap();
    let uids: Vec<String> = rx
        .records()
        .iter()
        .map(|(_, _, r)| {
            attrs(&r["attributes"])["log.record.uid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let want: Vec<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(uids, want, "each once, in order");
    assert_eq!(get(&c.events_rejected), 0);
}
