//! Shipping benchmarks, run by `cargo xtask bench ship` (or
//! `cargo bench -p aitrail --bench ship -- [--samples N] [--no-latency]`).
//! Prints a Markdown section for docs/benchmarks.md on stdout, progress on
//! stderr.
//!
//! 1. Events: `aitrail replay` of a synthesised recording (SDK-shaped
//!    streamed OpenAI and Anthropic calls with tool calls, one file read in
//!    50 a private key) through the whole pipeline into a file sink: the
//!    NDJSON the daemon really ships.
//! 2. zstd ratio of that NDJSON per batch size (level 3 with checksum, as
//!    the spool compresses).
//! 3. Ingest: the real `aitrail collector` binary; several connections post
//!    batches of those events (ids made unique), each with the agent's own
//!    sender client; events/s (wall) and the collector's CPU time per event
//!    (/proc/PID/stat).
//! 4. Finding latency (root, real eBPF): `aitrail agent --pid P --watch-all`
//!    shipping to the collector, P a python process that opens a private
//!    key when told; from just before `open()` to the finding being
//!    returned by `GET /api/search`; N samples per setting of
//!    `finding_max_wait_ms` (2000 = `batch_max_wait_ms`, how it was before
//!    findings closed their batch early; and the default).
//!
//! Every server listens on 127.0.0.1; the daemon is scoped to one pid.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::too_many_lines,
    clippy::doc_markdown
)]

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aitrail::ship::{sender::Client, CollectorSpec};
use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject as _, CertificateDer};

const AGENT_TOKEN: &str = "bench-agent-token-0123456789";
const API_TOKEN: &str = "bench-api-token-0123456789";
/// The spool's zstd level (agent/src/ship/mod.rs).
const ZSTD_LEVEL: i32 = 3;

struct Args {
    samples: usize,
    latency: bool,
    calls: usize,
    batches: usize,
    batch_events: usize,
    connections: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        samples: 100,
        latency: true,
        calls: 2000,
        batches: 60,
        batch_events: 1000,
        connections: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> anyhow::Result<usize> {
            it.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name}: not a number"))
        };
        match arg.as_str() {
            "--samples" => a.samples = num("--samples")?,
            "--calls" => a.calls = num("--calls")?,
            "--batches" => a.batches = num("--batches")?,
            "--batch-events" => a.batch_events = num("--batch-events")?,
            "--connections" => a.connections = num("--connections")?,
            "--no-latency" => a.latency = false,
            // What `cargo bench` adds.
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_aitrail")
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Children killed when the bench ends, even on error.
#[derive(Default)]
struct Guards(Vec<Child>);

impl Drop for Guards {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// user + system CPU seconds of a process.
fn cpu_s(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok(ticks as f64 / hz as f64)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64) - 1.0).ceil().max(0.0) as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct World {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl World {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("aitrail-bench-ship-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        run(Command::new("/bin/sh")
            .arg(root.join("tests/mock/make_cert.sh"))
            .arg(dir.join("pki")))?;
        Ok(Self {
            ca: dir.join("pki/ca.pem"),
            cert: dir.join("pki/server.pem"),
            key: dir.join("pki/server.key"),
            dir,
        })
    }

    /// `aitrail collector` on a free port; returns once `/healthz` answers.
    fn collector(&self, name: &str, guards: &mut Guards) -> anyhow::Result<(u32, u16)> {
        let port = free_port()?;
        let home = self.dir.join(name);
        fs::create_dir_all(&home)?;
        let config = home.join("collector.toml");
        fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\
                 [agents.bench]\ntoken = \"{AGENT_TOKEN}\"\n\
                 [limits]\nrate_per_sec = 100000.0\nrate_burst = 100000\n\
                 [store]\ndir = \"{}\"\n[api]\ntokens = [\"{API_TOKEN}\"]\n",
                self.cert.display(),
                self.key.display(),
                home.join("store").display()
            ),
        )?;
        let child = Command::new(bin())
            .args(["collector", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(home.join("collector.log"))?)
            .spawn()?;
        let pid = child.id();
        guards.0.push(child);
        let start = Instant::now();
        let mut http = Https::new(&self.ca, port)?;
        while http.get("/healthz", None).is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the collector did not come up");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok((pid, port))
    }
}

/// A kept-alive HTTPS client for GETs.
struct Https {
    rt: tokio::runtime::Runtime,
    tls: tokio_rustls::TlsConnector,
    port: u16,
    conn: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
}

impl Https {
    fn new(ca: &Path, port: u16) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(ca)?)?;
        let cfg =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            port,
            conn: None,
        })
    }

    fn get(&mut self, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
        let (tls, port) = (self.tls.clone(), self.port);
        let conn = self.conn.take();
        let (conn, status, body) = self.rt.block_on(async move {
            let mut sender = match conn {
                Some(c) if !c.is_closed() => c,
                _ => {
                    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                    let _ = tcp.set_nodelay(true);
                    let s = tls.connect(ServerName::try_from("127.0.0.1")?, tcp).await?;
                    let (sender, c) =
                        hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
                    tokio::spawn(c);
                    sender
                }
            };
            sender.ready().await?;
            let mut req = Request::get(path).header("host", "127.0.0.1");
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let resp = sender.send_request(req.body(Empty::new())?).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((sender, status, String::from_utf8_lossy(&body).into_owned()))
        })?;
        self.conn = Some(conn);
        Ok((status, body))
    }
}

/// (1): the NDJSON of a replay through the whole pipeline.
fn events(w: &World, calls: usize) -> anyhow::Result<Vec<String>> {
    let rec = w.dir.join("synth.rec");
    run(Command::new(bin())
        .args(["replay", "--synth"])
        .arg(&rec)
        .args(["--calls", &calls.to_string(), "--sensitive-every", "50"]))?;
    let out = w.dir.join("events.ndjson");
    run(Command::new(bin())
        .arg("replay")
        .arg(&rec)
        .arg("--sink")
        .arg(format!("file:{}", out.display())))?;
    let _ = fs::remove_file(&rec);
    Ok(fs::read_to_string(&out)?
        .lines()
        .map(str::to_owned)
        .collect())
}

fn compress(raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
    c.include_checksum(true)?;
    Ok(c.compress(raw)?)
}

/// How many of the remaining lines the next batch takes.
type BatchCut = dyn Fn(&[String]) -> usize;

/// (2): ratio per batch size; the last entry is a batch closed by the
/// default byte bound (4 MiB).
fn ratios(lines: &[String], out: &mut String) -> anyhow::Result<()> {
    let total_raw: usize = lines.iter().map(|l| l.len() + 1).sum();
    writeln!(
        out,
        "\n### zstd ratio of the shipped NDJSON, by batch size\n\n\
         {} events ({:.1} MB of NDJSON, {:.0} B per event on average; kinds: {}), cut into \
         consecutive batches, each one zstd frame at level {ZSTD_LEVEL} with checksum (as the \
         spool writes them). Goal ≥ 8×.\n\n\
         | batch | batches | NDJSON MB | zstd MB | ratio | compress MB/s (one core) |\n|---|---:|---:|---:|---:|---:|",
        lines.len(),
        total_raw as f64 / 1e6,
        total_raw as f64 / lines.len().max(1) as f64,
        kinds(lines)
    )?;
    let mut sizes: Vec<(String, Box<BatchCut>)> = Vec::new();
    for n in [1usize, 10, 100, 500, 1000, 5000] {
        sizes.push((format!("{n} events"), Box::new(move |_: &[String]| n)));
    }
    sizes.push((
        "4 MiB (default bound)".into(),
        Box::new(|rest: &[String]| {
            let mut bytes = 0;
            rest.iter()
                .take_while(|l| {
                    bytes += l.len() + 1;
                    bytes <= 4 * 1024 * 1024
                })
                .count()
                .max(1)
        }),
    ));
    for (name, next) in sizes {
        let (mut raw_t, mut z_t, mut batches, mut secs) = (0usize, 0usize, 0usize, 0.0);
        let mut rest = lines;
        while !rest.is_empty() {
            let n = next(rest).min(rest.len());
            let mut raw = Vec::new();
            for l in &rest[..n] {
                raw.extend_from_slice(l.as_bytes());
                raw.push(b'\n');
            }
            let t = Instant::now();
            let z = compress(&raw)?;
            secs += t.elapsed().as_secs_f64();
            raw_t += raw.len();
            z_t += z.len();
            batches += 1;
            rest = &rest[n..];
        }
        writeln!(
            out,
            "| {name} | {batches} | {:.2} | {:.3} | {:.1}× | {:.0} |",
            raw_t as f64 / 1e6,
            z_t as f64 / 1e6,
            raw_t as f64 / z_t.max(1) as f64,
            raw_t as f64 / 1e6 / secs.max(1e-9)
        )?;
    }
    Ok(())
}

fn kinds(lines: &[String]) -> String {
    let mut by: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
        *by.entry(v["kind"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    by.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// (3): many batches into the real collector.
fn ingest(w: &World, lines: &[String], a: &Args, out: &mut String) -> anyhow::Result<()> {
    let mut guards = Guards::default();
    let (pid, port) = w.collector("ingest", &mut guards)?;
    // Batches of fresh ids, compressed before the clock starts.
    eprintln!(
        "bench ship: preparing {} batches of {} events",
        a.batches, a.batch_events
    );
    let mut payloads = Vec::with_capacity(a.batches);
    let mut raw_bytes = 0usize;
    let mut k = 0usize;
    for _ in 0..a.batches {
        let mut raw = Vec::new();
        for _ in 0..a.batch_events {
            let mut v: serde_json::Value = serde_json::from_str(&lines[k % lines.len()])?;
            v["id"] = serde_json::Value::String(uuid::Uuid::new_v4().simple().to_string());
            raw.extend(serde_json::to_vec(&v)?);
            raw.push(b'\n');
            k += 1;
        }
        raw_bytes += raw.len();
        payloads.push((
            uuid::Uuid::now_v7().to_string(),
            Bytes::from(compress(&raw)?),
        ));
    }
    let z_bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
    let mut spec = CollectorSpec::from_url(&format!("https://127.0.0.1:{port}"))?;
    spec.settings.token = Some(AGENT_TOKEN.into());
    spec.settings.ca_file = Some(w.ca.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let queue = Arc::new(std::sync::Mutex::new(payloads));
    let cpu0 = cpu_s(pid)?;
    let t0 = Instant::now();
    let accepted: u64 = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..a.connections {
            let mut client = Client::new(&spec)?;
            let queue = Arc::clone(&queue);
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    let next = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop();
                    let Some((id, body)) = next else { break };
                    let ack = client
                        .post(&id, body)
                        .await
                        .map_err(|e| anyhow::anyhow!("post: {e}"))?;
                    n += ack.accepted;
                }
                Ok::<u64, anyhow::Error>(n)
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        Ok::<u64, anyhow::Error>(total)
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_s(pid)? - cpu0;
    let events = (a.batches * a.batch_events) as u64;
    if accepted != events {
        bail!("the collector accepted {accepted} of {events} events");
    }
    writeln!(
        out,
        "\n### Ingest into the store\n\n\
         The release `aitrail collector` (SQLite WAL, `synchronous = FULL`, FTS5), \
         {} batches of {} events ({:.1} MB NDJSON, {:.1} MB zstd) from the events above with \
         fresh ids, posted over {} kept-alive HTTPS connections by the agent's sender client; \
         each answer waits for the durable commit.\n\n\
         | events | wall s | events/s | MB/s NDJSON | collector CPU s | CPU µs per event | events per CPU-second |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n\
         | {events} | {wall:.2} | {:.0} | {:.1} | {cpu:.2} | {:.1} | {:.0} |",
        a.batches,
        a.batch_events,
        raw_bytes as f64 / 1e6,
        z_bytes as f64 / 1e6,
        a.connections,
        events as f64 / wall,
        raw_bytes as f64 / 1e6 / wall,
        cpu * 1e6 / events as f64,
        events as f64 / cpu.max(1e-9),
    )?;
    Ok(())
}

/// (4): side effect → finding searchable at the collector.
fn latency(w: &World, a: &Args, out: &mut String) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the finding latency needs root (eBPF): run it as root or pass --no-latency");
    }
    writeln!(
        out,
        "\n### Side effect → finding searchable at the collector\n\n\
         `aitrail agent --pid P --watch-all` (release, real eBPF) shipping to the release \
         collector on 127.0.0.1; P is `tests/bench/open_sensitive.py`, which opens \
         `…/.ssh/id_bench_I` when told (a `sensitive_file` finding, rule `file.ssh_keys`). \
         Latency: from `time.time_ns()` just before `open()` to the first `GET \
         /api/search?kind=finding&rule=file.ssh_keys` (polled every 5 ms) that returns it. \
         Samples one at a time, {} per row; other `[collector]` settings at their defaults \
         (`batch_max_wait_ms = 2000`). Goal p99 ≤ 1 s.\n\n\
         | finding_max_wait_ms | samples | p50 ms | p95 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|",
        a.samples
    )?;
    for (label, wait) in [
        ("2000 (as before: = batch_max_wait_ms)", 2000u64),
        ("100 (default)", 100),
    ] {
        let mut lat = latency_run(w, a.samples, wait)?;
        lat.sort_by(f64::total_cmp);
        writeln!(
            out,
            "| {label} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            lat.len(),
            pct(&lat, 50.0),
            pct(&lat, 95.0),
            pct(&lat, 99.0),
            lat.last().copied().unwrap_or(f64::NAN)
        )?;
    }
    Ok(())
}

fn latency_run(w: &World, samples: usize, finding_wait: u64) -> anyhow::Result<Vec<f64>> {
    let mut guards = Guards::default();
    let name = format!("latency-{finding_wait}");
    let (_, port) = w.collector(&name, &mut guards)?;
    let home = w.dir.join(&name);
    let keys = home.join("home");
    fs::create_dir_all(keys.join(".ssh"))?;
    for i in 0..samples {
        fs::write(keys.join(format!(".ssh/id_bench_{i}")), "not a key\n")?;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut opener = Command::new("/usr/bin/python3")
        .arg(root.join("tests/bench/open_sensitive.py"))
        .arg(&keys)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start tests/bench/open_sensitive.py")?;
    let mut to_opener = opener.stdin.take().context("stdin")?;
    let mut from_opener = BufReader::new(opener.stdout.take().context("stdout")?);
    let opener_pid = opener.id();
    guards.0.push(opener);
    let mut line = String::new();
    from_opener.read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("opener said {line:?}");
    }
    let config = home.join("agent.toml");
    fs::write(
        &config,
        format!(
            "sinks = [\"collector:https://127.0.0.1:{port}\"]\n[collector]\ntoken = \"{AGENT_TOKEN}\"\n\
             ca_file = \"{}\"\nspool_dir = \"{}\"\nfinding_max_wait_ms = {finding_wait}\n",
            w.ca.display(),
            home.join("spool").display()
        ),
    )?;
    let sock_path = home.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path)?;
    sock.set_read_timeout(Some(Duration::from_millis(250)))?;
    let daemon = Command::new(bin())
        .arg("agent")
        .arg("--config")
        .arg(&config)
        .args(["--pid", &opener_pid.to_string(), "--watch-all"])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(home.join("daemon.log"))?)
        .spawn()?;
    let daemon_pid = daemon.id();
    guards.0.push(daemon);
    let start = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        if let Ok(n) = sock.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break;
            }
        }
        if start.elapsed() > Duration::from_mins(1) {
            bail!(
                "the daemon sent no READY=1 (see {})",
                home.join("daemon.log").display()
            );
        }
    }
    let mut http = Https::new(&w.ca, port)?;
    let since = chrono::Utc::now() - chrono::Duration::seconds(5);
    let query = format!(
        "/api/search?kind=finding&rule=file.ssh_keys&limit=1000&since={}",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let count = |http: &mut Https| -> anyhow::Result<usize> {
        let (status, body) = http.get(&query, Some(API_TOKEN))?;
        if status != 200 {
            bail!("search answered {status}: {body}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["count"].as_u64().unwrap_or(0) as usize)
    };
    let mut lat = Vec::with_capacity(samples);
    for i in 0..samples {
        writeln!(to_opener, "open {i}")?;
        to_opener.flush()?;
        line.clear();
        from_opener.read_line(&mut line)?;
        let t_ns: u128 = line
            .split_whitespace()
            .nth(1)
            .context("opener output")?
            .parse()?;
        let t_open = Duration::from_nanos(u64::try_from(t_ns)?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if count(&mut http)? > i {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "finding {i} not searchable within 30 s (daemon log: {})",
                    home.join("daemon.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        lat.push(now.saturating_sub(t_open).as_secs_f64() * 1e3);
        // Spread the samples over batch boundaries.
        std::thread::sleep(Duration::from_millis(fastrand::u64(50..250)));
    }
    writeln!(to_opener, "quit")?;
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(libc::pid_t::try_from(daemon_pid)?, libc::SIGTERM);
    }
    eprintln!(
        "bench ship: finding_max_wait_ms={finding_wait}: {} samples, median {:.0} ms",
        lat.len(),
        {
            let mut s = lat.clone();
            s.sort_by(f64::total_cmp);
            pct(&s, 50.0)
        }
    );
    Ok(lat)
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let w = World::new()?;
    eprintln!("bench ship: scratch files in {}", w.dir.display());
    let mut out = String::new();
    eprintln!(
        "bench ship: replaying {} synthesised calls for the events",
        a.calls
    );
    let lines = events(&w, a.calls)?;
    ratios(&lines, &mut out)?;
    eprintln!("bench ship: ingest");
    ingest(&w, &lines, &a, &mut out)?;
    if a.latency {
        eprintln!(
            "bench ship: finding latency ({} samples per setting)",
            a.samples
        );
        latency(&w, &a, &mut out)?;
    } else {
        out.push_str("\n(finding latency not measured: --no-latency)\n");
    }
    print!("{out}");
    let _ = fs::remove_dir_all(&w.dir);
    Ok(())
}
