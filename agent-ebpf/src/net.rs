//! Outbound connections: the `connect` syscall tracepoints.
//!
//! - `sys_enter_connect(int fd, struct sockaddr *uservaddr, int addrlen)`
//! - `sys_exit_connect`: `long ret`
//!
//! The raw `sockaddr` goes to userspace, which decodes the family. Watched
//! processes get a `NET_CONNECT` record for every connect; other in-scope
//! processes get one `CONNECT_HINT` for their first connect, the cue for
//! attaching TLS probes to them on demand. Tested on Linux 6.18.

use agent_common::{kind, NetConnectRaw, SOCKADDR_MAX};
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::TracePointContext,
};

use crate::{emit, emit_now, header, in_scope, is_watched, syscall_arg as arg, HINTED};

#[repr(C)]
#[derive(Clone, Copy)]
struct ConnectArgs {
    fd: i64,
    addr: u64,
    addrlen: i64,
}

#[map]
static CONNECT_ARGS: HashMap<u64, ConnectArgs> = HashMap::with_max_entries(16384, 0);

#[map]
static NET_SCRATCH: PerCpuArray<NetConnectRaw> = PerCpuArray::with_max_entries(1, 0);

#[tracepoint]
pub fn net_sys_enter_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let watched = is_watched(tgid);
    // SAFETY: read-only lookup.
    if !watched && unsafe { HINTED.get(&tgid) }.is_some() {
        return 0;
    }
    if !in_scope(tgid) {
        return 0;
    }
    let a = ConnectArgs {
        fd: arg(&ctx, 0) as i64,
        addr: arg(&ctx, 1),
        addrlen: arg(&ctx, 2) as i64,
    };
    if watched {
        let _ = CONNECT_ARGS.insert(&pid_tgid, &a, 0);
    } else {
        let _ = HINTED.insert(&tgid, &1, 0);
        send(&a, 0, kind::CONNECT_HINT);
    }
    0
}

#[tracepoint]
pub fn net_sys_exit_connect(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: read-only lookup, copied at once.
    let Some(a) = (unsafe { CONNECT_ARGS.get(&pid_tgid) }).copied() else {
        return 0;
    };
    let _ = CONNECT_ARGS.remove(&pid_tgid);
    send(&a, arg(&ctx, 0) as i64, kind::NET_CONNECT);
    0
}

#[inline(always)]
fn send(a: &ConnectArgs, ret: i64, record_kind: u32) {
    let Some(rec) = NET_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let len = if a.addrlen < 0 {
        0
    } else if a.addrlen as usize > SOCKADDR_MAX {
        SOCKADDR_MAX
    } else {
        a.addrlen as usize
    };
    // SAFETY: `rec` is this CPU's scratch value; the sockaddr is read
    // through the helper.
    unsafe {
        (*rec).hdr = header(record_kind);
        (*rec).fd = a.fd as i32;
        (*rec).ret = ret as i32;
        (*rec).addr_len = 0;
        if len > 0
            && bpf_probe_read_user(
                (*rec).addr.as_mut_ptr().cast::<c_void>(),
                len as u32,
                a.addr as *const c_void,
            ) == 0
        {
            (*rec).addr_len = len as u32;
        }
        if record_kind == kind::CONNECT_HINT {
            emit_now(rec.cast::<u8>(), core::mem::size_of::<NetConnectRaw>());
        } else {
            emit(rec.cast::<u8>(), core::mem::size_of::<NetConnectRaw>());
        }
    }
}
