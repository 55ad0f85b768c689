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
//! configuration to fix, not events to drop.
//!
//! # Indexer acknowledgment (`use_ack = true`)
//!
//! Without it, code 0 means HEC received the batch, not that an indexer
//! wrote it: a batch lost in Splunk's pipeline after the 200 is lost. With
//! `use_ack` (the token must have `useACK` on), Splunk's documented
//! protocol is followed:
//!
//! 1. every request carries `X-Splunk-Request-Channel: <GUID>`, a channel
//!    made at random when the forwarder starts;
//! 2. the answer to the batch is `{"text":"Success","code":0,"ackId":N}`;
//! 3. `POST /services/collector/ack` (same channel, same token) with
//!    `{"acks":[N]}` every `ack_poll_ms` answers `{"acks":{"N":false}}`
//!    until the indexers wrote the batch, then `{"acks":{"N":true}}`.
//!
//! Only then does `send` return `Ok` and the runner move the cursor. When
//! no `true` comes within `ack_timeout_ms`, or HEC no longer knows the
//! channel (400 code 11: Splunk restarted, or the channel idled out), the
//! ack is lost: the batch may or may not be indexed, and it is sent again
//! (a `Retry`, so the runner's backoff and `retry_max_attempts` apply),
//! counted in `ack_timeouts` or `acks_lost` and its events in
//! `events_resent`. Duplicates are therefore bounded: at most one batch
//! (`batch_max_events`) per ack timeout, per lost channel and per
//! collector restart while a batch awaited its ack — each counted, each
//! with the same event ids to dedupe on in Splunk. Failed polls (network,
//! 5xx, 503 busy) are retried until the timeout; the ack may still come.
//! A `200 code 0` without `ackId` means the token has indexer
//! acknowledgment off: retried (HEC got the batch each time, so each
//! attempt may add a copy; counted in `acks_missing`, logged) until the
//! configuration is fixed.

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
    /// Indexer acknowledgment: the cursor moves only once HEC says the
    /// batch is indexed (see the module doc).
    #[serde(default)]
    pub use_ack: bool,
    /// How often the ack of the batch in flight is asked for.
    #[serde(default = "default_ack_poll_ms")]
    pub ack_poll_ms: u64,
    /// How long to wait for it before sending the batch again.
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
}

fn default_ack_poll_ms() -> u64 {
    1000
}

fn default_ack_timeout_ms() -> u64 {
    300_000
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
        if o.use_ack {
            if !(100..=60_000).contains(&o.ack_poll_ms) {
                return Err(spec.invalid("ack_poll_ms", "100 to 60000"));
            }
            if o.ack_timeout_ms < o.ack_poll_ms || o.ack_timeout_ms > 3_600_000 {
                return Err(spec.invalid(
                    "ack_timeout_ms",
                    "at least ack_poll_ms and at most 3600000 (an hour)",
                ));
            }
            let path = super::client::Target::parse(spec)?.base_path;
            ack_path(&path).ok_or_else(|| {
                spec.invalid(
                    "url",
                    "use_ack needs a URL path under /services/collector (or none) to find /services/collector/ack",
                )
            })?;
        }
        Ok(o)
    }
}

/// The ack endpoint next to the event endpoint `path` (`""`: the
/// default): the same prefix up to `/services/collector`.
fn ack_path(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("/services/collector/ack".into());
    }
    let at = path.find("/services/collector")?;
    Some(format!("{}/services/collector/ack", &path[..at]))
}

/// A channel id: a random (version 4) GUID, as Splunk wants it.
fn new_channel() -> String {
    let mut b = crate::store::keys::random::<16>().unwrap_or_else(|_| {
        // No system randomness: still unique enough for a channel name
        // (it is not a secret).
        let mut b = [0u8; 16];
        for x in &mut b {
            *x = fastrand::u8(..);
        }
        b
    });
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

pub struct SplunkHec {
    client: HttpClient,
    /// The event endpoint's path.
    path: String,
    /// The ack endpoint's path, with `use_ack`.
    ack_path: Option<String>,
    /// `X-Splunk-Request-Channel` of this run.
    channel: String,
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
    #[serde(rename = "ackId")]
    ack_id: Option<u64>,
}

/// HEC's answer to an ack query: `{"acks": {"N": bool, …}}`.
#[derive(Debug, Deserialize)]
struct AckAnswer {
    acks: std::collections::HashMap<String, bool>,
}

/// How one ack query ended.
enum Poll {
    Indexed,
    Pending,
    /// HEC no longer knows the channel (or the id): the ack is lost.
    Lost(String),
    /// Worth asking again (network, 5xx, busy).
    Failed(String),
    /// A configuration problem (ack off on the token, token refused).
    Config(String),
}

impl SplunkHec {
    pub fn new(
        spec: &ForwardSpec,
        counters: std::sync::Arc<ForwardCounters>,
    ) -> Result<Self, ForwardConfigError> {
        let options = Options::parse(spec)?;
        let client = HttpClient::new(spec, MAX_ANSWER)?.counting(std::sync::Arc::clone(&counters));
        let base = client.target().base_path.clone();
        let ack_path = if options.use_ack {
            Some(ack_path(&base).ok_or_else(|| {
                spec.invalid("url", "use_ack needs a URL path under /services/collector")
            })?)
        } else {
            None
        };
        let path = if base.is_empty() {
            DEFAULT_PATH.to_owned()
        } else {
            base
        };
        // Paths are absolute from here on (the event and ack endpoints
        // share the connection, so a load balancer that keeps a connection
        // on one indexer keeps the channel there too).
        let client = client.without_base_path();
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
            ack_path,
            channel: new_channel(),
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
            (CHANNEL.clone(), self.channel.clone()),
        ];
        let body: Bytes = self.options.compression.apply(body, &mut headers);
        let resp = self
            .client
            .request(Method::POST, &self.path, &headers, body)
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
                if self.ack_path.is_some() {
                    let Some(id) = answer.and_then(|a| a.ack_id) else {
                        add(&self.counters.acks_missing, 1);
                        return Err(ForwardError::Retry(
                            "HEC answered without an ackId: the token has indexer \
                             acknowledgment (useACK) off while use_ack = true; HEC \
                             received this batch and it is sent again: fix the token \
                             or set use_ack = false"
                                .into(),
                        ));
                    };
                    self.await_ack(id, batch.len()).await?;
                }
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

/// Splunk's channel header.
static CHANNEL: header::HeaderName = header::HeaderName::from_static("x-splunk-request-channel");

impl SplunkHec {
    /// Asks for the ack of `id` until it is true or `ack_timeout_ms`
    /// passed; `events` are the batch's, counted as resent when it is not.
    async fn await_ack(&self, id: u64, events: usize) -> Result<(), ForwardError> {
        let poll = std::time::Duration::from_millis(self.options.ack_poll_ms);
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.options.ack_timeout_ms);
        let mut last;
        loop {
            tokio::time::sleep_until((tokio::time::Instant::now() + poll).min(deadline)).await;
            add(&self.counters.ack_polls, 1);
            match self.poll_ack(id).await {
                Poll::Indexed => {
                    add(&self.counters.acks_confirmed, 1);
                    return Ok(());
                }
                Poll::Pending => last = "not indexed yet".into(),
                Poll::Failed(why) => last = why,
                Poll::Lost(why) => {
                    add(&self.counters.acks_lost, 1);
                    add(&self.counters.events_resent, events as u64);
                    return Err(ForwardError::Retry(format!(
                        "HEC lost the ack of this batch ({why}); sending it again"
                    )));
                }
                Poll::Config(why) => {
                    // The batch was received; whether it is indexed is
                    // unknown: sent again once the configuration is fixed.
                    add(&self.counters.events_resent, events as u64);
                    return Err(ForwardError::Retry(why));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                add(&self.counters.ack_timeouts, 1);
                add(&self.counters.events_resent, events as u64);
                return Err(ForwardError::Retry(format!(
                    "HEC did not confirm ack {id} within {} ms (last: {last}); sending the batch again",
                    self.options.ack_timeout_ms
                )));
            }
        }
    }

    async fn poll_ack(&self, id: u64) -> Poll {
        let Some(path) = &self.ack_path else {
            return Poll::Indexed;
        };
        let headers = [
            (header::AUTHORIZATION, self.auth.clone()),
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (CHANNEL.clone(), self.channel.clone()),
        ];
        let body = Bytes::from(format!("{{\"acks\":[{id}]}}"));
        let resp = match self
            .client
            .request(Method::POST, path, &headers, body)
            .await
        {
            Ok(r) => r,
            Err(e) => return Poll::Failed(format!("ack query: {e}")),
        };
        let status = resp.status.as_u16();
        if status == 200 {
            let Ok(a) = serde_json::from_slice::<AckAnswer>(&resp.body) else {
                add(&self.counters.answers_unexpected, 1);
                return Poll::Failed(format!("ack answer not understood: {}", resp.snippet()));
            };
            return match a.acks.get(&id.to_string()) {
                Some(true) => Poll::Indexed,
                Some(false) => Poll::Pending,
                None => Poll::Lost(format!("ack {id} missing from the answer")),
            };
        }
        let answer: Option<Answer> = serde_json::from_slice(&resp.body).ok();
        let code = answer.as_ref().and_then(|a| a.code);
        let text = answer
            .and_then(|a| a.text)
            .unwrap_or_else(|| resp.snippet());
        match (status, code) {
            // 10: channel missing, 11: invalid data channel.
            (400, Some(10 | 11)) => Poll::Lost(format!("HEC {status} code {}: {text}", code.unwrap_or(-1))),
            // 14: ACK is disabled (on this token).
            (400, Some(14)) => Poll::Config(format!(
                "HEC: indexer acknowledgment is disabled for this token ({text}); enable useACK or set use_ack = false"
            )),
            (401 | 403, _) => Poll::Config(format!(
                "HEC refused the token on the ack endpoint ({status}, code {}): {text}",
                code.unwrap_or(-1)
            )),
            _ => Poll::Failed(format!("ack query: HEC {status}: {text}")),
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
