//! WebSocket after an HTTP/1.1 upgrade: frames in both directions
//! (`frames.rs`), and the OpenAI Responses API's WebSocket mode on top.
//!
//! After `101 Switching Protocols` to a request with `Upgrade: websocket`,
//! the connection's bytes are WebSocket frames (RFC 6455), compressed per
//! message when the 101 accepted `permessage-deflate` (RFC 7692, with its
//! `client_/server_no_context_takeover` parameters).
//!
//! Pairing. In the Responses API's WebSocket mode (`GET /v1/responses`
//! upgraded; Codex CLI tries it before HTTPS) the client sends
//! `{"type":"response.create", …}` text messages whose other fields are
//! those of a `POST /v1/responses` body, and the server answers each with
//! the `response.*` events of the SSE stream, one per text message, up to
//! a terminal one (`response.completed`, `.failed`, `.incomplete`, or
//! `error`). Responses on one socket run one at a time, in order. Each
//! `response.create` with the server messages that answer it becomes one
//! [`Exchange`] marked `websocket`: the request is the upgrade's (method,
//! path, headers, API key) with the message as its body, the response is
//! the 101's status and headers with the server's messages as its body,
//! each as one server-sent event (`data:` lines, the event's text split at
//! its line breaks, which SSE joins back), so that the Responses stream
//! decoder reads it as it reads the HTTPS stream.
//!
//! Counted, never silent: other client messages (`response.steer`, …),
//! binary messages, server messages with no `response.create` waiting,
//! every malformed frame, and a direction given up after lost bytes.
//!
//! A connection first seen mid-way (the daemon started, or an idle
//! connection was flushed, while the socket stayed open) is recognised
//! from its frames by [`sniff`]; its negotiation is unknown, so a
//! compressed message turns permessage-deflate on with context takeover
//! assumed: the decompressor then starts without the sender's window, and
//! a message that refers to bytes before the pick-up fails to inflate and
//! is counted, while the next ones decode.

#![expect(
    clippy::doc_markdown,
    reason = "protocol and product names (WebSocket, OpenAI) are prose, not code"
)]

mod frames;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use serde::Deserialize;

pub(crate) use self::frames::{FrameDecoder, FrameEvent, Inflater, WsMessage};
use super::{head, Direction, Exchange, HttpError, HttpOutput, Limits, Request, Response};
use crate::event::Role;

/// Why WebSocket bytes could not be (fully) understood. Each is counted
/// under [`WsError::name`].
#[derive(thiserror::Error, Debug)]
pub enum WsError {
    #[error("bad WebSocket frame: {reason}; direction given up")]
    BadFrame { reason: &'static str },
    #[error("WebSocket frame masked the wrong way for its direction")]
    BadMask,
    #[error("RSV1 set where permessage-deflate does not allow it")]
    BadRsv1,
    #[error("continuation frame without a message start")]
    OrphanContinuation,
    #[error("new message or close inside a fragmented message")]
    UnfinishedMessage,
    #[error("permessage-deflate data does not inflate: {reason}")]
    Inflate { reason: String },
    #[error("message larger than {limit} bytes, cut")]
    MessageTooLarge { limit: usize },
    #[error("text message is not UTF-8")]
    BadUtf8,
    #[error("{bytes} bytes after a close frame")]
    AfterClose { bytes: usize },
    #[error("bytes lost at an unknown frame boundary; direction given up")]
    LostSync,
    #[error("WebSocket picked up mid-way")]
    MidStream,
    #[error("server message with no response.create waiting")]
    UnpairedMessage,
    #[error("client message other than response.create")]
    ClientEventIgnored,
    #[error("binary message")]
    BinaryMessage,
    #[error("invalid permessage-deflate parameters: {params}")]
    BadExtension { params: String },
}

impl WsError {
    /// The counter this error is reported under.
    pub fn name(&self) -> &'static str {
        match self {
            WsError::BadFrame { .. } => "ws_bad_frame",
            WsError::BadMask => "ws_bad_mask",
            WsError::BadRsv1 => "ws_bad_rsv1",
            WsError::OrphanContinuation => "ws_orphan_continuation",
            WsError::UnfinishedMessage => "ws_unfinished_message",
            WsError::Inflate { .. } => "ws_inflate",
            WsError::MessageTooLarge { .. } => "ws_message_too_large",
            WsError::BadUtf8 => "ws_bad_utf8",
            WsError::AfterClose { .. } => "ws_after_close",
            WsError::LostSync => "ws_lost_sync",
            WsError::MidStream => "ws_midstream",
            WsError::UnpairedMessage => "ws_unpaired_message",
            WsError::ClientEventIgnored => "ws_client_event_ignored",
            WsError::BinaryMessage => "ws_binary_message",
            WsError::BadExtension { .. } => "ws_bad_extension",
        }
    }
}

/// What the upgrade said: the request that asked for it (when seen) and
/// the 101 that accepted it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Upgrade {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) request_headers: Vec<(String, String)>,
    pub(crate) api_key_id: Option<String>,
    pub(crate) status: u16,
    pub(crate) response_headers: Vec<(String, String)>,
}

/// permessage-deflate as accepted by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Deflate {
    pub(crate) client_no_context_takeover: bool,
    pub(crate) server_no_context_takeover: bool,
}

/// Whether a 101's headers accept a WebSocket.
pub(crate) fn is_websocket(response_headers: &[(String, String)]) -> bool {
    head::header_tokens(response_headers, "upgrade")
        .iter()
        .any(|t| t.eq_ignore_ascii_case("websocket"))
}

/// The permessage-deflate the server accepted in `Sec-WebSocket-Extensions`
/// (the first one; a server accepts at most one). Bad parameters are
/// reported; the extension is still used, as the peers will.
pub(crate) fn negotiated_deflate(
    response_headers: &[(String, String)],
    errors: &mut Vec<WsError>,
) -> Option<Deflate> {
    let all: Vec<&str> = response_headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|(_, v)| v.as_str())
        .collect();
    for ext in all.iter().flat_map(|v| v.split(',')) {
        let mut parts = ext.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
        {
            continue;
        }
        let mut d = Deflate::default();
        for p in parts {
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (p, None),
            };
            let bits_ok = |v: Option<&str>| {
                v.is_none_or(|v| v.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b)))
            };
            match name.to_ascii_lowercase().as_str() {
                "client_no_context_takeover" if value.is_none() => {
                    d.client_no_context_takeover = true;
                }
                "server_no_context_takeover" if value.is_none() => {
                    d.server_no_context_takeover = true;
                }
                // A 15-bit decompressor decodes any smaller window.
                "client_max_window_bits" | "server_max_window_bits" if bits_ok(value) => {}
                _ => errors.push(WsError::BadExtension {
                    params: ext.trim().chars().take(200).collect(),
                }),
            }
        }
        return Some(d);
    }
    None
}

/// What the first bytes of a direction, after a gap, look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniff {
    /// WebSocket frames; `masked` tells a client's from a server's.
    Frames {
        masked: bool,
    },
    NeedMore,
    No,
}

/// How many consecutive plausible frames prove a WebSocket stream.
const SNIFF_FRAMES: usize = 2;

/// Whether `bytes` start with WebSocket frames: [`SNIFF_FRAMES`] heads in a
/// row that are plausible (known opcode, no RSV2/3, control frames short
/// and whole, one masking for all, lengths that fit), or one frame that
/// ends exactly at the end of `bytes` (a write of one message). Lengths
/// are bounded by `max_frame` so random bytes rarely pass.
pub(crate) fn sniff(bytes: &[u8], max_frame: u64) -> Sniff {
    let mut at = 0usize;
    let mut masked = None;
    for n in 0..SNIFF_FRAMES {
        let Some(&b0) = bytes.get(at) else {
            return if n > 0 {
                Sniff::Frames {
                    masked: masked.unwrap_or(false),
                }
            } else {
                Sniff::NeedMore
            };
        };
        let Some(&b1) = bytes.get(at + 1) else {
            return Sniff::NeedMore;
        };
        let opcode = b0 & 0x0f;
        let fin = b0 & 0x80 != 0;
        let known = matches!(
            opcode,
            OP_TEXT | OP_BINARY | OP_CONTINUATION | OP_CLOSE | OP_PING | OP_PONG
        );
        // A stream picked up mid-way starts at a message start, not at a
        // continuation, when it starts at a call boundary.
        if !known || b0 & 0x30 != 0 || (n == 0 && opcode == OP_CONTINUATION) {
            return Sniff::No;
        }
        let m = b1 & 0x80 != 0;
        if *masked.get_or_insert(m) != m {
            return Sniff::No;
        }
        let (len, hlen) = match b1 & 0x7f {
            126 => match bytes.get(at + 2..at + 4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Sniff::NeedMore,
            },
            127 => match bytes.get(at + 2..at + 10) {
                Some(b) => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    (u64::from_be_bytes(a), 10)
                }
                None => return Sniff::NeedMore,
            },
            l => (u64::from(l), 2),
        };
        // Minimal length encoding, as every implementation sends.
        let minimal = match hlen {
            4 => len >= 126,
            10 => len > 0xffff,
            _ => true,
        };
        let control = opcode >= 0x8;
        if !minimal || len > max_frame || (control && (!fin || len > 125)) {
            return Sniff::No;
        }
        let total = hlen + if m { 4 } else { 0 } + usize::try_from(len).unwrap_or(usize::MAX);
        at = at.saturating_add(total);
        if at == bytes.len() {
            return Sniff::Frames { masked: m };
        }
    }
    Sniff::Frames {
        masked: masked.unwrap_or(false),
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// One `response.create` and what answered it so far.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one turn, not states of one machine"
)]
struct Turn {
    request: Vec<u8>,
    request_truncated: bool,
    t_request_start: u64,
    t_request_end: u64,
    /// The server's messages, as SSE.
    body: Vec<u8>,
    /// Messages were lost or cut.
    body_cut: bool,
    /// The body cap was hit (counted once).
    capped: bool,
    t_response_start: Option<u64>,
    t_response_end: Option<u64>,
    /// A terminal event was seen.
    done: bool,
}

/// Both directions of an upgraded connection.
#[derive(Debug)]
pub(crate) struct WsConn {
    role: Role,
    /// The direction the client writes in.
    client_dir: Direction,
    upgrade: Upgrade,
    limits: Limits,
    decoders: [FrameDecoder; 2],
    turns: VecDeque<Turn>,
    closed: [bool; 2],
    out: Vec<HttpOutput>,
}

#[derive(Deserialize)]
struct Typed<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
}

/// The `type` of a JSON message; for a cut one, from its start.
fn message_type(data: &[u8], truncated: bool) -> Option<String> {
    if let Ok(t) = serde_json::from_slice::<Typed<'_>>(data) {
        return t.kind.map(std::borrow::Cow::into_owned);
    }
    if !truncated {
        return None;
    }
    // `{"type":"response.create",…` cut further on: the leading field.
    let text = String::from_utf8_lossy(&data[..data.len().min(256)]);
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"type\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

fn is_terminal(kind: &str) -> bool {
    matches!(
        kind,
        "response.completed" | "response.failed" | "response.incomplete" | "error"
    )
}

impl WsConn {
    /// After a 101: `client_dir` is the direction the upgrade request went.
    pub(crate) fn new(role: Role, client_dir: Direction, upgrade: Upgrade, limits: Limits) -> Self {
        let mut errors = Vec::new();
        let deflate = negotiated_deflate(&upgrade.response_headers, &mut errors);
        let dec = |from_client: bool| {
            let inflater = deflate.map(|d| {
                Inflater::new(if from_client {
                    d.client_no_context_takeover
                } else {
                    d.server_no_context_takeover
                })
            });
            FrameDecoder::new(from_client, inflater, false, limits.max_ws_message_bytes)
        };
        let (out_dec, in_dec) = match client_dir {
            Direction::Outbound => (dec(true), dec(false)),
            Direction::Inbound => (dec(false), dec(true)),
        };
        let mut c = WsConn {
            role,
            client_dir,
            upgrade,
            limits,
            decoders: [out_dec, in_dec],
            turns: VecDeque::new(),
            closed: [false; 2],
            out: Vec::new(),
        };
        for e in errors {
            c.out.push(HttpOutput::Error(HttpError::Ws(e)));
        }
        c
    }

    /// A WebSocket picked up mid-way, recognised by [`sniff`]: nothing is
    /// known of the upgrade, and the role comes from the masking.
    pub(crate) fn mid_stream(role: Role, client_dir: Direction, limits: Limits) -> Self {
        let dec = |from_client: bool| {
            FrameDecoder::new(from_client, None, true, limits.max_ws_message_bytes)
        };
        let (out_dec, in_dec) = match client_dir {
            Direction::Outbound => (dec(true), dec(false)),
            Direction::Inbound => (dec(false), dec(true)),
        };
        WsConn {
            role,
            client_dir,
            upgrade: Upgrade::default(),
            limits,
            decoders: [out_dec, in_dec],
            turns: VecDeque::new(),
            closed: [false; 2],
            out: vec![HttpOutput::Error(HttpError::Ws(WsError::MidStream))],
        }
    }

    pub(crate) fn feed(&mut self, dir: Direction, ts: u64, data: &[u8]) -> Vec<HttpOutput> {
        self.decoders[dir.index()].push(ts, data);
        self.drain(dir);
        std::mem::take(&mut self.out)
    }

    pub(crate) fn gap(&mut self, dir: Direction, ts: u64, len: u64) -> Vec<HttpOutput> {
        self.decoders[dir.index()].gap(ts, len);
        self.drain(dir);
        std::mem::take(&mut self.out)
    }

    /// The connection ended: messages in progress are cut, every turn is
    /// emitted (unfinished ones truncated).
    pub(crate) fn finish(&mut self, _ts: u64) -> Vec<HttpOutput> {
        for dir in [self.client_dir, self.client_dir.other()] {
            self.decoders[dir.index()].finish();
            self.drain(dir);
        }
        while let Some(t) = self.turns.pop_front() {
            self.emit(t);
        }
        std::mem::take(&mut self.out)
    }

    /// False once both directions closed or were given up.
    pub(crate) fn is_live(&self) -> bool {
        (0..2).any(|i| !self.closed[i] && !self.decoders[i].is_lost())
    }

    /// Open, with no response in progress and no message half read: a
    /// socket kept between turns (Codex keeps one for the session).
    pub(crate) fn is_between_turns(&self) -> bool {
        self.is_live()
            && self.turns.is_empty()
            && self.decoders.iter().all(FrameDecoder::between_messages)
    }

    pub(crate) fn buffered(&self) -> usize {
        self.decoders
            .iter()
            .map(FrameDecoder::buffered)
            .sum::<usize>()
            + self
                .turns
                .iter()
                .map(|t| t.request.len() + t.body.len())
                .sum::<usize>()
    }

    fn drain(&mut self, dir: Direction) {
        let events = std::mem::take(&mut self.decoders[dir.index()].out);
        let from_client = dir == self.client_dir;
        for ev in events {
            match ev {
                FrameEvent::Message(m) if from_client => self.on_client_message(m),
                FrameEvent::Message(m) => self.on_server_message(&m),
                FrameEvent::MessageLost { t } => self.on_lost_message(from_client, t),
                FrameEvent::Close => self.closed[dir.index()] = true,
                FrameEvent::Lost => {
                    // What was waiting on this direction will not come.
                    self.closed[dir.index()] = true;
                    while let Some(t) = self.turns.pop_front() {
                        self.emit(t);
                    }
                }
                FrameEvent::Error(e) => self.out.push(HttpOutput::Error(HttpError::Ws(e))),
            }
        }
    }

    fn on_client_message(&mut self, m: WsMessage) {
        if !m.text {
            self.error(WsError::BinaryMessage);
            return;
        }
        if message_type(&m.data, m.truncated).as_deref() != Some("response.create") {
            self.error(WsError::ClientEventIgnored);
            return;
        }
        self.push_turn(Turn {
            request: m.data,
            request_truncated: m.truncated,
            t_request_start: m.t_start,
            t_request_end: m.t_end,
            body: Vec::new(),
            body_cut: false,
            capped: false,
            t_response_start: None,
            t_response_end: None,
            done: false,
        });
    }

    /// A client message that could not be read: it may have been a
    /// `response.create`, and the server's next answer is then to it.
    fn on_lost_message(&mut self, from_client: bool, t: u64) {
        if from_client {
            self.push_turn(Turn {
                request: Vec::new(),
                request_truncated: true,
                t_request_start: t,
                t_request_end: t,
                body: Vec::new(),
                body_cut: false,
                capped: false,
                t_response_start: None,
                t_response_end: None,
                done: false,
            });
        } else if let Some(turn) = self.turns.front_mut() {
            turn.body_cut = true;
        }
    }

    fn push_turn(&mut self, turn: Turn) {
        if self.turns.len() >= super::MAX_PENDING {
            self.out.push(HttpOutput::Error(HttpError::TooManyPending {
                limit: super::MAX_PENDING,
            }));
            if let Some(t) = self.turns.pop_front() {
                self.emit(t);
            }
        }
        self.turns.push_back(turn);
    }

    fn on_server_message(&mut self, m: &WsMessage) {
        if !m.text {
            self.error(WsError::BinaryMessage);
            return;
        }
        let kind = message_type(&m.data, m.truncated);
        let Some(turn) = self.turns.front_mut() else {
            self.error(WsError::UnpairedMessage);
            return;
        };
        turn.t_response_start.get_or_insert(m.t_start);
        turn.t_response_end = Some(m.t_end);
        let max = self.limits.max_body_bytes;
        if m.truncated {
            // Not whole JSON: left out, the answer is rebuilt from the
            // other events and marked cut.
            turn.body_cut = true;
        } else if !append_event(&mut turn.body, &m.data, max) && !turn.capped {
            turn.capped = true;
            turn.body_cut = true;
            self.out
                .push(HttpOutput::Error(HttpError::BodyTooLarge { limit: max }));
        }
        if kind.as_deref().is_some_and(is_terminal) {
            if let Some(mut t) = self.turns.pop_front() {
                t.done = true;
                self.emit(t);
            }
        }
    }

    fn error(&mut self, e: WsError) {
        self.out.push(HttpOutput::Error(HttpError::Ws(e)));
    }

    fn emit(&mut self, t: Turn) {
        let up = &self.upgrade;
        let response = t.t_response_start.map(|_| Response {
            status: up.status,
            headers: up.response_headers.clone(),
            body: t.body,
            body_truncated: !t.done || t.body_cut,
            body_cut: t.body_cut,
            trailers: Vec::new(),
            headers_unknown: up.status == 0,
        });
        let truncated = t.request_truncated || response.as_ref().is_none_or(|r| r.body_truncated);
        self.out.push(HttpOutput::Exchange(Exchange {
            role: self.role,
            request: Request {
                method: up.method.clone(),
                path: up.path.clone(),
                headers: up.request_headers.clone(),
                body: t.request,
                body_truncated: t.request_truncated,
                api_key_id: up.api_key_id.clone(),
                headers_unknown: up.method.is_empty(),
            },
            response,
            t_request_start: t.t_request_start,
            t_request_end: t.t_request_end,
            t_response_start: t.t_response_start,
            t_first_body: t.t_response_start,
            t_response_end: t.t_response_end,
            truncated,
            websocket: true,
        }));
    }
}

/// Appends one message to an SSE body (`data:` per line, then a blank
/// line). False when it did not fit in `max` (nothing appended).
fn append_event(body: &mut Vec<u8>, data: &[u8], max: usize) -> bool {
    let lines = data.split(|&b| b == b'\n');
    let need: usize = lines.clone().map(|l| l.len() + 6).sum::<usize>() + 1;
    if body.len() + need > max {
        return false;
    }
    for line in lines {
        body.extend_from_slice(b"data:");
        body.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        body.push(b'\n');
    }
    body.push(b'\n');
    true
}
