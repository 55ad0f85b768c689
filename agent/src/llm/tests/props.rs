//! Properties of the LLM decoders: any input decodes or fails cleanly.
#![allow(clippy::wildcard_imports, reason = "the parent test module's helpers")]

use super::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any bodies on a known path decode or fail cleanly.
    #[test]
    fn decode_is_total(
        req in proptest::collection::vec(any::<u8>(), 0..400),
        resp in proptest::collection::vec(any::<u8>(), 0..400),
        anthropic in any::<bool>(),
        sse in any::<bool>(),
    ) {
        let path = if anthropic { "/v1/messages" } else { "/v1/chat/completions" };
        let mut ex = exchange("POST", path, &[], "", None);
        ex.request.body = req;
        ex.response = Some(Response {
            status: 200,
            headers: vec![("Content-Type".into(), if sse { "text/event-stream" } else { "application/json" }.into())],
            body: resp,
            body_truncated: false,
            body_cut: false,
            ..Response::default()
        });
        let _ = decode_lenient(&ex);
    }

    /// Valid JSON of any shape on a known path never panics.
    #[test]
    fn decode_tolerates_any_json_shape(v in json_value(), anthropic in any::<bool>()) {
        let path = if anthropic { "/v1/messages" } else { "/v1/chat/completions" };
        let text = serde_json::to_string(&v).unwrap();
        let ex = exchange("POST", path, &[], &text, Some(json_response(200, &text)));
        let _ = decode_lenient(&ex);
        let events = format!("data: {text}\n\nevent: content_block_delta\ndata: {text}\n\n");
        let mut resp = json_response(200, &events);
        resp.headers = vec![("Content-Type".into(), "text/event-stream".into())];
        let ex = exchange("POST", path, &[], &text, Some(resp));
        let _ = decode_lenient(&ex);
    }
}

/// JSON values biased towards the keys the decoders look at.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let key = prop_oneof![
        Just("model"),
        Just("messages"),
        Just("content"),
        Just("role"),
        Just("type"),
        Just("text"),
        Just("tool_calls"),
        Just("function"),
        Just("arguments"),
        Just("index"),
        Just("choices"),
        Just("delta"),
        Just("message"),
        Just("usage"),
        Just("system"),
        Just("tools"),
        Just("input"),
        Just("partial_json"),
        Just("content_block"),
        Just("error"),
        Just("tool_result"),
        Just("tool_use"),
        Just("text_delta"),
        Just("input_json_delta"),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-z_ ]{0,8}".prop_map(Value::String),
        key.clone().prop_map(|k| Value::String(k.to_owned())),
    ];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}
