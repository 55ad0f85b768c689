//! The kernel side, seen from userspace: load the programs, set the scope,
//! attach, read the ring buffer.
//!
//! Attach policy (DESIGN principle 5): tracing programs (exec, fork, exit,
//! openat, connect) are attached once, host-wide, and filter in the kernel.
//! TLS uprobes are attached *per process* (perf pid filter), so processes that
//! are not watched never hit them:
//! - with a scope, every in-scope process is attached when it is seen (at
//!   start, at fork, at exec). A probe bound to a task survives its exec, so a
//!   child attached at fork is covered before it runs its first TLS call;
//! - on a whole host, a process is attached at its first `connect()` (the
//!   kernel sends one `CONNECT_HINT` per process) or at exec when its
//!   command matches the configured watch list.
//!
//! Everything runs on one capture thread: it drains the ring buffer, acts on
//! process records at once (attach latency is what decides whether a short
//! client's first request is seen), and hands decoded records to the pipeline
//! through a bounded channel. A full channel blocks this thread, the ring
//! buffer then fills and the kernel counts what it drops: loss is never
//! silent.

mod attach;
pub mod btf;
pub mod decisions;
mod hostwide;
pub mod records;
pub mod running;
pub mod stacks;
pub mod targets;

use std::{
    collections::HashSet,
    fs,
    num::NonZeroU32,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use agent_common::{counter, scope_flags, CgroupScope, MAX_CGROUPS};
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    Btf, Ebpf, EbpfLoader,
};

pub use self::records::Record;
use self::{
    attach::Attacher,
    hostwide::{attach_kernel_programs, attach_plain_http, mount_tracefs},
};

/// Remote ports whose established connections mark a running process as
/// a TLS client worth attaching at start on a whole host.
const HTTPS_PORTS: [u16; 2] = [443, 8443];

/// How long the reader sleeps between ring-buffer reads when no record
/// forced a wakeup: the bound on how late a data record is seen.
const POLL_MS: i32 = 10;

/// The eBPF object built by agent/build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(
        "this binary was built without its eBPF programs (AYA_BUILD_SKIP); rebuild without it"
    )]
    NoObject,
    #[error("kernel BTF")]
    Btf(#[from] btf::BtfError),
    #[error("cannot load kernel BTF for the BTF tracepoints")]
    AyaBtf(#[source] aya::BtfError),
    #[error("loading the eBPF object failed")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program {name}: {action} failed")]
    Program {
        name: &'static str,
        action: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {name} missing or of the wrong type")]
    Map {
        name: &'static str,
        #[source]
        source: Option<aya::maps::MapError>,
    },
    #[error("cgroup {path}")]
    Cgroup {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("too many cgroups in the scope (at most {max})")]
    TooManyCgroups { max: u32 },
    #[error("process {pid} of the scope does not exist")]
    NoSuchProcess { pid: u32 },
}

/// What the kernel side is told at load.
#[derive(Clone, Debug, Default)]
pub struct CaptureConfig {
    pub scope_pids: Vec<u32>,
    pub scope_cgroups: Vec<PathBuf>,
    pub tls_cap: u32,
    pub ringbuf_bytes: u32,
    pub watch_all: bool,
    /// comm names (≤ 15 bytes) watched from their exec on.
    pub watch_comm: Vec<String>,
    /// Executable paths watched from their exec on.
    pub watch_exe: Vec<PathBuf>,
    /// Per-build cache of hooks found by signature (empty: memory only).
    pub hook_cache_dir: PathBuf,
    /// Where `agent-PID.json` goes ([`decisions`]); empty: nowhere.
    pub status_dir: PathBuf,
    /// Remote ports whose plain-HTTP socket data is copied (empty: the
    /// plain-HTTP programs are not attached).
    pub plain_http_ports: Vec<u16>,
    /// Processes held before they exec a known program (`aitrail agent --
    /// COMMAND`): the program's own TLS stack (Go, a static OpenSSL) is
    /// attached to the process before it runs. Attached at exec instead,
    /// a fast starter (a Go client) sends its first request before the
    /// probes are in.
    pub preattach: Vec<(u32, PathBuf)>,
}

impl CaptureConfig {
    pub fn scoped(&self) -> bool {
        !self.scope_pids.is_empty() || !self.scope_cgroups.is_empty()
    }

    /// The scope in words, for `aitrail doctor`.
    pub fn describe_scope(&self) -> String {
        let mut parts = Vec::new();
        if !self.scope_pids.is_empty() {
            let pids: Vec<String> = self.scope_pids.iter().map(u32::to_string).collect();
            parts.push(format!("pids {}", pids.join(",")));
        }
        if !self.scope_cgroups.is_empty() {
            let cg: Vec<String> = self
                .scope_cgroups
                .iter()
                .map(|c| c.display().to_string())
                .collect();
            parts.push(format!("cgroups {}", cg.join(",")));
        }
        if parts.is_empty() {
            "whole host".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Loaded and attached programs plus the maps userspace drives.
pub struct Capture {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    watched: BpfHashMap<MapData, u32, u8>,
    counters: PerCpuArray<MapData, u64>,
    attacher: Attacher,
    cfg: CaptureConfig,
    /// `--record`: every record's bytes, as read, go here too.
    recorder: Option<crate::replay::Recorder>,
}

/// Size of the embedded eBPF object (a placeholder when built with
/// `AYA_BUILD_SKIP`).
pub fn ebpf_object_len() -> usize {
    EBPF_OBJECT.len()
}

/// How often the status file is rewritten when nothing was decided.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Sum of the kernel's per-CPU counters, by name.
pub type KernelCounters = Vec<(&'static str, u64)>;

/// A message from the pipeline back to the capture thread.
#[derive(Debug)]
pub enum Command {
    /// Watch this process (LLM traffic seen): file and net events from now on.
    Watch(u32),
}

impl Capture {
    /// Loads the programs, sets the scope and attaches everything that is not
    /// per process. Tracefs is mounted if missing.
    pub fn load(cfg: CaptureConfig) -> Result<Self, CaptureError> {
        if EBPF_OBJECT.is_empty() {
            return Err(CaptureError::NoObject);
        }
        mount_tracefs();
        stacks::set_hook_cache_dir(&cfg.hook_cache_dir);
        let offsets = btf::kernel_offsets(Path::new(btf::VMLINUX_BTF))?;
        // Parsing the kernel's BTF takes tens of MB for a moment: give it
        // back before the next phase, so the peaks do not add up.
        release_heap();
        let mut flags = 0u32;
        if !cfg.scope_pids.is_empty() {
            flags |= scope_flags::PIDS;
        }
        if !cfg.scope_cgroups.is_empty() {
            flags |= scope_flags::CGROUPS;
        }
        if cfg.watch_all {
            flags |= scope_flags::WATCH_ALL;
        }
        // LIB_OPEN costs a path read per open of in-scope processes: only
        // worth it when the scope is small.
        let lib_open = u32::from(cfg.scoped());
        let tls_cap = cfg.tls_cap.clamp(1, agent_common::MAX_TLS_CAP);
        let ring_bytes = cfg.ringbuf_bytes.max(4096).next_power_of_two();
        // One parse of the kernel's BTF serves the loader and the BTF
        // tracepoints; it is dropped before the ring buffer is mapped.
        let kernel_btf = Btf::from_sys_fs().map_err(CaptureError::AyaBtf)?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&kernel_btf))
            .override_global("SCOPE_FLAGS", &flags, true)
            .override_global("TLS_CAP", &tls_cap, true)
            .override_global("LIB_OPEN_ENABLED", &lib_open, true)
            .override_global("OFFSETS", &offsets, true)
            .map_max_entries("EVENTS", ring_bytes)
            .load(EBPF_OBJECT)
            .map_err(|e| CaptureError::Load(Box::new(e)))?;
        // Until the scope is seeded the programs see nothing in it.
        attach_kernel_programs(&mut ebpf, &kernel_btf)?;
        attach_plain_http(&mut ebpf, &kernel_btf, &cfg.plain_http_ports)?;
        let mut cap = Self::from_loaded(ebpf, cfg)?;
        cap.attacher.load_rustls_sockets(&mut cap.ebpf, &kernel_btf);
        drop(kernel_btf);
        release_heap();
        cap.seed_scope()?;
        cap.attach_tls()?;
        Ok(cap)
    }

    fn from_loaded(mut ebpf: Ebpf, cfg: CaptureConfig) -> Result<Self, CaptureError> {
        fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> CaptureError {
            move |e| CaptureError::Map {
                name,
                source: Some(e),
            }
        }
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or(CaptureError::Map { name, source: None })
        };
        let ring = RingBuf::try_from(take(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?;
        let watched =
            BpfHashMap::try_from(take(&mut ebpf, "WATCHED")?).map_err(map_err("WATCHED"))?;
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?).map_err(map_err("COUNTERS"))?;
        let scope = BpfHashMap::try_from(take(&mut ebpf, "SCOPE")?).map_err(map_err("SCOPE"))?;
        let cgroups = Array::try_from(take(&mut ebpf, "CGROUPS")?).map_err(map_err("CGROUPS"))?;
        let attacher = Attacher::new(scope, cgroups);
        Ok(Self {
            ebpf,
            ring,
            watched,
            counters,
            attacher,
            cfg,
            recorder: None,
        })
    }

    /// Fills the scope maps: the given pids and their living descendants,
    /// the given cgroups.
    fn seed_scope(&mut self) -> Result<(), CaptureError> {
        let mut cgroups = Vec::new();
        for path in &self.cfg.scope_cgroups {
            cgroups.push(cgroup_scope(path)?);
        }
        if cgroups.len() > MAX_CGROUPS as usize {
            return Err(CaptureError::TooManyCgroups { max: MAX_CGROUPS });
        }
        for (i, cg) in cgroups.iter().enumerate() {
            self.attacher
                .set_cgroup(u32::try_from(i).unwrap_or(u32::MAX), *cg)?;
        }
        for &pid in &self.cfg.scope_pids {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(CaptureError::NoSuchProcess { pid });
            }
        }
        let pids: Vec<u32> = descendants(&self.cfg.scope_pids);
        for pid in pids {
            self.attacher.add_scope_pid(pid);
        }
        Ok(())
    }

    fn attach_tls(&mut self) -> Result<(), CaptureError> {
        Attacher::load_tls(&mut self.ebpf)?;
        self.attacher.targets_mut().discover_host();
        // Executables named in the config are resolved now, before READY:
        // locating a stripped BoringSSL takes up to half a second, which a
        // client's first request would not wait for at its exec.
        for exe in &self.cfg.watch_exe {
            self.attacher.targets_mut().learn(exe);
        }
        // On a whole host, processes that already hold a connection to an
        // HTTPS port may never connect again: attach them now.
        if !self.cfg.scoped() {
            let pids = running::pids_connected_to(&HTTPS_PORTS);
            tracing::info!(
                processes = pids.len(),
                ports = ?HTTPS_PORTS,
                "attaching to processes already connected to HTTPS ports"
            );
            for pid in pids {
                self.attacher.discover_and_attach(&mut self.ebpf, pid);
            }
        }
        // Attach TLS probes to every process already in scope.
        if self.cfg.scoped() {
            let pids = self.attacher.scope_pids();
            for pid in pids {
                self.attacher.discover_and_attach(&mut self.ebpf, pid);
            }
            for pid in cgroup_pids(&self.cfg.scope_cgroups) {
                self.attacher.discover_and_attach(&mut self.ebpf, pid);
            }
            for (pid, program) in self.cfg.preattach.clone() {
                self.attacher
                    .learn_and_attach(&mut self.ebpf, pid, &program.to_string_lossy());
            }
        }
        tracing::info!(
            targets = self.attacher.targets().len(),
            processes = self.attacher.attached_processes(),
            "TLS probes ready"
        );
        Ok(())
    }

    /// Writes every record read from now on to `recorder` as well.
    pub fn record_to(&mut self, recorder: crate::replay::Recorder) {
        self.recorder = Some(recorder);
    }

    /// Sums of the kernel's per-CPU counters.
    pub fn kernel_counters(&self) -> KernelCounters {
        let mut out = Vec::new();
        for (i, name) in counter::NAMES.iter().enumerate() {
            let sum = self
                .counters
                .get(&u32::try_from(i).unwrap_or(u32::MAX), 0)
                .map_or(0, |v| v.iter().sum());
            out.push((*name, sum));
        }
        out.extend(self.attacher.counters());
        out
    }

    /// Runs the capture loop until `stop` is set and the ring buffer is
    /// drained. Records go to `out`; commands come from `commands`.
    pub fn run(
        mut self,
        out: &flume::Sender<Vec<Record>>,
        commands: &flume::Receiver<Command>,
        stop: &Arc<AtomicBool>,
        counters_out: &flume::Sender<KernelCounters>,
    ) {
        let fd = self.ring.as_raw_fd();
        let mut decode_errors = std::collections::BTreeMap::<&'static str, u64>::default();
        let mut last_counters = Instant::now();
        let watch_comm: HashSet<String> = self.cfg.watch_comm.iter().cloned().collect();
        let watch_exe: HashSet<PathBuf> = self.cfg.watch_exe.iter().cloned().collect();
        let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut last_status = None::<Instant>;
        if !self.cfg.status_dir.as_os_str().is_empty() {
            decisions::prune_stale(&self.cfg.status_dir);
        }
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // Data records do not wake us (see agent-ebpf `emit`): poll with
            // a short timeout and read what came in batches. Fork and exec
            // records force a wakeup, so attach does not wait for the timer.
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&raw mut pfd, 1, if stopping { 0 } else { POLL_MS }) };
            let mut batch = Vec::new();
            while let Some(item) = self.ring.next() {
                if let Some(r) = &mut self.recorder {
                    r.push(&item);
                }
                match records::decode(&item) {
                    Ok(r) => batch.push(r),
                    Err(e) => *decode_errors.entry(e.name()).or_default() += 1,
                }
                if batch.len() >= 1024 {
                    break;
                }
            }
            if let Some(r) = &mut self.recorder {
                r.end_batch();
            }
            let drained = batch.is_empty();
            for rec in &batch {
                self.on_record(rec, &watch_comm, &watch_exe);
            }
            if !batch.is_empty() && out.send(batch).is_err() {
                return;
            }
            while let Ok(cmd) = commands.try_recv() {
                match cmd {
                    Command::Watch(pid) => self.watch(pid, agent_common::watch::MARKED),
                }
            }
            if last_counters.elapsed() >= Duration::from_secs(1) || (stopping && drained) {
                let mut c = self.kernel_counters();
                c.extend(decode_errors.iter().map(|(k, v)| (*k, *v)));
                if let Some(r) = &self.recorder {
                    c.push(("record_file_dropped", r.dropped()));
                    c.push(("recorded_records", r.written()));
                }
                let _ = counters_out.send(c);
                last_counters = Instant::now();
                let changed = self.attacher.targets_mut().decisions.take_changed();
                if changed || last_status.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
                    self.write_status(&started_at);
                    last_status = Some(Instant::now());
                }
            }
            if stopping && drained {
                break;
            }
        }
        if !self.cfg.status_dir.as_os_str().is_empty() {
            let _ = std::fs::remove_file(decisions::status_path(
                &self.cfg.status_dir,
                std::process::id(),
            ));
        }
        if let Some(r) = self.recorder.take() {
            let written = r.finish();
            tracing::info!(records = written, "recording closed");
        }
        // The remaining links close with the process; detaching them here
        // would only delay the drain (each takes the kernel ~200 ms).
    }

    /// Writes `agent-PID.json` in the status directory (see [`decisions`]).
    fn write_status(&self, started_at: &str) {
        let dir = &self.cfg.status_dir;
        if dir.as_os_str().is_empty() {
            return;
        }
        let targets = self.attacher.targets();
        let status = decisions::AgentStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: started_at.to_owned(),
            updated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            scope: self.cfg.describe_scope(),
            counters: self
                .attacher
                .counters()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            decisions_evicted: targets.decisions.evicted,
            decisions: targets.decisions.iter().cloned().collect(),
        };
        if let Err(e) = decisions::write_status(dir, &status) {
            tracing::warn!(dir = %dir.display(), error = %e, "status file not written");
        }
    }

    fn watch(&mut self, pid: u32, why: u8) {
        if self.watched.get(&pid, 0).is_err() {
            let _ = self.watched.insert(pid, why, 0);
        }
    }

    /// Acts on process records before the pipeline sees them: attach TLS
    /// probes to new processes, learn new TLS libraries, detach the dead.
    fn on_record(
        &mut self,
        rec: &Record,
        watch_comm: &HashSet<String>,
        watch_exe: &HashSet<PathBuf>,
    ) {
        let scoped = self.cfg.scoped();
        match rec {
            Record::Fork(f) => {
                if scoped {
                    self.attacher.attach_process(&mut self.ebpf, f.child_tgid);
                }
            }
            Record::Exec(e) => {
                let pid = rec.tgid();
                let ktime = e.hdr.ktime_ns;
                if watch_comm.contains(&e.comm) || watch_exe.contains(Path::new(&e.filename)) {
                    self.watch(pid, agent_common::watch::MARKED);
                    if !scoped {
                        self.attacher.attach_exec(&mut self.ebpf, pid, ktime, true);
                    }
                }
                if scoped {
                    // Probes attached at fork (or at start) survive exec;
                    // a new executable that embeds OpenSSL is new here.
                    self.attacher.attach_exec(&mut self.ebpf, pid, ktime, false);
                }
            }
            Record::Exit(_) => self.attacher.detach_process(&mut self.ebpf, rec.tgid()),
            Record::LibOpen(f) | Record::FileOpen(f) => {
                if f.ret >= 0 && targets::is_tls_library_name(Path::new(&f.path)) {
                    let pid = rec.tgid();
                    self.attacher.learn_and_attach(&mut self.ebpf, pid, &f.path);
                }
            }
            Record::ConnectHint(_) => {
                self.attacher
                    .discover_and_attach(&mut self.ebpf, rec.tgid());
            }
            Record::Tls(_) | Record::Connect(_) => {}
        }
    }
}

/// Returns freed heap memory to the system (glibc keeps it otherwise).
pub fn release_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Id and depth of a cgroup v2 directory.
fn cgroup_scope(path: &Path) -> Result<CgroupScope, CaptureError> {
    use std::os::unix::fs::MetadataExt;
    let err = |source| CaptureError::Cgroup {
        path: path.display().to_string(),
        source,
    };
    let meta = fs::metadata(path).map_err(err)?;
    let canon = fs::canonicalize(path).map_err(err)?;
    let root = cgroup2_root(&canon).ok_or_else(|| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not inside a cgroup v2 mount",
        ))
    })?;
    let level = canon
        .strip_prefix(&root)
        .map_or(0, |rel| rel.components().count());
    Ok(CgroupScope {
        id: meta.ino(),
        level: u32::try_from(level).unwrap_or(u32::MAX),
        _pad: 0,
    })
}

/// The cgroup2 mount point that contains `path`.
fn cgroup2_root(path: &Path) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let mp = it.nth(1)?;
            let fstype = it.next()?;
            (fstype == "cgroup2").then(|| PathBuf::from(mp))
        })
        .filter(|mp| path.starts_with(mp))
        .max_by_key(|mp| mp.as_os_str().len())
}

/// Every process in the given cgroup subtrees.
fn cgroup_pids(roots: &[PathBuf]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = roots.to_vec();
    while let Some(dir) = stack.pop() {
        if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    out
}

/// The given pids and all their living descendants (from /proc).
pub fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut children = std::collections::HashMap::<u32, Vec<u32>>::default();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = crate::procs::read_ppid(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<u32> = roots.to_vec();
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        out.push(p);
        if let Some(c) = children.get(&p) {
            stack.extend(c);
        }
    }
    out
}

pub(crate) fn nonzero(pid: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(pid)
}
