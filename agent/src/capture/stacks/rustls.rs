//! rustls with the aws-lc-rs provider, in stripped static executables
//! (Codex CLI): the TLS record plaintext seen where aws-lc seals and opens it.
//!
//! rustls keeps no symbol a uprobe could use, and its own functions are
//! generic Rust code whose shape changes with every build. What does not
//! change is the C API of aws-lc underneath it: rustls' aws-lc-rs provider
//! encrypts every TLS 1.3 record with `EVP_AEAD_CTX_seal` (TLS 1.2:
//! `EVP_AEAD_CTX_seal_scatter`) and decrypts every record with
//! `EVP_AEAD_CTX_open`, one call per record, with the whole record's
//! plaintext in one buffer and the record header as the additional data.
//! The kernel programs (agent-ebpf/src/tls_rustls.rs) keep only calls whose
//! additional data is a TLS application-data record header of the right
//! length, so other uses of these functions in the same process are ignored.
//!
//! Finding the three functions without symbols: aws-lc reports errors with
//! `OPENSSL_PUT_ERROR(CIPHER, reason)`, which passes the source file's path
//! (`…/crypto/fipsmodule/cipher/aead.c`), the library (`ERR_LIB_CIPHER`,
//! 30) and a reason code to `ERR_put_error`. The reason codes are part of
//! aws-lc's (and `BoringSSL`'s) public headers and each of the three
//! functions raises its own set:
//!
//! | function                    | reasons                                       |
//! |-----------------------------|-----------------------------------------------|
//! | `EVP_AEAD_CTX_seal`         | `TOO_LARGE`, `BUFFER_TOO_SMALL`, `OUTPUT_ALIASES_INPUT` |
//! | `EVP_AEAD_CTX_seal_scatter` | `OUTPUT_ALIASES_INPUT`, `INVALID_OPERATION`   |
//! | `EVP_AEAD_CTX_open`         | `OUTPUT_ALIASES_INPUT`, `BAD_DECRYPT`, `BUFFER_TOO_SMALL` (+ `CTRL_NOT_IMPLEMENTED` when `open_gather` is inlined) |
//!
//! The resolver finds the path string, every `lea reg, [rip+…]` that loads
//! it, the function around each load from `.eh_frame` (the unwinder's
//! bounds, so the entry is a real instruction boundary), decodes each such
//! function whole and reads the `(library, reason)` pairs of its error
//! calls. A function is taken only when its set is exactly one of the rows
//! above, it dispatches through the AEAD's method table (an indirect call),
//! and its entry decodes as a normal prologue; each row must match at least
//! one function and no function two rows. Anything else is refused: a
//! wrong offset is never probed.
//!
//! The offsets are cached per build (GNU build-id, else a digest of the
//! file's size and unwind table), in memory and in `[capture]
//! hook_cache_dir`: the same Codex binary copied into many `node_modules`
//! folders, or run again after a restart, is not searched again, and a
//! cached answer (from memory or disk) is checked again — the functions
//! decoded and classified — before it is used, so a stale or altered cache
//! file cannot place a probe.

#[cfg(test)]
use std::path::PathBuf;
use std::{
    collections::HashMap,
    path::Path,
    sync::{Mutex, OnceLock},
};

use gimli::{BaseAddresses, EhFrame, EhFrameHdr, LittleEndian, UnwindSection};
use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, OpKind, Register};
use object::{Object, ObjectSection, SectionKind};
use sha2::{Digest, Sha256};

use super::{Elf, Hook, Method, Resolved, Stack};

/// The source file aws-lc's AEAD API is built from.
const AEAD_SOURCE: &[u8] = b"crypto/fipsmodule/cipher/aead.c";
/// `ERR_LIB_CIPHER`.
const LIB_CIPHER: u64 = 30;
/// `CIPHER_R_*` reason codes (include/openssl/cipher.h).
const BAD_DECRYPT: u64 = 101;
const BUFFER_TOO_SMALL: u64 = 103;
const CTRL_NOT_IMPLEMENTED: u64 = 104;
const INVALID_OPERATION: u64 = 112;
const OUTPUT_ALIASES_INPUT: u64 = 115;
const TOO_LARGE: u64 = 117;

/// Most functions of one kind taken from one file (two aws-lc copies, e.g.
/// a FIPS and a non-FIPS build, are plausible; more is not).
const MAX_PER_KIND: usize = 2;
/// Largest function decoded: the three are a few hundred bytes.
const MAX_FUNCTION_LEN: u64 = 16 * 1024;

pub const PROGRAMS: &[&str] = &[
    "tls_rustls_seal",
    "tls_rustls_seal_scatter",
    "tls_rustls_open",
    "tls_rustls_open_ret",
];

/// The aws-lc functions hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Seal,
    SealScatter,
    Open,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Seal, Kind::SealScatter, Kind::Open];

    pub const fn function(self) -> &'static str {
        match self {
            Kind::Seal => "EVP_AEAD_CTX_seal",
            Kind::SealScatter => "EVP_AEAD_CTX_seal_scatter",
            Kind::Open => "EVP_AEAD_CTX_open",
        }
    }

    /// Entry program, and return program when the plaintext is only there
    /// after the call.
    const fn programs(self) -> (&'static str, Option<&'static str>) {
        match self {
            Kind::Seal => ("tls_rustls_seal", None),
            Kind::SealScatter => ("tls_rustls_seal_scatter", None),
            Kind::Open => ("tls_rustls_open", Some("tls_rustls_open_ret")),
        }
    }

    /// Which function raises exactly these reasons.
    fn from_reasons(reasons: &[u64]) -> Option<Kind> {
        let has = |r| reasons.contains(&r);
        let only = |allowed: &[u64]| reasons.iter().all(|r| allowed.contains(r));
        if has(TOO_LARGE)
            && has(BUFFER_TOO_SMALL)
            && has(OUTPUT_ALIASES_INPUT)
            && only(&[TOO_LARGE, BUFFER_TOO_SMALL, OUTPUT_ALIASES_INPUT])
        {
            Some(Kind::Seal)
        } else if has(OUTPUT_ALIASES_INPUT)
            && has(INVALID_OPERATION)
            && only(&[OUTPUT_ALIASES_INPUT, INVALID_OPERATION])
        {
            Some(Kind::SealScatter)
        } else if has(OUTPUT_ALIASES_INPUT)
            && has(BAD_DECRYPT)
            && has(BUFFER_TOO_SMALL)
            && only(&[
                OUTPUT_ALIASES_INPUT,
                BAD_DECRYPT,
                BUFFER_TOO_SMALL,
                CTRL_NOT_IMPLEMENTED,
            ])
        {
            Some(Kind::Open)
        } else {
            None
        }
    }
}

/// One function found: its kind, virtual address and file offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Found {
    pub kind: Kind,
    pub address: u64,
    pub offset: u64,
}

/// A cache file holds a few hundred bytes; anything larger is not ours.
const MAX_CACHE_FILE: u64 = 16 * 1024;

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheFile {
    v: u32,
    found: Vec<Found>,
}

fn cache_name(key: &[u8]) -> String {
    format!("{}.json", hex::encode(key))
}

#[cfg(test)]
fn cache_file(dir: &Path, key: &[u8]) -> PathBuf {
    dir.join(cache_name(key))
}

/// The hooks stored for `key`, if a well-formed file is there. What it says
/// is checked against the program before use ([`reverify`]).
pub fn load_cached(dir: &Path, key: &[u8]) -> Option<Vec<Found>> {
    let body = super::read_private(dir, &cache_name(key), MAX_CACHE_FILE)?;
    let f: CacheFile = serde_json::from_slice(&body).ok()?;
    (f.v == 1 && !f.found.is_empty() && f.found.len() <= 3 * MAX_PER_KIND).then_some(f.found)
}

/// Stores the hooks for `key` (0700 directory, 0600 file, atomic).
pub fn store_cached(dir: &Path, key: &[u8], found: &[Found]) -> std::io::Result<()> {
    let body = serde_json::to_vec(&CacheFile {
        v: 1,
        found: found.to_vec(),
    })?;
    super::write_private(dir, &cache_name(key), &body)
}

fn cache() -> &'static Mutex<HashMap<Vec<u8>, Vec<Found>>> {
    static CACHE: OnceLock<Mutex<HashMap<Vec<u8>, Vec<Found>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Claims an x86-64 ELF file that links rustls and aws-lc.
pub fn resolve(elf: &Elf<'_>) -> Result<Option<Resolved>, String> {
    if elf.obj.architecture() != object::Architecture::X86_64 {
        return Ok(None);
    }
    let Some(strings) = aead_source_strings(elf) else {
        return Ok(None);
    };
    if !mentions_rustls(elf) {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let key = build_key(elf);
    let cached = cache()
        .lock()
        .ok()
        .and_then(|c| c.get(&key).cloned())
        .or_else(|| super::hook_cache_dir().and_then(|d| load_cached(d, &key)));
    let found = if let Some(f) = cached.filter(|f| reverify(elf, f)) {
        f
    } else {
        let f = find(elf, &strings)?;
        if f.is_empty() {
            return Ok(None);
        }
        if let Some(dir) = super::hook_cache_dir() {
            if let Err(e) = store_cached(dir, &key, &f) {
                tracing::warn!(dir = %dir.display(), error = %e, "hook cache not written");
            }
        }
        f
    };
    if let Ok(mut c) = cache().lock() {
        if c.len() >= 256 {
            c.clear();
        }
        c.insert(key, found.clone());
    }
    tracing::debug!(path = %elf.path.display(), took = ?started.elapsed(), "rustls hooks found");
    let mut hooks = Vec::new();
    for f in &found {
        let (entry, ret) = f.kind.programs();
        for program in std::iter::once(entry).chain(ret) {
            hooks.push(Hook {
                function: f.kind.function(),
                program,
                offset: f.offset,
            });
        }
    }
    Ok(Some(Resolved {
        stack: Stack::Rustls,
        method: Method::Signature,
        hooks,
    }))
}

/// Finds the three functions: none when the file does not hold aws-lc's
/// AEAD API, `Err` when it does but the functions cannot be told apart with
/// certainty.
pub fn find(elf: &Elf<'_>, strings: &[u64]) -> Result<Vec<Found>, String> {
    let unwind = Unwind::new(elf).ok_or("no usable .eh_frame_hdr/.eh_frame")?;
    // Fast path: the path string loaded into rcx, where the C compilers we
    // know put it; when that does not find all three, every register.
    let found = classify_sites(elf, &unwind, strings, &lea_sites(elf, strings, &LEA_RCX))?;
    let found = if Kind::ALL.iter().all(|k| found.iter().any(|f| f.kind == *k)) {
        found
    } else {
        classify_sites(elf, &unwind, strings, &lea_sites(elf, strings, &LEA_ANY))?
    };
    check_counts(found)
}

fn classify_sites(
    elf: &Elf<'_>,
    unwind: &Unwind<'_>,
    strings: &[u64],
    sites: &[u64],
) -> Result<Vec<Found>, String> {
    let mut functions: Vec<(u64, u64)> = Vec::new();
    for &site in sites {
        let Some(f) = unwind.function_at(site) else {
            return Err(format!("no unwind entry covers the code at {site:#x}"));
        };
        if !functions.contains(&f) {
            functions.push(f);
        }
    }
    let mut found = Vec::new();
    for (start, len) in functions {
        if let Some(kind) = classify(elf, start, len, strings) {
            found.push(Found {
                kind,
                address: start,
                offset: file_offset(elf, start).ok_or("function outside the file")?,
            });
        }
    }
    Ok(found)
}

fn check_counts(mut found: Vec<Found>) -> Result<Vec<Found>, String> {
    if found.is_empty() {
        // The path is there (ring keeps aws-lc's file names too) but none
        // of the AEAD API's error calls: not aws-lc's EVP_AEAD.
        return Ok(found);
    }
    for kind in Kind::ALL {
        let n = found.iter().filter(|f| f.kind == kind).count();
        if n == 0 {
            return Err(format!("{} not found", kind.function()));
        }
        if n > MAX_PER_KIND {
            return Err(format!("{} matched {n} functions", kind.function()));
        }
    }
    found.sort_by_key(|f| (f.kind as u8, f.address));
    Ok(found)
}

/// A cached answer still holds for this file.
fn reverify(elf: &Elf<'_>, found: &[Found]) -> bool {
    let (Some(strings), Some(unwind)) = (aead_source_strings(elf), Unwind::new(elf)) else {
        return false;
    };
    !found.is_empty()
        && found.iter().all(|f| {
            unwind.function_at(f.address) == Some((f.address, function_len(&unwind, f.address)))
                && classify(elf, f.address, function_len(&unwind, f.address), &strings)
                    == Some(f.kind)
                && file_offset(elf, f.address) == Some(f.offset)
        })
}

fn function_len(unwind: &Unwind<'_>, start: u64) -> u64 {
    unwind.function_at(start).map_or(0, |(_, len)| len)
}

/// Addresses of every NUL-terminated string ending in [`AEAD_SOURCE`] in the
/// read-only data.
fn aead_source_strings(elf: &Elf<'_>) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    for s in elf.obj.sections() {
        if !matches!(
            s.kind(),
            SectionKind::ReadOnlyString | SectionKind::ReadOnlyData
        ) {
            continue;
        }
        let Ok(data) = s.data() else { continue };
        for i in memchr::memmem::find_iter(data, AEAD_SOURCE) {
            let end = i + AEAD_SOURCE.len();
            if data.get(end) != Some(&0) {
                continue;
            }
            // Back to the start of the string: the build's path prefix.
            let begin = data[..i].iter().rposition(|&b| b == 0).map_or(0, |p| p + 1);
            out.push(s.address() + begin as u64);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// rustls leaves its crate path in panic locations even when stripped.
fn mentions_rustls(elf: &Elf<'_>) -> bool {
    elf.obj.sections().any(|s| {
        matches!(
            s.kind(),
            SectionKind::ReadOnlyString | SectionKind::ReadOnlyData
        ) && s
            .data()
            .is_ok_and(|d| memchr::memmem::find(d, b"/rustls-0.").is_some())
    })
}

/// The build's identity: its GNU build-id, else a digest of its size and
/// unwind table (which changes with any change to the code).
fn build_key(elf: &Elf<'_>) -> Vec<u8> {
    if let Ok(Some(id)) = elf.obj.build_id() {
        let mut k = b"id:".to_vec();
        k.extend_from_slice(id);
        return k;
    }
    let mut h = Sha256::new();
    h.update((elf.data.len() as u64).to_le_bytes());
    if let Some(s) = elf.obj.section_by_name(".eh_frame_hdr") {
        h.update(s.data().unwrap_or_default());
    }
    let mut k = b"sha256:".to_vec();
    k.extend_from_slice(&h.finalize());
    k
}

/// REX.W prefixes of `lea r64, [rip+disp32]`: 0x48, and 0x4c for r8-r15.
const LEA_ANY: [[u8; 2]; 2] = [[0x48, 0x8d], [0x4c, 0x8d]];
/// `lea rcx, [rip+disp32]`: how compilers load `ERR_put_error`'s fourth
/// argument (the file) — the fast path's only pattern.
const LEA_RCX: [[u8; 3]; 1] = [[0x48, 0x8d, 0x0d]];

/// `lea r64, [rip+disp32]` instructions in executable sections whose
/// target is one of `targets`, found by searching for `prefixes`.
fn lea_sites<const N: usize>(elf: &Elf<'_>, targets: &[u64], prefixes: &[[u8; N]]) -> Vec<u64> {
    let mut out = Vec::new();
    for s in elf.obj.sections() {
        if s.kind() != SectionKind::Text {
            continue;
        }
        let Ok(code) = s.data() else { continue };
        let base = s.address();
        // The prefix search runs in the (optimised) memchr crate; each hit
        // costs a few compares here: ModRM with mod=00 rm=101
        // (rip-relative), then disp32.
        for prefix in prefixes {
            for i in memchr::memmem::find_iter(code, prefix) {
                let Some(&[modrm, d0, d1, d2, d3]) = code.get(i + 2..i + 7) else {
                    continue;
                };
                if modrm & 0xc7 != 0x05 {
                    continue;
                }
                let disp = i32::from_le_bytes([d0, d1, d2, d3]);
                let next = base + i as u64 + 7;
                let target = next.wrapping_add_signed(i64::from(disp));
                if targets.contains(&target) {
                    out.push(base + i as u64);
                }
            }
        }
    }
    out
}

/// Function bounds from the unwind tables.
struct Unwind<'a> {
    bases: BaseAddresses,
    hdr: gimli::ParsedEhFrameHdr<gimli::EndianSlice<'a, LittleEndian>>,
    frame: EhFrame<gimli::EndianSlice<'a, LittleEndian>>,
}

impl<'a> Unwind<'a> {
    fn new(elf: &Elf<'a>) -> Option<Self> {
        let hdr_s = elf.obj.section_by_name(".eh_frame_hdr")?;
        let frame_s = elf.obj.section_by_name(".eh_frame")?;
        let text = elf.obj.section_by_name(".text")?;
        let bases = BaseAddresses::default()
            .set_eh_frame_hdr(hdr_s.address())
            .set_eh_frame(frame_s.address())
            .set_text(text.address());
        let hdr = EhFrameHdr::new(hdr_s.data().ok()?, LittleEndian)
            .parse(&bases, 8)
            .ok()?;
        hdr.table()?;
        let frame = EhFrame::new(frame_s.data().ok()?, LittleEndian);
        Some(Self { bases, hdr, frame })
    }

    /// (start, length) of the function containing `addr`.
    fn function_at(&self, addr: u64) -> Option<(u64, u64)> {
        let table = self.hdr.table()?;
        let fde = table
            .fde_for_address(&self.frame, &self.bases, addr, EhFrame::cie_from_offset)
            .ok()?;
        Some((fde.initial_address(), fde.len()))
    }
}

fn file_offset(elf: &Elf<'_>, addr: u64) -> Option<u64> {
    elf.obj.sections().find_map(|s| {
        let (off, size) = s.file_range()?;
        (s.kind() == SectionKind::Text && addr >= s.address() && addr < s.address() + size)
            .then(|| addr - s.address() + off)
    })
}

fn code_at<'a>(elf: &Elf<'a>, addr: u64, len: u64) -> Option<&'a [u8]> {
    elf.obj.sections().find_map(|s| {
        if s.kind() != SectionKind::Text || addr < s.address() {
            return None;
        }
        let data = s.data().ok()?;
        let start = usize::try_from(addr - s.address()).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        data.get(start..end)
    })
}

/// Decodes one function and names it when it is one of the three.
pub fn classify(elf: &Elf<'_>, start: u64, len: u64, strings: &[u64]) -> Option<Kind> {
    if len == 0 || len > MAX_FUNCTION_LEN {
        return None;
    }
    let code = code_at(elf, start, len)?;
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let insns: Vec<Instruction> = decoder.iter().collect();
    if insns.iter().any(Instruction::is_invalid) || !sane_entry(&insns) {
        return None;
    }
    let mut reasons = Vec::new();
    let mut indirect_calls = 0;
    for (i, ins) in insns.iter().enumerate() {
        if ins.flow_control() == FlowControl::IndirectCall {
            indirect_calls += 1;
        }
        let loads_path = ins.code() == Code::Lea_r64_m
            && ins.is_ip_rel_memory_operand()
            && strings.contains(&ins.ip_rel_memory_address());
        if !loads_path {
            continue;
        }
        // The arguments of ERR_put_error(lib, 0, reason, file, line) are set
        // in the straight-line block around the load of `file`: back to the
        // previous branch, on to the call or jump to the reporting code.
        let mut from = i;
        while from > 0 && !changes_flow(&insns[from - 1]) {
            from -= 1;
        }
        let mut to = i;
        while to + 1 < insns.len() && !changes_flow(&insns[to]) {
            to += 1;
        }
        let mut lib = None;
        let mut reason = None;
        for near in &insns[from..=to] {
            if near.code() != Code::Mov_r32_imm32 {
                continue;
            }
            match near.op0_register() {
                Register::EDI => lib = Some(u64::from(near.immediate32())),
                Register::EDX => reason = Some(u64::from(near.immediate32())),
                _ => {}
            }
        }
        match (lib, reason) {
            (Some(LIB_CIPHER), Some(r)) => {
                if !reasons.contains(&r) {
                    reasons.push(r);
                }
            }
            // The path loaded for something else: not a function we know.
            _ => return None,
        }
    }
    if indirect_calls == 0 {
        return None;
    }
    Kind::from_reasons(&reasons)
}

fn changes_flow(ins: &Instruction) -> bool {
    ins.flow_control() != FlowControl::Next
}

/// The function begins like compiled C: a frame set up or an early test of
/// an argument, never in the middle of something.
fn sane_entry(insns: &[Instruction]) -> bool {
    let Some(first) = insns.first() else {
        return false;
    };
    matches!(
        first.code(),
        Code::Push_r64
            | Code::Endbr64
            | Code::Sub_rm64_imm8
            | Code::Sub_rm64_imm32
            | Code::Test_rm64_r64
    ) || (first.code() == Code::Mov_r64_rm64 && first.op1_kind() == OpKind::Register)
}

#[cfg(test)]
mod tests;
