//! The sender: posts spooled segments to the collector, oldest first, one at
//! a time, and deletes each only when the collector's 200 names its batch.
//!
//! It runs on its own thread with a single-threaded tokio runtime (hyper's
//! client needs one); the sink's writer never waits for the network, only
//! for the spool's disk. One request in flight keeps the order simple and a
//! slow collector cannot be flooded; with batches of megabytes, one round
//! trip per batch is not the limit.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{client::conn::http1::SendRequest, header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::{
    config::{CollectorSpec, INGEST_PATH},
    spool::{Segment, Spool, SpoolError},
    ShipError,
};

/// Roots used when `ca_file` is not set (Debian/Ubuntu/Fedora bundle path).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// First retry delay; doubles up to `retry_max_ms`.
const RETRY_BASE: Duration = Duration::from_millis(200);
/// An ack is a small JSON object; a bigger answer is not one.
const MAX_ACK_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    #[error("TLS handshake failed")]
    Tls(#[source] std::io::Error),
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    #[error("no answer within the timeout")]
    Timeout,
    #[error("collector answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("collector's answer is not an ack of this batch: {problem}")]
    BadAck { problem: String },
}

impl SendError {
    /// The collector refused this batch for good: sending it again would
    /// get the same answer and hold every later batch back.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Status {
                status: 400 | 413 | 415 | 422,
                ..
            }
        )
    }
}

/// The collector's answer to a batch.
#[derive(Debug, Deserialize)]
pub struct Ack {
    pub batch: String,
    pub accepted: u64,
    pub duplicates: u64,
    /// Lines the collector could not use (not JSON, no `id`): lost.
    pub invalid: u64,
}

/// Counters of the sender since start.
#[derive(Debug, Default)]
pub struct SendCounters {
    pub batches_sent: AtomicU64,
    pub batches_acked: AtomicU64,
    pub batches_retried: AtomicU64,
    pub batches_rejected: AtomicU64,
    pub bytes_acked: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub events_invalid: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn read_file_err(path: &Path) -> impl FnOnce(String) -> ShipError + '_ {
    move |problem| ShipError::Credentials {
        path: path.to_owned(),
        problem,
    }
}

/// Builds the TLS client configuration: the CA to trust and, for mTLS, the
/// client certificate.
pub fn tls_config(spec: &CollectorSpec) -> Result<Arc<ClientConfig>, ShipError> {
    let s = &spec.settings;
    let ca = s
        .ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_ROOTS));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| read_file_err(&ca)(e.to_string()))? {
        let cert = cert.map_err(|e| read_file_err(&ca)(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| read_file_err(&ca)(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(read_file_err(&ca)("no CA certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ShipError::Tls)?
        .with_root_certificates(roots);
    let config = match (&s.client_cert, &s.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| read_file_err(cert)(e.to_string()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| read_file_err(key)(e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(ShipError::Tls)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The bearer token, from the config or its file.
pub fn token(spec: &CollectorSpec) -> Result<Option<String>, ShipError> {
    if let Some(t) = &spec.settings.token {
        return Ok(Some(t.clone()));
    }
    let Some(path) = &spec.settings.token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| read_file_err(path)(e.to_string()))?;
    let t = text.trim_end();
    if t.is_empty() {
        return Err(read_file_err(path)("empty token".into()));
    }
    Ok(Some(t.to_owned()))
}

/// One HTTPS connection to the collector, re-opened when it breaks.
pub struct Client {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    authority: String,
    connector: tokio_rustls::TlsConnector,
    bearer: Option<String>,
    timeout: Duration,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(spec: &CollectorSpec) -> Result<Self, ShipError> {
        let server_name = ServerName::try_from(spec.host.clone()).map_err(|_| {
            ShipError::Config(super::config::ShipConfigError::Url {
                url: spec.url.clone(),
                problem: "host is not a DNS name or IP address",
            })
        })?;
        let authority = if spec.host.contains(':') {
            format!("[{}]:{}", spec.host, spec.port)
        } else {
            format!("{}:{}", spec.host, spec.port)
        };
        Ok(Self {
            host: spec.host.clone(),
            port: spec.port,
            server_name,
            authority,
            connector: tokio_rustls::TlsConnector::from(tls_config(spec)?),
            bearer: token(spec)?.map(|t| format!("Bearer {t}")),
            timeout: Duration::from_millis(spec.settings.timeout_ms),
            conn: None,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(SendError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(SendError::Tls)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "collector connection closed");
            }
        });
        Ok(sender)
    }

    /// Posts one batch and returns the collector's ack of it.
    pub async fn post(&mut self, batch_id: &str, payload: Bytes) -> Result<Ack, SendError> {
        let timeout = self.timeout;
        let exchange = async {
            let mut sender = match self.conn.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            sender.ready().await.map_err(SendError::Http)?;
            let mut req = Request::post(INGEST_PATH)
                .header(header::HOST, &self.authority)
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .header(header::CONTENT_ENCODING, "zstd")
                .header("idempotency-key", batch_id);
            if let Some(b) = &self.bearer {
                req = req.header(header::AUTHORIZATION, b);
            }
            let req = req
                .body(Full::new(payload))
                .map_err(|e| SendError::BadAck {
                    problem: format!("cannot build the request: {e}"),
                })?;
            let resp = sender.send_request(req).await.map_err(SendError::Http)?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ACK_BYTES)
                .collect()
                .await
                .map_err(|e| SendError::BadAck {
                    problem: format!("reading the answer: {e}"),
                })?
                .to_bytes();
            // The connection is reusable once the answer is read whole.
            self.conn = Some(sender);
            Ok::<_, SendError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| SendError::Timeout)??;
        if status != StatusCode::OK {
            return Err(SendError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            });
        }
        let ack: Ack = serde_json::from_slice(&body).map_err(|e| SendError::BadAck {
            problem: e.to_string(),
        })?;
        if ack.batch != batch_id {
            return Err(SendError::BadAck {
                problem: format!("acks batch {:?}", ack.batch),
            });
        }
        Ok(ack)
    }
}

/// Exponential backoff with equal jitter: the n-th wait is drawn from
/// [d/2, d] with d = min(max, base·2ⁿ), so agents that lost the same
/// collector do not all come back at once, and no wait is near zero.
#[derive(Debug)]
pub struct Backoff {
    failures: u32,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Self { failures: 0, max }
    }

    pub fn next_wait(&mut self) -> Duration {
        let d = RETRY_BASE
            .saturating_mul(1 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What the sender thread shares with the sink.
pub struct Shared {
    pub spool: Arc<Spool>,
    pub counters: Arc<SendCounters>,
    pub wake: flume::Receiver<()>,
    pub stop: Arc<AtomicBool>,
    pub drain: Duration,
    pub retry_max: Duration,
}

/// The sender thread's body: runs until stopped and drained (or the drain
/// time is up).
pub fn run(mut client: Client, shared: &Shared) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            // Nothing is lost: the segments stay spooled for the next start.
            tracing::error!(%error, "collector sender: no runtime; batches stay in the spool");
            return;
        }
    };
    rt.block_on(send_loop(&mut client, shared));
}

async fn send_loop(client: &mut Client, shared: &Shared) {
    let mut backoff = Backoff::new(shared.retry_max);
    let mut drain_until: Option<Instant> = None;
    let mut failing = false;
    loop {
        if drain_until.is_none() && shared.stop.load(Ordering::Relaxed) {
            drain_until = Some(Instant::now() + shared.drain);
        }
        if drain_until.is_some_and(|t| Instant::now() >= t) {
            if !shared.spool.is_empty() {
                tracing::warn!(
                    segments = shared.spool.stats().segments_now,
                    "collector sender: stopping with batches still spooled; they are sent at the next start"
                );
            }
            return;
        }
        let Some(segment) = shared.spool.take_oldest() else {
            if drain_until.is_some() {
                return;
            }
            // Woken by a new segment or the stop; the timeout re-checks
            // the spool's age bound now and then.
            let _ = tokio::time::timeout(Duration::from_secs(1), shared.wake.recv_async()).await;
            continue;
        };
        if send_one(client, shared, &segment).await {
            backoff.reset();
            if failing {
                tracing::info!("collector sender: the collector acks again");
                failing = false;
            }
            continue;
        }
        failing = true;
        let mut wait = backoff.next_wait();
        if let Some(t) = drain_until {
            wait = wait.min(t.saturating_duration_since(Instant::now()));
            tokio::time::sleep(wait).await;
        } else {
            // A stop during the wait cuts it short: the drain starts now.
            let _ = tokio::time::timeout(wait, async {
                while !shared.stop.load(Ordering::Relaxed) {
                    if shared.wake.recv_async().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            })
            .await;
        }
    }
}

/// Sends one segment; `false` when it must be tried again later.
async fn send_one(client: &mut Client, shared: &Shared, segment: &Segment) -> bool {
    let c = &shared.counters;
    let payload = match shared.spool.read(segment) {
        Ok(p) => p,
        // Quarantined and counted by the spool; go on with the next.
        Err(SpoolError::Corrupt { .. }) => return true,
        Err(error) => {
            tracing::warn!(%error, "collector sender: cannot read a spooled segment");
            shared.spool.release();
            return false;
        }
    };
    let batch_id = segment.header.batch_id();
    let bytes = payload.len() as u64;
    add(&c.batches_sent, 1);
    match client.post(&batch_id, Bytes::from(payload)).await {
        Ok(ack) => {
            if let Err(error) = shared.spool.acked(segment) {
                tracing::warn!(%error, "collector sender: acked segment not deleted; it will be sent again and deduplicated");
            }
            add(&c.batches_acked, 1);
            add(&c.bytes_acked, bytes);
            add(&c.events_duplicate, ack.duplicates);
            add(&c.events_invalid, ack.invalid);
            if ack.invalid > 0 {
                tracing::warn!(batch = %batch_id, invalid = ack.invalid, "collector refused some lines of a batch");
            }
            tracing::debug!(batch = %batch_id, accepted = ack.accepted, duplicates = ack.duplicates, "batch acked");
            true
        }
        Err(error) if error.is_permanent() => {
            tracing::error!(batch = %batch_id, events = segment.header.events, %error, "collector refused a batch for good; dropped and counted");
            add(&c.batches_rejected, 1);
            shared.spool.rejected(segment);
            true
        }
        Err(error) => {
            add(&c.batches_retried, 1);
            tracing::warn!(batch = %batch_id, %error, "collector send failed; will retry");
            shared.spool.release();
            false
        }
    }
}
