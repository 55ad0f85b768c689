//! Splunk HTTP Event Collector: `POST /services/collector/event` with
//! `Authorization: Splunk <token>`, a batch of event objects
//! (`{"time","host","source","sourcetype","index","event"}`) one after
//! the other in one body.
//!
//! Acknowledged when HEC answers `200 {"code": 0}`. HEC's own codes decide
//! the rest: 400 with code 5, 6, 12, 13 (no data, invalid format, event
//! field missing or blank) and 413 refuse the data (the batch is split to
//! find the event); 400 code 7 (incorrect index), 401/403 (token), 429 and
//! 5xx (503 code 9: server busy) are retried: a wrong index or token is a
//! configuration to fix, not events to drop. Indexer acknowledgment
//! (`useACK` tokens) is not used: code 0 means received, not indexed.

use bytes::Bytes;
use hyper::{header, Method};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    add,
    client::{classify, Compression, HttpClient},
    config::ForwardSpec,
    format::{get, Format},
    Destination, ForwardConfigError, ForwardCounters, ForwardError, SendFuture,
};

/// Path used when the URL has none.
pub const DEFAULT_PATH: &str = "/services/collector/event";
/// A HEC answer is a small JSON object.
const MAX_ANSWER: usize = 64 * 1024;

/// The `splunk_hec` type's own keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// `native` (the event as stored), `ocsf` or `ecs`.
    #[serde(default = "native")]
    pub format: Format,
    /// Splunk index; the token's default index when absent.
    pub index: Option<String>,
    #[serde(default = "default_source")]
    pub source: String,
    /// Default `aitrail:event`, `aitrail:ocsf` or `aitrail:ecs` after the
    /// format.
    pub sourcetype: Option<String>,
    #[serde(default)]
    pub compression: Compression,
}

fn native() -> Format {
    Format::Native
}

fn default_source() -> String {
    "aitrail".into()
}

impl Options {
    pub fn parse(spec: &ForwardSpec) -> Result<Self, ForwardConfigError> {
        let o: Self = spec.options()?;
        if spec.token.is_none() {
            return Err(spec.invalid("token", "a HEC token is required (token or token_file)"));
        }
        Ok(o)
    }
}

pub struct SplunkHec {
    client: HttpClient,
    path: &'static str,
    auth: String,
    options: Options,
    sourcetype: String,
    counters: std::sync::Arc<ForwardCounters>,
}

/// HEC's answer.
#[derive(Debug, Deserialize)]
struct Answer {
    code: Option<i64>,
    text: Option<String>,
}

impl SplunkHec {
    pub fn new(
        spec: &ForwardSpec,
        counters: std::sync::Arc<ForwardCounters>,
    ) -> Result<Self, ForwardConfigError> {
        let options = Options::parse(spec)?;
        let client = HttpClient::new(spec, MAX_ANSWER)?.counting(std::sync::Arc::clone(&counters));
        let path = if client.target().base_path.is_empty() {
            DEFAULT_PATH
        } else {
            ""
        };
        let sourcetype = options.sourcetype.clone().unwrap_or_else(|| {
            format!(
                "aitrail:{}",
                match options.format {
                    Format::Native => "event",
                    other => other.name(),
                }
            )
        });
        Ok(Self {
            client,
            path,
            auth: format!("Splunk {}", spec.token.as_deref().unwrap_or_default()),
            options,
            sourcetype,
            counters,
        })
    }

    /// The request body: one HEC event object per event, newline between;
    /// and how many events the format could not express (left out).
    fn body(&self, batch: &[Value]) -> (Vec<u8>, u64) {
        let mut out = Vec::with_capacity(batch.len() * 512);
        let mut unmappable = 0;
        for ev in batch {
            let rendered = match self.options.format.render(ev) {
                Ok(r) => r,
                Err(why) => {
                    unmappable += 1;
                    tracing::warn!(%why, "splunk_hec: event left out (counted in events_rejected)");
                    continue;
                }
            };
            let mut obj = json!({
                "source": self.options.source,
                "sourcetype": self.sourcetype,
                "event": rendered,
            });
            if let Some(ns) = get::time_ns(ev) {
                // Seconds with ms precision, as HEC reads them.
                let ms = ns.div_euclid(1_000_000);
                obj["time"] = format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
                    .parse::<serde_json::Number>()
                    .map_or(Value::Null, Value::Number);
            }
            if let Some(h) = get::str(ev, "/host/name").filter(|h| !h.is_empty()) {
                obj["host"] = h.into();
            }
            if let Some(i) = &self.options.index {
                obj["index"] = i.as_str().into();
            }
            if serde_json::to_writer(&mut out, &obj).is_ok() {
                out.push(b'\n');
            }
        }
        (out, unmappable)
    }

    async fn post(&self, batch: &[Value]) -> Result<(), ForwardError> {
        let (body, unmappable) = self.body(batch);
        if body.is_empty() {
            add(&self.counters.events_rejected, unmappable);
            return Ok(());
        }
        let mut headers = vec![
            (header::AUTHORIZATION, self.auth.clone()),
            (header::CONTENT_TYPE, "application/json".to_owned()),
        ];
        let body: Bytes = self.options.compression.apply(body, &mut headers);
        let resp = self
            .client
            .request(Method::POST, self.path, &headers, body)
            .await?;
        let answer: Option<Answer> = serde_json::from_slice(&resp.body).ok();
        let code = answer.as_ref().and_then(|a| a.code);
        let text = answer
            .as_ref()
            .and_then(|a| a.text.clone())
            .unwrap_or_else(|| resp.snippet());
        let status = resp.status.as_u16();
        match (status, code) {
            (200, Some(0)) => {
                // Counted once, with the batch's ack (not per attempt).
                add(&self.counters.events_rejected, unmappable);
                Ok(())
            }
            (200, _) => Err(ForwardError::Retry(format!(
                "HEC answered 200 without code 0: {}",
                resp.snippet()
            ))),
            (400, Some(7)) => Err(ForwardError::Retry(format!(
                "HEC: incorrect index (configuration): {text}"
            ))),
            (400, Some(5 | 6 | 12 | 13)) | (413, _) => Err(ForwardError::Reject(format!(
                "HEC {status} code {}: {text}",
                code.unwrap_or(-1)
            ))),
            (401 | 403, _) => Err(ForwardError::Retry(format!(
                "HEC refused the token ({status}, code {}): {text}",
                code.unwrap_or(-1)
            ))),
            _ => classify(&resp),
        }
    }
}

impl Destination for SplunkHec {
    fn kind(&self) -> &'static str {
        "splunk_hec"
    }

    fn send<'a>(&'a self, batch: &'a [Value]) -> SendFuture<'a> {
        Box::pin(self.post(batch))
    }
}
