//! A collector started in-process (TLS with the test PKI, one agent token,
//! a store in a temp dir) with the `[[forward]]` tables a test gives, and
//! what the end-to-end tests do with it: ingest events over HTTPS as an
//! agent does, read the forwarders' counters and the store.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use aitrail_collector::{
    config::FileConfig,
    forward::{client::HttpClient, ForwardCounters, ForwardSection},
    Collector, Running,
};
use hyper::{header, Method};

use crate::pki::Pki;

pub const AGENT_TOKEN: &str = "agent-token-0123456789";
pub const METRICS_TOKEN: &str = "metrics-token-0123456789";

/// collector.toml for `store` with these forwarders (`[[forward]]`
/// tables); retention off, `/metrics` on.
pub fn config(pki: &Pki, store: &Path, forwarders: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
[tls]
cert = "{cert}"
key = "{key}"
[agents.agent-1]
token = "{AGENT_TOKEN}"
[store]
dir = "{store}"
retention_days = 0
[metrics]
tokens = ["{METRICS_TOKEN}"]
{forwarders}"#,
        cert = pki.server_cert.display(),
        key = pki.server_key.display(),
        store = store.display(),
    )
}

/// Loads `config` as `aitrail collector --config` does and starts it.
pub fn start(config: &str) -> Running {
    let cfg: FileConfig = toml::from_str(config).unwrap();
    Collector::start_in_thread(cfg.validate().unwrap()).expect("collector starts")
}

/// The forwarders' own HTTP client, to the collector.
fn client(pki: &Pki, c: &Running) -> HttpClient {
    let spec = toml::from_str::<ForwardSection>(&format!(
        "name = \"ingest\"\ntype = \"http\"\nurl = \"https://127.0.0.1:{}\"\nca_file = \"{}\"\nformat = \"native\"\n",
        c.addr.port(),
        pki.ca.display()
    ))
    .unwrap()
    .validate()
    .unwrap();
    HttpClient::new(&spec, 1 << 20).unwrap()
}

/// `GET /metrics` (Prometheus text).
pub fn scrape(rt: &tokio::runtime::Runtime, pki: &Pki, c: &Running) -> String {
    let resp = rt
        .block_on(client(pki, c).request(
            Method::GET,
            "/metrics",
            &[(header::AUTHORIZATION, format!("Bearer {METRICS_TOKEN}"))],
            bytes::Bytes::new(),
        ))
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.snippet());
    String::from_utf8(resp.body.to_vec()).unwrap()
}

/// Posts NDJSON lines to the collector's ingest as an agent does (zstd,
/// bearer token, batch id = the first line's index), 100 a batch, with the
/// forwarders' own HTTP client; each batch must be accepted whole.
pub fn ingest(rt: &tokio::runtime::Runtime, pki: &Pki, c: &Running, lines: &[(usize, String)]) {
    let client = client(pki, c);
    for chunk in lines.chunks(100) {
        let ndjson: String = chunk.iter().fold(String::new(), |mut t, (_, l)| {
            t.push_str(l);
            t.push('\n');
            t
        });
        let body = zstd::bulk::compress(ndjson.as_bytes(), 3).unwrap();
        let resp = rt
            .block_on(client.request(
                Method::POST,
                "/v1/ingest",
                &[
                    (header::AUTHORIZATION, format!("Bearer {AGENT_TOKEN}")),
                    (header::CONTENT_ENCODING, "zstd".into()),
                    (
                        header::HeaderName::from_static("idempotency-key"),
                        format!("batch-{}", chunk[0].0),
                    ),
                ],
                body.into(),
            ))
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.snippet());
        let ack: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(ack["accepted"], chunk.len(), "{ack}");
    }
}

/// The counters of the forwarder `name`.
pub fn counters<'a>(c: &'a Running, name: &str) -> &'a ForwardCounters {
    &c.forwarders()
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no forwarder {name}"))
        .counters
}

pub fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every stored event: id → kind.
pub fn stored_ids(store: &Path) -> HashMap<String, String> {
    let s = aitrail_collector::Store::open(store).unwrap();
    s.all()
        .unwrap()
        .into_iter()
        .map(|(id, body)| {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            (id, v["kind"].as_str().unwrap().to_owned())
        })
        .collect()
}
