//! Streams of one HTTP/2 connection: each stream's request and response
//! are assembled from header blocks and DATA frames into the same
//! [`Exchange`] the HTTP/1 parser emits, when both ends are done or the
//! stream is reset.
//!
//! Pseudo-headers become the request line (`:method`, `:path`, `:status`);
//! `:authority` becomes a `host` header, as an HTTP/2-to-1.1 gateway does
//! (RFC 9113 §8.3.1), so the layers above read HTTP/1 and HTTP/2 alike.

use std::collections::{BTreeMap, VecDeque};

use super::hpack::Block;
use super::H2Error;
use crate::event::Role;
use crate::http::body::{self, BodySink, Coding};
use crate::http::{head, Direction, Exchange, HttpError, HttpOutput, Limits, Request, Response};
use crate::redact;

/// Most streams tracked at once; a new one past it gives up the oldest.
pub const MAX_STREAMS: usize = 256;
/// Stream ids remembered as ignored (their frames are not counted again).
const MAX_IGNORED: usize = 64;

/// A header block turned into a message head.
#[derive(Debug, Default)]
pub(super) struct Head {
    method: Option<String>,
    path: Option<String>,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    api_key_id: Option<String>,
    /// Some fields referenced table entries we do not have.
    unknown: bool,
}

impl Head {
    pub(super) fn from_block(block: Block) -> Head {
        let mut h = Head {
            unknown: block.unknown > 0,
            ..Head::default()
        };
        let mut authority = None;
        let mut proxy_key_id = None;
        for f in block.fields {
            match f.name.as_str() {
                ":method" => h.method = Some(f.value),
                ":path" => h.path = Some(f.value),
                ":authority" => authority = Some(f.value),
                // Not a number: treated like a missing status.
                ":status" => h.status = f.value.parse().ok(),
                n if n.starts_with(':') => {}
                n if redact::is_secret_header(n) => {
                    // The value is already the fingerprint (hpack.rs).
                    if n == "proxy-authorization" {
                        proxy_key_id.get_or_insert_with(|| f.value.clone());
                    } else {
                        h.api_key_id.get_or_insert_with(|| f.value.clone());
                    }
                    h.headers.push((f.name, f.value));
                }
                _ => h.headers.push((f.name, f.value)),
            }
        }
        if let Some(path) = h.path.take() {
            let (path, query_key) = redact::redact_target(&path);
            if h.api_key_id.is_none() {
                h.api_key_id = query_key;
            }
            h.path = Some(path.into_owned());
        }
        if h.api_key_id.is_none() {
            h.api_key_id = proxy_key_id;
        }
        if let Some(a) = authority {
            if head::header(&h.headers, "host").is_none() {
                h.headers.insert(0, ("host".to_owned(), a));
            }
        }
        h
    }

    fn is_request(&self) -> bool {
        self.method.is_some() || (self.path.is_some() && self.status.is_none())
    }
}

/// One direction of a stream.
#[derive(Debug, Default)]
struct Half {
    head: Option<Head>,
    /// Created at the first data byte; `coding` None means the coding is
    /// unknown (headers unknown) and is guessed from the first bytes.
    body: Option<BodySink>,
    coding: Option<(Coding, String)>,
    t_start: u64,
    t_first_body: Option<u64>,
    t_end: Option<u64>,
    trailers: Vec<(String, String)>,
    /// The first body bytes while `coding` is unknown and too few to tell.
    pending: Vec<u8>,
}

/// Bytes enough to tell gzip and zstd by their magic numbers.
const SNIFF_BYTES: usize = 4;

impl Half {
    fn ended(&self) -> bool {
        self.t_end.is_some()
    }

    /// Creates the body sink if it is not there yet: with the declared
    /// coding, or the one the pending first bytes show. Returns an error
    /// to report.
    fn open_body(&mut self, cap: usize) -> Option<HttpError> {
        if self.body.is_some() {
            return None;
        }
        let pending = std::mem::take(&mut self.pending);
        let (coding, name) = self.coding.take().unwrap_or_else(|| sniff_coding(&pending));
        let mut sink = BodySink::new(coding, name, cap);
        let err = sink.push(&pending);
        self.body = Some(sink);
        err
    }
}

#[derive(Debug, Default)]
struct Stream {
    req: Half,
    resp: Half,
}

#[derive(Debug)]
pub(super) struct Conn {
    limits: Limits,
    pub(super) request_dir: Option<Direction>,
    streams: BTreeMap<u32, Stream>,
    ignored: VecDeque<u32>,
    pub(super) out: Vec<HttpOutput>,
    pub(super) last_ts: u64,
}

impl Conn {
    pub(super) fn new(limits: Limits, request_dir: Option<Direction>) -> Self {
        Conn {
            limits,
            request_dir,
            streams: BTreeMap::new(),
            ignored: VecDeque::new(),
            out: Vec::new(),
            last_ts: 0,
        }
    }

    pub(super) fn error(&mut self, e: impl Into<HttpError>) {
        self.out.push(HttpOutput::Error(e.into()));
    }

    /// Body bytes held by streams in progress.
    pub(super) fn buffered(&self) -> usize {
        let len = |h: &Half| h.body.as_ref().map_or(0, BodySink::len);
        self.streams
            .values()
            .map(|s| len(&s.req) + len(&s.resp))
            .sum()
    }

    /// Frames of a stream we do not follow: counted once per stream.
    fn ignore(&mut self, id: u32, e: HttpError) {
        if self.ignored.contains(&id) {
            return;
        }
        if self.ignored.len() >= MAX_IGNORED {
            self.ignored.pop_front();
        }
        self.ignored.push_back(id);
        self.error(e);
    }

    fn is_request_dir(&mut self, dir: Direction, head: &Head) -> bool {
        let rd = *self.request_dir.get_or_insert_with(|| {
            // Mid-way, the first head that tells decides; without one,
            // the process is taken to be the client, as it usually is.
            if head.status.is_some() {
                dir.other()
            } else if head.is_request() {
                dir
            } else {
                Direction::Outbound
            }
        });
        rd == dir
    }

    /// A complete header block on `id`, sent in `dir`.
    pub(super) fn on_headers(
        &mut self,
        dir: Direction,
        id: u32,
        head: Head,
        end_stream: bool,
        ts_start: u64,
        ts_end: u64,
    ) {
        if self.is_request_dir(dir, &head) {
            self.on_request_headers(id, head, ts_start);
        } else {
            self.on_response_headers(id, head, ts_start);
        }
        if end_stream {
            self.end_half(dir, id, ts_end);
        }
    }

    fn on_request_headers(&mut self, id: u32, head: Head, ts: u64) {
        if self.ignored.contains(&id) {
            return;
        }
        if let Some(s) = self.streams.get_mut(&id) {
            // Request trailers: nothing above uses them.
            if s.req.head.is_some() {
                return;
            }
        }
        if !self.streams.contains_key(&id) && self.streams.len() >= MAX_STREAMS {
            self.error(H2Error::TooManyStreams { limit: MAX_STREAMS });
            if let Some((&oldest, _)) = self.streams.iter().next() {
                self.emit(oldest);
            }
        }
        let coding = self.coding_of(&head);
        let s = self.streams.entry(id).or_default();
        s.req.coding = coding;
        s.req.t_start = ts;
        s.req.head = Some(head);
    }

    fn on_response_headers(&mut self, id: u32, head: Head, ts: u64) {
        let Some(s) = self.streams.get(&id) else {
            self.ignore(id, HttpError::UnpairedResponse);
            return;
        };
        if s.resp.head.is_some() {
            let trailers = head.headers;
            if let Some(s) = self.streams.get_mut(&id) {
                s.resp.trailers.extend(trailers);
            }
            return;
        }
        if head
            .status
            .is_some_and(|st| (100..200).contains(&st) && st != 101)
        {
            // Interim (100 Continue, 103 Early Hints): the final one follows.
            return;
        }
        let coding = self.coding_of(&head);
        if let Some(s) = self.streams.get_mut(&id) {
            s.resp.coding = coding;
            s.resp.t_start = ts;
            s.resp.head = Some(head);
        }
    }

    /// The body coding a head declares; None when its headers are partly
    /// unknown and it declares none (the body's first bytes will tell).
    fn coding_of(&mut self, head: &Head) -> Option<(Coding, String)> {
        let tokens = head::header_tokens(&head.headers, "content-encoding");
        if tokens.is_empty() && head.unknown {
            return None;
        }
        match body::coding_of(&tokens) {
            Ok(c) => Some((c, tokens.join(", "))),
            Err(encoding) => {
                self.error(HttpError::UnsupportedEncoding { encoding });
                Some((Coding::Identity, String::new()))
            }
        }
    }

    /// The half of stream `id` that `dir` carries, once its head is known.
    /// No stream exists before a head fixed the role, so this never has to
    /// guess it.
    fn half(&mut self, dir: Direction, id: u32) -> Option<&mut Half> {
        let req = self.request_dir? == dir;
        let s = self.streams.get_mut(&id)?;
        let h = if req { &mut s.req } else { &mut s.resp };
        h.head.is_some().then_some(h)
    }

    pub(super) fn on_data(&mut self, dir: Direction, id: u32, data: &[u8], ts: u64) {
        let cap = self.limits.max_body_bytes;
        let Some(h) = self.half(dir, id) else {
            self.ignore(id, H2Error::UnknownStream.into());
            return;
        };
        if h.t_first_body.is_none() {
            h.t_first_body = Some(ts);
        }
        let err = if h.body.is_none() && h.coding.is_none() {
            // Wait for enough bytes to tell the coding, whatever the split.
            h.pending.extend_from_slice(data);
            if h.pending.len() < SNIFF_BYTES {
                return;
            }
            h.open_body(cap)
        } else {
            let open = h.open_body(cap);
            open.or_else(|| h.body.as_mut().and_then(|b| b.push(data)))
        };
        if let Some(e) = err {
            self.error(e);
        }
    }

    pub(super) fn on_data_gap(&mut self, dir: Direction, id: u32) {
        let cap = self.limits.max_body_bytes;
        if let Some(h) = self.half(dir, id) {
            let err = h.open_body(cap);
            if let Some(b) = h.body.as_mut() {
                b.gap();
            }
            if let Some(e) = err {
                self.error(e);
            }
        }
    }

    /// Frames in `dir` were lost: whatever was in progress there may have
    /// lost data (and its end).
    pub(super) fn on_lost(&mut self, dir: Direction) {
        let Some(rd) = self.request_dir else { return };
        let req = rd == dir;
        let cap = self.limits.max_body_bytes;
        let mut errors = Vec::new();
        for s in self.streams.values_mut() {
            let h = if req { &mut s.req } else { &mut s.resp };
            if h.head.is_some() && !h.ended() {
                errors.extend(h.open_body(cap));
                if let Some(b) = h.body.as_mut() {
                    b.gap();
                }
            }
        }
        for e in errors {
            self.error(e);
        }
    }

    /// The frame carrying `END_STREAM` in `dir` ended.
    pub(super) fn end_half(&mut self, dir: Direction, id: u32, ts: u64) {
        let Some(h) = self.half(dir, id) else { return };
        h.t_end = Some(ts);
        if let Some(s) = self.streams.get(&id) {
            if s.req.ended() && s.resp.ended() {
                self.emit(id);
            }
        }
    }

    pub(super) fn on_reset(&mut self, id: u32) {
        if self.streams.contains_key(&id) {
            self.emit(id);
        }
    }

    /// Streams above `last` were never processed by the peer.
    pub(super) fn on_goaway(&mut self, last: u32) {
        let above: Vec<u32> = self
            .streams
            .range(last.saturating_add(1)..)
            .map(|(&k, _)| k)
            .collect();
        for id in above {
            self.emit(id);
        }
    }

    pub(super) fn finish(&mut self) {
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.emit(id);
        }
    }

    /// Emits stream `id` as it is: unfinished parts are cut.
    fn emit(&mut self, id: u32) {
        let Some(mut s) = self.streams.remove(&id) else {
            return;
        };
        let cap = self.limits.max_body_bytes;
        for h in [&mut s.req, &mut s.resp] {
            if !h.pending.is_empty() {
                if let Some(e) = h.open_body(cap) {
                    self.error(e);
                }
            }
        }
        let Some(req_head) = s.req.head else { return };
        let last = self.last_ts;
        let (req_body, req_trunc, _, err) = finish_body(s.req.body, s.req.t_end.is_some());
        if let Some(e) = err {
            self.error(e);
        }
        let request = Request {
            method: req_head.method.unwrap_or_default(),
            path: req_head.path.unwrap_or_default(),
            headers: req_head.headers,
            body: req_body,
            body_truncated: req_trunc,
            api_key_id: req_head.api_key_id,
            headers_unknown: req_head.unknown,
        };
        let resp_ended = s.resp.ended();
        let response = match s.resp.head {
            Some(h) => {
                let (body, body_truncated, body_cut, err) = finish_body(s.resp.body, resp_ended);
                if let Some(e) = err {
                    self.error(e);
                }
                Some(Response {
                    status: h.status.unwrap_or(0),
                    headers: h.headers,
                    body,
                    body_truncated,
                    body_cut,
                    trailers: s.resp.trailers,
                    headers_unknown: h.unknown,
                })
            }
            None => None,
        };
        let truncated =
            request.body_truncated || response.as_ref().is_none_or(|r| r.body_truncated);
        let has_resp = response.is_some();
        self.out.push(HttpOutput::Exchange(Exchange {
            role: if self.request_dir == Some(Direction::Inbound) {
                Role::Server
            } else {
                Role::Client
            },
            request,
            response,
            t_request_start: s.req.t_start,
            t_request_end: s.req.t_end.unwrap_or(last),
            t_response_start: has_resp.then_some(s.resp.t_start),
            t_first_body: s.resp.t_first_body,
            t_response_end: has_resp.then(|| s.resp.t_end.unwrap_or(last)),
            truncated,
            websocket: false,
        }));
    }
}

fn finish_body(body: Option<BodySink>, complete: bool) -> (Vec<u8>, bool, bool, Option<HttpError>) {
    match body {
        Some(b) => b.finish(complete),
        None => (Vec::new(), !complete, false, None),
    }
}

/// The coding of a body whose Content-Encoding we could not read, from
/// its magic number (gzip, zstd); anything else is kept as it is.
fn sniff_coding(first: &[u8]) -> (Coding, String) {
    if first.starts_with(&[0x1f, 0x8b]) {
        (Coding::Gzip, "gzip".to_owned())
    } else if first.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        (Coding::Zstd, "zstd".to_owned())
    } else {
        (Coding::Identity, String::new())
    }
}
