//! One segment's bytes: the header codec and the whole-file check (the
//! format is in the parent module's doc).

use std::{fs::File, io::Read as _, path::Path};

use super::{io_err, SpoolError};

pub const MAGIC: [u8; 4] = *b"ATSG";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 64;

/// The header of one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub batch_id: [u8; 16],
    pub created_ms: u64,
    pub payload_len: u64,
    pub events: u32,
    pub findings: u32,
    pub raw_len: u32,
    pub payload_crc: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4..6].copy_from_slice(&VERSION.to_le_bytes());
        #[expect(clippy::cast_possible_truncation, reason = "64 fits")]
        h[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        h[8..24].copy_from_slice(&self.batch_id);
        h[24..32].copy_from_slice(&self.created_ms.to_le_bytes());
        h[32..40].copy_from_slice(&self.payload_len.to_le_bytes());
        h[40..44].copy_from_slice(&self.events.to_le_bytes());
        h[44..48].copy_from_slice(&self.findings.to_le_bytes());
        h[48..52].copy_from_slice(&self.raw_len.to_le_bytes());
        h[52..56].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[0..56]);
        h[56..60].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Checks everything the header alone can tell.
    pub fn decode(h: &[u8]) -> Result<Self, &'static str> {
        let u16_at = |o: usize| u16::from_le_bytes([h[o], h[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().unwrap_or_default());
        if h.len() < HEADER_LEN {
            return Err("shorter than a header");
        }
        if h[0..4] != MAGIC {
            return Err("bad magic");
        }
        if u16_at(4) != VERSION {
            return Err("unknown format version");
        }
        if usize::from(u16_at(6)) != HEADER_LEN {
            return Err("unexpected header length");
        }
        if crc32fast::hash(&h[0..56]) != u32_at(56) {
            return Err("header checksum mismatch");
        }
        let mut batch_id = [0u8; 16];
        batch_id.copy_from_slice(&h[8..24]);
        Ok(Self {
            batch_id,
            created_ms: u64_at(24),
            payload_len: u64_at(32),
            events: u32_at(40),
            findings: u32_at(44),
            raw_len: u32_at(48),
            payload_crc: u32_at(52),
        })
    }

    pub fn batch_id(&self) -> String {
        uuid::Uuid::from_bytes(self.batch_id).to_string()
    }
}

/// Reads a segment whole and checks it.
pub(super) fn read_segment(path: &Path) -> Result<(Header, Vec<u8>), SpoolError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(io_err(path, "read"))?;
    let corrupt = |problem| SpoolError::Corrupt {
        path: path.to_owned(),
        problem,
    };
    let header = Header::decode(&bytes).map_err(corrupt)?;
    if bytes.len() as u64 != HEADER_LEN as u64 + header.payload_len {
        return Err(corrupt("length does not match the header"));
    }
    bytes.drain(..HEADER_LEN);
    if crc32fast::hash(&bytes) != header.payload_crc {
        return Err(corrupt("payload checksum mismatch"));
    }
    Ok((header, bytes))
}
