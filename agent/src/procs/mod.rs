//! procs stage (in progress).
