//! http stage (in progress).
