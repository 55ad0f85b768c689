//! The store sink: events written straight into an embedded store (the
//! collector's `SQLite` + FTS5 store, in one directory), for a single host
//! that needs no collector server (`aitrail run`).
//!
//! A batch is one durable transaction; ids already stored are skipped, so a
//! batch written again after a crash is not stored twice. The store is the
//! same format the collector keeps: `aitrail search --store DIR` and
//! `aitrail trace --store DIR` read it.

use std::{io, path::Path};

use aitrail_collector::{ingest, store::Store};

use super::{
    writer::{Output, Pending},
    SinkError,
};

/// The name the store records as the events' source.
const AGENT: &str = "local";

pub(super) struct StoreOutput {
    store: Store,
}

impl StoreOutput {
    pub(super) fn open(dir: &Path) -> Result<Self, SinkError> {
        let store = Store::open(dir).map_err(|e| SinkError::Open {
            path: dir.to_owned(),
            source: io::Error::other(e),
        })?;
        Ok(Self { store })
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

    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}
