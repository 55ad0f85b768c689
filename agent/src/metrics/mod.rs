//! metrics: the daemon's Prometheus `/metrics` (`[metrics] listen`).
//!
//! Off by default: a daemon opens no port nobody asked for, and two
//! daemons on one host would fight over a default one. When on, it serves
//! plain HTTP on a **loopback** address only (`127.0.0.1:9464`, `[::1]:…`):
//! a node exporter's usual place, scraped by a local Prometheus or agent.
//! Any other address is refused at start — the counters name sinks and
//! rule classes, and there is no TLS or token on this listener; scrape
//! remotely through something that adds them.
//!
//! What is shown (docs/shipping.md lists every name):
//! - pipeline: kernel records in by kind, events out by kind, drops by
//!   cause (every `dropped` entry of `agent.health`), findings by class, the
//!   rest of `agent.health`'s counters, and its two gauges;
//! - sinks: lines queued, written, dropped, bytes, write errors, per sink;
//! - collector sinks: spool (segments, bytes, drops by cause, quarantined,
//!   torn, ENOSPC evictions) and sender (batches sent, acked, retried,
//!   rejected; bytes and events acked; duplicates).
//!
//! Freshness: sink and spool counters are atomics read at the scrape; the
//! pipeline's own figures are published by its thread at most every
//! [`PUBLISH_EVERY`] (it owns them without a lock), so they lag by that much.

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use aitrail_collector::metrics::{by_label, counter, family, gauge_f64, render, Labels};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, header, Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    collector::Collector,
    encoding::DescriptorEncoder,
    metrics::MetricType,
    registry::{Registry, Unit},
};
use serde::Deserialize;

use crate::sinks::{SinkStats, StatsHandle};

/// How often the pipeline thread publishes its figures at most.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Scrapes served at once; more wait for the next accept.
const MAX_CONNECTIONS: usize = 8;

/// `[metrics]` of the agent config.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// `HOST:PORT` of the plain-HTTP `/metrics` listener, on a loopback
    /// address (e.g. `127.0.0.1:9464`). Unset: no listener.
    pub listen: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics.listen `{listen}`: {problem}")]
    Listen {
        listen: String,
        problem: &'static str,
    },
    #[error("metrics: cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics: cannot start the server thread")]
    Spawn(#[source] std::io::Error),
}

impl MetricsSection {
    /// The address to listen on, if any; refuses what is not loopback.
    pub fn validate(&self) -> Result<Option<SocketAddr>, MetricsError> {
        let Some(listen) = &self.listen else {
            return Ok(None);
        };
        let bad = |problem| MetricsError::Listen {
            listen: listen.clone(),
            problem,
        };
        let addr: SocketAddr = listen
            .parse()
            .map_err(|_| bad("not an IP:PORT (e.g. 127.0.0.1:9464)"))?;
        if !addr.ip().is_loopback() {
            return Err(bad(
                "must be a loopback address (127.0.0.0/8 or ::1): /metrics is plain HTTP without a token",
            ));
        }
        Ok(Some(addr))
    }
}

/// What the pipeline thread publishes (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct PipelineFigures {
    /// Kernel records received, by record kind.
    pub records: BTreeMap<&'static str, u64>,
    /// Events delivered to the router, by event kind.
    pub events: BTreeMap<String, u64>,
    /// `agent.health`'s `dropped`, less `sink_lines_dropped` (shown per
    /// sink and per cause by the sink and spool metrics).
    pub dropped: BTreeMap<String, u64>,
    /// Findings emitted, by class.
    pub findings: BTreeMap<String, u64>,
    /// `agent.health`'s other monotonic counters.
    pub counters: BTreeMap<String, u64>,
    /// Values that go up and down (`open_connections`, …).
    pub gauges: BTreeMap<String, u64>,
}

/// Everything `/metrics` reads: the pipeline's published figures and the
/// sinks' live counters.
#[derive(Debug)]
pub struct AgentMetrics {
    pipeline: Mutex<PipelineFigures>,
    sinks: StatsHandle,
    /// Unix time the daemon started, seconds.
    started: f64,
}

impl AgentMetrics {
    pub fn new(sinks: StatsHandle) -> Arc<Self> {
        Arc::new(Self {
            pipeline: Mutex::new(PipelineFigures::default()),
            sinks,
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        })
    }

    /// Replaces the pipeline's figures (its thread calls this).
    pub fn publish(&self, figures: PipelineFigures) {
        *self
            .pipeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = figures;
    }

    /// The pipeline's last published figures.
    pub fn pipeline(&self) -> PipelineFigures {
        self.pipeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The sinks' counters now.
    pub fn sinks(&self) -> SinkStats {
        self.sinks.stats()
    }

    /// A registry (prefix `aitrail`) that reads these metrics per scrape.
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut r = Registry::with_prefix("aitrail");
        r.register_collector(Box::new(Scrape(Arc::clone(self))));
        r
    }
}

#[derive(Debug)]
struct Scrape(Arc<AgentMetrics>);

fn sink_label(name: &str) -> Labels {
    vec![("sink", name.to_owned())]
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let p = self.0.pipeline();
        let e = &mut enc;
        by_label(
            e,
            "agent_records",
            "Kernel records the pipeline received, by record kind.",
            None,
            MetricType::Counter,
            "kind",
            p.records.iter().map(|(k, v)| (*k, *v)),
        )?;
        by_label(
            e,
            "agent_events",
            "Events the pipeline delivered to the sinks' router, by event kind.",
            None,
            MetricType::Counter,
            "kind",
            p.events.iter().map(|(k, v)| (k.clone(), *v)),
        )?;
        by_label(
            e,
            "agent_dropped",
            "What the capture and the pipeline lost or refused, by cause (agent.health's `dropped`; sink and spool losses are in aitrail_sink_* and aitrail_ship_*).",
            None,
            MetricType::Counter,
            "cause",
            p.dropped.iter().map(|(k, v)| (k.clone(), *v)),
        )?;
        by_label(
            e,
            "agent_findings",
            "Findings emitted, by class.",
            None,
            MetricType::Counter,
            "class",
            p.findings.iter().map(|(k, v)| (k.clone(), *v)),
        )?;
        by_label(
            e,
            "agent_health_counter",
            "agent.health's other counters (LLM calls, HTTP exchanges, redactions, detection, routes, kernel probes), by name.",
            None,
            MetricType::Counter,
            "name",
            p.counters.iter().map(|(k, v)| (k.clone(), *v)),
        )?;
        by_label(
            e,
            "agent_health_gauge",
            "agent.health's values that go up and down (open TLS connections, buffered HTTP bytes, TLS targets), by name.",
            None,
            MetricType::Gauge,
            "name",
            p.gauges.iter().map(|(k, v)| (k.clone(), *v)),
        )?;
        encode_sinks(e, &self.0.sinks())?;
        gauge_f64(
            e,
            "agent_start_time",
            "Unix time the daemon started.",
            Some(&Unit::Seconds),
            self.0.started,
        )
    }
}

type SinkField = fn(&crate::sinks::SinkStat) -> u64;
type ShipField = fn(&crate::ship::ShipStats) -> u64;

/// Per-sink counters: name, help, in bytes?, value.
const SINK_COUNTERS: [(&str, &str, bool, SinkField); 5] = [
    ("sink_lines_queued", "Lines handed to the sink's queue.", false, |st| st.lines_queued),
    ("sink_lines_written", "Lines the sink wrote (for a collector sink: spooled).", false, |st| {
        st.lines_written
    }),
    ("sink_written", "Bytes of the lines written, newlines included.", true, |st| st.bytes_written),
    ("sink_write_errors", "Failed writes (one may lose a batch of lines).", false, |st| {
        st.write_errors
    }),
    (
        "sink_lines_dropped",
        "Lines lost before they were written: a failed write, a batch the spool could not take, a writer gone.",
        false,
        |st| st.lines_dropped,
    ),
];

/// Per collector sink: name, help, in bytes?, gauge?, value.
const SHIP_METRICS: [(&str, &str, bool, bool, ShipField); 16] = [
    ("ship_segments_written", "Batches written to the spool as segments.", false, false, |sh| sh.spool.segments_written),
    ("ship_segments_acked", "Segments the collector acknowledged (then deleted).", false, false, |sh| sh.spool.segments_acked),
    ("ship_events_spooled", "Events written to the spool.", false, false, |sh| sh.spool.events_written),
    ("ship_events_acked", "Events in batches the collector acknowledged.", false, false, |sh| sh.spool.events_acked),
    ("ship_findings_dropped", "Of the dropped events, the findings.", false, false, |sh| sh.spool.findings_dropped),
    ("ship_segments_quarantined", "Segments that failed their checks, moved to quarantine/.", false, false, |sh| sh.spool.segments_quarantined),
    ("ship_segments_torn", "Half-written segments (.tmp) a crash left, found at start.", false, false, |sh| sh.spool.segments_torn),
    ("ship_spool_no_space", "Segment writes the file system refused for want of space (ENOSPC, EDQUOT); each made room by the full policy or dropped the batch.", false, false, |sh| sh.spool.no_space),
    ("ship_spool_segments", "Segments in the spool now.", false, true, |sh| sh.spool.segments_now),
    ("ship_spool", "Bytes of the spool's segments now.", true, true, |sh| sh.spool.bytes_now),
    ("ship_batches_sent", "POSTs of a batch to the collector (each try).", false, false, |sh| sh.batches_sent),
    ("ship_batches_acked", "Batches the collector acknowledged.", false, false, |sh| sh.batches_acked),
    ("ship_batches_retried", "Tries that failed and will be retried (network, 401, 429, 5xx).", false, false, |sh| sh.batches_retried),
    ("ship_batches_rejected", "Batches the collector refused for good (400, 413, 415, 422).", false, false, |sh| sh.batches_rejected),
    ("ship_acked", "Compressed bytes the collector acknowledged.", true, false, |sh| sh.bytes_acked),
    ("ship_events_duplicate", "Events the collector already had (a batch resent after a lost ack).", false, false, |sh| sh.events_duplicate),
];

fn encode_sinks(e: &mut DescriptorEncoder<'_>, s: &SinkStats) -> fmt::Result {
    let bytes = Unit::Bytes;
    for (name, help, in_bytes, get) in SINK_COUNTERS {
        family(
            e,
            name,
            help,
            in_bytes.then_some(&bytes),
            MetricType::Counter,
            s.sinks.iter().map(|st| (sink_label(&st.sink), get(st))),
        )?;
    }
    counter(
        e,
        "sink_serialize_errors",
        "Events that could not be serialised (sent to no sink).",
        None,
        s.serialize_errors,
    )?;
    let ships: Vec<(&str, &crate::ship::ShipStats)> = s
        .sinks
        .iter()
        .filter_map(|st| st.ship.as_ref().map(|sh| (st.sink.as_str(), sh)))
        .collect();
    for (name, help, in_bytes, is_gauge, get) in SHIP_METRICS {
        family(
            e,
            name,
            help,
            in_bytes.then_some(&bytes),
            if is_gauge {
                MetricType::Gauge
            } else {
                MetricType::Counter
            },
            ships.iter().map(|(sink, sh)| (sink_label(sink), get(sh))),
        )?;
    }
    let mut dropped = Vec::new();
    for (sink, sh) in &ships {
        for (cause, n) in [
            ("full", sh.spool.dropped_full),
            ("expired", sh.spool.dropped_expired),
            ("rejected", sh.spool.dropped_rejected),
            ("corrupt", sh.spool.dropped_corrupt),
            ("invalid", sh.events_invalid),
        ] {
            dropped.push((
                vec![("sink", (*sink).to_owned()), ("cause", cause.to_owned())],
                n,
            ));
        }
    }
    family(
        e,
        "ship_events_dropped",
        "Events lost after they were spooled, by cause: full (evicted for room, or a new batch refused), expired (older than spool_max_age_secs), rejected (refused by the collector for good), corrupt (quarantined), invalid (lines the collector could not use).",
        None,
        MetricType::Counter,
        dropped,
    )
}

/// The `/metrics` listener: one thread with a small tokio runtime. Stops
/// (and joins) on drop.
pub struct MetricsServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (so a taken port fails the start, before capture) and
    /// serves `registry` at `GET /metrics`.
    pub fn start(addr: SocketAddr, registry: Registry) -> Result<Self, MetricsError> {
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(MetricsError::Spawn)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let registry = Arc::new(registry);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || rt.block_on(serve(listener, registry, stop_rx)))
            .map_err(MetricsError::Spawn)?;
        tracing::info!(%addr, "metrics: serving GET /metrics");
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    registry: Arc<Registry>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%error, "metrics: listener unusable; /metrics is off");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, _) = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(error) => {
                    tracing::debug!(%error, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                std::future::ready(Ok::<_, std::convert::Infallible>(respond(&registry, &req)))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(Duration::from_mins(1), conn).await;
        });
    }
}

fn respond(registry: &Registry, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found: try /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let (content_type, body) = render(registry, accept);
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}
