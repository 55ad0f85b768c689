//! correlate stage (in progress).
