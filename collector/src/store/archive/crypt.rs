//! Sealed archive segments: an AEAD stream in the manner of age's payload.
//!
//! ```text
//! header, 64 bytes
//!   0  magic    8  "ATRLSEG1"
//!   8  alg      1  1 = ChaCha20-Poly1305 (RFC 8439)
//!   9  zero     3
//!  12  chunk    4  plaintext bytes per chunk, big-endian (65536)
//!  16  key id  16  HMAC-SHA256(archive key, "aitrail archive key id")[..16]
//!  32  salt    32  random, new for every file
//! chunks
//!   ciphertext of `chunk` plaintext bytes + 16-byte tag, …,
//!   the last chunk: 0..=chunk plaintext bytes + 16-byte tag
//! ```
//!
//! The file key is HKDF-SHA256(ikm = archive key, salt, info "aitrail
//! archive segment v1"): a fresh key per file, so the nonces can count. The
//! nonce of chunk i is i as 11 bytes big-endian and one byte that is 1 on
//! the last chunk, 0 before (the STREAM construction): chunks cannot be
//! reordered, dropped, or the file cut at a chunk boundary without the open
//! failing. Every chunk authenticates the whole header as associated data.
//! Only the last chunk may be short; it is empty only when the whole
//! plaintext is. The key id tells a wrong key from a damaged file.
//!
//! The archive key itself comes from `[store] encryption_key_file` (see
//! `store::keys`). Segments are zstd-compressed before they are sealed.

use std::io::{self, Read, Write};

use ring::{aead, hmac};

use crate::store::keys::{derive, random, Secret};

pub const MAGIC: &[u8; 8] = b"ATRLSEG1";
pub const HEADER_LEN: usize = 64;
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const ALG_CHACHA20_POLY1305: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("not a sealed segment (bad magic or header)")]
    Header,
    #[error("sealed with another key")]
    WrongKey,
    #[error("chunk {0} does not authenticate (damaged or cut short)")]
    Chunk(u64),
}

impl From<SealError> for io::Error {
    fn from(e: SealError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

fn key_id(archive_key: &Secret) -> [u8; 16] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, archive_key.as_ref());
    let tag = hmac::sign(&k, b"aitrail archive key id");
    let mut out = [0u8; 16];
    out.copy_from_slice(&tag.as_ref()[..16]);
    out
}

fn file_key(archive_key: &Secret, salt: &[u8]) -> aead::LessSafeKey {
    let k = derive(archive_key.as_ref(), salt, b"aitrail archive segment v1");
    let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, k.as_ref())
        .expect("a 32-byte ChaCha20-Poly1305 key");
    aead::LessSafeKey::new(unbound)
}

fn nonce(counter: u64, last: bool) -> aead::Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    aead::Nonce::assume_unique_for_key(n)
}

/// Whether `bytes` begin like a sealed segment.
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Seals what is written to it; [`Sealer::finish`] writes the last chunk.
pub struct Sealer<W: Write> {
    inner: W,
    key: aead::LessSafeKey,
    header: [u8; HEADER_LEN],
    buf: Vec<u8>,
    counter: u64,
}

impl<W: Write> Sealer<W> {
    pub fn new(mut inner: W, archive_key: &Secret) -> io::Result<Self> {
        let salt: [u8; 32] = random().map_err(io::Error::other)?;
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8] = ALG_CHACHA20_POLY1305;
        header[12..16].copy_from_slice(&u32::try_from(CHUNK).unwrap_or(u32::MAX).to_be_bytes());
        header[16..32].copy_from_slice(&key_id(archive_key));
        header[32..].copy_from_slice(&salt);
        inner.write_all(&header)?;
        Ok(Self {
            inner,
            key: file_key(archive_key, &salt),
            header,
            buf: Vec::with_capacity(CHUNK + TAG),
            counter: 0,
        })
    }

    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        self.key
            .seal_in_place_append_tag(
                nonce(self.counter, last),
                aead::Aad::from(&self.header[..]),
                &mut self.buf,
            )
            .map_err(|_| io::Error::other("seal failed"))?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.counter += 1;
        Ok(())
    }

    /// Seals the last chunk and returns the inner writer (not flushed to
    /// disk: the caller fsyncs).
    pub fn finish(mut self) -> io::Result<W> {
        self.seal_chunk(true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // A full buffer is sealed only when more data comes: the last
        // chunk must be sealed as the last one, even when it is full.
        if self.buf.len() == CHUNK {
            self.seal_chunk(false)?;
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Opens a sealed stream; reading past a chunk that does not authenticate
/// is an error (`InvalidData`), never unauthenticated bytes.
pub struct Opener<R: Read> {
    inner: R,
    key: aead::LessSafeKey,
    header: [u8; HEADER_LEN],
    /// Ciphertext read ahead (at most one chunk plus one byte).
    raw: Vec<u8>,
    plain: Vec<u8>,
    pos: usize,
    counter: u64,
    done: bool,
}

fn read_full(r: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> io::Result<()> {
    while buf.len() < want {
        let start = buf.len();
        buf.resize(want, 0);
        match r.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                return Ok(());
            }
            Ok(n) => buf.truncate(start + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => {
                buf.truncate(start);
                return Err(e);
            }
        }
    }
    Ok(())
}

impl<R: Read> Opener<R> {
    pub fn new(mut inner: R, archive_key: &Secret) -> io::Result<Self> {
        let mut header = [0u8; HEADER_LEN];
        inner.read_exact(&mut header).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                SealError::Header.into()
            } else {
                e
            }
        })?;
        let chunk = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
        if &header[..8] != MAGIC
            || header[8] != ALG_CHACHA20_POLY1305
            || header[9..12] != [0, 0, 0]
            || chunk as usize != CHUNK
        {
            return Err(SealError::Header.into());
        }
        if header[16..32] != key_id(archive_key) {
            return Err(SealError::WrongKey.into());
        }
        let key = file_key(archive_key, &header[32..]);
        Ok(Self {
            inner,
            key,
            header,
            raw: Vec::with_capacity(CHUNK + TAG + 1),
            plain: Vec::new(),
            pos: 0,
            counter: 0,
            done: false,
        })
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        // One chunk and one byte more: that byte tells whether this chunk
        // is the last one.
        read_full(&mut self.inner, &mut self.raw, CHUNK + TAG + 1)?;
        let last = self.raw.len() <= CHUNK + TAG;
        let take = self.raw.len().min(CHUNK + TAG);
        if take < TAG {
            return Err(SealError::Chunk(self.counter).into());
        }
        let mut chunk: Vec<u8> = self.raw.drain(..take).collect();
        let plain = self
            .key
            .open_in_place(
                nonce(self.counter, last),
                aead::Aad::from(&self.header[..]),
                &mut chunk,
            )
            .map_err(|_| SealError::Chunk(self.counter))?;
        // An empty chunk is only valid as the whole (empty) plaintext.
        if plain.is_empty() && self.counter > 0 {
            return Err(SealError::Chunk(self.counter).into());
        }
        let n = plain.len();
        chunk.truncate(n);
        self.plain = chunk;
        self.pos = 0;
        self.counter += 1;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for Opener<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    fn key(b: u8) -> Secret {
        Zeroizing::new([b; 32])
    }

    fn seal(data: &[u8], k: &Secret) -> Vec<u8> {
        let mut s = Sealer::new(Vec::new(), k).unwrap();
        // Odd write sizes: chunking must not depend on them.
        for part in data.chunks(7919) {
            s.write_all(part).unwrap();
        }
        s.finish().unwrap()
    }

    fn open(sealed: &[u8], k: &Secret) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Opener::new(sealed, k)?.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_chunk_edges() {
        let k = key(7);
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5] {
            let data: Vec<u8> = (0..len)
                .map(|i| u8::try_from(i * 31 % 251).unwrap())
                .collect();
            let sealed = seal(&data, &k);
            let chunks = len.div_ceil(CHUNK).max(1);
            assert_eq!(sealed.len(), HEADER_LEN + len + chunks * TAG, "len {len}");
            assert_eq!(open(&sealed, &k).unwrap(), data, "len {len}");
        }
        // A fresh salt per file: the same plaintext seals differently.
        assert_ne!(seal(b"same", &k), seal(b"same", &k));
    }

    #[test]
    fn tampering_truncation_and_wrong_keys_fail() {
        let k = key(7);
        let data = vec![b'x'; 2 * CHUNK + 100];
        let sealed = seal(&data, &k);
        // Any flipped byte, header included, is refused.
        for at in [
            0,
            9,
            20,
            40,
            HEADER_LEN,
            HEADER_LEN + CHUNK + 3,
            sealed.len() - 1,
        ] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(open(&bad, &k).is_err(), "flip at {at}");
        }
        // Cut at a chunk boundary: the new last chunk was not sealed as last.
        let cut = HEADER_LEN + 2 * (CHUNK + TAG);
        assert!(open(&sealed[..cut], &k).is_err());
        assert!(open(&sealed[..cut - 1], &k).is_err());
        assert!(open(&sealed[..HEADER_LEN], &k).is_err());
        // A chunk of the full size sealed as last, followed by garbage.
        let mut longer = sealed.clone();
        longer.extend_from_slice(&[0u8; 40]);
        assert!(open(&longer, &k).is_err());
        let e = open(&sealed, &key(8)).unwrap_err();
        assert!(e.to_string().contains("another key"), "{e}");
        assert!(open(b"ATRLSEG", &k).is_err());
    }
}
