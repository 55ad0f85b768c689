//! Harness of aitrail's privileged end-to-end tests (agent/tests/e2e/).
//!
//! One run = a temp dir, a test PKI (tests/mock/make_cert.sh), the HTTPS mock
//! LLM server (tests/mock/mock_llm.py, outside the capture scope), a client
//! held by a launcher (`sh -c 'read _ ; exec "$@"'`) until the daemon is ready,
//! the daemon scoped to the launcher's pid, then the events it wrote.
//!
//! Layout of a run's temp dir (kept when a test fails, or with
//! `AITRAIL_E2E_KEEP=1`):
//! ```text
//! pki/       ca.pem server.pem server.key
//! mock/      requests.jsonl (what the mock received and answered), mock.log
//! work/      the file the read_file tool reads, the dir run_command lists
//! clients/   <name>.stdout / <name>.stderr of the client
//! daemon/    events.ndjson, daemon.stdout.log, daemon.stderr.log — everything
//!            the daemon writes; searched for secrets
//! notify.sock  the NOTIFY_SOCKET the daemon sends READY=1 to
//! ```
//!
//! Environment knobs: `AITRAIL_TEST_PYTHON` (default: the `python3` on PATH,
//! resolved to its real interpreter), `AITRAIL_TEST_NODE` (default `node`),
//! `AITRAIL_TEST_CURL` (default `curl`), `AITRAIL_E2E_DAEMON_BIN` (another
//! daemon binary, e.g. a release build; default: the one cargo built for this
//! test), `AITRAIL_E2E_DAEMON_ARGS` (extra daemon arguments, split on whitespace), `AITRAIL_E2E_GRACE_MS` (pause
//! between the client's exit and SIGTERM to the daemon, default 0: the daemon
//! must drain on shutdown), `AITRAIL_LOG`, else `RUST_LOG` (the daemon's log filter, default `info`).

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{mpsc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use aitrail::event::{kind, Event};
use serde_json::Value;

/// The fake API keys the clients send. No file the daemon writes may contain
/// them (DESIGN: nothing secret reaches disk).
pub const OPENAI_KEY: &str = "sk-test-AITRAIL-SECRET-0123456789abcdef";
pub const ANTHROPIC_KEY: &str = "sk-ant-test-AITRAIL-SECRET-0123456789abcdef";
/// Searched for in every file the daemon wrote: the keys, and their middle
/// (a partial leak is a leak).
pub const SECRET_MARKERS: &[&str] = &[
    OPENAI_KEY,
    ANTHROPIC_KEY,
    AWS_ACCESS_KEY_ID,
    "AITRAIL-SECRET-0123456789",
];

/// The clients' system prompt (tests/clients/agentlib.py, agent_node.js).
pub const SYSTEM_PROMPT: &str = "You are the aitrail test agent. Use the tools you are given.";
pub const TOOL_NAMES: [&str; 2] = ["read_file", "run_command"];
pub const OPENAI_MODEL: &str = "gpt-4o-mini";
pub const ANTHROPIC_MODEL: &str = "claude-sonnet-4-6";
pub const BEDROCK_MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";
/// How botocore writes the model id into the path.
pub const BEDROCK_MODEL_PATH: &str = "anthropic.claude-3-5-sonnet-20240620-v1%3A0";
/// Sent (SigV4 `Credential=`), so it must appear only as a fingerprint.
pub const AWS_ACCESS_KEY_ID: &str = "AKIAZ7AITRAIL0SECRET";
/// Never sent: SigV4 signs with it.
pub const AWS_SECRET_ACCESS_KEY: &str = "aitrail/AITRAIL-SECRET-0123456789/bedrockKey";

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The usage the mock reports at `step` (number of tool results in the
/// request's history). Mirrors `usage_for` in tests/mock/mock_llm.py.
pub fn mock_usage(step: usize) -> (u64, u64) {
    let s = step as u64;
    (120 + 100 * s, 20 + 5 * s)
}

// ------------------------------------------------------------------ basics

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("agent/ has a parent")
        .to_path_buf()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn require_root() {
    assert!(
        is_root(),
        "this end-to-end test needs root (CAP_BPF, CAP_PERFMON) to load the eBPF programs: \
         run it as root, e.g. `sudo -E cargo xtask test` or `cargo test -p aitrail --test e2e -- \
         --include-ignored --test-threads=1` in a root shell"
    );
}

/// Serializes the runs: one daemon and one client at a time, even when the
/// test harness runs tests on several threads.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// The last `max` bytes of a file, for failure messages.
pub fn tail(path: &Path, max: usize) -> String {
    match fs::read(path) {
        Ok(b) => {
            let start = b.len().saturating_sub(max);
            let s = String::from_utf8_lossy(&b[start..]).into_owned();
            if start > 0 {
                format!("[… {start} bytes cut …]\n{s}")
            } else {
                s
            }
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// The start and the end of a file (a daemon's error is often at the start of
/// a long log, its backtrace at the end), for failure messages.
pub fn excerpt(path: &Path, head: usize, tail_len: usize) -> String {
    match fs::read(path) {
        Ok(b) if b.len() > head + tail_len => format!(
            "{}\n[… {} bytes cut, see {} …]\n{}",
            String::from_utf8_lossy(&b[..head]),
            b.len() - head - tail_len,
            path.display(),
            String::from_utf8_lossy(&b[b.len() - tail_len..])
        ),
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Resolves the real python interpreter (not a pyenv shim, whose bash
/// wrappers would add their own execs to the captured process tree).
pub fn python() -> String {
    if let Ok(p) = std::env::var("AITRAIL_TEST_PYTHON") {
        if !p.is_empty() {
            return p;
        }
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("cannot run python3: install it or set AITRAIL_TEST_PYTHON");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Resolves a program on PATH to an absolute path (clear error when missing).
pub fn which(program: &str) -> String {
    if program.contains('/') {
        return program.to_string();
    }
    let out = Command::new("/bin/sh")
        .args(["-c", "command -v \"$1\"", "sh", program])
        .output()
        .expect("cannot run /bin/sh");
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !p.is_empty(),
        "{program} not found on PATH (tests/setup-test-deps.sh installs the test dependencies)"
    );
    p
}

pub fn node() -> String {
    which(&env_or("AITRAIL_TEST_NODE", "node"))
}

pub fn curl() -> String {
    which(&env_or("AITRAIL_TEST_CURL", "curl"))
}

// ------------------------------------------------------------------ temp dir

/// A run's temp dir: removed when the test passes, kept (and its path
/// printed) when it fails or with `AITRAIL_E2E_KEEP=1`.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "aitrail-e2e-{name}-{}-{nanos:x}",
            std::process::id()
        ));
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        for sub in ["pki", "mock", "work", "clients", "daemon"] {
            fs::create_dir_all(path.join(sub)).expect("mkdir");
        }
        eprintln!("e2e: run dir {}", path.display());
        TestDir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("AITRAIL_E2E_KEEP").is_some() {
            eprintln!("e2e: kept run dir {} for inspection", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

// ------------------------------------------------------------------ PKI

pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn make_cert(dir: &TestDir) -> Pki {
    let pki = dir.join("pki");
    let script = repo_root().join("tests/mock/make_cert.sh");
    let out = Command::new("/bin/sh")
        .arg(&script)
        .arg(&pki)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}): {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Pki {
        ca: pki.join("ca.pem"),
        cert: pki.join("server.pem"),
        key: pki.join("server.key"),
    }
}

mod conversation;
mod events;
mod goclient;
mod procs;
mod realbin;
mod scenario;

pub use conversation::*;
pub use events::*;
pub use goclient::*;
pub use procs::*;
pub use realbin::*;
pub use scenario::*;
