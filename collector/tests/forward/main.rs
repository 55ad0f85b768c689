//! Forwarders against real receivers started by the tests on 127.0.0.1:
//! - syslog and CEF over TLS → rsyslog (Debian `rsyslog` +
//!   `rsyslog-gnutls`), a foreground instance with its own config, work
//!   directory and pid file in a temp dir (no `/dev/log`, the system
//!   rsyslog is never touched);
//! - OTLP/HTTP → `tests/mock/otlp_receiver.py`, which decodes each request
//!   with the official python `opentelemetry-proto` package.
//!
//! Both are installed by tests/setup-test-deps.sh; a missing one fails the
//! test with that hint (nothing is skipped).

#[path = "../../../agent/tests/shipping/pki.rs"]
#[expect(
    dead_code,
    reason = "shared with agent/tests/shipping, which uses every field"
)]
mod pki;

mod otlp;
mod support;
mod syslog;
