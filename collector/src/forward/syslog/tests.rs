use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::{format::Settings, *};

fn settings() -> Settings {
    Settings {
        facility: 16,
        sd_id: "aitrail@32473".into(),
        max_message_bytes: 64 * 1024,
    }
}

fn llm_call() -> Value {
    json!({"v":1,"id":"019ac5f0a1b27c3d8e9f00112233aabb","time":"2026-11-27T12:00:03.141592653Z","kind":"llm.call",
        "host":{"name":"build-7","id":"4c4c4544003510"},"trace_id":"8f14e45fceea167a5a36dedd4bea2543","span_id":"a87ff679a2f3e71d","severity":"info",
        "process":{"pid":4242,"ppid":4100,"uid":1000,"user":"dev","comm":"python3","exe":"/usr/bin/python3.11","args":["python3","agent.py"],"exec_id":"3c59dc048e885024"},
        "llm":{"provider":"openai","operation":"chat","role":"client","server":{"host":"api.openai.com","port":443},"path":"/v1/chat/completions","model":"gpt-4o-mini","stream":false,"status":200,
            "system":{"text":"You are a coding agent.","sha256":"5b3c"},"messages":[{"role":"user","content":"List the files in /etc"}],"tools":["run_shell"],
            "output":{"text":"","finish_reason":"tool_calls","tool_calls":[{"id":"call_1","name":"run_shell","arguments":"{\"cmd\":\"ls /etc\"}"}]},
            "usage":{"input_tokens":52,"output_tokens":18},"truncated":false}})
}

/// Splits an RFC 5424 message into its header fields, SD and MSG.
fn parse(msg: &[u8]) -> (Vec<String>, String, Vec<u8>) {
    let text = std::str::from_utf8(msg).expect("messages are UTF-8");
    let mut fields = Vec::new();
    let mut rest = text;
    for _ in 0..6 {
        let (f, r) = rest.split_once(' ').expect("six header fields");
        fields.push(f.to_owned());
        rest = r;
    }
    let (sd, msg) = if let Some(r) = rest.strip_prefix("- ") {
        ("-".to_owned(), r)
    } else {
        let end = sd_end(rest);
        (rest[..end].to_owned(), &rest[end + 1..])
    };
    (fields, sd, msg.as_bytes().to_vec())
}

/// End (exclusive) of the SD-ELEMENTs at the start of `s`.
fn sd_end(s: &str) -> usize {
    let b = s.as_bytes();
    let (mut i, mut in_value) = (0, false);
    while i < b.len() {
        match b[i] {
            b'\\' if in_value => i += 1,
            b'"' => in_value = !in_value,
            b']' if !in_value && b.get(i + 1) != Some(&b'[') => return i + 1,
            _ => {}
        }
        i += 1;
    }
    panic!("unterminated SD: {s}");
}

/// SD params, unescaped (RFC 5424 §6.3.3: `\"`, `\\`, `\]`; any other
/// backslash is a plain character).
fn sd_params(sd: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let inner = sd.strip_prefix('[').unwrap().strip_suffix(']').unwrap();
    let (_, mut rest) = inner.split_once(' ').unwrap_or((inner, ""));
    while !rest.is_empty() {
        let (name, r) = rest.split_once("=\"").unwrap();
        let mut value = String::new();
        let mut chars = r.char_indices();
        let mut end = r.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.clone().next() {
                    Some((_, n @ ('"' | '\\' | ']'))) => {
                        value.push(n);
                        chars.next();
                    }
                    _ => value.push('\\'),
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((name.trim_start().to_owned(), value));
        rest = r[end..].trim_start();
    }
    out
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn rfc5424_header_sd_and_msg() {
    let e = llm_call();
    let m = format::rfc5424(&e, &settings());
    assert!(!m.trimmed && !m.truncated);
    let (h, sd, msg) = parse(&m.bytes);
    assert_eq!(
        h,
        [
            "<134>1",
            "2026-11-27T12:00:03.141592Z",
            "build-7",
            "aitrail",
            "4242",
            "llm.call"
        ]
    );
    let p = sd_params(&sd);
    assert!(sd.starts_with("[aitrail@32473 id=\"019ac5f0a1b27c3d8e9f00112233aabb\""));
    assert_eq!(param(&p, "model"), Some("gpt-4o-mini"));
    assert_eq!(param(&p, "provider"), Some("openai"));
    assert_eq!(param(&p, "input_tokens"), Some("52"));
    assert_eq!(param(&p, "exe"), Some("/usr/bin/python3.11"));
    assert_eq!(&msg[..3], b"\xEF\xBB\xBF", "MSG starts with the BOM");
    let back: Value = serde_json::from_slice(&msg[3..]).unwrap();
    assert_eq!(back, e, "MSG is the event as stored");
}

#[test]
fn pri_follows_facility_and_severity() {
    let mut s = settings();
    let mut e = llm_call();
    for (sev, pri) in [
        ("info", 134),
        ("low", 133),
        ("medium", 132),
        ("high", 131),
        ("critical", 130),
        ("bogus", 134),
    ] {
        e["severity"] = json!(sev);
        assert!(
            format::header(&e, &s).starts_with(&format!("<{pri}>1 ")),
            "{sev}"
        );
    }
    s.facility = 10; // authpriv
    e["severity"] = json!("critical");
    assert!(format::header(&e, &s).starts_with("<82>1 "));
}

#[test]
fn header_fields_are_printable_ascii_or_nil() {
    let e = json!({"id":"x","kind":"a kind with spaces and more than thirty-two characters","time":"not a time",
        "host":{"name":"héte\u{7f}\n"},"process":{"pid":"12"}});
    let h = format::header(&e, &settings());
    assert_eq!(
        h,
        "<134>1 - h_te__ aitrail - a_kind_with_spaces_and_more_than "
    );
    let h = format::header(&json!({}), &settings());
    assert_eq!(h, "<134>1 - - aitrail - - ");
}

#[test]
fn sd_values_are_escaped_and_bounded() {
    let mut e = llm_call();
    let nasty = "/tmp/a\"b\\c]d e=f\n日本語 é 🦀";
    e["process"]["exe"] = json!(nasty);
    e["process"]["user"] = json!("]".repeat(1000));
    let m = format::rfc5424(&e, &settings());
    let (_, sd, _) = parse(&m.bytes);
    assert!(
        sd.contains(r#"exe="/tmp/a\"b\\c\]d e=f�日本語 é 🦀""#),
        "{sd}"
    );
    let p = sd_params(&sd);
    assert_eq!(
        param(&p, "exe"),
        Some("/tmp/a\"b\\c]d e=f\u{FFFD}日本語 é 🦀")
    );
    // 1000 `]` escape to 2000 bytes: cut at 256 escaped bytes, whole escapes.
    assert_eq!(param(&p, "user"), Some("]".repeat(128).as_str()));
}

#[test]
fn kind_specific_sd_params() {
    let cases = [
        (
            json!({"kind":"tool.call","tool":{"name":"run_shell","call_id":"call_1","confidence":0.95}}),
            vec![
                ("tool", "run_shell"),
                ("call_id", "call_1"),
                ("confidence", "0.95"),
            ],
        ),
        (
            json!({"kind":"process.exit","exec":{"filename":"/usr/bin/ls","exit_code":2}}),
            vec![("filename", "/usr/bin/ls"), ("exit_code", "2")],
        ),
        (
            json!({"kind":"file.open","file":{"path":"/etc/shadow","result":-13,"error":"EACCES"}}),
            vec![
                ("path", "/etc/shadow"),
                ("result", "-13"),
                ("error", "EACCES"),
            ],
        ),
        (
            json!({"kind":"net.connect","net":{"address":"203.0.113.7","port":8080,"result":0}}),
            vec![
                ("address", "203.0.113.7"),
                ("port", "8080"),
                ("result", "0"),
            ],
        ),
        (
            json!({"kind":"finding","severity":"high","finding":{"rule":"file.shadow","class":"sensitive_file","title":"An agent's process opened /etc/shadow"}}),
            vec![
                ("severity", "high"),
                ("rule", "file.shadow"),
                ("class", "sensitive_file"),
                ("title", "An agent's process opened /etc/shadow"),
            ],
        ),
    ];
    for (e, want) in cases {
        let got = format::sd_params(&e);
        for (k, v) in want {
            assert!(
                got.iter().any(|(n, x)| *n == k && x == v),
                "{k}={v} missing in {got:?}"
            );
        }
    }
}

#[test]
fn oversized_llm_call_leaves_the_history_out() {
    let mut e = llm_call();
    let big = "x".repeat(100 * 1024);
    e["llm"]["messages"] = json!([{"role":"user","content":big}]);
    let m = format::rfc5424(&e, &settings());
    assert!(m.trimmed && !m.truncated);
    assert!(m.bytes.len() <= 64 * 1024);
    let (_, sd, msg) = parse(&m.bytes);
    assert_eq!(param(&sd_params(&sd), "omitted"), Some("llm.messages"));
    let back: Value = serde_json::from_slice(&msg[3..]).expect("still valid JSON");
    let mut want = e.clone();
    want["llm"].as_object_mut().unwrap().remove("messages");
    assert_eq!(back, want);
}

#[test]
fn oversized_event_without_bulky_parts_is_cut() {
    let mut e = llm_call();
    e["kind"] = json!("file.open");
    e["file"] = json!({"path": "é".repeat(40 * 1024), "flags": ["O_RDONLY"], "result": 3});
    let full = serde_json::to_string(&e).unwrap();
    let m = format::rfc5424(&e, &settings());
    assert!(m.truncated && !m.trimmed);
    assert!(m.bytes.len() <= 64 * 1024 && m.bytes.len() > 64 * 1024 - 4);
    let (_, sd, msg) = parse(&m.bytes);
    assert_eq!(
        param(&sd_params(&sd), "truncated"),
        Some(full.len().to_string().as_str())
    );
    let msg = std::str::from_utf8(&msg[3..]).expect("cut on a character boundary");
    assert!(full.starts_with(msg));
}

#[test]
fn octet_counting_frame() {
    let mut out = Vec::new();
    format::frame(b"hello", &mut out);
    format::frame("é".as_bytes(), &mut out);
    assert_eq!(out, b"5 hello2 \xC3\xA9");
}

#[test]
fn cef_message_has_the_syslog_header_and_no_bom() {
    let e = llm_call();
    let m = format::cef(&e, &settings(), "1.2.3");
    let (h, sd, msg) = parse(&m.bytes);
    assert_eq!(h[5], "llm.call");
    assert_eq!(sd, "-");
    let msg = String::from_utf8(msg).unwrap();
    assert!(
        msg.starts_with("CEF:0|aitrail|aitrail|1.2.3|llm.call|LLM chat gpt-4o-mini|1|"),
        "{msg}"
    );
    // A line too long is cut, never inside an escape.
    let mut e = e;
    e["llm"]["error"] = json!("\\".repeat(70_000));
    e["trace_id"] = json!("=".repeat(70_000));
    for max in [8192, 8193, 8194, 8195] {
        let s = Settings {
            max_message_bytes: max,
            ..settings()
        };
        let m = format::cef(&e, &s, "1");
        assert!(m.truncated);
        assert!(m.bytes.len() <= max);
        let trailing = m.bytes.iter().rev().take_while(|b| **b == b'\\').count();
        assert_eq!(trailing % 2, 0, "max {max}");
    }
}

// ---------------------------------------------------------------- config

/// How the framework's `[[forward]]` table can embed the configs.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Embedded {
    Syslog(SyslogConfig),
    Cef(SyslogConfig),
    Otlp(crate::forward::otlp::OtlpConfig),
}

#[derive(Debug, serde::Deserialize)]
struct File {
    forward: Vec<Embedded>,
}

#[test]
fn configs_embed_in_a_tagged_forward_table() {
    let f: File = toml::from_str(
        r#"
        [[forward]]
        type = "syslog"
        address = "siem.example.com:6514"
        ca_file = "/etc/aitrail/siem-ca.pem"
        facility = "authpriv"

        [[forward]]
        type = "cef"
        address = "127.0.0.1:1514"
        transport = "tcp"

        [[forward]]
        type = "otlp"
        endpoint = "https://otel.example.com:4318/v1/logs"
        compression = "none"
        body = "map"
        "#,
    )
    .unwrap();
    assert_eq!(f.forward.len(), 3);
    let Embedded::Syslog(s) = &f.forward[0] else {
        panic!("{:?}", f.forward[0])
    };
    assert_eq!(s.facility, "authpriv");
    assert_eq!(s.transport, Transport::Tls);
    assert_eq!(s.max_message_bytes, 65536);
    assert_eq!(s.enterprise_id, "32473");
    let Embedded::Cef(c) = &f.forward[1] else {
        panic!()
    };
    assert_eq!(c.transport, Transport::Tcp);
    assert!(SyslogDestination::cef(c).is_ok());
    let Embedded::Otlp(o) = &f.forward[2] else {
        panic!()
    };
    assert_eq!(o.compression, crate::forward::otlp::Compression::None);
    assert_eq!(o.body, crate::forward::otlp::BodyFormat::Map);
    let unknown =
        toml::from_str::<File>("[[forward]]\ntype = \"syslog\"\naddress = \"h:1\"\nbogus = 1\n");
    assert!(unknown.is_err(), "unknown keys are refused");
}

#[test]
fn example_config_entries_parse() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/collector.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let (_, section) = text
        .split_once("# --- Forwarders: syslog")
        .expect("the forwarders section of config/collector.toml");
    // Uncomment the entries (`# key = …`), not the optional keys (`# # …`)
    // nor the prose.
    let toml_text = section
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| {
            l.starts_with("[[forward]]")
                || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
        })
        .fold(String::new(), |mut t, l| {
            t.push_str(l);
            t.push('\n');
            t
        });
    let f: File = toml::from_str(&toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
    assert_eq!(f.forward.len(), 3);
    assert!(
        matches!(&f.forward[0], Embedded::Syslog(s) if s.replay_bytes == default_replay_bytes())
    );
    assert!(matches!(&f.forward[1], Embedded::Cef(_)));
    assert!(matches!(&f.forward[2], Embedded::Otlp(o) if o.token_file.is_some()));
}

#[test]
fn bad_configs_are_refused() {
    let base = SyslogConfig {
        address: "127.0.0.1:6514".into(),
        transport: Transport::Tcp,
        server_name: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
        facility: default_facility(),
        enterprise_id: default_enterprise_id(),
        max_message_bytes: default_max_message_bytes(),
        timeout_ms: default_timeout_ms(),
        replay_bytes: default_replay_bytes(),
    };
    assert!(SyslogDestination::syslog(&base).is_ok());
    let bad = |f: &dyn Fn(&mut SyslogConfig)| {
        let mut c = base.clone();
        f(&mut c);
        SyslogDestination::syslog(&c)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    assert!(bad(&|c| c.address = "10.1.2.3:514".into()).contains("loopback"));
    assert!(bad(&|c| c.address = "nohost".into()).contains("address"));
    assert!(bad(&|c| c.facility = "local9".into()).contains("facility"));
    assert!(bad(&|c| c.enterprise_id = "aitrail".into()).contains("enterprise_id"));
    assert!(bad(&|c| c.enterprise_id = "1..2".into()).contains("enterprise_id"));
    assert!(bad(&|c| c.max_message_bytes = 2048).contains("max_message_bytes"));
    assert!(bad(&|c| c.timeout_ms = 0).contains("timeout_ms"));
    assert!(bad(&|c| c.ca_file = Some("/x".into())).contains("tls"));
    let e = bad(&|c| {
        c.transport = Transport::Tls;
        c.ca_file = Some("/nonexistent/ca.pem".into());
    });
    assert!(e.contains("TLS"), "{e}");
}

#[test]
fn replay_window_keeps_the_newest_whole_frames() {
    let mut link = Link::default();
    let buf = b"aaaabbbbbbcc";
    link.remember(buf, &[4, 10, 12], 9);
    // cc (2) + bbbbbb (6) fit in 9; aaaa does not.
    assert_eq!(link.window, [b"bbbbbb".to_vec(), b"cc".to_vec()]);
    assert_eq!(link.window_bytes, 8);
    link.remember(b"ddd", &[3], 9);
    assert_eq!(link.window, [b"cc".to_vec(), b"ddd".to_vec()]);
    link.remember(b"0123456789", &[10], 9);
    assert_eq!(
        link.window,
        [b"cc".to_vec(), b"ddd".to_vec()],
        "a frame over the limit is not kept"
    );
    let mut off = Link::default();
    off.remember(buf, &[4, 10, 12], 0);
    assert!(off.window.is_empty());
}

// ------------------------------------------------------------ transport

fn tcp_config(port: u16) -> SyslogConfig {
    SyslogConfig {
        address: format!("127.0.0.1:{port}"),
        transport: Transport::Tcp,
        server_name: None,
        ca_file: None,
        client_cert: None,
        client_key: None,
        facility: default_facility(),
        enterprise_id: default_enterprise_id(),
        max_message_bytes: default_max_message_bytes(),
        timeout_ms: 5000,
        replay_bytes: default_replay_bytes(),
    }
}

fn events(from: usize, n: usize) -> Vec<Value> {
    (from..from + n)
        .map(|i| {
            let mut e = llm_call();
            e["id"] = json!(format!("{i:032x}"));
            e
        })
        .collect()
}

/// Reads octet-counted frames until EOF and returns the event ids.
async fn read_ids(stream: &mut tokio::net::TcpStream) -> Vec<String> {
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await.unwrap();
    let mut ids = Vec::new();
    let mut rest = &all[..];
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ').unwrap();
        let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
        let msg = &rest[sp + 1..sp + 1 + len];
        rest = &rest[sp + 1 + len..];
        let (_, sd, _) = parse(msg);
        ids.push(param(&sd_params(&sd), "id").unwrap().to_owned());
    }
    ids
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn frames_arrive_in_order_and_are_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dest = SyslogDestination::syslog(&tcp_config(port)).unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_ids(&mut s).await
    });
    let (a, b) = (events(0, 30), events(30, 20));
    dest.send(&a).await.unwrap();
    dest.send(&b).await.unwrap();
    drop(dest); // closes the connection: the server reads to EOF
    let got = server.await.unwrap();
    assert_eq!(got, [ids(&a), ids(&b)].concat());
}

#[tokio::test]
async fn a_reset_with_unread_data_replays_the_window() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dest = SyslogDestination::syslog(&tcp_config(port)).unwrap();
    // The first connection never reads: batch A is acknowledged by the
    // kernel, then the socket is closed unread, which sends a reset.
    let (a, b) = (events(0, 10), events(10, 5));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        rx.await.unwrap();
        drop(s);
        let (mut s2, _) = listener.accept().await.unwrap();
        read_ids(&mut s2).await
    });
    dest.send(&a).await.unwrap();
    tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    dest.send(&b).await.unwrap();
    let c = dest.counters().snapshot();
    drop(dest);
    let got = server.await.unwrap();
    assert_eq!(got, [ids(&a), ids(&b)].concat(), "A sent again, then B");
    assert_eq!(c["resets"], 1);
    assert_eq!(c["messages_resent"], 10);
    assert_eq!(c["messages_sent"], 15);
}

#[tokio::test]
async fn an_orderly_close_after_reading_replays_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dest = SyslogDestination::syslog(&tcp_config(port)).unwrap();
    let (a, b) = (events(0, 10), events(10, 5));
    let mut framed = Vec::new();
    for e in &a {
        format::frame(&format::rfc5424(e, &dest.settings).bytes, &mut framed);
    }
    let total_a = framed.len();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        // Read batch A whole, then close: FIN, nothing unread.
        let mut got = 0;
        let mut buf = vec![0u8; 1 << 16];
        while got < total_a {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got += n;
        }
        s.shutdown().await.unwrap();
        drop(s);
        let (mut s2, _) = listener.accept().await.unwrap();
        read_ids(&mut s2).await
    });
    dest.send(&a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    dest.send(&b).await.unwrap();
    let c = dest.counters().snapshot();
    drop(dest);
    assert_eq!(server.await.unwrap(), ids(&b));
    assert_eq!(
        (c["closed_by_peer"], c["resets"], c["messages_resent"]),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn no_receiver_is_a_retry_then_delivery() {
    // A port that was free a moment ago.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dest = SyslogDestination::syslog(&tcp_config(port)).unwrap();
    let a = events(0, 3);
    let err = dest.send(&a).await.unwrap_err();
    assert!(matches!(err, ForwardError::Retry(_)), "{err}");
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_ids(&mut s).await
    });
    dest.send(&a).await.unwrap();
    let c = dest.counters().snapshot();
    drop(dest);
    assert_eq!(server.await.unwrap(), ids(&a));
    assert_eq!(
        (
            c["connect_failures"],
            c["batches_failed"],
            c["batches_sent"]
        ),
        (1, 1, 1)
    );
}
