//! The store sink: events written straight into an embedded store (the
//! collector's `SQLite` + FTS5 store, in one directory), for a single host
//! that needs no collector server (`aitrail run`).
//!
//! A batch is one durable transaction; ids already stored are skipped, so a
//! batch written again after a crash is not stored twice. The store is the
//! same format the collector keeps: `aitrail search --store DIR` and
//! `aitrail trace --store DIR` read it. The config's `[store]` section
//! applies as on a collector: encryption, retention (held findings kept),
//! the archive and its object storage, run by the store's background
//! service while the sink is open.

use std::{io, sync::Arc};

use aitrail_collector::{
    ingest,
    store::{service::StoreService, Store},
};

use super::{
    writer::{Output, Pending},
    SinkError, StoreSpec,
};

/// The name the store records as the events' source.
const AGENT: &str = "local";

pub(super) struct StoreOutput {
    store: Arc<Store>,
    service: Option<StoreService>,
}

impl StoreOutput {
    pub(super) fn open(spec: &StoreSpec) -> Result<Self, SinkError> {
        let open_err = |e: &dyn std::fmt::Display| SinkError::Open {
            path: spec.dir.clone(),
            source: io::Error::other(e.to_string()),
        };
        let cfg = spec
            .settings
            .validate(&spec.dir)
            .map_err(|e| open_err(&e))?;
        let store = Arc::new(cfg.open().map_err(|e| open_err(&e))?);
        let service = StoreService::start(&store, cfg.service()).map_err(|e| open_err(&e))?;
        Ok(Self {
            store,
            service: Some(service),
        })
    }
}

impl Output for StoreOutput {
    fn write_batch(&mut self, batch: &Pending<'_>) -> io::Result<()> {
        let parsed = ingest::parse_batch(batch.bytes);
        if parsed.invalid > 0 {
            // Our own lines: a line the store cannot index is a bug, and it
            // is counted as a failed write rather than silently skipped.
            return Err(io::Error::other(format!(
                "{} line(s) the store could not index",
                parsed.invalid
            )));
        }
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        self.store
            .insert(AGENT, now, &parsed.rows)
            .map(|_| ())
            .map_err(io::Error::other)
    }

    /// Stops the background work: the archive closes its open segment.
    fn finish(&mut self) -> io::Result<()> {
        if let Some(s) = self.service.take() {
            s.stop();
        }
        Ok(())
    }
}
