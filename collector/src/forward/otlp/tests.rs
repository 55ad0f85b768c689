use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value, AnyValue, KeyValue},
    logs::v1::LogRecord,
};
use serde_json::json;

use super::{convert::Notes, *};

fn llm_call() -> Value {
    json!({"v":1,"id":"019ac5f0a1b27c3d8e9f00112233aabb","time":"2026-11-27T12:00:03.141592653Z","kind":"llm.call",
        "host":{"name":"build-7","id":"4c4c4544003510"},"trace_id":"8f14e45fceea167a5a36dedd4bea2543","span_id":"a87ff679a2f3e71d","severity":"info",
        "process":{"pid":4242,"ppid":4100,"uid":1000,"user":"dev","comm":"python3","exe":"/usr/bin/python3.11","args":["python3","agent.py"],"exec_id":"3c59dc048e885024"},
        "llm":{"provider":"azure.openai","operation":"chat","role":"client","server":{"host":"x.openai.azure.com","port":443},"path":"/openai/deployments/d/chat/completions","model":"gpt-4o-mini","stream":false,"status":200,
            "output":{"text":"","finish_reason":"tool_calls","tool_calls":[{"id":"call_1","name":"run_shell","arguments":"{}"}]},
            "usage":{"input_tokens":52,"output_tokens":18},"response_id":"chatcmpl-1","truncated":false}})
}

fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a any_value::Value> {
    r.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

#[test]
fn llm_call_record() {
    let e = llm_call();
    let mut notes = Notes::default();
    let r = convert::log_record(&e, BodyFormat::Json, 7, &mut notes);
    assert_eq!(notes, Notes::default());
    assert_eq!(r.time_unix_nano, 1_795_780_803_141_592_653);
    assert_eq!(r.observed_time_unix_nano, 7);
    assert_eq!(r.severity_number, 9);
    assert_eq!(r.severity_text, "info");
    assert_eq!(r.event_name, "aitrail.llm.call");
    assert_eq!(hex::encode(&r.trace_id), "8f14e45fceea167a5a36dedd4bea2543");
    assert_eq!(hex::encode(&r.span_id), "a87ff679a2f3e71d");
    let Some(any_value::Value::StringValue(body)) = r.body.as_ref().and_then(|b| b.value.as_ref())
    else {
        panic!("body is the JSON text")
    };
    assert_eq!(serde_json::from_str::<Value>(body).unwrap(), e);
    for (k, v) in [
        ("gen_ai.provider.name", s("azure.ai.openai")),
        ("gen_ai.system", s("azure.ai.openai")),
        ("gen_ai.operation.name", s("chat")),
        ("gen_ai.request.model", s("gpt-4o-mini")),
        ("gen_ai.response.model", s("gpt-4o-mini")),
        ("gen_ai.response.id", s("chatcmpl-1")),
        ("gen_ai.usage.input_tokens", any_value::Value::IntValue(52)),
        ("gen_ai.usage.output_tokens", any_value::Value::IntValue(18)),
        ("process.pid", any_value::Value::IntValue(4242)),
        ("process.executable.path", s("/usr/bin/python3.11")),
        ("host.name", s("build-7")),
        ("event.name", s("aitrail.llm.call")),
        ("log.record.uid", s("019ac5f0a1b27c3d8e9f00112233aabb")),
        ("server.address", s("x.openai.azure.com")),
        ("http.response.status_code", any_value::Value::IntValue(200)),
    ] {
        assert_eq!(attr(&r, k), Some(&v), "{k}");
    }
    let Some(any_value::Value::ArrayValue(reasons)) = attr(&r, "gen_ai.response.finish_reasons")
    else {
        panic!("finish_reasons is a string array")
    };
    assert_eq!(
        reasons.values,
        [AnyValue {
            value: Some(s("tool_calls"))
        }]
    );
}

#[test]
fn provider_and_operation_names_follow_semconv() {
    for (ours, theirs) in [
        ("openai", "openai"),
        ("azure.openai", "azure.ai.openai"),
        ("gemini", "gcp.gemini"),
        ("vertex_ai", "gcp.vertex_ai"),
        ("mistral", "mistral_ai"),
        ("xai", "x_ai"),
        ("ollama", "ollama"),
    ] {
        assert_eq!(convert::provider_name(ours), theirs);
    }
    for (ours, theirs) in [
        ("chat", "chat"),
        ("messages", "chat"),
        ("responses", "chat"),
        ("generate_content", "generate_content"),
        ("generate", "text_completion"),
        ("embeddings", "embeddings"),
    ] {
        assert_eq!(convert::operation_name(ours), theirs);
    }
}

#[test]
fn tool_call_and_other_kinds() {
    let mut n = Notes::default();
    let tool = json!({"kind":"tool.call","time":"2026-11-27T12:00:04Z","severity":"low","tool":{"name":"read_file","call_id":"2","confidence":0.9,
        "mcp":{"method":"tools/call","session":"s-1","server":{"host":"mcp.example.com","port":443}}}});
    let r = convert::log_record(&tool, BodyFormat::Json, 0, &mut n);
    assert_eq!(attr(&r, "gen_ai.operation.name"), Some(&s("execute_tool")));
    assert_eq!(attr(&r, "gen_ai.tool.name"), Some(&s("read_file")));
    assert_eq!(attr(&r, "gen_ai.tool.call.id"), Some(&s("2")));
    assert_eq!(attr(&r, "mcp.session.id"), Some(&s("s-1")));
    assert_eq!(r.severity_number, 13);
    let exit = json!({"kind":"process.exit","exec":{"filename":"/usr/bin/ls","exit_code":2}});
    let r = convert::log_record(&exit, BodyFormat::Json, 0, &mut n);
    assert_eq!(
        attr(&r, "process.exit.code"),
        Some(&any_value::Value::IntValue(2))
    );
    let open = json!({"kind":"file.open","severity":"critical","file":{"path":"/etc/shadow","result":-13,"error":"EACCES"}});
    let r = convert::log_record(&open, BodyFormat::Json, 0, &mut n);
    assert_eq!(attr(&r, "file.path"), Some(&s("/etc/shadow")));
    assert_eq!(attr(&r, "error.type"), Some(&s("EACCES")));
    assert_eq!(r.severity_number, 21);
    let finding = json!({"kind":"finding","severity":"high","finding":{"rule":"file.shadow","class":"sensitive_file","title":"t","evidence":["a","b"]}});
    let r = convert::log_record(&finding, BodyFormat::Json, 0, &mut n);
    assert_eq!(attr(&r, "security_rule.name"), Some(&s("file.shadow")));
    assert_eq!(
        attr(&r, "security_rule.category"),
        Some(&s("sensitive_file"))
    );
    assert_eq!(r.severity_number, 17);
    // Missing time: 0 and counted.
    assert_eq!(n.bad_times, 3);
}

#[test]
fn bad_ids_are_left_out_and_counted() {
    let mut e = llm_call();
    e["trace_id"] = json!("not hex at all, and not 32 chars");
    e["span_id"] = json!("0000000000000000");
    let mut n = Notes::default();
    let r = convert::log_record(&e, BodyFormat::Json, 0, &mut n);
    assert!(r.trace_id.is_empty() && r.span_id.is_empty());
    assert_eq!(n.bad_ids, 2);
}

#[test]
fn structured_body() {
    let e =
        json!({"kind":"x","big":u64::MAX,"neg":-3,"f":1.5,"n":null,"l":[true,"a"],"o":{"k":"v"}});
    let r = convert::log_record(&e, BodyFormat::Map, 0, &mut Notes::default());
    let Some(any_value::Value::KvlistValue(kv)) = r.body.and_then(|b| b.value) else {
        panic!("map body")
    };
    let get = |k: &str| {
        kv.values
            .iter()
            .find(|x: &&KeyValue| x.key == k)
            .and_then(|x| x.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(get("big"), Some(s(&u64::MAX.to_string())));
    assert_eq!(get("neg"), Some(any_value::Value::IntValue(-3)));
    assert_eq!(get("f"), Some(any_value::Value::DoubleValue(1.5)));
    assert_eq!(get("n"), None);
    assert!(matches!(get("l"), Some(any_value::Value::ArrayValue(a)) if a.values.len() == 2));
    assert!(matches!(get("o"), Some(any_value::Value::KvlistValue(o)) if o.values[0].key == "k"));
}

#[test]
fn one_resource_per_host_in_order() {
    let mut a = llm_call();
    let mut b = llm_call();
    b["host"] = json!({"name":"other","id":"2"});
    let mut c = llm_call();
    a["id"] = json!("a");
    b["id"] = json!("b");
    c["id"] = json!("c");
    let req: ExportLogsServiceRequest =
        convert::request(&[a, b, c], BodyFormat::Json, 0, &mut Notes::default());
    assert_eq!(req.resource_logs.len(), 2);
    let host = |i: usize| {
        let res = req.resource_logs[i].resource.as_ref().unwrap();
        res.attributes
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.clone().and_then(|v| v.value).unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        host(0),
        [
            ("service.name".to_owned(), s("aitrail")),
            ("host.name".to_owned(), s("build-7")),
            ("host.id".to_owned(), s("4c4c4544003510")),
        ]
    );
    let uids = |i: usize| {
        req.resource_logs[i].scope_logs[0]
            .log_records
            .iter()
            .map(|r| attr(r, "log.record.uid").cloned().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(uids(0), [s("a"), s("c")]);
    assert_eq!(uids(1), [s("b")]);
    let scope = req.resource_logs[0].scope_logs[0].scope.as_ref().unwrap();
    assert_eq!(scope.name, "aitrail");
    assert_eq!(req.resource_logs[0].schema_url, convert::SCHEMA_URL);
    // It round-trips through the protobuf encoding.
    let back = ExportLogsServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back, req);
}

#[test]
fn retry_after_values() {
    assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
        Some(Duration::ZERO),
        "a date in the past: now"
    );
    let later = (chrono::Utc::now() + chrono::Duration::seconds(120))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let d = parse_retry_after(&later).unwrap();
    assert!(
        d > Duration::from_secs(110) && d <= Duration::from_mins(2),
        "{d:?}"
    );
    assert_eq!(parse_retry_after("soon"), None);
}

/// A `[[forward]]` table through the framework's validation and `prepare`,
/// built.
fn build(table: &str) -> Result<OtlpDestination, String> {
    let mut spec = toml::from_str::<crate::forward::ForwardSection>(table)
        .map_err(|e| e.to_string())?
        .validate()
        .map_err(|e| e.to_string())?;
    crate::forward::prepare(&mut spec).map_err(|e| e.to_string())?;
    OtlpDestination::new(&spec, Arc::default()).map_err(|e| e.to_string())
}

fn table(url: &str, extra: &str) -> String {
    format!("name = \"o\"\ntype = \"otlp\"\nurl = \"{url}\"\n{extra}\n")
}

#[test]
fn endpoints_and_headers() {
    let d = build(&table("http://127.0.0.1:4318", "")).unwrap();
    assert_eq!(d.path, "/v1/logs");
    assert_eq!(d.client.target().authority, "127.0.0.1:4318");
    assert_eq!(d.options.compression, Compression::Gzip, "gzip by default");
    let d = build(&table("http://[::1]:4318/custom/logs", "")).unwrap();
    assert_eq!(d.path, "", "the URL's own path");
    assert_eq!(d.client.target().base_path, "/custom/logs");
    assert_eq!(d.client.target().authority, "[::1]:4318");
    // `endpoint` is the same key as `url`.
    let d = build(
        "name = \"o\"\ntype = \"otlp\"\nendpoint = \"http://localhost:4318/v1/logs\"\nbody = \"map\"\ncompression = \"none\"\n",
    )
    .unwrap();
    assert_eq!(d.options.body, BodyFormat::Map);
    assert_eq!(d.options.compression, Compression::None);
    let err = |t: String| build(&t).map(|_| ()).unwrap_err();
    assert!(err(table("http://otel.example.com:4318", "")).contains("loopback"));
    assert!(err(table("ftp://x/", "")).contains("https://"));
    assert!(err(table("https://x/v1/logs?a=b", "")).contains("query"));
    assert!(err(table("http://127.0.0.1:1", "ca_file = \"/x.pem\"")).contains("https://"));
    assert!(err(table(
        "http://127.0.0.1:1",
        "headers = { \"content-type\" = \"text/plain\" }"
    ))
    .contains("set by the forwarder"));
    assert!(err(table(
        "http://127.0.0.1:1",
        "headers = { \"authorization\" = \"Basic eA==\" }"
    ))
    .contains("set by the forwarder"));
    assert!(err(table(
        "http://127.0.0.1:1",
        "headers = { \"bad header\" = \"x\" }"
    ))
    .contains("header name"));
    assert!(err(table(
        "http://127.0.0.1:1",
        "headers = { \"x-a\" = \"a\\nb\" }"
    ))
    .contains("header value"));
    assert!(err(table("http://127.0.0.1:1", "format = \"ocsf\"")).contains("format"));
    let d = build(&table(
        "http://127.0.0.1:1",
        "token = \"t\"\nheaders = { \"x-scope-orgid\" = \"tenant-1\" }",
    ))
    .unwrap();
    let h: Vec<(&str, &str)> = d
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        h,
        [
            ("content-type", "application/x-protobuf"),
            ("authorization", "Bearer t"),
            ("x-scope-orgid", "tenant-1")
        ]
    );
}

#[test]
fn gzip_body_decodes_to_the_request() {
    use std::io::Read as _;
    let d = build(&table("http://127.0.0.1:1", "")).unwrap();
    let body = d.encode(&[llm_call()]);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(body.as_ref())
        .read_to_end(&mut raw)
        .unwrap();
    let req = ExportLogsServiceRequest::decode(raw.as_slice()).unwrap();
    assert_eq!(req.resource_logs[0].scope_logs[0].log_records.len(), 1);
}
