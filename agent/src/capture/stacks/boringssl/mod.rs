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
//! # Hooks
//! `BoringSSL`'s `SSL_write` and `SSL_read` have `OpenSSL`'s prototypes and
//! return conventions, so they get `OpenSSL`'s programs
//! (agent-ebpf/src/tls_openssl.rs, entry and return). `SSL_shutdown` takes
//! the place of `SSL_free` (the connection-end marker): `BoringSSL`'s
//! `SSL_free` makes no error call to recognise it by, and no plaintext moves
//! after `SSL_shutdown`.
//!
//! # Caches
//! Results (and refusals) are cached in memory by GNU build-id: a Bun
//! single-file executable keeps the build-id of the Bun it was made from,
//! so every process of every such program of one Bun release is resolved
//! once. A memory hit is checked against the code bytes at each entry.
//! Proven entries are also kept on disk, in `[capture] hook_cache_dir`
//! (`boringssl-BUILDID.json`, 0600 in a 0700 directory, written atomically),
//! so a restarted daemon does not search again; what the disk says is
//! proven again before use (every function decoded and put through the
//! same checks, see `signature::verify`), so a stale or altered file can
//! never place a probe. Refusals are not kept on disk: the next start looks
//! again.

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

pub use self::signature::{Entries, Refusal};
use self::{image::Image, signature::Found};
use super::{Elf, Hook, Method, Resolved, Stack};

/// `BoringSSL` uses `OpenSSL`'s programs (listed, and loaded, once under
/// [`super::openssl::PROGRAMS`]).
pub const PROGRAMS: &[&str] = &[];

/// (function, programs): entry and return for the two I/O functions, the
/// connection-end marker at `SSL_shutdown`.
const WRITE_PROGRAMS: [&str; 2] = ["tls_openssl_ssl_write", "tls_openssl_ssl_write_ret"];
const READ_PROGRAMS: [&str; 2] = ["tls_openssl_ssl_read", "tls_openssl_ssl_read_ret"];
const SHUTDOWN_PROGRAM: &str = "tls_openssl_ssl_free";

/// Claims an x86-64 ELF file that links `BoringSSL` (its `ssl_lib.cc` error
/// calls); refuses it when its functions cannot be proven.
pub fn resolve(elf: &Elf<'_>) -> Result<Option<Resolved>, String> {
    use object::Object as _;
    if elf.obj.architecture() != object::Architecture::X86_64 {
        return Ok(None);
    }
    match locate(elf.path, elf.data) {
        Ok(o) => Ok(Some(Resolved {
            stack: Stack::BoringSsl,
            method: Method::Signature,
            hooks: hooks(&o),
        })),
        Err(LocateError::Refused { reason, .. }) => Err(reason.to_string()),
        Err(e) => {
            tracing::trace!(error = %e, "not BoringSSL");
            Ok(None)
        }
    }
}

/// The probes for located offsets.
pub fn hooks(o: &BoringOffsets) -> Vec<Hook> {
    let mut hooks = Vec::new();
    for (function, offset, programs) in [
        ("SSL_write", o.write, &WRITE_PROGRAMS[..]),
        ("SSL_read", o.read, &READ_PROGRAMS[..]),
    ] {
        for program in programs {
            hooks.push(Hook {
                function,
                program,
                offset,
            });
        }
    }
    if let Some(offset) = o.shutdown {
        hooks.push(Hook {
            function: "SSL_shutdown",
            program: SHUTDOWN_PROGRAM,
            offset,
        });
    }
    hooks
}

/// Where the offsets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Analysed in this file now.
    Analysis,
    /// Taken from the analysis of an earlier file with the same build-id,
    /// whose entry bytes this file repeats.
    MemoryCache,
    /// Read from the disk cache and proven again on this file.
    DiskCache,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Analysis => "analysis",
            Source::MemoryCache => "memory-cache",
            Source::DiskCache => "disk-cache",
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
    /// The virtual addresses proven (what the disk cache keeps).
    pub entries: Entries,
    pub source: Source,
    pub build_id: Option<String>,
    /// One line per proven function.
    pub evidence: Vec<String>,
    /// Time the analysis took (the first time, for a memory hit).
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

/// Executables located by analysis, by a cache (memory or disk), and
/// refused.
static LOCATED: AtomicU64 = AtomicU64::new(0);
static FROM_CACHE: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// `(name, value)` counters for `agent.health`: executables whose `BoringSSL`
/// was located (analysed / from a build-id cache) and refused.
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
        Ok(o) => {
            tracing::info!(
                path = %path.display(),
                source = o.source.as_str(),
                build_id = o.build_id.as_deref().unwrap_or("-"),
                took_ms = o.took.as_millis(),
                evidence = ?o.evidence,
                "BoringSSL located in a stripped executable"
            );
            if o.source == Source::Analysis {
                LOCATED.fetch_add(1, Ordering::Relaxed);
            } else {
                FROM_CACHE.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(LocateError::Refused { .. }) => {
            REFUSED.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {}
    }
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
    let refused = |reason| LocateError::Refused {
        path: p.clone(),
        build_id: img.build_id.clone(),
        reason,
    };
    let Some(id) = img.build_id.clone() else {
        return signature::find(&img, &files)
            .and_then(|f| offsets(&img, &f, started, Source::Analysis))
            .map_err(refused);
    };
    if let Some(hit) = cached(&img, &id) {
        return hit.map_err(refused);
    }
    if let Some(o) = from_disk(&img, &files, &id, started) {
        remember(&img, &id, &Ok(o.clone()));
        return Ok(o);
    }
    let result =
        signature::find(&img, &files).and_then(|f| offsets(&img, &f, started, Source::Analysis));
    if let (Ok(o), Some(dir)) = (&result, super::hook_cache_dir()) {
        if let Err(e) = store_entries(dir, &id, o.entries) {
            tracing::warn!(dir = %dir.display(), error = %e, "hook cache not written");
        }
    }
    remember(&img, &id, &result);
    result.map_err(refused)
}

/// A disk cache file holds a few dozen bytes; anything larger is not ours.
const MAX_CACHE_FILE: u64 = 4096;

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheFile {
    v: u32,
    write: u64,
    read: u64,
    read_impl: u64,
    shutdown: Option<u64>,
}

fn cache_name(build_id: &str) -> Option<String> {
    // The build-id is hex from the ELF note: never a path.
    (!build_id.is_empty()
        && build_id.len() <= 128
        && build_id.bytes().all(|b| b.is_ascii_hexdigit()))
    .then(|| format!("boringssl-{build_id}.json"))
}

/// The entries stored for `build_id`, if a well-formed file is there.
pub fn load_entries(dir: &Path, build_id: &str) -> Option<Entries> {
    let body = super::read_private(dir, &cache_name(build_id)?, MAX_CACHE_FILE)?;
    let f: CacheFile = serde_json::from_slice(&body).ok()?;
    (f.v == 1).then_some(Entries {
        write: f.write,
        read: f.read,
        read_impl: f.read_impl,
        shutdown: f.shutdown,
    })
}

/// Stores the proven entries for `build_id` (0700 directory, 0600 file,
/// atomic).
pub fn store_entries(dir: &Path, build_id: &str, e: Entries) -> std::io::Result<()> {
    let name = cache_name(build_id)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "build-id"))?;
    let body = serde_json::to_vec(&CacheFile {
        v: 1,
        write: e.write,
        read: e.read,
        read_impl: e.read_impl,
        shutdown: e.shutdown,
    })?;
    super::write_private(dir, &name, &body)
}

/// Proves remembered entries again on the file at `path`, as the disk
/// cache's answer is before use.
pub fn reprove(path: &Path, elf: &[u8], entries: Entries) -> Result<BoringOffsets, LocateError> {
    let started = Instant::now();
    let p = path.display().to_string();
    let img = Image::parse(&p, elf)?;
    let files = xref::ssl_lib_strings(&img);
    if files.is_empty() {
        return Err(LocateError::NotBoringSsl { path: p });
    }
    signature::verify(&img, &files, entries)
        .and_then(|f| offsets(&img, &f, started, Source::DiskCache))
        .map_err(|reason| LocateError::Refused {
            path: p,
            build_id: img.build_id.clone(),
            reason,
        })
}

/// The disk cache's answer for this build, proven again on this file.
fn from_disk(img: &Image<'_>, files: &[u64], id: &str, started: Instant) -> Option<BoringOffsets> {
    let dir = super::hook_cache_dir()?;
    let entries = load_entries(dir, id)?;
    match signature::verify(img, files, entries)
        .and_then(|f| offsets(img, &f, started, Source::DiskCache))
    {
        Ok(o) => Some(o),
        Err(reason) => {
            tracing::warn!(
                build_id = id, error = %reason,
                "cached BoringSSL entries not proven again on this file: searching it"
            );
            None
        }
    }
}

fn offsets(
    img: &Image<'_>,
    f: &Found,
    started: Instant,
    source: Source,
) -> Result<BoringOffsets, Refusal> {
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
    if source == Source::Analysis {
        evidence.push(format!(
            "{} functions with ssl_lib.cc error calls analysed, {} file-name loads outside them",
            f.functions, f.orphan_loads
        ));
    }
    Ok(BoringOffsets {
        write: off("SSL_write", f.write.entry)?,
        read: off("SSL_read", f.read.entry)?,
        shutdown: f
            .shutdown
            .as_ref()
            .map(|s| off("SSL_shutdown", s.entry))
            .transpose()?,
        entries: Entries {
            write: f.write.entry,
            read: f.read.entry,
            read_impl: f.read_impl,
            shutdown: f.shutdown.as_ref().map(|s| s.entry),
        },
        source,
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
            o.source = Source::MemoryCache;
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
