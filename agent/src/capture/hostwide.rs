//! The programs attached once for the whole host — the process tree (BTF
//! tracepoints), file opens and connects (syscall tracepoints), plain-HTTP
//! socket I/O (BTF tracepoints) — and the tracefs they need. TLS probes are
//! attached per process instead (`attach`).

use std::{path::Path, time::Instant};

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    programs::{BtfTracePoint, TracePoint},
    Btf, Ebpf,
};

use super::CaptureError;

/// The plain-HTTP programs (agent-ebpf/src/plain.rs): BTF tracepoints on
/// every socket send and receive of the host, attached once when ports are
/// configured. They return after one map lookup for processes out of scope
/// and one more for sockets to other ports (docs/benchmarks.md).
pub(super) fn attach_plain_http(
    ebpf: &mut Ebpf,
    btf: &Btf,
    ports: &[u16],
) -> Result<(), CaptureError> {
    if ports.is_empty() {
        tracing::info!("plain-HTTP capture off (no [capture] plain_http_ports)");
        return Ok(());
    }
    {
        let map = ebpf.map_mut("PLAIN_PORTS").ok_or(CaptureError::Map {
            name: "PLAIN_PORTS",
            source: None,
        })?;
        let mut m =
            BpfHashMap::<&mut MapData, u16, u8>::try_from(map).map_err(|e| CaptureError::Map {
                name: "PLAIN_PORTS",
                source: Some(e),
            })?;
        for &port in ports {
            m.insert(port, 1, 0).map_err(|e| CaptureError::Map {
                name: "PLAIN_PORTS",
                source: Some(e),
            })?;
        }
    }
    for (name, tp) in [
        ("plain_sock_send", "sock_send_length"),
        ("plain_sock_recv", "sock_recv_length"),
        ("plain_sock_state", "inet_sock_set_state"),
    ] {
        let prog_err = |action: &'static str| {
            move |e| CaptureError::Program {
                name,
                action,
                source: Box::new(e),
            }
        };
        let p: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .ok_or(CaptureError::Map { name, source: None })?
            .try_into()
            .map_err(prog_err("lookup"))?;
        let started = Instant::now();
        p.load(tp, btf).map_err(prog_err("load"))?;
        p.attach().map_err(prog_err("attach"))?;
        tracing::debug!(program = name, took = ?started.elapsed(), "plain-HTTP program loaded");
    }
    tracing::info!(
        ?ports,
        "plain-HTTP capture attached (sock_send_length, sock_recv_length)"
    );
    Ok(())
}

/// Loads and attaches the programs that are attached once, host-wide: the
/// process tree (BTF tracepoints) and the file and connect syscall
/// tracepoints.
pub(super) fn attach_kernel_programs(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), CaptureError> {
    let prog_err = |name: &'static str, action: &'static str| {
        move |e| CaptureError::Program {
            name,
            action,
            source: Box::new(e),
        }
    };
    for (name, tp) in [
        ("proc_fork", "sched_process_fork"),
        ("proc_exec", "sched_process_exec"),
        ("proc_exit", "sched_process_exit"),
    ] {
        let p: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .ok_or(CaptureError::Map { name, source: None })?
            .try_into()
            .map_err(prog_err(name, "lookup"))?;
        p.load(tp, btf).map_err(prog_err(name, "load"))?;
        p.attach().map_err(prog_err(name, "attach"))?;
    }
    for (name, category, tp) in [
        ("file_sys_enter_openat", "syscalls", "sys_enter_openat"),
        ("file_sys_enter_openat2", "syscalls", "sys_enter_openat2"),
        ("file_sys_exit_openat", "syscalls", "sys_exit_openat"),
        ("file_sys_exit_openat", "syscalls", "sys_exit_openat2"),
        ("net_sys_enter_connect", "syscalls", "sys_enter_connect"),
        ("net_sys_exit_connect", "syscalls", "sys_exit_connect"),
    ] {
        let p: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or(CaptureError::Map { name, source: None })?
            .try_into()
            .map_err(prog_err(name, "lookup"))?;
        // One program serves both exits of openat and openat2.
        if p.fd().is_err() {
            p.load().map_err(prog_err(name, "load"))?;
        }
        p.attach(category, tp).map_err(prog_err(name, "attach"))?;
    }
    tracing::info!("process, file and network programs attached");
    Ok(())
}

/// Mounts tracefs where aya expects it, when it is not mounted yet.
pub(super) fn mount_tracefs() {
    let dir = Path::new("/sys/kernel/tracing");
    if dir.join("events").exists() {
        return;
    }
    tracing::info!("tracefs is not mounted: mounting it on /sys/kernel/tracing");
    let rc = nix::mount::mount(
        Some("nodev"),
        dir,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    if let Err(e) = rc {
        tracing::warn!(error = %e, "mounting tracefs failed");
    }
}
