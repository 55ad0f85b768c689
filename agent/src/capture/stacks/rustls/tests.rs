//! The resolver against the real Codex CLI binary (installed by
//! tests/setup-test-deps.sh from npm at the pinned version, never committed)
//! and against doctored copies of it that it must refuse.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use super::*;

/// The pinned Codex CLI build (tests/setup-test-deps.sh, `CODEX_VERSION`).
const CODEX_VERSION: &str = "0.171.0";

/// Where tests/setup-test-deps.sh unpacks the Codex npm package.
pub fn codex_binary() -> PathBuf {
    let cache = std::env::var_os("AITRAIL_TEST_CACHE").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/aitrail-tests")
        },
        PathBuf::from,
    );
    let bin = cache.join(format!(
        "codex-{CODEX_VERSION}/package/vendor/x86_64-unknown-linux-musl/bin/codex"
    ));
    assert!(
        bin.is_file(),
        "{} is missing: run tests/setup-test-deps.sh (it installs the pinned Codex CLI)",
        bin.display()
    );
    bin
}

fn with_elf<T>(data: &[u8], f: impl FnOnce(&Elf<'_>) -> T) -> T {
    let obj = object::File::parse(data).expect("an ELF file");
    let elf = Elf {
        path: Path::new("codex"),
        data,
        obj: &obj,
    };
    f(&elf)
}

fn read_codex() -> Vec<u8> {
    std::fs::read(codex_binary()).expect("read the codex binary")
}

#[test]
fn reasons_name_exactly_one_function() {
    assert_eq!(
        Kind::from_reasons(&[TOO_LARGE, BUFFER_TOO_SMALL, OUTPUT_ALIASES_INPUT]),
        Some(Kind::Seal)
    );
    assert_eq!(
        Kind::from_reasons(&[OUTPUT_ALIASES_INPUT, INVALID_OPERATION]),
        Some(Kind::SealScatter)
    );
    assert_eq!(
        Kind::from_reasons(&[OUTPUT_ALIASES_INPUT, BAD_DECRYPT, BUFFER_TOO_SMALL]),
        Some(Kind::Open)
    );
    assert_eq!(
        Kind::from_reasons(&[
            OUTPUT_ALIASES_INPUT,
            BAD_DECRYPT,
            BUFFER_TOO_SMALL,
            CTRL_NOT_IMPLEMENTED
        ]),
        Some(Kind::Open)
    );
    // EVP_AEAD_CTX_open_gather alone, init (UNSUPPORTED_KEY_SIZE = 120),
    // and a set with one reason too many are none of them.
    assert_eq!(
        Kind::from_reasons(&[OUTPUT_ALIASES_INPUT, CTRL_NOT_IMPLEMENTED]),
        None
    );
    assert_eq!(Kind::from_reasons(&[120]), None);
    assert_eq!(
        Kind::from_reasons(&[
            TOO_LARGE,
            BUFFER_TOO_SMALL,
            OUTPUT_ALIASES_INPUT,
            BAD_DECRYPT
        ]),
        None
    );
    assert_eq!(Kind::from_reasons(&[]), None);
}

#[test]
fn rustls_over_ring_is_not_claimed() {
    // This test binary links rustls with the ring provider: no aws-lc AEAD
    // API, so nothing to hook and nothing to refuse.
    let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    with_elf(&data, |elf| assert_eq!(resolve(elf), Ok(None)));
}

/// The offsets below were checked by hand against aws-lc's aead.c: the
/// disassembly at each raises exactly its function's errors with the
/// `ERR_put_error` line numbers of that source, and the function loads
/// `ctx->aead` and calls its `seal_scatter` / `open` / `open_gather` method.
#[test]
fn codex_aead_functions_are_found_in_the_stripped_binary() {
    let data = read_codex();
    let started = std::time::Instant::now();
    let r = with_elf(&data, resolve)
        .expect("not refused")
        .expect("claimed as rustls");
    eprintln!("resolved in {:?}", started.elapsed());
    assert_eq!(r.stack, Stack::Rustls);
    assert_eq!(r.method, Method::Signature);
    let hooks: Vec<(&str, &str, u64)> = r
        .hooks
        .iter()
        .map(|h| (h.function, h.program, h.offset))
        .collect();
    assert_eq!(
        hooks,
        [
            ("EVP_AEAD_CTX_seal", "tls_rustls_seal", 0x1262_8450),
            (
                "EVP_AEAD_CTX_seal_scatter",
                "tls_rustls_seal_scatter",
                0x1262_8570
            ),
            ("EVP_AEAD_CTX_open", "tls_rustls_open", 0x1262_8690),
            ("EVP_AEAD_CTX_open", "tls_rustls_open_ret", 0x1262_8690),
        ]
    );
}

#[test]
fn every_hook_is_a_function_entry_in_the_unwind_table() {
    let data = read_codex();
    with_elf(&data, |elf| {
        let strings = aead_source_strings(elf).expect("aws-lc's aead.c path");
        assert!(mentions_rustls(elf));
        let unwind = Unwind::new(elf).expect("unwind tables");
        for f in find(elf, &strings).expect("found") {
            let (start, len) = unwind.function_at(f.address).expect("an FDE");
            assert_eq!(start, f.address, "{f:?} is a function entry");
            assert!(len > 0 && len < MAX_FUNCTION_LEN);
            // The file bytes at the offset are the bytes at the address.
            let at_offset = &elf.data[usize::try_from(f.offset).unwrap()..][..16];
            assert_eq!(at_offset, code_at(elf, f.address, 16).unwrap());
        }
    });
}

/// Overwrites the 4-byte immediate of the first `mov edx, reason` in the
/// function at file offset `func`.
fn patch_reason(data: &mut [u8], func: usize, reason: u32, to: u32) {
    let window = &mut data[func..func + 0x200];
    let needle = [&[0xba_u8][..], &reason.to_le_bytes()].concat();
    let at = memchr::memmem::find(window, &needle).expect("the reason's mov");
    window[at + 1..at + 5].copy_from_slice(&to.to_le_bytes());
}

#[test]
fn a_build_whose_seal_cannot_be_told_apart_is_refused() {
    let mut data = read_codex();
    // Make EVP_AEAD_CTX_seal raise INVALID_OPERATION where it raised
    // TOO_LARGE: it now matches no row, and nothing else is guessed.
    patch_reason(&mut data, 0x1262_8450, 117, 112);
    let r = with_elf(&data, resolve);
    assert_eq!(r, Err("EVP_AEAD_CTX_seal not found".to_string()));
}

#[test]
fn a_cached_answer_is_checked_against_the_file() {
    // Resolve the real file (fills the cache), then a copy whose open
    // function changed but whose size and unwind table, the cache key, did
    // not: the cached offsets must not be used for it.
    let data = read_codex();
    with_elf(&data, resolve).unwrap().unwrap();
    let mut bad = data.clone();
    drop(data);
    patch_reason(&mut bad, 0x1262_8690, 101, 120);
    let r = with_elf(&bad, resolve);
    assert_eq!(r, Err("EVP_AEAD_CTX_open not found".to_string()));
}

#[test]
fn the_fast_path_sees_every_site_of_the_full_scan() {
    // The full scan (any register) and the fast one (rcx) find the same
    // loads of aead.c's path in this build, and the fast one is what
    // resolves it (printed: the time each takes without the cache).
    let data = read_codex();
    with_elf(&data, |elf| {
        let strings = aead_source_strings(elf).unwrap();
        let t = std::time::Instant::now();
        let fast = lea_sites(elf, &strings, &LEA_RCX);
        let t_fast = t.elapsed();
        let t = std::time::Instant::now();
        let mut all = lea_sites(elf, &strings, &LEA_ANY);
        let t_all = t.elapsed();
        let t = std::time::Instant::now();
        let found = find(elf, &strings).unwrap();
        let t_find = t.elapsed();
        eprintln!("rcx scan {t_fast:?}, full scan {t_all:?}, find {t_find:?}");
        all.sort_unstable();
        assert_eq!(fast, all);
        assert_eq!(all.len(), 15, "{all:x?}");
        assert_eq!(found.len(), 3);
    });
}

#[test]
fn the_daemon_path_claims_codex() {
    // Through targets::resolve, as the daemon does at exec: the file mapped,
    // not read (the time printed is what docs/coverage.md reports; it is
    // the cached path when another test resolved the file first).
    let bin = codex_binary();
    let t = std::time::Instant::now();
    let target = crate::capture::targets::resolve(&bin).expect("resolved");
    eprintln!("targets::resolve {:?}", t.elapsed());
    assert_eq!(target.stack, Stack::Rustls);
    assert_eq!(target.hooks.len(), 4);
}

#[test]
fn the_disk_cache_is_private_and_checked_before_use() {
    let data = read_codex();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hooks");
    with_elf(&data, |elf| {
        let strings = aead_source_strings(elf).unwrap();
        let found = find(elf, &strings).unwrap();
        let key = build_key(elf);
        store_cached(&cache, &key, &found).unwrap();
        // 0700 directory, 0600 file, nothing else left behind.
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        let files: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(mode(&files[0].path()), 0o600);
        let loaded = load_cached(&cache, &key).expect("read back");
        assert_eq!(loaded, found);
        assert!(reverify(elf, &loaded));
        // A file that names other offsets (altered, or another build's)
        // parses but fails the check: it is never used to place a probe.
        let mut wrong = found.clone();
        wrong[0].address += 0x10;
        wrong[0].offset += 0x10;
        store_cached(&cache, &key, &wrong).unwrap();
        let loaded = load_cached(&cache, &key).unwrap();
        assert!(!reverify(elf, &loaded));
        // Junk and oversized files are ignored.
        std::fs::write(cache_file(&cache, &key), b"{not json").unwrap();
        assert!(load_cached(&cache, &key).is_none());
        std::fs::write(cache_file(&cache, &key), vec![b' '; 20_000]).unwrap();
        assert!(load_cached(&cache, &key).is_none());
        assert!(load_cached(&cache, b"another build").is_none());
    });
}
