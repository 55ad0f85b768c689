//! llm stage (in progress).
