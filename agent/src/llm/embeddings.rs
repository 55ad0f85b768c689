//! Embeddings calls: OpenAI's `POST …/embeddings` (and compatible
//! servers, Azure's deployments), Gemini's `:embedContent` /
//! `:batchEmbedContents`, Ollama's `/api/embed` (and the older
//! `/api/embeddings`).
//!
//! An embeddings call has no messages and no output text: what matters
//! is who embedded how much with which key. The inputs are counted, not
//! kept.
//!
//! - OpenAI (`EmbeddingCreateParams`): `input` is a string, a list of
//!   strings, a list of token ids (one input) or a list of such lists;
//!   `user`. Answer: `data[]`, `usage.prompt_tokens`.
//! - Gemini: `{content}` for one input, `{requests: [...]}` for a batch.
//!   Answer: `embedding` or `embeddings[]`; no usage.
//! - Ollama: `input` as for OpenAI (`/api/embed`), or `prompt`
//!   (`/api/embeddings`). Answer: `embeddings[]` or `embedding`,
//!   `prompt_eval_count`.

#![expect(
    clippy::doc_markdown,
    reason = "provider and product names are prose, not code"
)]

use serde_json::Value;

use super::route::Embed;
use super::{array_at, str_at, u64_at};
use crate::event::LlmCall;

pub(super) fn fill_request(api: Embed, v: &Value, call: &mut LlmCall) {
    if let Some(m) = str_at(v, "model") {
        call.model = Some(m.trim_start_matches("models/").to_owned());
    }
    call.api_user = str_at(v, "user").map(str::to_owned);
    call.input_count = match api {
        Embed::OpenAi | Embed::Ollama => v
            .get("input")
            .map(count_inputs)
            .or_else(|| v.get("prompt").map(|_| 1)),
        Embed::Gemini => match v.get("requests") {
            Some(Value::Array(r)) => Some(r.len() as u64),
            _ => v.get("content").map(|_| 1),
        },
    };
}

/// A string or a list of token ids is one input; a list of strings or of
/// token lists is one per element.
fn count_inputs(input: &Value) -> u64 {
    match input {
        Value::Array(items) if items.iter().all(Value::is_number) => 1,
        Value::Array(items) => items.len() as u64,
        Value::Null => 0,
        _ => 1,
    }
}

pub(super) fn fill_response(api: Embed, v: &Value, call: &mut LlmCall) {
    if call.model.is_none() {
        call.model = str_at(v, "model").map(str::to_owned);
    }
    let vectors = match api {
        Embed::OpenAi => array_at(v, "data").len(),
        Embed::Gemini | Embed::Ollama => {
            let many = array_at(v, "embeddings").len();
            if many == 0 && v.get("embedding").is_some() {
                1
            } else {
                many
            }
        }
    };
    if call.input_count.is_none() && vectors > 0 {
        call.input_count = Some(vectors as u64);
    }
    match api {
        Embed::OpenAi => {
            if let Some(u) = v.get("usage") {
                call.usage.input_tokens =
                    u64_at(u, "prompt_tokens").or_else(|| u64_at(u, "input_tokens"));
            }
        }
        Embed::Ollama => call.usage.input_tokens = u64_at(v, "prompt_eval_count"),
        // Gemini reports no token usage for embeddings.
        Embed::Gemini => {}
    }
}
