//! Criterion benchmarks, one group per decoder, over real inputs: the
//! capture fixtures of tests/fixtures (generated to the byte of what the
//! SDKs and servers send, their READMEs say how) and the synthesised
//! 30-turn agent conversations of `aitrail::replay::synth` (the heavy case:
//! every request replays the whole history).
//!
//! Run by `cargo xtask bench decoders` (which prints a Markdown table for
//! docs/benchmarks.md), or `cargo bench -p aitrail --bench decode [-- FILTER]`.
//!
//! Throughput is the plaintext each iteration decodes, in bytes: the
//! capture's bytes for the HTTP, HTTP/2 and WebSocket parsers, the response
//! body for SSE, the request and response bodies for the LLM and MCP
//! decoders. In the `llm*` groups each iteration decodes exactly one
//! `llm.call` (the bench checks it does), so calls/s is 1 / time.
//!
//! Groups:
//! - `http1`: the HTTP/1.1 stream parser (heads, Content-Length, chunked,
//!   gzip, keep-alive) on whole connections;
//! - `http2`: the HTTP/2 parser (frames, HPACK, gzip) on whole connections;
//! - `websocket`: the WebSocket frame decoder and inflater (upgrade
//!   included) on whole connections;
//! - `sse`: server-sent event parsing of streamed answers;
//! - `llm`: `aitrail::llm::decode` of one parsed exchange per provider and
//!   shape;
//! - `llm_by_value`: the same without the typed request decoding (every
//!   request body read as a `serde_json::Value`, as before it);
//! - `llm_e2e`: the same from the capture's bytes (HTTP parser + decoder);
//! - `mcp`: `aitrail::mcp::decode` of one parsed exchange.

use std::hint::black_box;
use std::path::PathBuf;

use aitrail::capture::records::Record;
use aitrail::http::{sse, Direction, Exchange, HttpOutput, HttpParser, Limits};
use aitrail::replay::mix::{self, CapRecord, Capture};
use aitrail::replay::synth;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// One connection's capture operations.
#[derive(Clone)]
enum Op {
    Data(Direction, u64, Vec<u8>),
    Gap(Direction, u64),
}

struct Input {
    name: String,
    ops: Vec<Op>,
}

impl Input {
    fn bytes(&self) -> u64 {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Data(_, _, b) => b.len() as u64,
                Op::Gap(..) => 0,
            })
            .sum()
    }
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// `tests/fixtures/<rel>.cap`.
fn fixture(rel: &str) -> Input {
    let path = fixtures_dir().join(format!("{rel}.cap"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cap: Capture = mix::parse(rel, &raw).unwrap_or_else(|e| panic!("{e}"));
    let dir = |write| {
        if write {
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    };
    let ops = cap
        .records
        .into_iter()
        .map(|r| match r {
            CapRecord::Data { write, ts, bytes } => Op::Data(dir(write), ts, bytes),
            CapRecord::Gap { write, len } => Op::Gap(dir(write), len),
        })
        .collect();
    Input {
        name: rel.rsplit('/').next().unwrap_or(rel).to_owned(),
        ops,
    }
}

/// The synthesised conversation's connection: `turns` calls, the last one
/// replaying 29 turns of history.
fn conversation(turns: usize, anthropic: bool) -> Input {
    let ops = synth::conversation(turns, anthropic)
        .into_iter()
        .filter_map(|r| match r {
            Record::Tls(c) => {
                let dir = if c.dir == agent_common::dir::WRITE {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                };
                Some(Op::Data(dir, c.hdr.ktime_ns, c.data))
            }
            _ => None,
        })
        .collect();
    let api = if anthropic {
        "anthropic"
    } else {
        "openai_chat"
    };
    Input {
        name: format!("synth_{api}_stream_{turns}_turns"),
        ops,
    }
}

/// Runs a connection through the stream parser; the outputs.
fn parse(input: &Input) -> Vec<HttpOutput> {
    let mut p = HttpParser::new(Limits::default());
    let mut out = Vec::new();
    let mut last = 0;
    for op in &input.ops {
        match op {
            Op::Data(dir, ts, bytes) => {
                last = *ts;
                out.extend(p.feed(*dir, *ts, bytes));
            }
            Op::Gap(dir, len) => out.extend(p.gap(*dir, *len)),
        }
    }
    out.extend(p.finish(last + 1));
    out
}

fn exchanges(input: &Input) -> Vec<Exchange> {
    parse(input)
        .into_iter()
        .filter_map(|o| match o {
            HttpOutput::Exchange(ex) => Some(ex),
            HttpOutput::Error(_) => None,
        })
        .collect()
}

/// The connection's last exchange (the longest history for the synthesised
/// conversations; the only one for most fixtures).
fn last_exchange(input: &Input) -> Exchange {
    exchanges(input)
        .pop()
        .unwrap_or_else(|| panic!("{}: no exchange", input.name))
}

fn body_bytes(ex: &Exchange) -> u64 {
    (ex.request.body.len() + ex.response.as_ref().map_or(0, |r| r.body.len())) as u64
}

fn stream_parsers(c: &mut Criterion) {
    let groups: [(&str, Vec<Input>); 3] = [
        (
            "http1",
            vec![
                fixture("llm/openai_chat_plain"),
                fixture("llm/anthropic_messages_stream"),
                fixture("llm/openai_chat_gzip_parallel_tool_calls"),
                fixture("http/keepalive_three_exchanges"),
                fixture("http/chunked_extensions_trailers"),
                conversation(30, false),
            ],
        ),
        (
            "http2",
            vec![
                fixture("h2/openai_chat_plain"),
                fixture("h2/openai_chat_stream"),
                fixture("h2/openai_chat_gzip"),
                fixture("h2/dynamic_table_three_requests"),
                fixture("h2/two_streams_interleaved"),
            ],
        ),
        (
            "websocket",
            vec![
                fixture("ws/ws_uncompressed"),
                fixture("ws/ws_deflate_context_takeover"),
                fixture("ws/ws_deflate_no_context_takeover"),
            ],
        ),
    ];
    for (group, inputs) in groups {
        let mut g = c.benchmark_group(group);
        for input in &inputs {
            let n = exchanges(input).len();
            assert!(n > 0, "{group}/{}: no exchange", input.name);
            g.throughput(Throughput::Bytes(input.bytes()));
            g.bench_function(input.name.as_str(), |b| b.iter(|| parse(black_box(input))));
        }
        g.finish();
    }
}

fn sse_events(c: &mut Criterion) {
    let mut g = c.benchmark_group("sse");
    for input in [
        fixture("llm/openai_chat_stream_tool_calls"),
        fixture("llm/anthropic_messages_stream_tool_use"),
        fixture("llm/openai_responses_stream_function_call_reasoning"),
        fixture("llm/gemini_stream_text_usage"),
        conversation(30, true),
    ] {
        let ex = last_exchange(&input);
        let body = ex.response.map(|r| r.body).unwrap_or_default();
        assert!(
            !sse::parse_sse(&body).is_empty(),
            "{}: no event",
            input.name
        );
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(input.name.as_str(), |b| {
            b.iter(|| sse::parse_sse(black_box(&body)));
        });
    }
    g.finish();
}

/// One exchange of each provider and shape the decoders know.
fn llm_inputs() -> Vec<Input> {
    vec![
        fixture("llm/openai_chat_plain"),
        fixture("llm/openai_chat_stream_tool_calls"),
        fixture("llm/openai_responses_function_call"),
        fixture("llm/openai_responses_stream_function_call_reasoning"),
        fixture("llm/anthropic_messages_plain"),
        fixture("llm/anthropic_messages_stream_tool_use"),
        fixture("llm/gemini_generate_function_call"),
        fixture("llm/gemini_stream_text_usage"),
        fixture("llm/ollama_chat_stream_tool_call"),
        fixture("llm/ollama_generate_plain"),
        fixture("llm/bedrock_converse_tool_use"),
        fixture("llm/bedrock_converse_stream_tool_use"),
        fixture("llm/bedrock_invoke_anthropic_stream"),
        conversation(30, false),
        conversation(30, true),
    ]
}

fn llm(c: &mut Criterion) {
    let inputs = llm_inputs();
    let mut g = c.benchmark_group("llm");
    for input in &inputs {
        let ex = last_exchange(input);
        let call = aitrail::llm::decode(&ex)
            .unwrap_or_else(|e| panic!("{}: {e}", input.name))
            .unwrap_or_else(|| panic!("{}: not an LLM call", input.name));
        assert!(call.error.is_none(), "{}: {:?}", input.name, call.error);
        g.throughput(Throughput::Bytes(body_bytes(&ex)));
        g.bench_function(input.name.as_str(), |b| {
            b.iter(|| aitrail::llm::decode(black_box(&ex)));
        });
    }
    g.finish();
    // The same without the typed request decoding (every body read as a
    // `serde_json::Value`, as before it): the before/after comparison, in
    // the same run.
    let mut g = c.benchmark_group("llm_by_value");
    for input in &inputs {
        let ex = last_exchange(input);
        g.throughput(Throughput::Bytes(body_bytes(&ex)));
        g.bench_function(input.name.as_str(), |b| {
            b.iter(|| aitrail::llm::decode_lenient_by_value(black_box(&ex)));
        });
    }
    g.finish();
    // From the capture's bytes: what one call costs the pipeline's
    // decode stage in all.
    let mut g = c.benchmark_group("llm_e2e");
    for input in &inputs {
        let ex = last_exchange(input);
        let one = Input {
            name: input.name.clone(),
            ops: if exchanges(input).len() == 1 {
                input.ops.clone()
            } else {
                // The synthesised conversations: the last call's records.
                last_call_ops(input)
            },
        };
        assert_eq!(exchanges(&one).len(), 1, "{}", one.name);
        assert_eq!(last_exchange(&one), ex, "{}", one.name);
        g.throughput(Throughput::Bytes(one.bytes()));
        g.bench_function(one.name.as_str(), |b| {
            b.iter(|| {
                for ex in exchanges(black_box(&one)) {
                    black_box(aitrail::llm::decode(&ex).ok());
                }
            });
        });
    }
    g.finish();
}

/// The records of the connection's last exchange: from the last write
/// that follows a read.
fn last_call_ops(input: &Input) -> Vec<Op> {
    let start = input
        .ops
        .windows(2)
        .rposition(|w| {
            matches!(
                (&w[0], &w[1]),
                (
                    Op::Data(Direction::Inbound, ..),
                    Op::Data(Direction::Outbound, ..)
                )
            )
        })
        .map_or(0, |i| i + 1);
    input.ops[start..].to_vec()
}

fn mcp(c: &mut Criterion) {
    let mut g = c.benchmark_group("mcp");
    for input in [
        fixture("mcp/mcp_initialize"),
        fixture("mcp/mcp_tools_list"),
        fixture("mcp/mcp_tools_call_json"),
        fixture("mcp/mcp_tools_call_sse"),
        fixture("mcp/mcp_batch"),
    ] {
        let ex = last_exchange(&input);
        assert!(
            aitrail::mcp::decode(&ex).is_some(),
            "{}: not MCP",
            input.name
        );
        g.throughput(Throughput::Bytes(body_bytes(&ex)));
        g.bench_function(input.name.as_str(), |b| {
            b.iter(|| aitrail::mcp::decode(black_box(&ex)));
        });
    }
    g.finish();
}

criterion_group!(benches, stream_parsers, sse_events, llm, mcp);
criterion_main!(benches);
