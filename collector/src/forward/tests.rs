//! The forwarder's runner against an in-memory destination whose answers
//! the test scripts, over a real store: exactly once and in order, retry,
//! split on reject, filters, batch limits, the retry cap, a restart from
//! the persisted cursor, retention's hold.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::watch;

use super::{
    runner::{self, Context},
    Destination, ForwardCounters, ForwardError, ForwardSection, Forwarder, SendFuture,
};
use crate::{
    ingest,
    store::{forward::CursorState, Store},
};

type Script = dyn Fn(&[Value], u64) -> Result<(), ForwardError> + Send + Sync;

/// Records every batch it acknowledges; `script` decides each answer
/// (given the batch and the call number).
struct Fake {
    acked: Mutex<Vec<Vec<String>>>,
    calls: AtomicU64,
    script: Box<Script>,
}

impl Fake {
    fn new(
        script: impl Fn(&[Value], u64) -> Result<(), ForwardError> + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            acked: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            script: Box::new(script),
        })
    }

    fn ids(&self) -> Vec<String> {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
}

impl Destination for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn send<'a>(&'a self, batch: &'a [Value]) -> SendFuture<'a> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            (self.script)(batch, n)?;
            let ids = batch
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect();
            self.acked.lock().unwrap().push(ids);
            Ok(())
        })
    }
}

fn event(n: usize) -> String {
    let (kind, severity) = match n % 5 {
        0 => ("llm.call", "info"),
        1 => ("file.open", "info"),
        2 => ("net.connect", "low"),
        3 => ("finding", "high"),
        _ => ("process.exec", "info"),
    };
    format!(
        r#"{{"v":1,"id":"ev-{n:06}","time":"2026-11-27T12:00:00.{n:09}Z","kind":"{kind}","severity":"{severity}","host":{{"name":"h","id":"x"}},"trace_id":"t{n}","span_id":"s{n}","pad":"{}"}}"#,
        "x".repeat(n % 300)
    )
}

fn store_events(store: &Store, range: std::ops::Range<usize>) {
    let rows: Vec<_> = range
        .map(|n| ingest::parse_line(event(n).as_bytes()).unwrap())
        .collect();
    store.insert("agent", 0, &rows).unwrap();
}

fn spec(extra: &str) -> super::ForwardSpec {
    let mut text = format!(
        "name = \"t\"\ntype = \"fake\"\nurl = \"https://example.invalid\"\nretry_max_ms = 400\n{extra}\n"
    );
    if !extra.contains("batch_max_wait_ms") {
        text.push_str("batch_max_wait_ms = 50\n");
    }
    toml::from_str::<ForwardSection>(&text)
        .unwrap()
        .validate()
        .unwrap()
}

struct Running {
    stop: watch::Sender<bool>,
    wake: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
    fwd: Arc<Forwarder>,
}

fn start(store: &Arc<Store>, spec: super::ForwardSpec, dest: Arc<Fake>) -> Running {
    let start: CursorState = store.forward_register(&[spec.registration()]).unwrap()[0];
    let fwd = Arc::new(Forwarder {
        spec,
        destination: dest,
        counters: Arc::new(ForwardCounters::default()),
    });
    let (stop, stop_rx) = watch::channel(false);
    let (wake, wake_rx) = watch::channel(0);
    let task = tokio::spawn(runner::run(
        Arc::clone(&fwd),
        start,
        Context {
            store: Arc::clone(store),
            wake: wake_rx,
            stop: stop_rx,
        },
    ));
    Running {
        stop,
        wake,
        task,
        fwd,
    }
}

impl Running {
    fn c(&self) -> &ForwardCounters {
        &self.fwd.counters
    }

    async fn until(&self, what: &str, cond: impl Fn(&ForwardCounters) -> bool) {
        let t0 = Instant::now();
        while !cond(self.c()) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}: {:?}",
                self.c()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("runner stops")
            .unwrap();
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn open_store() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    (dir, store)
}

fn all_ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("ev-{n:06}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_once_in_order_within_the_batch_limits() {
    let (_d, store) = open_store();
    store_events(&store, 0..1000);
    let dest = Fake::new(|_, _| Ok(()));
    let r = start(
        &store,
        spec("batch_max_events = 64\nbatch_max_bytes = 20000"),
        Arc::clone(&dest),
    );
    r.until("all sent", |c| get(&c.events_sent) == 1000).await;
    // More arrives while it runs; ingest's wake-up brings it.
    store_events(&store, 1000..1100);
    r.wake.send_modify(|n| *n += 1);
    r.until("lag 0", |c| get(&c.events_sent) == 1100 && get(&c.lag) == 0)
        .await;
    assert_eq!(dest.ids(), all_ids(0..1100), "each once, in order");
    for b in dest.acked.lock().unwrap().iter() {
        assert!(b.len() <= 64);
        let bytes: usize = b
            .iter()
            .map(|id| event(id[3..].parse().unwrap()).len())
            .sum();
        let last = event(b.last().unwrap()[3..].parse().unwrap()).len();
        assert!(
            bytes - last < 20000,
            "a batch stops at the row that crosses max bytes"
        );
    }
    assert_eq!(get(&r.c().batches_retried), 0);
    assert_eq!(store.forward_state("t").unwrap().unwrap().cursor, 1100);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_destination_gets_the_same_batch_again() {
    let (_d, store) = open_store();
    store_events(&store, 0..300);
    // Down for the first 6 calls, then a 503 every third call.
    let dest = Fake::new(|_, n| {
        if n < 6 || n % 3 == 0 {
            Err(ForwardError::Retry(format!("503 (call {n})")))
        } else {
            Ok(())
        }
    });
    let r = start(&store, spec("batch_max_events = 50"), Arc::clone(&dest));
    r.until("all sent", |c| get(&c.events_sent) == 300).await;
    assert_eq!(dest.ids(), all_ids(0..300));
    assert!(get(&r.c().batches_retried) >= 6);
    assert_eq!(get(&r.c().errors), get(&r.c().batches_retried));
    assert_eq!(get(&r.c().events_dropped), 0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_split_down_to_the_refused_events() {
    let (_d, store) = open_store();
    store_events(&store, 0..200);
    let bad = ["ev-000017", "ev-000018", "ev-000150"];
    let dest = Fake::new(move |batch, _| {
        if batch
            .iter()
            .any(|e| bad.contains(&e["id"].as_str().unwrap()))
        {
            Err(ForwardError::Reject("400 invalid event".into()))
        } else {
            Ok(())
        }
    });
    let r = start(&store, spec("batch_max_events = 100"), Arc::clone(&dest));
    r.until("done", |c| get(&c.cursor) == 200).await;
    let want: Vec<String> = all_ids(0..200)
        .into_iter()
        .filter(|id| !bad.contains(&id.as_str()))
        .collect();
    assert_eq!(dest.ids(), want, "every other event once, in order");
    assert_eq!(get(&r.c().events_rejected), 3);
    assert_eq!(get(&r.c().events_sent), 197);
    assert!(get(&r.c().batches_rejected) >= 3);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_send_only_their_events_and_the_cursor_passes_the_rest() {
    let (_d, store) = open_store();
    store_events(&store, 0..100);
    let dest = Fake::new(|_, _| Ok(()));
    let r = start(
        &store,
        spec("kinds = [\"finding\", \"net.connect\"]\nmin_severity = \"high\""),
        Arc::clone(&dest),
    );
    r.until("cursor at the end", |c| get(&c.cursor) == 100)
        .await;
    let want: Vec<String> = (0..100)
        .filter(|n| n % 5 == 3)
        .map(|n| format!("ev-{n:06}"))
        .collect();
    assert_eq!(dest.ids(), want);
    assert_eq!(get(&r.c().lag), 0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_for_more_up_to_batch_max_wait() {
    let (_d, store) = open_store();
    store_events(&store, 0..3);
    let dest = Fake::new(|_, _| Ok(()));
    let t0 = Instant::now();
    let r = start(&store, spec("batch_max_wait_ms = 400"), Arc::clone(&dest));
    tokio::time::sleep(Duration::from_millis(150)).await;
    store_events(&store, 3..5);
    r.wake.send_modify(|n| *n += 1);
    r.until("sent", |c| get(&c.events_sent) == 5).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(380),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(dest.acked.lock().unwrap().len(), 1, "one batch of 5");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_cap_drops_the_batch_and_counts_it() {
    let (_d, store) = open_store();
    store_events(&store, 0..20);
    let dest = Fake::new(|batch, _| {
        if batch.iter().any(|e| e["id"] == "ev-000005") {
            Err(ForwardError::Retry("timeout".into()))
        } else {
            Ok(())
        }
    });
    let r = start(
        &store,
        spec("batch_max_events = 10\nretry_max_attempts = 3"),
        Arc::clone(&dest),
    );
    r.until("done", |c| get(&c.cursor) == 20).await;
    assert_eq!(dest.ids(), all_ids(10..20));
    assert_eq!(get(&r.c().events_dropped), 10);
    assert_eq!(get(&r.c().batches_retried), 3);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_goes_on_from_the_persisted_cursor() {
    let (_d, store) = open_store();
    store_events(&store, 0..500);
    let slow = |_: &[Value], _| {
        std::thread::sleep(Duration::from_millis(5));
        Ok(())
    };
    let first = Fake::new(slow);
    let r = start(&store, spec("batch_max_events = 20"), Arc::clone(&first));
    r.until("some sent", |c| get(&c.events_sent) >= 100).await;
    r.stop().await;
    let sent_first = first.ids();
    assert!(sent_first.len() < 500, "stopped half-way");
    let cursor = store.forward_state("t").unwrap().unwrap().cursor;
    assert_eq!(
        cursor,
        i64::try_from(sent_first.len()).unwrap(),
        "cursor = what was acked"
    );

    let second = Fake::new(|_, _| Ok(()));
    let r = start(&store, spec("batch_max_events = 20"), Arc::clone(&second));
    r.until("rest sent", |c| get(&c.cursor) == 500).await;
    let mut all = sent_first;
    all.extend(second.ids());
    assert_eq!(all, all_ids(0..500), "each event once across the restart");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_forwarder_can_start_at_the_newest_event() {
    let (_d, store) = open_store();
    store_events(&store, 0..50);
    let dest = Fake::new(|_, _| Ok(()));
    let r = start(&store, spec("start_at = \"newest\""), Arc::clone(&dest));
    store_events(&store, 50..60);
    r.wake.send_modify(|n| *n += 1);
    r.until("sent", |c| get(&c.cursor) == 60).await;
    assert_eq!(dest.ids(), all_ids(50..60));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_past_the_newest_event_moves_back() {
    let (_d, store) = open_store();
    store_events(&store, 0..10);
    let s = spec("");
    store.forward_register(&[s.registration()]).unwrap();
    // As if the store had been restored from an older copy.
    store.forward_ack("t", 1000).unwrap();
    let dest = Fake::new(|_, _| Ok(()));
    let r = start(&store, s, Arc::clone(&dest));
    r.until("moved back", |c| get(&c.cursor) == 10).await;
    store_events(&store, 10..15);
    r.wake.send_modify(|n| *n += 1);
    r.until("new events sent", |c| get(&c.events_sent) == 5)
        .await;
    assert_eq!(dest.ids(), all_ids(10..15));
    r.stop().await;
}

#[test]
fn retention_holds_unsent_events_then_counts_what_it_deletes() {
    let (_d, store) = open_store();
    store_events(&store, 0..100);
    let hold = |days: u32| {
        let mut s = spec(&format!("hold_days = {days}"));
        s.name = format!("hold{days}");
        s.registration()
    };
    // hold0 has sent the first 40; hold1 nothing; "gone" is no longer
    // configured, so it holds nothing back.
    store
        .forward_register(&[hold(0), hold(1), {
            let mut g = spec("").registration();
            g.name = "gone".into();
            g
        }])
        .unwrap();
    store.forward_register(&[hold(0), hold(1)]).unwrap();
    store.forward_ack("hold0", 40).unwrap();
    let t = |n: usize| {
        chrono::DateTime::parse_from_rfc3339(&format!("2026-11-27T12:00:00.{n:09}Z"))
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    };
    // Everything is past retention, but within hold1's day: nothing goes.
    let deleted = store.apply_retention(t(100)).unwrap();
    assert_eq!(deleted, 0, "hold1 has sent nothing and holds it all");
    // A day and more later: hold1's hold is over. Findings (n % 5 == 3)
    // and their traces are kept by retention's own rules, as is the newest
    // row; the rest is deleted and counted for the forwarders that had not
    // sent it.
    let later = t(100) + 86_400 * 1_000_000_000 + 1;
    let deleted = store.apply_retention(later).unwrap();
    let left = store.count().unwrap();
    assert_eq!(deleted + left, 100);
    assert!(deleted > 0);
    let s0 = store.forward_state("hold0").unwrap().unwrap();
    let s1 = store.forward_state("hold1").unwrap().unwrap();
    assert_eq!(s1.expired, deleted, "hold1 had sent none of them");
    assert!(
        s0.expired < deleted && s0.expired > 0,
        "hold0 had sent the first 40"
    );
    assert_eq!(store.forward_state("gone").unwrap().unwrap().expired, 0);
    // The newest row stays, so no later event reuses its seq.
    assert_eq!(store.count_id("ev-000099").unwrap(), 1);
}

#[test]
fn config_keys_are_checked() {
    use crate::config::FileConfig;
    let base = r#"
        listen = "127.0.0.1:0"
        [tls]
        cert = "/c"
        key = "/k"
        [store]
        dir = "/s"
        [agents.a]
        token = "0123456789abcdef"
    "#;
    let load = |extra: &str| -> Result<crate::config::Config, String> {
        toml::from_str::<FileConfig>(&format!("{base}{extra}"))
            .map_err(|e| e.to_string())?
            .validate()
            .map_err(|e| match std::error::Error::source(&e) {
                Some(src) => format!("{e}: {src}"),
                None => e.to_string(),
            })
    };
    let hec = "[[forward]]\nname = \"splunk\"\ntype = \"splunk_hec\"\nurl = \"https://splunk.example.com:8088\"\ntoken = \"00000000-0000-0000-0000-000000000000\"\n";
    let ok = load(hec).unwrap();
    assert_eq!(ok.forward.len(), 1);
    assert!(ok.forward[0].filter.kinds.is_empty(), "native: every kind");
    let ocsf = load(&format!("{hec}format = \"ocsf\"\n")).unwrap();
    assert!(!ocsf.forward[0]
        .filter
        .kinds
        .contains(&"agent.health".to_owned()));
    assert_eq!(ocsf.forward[0].filter.kinds.len(), 7);
    for (extra, why) in [
        ("bogus = 1\n", "unknown field"),
        (
            "format = \"ocsf\"\nkinds = [\"agent.health\"]\n",
            "cannot express",
        ),
        ("kinds = [\"llm.cal\"]\n", "unknown kind"),
        ("min_severity = \"urgent\"\n", "min_severity"),
    ] {
        let e = load(&format!("{hec}{extra}")).unwrap_err();
        assert!(e.contains(why), "{extra}: {e}");
    }
    let e = load(&format!("{hec}{hec}")).unwrap_err();
    assert!(e.contains("twice"), "{e}");
    let e = load("[[forward]]\nname = \"x\"\ntype = \"http\"\nurl = \"http://10.0.0.1:9000\"\nformat = \"ecs\"\n").unwrap_err();
    assert!(e.contains("loopback"), "{e}");
    load("[[forward]]\nname = \"x\"\ntype = \"http\"\nurl = \"http://127.0.0.1:9000/in\"\nformat = \"ecs\"\n").unwrap();
    let e = load("[[forward]]\nname = \"x\"\ntype = \"splunk_hec\"\nurl = \"https://s:8088\"\n")
        .unwrap_err();
    assert!(e.contains("token"), "{e}");
    let e = load("[[forward]]\nname = \"x\"\ntype = \"elasticsearch\"\nurl = \"https://es:9200\"\nindex = \"AiTrail-%Y\"\n").unwrap_err();
    assert!(e.contains("lowercase"), "{e}");
    let e = load("[[forward]]\nname = \"x\"\ntype = \"http\"\nurl = \"https://u:secret@lake\"\nformat = \"ocsf\"\n").unwrap_err();
    assert!(e.contains("credentials"), "{e}");
    let dbg = format!("{:?}", ok.forward);
    assert!(
        !dbg.contains("00000000-0000") && dbg.contains("[redacted]"),
        "{dbg}"
    );
    let e = load("[[forward]]\nname = \"x\"\ntype = \"kafka\"\nurl = \"https://k\"\n").unwrap_err();
    assert!(e.contains("unknown type"), "{e}");
}

#[test]
fn index_names_follow_the_event_time() {
    let t = chrono::DateTime::parse_from_rfc3339("2026-11-27T05:00:00Z")
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap();
    assert_eq!(
        super::elastic::index_name("aitrail-%Y.%m.%d", t).unwrap(),
        "aitrail-2026.11.27"
    );
    assert_eq!(
        super::elastic::index_name("logs-aitrail-%Y%m%d%H", t).unwrap(),
        "logs-aitrail-2026112705"
    );
    assert!(super::elastic::index_name("a-%s", t).is_err());
}

#[derive(serde::Deserialize)]
struct Tables {
    forward: Vec<ForwardSection>,
}

#[test]
fn the_example_config_forwarders_are_valid() {
    // config/collector.toml has them commented out; uncomment and check.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/collector.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let mut tables = String::new();
    let mut on = false;
    for line in text.lines() {
        if line == "# [[forward]]" {
            on = true;
        } else if !line.starts_with("# ") && !line.starts_with("# #") {
            on = false;
        }
        if on {
            let l = &line[2..];
            if l.starts_with("token_file") {
                tables.push_str("token = \"example-token\"\n");
            } else if !l.starts_with('#') {
                tables.push_str(l);
                tables.push('\n');
            }
        }
    }
    let t: Tables = toml::from_str(&tables).unwrap();
    let types: Vec<&str> = t.forward.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(
        types,
        [
            "splunk_hec",
            "elasticsearch",
            "http",
            "syslog",
            "cef",
            "otlp"
        ],
        "an example of each type: {tables}"
    );
    for f in t.forward {
        let mut spec = f.validate().unwrap();
        super::prepare(&mut spec).unwrap_or_else(|e| panic!("{e}"));
    }
}
