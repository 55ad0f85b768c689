//! The TLS stacks aitrail hooks, and how each one's hook points are found in
//! a file.
//!
//! A resolver looks at one ELF file and, when it recognises its stack,
//! returns the [`Hook`]s to attach: a program at a file offset, for the
//! entry of a function or (for stacks that cannot use uretprobes, like Go)
//! at each of its return instructions. Resolvers run in [`RESOLVERS`] order;
//! the first that claims a file wins. Each says how it found its offsets
//! ([`Method`]), which the attach log and `blind_spot` findings report.

pub mod boringssl;
pub mod gnutls;
pub mod go;
pub mod nss;
pub mod openssl;
pub mod rustls;

use std::{
    collections::HashMap,
    fmt, fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
};

/// A TLS implementation (ordered by how common it is as a shared library).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stack {
    /// OpenSSL 1.1 / 3.x, shared (`libssl.so.*`) or linked in (node).
    OpenSsl,
    /// `GnuTLS` 3.x (`libgnutls.so.30`: wget, gnutls-cli, libcurl3-gnutls).
    GnuTls,
    /// NSS over NSPR (`libssl3.so` + `libnspr4.so`, or both folded into
    /// Mozilla's `libnss3.so`: Firefox, Thunderbird, tstclnt, libcurl3-nss).
    Nss,
    /// Go's `crypto/tls`, linked into Go programs (Go 1.17+, register ABI).
    GoTls,
    /// rustls over aws-lc-rs, linked into a (usually stripped) program.
    Rustls,
    /// `BoringSSL` linked statically into a stripped program (Bun and Bun
    /// single-file executables such as Claude Code).
    BoringSsl,
}

impl Stack {
    pub const fn as_str(self) -> &'static str {
        match self {
            Stack::OpenSsl => "openssl",
            Stack::GnuTls => "gnutls",
            Stack::Nss => "nss",
            Stack::GoTls => "go-crypto-tls",
            Stack::Rustls => "rustls",
            Stack::BoringSsl => "boringssl",
        }
    }
}

impl fmt::Display for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a target's hook offsets were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// From the ELF symbol tables (dynamic first, then the full table).
    Symbol,
    /// From Go's function table (`.gopclntab`): stripped Go binaries.
    Pclntab,
    /// From code signatures in a stripped binary, each checked by decoding.
    Signature,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Symbol => "symbol",
            Method::Pclntab => "pclntab",
            Method::Signature => "signature",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One probe: `program` attached at `offset` in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    /// The hooked function, for logs (`SSL_write`).
    pub function: &'static str,
    /// The eBPF program (a uprobe or uretprobe) in the embedded object.
    pub program: &'static str,
    /// File offset of the probed instruction.
    pub offset: u64,
}

/// What a resolver found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub stack: Stack,
    pub method: Method,
    pub hooks: Vec<Hook>,
}

/// A parsed ELF file, as a resolver sees it.
pub struct Elf<'a> {
    pub path: &'a Path,
    pub data: &'a [u8],
    pub obj: &'a object::File<'a>,
}

/// `Ok(None)`: not this resolver's stack. `Err`: its stack, but its hooks
/// cannot be placed safely (refused, and reported).
pub type Resolver = fn(&Elf<'_>) -> Result<Option<Resolved>, String>;

/// Every resolver, in the order they are tried.
pub const RESOLVERS: &[(Stack, Resolver)] = &[
    (Stack::OpenSsl, openssl::resolve),
    (Stack::GnuTls, gnutls::resolve),
    (Stack::Nss, nss::resolve),
    (Stack::GoTls, go::resolve),
    (Stack::Rustls, rustls::resolve),
    // After rustls: aws-lc (under rustls) carries a copy of BoringSSL's
    // libssl sources, which Codex does not link.
    (Stack::BoringSsl, boringssl::resolve),
];

/// The program every TLS return probe tail-calls to copy the plaintext
/// (agent-ebpf/src/tls.rs): loaded with them, never attached.
pub const COPY_PROGRAM: &str = "tls_copy";

/// Every TLS program in the eBPF object, by stack (loaded at start,
/// attached per process).
pub const PROGRAMS: &[&[&str]] = &[
    openssl::PROGRAMS,
    gnutls::PROGRAMS,
    nss::PROGRAMS,
    go::PROGRAMS,
    rustls::PROGRAMS,
    boringssl::PROGRAMS,
];

/// The programs a stack's hooks may name (`BoringSSL` shares `OpenSSL`'s,
/// which [`PROGRAMS`] lists once: a program is loaded once).
pub fn programs_of(stack: Stack) -> &'static [&'static str] {
    match stack {
        Stack::OpenSsl | Stack::BoringSsl => openssl::PROGRAMS,
        Stack::GnuTls => gnutls::PROGRAMS,
        Stack::Nss => nss::PROGRAMS,
        Stack::GoTls => go::PROGRAMS,
        Stack::Rustls => rustls::PROGRAMS,
    }
}

/// Is this the file name of a shared TLS library some resolver reads? The
/// kernel's `LIB_OPEN` filter (agent-ebpf/src/file.rs `is_tls_library`)
/// must match the same names, so a library loaded after start is attached
/// before it is used.
pub fn is_library_name(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        openssl::is_library_name(n) || gnutls::is_library_name(n) || nss::is_library_name(n)
    })
}

/// `name` or `name.SUFFIX` (`libssl.so`, `libssl.so.3`), not `nameX`.
pub(crate) fn is_versioned(file: &str, name: &str) -> bool {
    file.strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The file offsets of the named symbols, dynamic symbols first (they
/// usually have them all, and the full table of a big executable is
/// megabytes), then the full symbol table.
pub fn find_symbols<const N: usize>(obj: &object::File<'_>, names: [&str; N]) -> [Option<u64>; N] {
    use object::{Object, ObjectSymbol};
    let mut offsets = [None; N];
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        let Ok(name) = sym.name() else { continue };
        let Some(i) = names.iter().position(|n| *n == name) else {
            continue;
        };
        if offsets[i].is_some() {
            continue;
        }
        offsets[i] = symbol_file_offset(obj, &sym);
        if offsets.iter().all(Option::is_some) {
            break;
        }
    }
    offsets
}

/// The hooks of a table of (function, entry program, return program) rows
/// whose functions were found at `offsets`.
pub fn hooks(
    table: &[(&'static str, Option<&'static str>, Option<&'static str>)],
    offsets: &[Option<u64>],
) -> Vec<Hook> {
    let mut hooks = Vec::new();
    for ((function, entry, ret), off) in table.iter().zip(offsets) {
        let Some(offset) = *off else { continue };
        for program in entry.iter().chain(ret) {
            hooks.push(Hook {
                function,
                program,
                offset,
            });
        }
    }
    hooks
}

/// The file offset of a symbol's address, from its section.
pub fn symbol_file_offset(obj: &object::File<'_>, sym: &object::Symbol<'_, '_>) -> Option<u64> {
    use object::{Object, ObjectSection, ObjectSymbol};
    if sym.address() == 0 || !sym.is_definition() {
        return None;
    }
    let section = obj.section_by_index(sym.section_index()?).ok()?;
    let (file_off, _) = section.file_range()?;
    Some(sym.address() - section.address() + file_off)
}

/// The directory of the per-build hook cache (`[capture] hook_cache_dir`)
/// of the resolvers that search code (rustls, `BoringSSL`), set once at
/// start; unset or empty: memory only.
static HOOK_CACHE_DIR: OnceLock<PathBuf> = OnceLock::new();

pub fn set_hook_cache_dir(dir: &Path) {
    let _ = HOOK_CACHE_DIR.set(dir.to_path_buf());
}

pub fn hook_cache_dir() -> Option<&'static Path> {
    HOOK_CACHE_DIR
        .get()
        .map(PathBuf::as_path)
        .filter(|d| !d.as_os_str().is_empty())
}

/// The bytes of `dir/name` when it is a regular file of at most `max`
/// bytes. What it says is the caller's to check.
pub fn read_private(dir: &Path, name: &str, max: u64) -> Option<Vec<u8>> {
    let path = dir.join(name);
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > max {
        return None;
    }
    fs::read(&path).ok()
}

/// Writes `dir/name`: the directory 0700, the file 0600, written whole then
/// renamed so a reader never sees half of it.
pub fn write_private(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)
}

/// Build-ids remembered with what became of their TLS stack.
const MAX_OUTCOMES: usize = 4096;

fn outcomes() -> &'static Mutex<HashMap<String, String>> {
    static OUTCOMES: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    OUTCOMES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Records what capture concluded about the TLS stack of the executables
/// with this GNU build-id (hex): hooked, or refused and why.
pub fn note_outcome(build_id: &str, outcome: String) {
    if let Ok(mut m) = outcomes().lock() {
        if m.len() >= MAX_OUTCOMES && !m.contains_key(build_id) {
            m.clear();
        }
        m.insert(build_id.to_owned(), outcome);
    }
}

/// What capture concluded about the TLS stack of executables with this
/// build-id, for a `blind_spot` finding's detail: None when no resolver
/// recognised one there.
pub fn outcome_for_build_id(build_id: &str) -> Option<String> {
    outcomes().lock().ok()?.get(build_id).cloned()
}
