//! `SSL_write` and `SSL_read` in executables that link `BoringSSL` statically
//! and strip its symbols (Bun, and every Bun single-file executable such as
//! Claude Code).
//!
//! # Method
//! `BoringSSL` reports errors with `OPENSSL_PUT_ERROR(SSL, reason)`, which
//! expands to `ERR_put_error(ERR_LIB_SSL, 0, reason, __FILE__, __LINE__)`.
//! The file name (`…/ssl/ssl_lib.cc`) stays in `.rodata` after stripping,
//! and every such call loads its address as the fourth argument (rcx) and
//! constants for the library (edi = 16), the reason (edx) and the line
//! (r8d). So:
//! 1. find the file name's string; none means this is not `BoringSSL`;
//! 2. find the instructions that may load its address (`mov r32, imm32` in
//!    non-PIE code, `lea r64, [rip+disp]` in PIE);
//! 3. for each, find the function around it: try function starts before it
//!    (16-byte aligned right after int3 padding: LLD fills gaps between
//!    functions with 0xCC, compilers pad inside functions with NOPs) and
//!    decode each by recursive descent until one contains the load. Bun's
//!    `.eh_frame` covers only a few C++ functions (none of `BoringSSL`), so
//!    unwind tables cannot give function bounds here;
//! 4. read each function's error calls by following constants from the load
//!    to the call, through shared error tails;
//! 5. match them against `ssl_lib.cc` (see `signature`): `SSL_write` makes
//!    exactly the calls with reasons [66,] 226, 215, 111 in that line order;
//!    `ssl_read_impl` makes 226, 215 at lines before them; `SSL_read` (with
//!    `SSL_peek` inlined) makes only 66 at a line between the two, calls
//!    `ssl_read_impl`, and writes the connection afterwards (consumes what
//!    it read, which `SSL_peek` does not);
//! 6. check each entry independently: padded start, called directly from
//!    somewhere, a frame-setting prologue, `(ssl, buf, num)` read as
//!    arguments before being written, no indirect jumps, every error call
//!    to the same `ERR_put_error`. Each match must be unique.
//!
//! Anything missing, unreadable or ambiguous refuses the whole file: no
//! probe is attached, the refusal is counted and logged, and `blind_spot`
//! findings for its processes cite it. A wrong offset is never probed: a
//! uprobe in the middle of an instruction would corrupt the program.
//!
//! Results (and refusals) are cached in memory by GNU build-id: a Bun
//! single-file executable keeps the build-id of the Bun it was made from,
//! so every process of every such program of one Bun release is resolved
//! once. A cache hit is checked against the code bytes at both entries.

mod flow;
mod image;
mod signature;
mod xref;

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

pub use self::signature::Refusal;
use self::{image::Image, signature::Found};

/// How the offsets were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Analysed in this file now.
    Signature,
    /// Taken from the analysis of an earlier file with the same build-id,
    /// whose entry bytes this file repeats.
    BuildIdCache,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Signature => "boringssl-signature",
            Method::BuildIdCache => "boringssl-build-id-cache",
        }
    }
}

/// File offsets of the hooked functions, and how they were proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoringOffsets {
    /// `int SSL_write(SSL *ssl, const void *buf, int num)`.
    pub write: u64,
    /// `int SSL_read(SSL *ssl, void *buf, int num)`.
    pub read: u64,
    /// `int SSL_shutdown(SSL *ssl)`: where the application ends a
    /// connection (no plaintext moves after it). `SSL_free` has no error
    /// call to recognise it by.
    pub shutdown: Option<u64>,
    pub method: Method,
    pub build_id: Option<String>,
    /// One line per proven function.
    pub evidence: Vec<String>,
    /// Time the analysis took (the first time, for a cache hit).
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("{path} is not an ELF file we can parse")]
    Parse {
        path: String,
        #[source]
        source: object::Error,
    },
    #[error("{path} is not a little-endian x86-64 ELF file")]
    NotX86_64 { path: String },
    #[error("{path} is cut short: a segment lies past its end")]
    Truncated { path: String },
    /// No `ssl_lib.cc` string: not `BoringSSL` (not an error for callers).
    #[error("{path} does not contain BoringSSL")]
    NotBoringSsl { path: String },
    #[error("{path} links BoringSSL but its SSL_write/SSL_read were not proven: {reason}")]
    Refused {
        path: String,
        build_id: Option<String>,
        #[source]
        reason: Refusal,
    },
}

/// Bytes compared at each cached entry before a cache hit is used.
const FINGERPRINT: usize = 64;
/// Build-ids remembered at most.
const MAX_CACHED: usize = 1024;

#[derive(Clone)]
enum Cached {
    Found {
        offsets: BoringOffsets,
        /// Code bytes at (write, read, shutdown) entries.
        fingerprint: Vec<Vec<u8>>,
    },
    Refused(Refusal),
}

static CACHE: Mutex<Option<HashMap<String, Cached>>> = Mutex::new(None);

/// Executables located by analysis, by the build-id cache, and refused.
static LOCATED: AtomicU64 = AtomicU64::new(0);
static FROM_CACHE: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// `(name, value)` counters for `agent.health`: executables whose `BoringSSL`
/// was located (analysed / from the build-id cache) and refused.
pub fn counters() -> [(&'static str, u64); 3] {
    [
        ("tls_boringssl_located", LOCATED.load(Ordering::Relaxed)),
        (
            "tls_boringssl_located_from_cache",
            FROM_CACHE.load(Ordering::Relaxed),
        ),
        ("tls_boringssl_refused", REFUSED.load(Ordering::Relaxed)),
    ]
}

/// Finds `SSL_write` and `SSL_read` (and `SSL_shutdown`) in the stripped
/// executable `elf` (the bytes of the file at `path`).
pub fn locate(path: &Path, elf: &[u8]) -> Result<BoringOffsets, LocateError> {
    let r = locate_uncounted(path, elf);
    match &r {
        Ok(o) if o.method == Method::BuildIdCache => FROM_CACHE.fetch_add(1, Ordering::Relaxed),
        Ok(_) => LOCATED.fetch_add(1, Ordering::Relaxed),
        Err(LocateError::Refused { .. }) => REFUSED.fetch_add(1, Ordering::Relaxed),
        Err(_) => 0,
    };
    r
}

fn locate_uncounted(path: &Path, elf: &[u8]) -> Result<BoringOffsets, LocateError> {
    let started = Instant::now();
    let p = path.display().to_string();
    let img = Image::parse(&p, elf)?;
    let files = xref::ssl_lib_strings(&img);
    if files.is_empty() {
        return Err(LocateError::NotBoringSsl { path: p });
    }
    if let Some(id) = &img.build_id {
        if let Some(hit) = cached(&img, id) {
            return hit.map_err(|reason| LocateError::Refused {
                path: p,
                build_id: Some(id.clone()),
                reason,
            });
        }
    }
    let result = signature::find(&img, &files).and_then(|found| offsets(&img, &found, started));
    if let Some(id) = &img.build_id {
        remember(&img, id, &result);
    }
    result.map_err(|reason| LocateError::Refused {
        path: p,
        build_id: img.build_id.clone(),
        reason,
    })
}

fn offsets(img: &Image<'_>, f: &Found, started: Instant) -> Result<BoringOffsets, Refusal> {
    let off = |name: &'static str, a: u64| {
        img.file_offset(a).ok_or(Refusal::Check {
            name,
            entry: a,
            what: "not backed by the file",
        })
    };
    let mut evidence = vec![f.write.evidence.clone(), f.read.evidence.clone()];
    if let Some(s) = &f.shutdown {
        evidence.push(s.evidence.clone());
    }
    evidence.push(format!(
        "{} functions with ssl_lib.cc error calls analysed, {} file-name loads outside them",
        f.functions, f.orphan_loads
    ));
    Ok(BoringOffsets {
        write: off("SSL_write", f.write.entry)?,
        read: off("SSL_read", f.read.entry)?,
        shutdown: f
            .shutdown
            .as_ref()
            .map(|s| off("SSL_shutdown", s.entry))
            .transpose()?,
        method: Method::Signature,
        build_id: img.build_id.clone(),
        evidence,
        took: started.elapsed(),
    })
}

/// The code bytes at each hooked entry, by file offset.
fn fingerprint(img: &Image<'_>, o: &BoringOffsets) -> Option<Vec<Vec<u8>>> {
    let at = |off: u64| {
        let s = img
            .segments
            .iter()
            .find(|s| off >= s.offset && off - s.offset < s.data.len() as u64)?;
        let start = usize::try_from(off - s.offset).ok()?;
        s.data.get(start..start + FINGERPRINT).map(<[u8]>::to_vec)
    };
    [Some(o.write), Some(o.read), o.shutdown]
        .into_iter()
        .flatten()
        .map(at)
        .collect()
}

fn cached(img: &Image<'_>, id: &str) -> Option<Result<BoringOffsets, Refusal>> {
    let guard = CACHE.lock().ok()?;
    match guard.as_ref()?.get(id)? {
        Cached::Refused(r) => Some(Err(r.clone())),
        Cached::Found {
            offsets,
            fingerprint: fp,
        } => {
            // Same build-id, other bytes: analyse this file on its own.
            if fingerprint(img, offsets).as_ref() != Some(fp) {
                return None;
            }
            let mut o = offsets.clone();
            o.method = Method::BuildIdCache;
            Some(Ok(o))
        }
    }
}

fn remember(img: &Image<'_>, id: &str, r: &Result<BoringOffsets, Refusal>) {
    let entry = match r {
        Ok(o) => match fingerprint(img, o) {
            Some(fp) => Cached::Found {
                offsets: o.clone(),
                fingerprint: fp,
            },
            None => return,
        },
        Err(e) => Cached::Refused(e.clone()),
    };
    if let Ok(mut guard) = CACHE.lock() {
        let map = guard.get_or_insert_with(HashMap::new);
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(id.to_owned(), entry);
    }
}

/// What this daemon concluded about the `BoringSSL` in executables with this
/// build-id, for a `blind_spot` finding's detail: None when it never saw
/// `BoringSSL` there.
pub fn status_for_build_id(build_id: &str) -> Option<String> {
    let guard = CACHE.lock().ok()?;
    match guard.as_ref()?.get(build_id)? {
        Cached::Refused(r) => Some(format!(
            "statically linked BoringSSL found, its SSL_write/SSL_read were not proven and no probe was attached ({r})"
        )),
        Cached::Found { offsets, .. } => Some(format!(
            "statically linked BoringSSL found and hooked by {} (SSL_write at file offset {:#x}, SSL_read at {:#x})",
            offsets.method.as_str(),
            offsets.write,
            offsets.read
        )),
    }
}

/// Records a refusal for a build-id, as an analysis would (tests of the
/// modules that read it).
#[cfg(test)]
pub(crate) fn note_refusal(build_id: &str, r: Refusal) {
    if let Ok(mut guard) = CACHE.lock() {
        guard
            .get_or_insert_with(HashMap::new)
            .insert(build_id.to_owned(), Cached::Refused(r));
    }
}
