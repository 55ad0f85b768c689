//! HTTP/1.x over one TLS connection: plaintext bytes in, exchanges out.
//!
//! One [`HttpParser`] per connection sees both directions. Each direction
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
mod framer;
mod head;
pub mod sse;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::collections::VecDeque;

use serde::Serialize;

use self::body::BodySink;
use self::framer::Framer;
use self::head::{BodyLength, Head, Kind, StartLine};
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
}

impl Default for Limits {
    /// 64 KiB heads; 16 MiB bodies (long agent conversations with tool
    /// results reach a few MiB).
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_body_bytes: 16 * 1024 * 1024,
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
        }
    }
}

/// HTTP/1.x parser for one connection, both directions.
#[derive(Debug)]
pub struct HttpParser {
    conn: Conn,
    framers: [Framer; 2],
}

impl HttpParser {
    pub fn new(limits: Limits) -> Self {
        HttpParser {
            conn: Conn::new(limits),
            framers: [
                Framer::new(Direction::Outbound),
                Framer::new(Direction::Inbound),
            ],
        }
    }

    /// Feeds plaintext bytes seen in `dir`, from a record stamped `ts_ns`.
    /// Returns what completed.
    pub fn feed(&mut self, dir: Direction, ts_ns: u64, data: &[u8]) -> Vec<HttpOutput> {
        if self.conn.not_http {
            return Vec::new();
        }
        self.conn.last_ts = self.conn.last_ts.max(ts_ns);
        let knew_role = self.conn.request_dir.is_some();
        self.framers[dir.index()].push(&mut self.conn, ts_ns, data);
        // The other direction may hold a start line that waited for the
        // role to be known.
        let other = dir.other().index();
        if !knew_role && self.conn.request_dir.is_some() && self.framers[other].has_pending() {
            self.framers[other].push(&mut self.conn, ts_ns, &[]);
        }
        std::mem::take(&mut self.conn.out)
    }

    /// `len` bytes are missing in `dir` (lost, or cut by the capture cap).
    /// The message they belonged to is marked truncated; the parser keeps
    /// its place inside a body of known length and otherwise resynchronises
    /// at the next message start. A parser attached to a connection already
    /// in progress should be told `gap(dir, 0)` for both directions first,
    /// so that it looks for a message start instead of judging the
    /// connection not HTTP.
    pub fn gap(&mut self, dir: Direction, len: u64) -> Vec<HttpOutput> {
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
        !self.conn.not_http
    }

    /// Bytes held: partial heads, bodies in progress, and finished
    /// messages waiting for their pair. Bounded by the limits.
    pub fn buffered_bytes(&self) -> usize {
        self.framers.iter().map(Framer::buffered).sum::<usize>() + self.conn.buffered()
    }
}

/// A message being received.
#[derive(Debug)]
struct Msg {
    head: Head,
    body: BodySink,
    t_start: u64,
    t_first_body: Option<u64>,
}

#[derive(Debug)]
struct DoneRequest {
    request: Request,
    t_start: u64,
    t_end: u64,
}

#[derive(Debug)]
struct DoneResponse {
    response: Response,
    t_start: u64,
    t_first_body: Option<u64>,
    t_end: u64,
}

#[derive(Debug)]
enum ReqPart {
    InProgress,
    Done(Box<DoneRequest>),
    /// Its head was cut by a gap: only its place in the order is known.
    Lost,
}

#[derive(Debug)]
enum RespPart {
    Awaiting,
    InProgress,
    Done(Box<DoneResponse>),
    Lost,
}

/// One request's place in the pipeline.
#[derive(Debug)]
struct Slot {
    /// The response to a HEAD request has no body.
    is_head: bool,
    /// A 2xx response to CONNECT turns the connection into a tunnel.
    is_connect: bool,
    request: ReqPart,
    response: RespPart,
}

impl Slot {
    fn is_ready(&self) -> bool {
        !matches!(self.request, ReqPart::InProgress)
            && matches!(self.response, RespPart::Done(_) | RespPart::Lost)
    }
}

#[derive(Debug)]
struct RespCur {
    msg: Msg,
    /// No request is waiting for it: framed, not kept.
    orphan: bool,
    /// 101, or 2xx to CONNECT: the connection stops being HTTP after it.
    upgrade: bool,
}

/// State shared by both directions: role, pairing, outputs.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about the connection, not states of one machine"
)]
pub(crate) struct Conn {
    limits: Limits,
    request_dir: Option<Direction>,
    not_http: bool,
    /// A head was parsed on this connection.
    any_message: bool,
    /// A gap was reported: odd bytes are then lost sync, not proof that
    /// the connection is not HTTP.
    gapped: bool,
    last_ts: u64,
    slots: VecDeque<Slot>,
    req_cur: Option<Msg>,
    resp_cur: Option<RespCur>,
    /// The response direction resynchronised since its last head.
    resp_resynced: bool,
    out: Vec<HttpOutput>,
}

impl Conn {
    fn new(limits: Limits) -> Self {
        Conn {
            limits,
            request_dir: None,
            not_http: false,
            any_message: false,
            gapped: false,
            last_ts: 0,
            slots: VecDeque::new(),
            req_cur: None,
            resp_cur: None,
            resp_resynced: false,
            out: Vec::new(),
        }
    }

    fn buffered(&self) -> usize {
        let done: usize = self
            .slots
            .iter()
            .map(|s| {
                let req = match &s.request {
                    ReqPart::Done(r) => r.request.body.len(),
                    _ => 0,
                };
                let resp = match &s.response {
                    RespPart::Done(r) => r.response.body.len(),
                    _ => 0,
                };
                req + resp
            })
            .sum();
        done + self.req_cur.as_ref().map_or(0, |m| m.body.len())
            + self.resp_cur.as_ref().map_or(0, |r| r.msg.body.len())
    }

    pub(crate) fn kind_of(&self, dir: Direction) -> Option<Kind> {
        self.request_dir.map(|rd| {
            if rd == dir {
                Kind::Request
            } else {
                Kind::Response
            }
        })
    }

    pub(crate) fn set_role(&mut self, dir: Direction, kind: Kind) {
        self.request_dir = Some(match kind {
            Kind::Request => dir,
            Kind::Response => dir.other(),
        });
    }

    fn role(&self) -> Role {
        match self.request_dir {
            Some(Direction::Inbound) => Role::Server,
            _ => Role::Client,
        }
    }

    pub(crate) fn set_not_http(&mut self) {
        if !self.not_http {
            self.not_http = true;
            self.out.push(HttpOutput::Error(HttpError::NotHttp));
        }
    }

    pub(crate) fn error(&mut self, e: HttpError) {
        self.out.push(HttpOutput::Error(e));
    }

    fn is_request_dir(&self, dir: Direction) -> bool {
        self.kind_of(dir) == Some(Kind::Request)
    }

    fn body_sink(&mut self, headers: &[(String, String)]) -> BodySink {
        let tokens = head::header_tokens(headers, "content-encoding");
        match body::coding_of(&tokens) {
            Ok(coding) => BodySink::new(coding, tokens.join(", "), self.limits.max_body_bytes),
            Err(encoding) => {
                self.error(HttpError::UnsupportedEncoding { encoding });
                BodySink::new(
                    body::Coding::Identity,
                    String::new(),
                    self.limits.max_body_bytes,
                )
            }
        }
    }

    /// A head was parsed. Returns how its body is framed, or `Err` when it
    /// cannot be framed (already reported; the framer resyncs).
    pub(crate) fn on_head(&mut self, head: Head, t_start: u64) -> Result<BodyLength, ()> {
        self.any_message = true;
        match &head.line {
            StartLine::Request { method, .. } => {
                let length = head::request_body_length(&head.headers);
                self.make_room();
                let is_head = method == "HEAD";
                let is_connect = method == "CONNECT";
                let length = match length {
                    Ok(l) => l,
                    Err(e) => {
                        self.error(e);
                        self.push_slot(ReqPart::Lost, is_head, is_connect);
                        return Err(());
                    }
                };
                self.push_slot(ReqPart::InProgress, is_head, is_connect);
                let body = self.body_sink(&head.headers);
                self.req_cur = Some(Msg {
                    head,
                    body,
                    t_start,
                    t_first_body: None,
                });
                Ok(length)
            }
            StartLine::Response { status } => {
                let status = *status;
                if (100..200).contains(&status) && status != 101 {
                    // Interim (100 Continue, 103 Early Hints): the final
                    // response follows.
                    return Ok(BodyLength::None);
                }
                if std::mem::take(&mut self.resp_resynced) {
                    self.drop_stale_awaiting();
                }
                let slot = self
                    .slots
                    .iter_mut()
                    .find(|s| matches!(s.response, RespPart::Awaiting));
                let (is_head, is_connect, orphan) = match slot {
                    Some(s) => {
                        s.response = RespPart::InProgress;
                        (s.is_head, s.is_connect, false)
                    }
                    None => (false, false, true),
                };
                let upgrade = status == 101 || (is_connect && (200..300).contains(&status));
                let length = if upgrade {
                    Ok(BodyLength::None)
                } else {
                    head::response_body_length(status, &head.headers, is_head)
                };
                let length = match length {
                    Ok(l) => l,
                    Err(e) => {
                        self.error(e);
                        self.mark_in_progress_response_lost();
                        return Err(());
                    }
                };
                if orphan {
                    self.error(HttpError::UnpairedResponse);
                }
                let body = if orphan {
                    BodySink::discard()
                } else {
                    self.body_sink(&head.headers)
                };
                self.resp_cur = Some(RespCur {
                    msg: Msg {
                        head,
                        body,
                        t_start,
                        t_first_body: None,
                    },
                    orphan,
                    upgrade,
                });
                Ok(length)
            }
        }
    }

    fn push_slot(&mut self, request: ReqPart, is_head: bool, is_connect: bool) {
        self.slots.push_back(Slot {
            is_head,
            is_connect,
            request,
            response: RespPart::Awaiting,
        });
    }

    /// Keeps the pipeline bounded: gives up the oldest request if full.
    fn make_room(&mut self) {
        if self.slots.len() < MAX_PENDING {
            return;
        }
        self.error(HttpError::TooManyPending { limit: MAX_PENDING });
        if let Some(slot) = self.slots.pop_front() {
            self.emit(slot);
        }
    }

    /// After a resync of the response direction: responses may have been
    /// lost whole. Without pipelining, the response found answers the
    /// latest request; older ones will get no answer.
    fn drop_stale_awaiting(&mut self) {
        let awaiting = self
            .slots
            .iter()
            .filter(|s| matches!(s.response, RespPart::Awaiting))
            .count();
        let mut to_drop = awaiting.saturating_sub(1);
        for s in &mut self.slots {
            if to_drop == 0 {
                break;
            }
            if matches!(s.response, RespPart::Awaiting) {
                s.response = RespPart::Lost;
                to_drop -= 1;
            }
        }
        self.flush_ready();
    }

    fn mark_in_progress_response_lost(&mut self) {
        if let Some(s) = self
            .slots
            .iter_mut()
            .find(|s| matches!(s.response, RespPart::InProgress))
        {
            s.response = RespPart::Lost;
        }
        self.flush_ready();
    }

    pub(crate) fn on_body(&mut self, dir: Direction, ts: u64, data: &[u8]) {
        let msg = if self.is_request_dir(dir) {
            self.req_cur.as_mut()
        } else {
            self.resp_cur.as_mut().map(|r| &mut r.msg)
        };
        let Some(msg) = msg else { return };
        if !data.is_empty() && msg.t_first_body.is_none() {
            msg.t_first_body = Some(ts);
        }
        if let Some(e) = msg.body.push(data) {
            self.error(e);
        }
    }

    pub(crate) fn on_body_gap(&mut self, dir: Direction) {
        let msg = if self.is_request_dir(dir) {
            self.req_cur.as_mut()
        } else {
            self.resp_cur.as_mut().map(|r| &mut r.msg)
        };
        if let Some(msg) = msg {
            msg.body.gap();
        }
    }

    /// The message in `dir` ended; `complete` is false when it was cut.
    pub(crate) fn on_end(&mut self, dir: Direction, ts: u64, complete: bool) {
        if self.is_request_dir(dir) {
            let Some(msg) = self.req_cur.take() else {
                return;
            };
            let (body, body_truncated, _cut, err) = msg.body.finish(complete);
            if let Some(e) = err {
                self.error(e);
            }
            let (method, path) = match msg.head.line {
                StartLine::Request { method, path } => (method, path),
                StartLine::Response { .. } => (String::new(), String::new()),
            };
            let done = DoneRequest {
                request: Request {
                    method,
                    path,
                    headers: msg.head.headers,
                    body,
                    body_truncated,
                    api_key_id: msg.head.api_key_id,
                },
                t_start: msg.t_start,
                t_end: ts,
            };
            // Requests finish in order: the in-progress one is the last.
            if let Some(s) = self
                .slots
                .iter_mut()
                .rev()
                .find(|s| matches!(s.request, ReqPart::InProgress))
            {
                s.request = ReqPart::Done(Box::new(done));
            }
        } else {
            let Some(cur) = self.resp_cur.take() else {
                return;
            };
            let (body, body_truncated, body_cut, err) = cur.msg.body.finish(complete);
            if cur.orphan {
                if cur.upgrade {
                    self.flush_all();
                    self.set_not_http();
                }
                return;
            }
            if let Some(e) = err {
                self.error(e);
            }
            let status = match cur.msg.head.line {
                StartLine::Response { status } => status,
                StartLine::Request { .. } => 0,
            };
            let done = DoneResponse {
                response: Response {
                    status,
                    headers: cur.msg.head.headers,
                    body,
                    body_truncated,
                    body_cut,
                },
                t_start: cur.msg.t_start,
                t_first_body: cur.msg.t_first_body,
                t_end: ts,
            };
            // A slot given up meanwhile (too many pending) is not found:
            // the response is then dropped, already counted.
            if let Some(s) = self
                .slots
                .iter_mut()
                .find(|s| matches!(s.response, RespPart::InProgress))
            {
                s.response = RespPart::Done(Box::new(done));
            }
            if cur.upgrade {
                self.flush_all();
                self.set_not_http();
                return;
            }
        }
        self.flush_ready();
    }

    /// A head was cut by a gap in `dir`.
    pub(crate) fn on_lost_head(&mut self, dir: Direction) {
        match self.kind_of(dir) {
            Some(Kind::Request) => {
                self.make_room();
                self.push_slot(ReqPart::Lost, false, false);
            }
            Some(Kind::Response) => {
                if let Some(s) = self
                    .slots
                    .iter_mut()
                    .find(|s| matches!(s.response, RespPart::Awaiting))
                {
                    s.response = RespPart::Lost;
                }
                self.flush_ready();
            }
            None => {}
        }
    }

    pub(crate) fn on_resynced(&mut self, dir: Direction) {
        if self.kind_of(dir) == Some(Kind::Response) {
            self.resp_resynced = true;
        }
    }

    /// Emits every exchange whose request and response are both settled,
    /// in request order.
    fn flush_ready(&mut self) {
        while self.slots.front().is_some_and(Slot::is_ready) {
            if let Some(slot) = self.slots.pop_front() {
                self.emit(slot);
            }
        }
    }

    /// Emits everything, settled or not (end of connection): messages in
    /// progress are cut, requests without a response go out without one.
    fn flush_all(&mut self) {
        if let Some(dir) = self.request_dir {
            if self.req_cur.is_some() {
                self.on_end(dir, self.last_ts, false);
            }
            if self.resp_cur.is_some() {
                self.on_end(dir.other(), self.last_ts, false);
            }
        }
        while let Some(slot) = self.slots.pop_front() {
            self.emit(slot);
        }
    }

    fn emit(&mut self, slot: Slot) {
        let ReqPart::Done(req) = slot.request else {
            if matches!(slot.response, RespPart::Done(_)) {
                self.error(HttpError::UnpairedResponse);
            }
            return;
        };
        let response = match slot.response {
            RespPart::Done(r) => Some(*r),
            _ => None,
        };
        let truncated = req.request.body_truncated
            || response.as_ref().is_none_or(|r| r.response.body_truncated);
        let exchange = Exchange {
            role: self.role(),
            t_request_start: req.t_start,
            t_request_end: req.t_end,
            t_response_start: response.as_ref().map(|r| r.t_start),
            t_first_body: response.as_ref().and_then(|r| r.t_first_body),
            t_response_end: response.as_ref().map(|r| r.t_end),
            request: req.request,
            response: response.map(|r| r.response),
            truncated,
        };
        self.out.push(HttpOutput::Exchange(exchange));
    }
}
