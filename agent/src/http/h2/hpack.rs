//! HPACK (RFC 7541) decoding for a passive observer.
//!
//! Each direction of a connection has one [`Decoder`], the mirror of the
//! sending peer's encoder. Written here rather than taken from a crate
//! because an observer needs what a peer does not:
//!
//! - unknown state: a connection first seen mid-way has a dynamic table we
//!   never saw filled. Entries inserted since we started watching are the
//!   newest, so their indices are right; an index past them refers to an
//!   older entry we do not have and decodes as *unknown*, never as a wrong
//!   value. Our entry sizes are lower bounds in that state, so we evict no
//!   later than the peer does: an entry we still hold but the peer evicted
//!   is never referenced, one the peer holds but we evicted reads unknown.
//!   A size update to 0 empties the table: the state is known again.
//! - secrets: a table entry lives as long as the connection, so values of
//!   credential headers are stored already fingerprinted (and cookies
//!   redacted); decoded plaintext is zeroed once converted.
//! - hard bounds: the table holds at most [`MAX_TABLE_SIZE`] whatever the
//!   peer's SETTINGS allow (entries past it read unknown), strings are
//!   bounded by the block they are in, integers by 32 bits.
//!
//! A field whose *name* is unknown is dropped whole, value included: we
//! cannot tell whether it was a credential.

use std::collections::VecDeque;

use super::huffman::{self, HuffmanError};
use crate::redact;

/// Most octets (RFC 7541 §4.1 sizes) a dynamic table may hold here.
pub const MAX_TABLE_SIZE: usize = 64 * 1024;
/// The initial `SETTINGS_HEADER_TABLE_SIZE` (RFC 9113 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// Per-entry overhead in the size accounting (RFC 7541 §4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The static table (RFC 7541 Appendix A), index 1 first.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Why a header block could not be decoded. After any of these the
/// decoder's table is no longer trusted (see [`Decoder::lose_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer larger than 32 bits")]
    IntegerOverflow,
    #[error("index {index} is not in the table")]
    BadIndex { index: u32 },
    #[error(transparent)]
    Huffman(#[from] HuffmanError),
}

/// One decoded field, secrets already replaced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

/// A decoded header block.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Block {
    /// Fields in order, except unknown ones and those past the size bound.
    pub fields: Vec<Field>,
    /// Fields that referenced table entries we do not have.
    pub unknown: usize,
    /// The decoded list passed the size bound; later fields were dropped.
    pub too_large: bool,
}

#[derive(Debug)]
struct Entry {
    /// None: inserted while its name referred to an entry we did not have.
    field: Option<Field>,
    /// Octets it counts for: exact when `field` is known, else a lower
    /// bound (the value's length).
    size: usize,
}

#[derive(Debug)]
pub struct Decoder {
    /// Newest first: dynamic index 62 is `table[0]`.
    table: VecDeque<Entry>,
    size: usize,
    /// The size the encoder last set (or the default).
    max_size: usize,
    /// Entries older than ours may exist that we never saw.
    older_unknown: bool,
}

/// What an index refers to.
enum Lookup<'a> {
    Known(&'a Field),
    Unknown,
}

impl Decoder {
    /// `known_start`: false when the connection is picked up mid-way.
    pub fn new(known_start: bool) -> Self {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: DEFAULT_TABLE_SIZE,
            older_unknown: !known_start,
        }
    }

    /// Sets the table size the encoder starts from (tests: RFC 7541 C.5).
    #[cfg(test)]
    #[must_use]
    pub fn with_max_size(mut self, max: usize) -> Self {
        self.max_size = max;
        self
    }

    /// Bytes held by the table (its accounted size; the overhead counted
    /// per entry covers what the strings cost beyond their octets).
    pub fn held(&self) -> usize {
        self.size
    }

    /// Blocks were lost or misread: every index may now be off. The table
    /// is dropped and any later reference to it reads unknown.
    pub fn lose_state(&mut self) {
        self.table.clear();
        self.size = 0;
        self.older_unknown = true;
    }

    /// Whether the table state is known from the connection's start (or
    /// since a size update to zero).
    #[cfg(test)]
    pub fn is_known(&self) -> bool {
        !self.older_unknown
    }

    /// Decodes one complete header block. `max_list` bounds the decoded
    /// list (RFC 9113 §6.5.2 sizes); past it, fields are still decoded to
    /// keep the table right, but not kept. On error the state is lost.
    pub fn decode(&mut self, block: &[u8], max_list: usize) -> Result<Block, HpackError> {
        let result = self.decode_inner(block, max_list);
        if result.is_err() {
            self.lose_state();
        }
        result
    }

    fn decode_inner(&mut self, block: &[u8], max_list: usize) -> Result<Block, HpackError> {
        let mut out = Block::default();
        let mut list_size = 0usize;
        let mut r = Reader { buf: block, pos: 0 };
        while let Some(&first) = r.peek() {
            let field = if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = r.integer(7)?;
                match self.lookup(index)? {
                    Lookup::Known(f) => Some(f.clone()),
                    Lookup::Unknown => None,
                }
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let lit = self.literal(&mut r, 6)?;
                let field = lit.field.clone();
                self.insert(lit);
                field
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3).
                let size = r.integer(5)? as usize;
                self.set_max_size(size);
                continue;
            } else {
                // Literal without indexing / never indexed (§6.2.2, §6.2.3).
                self.literal(&mut r, 4)?.field
            };
            let Some(field) = field else {
                out.unknown += 1;
                continue;
            };
            list_size =
                list_size.saturating_add(field.name.len() + field.value.len() + ENTRY_OVERHEAD);
            if list_size > max_list {
                out.too_large = true;
            } else {
                out.fields.push(field);
            }
        }
        Ok(out)
    }

    fn lookup(&self, index: u32) -> Result<Lookup<'_>, HpackError> {
        let i = index as usize;
        if i == 0 {
            return Err(HpackError::BadIndex { index });
        }
        if i <= STATIC.len() {
            return Ok(Lookup::Known(static_field(i)));
        }
        match self.table.get(i - STATIC.len() - 1) {
            Some(Entry { field: Some(f), .. }) => Ok(Lookup::Known(f)),
            Some(Entry { field: None, .. }) => Ok(Lookup::Unknown),
            None if self.older_unknown => Ok(Lookup::Unknown),
            None => Err(HpackError::BadIndex { index }),
        }
    }

    /// A literal field whose name is indexed with a `prefix`-bit integer
    /// (0: the name follows as a string).
    fn literal(&self, r: &mut Reader<'_>, prefix: u8) -> Result<Literal, HpackError> {
        let index = r.integer(prefix)?;
        let (name, name_len) = if index == 0 {
            let raw = r.string()?;
            let name = String::from_utf8_lossy(&raw).to_ascii_lowercase();
            (Some(name), raw.len())
        } else {
            match self.lookup(index)? {
                Lookup::Known(f) => (Some(f.name.clone()), f.name.len()),
                Lookup::Unknown => (None, 0),
            }
        };
        let mut raw = r.string()?;
        let raw_len = raw.len();
        let field = name.map(|name| {
            let value = redacted_value(&name, &raw);
            Field { name, value }
        });
        // The plaintext may be a credential: it does not outlive this call.
        raw.fill(0);
        Ok(Literal {
            field,
            size: name_len + raw_len + ENTRY_OVERHEAD,
        })
    }

    fn insert(&mut self, lit: Literal) {
        // An entry larger than the table empties it (§4.4).
        if lit.size > self.max_size {
            self.table.clear();
            self.size = 0;
            return;
        }
        self.table.push_front(Entry {
            field: lit.field,
            size: lit.size,
        });
        self.size += lit.size;
        self.evict();
    }

    fn set_max_size(&mut self, size: usize) {
        if size == 0 {
            // Nothing can be left, not even entries we never saw.
            self.older_unknown = false;
        }
        if size > MAX_TABLE_SIZE {
            // The peer keeps entries we will not: those read unknown.
            self.older_unknown = true;
        }
        self.max_size = size.min(MAX_TABLE_SIZE);
        self.evict();
    }

    fn evict(&mut self) {
        while self.size > self.max_size {
            let Some(e) = self.table.pop_back() else {
                self.size = 0;
                break;
            };
            self.size -= e.size;
        }
    }
}

struct Literal {
    field: Option<Field>,
    /// Octets it counts for in the table (§4.1).
    size: usize,
}

fn static_field(index: usize) -> &'static Field {
    static FIELDS: std::sync::OnceLock<Vec<Field>> = std::sync::OnceLock::new();
    let fields = FIELDS.get_or_init(|| {
        STATIC
            .iter()
            .map(|(n, v)| Field {
                name: (*n).to_owned(),
                value: (*v).to_owned(),
            })
            .collect()
    });
    &fields[index - 1]
}

/// The value to keep for a field: credentials as their fingerprint,
/// cookies redacted, the rest as text.
fn redacted_value(name: &str, raw: &[u8]) -> String {
    if redact::is_secret_header(name) {
        let text = String::from_utf8_lossy(raw);
        redact::fingerprint_key(redact::credential_of(&text))
    } else if redact::is_cookie_header(name) {
        redact::REDACTED.to_owned()
    } else {
        String::from_utf8_lossy(raw).into_owned()
    }
}

/// A cursor over a header block.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<&u8> {
        self.buf.get(self.pos)
    }

    fn next(&mut self) -> Result<u8, HpackError> {
        let b = *self.buf.get(self.pos).ok_or(HpackError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// An integer with an N-bit prefix (§5.1), at most `u32::MAX`.
    fn integer(&mut self, prefix: u8) -> Result<u32, HpackError> {
        let max_prefix = (1u32 << prefix) - 1;
        let mut value = u32::from(self.next()?) & max_prefix;
        if value < max_prefix {
            return Ok(value);
        }
        let mut shift = 0u32;
        loop {
            let b = self.next()?;
            let part = u64::from(b & 0x7f) << shift;
            let sum = u64::from(value) + part;
            value = u32::try_from(sum).map_err(|_| HpackError::IntegerOverflow)?;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 28 {
                return Err(HpackError::IntegerOverflow);
            }
        }
    }

    /// A string literal (§5.2), Huffman-decoded if flagged. Its length is
    /// checked against what the block holds before anything is allocated.
    fn string(&mut self) -> Result<Vec<u8>, HpackError> {
        let huffman = self.peek().is_some_and(|b| b & 0x80 != 0);
        let len = self.integer(7)? as usize;
        let end = self.pos.checked_add(len).ok_or(HpackError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(HpackError::Truncated)?;
        self.pos = end;
        if !huffman {
            return Ok(bytes.to_vec());
        }
        // Huffman codes are at least 5 bits: at most 8/5 bytes out per byte in.
        let mut out = Vec::with_capacity(len * 8 / 5 + 1);
        if let Err(e) = huffman::decode(bytes, &mut out) {
            out.fill(0);
            return Err(e.into());
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "hpack_tests.rs"]
mod tests;
