//! HTTP/2 parser tests.
