//! The typed decoding (`fast.rs`: request bodies, and the stream events
//! of OpenAI chat and Anthropic) gives the call the `Value` walk gives,
//! byte for byte, and the same problems: on every capture fixture, on the
//! synthesised long conversations, and on request bodies and stream events
//! bent out of shape (wrong types, duplicated keys, arrays for objects,
//! invalid JSON in fields the typed structs skip).

use proptest::prelude::*;
use serde_json::{json, Value};

use super::super::route::Api;
use super::super::{anthropic, decode_lenient, decode_lenient_by_value, fast, openai, Decoded};
use crate::capture::records::Record;
use crate::http::testutil::{exchanges, fixture, fixture_names, run};
use crate::http::{Direction, Exchange, HttpParser, Limits};

/// The decoded call as the event would hold it, and the problems' names.
fn seen(d: &Decoded) -> (String, Vec<&'static str>) {
    (
        serde_json::to_string(&d.call).unwrap_or_default(),
        d.problems
            .iter()
            .map(super::super::LlmError::name)
            .collect(),
    )
}

fn same_both_ways(ex: &Exchange, what: &str) {
    let typed = seen(&decode_lenient(ex));
    let by_value = seen(&decode_lenient_by_value(ex));
    assert_eq!(typed, by_value, "{what}");
    // And the errors' messages (the counters' detail in the log).
    let t: Vec<String> = decode_lenient(ex)
        .problems
        .iter()
        .map(ToString::to_string)
        .collect();
    let v: Vec<String> = decode_lenient_by_value(ex)
        .problems
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(t, v, "{what}");
}

#[test]
fn every_fixture_decodes_the_same_both_ways() {
    let mut n = 0;
    for dir in ["llm", "h2", "ws", "http", "mcp"] {
        for name in fixture_names(dir) {
            for ex in exchanges(&run(&fixture(&name), Limits::default())) {
                same_both_ways(&ex, &name);
                n += 1;
            }
        }
    }
    assert!(n > 100, "only {n} exchanges");
}

fn synth_exchanges(turns: usize, anthropic: bool) -> Vec<Exchange> {
    let mut p = HttpParser::new(Limits::default());
    let mut outs = Vec::new();
    for r in crate::replay::synth::conversation(turns, anthropic) {
        if let Record::Tls(c) = r {
            let dir = if c.dir == agent_common::dir::WRITE {
                Direction::Outbound
            } else {
                Direction::Inbound
            };
            outs.extend(p.feed(dir, c.hdr.ktime_ns, &c.data));
        }
    }
    outs.extend(p.finish(u64::MAX / 2));
    exchanges(&outs)
}

#[test]
fn long_conversations_decode_the_same_both_ways() {
    for anthropic in [false, true] {
        let exs = synth_exchanges(30, anthropic);
        assert_eq!(exs.len(), 30);
        let api = if anthropic {
            Api::Anthropic
        } else {
            Api::OpenAiChat
        };
        for (i, ex) in exs.iter().enumerate() {
            same_both_ways(ex, &format!("synth anthropic={anthropic} call {i}"));
            // The typed way is the one taken (not a fallback).
            assert!(fast::request(api, &ex.request.body).is_some(), "call {i}");
        }
        // The last request holds the whole history.
        let call = decode_lenient(&exs[29]).call.expect("a call");
        assert!(call.messages.len() >= 88, "{}", call.messages.len());
    }
}

/// The OpenAI chat fixture's exchange with its request body replaced.
fn with_body(body: &[u8]) -> Exchange {
    with_body_of("llm/openai_chat_plain.cap", body)
}

/// A fixture's (last) exchange with its request body replaced.
fn with_body_of(name: &str, body: &[u8]) -> Exchange {
    let mut ex = exchanges(&run(&fixture(name), Limits::default()))
        .pop()
        .expect("an exchange");
    ex.request.body = body.to_vec();
    ex
}

/// A chat request using every field the decoder reads.
fn full_request() -> Value {
    json!({
        "model": "gpt-4o",
        "stream": false,
        "user": "u-1",
        "safety_identifier": "s-1",
        "messages": [
            {"role": "system", "content": "be brief\n\"quoted\""},
            {"role": "developer", "content": [{"type": "text", "text": "dev"}, "raw part",
                {"type": "refusal", "refusal": "no"}, {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "user", "content": "hi \u{e9}\u{1F600}", "name": "bob"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "call_2", "type": "function", "function": null}],
             "function_call": {"name": "legacy", "arguments": "{}"}},
            {"role": "tool", "tool_call_id": "call_1", "content": "out"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}},
            {"type": "custom", "custom": {"name": "c"}},
            {"name": "bare"},
            {"type": "function", "function": {"description": "no name"}}
        ],
        "functions": [{"name": "legacy"}, {"description": "none"}],
        "temperature": 0.2
    })
}

/// An Anthropic messages request using every field the decoder reads.
fn full_anthropic_request() -> Value {
    json!({
        "model": "claude-sonnet-4",
        "max_tokens": 1024,
        "stream": true,
        "metadata": {"user_id": "u-1"},
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}},
                   {"type": "other", "text": "skipped"}, {"text": "untyped"}],
        "messages": [
            {"role": "user", "content": "hi \n \"there\""},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "let me look"},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "/etc/hosts", "n": [1, 2.5]}},
                {"type": "tool_use", "id": "toolu_2", "name": "noinput"},
                {"type": "tool_use", "id": "toolu_3", "name": "nullinput", "input": null}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "127.0.0.1 localhost"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                 "content": [{"type": "text", "text": "failed"}, {"type": "image", "source": {}}]},
                {"type": "tool_result", "tool_use_id": "toolu_3"}]},
            {"role": "user", "content": [{"type": "image", "source": {"data": "AAAA"}}]},
            {"role": "assistant"}
        ],
        "tools": [{"name": "read", "input_schema": {"type": "object"}}, {"type": "web_search"}]
    })
}

#[test]
fn a_full_anthropic_request_decodes_the_same_both_ways() {
    let body = serde_json::to_vec(&full_anthropic_request()).expect("json");
    let ex = with_body_of("llm/anthropic_messages_plain.cap", &body);
    same_both_ways(&ex, "full anthropic");
    assert!(fast::request(Api::Anthropic, &body).is_some());
    let call = decode_lenient(&ex).call.expect("a call");
    assert_eq!(call.tools, ["read"]);
    assert_eq!(call.messages.len(), 7);
}

#[test]
fn a_full_request_decodes_the_same_both_ways() {
    let body = serde_json::to_vec(&full_request()).expect("json");
    let ex = with_body(&body);
    same_both_ways(&ex, "full");
    assert!(fast::request(Api::OpenAiChat, &body).is_some());
    let call = decode_lenient(&ex).call.expect("a call");
    assert_eq!(call.messages.len(), 5);
    assert_eq!(call.tools, ["f", "c", "bare", "legacy"]);
}

#[test]
fn bodies_the_typed_structs_refuse_decode_as_before() {
    let cases: &[&[u8]] = &[
        // Invalid JSON only in a field the typed structs skip.
        b"{\"model\":\"m\",\"temperature\":1e400,\"messages\":[]}",
        b"{\"model\":\"m\",\"x\":\"\\ud800\",\"messages\":[]}",
        b"{\"model\":\"m\",\"x\":\"\xff\xfe\",\"messages\":[]}",
        // Deeper than a `Value` parse allows, in a skipped field.
        &[b"{\"model\":\"m\",\"x\":".as_slice(), &[b'['; 200], &[b']'; 200], b"}"].concat(),
        // Wrong types and shapes.
        b"{\"model\":5,\"messages\":[]}",
        b"{\"model\":\"m\",\"stream\":\"yes\"}",
        b"{\"model\":\"m\",\"messages\":{\"role\":\"user\"}}",
        b"{\"model\":\"m\",\"messages\":[[\"user\",\"hi\"]]}",
        b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":{\"text\":\"x\"}}]}",
        b"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[null,3,{\"text\":7}]}]}",
        b"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{\"b\":1,\"a\":2}}}]}]}",
        b"{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"function_call\":\"f\"}]}",
        b"{\"model\":\"m\",\"tools\":[\"f\",{\"function\":\"g\"}]}",
        // Duplicated keys: the last one counts.
        b"{\"model\":\"a\",\"model\":\"b\",\"messages\":[{\"role\":\"user\",\"role\":\"system\",\"content\":\"x\"}]}",
        b"{\"messages\":[{\"content\":[{\"text\":\"a\",\"text\":\"b\"}]}]}",
        // Not an object; not JSON; empty; trailing bytes.
        b"[{\"model\":\"m\"}]",
        b"\"m\"",
        b"{\"model\":\"m\"",
        b"",
        b"{\"model\":\"m\"} x",
        b"{} ",
    ];
    for body in cases {
        same_both_ways(&with_body(body), &String::from_utf8_lossy(body));
    }
}

/// A JSON value of any type, small.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[a-z\"\\\\\n]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("text".to_owned()),
                        Just("role".to_owned()),
                        Just("content".to_owned()),
                        Just("name".to_owned()),
                        Just("function".to_owned()),
                        Just("arguments".to_owned()),
                        Just("type".to_owned()),
                        Just("input".to_owned()),
                        Just("is_error".to_owned()),
                        "[a-z]{1,3}".prop_map(String::from),
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Paths to every value inside `v`.
fn paths(v: &Value, here: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                here.push(k.clone());
                paths(x, here, out);
                here.pop();
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                here.push(i.to_string());
                paths(x, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn replace_at(v: &mut Value, path: &[String], new: Value) {
    let Some((first, rest)) = path.split_first() else {
        *v = new;
        return;
    };
    let next = match v {
        Value::Object(m) => m.get_mut(first),
        Value::Array(items) => first.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    };
    if let Some(next) = next {
        replace_at(next, rest, new);
    }
}

/// A streamed chat answer using every field the stream decoder reads.
fn chat_chunks() -> Vec<Value> {
    let chunk = |choice: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
               "model": "gpt-4o", "system_fingerprint": "fp_1", "choices": [choice]})
    };
    vec![
        chunk(
            json!({"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}),
        ),
        chunk(json!({"index": 0, "delta": {"content": "Hel\"lo\n"}, "finish_reason": null})),
        chunk(json!({"index": 0, "delta": {"reasoning_content": "think"}})),
        chunk(json!({"index": 0, "delta": {"reasoning": "more"}})),
        chunk(json!({"index": 1, "delta": {"content": "other choice"}})),
        chunk(json!({"index": 0, "delta": {"refusal": "no"}})),
        chunk(
            json!({"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "run", "arguments": ""}}]}}),
        ),
        chunk(
            json!({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"cmd\":"}}]}}),
        ),
        chunk(
            json!({"index": 0, "delta": {"function_call": {"name": "legacy", "arguments": "{}"}}}),
        ),
        chunk(json!({"index": 0, "delta": {}, "finish_reason": "tool_calls"})),
        json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5,
               "completion_tokens_details": {"reasoning_tokens": 2}}}),
        json!({"error": {"code": "server_error", "message": "boom"}}),
    ]
}

/// A streamed Anthropic answer using every event the decoder reads.
fn anthropic_events() -> Vec<Value> {
    vec![
        json!({"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
        json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
        json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi \u{e9}"}}),
        json!({"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta", "text": "no start"}}),
        json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {}}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"path\":"}}),
        json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"/etc\"}"}}),
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
        json!({"type": "message_stop"}),
    ]
}

/// A stream fixture's exchange with its response body made of `events`
/// (`data:` lines, with the `event:` names Anthropic sends when `named`).
fn with_stream(name: &str, events: &[Value], named: bool) -> Exchange {
    let mut body = Vec::new();
    for e in events {
        if named {
            if let Some(t) = e.get("type").and_then(Value::as_str) {
                body.extend_from_slice(format!("event: {t}\n").as_bytes());
            }
        }
        body.extend_from_slice(b"data: ");
        body.extend_from_slice(&serde_json::to_vec(e).expect("json"));
        body.extend_from_slice(b"\n\n");
    }
    if !named {
        body.extend_from_slice(b"data: [DONE]\n\n");
    }
    let mut ex = exchanges(&run(&fixture(name), Limits::default()))
        .pop()
        .expect("an exchange");
    ex.response.as_mut().expect("a response").body = body;
    ex
}

#[test]
fn full_streams_decode_the_same_both_ways() {
    // The typed way is the one taken (not a fallback) for every chunk,
    // and for every Anthropic delta.
    for c in chat_chunks() {
        let text = serde_json::to_string(&c).expect("json");
        assert!(openai::typed_chunk(&text).is_some(), "{text}");
    }
    let deltas = anthropic_events()
        .iter()
        .map(|e| serde_json::to_string(e).expect("json"))
        .filter(|t| anthropic::typed_delta(t).is_some())
        .count();
    assert_eq!(deltas, 6);
    let ex = with_stream("llm/openai_chat_stream.cap", &chat_chunks(), false);
    same_both_ways(&ex, "chat");
    let call = decode_lenient(&ex).call.expect("a call");
    assert_eq!(call.output.text, "Hel\"lo\n");
    assert_eq!(call.output.tool_calls.len(), 2);
    assert_eq!(call.error.as_deref(), Some("server_error: boom"));
    let ex = with_stream(
        "llm/anthropic_messages_stream.cap",
        &anthropic_events(),
        true,
    );
    same_both_ways(&ex, "anthropic");
    let call = decode_lenient(&ex).call.expect("a call");
    assert!(
        call.output.text.starts_with("Hi \u{e9}"),
        "{}",
        call.output.text
    );
    assert_eq!(call.output.reasoning.as_deref(), Some("hmm"));
    assert_eq!(call.output.tool_calls[0].arguments, r#"{"path":"/etc"}"#);
}

/// One event of `events` with one of its values replaced.
fn bend(
    mut events: Vec<Value>,
    which: prop::sample::Index,
    pick: prop::sample::Index,
    new: Value,
) -> Vec<Value> {
    let i = which.index(events.len());
    let mut all = Vec::new();
    paths(&events[i], &mut Vec::new(), &mut all);
    let path = pick.get(&all).clone();
    replace_at(&mut events[i], &path, new);
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any value of a streamed chat answer replaced: both ways agree.
    #[test]
    fn bent_chat_streams_decode_the_same_both_ways(which in any::<prop::sample::Index>(), pick in any::<prop::sample::Index>(), new in any_value()) {
        let events = bend(chat_chunks(), which, pick, new);
        same_both_ways(&with_stream("llm/openai_chat_stream.cap", &events, false), &format!("{events:?}"));
    }

    /// The same for Anthropic.
    #[test]
    fn bent_anthropic_streams_decode_the_same_both_ways(which in any::<prop::sample::Index>(), pick in any::<prop::sample::Index>(), new in any_value()) {
        let events = bend(anthropic_events(), which, pick, new);
        same_both_ways(&with_stream("llm/anthropic_messages_stream.cap", &events, true), &format!("{events:?}"));
    }

    /// Any bytes cut out of, or spliced into, either stream.
    #[test]
    fn damaged_streams_decode_the_same_both_ways(anthropic in any::<bool>(), at in 0usize..100_000, len in 0usize..8, junk in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut ex = if anthropic {
            with_stream("llm/anthropic_messages_stream.cap", &anthropic_events(), true)
        } else {
            with_stream("llm/openai_chat_stream.cap", &chat_chunks(), false)
        };
        let body = &mut ex.response.as_mut().expect("a response").body;
        let start = at % (body.len() + 1);
        let end = (start + len).min(body.len());
        body.splice(start..end, junk);
        same_both_ways(&ex, "damaged");
    }

    /// Any value of the full request replaced by any other value: both
    /// ways agree.
    #[test]
    fn bent_requests_decode_the_same_both_ways(pick in any::<prop::sample::Index>(), new in any_value()) {
        let mut req = full_request();
        let mut all = Vec::new();
        paths(&req, &mut Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        replace_at(&mut req, &path, new);
        let body = serde_json::to_vec(&req).expect("json");
        same_both_ways(&with_body(&body), &String::from_utf8_lossy(&body));
    }

    /// The same for Anthropic.
    #[test]
    fn bent_anthropic_requests_decode_the_same_both_ways(pick in any::<prop::sample::Index>(), new in any_value()) {
        let mut req = full_anthropic_request();
        let mut all = Vec::new();
        paths(&req, &mut Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        replace_at(&mut req, &path, new);
        let body = serde_json::to_vec(&req).expect("json");
        same_both_ways(
            &with_body_of("llm/anthropic_messages_plain.cap", &body),
            &String::from_utf8_lossy(&body),
        );
    }

    /// Any bytes cut out of, or spliced into, the full request.
    #[test]
    fn damaged_requests_decode_the_same_both_ways(at in 0usize..100_000, len in 0usize..8, junk in prop::collection::vec(any::<u8>(), 0..4)) {
        let mut body = serde_json::to_vec(&full_request()).expect("json");
        let start = at % (body.len() + 1);
        let end = (start + len).min(body.len());
        body.splice(start..end, junk);
        same_both_ways(&with_body(&body), &String::from_utf8_lossy(&body));
    }
}
