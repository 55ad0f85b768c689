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
    maps::{Array, HashMap as BpfHashMap, MapData},
    programs::{
        uprobe::{UProbeLink, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf,
};

use super::{
    nonzero,
    targets::{Targets, TlsTarget, FUNCTIONS},
    CaptureError,
};

/// (function index in `FUNCTIONS`, entry program, return program).
const TLS_PROGRAMS: [(usize, &str, Option<&str>); 5] = [
    (
        0,
        "tls_openssl_ssl_write",
        Some("tls_openssl_ssl_write_ret"),
    ),
    (
        1,
        "tls_openssl_ssl_write_ex",
        Some("tls_openssl_ssl_write_ex_ret"),
    ),
    (2, "tls_openssl_ssl_read", Some("tls_openssl_ssl_read_ret")),
    (
        3,
        "tls_openssl_ssl_read_ex",
        Some("tls_openssl_ssl_read_ex_ret"),
    ),
    (4, "tls_openssl_ssl_free", None),
];

/// The links of one (process, target) pair: program name and link id.
type Links = Vec<(&'static str, UProbeLinkId)>;

pub struct Attacher {
    scope: BpfHashMap<MapData, u32, u8>,
    cgroups: Array<MapData, CgroupScope>,
    targets: Targets,
    /// pid → target id → links.
    links: HashMap<u32, HashMap<(u64, u64), Links>>,
    scope_pids: HashSet<u32>,
    attached: u64,
    attach_failed: u64,
    detached: u64,
    /// Links of exited processes go to a thread that drops them: closing a
    /// uprobe's perf event waits for the kernel to unregister it (about
    /// 200 ms here), which must not stall the ring-buffer reader.
    janitor: flume::Sender<Vec<UProbeLink>>,
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
            attached: 0,
            attach_failed: 0,
            detached: 0,
            janitor,
        }
    }

    /// Loads the eight TLS programs (attached later, per process).
    pub fn load_tls(ebpf: &mut Ebpf) -> Result<(), CaptureError> {
        for (_, entry, ret) in TLS_PROGRAMS {
            for name in std::iter::once(entry).chain(ret) {
                let p: &mut UProbe = ebpf
                    .program_mut(name)
                    .ok_or(CaptureError::Map { name, source: None })?
                    .try_into()
                    .map_err(|e| CaptureError::Program {
                        name,
                        action: "lookup",
                        source: Box::new(e),
                    })?;
                p.load().map_err(|e| CaptureError::Program {
                    name,
                    action: "load",
                    source: Box::new(e),
                })?;
            }
        }
        Ok(())
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
            ("tls_detach_links", self.detached),
            ("tls_targets", self.targets.len() as u64),
            ("tls_attached_processes", self.links.len() as u64),
        ];
        c.extend(super::boringssl::counters());
        c
    }

    /// Attaches every known library to `pid`, and its executable when that
    /// embeds OpenSSL (where not attached yet). Programs such as node are
    /// attached only to their own processes: registering a uprobe on a big
    /// binary costs tens of milliseconds, time in which a short client
    /// would already have made its first request.
    pub fn attach_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let libraries: Vec<TlsTarget> = self.targets.all().filter(|t| t.library).cloned().collect();
        for t in &libraries {
            self.attach_target(ebpf, pid, t);
        }
        self.attach_exe(ebpf, pid);
    }

    /// Learns the targets `pid` has mapped or is, then attaches them all.
    pub fn discover_and_attach(&mut self, ebpf: &mut Ebpf, pid: u32) {
        self.targets.discover_process(pid);
        self.attach_process(ebpf, pid);
    }

    /// Attaches the executable of `pid` if it embeds OpenSSL.
    pub fn attach_exe(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let exe = format!("/proc/{pid}/exe");
        if let Some(t) = self.targets.learn(Path::new(&exe)) {
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

    fn attach_target(&mut self, ebpf: &mut Ebpf, pid: u32, t: &TlsTarget) {
        if self.links.get(&pid).is_some_and(|m| m.contains_key(&t.id)) {
            return;
        }
        let Some(nz) = nonzero(pid) else { return };
        let started = std::time::Instant::now();
        let mut made = Vec::new();
        for (i, entry, ret) in TLS_PROGRAMS {
            let Some(off) = t.offsets[i] else { continue };
            for name in std::iter::once(entry).chain(ret) {
                let Some(prog) = ebpf.program_mut(name) else {
                    continue;
                };
                let Ok(p): Result<&mut UProbe, _> = prog.try_into() else {
                    continue;
                };
                match p.attach(off, &t.path, UProbeScope::OneProcess(nz)) {
                    Ok(id) => {
                        self.attached += 1;
                        made.push((name, id));
                    }
                    Err(e) => {
                        self.attach_failed += 1;
                        tracing::debug!(
                            pid, path = %t.path.display(), function = FUNCTIONS[i], error = ?e,
                            "TLS probe attach failed"
                        );
                    }
                }
            }
        }
        tracing::debug!(
            pid, path = %t.path.display(), links = made.len(), took = ?started.elapsed(),
            "TLS probes attached"
        );
        self.links.entry(pid).or_default().insert(t.id, made);
    }

    /// Drops the links of a process that ended.
    pub fn detach_process(&mut self, ebpf: &mut Ebpf, pid: u32) {
        self.scope_pids.remove(&pid);
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
