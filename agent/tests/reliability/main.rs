//! Shipping with the real binaries, no root needed: `aitrail collector` as
//! a process, and the daemon's whole userspace pipeline driven by
//! `aitrail replay` of a synthesised recording (the same sinks, spool and
//! sender as `aitrail agent`), both scraped on `/metrics` with curl.
//!
//! - the metrics of both move as events flow, and agree with what was
//!   stored;
//! - the daemon killed with SIGKILL under load and restarted on the same
//!   spool: every event it had spooled is stored exactly once, intact, and
//!   what it lost is within the documented window (the sink queue and the
//!   open batch), checked against its last scrape before the kill.
//!
//! Needs curl (tests/setup-test-deps.sh). `cargo test -p aitrail --test
//! reliability`.

// Test code (and the e2e helpers it shares, which e2e/main.rs allows the same).
#![allow(
    clippy::doc_markdown,
    clippy::too_many_lines,
    clippy::too_many_arguments,
    clippy::many_single_char_names,
    clippy::similar_names,
    clippy::needless_pass_by_value,
    clippy::duration_suboptimal_units,
    clippy::cast_precision_loss
)]

#[path = "../common/mod.rs"]
#[allow(unused_imports, reason = "the e2e helpers are not all used here")]
mod common;

use std::{
    collections::BTreeSet,
    fs::File,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aitrail::sinks::QUEUE_CAPACITY;
use common::{
    agent_config, aitrail_bin, free_port, make_cert, ndjson_by_id, scrape_agent, spooled,
    synth_recording, tail, wait_child, CollectorProc, Prom, TestDir, AGENT_TOKEN, API_TOKEN,
    METRICS_TOKEN,
};

/// `batch_max_events` of the test agent config: the open batch's bound.
const BATCH_MAX_EVENTS: u64 = 200;

fn replay(recording: &Path, config: &Path, log: &Path) -> Child {
    Command::new(aitrail_bin())
        .arg("replay")
        .arg(recording)
        .arg("--config")
        .arg(config)
        .env("AITRAIL_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("replay log"))
        .spawn()
        .expect("start aitrail replay")
}

/// Scrapes `port` every 100 ms until `child` exits; returns its status and
/// every scrape that answered.
fn scrape_until_exit(
    child: &mut Child,
    port: u16,
    limit: Duration,
) -> (std::process::ExitStatus, Vec<Prom>) {
    let start = Instant::now();
    let mut scrapes = Vec::new();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return (st, scrapes);
        }
        assert!(
            start.elapsed() < limit,
            "the replay did not end within {limit:?}"
        );
        if let Some(p) = scrape_agent(port) {
            scrapes.push(p);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn post(url: &str, ca: &Path, headers: &[&str]) -> u16 {
    let mut cmd = Command::new(common::curl());
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "20",
    ])
    .arg("--cacert")
    .arg(ca)
    .args(["-X", "POST", "--data-binary", "not a batch"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn metrics_of_the_daemon_and_the_collector_move_as_events_flow() {
    let dir = TestDir::new("metrics");
    let pki = make_cert(&dir);
    let collector = CollectorProc::start(&dir.path, "collector", &pki, free_port());
    let c0 = collector.scrape();
    assert_eq!(
        c0.n(
            "aitrail_collector_ingest_events_total",
            &[("result", "accepted")]
        ),
        0
    );

    // Refusals and failures, each counted by cause.
    let metrics_url = collector.url("/metrics");
    let no_token = common::curl_get(&metrics_url, Some(&collector.ca), None, None).unwrap();
    assert_eq!(no_token.status, 401);
    let api = common::curl_get(&metrics_url, Some(&collector.ca), Some(API_TOKEN), None).unwrap();
    assert_eq!(api.status, 401, "a query token does not open /metrics");
    let ingest = collector.url("/v1/ingest");
    assert_eq!(post(&ingest, &collector.ca, &[]), 401);
    let bearer = format!("Authorization: Bearer {AGENT_TOKEN}");
    assert_eq!(
        post(&ingest, &collector.ca, &[&bearer, "Content-Encoding: gzip"]),
        415
    );
    assert_eq!(
        post(
            &ingest,
            &collector.ca,
            &[&bearer, "Content-Encoding: zstd", "Idempotency-Key: b-1"]
        ),
        400,
        "not zstd"
    );
    // Plain HTTP to the HTTPS port: a failed handshake.
    assert!(common::curl_get(
        &format!("http://127.0.0.1:{}/", collector.port),
        None,
        None,
        None
    )
    .is_none_or(|g| g.status != 200));

    let recording = dir.join("work/synth.rec");
    synth_recording(&recording, 400);
    let events_file = dir.join("daemon/events.ndjson");
    let config = dir.join("daemon/agent.toml");
    let mport = free_port();
    agent_config(
        &config,
        &collector,
        Some(&events_file),
        &dir.join("daemon/spool"),
        mport,
        "shutdown_drain_ms = 30000",
    );
    let log = dir.join("daemon/replay.log");
    let mut child = replay(&recording, &config, &log);
    let (status, scrapes) = scrape_until_exit(&mut child, mport, Duration::from_mins(10));
    assert!(
        status.success(),
        "replay failed ({status}):\n{}",
        tail(&log, 4000)
    );
    assert!(
        scrapes.len() >= 2,
        "the daemon's /metrics answered {} times during the run",
        scrapes.len()
    );
    let sink = collector.sink();
    let s = |p: &Prom, name: &str| p.sum(name, &[("sink", sink.as_str())]);
    // Monotonic, and they moved.
    for w in scrapes.windows(2) {
        for name in [
            "aitrail_sink_lines_queued_total",
            "aitrail_sink_lines_written_total",
            "aitrail_ship_events_acked_total",
            "aitrail_ship_batches_acked_total",
        ] {
            assert!(s(&w[1], name) >= s(&w[0], name), "{name} went down");
        }
        assert!(
            w[1].sum("aitrail_agent_events_total", &[])
                >= w[0].sum("aitrail_agent_events_total", &[])
        );
    }
    let (first, last) = (&scrapes[0], &scrapes[scrapes.len() - 1]);
    assert!(
        s(last, "aitrail_ship_events_acked_total") > s(first, "aitrail_ship_events_acked_total"),
        "nothing was acked between the first and the last scrape"
    );
    assert!(last.n("aitrail_agent_records_total", &[("kind", "tls_chunk")]) > 0);
    assert!(last.n("aitrail_agent_events_total", &[("kind", "llm.call")]) > 0);
    assert!(last.n("aitrail_agent_events_total", &[("kind", "tool.call")]) > 0);
    assert_eq!(last.sum("aitrail_ship_events_dropped_total", &[]), 0);
    assert_eq!(last.sum("aitrail_sink_lines_dropped_total", &[]), 0);
    assert!(last.n("aitrail_ship_acked_bytes_total", &[("sink", &sink)]) > 0);

    let lines = ndjson_by_id(&events_file);
    let file_bytes = std::fs::metadata(&events_file).unwrap().len();
    let events = lines.len() as u64;
    assert!(s(last, "aitrail_sink_lines_queued_total") <= events);
    assert!(
        s(last, "aitrail_sink_lines_written_total") > 0,
        "the last scrape saw nothing spooled"
    );

    let c = collector.scrape();
    eprintln!(
        "{} scrapes of the daemon; {events} events; collector: {}",
        scrapes.len(),
        c.text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let accepted = c.n(
        "aitrail_collector_ingest_events_total",
        &[("result", "accepted")],
    );
    assert_eq!(
        accepted, events,
        "every event the daemon wrote was accepted"
    );
    assert_eq!(
        c.n(
            "aitrail_collector_ingest_events_total",
            &[("result", "invalid")]
        ),
        0
    );
    let acked = c.n("aitrail_collector_ingest_batches_acked_total", &[]);
    assert_eq!(
        c.n(
            "aitrail_collector_http_requests_total",
            &[("route", "ingest"), ("status", "200")]
        ),
        acked
    );
    assert!(acked >= s(last, "aitrail_ship_batches_acked_total"));
    assert_eq!(
        c.n("aitrail_collector_ingest_decompressed_bytes_total", &[]),
        file_bytes,
        "the batches hold exactly the NDJSON the file sink got"
    );
    let compressed = c.n("aitrail_collector_ingest_received_bytes_total", &[]);
    assert!(
        compressed > 0 && compressed < file_bytes / 3,
        "{compressed} of {file_bytes}"
    );
    for (cause, n) in [
        ("unauthorized", 1),
        ("unsupported_encoding", 1),
        ("not_zstd", 1),
        ("rate_limited", 0),
        ("body_too_large", 0),
    ] {
        assert_eq!(
            c.n(
                "aitrail_collector_ingest_refused_total",
                &[("cause", cause)]
            ),
            n,
            "refusals by {cause}"
        );
    }
    assert_eq!(
        c.n(
            "aitrail_collector_http_requests_total",
            &[("route", "metrics"), ("status", "401")]
        ),
        2
    );
    assert!(
        c.n(
            "aitrail_collector_tls_handshake_failures_total",
            &[("cause", "error")]
        ) >= 1,
        "the plain-HTTP connection is a failed handshake"
    );
    // OpenMetrics on request.
    let om = common::curl_get(
        &metrics_url,
        Some(&collector.ca),
        Some(METRICS_TOKEN),
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .unwrap();
    assert!(om.content_type.starts_with("application/openmetrics-text"));
    assert!(om.body.ends_with("# EOF\n"));
    let mut collector = collector;
    collector.stop();
    assert_eq!(collector.stored().len() as u64, events);
}

/// Oracle test (2) with the real binary: kill -9 under load, restart on the
/// same spool.
#[test]
fn a_daemon_killed_under_load_restarts_on_its_spool_and_loses_only_its_window() {
    let dir = TestDir::new("kill9");
    let pki = make_cert(&dir);
    // The collector is down at first, so a backlog builds in the spool.
    let mut collector = CollectorProc::configure(&dir.path, "collector", &pki, free_port());
    let spool = dir.join("daemon/spool");
    let recording = dir.join("work/synth.rec");
    synth_recording(&recording, 3000);
    let run1_file = dir.join("daemon/run1.ndjson");
    let config1 = dir.join("daemon/agent1.toml");
    let m1 = free_port();
    agent_config(
        &config1,
        &collector,
        Some(&run1_file),
        &spool,
        m1,
        "shutdown_drain_ms = 1000",
    );
    let log1 = dir.join("daemon/run1.log");
    let mut run1 = replay(&recording, &config1, &log1);
    let sink = collector.sink();
    let scrape = |child: &mut Child| -> Prom {
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "the daemon ended ({st}) before the kill:\n{}",
                    tail(&log1, 3000)
                );
            }
            if let Some(p) = scrape_agent(m1) {
                return p;
            }
            assert!(start.elapsed() < Duration::from_mins(2), "no /metrics");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let until = |child: &mut Child, what: &str, cond: &dyn Fn(&Prom) -> bool| -> Prom {
        let start = Instant::now();
        loop {
            let p = scrape(child);
            if cond(&p) {
                return p;
            }
            assert!(
                start.elapsed() < Duration::from_mins(10),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let n = |p: &Prom, name: &str| p.n(name, &[("sink", sink.as_str())]);
    until(&mut run1, "a backlog in the spool", &|p| {
        n(p, "aitrail_ship_events_spooled_total") >= 2000
            && n(p, "aitrail_ship_batches_retried_total") > 0
    });
    collector.restart();
    // Under load: the pipeline is still producing, the sender is working
    // through the backlog.
    let last = until(&mut run1, "acks and a spool still holding segments", &|p| {
        n(p, "aitrail_ship_events_acked_total") >= 600 && n(p, "aitrail_ship_spool_segments") >= 2
    });
    let pid = libc::pid_t::try_from(run1.id()).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let st = wait_child(&mut run1, Duration::from_secs(30), "the killed daemon");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL)
    );
    // What the daemon said it had, at its last scrape before the kill.
    let accepted = n(&last, "aitrail_sink_lines_queued_total");
    let written = n(&last, "aitrail_sink_lines_written_total");
    let dropped = n(&last, "aitrail_sink_lines_dropped_total");
    let window = accepted - written - dropped;
    let bound = QUEUE_CAPACITY as u64 + BATCH_MAX_EVENTS;
    assert!(
        window <= bound,
        "{window} events were accepted but not spooled (bound {bound})"
    );
    assert_eq!(dropped, 0);
    assert_eq!(last.sum("aitrail_ship_events_dropped_total", &[]), 0);

    // The oracle's inputs: what was stored before the kill, what the spool
    // holds, what the file sink saw.
    collector.stop();
    let stored_at_kill = collector.stored();
    let (in_spool, torn) = spooled(&spool);
    let run1_lines = ndjson_by_id(&run1_file);
    assert!(!in_spool.is_empty(), "the kill left nothing in the spool");
    let mut run1_ids: BTreeSet<&String> = stored_at_kill.keys().collect();
    run1_ids.extend(in_spool.keys());
    assert!(
        run1_ids.len() as u64 >= written,
        "spooled at the last scrape: {written}; stored or in the spool after the kill: {}",
        run1_ids.len()
    );
    for (id, line) in in_spool.iter().chain(&stored_at_kill) {
        if let Some(l) = run1_lines.get(id) {
            assert_eq!(l, line, "{id} altered");
        }
    }
    for (id, line) in &in_spool {
        if let Some(s) = stored_at_kill.get(id) {
            assert_eq!(
                s, line,
                "{id}: the spooled copy differs from the stored one"
            );
        }
    }

    // Restart: the same spool, a small recording of its own.
    collector.restart();
    let small = dir.join("work/small.rec");
    synth_recording(&small, 20);
    let run2_file = dir.join("daemon/run2.ndjson");
    let config2 = dir.join("daemon/agent2.toml");
    let m2 = free_port();
    agent_config(
        &config2,
        &collector,
        Some(&run2_file),
        &spool,
        m2,
        "shutdown_drain_ms = 60000",
    );
    let log2 = dir.join("daemon/run2.log");
    let mut run2 = replay(&small, &config2, &log2);
    let (st2, scrapes2) = scrape_until_exit(&mut run2, m2, Duration::from_mins(10));
    assert!(
        st2.success(),
        "the restarted daemon failed ({st2}):\n{}",
        tail(&log2, 4000)
    );
    if let Some(p) = scrapes2.last() {
        assert_eq!(
            p.n(
                "aitrail_ship_segments_torn_total",
                &[("sink", sink.as_str())]
            ),
            torn as u64,
            "the torn segments the kill left are counted at the start"
        );
    }
    let c = collector.scrape();
    collector.stop();
    let fin = collector.stored();
    let run2_lines = ndjson_by_id(&run2_file);
    assert!(!run2_lines.is_empty());

    // Every event stored before the kill or left in the spool, and every
    // event of the second run, is stored once and intact; nothing else is.
    for (id, line) in stored_at_kill.iter().chain(&in_spool).chain(&run2_lines) {
        let got = fin
            .get(id)
            .unwrap_or_else(|| panic!("{id} was spooled or stored but is not in the store"));
        assert_eq!(got, line, "{id} altered");
    }
    let known: BTreeSet<&String> = run1_ids.iter().copied().chain(run2_lines.keys()).collect();
    assert_eq!(
        fin.len(),
        known.len(),
        "the store holds events nobody spooled"
    );
    assert_eq!(
        c.n(
            "aitrail_collector_ingest_events_total",
            &[("result", "accepted")]
        ),
        (fin.len() - stored_at_kill.len()) as u64,
        "accepted since the collector's restart"
    );
    let left = std::fs::read_dir(&spool)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert_eq!(left, 0, "the spool is empty once everything is acked");

    let stored_run1 = run1_ids.len() as u64;
    let seen_by_file = run1_lines.len() as u64;
    let lost_seen = run1_lines
        .keys()
        .filter(|id| !run1_ids.contains(id))
        .count();
    eprintln!(
        "kill -9: at the last scrape the daemon had accepted {accepted} events for the collector, \
         spooled {written} (window {window}, bound {bound}); after the kill {} were stored and {} \
         in the spool ({torn} torn .tmp); after the restart {stored_run1} of run 1 are stored \
         once each; the file sink had {seen_by_file}, of which {lost_seen} never reached a segment \
         (the loss window); duplicates dropped by the collector after the restart: {}",
        stored_at_kill.len(),
        in_spool.len(),
        c.n(
            "aitrail_collector_ingest_events_total",
            &[("result", "duplicate")]
        ),
    );
    assert!(
        lost_seen as u64 <= bound,
        "{lost_seen} events seen by the file sink were lost (bound {bound})"
    );
}
