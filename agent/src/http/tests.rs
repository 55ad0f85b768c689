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

#[test]
fn http2_preface_is_not_http() {
    let outs = all("http/http2_preface.cap");
    assert_eq!(error_names(&outs), ["http_not_http"]);
    assert!(exchanges(&outs).is_empty());
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

// --------------------------------------------------------- built in code

/// Feeds `(dir, bytes)` in order with increasing timestamps, then finishes.
fn feed_all(limits: Limits, parts: &[(Direction, &[u8])]) -> (Vec<HttpOutput>, HttpParser) {
    let mut p = HttpParser::new(limits);
    let mut out = Vec::new();
    for (i, (dir, bytes)) in parts.iter().enumerate() {
        out.extend(p.feed(*dir, T0 + i as u64 * MS, bytes));
    }
    out.extend(p.finish(T0 + 1000 * MS));
    (out, p)
}

use Direction::{Inbound as In, Outbound as Out};

#[test]
fn ten_mib_body_is_cut_counted_and_framing_holds() {
    let limits = Limits {
        max_body_bytes: 4 << 20,
        ..Limits::default()
    };
    let mut p = HttpParser::new(limits);
    let mut outs = p.feed(Out, T0, &get("/big"));
    let total = 10 << 20;
    let mut resp = head("HTTP/1.1 200 OK", &[("Transfer-Encoding", "chunked")]);
    outs.extend(p.feed(In, T0 + 1, &resp));
    resp.clear();
    // 160 chunks of 64 KiB, each its own record.
    let piece = vec![b'z'; 64 << 10];
    for i in 0..total / piece.len() {
        let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
        c.extend_from_slice(&piece);
        c.extend_from_slice(b"\r\n");
        outs.extend(p.feed(In, T0 + 2 + i as u64, &c));
        assert!(
            p.buffered_bytes() <= (4 << 20) + (64 << 10),
            "bounded while receiving"
        );
    }
    outs.extend(p.feed(In, T0 + 500, b"0\r\n\r\n"));
    outs.extend(p.feed(Out, T0 + 501, &get("/after")));
    outs.extend(p.feed(In, T0 + 502, &ok(b"fine", &[])));
    assert_eq!(error_names(&outs), ["http_body_too_large"]);
    let ex = exchanges(&outs);
    assert_eq!(ex.len(), 2);
    let big = ex[0].response.as_ref().unwrap();
    assert_eq!(big.body.len(), 4 << 20);
    assert!(big.body_truncated && ex[0].truncated);
    assert_eq!(body_str(&ex[1].response.as_ref().unwrap().body), "fine");
    assert!(!ex[1].truncated);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

#[test]
fn brotli_and_zstd_bodies_decode() {
    let text = FOX.repeat(100);
    for (encoding, coded) in [
        ("br", brotli(text.as_bytes())),
        ("zstd", zstd(text.as_bytes())),
    ] {
        let (outs, _) = feed_all(
            Limits::default(),
            &[
                (Out, &get("/")),
                (In, &ok(&coded, &[("Content-Encoding", encoding)])),
            ],
        );
        assert!(error_names(&outs).is_empty(), "{encoding}: {outs:?}");
        let ex = exchanges(&outs);
        assert_eq!(
            body_str(&ex[0].response.as_ref().unwrap().body),
            text,
            "{encoding}"
        );
    }
}

#[test]
fn compressed_bombs_stop_at_the_cap() {
    let cap = 1 << 20;
    let limits = Limits {
        max_body_bytes: cap,
        ..Limits::default()
    };
    let zeros = vec![0u8; 64 << 20];
    for (encoding, coded) in [
        ("gzip", gzip(&zeros)),
        ("br", brotli(&zeros)),
        ("zstd", zstd(&zeros)),
    ] {
        assert!(
            coded.len() < cap,
            "{encoding} bomb is small: {}",
            coded.len()
        );
        let mut p = HttpParser::new(limits);
        let mut outs = p.feed(Out, T0, &get("/bomb"));
        let resp = ok(&coded, &[("Content-Encoding", encoding)]);
        // In pieces, checking memory as it goes.
        for piece in resp.chunks(4096) {
            outs.extend(p.feed(In, T0 + 1, piece));
            assert!(
                p.buffered_bytes() <= cap + 64 * 1024,
                "{encoding}: {}",
                p.buffered_bytes()
            );
        }
        outs.extend(p.feed(Out, T0 + 2, &get("/next")));
        outs.extend(p.feed(In, T0 + 3, &ok(b"n", &[])));
        assert_eq!(error_names(&outs), ["http_body_too_large"], "{encoding}");
        let ex = exchanges(&outs);
        let r = ex[0].response.as_ref().unwrap();
        assert_eq!(r.body.len(), cap, "{encoding}");
        assert!(r.body_truncated);
        assert_eq!(ex[1].response.as_ref().unwrap().body, b"n");
    }
}

#[test]
fn request_bodies_are_decoded_too() {
    let coded = gzip(br#"{"model":"x"}"#);
    let len = coded.len().to_string();
    let mut req = head(
        "POST /v1/chat/completions HTTP/1.1",
        &[
            ("Host", "h"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", &len),
        ],
    );
    req.extend_from_slice(&coded);
    let (outs, _) = feed_all(Limits::default(), &[(Out, &req), (In, &ok(b"{}", &[]))]);
    assert_eq!(exchanges(&outs)[0].request.body, br#"{"model":"x"}"#);
}

#[test]
fn unsupported_encoding_keeps_raw_body() {
    let (outs, _) = feed_all(
        Limits::default(),
        &[
            (Out, &get("/")),
            (In, &ok(b"raw", &[("Content-Encoding", "compress")])),
        ],
    );
    assert_eq!(error_names(&outs), ["http_unsupported_encoding"]);
    assert_eq!(exchanges(&outs)[0].response.as_ref().unwrap().body, b"raw");
}

#[test]
fn header_too_large_then_recovers() {
    let limits = Limits {
        max_header_bytes: 1024,
        ..Limits::default()
    };
    let big = "a".repeat(2000);
    let req = head("GET /x HTTP/1.1", &[("Host", "h"), ("X-Big", &big)]);
    let (outs, _) = feed_all(
        limits,
        &[
            (Out, &get("/first")),
            (In, &ok(b"0", &[])),
            (Out, &req),
            (Out, &get("/ok")),
            (In, &ok(b"1", &[])),
            (In, &ok(b"2", &[])),
        ],
    );
    // The oversized request keeps its place: its response is counted and
    // dropped, and the next request gets the right one.
    assert_eq!(
        error_names(&outs),
        ["http_header_too_large", "http_unpaired_response"]
    );
    let ex = exchanges(&outs);
    let pairs: Vec<_> = ex
        .iter()
        .map(|e| {
            (
                e.request.path.as_str(),
                e.response.as_ref().unwrap().body.clone(),
            )
        })
        .collect();
    assert_eq!(pairs, [("/first", b"0".to_vec()), ("/ok", b"2".to_vec())]);
}

#[test]
fn resync_finds_request_glued_to_a_lost_body() {
    // A gap eats a request head; its JSON body (no trailing newline) is
    // followed directly by the next request line.
    let mut p = HttpParser::new(Limits::default());
    let mut outs = p.feed(Out, T0, &get("/first"));
    outs.extend(p.feed(In, T0 + 1, &ok(b"0", &[])));
    outs.extend(p.gap(Out, 100));
    let mut next = br#"{"messages":[{"role":"user","content":"HI"}]}"#.to_vec();
    next.extend_from_slice(&head(
        "POST /v1/messages HTTP/1.1",
        &[("Host", "h"), ("Content-Length", "2")],
    ));
    next.extend_from_slice(b"{}");
    outs.extend(p.feed(Out, T0 + 2, &next));
    outs.extend(p.feed(In, T0 + 3, &ok(b"lost", &[])));
    outs.extend(p.feed(In, T0 + 4, &ok(b"found", &[])));
    assert_eq!(error_names(&outs), ["http_unpaired_response"]);
    let ex = exchanges(&outs);
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[1].request.method, "POST");
    assert_eq!(ex[1].request.path, "/v1/messages");
    assert_eq!(ex[1].request.body, b"{}");
    assert_eq!(ex[1].response.as_ref().unwrap().body, b"found");
}

#[test]
fn bad_content_length_is_reported() {
    let req = head(
        "POST /x HTTP/1.1",
        &[("Host", "h"), ("Content-Length", "12abc")],
    );
    let (outs, _) = feed_all(Limits::default(), &[(Out, &req)]);
    assert_eq!(error_names(&outs), ["http_bad_content_length"]);
    let conflicting = head(
        "POST /x HTTP/1.1",
        &[("Content-Length", "5"), ("Content-Length", "6")],
    );
    let (outs, _) = feed_all(Limits::default(), &[(Out, &conflicting)]);
    assert_eq!(error_names(&outs), ["http_bad_content_length"]);
}

#[test]
fn response_without_request_is_counted() {
    let (outs, p) = feed_all(Limits::default(), &[(In, &ok(b"hello", &[]))]);
    assert_eq!(error_names(&outs), ["http_unpaired_response"]);
    assert!(exchanges(&outs).is_empty());
    assert!(p.is_http());
}

#[test]
fn request_without_response_at_finish() {
    let (outs, _) = feed_all(Limits::default(), &[(Out, &get("/lonely"))]);
    let ex = exchanges(&outs);
    assert_eq!(ex.len(), 1);
    assert!(ex[0].response.is_none() && ex[0].truncated);
    assert_eq!(ex[0].t_response_end, None);
}

#[test]
fn response_cut_by_close_is_truncated() {
    let mut resp = head("HTTP/1.1 200 OK", &[("Content-Length", "10")]);
    resp.extend_from_slice(b"12345");
    let (outs, _) = feed_all(Limits::default(), &[(Out, &get("/")), (In, &resp)]);
    let ex = exchanges(&outs);
    assert_eq!(ex[0].response.as_ref().unwrap().body, b"12345");
    assert!(ex[0].truncated && ex[0].response.as_ref().unwrap().body_truncated);
}

#[test]
fn too_many_pending_requests_are_bounded() {
    let mut parts = Vec::new();
    let req = get("/p");
    for _ in 0..MAX_PENDING + 3 {
        parts.push((Out, req.as_slice()));
    }
    let (outs, _) = feed_all(Limits::default(), &parts);
    let errs = error_names(&outs);
    assert_eq!(
        errs.iter()
            .filter(|e| **e == "http_too_many_pending")
            .count(),
        3
    );
    assert_eq!(exchanges(&outs).len(), MAX_PENDING + 3);
}

#[test]
fn upgrade_ends_http() {
    let req = head(
        "GET /ws HTTP/1.1",
        &[
            ("Host", "h"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
        ],
    );
    let resp = head(
        "HTTP/1.1 101 Switching Protocols",
        &[("Upgrade", "websocket")],
    );
    let mut p = HttpParser::new(Limits::default());
    let mut outs = p.feed(Out, T0, &req);
    let mut r = resp.clone();
    r.extend_from_slice(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o']);
    outs.extend(p.feed(In, T0 + 1, &r));
    assert_eq!(exchanges(&outs).len(), 1);
    assert_eq!(error_names(&outs), ["http_not_http"]);
    assert!(!p.is_http());
}

#[test]
fn mid_stream_attach_after_gap_finds_next_message() {
    let mut p = HttpParser::new(Limits::default());
    let mut outs = p.gap(Out, 0);
    outs.extend(p.gap(In, 0));
    // The tail of some earlier body, then real messages.
    outs.extend(p.feed(Out, T0, b"ello\":\"world\"}"));
    outs.extend(p.feed(In, T0 + 1, b"\r\n0\r\n\r\n"));
    outs.extend(p.feed(Out, T0 + 2, &get("/next")));
    outs.extend(p.feed(In, T0 + 3, &ok(b"n", &[])));
    assert!(p.is_http());
    let ex = exchanges(&outs);
    assert_eq!(ex.len(), 1, "{outs:?}");
    assert_eq!(ex[0].request.path, "/next");
    assert_eq!(ex[0].response.as_ref().unwrap().body, b"n");
}

#[test]
fn lost_response_pairs_next_response_with_latest_request() {
    // Non-pipelined client: request 1, its response lost whole in a gap,
    // request 2, response 2.
    let mut p = HttpParser::new(Limits::default());
    let mut outs = p.feed(Out, T0, &get("/1"));
    outs.extend(p.gap(In, 300));
    outs.extend(p.feed(Out, T0 + 1, &get("/2")));
    outs.extend(p.feed(In, T0 + 2, &ok(b"two", &[])));
    let ex = exchanges(&outs);
    assert_eq!(ex.len(), 2, "{outs:?}");
    assert_eq!(ex[0].request.path, "/1");
    assert!(ex[0].response.is_none() && ex[0].truncated);
    assert_eq!(ex[1].request.path, "/2");
    assert_eq!(ex[1].response.as_ref().unwrap().body, b"two");
}

#[test]
fn header_values_split_across_many_feeds() {
    // The blank line ending the head is split as "\r\n\r" + "\n".
    let mut p = HttpParser::new(Limits::default());
    let req = get("/split");
    let (a, b) = req.split_at(req.len() - 1);
    assert!(p.feed(Out, T0, a).is_empty());
    assert!(p.feed(Out, T0, b).is_empty());
    let outs = p.feed(In, T0 + 1, &ok(b"x", &[]));
    assert_eq!(exchanges(&outs).len(), 1);
}

#[test]
fn bare_lf_heads_and_leading_blank_lines() {
    let (outs, _) = feed_all(
        Limits::default(),
        &[
            (Out, b"\r\nGET /lf HTTP/1.1\nHost: h\n\n"),
            (In, b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi"),
        ],
    );
    assert!(error_names(&outs).is_empty(), "{outs:?}");
    assert_eq!(exchanges(&outs)[0].response.as_ref().unwrap().body, b"hi");
}

#[test]
fn http_error_names_are_counter_names() {
    let e = super::HttpError::Decompress {
        encoding: "gzip".into(),
        source: std::io::Error::other("x"),
    };
    assert_eq!(e.name(), "http_decompress");
    assert_eq!(e.to_string(), "cannot decode gzip body");
}

// ------------------------------------------------------------ properties

/// The most a parser may hold with `limits`: a head, chunk line or resync
/// line tail per direction, and a body per message in flight or waiting
/// for its pair.
fn memory_bound(limits: Limits) -> usize {
    4 * limits.max_header_bytes.max(4096) + (2 * MAX_PENDING + 2) * limits.max_body_bytes
}

fn small_limits() -> Limits {
    Limits {
        max_header_bytes: 512,
        max_body_bytes: 2048,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Feed(bool, Vec<u8>),
    Gap(bool, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(d, b)| Op::Feed(d, b)),
        // Bytes that look like HTTP, to get past the first checks.
        4 => (any::<bool>(), http_ish()).prop_map(|(d, b)| Op::Feed(d, b)),
        1 => (any::<bool>(), 0u64..5000).prop_map(|(d, n)| Op::Gap(d, n)),
    ]
}

fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop_oneof![
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(b"POST /v1/messages HTTP/1.1\r\n".to_vec()),
        Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
        Just(b"HTTP/1.1 100 Continue\r\n".to_vec()),
        Just(b"HEAD /h HTTP/1.1\r\n".to_vec()),
        Just(b"Content-Length: 5\r\n".to_vec()),
        Just(b"Content-Length: 99999999999999999999\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Content-Encoding: gzip\r\n".to_vec()),
        Just(b"Content-Encoding: br\r\n".to_vec()),
        Just(b"Authorization: Bearer sk-abc\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"5\r\nhello\r\n".to_vec()),
        Just(b"ffffffffffffffff\r\n".to_vec()),
        Just(b"0\r\n\r\n".to_vec()),
        Just(b"data: {}\n\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..20),
    ];
    proptest::collection::vec(pieces, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary input in arbitrary pieces never panics and stays bounded.
    #[test]
    fn arbitrary_input_is_total_and_bounded(ops in proptest::collection::vec(op(), 0..40)) {
        let limits = small_limits();
        let mut p = HttpParser::new(limits);
        let mut not_http = 0;
        for (i, op) in ops.iter().enumerate() {
            let outs = match op {
                Op::Feed(d, b) => p.feed(if *d { Out } else { In }, i as u64, b),
                Op::Gap(d, n) => p.gap(if *d { Out } else { In }, *n),
            };
            not_http += error_names(&outs).iter().filter(|n| **n == "http_not_http").count();
            prop_assert!(p.buffered_bytes() <= memory_bound(limits));
            for o in &outs {
                if let HttpOutput::Exchange(e) = o {
                    prop_assert!(e.request.body.len() <= limits.max_body_bytes);
                }
            }
        }
        let outs = p.finish(u64::MAX);
        not_http += error_names(&outs).iter().filter(|n| **n == "http_not_http").count();
        prop_assert_eq!(not_http, usize::from(!p.is_http()));
    }

    /// Cutting valid captures anywhere changes nothing.
    #[test]
    fn splitting_valid_streams_changes_nothing(seed in any::<u64>(), which in 0usize..64) {
        let mut names = fixture_names("http");
        names.extend(fixture_names("llm"));
        let rel = &names[which % names.len()];
        let rec = fixture(rel);
        let whole = run(&rec, Limits::default());
        let mut rng = seed;
        let split = run_split(&rec, Limits::default(), |_, len| {
            let mut cuts = Vec::new();
            for _ in 0..(rng % 8) {
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                if len > 0 {
                    cuts.push(usize::try_from(rng >> 33).unwrap_or(0) % len);
                }
            }
            cuts
        });
        prop_assert_eq!(exchanges(&split), exchanges(&whole), "{}", rel);
        prop_assert_eq!(error_names(&split), error_names(&whole), "{}", rel);
    }

    /// Arbitrary bytes after a valid exchange never panic; the parser
    /// stays HTTP (the connection was proven HTTP) and bounded.
    #[test]
    fn garbage_after_valid_exchange(garbage in proptest::collection::vec(any::<u8>(), 0..2000), cut in 0usize..2000) {
        let limits = small_limits();
        let mut p = HttpParser::new(limits);
        p.feed(Out, 0, &get("/"));
        p.feed(In, 1, &ok(b"ok", &[]));
        let cut = cut.min(garbage.len());
        p.feed(In, 2, &garbage[..cut]);
        p.feed(Out, 3, &garbage[cut..]);
        prop_assert!(p.is_http());
        prop_assert!(p.buffered_bytes() <= memory_bound(limits));
        p.finish(4);
    }

    #[test]
    fn sse_parser_is_total(body in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let events = super::sse::parse_sse(&body);
        prop_assert!(events.len() <= body.len());
    }
}

/// `body_cut` tells bytes lost from framing left unfinished: the LLM layer
/// trusts a stream's own end marker only in the second case.
#[test]
fn cut_bodies_are_told_from_unterminated_ones() {
    let chunked = head(
        "HTTP/1.1 200 OK",
        &[
            ("Content-Type", "text/event-stream"),
            ("Transfer-Encoding", "chunked"),
        ],
    );
    let event = b"data: [DONE]\n\n";
    let mut first = chunked.clone();
    first.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
    first.extend_from_slice(event);
    first.extend_from_slice(b"\r\n");

    // The client stops reading before the terminating chunk.
    let mut p = HttpParser::new(Limits::default());
    p.feed(Direction::Outbound, 1, &get("/s"));
    p.feed(Direction::Inbound, 2, &first);
    let outs = p.finish(3);
    let ex = exchanges(&outs);
    let r = ex[0].response.as_ref().expect("response");
    assert!(r.body_truncated && !r.body_cut, "{r:?}");
    assert_eq!(body_str(&r.body), "data: [DONE]\n\n");

    // Bytes lost inside a body of known length.
    let mut p = HttpParser::new(Limits::default());
    p.feed(Direction::Outbound, 1, &get("/s"));
    let whole = ok(b"0123456789", &[]);
    let (a, b) = whole.split_at(whole.len() - 6);
    p.feed(Direction::Inbound, 2, a);
    p.gap(Direction::Inbound, 2);
    let mut outs = p.feed(Direction::Inbound, 3, &b[2..]);
    outs.extend(p.finish(4));
    let ex = exchanges(&outs);
    let r = ex[0].response.as_ref().expect("response");
    assert!(r.body_truncated && r.body_cut, "{r:?}");
}
