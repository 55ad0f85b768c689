//! streams stage (in progress).
