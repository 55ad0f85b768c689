//! HTTP/2 over one TLS connection: plaintext frames in, the same
//! [`Exchange`](super::Exchange)s as HTTP/1 out.
//!
//! Each direction has a frame reader (`frames.rs`) and an HPACK decoder
//! (`hpack.rs`, the mirror of the peer that sends in that direction); the
//! connection (`conn.rs`) assembles streams from header blocks and DATA
//! frames. `SETTINGS`, `PRIORITY`, `PING` and `WINDOW_UPDATE` change nothing
//! we decode and are skipped; a peer's `SETTINGS_HEADER_TABLE_SIZE` only
//! matters through the size updates its encoder must send, which HPACK
//! sees. `PUSH_PROMISE` blocks are decoded (they move the table) and the
//! pushed stream ignored.
//!
//! Seen from its preface, a connection is decoded exactly. Picked up
//! mid-way, each direction first scans for a frame boundary, and header
//! fields that refer to table entries from before are marked unknown: the
//! request's `headers_unknown` is set and its path or method may be empty,
//! never wrong. The same holds after a capture gap that crosses frames.
//!
//! Bounds: a header block (HEADERS and its CONTINUATIONs) holds at most
//! `max_header_bytes` and [`MAX_CONTINUATIONS`] frames, a decoded list at
//! most `max_header_bytes`, a table at most 64 KiB, each body
//! `max_body_bytes`, at most [`conn::MAX_STREAMS`] streams are tracked.

mod conn;
mod frames;
mod hpack;
#[doc(hidden)]
pub use self::hpack::Decoder as HpackDecoder;
mod huffman;

#[cfg(test)]
mod tests;

use self::conn::{Conn, Head};
use self::frames::{flag, kind, Event, FrameHeader, Reader};
pub use self::frames::{sniff, Sniff, PREFACE};
use self::hpack::{Block, Decoder};
use super::{Direction, HttpError, HttpOutput, Limits};

/// Most CONTINUATION frames in one header block: real blocks need a few
/// (64 KiB in 16 KiB frames); empty ones in a loop are a known attack.
pub const MAX_CONTINUATIONS: usize = 32;

/// Why HTTP/2 bytes could not be (fully) understood. Each is counted
/// under [`H2Error::name`].
#[derive(thiserror::Error, Debug)]
pub enum H2Error {
    #[error("the client preface is malformed")]
    BadPreface,
    #[error("bytes lost across frames; header state reset")]
    LostSync,
    #[error("{skipped} bytes skipped to find a frame boundary")]
    Skipped { skipped: u64 },
    #[error("malformed {what}")]
    BadFrame { what: &'static str },
    #[error("header block interrupted or CONTINUATION without a block")]
    BadContinuation,
    #[error("header block larger than {limit} bytes or {MAX_CONTINUATIONS} frames")]
    HeaderBlockTooLarge { limit: usize },
    #[error("decoded header list larger than {limit} bytes, cut")]
    HeaderListTooLarge { limit: usize },
    #[error("cannot decode header block")]
    Hpack {
        #[source]
        source: hpack::HpackError,
    },
    #[error("header fields refer to table entries from before capture")]
    HeadersUnknown,
    #[error("more than {limit} streams open, oldest given up")]
    TooManyStreams { limit: usize },
    #[error("frames for a stream whose request was not seen")]
    UnknownStream,
}

impl H2Error {
    /// The counter this error is reported under.
    pub fn name(&self) -> &'static str {
        match self {
            H2Error::BadPreface => "h2_bad_preface",
            H2Error::LostSync => "h2_lost_sync",
            H2Error::Skipped { .. } => "h2_skipped",
            H2Error::BadFrame { .. } => "h2_bad_frame",
            H2Error::BadContinuation => "h2_bad_continuation",
            H2Error::HeaderBlockTooLarge { .. } => "h2_header_block_too_large",
            H2Error::HeaderListTooLarge { .. } => "h2_header_list_too_large",
            H2Error::Hpack { .. } => "h2_hpack",
            H2Error::HeadersUnknown => "h2_headers_unknown",
            H2Error::TooManyStreams { .. } => "h2_too_many_streams",
            H2Error::UnknownStream => "h2_unknown_stream",
        }
    }
}

/// A header block being assembled from `HEADERS` (or `PUSH_PROMISE`) and
/// `CONTINUATION` frames.
#[derive(Debug)]
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    push: bool,
    buf: Vec<u8>,
    frames: usize,
    too_large: bool,
    ts_start: u64,
}

#[derive(Debug)]
struct Side {
    reader: Reader,
    hpack: Decoder,
    block: Option<PendingBlock>,
}

/// HTTP/2 parser for one connection, both directions.
#[derive(Debug)]
pub struct H2Parser {
    conn: Conn,
    sides: [Side; 2],
    limits: Limits,
    not_http: bool,
}

impl H2Parser {
    /// `preface_dir`: the direction that starts with the client preface,
    /// when the connection is seen from its start; None when it is picked
    /// up mid-way.
    pub fn new(limits: Limits, preface_dir: Option<Direction>) -> Self {
        let side = |dir: Direction| {
            let from_start = preface_dir.is_some();
            Side {
                reader: Reader::new(
                    preface_dir == Some(dir),
                    from_start,
                    limits.max_header_bytes,
                ),
                hpack: Decoder::new(from_start),
                block: None,
            }
        };
        H2Parser {
            conn: Conn::new(limits, preface_dir),
            sides: [side(Direction::Outbound), side(Direction::Inbound)],
            limits,
            not_http: false,
        }
    }

    pub fn feed(&mut self, dir: Direction, ts: u64, data: &[u8]) -> Vec<HttpOutput> {
        if self.not_http {
            return Vec::new();
        }
        self.conn.last_ts = self.conn.last_ts.max(ts);
        self.read(dir, ts, |reader, ctx| {
            reader.push(ts, data, &mut |ev| ctx.on_event(ev));
        })
    }

    pub fn gap(&mut self, dir: Direction, len: u64) -> Vec<HttpOutput> {
        if self.not_http {
            return Vec::new();
        }
        let ts = self.conn.last_ts;
        self.read(dir, ts, |reader, ctx| {
            reader.gap(len, &mut |ev| ctx.on_event(ev));
        })
    }

    /// Runs `step` on `dir`'s frame reader, handing each frame event to
    /// that direction's HPACK and stream state.
    fn read(
        &mut self,
        dir: Direction,
        ts: u64,
        step: impl FnOnce(&mut Reader, &mut Ctx<'_>),
    ) -> Vec<HttpOutput> {
        let Side {
            reader,
            hpack,
            block,
        } = &mut self.sides[dir.index()];
        let mut ctx = Ctx {
            conn: &mut self.conn,
            hpack,
            block,
            dir,
            ts,
            limits: self.limits,
            gave_up: false,
        };
        step(reader, &mut ctx);
        let gave_up = ctx.gave_up;
        self.after(gave_up)
    }

    fn after(&mut self, gave_up: bool) -> Vec<HttpOutput> {
        if gave_up && !self.not_http {
            // No frame boundary in a megabyte: not HTTP/2 after all.
            self.not_http = true;
            self.conn.finish();
            self.conn.error(HttpError::NotHttp);
        }
        std::mem::take(&mut self.conn.out)
    }

    /// The connection ended: every stream is emitted as it is.
    pub fn finish(&mut self, ts: u64) -> Vec<HttpOutput> {
        self.conn.last_ts = self.conn.last_ts.max(ts);
        for s in &mut self.sides {
            if let Some(mut b) = s.block.take() {
                b.buf.fill(0);
            }
        }
        self.conn.finish();
        std::mem::take(&mut self.conn.out)
    }

    pub fn is_http(&self) -> bool {
        !self.not_http
    }

    /// Bytes held: frames being read, header blocks, tables and bodies.
    pub fn buffered_bytes(&self) -> usize {
        let sides: usize = self
            .sides
            .iter()
            .map(|s| {
                s.reader.buffered() + s.hpack.held() + s.block.as_ref().map_or(0, |b| b.buf.len())
            })
            .sum();
        sides + self.conn.buffered()
    }
}

/// What one direction's events act on.
struct Ctx<'a> {
    conn: &'a mut Conn,
    hpack: &'a mut Decoder,
    block: &'a mut Option<PendingBlock>,
    dir: Direction,
    ts: u64,
    limits: Limits,
    gave_up: bool,
}

impl Ctx<'_> {
    fn on_event(&mut self, ev: Event<'_>) {
        let dir = self.dir;
        match ev {
            Event::Data { stream, data } => self.conn.on_data(dir, stream, data, self.ts),
            Event::DataEnd { stream, end_stream } => {
                if end_stream {
                    self.conn.end_half(dir, stream, self.ts);
                }
            }
            Event::DataGap { stream } => self.conn.on_data_gap(dir, stream),
            Event::Frame {
                header,
                payload,
                cut,
                ts_start,
            } => self.on_frame(header, payload, cut, ts_start),
            Event::BadPreface => {
                self.conn.error(H2Error::BadPreface);
                self.hpack.lose_state();
            }
            Event::BadPadding => self.conn.error(H2Error::BadFrame { what: "padding" }),
            Event::Synced { skipped } => {
                if skipped > 0 {
                    self.conn.error(H2Error::Skipped { skipped });
                }
            }
            Event::Lost => {
                self.conn.error(H2Error::LostSync);
                self.drop_block();
                self.hpack.lose_state();
                self.conn.on_lost(dir);
            }
            Event::GaveUp => self.gave_up = true,
        }
    }

    fn drop_block(&mut self) {
        if let Some(mut b) = self.block.take() {
            b.buf.fill(0);
        }
    }

    fn on_frame(&mut self, hdr: FrameHeader, payload: &[u8], cut: bool, ts_start: u64) {
        if self.block.is_some() && hdr.kind != kind::CONTINUATION {
            // A block must be followed by its CONTINUATIONs only; what it
            // would have inserted in the table is lost.
            self.conn.error(H2Error::BadContinuation);
            self.drop_block();
            self.hpack.lose_state();
        }
        match hdr.kind {
            kind::HEADERS | kind::PUSH_PROMISE => self.on_block_start(hdr, payload, cut, ts_start),
            kind::CONTINUATION => self.on_continuation(hdr, payload, cut),
            kind::RST_STREAM => {
                if payload.len() == 4 && hdr.stream != 0 {
                    self.conn.on_reset(hdr.stream);
                } else {
                    self.conn.error(H2Error::BadFrame { what: "RST_STREAM" });
                }
            }
            kind::GOAWAY => match payload.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
                Some(last) if hdr.stream == 0 => {
                    self.conn.on_goaway(u32::from_be_bytes(last) & 0x7fff_ffff);
                }
                _ => self.conn.error(H2Error::BadFrame { what: "GOAWAY" }),
            },
            // SETTINGS, PRIORITY, PING, WINDOW_UPDATE, extensions: nothing
            // we decode depends on them.
            _ => {}
        }
    }

    fn on_block_start(&mut self, h: FrameHeader, payload: &[u8], cut: bool, ts_start: u64) {
        let push = h.kind == kind::PUSH_PROMISE;
        let mut skip_front = 0usize;
        let mut pad = 0usize;
        if h.has(flag::PADDED) {
            pad = usize::from(payload.first().copied().unwrap_or(0));
            skip_front = 1;
        }
        if push {
            skip_front += 4;
        } else if h.has(flag::PRIORITY) {
            skip_front += 5;
        }
        let frame_len = h.len as usize;
        let fragment = if h.stream == 0 || skip_front + pad > frame_len {
            self.conn.error(H2Error::BadFrame { what: "HEADERS" });
            // The block cannot be read; what it inserted is lost.
            self.hpack.lose_state();
            return;
        } else {
            // With `cut`, the payload holds only the start; the block is
            // too large anyway and only the flag matters.
            let end = (frame_len - pad).min(payload.len());
            payload.get(skip_front..end).unwrap_or_default()
        };
        *self.block = Some(PendingBlock {
            stream: h.stream,
            end_stream: !push && h.has(flag::END_STREAM),
            push,
            buf: fragment.to_vec(),
            frames: 1,
            too_large: cut,
            ts_start,
        });
        if h.has(flag::END_HEADERS) {
            self.complete_block();
        }
    }

    fn on_continuation(&mut self, h: FrameHeader, payload: &[u8], cut: bool) {
        let limit = self.limits.max_header_bytes;
        let Some(b) = self.block.as_mut().filter(|b| b.stream == h.stream) else {
            self.conn.error(H2Error::BadContinuation);
            self.drop_block();
            self.hpack.lose_state();
            return;
        };
        b.frames += 1;
        if cut || b.frames > MAX_CONTINUATIONS || b.buf.len() + payload.len() > limit {
            // Stop holding bytes; the frames are still followed to the end.
            b.too_large = true;
            b.buf.fill(0);
            b.buf.clear();
        } else if !b.too_large {
            b.buf.extend_from_slice(payload);
        }
        if h.has(flag::END_HEADERS) {
            self.complete_block();
        }
    }

    fn complete_block(&mut self) {
        let Some(mut b) = self.block.take() else {
            return;
        };
        let limit = self.limits.max_header_bytes;
        let mut decoded = false;
        let block = if b.too_large {
            self.conn.error(H2Error::HeaderBlockTooLarge { limit });
            self.hpack.lose_state();
            None
        } else {
            match self.hpack.decode(&b.buf, limit) {
                Ok(block) => {
                    decoded = true;
                    Some(block)
                }
                Err(source) => {
                    self.conn.error(H2Error::Hpack { source });
                    None
                }
            }
        };
        // The raw block may hold credentials in clear.
        b.buf.fill(0);
        if b.push {
            return;
        }
        let block = block.unwrap_or(Block {
            // Nothing could be read: the whole head is unknown.
            unknown: 1,
            ..Block::default()
        });
        if block.too_large {
            self.conn.error(H2Error::HeaderListTooLarge { limit });
        }
        if decoded && block.unknown > 0 {
            self.conn.error(H2Error::HeadersUnknown);
        }
        let head = Head::from_block(block);
        self.conn
            .on_headers(self.dir, b.stream, head, b.end_stream, b.ts_start, self.ts);
    }
}
