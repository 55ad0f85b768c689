//! The locator against hand-assembled images shaped like the real builds
//! (Bun 1.4.5 and Claude Code 2.1.332 were read instruction by instruction
//! to write them), and against the ways each check must refuse. The real
//! binaries are checked by the e2e tests (tests/setup-test-deps.sh installs
//! them).

#![allow(
    clippy::doc_markdown,
    clippy::struct_excessive_bools,
    reason = "test code: function names in prose, one knob per broken property"
)]

use iced_x86::code_asm::{
    dword_ptr, ebx, ecx, edi, edx, esi, qword_ptr, r14, r15, r15d, r8d, rax, rbp, rbx, rcx, rdi,
    rdx, rsi, rsp, CodeAssembler, CodeLabel,
};
use std::path::PathBuf;

use proptest::prelude::*;

use super::{
    image::{Image, Segment},
    signature::{self, Refusal},
    *,
};

const RODATA: u64 = 0x20_0000;
const TEXT: u64 = 0x40_0000;
/// File offset of the text segment.
const TEXT_OFF: u64 = 0x1000;
/// Every function gets a slot this big; the rest of a slot is int3.
const SLOT: u64 = 0x400;

/// The file name as Bun has it, NUL-terminated at run time only: this test
/// binary must not look like `BoringSSL` itself (other tests resolve it).
fn lib_file() -> Vec<u8> {
    [b"../../vendor/boringssl/ssl/ssl_lib.cc".as_slice(), &[0]].concat()
}
const OTHER_FILE: &[u8] = b"../../vendor/boringssl/ssl/s3_pkt.cc\0";

/// Slots: what lives where.
const ERR: u64 = 0;
const CLEAR: u64 = 1;
const HANDSHAKE: u64 = 2;
const READ_IMPL: u64 = 3;
const READ: u64 = 4;
const WRITE: u64 = 5;
const SHUTDOWN: u64 = 6;
const APP: u64 = 7;
const MEMCPY: u64 = 8;
const EXTRA: u64 = 9;
const SLOTS: u64 = 12;

fn at(slot: u64) -> u64 {
    TEXT + slot * SLOT
}

struct Rodata {
    bytes: Vec<u8>,
    lib: u64,
    other: u64,
}

fn rodata() -> Rodata {
    let mut bytes = vec![0u8; 16];
    let lib = RODATA + bytes.len() as u64;
    bytes.extend_from_slice(&lib_file());
    let other = RODATA + bytes.len() as u64;
    bytes.extend_from_slice(OTHER_FILE);
    bytes.extend_from_slice(b"unrelated string\0");
    Rodata { bytes, lib, other }
}

/// `ERR_put_error(16, 0, reason, file, line)`, then `on_return`.
fn site(a: &mut CodeAssembler, file: u64, reason: u32, line: u32) {
    a.mov(ecx, u32::try_from(file).unwrap()).unwrap();
    a.mov(edi, 16u32).unwrap();
    a.xor(esi, esi).unwrap();
    a.mov(edx, reason).unwrap();
    a.mov(r8d, line).unwrap();
}

fn prologue(a: &mut CodeAssembler) {
    a.push(rbp).unwrap();
    a.mov(rbp, rsp).unwrap();
    a.push(r15).unwrap();
    a.push(r14).unwrap();
    a.push(rbx).unwrap();
}

fn epilogue(a: &mut CodeAssembler) {
    a.pop(rbx).unwrap();
    a.pop(r14).unwrap();
    a.pop(r15).unwrap();
    a.pop(rbp).unwrap();
    a.ret().unwrap();
}

fn stub(a: &mut CodeAssembler) {
    a.push(rbp).unwrap();
    a.mov(rbp, rsp).unwrap();
    a.pop(rbp).unwrap();
    a.ret().unwrap();
}

/// Knobs that break one property each.
#[derive(Clone, Copy, Default)]
struct Variant {
    /// A second function identical to SSL_write.
    duplicate_write: bool,
    /// SSL_read without the write-back (an SSL_peek).
    read_does_not_consume: bool,
    /// SSL_write's error lines out of source order.
    write_lines_shuffled: bool,
    /// Nothing calls SSL_write directly.
    write_uncalled: bool,
    /// SSL_write without its frame prologue.
    write_without_prologue: bool,
    /// SSL_write ignores its `num` argument.
    write_ignores_num: bool,
    /// An indirect jump (a jump table) inside SSL_write.
    write_indirect_jump: bool,
    /// One of SSL_write's error calls goes to another function.
    write_other_err_fn: bool,
}

fn ssl_read_impl(a: &mut CodeAssembler, lib: u64) {
    let mut uninit = a.create_label();
    let mut fail = a.create_label();
    let mut call = a.create_label();
    prologue(a);
    a.mov(rbx, rdi).unwrap();
    a.mov(rax, qword_ptr(rdi + 0x30)).unwrap();
    a.mov(dword_ptr(rax + 0xc4), 0).unwrap();
    a.call(at(CLEAR)).unwrap();
    a.cmp(qword_ptr(rbx + 0x28), 0).unwrap();
    a.je(uninit).unwrap();
    a.mov(rdi, rbx).unwrap();
    a.call(at(HANDSHAKE)).unwrap();
    a.test(edx, edx).unwrap();
    a.je(fail).unwrap();
    a.mov(edx, 1u32).unwrap();
    epilogue(a);
    a.set_label(&mut uninit).unwrap();
    site(a, lib, 226, 837);
    a.set_label(&mut call).unwrap();
    a.call(at(ERR)).unwrap();
    epilogue(a);
    a.set_label(&mut fail).unwrap();
    site(a, lib, 215, 870);
    a.jmp(call).unwrap();
}

fn ssl_read(a: &mut CodeAssembler, lib: u64, consume: bool) {
    let mut ok = a.create_label();
    let mut out = a.create_label();
    prologue(a);
    a.cmp(qword_ptr(rdi + 0x98), 0).unwrap();
    a.je(ok).unwrap();
    site(a, lib, 66, 931);
    a.call(at(ERR)).unwrap();
    epilogue(a);
    a.set_label(&mut ok).unwrap();
    a.mov(ebx, edx).unwrap();
    a.mov(r14, rsi).unwrap();
    a.mov(r15, rdi).unwrap();
    a.call(at(READ_IMPL)).unwrap();
    a.test(ecx, ecx).unwrap();
    a.je(out).unwrap();
    a.mov(rdi, r14).unwrap();
    a.call(at(MEMCPY)).unwrap();
    a.mov(rax, qword_ptr(r15 + 0x30)).unwrap();
    if consume {
        a.add(qword_ptr(rax + 0x80), rbx).unwrap();
    } else {
        a.add(rax, rbx).unwrap();
    }
    a.set_label(&mut out).unwrap();
    epilogue(a);
}

fn ssl_write(a: &mut CodeAssembler, lib: u64, v: Variant) {
    let mut not_quic = a.create_label();
    let mut uninit = a.create_label();
    let mut call = a.create_label();
    let mut hs_fail = a.create_label();
    let mut bad_len = a.create_label();
    let mut done = a.create_label();
    if v.write_without_prologue {
        a.mov(rax, rdi).unwrap();
    } else {
        prologue(a);
    }
    if v.write_ignores_num {
        a.mov(r15d, 7u32).unwrap();
    } else {
        a.mov(r15d, edx).unwrap();
    }
    a.mov(r14, rsi).unwrap();
    a.mov(rbx, rdi).unwrap();
    a.call(at(CLEAR)).unwrap();
    if v.write_indirect_jump {
        let mut skip = a.create_label();
        a.test(r14, r14).unwrap();
        a.jne(skip).unwrap();
        a.jmp(rax).unwrap();
        a.set_label(&mut skip).unwrap();
    }
    a.cmp(qword_ptr(rbx + 0x98), 0).unwrap();
    a.je(not_quic).unwrap();
    let lines = if v.write_lines_shuffled {
        [979, 958, 973, 953]
    } else {
        [953, 958, 973, 979]
    };
    site(a, lib, 66, lines[0]);
    a.set_label(&mut call).unwrap();
    if v.write_other_err_fn {
        a.call(at(EXTRA)).unwrap();
    } else {
        a.call(at(ERR)).unwrap();
    }
    a.set_label(&mut done).unwrap();
    epilogue(a);
    a.set_label(&mut not_quic).unwrap();
    a.cmp(qword_ptr(rbx + 0x28), 0).unwrap();
    a.je(uninit).unwrap();
    a.test(r15d, r15d).unwrap();
    a.js(bad_len).unwrap();
    a.mov(rdi, rbx).unwrap();
    a.call(at(HANDSHAKE)).unwrap();
    a.test(ecx, ecx).unwrap();
    a.je(hs_fail).unwrap();
    a.mov(rdi, rbx).unwrap();
    a.mov(rsi, r14).unwrap();
    a.mov(rax, qword_ptr(rbx)).unwrap();
    a.call(qword_ptr(rax + 0x48)).unwrap();
    a.jmp(done).unwrap();
    a.set_label(&mut hs_fail).unwrap();
    site(a, lib, 215, lines[2]);
    a.jmp(call).unwrap();
    a.set_label(&mut uninit).unwrap();
    site(a, lib, 226, lines[1]);
    a.jmp(call).unwrap();
    a.set_label(&mut bad_len).unwrap();
    site(a, lib, 111, lines[3]);
    a.jmp(call).unwrap();
}

fn ssl_shutdown(a: &mut CodeAssembler, lib: u64, other: u64) {
    let mut uninit = a.create_label();
    let mut call = a.create_label();
    let mut app_data = a.create_label();
    prologue(a);
    a.mov(rbx, rdi).unwrap();
    a.cmp(qword_ptr(rbx + 0x28), 0).unwrap();
    a.je(uninit).unwrap();
    a.cmp(qword_ptr(rbx + 0x30), 1).unwrap();
    let mut alert = a.create_label();
    a.je(alert).unwrap();
    a.mov(rdi, rbx).unwrap();
    a.call(at(READ_IMPL)).unwrap();
    a.test(ecx, ecx).unwrap();
    a.jg(app_data).unwrap();
    epilogue(a);
    a.set_label(&mut uninit).unwrap();
    site(a, lib, 226, 1021);
    a.set_label(&mut call).unwrap();
    a.call(at(ERR)).unwrap();
    epilogue(a);
    // An error of another file shares the call (as in Bun).
    a.set_label(&mut alert).unwrap();
    site(a, other, 194, 339);
    a.jmp(call).unwrap();
    a.set_label(&mut app_data).unwrap();
    site(a, lib, 291, 1069);
    a.jmp(call).unwrap();
}

fn app(a: &mut CodeAssembler, v: Variant) {
    prologue(a);
    if !v.write_uncalled {
        a.call(at(WRITE)).unwrap();
    }
    a.call(at(READ)).unwrap();
    a.call(at(SHUTDOWN)).unwrap();
    if v.duplicate_write {
        a.call(at(EXTRA)).unwrap();
    }
    epilogue(a);
}

/// The text segment: one function per slot, int3 between them.
fn text(v: Variant, ro: &Rodata) -> Vec<u8> {
    let mut out = vec![0xccu8; usize::try_from(SLOTS * SLOT).unwrap()];
    for slot in 0..SLOTS {
        let mut a = CodeAssembler::new(64).unwrap();
        match slot {
            ERR | CLEAR | HANDSHAKE | MEMCPY => stub(&mut a),
            READ_IMPL => ssl_read_impl(&mut a, ro.lib),
            READ => ssl_read(&mut a, ro.lib, !v.read_does_not_consume),
            WRITE => ssl_write(&mut a, ro.lib, v),
            SHUTDOWN => ssl_shutdown(&mut a, ro.lib, ro.other),
            APP => app(&mut a, v),
            EXTRA if v.duplicate_write => ssl_write(&mut a, ro.lib, Variant::default()),
            EXTRA if v.write_other_err_fn => stub(&mut a),
            _ => continue,
        }
        let code = a.assemble(at(slot)).unwrap();
        assert!(
            code.len() < usize::try_from(SLOT).unwrap(),
            "slot {slot} overflows"
        );
        let start = usize::try_from(slot * SLOT).unwrap();
        out[start..start + code.len()].copy_from_slice(&code);
    }
    out
}

fn image<'a>(ro: &'a [u8], text: &'a [u8], build_id: Option<&str>) -> Image<'a> {
    Image {
        segments: vec![
            Segment {
                vaddr: RODATA,
                offset: 0,
                data: ro,
                exec: false,
                write: false,
            },
            Segment {
                vaddr: TEXT,
                offset: TEXT_OFF,
                data: text,
                exec: true,
                write: false,
            },
        ],
        build_id: build_id.map(str::to_owned),
    }
}

fn find(v: Variant) -> Result<signature::Found, Refusal> {
    let ro = rodata();
    let text = text(v, &ro);
    let img = image(&ro.bytes, &text, None);
    let files = xref::ssl_lib_strings(&img);
    assert_eq!(files, vec![ro.lib], "the ssl_lib.cc string is found");
    signature::find(&img, &files)
}

#[test]
fn finds_write_read_and_shutdown_in_a_bun_shaped_image() {
    let found = find(Variant::default()).expect("all proven");
    assert_eq!(found.write.entry, at(WRITE));
    assert_eq!(found.read.entry, at(READ));
    assert_eq!(found.shutdown.as_ref().map(|s| s.entry), Some(at(SHUTDOWN)));
    assert!(
        found
            .write
            .evidence
            .contains("error calls at lines 953:66,958:226,973:215,979:111"),
        "{}",
        found.write.evidence
    );
    assert!(
        found.read.evidence.contains("SSL_peek's check at line 931"),
        "{}",
        found.read.evidence
    );
}

#[test]
fn offsets_are_file_offsets() {
    let ro = rodata();
    let text = text(Variant::default(), &ro);
    let img = image(&ro.bytes, &text, None);
    let files = xref::ssl_lib_strings(&img);
    let found = signature::find(&img, &files).unwrap();
    let o = offsets(&img, &found, Instant::now(), Source::Analysis).unwrap();
    assert_eq!(o.write, at(WRITE) - TEXT + TEXT_OFF);
    assert_eq!(o.read, at(READ) - TEXT + TEXT_OFF);
    assert_eq!(o.shutdown, Some(at(SHUTDOWN) - TEXT + TEXT_OFF));
    assert_eq!(o.source, Source::Analysis);
}

#[test]
fn two_functions_like_ssl_write_are_refused() {
    let v = Variant {
        duplicate_write: true,
        ..Variant::default()
    };
    assert_eq!(find(v).unwrap_err(), Refusal::AmbiguousWrite(2));
}

#[test]
fn a_read_that_does_not_consume_is_ssl_peek_and_refused() {
    let v = Variant {
        read_does_not_consume: true,
        ..Variant::default()
    };
    assert_eq!(find(v).unwrap_err(), Refusal::NoRead);
}

#[test]
fn error_lines_out_of_source_order_are_no_ssl_write() {
    let v = Variant {
        write_lines_shuffled: true,
        ..Variant::default()
    };
    assert_eq!(find(v).unwrap_err(), Refusal::NoWrite);
}

#[test]
fn each_entry_check_refuses() {
    let cases = [
        (
            Variant {
                write_uncalled: true,
                ..Variant::default()
            },
            "no direct call reaches it",
        ),
        (
            Variant {
                write_without_prologue: true,
                ..Variant::default()
            },
            "no frame-setting prologue",
        ),
        (
            Variant {
                write_ignores_num: true,
                ..Variant::default()
            },
            "does not read (ssl, buf, num) as arguments",
        ),
        (
            Variant {
                write_indirect_jump: true,
                ..Variant::default()
            },
            "has indirect jumps: its code is not fully known",
        ),
    ];
    for (v, want) in cases {
        match find(v) {
            Err(Refusal::Check { name, entry, what }) => {
                assert_eq!((name, entry, what), ("SSL_write", at(WRITE), want));
            }
            other => panic!("expected the check {want:?} to refuse, got {other:?}"),
        }
    }
}

#[test]
fn error_calls_to_two_functions_are_refused() {
    let v = Variant {
        write_other_err_fn: true,
        ..Variant::default()
    };
    assert!(
        matches!(
            find(v),
            Err(Refusal::Check {
                what: "their error calls do not all go to one ERR_put_error",
                ..
            })
        ),
        "{:?}",
        find(v)
    );
}

/// A PIE-style blob: code and the file name in one read-only executable
/// segment, the name loaded with `lea rcx, [rip+disp]`. `pads` are the int3
/// runs before each of the three functions after the first.
fn pie_blob(pads: [usize; 4]) -> (Vec<u8>, [u64; 4]) {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut name = a.create_label();
    let mut err = a.create_label();
    let mut write = a.create_label();
    let mut impl_ = a.create_label();
    let mut read = a.create_label();
    let site_rip =
        |a: &mut CodeAssembler, name: CodeLabel, err: CodeLabel, reason: u32, line: u32| {
            let mut next = a.create_label();
            a.cmp(qword_ptr(rbx + i32::try_from(reason).unwrap()), 0)
                .unwrap();
            a.je(next).unwrap();
            a.lea(rcx, qword_ptr(name)).unwrap();
            a.mov(edi, 16u32).unwrap();
            a.xor(esi, esi).unwrap();
            a.mov(edx, reason).unwrap();
            a.mov(r8d, line).unwrap();
            a.call(err).unwrap();
            a.set_label(&mut next).unwrap();
        };
    a.set_label(&mut err).unwrap();
    stub(&mut a);
    a.db(&vec![0xcc; pads[0]]).unwrap();
    a.set_label(&mut write).unwrap();
    prologue(&mut a);
    a.mov(r15d, edx).unwrap();
    a.mov(r14, rsi).unwrap();
    a.mov(rbx, rdi).unwrap();
    for (reason, line) in [(66u32, 953u32), (226, 958), (215, 973), (111, 979)] {
        site_rip(&mut a, name, err, reason, line);
    }
    epilogue(&mut a);
    a.db(&vec![0xcc; pads[1]]).unwrap();
    a.set_label(&mut impl_).unwrap();
    prologue(&mut a);
    a.mov(rbx, rdi).unwrap();
    for (reason, line) in [(226u32, 837u32), (215, 870)] {
        site_rip(&mut a, name, err, reason, line);
    }
    epilogue(&mut a);
    a.db(&vec![0xcc; pads[2]]).unwrap();
    a.set_label(&mut read).unwrap();
    prologue(&mut a);
    a.mov(rbx, rdx).unwrap();
    a.mov(r14, rsi).unwrap();
    a.mov(r15, rdi).unwrap();
    a.mov(rbx, r15).unwrap();
    site_rip(&mut a, name, err, 66, 931);
    a.call(impl_).unwrap();
    a.mov(rax, qword_ptr(r15 + 0x30)).unwrap();
    a.add(qword_ptr(rax + 0x80), r14).unwrap();
    epilogue(&mut a);
    a.db(&vec![0xcc; pads[3]]).unwrap();
    // a caller of both
    prologue(&mut a);
    a.call(write).unwrap();
    a.call(read).unwrap();
    epilogue(&mut a);
    a.db(b"\0").unwrap();
    a.set_label(&mut name).unwrap();
    a.db(&lib_file()).unwrap();
    let r = a
        .assemble_options(
            TEXT,
            iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
        )
        .unwrap();
    let ip = |l: &CodeLabel| r.label_ip(l).unwrap();
    let addrs = [ip(&write), ip(&impl_), ip(&read), ip(&name)];
    (r.inner.code_buffer, addrs)
}

#[test]
fn pie_code_with_rip_relative_loads_is_understood() {
    // Pad so each function starts 16-aligned after int3: the function
    // sizes do not depend on the pads, so two passes settle it.
    let mut pads = [1usize; 4];
    let (mut code, mut addrs) = pie_blob(pads);
    for _ in 0..4 {
        let mut changed = false;
        for (k, &a) in addrs[..3].iter().enumerate() {
            let mis = usize::try_from(a % 16).unwrap();
            if mis != 0 {
                pads[k] += 16 - mis;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        (code, addrs) = pie_blob(pads);
    }
    let [w, _, r, name] = addrs;
    assert!(addrs[..3].iter().all(|a| a % 16 == 0), "{addrs:x?}");
    let img = Image {
        segments: vec![Segment {
            vaddr: TEXT,
            offset: 0,
            data: &code,
            exec: true,
            write: false,
        }],
        build_id: None,
    };
    let files = xref::ssl_lib_strings(&img);
    assert_eq!(files, vec![name]);
    let found = signature::find(&img, &files).expect("proven from rip-relative loads");
    assert_eq!((found.write.entry, found.read.entry), (w, r));
    assert!(found.shutdown.is_none());
}

#[test]
fn an_image_without_the_file_name_is_not_boringssl() {
    let ro = b"\0just some strings\0ssl_lib.c\0".to_vec();
    let t = vec![0xc3u8; 64];
    let img = image(&ro, &t, None);
    assert!(xref::ssl_lib_strings(&img).is_empty());
}

#[test]
fn a_cached_result_is_used_only_for_the_same_code() {
    let ro = rodata();
    let text1 = text(Variant::default(), &ro);
    let id = "00112233445566778899aabbccddeeff-test-cache";
    let img = image(&ro.bytes, &text1, Some(id));
    let files = xref::ssl_lib_strings(&img);
    let found = signature::find(&img, &files).unwrap();
    let o = offsets(&img, &found, Instant::now(), Source::Analysis).unwrap();
    remember(&img, id, &Ok(o.clone()));
    let hit = cached(&img, id).expect("a hit").expect("found");
    assert_eq!(hit.source, Source::MemoryCache);
    assert_eq!((hit.write, hit.read), (o.write, o.read));
    // Same build-id, other code at SSL_write: not trusted.
    let mut text2 = text1.clone();
    let w = usize::try_from(at(WRITE) - TEXT).unwrap();
    text2[w] = 0x90;
    let img2 = image(&ro.bytes, &text2, Some(id));
    assert!(cached(&img2, id).is_none());
}

#[test]
fn a_refusal_is_remembered_by_build_id() {
    let id = "ffeeddccbbaa-test-refusal";
    let ro = rodata();
    let t = text(Variant::default(), &ro);
    let img = image(&ro.bytes, &t, Some(id));
    remember(&img, id, &Err(Refusal::AmbiguousWrite(2)));
    assert_eq!(cached(&img, id), Some(Err(Refusal::AmbiguousWrite(2))));
}

fn entries_of(found: &signature::Found) -> Entries {
    Entries {
        write: found.write.entry,
        read: found.read.entry,
        read_impl: found.read_impl,
        shutdown: found.shutdown.as_ref().map(|s| s.entry),
    }
}

#[test]
fn cached_entries_are_proven_again_before_use() {
    let ro = rodata();
    let t = text(Variant::default(), &ro);
    let img = image(&ro.bytes, &t, None);
    let files = xref::ssl_lib_strings(&img);
    let found = signature::find(&img, &files).unwrap();
    let e = entries_of(&found);
    assert_eq!(e.read_impl, at(READ_IMPL));
    let again = signature::verify(&img, &files, e).expect("the same entries prove again");
    assert_eq!(again.write, found.write);
    assert_eq!(again.read, found.read);
    // Altered answers never pass: names swapped, an entry moved into the
    // function, another function as ssl_read_impl, a wrong shutdown.
    let swapped = Entries {
        write: e.read,
        read: e.write,
        ..e
    };
    let moved = Entries {
        write: e.write + 16,
        ..e
    };
    let other_impl = Entries {
        read_impl: at(HANDSHAKE),
        ..e
    };
    let bad_shutdown = Entries {
        shutdown: Some(at(APP)),
        ..e
    };
    for bad in [swapped, moved, other_impl, bad_shutdown] {
        assert!(
            signature::verify(&img, &files, bad).is_err(),
            "{bad:?} must be refused"
        );
    }
    // The same entries on other code (a byte of SSL_write's reason changed).
    let mut t2 = t.clone();
    let w = usize::try_from(at(WRITE) - TEXT).unwrap();
    let pos = t2[w..w + usize::try_from(SLOT).unwrap()]
        .windows(5)
        .position(|win| win == [0xba, 111, 0, 0, 0])
        .expect("mov edx, 111 in SSL_write");
    t2[w + pos + 1] = 112;
    let img2 = image(&ro.bytes, &t2, None);
    assert!(signature::verify(&img2, &files, e).is_err());
}

#[test]
fn the_disk_cache_is_private_and_well_formed() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hooks");
    let id = "00112233445566778899aabbccddeeff00112233";
    let e = Entries {
        write: 0x1000,
        read: 0x2000,
        read_impl: 0x3000,
        shutdown: None,
    };
    store_entries(&cache, id, e).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache), 0o700);
    let file = cache.join(format!("boringssl-{id}.json"));
    assert_eq!(mode(&file), 0o600);
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        1,
        "no temp file left"
    );
    assert_eq!(load_entries(&cache, id), Some(e));
    std::fs::write(&file, b"{not json").unwrap();
    assert_eq!(load_entries(&cache, id), None);
    std::fs::write(&file, vec![b' '; 5000]).unwrap();
    assert_eq!(load_entries(&cache, id), None);
    assert_eq!(load_entries(&cache, "ffff"), None);
    // A build-id is hex from an ELF note, never a path.
    assert!(store_entries(&cache, "../x", e).is_err());
    assert_eq!(load_entries(&cache, "../x"), None);
}

#[test]
fn overlapping_instructions_fail_the_analysis() {
    // `jmp` into the middle of the `mov` before it.
    let code: &[u8] = &[
        0x55, // push rbp
        0xb8, 0xeb, 0xfe, 0x90, 0x90, // mov eax, 0x9090feeb
        0xeb, 0xfa, // jmp -6 -> into the mov's immediate
    ];
    let mut t = vec![0xccu8; 32];
    t[16..16 + code.len()].copy_from_slice(code);
    let img = Image {
        segments: vec![Segment {
            vaddr: TEXT,
            offset: 0,
            data: &t,
            exec: true,
            write: false,
        }],
        build_id: None,
    };
    let e = flow::analyze(&img, TEXT + 16, &[]).unwrap_err();
    assert!(matches!(e, flow::FlowError::Overlap(_)), "{e:?}");
}

#[test]
fn locate_parses_real_elf_and_reports_not_boringssl() {
    // A system binary: an ELF without BoringSSL (this test binary holds the
    // file name in its own constants).
    let exe = PathBuf::from("/bin/ls");
    let bytes = std::fs::read(&exe).unwrap();
    assert!(matches!(
        locate(&exe, &bytes),
        Err(LocateError::NotBoringSsl { .. })
    ));
    assert!(matches!(
        locate(Path::new("x"), b"not an elf"),
        Err(LocateError::Parse { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random code next to the file name: never a panic, never an offset
    /// (random bytes cannot pass every check).
    #[test]
    fn random_code_is_refused_without_panic(code in proptest::collection::vec(any::<u8>(), 0..4096), sprinkle in any::<u32>()) {
        let ro = rodata();
        let mut t = code;
        // Plant loads of the file name, so the analysis has work to do.
        let imm = u32::try_from(ro.lib).unwrap().to_le_bytes();
        let mut i = (sprinkle as usize) % 97;
        while i + 5 < t.len() {
            t[i] = 0xb9;
            t[i + 1..i + 5].copy_from_slice(&imm);
            i += 61 + (sprinkle as usize % 31);
        }
        let img = image(&ro.bytes, &t, None);
        let files = xref::ssl_lib_strings(&img);
        prop_assert!(signature::find(&img, &files).is_err());
    }
}
