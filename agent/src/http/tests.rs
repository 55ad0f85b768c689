//! Tests of the HTTP parser: fixtures (tests/fixtures/http), edge cases
//! built in code (big bodies, bombs, codecs Python lacks), and properties.

use std::io::Write;

use proptest::prelude::*;

use super::testutil::{
    error_names, exchanges, fixture, fixture_names, only_exchange, run, run_split, Record,
};
use super::{Direction, HttpOutput, HttpParser, Limits, MAX_PENDING};
use crate::event::Role;
use crate::redact::fingerprint_key;

use Direction::{Inbound as In, Outbound as Out};

const OPENAI_KEY: &str = "sk-proj-Zx81QmA7cYbT0nKe4WvLr2Hs9DgUfPj6oBiN3tEa5yCqRw1M";
const ANTHROPIC_KEY: &str = "sk-ant-api03-Jd93kLmQpR7sT2vWxYz4AbCdEfGh6iJkLmNoPqRs8tUvWxYz-AAAAAA";
const FOX: &str = "The quick brown fox jumps over the lazy dog. ";
const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;

fn all(rel: &str) -> Vec<HttpOutput> {
    run(&fixture(rel), Limits::default())
}

fn body_str(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("utf-8 body")
}

fn head(start: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("{start}\r\n");
    for (k, v) in headers {
        s.extend([*k, ": ", *v, "\r\n"]);
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn get(path: &str) -> Vec<u8> {
    head(&format!("GET {path} HTTP/1.1"), &[("Host", "example.com")])
}

fn ok(body: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let len = body.len().to_string();
    let mut headers = extra.to_vec();
    headers.push(("Content-Length", &len));
    let mut r = head("HTTP/1.1 200 OK", &headers);
    r.extend_from_slice(body);
    r
}

// ------------------------------------------------------------- fixtures

#[test]
fn keepalive_three_exchanges() {
    let outs = all("http/keepalive_three_exchanges.cap");
    assert!(error_names(&outs).is_empty(), "{outs:?}");
    let ex = exchanges(&outs);
    assert_eq!(ex.len(), 3);
    let summary: Vec<_> = ex
        .iter()
        .map(|e| {
            let r = e.response.as_ref().expect("response");
            (
                e.request.method.as_str(),
                e.request.path.as_str(),
                r.status,
                r.body.len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", "/v1/models", 200, 59),
            ("POST", "/v1/echo", 200, 17),
            ("HEAD", "/health", 200, 0)
        ]
    );
    assert_eq!(body_str(&ex[1].request.body), r#"{"input":"ping"}"#);
    assert_eq!(
        body_str(&ex[1].response.as_ref().unwrap().body),
        r#"{"output":"pong"}"#
    );
    assert!(ex.iter().all(|e| !e.truncated && e.role == Role::Client));
    // Timestamps come from the records: the POST's response head was read
    // at +30 ms and its body at +31 ms.
    assert_eq!(ex[1].t_request_start, T0 + 20 * MS);
    assert_eq!(ex[1].t_request_end, T0 + 20 * MS);
    assert_eq!(ex[1].t_response_start, Some(T0 + 30 * MS));
    assert_eq!(ex[1].t_first_body, Some(T0 + 31 * MS));
    assert_eq!(ex[1].t_response_end, Some(T0 + 31 * MS));
    assert_eq!(ex[2].t_first_body, None);
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let outs = all("http/chunked_extensions_trailers.cap");
    assert!(error_names(&outs).is_empty(), "{outs:?}");
    let ex = exchanges(&outs);
    assert_eq!(ex.len(), 2);
    let r = ex[0].response.as_ref().unwrap();
    assert_eq!(body_str(&r.body), "helloabcdefghijklmnopqrstuvwxyz");
    assert!(!ex[0].truncated);
    assert_eq!(r.header("set-cookie"), Some("[redacted]"));
    assert_eq!(body_str(&ex[1].response.as_ref().unwrap().body), "ok");
}

#[test]
fn content_encodings_from_fixtures() {
    let want = FOX.repeat(40);
    for rel in [
        "http/gzip_reply.cap",
        "http/deflate_zlib_reply.cap",
        "http/deflate_raw_reply.cap",
    ] {
        let outs = all(rel);
        assert!(error_names(&outs).is_empty(), "{rel}: {outs:?}");
        let ex = exchanges(&outs);
        let r = ex[0].response.as_ref().unwrap();
        assert_eq!(body_str(&r.body), want, "{rel}");
        assert!(!r.body_truncated, "{rel}");
    }
}

#[test]
fn corrupt_gzip_is_reported_and_marked() {
    let outs = all("http/gzip_corrupt.cap");
    assert_eq!(error_names(&outs), ["http_decompress"]);
    let ex = exchanges(&outs);
    assert!(ex[0].response.as_ref().unwrap().body_truncated);
    assert!(ex[0].truncated);
}

#[test]
fn interim_100_continue_is_skipped() {
    let ex = only_exchange("http/expect_100_continue.cap");
    assert_eq!(ex.response.as_ref().unwrap().status, 201);
    assert_eq!(body_str(&ex.request.body), r#"{"big":"upload"}"#);
    assert!(!ex.truncated);
}

#[test]
fn response_until_close_is_complete_at_finish() {
    let ex = only_exchange("http/until_close_response.cap");
    let r = ex.response.as_ref().unwrap();
    assert_eq!(body_str(&r.body), "first part, second part.");
    assert!(!ex.truncated);
}

#[test]
fn pipelined_responses_pair_in_order() {
    let outs = all("http/pipelined_two_requests.cap");
    let ex = exchanges(&outs);
    let pairs: Vec<_> = ex
        .iter()
        .map(|e| (e.request.path.as_str(), e.response.as_ref().unwrap().status))
        .collect();
    assert_eq!(pairs, [("/a", 200), ("/b", 404)]);
}

#[test]
fn no_body_for_204_and_304() {
    let outs = all("http/no_body_204_304.cap");
    assert!(error_names(&outs).is_empty(), "{outs:?}");
    let statuses: Vec<_> = exchanges(&outs)
        .iter()
        .map(|e| {
            (
                e.response.as_ref().unwrap().status,
                e.response.as_ref().unwrap().body.clone(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [(204, vec![]), (304, vec![]), (200, b"yes".to_vec())]
    );
}

#[test]
fn server_role_when_requests_are_read() {
    let ex = only_exchange("http/server_role.cap");
    assert_eq!(ex.role, Role::Server);
    assert_eq!(ex.request.method, "POST");
    assert_eq!(ex.response.as_ref().unwrap().status, 200);
    assert_eq!(
        ex.request.api_key_id.as_deref(),
        Some(fingerprint_key("local-dev-key-0123456789").as_str())
    );
}

#[test]
fn secrets_never_kept_in_clear() {
    let ex = only_exchange("http/secrets_in_headers.cap");
    let req = &ex.request;
    let debug = format!("{ex:?}");
    let json = serde_json::to_string(&ex).unwrap();
    for secret in [
        OPENAI_KEY,
        ANTHROPIC_KEY,
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        "s3cr3t",
        "dXNlcjpwcm94eS1wYXNzd29yZA",
        "n3w-s3cr3t",
    ] {
        assert!(!debug.contains(secret), "{secret} in Debug: {debug}");
        assert!(!json.contains(secret), "{secret} in JSON: {json}");
    }
    // The first API-key header identifies the key; the proxy's does not.
    assert_eq!(
        req.api_key_id.as_deref(),
        Some(fingerprint_key(OPENAI_KEY).as_str())
    );
    assert!(fingerprint_key(OPENAI_KEY).starts_with("sk-…Rw1M#"));
    assert_eq!(
        req.header("x-api-key"),
        Some(fingerprint_key(ANTHROPIC_KEY).as_str())
    );
    assert_eq!(req.header("cookie"), Some("[redacted]"));
    assert_eq!(
        req.header("proxy-authorization"),
        Some(fingerprint_key("dXNlcjpwcm94eS1wYXNzd29yZA==").as_str())
    );
    let goog = fingerprint_key("AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY");
    assert_eq!(req.header("x-goog-api-key"), Some(goog.as_str()));
    assert!(
        req.path.ends_with(&format!("?alt=sse&key={goog}")),
        "{}",
        req.path
    );
    assert_eq!(
        ex.response.as_ref().unwrap().header("Set-Cookie"),
        Some("[redacted]")
    );
}

#[test]
fn random_bytes_are_not_http() {
    let rec = fixture("http/random_bytes.cap");
    let mut p = HttpParser::new(Limits::default());
    let Record::Data { dir, ts, bytes } = &rec[0] else {
        panic!()
    };
    let outs = p.feed(*dir, *ts, bytes);
    assert_eq!(error_names(&outs), ["http_not_http"]);
    assert!(!p.is_http());
    // Once judged, it stays quiet.
    assert!(p
        .feed(Direction::Inbound, 1, b"HTTP/1.1 200 OK\r\n\r\n")
        .is_empty());
    assert!(p.finish(2).is_empty());
}

/// The preface selects the HTTP/2 parser: no error, nothing to emit.
#[test]
fn http2_preface_selects_h2() {
    let rec = fixture("http/http2_preface.cap");
    let mut p = HttpParser::new(Limits::default());
    let mut outs = Vec::new();
    for r in &rec {
        if let Record::Data { dir, ts, bytes } = r {
            outs.extend(p.feed(*dir, *ts, bytes));
        }
    }
    assert!(p.is_h2() && p.is_http());
    outs.extend(p.finish(u64::MAX));
    assert!(outs.is_empty(), "{outs:?}");
}

#[test]
fn gap_inside_body_keeps_sync() {
    let outs = all("http/gap_inside_body.cap");
    assert!(error_names(&outs).is_empty(), "{outs:?}");
    let ex = exchanges(&outs);
    assert_eq!(ex.len(), 2);
    assert!(ex[0].truncated && ex[0].request.body_truncated);
    assert_eq!(ex[0].request.body.len(), 2000);
    assert_eq!(ex[0].response.as_ref().unwrap().status, 200);
    assert!(!ex[1].truncated);
    assert_eq!(body_str(&ex[1].response.as_ref().unwrap().body), "next");
}

#[test]
fn gap_across_messages_resyncs() {
    let outs = all("http/gap_resync.cap");
    let ex = exchanges(&outs);
    assert_eq!(ex.len(), 2, "{outs:?}");
    assert!(ex[0].truncated);
    assert_eq!(body_str(&ex[0].response.as_ref().unwrap().body), "partial");
    assert_eq!(ex[1].request.path, "/two");
    assert_eq!(body_str(&ex[1].response.as_ref().unwrap().body), "two");
    assert!(!ex[1].truncated);
}

#[test]
fn garbage_between_messages_is_skipped() {
    let outs = all("http/garbage_between_messages.cap");
    assert_eq!(error_names(&outs), ["http_bad_start_line"]);
    let ex = exchanges(&outs);
    assert_eq!(ex.len(), 2);
    assert_eq!(body_str(&ex[1].response.as_ref().unwrap().body), "b");
}

/// Every fixture gives the same result fed whole, one byte at a time, or
/// in two-byte and seven-byte pieces.
#[test]
fn every_fixture_is_split_invariant() {
    let mut names = fixture_names("http");
    names.extend(fixture_names("llm"));
    assert!(names.len() > 20);
    for rel in names {
        let rec = fixture(&rel);
        let whole = run(&rec, Limits::default());
        for step in [1, 2, 7] {
            let split = run_split(&rec, Limits::default(), |_, len| {
                (0..len).step_by(step).collect()
            });
            assert_eq!(exchanges(&split), exchanges(&whole), "{rel} step {step}");
            assert_eq!(
                error_names(&split),
                error_names(&whole),
                "{rel} step {step}"
            );
        }
    }
}

mod built;
mod props;
