//! Prometheus metrics: the collector's `/metrics`, and the exposition
//! helpers the daemon's `/metrics` uses too.
//!
//! Counters live where they are counted (atomics in [`crate::server`], the
//! store, the forwarders); this module reads them at scrape time through a
//! [`prometheus_client`] `Collector`, so counting costs one relaxed atomic
//! add and nothing is copied between scrapes.
//!
//! Names follow Prometheus conventions: `aitrail_` prefix, the subsystem
//! (`collector_`), units in the name (`_bytes`, `_seconds`), `_total` on
//! counters. Labels are bounded sets (`status`, `cause`, `result`, a
//! configured forwarder's name): never an agent, event, batch or process id.
//!
//! Access: `GET /metrics` on the collector's HTTPS listener with
//! `Authorization: Bearer <metrics token>` (`[metrics] tokens`); no tokens
//! means the endpoint answers 404, like the query API without tokens.
//! Agent tokens and query tokens do not open it: a scraper holds the least
//! privilege, and a metrics token reads no event.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{atomic::Ordering, Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::{Registry, Unit},
};

use crate::server::{Counters, RefuseCause};

/// Content type of the `OpenMetrics` text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition a client asked for (`Accept`): `OpenMetrics` when it names
/// it, else the Prometheus text format 0.0.4 that every scraper reads.
/// Returns the content type and the body.
pub fn render(registry: &Registry, accept: Option<&str>) -> (&'static str, String) {
    let mut body = String::with_capacity(16 * 1024);
    let openmetrics = accept.is_some_and(|a| a.contains("application/openmetrics-text"));
    // Writing into a String cannot fail; a collector's own error (none of
    // ours returns one) would leave a partial body, which a scraper refuses.
    if openmetrics {
        let _ = prometheus_client::encoding::text::encode(&mut body, registry);
        (OPENMETRICS_CONTENT_TYPE, body)
    } else {
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut body, registry);
        (
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            body,
        )
    }
}

/// One label set: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// A counter without labels. `name` has no `_total` (the encoder adds it)
/// and no unit (given as `unit`).
pub fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

/// A gauge without labels.
pub fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

/// A family of counters or gauges, one sample per label set. The
/// descriptor is written even when there is no sample yet, so a scraper
/// sees every metric from the first scrape.
pub fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in samples {
        let one = m.encode_family(&labels)?;
        match kind {
            MetricType::Gauge => ConstGauge::new(value).encode(one)?,
            _ => ConstCounter::new(value).encode(one)?,
        }
    }
    Ok(())
}

/// A family with one label.
pub fn by_label<V: Into<String>>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    label: &'static str,
    samples: impl IntoIterator<Item = (V, u64)>,
) -> fmt::Result {
    family(
        enc,
        name,
        help,
        unit,
        kind,
        samples
            .into_iter()
            .map(|(v, n)| (vec![(label, v.into())], n)),
    )
}

/// The counters of one forwarder, as `/metrics` shows them.
///
/// The hook for the forwarders (collector/src/forward/): each running
/// forwarder registers an implementation with
/// [`CollectorMetrics::register_forwarder`]; its counters appear as
/// `aitrail_collector_forward_<counter>_total{forwarder="<name>",kind="<kind>"}`
/// (gauges without `_total`). `name` is the configured forwarder's name, a
/// bounded set chosen by the operator; `kind` its destination type.
pub trait ForwarderMetrics: Send + Sync + 'static {
    /// The forwarder's configured name (a label value).
    fn name(&self) -> &str;
    /// Its destination type, e.g. `splunk_hec` (a label value).
    fn kind(&self) -> &str;
    /// Monotonic counters, e.g. `("events_sent", n)`, `("events_dropped", n)`,
    /// `("batches_retried", n)`; names in snake case, without `_total`.
    fn counters(&self) -> Vec<(&'static str, u64)>;
    /// Values that go up and down, e.g. `("queue_events", n)`.
    fn gauges(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// The forwarders' counters (collector/src/forward/), as `/metrics` shows
/// them: `aitrail_collector_forward_events_sent_total{forwarder,kind}`, ….
impl ForwarderMetrics for crate::forward::Forwarder {
    fn name(&self) -> &str {
        crate::forward::Forwarder::name(self)
    }

    fn kind(&self) -> &str {
        crate::forward::Forwarder::kind(self)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &*self.counters;
        let get = crate::forward::ForwardCounters::get;
        vec![
            ("events_sent", get(&c.events_sent)),
            ("events_rejected", get(&c.events_rejected)),
            ("events_duplicate", get(&c.events_duplicate)),
            ("events_dropped", get(&c.events_dropped)),
            ("events_expired", get(&c.events_expired)),
            ("events_invalid", get(&c.events_invalid)),
            ("batches_sent", get(&c.batches_sent)),
            ("batches_retried", get(&c.batches_retried)),
            ("batches_rejected", get(&c.batches_rejected)),
            ("errors", get(&c.errors)),
            ("connects", get(&c.connects)),
            ("bytes_sent", get(&c.bytes_sent)),
            ("connection_resets", get(&c.connection_resets)),
            ("events_resent", get(&c.events_resent)),
            ("events_trimmed", get(&c.events_trimmed)),
            ("events_truncated", get(&c.events_truncated)),
            ("fields_dropped", get(&c.fields_dropped)),
            ("answers_unexpected", get(&c.answers_unexpected)),
        ]
    }

    fn gauges(&self) -> Vec<(&'static str, u64)> {
        let c = &*self.counters;
        let get = crate::forward::ForwardCounters::get;
        vec![
            ("lag_events", get(&c.lag)),
            ("cursor_seq", get(&c.cursor)),
            ("newest_seq", get(&c.newest)),
            (
                "last_ack_timestamp_seconds",
                get(&c.last_ack_unix_ms) / 1000,
            ),
        ]
    }
}

/// HTTP answers by route and status, counted as they are sent.
#[derive(Debug, Default)]
pub struct Requests {
    by: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl Requests {
    /// Counts one answer. `route` is one of a fixed set (`ingest`, `api`,
    /// `metrics`, `healthz`, `other`): the label stays bounded whatever
    /// paths clients try.
    pub fn count(&self, route: &'static str, status: u16) {
        let mut by = self
            .by
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *by.entry((route, status)).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<(&'static str, u16), u64> {
        self.by
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What the collector's `/metrics` reads: its counters, its answers, and
/// the forwarders registered so far.
pub struct CollectorMetrics {
    counters: Arc<Counters>,
    requests: Arc<Requests>,
    forwarders: Mutex<Vec<Arc<dyn ForwarderMetrics>>>,
    /// Unix time the collector started, seconds.
    started: f64,
}

impl fmt::Debug for CollectorMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectorMetrics")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl CollectorMetrics {
    pub fn new(counters: Arc<Counters>, requests: Arc<Requests>) -> Self {
        Self {
            counters,
            requests,
            forwarders: Mutex::new(Vec::new()),
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    /// Adds a forwarder's counters to `/metrics` (see [`ForwarderMetrics`]).
    pub fn register_forwarder(&self, f: Arc<dyn ForwarderMetrics>) {
        self.forwarders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(f);
    }

    /// A registry (prefix `aitrail`) that reads these metrics at each scrape.
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut r = Registry::with_prefix("aitrail");
        r.register_collector(Box::new(Scrape(Arc::clone(self))));
        r
    }
}

#[derive(Debug)]
struct Scrape(Arc<CollectorMetrics>);

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let m = &self.0;
        let c = &*m.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let e = &mut enc;
        let bytes = Unit::Bytes;
        let seconds = Unit::Seconds;
        family(
            e,
            "collector_http_requests",
            "HTTP answers of the collector by route (ingest, api, metrics, healthz, other) and status code.",
            None,
            MetricType::Counter,
            m.requests
                .snapshot()
                .into_iter()
                .map(|((route, status), n)| {
                    (vec![("route", route.to_owned()), ("status", status.to_string())], n)
                }),
        )?;
        counter(
            e,
            "collector_ingest_batches_acked",
            "Batches stored and acknowledged (200).",
            None,
            get(&c.batches_acked),
        )?;
        by_label(
            e,
            "collector_ingest_events",
            "Lines of acknowledged batches by result: accepted (stored), duplicate (already stored, dropped by id), invalid (not an event, skipped).",
            None,
            MetricType::Counter,
            "result",
            [
                ("accepted", get(&c.events_accepted)),
                ("duplicate", get(&c.events_duplicate)),
                ("invalid", get(&c.events_invalid)),
            ],
        )?;
        by_label(
            e,
            "collector_ingest_refused",
            "Ingest requests refused, by cause (nothing of a refused request is stored).",
            None,
            MetricType::Counter,
            "cause",
            RefuseCause::ALL
                .iter()
                .map(|cause| (cause.name(), get(&c.refused[*cause as usize]))),
        )?;
        counter(
            e,
            "collector_ingest_received",
            "Compressed body bytes of the batches read whole.",
            Some(&bytes),
            get(&c.bytes_compressed),
        )?;
        counter(
            e,
            "collector_ingest_decompressed",
            "Decompressed NDJSON bytes of the batches that decompressed within the limit.",
            Some(&bytes),
            get(&c.bytes_decompressed),
        )?;
        encode_rest(e, c)?;
        let forwarders = m
            .forwarders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        encode_forwarders(e, &forwarders)?;
        gauge_f64(
            e,
            "collector_start_time",
            "Unix time the collector started.",
            Some(&seconds),
            m.started,
        )
    }
}

/// Store, TLS, connections, retention.
fn encode_rest(e: &mut DescriptorEncoder<'_>, c: &Counters) -> fmt::Result {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    {
        counter(
            e,
            "collector_store_errors",
            "Batches the store could not commit (answered 503 or 500; the agent sends them again).",
            None,
            get(&c.store_errors),
        )?;
        by_label(
            e,
            "collector_tls_handshake_failures",
            "TLS handshakes that failed (bad or missing client certificate, not TLS) or timed out.",
            None,
            MetricType::Counter,
            "cause",
            [
                ("error", get(&c.tls_failures)),
                ("timeout", get(&c.tls_timeouts)),
            ],
        )?;
        counter(
            e,
            "collector_connections_accepted",
            "TCP connections accepted.",
            None,
            get(&c.connections_accepted),
        )?;
        counter(
            e,
            "collector_connections_refused",
            "TCP connections closed at once because limits.max_connections were open.",
            None,
            get(&c.connections_refused),
        )?;
        counter(
            e,
            "collector_retention_deleted_events",
            "Events deleted by retention.",
            None,
            get(&c.retention_deleted),
        )
    }
}

fn labels(f: &dyn ForwarderMetrics) -> Labels {
    vec![
        ("forwarder", f.name().to_owned()),
        ("kind", f.kind().to_owned()),
    ]
}

/// One family per counter name across the forwarders, labelled by
/// forwarder.
fn encode_forwarders(
    e: &mut DescriptorEncoder<'_>,
    forwarders: &[Arc<dyn ForwarderMetrics>],
) -> fmt::Result {
    let mut counters: BTreeMap<&'static str, Vec<(Labels, u64)>> = BTreeMap::new();
    let mut gauges: BTreeMap<&'static str, Vec<(Labels, u64)>> = BTreeMap::new();
    for f in forwarders {
        for (name, v) in f.counters() {
            counters
                .entry(name)
                .or_default()
                .push((labels(f.as_ref()), v));
        }
        for (name, v) in f.gauges() {
            gauges
                .entry(name)
                .or_default()
                .push((labels(f.as_ref()), v));
        }
    }
    for (name, samples) in counters {
        family(
            e,
            &format!("collector_forward_{name}"),
            "A forwarder's counter (see docs/shipping.md).",
            None,
            MetricType::Counter,
            samples,
        )?;
    }
    for (name, samples) in gauges {
        family(
            e,
            &format!("collector_forward_{name}"),
            "A forwarder's gauge (see docs/shipping.md).",
            None,
            MetricType::Gauge,
            samples,
        )?;
    }
    Ok(())
}

/// A gauge with a fractional value (a time).
pub fn gauge_f64(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> fmt::Result {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fwd {
        name: String,
    }

    impl ForwarderMetrics for Fwd {
        fn name(&self) -> &str {
            &self.name
        }
        fn kind(&self) -> &str {
            self.name.split_once('/').map_or("", |(_, k)| k)
        }
        fn counters(&self) -> Vec<(&'static str, u64)> {
            vec![("events_sent", 7), ("events_dropped", 1)]
        }
        fn gauges(&self) -> Vec<(&'static str, u64)> {
            vec![("queue_events", 3)]
        }
    }

    #[test]
    fn both_formats_carry_every_counter() {
        let counters = Arc::new(Counters::default());
        counters.events_accepted.fetch_add(5, Ordering::Relaxed);
        counters.refused[RefuseCause::NotZstd as usize].fetch_add(2, Ordering::Relaxed);
        let requests = Arc::new(Requests::default());
        requests.count("ingest", 200);
        requests.count("ingest", 200);
        requests.count("ingest", 400);
        let m = Arc::new(CollectorMetrics::new(counters, requests));
        m.register_forwarder(Arc::new(Fwd {
            name: "siem-1/splunk_hec".into(),
        }));
        let reg = m.registry();
        let (ct, text) = render(&reg, None);
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        for line in [
            "aitrail_collector_ingest_events_total{result=\"accepted\"} 5",
            "aitrail_collector_ingest_refused_total{cause=\"not_zstd\"} 2",
            "aitrail_collector_ingest_refused_total{cause=\"unauthorized\"} 0",
            "aitrail_collector_http_requests_total{route=\"ingest\",status=\"200\"} 2",
            "aitrail_collector_http_requests_total{route=\"ingest\",status=\"400\"} 1",
            "aitrail_collector_forward_events_sent_total{forwarder=\"siem-1/splunk_hec\",kind=\"splunk_hec\"} 7",
            "aitrail_collector_forward_queue_events{forwarder=\"siem-1/splunk_hec\",kind=\"splunk_hec\"} 3",
            "# TYPE aitrail_collector_ingest_received_bytes_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        let (ct, om) = render(&reg, Some("application/openmetrics-text;version=1.0.0"));
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# UNIT aitrail_collector_ingest_received_bytes bytes"));
    }
}
