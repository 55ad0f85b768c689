//! What the daemon decided about each TLS stack it met, for `aitrail
//! doctor`: every file whose stack was recognised (hooked, with the method
//! that found the hooks, or refused, with the reason), every attach that
//! failed, and how long after a program's exec its probes were in.
//!
//! The running daemon keeps the last [`MAX_DECISIONS`] decisions and
//! writes them, with its attach counters, to `STATUS_DIR/agent-PID.json`
//! (0600 in a 0700 directory; written whole, then renamed). `aitrail
//! doctor` reads the files of the daemons that are still alive.

use std::{
    collections::VecDeque,
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Decisions kept in memory and in the status file.
pub const MAX_DECISIONS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The stack was recognised and its hooks found.
    Found,
    /// The stack was recognised, but its hooks could not be placed safely:
    /// nothing was attached.
    Refused,
    /// Hooks were known but the kernel refused (some of) the probes.
    AttachFailed,
    /// The probes of a program went in after its exec (see
    /// [`Decision::exec_to_attach_ms`]).
    Attached,
    /// `aitrail doctor --binary`: a file that holds no TLS stack we hook.
    NotTls,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// RFC 3339 UTC.
    pub at: String,
    pub outcome: Outcome,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// `symbol`, `pclntab`, `signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    #[serde(default)]
    pub probes: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Time spent analysing the file (found, refused) or attaching.
    #[serde(default)]
    pub took_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// From the exec record's kernel timestamp to the last probe attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_to_attach_ms: Option<f64>,
}

impl Decision {
    pub fn new(outcome: Outcome, path: &Path) -> Self {
        Self {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            outcome,
            path: path.display().to_string(),
            build_id: None,
            stack: None,
            method: None,
            functions: Vec::new(),
            probes: 0,
            reason: None,
            took_ms: 0.0,
            pid: None,
            exec_to_attach_ms: None,
        }
    }
}

/// The last [`MAX_DECISIONS`] decisions; `changed` tells the writer there
/// is something new.
#[derive(Debug, Default)]
pub struct DecisionLog {
    items: VecDeque<Decision>,
    /// Decisions pushed out of the window (counted, not lost silently).
    pub evicted: u64,
    changed: bool,
}

impl DecisionLog {
    pub fn push(&mut self, d: Decision) {
        if self.items.len() == MAX_DECISIONS {
            self.items.pop_front();
            self.evicted += 1;
        }
        self.items.push_back(d);
        self.changed = true;
    }

    pub fn iter(&self) -> impl Iterator<Item = &Decision> {
        self.items.iter()
    }

    /// True once after each change.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}

/// What `STATUS_DIR/agent-PID.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub version: String,
    pub started_at: String,
    pub updated_at: String,
    /// `pids 123`, `cgroups /sys/fs/cgroup/x`, `whole host`.
    pub scope: String,
    /// Attach counters (`tls_attach_links`, `tls_targets_refused`, …).
    pub counters: Vec<(String, u64)>,
    pub decisions_evicted: u64,
    pub decisions: Vec<Decision>,
}

/// The status file of daemon `pid` in `dir`.
pub fn status_path(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("agent-{pid}.json"))
}

/// Writes `status` whole, then renames it into place: a reader never sees
/// half a file. The directory is created 0700, the file 0600.
pub fn write_status(dir: &Path, status: &AgentStatus) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = status_path(dir, status.pid);
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(status)?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&body)?;
    drop(f);
    fs::rename(&tmp, &path)
}

/// The status files in `dir`, with whether their daemon still runs. Files
/// that are not ours (or larger than 4 MiB) are skipped.
pub fn read_statuses(dir: &Path) -> Vec<(PathBuf, AgentStatus, bool)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("agent-"))
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if fs::metadata(&path).map_or(true, |m| m.len() > 4 << 20) {
            continue;
        }
        let Some(status) = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<AgentStatus>(&b).ok())
        else {
            continue;
        };
        let alive = status.pid == pid && is_aitrail(pid);
        out.push((path, status, alive));
    }
    out.sort_by_key(|(_, s, _)| s.pid);
    out
}

/// Removes the status files of daemons that are gone (one killed by SIGKILL
/// leaves its file behind).
pub fn prune_stale(dir: &Path) {
    for (path, _, alive) in read_statuses(dir) {
        if !alive {
            let _ = fs::remove_file(path);
        }
    }
}

/// Whether `pid` runs aitrail (a pid reused by another program is not our
/// daemon).
fn is_aitrail(pid: u32) -> bool {
    fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("aitrail"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_last_decisions_and_counts_the_rest() {
        let mut log = DecisionLog::default();
        assert!(!log.take_changed());
        for i in 0..MAX_DECISIONS + 3 {
            log.push(Decision::new(Outcome::Found, Path::new(&format!("/l{i}"))));
        }
        assert!(log.take_changed());
        assert!(!log.take_changed());
        assert_eq!(log.iter().count(), MAX_DECISIONS);
        assert_eq!(log.evicted, 3);
        assert_eq!(log.iter().next().unwrap().path, "/l3");
    }

    #[test]
    fn status_files_round_trip_and_stale_ones_are_pruned() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("run");
        let mut d = Decision::new(Outcome::Refused, Path::new("/opt/x/bun"));
        d.stack = Some("boringssl".into());
        d.reason = Some("two candidates for SSL_read".into());
        let me = AgentStatus {
            pid: std::process::id(),
            version: "t".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:01Z".into(),
            scope: "pids 1".into(),
            counters: vec![("tls_targets_refused".into(), 1)],
            decisions_evicted: 0,
            decisions: vec![d],
        };
        write_status(&sub, &me).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&status_path(&sub, me.pid)), 0o600);
        // A daemon that is gone (pid 1 is never aitrail), and junk.
        let gone = AgentStatus {
            pid: 1,
            ..me.clone()
        };
        write_status(&sub, &gone).unwrap();
        fs::write(sub.join("agent-7.json"), b"{not json").unwrap();
        fs::write(sub.join("other.json"), b"{}").unwrap();
        let got = read_statuses(&sub);
        let pids: Vec<(u32, bool)> = got.iter().map(|g| (g.1.pid, g.2)).collect();
        // pid 1 is never aitrail; this test binary is (aitrail-HASH).
        assert_eq!(pids, vec![(1, false), (me.pid, true)]);
        assert_eq!(got[1].1.decisions[0].outcome, Outcome::Refused);
        prune_stale(&sub);
        assert!(!status_path(&sub, 1).exists());
        assert!(status_path(&sub, me.pid).exists(), "alive: kept");
        assert!(sub.join("agent-7.json").exists(), "not ours: left alone");
    }
}
