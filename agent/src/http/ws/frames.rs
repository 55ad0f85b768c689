//! One direction of a WebSocket connection: RFC 6455 frames in, messages
//! out, with RFC 7692 permessage-deflate.
//!
//! A frame is a 2-byte head (FIN, RSV1-3, opcode; MASK, a 7-bit length),
//! then a 16- or 64-bit length when the 7 bits say 126 or 127, then the
//! 4-byte masking key when MASK is set (every client-to-server frame), then
//! the payload. A message is one text or binary frame, or a first frame
//! without FIN followed by continuation frames up to one with FIN; control
//! frames (close, ping, pong: at most 125 bytes, never fragmented) may come
//! between the fragments of a message.
//!
//! permessage-deflate sets RSV1 on the first frame of a compressed
//! message; the message's payloads, joined, are a raw DEFLATE stream
//! ending in an empty stored block whose last four bytes (`00 00 ff ff`)
//! the sender removed. With context takeover (the default) one
//! decompressor runs for the whole direction, since a message may refer
//! to the bytes of earlier ones; `*_no_context_takeover` resets it after
//! each message. A decompressor sized for 15 window bits decodes every
//! smaller window, so `*_max_window_bits` needs no action here.
//!
//! Bounded: a frame head is at most 14 bytes, a control payload 125, and
//! a message at most `max_message_bytes` (decoded): past it the message is
//! cut and marked truncated, while the decompressor still runs over the
//! rest so that the next messages keep their context.
//!
//! Which frames can be trusted: a bad head (reserved opcode or RSV bits,
//! a control frame that is long or fragmented, a 64-bit length with its
//! top bit set) means these bytes are not a WebSocket stream we can follow
//! — the direction is given up (`Lost`), counted once. Mistakes that leave
//! the framing intact (wrong masking, RSV1 where it cannot be, a
//! continuation without a start, a new message inside a fragmented one,
//! bad compressed data) cost only the message they touch, counted each.

use flate2::{Decompress, FlushDecompress, Status};

use super::WsError;

/// Opcodes (RFC 6455 §5.2).
const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
/// Largest control frame payload.
const MAX_CONTROL: u64 = 125;
/// What permessage-deflate's sender strips from each message's end.
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// Inflate output is produced in pieces of this size.
const INFLATE_CHUNK: usize = 16 * 1024;

/// A whole (or cut) data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WsMessage {
    pub(crate) text: bool,
    /// Decoded (inflated, unmasked), at most the message cap.
    pub(crate) data: Vec<u8>,
    /// Bytes were cut (cap) or lost (gap).
    pub(crate) truncated: bool,
    /// Kernel timestamps of the first and the last frame.
    pub(crate) t_start: u64,
    pub(crate) t_end: u64,
}

/// What one direction produced.
#[derive(Debug)]
pub(crate) enum FrameEvent {
    Message(WsMessage),
    /// A data message could not be decoded at all (bad compressed data,
    /// or its start was never seen); already counted by an `Error`.
    MessageLost {
        t: u64,
    },
    /// A close frame.
    Close,
    /// The direction cannot be followed any more (already counted).
    Lost,
    Error(WsError),
}

/// permessage-deflate state of one direction.
pub(crate) struct Inflater {
    decompress: Decompress,
    /// `client_no_context_takeover` or `server_no_context_takeover`, for
    /// the side that sends in this direction.
    no_context_takeover: bool,
    /// The window no longer matches the sender's (a gap in compressed
    /// bytes): reset at the next message start.
    stale: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("no_context_takeover", &self.no_context_takeover)
            .field("stale", &self.stale)
            .field("total_in", &self.decompress.total_in())
            .finish_non_exhaustive()
    }
}

impl Inflater {
    pub(crate) fn new(no_context_takeover: bool) -> Self {
        Inflater {
            decompress: Decompress::new(false),
            no_context_takeover,
            stale: false,
        }
    }

    /// Inflates `input` (all of it), appending at most up to `cap` bytes to
    /// `out`; `cut` is set when output was thrown away.
    fn inflate(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        cap: usize,
        cut: &mut bool,
    ) -> Result<(), flate2::DecompressError> {
        let mut buf = [0u8; INFLATE_CHUNK];
        loop {
            let (in0, out0) = (self.decompress.total_in(), self.decompress.total_out());
            let status = self
                .decompress
                .decompress(input, &mut buf, FlushDecompress::Sync)?;
            let used = usize::try_from(self.decompress.total_in() - in0).unwrap_or(input.len());
            let made = usize::try_from(self.decompress.total_out() - out0).unwrap_or(0);
            let room = cap.saturating_sub(out.len());
            if made > room {
                *cut = true;
            }
            out.extend_from_slice(&buf[..made.min(room)]);
            input = input.get(used..).unwrap_or_default();
            if status == Status::StreamEnd {
                // A final block (allowed by RFC 7692 §7.2.3.5): the next
                // message starts a new stream, without the old window.
                self.decompress.reset(false);
                if !input.is_empty() {
                    continue;
                }
                return Ok(());
            }
            if made < buf.len() && input.is_empty() {
                return Ok(());
            }
            if used == 0 && made == 0 {
                // No progress with input left: the stream is stuck.
                return Ok(());
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    /// Payload bytes seen so far (the mask's phase).
    seen: u64,
    remaining: u64,
    /// Payload bytes of this frame were lost.
    gapped: bool,
}

#[derive(Debug)]
enum State {
    /// Assembling a frame head: `have` bytes of `head`.
    Head {
        head: [u8; 14],
        have: usize,
    },
    Payload(Frame),
    /// A close frame was seen: nothing more may follow.
    Closed,
    Lost,
}

/// A data message being assembled.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one message, not states of one machine"
)]
struct Msg {
    text: bool,
    compressed: bool,
    data: Vec<u8>,
    truncated: bool,
    /// The compressed stream of this message was broken (gap, bad data):
    /// the rest of its bytes are skipped.
    broken: bool,
    /// The message is skipped altogether (its start was bad or unseen).
    skip: bool,
    t_start: u64,
    t_end: u64,
}

/// Frames of one direction.
#[derive(Debug)]
pub(crate) struct FrameDecoder {
    /// Frames in this direction come from the client, and must be masked.
    from_client: bool,
    inflater: Option<Inflater>,
    /// Negotiation unknown (picked up mid-way): RSV1 on a message start
    /// turns permessage-deflate on, with context takeover assumed.
    lenient: bool,
    max_message_bytes: usize,
    state: State,
    msg: Option<Msg>,
    control: Vec<u8>,
    scratch: Vec<u8>,
    /// The current message's cap was already counted.
    pub(crate) out: Vec<FrameEvent>,
}

impl FrameDecoder {
    pub(crate) fn new(
        from_client: bool,
        inflater: Option<Inflater>,
        lenient: bool,
        max_message_bytes: usize,
    ) -> Self {
        FrameDecoder {
            from_client,
            inflater,
            lenient,
            max_message_bytes,
            state: State::Head {
                head: [0; 14],
                have: 0,
            },
            msg: None,
            control: Vec::new(),
            scratch: Vec::new(),
            out: Vec::new(),
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        // A decompressor keeps its 32 KiB window for the connection's life.
        let window = if self.inflater.is_some() {
            32 * 1024
        } else {
            0
        };
        self.msg.as_ref().map_or(0, |m| m.data.len())
            + self.control.len()
            + self.scratch.len()
            + window
    }

    /// No message is in progress.
    pub(crate) fn between_messages(&self) -> bool {
        self.msg.is_none()
            && matches!(
                self.state,
                State::Head { have: 0, .. } | State::Closed | State::Lost
            )
    }

    pub(crate) fn is_lost(&self) -> bool {
        matches!(self.state, State::Lost)
    }

    /// Handles `data`, all of it.
    pub(crate) fn push(&mut self, ts: u64, mut data: &[u8]) {
        while !data.is_empty() {
            let used = match self.state {
                State::Head { head, have } => self.step_head(ts, head, have, data),
                State::Payload(f) => self.step_payload(ts, f, data),
                State::Closed => {
                    self.out
                        .push(FrameEvent::Error(WsError::AfterClose { bytes: data.len() }));
                    self.state = State::Lost;
                    data.len()
                }
                State::Lost => data.len(),
            };
            data = data.get(used..).unwrap_or_default();
        }
    }

    fn step_head(&mut self, ts: u64, mut head: [u8; 14], have: usize, data: &[u8]) -> usize {
        // How long the head is, once its first two bytes are known.
        let need = |h: &[u8; 14], have: usize| -> usize {
            if have < 2 {
                return 2;
            }
            let len_bytes = match h[1] & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            2 + len_bytes + if h[1] & 0x80 != 0 { 4 } else { 0 }
        };
        let mut have = have;
        let mut used = 0;
        loop {
            let n = need(&head, have);
            if have >= n {
                break;
            }
            let Some(&b) = data.get(used) else {
                self.state = State::Head { head, have };
                return used;
            };
            head[have] = b;
            have += 1;
            used += 1;
        }
        self.on_head(ts, &head[..have]);
        used
    }

    /// A whole frame head.
    fn on_head(&mut self, ts: u64, h: &[u8]) {
        let fin = h[0] & 0x80 != 0;
        let rsv1 = h[0] & 0x40 != 0;
        let rsv23 = h[0] & 0x30 != 0;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let (len, at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let control = opcode >= 0x8;
        let reason = if rsv23 {
            Some("RSV2/RSV3 set")
        } else if !matches!(
            opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ) {
            Some("reserved opcode")
        } else if control && (!fin || len > MAX_CONTROL) {
            Some("control frame fragmented or longer than 125 bytes")
        } else if len >> 63 != 0 {
            Some("64-bit length with its top bit set")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.lose(ts, WsError::BadFrame { reason });
            return;
        }
        let mask = masked.then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        if masked != self.from_client {
            self.out.push(FrameEvent::Error(WsError::BadMask));
        }
        let frame = Frame {
            fin,
            opcode,
            mask,
            seen: 0,
            remaining: len,
            gapped: false,
        };
        if control {
            if rsv1 {
                self.out.push(FrameEvent::Error(WsError::BadRsv1));
            }
            self.control.clear();
        } else {
            self.start_data(ts, opcode, rsv1);
        }
        if len == 0 {
            self.frame_done(ts, frame);
        } else {
            self.state = State::Payload(frame);
        }
    }

    /// The head of a data frame: starts or continues a message.
    fn start_data(&mut self, ts: u64, opcode: u8, rsv1: bool) {
        if opcode == OP_CONTINUATION {
            if let Some(m) = &mut self.msg {
                m.t_end = ts;
                if rsv1 {
                    self.out.push(FrameEvent::Error(WsError::BadRsv1));
                    m.broken = true;
                    m.truncated = true;
                }
            } else {
                // The message's start was not seen (picked up mid-way, or
                // a gap): its fragments are skipped.
                self.out
                    .push(FrameEvent::Error(WsError::OrphanContinuation));
                self.msg = Some(Msg::skipped(ts));
            }
            return;
        }
        if let Some(old) = self.msg.take() {
            // A new message inside a fragmented one: the old one is cut.
            self.out.push(FrameEvent::Error(WsError::UnfinishedMessage));
            self.end_message(old, false);
        }
        if rsv1 && self.inflater.is_none() && self.lenient {
            self.inflater = Some(Inflater::new(false));
        }
        let mut msg = Msg {
            text: opcode == OP_TEXT,
            compressed: rsv1,
            data: Vec::new(),
            truncated: false,
            broken: false,
            skip: false,
            t_start: ts,
            t_end: ts,
        };
        if rsv1 && self.inflater.is_none() {
            self.out.push(FrameEvent::Error(WsError::BadRsv1));
            msg.skip = true;
        }
        if let Some(inf) = self.inflater.as_mut().filter(|_| rsv1) {
            if std::mem::take(&mut inf.stale) {
                inf.decompress.reset(false);
            }
        }
        self.msg = Some(msg);
    }

    fn step_payload(&mut self, ts: u64, mut f: Frame, data: &[u8]) -> usize {
        let take = usize::try_from(f.remaining).map_or(data.len(), |r| r.min(data.len()));
        let mut chunk = std::mem::take(&mut self.scratch);
        chunk.clear();
        chunk.extend_from_slice(&data[..take]);
        if let Some(mask) = f.mask {
            // The key's phase follows the payload offset; only its low two
            // bits matter.
            let phase = usize::try_from(f.seen % 4).unwrap_or(0);
            for (i, b) in chunk.iter_mut().enumerate() {
                *b ^= mask[(phase + i) % 4];
            }
        }
        f.seen += take as u64;
        f.remaining -= take as u64;
        if f.opcode >= 0x8 {
            self.control.extend_from_slice(&chunk);
        } else {
            self.msg_bytes(&chunk);
        }
        self.scratch = chunk;
        if self.scratch.capacity() > INFLATE_CHUNK * 4 {
            self.scratch = Vec::new();
        }
        if f.remaining == 0 {
            self.frame_done(ts, f);
        } else {
            self.state = State::Payload(f);
        }
        take
    }

    /// Payload bytes of the current data message.
    fn msg_bytes(&mut self, bytes: &[u8]) {
        let cap = self.max_message_bytes;
        let Some(m) = self.msg.as_mut() else { return };
        if m.skip || m.broken {
            return;
        }
        let was_cut = m.truncated;
        let mut cut = false;
        if m.compressed {
            let Some(inf) = self.inflater.as_mut() else {
                return;
            };
            if let Err(e) = inf.inflate(bytes, &mut m.data, cap, &mut cut) {
                self.out.push(FrameEvent::Error(WsError::Inflate {
                    reason: e.to_string(),
                }));
                m.broken = true;
                inf.stale = true;
            }
        } else {
            let room = cap.saturating_sub(m.data.len());
            cut = bytes.len() > room;
            m.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        if cut {
            m.truncated = true;
            if !was_cut {
                self.out
                    .push(FrameEvent::Error(WsError::MessageTooLarge { limit: cap }));
            }
        }
    }

    fn frame_done(&mut self, ts: u64, f: Frame) {
        self.state = State::Head {
            head: [0; 14],
            have: 0,
        };
        match f.opcode {
            OP_CLOSE => {
                self.control.clear();
                if let Some(m) = self.msg.take() {
                    self.out.push(FrameEvent::Error(WsError::UnfinishedMessage));
                    self.end_message(m, false);
                }
                self.out.push(FrameEvent::Close);
                self.state = State::Closed;
            }
            OP_PING | OP_PONG => self.control.clear(),
            _ => {
                if let Some(m) = self.msg.as_mut() {
                    m.t_end = ts;
                    if f.gapped {
                        m.truncated = true;
                    }
                }
                if f.fin {
                    if let Some(m) = self.msg.take() {
                        self.end_message(m, true);
                    }
                }
            }
        }
    }

    /// A message ends: whole when `complete` (its final frame seen).
    fn end_message(&mut self, mut m: Msg, complete: bool) {
        if m.compressed && !m.skip {
            if let Some(inf) = self.inflater.as_mut() {
                if complete && !m.broken {
                    let mut cut = false;
                    let cap = self.max_message_bytes;
                    if let Err(e) = inf.inflate(&DEFLATE_TAIL, &mut m.data, cap, &mut cut) {
                        self.out.push(FrameEvent::Error(WsError::Inflate {
                            reason: e.to_string(),
                        }));
                        m.broken = true;
                        inf.stale = true;
                    }
                    m.truncated |= cut;
                } else {
                    // The sender's window went on without us.
                    inf.stale = true;
                }
                if inf.no_context_takeover {
                    inf.decompress.reset(false);
                    inf.stale = false;
                }
            }
        }
        if m.skip || (m.broken && m.data.is_empty()) {
            self.out.push(FrameEvent::MessageLost { t: m.t_end });
            return;
        }
        // RFC 6455 §8.1: text is UTF-8; a cut may split a character,
        // anything else is a bad message.
        if m.text && !m.truncated && !m.broken && std::str::from_utf8(&m.data).is_err() {
            self.out.push(FrameEvent::Error(WsError::BadUtf8));
        }
        self.out.push(FrameEvent::Message(WsMessage {
            text: m.text,
            data: m.data,
            truncated: m.truncated || m.broken || !complete,
            t_start: m.t_start,
            t_end: m.t_end,
        }));
    }

    /// Gives the direction up, counted.
    fn lose(&mut self, _ts: u64, e: WsError) {
        self.out.push(FrameEvent::Error(e));
        if let Some(m) = self.msg.take() {
            self.end_message(m, false);
        }
        self.state = State::Lost;
        self.out.push(FrameEvent::Lost);
    }

    /// `len` bytes are missing. Inside a payload of known length we keep
    /// our place (the message is cut); elsewhere the next frame's start is
    /// unknown and the direction is given up.
    pub(crate) fn gap(&mut self, ts: u64, len: u64) {
        match self.state {
            State::Head { have: 0, .. } if len == 0 => {}
            State::Payload(mut f) if len <= f.remaining => {
                f.remaining -= len;
                f.seen += len;
                f.gapped = true;
                if f.opcode < 0x8 {
                    if let Some(m) = self.msg.as_mut() {
                        m.truncated = true;
                        if m.compressed {
                            m.broken = true;
                        }
                    }
                }
                if f.remaining == 0 {
                    self.frame_done(ts, f);
                } else {
                    self.state = State::Payload(f);
                }
            }
            State::Closed | State::Lost => {}
            _ => self.lose(ts, WsError::LostSync),
        }
    }

    /// The connection ended: a message in progress is emitted cut.
    pub(crate) fn finish(&mut self) {
        if let Some(m) = self.msg.take() {
            self.end_message(m, false);
        }
        self.control.clear();
        self.scratch = Vec::new();
    }
}

impl Msg {
    fn skipped(ts: u64) -> Msg {
        Msg {
            text: false,
            compressed: false,
            data: Vec::new(),
            truncated: true,
            broken: false,
            skip: true,
            t_start: ts,
            t_end: ts,
        }
    }
}
