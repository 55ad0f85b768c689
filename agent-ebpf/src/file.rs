//! File opens: the `openat` and `openat2` syscall tracepoints.
//!
//! - `sys_enter_openat(int dfd, const char *filename, int flags, umode_t mode)`
//! - `sys_enter_openat2(int dfd, const char *filename, struct open_how *how, size_t usize)`
//! - `sys_exit_openat*`: `long ret`
//!
//! fentry/fexit on `do_sys_openat2` would cost unwatched processes less, but
//! the kernels we target here refuse to load tracing programs (EPERM), so the
//! syscall tracepoints are used; their first step is the watch lookup, and
//! the cost is measured in docs/benchmarks.md. Syscall tracepoint records
//! have a fixed layout: 8 bytes of common fields, the syscall number, then
//! each argument as 8 bytes from offset 16; `ret` at 16 on exit.
//! Tested on Linux 6.18.

use agent_common::{kind, FileOpenRaw, FILE_OPEN_FIXED, PATH_MAX_CAPTURE};
use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};

use crate::{
    emit, emit_now, global_u32, header, in_scope, is_watched, syscall_arg as arg, LIB_OPEN_ENABLED,
};

#[repr(C)]
#[derive(Clone, Copy)]
struct OpenArgs {
    dfd: i64,
    filename: u64,
    flags: u64,
    watched: u8,
    _pad: [u8; 7],
}

#[map]
static OPEN_ARGS: HashMap<u64, OpenArgs> = HashMap::with_max_entries(16384, 0);

#[map]
static FILE_SCRATCH: PerCpuArray<FileOpenRaw> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn enter(ctx: &TracePointContext, openat2: bool) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let watched = is_watched(tgid);
    if !watched && global_u32(&LIB_OPEN_ENABLED) == 0 {
        return 0;
    }
    if !in_scope(tgid) {
        return 0;
    }
    let mut flags = arg(ctx, 2);
    if openat2 {
        // `open_how.flags` is its first member, in the caller's memory.
        let mut f: u64 = 0;
        // SAFETY: helper-checked read of 8 bytes.
        unsafe { bpf_probe_read_user((&raw mut f).cast::<c_void>(), 8, flags as *const c_void) };
        flags = f;
    }
    let a = OpenArgs {
        dfd: arg(ctx, 0) as i64,
        filename: arg(ctx, 1),
        flags,
        watched: u8::from(watched),
        _pad: [0; 7],
    };
    let _ = OPEN_ARGS.insert(&pid_tgid, &a, 0);
    0
}

#[inline(always)]
fn exit(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: read-only lookup, copied at once.
    let Some(a) = (unsafe { OPEN_ARGS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = OPEN_ARGS.remove(&pid_tgid);
    let ret = arg(ctx, 0) as i64;
    let watched = a.watched != 0;
    if !watched && ret < 0 {
        return 0;
    }
    let Some(rec) = FILE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: `rec` is this CPU's scratch value; the path is read through
    // the helper.
    unsafe {
        let n = bpf_probe_read_user_str(
            (*rec).path.as_mut_ptr().cast::<c_void>(),
            PATH_MAX_CAPTURE as u32,
            a.filename as *const c_void,
        );
        let len = if n > 0 { (n - 1) as usize } else { 0 };
        let len = len & (PATH_MAX_CAPTURE - 1);
        if !watched && !is_tls_library(&(*rec).path, len) {
            return 0;
        }
        (*rec).hdr = header(if watched {
            kind::FILE_OPEN
        } else {
            kind::LIB_OPEN
        });
        (*rec).ret = ret;
        (*rec).dfd = a.dfd as i32;
        (*rec).path_len = len as u32;
        (*rec).flags = a.flags;
        if watched {
            emit(rec.cast::<u8>(), FILE_OPEN_FIXED + len);
        } else {
            // A TLS library: userspace attaches to it before it is used.
            emit_now(rec.cast::<u8>(), FILE_OPEN_FIXED + len);
        }
    }
    0
}

#[tracepoint]
pub fn file_sys_enter_openat(ctx: TracePointContext) -> u32 {
    enter(&ctx, false)
}

#[tracepoint]
pub fn file_sys_enter_openat2(ctx: TracePointContext) -> u32 {
    enter(&ctx, true)
}

#[tracepoint]
pub fn file_sys_exit_openat(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

/// Is the path a shared TLS library some stack resolver reads (userspace:
/// `capture::stacks::is_library_name`)? Only fixed offsets from the end are
/// compared: a scan of the whole path for its last `/` is too much for the
/// verifier. So each name is checked at a few lengths with a version suffix
/// of that many bytes after it.
#[inline(always)]
fn is_tls_library(path: &[u8; PATH_MAX_CAPTURE], len: usize) -> bool {
    // OpenSSL: libssl.so, libssl.so.3, libssl.so.1.1, libssl.so.1.0.2
    ends_with_lib(path, len, b"libssl.so", &[9, 11, 13, 15])
        // GnuTLS: libgnutls.so, .so.N, .so.30 (the SONAME), .so.30.34.3
        || ends_with_lib(path, len, b"libgnutls.so", &[12, 14, 15, 20])
        // NSS: the SSL layer (SSL_ImportFD), NSPR (PR_Write, …), and
        // Mozilla's builds that fold both into libnss3.so
        || ends_with_lib(path, len, b"libssl3.so", &[10])
        || ends_with_lib(path, len, b"libnspr4.so", &[11])
        || ends_with_lib(path, len, b"libnss3.so", &[10])
}

/// Does the path end in `/` + `name` + a suffix, the whole tail (name and
/// suffix) being one of `tails` bytes long?
#[inline(always)]
fn ends_with_lib<const N: usize>(
    path: &[u8; PATH_MAX_CAPTURE],
    len: usize,
    name: &[u8; N],
    tails: &[usize],
) -> bool {
    for &tail in tails {
        if len < tail + 1 {
            continue;
        }
        let start = len - tail;
        if path[(start - 1) & (PATH_MAX_CAPTURE - 1)] != b'/' {
            continue;
        }
        let mut ok = true;
        for (j, c) in name.iter().enumerate() {
            if path[(start + j) & (PATH_MAX_CAPTURE - 1)] != *c {
                ok = false;
                break;
            }
        }
        if ok && (tail == N || path[(start + N) & (PATH_MAX_CAPTURE - 1)] == b'.') {
            return true;
        }
    }
    false
}
