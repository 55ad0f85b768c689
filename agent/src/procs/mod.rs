//! The process table: pid → what it runs, who started it, and a stable
//! `exec_id` for each exec.
//!
//! Seeded from /proc at start so that processes older than the daemon are
//! known, then kept current from exec, fork and exit records. `exec_id` is a
//! hash of the boot id, the pid and the exec's start time: stable and unique
//! for one exec of one process on one host boot, whether it was learned from
//! /proc or from the kernel.

#![expect(
    clippy::similar_names,
    reason = "pid/ppid and uid/user are the kernel's own names"
)]

use std::{collections::HashMap, fs};

use sha2::{Digest, Sha256};

use crate::event::ProcessInfo;

#[derive(Clone, Debug, Default)]
pub struct Proc {
    pub info: ProcessInfo,
    /// Boot-time ns of the exec (or of the start, when learned from /proc).
    pub start_ns: u64,
    pub exited: bool,
}

pub struct ProcTable {
    procs: HashMap<u32, Proc>,
    boot_id: String,
    users: HashMap<u32, String>,
    clk_tck: u64,
    max: usize,
    evicted: u64,
    /// False for a replay: nothing is learned from this host.
    live: bool,
}

/// Reads the parent pid of `pid` from /proc.
pub fn read_ppid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|s| s.0)
}

/// (ppid, starttime in clock ticks) from /proc/PID/stat.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    // comm may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let start = f.get(19)?.parse().ok()?;
    Some((ppid, start))
}

fn load_users() -> HashMap<u32, String> {
    let mut m = HashMap::new();
    if let Ok(s) = fs::read_to_string("/etc/passwd") {
        for line in s.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if let (Some(name), Some(uid)) = (f.first(), f.get(2).and_then(|u| u.parse().ok())) {
                m.entry(uid).or_insert_with(|| (*name).to_owned());
            }
        }
    }
    m
}

impl Default for ProcTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcTable {
    pub fn new() -> Self {
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            procs: HashMap::new(),
            boot_id: fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            users: load_users(),
            clk_tck: u64::try_from(tck).unwrap_or(100).max(1),
            max: 65536,
            evicted: 0,
            live: true,
        }
    }

    /// A table that knows only what records tell it: it never reads /proc
    /// or /etc/passwd (a replay must not mix this host's processes or users
    /// into a recorded host's). `boot_id` is the recorded host's.
    pub fn offline(boot_id: &str) -> Self {
        Self {
            boot_id: boot_id.to_owned(),
            users: HashMap::new(),
            live: false,
            ..Self::new()
        }
    }

    pub fn exec_id(&self, pid: u32, start_ns: u64) -> String {
        let mut h = Sha256::new();
        h.update(self.boot_id.as_bytes());
        h.update(pid.to_le_bytes());
        // /proc start times have clock-tick precision: round kernel times the
        // same way so both sources give one id.
        let tick_ns = 1_000_000_000 / self.clk_tck;
        h.update((start_ns / tick_ns).to_le_bytes());
        hex::encode(&h.finalize()[..8])
    }

    pub fn user_name(&self, uid: u32) -> Option<String> {
        self.users.get(&uid).cloned()
    }

    /// Learns a process from /proc (a process older than the daemon).
    pub fn seed(&mut self, pid: u32) -> Option<&Proc> {
        if self.procs.contains_key(&pid) {
            return self.procs.get(&pid);
        }
        if !self.live {
            return None;
        }
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (ppid, start_ticks) = parse_stat(&stat)?;
        let start_ns = start_ticks * (1_000_000_000 / self.clk_tck);
        let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default();
        let exe = fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let mut args = fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| crate::capture::records::split_args(&b))
            .unwrap_or_default();
        crate::redact::redact_args(&mut args);
        let uid = fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|u| u.parse().ok())
            })
            .unwrap_or(0);
        let parent_exec_id = self.parent_exec_id(ppid);
        let info = ProcessInfo {
            pid,
            ppid,
            uid,
            user: self.user_name(uid),
            comm,
            exe,
            args,
            exec_id: self.exec_id(pid, start_ns),
            parent_exec_id,
        };
        self.insert(
            pid,
            Proc {
                info,
                start_ns,
                exited: false,
            },
        );
        self.procs.get(&pid)
    }

    fn parent_exec_id(&mut self, ppid: u32) -> Option<String> {
        if ppid == 0 {
            return None;
        }
        if !self.procs.contains_key(&ppid) && ppid != 1 {
            self.seed(ppid);
        }
        self.procs.get(&ppid).map(|p| p.info.exec_id.clone())
    }

    fn insert(&mut self, pid: u32, p: Proc) {
        if self.procs.len() >= self.max && !self.procs.contains_key(&pid) {
            // Bounded: forget exited processes first.
            let dead: Vec<u32> = self
                .procs
                .iter()
                .filter(|(_, p)| p.exited)
                .map(|(k, _)| *k)
                .take(1024)
                .collect();
            if dead.is_empty() {
                self.evicted += 1;
                return;
            }
            for d in dead {
                self.procs.remove(&d);
            }
        }
        self.procs.insert(pid, p);
    }

    pub fn get(&mut self, pid: u32) -> Option<&Proc> {
        if !self.procs.contains_key(&pid) {
            self.seed(pid);
        }
        self.procs.get(&pid)
    }

    /// A new process: a copy of its parent until it execs.
    pub fn on_fork(&mut self, parent: u32, child: u32, ktime_ns: u64) {
        let base = self.get(parent).map(|p| p.info.clone()).unwrap_or_default();
        let info = ProcessInfo {
            pid: child,
            ppid: parent,
            exec_id: self.exec_id(child, ktime_ns),
            parent_exec_id: Some(base.exec_id.clone()).filter(|s| !s.is_empty()),
            ..base
        };
        self.insert(
            child,
            Proc {
                info,
                start_ns: ktime_ns,
                exited: false,
            },
        );
    }

    /// An exec: the process now runs `filename` with `args`.
    #[allow(clippy::too_many_arguments, reason = "mirrors the exec record")]
    pub fn on_exec(
        &mut self,
        pid: u32,
        ppid: u32,
        uid: u32,
        comm: &str,
        filename: &str,
        args: &[String],
        ktime_ns: u64,
    ) -> ProcessInfo {
        let parent_exec_id = self.parent_exec_id(ppid);
        let mut args = args.to_vec();
        crate::redact::redact_args(&mut args);
        let exe = if self.live {
            fs::read_link(format!("/proc/{pid}/exe"))
                .map_or_else(|_| filename.to_owned(), |p| p.display().to_string())
        } else {
            filename.to_owned()
        };
        let info = ProcessInfo {
            pid,
            ppid,
            uid,
            user: self.user_name(uid),
            comm: comm.to_owned(),
            exe,
            args,
            exec_id: self.exec_id(pid, ktime_ns),
            parent_exec_id,
        };
        self.insert(
            pid,
            Proc {
                info: info.clone(),
                start_ns: ktime_ns,
                exited: false,
            },
        );
        info
    }

    pub fn on_exit(&mut self, pid: u32) -> Option<ProcessInfo> {
        let p = self.procs.get_mut(&pid)?;
        p.exited = true;
        Some(p.info.clone())
    }

    /// Parent chain of `pid`, nearest first (bounded).
    pub fn ancestors(&mut self, pid: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut cur = pid;
        for _ in 0..64 {
            let Some(p) = self.get(cur) else { break };
            let ppid = p.info.ppid;
            if ppid == 0 || ppid == cur || out.contains(&ppid) {
                break;
            }
            out.push(ppid);
            cur = ppid;
        }
        out
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let s =
            "1234 (a b) c)) S 77 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 5555 1000 10";
        assert_eq!(parse_stat(s), Some((77, 5555)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn seed_self_and_ids_are_stable() {
        let mut t = ProcTable::new();
        let me = std::process::id();
        let p = t.seed(me).expect("own process").clone();
        assert_eq!(p.info.pid, me);
        assert!(!p.info.exe.is_empty());
        assert_eq!(p.info.exec_id.len(), 16);
        assert_eq!(t.exec_id(me, p.start_ns), p.info.exec_id);
        assert!(t.ancestors(me).contains(&p.info.ppid));
    }

    #[test]
    fn fork_then_exec() {
        let mut t = ProcTable::new();
        let me = std::process::id();
        t.seed(me);
        t.on_fork(me, 999_999, 10_000_000_000);
        let c = t.get(999_999).unwrap().info.clone();
        assert_eq!(c.ppid, me);
        assert_eq!(
            c.parent_exec_id,
            Some(t.get(me).unwrap().info.exec_id.clone())
        );
        let e = t.on_exec(
            999_999,
            me,
            0,
            "cat",
            "/bin/cat",
            &["cat".into()],
            10_500_000_000,
        );
        assert_eq!(e.comm, "cat");
        assert_ne!(e.exec_id, c.exec_id);
        assert_eq!(t.ancestors(999_999)[0], me);
    }
}
