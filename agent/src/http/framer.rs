//! One direction of a connection: finds message heads, frames bodies
//! (Content-Length, chunked, until close) and resynchronises after gaps.
//!
//! The framer never reads ahead: `buf` holds only the bytes of the head (or
//! chunk-size line, or resync candidate line) being assembled, never bytes
//! that belong after it, so every byte of input is handled exactly once and
//! memory per direction is bounded by the header limit.

use super::head::{self, BodyLength, Kind, Start};
use super::{Conn, Direction, HttpError};

/// Longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// While a connection has never shown an HTTP message, this many bytes of
/// fruitless resync scanning mean it does not carry HTTP/1.x.
const RESYNC_GIVE_UP: u64 = 1 << 20;
/// Start lines are classified on every feed only while this short; longer
/// ones once their line is complete, so a long target fed byte by byte is
/// not rescanned per byte.
const CLASSIFY_EAGERLY: usize = 64;

#[derive(Debug)]
enum State {
    /// Assembling a head in `buf`.
    Head {
        start_ts: Option<u64>,
        /// The start line was already classified as what we expect.
        start_ok: bool,
    },
    Body(Body),
    /// Lost sync: looking for a line that ends with a start line. `buf`
    /// holds the tail of the current line.
    Resync {
        /// Skipped bytes other than blank lines mean a whole message was
        /// lost (not yet recorded): set after a gap that ended a message
        /// or fell between messages.
        infer_lost: bool,
        skipped_content: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum Body {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// Reading a chunk-size line into `buf`.
    Size,
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd {
        seen_cr: bool,
    },
    /// Trailer fields up to the empty line; discarded (they may hold
    /// secrets and nobody needs them here).
    Trailers {
        line_len: usize,
        total: usize,
    },
}

#[derive(Debug)]
pub(crate) struct Framer {
    dir: Direction,
    buf: Vec<u8>,
    state: State,
    /// Bytes thrown away while resynchronising.
    skipped: u64,
}

impl Framer {
    pub(crate) fn new(dir: Direction) -> Self {
        Framer {
            dir,
            buf: Vec::new(),
            state: State::Head {
                start_ts: None,
                start_ok: false,
            },
            skipped: 0,
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether bytes are waiting for a role to be known.
    pub(crate) fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Handles `data`, reporting to `conn`: all of it, unless the
    /// connection stops being HTTP/1.x (an upgrade) part way. Returns how
    /// many bytes were taken.
    pub(crate) fn push(&mut self, conn: &mut Conn, ts: u64, data: &[u8]) -> usize {
        let mut rest = data;
        // Each step consumes bytes or changes state; it returns None when it
        // cannot go on without more input.
        while !conn.not_http && conn.upgraded.is_none() {
            let step = match self.state {
                State::Head { start_ts, start_ok } => {
                    self.step_head(conn, ts, rest, start_ts, start_ok)
                }
                State::Body(body) => self.step_body(conn, ts, rest, body),
                State::Resync { .. } => self.step_resync(conn, ts, rest),
            };
            match step {
                Some(consumed) => rest = rest.get(consumed..).unwrap_or_default(),
                None => break,
            }
        }
        data.len() - rest.len()
    }

    fn resync(infer_lost: bool) -> State {
        State::Resync {
            infer_lost,
            skipped_content: false,
        }
    }

    fn fresh_head() -> State {
        State::Head {
            start_ts: None,
            start_ok: false,
        }
    }

    fn step_head(
        &mut self,
        conn: &mut Conn,
        ts: u64,
        rest: &[u8],
        start_ts: Option<u64>,
        start_ok: bool,
    ) -> Option<usize> {
        let mut skipped = 0;
        if self.buf.is_empty() {
            // Blank lines between messages are allowed (RFC 9112 §2.2).
            skipped = rest
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
        }
        let rest = &rest[skipped..];
        if rest.is_empty() && (start_ok || !self.has_pending()) {
            // Nothing new; a buffered start line not yet classified (role
            // just learnt from the other side) is classified below.
            return (skipped > 0).then_some(skipped);
        }
        let start_ts = start_ts.unwrap_or(ts);
        let end = find_end_across(&self.buf, rest);
        let take = end.unwrap_or(rest.len());
        let limit = conn.limits.max_header_bytes;
        if self.buf.len() + take > limit {
            conn.error(HttpError::HeaderTooLarge { limit });
            conn.on_lost_head(self.dir);
            self.buf.clear();
            self.state = Self::resync(false);
            // What we saw of the head is dropped with it.
            self.skip(conn, take);
            return Some(skipped + take);
        }
        let line_done = memchr::memchr(b'\n', &rest[..take]).is_some();
        self.buf.extend_from_slice(&rest[..take]);
        let consumed = skipped + take;
        if !start_ok {
            // A complete line always gets a definite verdict, so an
            // incomplete one past the eager length can wait for its end.
            if self.buf.len() > CLASSIFY_EAGERLY && !line_done {
                self.state = State::Head {
                    start_ts: Some(start_ts),
                    start_ok: false,
                };
                return Some(consumed).filter(|&c| c > 0);
            }
            match self.check_start(conn) {
                StartCheck::Ok => {}
                StartCheck::Wait => {
                    self.state = State::Head {
                        start_ts: Some(start_ts),
                        start_ok: false,
                    };
                    return Some(consumed).filter(|&c| c > 0);
                }
                StartCheck::Bad => {
                    // Keep only the bad line (its end may still hold a start
                    // line, after garbage); bytes after it are handed back.
                    let ours = self.buf.len() - take;
                    let consumed = match memchr::memchr(b'\n', &self.buf) {
                        Some(q) if q >= ours => {
                            self.buf.truncate(q + 1);
                            skipped + (q + 1 - ours)
                        }
                        _ => consumed,
                    };
                    self.state = Self::resync(false);
                    if self.buf.ends_with(b"\n") {
                        self.resync_line_done(conn, ts);
                    }
                    return Some(consumed);
                }
                StartCheck::NotHttp => return None,
            }
        }
        if end.is_none() {
            self.state = State::Head {
                start_ts: Some(start_ts),
                start_ok: true,
            };
            return Some(consumed).filter(|&c| c > 0);
        }
        let Some(kind) = conn.kind_of(self.dir) else {
            // Unreachable in practice: a checked start fixes the role.
            self.buf.clear();
            self.state = Self::fresh_head();
            return Some(consumed);
        };
        let parsed = head::parse_head(&self.buf, kind);
        // The head may hold an API key in clear; it is not kept anywhere.
        self.buf.fill(0);
        self.buf.clear();
        self.state = Self::fresh_head();
        let head = match parsed {
            Ok(h) => h,
            Err(e) => {
                conn.error(e);
                conn.on_lost_head(self.dir);
                self.state = Self::resync(false);
                return Some(consumed);
            }
        };
        match conn.on_head(head, start_ts) {
            Err(()) => self.state = Self::resync(false),
            Ok(BodyLength::None) => conn.on_end(self.dir, ts, true),
            Ok(BodyLength::Length(n)) => self.state = State::Body(Body::Length(n)),
            Ok(BodyLength::Chunked) => self.state = State::Body(Body::Chunked(Chunk::Size)),
            Ok(BodyLength::UntilClose) => self.state = State::Body(Body::UntilClose),
        }
        Some(consumed)
    }

    /// Checks that `buf` starts the message this direction should carry,
    /// fixing the connection's role on the first one.
    fn check_start(&mut self, conn: &mut Conn) -> StartCheck {
        let verdict = head::classify(&self.buf, conn.limits.max_header_bytes);
        let found = match verdict {
            Start::NeedMore => return StartCheck::Wait,
            Start::No => None,
            Start::Request => Some(Kind::Request),
            Start::Response => Some(Kind::Response),
        };
        let expected = conn.kind_of(self.dir);
        match (found, expected) {
            (Some(f), None) => {
                conn.set_role(self.dir, f);
                StartCheck::Ok
            }
            (Some(f), Some(e)) if f == e => StartCheck::Ok,
            _ if !conn.any_message && !conn.gapped => {
                // The very first bytes of the connection are not HTTP/1.x.
                conn.set_not_http();
                StartCheck::NotHttp
            }
            (_, expected) => {
                conn.error(HttpError::BadStartLine {
                    kind: expected.map_or("message", Kind::name),
                });
                StartCheck::Bad
            }
        }
    }

    fn step_body(&mut self, conn: &mut Conn, ts: u64, rest: &[u8], body: Body) -> Option<usize> {
        match body {
            Body::Length(remaining) => {
                if rest.is_empty() {
                    return None;
                }
                let take = clamp_len(remaining, rest.len());
                conn.on_body(self.dir, ts, &rest[..take]);
                let left = remaining - take as u64;
                if left == 0 {
                    self.state = Self::fresh_head();
                    conn.on_end(self.dir, ts, true);
                } else {
                    self.state = State::Body(Body::Length(left));
                }
                Some(take)
            }
            Body::UntilClose => {
                if rest.is_empty() {
                    return None;
                }
                conn.on_body(self.dir, ts, rest);
                Some(rest.len())
            }
            Body::Chunked(chunk) => self.step_chunk(conn, ts, rest, chunk),
        }
    }

    fn step_chunk(&mut self, conn: &mut Conn, ts: u64, rest: &[u8], chunk: Chunk) -> Option<usize> {
        if rest.is_empty() {
            return None;
        }
        match chunk {
            Chunk::Size => {
                let end = memchr::memchr(b'\n', rest);
                let take = end.map_or(rest.len(), |p| p + 1);
                if self.buf.len() + take > MAX_CHUNK_LINE {
                    return Some(self.bad_chunk(conn, ts, "chunk-size line too long", take));
                }
                self.buf.extend_from_slice(&rest[..take]);
                if end.is_none() {
                    return Some(take);
                }
                let size = parse_chunk_size(&self.buf);
                self.buf.clear();
                match size {
                    Some(0) => {
                        self.state = State::Body(Body::Chunked(Chunk::Trailers {
                            line_len: 0,
                            total: 0,
                        }));
                    }
                    Some(n) => self.state = State::Body(Body::Chunked(Chunk::Data(n))),
                    None => return Some(self.bad_chunk(conn, ts, "bad chunk size", take)),
                }
                Some(take)
            }
            Chunk::Data(remaining) => {
                let take = clamp_len(remaining, rest.len());
                conn.on_body(self.dir, ts, &rest[..take]);
                let left = remaining - take as u64;
                self.state = State::Body(Body::Chunked(if left == 0 {
                    Chunk::DataEnd { seen_cr: false }
                } else {
                    Chunk::Data(left)
                }));
                Some(take)
            }
            Chunk::DataEnd { seen_cr } => match rest[0] {
                b'\r' if !seen_cr => {
                    self.state = State::Body(Body::Chunked(Chunk::DataEnd { seen_cr: true }));
                    Some(1)
                }
                b'\n' => {
                    self.state = State::Body(Body::Chunked(Chunk::Size));
                    Some(1)
                }
                _ => Some(self.bad_chunk(conn, ts, "no CRLF after chunk data", 0)),
            },
            Chunk::Trailers {
                mut line_len,
                mut total,
            } => {
                for (i, &b) in rest.iter().enumerate() {
                    match b {
                        b'\n' if line_len == 0 => {
                            self.state = Self::fresh_head();
                            conn.on_end(self.dir, ts, true);
                            return Some(i + 1);
                        }
                        b'\n' => line_len = 0,
                        b'\r' => {}
                        _ => {
                            line_len += 1;
                            total += 1;
                            if total > conn.limits.max_header_bytes {
                                return Some(self.bad_chunk(conn, ts, "trailers too large", i + 1));
                            }
                        }
                    }
                }
                self.state = State::Body(Body::Chunked(Chunk::Trailers { line_len, total }));
                Some(rest.len())
            }
        }
    }

    /// Broken chunked framing: the message ends cut and we resync.
    /// Returns `consumed` for the caller's convenience.
    fn bad_chunk(
        &mut self,
        conn: &mut Conn,
        ts: u64,
        reason: &'static str,
        consumed: usize,
    ) -> usize {
        self.buf.clear();
        conn.error(HttpError::BadChunk { reason });
        conn.on_end(self.dir, ts, false);
        self.state = Self::resync(false);
        consumed
    }

    fn step_resync(&mut self, conn: &mut Conn, ts: u64, rest: &[u8]) -> Option<usize> {
        if rest.is_empty() {
            return None;
        }
        let newline = memchr::memchr(b'\n', rest);
        let take = newline.map_or(rest.len(), |p| p + 1);
        // A start line is at most `keep` bytes and ends a line: only the
        // tail of a long line is worth keeping.
        let keep = conn.limits.max_header_bytes;
        let cut = take.saturating_sub(keep);
        self.drop_resync_bytes(conn, &rest[..cut]);
        self.buf.extend_from_slice(&rest[cut..take]);
        if self.buf.len() > 2 * keep {
            let excess = self.buf.len() - keep;
            let dropped: Vec<u8> = self.buf.drain(..excess).collect();
            self.drop_resync_bytes(conn, &dropped);
        }
        if newline.is_some() {
            self.resync_line_done(conn, ts);
        }
        Some(take)
    }

    /// `buf` holds a complete line (or its tail): if it ends with a start
    /// line of the kind this direction carries, parsing resumes there.
    /// Looking at line ends rather than line starts matters: a JSON body
    /// has no trailing newline, so after it the next request line is glued
    /// to the body's last bytes.
    fn resync_line_done(&mut self, conn: &mut Conn, ts: u64) {
        let expected = conn.kind_of(self.dir);
        let found = head::find_start_in_line(&self.buf, expected, conn.limits.max_header_bytes);
        let Some((start, kind)) = found else {
            let line = std::mem::take(&mut self.buf);
            self.drop_resync_bytes(conn, &line);
            return;
        };
        let before: Vec<u8> = self.buf.drain(..start).collect();
        self.drop_resync_bytes(conn, &before);
        if expected.is_none() {
            conn.set_role(self.dir, kind);
        }
        if let State::Resync {
            infer_lost: true,
            skipped_content: true,
        } = self.state
        {
            // The tail of a message whose start a gap took: one message lost.
            conn.on_lost_head(self.dir);
        }
        conn.on_resynced(self.dir);
        // The start line stays in `buf`; the head step looks back into it
        // for an empty line right after it.
        self.state = State::Head {
            start_ts: Some(ts),
            start_ok: true,
        };
    }

    /// Bytes thrown away while resynchronising: counted, and noted when
    /// they are more than blank lines.
    fn drop_resync_bytes(&mut self, conn: &mut Conn, bytes: &[u8]) {
        if let State::Resync {
            skipped_content, ..
        } = &mut self.state
        {
            *skipped_content |= bytes.iter().any(|&b| b != b'\r' && b != b'\n');
        }
        self.skip(conn, bytes.len());
    }

    /// Counts bytes discarded while resynchronising; gives up on a
    /// connection that never showed HTTP.
    fn skip(&mut self, conn: &mut Conn, n: usize) -> usize {
        self.skipped = self.skipped.saturating_add(n as u64);
        if !conn.any_message && self.skipped > RESYNC_GIVE_UP {
            conn.set_not_http();
        }
        n
    }

    /// `len` bytes are missing.
    pub(crate) fn gap(&mut self, conn: &mut Conn, len: u64) {
        let ts = conn.last_ts;
        match self.state {
            State::Head { start_ts, .. } => {
                // A partial head is a lost message, recorded now; between
                // messages, skipped bytes will tell.
                let partial = start_ts.is_some() || !self.buf.is_empty();
                if partial {
                    conn.on_lost_head(self.dir);
                }
                self.buf.clear();
                self.state = Self::resync(!partial);
            }
            State::Body(Body::Length(remaining)) => {
                conn.on_body_gap(self.dir);
                if len < remaining {
                    self.state = State::Body(Body::Length(remaining - len));
                } else {
                    conn.on_end(self.dir, ts, false);
                    // Exactly at the end: the next byte starts a message.
                    self.state = if len == remaining {
                        Self::fresh_head()
                    } else {
                        // The rest of the gap was the next message's.
                        Self::resync(true)
                    };
                }
            }
            State::Body(Body::Chunked(Chunk::Data(remaining))) if len <= remaining => {
                conn.on_body_gap(self.dir);
                self.state = State::Body(Body::Chunked(if len == remaining {
                    Chunk::DataEnd { seen_cr: false }
                } else {
                    Chunk::Data(remaining - len)
                }));
            }
            State::Body(Body::Chunked(_)) => {
                self.buf.clear();
                conn.on_body_gap(self.dir);
                conn.on_end(self.dir, ts, false);
                // More chunks of this body may follow: no inference.
                self.state = Self::resync(false);
            }
            State::Body(Body::UntilClose) => conn.on_body_gap(self.dir),
            State::Resync { .. } => {
                // The line tail is not contiguous with what follows.
                let tail = std::mem::take(&mut self.buf);
                self.drop_resync_bytes(conn, &tail);
                self.skipped = self.skipped.saturating_add(len);
            }
        }
    }

    /// The connection ended: a body read until close is complete, anything
    /// else in progress is cut.
    pub(crate) fn finish(&mut self, conn: &mut Conn, ts: u64) {
        match self.state {
            State::Head { .. } => {
                if !self.buf.is_empty() {
                    conn.on_lost_head(self.dir);
                }
            }
            State::Body(Body::UntilClose) => conn.on_end(self.dir, ts, true),
            State::Body(_) => conn.on_end(self.dir, ts, false),
            State::Resync { .. } => {}
        }
        self.buf.fill(0);
        self.buf.clear();
        // If bytes follow (an idle flush, not a close), we no longer know
        // where we are.
        self.state = Self::resync(false);
    }
}

enum StartCheck {
    Ok,
    Wait,
    Bad,
    NotHttp,
}

/// `min(remaining, available)` without lossy casts.
fn clamp_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// Where the head ends in `rest` (just past the empty line), looking back
/// into `buf` for an empty line split across feeds.
fn find_end_across(buf: &[u8], rest: &[u8]) -> Option<usize> {
    let at = |i: isize| -> Option<u8> {
        if i >= 0 {
            rest.get(i.unsigned_abs()).copied()
        } else {
            let back = i.unsigned_abs();
            buf.len()
                .checked_sub(back)
                .and_then(|j| buf.get(j).copied())
        }
    };
    let mut from = 0;
    while let Some(off) = memchr::memchr(b'\n', rest.get(from..)?) {
        let p = from + off;
        let pi = isize::try_from(p).ok()?;
        let blank =
            at(pi - 1) == Some(b'\n') || (at(pi - 1) == Some(b'\r') && at(pi - 2) == Some(b'\n'));
        if blank {
            return Some(p + 1);
        }
        from = p + 1;
    }
    None
}

/// The size of a chunk-size line (`1a;ext=v\r\n`), at most 16 hex digits.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let size = line.split(|&b| b == b';').next()?;
    let size = size.trim_ascii();
    if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let text = std::str::from_utf8(size).ok()?;
    u64::from_str_radix(text, 16).ok()
}
