//! One archive segment file: NDJSON lines (each event exactly as stored),
//! one zstd frame with its content checksum, sealed (see `crypt`) when the
//! store has a key.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, BufWriter, Read, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

use super::crypt::{self, Opener, Sealer};
use crate::store::keys::Secret;

/// zstd level of segments: cold data, written once, read rarely.
const LEVEL: i32 = 6;
/// Longest line read back from a segment (an event is at most the ingest's
/// decompressed batch limit; this bounds a damaged file's cost).
pub const MAX_LINE: usize = 256 * 1024 * 1024;

type Plain = zstd::stream::write::Encoder<'static, BufWriter<File>>;
type Sealed = zstd::stream::write::Encoder<'static, Sealer<BufWriter<File>>>;

enum Inner {
    Plain(Plain),
    // Boxed: the sealer holds a chunk buffer and a key schedule.
    Sealed(Box<Sealed>),
}

/// Writes a segment; [`SegmentWriter::finish`] ends the frame, seals the
/// last chunk and fsyncs the file.
pub struct SegmentWriter {
    inner: Inner,
    /// Uncompressed bytes written.
    pub raw_bytes: u64,
}

/// Creates `path` (0600, must not exist).
pub fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

impl SegmentWriter {
    pub fn create(path: &Path, key: Option<&Secret>) -> io::Result<Self> {
        let file = BufWriter::with_capacity(256 * 1024, create_file(path)?);
        let inner = match key {
            None => {
                let mut z = zstd::stream::write::Encoder::new(file, LEVEL)?;
                z.include_checksum(true)?;
                Inner::Plain(z)
            }
            Some(k) => {
                let mut z = zstd::stream::write::Encoder::new(Sealer::new(file, k)?, LEVEL)?;
                z.include_checksum(true)?;
                Inner::Sealed(Box::new(z))
            }
        };
        Ok(Self {
            inner,
            raw_bytes: 0,
        })
    }

    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let w: &mut dyn Write = match &mut self.inner {
            Inner::Plain(z) => z,
            Inner::Sealed(z) => z.as_mut(),
        };
        w.write_all(line)?;
        w.write_all(b"\n")?;
        self.raw_bytes += line.len() as u64 + 1;
        Ok(())
    }

    /// Ends the segment and fsyncs it; returns the file's size.
    pub fn finish(self) -> io::Result<u64> {
        let buffered = match self.inner {
            Inner::Plain(z) => z.finish()?,
            Inner::Sealed(z) => z.finish()?.finish()?,
        };
        let file = buffered
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        Ok(file.metadata()?.len())
    }
}

/// Reads a segment's lines from any source (a file, or bytes fetched from
/// object storage); sealed or not is told by the first bytes.
pub fn reader<'a>(
    mut src: impl Read + 'a,
    key: Option<&Secret>,
) -> io::Result<Box<dyn BufRead + 'a>> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < head.len() {
        match src.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let src = io::Cursor::new(head[..got].to_vec()).chain(src);
    if crypt::is_sealed(&head[..got]) {
        let Some(k) = key else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "sealed segment and no store key (encryption_key_file)",
            ));
        };
        let opener = Opener::new(src, k)?;
        Ok(Box::new(BufReader::new(zstd::stream::read::Decoder::new(
            opener,
        )?)))
    } else {
        Ok(Box::new(BufReader::new(zstd::stream::read::Decoder::new(
            src,
        )?)))
    }
}

/// Every line of a segment, `f` called on each (without its newline).
pub fn for_each_line(
    src: impl Read,
    key: Option<&Secret>,
    mut f: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut r = reader(src, key)?;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "segment line longer than the limit",
            ));
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if !line.is_empty() {
            f(&line)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    #[test]
    fn segments_round_trip_plain_and_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let key = Zeroizing::new([3u8; 32]);
        let lines: Vec<String> = (0..5000)
            .map(|i| format!(r#"{{"id":"e{i}","text":"marker-{i}"}}"#))
            .collect();
        for (name, k) in [("plain", None), ("sealed", Some(&key))] {
            let path = dir.path().join(name);
            let mut w = SegmentWriter::create(&path, k).unwrap();
            for l in &lines {
                w.write_line(l.as_bytes()).unwrap();
            }
            let size = w.finish().unwrap();
            assert_eq!(size, std::fs::metadata(&path).unwrap().len());
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(crypt::is_sealed(&bytes), k.is_some());
            if k.is_some() {
                assert!(!bytes.windows(8).any(|w| w == b"marker-1"));
            }
            let mut back = Vec::new();
            for_each_line(File::open(&path).unwrap(), k, |l| {
                back.push(String::from_utf8(l.to_vec()).unwrap());
                Ok(())
            })
            .unwrap();
            assert_eq!(back, lines, "{name}");
            assert!(create_file(&path).is_err(), "never over an existing file");
        }
        // A sealed segment without the key is an error, not garbage.
        let sealed = File::open(dir.path().join("sealed")).unwrap();
        assert!(for_each_line(sealed, None, |_| Ok(())).is_err());
        // A cut plain segment fails (zstd frame incomplete).
        let bytes = std::fs::read(dir.path().join("plain")).unwrap();
        let cut = &bytes[..bytes.len() - 10];
        assert!(for_each_line(cut, None, |_| Ok(())).is_err());
    }
}
