//! Per-process TLS probe attach, and the scope maps.
//!
//! The attach table: for each hooked function, the entry program and the
//! return program. Each (process, target) pair gets its own links, bound to
//! the process by the perf pid filter; they are dropped when it exits. Every
//! skipped or failed attach is counted and logged.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use agent_common::CgroupScope;
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, ProgramArray},
    programs::{
        uprobe::{UProbeLink, UProbeLinkId, UProbeScope},
        BtfTracePoint, ProgramError, UProbe,
    },
    sys::SyscallError,
    Btf, Ebpf,
};

use super::{
    decisions::{Decision, Outcome},
    nonzero, stacks,
    targets::{self, Targets, TlsTarget},
    CaptureError,
};

/// The links of one (process, target) pair: program name and link id.
type Links = Vec<(&'static str, UProbeLinkId)>;

/// The rustls programs that tie records to sockets, and their kernel
/// functions (agent-ebpf/src/tls_rustls.rs).
const RUSTLS_SOCKET_PROGRAMS: [(&str, &str); 2] = [
    ("tls_rustls_sock_recv", "sock_recv_length"),
    ("tls_rustls_sock_send", "sock_send_length"),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum SocketPrograms {
    NotLoaded,
    Loaded,
    Attached,
    Unavailable,
}

pub struct Attacher {
    scope: BpfHashMap<MapData, u32, u8>,
    cgroups: Array<MapData, CgroupScope>,
    targets: Targets,
    /// pid → target id → links.
    links: HashMap<u32, HashMap<(u64, u64), Links>>,
    scope_pids: HashSet<u32>,
    /// rustls: processes registered in the kernel's `RUSTLS_PROCS`, and
    /// whether the socket programs that pair its records' directions are
    /// loaded (at start) and attached (with the first such process).
    rustls_pids: HashSet<u32>,
    rustls_sockets: SocketPrograms,
    attached: u64,
    attach_failed: u64,
    /// Attaches given up because the process had already exited (a short
    /// child is often gone by the time its fork record is read).
    attach_exited: u64,
    /// Processes found gone at attach, until their exit record is read:
    /// their later fork, exec and library records attach nothing.
    gone: HashSet<u32>,
    detached: u64,
    /// Links of exited processes go to a thread that drops them: closing a
    /// uprobe's perf event waits for the kernel to unregister it (about
    /// 200 ms here), which must not stall the ring-buffer reader.
    janitor: flume::Sender<Vec<UProbeLink>>,
    /// The exec being handled (pid, its record's boot-time ns): the
    /// program's probes attached now are logged with their delay.
    exec: Option<(u32, u64)>,
}

impl Attacher {
    pub fn new(scope: BpfHashMap<MapData, u32, u8>, cgroups: Array<MapData, CgroupScope>) -> Self {
        let (janitor, dead) = flume::unbounded::<Vec<UProbeLink>>();
        let spawned = std::thread::Builder::new()
            .name("uprobe-detach".into())
            .spawn(move || {
                for links in dead {
                    drop(links);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no detach thread: links are dropped inline");
        }
        Self {
            scope,
            cgroups,
            targets: Targets::default(),
            links: HashMap::new(),
            scope_pids: HashSet::new(),
            rustls_pids: HashSet::new(),
            rustls_sockets: SocketPrograms::NotLoaded,
            attached: 0,
            attach_failed: 0,
            attach_exited: 0,
            gone: HashSet::new(),
            detached: 0,
            janitor,
            exec: None,
        }
    }

    /// Loads the TLS programs of every stack (attached later, per process),
    /// and the copy program their return probes tail-call (never attached:
    /// it sits in slot 0 of `TLS_COPY`).
    pub fn load_tls(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
        for &name in
            std::iter::once(&stacks::COPY_PROGRAM).chain(stacks::PROGRAMS.iter().copied().flatten())
        {
            let p: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or(CaptureError::Map { name, source: None })?
                .try_into()
                .map_err(|e| CaptureError::Program {
                    name,
                    action: "lookup",
                    source: Box::new(e),
                })?;
            let started = std::time::Instant::now();
            p.load().map_err(|e| CaptureError::Program {
                name,
                action: "load",
                source: Box::new(e),
            })?;
            tracing::debug!(program = name, took = ?started.elapsed(), "TLS program loaded");
        }
        let copy_fd = ebpf
            .program(stacks::COPY_PROGRAM)
            .ok_or(CaptureError::Map {
                name: stacks::COPY_PROGRAM,
                source: None,
            })?
            .fd()
            .map_err(|e| CaptureError::Program {
                name: stacks::COPY_PROGRAM,
                action: "fd",
                source: Box::new(e),
            })?
            .try_clone()
            .map_err(|e| CaptureError::Program {
                name: stacks::COPY_PROGRAM,
                action: "fd",
                source: Box::new(e.into()),
            })?;
        let map_err = |e| CaptureError::Map {
            name: "TLS_COPY",
            source: Some(e),
        };
        let mut slots: ProgramArray<_> = ebpf
            .map_mut("TLS_COPY")
            .ok_or(CaptureError::Map {
                name: "TLS_COPY",
                source: None,
            })?
            .try_into()
            .map_err(map_err)?;
        slots.set(0, &copy_fd, 0).map_err(map_err)?;
        Ok(())
    }

    /// Loads the rustls socket programs (BTF tracepoints `sock_recv_length`
    /// and `sock_send_length`; attached later, with the first rustls
    /// process). A
    /// kernel that cannot load them leaves rustls programs unattached
    /// (logged, counted) rather than capturing half-paired connections.
    pub fn load_rustls_sockets(&mut self, ebpf: &mut Ebpf, btf: &Btf) {
        let mut ok = true;
        for (name, function) in RUSTLS_SOCKET_PROGRAMS {
            let loaded = ebpf
                .program_mut(name)
                .ok_or(aya::programs::ProgramError::InvalidName {
                    name: name.to_string(),
                })
                .and_then(<&mut BtfTracePoint>::try_from)
                .and_then(|p| p.load(function, btf));
            if let Err(e) = loaded {
                tracing::warn!(program = name, error = %e, "rustls socket program not loaded: rustls capture is off");
                ok = false;
            }
        }
        self.rustls_sockets = if ok {
            SocketPrograms::Loaded
        } else {
            SocketPrograms::Unavailable
        };
    }

    /// Attaches the socket programs once; false when they cannot be.
    fn rustls_sockets_ready(&mut self, ebpf: &mut Ebpf) -> bool {
        match self.rustls_sockets {
            SocketPrograms::Attached => return true,
            SocketPrograms::Loaded => {}
            SocketPrograms::NotLoaded | SocketPrograms::Unavailable => return false,
        }
        for (name, _) in RUSTLS_SOCKET_PROGRAMS {
            let attached = ebpf
                .program_mut(name)
                .ok_or(aya::programs::ProgramError::InvalidName {
                    name: name.to_string(),
                })
                .and_then(<&mut BtfTracePoint>::try_from)
                .and_then(BtfTracePoint::attach);
            if let Err(e) = attached {
                tracing::warn!(program = name, error = %e, "rustls socket program not attached: rustls capture is off");
                self.rustls_sockets = SocketPrograms::Unavailable;
                return false;
            }
        }
        tracing::info!("rustls socket programs attached (sock_recv_length, sock_send_length)");
        self.rustls_sockets = SocketPrograms::Attached;
        true
    }

    fn set_rustls_pid(ebpf: &mut Ebpf, pid: u32, on: bool) -> bool {
        let Some(map) = ebpf.map_mut("RUSTLS_PROCS") else {
            return false;
        };
        let Ok(mut procs) = BpfHashMap::<&mut MapData, u32, u8>::try_from(map) else {
            return false;
        };
        if on {
            procs.insert(pid, 1, 0).is_ok()
        } else {
            procs.remove(&pid).is_ok()
        }
    }

    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    pub fn targets_mut(&mut self) -> &mut Targets {
        &mut self.targets
    }

    pub fn set_cgroup(&mut self, i: u32, cg: CgroupScope) -> Result<(), CaptureError> {
        self.cgroups.set(i, cg, 0).map_err(|e| CaptureError::Map {
            name: "CGROUPS",
            source: Some(e),
        })
    }

    pub fn add_scope_pid(&mut self, pid: u32) {
        self.scope_pids.insert(pid);
        if let Err(e) = self.scope.insert(pid, 1, 0) {
            tracing::warn!(pid, error = %e, "cannot add process to the scope map");
        }
    }

    pub fn scope_pids(&self) -> Vec<u32> {
        self.scope_pids.iter().copied().collect()
    }

    pub fn attached_processes(&self) -> usize {
        self.links.len()
    }

    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut c = vec![
            ("tls_attach_links", self.attached),
            ("tls_attach_failed", self.attach_failed),
            ("tls_attach_exited", self.attach_exited),
            ("tls_detach_links", self.detached),
            ("tls_targets", self.targets.len() as u64),
            ("tls_targets_refused", self.targets.refused()),
            ("tls_attached_processes", self.links.len() as u64),
        ];
        c.extend(stacks::boringssl::counters());
        c
    }

    /// Attaches every known library to `pid`, and its executable when that
    /// embeds OpenSSL (where not attached yet). Programs such as node are
    /// attached only to their own processes: registering a uprobe on a big
    /// binary costs tens of milliseconds, time in which a short client
    /// would already have made its first request.
    ///
    /// The first uprobe registered after a pause costs the kernel an RCU
    /// grace period (~13 ms here: `register_for_each_vma` write-locks
    /// `dup_mmap_sem`), the next ones ~0.1 ms each. So the libraries the
    /// process maps now (its parent's before an exec, its own after) go
    /// first, then the rest in a fixed order: the order is the same on every
    /// run, and a library in use is not left to the end of ~30 links.
    pub fn attach_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        // Only those not attached yet: at an exec after the fork, usually
        // none, and then /proc/PID/maps is not read.
        let linked = self.links.get(&pid);
        let mut libraries: Vec<TlsTarget> = self
            .targets
            .all()
            .filter(|t| t.library && !linked.is_some_and(|m| m.contains_key(&t.id)))
            .cloned()
            .collect();
        if libraries.len() > 1 {
            let mapped = targets::mapped_files(pid);
            let key = |t: &TlsTarget| (!mapped.contains(&t.id), t.stack, t.path.clone());
            libraries.sort_by_cached_key(key);
        }
        for t in &libraries {
            if !self.attach_target(ebpf, pid, t) {
                return;
            }
        }
        self.attach_exe(ebpf, pid);
    }

    /// [`Self::attach_process`] for the exec of `pid` recorded at boot-time
    /// `ktime_ns`: what its program embeds is logged with the delay from
    /// the exec to its probes being in.
    pub fn attach_exec(&mut self, ebpf: &mut Ebpf, pid: u32, ktime_ns: u64, discover: bool) {
        self.exec = Some((pid, ktime_ns));
        if discover {
            self.discover_and_attach(ebpf, pid);
        } else {
            self.attach_process(ebpf, pid);
        }
        self.exec = None;
    }

    /// Learns the targets `pid` has mapped or is, then attaches them all.
    pub fn discover_and_attach(&mut self, ebpf: &mut Ebpf, pid: u32) {
        self.targets.discover_process(pid);
        self.attach_process(ebpf, pid);
    }

    /// Attaches the executable of `pid` if it embeds OpenSSL.
    pub fn attach_exe(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let exe = format!("/proc/{pid}/exe");
        if let Some(mut t) = self.targets.learn(Path::new(&exe)) {
            // A program is known by identity: it may have been learned
            // through another process's /proc path, gone since.
            t.path = exe.into();
            self.attach_target(ebpf, pid, &t);
        }
    }

    /// A process opened a TLS library: learn it and attach it to `pid`.
    pub fn learn_and_attach(&mut self, ebpf: &mut Ebpf, pid: u32, path: &str) {
        let via_root = format!("/proc/{pid}/root{path}");
        let p = if Path::new(&via_root).exists() {
            via_root
        } else {
            path.to_owned()
        };
        if let Some(t) = self.targets.learn(Path::new(&p)) {
            self.attach_target(ebpf, pid, &t);
        }
    }

    /// Attaches `t`'s hooks to `pid`; false when the process is gone.
    fn attach_target(&mut self, ebpf: &mut Ebpf, pid: u32, t: &TlsTarget) -> bool {
        if self.gone.contains(&pid) {
            return false;
        }
        if self.links.get(&pid).is_some_and(|m| m.contains_key(&t.id)) {
            return true;
        }
        let Some(nz) = nonzero(pid) else { return true };
        if t.stack == stacks::Stack::Rustls {
            // Without the socket programs its records cannot be paired
            // into connections: better no probes than misleading ones.
            if !self.rustls_sockets_ready(ebpf) || !Self::set_rustls_pid(ebpf, pid, true) {
                self.attach_failed += 1;
                tracing::warn!(pid, path = %t.path.display(), "rustls probes not attached");
                return true;
            }
            self.rustls_pids.insert(pid);
        }
        let started = std::time::Instant::now();
        let mut made = Vec::new();
        let mut alive = true;
        let mut first_error = None;
        for hook in &t.hooks {
            let Some(prog) = ebpf.program_mut(hook.program) else {
                self.attach_failed += 1;
                continue;
            };
            let Ok(p): Result<&mut UProbe, _> = prog.try_into() else {
                self.attach_failed += 1;
                continue;
            };
            match p.attach(hook.offset, &t.path, UProbeScope::OneProcess(nz)) {
                Ok(id) => {
                    self.attached += 1;
                    made.push((hook.program, id));
                }
                Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                    if io_error.raw_os_error() == Some(libc::ESRCH) =>
                {
                    // Gone already: its exit record follows, nothing to do.
                    self.attach_exited += 1;
                    if self.gone.len() < 65536 {
                        self.gone.insert(pid);
                    }
                    alive = false;
                    break;
                }
                Err(e) => {
                    self.attach_failed += 1;
                    first_error.get_or_insert_with(|| format!("{}: {e}", hook.function));
                    tracing::debug!(
                        pid, path = %t.path.display(), function = hook.function, error = ?e,
                        "TLS probe attach failed"
                    );
                }
            }
        }
        tracing::debug!(
            pid, path = %t.path.display(), stack = %t.stack, method = %t.method,
            links = made.len(), took = ?started.elapsed(), "TLS probes attached"
        );
        self.log_attach(pid, t, &made, first_error, started.elapsed());
        self.links.entry(pid).or_default().insert(t.id, made);
        alive
    }

    /// Logs a failed attach, and the delay from exec to probes of a program
    /// that embeds its TLS stack (libraries are attached at fork, before).
    fn log_attach(
        &mut self,
        pid: u32,
        t: &TlsTarget,
        made: &[(&'static str, UProbeLinkId)],
        error: Option<String>,
        took: std::time::Duration,
    ) {
        let exec = self.exec.filter(|(p, _)| *p == pid && !t.library);
        let outcome = if error.is_some() {
            Outcome::AttachFailed
        } else if exec.is_some() && !made.is_empty() {
            Outcome::Attached
        } else {
            return;
        };
        let mut d = Decision::new(outcome, &t.path);
        d.stack = Some(t.stack.to_string());
        d.method = Some(t.method.to_string());
        d.probes = made.len();
        d.reason = error;
        d.pid = Some(pid);
        d.took_ms = took.as_secs_f64() * 1e3;
        if let Some((_, ktime)) = exec {
            let ns = crate::util::boot_ns().saturating_sub(ktime);
            #[allow(clippy::cast_precision_loss, reason = "a delay in ms")]
            let ms = ns as f64 / 1e6;
            d.exec_to_attach_ms = Some(ms);
        }
        self.targets.decisions.push(d);
    }

    /// Drops the links of a process that ended.
    pub fn detach_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        self.scope_pids.remove(&pid);
        self.gone.remove(&pid);
        if self.rustls_pids.remove(&pid) {
            Self::set_rustls_pid(ebpf, pid, false);
        }
        let Some(by_target) = self.links.remove(&pid) else {
            return;
        };
        let mut owned = Vec::new();
        for links in by_target.into_values() {
            for (name, id) in links {
                if let Some(Ok(p)) = ebpf.program_mut(name).map(<&mut UProbe>::try_from) {
                    if let Ok(link) = p.take_link(id) {
                        self.detached += 1;
                        owned.push(link);
                    }
                }
            }
        }
        if let Err(flume::SendError(links)) = self.janitor.send(owned) {
            drop(links);
        }
    }
}
