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

/// A `[[forward]]` table through the framework's validation and `prepare`.
fn spec(table: &str) -> Result<ForwardSpec, String> {
    let mut spec = toml::from_str::<crate::forward::ForwardSection>(table)
        .map_err(|e| e.to_string())?
        .validate()
        .map_err(|e| e.to_string())?;
    crate::forward::prepare(&mut spec).map_err(|e| e.to_string())?;
    Ok(spec)
}

fn build(table: &str, format: Format) -> Result<SyslogDestination, String> {
    let spec = spec(table)?;
    SyslogDestination::new(&spec, format, Arc::default()).map_err(|e| e.to_string())
}

#[test]
fn forward_tables_parse_into_options() {
    let s = spec(
        r#"
        name = "siem"
        type = "syslog"
        url = "tls://siem.example.com"
        ca_file = "/etc/aitrail/siem-ca.pem"
        facility = "authpriv"
        "#,
    )
    .unwrap();
    let o = Options::parse(&s).unwrap();
    assert_eq!(o.facility, "authpriv");
    assert_eq!(o.max_message_bytes, 65536);
    assert_eq!(o.enterprise_id, "32473");
    assert_eq!(o.replay_bytes, default_replay_bytes());
    assert_eq!(
        Receiver::parse(&s).unwrap(),
        Receiver {
            tls: true,
            host: "siem.example.com".into(),
            port: 6514
        }
    );
    assert!(s.filter.kinds.is_empty(), "every kind is expressed");
    let r = Receiver::parse(
        &spec("name = \"c\"\ntype = \"cef\"\nurl = \"tls://[::1]:1514\"\n").unwrap(),
    )
    .unwrap();
    assert_eq!((r.host.as_str(), r.port), ("::1", 1514));
    let d = build(
        "name = \"relay\"\ntype = \"cef\"\nurl = \"tcp://127.0.0.1:1514\"\n",
        Format::Cef,
    )
    .unwrap();
    assert_eq!(d.kind(), "cef");
    assert!(d.tls.is_none());
    assert_eq!(d.settings.facility, 16);
}

#[test]
fn bad_configs_are_refused() {
    let base = "name = \"s\"\ntype = \"syslog\"\nurl = \"tcp://127.0.0.1:6514\"\n";
    assert!(build(base, Format::Rfc5424).is_ok());
    let bad = |extra: &str| {
        let table = if extra.starts_with("url") {
            format!("name = \"s\"\ntype = \"syslog\"\n{extra}\n")
        } else {
            format!("{base}{extra}\n")
        };
        build(&table, Format::Rfc5424).map(|_| ()).expect_err(extra)
    };
    assert!(bad("url = \"tcp://10.1.2.3:514\"").contains("loopback"));
    assert!(bad("url = \"tcp://127.0.0.1\"").contains("port"));
    assert!(bad("url = \"siem.example.com:6514\"").contains("tls://"));
    assert!(bad("url = \"udp://127.0.0.1:514\"").contains("tls://"));
    assert!(bad("url = \"tls://u:p@siem.example.com\"").contains("credentials"));
    assert!(bad("url = \"tls://siem.example.com/x\"").contains("path"));
    assert!(bad("facility = \"local9\"").contains("facility"));
    assert!(bad("enterprise_id = \"aitrail\"").contains("enterprise_id"));
    assert!(bad("enterprise_id = \"1..2\"").contains("enterprise_id"));
    assert!(bad("max_message_bytes = 2048").contains("max_message_bytes"));
    assert!(bad("ca_file = \"/x\"").contains("tls://"));
    assert!(bad("token = \"secret\"").contains("token"));
    assert!(
        bad("bogus = 1").contains("bogus"),
        "unknown keys are refused"
    );
    assert!(bad("address = \"h:1\"").contains("address"));
    let e = build(
        "name = \"s\"\ntype = \"syslog\"\nurl = \"tls://127.0.0.1\"\nca_file = \"/nonexistent/ca.pem\"\n",
        Format::Rfc5424,
    )
    .map(|_| ())
    .unwrap_err();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
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

/// A syslog destination to `127.0.0.1:port` over plain TCP, and its
/// counters.
fn tcp_dest(port: u16) -> (SyslogDestination, Arc<ForwardCounters>) {
    let spec = spec(&format!(
        "name = \"t\"\ntype = \"syslog\"\nurl = \"tcp://127.0.0.1:{port}\"\ntimeout_ms = 5000\n"
    ))
    .unwrap();
    let counters = Arc::new(ForwardCounters::default());
    let dest = SyslogDestination::new(&spec, Format::Rfc5424, Arc::clone(&counters)).unwrap();
    (dest, counters)
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    ForwardCounters::get(c)
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
    let (dest, c) = tcp_dest(port);
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
    let framed: usize = a
        .iter()
        .chain(&b)
        .map(|e| {
            let mut f = Vec::new();
            format::frame(&format::rfc5424(e, &settings()).bytes, &mut f);
            f.len()
        })
        .sum();
    assert_eq!(get(&c.bytes_sent), framed as u64);
    assert_eq!((get(&c.connects), get(&c.connection_resets)), (1, 0));
}

#[tokio::test]
async fn a_reset_with_unread_data_replays_the_window() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (dest, c) = tcp_dest(port);
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
    drop(dest);
    let got = server.await.unwrap();
    assert_eq!(got, [ids(&a), ids(&b)].concat(), "A sent again, then B");
    assert_eq!(get(&c.connection_resets), 1);
    assert_eq!(get(&c.events_resent), 10);
    assert_eq!(get(&c.connects), 2);
}

#[tokio::test]
async fn an_orderly_close_after_reading_replays_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (dest, counters) = tcp_dest(port);
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
    drop(dest);
    assert_eq!(server.await.unwrap(), ids(&b));
    assert_eq!(
        (
            get(&counters.connects),
            get(&counters.connection_resets),
            get(&counters.events_resent)
        ),
        (2, 0, 0)
    );
}

#[tokio::test]
async fn no_receiver_is_a_retry_then_delivery() {
    // A port that was free a moment ago.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (dest, c) = tcp_dest(port);
    let a = events(0, 3);
    let err = dest.send(&a).await.unwrap_err();
    assert!(matches!(err, ForwardError::Retry(_)), "{err}");
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        read_ids(&mut s).await
    });
    dest.send(&a).await.unwrap();
    drop(dest);
    assert_eq!(server.await.unwrap(), ids(&a));
    assert_eq!((get(&c.connects), get(&c.events_resent)), (1, 0));
}
