//! Byte scans over the whole image: where `BoringSSL`'s source-path string is,
//! which instructions may load its address, where functions may start, and
//! how often a function is called directly.
//!
//! These scans only propose places to look. Nothing found here is trusted
//! until the control-flow analysis (`flow`) has decoded it as part of a
//! function reached from a verified entry.

use memchr::{memchr2_iter, memchr_iter, memmem};

use super::image::{Image, Segment};

/// The tail of `__FILE__` in every `OPENSSL_PUT_ERROR` of `ssl/ssl_lib.cc`,
/// NUL-terminated in the image (not here: so that aitrail's own binary does
/// not look like `BoringSSL`). The prefix depends on where the embedder keeps
/// `BoringSSL` (`../../vendor/boringssl/` in Bun, `third_party/boringssl/src/`
/// in Chromium); the string must begin with it or with a `/` before it.
pub const SSL_LIB_FILE: &[u8] = b"ssl/ssl_lib.cc";

/// Longest path prefix accepted in front of [`SSL_LIB_FILE`].
const MAX_PATH: usize = 1024;

/// Virtual addresses of every NUL-terminated string that ends with
/// `…/ssl/ssl_lib.cc` (or is exactly `ssl/ssl_lib.cc`), in read-only data.
pub fn ssl_lib_strings(img: &Image<'_>) -> Vec<u64> {
    let finder = memmem::Finder::new(SSL_LIB_FILE);
    let mut out = Vec::new();
    for seg in img.readonly_segments() {
        for pos in finder.find_iter(seg.data) {
            if seg.data.get(pos + SSL_LIB_FILE.len()) != Some(&0) {
                continue;
            }
            if pos > 0 && seg.data[pos - 1] != b'/' && seg.data[pos - 1] != 0 {
                continue;
            }
            // Back to the string's first byte: the byte after a NUL.
            let lo = pos.saturating_sub(MAX_PATH);
            let start = seg.data[lo..pos]
                .iter()
                .rposition(|&b| b == 0)
                .map_or(lo, |i| lo + i + 1);
            let printable = seg.data[start..pos]
                .iter()
                .all(|&b| (0x20..0x7f).contains(&b));
            if printable && (start > lo || lo == 0) {
                out.push(seg.vaddr + start as u64);
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Addresses of instructions that may load `target` into a register:
/// `mov r32, imm32` and `mov r64, simm32` (non-PIE code, where addresses fit
/// in 32 bits) and `lea r64, [rip + disp32]` (PIE). Positions are guesses at
/// instruction starts; the flow analysis decides.
pub fn address_loads(img: &Image<'_>, target: u64) -> Vec<u64> {
    let mut out = Vec::new();
    if let Ok(imm) = u32::try_from(target) {
        let finder = memmem::Finder::new(&imm.to_le_bytes()[..]).into_owned();
        for seg in img.exec_segments() {
            for p in finder.find_iter(seg.data) {
                imm_load_starts(seg, p, &mut out);
            }
        }
    }
    // One code model per executable: non-PIE code loads addresses as
    // immediates, PIE code through rip. The rip scan (every 0x8D byte) is
    // the slower one; it is skipped when immediates were found.
    if out.is_empty() {
        for seg in img.exec_segments() {
            lea_rip_loads(seg, target, &mut out);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `imm` at `p`: the instruction starts may be `B8+r imm32` (optionally with a
/// REX.B prefix) or `REX.W C7 /0 imm32`.
fn imm_load_starts(seg: &Segment<'_>, p: usize, out: &mut Vec<u64>) {
    let d = seg.data;
    if p >= 1 && (0xb8..=0xbf).contains(&d[p - 1]) {
        out.push(seg.vaddr + (p - 1) as u64);
        if p >= 2 && d[p - 2] == 0x41 {
            out.push(seg.vaddr + (p - 2) as u64);
        }
    }
    if p >= 3
        && (d[p - 3] == 0x48 || d[p - 3] == 0x49)
        && d[p - 2] == 0xc7
        && d[p - 1] & 0xf8 == 0xc0
    {
        out.push(seg.vaddr + (p - 3) as u64);
    }
}

/// `REX.W(+R) 8D modrm(rip) disp32` whose target is `target`.
fn lea_rip_loads(seg: &Segment<'_>, target: u64, out: &mut Vec<u64>) {
    let d = seg.data;
    for i in memchr_iter(0x8d, d) {
        // The opcode is at `i`: REX before it, ModRM and disp32 after.
        if i == 0 || i + 6 > d.len() {
            continue;
        }
        let rex = d[i - 1];
        if rex & 0xfb != 0x48 || d[i + 1] & 0xc7 != 0x05 {
            continue;
        }
        let disp = i32::from_le_bytes([d[i + 2], d[i + 3], d[i + 4], d[i + 5]]);
        let next = seg.vaddr + (i + 6) as u64;
        if next.wrapping_add_signed(i64::from(disp)) == target {
            out.push(seg.vaddr + (i - 1) as u64);
        }
    }
}

/// Function starts that may contain `at`, nearest first: 16-byte aligned
/// addresses right after `int3` padding (LLD fills the gaps between
/// functions in executable sections with 0xCC; compilers align functions
/// to 16 and pad inside functions with NOPs, never with int3).
pub fn padded_starts_before(img: &Image<'_>, at: u64, max: usize, window: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let Some(seg) = img.segment_of(at).filter(|s| s.exec) else {
        return out;
    };
    let low = seg.vaddr.max(at.saturating_sub(window));
    let mut a = at & !0xf;
    while a > low && out.len() < max {
        if img.byte(a - 1) == Some(0xcc) {
            out.push(a);
        }
        a -= 16;
    }
    out
}

/// Whether `a` looks like the start of a function by its surroundings:
/// 16-byte aligned and right after int3 padding.
pub fn is_padded_start(img: &Image<'_>, a: u64) -> bool {
    a.is_multiple_of(16) && img.byte(a.wrapping_sub(1)) == Some(0xcc)
}

/// Direct references to each of `targets`: `(call rel32, jmp rel32)` counts
/// over all executable code. One pass, whatever the number of targets.
pub fn direct_refs(img: &Image<'_>, targets: &[u64]) -> Vec<(u64, u32, u32)> {
    let mut sorted: Vec<u64> = targets.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut counts = vec![(0u32, 0u32); sorted.len()];
    let (Some(&lo), Some(&hi)) = (sorted.first(), sorted.last()) else {
        return Vec::new();
    };
    for seg in img.exec_segments() {
        let d = seg.data;
        for i in memchr2_iter(0xe8, 0xe9, d) {
            if i + 5 > d.len() {
                continue;
            }
            let rel = i32::from_le_bytes([d[i + 1], d[i + 2], d[i + 3], d[i + 4]]);
            let t = (seg.vaddr + (i + 5) as u64).wrapping_add_signed(i64::from(rel));
            if t < lo || t > hi {
                continue;
            }
            if let Ok(k) = sorted.binary_search(&t) {
                if d[i] == 0xe8 {
                    counts[k].0 += 1;
                } else {
                    counts[k].1 += 1;
                }
            }
        }
    }
    sorted
        .into_iter()
        .zip(counts)
        .map(|(t, (c, j))| (t, c, j))
        .collect()
}
