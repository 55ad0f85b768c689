//! The processes a test runs: the mock LLM server, the gated client
//! launcher, and the daemon.

#![allow(
    clippy::wildcard_imports,
    reason = "one test-support module split in files"
)]

use super::*;

// ------------------------------------------------------------------ mock server

/// A mock LLM server (tests/mock/), listening on 127.0.0.1 on a free port.
pub struct MockServer {
    child: Child,
    pub port: u16,
    pub base_url: String,
    pub record: PathBuf,
    pub log: PathBuf,
}

impl MockServer {
    pub fn start(dir: &TestDir, pki: &Pki) -> Self {
        Self::start_script(dir, pki, &python(), "tests/mock/mock_llm.py")
    }

    /// tests/mock/mock_mcp.py: an MCP server over streamable HTTP.
    pub fn start_mcp(dir: &TestDir, pki: &Pki) -> Self {
        Self::start_script(dir, pki, &python(), "tests/mock/mock_mcp.py")
    }

    /// tests/mock/mcp_sse_server.py: the official MCP SDK's server on the
    /// older HTTP+SSE transport, run by `python` (the SDK's venv).
    pub fn start_mcp_sse(dir: &TestDir, pki: &Pki, python: &str) -> Self {
        Self::start_script(dir, pki, python, "tests/mock/mcp_sse_server.py")
    }

    /// tests/mock/mock_h2.js: the same answers over HTTP/2 only.
    pub fn start_h2(dir: &TestDir, pki: &Pki) -> Self {
        Self::start_script(dir, pki, &node(), "tests/mock/mock_h2.js")
    }

    /// mock_h2.js that negotiates at most TLS 1.2.
    pub fn start_h2_tls12(dir: &TestDir, pki: &Pki) -> Self {
        Self::start_script_with(
            dir,
            pki,
            &node(),
            "tests/mock/mock_h2.js",
            &["--tls-max", "1.2"],
        )
    }

    /// tests/mock/mock_responses_ws.py: the Responses API's WebSocket mode
    /// (`wss://127.0.0.1:PORT/v1/responses`), permessage-deflate offered.
    pub fn start_ws(dir: &TestDir, pki: &Pki) -> Self {
        Self::start_script(dir, pki, &python(), "tests/mock/mock_responses_ws.py")
    }

    /// tests/mock/mock_llm.py over plain HTTP (no TLS) on `port`, as a
    /// local model server (Ollama, vLLM) listens.
    pub fn start_plain(dir: &TestDir, port: u16) -> Self {
        let port = port.to_string();
        let mut m = Self::spawn(
            dir,
            None,
            &python(),
            "tests/mock/mock_llm.py",
            &["--plain", "--port", &port],
        );
        m.base_url = format!("http://127.0.0.1:{}", m.port);
        m
    }

    fn start_script(dir: &TestDir, pki: &Pki, interpreter: &str, script: &str) -> Self {
        Self::start_script_with(dir, pki, interpreter, script, &[])
    }

    fn start_script_with(
        dir: &TestDir,
        pki: &Pki,
        interpreter: &str,
        script: &str,
        extra: &[&str],
    ) -> Self {
        Self::spawn(dir, Some(pki), interpreter, script, extra)
    }

    fn spawn(
        dir: &TestDir,
        pki: Option<&Pki>,
        interpreter: &str,
        script: &str,
        extra: &[&str],
    ) -> Self {
        let record = dir.join("mock/requests.jsonl");
        let log = dir.join("mock/mock.log");
        let script = repo_root().join(script);
        let mut cmd = Command::new(interpreter);
        cmd.arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0"]);
        if let Some(pki) = pki {
            cmd.arg("--cert").arg(&pki.cert).arg("--key").arg(&pki.key);
        }
        let mut child = cmd
            .arg("--record")
            .arg(&record)
            .args(extra)
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
        Self::start_command(dir, "agent", scope)
    }

    /// Starts `aitrail <command> <args> --sink file:…` (command `agent` or
    /// `run`) and waits for `READY=1`.
    pub fn start_command(dir: &TestDir, command: &str, scope: &[String]) -> Self {
        Self::start_with_env(dir, command, scope, &[])
    }

    /// Like [`Daemon::start_command`], with `scope` placed before `--sink`
    /// unless it holds `--` (then the sink goes first: what follows `--` is
    /// the command the daemon runs) and extra environment for the daemon
    /// (and so for a command it runs).
    pub fn start_with_env(
        dir: &TestDir,
        command: &str,
        scope: &[String],
        env: &[(&str, String)],
    ) -> Self {
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
        let mut args: Vec<String> = vec![command.into()];
        let split = scope.iter().position(|a| a == "--").unwrap_or(scope.len());
        args.extend(scope[..split].iter().cloned());
        args.extend(["--sink".into(), format!("file:{}", events.display())]);
        if let Ok(extra) = std::env::var("AITRAIL_E2E_DAEMON_ARGS") {
            args.extend(extra.split_whitespace().map(str::to_string));
        }
        args.extend(scope[split..].iter().cloned());
        let cmdline = format!(
            "NOTIFY_SOCKET={} {exe} {}",
            sock_path.display(),
            args.join(" ")
        );
        eprintln!("e2e: starting {cmdline}");
        let child = Command::new(exe)
            .args(&args)
            .env("NOTIFY_SOCKET", &sock_path)
            .env(
                "AITRAIL_LOG",
                std::env::var("AITRAIL_LOG").unwrap_or_else(|_| env_or("RUST_LOG", "info")),
            )
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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

    /// The daemon's pid (0 once it was stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
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

    /// Waits for a daemon that runs a command (`agent -- COMMAND`) to exit
    /// by itself when the command ends; its status must be success.
    pub fn wait_exit(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait daemon") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "daemon and its command did not end within {timeout:?}\nstderr:\n{}",
                    excerpt(&self.stderr, 5000, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "daemon exited with {status} (its command failed?)\ncommand: {}\nstderr:\n{}\nstdout:\n{}",
            self.cmdline,
            excerpt(&self.stderr, 5000, 3000),
            tail(&self.stdout, 2000)
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
