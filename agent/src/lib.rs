//! aitrail: the host daemon's stages, one module per pipeline stage.
//!
//! capture → streams → http → llm → correlate → sinks, with procs keeping the
//! process tree. Parsers and redaction are pure; only `capture` touches the
//! kernel and only `sinks` touch disk or the network.

pub mod blindspot;
pub mod capture;
pub mod config;
pub mod correlate;
pub mod detect;
pub mod eval;
pub mod event;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod launch;
pub mod llm;
pub mod mcp;
pub mod metrics;
pub mod opinion;
pub mod pipeline;
pub mod procs;
pub mod redact;
pub mod replay;
pub mod route;
pub mod ship;
pub mod sinks;
pub mod streams;
pub mod util;
