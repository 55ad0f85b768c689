//! A generic HTTPS receiver: `POST` of the batch as NDJSON (one event per
//! line, in the chosen format) to the URL, `Authorization: Bearer <token>`
//! when a token is set. For log pipelines that take NDJSON over HTTP
//! (Vector's and Fluent Bit's `http` sources, Logstash's `http` input, a
//! data lake's ingestion endpoint), with OCSF or ECS as the format.
//!
//! Any 2xx acknowledges the batch. 400, 413, 422 and other 4xx refuse it
//! (the forwarder splits it); 401, 403, 404, 407, 408, 425, 429 and 5xx
//! are retried.

use hyper::{header, Method};
use serde::Deserialize;
use serde_json::Value;

use super::{
    add,
    client::{classify, Compression, HttpClient},
    config::ForwardSpec,
    format::Format,
    Destination, ForwardConfigError, ForwardCounters, ForwardError, SendFuture,
};

const MAX_ANSWER: usize = 64 * 1024;

/// The `http` type's own keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// `native`, `ocsf` or `ecs`.
    pub format: Format,
    #[serde(default)]
    pub compression: Compression,
}

impl Options {
    pub fn parse(spec: &ForwardSpec) -> Result<Self, ForwardConfigError> {
        spec.options()
    }
}

pub struct NdjsonHttp {
    client: HttpClient,
    auth: Option<String>,
    options: Options,
    counters: std::sync::Arc<ForwardCounters>,
}

impl NdjsonHttp {
    pub fn new(
        spec: &ForwardSpec,
        counters: std::sync::Arc<ForwardCounters>,
    ) -> Result<Self, ForwardConfigError> {
        Ok(Self {
            options: Options::parse(spec)?,
            client: HttpClient::new(spec, MAX_ANSWER)?.counting(std::sync::Arc::clone(&counters)),
            auth: spec.token.as_ref().map(|t| format!("Bearer {t}")),
            counters,
        })
    }

    async fn post(&self, batch: &[Value]) -> Result<(), ForwardError> {
        let mut body = Vec::with_capacity(batch.len() * 512);
        let mut unmappable = 0;
        for ev in batch {
            match self.options.format.render(ev) {
                Ok(doc) => {
                    if serde_json::to_writer(&mut body, &doc).is_ok() {
                        body.push(b'\n');
                    }
                }
                Err(why) => {
                    unmappable += 1;
                    tracing::warn!(%why, "http: event left out (counted in events_rejected)");
                }
            }
        }
        if !body.is_empty() {
            let mut headers = vec![(header::CONTENT_TYPE, "application/x-ndjson".to_owned())];
            if let Some(a) = &self.auth {
                headers.push((header::AUTHORIZATION, a.clone()));
            }
            let body = self.options.compression.apply(body, &mut headers);
            let resp = self
                .client
                .request(Method::POST, "", &headers, body)
                .await?;
            classify(&resp)?;
        }
        // Counted once, with the batch's ack.
        add(&self.counters.events_rejected, unmappable);
        Ok(())
    }
}

impl Destination for NdjsonHttp {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn send<'a>(&'a self, batch: &'a [Value]) -> SendFuture<'a> {
        Box::pin(self.post(batch))
    }
}
