//! The collector in-process with `[[forward]]` tables of type `syslog` and
//! `cef` (TLS with a client certificate, into a real rsyslog) and `otlp`
//! (HTTPS into the python receiver, which decodes with the official
//! protos). Events go in through ingest as an agent sends them; the
//! collector is stopped and started again mid-stream; the OTLP receiver
//! first answers 503, then 429 with `Retry-After`, and refuses requests
//! over a size that a whole batch exceeds (413, so the forwarder splits).
//!
//! The oracle: every stored event is delivered to each forwarder's
//! destination exactly once by id — nothing lost, nothing twice — and the
//! counters (also as `/metrics` shows them) and persisted cursors agree.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use aitrail_collector::{forward::otlp::OtlpDestination, Running, Store};
use serde_json::{json, Value};

use crate::{
    inprocess::{self, counters, stored_ids, wait_until},
    otlp::{attrs, Receiver},
    pki::Pki,
    support::{event, get, spec},
    syslog::{mtls, parse_cef, sd_params, wait_received, Rsyslog},
};

const EVENTS: usize = 600;
const NAMES: [&str; 3] = ["siem", "arcsight", "otel"];

/// Each id once, and exactly `want`.
fn exactly_once(name: &str, got: &[String], want: &BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    let twice: Vec<&String> = got.iter().filter(|id| !seen.insert(*id)).collect();
    assert!(twice.is_empty(), "{name}: delivered twice: {twice:?}");
    let got: BTreeSet<String> = seen.into_iter().cloned().collect();
    let missing: Vec<_> = want.difference(&got).take(10).collect();
    let extra: Vec<_> = got.difference(want).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: missing {missing:?}, extra {extra:?} ({} of {})",
        got.len(),
        want.len()
    );
}

/// The largest protobuf body (uncompressed, as the receiver measures)
/// among windows of `n` consecutive test events.
fn encoded_size(n: usize) -> usize {
    let probe = OtlpDestination::new(
        &spec(
            "name = \"p\"\ntype = \"otlp\"\nurl = \"http://127.0.0.1:1\"\ncompression = \"none\"\n",
        ),
        Arc::default(),
    )
    .unwrap();
    let events: Vec<Value> = (0..EVENTS).map(event).collect();
    events
        .windows(n)
        .map(|w| probe.encode(w).len())
        .max()
        .unwrap()
}

/// (syslog ids, cef ids) in rsyslog's output, told apart by the MSG.
fn rsyslog_ids(rs: &Rsyslog) -> (Vec<String>, Vec<String>) {
    let (mut syslog, mut cef) = (Vec::new(), Vec::new());
    for line in rs.received() {
        let msg = line["msg"].as_str().unwrap();
        if msg.starts_with("CEF:0|") {
            cef.push(parse_cef(msg).1["externalId"].clone());
        } else {
            syslog.push(sd_params(line["sd"].as_str().unwrap())["id"].clone());
        }
    }
    (syslog, cef)
}

fn otlp_ids(rx: &Receiver) -> Vec<String> {
    rx.records()
        .iter()
        .map(|(_, _, r)| {
            attrs(&r["attributes"])["log.record.uid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// The `[[forward]]` tables: syslog and CEF to rsyslog (mTLS), OTLP to the
/// receiver (HTTPS, token).
fn forwarders(pki: &Pki, syslog_port: u16, otlp_port: u16) -> String {
    let common = "batch_max_wait_ms = 100\nretry_max_ms = 400\ntimeout_ms = 5000\n";
    format!(
        r#"
[[forward]]
name = "siem"
type = "syslog"
url = "tls://127.0.0.1:{syslog}"
{mtls}facility = "authpriv"
batch_max_events = 16
{common}
[[forward]]
name = "arcsight"
type = "cef"
url = "tls://localhost:{syslog}"
{mtls}batch_max_events = 10
{common}
[[forward]]
name = "otel"
type = "otlp"
endpoint = "https://127.0.0.1:{otlp}/v1/logs"
token = "{token}"
ca_file = "{ca}"
headers = {{ "x-scope-orgid" = "security" }}
batch_max_events = 50
{common}"#,
        syslog = syslog_port,
        mtls = mtls(pki),
        otlp = otlp_port,
        token = crate::otlp::TOKEN,
        ca = pki.ca.display(),
    )
}

/// The second run's counters: with the first run's (`at_stop`), each
/// event sent once; nothing refused; the receiver's answers met.
fn second_run_counters(c: &Running, at_stop: &[u64], rx: &Receiver) {
    let (siem, arcsight, otel) = (
        counters(c, "siem"),
        counters(c, "arcsight"),
        counters(c, "otel"),
    );
    eprintln!(
        "first run sent {at_stop:?}; then siem {siem:?}\narcsight {arcsight:?}\notel {otel:?}"
    );
    for (i, f) in [siem, arcsight, otel].into_iter().enumerate() {
        assert_eq!(
            get(&f.events_sent) + at_stop[i],
            EVENTS as u64,
            "each event sent once across the restart: {f:?}"
        );
        assert_eq!(
            (
                get(&f.events_rejected),
                get(&f.events_dropped),
                get(&f.events_invalid)
            ),
            (0, 0, 0),
            "{f:?}"
        );
        assert!(get(&f.bytes_sent) > 0 && get(&f.connects) >= 1, "{f:?}");
    }
    assert_eq!(get(&siem.events_resent) + get(&arcsight.events_resent), 0);
    // 413s split batches (refusals, not of any event); 503 and 429 were
    // retried. Which run met the script depends on timing: count both.
    let statuses: Vec<u64> = rx
        .requests()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert!(statuses.contains(&413), "{statuses:?}");
    assert!(
        statuses.contains(&503) && statuses.contains(&429),
        "{statuses:?}"
    );
    assert!(
        rx.requests()
            .iter()
            .all(|r| r["authorization"] == format!("Bearer {}", crate::otlp::TOKEN)),
        "the token on every request"
    );
}

#[test]
fn syslog_cef_and_otlp_forwarders_deliver_every_stored_event_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let store = dir.path().join("store");
    let rs = Rsyslog::start(&dir.path().join("rsyslog"), &pki, 0);
    let script = json!([
        {"status": 503, "message": "warming up"},
        {"status": 429, "retry_after": "1", "message": "slow down"},
    ]);
    // A batch of 50 is refused (413); about 16 events fit.
    let max_body = encoded_size(16);
    assert!(encoded_size(50) > max_body && encoded_size(1) < max_body);
    let rx = Receiver::start(&dir.path().join("otlp"), Some(&pki), &script, max_body);
    let forwarders = forwarders(&pki, rs.port, rx.port);
    let config = inprocess::config(&pki, &store, &forwarders);
    let lines: Vec<(usize, String)> = (0..EVENTS)
        .map(|i| (i, serde_json::to_string(&event(i)).unwrap()))
        .collect();

    // First run: two thirds of the events, stopped as soon as they are
    // stored, while the forwarders are at it.
    let c = inprocess::start(&config);
    inprocess::ingest(&rt, &pki, &c, &lines[..400]);
    c.stop();
    // What the first run is done with (nothing is filtered or refused
    // here: it sent exactly that many).
    let at_stop: Vec<u64> = {
        let st = Store::open(&store).unwrap();
        NAMES
            .iter()
            .map(|n| u64::try_from(st.forward_state(n).unwrap().unwrap().cursor).unwrap())
            .collect()
    };

    // Second run: the rest, from the persisted cursors.
    let c = inprocess::start(&config);
    inprocess::ingest(&rt, &pki, &c, &lines[400..]);
    for name in NAMES {
        let f = counters(&c, name);
        wait_until(name, Duration::from_mins(1), || {
            get(&f.cursor) == EVENTS as u64 && get(&f.lag) == 0
        });
    }
    second_run_counters(&c, &at_stop, &rx);
    // The same counters on /metrics.
    let metrics = inprocess::scrape(&rt, &pki, &c);
    for (name, kind) in [("siem", "syslog"), ("arcsight", "cef"), ("otel", "otlp")] {
        let f = counters(&c, name);
        for (metric, value) in [
            ("events_sent_total", get(&f.events_sent)),
            ("bytes_sent_total", get(&f.bytes_sent)),
            ("connects_total", get(&f.connects)),
            ("events_resent_total", get(&f.events_resent)),
        ] {
            let line = format!(
                "aitrail_collector_forward_{metric}{{forwarder=\"{name}\",kind=\"{kind}\"}} {value}"
            );
            assert!(
                metrics.lines().any(|l| l == line),
                "{line} missing in\n{metrics}"
            );
        }
    }
    c.stop();

    // The oracle.
    let stored = stored_ids(&store);
    assert_eq!(stored.len(), EVENTS);
    let all: BTreeSet<String> = stored.into_keys().collect();
    // Acknowledged by rsyslog's TCP; written to its file a moment later.
    wait_received(&rs, 2 * EVENTS);
    std::thread::sleep(Duration::from_millis(300));
    let (syslog_ids, cef_ids) = rsyslog_ids(&rs);
    exactly_once("syslog", &syslog_ids, &all);
    exactly_once("cef", &cef_ids, &all);
    exactly_once("otlp", &otlp_ids(&rx), &all);
    let st = Store::open(&store).unwrap();
    for name in NAMES {
        assert_eq!(
            st.forward_state(name).unwrap().unwrap().cursor,
            i64::try_from(EVENTS).unwrap(),
            "{name} cursor persisted"
        );
    }
    // The facility came through the [[forward]] table: authpriv (10).
    let line = rs
        .received()
        .into_iter()
        .find(|l| !l["msg"].as_str().unwrap().starts_with("CEF:"))
        .unwrap();
    let pri: u32 = line["pri"].as_str().unwrap().parse().unwrap();
    assert_eq!(pri / 8, 10, "{line}");
}
