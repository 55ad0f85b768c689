//! Shipping end to end, in-process: the agent's collector sink (spool +
//! sender) against a real collector over TLS on 127.0.0.1, with test
//! certificates. Each test checks the oracle: every event the sinks
//! accepted is in the store exactly once, byte for byte — or, where the
//! spool had to drop, every stored event was sent, once, intact, and every
//! event not stored is counted as dropped.

mod pki;
mod refusals;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use aitrail::{
    event::{kind, Event, FileInfo, FindingInfo, Host, LlmCall, Message, Output, Severity},
    ship::{spool::FsyncPolicy, CollectorSection, CollectorSpec, ShipStats},
    sinks::{SinkSpec, SinkStats, Sinks},
};
use aitrail_collector::{config::LimitsSection, Collector, Config, Running, Store};

pub const TOKEN: &str = "agent-1-token-0123456789";
pub const API_TOKEN: &str = "api-token-0123456789abcdef";
pub const METRICS_TOKEN: &str = "metrics-token-0123456789";

pub fn collector_config(pki: &pki::Pki, store: &Path, listen: SocketAddr) -> Config {
    Config {
        listen,
        tls_cert: pki.server_cert.clone(),
        tls_key: pki.server_key.clone(),
        client_ca: None,
        agent_tokens: [(TOKEN.to_owned(), "agent-1".to_owned())].into(),
        limits: LimitsSection::default(),
        store_dir: store.to_owned(),
        retention: None,
        retention_interval: Duration::from_hours(1),
        api_tokens: vec![API_TOKEN.to_owned()],
        forward: Vec::new(),
        metrics_tokens: vec![METRICS_TOKEN.to_owned()],
    }
}

pub fn start_collector(pki: &pki::Pki, store: &Path, listen: SocketAddr) -> Running {
    Collector::start_in_thread(collector_config(pki, store, listen)).expect("collector starts")
}

/// A collector sink for `port`, with small batches and quick retries.
pub fn sink(
    pki: &pki::Pki,
    port: u16,
    spool: &Path,
    tune: impl FnOnce(&mut CollectorSection),
) -> SinkSpec {
    let mut spec = CollectorSpec::from_url(&format!("https://127.0.0.1:{port}")).unwrap();
    spec.settings = CollectorSection {
        token: Some(TOKEN.to_owned()),
        ca_file: Some(pki.ca.clone()),
        batch_max_events: 200,
        batch_max_bytes: 256 * 1024,
        batch_max_wait_ms: 100,
        spool_dir: spool.to_owned(),
        spool_max_bytes: 64 * 1024 * 1024,
        fsync: FsyncPolicy::Segment,
        retry_max_ms: 400,
        shutdown_drain_ms: 15_000,
        timeout_ms: 5000,
        ..CollectorSection::default()
    };
    tune(&mut spec.settings);
    SinkSpec::Collector(Box::new(spec))
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Event `n` of a test run `run`: an LLM call, a file open, or (when
/// `finding`) a finding citing the previous event.
pub fn event(run: &str, n: usize, finding: bool) -> Event {
    let mut ev = Event {
        v: aitrail::event::SCHEMA_VERSION,
        id: format!("{run}-{n:06}"),
        time: format!("2026-11-27T12:{:02}:{:02}.{n:09}Z", (n / 60) % 60, n % 60),
        host: Host {
            name: "host-a".into(),
            id: "b00t".into(),
        },
        trace_id: format!("{:032x}", n / 10),
        span_id: format!("{n:016x}"),
        ..Event::default()
    };
    if finding {
        ev.kind = kind::FINDING.into();
        ev.severity = Severity::High;
        ev.finding = Some(FindingInfo {
            rule: "inj.override".into(),
            title: "Prompt injection: override".into(),
            evidence: vec![format!("{run}-{:06}", n.saturating_sub(1))],
            ..FindingInfo::default()
        });
    } else if n.is_multiple_of(2) {
        ev.kind = kind::LLM_CALL.into();
        ev.llm = Some(LlmCall {
            provider: "openai".into(),
            operation: "chat".into(),
            path: "/v1/chat/completions".into(),
            model: Some("gpt-4o-mini".into()),
            messages: vec![Message {
                role: "user".into(),
                content: format!("Résume le fichier n°{n} — \"quoted\"\nand a second line"),
                ..Message::default()
            }],
            output: Output {
                text: format!("Here is the summary of file {n}."),
                ..Output::default()
            },
            ..LlmCall::default()
        });
    } else {
        ev.kind = kind::FILE_OPEN.into();
        ev.file = Some(FileInfo {
            path: format!("/home/alice/project/src/module_{n}.rs"),
            flags: vec!["O_RDONLY".into(), "O_CLOEXEC".into()],
            result: 3,
            error: None,
        });
    }
    ev
}

pub fn events(run: &str, count: usize, finding_every: usize) -> Vec<Event> {
    (0..count)
        .map(|n| {
            event(
                run,
                n,
                finding_every > 0 && n % finding_every == finding_every - 1,
            )
        })
        .collect()
}

fn stored(store: &Store) -> HashMap<String, String> {
    let mut by_id = HashMap::new();
    for (id, body) in store.all().unwrap() {
        assert!(
            by_id.insert(id.clone(), body).is_none(),
            "{id} stored twice"
        );
    }
    by_id
}

/// The oracle: each sent event is stored exactly once, byte for byte as
/// the sink serialised it, and nothing else is stored.
pub fn assert_all_delivered(store: &Store, sent: &[Event]) {
    let by_id = stored(store);
    for ev in sent {
        let body = by_id
            .get(&ev.id)
            .unwrap_or_else(|| panic!("event {} was accepted but is not in the store", ev.id));
        assert_eq!(
            *body,
            serde_json::to_string(ev).unwrap(),
            "{} altered",
            ev.id
        );
        assert_eq!(store.count_id(&ev.id).unwrap(), 1);
    }
    assert_eq!(
        by_id.len(),
        sent.len(),
        "the store holds events nobody sent"
    );
}

/// The oracle where drops are allowed: every stored event was sent and is
/// intact; returns the ids stored.
pub fn assert_stored_are_intact(store: &Store, sent: &[Event]) -> Vec<String> {
    let by_id = stored(store);
    let sent: HashMap<&str, &Event> = sent.iter().map(|e| (e.id.as_str(), e)).collect();
    for (id, body) in &by_id {
        let ev = sent
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{id} stored but never sent"));
        assert_eq!(*body, serde_json::to_string(ev).unwrap(), "{id} altered");
    }
    by_id.into_keys().collect()
}

pub fn ship_stats(stats: &SinkStats) -> ShipStats {
    stats.sinks[0].ship.clone().expect("a collector sink")
}

pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_event_is_delivered_once_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::Pki::new(dir.path());
    let collector = start_collector(&pki, &dir.path().join("store"), addr(0));
    let spec = sink(
        &pki,
        collector.addr.port(),
        &dir.path().join("spool"),
        |_| {},
    );
    let sent = events("basic", 5000, 50);
    let sinks = Sinks::start(&[spec]).unwrap();
    let start = Instant::now();
    for ev in &sent {
        sinks.send(ev);
    }
    let stats = sinks.shutdown().unwrap();
    let took = start.elapsed();
    assert_all_delivered(collector.store(), &sent);
    let s = &stats.sinks[0];
    let ship = ship_stats(&stats);
    assert_eq!((s.lines_written, s.lines_dropped), (5000, 0));
    assert_eq!(ship.spool.events_acked, 5000);
    assert_eq!(ship.spool.segments_now, 0, "the spool is empty once acked");
    assert_eq!(ship.events_dropped(), 0);
    assert_eq!(stats.lines_dropped(), 0);
    assert!(ship.batches_acked >= 25, "batches of ≤ 200 events");
    // Every segment file is gone from the spool.
    let left = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count();
    assert_eq!(left, 0);
    #[expect(clippy::cast_precision_loss, reason = "a ratio for the log")]
    let ratio = s.bytes_written as f64 / ship.bytes_acked as f64;
    eprintln!(
        "shipped 5000 events ({} B NDJSON, {} B zstd, ratio {ratio:.1}) in {took:?} (debug build)",
        s.bytes_written, ship.bytes_acked
    );
}

fn collector_outage(outage: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::Pki::new(dir.path());
    let store_dir = dir.path().join("store");
    let collector = start_collector(&pki, &store_dir, addr(0));
    let port = collector.addr.port();
    let spec = sink(&pki, port, &dir.path().join("spool"), |_| {});
    let sinks = Sinks::start(&[spec]).unwrap();
    // Steady load: ~1000 events/s before, during and after the outage.
    let total = (usize::try_from(outage.as_secs()).unwrap() + 2) * 1000;
    let sent = events("outage", total, 100);
    let mut chunks = sent.chunks(100);
    let mut send_for = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            let Some(chunk) = chunks.next() else { return };
            for ev in chunk {
                sinks.send(ev);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    send_for(Duration::from_secs(1));
    collector.stop();
    send_for(outage);
    let during = ship_stats(&sinks.stats());
    assert!(during.spool.segments_now > 0, "batches wait in the spool");
    assert!(during.batches_retried > 0, "sends failed and are retried");
    let collector = start_collector(&pki, &store_dir, addr(port));
    // Until every event was sent.
    send_for(Duration::from_mins(10));
    let stats = sinks.shutdown().unwrap();
    assert_all_delivered(collector.store(), &sent);
    let ship = ship_stats(&stats);
    assert_eq!(ship.events_dropped(), 0);
    assert_eq!(ship.spool.segments_now, 0);
    eprintln!("outage of {outage:?}: {ship:?}");
}

/// Oracle test (1), shortened: the collector is down for 3 s (the issue
/// says 60 s: see the ignored test below) under steady load.
#[test]
fn collector_down_for_3s_under_load_loses_nothing() {
    collector_outage(Duration::from_secs(3));
}

/// Oracle test (1) at full length: 60 s of outage. `cargo test -- --ignored`.
#[test]
#[ignore = "long: 60 s outage"]
fn collector_down_for_60s_under_load_loses_nothing() {
    collector_outage(Duration::from_mins(1));
}

/// Oracle test (2): the sender stops with a full spool (collector
/// unreachable, drain cut short), a crash leaves a torn `.tmp` and an acked
/// segment that was not deleted; the next start delivers everything
/// spooled, once.
#[test]
fn a_restarted_sender_delivers_what_was_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::Pki::new(dir.path());
    let spool = dir.path().join("spool");
    let port = free_port();
    let first = events("restart-a", 3000, 30);
    let sinks = Sinks::start(&[sink(&pki, port, &spool, |s| s.shutdown_drain_ms = 100)]).unwrap();
    for ev in &first {
        sinks.send(ev);
    }
    let stats = sinks.shutdown().unwrap();
    let ship = ship_stats(&stats);
    assert_eq!(ship.spool.events_written, 3000);
    assert_eq!(ship.spool.events_acked, 0);
    assert!(ship.spool.segments_now >= 15);
    // What a kill -9 mid-write leaves: a torn temp file (its lines were
    // never acknowledged to the pipeline as written).
    std::fs::write(spool.join("99999999999999999999.tmp"), b"torn").unwrap();

    let collector = start_collector(&pki, &dir.path().join("store"), addr(port));
    // Deliver the oldest segment by hand as a sender would, and keep its
    // file, as if the process died between the ack and the delete.
    let oldest = std::fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .min()
        .unwrap();
    refusals::post_segment(&pki, port, &oldest);
    let already = collector.store().count().unwrap();
    assert!(already > 0);

    let second = events("restart-b", 500, 0);
    let sinks = Sinks::start(&[sink(&pki, port, &spool, |_| {})]).unwrap();
    for ev in &second {
        sinks.send(ev);
    }
    let stats = sinks.shutdown().unwrap();
    let ship = ship_stats(&stats);
    assert_eq!(ship.spool.segments_torn, 1);
    assert_eq!(
        ship.events_duplicate, already,
        "the resent batch is deduplicated"
    );
    assert_eq!(ship.spool.segments_now, 0);
    let all: Vec<Event> = first.into_iter().chain(second).collect();
    assert_all_delivered(collector.store(), &all);
}

/// Oracle test (3): the collector is away and the spool (a byte limit, not
/// a tmpfs) fills: no crash, the oldest batches without findings are
/// dropped and counted, every finding is delivered.
#[test]
fn a_full_spool_drops_counted_events_and_keeps_findings() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki::Pki::new(dir.path());
    let spool = dir.path().join("spool");
    let port = free_port();
    let sent = events("full", 6000, 400);
    let findings: Vec<&Event> = sent.iter().filter(|e| e.kind == kind::FINDING).collect();
    let tune = |s: &mut CollectorSection| {
        s.batch_max_events = 100;
        s.batch_max_bytes = 32 * 1024;
        s.spool_max_bytes = 96 * 1024;
        s.shutdown_drain_ms = 100;
    };
    let sinks = Sinks::start(&[sink(&pki, port, &spool, tune)]).unwrap();
    for ev in &sent {
        sinks.send(ev);
    }
    let stats = sinks.shutdown().unwrap();
    let ship = ship_stats(&stats);
    assert_eq!(
        stats.sinks[0].lines_written, 6000,
        "every batch was spooled"
    );
    assert!(ship.spool.dropped_full > 0, "the spool filled");
    assert_eq!(ship.spool.findings_dropped, 0);
    assert!(ship.spool.bytes_now <= 96 * 1024);
    assert_eq!(stats.lines_dropped(), ship.spool.dropped_full);

    let collector = start_collector(&pki, &dir.path().join("store"), addr(port));
    let drain = |s: &mut CollectorSection| {
        tune(s);
        s.shutdown_drain_ms = 15_000;
    };
    let sinks = Sinks::start(&[sink(&pki, port, &spool, drain)]).unwrap();
    let stats = sinks.shutdown().unwrap();
    assert_eq!(ship_stats(&stats).spool.segments_now, 0);
    let stored = assert_stored_are_intact(collector.store(), &sent);
    for f in &findings {
        assert!(stored.contains(&f.id), "finding {} lost", f.id);
    }
    assert_eq!(
        stored.len() as u64 + ship.spool.dropped_full,
        6000,
        "every event is either stored or counted as dropped"
    );
}
