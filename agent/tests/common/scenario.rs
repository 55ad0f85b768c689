//! One scripted agent conversation, run under the daemon.

#![allow(
    clippy::wildcard_imports,
    reason = "one test-support module split in files"
)]

use super::*;

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
    /// tests/clients/agent_bedrock.py (official `boto3`): Bedrock Converse
    BedrockPy,
    /// tests/clients/agent_bedrock.py --invoke: Bedrock InvokeModel with an
    /// Anthropic Messages body
    BedrockInvokePy,
    /// tests/clients/agent_go.go (Go's net/http and crypto/tls), against
    /// the HTTP/1.1 mock or, with `h2`, the HTTP/2 one; run by e2e/go.rs
    Go { build: GoBuild, h2: bool },
}

impl Client {
    pub fn provider(self) -> &'static str {
        match self {
            Client::AnthropicPy => "anthropic",
            Client::BedrockPy | Client::BedrockInvokePy => "aws.bedrock",
            _ => "openai",
        }
    }

    pub fn path(self, stream: bool) -> String {
        let bedrock = |action: &str| format!("/model/{BEDROCK_MODEL_PATH}/{action}");
        match (self, stream) {
            (Client::AnthropicPy, _) => "/v1/messages".into(),
            (Client::BedrockPy, false) => bedrock("converse"),
            (Client::BedrockPy, true) => bedrock("converse-stream"),
            (Client::BedrockInvokePy, false) => bedrock("invoke"),
            (Client::BedrockInvokePy, true) => bedrock("invoke-with-response-stream"),
            _ => "/v1/chat/completions".into(),
        }
    }

    pub fn model(self) -> &'static str {
        match self {
            Client::AnthropicPy => ANTHROPIC_MODEL,
            Client::BedrockPy | Client::BedrockInvokePy => BEDROCK_MODEL,
            _ => OPENAI_MODEL,
        }
    }

    /// The credential whose fingerprint is the call's `api_key_id`.
    pub fn key(self) -> &'static str {
        match self {
            Client::AnthropicPy => ANTHROPIC_KEY,
            Client::BedrockPy | Client::BedrockInvokePy => AWS_ACCESS_KEY_ID,
            _ => OPENAI_KEY,
        }
    }

    /// Does the model write a lead text before its tool call (the mock's
    /// Anthropic-shaped answers)?
    pub fn lead_text(self) -> bool {
        matches!(
            self,
            Client::AnthropicPy | Client::BedrockPy | Client::BedrockInvokePy
        )
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
            Client::AnthropicPy | Client::BedrockPy | Client::BedrockInvokePy => "tool_use",
            _ => "tool_calls",
        }
    }

    pub fn stop_finish(self) -> &'static str {
        match self {
            Client::AnthropicPy | Client::BedrockPy | Client::BedrockInvokePy => "end_turn",
            _ => "stop",
        }
    }
}

/// The AWS credentials of the Bedrock client: the secret key signs and
/// never travels; no config file or IMDS lookup.
pub fn bedrock_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY_ID.to_string()),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET_ACCESS_KEY.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_CONFIG_FILE", "/dev/null".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_string()),
    ]
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
        Client::BedrockPy | Client::BedrockInvokePy => {
            let mut a = vec![clients.join("agent_bedrock.py").display().to_string()];
            a.extend(common);
            if client == Client::BedrockInvokePy {
                a.push("--invoke".into());
            }
            (python(), a, bedrock_env())
        }
        Client::Node => {
            let mut a = vec![clients.join("agent_node.js").display().to_string()];
            a.extend(common);
            (node(), a, vec![("OPENAI_API_KEY", OPENAI_KEY.to_string())])
        }
        Client::Go { .. } => unreachable!(
            "a Go client starts too fast to be attached at its exec: e2e/go.rs runs it as the \
             daemon's command"
        ),
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
        .filter(|r| {
            r["query_names"]
                .as_array()
                .is_some_and(|q| q.iter().any(|n| n == "OUTSIDER"))
        })
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
