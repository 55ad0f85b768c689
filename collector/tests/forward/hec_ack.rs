//! Splunk HEC with indexer acknowledgment (`use_ack = true`) against a mock
//! written from Splunk's documentation of the protocol ("About HTTP Event
//! Collector Indexer Acknowledgment", Splunk Enterprise Getting Data In):
//!
//! - every request needs `X-Splunk-Request-Channel: <GUID>` (else 400
//!   code 10, "Data channel is missing"; not a GUID: 400 code 11);
//! - a batch is answered `{"text":"Success","code":0,"ackId":N}`, ack ids
//!   counting from 0 per channel;
//! - `POST /services/collector/ack` with `{"acks":[N,…]}` answers
//!   `{"acks":{"N":bool,…}}`: true once the batch is indexed, and an id
//!   answered true is forgotten (asked again: false);
//! - a channel HEC does not know (after a restart) is 400 code 11,
//!   "Invalid data channel".
//!
//! The mock's indexer writes a batch `delay` after it arrived (acks come
//! late), can lose a batch (its ack never turns true), can hold every batch
//! unindexed, and can restart (forget every channel and ack; what was not
//! indexed yet is lost). It records how many times each event id was
//! indexed: the oracle.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hyper::StatusCode;
use serde_json::{json, Value};

use crate::{
    inprocess::{self, counters, stored_ids, wait_until},
    mock,
    pki::Pki,
    support,
};

const TOKEN: &str = "0e2b7a51-4c8d-4f6a-9b1e-73d5c2a9f104";

struct Pending {
    arrived: Instant,
    ids: Vec<String>,
    /// Lost by the indexer: never written, the ack never true.
    lost: bool,
    indexed: bool,
}

#[derive(Default)]
struct Channel {
    next: u64,
    pending: HashMap<u64, Pending>,
}

#[derive(Default)]
struct Hec {
    channels: Mutex<HashMap<String, Channel>>,
    /// Event id → times indexed.
    indexed: Mutex<HashMap<String, u32>>,
    /// Batches received (whole requests accepted).
    batches: AtomicU64,
    events_received: AtomicU64,
    ack_queries: AtomicU64,
    acks_false: AtomicU64,
    acks_true: AtomicU64,
    /// Answers 400 code 11 to ack queries (unknown channel).
    invalid_channel: AtomicU64,
    delay_ms: AtomicU64,
    /// The indexer writes nothing while set.
    hold: AtomicBool,
    /// Batch numbers (1-based, over the mock's life) the indexer loses.
    lose: Mutex<HashSet<u64>>,
    /// Index the next batch at once, then restart (its ack is lost, its
    /// data is not).
    restart_after_next: AtomicBool,
    problems: Mutex<Vec<String>>,
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Hec {
    /// The indexer's work up to now: batches past their delay are written.
    fn settle(&self, channels: &mut HashMap<String, Channel>) {
        if self.hold.load(Ordering::Relaxed) {
            return;
        }
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::Relaxed));
        let mut indexed = self.indexed.lock().unwrap();
        for ch in channels.values_mut() {
            for p in ch.pending.values_mut() {
                if !p.indexed && !p.lost && p.arrived.elapsed() >= delay {
                    p.indexed = true;
                    for id in &p.ids {
                        *indexed.entry(id.clone()).or_default() += 1;
                    }
                }
            }
        }
    }

    /// Splunk restarts: every channel and ack is forgotten; batches not
    /// written yet are lost.
    fn restart(&self) {
        let mut channels = self.channels.lock().unwrap();
        self.settle(&mut channels);
        channels.clear();
    }

    fn times_indexed(&self) -> HashMap<String, u32> {
        let mut channels = self.channels.lock().unwrap();
        self.settle(&mut channels);
        drop(channels);
        self.indexed.lock().unwrap().clone()
    }

    fn problem(&self, p: String) {
        self.problems.lock().unwrap().push(p);
    }

    fn handle(&self, parts: &hyper::http::request::Parts, body: &[u8]) -> (StatusCode, String) {
        let err = |status, text: &str, code: u32| {
            (status, json!({"text": text, "code": code}).to_string())
        };
        if parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            != Some(format!("Splunk {TOKEN}").as_str())
        {
            self.problem(format!("{}: bad authorization", parts.uri));
            return err(StatusCode::UNAUTHORIZED, "Invalid authorization", 3);
        }
        let Some(channel) = parts
            .headers
            .get("x-splunk-request-channel")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            self.problem(format!("{}: no channel", parts.uri));
            return err(StatusCode::BAD_REQUEST, "Data channel is missing", 10);
        };
        if !is_guid(&channel) {
            self.problem(format!("channel {channel:?} is not a GUID"));
            return err(StatusCode::BAD_REQUEST, "Invalid data channel", 11);
        }
        let mut channels = self.channels.lock().unwrap();
        self.settle(&mut channels);
        match parts.uri.path() {
            "/services/collector/event" => {
                let mut ids = Vec::new();
                for obj in serde_json::Deserializer::from_slice(body).into_iter::<Value>() {
                    let Ok(obj) = obj else {
                        return err(StatusCode::BAD_REQUEST, "Invalid data format", 6);
                    };
                    let Some(id) = obj["event"]["id"].as_str() else {
                        return err(StatusCode::BAD_REQUEST, "Event field is required", 12);
                    };
                    ids.push(id.to_owned());
                }
                if ids.is_empty() {
                    return err(StatusCode::BAD_REQUEST, "No data", 5);
                }
                let n = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
                self.events_received
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
                let ch = channels.entry(channel).or_default();
                let ack_id = ch.next;
                ch.next += 1;
                if self.restart_after_next.swap(false, Ordering::Relaxed) {
                    // Written at once; then the restart forgets the ack.
                    let mut indexed = self.indexed.lock().unwrap();
                    for id in ids {
                        *indexed.entry(id).or_default() += 1;
                    }
                    channels.clear();
                } else {
                    ch.pending.insert(
                        ack_id,
                        Pending {
                            arrived: Instant::now(),
                            ids,
                            lost: self.lose.lock().unwrap().contains(&n),
                            indexed: false,
                        },
                    );
                }
                (
                    StatusCode::OK,
                    json!({"text": "Success", "code": 0, "ackId": ack_id}).to_string(),
                )
            }
            "/services/collector/ack" => self.ack_query(&mut channels, &channel, body),
            other => {
                self.problem(format!("path {other}"));
                (
                    StatusCode::NOT_FOUND,
                    r#"{"text":"The requested URL was not found on this server.","code":404}"#
                        .into(),
                )
            }
        }
    }

    /// `POST /services/collector/ack`.
    fn ack_query(
        &self,
        channels: &mut HashMap<String, Channel>,
        channel: &str,
        body: &[u8],
    ) -> (StatusCode, String) {
        let err = |status, text: &str, code: u32| {
            (status, json!({"text": text, "code": code}).to_string())
        };
        self.ack_queries.fetch_add(1, Ordering::Relaxed);
        let Ok(q) = serde_json::from_slice::<Value>(body) else {
            self.problem("ack query body is not JSON".into());
            return err(StatusCode::BAD_REQUEST, "Invalid data format", 6);
        };
        let Some(wanted) = q["acks"].as_array().filter(|a| a.iter().all(Value::is_u64)) else {
            self.problem(format!("ack query body {q}"));
            return err(StatusCode::BAD_REQUEST, "Invalid data format", 6);
        };
        let Some(ch) = channels.get_mut(channel) else {
            self.invalid_channel.fetch_add(1, Ordering::Relaxed);
            return err(StatusCode::BAD_REQUEST, "Invalid data channel", 11);
        };
        let mut answer = serde_json::Map::new();
        for id in wanted.iter().filter_map(Value::as_u64) {
            let done = ch.pending.get(&id).is_some_and(|p| p.indexed);
            if done {
                // Answered true once, then forgotten.
                ch.pending.remove(&id);
                self.acks_true.fetch_add(1, Ordering::Relaxed);
            } else {
                self.acks_false.fetch_add(1, Ordering::Relaxed);
            }
            answer.insert(id.to_string(), Value::Bool(done));
        }
        (StatusCode::OK, json!({ "acks": answer }).to_string())
    }
}

fn forwarder(pki: &Pki, port: u16) -> String {
    format!(
        r#"
[[forward]]
name = "splunk"
type = "splunk_hec"
url = "https://127.0.0.1:{port}"
token = "{TOKEN}"
ca_file = "{ca}"
batch_max_events = 20
batch_max_wait_ms = 100
retry_max_ms = 300
timeout_ms = 2000
use_ack = true
ack_poll_ms = 100
ack_timeout_ms = 1500
"#,
        ca = pki.ca.display()
    )
}

fn lines(range: std::ops::Range<usize>) -> Vec<(usize, String)> {
    range.map(|i| (i, support::event(i).to_string())).collect()
}

fn cursor(c: &aitrail_collector::Running) -> i64 {
    c.store().forward_state("splunk").unwrap().unwrap().cursor
}

/// Every stored event indexed; returns how many were indexed twice or
/// more (the duplicates), and fails on a third copy.
fn check_indexed(hec: &Hec, store: &std::path::Path) -> u64 {
    let indexed = hec.times_indexed();
    let stored = stored_ids(store);
    for id in stored.keys() {
        assert!(indexed.contains_key(id), "{id} stored but never indexed");
    }
    assert_eq!(
        indexed.len(),
        stored.len(),
        "indexed ids that are not stored"
    );
    indexed
        .values()
        .map(|&n| {
            assert!(n <= 2, "an event indexed {n} times");
            u64::from(n - 1)
        })
        .sum()
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

const LIMIT: Duration = Duration::from_mins(1);

struct Ctx {
    _dir: tempfile::TempDir,
    pki: Pki,
    store: std::path::PathBuf,
    hec: Arc<Hec>,
    rt: tokio::runtime::Runtime,
}

impl Ctx {
    fn ingest(&self, c: &aitrail_collector::Running, range: std::ops::Range<usize>) {
        inprocess::ingest(&self.rt, &self.pki, c, &lines(range));
    }

    /// Ingests `range` (one batch) and waits until HEC received it.
    fn ingest_received(&self, c: &aitrail_collector::Running, range: std::ops::Range<usize>) {
        let before = get(&self.hec.events_received);
        let n = (range.end - range.start) as u64;
        self.ingest(c, range);
        wait_until("the batch received", LIMIT, || {
            get(&self.hec.events_received) >= before + n
        });
    }
}

/// Late acks and a lost batch: 200 events, 10 batches.
fn late_and_lost(x: &Ctx, c: &aitrail_collector::Running) {
    x.ingest(c, 0..200);
    wait_until("200 events indexed", LIMIT, || {
        x.hec.times_indexed().len() == 200
    });
    wait_until("cursor at the newest event", LIMIT, || cursor(c) == 200);
    let k = counters(c, "splunk");
    assert_eq!(get(&k.ack_timeouts), 1, "the lost batch timed out once");
    assert_eq!(get(&k.events_resent), 20, "and its 20 events were resent");
    assert!(
        get(&x.hec.acks_false) >= 10,
        "acks came late: {} false answers",
        get(&x.hec.acks_false)
    );
    assert_eq!(get(&k.acks_confirmed), get(&x.hec.acks_true));
    assert_eq!(get(&k.events_sent), 200);
    assert_eq!(
        check_indexed(&x.hec, &x.store),
        0,
        "a lost batch is not a duplicate"
    );
}

/// Received but not indexed: the cursor does not move. Then Splunk
/// restarts: the held batch was not written and every ack is forgotten;
/// the forwarder's next poll is refused (code 11) and the batch goes again
/// (HEC makes the channel again on the next event request).
fn held_then_splunk_restarts(x: &Ctx, c: &aitrail_collector::Running) {
    let k = counters(c, "splunk");
    x.hec.hold.store(true, Ordering::Relaxed);
    x.ingest_received(c, 200..220);
    let polls = get(&k.ack_polls);
    wait_until("ack polls while held", LIMIT, || {
        get(&k.ack_polls) >= polls + 3
    });
    assert_eq!(cursor(c), 200, "cursor moved before HEC confirmed the ack");
    x.hec.restart();
    x.hec.hold.store(false, Ordering::Relaxed);
    x.ingest(c, 220..240);
    wait_until("240 events indexed", LIMIT, || {
        x.hec.times_indexed().len() == 240
    });
    wait_until("cursor at 240", LIMIT, || cursor(c) == 240);
    assert!(get(&k.acks_lost) >= 1, "the restart lost an ack");
    assert!(get(&x.hec.invalid_channel) >= 1);
    assert_eq!(check_indexed(&x.hec, &x.store), 0);
}

/// Indexed, then Splunk restarts before the ack is asked for: the ack is
/// lost but the data is not; the batch is sent again: one batch of
/// duplicates, counted.
fn indexed_then_ack_lost(x: &Ctx, c: &aitrail_collector::Running) {
    let k = counters(c, "splunk");
    let resent = get(&k.events_resent);
    x.hec.restart_after_next.store(true, Ordering::Relaxed);
    x.ingest(c, 240..260);
    wait_until("cursor at 260", LIMIT, || cursor(c) == 260);
    assert_eq!(
        check_indexed(&x.hec, &x.store),
        20,
        "one batch indexed twice"
    );
    assert_eq!(get(&k.events_resent) - resent, 20, "and counted as resent");
    eprintln!(
        "hec_ack: batches received {}, ack queries {} ({} false, {} true, {} unknown channel); \
         forwarder: ack_polls {}, acks_confirmed {}, ack_timeouts {}, acks_lost {}, events_resent {}, \
         batches_retried {}",
        get(&x.hec.batches),
        get(&x.hec.ack_queries),
        get(&x.hec.acks_false),
        get(&x.hec.acks_true),
        get(&x.hec.invalid_channel),
        get(&k.ack_polls),
        get(&k.acks_confirmed),
        get(&k.ack_timeouts),
        get(&k.acks_lost),
        get(&k.events_resent),
        get(&k.batches_retried),
    );
}

#[test]
fn hec_ack_cursor_moves_only_on_confirmed_acks() {
    let dir = tempfile::tempdir().unwrap();
    let hec = Arc::new(Hec::default());
    hec.delay_ms.store(400, Ordering::Relaxed);
    // The third batch is lost inside "Splunk": received, never indexed.
    hec.lose.lock().unwrap().insert(3);
    let x = Ctx {
        pki: Pki::new(dir.path()),
        store: dir.path().join("store"),
        _dir: dir,
        hec,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
    };
    let server = {
        let hec = Arc::clone(&x.hec);
        mock::serve(Some(&x.pki), Arc::new(move |p, b| hec.handle(p, b)))
    };
    let cfg = inprocess::config(&x.pki, &x.store, &forwarder(&x.pki, server.addr.port()));
    let c = inprocess::start(&cfg);
    late_and_lost(&x, &c);
    held_then_splunk_restarts(&x, &c);
    indexed_then_ack_lost(&x, &c);

    // The collector stops while a batch awaits its ack (held): the cursor
    // stays; once started again it sends the batch again.
    x.hec.hold.store(true, Ordering::Relaxed);
    x.ingest_received(&c, 260..280);
    c.stop();
    // Written after all, once the forwarder is gone: its ack never asked.
    x.hec.hold.store(false, Ordering::Relaxed);
    let c = inprocess::start(&cfg);
    assert_eq!(cursor(&c), 260, "no ack, no cursor");
    wait_until("cursor at 280 after the restart", LIMIT, || {
        cursor(&c) == 280
    });
    assert_eq!(
        check_indexed(&x.hec, &x.store),
        40,
        "one more batch of duplicates"
    );
    assert_eq!(get(&counters(&c, "splunk").events_sent), 20);
    c.stop();

    let problems = x.hec.problems.lock().unwrap().clone();
    assert!(problems.is_empty(), "{problems:?}");
    drop(server);
}
