//! The HTTPS server: TLS, routing, and the ingest endpoint.
//!
//! `POST /v1/ingest` takes one batch: a zstd-compressed NDJSON body with
//! `Content-Encoding: zstd`, an `Idempotency-Key` (the batch id) and the
//! agent's bearer token. Checks, cheapest first, each refusal before any
//! work it would protect: token (401), per-agent rate (429), encoding (415),
//! `Content-Length` over `max_body_bytes` (413 before reading), body over it
//! while reading (413), decompressed size over `max_decompressed_bytes`
//! (413, decompression stops there), missing batch id or not zstd (400).
//! Then the good lines are stored in one durable transaction and the answer
//! is `200 {"batch", "accepted", "duplicates", "invalid"}`; a store failure
//! answers 503, and the agent sends the batch again.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::{body::Incoming, header, Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::{auth, config::Config, ingest, store::Store};

/// TLS handshake and whole-body read limits: a slow client cannot hold a
/// connection slot for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const BODY_TIMEOUT: Duration = Duration::from_mins(1);
const MAX_BATCH_ID: usize = 128;

/// Why an ingest request was refused (a label of
/// `aitrail_collector_ingest_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseCause {
    /// No token, or not an agent's (401).
    Unauthorized,
    /// The agent's rate was exceeded (429).
    RateLimited,
    /// Not `Content-Encoding: zstd` (415).
    UnsupportedEncoding,
    /// No usable `Idempotency-Key` (400).
    NoBatchId,
    /// Body over `max_body_bytes`, declared or read (413).
    BodyTooLarge,
    /// Decompressed batch over `max_decompressed_bytes` (413).
    DecompressedTooLarge,
    /// The body could not be read whole in time (400).
    BodyUnread,
    /// The body is not a zstd frame (400).
    NotZstd,
}

impl RefuseCause {
    pub const ALL: [Self; 8] = [
        Self::Unauthorized,
        Self::RateLimited,
        Self::UnsupportedEncoding,
        Self::NoBatchId,
        Self::BodyTooLarge,
        Self::DecompressedTooLarge,
        Self::BodyUnread,
        Self::NotZstd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::RateLimited => "rate_limited",
            Self::UnsupportedEncoding => "unsupported_encoding",
            Self::NoBatchId => "no_batch_id",
            Self::BodyTooLarge => "body_too_large",
            Self::DecompressedTooLarge => "decompressed_too_large",
            Self::BodyUnread => "body_unread",
            Self::NotZstd => "not_zstd",
        }
    }

    /// The coarse counter of [`Counters`] this cause also counts in.
    fn coarse(self, c: &Counters) -> &AtomicU64 {
        match self {
            Self::Unauthorized => &c.refused_unauthorized,
            Self::RateLimited => &c.refused_rate,
            Self::BodyTooLarge | Self::DecompressedTooLarge => &c.refused_too_large,
            Self::UnsupportedEncoding | Self::NoBatchId | Self::BodyUnread | Self::NotZstd => {
                &c.refused_bad_request
            }
        }
    }
}

/// Counters of the collector since start (read by `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    pub batches_acked: AtomicU64,
    pub events_accepted: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_invalid: AtomicU64,
    /// Refusals by [`RefuseCause`] (indexed by `cause as usize`)…
    pub refused: [AtomicU64; RefuseCause::ALL.len()],
    /// … and the same, coarser, by status family.
    pub refused_unauthorized: AtomicU64,
    pub refused_rate: AtomicU64,
    pub refused_too_large: AtomicU64,
    pub refused_bad_request: AtomicU64,
    pub store_errors: AtomicU64,
    /// Compressed body bytes of batches read whole.
    pub bytes_compressed: AtomicU64,
    /// Decompressed bytes of batches that decompressed within the limit.
    pub bytes_decompressed: AtomicU64,
    pub tls_failures: AtomicU64,
    /// Handshakes that did not finish within [`HANDSHAKE_TIMEOUT`].
    pub tls_timeouts: AtomicU64,
    pub connections_accepted: AtomicU64,
    /// Connections closed at once: `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Events deleted by retention.
    pub retention_deleted: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub struct State {
    pub cfg: Config,
    pub store: Arc<Store>,
    pub rate: auth::RateLimiter,
    pub counters: Arc<Counters>,
    /// HTTP answers by route and status.
    pub requests: Arc<crate::metrics::Requests>,
    /// What `/metrics` shows (forwarders register here).
    pub metrics: Arc<crate::metrics::CollectorMetrics>,
    pub registry: prometheus_client::registry::Registry,
    /// The forwarders and their counters.
    pub forwarders: Vec<Arc<crate::forward::Forwarder>>,
    /// Bumped after each ingest commit that stored events: wakes the
    /// forwarders.
    pub stored: tokio::sync::watch::Sender<u64>,
}

pub type Resp = Response<Full<Bytes>>;

pub fn reply(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn json_reply(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = reply(status, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Routes one request. `peer_cert` names the client's certificate (mTLS).
pub async fn handle(
    state: Arc<State>,
    peer_cert: Option<Arc<str>>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let path = req.uri().path();
    let (route, resp) = match (req.method(), path) {
        (&Method::POST, "/v1/ingest") => (
            "ingest",
            ingest(&state, peer_cert.as_deref(), peer, req).await,
        ),
        (&Method::GET, "/healthz") => ("healthz", reply(StatusCode::OK, "ok\n")),
        (&Method::GET, "/metrics") => ("metrics", metrics(&state, &req)),
        (&Method::GET, p) if p.starts_with("/api/") => {
            ("api", crate::api::handle(&state, &req).await)
        }
        _ => ("other", reply(StatusCode::NOT_FOUND, "not found\n")),
    };
    state.requests.count(route, resp.status().as_u16());
    Ok(resp)
}

/// `GET /metrics`: the Prometheus exposition, for a `[metrics]` token.
fn metrics(state: &State, req: &Request<Incoming>) -> Resp {
    if state.cfg.metrics_tokens.is_empty() {
        return reply(
            StatusCode::NOT_FOUND,
            "metrics are off (no [metrics] tokens)\n",
        );
    }
    let authorized = auth::bearer(req.headers().get(header::AUTHORIZATION))
        .is_some_and(|t| auth::any_matches(&state.cfg.metrics_tokens, t));
    if !authorized {
        let mut r = reply(StatusCode::UNAUTHORIZED, "unauthorized\n");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (content_type, body) = crate::metrics::render(&state.registry, accept);
    let mut r = reply(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn refuse(c: &Counters, cause: RefuseCause, status: StatusCode, why: &'static str) -> Resp {
    add(&c.refused[cause as usize], 1);
    add(cause.coarse(c), 1);
    reply(status, why)
}

/// Most bytes of a refused request's body read (and thrown away) so that
/// the client, still sending, sees the status instead of a reset.
const DRAIN_MAX: usize = 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers `resp` to a request refused before its body was read: a small
/// body is read and dropped first (bounded in size and time, so a refused
/// client cannot make the collector read much), a large one is not.
async fn refuse_unread(req: Request<Incoming>, resp: Resp) -> Resp {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_none_or(|n| n <= DRAIN_MAX as u64) {
        let _ = tokio::time::timeout(
            DRAIN_TIMEOUT,
            Limited::new(req.into_body(), DRAIN_MAX).collect(),
        )
        .await;
    }
    resp
}

#[expect(
    clippy::too_many_lines,
    reason = "the checks, cheapest first, read best in order in one place"
)]
async fn ingest(
    state: &State,
    peer_cert: Option<&str>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Resp {
    let c = &state.counters;
    // Who: a token when agents are configured (with mTLS on top if set),
    // else the client certificate the TLS layer already verified.
    let agent = if state.cfg.agent_tokens.is_empty() {
        peer_cert.map(str::to_owned)
    } else {
        auth::bearer(req.headers().get(header::AUTHORIZATION))
            .and_then(|t| auth::agent_of(&state.cfg.agent_tokens, t))
            .map(str::to_owned)
    };
    let Some(agent) = agent else {
        tracing::warn!(%peer, "ingest refused: no or unknown token");
        let mut r = refuse(
            c,
            RefuseCause::Unauthorized,
            StatusCode::UNAUTHORIZED,
            "unauthorized\n",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return refuse_unread(req, r).await;
    };
    if !state.rate.allow(&agent) {
        let mut r = refuse(
            c,
            RefuseCause::RateLimited,
            StatusCode::TOO_MANY_REQUESTS,
            "slow down\n",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return refuse_unread(req, r).await;
    }
    let h = req.headers();
    if h.get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        != Some("zstd")
    {
        let r = refuse(
            c,
            RefuseCause::UnsupportedEncoding,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Encoding: zstd expected\n",
        );
        return refuse_unread(req, r).await;
    }
    let Some(batch) = h
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|b| !b.is_empty() && b.len() <= MAX_BATCH_ID)
        .map(str::to_owned)
    else {
        let r = refuse(
            c,
            RefuseCause::NoBatchId,
            StatusCode::BAD_REQUEST,
            "Idempotency-Key expected\n",
        );
        return refuse_unread(req, r).await;
    };
    let max_body = state.cfg.limits.max_body_bytes;
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body) {
        tracing::warn!(%agent, declared, max_body, "ingest refused: body too large");
        let r = refuse(
            c,
            RefuseCause::BodyTooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body too large\n",
        );
        return refuse_unread(req, r).await;
    }
    let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
    let body =
        match tokio::time::timeout(BODY_TIMEOUT, Limited::new(req.into_body(), limit).collect())
            .await
        {
            Ok(Ok(b)) => {
                let b = b.to_bytes();
                add(&c.bytes_compressed, b.len() as u64);
                b
            }
            Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return refuse(
                    c,
                    RefuseCause::BodyTooLarge,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body too large\n",
                );
            }
            Ok(Err(_)) | Err(_) => {
                return refuse(
                    c,
                    RefuseCause::BodyUnread,
                    StatusCode::BAD_REQUEST,
                    "body not read\n",
                );
            }
        };
    store_batch(state, agent, batch, body).await
}

#[derive(Serialize)]
struct Ack<'a> {
    batch: &'a str,
    accepted: u64,
    duplicates: u64,
    invalid: u64,
}

/// Decompresses, parses and stores a batch that passed every check, and
/// answers with its ack.
async fn store_batch(state: &State, agent: String, batch: String, body: Bytes) -> Resp {
    let c = &state.counters;
    let max_raw = state.cfg.limits.max_decompressed_bytes;
    let store = Arc::clone(&state.store);
    let agent2 = agent.clone();
    let counters = Arc::clone(&state.counters);
    // Decompression, parsing and the fsynced commit are blocking work.
    let done = tokio::task::spawn_blocking(move || {
        let raw = ingest::decompress_bounded(&body, max_raw)?;
        add(&counters.bytes_decompressed, raw.len() as u64);
        let parsed = ingest::parse_batch(&raw);
        let received = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let ins = store.insert(&agent2, received, &parsed.rows);
        Ok::<_, ingest::IngestError>((parsed.invalid, ins))
    })
    .await;
    match done {
        Ok(Ok((invalid, Ok(ins)))) => {
            add(&c.batches_acked, 1);
            add(&c.events_accepted, ins.accepted);
            add(&c.events_duplicate, ins.duplicates);
            add(&c.events_invalid, invalid);
            if ins.accepted > 0 {
                state.stored.send_modify(|n| *n = n.wrapping_add(1));
            }
            if invalid > 0 {
                tracing::warn!(%agent, %batch, invalid, "ingest: lines skipped (not events)");
            }
            let ack = serde_json::to_vec(&Ack {
                batch: &batch,
                accepted: ins.accepted,
                duplicates: ins.duplicates,
                invalid,
            })
            .unwrap_or_default();
            json_reply(StatusCode::OK, ack)
        }
        Ok(Ok((_, Err(error)))) => {
            add(&c.store_errors, 1);
            tracing::error!(%agent, %batch, error = %error, "ingest: store failed; batch not acked");
            reply(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
        Ok(Err(ingest::IngestError::TooLarge { limit })) => {
            tracing::warn!(%agent, %batch, limit, "ingest refused: decompressed batch too large");
            refuse(
                c,
                RefuseCause::DecompressedTooLarge,
                StatusCode::PAYLOAD_TOO_LARGE,
                "decompressed batch too large\n",
            )
        }
        Ok(Err(ingest::IngestError::Decompress(_))) => refuse(
            c,
            RefuseCause::NotZstd,
            StatusCode::BAD_REQUEST,
            "not a zstd body\n",
        ),
        Err(_) => {
            add(&c.store_errors, 1);
            reply(StatusCode::INTERNAL_SERVER_ERROR, "ingest failed\n")
        }
    }
}
