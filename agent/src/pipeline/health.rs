//! What the pipeline reports about itself: the `agent.health` event and
//! the figures `/metrics` publishes, computed once for both.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use super::Pipeline;
use crate::{
    event::{kind, Event, Health},
    metrics::{AgentMetrics, PipelineFigures},
};

impl Pipeline {
    /// Publishes the pipeline's figures to `metrics` (at most every
    /// [`crate::metrics::PUBLISH_EVERY`], and once more when drained).
    pub fn publish_to(&mut self, metrics: Arc<AgentMetrics>) {
        self.metrics = Some((metrics, Instant::now()));
        self.publish(true);
    }

    pub(super) fn publish(&mut self, now: bool) {
        let due = match &self.metrics {
            Some((_, last)) => now || last.elapsed() >= crate::metrics::PUBLISH_EVERY,
            None => false,
        };
        if !due {
            return;
        }
        let f = self.figures();
        let mut dropped = f.dropped;
        dropped.remove(SINK_LINES_DROPPED);
        let figures = PipelineFigures {
            records: self.records_by_kind.clone(),
            events: self.events_by_kind.clone(),
            dropped,
            findings: self.findings_by_class(),
            counters: f.counters,
            gauges: f.gauges,
        };
        if let Some((m, last)) = &mut self.metrics {
            m.publish(figures);
            *last = Instant::now();
        }
    }

    fn findings_by_class(&self) -> BTreeMap<String, u64> {
        self.findings
            .iter()
            .map(|(k, v)| (k.strip_prefix("findings_").unwrap_or(k).to_owned(), *v))
            .collect()
    }

    /// What `agent.health` and `/metrics` report, computed once for both.
    fn figures(&self) -> Figures {
        let stats = self.sinks.stats();
        let mut dropped = self.dropped.clone();
        let mut counters = self.counters.clone();
        let mut gauges = BTreeMap::new();
        for (name, v) in &self.kernel {
            let key = format!("kernel_{name}");
            if matches!(
                *name,
                "ringbuf_full"
                    | "tls_bytes_lost"
                    | "read_failed"
                    | "tls_no_entry"
                    | "tls_args_full"
                    | "tls_tail_call_failed"
                    | "scope_full"
                    | "rustls_padding_lost"
                    | "plain_bytes_lost"
                    | "plain_unsupported"
                    | "plain_unsupported_bytes"
            ) || name.starts_with("record_")
            {
                dropped.insert(key, *v);
            } else if matches!(*name, "tls_targets" | "tls_attached_processes") {
                gauges.insert(key, *v);
            } else {
                counters.insert(key, *v);
            }
        }
        dropped.insert("stream_gap_bytes".into(), self.streams.gap_bytes);
        dropped.insert("streams_evicted".into(), self.streams.evicted);
        // rustls records parsed without their other direction.
        dropped.insert(
            "rustls_unlinked_chunks".into(),
            self.streams.links.released_unlinked,
        );
        counters.insert("rustls_links_unused".into(), self.streams.links.unused);
        dropped.insert(
            "streams_evicted_memory".into(),
            self.streams.evicted_for_memory,
        );
        gauges.insert(
            "http_buffered_bytes".into(),
            self.streams.held_bytes() as u64,
        );
        dropped.insert("tool_calls_dropped".into(), self.corr.dropped_pending);
        // MCP HTTP+SSE calls emitted without the answer their stream owed.
        dropped.insert(
            "mcp_sse_unanswered".into(),
            self.mcp_join.released_unanswered,
        );
        counters.insert("mcp_sse_joined".into(), self.mcp_join.joined);
        dropped.insert("procs_evicted".into(), self.procs.evicted());
        dropped.insert(SINK_LINES_DROPPED.into(), stats.lines_dropped());
        counters.insert("tls_chunks_not_http".into(), self.streams.skipped_not_http);
        gauges.insert("open_connections".into(), self.streams.len() as u64);
        counters.extend(self.redacted.counters());
        counters.extend(self.redactor.cache_counters());
        for (name, v) in self.detector.counters() {
            counters.insert(format!("detect_{name}"), v);
        }
        for (name, v) in &self.router.routed {
            counters.insert(format!("routed_{name}"), *v);
        }
        dropped.insert("events_unrouted".into(), self.router.unrouted);
        counters.insert("blind_spots".into(), self.blind_spots.raised);
        if let Some(o) = &self.opinion {
            for (name, v) in o.counters() {
                counters.insert(name.to_owned(), v);
            }
        }
        Figures {
            dropped,
            counters,
            gauges,
            bytes_shipped: stats.sinks.iter().map(|s| s.bytes_written).sum(),
            spool_depth: stats
                .sinks
                .iter()
                .filter_map(|s| s.ship.as_ref())
                .map(|sh| sh.spool.segments_now)
                .sum(),
        }
    }

    pub(super) fn health_event(&mut self) -> Event {
        let f = self.figures();
        // agent.health keeps one `counters` map: findings and gauges in it.
        let mut counters = f.counters;
        counters.extend(f.gauges);
        counters.extend(self.findings.clone());
        let mut ev = self.env.event(kind::AGENT_HEALTH, self.now(), None);
        ev.health = Some(Health {
            uptime_s: self.started.elapsed().as_secs(),
            events_emitted: self.events_emitted,
            records_received: self.records_received,
            dropped: f.dropped,
            counters,
            bytes_shipped: f.bytes_shipped,
            spool_depth: f.spool_depth,
        });
        ev
    }
}

/// The `agent.health` drop entry that sums every sink's losses.
const SINK_LINES_DROPPED: &str = "sink_lines_dropped";

/// The pipeline's counters, split for `agent.health` and `/metrics`.
struct Figures {
    dropped: BTreeMap<String, u64>,
    /// Monotonic, findings apart.
    counters: BTreeMap<String, u64>,
    gauges: BTreeMap<String, u64>,
    bytes_shipped: u64,
    /// Segments waiting in the collector sinks' spools.
    spool_depth: u64,
}
