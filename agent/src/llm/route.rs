//! Which API an exchange speaks, and who serves it.
//!
//! The wire format is told by the request path first (each API has its
//! own: `…/chat/completions`, `…/responses`, `/v1/messages`,
//! `…/models/{m}:generateContent`, `/api/chat`, …), and by the shape of
//! the JSON body when the path says nothing (a gateway, or HTTP/2 headers
//! we could not decode). Who serves it is a separate question: many
//! servers speak OpenAI's formats, so the provider is named from the Host
//! header where the host is known, else after the format's owner.

#![expect(
    clippy::doc_markdown,
    reason = "provider and product names are prose, not code"
)]

use serde_json::Value;

use super::bedrock::Vendor;
use super::str_at;
use crate::event::Server;
use crate::http::Request;

/// TLS is what we watch: a Host without a port means 443.
const DEFAULT_PORT: u16 = 443;
/// Ollama's default port; its native API and its OpenAI-compatible one
/// are both served there.
const OLLAMA_PORT: u16 = 11434;

/// A wire format we decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Api {
    /// OpenAI chat completions, and the many servers that copy it.
    OpenAiChat,
    Anthropic,
    /// OpenAI Responses API (`POST …/responses`).
    Responses,
    /// Gemini `generateContent`; `stream` for `streamGenerateContent`.
    Gemini {
        stream: bool,
    },
    OllamaChat,
    OllamaGenerate,
    Embeddings(Embed),
    /// Amazon Bedrock `Converse` / `ConverseStream`.
    BedrockConverse {
        stream: bool,
    },
    /// Amazon Bedrock `InvokeModel` / `InvokeModelWithResponseStream`;
    /// the body is the vendor's format (known once the body is read).
    BedrockInvoke {
        stream: bool,
        vendor: Vendor,
    },
}

/// Whose embeddings format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Embed {
    OpenAi,
    Gemini,
    Ollama,
}

impl Api {
    /// The format's owner: the provider when the host is not known, and
    /// the name errors are reported under.
    pub(super) fn family(self) -> &'static str {
        match self {
            Api::OpenAiChat | Api::Responses | Api::Embeddings(Embed::OpenAi) => "openai",
            Api::Anthropic => "anthropic",
            Api::Gemini { .. } | Api::Embeddings(Embed::Gemini) => "gemini",
            Api::OllamaChat | Api::OllamaGenerate | Api::Embeddings(Embed::Ollama) => "ollama",
            Api::BedrockConverse { .. } | Api::BedrockInvoke { .. } => "aws.bedrock",
        }
    }

    pub(super) fn operation(self) -> &'static str {
        match self {
            Api::OpenAiChat | Api::OllamaChat => "chat",
            Api::Anthropic => "messages",
            Api::Responses => "responses",
            Api::Gemini { .. } => "generate_content",
            Api::OllamaGenerate => "generate",
            Api::Embeddings(_) => "embeddings",
            Api::BedrockConverse { .. } => "converse",
            Api::BedrockInvoke { .. } => "invoke_model",
        }
    }
}

/// The path without query or fragment, without a trailing `/`.
fn bare_path(target: &str) -> &str {
    target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
}

pub(super) fn by_path(target: &str) -> Option<Api> {
    let path = bare_path(target);
    // Bedrock runtime: `/model/{modelId}/{action}`.
    if let Some(rest) = path.strip_prefix("/model/") {
        let (_, action) = rest.rsplit_once('/')?;
        return match action {
            "converse" => Some(Api::BedrockConverse { stream: false }),
            "converse-stream" => Some(Api::BedrockConverse { stream: true }),
            "invoke" => Some(Api::BedrockInvoke {
                stream: false,
                vendor: Vendor::Unknown,
            }),
            "invoke-with-response-stream" => Some(Api::BedrockInvoke {
                stream: true,
                vendor: Vendor::Unknown,
            }),
            _ => None,
        };
    }
    // Gemini and Vertex AI: `…/models/{model}:{method}`.
    let last = path.rsplit('/').next().unwrap_or_default();
    if let Some((_, method)) = last.split_once(':') {
        return match method {
            "generateContent" => Some(Api::Gemini { stream: false }),
            "streamGenerateContent" => Some(Api::Gemini { stream: true }),
            "embedContent" | "batchEmbedContents" => Some(Api::Embeddings(Embed::Gemini)),
            _ => None,
        };
    }
    // Ollama's native API, also behind a prefix (Open WebUI's `/ollama`).
    if path.ends_with("/api/chat") {
        Some(Api::OllamaChat)
    } else if path.ends_with("/api/generate") {
        Some(Api::OllamaGenerate)
    } else if path.ends_with("/api/embed") || path.ends_with("/api/embeddings") {
        Some(Api::Embeddings(Embed::Ollama))
    } else if path.ends_with("/chat/completions") {
        Some(Api::OpenAiChat)
    } else if path.ends_with("/responses") {
        Some(Api::Responses)
    } else if path.ends_with("/embeddings") {
        Some(Api::Embeddings(Embed::OpenAi))
    } else if path == "/v1/messages" || path.ends_with("/v1/messages") {
        Some(Api::Anthropic)
    } else {
        None
    }
}

/// A request on a path we do not know: a chat request (a JSON object with
/// a model and a list of messages; Anthropic's shape differs by its
/// version header, its top-level `system`, or its content blocks), a
/// Responses API request (`input`, with a key only that API has), or a
/// Gemini one (`contents`). A bare `{"model","input"}` could as well be
/// an embeddings request and is not decoded.
pub(super) fn by_shape(req: &Request, v: &Value) -> Option<Api> {
    if v.get("contents").is_some_and(Value::is_array) {
        return Some(Api::Gemini { stream: false });
    }
    str_at(v, "model")?;
    let Some(messages) = v.get("messages").and_then(Value::as_array) else {
        return responses_shape(v).then_some(Api::Responses);
    };
    let anthropic_blocks = messages.iter().any(|m| {
        m.get("content")
            .and_then(Value::as_array)
            .is_some_and(|blocks| {
                blocks.iter().any(|b| {
                    matches!(
                        b.get("type").and_then(Value::as_str),
                        Some("tool_use" | "tool_result")
                    )
                })
            })
    });
    let anthropic = req.header("anthropic-version").is_some()
        || v.get("system").is_some()
        || anthropic_blocks
        || (req.headers_unknown && anthropic_without_headers(v, messages));
    if anthropic {
        Some(Api::Anthropic)
    } else {
        Some(Api::OpenAiChat)
    }
}

/// `input` plus a parameter only the Responses API has, or input items
/// that are typed objects.
fn responses_shape(v: &Value) -> bool {
    let input = match v.get("input") {
        Some(Value::Array(items)) => items,
        Some(Value::String(_)) => &Vec::new(),
        _ => return false,
    };
    let own_key = [
        "instructions",
        "previous_response_id",
        "max_output_tokens",
        "reasoning",
        "text",
        "store",
        "tools",
        "stream",
        "include",
    ]
    .iter()
    .any(|k| v.get(k).is_some());
    own_key
        || input
            .iter()
            .any(|i| i.get("type").is_some() || i.get("role").is_some())
}

/// Without headers, a plain Anthropic request (no system prompt, no tool
/// blocks) is told from an OpenAI one by what each API requires or
/// refuses: Anthropic requires `max_tokens` and refuses `system`,
/// `developer` and `tool` roles inside `messages`; `max_completion_tokens`,
/// `stream_options` and `n` exist only in OpenAI's API. A heuristic: an
/// OpenAI request that sets the legacy `max_tokens` and nothing else
/// OpenAI-only still reads as Anthropic.
fn anthropic_without_headers(v: &Value, messages: &[Value]) -> bool {
    let openai_role = messages.iter().any(|m| {
        matches!(
            m.get("role").and_then(Value::as_str),
            Some("system" | "developer" | "tool")
        )
    });
    let openai_param = ["max_completion_tokens", "stream_options", "n"]
        .iter()
        .any(|k| v.get(k).is_some());
    v.get("max_tokens").is_some() && !openai_role && !openai_param
}

/// Who serves the call. OpenAI's formats are spoken by many servers: the
/// host names them where it is known; an unknown host (vLLM, LiteLLM, a
/// gateway) keeps the format's owner.
pub(super) fn provider(api: Api, server: &Server) -> String {
    let host = server.host.as_str();
    if host.ends_with("aiplatform.googleapis.com") {
        return "vertex_ai".to_owned();
    }
    match api {
        Api::OpenAiChat | Api::Responses | Api::Embeddings(Embed::OpenAi) => {}
        // Native formats name their provider whoever the host is.
        _ => return api.family().to_owned(),
    }
    let known = [
        ("api.openai.com", "openai"),
        (".openai.azure.com", "azure.openai"),
        (".cognitiveservices.azure.com", "azure.openai"),
        (".services.ai.azure.com", "azure.openai"),
        ("api.groq.com", "groq"),
        ("openrouter.ai", "openrouter"),
        ("api.deepseek.com", "deepseek"),
        ("api.mistral.ai", "mistral"),
        ("api.x.ai", "xai"),
        ("api.together.xyz", "together"),
        ("api.fireworks.ai", "fireworks"),
        ("api.perplexity.ai", "perplexity"),
        // Gemini's OpenAI-compatible endpoint (`/v1beta/openai/…`).
        ("generativelanguage.googleapis.com", "gemini"),
    ];
    let by_host = known
        .iter()
        .find(|(suffix, _)| host == *suffix || (suffix.starts_with('.') && host.ends_with(suffix)));
    if let Some((_, name)) = by_host {
        (*name).to_owned()
    } else if server.port == OLLAMA_PORT {
        "ollama".to_owned()
    } else {
        api.family().to_owned()
    }
}

/// The model when the path names it: Gemini's `models/{model}:method`
/// (the body has none) and Azure's `/openai/deployments/{name}/…` (the
/// body may have none).
pub(super) fn model_from_path(target: &str) -> Option<String> {
    let path = bare_path(target);
    if path.starts_with("/model/") {
        return super::bedrock::model_from_path(path);
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    if let Some((model, _)) = last.split_once(':') {
        return (!model.is_empty()).then(|| model.to_owned());
    }
    let mut segments = path.split('/');
    segments.find(|s| *s == "deployments")?;
    segments.next().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Host and port from the Host header (`h`, `h:p`, `[v6]:p`).
pub(crate) fn server_of(req: &Request) -> Server {
    let host = req.header("host").unwrap_or_default().trim();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => (v6, tail.strip_prefix(':')),
            None => (host, None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (host, None),
        }
    };
    Server {
        host: name.to_ascii_lowercase(),
        port: port.and_then(|p| p.parse().ok()).unwrap_or(DEFAULT_PORT),
    }
}
