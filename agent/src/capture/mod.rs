//! capture stage (in progress).
