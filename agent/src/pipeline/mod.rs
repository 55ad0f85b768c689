//! pipeline stage (in progress).
