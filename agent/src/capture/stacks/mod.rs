//! The TLS stacks aitrail hooks, and how each one's hook points are found in
//! a file.
//!
//! A resolver looks at one ELF file and, when it recognises its stack,
//! returns the [`Hook`]s to attach: a program at a file offset, for the
//! entry of a function or (for stacks that cannot use uretprobes, like Go)
//! at each of its return instructions. Resolvers run in [`RESOLVERS`] order;
//! the first that claims a file wins. Each says how it found its offsets
//! ([`Method`]), which the attach log and `blind_spot` findings report.

pub mod openssl;
pub mod rustls;

use std::{fmt, path::Path};

/// A TLS implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stack {
    /// OpenSSL 1.1 / 3.x, shared (`libssl.so.*`) or linked in (node).
    OpenSsl,
    /// rustls over aws-lc-rs, linked into a (usually stripped) program.
    Rustls,
}

impl Stack {
    pub const fn as_str(self) -> &'static str {
        match self {
            Stack::OpenSsl => "openssl",
            Stack::Rustls => "rustls",
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
    /// From code signatures in a stripped binary, each checked by decoding.
    Signature,
}

impl Method {
    pub const fn as_str(self) -> &'static str {
        match self {
            Method::Symbol => "symbol",
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
    (Stack::Rustls, rustls::resolve),
];

/// Every TLS program in the eBPF object, by stack (loaded at start,
/// attached per process).
pub const PROGRAMS: &[&[&str]] = &[openssl::PROGRAMS, rustls::PROGRAMS];

/// Is this the file name of a shared TLS library some resolver reads? The
/// kernel's `LIB_OPEN` filter (agent-ebpf/src/file.rs) must match the same
/// names, so a library loaded after start is attached before it is used.
pub fn is_library_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(openssl::is_library_name)
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
