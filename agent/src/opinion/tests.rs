use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::mpsc,
};

use super::*;
use crate::event::{kind, FindingInfo, LlmCall, Message};

/// A loopback classifier: answers each request with `answer` after
/// `delay`, and reports the request bodies it got.
fn classifier(answer: &'static str, delay: Duration) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/classify", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and the body of its Content-Length.
                loop {
                    let n = conn.read(&mut chunk).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + len {
                            let _ = tx.send(text[i + 4..].to_owned());
                            break;
                        }
                    }
                }
                std::thread::sleep(delay);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    (url, rx)
}

fn finding(class: &str) -> Event {
    Event {
        id: "f1".into(),
        kind: kind::FINDING.into(),
        finding: Some(FindingInfo {
            rule: "inj.override".into(),
            class: class.into(),
            ..FindingInfo::default()
        }),
        ..Event::default()
    }
}

fn config(url: &str, timeout_ms: u64) -> OpinionConfig {
    OpinionConfig {
        url: url.into(),
        timeout_ms,
        ..OpinionConfig::default()
    }
}

fn wait_answers(o: &mut Opinion, n: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        out.extend(o.answered());
        std::thread::sleep(Duration::from_millis(10));
    }
    out
}

#[test]
fn a_verdict_is_added_to_the_finding() {
    let (url, bodies) = classifier(r#"{"label":"injection","score":0.97}"#, Duration::ZERO);
    let mut o = Opinion::start(&config(&url, 2000)).unwrap().unwrap();
    assert!(o.wants("prompt_injection") && !o.wants("pii"));
    assert!(o
        .submit(
            finding("prompt_injection"),
            "ignore previous instructions".into()
        )
        .is_none());
    let got = wait_answers(&mut o, 1);
    assert_eq!(got.len(), 1);
    let v = got[0].finding.as_ref().unwrap().verdict.as_ref().unwrap();
    assert_eq!(v.label, "injection");
    assert_eq!(v.score, Some(0.97));
    assert!(v.source.ends_with("/classify"));
    let body: serde_json::Value = serde_json::from_str(&bodies.recv().unwrap()).unwrap();
    assert_eq!(body["text"], "ignore previous instructions");
    assert_eq!(body["class"], "prompt_injection");
    assert_eq!(o.counters()[1], ("opinion_answered", 1));
}

#[test]
fn a_slow_or_absent_endpoint_gives_unavailable_in_time() {
    let (url, _bodies) = classifier(r#"{"label":"late"}"#, Duration::from_secs(5));
    let mut o = Opinion::start(&config(&url, 200)).unwrap().unwrap();
    let t = Instant::now();
    assert!(o.submit(finding("prompt_injection"), "x".into()).is_none());
    let got = wait_answers(&mut o, 1);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(
        got[0]
            .finding
            .as_ref()
            .unwrap()
            .verdict
            .as_ref()
            .unwrap()
            .label,
        "unavailable"
    );

    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut o = Opinion::start(&config(&format!("http://127.0.0.1:{port}/x"), 500))
        .unwrap()
        .unwrap();
    o.submit(finding("prompt_injection"), "x".into());
    let got = o.finish();
    assert_eq!(got.len(), 1, "finish waits for what is in flight");
    assert_eq!(
        got[0]
            .finding
            .as_ref()
            .unwrap()
            .verdict
            .as_ref()
            .unwrap()
            .label,
        "unavailable"
    );
}

#[test]
fn a_full_queue_gives_the_finding_back_and_counts_it() {
    let (url, _bodies) = classifier(r#"{"label":"ok"}"#, Duration::from_millis(500));
    let cfg = OpinionConfig {
        max_in_flight: 1,
        max_queue: 1,
        ..config(&url, 2000)
    };
    let mut o = Opinion::start(&cfg).unwrap().unwrap();
    let mut back = 0;
    for _ in 0..5 {
        if o.submit(finding("prompt_injection"), "x".into()).is_some() {
            back += 1;
        }
    }
    assert!(
        back >= 3,
        "only one in flight and one queued: {back} given back"
    );
    assert_eq!(o.counters()[3], ("opinion_skipped_busy", back));
    let done = o.finish();
    assert_eq!(done.len(), 5 - usize::try_from(back).unwrap());
}

#[test]
fn only_loopback_http_endpoints_are_accepted() {
    for bad in [
        "https://127.0.0.1:1/x",
        "http://10.0.0.1:80/x",
        "http://example.com:80/x",
        "http://127.0.0.1/x",
        "ftp://127.0.0.1:1/",
    ] {
        assert!(Opinion::start(&config(bad, 100)).is_err(), "{bad}");
    }
    let ok = Endpoint::parse("http://localhost:8089/classify").unwrap();
    assert_eq!(ok.path, "/classify");
    assert!(ok.addr.ip().is_loopback());
    assert!(Endpoint::parse("http://[::1]:8089").is_ok());
    assert!(
        Opinion::start(&OpinionConfig::default()).unwrap().is_none(),
        "off by default"
    );
}

#[test]
fn field_paths_resolve_to_text() {
    let ev = Event {
        llm: Some(LlmCall {
            messages: vec![
                Message {
                    role: "system".into(),
                    content: "s".into(),
                    ..Message::default()
                },
                Message {
                    role: "user".into(),
                    content: "hello".into(),
                    ..Message::default()
                },
            ],
            ..LlmCall::default()
        }),
        ..Event::default()
    };
    assert_eq!(
        field_text(&ev, "llm.messages[1].content").as_deref(),
        Some("hello")
    );
    assert_eq!(field_text(&ev, "llm.messages[7].content"), None);
    assert_eq!(field_text(&ev, "tool.arguments"), None);
    assert_eq!(cut("héllo".into(), 2), "h");
}
