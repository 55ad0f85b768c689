//! Properties of the LLM decoders: any input decodes or fails cleanly.
#![allow(clippy::wildcard_imports, reason = "the parent test module's helpers")]

use super::*;
use crate::http::testutil::fixture_names;
use crate::llm::Decoded;

/// One path per decoder, and one no decoder knows (shape detection).
const PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/responses",
    "/v1beta/models/gemini-2.5-flash:generateContent",
    "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    "/api/chat",
    "/api/generate",
    "/v1/embeddings",
    "/v1beta/models/e:batchEmbedContents",
    "/api/embed",
    "/gateway",
];

const CONTENT_TYPES: &[&str] = &[
    "text/event-stream",
    "application/json",
    "application/x-ndjson",
    "",
];

/// Every problem is one of the counted kinds.
fn assert_counted(d: &Decoded) {
    for p in &d.problems {
        assert!(
            matches!(
                p.name(),
                "llm_bad_request_json"
                    | "llm_request_not_object"
                    | "llm_bad_response_json"
                    | "llm_bad_stream_json"
            ),
            "{p:?}"
        );
    }
}

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

    /// Any bytes, on any decoder's path, in any framing, decode or fail
    /// with counted problems.
    #[test]
    fn every_decoder_is_total(
        req in proptest::collection::vec(any::<u8>(), 0..300),
        resp in proptest::collection::vec(any::<u8>(), 0..300),
        path in 0..PATHS.len(),
        ctype in 0..CONTENT_TYPES.len(),
        status in prop_oneof![Just(200u16), Just(429), Just(500)],
    ) {
        let mut ex = exchange("POST", PATHS[path], &[], "", None);
        ex.request.body = req;
        let mut r = json_response(status, "");
        r.headers = vec![("Content-Type".into(), CONTENT_TYPES[ctype].into())];
        r.body = resp;
        ex.response = Some(r);
        assert_counted(&decode_lenient(&ex));
    }

    /// Valid JSON of any shape on any path never panics, as a body, as
    /// SSE events and as NDJSON lines.
    #[test]
    fn decode_tolerates_any_json_shape(v in json_value(), path in 0..PATHS.len()) {
        let path = PATHS[path];
        let text = serde_json::to_string(&v).unwrap();
        let ex = exchange("POST", path, &[], &text, Some(json_response(200, &text)));
        assert_counted(&decode_lenient(&ex));
        let events = format!(
            "data: {text}\n\nevent: content_block_delta\ndata: {text}\n\nevent: response.output_text.delta\ndata: {text}\n\n"
        );
        for (ctype, body) in [
            ("text/event-stream", events),
            ("application/x-ndjson", format!("{text}\n{text}\n")),
        ] {
            let mut resp = json_response(200, &body);
            resp.headers = vec![("Content-Type".into(), ctype.into())];
            let ex = exchange("POST", path, &[], &text, Some(resp));
            assert_counted(&decode_lenient(&ex));
        }
    }

    /// Every recorded answer cut anywhere still decodes its request, and
    /// the call is marked truncated.
    #[test]
    fn cut_answers_are_truncated(fixture in 0..64usize, at in 0.0f64..1.0) {
        let names = fixture_names("llm");
        let name = &names[fixture % names.len()];
        let mut ex = crate::http::testutil::only_exchange(name);
        let Some(resp) = ex.response.as_mut() else { return Ok(()) };
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a fraction of a small length"
        )]
        let cut = (resp.body.len() as f64 * at) as usize;
        resp.body.truncate(cut);
        resp.body_truncated = true;
        resp.body_cut = true;
        let d = decode_lenient(&ex);
        assert_counted(&d);
        if let Some(c) = d.call {
            prop_assert!(c.truncated, "{name} cut at {cut}");
        }
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
        // Responses API
        Just("output"),
        Just("call_id"),
        Just("name"),
        Just("item"),
        Just("output_index"),
        Just("summary_index"),
        Just("summary"),
        Just("response"),
        Just("function_call"),
        Just("function_call_output"),
        Just("refusal"),
        Just("incomplete_details"),
        Just("previous_response_id"),
        Just("instructions"),
        // Gemini
        Just("contents"),
        Just("candidates"),
        Just("parts"),
        Just("functionCall"),
        Just("functionResponse"),
        Just("args"),
        Just("finishReason"),
        Just("promptFeedback"),
        Just("blockReason"),
        Just("safetyRatings"),
        Just("usageMetadata"),
        Just("thought"),
        Just("systemInstruction"),
        // Ollama, embeddings
        Just("done"),
        Just("tool_name"),
        Just("prompt"),
        Just("requests"),
        Just("data"),
        Just("embeddings"),
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
