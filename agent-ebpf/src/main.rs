//! aitrail kernel programs.
//!
//! Every program first decides whether the current process is in scope
//! (`--pid` / `--cgroup`, enforced here before any byte is copied) and, for
//! file and network events, whether it is watched. Records go to one ring
//! buffer, sized to the data they carry; whatever cannot be sent is counted in
//! per-CPU counters that userspace reports.
//!
//! One file per probe family: `tls` (what the TLS uprobes of every stack
//! share) and `tls_openssl`, `tls_gnutls`, `tls_nss`, `tls_go`, `tls_rustls`
//! (one per stack; rustls also two BTF tracepoints on socket I/O), `proc`
//! (exec, fork, exit), `file` (openat/openat2), `net` (connect), `plain`
//! (plain-HTTP socket data to configured model-server ports).
#![no_std]
#![no_main]

mod file;
mod net;
mod plain;
mod proc;
mod tls;
mod tls_gnutls;
mod tls_go;
mod tls_nss;
mod tls_openssl;
mod tls_rustls;

use agent_common::{counter, scope_flags, CgroupScope, KernelOffsets, RecordHeader, MAX_CGROUPS};
use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
        bpf_ktime_get_boot_ns,
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};

/// Capture settings written by userspace at load (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static SCOPE_FLAGS: u32 = 0;
/// Plaintext bytes copied from one SSL call at most.
#[unsafe(no_mangle)]
static TLS_CAP: u32 = agent_common::DEFAULT_TLS_CAP;
/// Emit `LIB_OPEN` for TLS libraries opened by in-scope processes.
#[unsafe(no_mangle)]
static LIB_OPEN_ENABLED: u32 = 0;
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    task_pid: 0,
    task_tgid: 0,
    task_real_parent: 0,
    task_mm: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    bprm_filename: 0,
    task_exit_code: 0,
    sock_dport: 0,
    sock_family: 0,
};

#[inline(always)]
fn global_u32(v: &'static u32) -> u32 {
    // SAFETY: a read of a .rodata global; volatile so that the value set at
    // load time is used, not the compile-time initialiser.
    unsafe { core::ptr::read_volatile(v) }
}

#[inline(always)]
fn offsets() -> KernelOffsets {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

/// tgid → 1 for processes in a `--pid` scope; children are added at fork.
#[map]
static SCOPE: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// tgid → `watch::*` bits: processes whose file and network events we send.
#[map]
static WATCHED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// tgid → 1 once its first connect was reported (`CONNECT_HINT`).
#[map]
static HINTED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// cgroup v2 subtrees of a `--cgroup` scope; an entry with `id == 0` ends the list.
#[map]
static CGROUPS: Array<CgroupScope> = Array::with_max_entries(MAX_CGROUPS, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map]
static SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn count(idx: u32, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += n };
    }
}

/// Fills a record header with the next per-CPU sequence number.
#[inline(always)]
fn header(kind: u32) -> RecordHeader {
    // SAFETY: plain helpers with no arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let mut seq = 0;
    if let Some(p) = SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot.
        unsafe {
            *p += 1;
            seq = *p;
        }
    }
    RecordHeader {
        kind,
        cpu,
        seq,
        // SAFETY: helper with no arguments.
        ktime_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid_tgid: bpf_get_current_pid_tgid(),
    }
}

/// `bpf_ringbuf_output` flags: data records do not wake the reader (it
/// polls every few milliseconds and reads them in batches; a wakeup per
/// record costs the traced process more than the record itself), records
/// that userspace must act on at once (attach on fork and exec) force one.
pub(crate) const RB_NO_WAKEUP: u64 = 1;
pub(crate) const RB_FORCE_WAKEUP: u64 = 2;

/// Sends `len` bytes starting at `rec` (a map value) to the ring buffer,
/// without waking the reader.
#[inline(always)]
fn emit(rec: *const u8, len: usize) -> bool {
    emit_flags(rec, len, RB_NO_WAKEUP)
}

/// Like [`emit`], and wakes the reader now.
#[inline(always)]
fn emit_now(rec: *const u8, len: usize) -> bool {
    emit_flags(rec, len, RB_FORCE_WAKEUP)
}

#[inline(always)]
fn emit_flags(rec: *const u8, len: usize, flags: u64) -> bool {
    // SAFETY: `rec` points into a map value at least `len` bytes long; every
    // caller bounds `len` by the record's size.
    let bytes = unsafe { core::slice::from_raw_parts(rec, len) };
    if EVENTS.output::<[u8]>(bytes, flags).is_ok() {
        count(counter::RECORDS, 1);
        true
    } else {
        count(counter::RINGBUF_FULL, 1);
        false
    }
}

/// Argument `n` of a syscall tracepoint: its records have a fixed layout,
/// 8 bytes of common fields, the syscall number, then each argument as 8
/// bytes from offset 16 (`ret` at 16 on exit).
#[inline(always)]
fn syscall_arg(ctx: &aya_ebpf::programs::TracePointContext, n: usize) -> u64 {
    // SAFETY: reads inside the tracepoint record; the helper checks bounds.
    unsafe { ctx.read_at::<u64>(16 + 8 * n) }.unwrap_or(0)
}

/// Is the current process inside the capture scope? No scope: everything is.
#[inline(always)]
fn in_scope(tgid: u32) -> bool {
    let flags = global_u32(&SCOPE_FLAGS);
    if flags & (scope_flags::PIDS | scope_flags::CGROUPS) == 0 {
        return true;
    }
    // SAFETY: read-only lookup.
    if flags & scope_flags::PIDS != 0 && unsafe { SCOPE.get(&tgid) }.is_some() {
        return true;
    }
    if flags & scope_flags::CGROUPS != 0 {
        for i in 0..MAX_CGROUPS {
            let Some(cg) = CGROUPS.get(i) else { break };
            if cg.id == 0 {
                break;
            }
            // SAFETY: helper on the current task.
            let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(cg.level as i32) };
            if ancestor == cg.id {
                return true;
            }
        }
    }
    false
}

/// Is the current process watched (file and network events wanted)?
#[inline(always)]
fn is_watched(tgid: u32) -> bool {
    if global_u32(&SCOPE_FLAGS) & scope_flags::WATCH_ALL != 0 {
        return true;
    }
    // SAFETY: read-only lookup.
    unsafe { WATCHED.get(&tgid) }.is_some()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
