//! Go's function table (`.gopclntab`), read the way `debug/gosym` does, for
//! binaries whose symbol table was stripped (`-ldflags=-s -w`): the runtime
//! needs this table for stack traces and garbage collection, so every Go
//! binary keeps it.
//!
//! Layout (`runtime/symtab.go`, `cmd/link/internal/ld/pcln.go`): a header
//! `magic u32, 0 u8, 0 u8, quantum u8, ptrsize u8`, then per version:
//! - Go 1.2–1.15 (`0xfffffffb`): `nfunc`, then the function table right after
//!   the header: `nfunc` pairs `(entry pc, func offset)` of pointer size and
//!   a final end pc; names and pc tables are offsets from the table's start.
//! - Go 1.16–1.17 (`0xfffffffa`): `nfunc, nfiles, funcnameOffset, cuOffset,
//!   filetabOffset, pctabOffset, pclnOffset` (pointer size each); the
//!   function table at `pclnOffset`, same pairs as 1.2.
//! - Go 1.18–1.19 (`0xfffffff0`) and 1.20+ (`0xfffffff1`): the same with
//!   `textStart` after `nfiles`; the function table holds `u32` pairs
//!   `(entry − textStart, func offset)`.
//!
//! A `_func` record starts `entry (u32 from 1.18, else pointer), nameOff i32,
//! args i32, deferreturn u32, pcsp u32, …`. `pcsp` names the pc-value table
//! of the stack pointer's offset from its value at entry: 0 where the frame
//! is popped, which is how a return probe's place is checked.
//!
//! The bytes come from a file anyone could have written: every offset is
//! checked, every loop bounded; a malformed table is an error, never a panic.

use std::fmt;

/// Names longer than this are treated as malformed (Go's longest are a few
/// hundred bytes of generic instantiations).
const MAX_NAME: usize = 4096;
/// More functions than this is not a real Go binary (kubelet has ~80,000).
const MAX_FUNCS: usize = 4 << 20;
/// Steps of one pc-value table at most: one per instruction boundary of a
/// function, far fewer in practice.
const MAX_PCVALUE_STEPS: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Go 1.2 to 1.15.
    Go12,
    /// Go 1.16 and 1.17.
    Go116,
    /// Go 1.18 and 1.19.
    Go118,
    /// Go 1.20 and later.
    Go120,
}

impl Version {
    pub fn from_magic(magic: u32) -> Option<Self> {
        match magic {
            0xffff_fffb => Some(Self::Go12),
            0xffff_fffa => Some(Self::Go116),
            0xffff_fff0 => Some(Self::Go118),
            0xffff_fff1 => Some(Self::Go120),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Go12 => "go1.2-1.15",
            Self::Go116 => "go1.16-1.17",
            Self::Go118 => "go1.18-1.19",
            Self::Go120 => "go1.20+",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PclntabError {
    #[error("pclntab of {len} bytes is shorter than its header")]
    Short { len: usize },
    #[error("unknown pclntab magic {magic:#010x}")]
    BadMagic { magic: u32 },
    #[error("pclntab header: {what}")]
    BadHeader { what: &'static str },
    #[error("pclntab: {what} at offset {offset} is out of bounds")]
    OutOfBounds { what: &'static str, offset: u64 },
    #[error("pclntab: function table is not sorted at entry {index}")]
    Unsorted { index: usize },
    #[error("pclntab: function name at offset {offset} is not terminated")]
    BadName { offset: u64 },
    #[error("pclntab: pc-value table of {function} is malformed")]
    BadPcValue { function: String },
}

/// One function of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Func {
    /// Virtual address of its first instruction.
    pub entry: u64,
    /// Virtual address of the next function (its code ends before).
    pub end: u64,
    pub name: String,
    /// Offset of its `pcsp` table in the pc-table area.
    pcsp: u32,
}

/// A parsed, validated pclntab header over the table's bytes.
#[derive(Clone, Debug)]
pub struct Pclntab<'a> {
    data: &'a [u8],
    version: Version,
    quantum: u8,
    nfunc: usize,
    text_start: u64,
    /// Where names are (`nameOff` counts from here).
    funcname: usize,
    /// Where pc-value tables are (`pcsp` counts from here).
    pctab: usize,
    /// The function table (`funcoff` counts from here).
    functab: usize,
}

fn read_u32(d: &[u8], off: usize, what: &'static str) -> Result<u32, PclntabError> {
    d.get(off..off.saturating_add(4))
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(PclntabError::OutOfBounds {
            what,
            offset: off as u64,
        })
}

fn read_u64(d: &[u8], off: usize, what: &'static str) -> Result<u64, PclntabError> {
    d.get(off..off.saturating_add(8))
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(PclntabError::OutOfBounds {
            what,
            offset: off as u64,
        })
}

fn to_usize(v: u64, what: &'static str) -> Result<usize, PclntabError> {
    usize::try_from(v).map_err(|_| PclntabError::OutOfBounds { what, offset: v })
}

impl<'a> Pclntab<'a> {
    /// Parses the header of the table in `data` (the section's bytes, or the
    /// bytes from a candidate magic on). `text_section` is the address of
    /// `.text`, used when a Go 1.18+ header leaves `textStart` to a dynamic
    /// relocation (position-independent builds).
    pub fn parse(data: &'a [u8], text_section: Option<u64>) -> Result<Self, PclntabError> {
        if data.len() < 16 {
            return Err(PclntabError::Short { len: data.len() });
        }
        let magic = read_u32(data, 0, "magic")?;
        let version = Version::from_magic(magic).ok_or(PclntabError::BadMagic { magic })?;
        if data[4] != 0 || data[5] != 0 {
            return Err(PclntabError::BadHeader {
                what: "padding bytes are not zero",
            });
        }
        let quantum = data[6];
        if !matches!(quantum, 1 | 2 | 4) {
            return Err(PclntabError::BadHeader {
                what: "instruction quantum is not 1, 2 or 4",
            });
        }
        if data[7] != 8 {
            // Only 64-bit targets are hooked (x86_64).
            return Err(PclntabError::BadHeader {
                what: "pointer size is not 8",
            });
        }
        let word = |i: usize, what| read_u64(data, 8 + 8 * i, what);
        let nfunc = to_usize(word(0, "nfunc")?, "nfunc")?;
        if nfunc == 0 || nfunc > MAX_FUNCS {
            return Err(PclntabError::BadHeader {
                what: "function count is 0 or implausible",
            });
        }
        let offset = |i: usize, what| -> Result<usize, PclntabError> {
            let v = to_usize(word(i, what)?, what)?;
            if v >= data.len() {
                return Err(PclntabError::OutOfBounds {
                    what,
                    offset: v as u64,
                });
            }
            Ok(v)
        };
        let (text_start, funcname, pctab, functab) = match version {
            Version::Go12 => (0, 0, 0, 16),
            Version::Go116 => (
                0,
                offset(2, "funcnameOffset")?,
                offset(5, "pctabOffset")?,
                offset(6, "pclnOffset")?,
            ),
            Version::Go118 | Version::Go120 => {
                let mut text = word(2, "textStart")?;
                if text == 0 {
                    text = text_section.ok_or(PclntabError::BadHeader {
                        what: "textStart is relocated and there is no .text section",
                    })?;
                }
                (
                    text,
                    offset(3, "funcnameOffset")?,
                    offset(6, "pctabOffset")?,
                    offset(7, "pclnOffset")?,
                )
            }
        };
        let t = Self {
            data,
            version,
            quantum,
            nfunc,
            text_start,
            funcname,
            pctab,
            functab,
        };
        // The whole function table, with its end entry, must be inside.
        let need = t
            .functab
            .checked_add((nfunc + 1).saturating_mul(t.pair_size()))
            .ok_or(PclntabError::BadHeader {
                what: "function table size overflows",
            })?;
        if need > data.len() {
            return Err(PclntabError::OutOfBounds {
                what: "function table",
                offset: need as u64,
            });
        }
        Ok(t)
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn len(&self) -> usize {
        self.nfunc
    }

    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// Size of one `(entry, funcoff)` pair of the function table.
    fn pair_size(&self) -> usize {
        match self.version {
            Version::Go12 | Version::Go116 => 16,
            Version::Go118 | Version::Go120 => 8,
        }
    }

    /// Entry address of function `i` (`i == nfunc`: the end of the last).
    fn entry_at(&self, i: usize) -> Result<u64, PclntabError> {
        let off = self.functab + i * self.pair_size();
        match self.version {
            Version::Go12 | Version::Go116 => read_u64(self.data, off, "function entry"),
            Version::Go118 | Version::Go120 => {
                let rel = read_u32(self.data, off, "function entry")?;
                self.text_start
                    .checked_add(u64::from(rel))
                    .ok_or(PclntabError::OutOfBounds {
                        what: "function entry",
                        offset: off as u64,
                    })
            }
        }
    }

    /// Offset of function `i`'s `_func` record in `data`.
    fn func_record(&self, i: usize) -> Result<usize, PclntabError> {
        let off = self.functab + i * self.pair_size();
        let rel = match self.version {
            Version::Go12 | Version::Go116 => read_u64(self.data, off + 8, "func offset")?,
            Version::Go118 | Version::Go120 => {
                u64::from(read_u32(self.data, off + 4, "func offset")?)
            }
        };
        // Go 1.2 counts from the table's start, later versions from the
        // function table.
        let base = if self.version == Version::Go12 {
            0
        } else {
            self.functab
        };
        let rec = to_usize(rel, "func offset")?
            .checked_add(base)
            .filter(|r| r.saturating_add(self.func_fixed()) <= self.data.len())
            .ok_or(PclntabError::OutOfBounds {
                what: "_func record",
                offset: rel,
            })?;
        Ok(rec)
    }

    /// Bytes of a `_func` record this parser reads (through `pcsp`).
    fn func_fixed(&self) -> usize {
        match self.version {
            Version::Go12 | Version::Go116 => 8 + 16,
            Version::Go118 | Version::Go120 => 4 + 16,
        }
    }

    fn name_at(&self, rec: usize) -> Result<&'a [u8], PclntabError> {
        let name_field = match self.version {
            Version::Go12 | Version::Go116 => rec + 8,
            Version::Go118 | Version::Go120 => rec + 4,
        };
        let rel = read_u32(self.data, name_field, "nameOff")?;
        let start = self
            .funcname
            .checked_add(rel as usize)
            .filter(|s| *s < self.data.len())
            .ok_or(PclntabError::OutOfBounds {
                what: "function name",
                offset: u64::from(rel),
            })?;
        let window = &self.data[start..self.data.len().min(start + MAX_NAME)];
        let len = memchr::memchr(0, window).ok_or(PclntabError::BadName {
            offset: start as u64,
        })?;
        Ok(&window[..len])
    }

    fn pcsp_at(&self, rec: usize) -> Result<u32, PclntabError> {
        let field = match self.version {
            Version::Go12 | Version::Go116 => rec + 8 + 12,
            Version::Go118 | Version::Go120 => rec + 4 + 12,
        };
        read_u32(self.data, field, "pcsp")
    }

    fn func(&self, i: usize, name: &[u8], rec: usize) -> Result<Func, PclntabError> {
        let entry = self.entry_at(i)?;
        let end = self.entry_at(i + 1)?;
        if end <= entry {
            return Err(PclntabError::Unsorted { index: i });
        }
        Ok(Func {
            entry,
            end,
            name: String::from_utf8_lossy(name).into_owned(),
            pcsp: self.pcsp_at(rec)?,
        })
    }

    /// The function named `name`, if the table has it. Scans the table once
    /// (a few milliseconds for the largest binaries); a malformed record on
    /// the way is an error.
    pub fn find(&self, name: &str) -> Result<Option<Func>, PclntabError> {
        Ok(self.find_all(&[name])?.pop().flatten())
    }

    /// The functions named in `names`, in that order, in one scan.
    pub fn find_all(&self, names: &[&str]) -> Result<Vec<Option<Func>>, PclntabError> {
        let mut out: Vec<Option<Func>> = vec![None; names.len()];
        let mut left = names.len();
        for i in 0..self.nfunc {
            let rec = self.func_record(i)?;
            let name = self.name_at(rec)?;
            if let Some(k) = names.iter().position(|n| n.as_bytes() == name) {
                if out[k].is_none() {
                    out[k] = Some(self.func(i, name, rec)?);
                    left -= 1;
                    if left == 0 {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// The function whose code holds `pc`, by binary search of the sorted
    /// table.
    pub fn func_for_pc(&self, pc: u64) -> Result<Option<Func>, PclntabError> {
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry_at(mid)? <= pc {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Ok(None);
        }
        let i = lo - 1;
        let rec = self.func_record(i)?;
        let name = self.name_at(rec)?;
        let f = self.func(i, name, rec)?;
        Ok((pc < f.end).then_some(f))
    }

    /// The stack pointer's offset from its value at entry, at `pc` in `f`
    /// (`runtime.pcvalue` over the function's `pcsp` table). `None`: `pc`
    /// is outside the table's ranges.
    pub fn sp_delta_at(&self, f: &Func, pc: u64) -> Result<Option<i32>, PclntabError> {
        let bad = || PclntabError::BadPcValue {
            function: f.name.clone(),
        };
        let start = self.pctab.checked_add(f.pcsp as usize).ok_or_else(bad)?;
        let mut p = self.data.get(start..).ok_or_else(bad)?;
        let mut cur_pc = f.entry;
        let mut val: i32 = -1;
        let mut first = true;
        for _ in 0..MAX_PCVALUE_STEPS {
            let Some(&b0) = p.first() else {
                return Err(bad());
            };
            if b0 == 0 && !first {
                return Ok(None);
            }
            first = false;
            let (uvdelta, n) = uvarint(p).ok_or_else(bad)?;
            p = &p[n..];
            // Zig-zag: the low bit is the sign.
            // Both halves fit in 31 bits (a u32 shifted, and 0 or 1).
            let delta = i32::try_from(uvdelta >> 1).unwrap_or(0) ^ -i32::from(uvdelta & 1 == 1);
            val = val.wrapping_add(delta);
            let (pcdelta, n) = uvarint(p).ok_or_else(bad)?;
            p = &p[n..];
            let next_pc = cur_pc
                .checked_add(u64::from(pcdelta) * u64::from(self.quantum))
                .ok_or_else(bad)?;
            if pc >= cur_pc && pc < next_pc {
                return Ok(Some(val));
            }
            if next_pc >= f.end {
                return Ok(None);
            }
            cur_pc = next_pc;
        }
        Err(bad())
    }
}

/// A little-endian base-128 varint of at most 32 bits, and its length.
fn uvarint(p: &[u8]) -> Option<(u32, usize)> {
    let mut v: u32 = 0;
    for (i, &b) in p.iter().enumerate().take(5) {
        v |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Go 1.18-layout table with the given (name, size, pcsp table)
    /// functions, text at 0x401000.
    pub(crate) fn synthetic(funcs: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let n = funcs.len();
        let hdr = 8 + 8 * 8;
        let mut names = Vec::new();
        let mut name_offs = Vec::new();
        for (name, ..) in funcs {
            name_offs.push(u32::try_from(names.len()).unwrap());
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let mut pctab = vec![0u8];
        let mut pc_offs = Vec::new();
        for (_, _, pcsp) in funcs {
            pc_offs.push(u32::try_from(pctab.len()).unwrap());
            pctab.extend_from_slice(pcsp);
        }
        let funcname = hdr;
        let pct = funcname + names.len();
        let functab = pct + pctab.len();
        let recs = functab + 8 * (n + 1);
        let mut d = Vec::new();
        d.extend_from_slice(&0xffff_fff0u32.to_le_bytes());
        d.extend_from_slice(&[0, 0, 1, 8]);
        for v in [
            n as u64,
            0,
            0x40_1000,
            funcname as u64,
            0,
            0,
            pct as u64,
            functab as u64,
        ] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&names);
        d.extend_from_slice(&pctab);
        let mut entry = 0u32;
        for (i, f) in funcs.iter().enumerate() {
            d.extend_from_slice(&entry.to_le_bytes());
            let rec = u32::try_from(recs - functab + i * 40).unwrap();
            d.extend_from_slice(&rec.to_le_bytes());
            entry += f.1;
        }
        d.extend_from_slice(&entry.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        let mut entry = 0u32;
        for (i, f) in funcs.iter().enumerate() {
            let mut r = [0u8; 40];
            r[0..4].copy_from_slice(&entry.to_le_bytes());
            r[4..8].copy_from_slice(&name_offs[i].to_le_bytes());
            r[16..20].copy_from_slice(&pc_offs[i].to_le_bytes());
            d.extend_from_slice(&r);
            entry += f.1;
        }
        d
    }

    // pcsp of a function with a 0x18-byte frame: 0 for 4 bytes (prologue
    // check), 0x18 for 0x20 bytes, 0 for 1 byte (the RET), 0x18 for the
    // rest: (value delta zig-zag, pc delta) pairs, starting from -1.
    const PCSP: &[u8] = &[0x02, 0x04, 0x30, 0x20, 0x2f, 0x01, 0x30, 0x0b, 0x00];

    #[test]
    fn finds_functions_and_reads_their_stack_deltas() {
        let d = synthetic(&[
            ("runtime.main", 0x40, PCSP),
            ("crypto/tls.(*Conn).Write", 0x40, PCSP),
            ("crypto/tls.(*Conn).Read", 0x30, PCSP),
        ]);
        let t = Pclntab::parse(&d, None).unwrap();
        assert_eq!(t.version(), Version::Go118);
        assert_eq!(t.len(), 3);
        let w = t.find("crypto/tls.(*Conn).Write").unwrap().unwrap();
        assert_eq!((w.entry, w.end), (0x40_1040, 0x40_1080));
        let found = t
            .find_all(&["crypto/tls.(*Conn).Read", "nope", "runtime.main"])
            .unwrap();
        assert_eq!(found[0].as_ref().unwrap().entry, 0x40_1080);
        assert!(found[1].is_none());
        assert_eq!(found[2].as_ref().unwrap().entry, 0x40_1000);
        assert_eq!(t.sp_delta_at(&w, w.entry).unwrap(), Some(0));
        assert_eq!(t.sp_delta_at(&w, w.entry + 4).unwrap(), Some(0x18));
        assert_eq!(t.sp_delta_at(&w, w.entry + 0x24).unwrap(), Some(0));
        assert_eq!(t.sp_delta_at(&w, w.entry + 0x25).unwrap(), Some(0x18));
        assert_eq!(t.sp_delta_at(&w, w.end).unwrap(), None);
        assert_eq!(
            t.func_for_pc(0x40_1085).unwrap().unwrap().name,
            "crypto/tls.(*Conn).Read"
        );
        assert!(t.func_for_pc(0x40_0fff).unwrap().is_none());
        assert!(t.func_for_pc(0x40_10b0).unwrap().is_none());
    }

    #[test]
    fn bad_headers_are_refused() {
        let good = synthetic(&[("a", 0x10, PCSP)]);
        let mut d = good.clone();
        d[0] = 0xfc;
        assert!(matches!(
            Pclntab::parse(&d, None),
            Err(PclntabError::BadMagic { .. })
        ));
        let mut d = good.clone();
        d[7] = 4;
        assert!(matches!(
            Pclntab::parse(&d, None),
            Err(PclntabError::BadHeader { .. })
        ));
        let mut d = good.clone();
        d[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Pclntab::parse(&d, None).is_err());
        assert!(matches!(
            Pclntab::parse(&good[..12], None),
            Err(PclntabError::Short { .. })
        ));
        // A cut table: the function table runs past the end.
        assert!(Pclntab::parse(&good[..good.len() - 45], None).is_err());
    }

    #[test]
    fn every_truncation_and_byte_flip_is_total() {
        let good = synthetic(&[
            ("runtime.main", 0x40, PCSP),
            ("crypto/tls.(*Conn).Write", 0x40, PCSP),
        ]);
        let probe = |d: &[u8]| {
            if let Ok(t) = Pclntab::parse(d, Some(0x40_1000)) {
                if let Ok(Some(f)) = t.find("crypto/tls.(*Conn).Write") {
                    // A flipped byte may move the end anywhere: probe the
                    // first pcs only.
                    for pc in f.entry..f.end.min(f.entry + 0x100) {
                        let _ = t.sp_delta_at(&f, pc);
                    }
                }
                let _ = t.func_for_pc(0x40_1044);
            }
        };
        for cut in 0..good.len() {
            probe(&good[..cut]);
        }
        for i in 0..good.len() {
            for v in [0x00, 0x7f, 0x80, 0xff] {
                let mut d = good.clone();
                d[i] = v;
                probe(&d);
            }
        }
    }

    #[test]
    fn varints() {
        assert_eq!(uvarint(&[0x05]), Some((5, 1)));
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(uvarint(&[0x80, 0x80]), None);
        assert_eq!(uvarint(&[0xff; 6]), None);
    }
}
