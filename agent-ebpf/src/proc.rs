//! The process tree: exec, fork and exit of in-scope processes.
//!
//! BTF-typed tracepoints hand us `task_struct` pointers; the field offsets we
//! need come from userspace, which reads them from the kernel's BTF at start
//! (aya has no CO-RE field relocations for Rust programs).
//!
//! - `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`
//! - `sched_process_fork(struct task_struct *parent, struct task_struct *child)`
//! - `sched_process_exit(struct task_struct *p, bool group_dead)`: the exit
//!   code is read from the task (`do_exit` is noreturn: no fentry there).
//!
//! Tested on Linux 6.18.

use agent_common::{
    counter, exec_flags, kind, watch, ExecRaw, ExitRaw, ForkRaw, EXEC_ARGS_MAX, EXEC_FILENAME_MAX,
    EXEC_FIXED,
};
use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user},
    },
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};

use crate::{
    count, emit_now, global_u32, header, in_scope, offsets, scope_flags, HINTED, SCOPE,
    SCOPE_FLAGS, WATCHED,
};

#[map]
static EXEC_SCRATCH: PerCpuArray<ExecRaw> = PerCpuArray::with_max_entries(1, 0);

/// Reads a kernel value of type `T` at `base + off`.
#[inline(always)]
unsafe fn read_kernel<T: Default>(base: u64, off: u32) -> Option<T> {
    let mut v = T::default();
    // SAFETY: the helper checks the address; a failure returns an error.
    let rc = unsafe {
        bpf_probe_read_kernel(
            (&raw mut v).cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
            (base + u64::from(off)) as *const c_void,
        )
    };
    if rc == 0 {
        Some(v)
    } else {
        count(counter::READ_FAILED, 1);
        None
    }
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn proc_fork(ctx: BtfTracePointContext) -> i32 {
    let off = offsets();
    let child: u64 = ctx.arg(1);
    // SAFETY: `child` is a BTF-typed task pointer of the tracepoint.
    let (Some(pid), Some(tgid)) = (unsafe { read_kernel::<u32>(child, off.task_pid) }, unsafe {
        read_kernel::<u32>(child, off.task_tgid)
    }) else {
        return 0;
    };
    // A new thread: the process tree does not change.
    if pid != tgid {
        return 0;
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !in_scope(parent_tgid) {
        return 0;
    }
    if global_u32(&SCOPE_FLAGS) & scope_flags::PIDS != 0 && SCOPE.insert(&tgid, &1, 0).is_err() {
        count(counter::SCOPE_FULL, 1);
    }
    // SAFETY: read-only lookup.
    if unsafe { WATCHED.get(&parent_tgid) }.is_some()
        && WATCHED.insert(&tgid, &watch::INHERITED, 0).is_err()
    {
        count(counter::SCOPE_FULL, 1);
    }
    let rec = ForkRaw {
        hdr: header(kind::FORK),
        parent_tgid,
        child_tgid: tgid,
    };
    emit_now(
        (&raw const rec).cast::<u8>(),
        core::mem::size_of::<ForkRaw>(),
    );
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn proc_exec(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !in_scope(tgid) {
        return 0;
    }
    // A new program: the SSL layer identity of the old one means nothing.
    let _ = crate::tls_nss::NSS_SSL_ID.remove(&tgid);
    let off = offsets();
    let task: u64 = ctx.arg(0);
    let old_pid: u32 = ctx.arg(1);
    let bprm: u64 = ctx.arg(2);
    let Some(rec) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: `rec` is this CPU's scratch value; kernel pointers are read
    // through the probe-read helpers, which check them.
    unsafe {
        (*rec).hdr = header(kind::EXEC);
        (*rec).uid = uid_gid as u32;
        (*rec).gid = (uid_gid >> 32) as u32;
        (*rec).old_pid = old_pid;
        (*rec).flags = 0;
        (*rec).comm = bpf_get_current_comm().unwrap_or_default();
        (*rec).ppid = read_kernel::<u64>(task, off.task_real_parent)
            .and_then(|parent| read_kernel::<u32>(parent, off.task_tgid))
            .unwrap_or(0);

        (*rec).filename_len = 0;
        if let Some(name) = read_kernel::<u64>(bprm, off.bprm_filename) {
            let n = bpf_probe_read_kernel_str(
                (*rec).filename.as_mut_ptr().cast::<c_void>(),
                EXEC_FILENAME_MAX as u32,
                name as *const c_void,
            );
            if n > 0 {
                (*rec).filename_len = n as u32 - 1;
            }
        }

        (*rec).args_len = 0;
        let mm = read_kernel::<u64>(task, off.task_mm).unwrap_or(0);
        let start = read_kernel::<u64>(mm, off.mm_arg_start).unwrap_or(0);
        let end = read_kernel::<u64>(mm, off.mm_arg_end).unwrap_or(0);
        if mm == 0 || start == 0 || end <= start {
            (*rec).flags |= exec_flags::ARGS_FAILED;
        } else {
            let mut len = end - start;
            if len > EXEC_ARGS_MAX as u64 {
                len = EXEC_ARGS_MAX as u64;
                (*rec).flags |= exec_flags::ARGS_TRUNCATED;
            }
            let len = len & (EXEC_ARGS_MAX as u64 * 2 - 1);
            let len = if len > EXEC_ARGS_MAX as u64 {
                EXEC_ARGS_MAX as u64
            } else {
                len
            };
            let rc = bpf_probe_read_user(
                (*rec).args.as_mut_ptr().cast::<c_void>(),
                len as u32,
                start as *const c_void,
            );
            if rc == 0 {
                (*rec).args_len = len as u32;
            } else {
                count(counter::READ_FAILED, 1);
                (*rec).flags |= exec_flags::ARGS_FAILED;
            }
        }
        let args_len = ((*rec).args_len as usize) & (EXEC_ARGS_MAX * 2 - 1);
        let args_len = if args_len > EXEC_ARGS_MAX {
            EXEC_ARGS_MAX
        } else {
            args_len
        };
        emit_now(rec.cast::<u8>(), EXEC_FIXED + args_len);
    }
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn proc_exit(ctx: BtfTracePointContext) -> i32 {
    // Threads end often; only the last one (`group_dead`) ends the process.
    let group_dead: u64 = ctx.arg(1);
    if group_dead & 0xff == 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !in_scope(tgid) {
        return 0;
    }
    let task: u64 = ctx.arg(0);
    // SAFETY: `task` is the tracepoint's BTF-typed task pointer.
    let code = unsafe { read_kernel::<u32>(task, offsets().task_exit_code) }.unwrap_or(0);
    let rec = ExitRaw {
        hdr: header(kind::EXIT),
        code,
        _pad: 0,
    };
    emit_now(
        (&raw const rec).cast::<u8>(),
        core::mem::size_of::<ExitRaw>(),
    );
    let _ = SCOPE.remove(&tgid);
    let _ = WATCHED.remove(&tgid);
    let _ = HINTED.remove(&tgid);
    let _ = crate::tls_nss::NSS_SSL_ID.remove(&tgid);
    0
}
