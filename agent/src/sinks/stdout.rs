//! The stdout sink.

use std::io::{self, Write as _};

use super::writer::{Output, Pending};

/// Writes batches to the process's stdout.
pub(super) struct StdoutOutput;

impl StdoutOutput {
    pub(super) fn new() -> Self {
        Self
    }
}

impl Output for StdoutOutput {
    fn write_batch(&mut self, batch: &Pending<'_>) -> io::Result<()> {
        let batch = batch.bytes;
        // Holding the lock for the whole batch keeps lines whole even if
        // something else in the process prints to stdout.
        let mut out = io::stdout().lock();
        out.write_all(batch)?;
        out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}
