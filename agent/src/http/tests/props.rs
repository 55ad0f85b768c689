//! Properties of the HTTP parser: total, bounded, and split-independent.
#![allow(clippy::wildcard_imports, reason = "the parent test module's helpers")]

use super::*;

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
        max_ws_message_bytes: 2048,
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
        if p.is_websocket() {
            // Random bytes may pass for WebSocket frames (a socket picked
            // up mid-way, counted as ws_midstream); such a parser ends by
            // a close or by giving up, never as "not HTTP".
            prop_assert_eq!(not_http, 0);
        } else {
            prop_assert_eq!(not_http, usize::from(!p.is_http()));
        }
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
        let events = crate::http::sse::parse_sse(&body);
        prop_assert!(events.len() <= body.len());
    }
}
