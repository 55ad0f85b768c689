//! The collector sink: the writer's batches go to [`crate::ship`], which
//! spools them and sends them to the collector.
//!
//! Guarantees as for the other sinks, with "written" meaning "in the spool":
//! a batch that cannot be spooled (disk error, larger than the spool) is
//! counted as dropped by the writer; what happens after (acked, or dropped
//! by the spool's full policy, age bound or a refusal) is counted in the
//! sink's `ship` counters.

use std::{io, time::Duration};

use super::writer::{BatchPolicy, Output, Pending};
use crate::ship::{CollectorSpec, ShipError, Shipper};

pub(super) struct CollectorOutput {
    shipper: Shipper,
    policy: BatchPolicy,
}

impl CollectorOutput {
    pub(super) fn start(spec: &CollectorSpec) -> Result<Self, ShipError> {
        let s = &spec.settings;
        Ok(Self {
            shipper: Shipper::start(spec)?,
            policy: BatchPolicy {
                max_bytes: s.batch_max_bytes as usize,
                max_lines: u64::from(s.batch_max_events),
                max_wait: Duration::from_millis(s.batch_max_wait_ms),
                finding_max_wait: Some(Duration::from_millis(s.finding_max_wait_ms)),
                when_idle: false,
            },
        })
    }

    pub(super) fn handle(&self) -> crate::ship::ShipHandle {
        self.shipper.handle()
    }
}

impl Output for CollectorOutput {
    fn write_batch(&mut self, batch: &Pending<'_>) -> io::Result<()> {
        self.shipper
            .spool_batch(batch.bytes, batch.lines, batch.findings)
            .map_err(io::Error::other)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.shipper.finish()
    }

    fn policy(&self) -> BatchPolicy {
        self.policy
    }
}
