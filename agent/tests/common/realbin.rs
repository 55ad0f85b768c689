//! The real binaries for shipping tests: `aitrail collector` as a process
//! (config file, HTTPS on 127.0.0.1), `/metrics` scraped with curl and its
//! exposition text parsed, the spool and the store read back for the oracle.

#![allow(
    clippy::wildcard_imports,
    reason = "one test-support module split in files"
)]

use super::*;

/// Tokens of the test collector (each ≥ 16 characters, all distinct).
pub const AGENT_TOKEN: &str = "agent-token-0123456789abcdef";
pub const API_TOKEN: &str = "api-token-0123456789abcdef";
pub const METRICS_TOKEN: &str = "metrics-token-0123456789abcdef";

/// The binary cargo built for this test (or `AITRAIL_E2E_DAEMON_BIN`).
pub fn aitrail_bin() -> String {
    env_or("AITRAIL_E2E_DAEMON_BIN", env!("CARGO_BIN_EXE_aitrail"))
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// What curl got: status, content type, body.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// One GET with curl (a client that is not ours): `ca` for HTTPS, a bearer
/// `token`, an `Accept` header. `None` when the connection failed.
pub fn curl_get(
    url: &str,
    ca: Option<&Path>,
    token: Option<&str>,
    accept: Option<&str>,
) -> Option<Got> {
    let mut cmd = Command::new(curl());
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-w",
        "\n%{http_code}\n%{content_type}",
    ]);
    if let Some(ca) = ca {
        cmd.arg("--cacert").arg(ca);
    }
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if let Some(a) = accept {
        cmd.args(["-H", &format!("Accept: {a}")]);
    }
    let out = cmd.arg(url).output().expect("run curl");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = text.rsplitn(3, '\n');
    let content_type = parts.next()?.to_owned();
    let status = parts.next()?.parse().ok()?;
    let body = parts.next().unwrap_or("").to_owned();
    Some(Got {
        status,
        content_type,
        body,
    })
}

/// A parsed `/metrics` scrape.
#[derive(Debug)]
pub struct Prom {
    pub samples: Vec<prometheus_parse::Sample>,
    pub text: String,
}

impl Prom {
    /// Parses Prometheus text (0.0.4); every line must be a comment or a
    /// sample with a numeric value, every sample must have a `# TYPE`.
    pub fn parse(text: &str) -> Self {
        let mut typed = BTreeSet::new();
        for line in text.lines() {
            match prometheus_parse::LineInfo::parse(line) {
                prometheus_parse::LineInfo::Sample {
                    metric_name, value, ..
                } => {
                    assert!(value.parse::<f64>().is_ok(), "not a number in {line:?}");
                    assert!(
                        typed.contains(metric_name),
                        "{metric_name} has no # TYPE before it"
                    );
                }
                prometheus_parse::LineInfo::Type { metric_name, .. } => {
                    typed.insert(metric_name);
                }
                prometheus_parse::LineInfo::Ignored => {
                    panic!("not exposition text: {line:?}")
                }
                _ => {}
            }
        }
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("exposition text parses");
        Prom {
            samples: scrape.samples,
            text: text.to_owned(),
        }
    }

    fn value(s: &prometheus_parse::Sample) -> f64 {
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        }
    }

    /// The sample of `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(Self::value)
    }

    /// Like `get`, as an integer (0 when absent).
    pub fn n(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "counters are whole and non-negative"
        )]
        self.get(name, labels).map_or(0, |v| v as u64)
    }

    /// The sum of every sample of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "counters are whole and non-negative"
        )]
        let s = self
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(Self::value)
            .sum::<f64>() as u64;
        s
    }
}

/// Scrapes a daemon's plain-HTTP `/metrics`; `None` while it is not up.
pub fn scrape_agent(port: u16) -> Option<Prom> {
    let got = curl_get(
        &format!("http://127.0.0.1:{port}/metrics"),
        None,
        None,
        None,
    )?;
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(
        got.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        got.content_type
    );
    Some(Prom::parse(&got.body))
}

/// `aitrail collector` as a child process on 127.0.0.1.
pub struct CollectorProc {
    child: Option<Child>,
    pub port: u16,
    pub store: PathBuf,
    pub ca: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
}

impl CollectorProc {
    /// Writes its config into `dir/name/` and starts it on `port`; returns
    /// once `/healthz` answers.
    pub fn start(dir: &Path, name: &str, pki: &Pki, port: u16) -> Self {
        let mut c = Self::configure(dir, name, pki, port);
        c.spawn();
        c
    }

    /// Writes its config, starts nothing (`restart` starts it).
    pub fn configure(dir: &Path, name: &str, pki: &Pki, port: u16) -> Self {
        let home = dir.join(name);
        fs::create_dir_all(&home).expect("mkdir collector dir");
        let store = home.join("store");
        let config = home.join("collector.toml");
        let log = home.join("collector.log");
        fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\n\
                 [tls]\ncert = \"{}\"\nkey = \"{}\"\n\
                 [agents.agent-1]\ntoken = \"{AGENT_TOKEN}\"\n\
                 [limits]\nrate_per_sec = 1000.0\nrate_burst = 1000\n\
                 [store]\ndir = \"{}\"\n\
                 [api]\ntokens = [\"{API_TOKEN}\"]\n\
                 [metrics]\ntokens = [\"{METRICS_TOKEN}\"]\n",
                pki.cert.display(),
                pki.key.display(),
                store.display()
            ),
        )
        .expect("write collector config");
        CollectorProc {
            child: None,
            port,
            store,
            ca: pki.ca.clone(),
            log,
            config,
        }
    }

    fn spawn(&mut self) {
        let child = Command::new(aitrail_bin())
            .arg("collector")
            .arg("--config")
            .arg(&self.config)
            .env("AITRAIL_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .expect("collector log"),
            )
            .spawn()
            .expect("start aitrail collector");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(g) = curl_get(&self.url("/healthz"), Some(&self.ca), None, None) {
                assert_eq!(g.status, 200);
                break;
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("collector exited ({st}):\n{}", tail(&self.log, 4000));
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "collector not up within {READY_TIMEOUT:?}:\n{}",
                tail(&self.log, 4000)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it (again: same config, store and port).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn sink(&self) -> String {
        format!("collector:https://127.0.0.1:{}", self.port)
    }

    /// `/metrics` with the metrics token.
    pub fn scrape(&self) -> Prom {
        let got = curl_get(
            &self.url("/metrics"),
            Some(&self.ca),
            Some(METRICS_TOKEN),
            None,
        )
        .expect("collector /metrics answers");
        assert_eq!(got.status, 200, "{}", got.body);
        Prom::parse(&got.body)
    }

    /// SIGTERM, then a clean exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let st = wait_child(&mut child, STOP_TIMEOUT, "collector");
        assert!(
            st.success(),
            "collector exited {st}:\n{}",
            tail(&self.log, 4000)
        );
    }

    /// Every stored event, by id, exactly as received.
    pub fn stored(&self) -> BTreeMap<String, String> {
        stored(&self.store)
    }
}

impl Drop for CollectorProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for a child; kills it and panics after `limit`.
pub fn wait_child(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every event of a store directory, by id (each id at most once: the
/// store's unique key), as received.
pub fn stored(store: &Path) -> BTreeMap<String, String> {
    let s = aitrail_collector::Store::open(store).expect("open the store");
    let mut by_id = BTreeMap::new();
    for (id, body) in s.all().expect("read the store") {
        assert_eq!(s.count_id(&id).expect("count"), 1, "{id} stored twice");
        assert!(
            by_id.insert(id.clone(), body).is_none(),
            "{id} stored twice"
        );
    }
    by_id
}

/// The events of every segment in a spool directory (header checked, zstd
/// frame decompressed), by id; and the number of `.tmp` files.
pub fn spooled(spool: &Path) -> (BTreeMap<String, String>, usize) {
    let mut events = BTreeMap::new();
    let mut torn = 0;
    for entry in fs::read_dir(spool).expect("read the spool") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let ext = path.extension().and_then(|e| e.to_str());
        if ext == Some("tmp") {
            torn += 1;
            continue;
        }
        if ext != Some("seg") {
            continue;
        }
        let bytes = fs::read(&path).expect("read a segment");
        let header = aitrail::ship::spool::Header::decode(&bytes).expect("a whole segment header");
        let payload = &bytes[aitrail::ship::spool::HEADER_LEN..];
        assert_eq!(
            payload.len() as u64,
            header.payload_len,
            "{name}: cut short"
        );
        let raw = zstd::stream::decode_all(payload).expect("a zstd frame");
        let text = String::from_utf8(raw).expect("UTF-8 NDJSON");
        let mut n = 0;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("a JSON event");
            let id = v["id"].as_str().expect("an id").to_owned();
            events.insert(id, line.to_owned());
            n += 1;
        }
        assert_eq!(n, header.events, "{name}: event count");
    }
    (events, torn)
}

/// Lines of an NDJSON file by event id; a last line a kill cut short is
/// left out.
pub fn ndjson_by_id(path: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            continue;
        };
        let v: Value = serde_json::from_str(line).expect("a JSON event");
        out.insert(v["id"].as_str().expect("an id").to_owned(), line.to_owned());
    }
    out
}

/// A synthesised recording of `calls` LLM calls (`aitrail replay --synth`).
pub fn synth_recording(path: &Path, calls: usize) {
    synth_recording_with(path, calls, 0);
}

/// Like `synth_recording`, every `sensitive_every`-th file read a private
/// key (a finding).
pub fn synth_recording_with(path: &Path, calls: usize, sensitive_every: usize) {
    let out = Command::new(aitrail_bin())
        .args(["replay", "--synth"])
        .arg(path)
        .args(["--calls", &calls.to_string()])
        .args(["--sensitive-every", &sensitive_every.to_string()])
        .output()
        .expect("run aitrail replay --synth");
    assert!(
        out.status.success(),
        "replay --synth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An agent config shipping to `collector` (and to a file sink when given),
/// spooling in `spool`, `/metrics` on `metrics_port`; `extra` lines go into
/// `[collector]`.
pub fn agent_config(
    path: &Path,
    collector: &CollectorProc,
    file: Option<&Path>,
    spool: &Path,
    metrics_port: u16,
    extra: &str,
) {
    let mut sinks = vec![format!("\"{}\"", collector.sink())];
    if let Some(f) = file {
        sinks.push(format!("\"file:{}\"", f.display()));
    }
    fs::write(
        path,
        format!(
            "sinks = [{}]\n\
             [collector]\ntoken = \"{AGENT_TOKEN}\"\nca_file = \"{}\"\n\
             spool_dir = \"{}\"\nbatch_max_events = 200\nbatch_max_wait_ms = 200\n\
             retry_max_ms = 500\n{extra}\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            sinks.join(", "),
            collector.ca.display(),
            spool.display()
        ),
    )
    .expect("write agent config");
}
