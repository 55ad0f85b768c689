//! Go's `crypto/tls`, linked into every Go program that speaks TLS: the
//! plaintext of `(*Conn).Write` and `(*Conn).Read`.
//!
//! Go has its own calling convention. Since Go 1.17 on amd64 (`ABIInternal`)
//! the receiver and the slice come in registers (`*Conn` in RAX, the buffer's
//! pointer, length and capacity in RBX, RCX, RDI), the results go back in
//! registers (`n` in RAX, the error in RBX/RCX), and R14 holds the running
//! goroutine. The programs (agent-ebpf/src/tls_go.rs) read those registers;
//! this resolver makes sure they are right to:
//! - the functions are found by the symbol table ([`Method::Symbol`]) or,
//!   in stripped binaries, by the pclntab ([`Method::Pclntab`], see
//!   [`pclntab`]); a symbol must agree with the pclntab;
//! - their prologue must check the stack through R14 (the register ABI;
//!   older Go is refused with that reason);
//! - returns are probed with uprobes on each `RET` — never uretprobes, which
//!   break goroutine stacks — and each `RET` must be an instruction start
//!   found by decoding the whole function ([`code`]) where the pclntab says
//!   the frame is popped (stack pointer back at its entry value).
//!
//! Anything that does not hold is a refusal with its reason: a probe in the
//! wrong place would corrupt the program. `Write` needs no return probe
//! (its plaintext is copied at entry, see agent-ebpf/src/tls_go.rs);
//! `(*Conn).Close` tells userspace a connection ended;
//! `internal/poll.(*FD).Read`, called under `Read` on the same goroutine,
//! gives the socket's fd (optional).

mod code;
pub mod pclntab;

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

pub use self::code::{check_register_abi, find_returns, CodeError};
use self::pclntab::{Pclntab, Version};
use super::{Elf, Hook, Method, Resolved, Stack};

/// What is hooked, and how.
struct Target {
    function: &'static str,
    entry: &'static str,
    /// Program on each `RET`.
    ret: Option<&'static str>,
    /// Without it the others still work (the fd is then unknown).
    optional: bool,
}

const WRITE: &str = "crypto/tls.(*Conn).Write";
const READ: &str = "crypto/tls.(*Conn).Read";

const TARGETS: [Target; 4] = [
    Target {
        function: WRITE,
        entry: "tls_go_write",
        // Copied at entry: see agent-ebpf/src/tls_go.rs.
        ret: None,
        optional: false,
    },
    Target {
        function: READ,
        entry: "tls_go_read",
        ret: Some("tls_go_read_ret"),
        optional: false,
    },
    Target {
        function: "crypto/tls.(*Conn).Close",
        entry: "tls_go_close",
        ret: None,
        optional: true,
    },
    Target {
        function: "internal/poll.(*FD).Read",
        entry: "tls_go_fd_io",
        ret: None,
        optional: true,
    },
];

pub const PROGRAMS: &[&str] = &[
    "tls_go_write",
    "tls_go_read",
    "tls_go_read_ret",
    "tls_go_close",
    "tls_go_fd_io",
];

/// One hooked function, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFunction {
    pub name: &'static str,
    /// Virtual address of its entry.
    pub entry: u64,
    /// File offset of its entry.
    pub entry_offset: u64,
    /// Virtual addresses of its `RET`s (empty for entry-only hooks).
    pub returns: Vec<u64>,
    /// File offsets of the same.
    pub return_offsets: Vec<u64>,
}

/// A Go binary's `crypto/tls`, as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoTls {
    pub version: Version,
    pub method: Method,
    pub functions: Vec<GoFunction>,
}

#[derive(Debug, thiserror::Error)]
pub enum GoError {
    #[error("Go pclntab unreadable")]
    Pclntab(#[from] pclntab::PclntabError),
    #[error("{function}: symbol at {symbol:#x} disagrees with the pclntab ({pclntab})")]
    SymbolMismatch {
        function: &'static str,
        symbol: u64,
        pclntab: String,
    },
    #[error("{function} at {addr:#x}: its code is not in the file")]
    NoCode { function: &'static str, addr: u64 },
    #[error("{function}: {source}")]
    Code {
        function: &'static str,
        #[source]
        source: CodeError,
    },
    #[error("{function}: RET at {addr:#x} is where the stack pointer is {delta:?} from its entry value, not 0")]
    FrameNotPopped {
        function: &'static str,
        addr: u64,
        delta: Option<i32>,
    },
    #[error("{version} pclntab: Go before 1.17 passes arguments on the stack, not hooked")]
    StackAbi { version: Version },
}

/// Claims a Go binary that links `crypto/tls`.
pub fn resolve(elf: &Elf<'_>) -> Result<Option<Resolved>, String> {
    let found = match analyse(elf) {
        Ok(None) => return Ok(None),
        Ok(Some(f)) => f,
        Err(e) => return Err(error_chain(&e)),
    };
    let mut hooks = Vec::new();
    for f in &found.functions {
        let t = TARGETS
            .iter()
            .find(|t| t.function == f.name)
            .expect("analyse returns only TARGETS");
        hooks.push(Hook {
            function: t.function,
            program: t.entry,
            offset: f.entry_offset,
        });
        if let Some(ret) = t.ret {
            hooks.extend(f.return_offsets.iter().map(|&offset| Hook {
                function: t.function,
                program: ret,
                offset,
            }));
        }
    }
    Ok(Some(Resolved {
        stack: Stack::GoTls,
        method: found.method,
        hooks,
    }))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Finds and checks the hooked functions. `Ok(None)`: not a Go binary, or
/// one without `crypto/tls`.
pub fn analyse(elf: &Elf<'_>) -> Result<Option<GoTls>, GoError> {
    let text = elf.obj.section_by_name(".text").map(|s| s.address());
    let Some(table) = find_pclntab(elf, text) else {
        return Ok(None);
    };
    let table = table?;
    let names: Vec<&str> = TARGETS.iter().map(|t| t.function).collect();

    // Symbols first: a name there is the linker's word. Each must agree
    // with the pclntab, which gives the function's end.
    let mut from_symbols: Vec<Option<u64>> = vec![None; TARGETS.len()];
    for sym in elf.obj.symbols() {
        let Ok(name) = sym.name() else { continue };
        if let Some(i) = names.iter().position(|n| *n == name) {
            if sym.address() != 0 {
                from_symbols[i] = Some(sym.address());
            }
        }
    }
    let mut funcs: Vec<Option<pclntab::Func>> = Vec::with_capacity(TARGETS.len());
    let method = if from_symbols[0].is_some() || from_symbols[1].is_some() {
        for (i, addr) in from_symbols.iter().enumerate() {
            let Some(addr) = *addr else {
                funcs.push(None);
                continue;
            };
            let f = table.func_for_pc(addr)?;
            match f {
                Some(f) if f.entry == addr && f.name == names[i] => funcs.push(Some(f)),
                other => {
                    return Err(GoError::SymbolMismatch {
                        function: TARGETS[i].function,
                        symbol: addr,
                        pclntab: other.map_or_else(
                            || "no function there".to_string(),
                            |f| format!("{} at {:#x}", f.name, f.entry),
                        ),
                    })
                }
            }
        }
        Method::Symbol
    } else {
        funcs = table.find_all(&names)?;
        Method::Pclntab
    };
    if funcs[0].is_none() && funcs[1].is_none() {
        // A Go program without crypto/tls.
        return Ok(None);
    }
    if table.version() == Version::Go12 {
        return Err(GoError::StackAbi {
            version: table.version(),
        });
    }

    let mut out = Vec::new();
    for (t, f) in TARGETS.iter().zip(funcs) {
        let Some(f) = f else {
            if !t.optional {
                tracing::debug!(function = t.function, "Go function not linked in");
            }
            continue;
        };
        let (entry_offset, code) = code_of(elf, f.entry, f.end).ok_or(GoError::NoCode {
            function: t.function,
            addr: f.entry,
        })?;
        let code_err = |source| GoError::Code {
            function: t.function,
            source,
        };
        check_register_abi(code, f.entry).map_err(code_err)?;
        let mut returns = Vec::new();
        if t.ret.is_some() {
            returns = find_returns(code, f.entry).map_err(code_err)?;
            for &r in &returns {
                let delta = table.sp_delta_at(&f, r)?;
                if delta != Some(0) {
                    return Err(GoError::FrameNotPopped {
                        function: t.function,
                        addr: r,
                        delta,
                    });
                }
            }
        }
        out.push(GoFunction {
            name: t.function,
            entry: f.entry,
            entry_offset,
            return_offsets: returns
                .iter()
                .map(|r| entry_offset + (r - f.entry))
                .collect(),
            returns,
        });
    }
    Ok(Some(GoTls {
        version: table.version(),
        method,
        functions: out,
    }))
}

/// The pclntab: its section when the file has one (`.gopclntab`, or
/// `.data.rel.ro.gopclntab` in position-independent builds), else — only
/// for files with no section headers at all — the first place in a loaded
/// segment where a valid header starts. `None`: not a Go binary.
fn find_pclntab<'a>(
    elf: &Elf<'a>,
    text: Option<u64>,
) -> Option<Result<Pclntab<'a>, pclntab::PclntabError>> {
    for name in [".gopclntab", ".data.rel.ro.gopclntab"] {
        if let Some(s) = elf.obj.section_by_name(name) {
            let (off, size) = s.file_range()?;
            let data = slice(elf.data, off, size)?;
            return Some(Pclntab::parse(data, text));
        }
    }
    if elf.obj.sections().next().is_some() {
        return None;
    }
    // Stripped of section headers (sstrip, packers that keep segments).
    let magics = [0xffff_fff1u32, 0xffff_fff0, 0xffff_fffa, 0xffff_fffb];
    let mut tried = 0;
    for seg in elf.obj.segments() {
        let (off, size) = seg.file_range();
        let Some(data) = slice(elf.data, off, size) else {
            continue;
        };
        // The table is pointer-aligned in memory; segments are page-aligned.
        for i in (0..data.len().saturating_sub(16)).step_by(8) {
            let m = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
            if !magics.contains(&m) {
                continue;
            }
            tried += 1;
            if tried > 256 {
                return None;
            }
            if let Ok(t) = Pclntab::parse(&data[i..], text) {
                return Some(Ok(t));
            }
        }
    }
    None
}

fn slice(data: &[u8], off: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(off).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    data.get(start..end)
}

/// File offset and bytes of the code at `[start, end)`, from the loadable
/// segment that holds it.
fn code_of<'a>(elf: &Elf<'a>, start: u64, end: u64) -> Option<(u64, &'a [u8])> {
    for seg in elf.obj.segments() {
        let (off, filesz) = seg.file_range();
        let base = seg.address();
        if start < base || end > base.checked_add(filesz)? {
            continue;
        }
        let file_off = off + (start - base);
        return Some((file_off, slice(elf.data, file_off, end - start)?));
    }
    None
}
