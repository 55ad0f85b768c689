//! HTTP over one TLS connection: plaintext bytes in, exchanges out.
//!
//! [`HttpParser`] (`proto.rs`) tells HTTP/2 from HTTP/1.x by the first
//! bytes and hands the connection to [`h2::H2Parser`] or to the HTTP/1.x
//! parser described here; both emit the same [`Exchange`]. After a 101 to
//! `Upgrade: websocket` the HTTP/1.x parser hands its bytes to [`ws`],
//! which emits one exchange per Responses API `response.create`.
//!
//! One [`Http1Parser`] per connection sees both directions. Each direction
//! has a framer (`framer.rs`) that finds heads and frames bodies; the
//! parser pairs requests with responses in order (HTTP/1.1 pipelining
//! answers requests first in, first out) and emits an [`Exchange`] when
//! the response ends, or when the connection ends.
//!
//! Guarantees, because captured bytes are attacker-controlled:
//! - total: any byte sequence, split anywhere, gives outputs or errors,
//!   never a panic; splitting the input differently gives the same result;
//! - bounded: a direction buffers at most `max_header_bytes` of head, each
//!   body at most `max_body_bytes` (decoded and raw), and at most
//!   [`MAX_PENDING`] requests wait for their response;
//! - no secrets: API keys in headers (and in the query) are replaced by
//!   their fingerprint as soon as the head is parsed, the head bytes are
//!   zeroed, and cookies are replaced by `[redacted]`.
//!
//! Which side we watch is learnt from the first message start seen: if the
//! process writes requests it is the client (the usual case), if it reads
//! them it is a server (a local proxy or a model server).
//!
//! After a gap the framer keeps its place when it can (inside a body of
//! known length), and otherwise drops the message and scans for the next
//! line that looks like a message start. Pairing after a lost response
//! assumes the client does not pipeline (no LLM SDK does): the next
//! response found answers the latest request, and older unanswered
//! requests are emitted without a response.

mod body;
pub mod eventstream;
mod framer;
pub mod h2;
mod head;
mod pair;
mod proto;
pub mod sse;
pub mod ws;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use serde::Serialize;

use self::framer::Framer;
pub(crate) use self::pair::Conn;
pub use self::proto::HttpParser;
use crate::event::Role;

/// Most requests waiting for their response; more means the peer is not
/// answering (or we lost sync), and the oldest is given up.
pub const MAX_PENDING: usize = 16;

/// Which way bytes went, seen from the watched process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Written by the process (`SSL_write`).
    Outbound,
    /// Read by the process (`SSL_read`).
    Inbound,
}

impl Direction {
    fn other(self) -> Direction {
        match self {
            Direction::Outbound => Direction::Inbound,
            Direction::Inbound => Direction::Outbound,
        }
    }

    fn index(self) -> usize {
        match self {
            Direction::Outbound => 0,
            Direction::Inbound => 1,
        }
    }
}

/// Memory bounds of one parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest head (start line and headers) and trailer section.
    pub max_header_bytes: usize,
    /// Largest body kept, counted both as received and as decoded.
    pub max_body_bytes: usize,
    /// Largest WebSocket message kept (decoded): one `response.create`
    /// or one server event.
    pub max_ws_message_bytes: usize,
}

impl Default for Limits {
    /// 64 KiB heads; 16 MiB bodies (long agent conversations with tool
    /// results reach a few MiB).
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
            max_ws_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What a call to the parser produced.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "exchanges are the common output; boxing them costs an allocation each"
)]
pub enum HttpOutput {
    Exchange(Exchange),
    Error(HttpError),
}

/// One request and its response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// `Client` when the process wrote the request.
    pub role: Role,
    pub request: Request,
    /// None when the connection ended, or sync was lost, before a response.
    pub response: Option<Response>,
    /// Kernel timestamps (ns) of the records holding the first and last
    /// byte of the request, of the first byte of the (final) response head,
    /// of its first body byte, and of its last byte.
    pub t_request_start: u64,
    pub t_request_end: u64,
    pub t_response_start: Option<u64>,
    pub t_first_body: Option<u64>,
    pub t_response_end: Option<u64>,
    /// A part is missing: a body was cut (cap, gap, close), or there is no
    /// response.
    pub truncated: bool,
    /// One response on an upgraded WebSocket (see [`ws`]): the request is
    /// the upgrade's with one client message as its body, the response the
    /// 101's with the server's messages as server-sent events.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub websocket: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Request {
    pub method: String,
    /// The request target as sent (path and query), with query API keys
    /// replaced by their fingerprint.
    pub path: String,
    /// In order, as sent; secret values replaced.
    pub headers: Vec<(String, String)>,
    /// Decoded (Content-Encoding removed), at most `max_body_bytes`.
    #[serde(serialize_with = "serialize_lossy")]
    pub body: Vec<u8>,
    pub body_truncated: bool,
    /// Fingerprint of the API key the request carried.
    pub api_key_id: Option<String>,
    /// HTTP/2 picked up mid-way: some header fields referred to state we
    /// never saw and are missing; `method` and `path` are empty when they
    /// were among them. Never set for HTTP/1.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub headers_unknown: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    #[serde(serialize_with = "serialize_lossy")]
    pub body: Vec<u8>,
    /// The body is not whole: bytes cut or lost, or its framing unfinished
    /// (a chunked body whose terminator never came).
    pub body_truncated: bool,
    /// Bytes of the body were cut (size cap) or lost (capture gap), as
    /// opposed to a body whose content is whole but whose framing did not
    /// end (a client that stopped reading after the last event).
    pub body_cut: bool,
    /// HTTP/2 trailer fields, secrets replaced (HTTP/1 trailers are not
    /// kept).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trailers: Vec<(String, String)>,
    /// As for [`Request::headers_unknown`]; `status` is 0 when it was
    /// among them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub headers_unknown: bool,
}

impl Request {
    /// The first value of a header, any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        head::header(&self.headers, name)
    }
}

impl Response {
    /// The first value of a header, any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        head::header(&self.headers, name)
    }
}

/// Bodies are bytes; serialised as text so a debug dump is readable.
fn serialize_lossy<S: serde::Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(body))
}

/// Why bytes could not be (fully) understood. Each is counted under
/// [`HttpError::name`]; none stops the parser except `NotHttp`.
#[derive(thiserror::Error, Debug)]
pub enum HttpError {
    #[error("the connection does not carry HTTP/1.x")]
    NotHttp,
    #[error("malformed {kind} head")]
    MalformedHead {
        kind: &'static str,
        #[source]
        source: httparse::Error,
    },
    #[error("bytes where a {kind} should start do not start one")]
    BadStartLine { kind: &'static str },
    #[error("head larger than {limit} bytes")]
    HeaderTooLarge { limit: usize },
    #[error("invalid Content-Length")]
    BadContentLength,
    #[error("request Transfer-Encoding does not end in chunked")]
    BadTransferEncoding,
    #[error("body larger than {limit} bytes, cut")]
    BodyTooLarge { limit: usize },
    #[error("cannot decode {encoding} body")]
    Decompress {
        encoding: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unsupported Content-Encoding {encoding}, body kept encoded")]
    UnsupportedEncoding { encoding: String },
    #[error("bad chunked framing: {reason}")]
    BadChunk { reason: &'static str },
    #[error("response without a request")]
    UnpairedResponse,
    #[error("more than {limit} requests waiting for a response, oldest given up")]
    TooManyPending { limit: usize },
    #[error(transparent)]
    H2(#[from] h2::H2Error),
    #[error(transparent)]
    Ws(#[from] ws::WsError),
}

impl HttpError {
    /// The counter this error is reported under.
    pub fn name(&self) -> &'static str {
        match self {
            HttpError::NotHttp => "http_not_http",
            HttpError::MalformedHead { .. } => "http_malformed_head",
            HttpError::BadStartLine { .. } => "http_bad_start_line",
            HttpError::HeaderTooLarge { .. } => "http_header_too_large",
            HttpError::BadContentLength => "http_bad_content_length",
            HttpError::BadTransferEncoding => "http_bad_transfer_encoding",
            HttpError::BodyTooLarge { .. } => "http_body_too_large",
            HttpError::Decompress { .. } => "http_decompress",
            HttpError::UnsupportedEncoding { .. } => "http_unsupported_encoding",
            HttpError::BadChunk { .. } => "http_bad_chunk",
            HttpError::UnpairedResponse => "http_unpaired_response",
            HttpError::TooManyPending { .. } => "http_too_many_pending",
            HttpError::H2(e) => e.name(),
            HttpError::Ws(e) => e.name(),
        }
    }
}

/// HTTP/1.x parser for one connection, both directions.
#[derive(Debug)]
pub struct Http1Parser {
    conn: Conn,
    framers: [Framer; 2],
    /// After a 101 to WebSocket: the frames.
    ws: Option<Box<ws::WsConn>>,
}

impl Http1Parser {
    pub fn new(limits: Limits) -> Self {
        Http1Parser {
            conn: Conn::new(limits),
            framers: [
                Framer::new(Direction::Outbound),
                Framer::new(Direction::Inbound),
            ],
            ws: None,
        }
    }

    /// A WebSocket picked up mid-way (see [`ws::sniff`]); `client_dir` is
    /// the direction whose frames are masked.
    pub(crate) fn websocket_mid_stream(limits: Limits, client_dir: Direction) -> Self {
        let mut p = Http1Parser::new(limits);
        let role = match client_dir {
            Direction::Outbound => Role::Client,
            Direction::Inbound => Role::Server,
        };
        p.ws = Some(Box::new(ws::WsConn::mid_stream(role, client_dir, limits)));
        p
    }

    /// Feeds plaintext bytes seen in `dir`, from a record stamped `ts_ns`.
    /// Returns what completed.
    pub fn feed(&mut self, dir: Direction, ts_ns: u64, data: &[u8]) -> Vec<HttpOutput> {
        if let Some(ws) = &mut self.ws {
            return ws.feed(dir, ts_ns, data);
        }
        if self.conn.not_http {
            return Vec::new();
        }
        self.conn.last_ts = self.conn.last_ts.max(ts_ns);
        let knew_role = self.conn.request_dir.is_some();
        let used = self.framers[dir.index()].push(&mut self.conn, ts_ns, data);
        // The other direction may hold a start line that waited for the
        // role to be known.
        let other = dir.other().index();
        if !knew_role && self.conn.request_dir.is_some() && self.framers[other].has_pending() {
            self.framers[other].push(&mut self.conn, ts_ns, &[]);
        }
        let mut out = std::mem::take(&mut self.conn.out);
        if let Some(up) = self.conn.upgraded.take() {
            // The rest of this record is the first frames.
            let client_dir = self.conn.request_dir.unwrap_or(Direction::Outbound);
            let mut ws = ws::WsConn::new(self.conn.role(), client_dir, up, self.conn.limits);
            out.extend(ws.feed(dir, ts_ns, &data[used..]));
            self.ws = Some(Box::new(ws));
        }
        out
    }

    /// `len` bytes are missing in `dir` (lost, or cut by the capture cap).
    /// The message they belonged to is marked truncated; the parser keeps
    /// its place inside a body of known length and otherwise resynchronises
    /// at the next message start. A parser attached to a connection already
    /// in progress should be told `gap(dir, 0)` for both directions first,
    /// so that it looks for a message start instead of judging the
    /// connection not HTTP.
    pub fn gap(&mut self, dir: Direction, len: u64) -> Vec<HttpOutput> {
        if let Some(ws) = &mut self.ws {
            return ws.gap(dir, self.conn.last_ts, len);
        }
        if self.conn.not_http {
            return Vec::new();
        }
        self.conn.gapped = true;
        self.framers[dir.index()].gap(&mut self.conn, len);
        std::mem::take(&mut self.conn.out)
    }

    /// The connection closed, went idle, or the daemon stops: emits what
    /// is in progress. A response read until close is complete; anything
    /// else unfinished is truncated, and requests without a response are
    /// emitted without one.
    pub fn finish(&mut self, ts_ns: u64) -> Vec<HttpOutput> {
        if let Some(ws) = &mut self.ws {
            return ws.finish(ts_ns);
        }
        self.conn.last_ts = self.conn.last_ts.max(ts_ns);
        if !self.conn.not_http {
            // Requests first: a request cut by the close must be in its
            // slot before the response side flushes.
            let req = self.conn.request_dir.unwrap_or(Direction::Outbound);
            self.framers[req.index()].finish(&mut self.conn, ts_ns);
            self.framers[req.other().index()].finish(&mut self.conn, ts_ns);
        }
        self.conn.flush_all();
        std::mem::take(&mut self.conn.out)
    }

    /// False once the connection is known not to carry HTTP/1.x (or was
    /// upgraded to another protocol); `NotHttp` was then reported once.
    pub fn is_http(&self) -> bool {
        match &self.ws {
            Some(ws) => ws.is_live(),
            None => !self.conn.not_http,
        }
    }

    /// Whether the connection was upgraded to WebSocket.
    pub fn is_websocket(&self) -> bool {
        self.ws.is_some()
    }

    /// An open WebSocket with nothing in progress (see
    /// [`HttpParser::is_idle_websocket`]).
    pub fn is_idle_websocket(&self) -> bool {
        self.ws.as_ref().is_some_and(|w| w.is_between_turns())
    }

    /// Bytes held: partial heads, bodies in progress, and finished
    /// messages waiting for their pair. Bounded by the limits.
    pub fn buffered_bytes(&self) -> usize {
        self.framers.iter().map(Framer::buffered).sum::<usize>()
            + self.conn.buffered()
            + self.ws.as_ref().map_or(0, |w| w.buffered())
    }
}
