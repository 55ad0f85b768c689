//! Forwarders against destinations started by the tests on 127.0.0.1.
//!
//! - [`http_destinations`]: Splunk HEC, Elasticsearch `_bulk` and an NDJSON
//!   receiver (mocks, [`mock`]), fed by a collector started in-process.
//! - [`syslog`]: syslog and CEF over TLS into a real rsyslog (Debian
//!   `rsyslog` + `rsyslog-gnutls`), a foreground instance with its own
//!   config, work directory and pid file in a temp dir (no `/dev/log`, the
//!   system rsyslog is never touched).
//! - [`otlp`]: OTLP/HTTP into `tests/mock/otlp_receiver.py`, which decodes
//!   each request with the official python `opentelemetry-proto` package.
//! - [`end_to_end`]: a collector in-process with `syslog`, `cef` and
//!   `otlp` forwarders to those real receivers.
//!
//! The oracle of the in-process tests: every stored event reaches each
//! destination exactly once by id, except what a destination refused
//! (counted) and the kinds its format cannot express.
//!
//! rsyslog and the python receiver are installed by
//! tests/setup-test-deps.sh; a missing one fails the test with that hint
//! (nothing is skipped).

mod end_to_end;
mod http_destinations;
mod inprocess;
mod mock;
mod otlp;
#[path = "../../../agent/tests/shipping/pki.rs"]
#[allow(
    dead_code,
    reason = "shared with agent/tests/shipping, which uses every field"
)]
mod pki;
mod support;
mod syslog;
