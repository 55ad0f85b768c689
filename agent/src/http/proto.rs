//! Which protocol a connection speaks, from its first bytes.
//!
//! ALPN is negotiated inside the TLS handshake, which the uprobes do not
//! see, so the plaintext decides:
//! - the HTTP/2 client preface (`PRI * HTTP/2.0…`): HTTP/2 from the start,
//!   the direction that sent it is the client's;
//! - a letter or a blank line: HTTP/1.x, as before (its parser judges the
//!   rest, including "not HTTP at all");
//! - otherwise two plausible HTTP/2 frame headers in a row: HTTP/2 picked
//!   up mid-way (the capture started on a connection already open);
//! - otherwise WebSocket frames (one frame filling the first write, or two
//!   plausible frame heads in a row; [`ws::sniff`]): a WebSocket picked up
//!   mid-way, its upgrade unseen (the daemon started, or an idle
//!   connection was flushed, while the socket stayed open); masking tells
//!   which side is the client;
//! - anything else goes to the HTTP/1.x parser, which reports it.
//!
//! Until one direction's first bytes decide, everything fed is kept (at
//! most [`MAX_SNIFF`] bytes) and replayed into the chosen parser, so the
//! choice never depends on how the bytes were split.

use super::h2::{self, H2Parser, Sniff};
use super::{ws, Direction, Http1Parser, HttpOutput, Limits};

/// Most bytes held while undecided: two frame headers and the largest
/// frame the sniffer accepts, per direction, with room to spare. Past it
/// the connection goes to the HTTP/1.x parser.
const MAX_SNIFF: usize = 64 * 1024;

#[derive(Debug)]
enum Op {
    Feed(Direction, u64, Vec<u8>),
    Gap(Direction, u64),
}

#[derive(Debug)]
enum Proto {
    Undecided {
        log: Vec<Op>,
        /// Each direction's contiguous bytes since its start or last gap.
        first: [Vec<u8>; 2],
        held: usize,
    },
    H1(Box<Http1Parser>),
    H2(Box<H2Parser>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    H1,
    H2Preface,
    H2MidWay,
    /// WebSocket frames; `masked`: the direction sniffed is the client's.
    WsMidWay {
        masked: bool,
    },
}

fn choose(first: &[u8]) -> Option<Choice> {
    let &b0 = first.first()?;
    let n = first.len().min(h2::PREFACE.len());
    if first[..n] == h2::PREFACE[..n] {
        return (n == h2::PREFACE.len()).then_some(Choice::H2Preface);
    }
    if b0.is_ascii_alphabetic() || b0 == b'\r' || b0 == b'\n' {
        return Some(Choice::H1);
    }
    match h2::sniff(first) {
        Sniff::Frames => return Some(Choice::H2MidWay),
        Sniff::NeedMore => return None,
        Sniff::No => {}
    }
    match ws::sniff(first, MAX_WS_SNIFF_FRAME) {
        ws::Sniff::Frames { masked } => Some(Choice::WsMidWay { masked }),
        ws::Sniff::NeedMore => None,
        ws::Sniff::No => Some(Choice::H1),
    }
}

/// Largest frame the WebSocket sniffer accepts: a Responses API event or
/// a `response.create` with a long history, with room to spare.
const MAX_WS_SNIFF_FRAME: u64 = 64 * 1024 * 1024;

/// HTTP parser for one connection, both directions, either version.
#[derive(Debug)]
pub struct HttpParser {
    limits: Limits,
    proto: Proto,
}

impl HttpParser {
    pub fn new(limits: Limits) -> Self {
        HttpParser {
            limits,
            proto: Proto::Undecided {
                log: Vec::new(),
                first: [Vec::new(), Vec::new()],
                held: 0,
            },
        }
    }

    /// Feeds plaintext bytes seen in `dir`, from a record stamped `ts_ns`.
    /// Returns what completed.
    pub fn feed(&mut self, dir: Direction, ts_ns: u64, data: &[u8]) -> Vec<HttpOutput> {
        match &mut self.proto {
            Proto::H1(p) => p.feed(dir, ts_ns, data),
            Proto::H2(p) => p.feed(dir, ts_ns, data),
            Proto::Undecided { log, first, held } => {
                if data.is_empty() {
                    return Vec::new();
                }
                log.push(Op::Feed(dir, ts_ns, data.to_vec()));
                *held += data.len();
                let f = &mut first[dir.index()];
                f.extend_from_slice(data);
                let choice = match choose(f) {
                    Some(c) => Some((c, dir)),
                    None if *held > MAX_SNIFF => Some((Choice::H1, dir)),
                    None => None,
                };
                match choice {
                    Some((c, d)) => self.decide(c, d),
                    None => Vec::new(),
                }
            }
        }
    }

    /// `len` bytes are missing in `dir`; see [`Http1Parser::gap`].
    pub fn gap(&mut self, dir: Direction, len: u64) -> Vec<HttpOutput> {
        match &mut self.proto {
            Proto::H1(p) => p.gap(dir, len),
            Proto::H2(p) => p.gap(dir, len),
            Proto::Undecided { log, first, .. } => {
                log.push(Op::Gap(dir, len));
                // What follows the gap does not continue what came before.
                first[dir.index()].clear();
                Vec::new()
            }
        }
    }

    /// The connection ended; see [`Http1Parser::finish`]. Still undecided,
    /// the bytes go to the HTTP/1.x parser, which judges them.
    pub fn finish(&mut self, ts_ns: u64) -> Vec<HttpOutput> {
        let mut out = Vec::new();
        if matches!(self.proto, Proto::Undecided { .. }) {
            out = self.decide(Choice::H1, Direction::Outbound);
        }
        out.extend(match &mut self.proto {
            Proto::H1(p) => p.finish(ts_ns),
            Proto::H2(p) => p.finish(ts_ns),
            Proto::Undecided { .. } => Vec::new(),
        });
        out
    }

    /// False once the connection is known not to carry HTTP.
    pub fn is_http(&self) -> bool {
        match &self.proto {
            Proto::H1(p) => p.is_http(),
            Proto::H2(p) => p.is_http(),
            Proto::Undecided { .. } => true,
        }
    }

    /// An upgraded WebSocket that is open with no response in progress.
    /// Idle expiry leaves it alone: finishing it would lose nothing now, but
    /// the next turn would meet a fresh parser mid-way, without the
    /// permessage-deflate context its messages refer to. It still ends on
    /// close, on its process's exit, and under the table's and the memory
    /// budget's eviction.
    pub fn is_idle_websocket(&self) -> bool {
        match &self.proto {
            Proto::H1(p) => p.is_idle_websocket(),
            _ => false,
        }
    }

    /// Whether the connection became (or was found to be) a WebSocket.
    pub fn is_websocket(&self) -> bool {
        match &self.proto {
            Proto::H1(p) => p.is_websocket(),
            _ => false,
        }
    }

    /// Whether the connection was found to speak HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self.proto, Proto::H2(_))
    }

    /// Bytes held; bounded by the limits.
    pub fn buffered_bytes(&self) -> usize {
        match &self.proto {
            Proto::H1(p) => p.buffered_bytes(),
            Proto::H2(p) => p.buffered_bytes(),
            // The log and the per-direction copies.
            Proto::Undecided { held, first, .. } => *held + first[0].len() + first[1].len(),
        }
    }

    /// Switches to the chosen parser and replays what was held.
    fn decide(&mut self, choice: Choice, dir: Direction) -> Vec<HttpOutput> {
        let next = match choice {
            Choice::H1 => Proto::H1(Box::new(Http1Parser::new(self.limits))),
            Choice::H2Preface => Proto::H2(Box::new(H2Parser::new(self.limits, Some(dir)))),
            Choice::H2MidWay => Proto::H2(Box::new(H2Parser::new(self.limits, None))),
            Choice::WsMidWay { masked } => {
                let client_dir = if masked { dir } else { dir.other() };
                Proto::H1(Box::new(Http1Parser::websocket_mid_stream(
                    self.limits,
                    client_dir,
                )))
            }
        };
        let Proto::Undecided { log, .. } = std::mem::replace(&mut self.proto, next) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for op in log {
            out.extend(match op {
                Op::Feed(d, ts, bytes) => self.feed(d, ts, &bytes),
                Op::Gap(d, len) => self.gap(d, len),
            });
        }
        out
    }
}
