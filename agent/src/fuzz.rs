//! Entry points of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run by
//! `cargo xtask fuzz`) and of the corpus replay test: each takes arbitrary
//! bytes and must neither panic nor hold more memory than its limits allow.
//! Captured bytes are hostile input; these are the decoders they reach.
//!
//! The connection targets read their input as a sequence of capture
//! operations, so that the fuzzer controls record boundaries, directions and
//! gaps as a capture would deliver them:
//!
//! ```text
//! op byte   bit 0: direction (0 = the process wrote, 1 = it read)
//!           bit 1: a gap of `len` bytes instead of data
//! len       u16, little-endian
//! data      `len` bytes (absent for a gap; cut short at the end of input)
//! ```
//!
//! [`encode_ops`] writes that format (the corpus seeds are the capture
//! fixtures, converted).

use crate::http::{
    eventstream, h2::PREFACE, sse, Direction, Exchange, HttpOutput, HttpParser, Limits,
};

/// Small limits, so that the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_header_bytes: 4096,
    max_body_bytes: 64 * 1024,
    max_ws_message_bytes: 16 * 1024,
};

/// What a parser may hold at most with [`LIMITS`]: per direction a head and
/// a body in progress, finished messages waiting for their pair (bounded by
/// the pending limit), and the protocol sniffer's buffer. A generous bound;
/// breaking it means a buffer grows with the input.
const MAX_HELD: usize = 64 * (4096 + 2 * 64 * 1024) + 2 * 64 * 1024;

/// One capture operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Data(Direction, Vec<u8>),
    Gap(Direction, u64),
}

/// Splits fuzz input into operations (total: any bytes give a list).
pub fn decode_ops(mut data: &[u8]) -> Vec<Op> {
    let mut ops = Vec::new();
    while let [op, lo, hi, rest @ ..] = data {
        let dir = if op & 1 == 0 {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        let len = usize::from(u16::from_le_bytes([*lo, *hi]));
        if op & 2 != 0 {
            ops.push(Op::Gap(dir, len as u64));
            data = rest;
        } else {
            let n = len.min(rest.len());
            ops.push(Op::Data(dir, rest[..n].to_vec()));
            data = &rest[n..];
        }
    }
    ops
}

/// Writes operations in the fuzz input format (data longer than 64 KiB is
/// split).
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Data(dir, bytes) => {
                for piece in bytes.chunks(usize::from(u16::MAX)) {
                    out.push(u8::from(*dir == Direction::Inbound));
                    out.extend_from_slice(
                        &u16::try_from(piece.len()).unwrap_or(u16::MAX).to_le_bytes(),
                    );
                    out.extend_from_slice(piece);
                }
            }
            Op::Gap(dir, len) => {
                out.push(2 | u8::from(*dir == Direction::Inbound));
                out.extend_from_slice(&(u16::try_from(*len).unwrap_or(u16::MAX)).to_le_bytes());
            }
        }
    }
    out
}

/// One connection through the HTTP parser (HTTP/1.x or HTTP/2, as the bytes
/// say), each exchange through the LLM and MCP decoders.
pub fn connection(data: &[u8]) {
    run_ops(&decode_ops(data));
}

/// Like [`connection`], with the HTTP/2 client preface written first, so
/// that the fuzzer spends its time inside HTTP/2 and HPACK.
pub fn h2_connection(data: &[u8]) {
    let mut ops = vec![Op::Data(Direction::Outbound, PREFACE.to_vec())];
    ops.extend(decode_ops(data));
    run_ops(&ops);
}

/// A WebSocket connection: the first byte chooses the upgrade (bit 7: none,
/// the ops carry their own or start mid-way; bit 0: permessage-deflate;
/// bit 1: `client_no_context_takeover`; bit 2: `server_no_context_takeover`),
/// the rest are capture ops holding frames, so that the fuzzer spends its
/// time in the frame decoder, the inflater and the pairing.
pub fn websocket(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut ops = Vec::new();
    if sel & 0x80 == 0 {
        let mut ext = String::new();
        if sel & 1 != 0 {
            ext.push_str("Sec-WebSocket-Extensions: permessage-deflate");
            if sel & 2 != 0 {
                ext.push_str("; client_no_context_takeover");
            }
            if sel & 4 != 0 {
                ext.push_str("; server_no_context_takeover");
            }
            ext.push_str("\r\n");
        }
        let upgrade = "GET /v1/responses HTTP/1.1\r\nHost: api.openai.com\r\n\
                       Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let accept = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\n{ext}\r\n"
        );
        ops.push(Op::Data(Direction::Outbound, upgrade.as_bytes().to_vec()));
        ops.push(Op::Data(Direction::Inbound, accept.into_bytes()));
    }
    ops.extend(decode_ops(rest));
    run_ops(&ops);
}

fn run_ops(ops: &[Op]) {
    let mut p = HttpParser::new(LIMITS);
    let mut ts = 1_000_000_000u64;
    for op in ops {
        ts += 1_000_000;
        let out = match op {
            Op::Data(dir, bytes) => p.feed(*dir, ts, bytes),
            Op::Gap(dir, len) => p.gap(*dir, *len),
        };
        consume(out);
        let held = p.buffered_bytes();
        assert!(held <= MAX_HELD, "parser holds {held} bytes");
    }
    consume(p.finish(ts + 1));
}

fn consume(out: Vec<HttpOutput>) {
    for o in out {
        if let HttpOutput::Exchange(ex) = o {
            exchange(&ex);
        }
    }
}

fn exchange(ex: &Exchange) {
    let d = crate::llm::decode_lenient(ex);
    if let Some(call) = d.call {
        assert!(call.output.tool_calls.len() <= crate::llm::MAX_TOOL_CALLS);
    }
    if let Some(m) = crate::mcp::decode(ex) {
        assert!(m.calls.len() + m.answers.len() <= crate::mcp::MAX_MESSAGES);
        // The older transport's halves, joined as the pipeline does.
        if let Some(session) = &m.session {
            let mut join = crate::mcp::SseJoin::new(8, u64::MAX);
            let key = crate::mcp::JoinKey {
                tgid: 1,
                host: m.server.host.clone(),
                port: m.server.port,
                session: session.clone(),
            };
            let env = crate::util::Envelope::new();
            for c in &m.calls {
                let mut ev = env.event(crate::event::kind::TOOL_CALL, 0, None);
                ev.tool = Some(crate::event::ToolCall {
                    call_id: c.id.clone(),
                    ..crate::event::ToolCall::default()
                });
                let _ = join.hold(key.clone(), c.id.clone(), ev, 0);
            }
            let _ = join.answer(&key, &m.answers, true, 0);
            assert!(join.is_empty());
        }
    }
}

/// An HPACK header block, decoded twice by one decoder (so that the
/// dynamic table carries state into the second).
pub fn hpack(data: &[u8]) {
    let mut d = crate::http::h2::HpackDecoder::new(true);
    let (a, b) = data.split_at(data.len() / 2);
    for block in [a, b] {
        if d.decode(block, 16 * 1024).is_err() {
            d.lose_state();
        }
        assert!(d.held() <= 64 * 1024, "HPACK table holds {}", d.held());
    }
}

pub fn sse(data: &[u8]) {
    let events = sse::parse_sse(data);
    let data_bytes: usize = events.iter().map(|e| e.data.len()).sum();
    // Replacement characters may triple invalid bytes; nothing more.
    assert!(data_bytes <= 3 * data.len());
}

pub fn eventstream(data: &[u8]) {
    let d = eventstream::decode(data);
    let payload: usize = d.messages.iter().map(|m| m.payload.len()).sum();
    assert!(payload <= data.len());
    assert!(d.unread <= data.len());
}

/// One exchange on an LLM API: the first byte picks the API path and the
/// response content type, the rest is request body and response body,
/// split at the first `\0`.
pub fn llm_exchange(data: &[u8]) {
    use crate::http::{Request, Response};
    const PATHS: [&str; 12] = [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/responses",
        "/v1beta/models/gemini-2.5-pro:generateContent",
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
        "/api/chat",
        "/api/generate",
        "/v1/embeddings",
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream",
        "/model/meta.llama3-1-8b-instruct-v1%3A0/invoke",
        "/model/anthropic.claude-3-haiku%3A0/invoke-with-response-stream",
        "/mcp",
    ];
    const TYPES: [&str; 5] = [
        "application/json",
        "text/event-stream",
        "application/x-ndjson",
        "application/vnd.amazon.eventstream",
        "",
    ];
    let Some((&sel, bodies)) = data.split_first() else {
        return;
    };
    let (req_body, resp_body) = match bodies.iter().position(|&b| b == 0) {
        Some(i) => (&bodies[..i], &bodies[i + 1..]),
        None => (bodies, &[][..]),
    };
    let ctype = TYPES[usize::from(sel >> 4) % TYPES.len()];
    let ex = Exchange {
        role: crate::event::Role::Client,
        request: Request {
            method: "POST".into(),
            path: PATHS[usize::from(sel & 15) % PATHS.len()].into(),
            headers: vec![("host".into(), "api.example.com".into())],
            body: req_body.to_vec(),
            ..Request::default()
        },
        response: Some(Response {
            status: if sel & 8 == 0 { 200 } else { 429 },
            headers: vec![("content-type".into(), ctype.into())],
            body: resp_body.to_vec(),
            ..Response::default()
        }),
        t_request_start: 1,
        t_request_end: 2,
        t_response_start: Some(3),
        t_first_body: Some(4),
        t_response_end: Some(5),
        truncated: false,
        websocket: sel & 4 != 0,
    };
    exchange(&ex);
}

/// One ring-buffer record from the kernel side.
pub fn record(data: &[u8]) {
    let _ = crate::capture::records::decode(data);
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, for the corpus replay test.
pub const TARGETS: &[(&str, Target)] = &[
    ("connection", connection),
    ("h2_connection", h2_connection),
    ("websocket", websocket),
    ("hpack", hpack),
    ("sse", sse),
    ("eventstream", eventstream),
    ("llm_exchange", llm_exchange),
    ("record", record),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        let ops = vec![
            Op::Data(Direction::Outbound, b"GET / HTTP/1.1\r\n\r\n".to_vec()),
            Op::Gap(Direction::Inbound, 7),
            Op::Data(Direction::Inbound, vec![1; 70_000]),
        ];
        let back = decode_ops(&encode_ops(&ops));
        assert_eq!(back.len(), 4, "the long record is split");
        assert_eq!(back[0], ops[0]);
        assert_eq!(back[1], ops[1]);
    }

    /// Every corpus file and every regression input of every target runs
    /// without a panic (the fuzzer's findings stay fixed).
    #[test]
    fn the_fuzz_corpus_replays_cleanly() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests");
        let mut ran = 0;
        for (name, target) in TARGETS {
            for dir in ["fuzz-corpus", "fuzz-regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                    continue;
                };
                for e in entries.flatten() {
                    let data = std::fs::read(e.path()).unwrap();
                    target(&data);
                    ran += 1;
                }
            }
        }
        assert!(ran > 0, "no corpus under tests/fuzz-corpus");
    }
}
