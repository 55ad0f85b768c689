//! Blind spots: a process that opens a TLS connection to a known LLM API
//! and yields no plaintext. Its TLS stack is one we do not hook (Java's JSSE,
//! a stripped `BoringSSL`, rustls, Go): capture is missing there, and the
//! analyst is told exactly where — process, executable and build-id.
//!
//! How: the known API hosts (configurable; `host` or `host:port`, port 443
//! by default) are resolved in the background, again every few minutes.
//! A successful (or in-progress, non-blocking) `connect` of a watched
//! process to one of those addresses opens a question; any TLS plaintext
//! from that process closes it; if none came within `grace_secs`, or the
//! process ended first, a `blind_spot` finding is raised, once per process.
//! Connect events exist for watched processes (those that talked to a model
//! already, or match `capture.watch_comm` / `watch_exe`: list the agents you
//! run there, e.g. `claude`, `codex`, and their blind spots show).

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    path::Path,
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    event::{kind, Event, FindingInfo, Severity},
    util::Envelope,
};

/// Hosts of the LLM APIs watched by default.
pub const DEFAULT_HOSTS: &[&str] = &[
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com",
    "api.mistral.ai",
    "api.groq.com",
    "api.deepseek.com",
    "api.x.ai",
    "openrouter.ai",
    "api.together.xyz",
    "api.fireworks.ai",
    "api.perplexity.ai",
    "api.cohere.com",
];

/// Processes with an open question, and processes known to yield plaintext,
/// at most.
const MAX_TRACKED: usize = 65_536;

/// `[blind_spot]` in the agent's config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlindSpotConfig {
    pub enabled: bool,
    /// `host` (port 443) or `host:port`; IP literals are taken as they are.
    pub hosts: Vec<String>,
    /// How long after the connect plaintext may take to show.
    pub grace_secs: u64,
    /// How often the hosts are resolved again.
    pub resolve_every_secs: u64,
}

impl Default for BlindSpotConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            hosts: DEFAULT_HOSTS.iter().map(|h| (*h).to_owned()).collect(),
            grace_secs: 10,
            resolve_every_secs: 300,
        }
    }
}

/// Resolved destinations: address and port → the host name configured.
type Dests = Arc<RwLock<HashMap<SocketAddr, String>>>;

struct Open {
    deadline_ns: u64,
    connect: Event,
    dest: String,
    /// Read while the process runs (its `/proc/PID/exe` goes at exit).
    build_id: Option<String>,
}

pub struct BlindSpots {
    env: Envelope,
    dests: Dests,
    grace_ns: u64,
    open: HashMap<u32, Open>,
    with_plaintext: HashSet<u32>,
    reported: HashSet<u32>,
    /// Findings raised.
    pub raised: u64,
}

impl BlindSpots {
    /// Starts the resolver thread (when enabled).
    pub fn start(cfg: &BlindSpotConfig, env: Envelope) -> Self {
        let dests: Dests = Arc::default();
        if cfg.enabled && !cfg.hosts.is_empty() {
            let (hosts, every) = (cfg.hosts.clone(), cfg.resolve_every_secs.max(10));
            let dests = Arc::clone(&dests);
            let spawned = std::thread::Builder::new()
                .name("resolve-llm-hosts".into())
                .spawn(move || loop {
                    let resolved = resolve(&hosts);
                    if let Ok(mut d) = dests.write() {
                        *d = resolved;
                    }
                    std::thread::sleep(Duration::from_secs(every));
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "blind spots: cannot start the resolver; none will be reported");
            }
        }
        Self {
            env,
            dests,
            grace_ns: cfg.grace_secs.saturating_mul(1_000_000_000),
            open: HashMap::new(),
            with_plaintext: HashSet::new(),
            reported: HashSet::new(),
            raised: 0,
        }
    }

    /// A `net.connect` event of `pid` (already placed in its trace).
    pub fn on_connect(&mut self, pid: u32, ev: &Event, ktime_ns: u64) {
        let Some(net) = &ev.net else { return };
        let ok = net.result == 0 || net.result == -i64::from(libc::EINPROGRESS);
        if !ok
            || self.with_plaintext.contains(&pid)
            || self.reported.contains(&pid)
            || self.open.contains_key(&pid)
            || self.open.len() >= MAX_TRACKED
        {
            return;
        }
        let Ok(ip) = net.address.parse::<IpAddr>() else {
            return;
        };
        // A dual-stack socket (Java's, any AF_INET6 socket that is not
        // V6ONLY) reaches an IPv4 host at `::ffff:a.b.c.d`.
        let ip = ip.to_canonical();
        let dest = self
            .dests
            .read()
            .ok()
            .and_then(|d| d.get(&SocketAddr::new(ip, net.port)).cloned());
        if let Some(dest) = dest {
            self.open.insert(
                pid,
                Open {
                    deadline_ns: ktime_ns.saturating_add(self.grace_ns),
                    connect: ev.clone(),
                    dest,
                    build_id: build_id(pid, ev.process.as_ref().map(|p| p.exe.as_str())),
                },
            );
        }
    }

    /// TLS plaintext from `pid`: capture works there. Called per TLS
    /// record: a process already known costs one lookup.
    pub fn on_plaintext(&mut self, pid: u32) {
        if self.with_plaintext.contains(&pid) {
            return;
        }
        self.open.remove(&pid);
        if self.with_plaintext.len() < MAX_TRACKED {
            self.with_plaintext.insert(pid);
        }
    }

    /// `pid` ended: an open question is answered now.
    pub fn on_exit(&mut self, pid: u32) -> Option<Event> {
        self.with_plaintext.remove(&pid);
        self.reported.remove(&pid);
        let open = self.open.remove(&pid)?;
        Some(self.finding(&open))
    }

    /// Questions whose grace ended without plaintext.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Event> {
        let due: Vec<u32> = self
            .open
            .iter()
            .filter(|(_, o)| o.deadline_ns <= now_ns)
            .map(|(p, _)| *p)
            .collect();
        let mut out = Vec::new();
        for pid in due {
            if let Some(open) = self.open.remove(&pid) {
                if self.reported.len() < MAX_TRACKED {
                    self.reported.insert(pid);
                }
                out.push(self.finding(&open));
            }
        }
        out
    }

    fn finding(&mut self, open: &Open) -> Event {
        self.raised += 1;
        let c = &open.connect;
        let mut f = self.env.event(kind::FINDING, 0, c.process.clone());
        f.time.clone_from(&c.time);
        f.trace_id.clone_from(&c.trace_id);
        f.parent_span_id = Some(c.span_id.clone());
        f.severity = Severity::Medium;
        let exe = c.process.as_ref().map_or("?", |p| p.exe.as_str());
        let build_id = open
            .build_id
            .as_ref()
            .map_or_else(String::new, |b| format!(" (build-id {b})"));
        let addr = c
            .net
            .as_ref()
            .map_or_else(String::new, |n| format!("{}:{}", n.address, n.port));
        // What capture concluded about this executable's own TLS stack
        // (hooked, or refused and why), when a resolver recognised one.
        let why = open
            .build_id
            .as_deref()
            .and_then(crate::capture::stacks::outcome_for_build_id)
            .unwrap_or_else(|| "its TLS library is not hooked".into());
        f.finding = Some(FindingInfo {
            rule: "capture.blind_spot".into(),
            title: "TLS to an LLM API with no plaintext captured: capture is missing here".into(),
            evidence: vec![c.id.clone()],
            class: "blind_spot".into(),
            detail: Some(format!(
                "{exe}{build_id} connected to {} ({addr}) and no TLS plaintext was captured from it: {why}",
                open.dest
            )),
            ..FindingInfo::default()
        });
        f
    }
}

/// Every configured host's addresses, with the host's name.
fn resolve(hosts: &[String]) -> HashMap<SocketAddr, String> {
    let mut out = HashMap::new();
    for h in hosts {
        let spec = if h.contains(':') && !h.starts_with('[') && h.parse::<IpAddr>().is_err() {
            h.clone()
        } else if h.starts_with('[') || h.matches(':').count() > 1 {
            // An IPv6 literal, with or without a port.
            h.parse::<SocketAddr>().map_or_else(
                |_| format!("[{}]:443", h.trim_matches(['[', ']'])),
                |a| a.to_string(),
            )
        } else {
            format!("{h}:443")
        };
        match spec.to_socket_addrs() {
            Ok(addrs) => {
                for a in addrs {
                    out.insert(a, h.clone());
                }
            }
            Err(error) => tracing::debug!(host = %h, %error, "blind spots: cannot resolve"),
        }
    }
    out
}

/// The GNU build-id of a process's executable, in hex: from its `PT_NOTE`
/// segments, read from the first 64 KiB of the file (where linkers put
/// them), so a 100 MB binary costs one small read.
///
/// The process may be gone by the time its connect is decoded (a short
/// client): then the executable's path, as its exec recorded it, is read
/// instead (the same file unless it was replaced since).
fn build_id(pid: u32, exe: Option<&str>) -> Option<String> {
    file_build_id(Path::new(&format!("/proc/{pid}/exe"))).or_else(|| {
        exe.filter(|e| e.starts_with('/'))
            .and_then(|e| file_build_id(Path::new(e)))
    })
}

/// The GNU build-id of an ELF file, in hex, from its first 64 KiB.
pub fn file_build_id(path: &Path) -> Option<String> {
    use std::io::Read as _;
    let mut head = Vec::with_capacity(64 * 1024);
    std::fs::File::open(path)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    elf_build_id(&head).map(hex::encode)
}

/// The `NT_GNU_BUILD_ID` note of a little-endian ELF64 image's head.
fn elf_build_id(b: &[u8]) -> Option<&[u8]> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?));
    // ELF magic, 64-bit, little-endian.
    if b.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum.min(64) {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != 4 {
            continue; // not PT_NOTE
        }
        let off = usize::try_from(u64_at(ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(ph + 32)?).ok()?;
        let notes = b.get(off..off.checked_add(size)?)?;
        let mut n = 0;
        while n + 12 <= notes.len() {
            let namesz =
                usize::try_from(u32::from_le_bytes(notes[n..n + 4].try_into().ok()?)).ok()?;
            let descsz =
                usize::try_from(u32::from_le_bytes(notes[n + 4..n + 8].try_into().ok()?)).ok()?;
            let kind = u32::from_le_bytes(notes[n + 8..n + 12].try_into().ok()?);
            let name_end = n + 12 + namesz.div_ceil(4) * 4;
            let desc = notes.get(name_end..name_end.checked_add(descsz)?)?;
            if kind == 3 && notes.get(n + 12..n + 12 + namesz)? == b"GNU\0" {
                return Some(desc);
            }
            n = name_end + descsz.div_ceil(4) * 4;
        }
    }
    None
}

#[cfg(test)]
mod tests;
