//! WebSocket decoding: frames built here byte by byte (the cases a peer
//! library will not produce on demand) and recordings of real peers
//! (tests/fixtures/ws/, made by make_ws_fixtures.py) through the whole
//! HTTP parser and the Responses decoder.

use std::io::Write;

use flate2::{write::DeflateEncoder, Compression};

use super::*;
use crate::http::testutil::{error_names, exchanges, fixture, run, run_split};
use crate::http::{HttpParser, Limits};
use crate::llm;

const OUT: Direction = Direction::Outbound;
const IN: Direction = Direction::Inbound;

/// One frame: `b0` is FIN/RSV/opcode; masked with `mask` when given.
fn frame(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![b0];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match (u8::try_from(payload.len()), u16::try_from(payload.len())) {
        (Ok(n), _) if n < 126 => f.push(m | n),
        (_, Ok(n)) => {
            f.push(m | 0x7e);
            f.extend_from_slice(&n.to_be_bytes());
        }
        _ => {
            f.push(m | 0x7f);
            f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn upgrade_request(extensions: Option<&str>) -> Vec<u8> {
    let mut s = String::from(
        "GET /v1/responses HTTP/1.1\r\nHost: api.openai.com\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nAuthorization: Bearer sk-proj-abcdefghijklmnopqrstuvwxyz0123\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    );
    if let Some(e) = extensions {
        s.push_str("Sec-WebSocket-Extensions: ");
        s.push_str(e);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn upgrade_response(extensions: Option<&str>) -> Vec<u8> {
    let mut s = String::from(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
    );
    if let Some(e) = extensions {
        s.push_str("Sec-WebSocket-Extensions: ");
        s.push_str(e);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn create(n: u32) -> String {
    serde_json::json!({"type": "response.create", "model": "gpt-5-mini",
        "input": format!("turn {n}"), "tools": [{"type": "function", "name": "run_command"}]})
    .to_string()
}

fn events(n: u32) -> Vec<String> {
    let id = format!("resp_{n}");
    vec![
        serde_json::json!({"type": "response.created", "response": {"id": id, "model": "gpt-5-mini"}}),
        serde_json::json!({"type": "response.output_item.added", "output_index": 0,
            "item": {"type": "function_call", "call_id": format!("call_{n}"), "name": "run_command"}}),
        serde_json::json!({"type": "response.function_call_arguments.delta", "output_index": 0,
            "delta": "{\"command\":"}),
        serde_json::json!({"type": "response.function_call_arguments.delta", "output_index": 0,
            "delta": "\"ls\"}"}),
        serde_json::json!({"type": "response.completed", "response": {"id": id,
            "model": "gpt-5-mini", "output": [], "usage": {"input_tokens": 10, "output_tokens": 5}}}),
    ]
    .into_iter()
    .map(|v| v.to_string())
    .collect()
}

/// A parser past an upgrade with these extensions.
fn upgraded(ext: Option<&str>) -> (HttpParser, Vec<HttpOutput>) {
    let mut p = HttpParser::new(Limits::default());
    let mut out = p.feed(OUT, 1, &upgrade_request(ext));
    out.extend(p.feed(IN, 2, &upgrade_response(ext)));
    (p, out)
}

fn calls(outs: &[HttpOutput]) -> Vec<crate::event::LlmCall> {
    exchanges(outs)
        .iter()
        .filter(|e| e.websocket)
        .filter_map(|e| llm::decode(e).expect("decodes"))
        .collect()
}

#[test]
fn two_turns_uncompressed_pair_in_order() {
    let (mut p, mut out) = upgraded(None);
    assert_eq!(exchanges(&out).len(), 1, "the upgrade itself");
    for n in 1..=2 {
        out.extend(p.feed(
            OUT,
            10 * u64::from(n),
            &frame(0x81, create(n).as_bytes(), Some(KEY)),
        ));
        for (i, e) in events(n).iter().enumerate() {
            out.extend(p.feed(
                IN,
                10 * u64::from(n) + 1 + i as u64,
                &frame(0x81, e.as_bytes(), None),
            ));
        }
    }
    out.extend(p.finish(100));
    assert!(error_names(&out).is_empty(), "{:?}", error_names(&out));
    let c = calls(&out);
    assert_eq!(c.len(), 2);
    for (n, call) in (1..=2).zip(&c) {
        assert_eq!(call.provider, "openai");
        assert_eq!(call.operation, "responses");
        assert_eq!(call.transport.as_deref(), Some("websocket"));
        assert!(call.stream);
        assert!(!call.truncated);
        assert_eq!(
            call.response_id.as_deref(),
            Some(format!("resp_{n}").as_str())
        );
        assert_eq!(call.output.tool_calls.len(), 1);
        assert_eq!(call.output.tool_calls[0].id, format!("call_{n}"));
        assert_eq!(call.output.tool_calls[0].arguments, "{\"command\":\"ls\"}");
        assert_eq!(call.usage.input_tokens, Some(10));
        assert!(call.api_key_id.as_deref().is_some_and(|k| k.contains('#')));
        assert_eq!(
            call.messages.last().map(|m| m.content.as_str()),
            Some(format!("turn {n}").as_str())
        );
    }
}

#[test]
fn lengths_16_and_64_bit_and_fragments_with_control_frames_between() {
    let (mut p, mut out) = upgraded(None);
    out.extend(p.feed(OUT, 10, &frame(0x81, create(1).as_bytes(), Some(KEY))));
    let mut evs = events(1);
    // A 70 000-byte event: a 64-bit length. Padding inside the JSON.
    evs[0] = serde_json::json!({"type": "response.created", "pad": "x".repeat(70_000),
        "response": {"id": "resp_1", "model": "gpt-5-mini"}})
    .to_string();
    // A 300-byte one: a 16-bit length.
    evs[1] = serde_json::json!({"type": "response.output_item.added", "output_index": 0,
        "pad": "y".repeat(300),
        "item": {"type": "function_call", "call_id": "call_1", "name": "run_command"}})
    .to_string();
    let mut wire = Vec::new();
    for e in &evs {
        // Three fragments, a ping and a pong between them.
        let bytes = e.as_bytes();
        let (head, rest) = bytes.split_at(bytes.len() / 3);
        let (middle, last) = rest.split_at(rest.len() / 2);
        wire.extend(frame(0x01, head, None));
        wire.extend(frame(0x89, b"ping", None));
        wire.extend(frame(0x00, middle, None));
        wire.extend(frame(0x8A, b"", None));
        wire.extend(frame(0x80, last, None));
    }
    // Fed byte by byte for the small part, in odd pieces for the rest.
    for (i, chunk) in wire.chunks(7).enumerate() {
        out.extend(p.feed(IN, 20 + i as u64, chunk));
    }
    out.extend(p.finish(100_000));
    assert!(error_names(&out).is_empty(), "{:?}", error_names(&out));
    let c = calls(&out);
    assert_eq!(c.len(), 1);
    assert!(!c[0].truncated);
    assert_eq!(c[0].output.tool_calls[0].arguments, "{\"command\":\"ls\"}");
}

fn deflate_raw(data: &[u8], enc: &mut flate2::Compress) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    enc.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
        .expect("compress");
    while out.capacity() == out.len() {
        out.reserve(1024);
        enc.compress_vec(&[], &mut out, flate2::FlushCompress::Sync)
            .expect("compress");
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

#[test]
fn permessage_deflate_with_context_takeover_keeps_one_window() {
    let ext = "permessage-deflate; client_max_window_bits=15";
    let (mut p, mut out) = upgraded(Some(ext));
    let mut client = flate2::Compress::new(Compression::default(), false);
    let mut server = flate2::Compress::new(Compression::default(), false);
    for n in 1..=3 {
        let req = deflate_raw(create(n).as_bytes(), &mut client);
        out.extend(p.feed(OUT, 10 * u64::from(n), &frame(0xC1, &req, Some(KEY))));
        for e in events(n) {
            let z = deflate_raw(e.as_bytes(), &mut server);
            out.extend(p.feed(IN, 10 * u64::from(n) + 1, &frame(0xC1, &z, None)));
        }
    }
    out.extend(p.finish(100));
    assert!(error_names(&out).is_empty(), "{:?}", error_names(&out));
    let c = calls(&out);
    assert_eq!(c.len(), 3);
    assert!(c
        .iter()
        .all(|c| !c.truncated && c.output.tool_calls.len() == 1));
}

#[test]
fn negotiation_reads_every_parameter() {
    let h = |v: &str| vec![("Sec-WebSocket-Extensions".to_owned(), v.to_owned())];
    let mut e = Vec::new();
    assert_eq!(
        negotiated_deflate(
            &h("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9"),
            &mut e
        ),
        Some(Deflate {
            client_no_context_takeover: true,
            server_no_context_takeover: true
        })
    );
    assert!(e.is_empty());
    assert_eq!(
        negotiated_deflate(&h("x-webkit-deflate-frame"), &mut e),
        None
    );
    assert_eq!(
        negotiated_deflate(&h("permessage-deflate; server_max_window_bits=99"), &mut e),
        Some(Deflate::default())
    );
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].name(), "ws_bad_extension");
}

#[test]
fn no_context_takeover_resets_between_messages() {
    let ext = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    let (mut p, mut out) = upgraded(Some(ext));
    for n in 1..=2 {
        // A fresh compressor per message, as the peers must.
        let req = deflate_raw(
            create(n).as_bytes(),
            &mut flate2::Compress::new(Compression::best(), false),
        );
        out.extend(p.feed(OUT, 10 * u64::from(n), &frame(0xC1, &req, Some(KEY))));
        for e in events(n) {
            let z = deflate_raw(
                e.as_bytes(),
                &mut flate2::Compress::new(Compression::best(), false),
            );
            out.extend(p.feed(IN, 10 * u64::from(n) + 1, &frame(0xC1, &z, None)));
        }
    }
    out.extend(p.finish(100));
    assert!(error_names(&out).is_empty(), "{:?}", error_names(&out));
    assert_eq!(calls(&out).len(), 2);
}

#[test]
fn message_cap_cuts_and_marks_truncated_and_keeps_the_window() {
    let ext = "permessage-deflate";
    let mut p = HttpParser::new(Limits {
        max_ws_message_bytes: 200,
        ..Limits::default()
    });
    let mut out = p.feed(OUT, 1, &upgrade_request(Some(ext)));
    out.extend(p.feed(IN, 2, &upgrade_response(Some(ext))));
    let mut client = flate2::Compress::new(Compression::default(), false);
    let mut server = flate2::Compress::new(Compression::default(), false);
    // `type` first, as clients write it (a cut message is known by it).
    let big = format!(
        "{{\"type\":\"response.create\",\"model\":\"m\",\"input\":\"{}\"}}",
        "z".repeat(5000)
    );
    out.extend(p.feed(
        OUT,
        10,
        &frame(0xC1, &deflate_raw(big.as_bytes(), &mut client), Some(KEY)),
    ));
    for e in events(1) {
        out.extend(p.feed(
            IN,
            11,
            &frame(0xC1, &deflate_raw(e.as_bytes(), &mut server), None),
        ));
    }
    // The next message refers back to the first: the window was kept.
    out.extend(p.feed(
        OUT,
        20,
        &frame(
            0xC1,
            &deflate_raw(create(2).as_bytes(), &mut client),
            Some(KEY),
        ),
    ));
    out.extend(p.finish(30));
    let names = error_names(&out);
    assert!(names.contains(&"ws_message_too_large"), "{names:?}");
    assert!(!names.contains(&"ws_inflate"), "{names:?}");
    let ex: Vec<_> = exchanges(&out)
        .into_iter()
        .filter(|e| e.websocket)
        .collect();
    assert_eq!(ex.len(), 2, "{names:?} {ex:?}");
    assert!(ex[0].request.body_truncated && ex[0].truncated);
    assert_eq!(ex[0].request.body.len(), 200);
    assert!(ex[0]
        .request
        .body
        .starts_with(b"{\"type\":\"response.create\""));
    // The cut request is still known as a Responses call.
    let c = llm::decode(&ex[0]).expect("decodes").expect("a call");
    assert!(c.truncated);
    assert_eq!(c.operation, "responses");
    // The second request is whole: the decompressor ran over the cut.
    assert_eq!(ex[1].request.body, create(2).as_bytes());
}

#[test]
fn malformed_frames_are_counted() {
    // Unmasked client frame: counted, still read.
    let (mut p, mut out) = upgraded(None);
    out.extend(p.feed(OUT, 10, &frame(0x81, create(1).as_bytes(), None)));
    assert!(error_names(&out).contains(&"ws_bad_mask"));
    // RSV1 without permessage-deflate: the message is lost, counted.
    out.extend(p.feed(OUT, 11, &frame(0xC1, b"zz", Some(KEY))));
    // A continuation with no start.
    out.extend(p.feed(OUT, 12, &frame(0x80, b"tail", Some(KEY))));
    // A reserved opcode: the direction is given up.
    out.extend(p.feed(OUT, 13, &frame(0x83, b"??", Some(KEY))));
    out.extend(p.feed(OUT, 14, &frame(0x81, create(2).as_bytes(), Some(KEY))));
    let names = error_names(&out);
    for n in ["ws_bad_rsv1", "ws_orphan_continuation", "ws_bad_frame"] {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
    out.extend(p.finish(20));
    // The first request (read before the bad frames) and the lost one.
    let ex: Vec<_> = exchanges(&out)
        .into_iter()
        .filter(|e| e.websocket)
        .collect();
    assert!(ex.iter().all(|e| e.truncated));
    assert!(ex.iter().any(|e| e.request.body == create(1).as_bytes()));
}

#[test]
fn control_frames_that_break_the_rules_lose_the_direction() {
    for bad in [
        frame(0x09, b"ping", None),      // fragmented control frame
        frame(0x89, &[b'x'; 126], None), // control frame over 125 bytes
        frame(0xA1, b"{}", None),        // RSV2
    ] {
        let (mut p, mut out) = upgraded(None);
        out.extend(p.feed(IN, 10, &bad));
        out.extend(p.feed(IN, 11, &frame(0x81, b"{}", None)));
        assert_eq!(error_names(&out), ["ws_bad_frame"], "{bad:02x?}");
    }
}

#[test]
fn gap_inside_a_payload_keeps_the_place_elsewhere_gives_up() {
    let (mut p, mut out) = upgraded(None);
    out.extend(p.feed(OUT, 10, &frame(0x81, create(1).as_bytes(), Some(KEY))));
    let evs = events(1);
    let f0 = frame(0x81, evs[0].as_bytes(), None);
    // 5 bytes of the first event's payload lost.
    out.extend(p.feed(IN, 11, &f0[..10]));
    out.extend(p.gap(IN, 5));
    out.extend(p.feed(IN, 12, &f0[15..]));
    for e in &evs[1..] {
        out.extend(p.feed(IN, 13, &frame(0x81, e.as_bytes(), None)));
    }
    let c = calls(&out);
    assert_eq!(c.len(), 1, "{:?}", error_names(&out));
    assert!(c[0].truncated, "an event was cut");
    assert_eq!(c[0].output.tool_calls.len(), 1, "later events still read");
    // A gap at a frame boundary: the next frame's start is unknown.
    out.extend(p.feed(OUT, 20, &frame(0x81, create(2).as_bytes(), Some(KEY))));
    out.extend(p.gap(IN, 3));
    let names = error_names(&out);
    assert!(names.contains(&"ws_lost_sync"), "{names:?}");
    let ex: Vec<_> = exchanges(&out)
        .into_iter()
        .filter(|e| e.websocket)
        .collect();
    assert_eq!(ex.len(), 2);
    assert!(ex[1].truncated && ex[1].response.is_none());
}

#[test]
fn sniff_tells_frames_from_other_bytes() {
    let one = frame(0x81, b"{\"type\":\"response.create\"}", Some(KEY));
    assert_eq!(sniff(&one, 1 << 20), Sniff::Frames { masked: true });
    let mut two = frame(0xC1, b"abc", None);
    two.extend(frame(0x89, b"", None));
    two.extend(b"more");
    assert_eq!(sniff(&two, 1 << 20), Sniff::Frames { masked: false });
    assert_eq!(sniff(&one[..1], 1 << 20), Sniff::NeedMore);
    assert_eq!(sniff(b"\x83\x02zz", 1 << 20), Sniff::No);
    assert_eq!(
        sniff(b"\x00\x02zz", 1 << 20),
        Sniff::No,
        "starts with a continuation"
    );
    // Non-minimal length.
    assert_eq!(sniff(b"\x81\x7e\x00\x05hello", 1 << 20), Sniff::No);
}

#[test]
fn mid_stream_socket_is_recognised_and_decoded() {
    let mut p = HttpParser::new(Limits::default());
    let mut out = p.feed(OUT, 10, &frame(0x81, create(3).as_bytes(), Some(KEY)));
    for e in events(3) {
        out.extend(p.feed(IN, 11, &frame(0x81, e.as_bytes(), None)));
    }
    out.extend(p.finish(20));
    assert_eq!(error_names(&out), ["ws_midstream"]);
    let c = calls(&out);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].provider, "openai");
    assert_eq!(c[0].operation, "responses");
    assert_eq!(c[0].output.tool_calls.len(), 1);
}

#[test]
fn server_messages_without_a_request_and_other_client_events_are_counted() {
    let (mut p, mut out) = upgraded(None);
    out.extend(p.feed(IN, 10, &frame(0x81, events(1)[0].as_bytes(), None)));
    out.extend(p.feed(
        OUT,
        11,
        &frame(0x81, b"{\"type\":\"response.steer\"}", Some(KEY)),
    ));
    out.extend(p.feed(OUT, 12, &frame(0x82, b"\x00\x01", Some(KEY))));
    assert_eq!(
        error_names(&out),
        [
            "ws_unpaired_message",
            "ws_client_event_ignored",
            "ws_binary_message"
        ]
    );
}

#[test]
fn inflate_garbage_is_counted_and_the_next_message_decodes() {
    let ext = "permessage-deflate; client_no_context_takeover";
    let (mut p, mut out) = upgraded(Some(ext));
    out.extend(p.feed(OUT, 10, &frame(0xC1, &[0xff; 40], Some(KEY))));
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::default());
    enc.write_all(create(1).as_bytes()).expect("write");
    let mut z = enc.finish().expect("finish");
    // A final block: allowed, the stream then restarts.
    z.extend_from_slice(&[]);
    out.extend(p.feed(OUT, 11, &frame(0xC1, &z, Some(KEY))));
    out.extend(p.finish(20));
    let names = error_names(&out);
    assert!(names.contains(&"ws_inflate"), "{names:?}");
    let ex: Vec<_> = exchanges(&out)
        .into_iter()
        .filter(|e| e.websocket)
        .collect();
    assert!(
        ex.iter().any(|e| e.request.body == create(1).as_bytes()),
        "{ex:?}"
    );
}

// ------------------------------------------------------------------ fixtures

fn fixture_calls(name: &str) -> (Vec<crate::event::LlmCall>, Vec<&'static str>) {
    let outs = run(&fixture(&format!("ws/{name}.cap")), Limits::default());
    (calls(&outs), error_names(&outs))
}

/// The recorded two-turn conversation, whatever the wire options.
fn assert_two_turns(name: &str) {
    let (c, errors) = fixture_calls(name);
    assert!(errors.is_empty(), "{name}: {errors:?}");
    assert_eq!(c.len(), 2, "{name}");
    let first = &c[0];
    assert_eq!(first.transport.as_deref(), Some("websocket"));
    assert_eq!(first.model.as_deref(), Some("gpt-5-mini"));
    assert!(first
        .system
        .as_ref()
        .is_some_and(|s| s.text.contains("aitrail WebSocket fixture")));
    assert_eq!(first.tools, ["run_command"]);
    assert_eq!(first.output.tool_calls.len(), 1, "{name}: {first:?}");
    assert_eq!(first.output.tool_calls[0].name, "run_command");
    assert_eq!(
        first.output.tool_calls[0].arguments,
        "{\"command\": \"ls -l /tmp\"}"
    );
    assert_eq!(
        first.output.reasoning.as_deref(),
        Some("Deciding what to run.")
    );
    let second = &c[1];
    assert_eq!(second.previous_response_id, first.response_id, "{name}");
    assert!(
        second.output.text.contains("notes.txt"),
        "{name}: {:?}",
        second.output
    );
    for call in &c {
        assert!(!call.truncated, "{name}");
        assert_eq!(call.usage.input_tokens, Some(57));
        assert_eq!(call.usage.output_tokens, Some(23));
        assert!(call.latency_ms.is_some() && call.ttft_ms.is_some());
        assert!(call
            .api_key_id
            .as_deref()
            .is_some_and(|k| k.starts_with("sk-")));
    }
}

#[test]
fn fixture_deflate_context_takeover() {
    assert_two_turns("ws_deflate_context_takeover");
}

#[test]
fn fixture_deflate_no_context_takeover_small_windows() {
    assert_two_turns("ws_deflate_no_context_takeover");
}

#[test]
fn fixture_uncompressed() {
    assert_two_turns("ws_uncompressed");
}

#[test]
fn fixture_fragmented_with_pings_uncompressed() {
    assert_two_turns("ws_fragmented_ping_uncompressed");
}

#[test]
fn fixture_deflate_fragmented_with_pings() {
    assert_two_turns("ws_deflate_fragmented_ping");
}

#[test]
fn fixtures_give_the_same_result_however_split() {
    for name in [
        "ws_deflate_context_takeover",
        "ws_deflate_fragmented_ping",
        "ws_fragmented_ping_uncompressed",
    ] {
        let records = fixture(&format!("ws/{name}.cap"));
        let whole = exchanges(&run(&records, Limits::default()));
        for step in [1usize, 3, 17, 250] {
            let split = exchanges(&run_split(&records, Limits::default(), |_, len| {
                (step..len).step_by(step).collect()
            }));
            assert_eq!(whole, split, "{name} split every {step}");
        }
    }
}

#[test]
fn fixture_error_event() {
    let (c, errors) = fixture_calls("ws_error_event");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(c.len(), 1);
    assert!(
        c[0].error
            .as_deref()
            .is_some_and(|e| e.contains("mock-error")),
        "{:?}",
        c[0].error
    );
    assert!(c[0].output.tool_calls.is_empty());
}

#[test]
fn fixture_truncated_connection() {
    let (c, _) = fixture_calls("ws_deflate_context_takeover_truncated");
    assert_eq!(c.len(), 2);
    assert!(!c[0].truncated);
    assert!(c[1].truncated, "the second answer was cut");
    assert!(c[1].response_id.is_some());
}

#[test]
fn fixture_gap_in_payload() {
    let (c, errors) = fixture_calls("ws_uncompressed_gap_in_payload");
    assert!(!errors.contains(&"ws_lost_sync"), "{errors:?}");
    assert_eq!(c.len(), 2);
    assert!(!c[0].truncated);
    assert!(c[1].truncated);
    // The events after the damaged one still count.
    assert!(c[1].usage.output_tokens.is_some() || !c[1].output.text.is_empty());
}

#[test]
fn fixture_midstream_without_context_takeover_decodes_whole() {
    let (c, errors) = fixture_calls("ws_deflate_no_context_takeover_midstream");
    assert_eq!(errors, ["ws_midstream"]);
    assert_eq!(c.len(), 1);
    assert!(!c[0].truncated);
    assert_eq!(c[0].operation, "responses");
    assert!(c[0].output.text.contains("notes.txt"));
    assert!(c[0].previous_response_id.is_some());
}

#[test]
fn fixture_midstream_with_context_takeover_counts_what_refers_back() {
    // The client's second request refers to bytes of the first, which
    // were never seen: it cannot be inflated, and says so; the server's
    // answer is still paired with its (lost) request.
    let outs = run(
        &fixture("ws/ws_deflate_context_takeover_midstream.cap"),
        Limits::default(),
    );
    let names = error_names(&outs);
    assert_eq!(names.first(), Some(&"ws_midstream"));
    assert!(names.contains(&"ws_inflate"), "{names:?}");
    let ex: Vec<_> = exchanges(&outs)
        .into_iter()
        .filter(|e| e.websocket)
        .collect();
    assert_eq!(ex.len(), 1, "{outs:?}");
    assert!(ex[0].truncated);
}

#[test]
fn an_open_socket_between_turns_is_idle_a_turn_in_progress_is_not() {
    let (mut p, _) = upgraded(None);
    assert!(p.is_idle_websocket());
    p.feed(OUT, 10, &frame(0x81, create(1).as_bytes(), Some(KEY)));
    assert!(!p.is_idle_websocket(), "a response.create waits");
    for e in events(1) {
        p.feed(IN, 11, &frame(0x81, e.as_bytes(), None));
    }
    assert!(p.is_idle_websocket());
    // Half a frame: a message in progress.
    p.feed(IN, 12, &frame(0x81, b"{\"type\":\"x\"}", None)[..4]);
    assert!(!p.is_idle_websocket());
    let mut q = HttpParser::new(Limits::default());
    q.feed(OUT, 1, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(!q.is_idle_websocket(), "not a WebSocket");
}
