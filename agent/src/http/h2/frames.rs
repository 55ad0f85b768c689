//! HTTP/2 framing (RFC 9113 §4): one direction's bytes in, frame events
//! out, without reading ahead or holding more than one bounded frame.
//!
//! DATA payloads are passed on as they arrive (they can be large and are
//! decoded as a stream anyway); other frames are collected up to a per-type
//! bound and handed over whole, the rest of an oversized payload skipped.
//!
//! Sync: a direction seen from its first byte is in sync from the start.
//! One picked up mid-way, or that lost bytes across a frame boundary, scans
//! for a frame boundary: an offset where a plausible frame header is
//! followed, right after its payload, by another one. Plausible is strict
//! (a known type, the flags and length that type allows, a frame no larger
//! than the default `SETTINGS_MAX_FRAME_SIZE`) so that random bytes rarely
//! pass twice in a row.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;
/// Frames longer than this are not used to find sync (the initial
/// `SETTINGS_MAX_FRAME_SIZE`, which most peers keep).
pub const SYNC_MAX_LEN: u32 = 16_384;
/// Most bytes scanned without finding sync before a direction is judged
/// not to carry HTTP/2.
pub const SYNC_GIVE_UP: u64 = 1 << 20;

pub mod kind {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const PRIORITY: u8 = 2;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const PUSH_PROMISE: u8 = 5;
    pub const PING: u8 = 6;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// Without the reserved bit.
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        FrameHeader {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// Whether 9 bytes look like a frame header a real peer would send.
pub fn plausible(b: &[u8; HEADER_LEN]) -> bool {
    use kind::{
        CONTINUATION, DATA, GOAWAY, HEADERS, PING, PRIORITY, PUSH_PROMISE, RST_STREAM, SETTINGS,
        WINDOW_UPDATE,
    };
    if b[5] & 0x80 != 0 {
        return false;
    }
    let h = FrameHeader::parse(b);
    if h.len > SYNC_MAX_LEN {
        return false;
    }
    let on_stream = h.stream != 0;
    let (allowed_flags, ok) = match h.kind {
        DATA => (0x09, on_stream),
        HEADERS => (0x2d, on_stream),
        PRIORITY => (0, on_stream && h.len == 5),
        RST_STREAM => (0, on_stream && h.len == 4),
        SETTINGS => (
            0x01,
            !on_stream && h.len.is_multiple_of(6) && (h.flags == 0 || h.len == 0),
        ),
        PUSH_PROMISE => (0x0c, on_stream && h.len >= 4),
        PING => (0x01, !on_stream && h.len == 8),
        GOAWAY => (0, !on_stream && h.len >= 8),
        WINDOW_UPDATE => (0, h.len == 4),
        CONTINUATION => (0x04, on_stream),
        _ => (0, false),
    };
    ok && h.flags & !allowed_flags == 0
}

/// What a mid-way byte sequence says about frame sync at its start.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniff {
    /// Two plausible frame headers in a row.
    Frames,
    NeedMore,
    No,
}

/// Whether `buf` starts at a frame boundary.
pub fn sniff(buf: &[u8]) -> Sniff {
    let Some(first) = header_at(buf, 0) else {
        return Sniff::NeedMore;
    };
    if !plausible(&first) {
        return Sniff::No;
    }
    let next = HEADER_LEN + FrameHeader::parse(&first).len as usize;
    match header_at(buf, next) {
        None => Sniff::NeedMore,
        Some(h) if plausible(&h) => Sniff::Frames,
        Some(_) => Sniff::No,
    }
}

fn header_at(buf: &[u8], at: usize) -> Option<[u8; HEADER_LEN]> {
    buf.get(at..at + HEADER_LEN)?.try_into().ok()
}

/// What the reader found.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// A piece of a DATA frame's data (padding removed).
    Data { stream: u32, data: &'a [u8] },
    /// A DATA frame ended.
    DataEnd { stream: u32, end_stream: bool },
    /// A whole non-DATA frame; `payload` holds at most the bound for its
    /// type, `cut` says the rest was skipped. `ts_start` stamps its first
    /// byte.
    Frame {
        header: FrameHeader,
        payload: &'a [u8],
        cut: bool,
        ts_start: u64,
    },
    /// The client preface was not what it should be; the reader scans.
    BadPreface,
    /// A DATA frame whose padding is longer than the frame.
    BadPadding,
    /// Sync found after scanning past `skipped` bytes.
    Synced { skipped: u64 },
    /// Bytes of a DATA frame's data were lost.
    DataGap { stream: u32 },
    /// Bytes were lost across frames: the reader scans for sync, and
    /// header blocks may have been lost with them.
    Lost,
    /// Scanned too long without finding a frame boundary.
    GaveUp,
}

#[derive(Debug)]
enum State {
    Preface {
        matched: usize,
    },
    /// Looking for a frame boundary; `buf` holds the candidate onwards.
    Scan,
    Header {
        ts_start: Option<u64>,
    },
    Data(DataState),
    Payload {
        header: FrameHeader,
        remaining: u32,
        keep: usize,
        ts_start: u64,
    },
    /// Gave up: bytes are dropped.
    Dead,
}

#[derive(Debug, Clone, Copy)]
struct DataState {
    stream: u32,
    end_stream: bool,
    /// Waiting for the pad-length byte.
    pad_pending: bool,
    data_left: u32,
    pad_left: u32,
}

/// One direction's frame reader.
#[derive(Debug)]
pub struct Reader {
    state: State,
    /// Header bytes, a bounded payload, or the scan window.
    buf: Vec<u8>,
    /// Where the current scan candidate starts in `buf`.
    scan_at: usize,
    scanned: u64,
    header_limit: usize,
}

impl Reader {
    /// `preface`: the direction starts with the client preface. `synced`:
    /// its first byte starts a frame (else it scans).
    pub fn new(preface: bool, synced: bool, header_limit: usize) -> Self {
        let state = if preface {
            State::Preface { matched: 0 }
        } else if synced {
            State::Header { ts_start: None }
        } else {
            State::Scan
        };
        Reader {
            state,
            buf: Vec::new(),
            scan_at: 0,
            scanned: 0,
            header_limit,
        }
    }

    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Most payload bytes kept for a frame of this type.
    fn keep_for(&self, kind: u8) -> usize {
        match kind {
            kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE => self.header_limit,
            // SETTINGS holds a handful of 6-byte entries; the rest is noise.
            kind::SETTINGS => 6 * 16,
            kind::PRIORITY | kind::RST_STREAM | kind::PING | kind::GOAWAY => 8,
            kind::WINDOW_UPDATE => 4,
            // Unknown types are ignored (RFC 9113 §5.5).
            _ => 0,
        }
    }

    /// Handles all of `data`.
    pub fn push(&mut self, ts: u64, data: &[u8], on: &mut impl FnMut(Event<'_>)) {
        let mut rest = data;
        loop {
            let consumed = self.step(ts, rest, on);
            match consumed {
                Some(n) => rest = &rest[n..],
                None => return,
            }
        }
    }

    /// One step; `None` when it needs more bytes.
    fn step(&mut self, ts: u64, rest: &[u8], on: &mut impl FnMut(Event<'_>)) -> Option<usize> {
        match &mut self.state {
            State::Dead => None,
            State::Preface { matched } => {
                if rest.is_empty() {
                    return None;
                }
                let want = &PREFACE[*matched..];
                let n = want.len().min(rest.len());
                if rest[..n] != want[..n] {
                    on(Event::BadPreface);
                    self.state = State::Scan;
                    return Some(0);
                }
                *matched += n;
                if *matched == PREFACE.len() {
                    self.state = State::Header { ts_start: None };
                }
                Some(n)
            }
            State::Scan => self.scan(ts, rest, on),
            State::Header { ts_start } => {
                if rest.is_empty() {
                    return None;
                }
                let ts_start = *ts_start.get_or_insert(ts);
                let n = (HEADER_LEN - self.buf.len()).min(rest.len());
                self.buf.extend_from_slice(&rest[..n]);
                let Ok(bytes) = <[u8; HEADER_LEN]>::try_from(self.buf.as_slice()) else {
                    return Some(n);
                };
                self.buf.clear();
                self.start_frame(FrameHeader::parse(&bytes), ts, ts_start, on);
                Some(n)
            }
            State::Data(d) => {
                let d = *d;
                self.step_data(d, rest, on)
            }
            State::Payload {
                header,
                remaining,
                keep,
                ts_start,
            } => {
                let (header, ts_start) = (*header, *ts_start);
                if *remaining > 0 && rest.is_empty() {
                    return None;
                }
                let take = clamp(*remaining, rest.len());
                let room = keep.saturating_sub(self.buf.len()).min(take);
                self.buf.extend_from_slice(&rest[..room]);
                sub(remaining, take);
                if *remaining > 0 {
                    return Some(take);
                }
                let cut = self.buf.len() < header.len as usize;
                on(Event::Frame {
                    header,
                    payload: &self.buf,
                    cut,
                    ts_start,
                });
                // Header blocks may hold credentials in clear.
                self.buf.fill(0);
                self.buf.clear();
                self.state = State::Header { ts_start: None };
                Some(take)
            }
        }
    }

    /// Inside a DATA frame: the pad-length byte, data, then padding.
    fn step_data(
        &mut self,
        mut d: DataState,
        rest: &[u8],
        on: &mut impl FnMut(Event<'_>),
    ) -> Option<usize> {
        if rest.is_empty() {
            return None;
        }
        let mut used = 0;
        if d.pad_pending {
            d.pad_pending = false;
            d.pad_left = u32::from(rest[0]);
            used = 1;
            if d.pad_left > d.data_left {
                on(Event::BadPadding);
                // Framing is still known: the rest is skipped.
                d.pad_left = d.data_left;
                d.data_left = 0;
            } else {
                d.data_left -= d.pad_left;
            }
        }
        let avail = &rest[used..];
        let take = clamp(d.data_left, avail.len());
        if take > 0 {
            on(Event::Data {
                stream: d.stream,
                data: &avail[..take],
            });
        }
        sub(&mut d.data_left, take);
        let skip = clamp(d.pad_left, avail.len() - take);
        sub(&mut d.pad_left, skip);
        used += take + skip;
        if d.data_left == 0 && d.pad_left == 0 && !d.pad_pending {
            on(Event::DataEnd {
                stream: d.stream,
                end_stream: d.end_stream,
            });
            self.state = State::Header { ts_start: None };
        } else {
            self.state = State::Data(d);
        }
        Some(used)
    }

    fn start_frame(
        &mut self,
        header: FrameHeader,
        ts: u64,
        ts_start: u64,
        on: &mut impl FnMut(Event<'_>),
    ) {
        if header.kind == kind::DATA {
            let padded = header.has(flag::PADDED);
            let d = DataState {
                stream: header.stream,
                end_stream: header.has(flag::END_STREAM),
                pad_pending: padded && header.len > 0,
                data_left: header.len.saturating_sub(u32::from(padded)),
                pad_left: 0,
            };
            if padded && header.len == 0 {
                on(Event::BadPadding);
            }
            if header.len == 0 {
                on(Event::DataEnd {
                    stream: d.stream,
                    end_stream: d.end_stream,
                });
                self.state = State::Header { ts_start: None };
            } else {
                self.state = State::Data(d);
            }
            return;
        }
        self.state = State::Payload {
            header,
            remaining: header.len,
            keep: self.keep_for(header.kind),
            ts_start,
        };
        if header.len == 0 {
            // Zero-length frames end here, without waiting for a byte.
            self.step(ts, &[], on);
        }
    }

    /// Scans `buf[scan_at..]` + `rest` for a frame boundary. Bytes are
    /// appended one candidate window at a time, so nothing past the
    /// boundary is taken in; rejected candidates only move `scan_at`.
    fn scan(&mut self, ts: u64, rest: &[u8], on: &mut impl FnMut(Event<'_>)) -> Option<usize> {
        let window = &self.buf[self.scan_at..];
        let need = match sniff(window) {
            Sniff::Frames => {
                let window = self.buf.split_off(self.scan_at);
                self.buf.clear();
                self.scan_at = 0;
                on(Event::Synced {
                    skipped: std::mem::take(&mut self.scanned),
                });
                self.state = State::Header { ts_start: None };
                // The window holds the first frames; they are stamped with
                // the record that confirmed sync, the best we know.
                self.push(ts, &window, on);
                return Some(0);
            }
            Sniff::No => {
                self.scan_at += 1;
                self.scanned += 1;
                if self.scanned > SYNC_GIVE_UP {
                    self.buf.clear();
                    self.scan_at = 0;
                    self.state = State::Dead;
                    on(Event::GaveUp);
                    return None;
                }
                // Keep the copy cost linear: drop the rejected prefix once
                // it is most of the buffer.
                if self.scan_at > self.buf.len() / 2 {
                    self.buf.drain(..self.scan_at);
                    self.scan_at = 0;
                }
                return Some(0);
            }
            Sniff::NeedMore => match header_at(window, 0) {
                Some(h) => 2 * HEADER_LEN + FrameHeader::parse(&h).len as usize,
                None => HEADER_LEN,
            },
        };
        if rest.is_empty() {
            return None;
        }
        let have = self.buf.len() - self.scan_at;
        let n = need.saturating_sub(have).min(rest.len()).max(1);
        self.buf.extend_from_slice(&rest[..n]);
        Some(n)
    }

    /// `len` bytes of this direction are missing.
    pub fn gap(&mut self, len: u64, on: &mut impl FnMut(Event<'_>)) {
        if len == 0 {
            return;
        }
        match &mut self.state {
            State::Dead => {}
            State::Scan => {
                // Bytes before the gap do not continue into those after.
                self.buf.clear();
                self.scan_at = 0;
                self.scanned = self.scanned.saturating_add(len);
            }
            State::Data(d) if !d.pad_pending && u64::from(d.data_left + d.pad_left) >= len => {
                let mut d = *d;
                let lost_data = clamp(d.data_left, usize::try_from(len).unwrap_or(usize::MAX));
                sub(&mut d.data_left, lost_data);
                let lost_pad = usize::try_from(len).unwrap_or(usize::MAX) - lost_data;
                sub(&mut d.pad_left, lost_pad);
                if lost_data > 0 {
                    on(Event::DataGap { stream: d.stream });
                }
                if d.data_left == 0 && d.pad_left == 0 {
                    on(Event::DataEnd {
                        stream: d.stream,
                        end_stream: d.end_stream,
                    });
                    self.state = State::Header { ts_start: None };
                } else {
                    self.state = State::Data(d);
                }
            }
            State::Header { .. }
            | State::Preface { .. }
            | State::Data(_)
            | State::Payload { .. } => {
                if let State::Data(d) = &self.state {
                    on(Event::DataGap { stream: d.stream });
                }
                self.buf.fill(0);
                self.buf.clear();
                self.scan_at = 0;
                self.state = State::Scan;
                on(Event::Lost);
            }
        }
    }
}

/// `n -= by`, where `by` never exceeds `n` (it was clamped to it).
fn sub(n: &mut u32, by: usize) {
    *n = n.saturating_sub(u32::try_from(by).unwrap_or(u32::MAX));
}

fn clamp(n: u32, avail: usize) -> usize {
    usize::try_from(n).map_or(avail, |n| n.min(avail))
}
