//! Harness of aitrail's privileged end-to-end tests (agent/tests/e2e.rs).
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
//! must drain on shutdown), `RUST_LOG` (passed to the daemon, default `info`).

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
pub const SECRET_MARKERS: &[&str] = &[OPENAI_KEY, ANTHROPIC_KEY, "AITRAIL-SECRET-0123456789"];

/// The clients' system prompt (tests/clients/agentlib.py, agent_node.js).
pub const SYSTEM_PROMPT: &str = "You are the aitrail test agent. Use the tools you are given.";
pub const TOOL_NAMES: [&str; 2] = ["read_file", "run_command"];
pub const OPENAI_MODEL: &str = "gpt-4o-mini";
pub const ANTHROPIC_MODEL: &str = "claude-sonnet-4-6";

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

fn env_or(name: &str, default: &str) -> String {
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

// ------------------------------------------------------------------ mock server

/// tests/mock/mock_llm.py, listening on 127.0.0.1 on a free port.
pub struct MockServer {
    child: Child,
    pub port: u16,
    pub base_url: String,
    pub record: PathBuf,
    pub log: PathBuf,
}

impl MockServer {
    pub fn start(dir: &TestDir, pki: &Pki) -> Self {
        let record = dir.join("mock/requests.jsonl");
        let log = dir.join("mock/mock.log");
        let script = repo_root().join("tests/mock/mock_llm.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .arg("--cert")
            .arg(&pki.cert)
            .arg("--key")
            .arg(&pki.key)
            .arg("--record")
            .arg(&record)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("create mock log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let stdout = child.stdout.take().expect("mock stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(p) = line.strip_prefix("PORT ") {
                    let _ = tx.send(p.trim().parse::<u16>().ok());
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(p)) => p,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mock server did not print `PORT <n>` within 20 s ({other:?}); its log:\n{}",
                    tail(&log, 4000)
                );
            }
        };
        MockServer {
            child,
            port,
            base_url: format!("https://127.0.0.1:{port}"),
            record,
            log,
        }
    }

    /// What the mock received and answered, one entry per request.
    pub fn records(&self) -> Vec<Value> {
        let Ok(text) = fs::read_to_string(&self.record) else {
            return Vec::new();
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("mock record is JSON"))
            .collect()
    }

    /// The records of answered LLM calls (status 200 on an LLM path).
    pub fn llm_records(&self) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["status"] == 200 && r.get("provider").is_some())
            .collect()
    }

    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------------ launcher

/// A client started under `sh -c 'read _ ; exec "$@"'`: it exists (so its pid
/// can scope the daemon) but waits on stdin until `release`.
pub struct Launched {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub cmdline: String,
}

impl Launched {
    pub fn spawn(
        dir: &TestDir,
        name: &str,
        program: &str,
        args: &[String],
        env: &[(&str, String)],
    ) -> Self {
        let stdout = dir.join(&format!("clients/{name}.stdout"));
        let stderr = dir.join(&format!("clients/{name}.stderr"));
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "read _ ; exec \"$@\"", "sh", program])
            .args(args)
            .current_dir(dir.join("work"))
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(File::create(&stdout).expect("create client stdout"))
            .stderr(File::create(&stderr).expect("create client stderr"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start launcher for {name}: {e}"));
        let stdin = child.stdin.take();
        let cmdline = format!("{program} {}", args.join(" "));
        Launched {
            name: name.to_string(),
            child,
            stdin,
            stdout,
            stderr,
            cmdline,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the client run.
    pub fn release(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            stdin
                .write_all(b"\n")
                .expect("write to the launcher's stdin");
        }
    }

    /// Waits for the client; panics (with its output) on timeout.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait client") {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "client {} did not finish within {timeout:?}\ncommand: {}\nstdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.cmdline,
                    tail(&self.stdout, 3000),
                    tail(&self.stderr, 6000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits and asserts exit status 0.
    pub fn wait_success(&mut self, timeout: Duration) -> String {
        let st = self.wait(timeout);
        assert!(
            st.success(),
            "client {} failed ({st})\ncommand: {}\nstdout:\n{}\nstderr:\n{}",
            self.name,
            self.cmdline,
            tail(&self.stdout, 3000),
            tail(&self.stderr, 6000)
        );
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------ daemon

/// The daemon under test:
/// `aitrail agent --pid <scope> --sink file:<dir>/daemon/events.ndjson`,
/// with `NOTIFY_SOCKET=<dir>/notify.sock`.
pub struct Daemon {
    child: Option<Child>,
    pub dir: PathBuf,
    pub events: PathBuf,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    pub cmdline: String,
    pub notify_messages: Vec<String>,
}

impl Daemon {
    /// Starts the daemon scoped to `scope_pid` and waits for `READY=1`.
    pub fn start(dir: &TestDir, scope_pid: u32) -> Self {
        Self::start_scoped(dir, &["--pid".into(), scope_pid.to_string()])
    }

    /// Starts the daemon with the given scope arguments (`--pid N` or
    /// `--cgroup PATH`) and waits for `READY=1`.
    pub fn start_scoped(dir: &TestDir, scope: &[String]) -> Self {
        let ddir = dir.join("daemon");
        let events = ddir.join("events.ndjson");
        let stdout = ddir.join("daemon.stdout.log");
        let stderr = ddir.join("daemon.stderr.log");
        let sock_path = dir.join("notify.sock");
        let _ = fs::remove_file(&sock_path);
        let sock = UnixDatagram::bind(&sock_path)
            .unwrap_or_else(|e| panic!("bind {}: {e}", sock_path.display()));
        sock.set_read_timeout(Some(Duration::from_millis(250)))
            .expect("set_read_timeout");

        let exe_owned = env_or("AITRAIL_E2E_DAEMON_BIN", env!("CARGO_BIN_EXE_aitrail"));
        let exe = exe_owned.as_str();
        let mut args: Vec<String> = vec!["agent".into()];
        args.extend(scope.iter().cloned());
        args.extend(["--sink".into(), format!("file:{}", events.display())]);
        if let Ok(extra) = std::env::var("AITRAIL_E2E_DAEMON_ARGS") {
            args.extend(extra.split_whitespace().map(str::to_string));
        }
        let cmdline = format!(
            "NOTIFY_SOCKET={} {exe} {}",
            sock_path.display(),
            args.join(" ")
        );
        eprintln!("e2e: starting {cmdline}");
        let child = Command::new(exe)
            .args(&args)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("RUST_LOG", env_or("RUST_LOG", "info"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("create daemon stdout"))
            .stderr(File::create(&stderr).expect("create daemon stderr"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"));
        let mut d = Daemon {
            child: Some(child),
            dir: ddir,
            events,
            stdout,
            stderr,
            cmdline,
            notify_messages: Vec::new(),
        };

        let start = Instant::now();
        let mut buf = vec![0u8; 4096];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let ready = msg.lines().any(|l| l.trim() == "READY=1");
                    d.notify_messages.push(msg);
                    if ready {
                        eprintln!("e2e: daemon ready after {:?}", start.elapsed());
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("recv on {}: {e}", sock_path.display()),
            }
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                d.child = None;
                panic!(
                    "daemon exited ({st}) before sending READY=1\ncommand: {}\nnotify messages: {:?}\nstderr:\n{}\nstdout:\n{}",
                    d.cmdline,
                    d.notify_messages,
                    excerpt(&d.stderr, 5000, 3000),
                    tail(&d.stdout, 2000)
                );
            }
            if start.elapsed() > READY_TIMEOUT {
                let msgs = d.notify_messages.clone();
                d.kill();
                panic!(
                    "daemon sent no READY=1 on NOTIFY_SOCKET within {READY_TIMEOUT:?}\ncommand: {}\nnotify messages: {msgs:?}\nstderr:\n{}",
                    d.cmdline,
                    excerpt(&d.stderr, 5000, 3000)
                );
            }
        }
        d
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit (status 0).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait daemon") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon did not exit within {STOP_TIMEOUT:?} of SIGTERM\nstderr:\n{}",
                    excerpt(&self.stderr, 5000, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "daemon exited with {status} after SIGTERM (expected 0)\ncommand: {}\nstderr:\n{}",
            self.cmdline,
            excerpt(&self.stderr, 5000, 3000)
        );
    }

    /// Panics if the daemon is no longer running (it must survive anything).
    pub fn assert_running(&mut self, what: &str) {
        if let Some(st) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            self.child = None;
            panic!(
                "daemon died ({st}) {what}\nstderr:\n{}",
                excerpt(&self.stderr, 5000, 3000)
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

// ------------------------------------------------------------------ events

/// The events the daemon wrote, in file order.
pub struct Events {
    pub all: Vec<Event>,
    pub path: PathBuf,
}

impl Events {
    /// Reads an NDJSON file; every line must be an [`Event`].
    pub fn read(path: &Path) -> Self {
        let text = fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "cannot read the daemon's events file {}: {e}",
                path.display()
            )
        });
        let mut all = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "{}:{}: not JSON ({e}): {}",
                    path.display(),
                    i + 1,
                    cut(line, 400)
                )
            });
            let ev: Event = serde_json::from_value(v).unwrap_or_else(|e| {
                panic!(
                    "{}:{}: does not match the event model in agent/src/event.rs ({e}): {}",
                    path.display(),
                    i + 1,
                    cut(line, 600)
                )
            });
            all.push(ev);
        }
        Events {
            all,
            path: path.to_path_buf(),
        }
    }

    pub fn of_kind(&self, k: &str) -> Vec<&Event> {
        self.all.iter().filter(|e| e.kind == k).collect()
    }

    pub fn by_id(&self, id: &str) -> Option<&Event> {
        self.all.iter().find(|e| e.id == id)
    }

    /// llm.call events sorted by time (then file order).
    pub fn llm_calls(&self) -> Vec<&Event> {
        let mut v = self.of_kind(kind::LLM_CALL);
        v.sort_by_key(|e| time_key(&e.time));
        v
    }

    /// A readable listing for failure messages: every event but the
    /// file.open/exec/exit of paths unrelated to the run (counted instead).
    pub fn summary(&self, related: &[&str]) -> String {
        let mut out = String::new();
        let mut hidden: BTreeMap<&str, usize> = BTreeMap::new();
        let _ = writeln!(
            out,
            "--- {} events in {} ---",
            self.all.len(),
            self.path.display()
        );
        for e in &self.all {
            let line = describe(e);
            let noisy = matches!(
                e.kind.as_str(),
                kind::FILE_OPEN | kind::PROCESS_EXEC | kind::PROCESS_EXIT | kind::NET_CONNECT
            );
            let is_related = related.iter().any(|r| !r.is_empty() && line.contains(r))
                || !e.parent_span_id.as_deref().unwrap_or("").is_empty();
            if noisy && !is_related {
                *hidden.entry(e.kind.as_str()).or_default() += 1;
                continue;
            }
            let _ = writeln!(out, "{line}");
        }
        if !hidden.is_empty() {
            let _ = writeln!(
                out,
                "(not shown, unrelated to the run and unlinked: {hidden:?})"
            );
        }
        out
    }
}

fn time_key(t: &str) -> (i64, String) {
    let ns = chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
        .unwrap_or(i64::MAX);
    (ns, t.to_string())
}

pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes]", &s[..end], s.len())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// One line per event, with the fields the assertions look at.
pub fn describe(e: &Event) -> String {
    let mut s = format!(
        "{} id={} trace={} span={} parent={}",
        e.kind,
        short(&e.id),
        short(&e.trace_id),
        e.span_id,
        e.parent_span_id.as_deref().unwrap_or("-")
    );
    if let Some(p) = &e.process {
        let _ = write!(s, " pid={} comm={}", p.pid, p.comm);
    }
    if let Some(l) = &e.llm {
        let roles: Vec<String> = l
            .messages
            .iter()
            .map(|m| match &m.tool_call_id {
                Some(id) => format!("{}({id})", m.role),
                None => m.role.clone(),
            })
            .collect();
        let calls: Vec<String> = l
            .output
            .tool_calls
            .iter()
            .map(|c| format!("{}:{}{}", c.id, c.name, c.arguments))
            .collect();
        let _ = write!(
            s,
            " provider={} path={} model={:?} stream={} status={:?} server={}:{} tools={:?} messages={roles:?} \
             out.text={:?} out.finish={:?} out.tool_calls={calls:?} usage={:?}/{:?} truncated={} key_id={:?}",
            l.provider,
            l.path,
            l.model,
            l.stream,
            l.status,
            l.server.host,
            l.server.port,
            l.tools,
            cut(&l.output.text, 80),
            l.output.finish_reason,
            l.usage.input_tokens,
            l.usage.output_tokens,
            l.truncated,
            l.api_key_id
        );
    }
    if let Some(t) = &e.tool {
        let effects: Vec<&str> = t.effects.iter().map(|x| short(x)).collect();
        let _ = write!(
            s,
            " call_id={} name={} args={} result={:?} effects={effects:?} confidence={}",
            t.call_id,
            t.name,
            t.arguments,
            t.result.as_deref().map(|r| cut(r, 60)),
            t.confidence
        );
    }
    if let Some(x) = &e.exec {
        let _ = write!(
            s,
            " filename={} args={:?} exit_code={:?}",
            x.filename, x.args, x.exit_code
        );
    }
    if let Some(f) = &e.file {
        let _ = write!(
            s,
            " path={} flags={:?} result={}",
            f.path, f.flags, f.result
        );
    }
    if let Some(n) = &e.net {
        let _ = write!(
            s,
            " {} {}:{} result={}",
            n.family, n.address, n.port, n.result
        );
    }
    if let Some(f) = &e.finding {
        let _ = write!(s, " rule={} title={:?}", f.rule, f.title);
    }
    if let Some(h) = &e.health {
        let _ = write!(
            s,
            " emitted={} dropped={:?} counters={:?}",
            h.events_emitted, h.dropped, h.counters
        );
    }
    s
}

// ------------------------------------------------------------------ checks

/// Collects failed expectations so that one run reports all of them, with
/// the events found.
#[derive(Default)]
pub struct Checker {
    failures: Vec<String>,
}

impl Checker {
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) -> bool {
        if !ok {
            self.failures.push(msg());
        }
        ok
    }

    pub fn eq<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        expected: T,
        found: T,
    ) -> bool {
        let ok = expected == found;
        if !ok {
            self.failures
                .push(format!("{what}: expected {expected:?}, found {found:?}"));
        }
        ok
    }

    pub fn fail(&mut self, msg: String) {
        self.failures.push(msg);
    }

    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Panics with every failure and the listing of events.
    pub fn finish(self, events: &Events, related: &[&str], context: &str) {
        if self.failures.is_empty() {
            return;
        }
        let mut msg = format!(
            "{} expectation(s) failed ({context}):\n",
            self.failures.len()
        );
        for (i, f) in self.failures.iter().enumerate() {
            let _ = writeln!(msg, "  {}. {f}", i + 1);
        }
        msg.push_str(&events.summary(related));
        panic!("{msg}");
    }
}

/// JSON texts equal as values (spacing and key order do not matter).
pub fn json_text_eq(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Every regular file under `dir` that contains one of `markers`, with the
/// marker and its byte offset.
pub fn find_secrets(dir: &Path, markers: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for entry in rd.flatten() {
            let p = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let mut bytes = Vec::new();
                if File::open(&p)
                    .and_then(|mut f| f.read_to_end(&mut bytes))
                    .is_err()
                {
                    continue;
                }
                for m in markers {
                    if let Some(off) = memchr::memmem::find(&bytes, m.as_bytes()) {
                        let lo = off.saturating_sub(80);
                        let hi = (off + m.len() + 80).min(bytes.len());
                        hits.push(format!(
                            "{} contains {m:?} at byte {off}: …{}…",
                            p.display(),
                            String::from_utf8_lossy(&bytes[lo..hi])
                        ));
                    }
                }
            }
        }
    }
    hits
}

/// Asserts that no file the daemon wrote holds a secret.
pub fn assert_no_secrets(daemon: &Daemon) {
    let hits = find_secrets(&daemon.dir, SECRET_MARKERS);
    assert!(
        hits.is_empty(),
        "secrets reached disk (redaction must run before anything is written):\n{}",
        hits.join("\n")
    );
}

// ------------------------------------------------------------------ scenarios

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// tests/clients/agent_openai.py (official `openai` SDK)
    OpenAiPy,
    /// tests/clients/agent_anthropic.py (official `anthropic` SDK)
    AnthropicPy,
    /// tests/clients/agent_node.js (node's built-in https)
    Node,
    /// one plain `curl` POST to /v1/chat/completions (no loop)
    Curl,
}

impl Client {
    pub fn provider(self) -> &'static str {
        match self {
            Client::AnthropicPy => "anthropic",
            _ => "openai",
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Client::AnthropicPy => "/v1/messages",
            _ => "/v1/chat/completions",
        }
    }

    pub fn model(self) -> &'static str {
        match self {
            Client::AnthropicPy => ANTHROPIC_MODEL,
            _ => OPENAI_MODEL,
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Client::AnthropicPy => ANTHROPIC_KEY,
            _ => OPENAI_KEY,
        }
    }

    /// How many model calls the client makes.
    pub fn calls(self) -> usize {
        match self {
            Client::Curl => 1,
            _ => 3,
        }
    }

    pub fn tool_finish(self) -> &'static str {
        match self {
            Client::AnthropicPy => "tool_use",
            _ => "tool_calls",
        }
    }

    pub fn stop_finish(self) -> &'static str {
        match self {
            Client::AnthropicPy => "end_turn",
            _ => "stop",
        }
    }
}

/// Everything a finished run left behind.
pub struct Run {
    pub dir: TestDir,
    pub client: Client,
    pub stream: bool,
    pub port: u16,
    /// The file the read_file tool reads, and its content.
    pub file: String,
    pub file_content: String,
    /// The directory run_command lists, and the command.
    pub workdir: String,
    pub command: String,
    pub client_pid: u32,
    pub client_stdout: String,
    /// What the mock answered (ground truth for call ids and arguments).
    pub mock_records: Vec<Value>,
    pub events: Events,
    pub daemon_dir: PathBuf,
    /// The shell that made requests from outside the scope, if any.
    pub outsider_pid: Option<u32>,
    /// Requests the mock answered for the outsider.
    pub outsider_requests: usize,
}

impl Run {
    pub fn related(&self) -> Vec<&str> {
        vec![self.file.as_str(), self.workdir.as_str()]
    }
}

/// The prompt and work files of a run.
pub struct Work {
    pub file: String,
    pub file_content: String,
    pub workdir: String,
    pub command: String,
}

pub fn make_work(dir: &TestDir, tag: &str) -> Work {
    let workdir = dir.join("work");
    let file = workdir.join(format!("notes-{tag}.txt"));
    let file_content = format!("aitrail e2e notes for {tag}: the quick brown fox\n");
    fs::write(&file, &file_content).expect("write work file");
    let workdir = workdir.display().to_string();
    Work {
        file: file.display().to_string(),
        file_content,
        command: format!("ls -l {workdir}"),
        workdir,
    }
}

fn client_command(
    client: Client,
    stream: bool,
    mock: &MockServer,
    pki: &Pki,
    w: &Work,
    dir: &TestDir,
) -> (String, Vec<String>, Vec<(&'static str, String)>) {
    let clients = repo_root().join("tests/clients");
    let ca = pki.ca.display().to_string();
    let mut common = vec![
        "--base-url".to_string(),
        mock.base_url.clone(),
        "--ca".to_string(),
        ca.clone(),
        "--file".to_string(),
        w.file.clone(),
        "--command".to_string(),
        w.command.clone(),
    ];
    if stream {
        common.push("--stream".into());
    }
    let ssl_env = ("SSL_CERT_FILE", ca.clone());
    match client {
        Client::OpenAiPy => {
            let mut a = vec![clients.join("agent_openai.py").display().to_string()];
            a.extend(common);
            (
                python(),
                a,
                vec![("OPENAI_API_KEY", OPENAI_KEY.to_string()), ssl_env],
            )
        }
        Client::AnthropicPy => {
            let mut a = vec![clients.join("agent_anthropic.py").display().to_string()];
            a.extend(common);
            (
                python(),
                a,
                vec![("ANTHROPIC_API_KEY", ANTHROPIC_KEY.to_string()), ssl_env],
            )
        }
        Client::Node => {
            let mut a = vec![clients.join("agent_node.js").display().to_string()];
            a.extend(common);
            (node(), a, vec![("OPENAI_API_KEY", OPENAI_KEY.to_string())])
        }
        Client::Curl => {
            assert!(!stream, "the curl scenario is a single plain POST");
            let body = serde_json::json!({
                "model": OPENAI_MODEL,
                "messages": [
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": format!(
                        "Read the file, then run the command, then say done.\nFILE: {}\nCMD: {}\n",
                        w.file, w.command)},
                ],
                "tools": TOOL_NAMES.iter().map(|n| serde_json::json!({
                    "type": "function",
                    "function": {"name": n, "description": format!("the {n} tool"),
                                 "parameters": {"type": "object", "properties": {}}},
                })).collect::<Vec<_>>(),
            });
            let body_path = dir.join("work/curl-body.json");
            fs::write(&body_path, serde_json::to_vec(&body).expect("json"))
                .expect("write curl body");
            // The key is on curl's command line on purpose, as people do: it
            // must not reach disk through process.exec args either.
            let a = vec![
                "-sS".to_string(),
                "--fail-with-body".into(),
                "--compressed".into(),
                "--cacert".into(),
                ca,
                "-H".into(),
                format!("Authorization: Bearer {OPENAI_KEY}"),
                "-H".into(),
                "Content-Type: application/json".into(),
                "--data-binary".into(),
                format!("@{}", body_path.display()),
                format!("{}/v1/chat/completions", mock.base_url),
            ];
            (curl(), a, vec![])
        }
    }
}

/// Runs one client under the daemon and collects what everyone wrote.
pub fn run_scenario(name: &str, client: Client, stream: bool) -> Run {
    run_scenario_in(name, client, stream, ScopeKind::Pid)
}

/// How a scenario scopes the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeKind {
    /// `--pid` of the launcher.
    Pid,
    /// `--pid` of the launcher, and the client loads a private copy of
    /// libssl (as from a venv or /opt) the daemon did not know at start.
    PidPrivateLibssl,
    /// `--cgroup` of a cgroup v2 directory the test makes and puts the
    /// launcher in.
    Cgroup,
}

/// Copies the system's libssl.so.3 and libcrypto.so.3 into the test
/// directory (new inodes: a copy the daemon has never seen) and returns it.
pub fn private_libssl(dir: &TestDir) -> PathBuf {
    let dest = dir.join("private-openssl");
    fs::create_dir_all(&dest).expect("create private-openssl");
    for lib in ["libssl.so.3", "libcrypto.so.3"] {
        let src = [
            "/usr/lib/x86_64-linux-gnu",
            "/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/lib",
        ]
        .iter()
        .map(|d| Path::new(d).join(lib))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no system {lib} to copy"));
        fs::copy(&src, dest.join(lib)).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    }
    dest
}

/// A cgroup v2 directory made for one test, removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(name: &str) -> Self {
        let mounts = fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
        let root = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .expect("a cgroup v2 mount (unified or hybrid hierarchy)");
        let path = root.join(format!("aitrail-e2e-{name}-{}", std::process::id()));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
        Self { path }
    }

    pub fn add(&self, pid: u32) {
        fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.path.display()));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Empty by now (its processes exited); rmdir removes a cgroup.
        let _ = fs::remove_dir(&self.path);
    }
}

/// Runs one scripted conversation with the daemon scoped as `scope` says.
pub fn run_scenario_in(name: &str, client: Client, stream: bool, scope: ScopeKind) -> Run {
    require_root();
    let _serial = serial();
    let dir = TestDir::new(name);
    let pki = make_cert(&dir);
    let mut mock = MockServer::start(&dir, &pki);
    let w = make_work(&dir, name);
    let (program, args, mut env) = client_command(client, stream, &mock, &pki, &w, &dir);
    if scope == ScopeKind::PidPrivateLibssl {
        env.push((
            "LD_LIBRARY_PATH",
            private_libssl(&dir).display().to_string(),
        ));
    }
    let mut launched = Launched::spawn(&dir, name, &program, &args, &env);
    let client_pid = launched.pid();
    let cgroup = (scope == ScopeKind::Cgroup).then(|| {
        let cg = TestCgroup::new(name);
        cg.add(client_pid);
        cg
    });
    let mut daemon = match &cgroup {
        Some(cg) => Daemon::start_scoped(&dir, &["--cgroup".into(), cg.path.display().to_string()]),
        None => Daemon::start(&dir, client_pid),
    };
    // With a cgroup scope, a process outside it makes HTTPS requests to the
    // same server while the agent runs: none of it may be captured.
    let mut outsider = (scope == ScopeKind::Cgroup).then(|| {
        let script = format!(
            "for i in 1 2 3 4 5; do {curl} -s -o /dev/null --cacert {ca} https://127.0.0.1:{port}/health?OUTSIDER=$i; sleep 0.2; done",
            curl = curl(),
            ca = pki.ca.display(),
            port = mock.port,
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the outsider")
    });
    launched.release();
    let client_stdout = launched.wait_success(CLIENT_TIMEOUT);
    let outsider_pid = outsider.as_ref().map(Child::id);
    if let Some(o) = outsider.as_mut() {
        let _ = o.wait();
    }
    daemon.assert_running("while the client ran");
    grace();
    daemon.stop();
    drop(cgroup);
    mock.stop();
    let events = Events::read(&daemon.events);
    assert_no_secrets(&daemon);
    let mock_records = mock.llm_records();
    let outsider_requests = mock
        .records()
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains("OUTSIDER")))
        .count();
    assert_eq!(
        mock_records.len(),
        client.calls(),
        "the mock answered {} LLM calls, the client should have made {} (see {})",
        mock_records.len(),
        client.calls(),
        mock.record.display()
    );
    Run {
        daemon_dir: daemon.dir.clone(),
        dir,
        client,
        stream,
        port: mock.port,
        file: w.file,
        file_content: w.file_content,
        workdir: w.workdir,
        command: w.command,
        client_pid,
        client_stdout,
        mock_records,
        events,
        outsider_pid,
        outsider_requests,
    }
}

pub fn grace() {
    let ms = env_or("AITRAIL_E2E_GRACE_MS", "0")
        .parse::<u64>()
        .unwrap_or(0);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

// ------------------------------------------------------------------ the big assertion

/// One answered model call, as the mock recorded it.
pub struct Answer {
    pub step: usize,
    pub tool: Option<String>,
    pub call_id: Option<String>,
    pub arguments: Option<String>,
    pub usage: (u64, u64),
}

pub fn answers(records: &[Value]) -> Vec<Answer> {
    records
        .iter()
        .map(|r| Answer {
            step: usize::try_from(r["step"].as_u64().expect("step")).expect("small"),
            tool: r["tool"].as_str().map(str::to_string),
            call_id: r["call_id"].as_str().map(str::to_string),
            arguments: r["arguments"].as_str().map(str::to_string),
            usage: (
                r["usage"][0].as_u64().expect("usage"),
                r["usage"][1].as_u64().expect("usage"),
            ),
        })
        .collect()
}

/// Checks the whole chain of a tool-using conversation: llm.call per model
/// call, tool.call per tool call, and the kernel-seen effects linked to them.
pub fn check_conversation(run: &Run) {
    let ev = &run.events;
    let client = run.client;
    let answers = answers(&run.mock_records);
    let mut c = Checker::default();
    let ctx = format!(
        "{client:?} stream={} — run dir {}",
        run.stream,
        run.dir.path.display()
    );

    // unique ids
    let mut seen = BTreeSet::new();
    for e in &ev.all {
        c.check(seen.insert(e.id.as_str()), || {
            format!("event id {} is not unique", e.id)
        });
        c.check(e.v == aitrail::event::SCHEMA_VERSION, || {
            format!("event {} has v={}", e.id, e.v)
        });
        c.check(is_hex(&e.trace_id, 32), || {
            format!("event {} trace_id {:?} is not 32 hex", e.id, e.trace_id)
        });
        c.check(is_hex(&e.span_id, 16), || {
            format!("event {} span_id {:?} is not 16 hex", e.id, e.span_id)
        });
    }

    let calls = ev.llm_calls();
    if !c.eq("number of llm.call events", client.calls(), calls.len()) {
        c.finish(ev, &run.related(), &ctx);
        return;
    }
    let trace = calls[0].trace_id.clone();
    for (i, e) in calls.iter().enumerate() {
        c.eq(
            &format!("llm.call[{i}].trace_id (one trace per conversation)"),
            trace.as_str(),
            e.trace_id.as_str(),
        );
    }

    for (i, (e, a)) in calls.iter().zip(&answers).enumerate() {
        let w = format!("llm.call[{i}]");
        let Some(l) = &e.llm else {
            c.fail(format!("{w} has no `llm` member"));
            continue;
        };
        c.eq(
            &format!("{w}.provider"),
            client.provider(),
            l.provider.as_str(),
        );
        c.eq(&format!("{w}.path"), client.path(), l.path.as_str());
        c.eq(
            &format!("{w}.model"),
            Some(client.model()),
            l.model.as_deref(),
        );
        c.eq(&format!("{w}.stream"), run.stream, l.stream);
        c.eq(&format!("{w}.status"), Some(200), l.status);
        c.eq(&format!("{w}.truncated"), false, l.truncated);
        c.eq(&format!("{w}.role"), aitrail::event::Role::Client, l.role);
        c.eq(&format!("{w}.server.port"), run.port, l.server.port);
        c.check(
            ["127.0.0.1", "localhost"].contains(&l.server.host.as_str()),
            || {
                format!(
                    "{w}.server.host: expected 127.0.0.1 or localhost, found {:?}",
                    l.server.host
                )
            },
        );
        if let Some(p) = &e.process {
            c.eq(
                &format!("{w}.process.pid (the client)"),
                run.client_pid,
                p.pid,
            );
        } else {
            c.fail(format!("{w} has no `process`"));
        }
        let mut tools: Vec<&str> = l.tools.iter().map(String::as_str).collect();
        tools.sort_unstable();
        c.eq(&format!("{w}.tools (declared)"), TOOL_NAMES.to_vec(), tools);
        // the API key only as a fingerprint
        let key = client.key();
        match &l.api_key_id {
            Some(id) => {
                c.check(!id.contains(key) && !id.contains("AITRAIL-SECRET"), || {
                    format!("{w}.api_key_id {id:?} holds the key")
                });
                c.check(id.contains(&key[key.len() - 4..]), || {
                    format!("{w}.api_key_id {id:?} should show the key's last 4 characters (sk-…cdef#hash)")
                });
            }
            None => c.fail(format!(
                "{w}.api_key_id is missing (a fingerprint of the API key)"
            )),
        }
        // messages: the system prompt, the user prompt, and one tool result per earlier step
        let sys_ok = l.system.as_ref().is_some_and(|s| s.text == SYSTEM_PROMPT)
            || l.messages
                .iter()
                .any(|m| m.role == "system" && m.content == SYSTEM_PROMPT);
        c.check(sys_ok, || {
            format!(
                "{w}: system prompt {SYSTEM_PROMPT:?} in neither llm.system nor a system message"
            )
        });
        let user_ok = l.messages.iter().any(|m| {
            m.role == "user"
                && m.content.contains(&format!("FILE: {}", run.file))
                && m.content.contains(&format!("CMD: {}", run.command))
        });
        c.check(user_ok, || {
            format!(
                "{w}: no user message with the prompt (FILE: {} / CMD: {})",
                run.file, run.command
            )
        });
        let tool_msgs: Vec<_> = l.messages.iter().filter(|m| m.role == "tool").collect();
        c.eq(
            &format!("{w}: number of tool-result messages"),
            a.step,
            tool_msgs.len(),
        );
        for (j, m) in tool_msgs.iter().enumerate() {
            let Some(prev) = answers.get(j) else { break };
            c.eq(
                &format!("{w}.messages tool[{j}].tool_call_id"),
                prev.call_id.as_deref(),
                m.tool_call_id.as_deref(),
            );
            let expect = if j == 0 {
                run.file_content.trim()
            } else {
                "exit_code=0"
            };
            c.check(m.content.contains(expect), || {
                format!(
                    "{w}.messages tool[{j}].content should contain {expect:?}, found {:?}",
                    cut(&m.content, 200)
                )
            });
        }
        let asked: Vec<&str> = l
            .messages
            .iter()
            .filter(|m| m.role == "assistant")
            .flat_map(|m| m.tool_calls.iter().map(|t| t.id.as_str()))
            .collect();
        let expect_asked: Vec<&str> = answers[..a.step]
            .iter()
            .filter_map(|p| p.call_id.as_deref())
            .collect();
        c.eq(
            &format!("{w}: tool call ids of the assistant messages in the history"),
            expect_asked,
            asked,
        );
        // output
        let (ein, eout) = a.usage;
        c.eq(
            &format!("{w}.usage.input_tokens"),
            Some(ein),
            l.usage.input_tokens,
        );
        c.eq(
            &format!("{w}.usage.output_tokens"),
            Some(eout),
            l.usage.output_tokens,
        );
        c.eq(
            &format!("{w}.usage (mock formula)"),
            mock_usage(a.step),
            a.usage,
        );
        if let (Some(name), Some(id), Some(args)) = (&a.tool, &a.call_id, &a.arguments) {
            c.eq(
                &format!("{w}.output.finish_reason"),
                Some(client.tool_finish()),
                l.output.finish_reason.as_deref(),
            );
            if c.eq(
                &format!("{w}: number of output.tool_calls"),
                1,
                l.output.tool_calls.len(),
            ) {
                let t = &l.output.tool_calls[0];
                c.eq(
                    &format!("{w}.output.tool_calls[0].id"),
                    id.as_str(),
                    t.id.as_str(),
                );
                c.eq(
                    &format!("{w}.output.tool_calls[0].name"),
                    name.as_str(),
                    t.name.as_str(),
                );
                c.check(json_text_eq(args, &t.arguments), || {
                    format!(
                        "{w}.output.tool_calls[0].arguments: expected {args}, found {}",
                        t.arguments
                    )
                });
            }
            let text = if client == Client::AnthropicPy {
                format!("I will use the {name} tool.")
            } else {
                String::new()
            };
            c.eq(
                &format!("{w}.output.text"),
                text.as_str(),
                l.output.text.as_str(),
            );
        } else {
            c.eq(
                &format!("{w}.output.finish_reason"),
                Some(client.stop_finish()),
                l.output.finish_reason.as_deref(),
            );
            c.eq(
                &format!("{w}.output.tool_calls"),
                0,
                l.output.tool_calls.len(),
            );
            let text = format!("done: {} tools used", a.step);
            c.eq(
                &format!("{w}.output.text"),
                text.as_str(),
                l.output.text.as_str(),
            );
        }
    }

    // tool.call per tool call, and their effects
    let tool_events = ev.of_kind(kind::TOOL_CALL);
    let expected_tools = answers.iter().filter(|a| a.tool.is_some()).count();
    c.eq(
        "number of tool.call events",
        expected_tools,
        tool_events.len(),
    );
    for (i, a) in answers.iter().enumerate() {
        let (Some(name), Some(id), Some(args)) = (&a.tool, &a.call_id, &a.arguments) else {
            continue;
        };
        let w = format!("tool.call {name} ({id})");
        let found: Vec<&&Event> = tool_events
            .iter()
            .filter(|e| e.tool.as_ref().is_some_and(|t| t.call_id == *id))
            .collect();
        if !c.eq(
            &format!("{w}: number of tool.call events with this call_id"),
            1,
            found.len(),
        ) {
            continue;
        }
        let e = found[0];
        let t = e.tool.as_ref().expect("filtered");
        c.eq(&format!("{w}.name"), name.as_str(), t.name.as_str());
        c.check(json_text_eq(args, &t.arguments), || {
            format!("{w}.arguments: expected {args}, found {}", t.arguments)
        });
        c.eq(
            &format!("{w}.parent_span_id (its llm.call)"),
            Some(calls[i].span_id.as_str()),
            e.parent_span_id.as_deref(),
        );
        c.eq(
            &format!("{w}.trace_id"),
            trace.as_str(),
            e.trace_id.as_str(),
        );
        for fx in &t.effects {
            c.check(ev.by_id(fx).is_some(), || {
                format!("{w}.effects names {fx}, which is no event in the file")
            });
        }
        if client == Client::Curl {
            // curl never runs the tool: no result and no effects are expected.
            continue;
        }
        let expect = if name == "read_file" {
            run.file_content.trim()
        } else {
            "exit_code=0"
        };
        c.check(
            t.result.as_deref().is_some_and(|r| r.contains(expect)),
            || {
                format!(
                    "{w}.result should contain {expect:?}, found {:?}",
                    t.result.as_deref().map(|r| cut(r, 200))
                )
            },
        );
        c.check(!t.effects.is_empty(), || format!("{w}.effects is empty"));
        if name == "read_file" {
            check_effect(
                &mut c,
                ev,
                e,
                &trace,
                &w,
                "file.open of the read file",
                |x| {
                    x.kind == kind::FILE_OPEN && x.file.as_ref().is_some_and(|f| f.path == run.file)
                },
                |x| {
                    let f = x.file.as_ref().expect("file.open");
                    if f.result >= 0 {
                        None
                    } else {
                        Some(format!("result {} < 0", f.result))
                    }
                },
            );
        } else {
            check_effect(
                &mut c,
                ev,
                e,
                &trace,
                &w,
                "process.exec of `ls` listing the work dir",
                |x| {
                    x.kind == kind::PROCESS_EXEC
                        && x.exec.as_ref().is_some_and(|ex| {
                            let base = ex.filename.rsplit('/').next().unwrap_or("");
                            base == "ls" && ex.args.iter().any(|a| a == &run.workdir)
                        })
                },
                |_| None,
            );
        }
    }

    c.check(!ev.of_kind(kind::AGENT_HEALTH).is_empty(), || {
        "no agent.health event (the daemon emits one at shutdown)".into()
    });
    if client != Client::Curl {
        c.check(
            run.client_stdout.contains("FINAL: done: 2 tools used"),
            || {
                format!(
                    "client stdout lacks `FINAL: done: 2 tools used`: {:?}",
                    run.client_stdout
                )
            },
        );
    }
    c.finish(ev, &run.related(), &ctx);
}

/// An effect of `tool`: some event matching `is_it` must exist, be a child
/// span of the tool.call, be listed in its effects and share its trace.
fn check_effect(
    c: &mut Checker,
    ev: &Events,
    tool: &Event,
    trace: &str,
    w: &str,
    what: &str,
    is_it: impl Fn(&Event) -> bool,
    extra: impl Fn(&Event) -> Option<String>,
) {
    let candidates: Vec<&Event> = ev.all.iter().filter(|x| is_it(x)).collect();
    if candidates.is_empty() {
        c.fail(format!("{w}: no {what} at all"));
        return;
    }
    let effects = &tool.tool.as_ref().expect("tool.call").effects;
    let good = candidates.iter().find(|x| {
        x.parent_span_id.as_deref() == Some(tool.span_id.as_str())
            && effects.contains(&x.id)
            && x.trace_id == trace
            && extra(x).is_none()
    });
    if good.is_none() {
        let mut why = String::new();
        for x in &candidates {
            let _ = write!(
                why,
                "\n      {} — parent_span_id {} (want {}), in effects: {}, trace {} (want {}){}",
                describe(x),
                x.parent_span_id.as_deref().unwrap_or("-"),
                tool.span_id,
                effects.contains(&x.id),
                short(&x.trace_id),
                short(trace),
                extra(x).map(|m| format!(", {m}")).unwrap_or_default()
            );
        }
        c.fail(format!("{w}: no {what} linked to it; candidates:{why}"));
    }
}

pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}
