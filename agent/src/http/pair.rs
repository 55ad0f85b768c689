//! Pairing: requests wait in slots, in order, until their response ends;
//! the connection state the two framers share.

use std::collections::VecDeque;

use super::body::{self, BodySink};
use super::head::{self, BodyLength, Head, Kind, StartLine};
use super::{
    ws, Direction, Exchange, HttpError, HttpOutput, Limits, Request, Response, MAX_PENDING,
};
use crate::event::Role;

/// A message being received.
#[derive(Debug)]
pub(super) struct Msg {
    pub(super) head: Head,
    pub(super) body: BodySink,
    pub(super) t_start: u64,
    pub(super) t_first_body: Option<u64>,
}

#[derive(Debug)]
pub(super) struct DoneRequest {
    pub(super) request: Request,
    pub(super) t_start: u64,
    pub(super) t_end: u64,
}

#[derive(Debug)]
pub(super) struct DoneResponse {
    pub(super) response: Response,
    pub(super) t_start: u64,
    pub(super) t_first_body: Option<u64>,
    pub(super) t_end: u64,
}

#[derive(Debug)]
pub(super) enum ReqPart {
    InProgress,
    Done(Box<DoneRequest>),
    /// Its head was cut by a gap: only its place in the order is known.
    Lost,
}

#[derive(Debug)]
pub(super) enum RespPart {
    Awaiting,
    InProgress,
    Done(Box<DoneResponse>),
    Lost,
}

/// One request's place in the pipeline.
#[derive(Debug)]
pub(super) struct Slot {
    /// The response to a HEAD request has no body.
    pub(super) is_head: bool,
    /// A 2xx response to CONNECT turns the connection into a tunnel.
    pub(super) is_connect: bool,
    pub(super) request: ReqPart,
    pub(super) response: RespPart,
}

impl Slot {
    pub(super) fn is_ready(&self) -> bool {
        !matches!(self.request, ReqPart::InProgress)
            && matches!(self.response, RespPart::Done(_) | RespPart::Lost)
    }
}

#[derive(Debug)]
pub(super) struct RespCur {
    pub(super) msg: Msg,
    /// No request is waiting for it: framed, not kept.
    pub(super) orphan: bool,
    /// 101, or 2xx to CONNECT: the connection stops being HTTP after it.
    pub(super) upgrade: bool,
}

/// State shared by both directions: role, pairing, outputs.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about the connection, not states of one machine"
)]
pub(crate) struct Conn {
    pub(super) limits: Limits,
    pub(super) request_dir: Option<Direction>,
    pub(super) not_http: bool,
    /// A head was parsed on this connection.
    pub(super) any_message: bool,
    /// A gap was reported: odd bytes are then lost sync, not proof that
    /// the connection is not HTTP.
    pub(super) gapped: bool,
    pub(super) last_ts: u64,
    pub(super) slots: VecDeque<Slot>,
    pub(super) req_cur: Option<Msg>,
    pub(super) resp_cur: Option<RespCur>,
    /// The response direction resynchronised since its last head.
    pub(super) resp_resynced: bool,
    /// A 101 accepted a WebSocket: the bytes after it are frames.
    pub(super) upgraded: Option<ws::Upgrade>,
    pub(super) out: Vec<HttpOutput>,
}

impl Conn {
    pub(super) fn new(limits: Limits) -> Self {
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
            upgraded: None,
            out: Vec::new(),
        }
    }

    pub(super) fn buffered(&self) -> usize {
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

    pub(super) fn role(&self) -> Role {
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

    pub(super) fn is_request_dir(&self, dir: Direction) -> bool {
        self.kind_of(dir) == Some(Kind::Request)
    }

    pub(super) fn body_sink(&mut self, headers: &[(String, String)]) -> BodySink {
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

    pub(super) fn push_slot(&mut self, request: ReqPart, is_head: bool, is_connect: bool) {
        self.slots.push_back(Slot {
            is_head,
            is_connect,
            request,
            response: RespPart::Awaiting,
        });
    }

    /// Keeps the pipeline bounded: gives up the oldest request if full.
    pub(super) fn make_room(&mut self) {
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
    pub(super) fn drop_stale_awaiting(&mut self) {
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

    pub(super) fn mark_in_progress_response_lost(&mut self) {
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
                    headers_unknown: false,
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
                    let status = match cur.msg.head.line {
                        StartLine::Response { status } => status,
                        StartLine::Request { .. } => 0,
                    };
                    // The request was not seen: only the 101 is known.
                    let up = ws::Upgrade {
                        status,
                        response_headers: cur.msg.head.headers,
                        ..ws::Upgrade::default()
                    };
                    self.end_upgrade(up);
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
                    trailers: Vec::new(),
                    headers_unknown: false,
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
                let up = self.upgrade_exchange();
                self.end_upgrade(up);
                return;
            }
        }
        self.flush_ready();
    }

    /// What the exchange that switched protocols said: the settled slot.
    fn upgrade_exchange(&self) -> ws::Upgrade {
        self.slots
            .iter()
            .find_map(|s| match (&s.request, &s.response) {
                (ReqPart::Done(req), RespPart::Done(resp)) => Some(ws::Upgrade {
                    method: req.request.method.clone(),
                    path: req.request.path.clone(),
                    request_headers: req.request.headers.clone(),
                    api_key_id: req.request.api_key_id.clone(),
                    status: resp.response.status,
                    response_headers: resp.response.headers.clone(),
                }),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The connection stops being HTTP/1.x after the exchange that
    /// switched it: to WebSocket frames for a 101 to WebSocket, to
    /// something we do not follow otherwise (a CONNECT tunnel, h2c).
    fn end_upgrade(&mut self, up: ws::Upgrade) {
        self.flush_all();
        if up.status == 101 && ws::is_websocket(&up.response_headers) {
            self.upgraded = Some(up);
        } else {
            self.set_not_http();
        }
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
    pub(super) fn flush_ready(&mut self) {
        while self.slots.front().is_some_and(Slot::is_ready) {
            if let Some(slot) = self.slots.pop_front() {
                self.emit(slot);
            }
        }
    }

    /// Emits everything, settled or not (end of connection): messages in
    /// progress are cut, requests without a response go out without one.
    pub(super) fn flush_all(&mut self) {
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

    pub(super) fn emit(&mut self, slot: Slot) {
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
            websocket: false,
        };
        self.out.push(HttpOutput::Exchange(exchange));
    }
}
