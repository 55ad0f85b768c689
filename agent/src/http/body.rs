//! Message bodies: Content-Encoding decoding, bounded.
//!
//! Bodies are decoded as they arrive rather than at the end so that no raw
//! copy is kept and a compressed body costs only its decoded size. Both the
//! raw bytes accepted and the decoded bytes stored are bounded by the body
//! cap: the output sink refuses writes past the cap, which stops the
//! decompressor inside the very call that would have grown past it, so a
//! zip bomb costs at most the cap in memory and its decoding CPU time.
//! Once decoding stops (cap, gap, corrupt data) later bytes are only counted.

use std::io::{self, Write};

use super::HttpError;

/// Largest zstd window we let a body ask for (2^23 = 8 MiB): the decoder
/// allocates the window up front, and an attacker picks its size.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// Brotli's internal output buffer.
const BROTLI_BUFFER: usize = 4096;

/// The decoded bytes, refusing to grow past `cap`.
#[derive(Debug, Default)]
struct Capped {
    buf: Vec<u8>,
    cap: usize,
    /// A write was refused or cut because the cap was reached.
    full: bool,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Capped {
            buf: Vec::new(),
            cap,
            full: false,
        }
    }

    /// Takes the output and refuses any later write (decoders may still
    /// flush when dropped).
    fn take(&mut self) -> Vec<u8> {
        self.cap = 0;
        std::mem::take(&mut self.buf)
    }
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let room = self.cap.saturating_sub(self.buf.len());
        if room == 0 {
            self.full = true;
            // An error, not Ok(0): it makes the decoder give up at once.
            return Err(io::Error::other("body cap reached"));
        }
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if n < data.len() {
            self.full = true;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A supported content coding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    Identity,
    Gzip,
    /// `deflate`: zlib-wrapped per the RFC, raw in practice from some
    /// servers; told apart by the first two bytes.
    Deflate,
    Brotli,
    Zstd,
}

/// The coding named by Content-Encoding tokens, or the unsupported name.
pub(crate) fn coding_of(tokens: &[String]) -> Result<Coding, String> {
    let real: Vec<&String> = tokens.iter().filter(|t| *t != "identity").collect();
    match real.as_slice() {
        [] => Ok(Coding::Identity),
        [one] => match one.as_str() {
            "gzip" | "x-gzip" => Ok(Coding::Gzip),
            "deflate" => Ok(Coding::Deflate),
            "br" => Ok(Coding::Brotli),
            "zstd" => Ok(Coding::Zstd),
            other => Err(other.to_owned()),
        },
        // Stacked codings are legal but nobody sends them to an LLM API.
        many => Err(many
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")),
    }
}

enum Decoder {
    Identity(Capped),
    /// Deflate before its first two bytes arrived.
    SniffDeflate {
        first: Vec<u8>,
        out: Capped,
    },
    Gzip(Box<flate2::write::GzDecoder<Capped>>),
    Zlib(Box<flate2::write::ZlibDecoder<Capped>>),
    RawDeflate(Box<flate2::write::DeflateDecoder<Capped>>),
    Brotli(Box<brotli::DecompressorWriter<Capped>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Capped>>),
    /// Decoding stopped; what was decoded so far.
    Stopped(Vec<u8>),
}

impl Decoder {
    fn out(&mut self) -> Option<&mut Capped> {
        Some(match self {
            Decoder::Identity(c) | Decoder::SniffDeflate { out: c, .. } => c,
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Zlib(d) => d.get_mut(),
            Decoder::RawDeflate(d) => d.get_mut(),
            Decoder::Brotli(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut(),
            Decoder::Stopped(_) => return None,
        })
    }

    fn len(&self) -> usize {
        match self {
            Decoder::Identity(c) | Decoder::SniffDeflate { out: c, .. } => c.buf.len(),
            Decoder::Gzip(d) => d.get_ref().buf.len(),
            Decoder::Zlib(d) => d.get_ref().buf.len(),
            Decoder::RawDeflate(d) => d.get_ref().buf.len(),
            Decoder::Brotli(d) => d.get_ref().buf.len(),
            Decoder::Zstd(d) => d.get_ref().buf.len(),
            Decoder::Stopped(b) => b.len(),
        }
    }

    /// Stops decoding, keeping the output.
    fn stop(&mut self) {
        let kept = self.out().map(Capped::take);
        if let Some(kept) = kept {
            *self = Decoder::Stopped(kept);
        }
    }
}

/// Feeds a write-style decoder, treating `Ok(0)` as "stream ended, the rest
/// is trailing bytes" rather than looping on it.
fn feed<W: Write>(w: &mut W, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match w.write(data) {
            Ok(0) => return Ok(()),
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One message body being received.
pub(crate) struct BodySink {
    coding: Coding,
    encoding_name: String,
    decoder: Decoder,
    cap: usize,
    raw_len: u64,
    /// Some bytes are missing from `body` (cap, gap, decode failure).
    truncated: bool,
    /// Nothing is kept (an unpaired response's body is only framed).
    discard: bool,
    /// A gap broke the coded stream: its end is not checked.
    gapped: bool,
}

impl std::fmt::Debug for BodySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodySink")
            .field("coding", &self.coding)
            .field("len", &self.decoder.len())
            .field("raw_len", &self.raw_len)
            .field("truncated", &self.truncated)
            .finish_non_exhaustive()
    }
}

impl BodySink {
    /// A sink for a body with the given coding. `encoding_name` is the
    /// Content-Encoding as sent, for error reports.
    pub(crate) fn new(coding: Coding, encoding_name: String, cap: usize) -> Self {
        let out = Capped::new(cap);
        let decoder = match coding {
            Coding::Identity => Decoder::Identity(out),
            Coding::Deflate => Decoder::SniffDeflate {
                first: Vec::with_capacity(2),
                out,
            },
            Coding::Gzip => Decoder::Gzip(Box::new(flate2::write::GzDecoder::new(out))),
            Coding::Brotli => Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(
                out,
                BROTLI_BUFFER,
            ))),
            Coding::Zstd => match zstd::stream::write::Decoder::new(out) {
                Ok(mut d) => {
                    // Refusing a bigger window makes such a body fail to
                    // decode (reported) instead of allocating 2^31 bytes.
                    if d.window_log_max(ZSTD_WINDOW_LOG_MAX).is_ok() {
                        Decoder::Zstd(Box::new(d))
                    } else {
                        Decoder::Stopped(Vec::new())
                    }
                }
                Err(_) => Decoder::Stopped(Vec::new()),
            },
        };
        BodySink {
            coding,
            encoding_name,
            decoder,
            cap,
            raw_len: 0,
            truncated: false,
            discard: false,
            gapped: false,
        }
    }

    /// A sink that keeps nothing.
    pub(crate) fn discard() -> Self {
        let mut s = BodySink::new(Coding::Identity, String::new(), 0);
        s.discard = true;
        s.decoder = Decoder::Stopped(Vec::new());
        s
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.decoder.len()
    }

    /// Accepts raw body bytes. Returns an error to report, at most once per
    /// cause per body.
    pub(crate) fn push(&mut self, data: &[u8]) -> Option<HttpError> {
        if data.is_empty() || self.discard {
            return None;
        }
        if let Decoder::SniffDeflate { first, out } = &mut self.decoder {
            let take = (2 - first.len()).min(data.len());
            first.extend_from_slice(&data[..take]);
            self.raw_len = self.raw_len.saturating_add(take as u64);
            if first.len() < 2 {
                return None;
            }
            let header = [first[0], first[1]];
            let out = std::mem::take(out);
            self.decoder = if is_zlib_header(header) {
                Decoder::Zlib(Box::new(flate2::write::ZlibDecoder::new(out)))
            } else {
                Decoder::RawDeflate(Box::new(flate2::write::DeflateDecoder::new(out)))
            };
            if let Some(e) = self.decode(&header) {
                return Some(e);
            }
            return self.push(&data[take..]);
        }
        let before = self.raw_len;
        self.raw_len = self.raw_len.saturating_add(data.len() as u64);
        if matches!(self.decoder, Decoder::Stopped(_)) {
            return None;
        }
        // The raw size is bounded too: a body that takes more than the cap
        // to send is cut even if it would decode to less.
        let room = usize::try_from((self.cap as u64).saturating_sub(before)).unwrap_or(usize::MAX);
        if data.len() <= room {
            return self.decode(data);
        }
        if let Some(e) = self.decode(&data[..room]) {
            return Some(e);
        }
        self.decoder.stop();
        self.truncated = true;
        Some(HttpError::BodyTooLarge { limit: self.cap })
    }

    fn decode(&mut self, data: &[u8]) -> Option<HttpError> {
        let result = match &mut self.decoder {
            Decoder::Identity(out) => feed(out, data),
            Decoder::Gzip(d) => feed(d.as_mut(), data),
            Decoder::Zlib(d) => feed(d.as_mut(), data),
            Decoder::RawDeflate(d) => feed(d.as_mut(), data),
            Decoder::Brotli(d) => feed(d.as_mut(), data),
            Decoder::Zstd(d) => feed(d.as_mut(), data),
            Decoder::SniffDeflate { .. } | Decoder::Stopped(_) => Ok(()),
        };
        self.after_write(result)
    }

    fn after_write(&mut self, result: io::Result<()>) -> Option<HttpError> {
        let full = self.decoder.out().is_some_and(|o| o.full);
        if full {
            self.decoder.stop();
            self.truncated = true;
            return Some(HttpError::BodyTooLarge { limit: self.cap });
        }
        match result {
            Ok(()) => None,
            Err(source) => {
                self.decoder.stop();
                self.truncated = true;
                Some(HttpError::Decompress {
                    encoding: self.encoding_name.clone(),
                    source,
                })
            }
        }
    }

    /// Bytes of the body are missing: a coded stream cannot go on.
    pub(crate) fn gap(&mut self) {
        self.truncated = true;
        if self.coding != Coding::Identity {
            self.gapped = true;
            self.decoder.stop();
        }
    }

    /// The body ended. `complete` is false when the message was cut, in
    /// which case an unfinished coded stream is expected, not an error.
    /// Returns the decoded body, whether it is truncated, and an error to
    /// report.
    /// Returns the body, whether it is truncated (bytes cut, lost, or its
    /// framing not finished), whether bytes of it were cut or lost, and a
    /// decoding error.
    pub(crate) fn finish(mut self, complete: bool) -> (Vec<u8>, bool, bool, Option<HttpError>) {
        let mut error = None;
        if self.raw_len > 0 && !self.discard {
            let result = match &mut self.decoder {
                Decoder::Gzip(d) => d.try_finish(),
                Decoder::Zlib(d) => d.try_finish(),
                Decoder::RawDeflate(d) => d.try_finish(),
                Decoder::Brotli(d) => d.close(),
                Decoder::Zstd(d) => d.do_finish(),
                // Fewer than two bytes of deflate: not a stream at all.
                Decoder::SniffDeflate { .. } => Err(io::ErrorKind::UnexpectedEof.into()),
                Decoder::Identity(_) | Decoder::Stopped(_) => Ok(()),
            };
            if let Some(e) = self.after_write(result) {
                // A cut message ends mid-stream by definition; only a
                // complete one with a broken stream is a decoding fault.
                if complete && !self.gapped {
                    error = Some(e);
                }
            }
        }
        self.decoder.stop();
        let body = match std::mem::replace(&mut self.decoder, Decoder::Stopped(Vec::new())) {
            Decoder::Stopped(b) => b,
            _ => Vec::new(),
        };
        (body, self.truncated || !complete, self.truncated, error)
    }
}

/// RFC 1950: CM = 8 (deflate), CINFO ≤ 7, and the header checksum.
fn is_zlib_header([cmf, flg]: [u8; 2]) -> bool {
    cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
}
