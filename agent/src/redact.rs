//! Redaction of secrets (in progress).
