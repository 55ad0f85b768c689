//! Small shared helpers (in progress).
