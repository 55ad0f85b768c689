//! The OCSF and ECS renderings, checked against the real schemas: every
//! example of docs/events.md and variants of them (failures, unix sockets,
//! IPv6, signals, errors, MCP calls, ATLAS techniques…) go through
//! `Format::Ocsf` and `Format::Ecs`, and the results through
//! `tests/forward/validate_ocsf.py` (OCSF 1.8.0's own export, via the `PyPI`
//! package ocsf-json-schema, with jsonschema) and
//! `tests/forward/validate_ecs.js` (the ECS field definitions of the npm
//! package @elastic/ecs). tests/setup-test-deps.sh installs both.

use std::{path::Path, process::Command};

use aitrail_collector::forward::{ecs, format::Format, ocsf};
use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The JSON lines of the `json` code blocks of docs/events.md.
fn doc_examples() -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("docs/events.md")).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("```json") {
            inside = true;
        } else if line.starts_with("```") {
            inside = false;
        } else if inside && line.starts_with('{') {
            out.push(serde_json::from_str(line).expect("docs/events.md example is JSON"));
        }
    }
    assert!(out.len() >= 9, "found {} examples", out.len());
    out
}

/// Deep-merges `patch` into `base` (`null` removes a member).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn example(all: &[Value], kind: &str) -> Value {
    all.iter()
        .find(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} example"))
        .clone()
}

fn variant(all: &[Value], kind: &str, n: u32, patch: &Value) -> Value {
    let mut e = example(all, kind);
    e["id"] = format!("variant-{kind}-{n}").into();
    merge(&mut e, patch);
    e
}

/// The examples and their variants.
fn corpus() -> Vec<Value> {
    let ex = doc_examples();
    let mut all = ex.clone();
    let v = |kind, n, patch: Value| variant(&ex, kind, n, &patch);
    all.extend([
        v("file.open", 1, json!({"file": {"path": "/srv/app", "flags": ["O_RDONLY", "O_DIRECTORY"], "result": 4, "error": null}, "severity": "low"})),
        v("file.open", 2, json!({"file": {"path": "/home/dev/.aws/credentials", "flags": ["O_WRONLY", "O_CREAT", "O_TRUNC"], "result": -2, "error": "ENOENT"}, "process": {"user": null}})),
        v("net.connect", 1, json!({"net": {"family": "ipv6", "address": "2001:db8::7", "port": 443, "result": -111, "error": "ECONNREFUSED"}})),
        v("net.connect", 2, json!({"net": {"family": "unix", "address": "/run/docker.sock", "port": 0, "result": 0}})),
        v("net.connect", 3, json!({"net": {"family": "ipv4", "address": "198.51.100.9", "port": 8443, "result": -115, "error": "EINPROGRESS"}, "severity": "medium"})),
        v("net.connect", 4, json!({"net": {"family": "af_40", "address": "vsock:2:1024", "port": 0, "result": 0}})),
        v("process.exit", 1, json!({"exec": {"exit_code": null, "signal": 9}})),
        v("process.exit", 2, json!({"exec": {"exit_code": 2}})),
        v("process.exec", 1, json!({"exec": {"args_truncated": true}, "process": {"user": null, "parent_exec_id": null}})),
        v("llm.call", 1, json!({"llm": {"model": null, "status": null, "output": {"text": "", "finish_reason": null, "tool_calls": []}, "usage": {}, "latency_ms": null, "ttft_ms": null, "truncated": true}})),
        v("llm.call", 2, json!({"llm": {"provider": "anthropic", "operation": "messages", "server": {"host": "api.anthropic.com", "port": 443}, "path": "/v1/messages", "model": "claude-sonnet-4-5", "stream": true, "status": 429, "error": "rate_limit_error: Number of request tokens has exceeded your per-minute rate limit", "output": {"text": ""}}, "severity": "low"})),
        v("llm.call", 3, json!({"llm": {"provider": "openai", "operation": "embeddings", "path": "/v1/embeddings", "model": "text-embedding-3-small", "messages": [], "tools": [], "input_count": 3, "output": {"text": ""}, "usage": {"input_tokens": 12}}})),
        v("llm.call", 4, json!({"llm": {"provider": "openai", "operation": "responses", "path": "/v1/responses", "response_id": "resp_123", "previous_response_id": "resp_122", "usage": {"input_tokens": 10, "output_tokens": 40, "reasoning_tokens": 32}, "output": {"reasoning": "thinking…", "finish_reason": "completed"}}})),
        v("tool.call", 1, json!({"tool": {"is_error": true, "result": "permission denied", "effects": [], "confidence": 0}})),
        v("tool.call", 2, json!({"tool": {"result": null, "truncated": true}, "process": null})),
        v("finding", 1, json!({"severity": "critical", "finding": {"rule": "inj.tool_result", "title": "Injection in a tool result", "class": "prompt_injection", "mitre": ["AML.T0051.001", "AML.T0051"], "detail": "instructions in a tool result", "verdict": {"source": "llm-guard", "label": "injection", "score": 0.97}}})),
        v("finding", 2, json!({"severity": "medium", "finding": {"rule": "corr.claimed_success", "title": "Claimed success, the kernel saw a failure", "class": "claimed_vs_actual", "mitre": null, "matches": null}, "process": {"pid": 4242, "ppid": 4100, "uid": 1000, "user": "dev", "comm": "python3", "exe": "/usr/bin/python3.11", "args": ["python3", "agent.py"], "exec_id": "3c59dc048e885024"}})),
        v("finding", 3, json!({"severity": "info", "finding": {"rule": "capture.blind_spot", "title": "No plaintext from a TLS client", "class": "blind_spot", "mitre": [], "evidence": ["019ac5f0a1b27c3d8e9f00112233aac0"]}})),
    ]);
    all
}

fn write_ndjson(dir: &Path, name: &str, docs: &[Value]) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut text = String::new();
    for d in docs {
        text.push_str(&serde_json::to_string(d).unwrap());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn run_checked(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: cannot start ({e}); tests/setup-test-deps.sh installs it")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn ocsf_events_validate_against_the_ocsf_1_8_0_schema() {
    let corpus = corpus();
    let mut rendered = Vec::new();
    for ev in &corpus {
        if ev["kind"] == "agent.health" {
            assert!(
                Format::Ocsf.render(ev).is_err(),
                "agent.health has no OCSF class"
            );
            continue;
        }
        rendered.push(
            Format::Ocsf
                .render(ev)
                .unwrap_or_else(|e| panic!("{}: {e}", ev["id"])),
        );
    }
    // What a SIEM keys on, per kind.
    for (ev, o) in corpus
        .iter()
        .filter(|e| e["kind"] != "agent.health")
        .zip(&rendered)
    {
        let (class, activity) = match ev["kind"].as_str().unwrap() {
            "process.exec" => (1007, 1),
            "process.exit" => (1007, 2),
            "file.open" => (1001, 14),
            "net.connect" => (4001, 1),
            "llm.call" => (6003, 1),
            "tool.call" => (6003, 99),
            "finding" => (2004, 1),
            k => panic!("unexpected kind {k}"),
        };
        assert_eq!(o["class_uid"], class, "{}", ev["id"]);
        assert_eq!(o["activity_id"], activity);
        assert_eq!(o["type_uid"], class * 100 + activity);
        assert_eq!(o["metadata"]["uid"], ev["id"]);
        assert_eq!(o["metadata"]["version"], ocsf::VERSION);
        assert_eq!(o["metadata"]["product"]["name"], "aitrail");
        let sev = match ev["severity"].as_str().unwrap() {
            "info" => 1,
            "low" => 2,
            "medium" => 3,
            "high" => 4,
            "critical" => 5,
            s => panic!("severity {s}"),
        };
        assert_eq!(o["severity_id"], sev);
        let ns = chrono::DateTime::parse_from_rfc3339(ev["time"].as_str().unwrap())
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap();
        assert_eq!(o["time"], ns / 1_000_000, "time is epoch ms");
        assert!(
            o["observables"].as_array().is_some_and(|a| !a.is_empty()) || ev["kind"] == "finding",
            "{}: observables",
            ev["id"]
        );
    }
    let llm = &rendered[corpus.iter().position(|e| e["kind"] == "llm.call").unwrap()];
    assert_eq!(
        llm["ai_model"],
        json!({"name": "gpt-4o-mini", "ai_provider": "openai"})
    );
    assert_eq!(llm["message_context"]["prompt_tokens"], 52);
    assert_eq!(llm["message_context"]["total_tokens"], 70);
    assert_eq!(
        llm["metadata"]["profiles"],
        json!(["host", "ai_operation", "trace"])
    );
    assert_eq!(llm["trace"]["uid"], "8f14e45fceea167a5a36dedd4bea2543");
    let finding = &rendered[corpus.iter().position(|e| e["kind"] == "finding").unwrap()];
    assert_eq!(finding["finding_info"]["analytic"]["uid"], "file.shadow");
    assert_eq!(
        finding["finding_info"]["attacks"][0],
        json!({"technique": {"uid": "T1003"}, "sub_technique": {"uid": "T1003.008"}})
    );

    let dir = tempfile::tempdir().unwrap();
    let file = write_ndjson(dir.path(), "ocsf.ndjson", &rendered);
    let python = std::env::var("AITRAIL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = run_checked(
        Command::new(python)
            .arg(root().join("tests/forward/validate_ocsf.py"))
            .arg(ocsf::VERSION)
            .arg(&file),
        "validate_ocsf.py",
    );
    assert!(
        out.contains(&format!("validated {} events, 0 invalid", rendered.len())),
        "{out}"
    );
}

#[test]
fn the_ocsf_validator_catches_a_bad_event() {
    // The oracle is only as good as its ability to say no.
    let ex = doc_examples();
    let mut bad = Format::Ocsf.render(&example(&ex, "file.open")).unwrap();
    bad["file"]["bogus"] = 1.into();
    bad["type_uid"] = 100_199.into();
    let mut no_actor = Format::Ocsf.render(&example(&ex, "process.exec")).unwrap();
    no_actor.as_object_mut().unwrap().remove("actor");
    let dir = tempfile::tempdir().unwrap();
    let file = write_ndjson(dir.path(), "bad.ndjson", &[bad, no_actor]);
    let python = std::env::var("AITRAIL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .arg(root().join("tests/forward/validate_ocsf.py"))
        .arg(ocsf::VERSION)
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("validated 2 events, 2 invalid"), "{text}");
    assert!(
        text.contains("bogus") && text.contains("type_uid") && text.contains("actor"),
        "{text}"
    );
}

#[test]
fn ecs_documents_validate_against_ecs_field_definitions() {
    let corpus = corpus();
    let docs: Vec<Value> = corpus
        .iter()
        .map(|ev| {
            Format::Ecs
                .render(ev)
                .unwrap_or_else(|e| panic!("{}: {e}", ev["id"]))
        })
        .collect();
    let llm = &docs[corpus.iter().position(|e| e["kind"] == "llm.call").unwrap()];
    assert_eq!(llm["gen_ai"]["request"]["model"], "gpt-4o-mini");
    assert_eq!(llm["gen_ai"]["usage"]["input_tokens"], 52);
    assert_eq!(llm["gen_ai"]["system"], "openai");
    assert_eq!(llm["event"]["duration"], 812_400_000);
    assert_eq!(llm["trace"]["id"], "8f14e45fceea167a5a36dedd4bea2543");
    assert_eq!(llm["ecs"]["version"], ecs::VERSION);
    let exec = &docs[corpus
        .iter()
        .position(|e| e["kind"] == "process.exec")
        .unwrap()];
    assert_eq!(exec["event"]["category"], json!(["process"]));
    assert_eq!(exec["event"]["type"], json!(["start"]));
    assert_eq!(exec["process"]["entity_id"], "8e296a067a375633");
    assert_eq!(exec["process"]["parent"]["pid"], 4242);
    let finding = &docs[corpus.iter().position(|e| e["kind"] == "finding").unwrap()];
    assert_eq!(finding["event"]["kind"], "alert");
    assert_eq!(finding["rule"]["id"], "file.shadow");
    assert_eq!(finding["threat"]["technique"]["id"], json!(["T1003"]));
    assert_eq!(
        finding["threat"]["technique"]["subtechnique"]["id"],
        json!(["T1003.008"])
    );
    let net = &docs[corpus
        .iter()
        .position(|e| e["kind"] == "net.connect")
        .unwrap()];
    assert_eq!(net["destination"]["ip"], "203.0.113.7");
    assert_eq!(net["destination"]["port"], 8080);

    let dir = tempfile::tempdir().unwrap();
    let file = write_ndjson(dir.path(), "ecs.ndjson", &docs);
    let out = run_checked(
        Command::new("node")
            .arg(root().join("tests/forward/validate_ecs.js"))
            .arg(&file),
        "validate_ecs.js",
    );
    assert!(
        out.contains(&format!(
            "validated {} documents, 0 invalid (ECS {})",
            docs.len(),
            ecs::VERSION
        )),
        "{out}"
    );
}

#[test]
fn the_ecs_validator_catches_a_bad_document() {
    let ex = doc_examples();
    let mut bad = Format::Ecs.render(&example(&ex, "net.connect")).unwrap();
    bad["destination"]["ip"] = "not an ip".into();
    bad["event"]["type"] = json!(["creation"]);
    bad["prompt"] = "a field ECS does not have".into();
    let dir = tempfile::tempdir().unwrap();
    let file = write_ndjson(dir.path(), "bad.ndjson", &[bad]);
    let out = Command::new("node")
        .arg(root().join("tests/forward/validate_ecs.js"))
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("destination.ip") && text.contains("creation") && text.contains("prompt"),
        "{text}"
    );
}
