//! Cases built in code: framing, pairing, gaps, limits, secrets.

#![allow(clippy::wildcard_imports, reason = "the parent test module's helpers")]

use super::*;

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
fn upgrade_to_websocket_reads_frames_other_upgrades_end_http() {
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
    // The first frame in the same record as the 101: a server message
    // (unmasked), which no response.create asked for.
    r.extend_from_slice(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o']);
    outs.extend(p.feed(In, T0 + 1, &r));
    assert_eq!(exchanges(&outs).len(), 1);
    assert_eq!(error_names(&outs), ["ws_unpaired_message"]);
    assert!(p.is_http());

    // Upgraded to something else (h2c): the connection stops being HTTP/1.
    let req = head(
        "GET / HTTP/1.1",
        &[("Host", "h"), ("Upgrade", "h2c"), ("Connection", "Upgrade")],
    );
    let resp = head("HTTP/1.1 101 Switching Protocols", &[("Upgrade", "h2c")]);
    let mut p = HttpParser::new(Limits::default());
    let mut outs = p.feed(Out, T0, &req);
    outs.extend(p.feed(In, T0 + 1, &resp));
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
    let e = crate::http::HttpError::Decompress {
        encoding: "gzip".into(),
        source: std::io::Error::other("x"),
    };
    assert_eq!(e.name(), "http_decompress");
    assert_eq!(e.to_string(), "cannot decode gzip body");
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
