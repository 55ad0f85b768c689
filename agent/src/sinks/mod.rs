//! sinks stage (in progress).
