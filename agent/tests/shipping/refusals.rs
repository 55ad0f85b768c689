//! Oracle test (4): what the collector must refuse, and that refusing does
//! no harm (nothing stored from a refused request, the collector still
//! serves, the agent keeps what was refused for a retryable reason).

use std::{path::Path, sync::Arc, time::Duration};

use aitrail::{ship::spool::Header, sinks::Sinks};
use aitrail_collector::Collector;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};

use super::{
    addr, assert_all_delivered, collector_config, events, pki::Pki, ship_stats, sink,
    start_collector, API_TOKEN, TOKEN,
};

fn tls(pki: &Pki, client: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca).unwrap())
        .unwrap();
    let b = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        Some((cert, key)) => b
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    })
}

/// One request over a fresh TLS connection: `(status, body)`, or the
/// connection's error (a refused client certificate ends up here).
fn request(
    tls: Arc<ClientConfig>,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, String), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr(port))
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .map_err(|e| format!("http: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    })
}

fn batch(run: &str, n: usize) -> (Vec<aitrail::event::Event>, Vec<u8>) {
    let evs = events(run, n, 0);
    let mut ndjson = Vec::new();
    for e in &evs {
        ndjson.extend(serde_json::to_vec(e).unwrap());
        ndjson.push(b'\n');
    }
    (evs, zstd::bulk::compress(&ndjson, 3).unwrap())
}

fn ingest(
    tls: Arc<ClientConfig>,
    port: u16,
    token: Option<&str>,
    batch_id: &str,
    body: Vec<u8>,
) -> Result<(u16, String), String> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-encoding", "zstd"), ("idempotency-key", batch_id)];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    request(tls, port, "POST", "/v1/ingest", &headers, body)
}

/// Posts a spooled segment as the sender would (for the restart test).
pub fn post_segment(pki: &Pki, port: u16, segment: &Path) {
    let bytes = std::fs::read(segment).unwrap();
    let header = Header::decode(&bytes).unwrap();
    let (status, body) = ingest(
        tls(pki, None),
        port,
        Some(TOKEN),
        &header.batch_id(),
        bytes[64..].to_vec(),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn bad_requests_are_refused_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut cfg = collector_config(&pki, &dir.path().join("store"), addr(0));
    cfg.limits.max_body_bytes = 64 * 1024;
    cfg.limits.max_decompressed_bytes = 8 * 1024 * 1024;
    let collector = Collector::start_in_thread(cfg).unwrap();
    let port = collector.addr.port();
    let t = || tls(&pki, None);
    let (good_events, good) = batch("good", 50);
    let status = |r: Result<(u16, String), String>| r.unwrap().0;

    let send =
        |token: Option<&str>, body: &[u8]| status(ingest(t(), port, token, "b1", body.to_vec()));
    assert_eq!(send(None, &good), 401, "no token");
    assert_eq!(
        send(Some("agent-1-token-0123456788"), &good),
        401,
        "wrong token"
    );
    assert_eq!(
        send(Some(API_TOKEN), &good),
        401,
        "a query token cannot ingest"
    );
    let auth = format!("Bearer {TOKEN}");
    let no_encoding = request(
        t(),
        port,
        "POST",
        "/v1/ingest",
        &[("authorization", &auth), ("idempotency-key", "b1")],
        good.clone(),
    );
    assert_eq!(status(no_encoding), 415);
    let no_id = request(
        t(),
        port,
        "POST",
        "/v1/ingest",
        &[("authorization", &auth), ("content-encoding", "zstd")],
        good.clone(),
    );
    assert_eq!(status(no_id), 400);
    // Over max_body_bytes: refused on Content-Length, before reading.
    assert_eq!(
        send(Some(TOKEN), &vec![7u8; 100 * 1024]),
        413,
        "oversized body"
    );
    // A zstd bomb: 256 MiB of zeros in ~30 KiB, over max_decompressed.
    let frame = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
    let bomb = frame.repeat(256);
    assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());
    let start = std::time::Instant::now();
    assert_eq!(send(Some(TOKEN), &bomb), 413, "zstd bomb");
    let cost = start.elapsed();
    assert!(cost < Duration::from_secs(5), "the bomb cost {cost:?}");
    assert_eq!(send(Some(TOKEN), b"not zstd at all"), 400);
    let c = collector.counters();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get(&c.refused_unauthorized), 3);
    assert_eq!(get(&c.refused_too_large), 2);
    assert_eq!(
        collector.store().count().unwrap(),
        0,
        "nothing stored from refused requests"
    );

    // Still serving: a good batch is stored, acked with its id; sent again,
    // it is all duplicates.
    let (st, ack) = ingest(t(), port, Some(TOKEN), "batch-good", good.clone()).unwrap();
    assert_eq!(st, 200);
    let ack: serde_json::Value = serde_json::from_str(&ack).unwrap();
    assert_eq!(
        (ack["batch"].as_str(), ack["accepted"].as_u64()),
        (Some("batch-good"), Some(50))
    );
    let (_, ack) = ingest(t(), port, Some(TOKEN), "batch-good", good).unwrap();
    assert!(ack.contains("\"duplicates\":50"), "{ack}");
    assert_all_delivered(collector.store(), &good_events);

    check_query_api(&pki, port, &good_events);
}

/// The query API: its own token only; search and trace find the batch.
fn check_query_api(pki: &Pki, port: u16, good_events: &[aitrail::event::Event]) {
    let t = || tls(pki, None);
    let q = |token: &str, path: &str| {
        let auth = format!("Bearer {token}");
        request(
            t(),
            port,
            "GET",
            path,
            &[("authorization", &auth)],
            Vec::new(),
        )
    };
    assert_eq!(
        q(TOKEN, "/api/search").unwrap().0,
        401,
        "an agent token cannot query"
    );
    let (st, body) = q(
        API_TOKEN,
        "/api/search?kind=llm.call&q=fichier+n%C2%B012&limit=10",
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["count"], 1);
    assert_eq!(v["events"][0]["id"], "good-000012");
    let trace = &good_events[12].trace_id;
    let (_, body) = q(API_TOKEN, &format!("/api/trace/{trace}")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["count"], 10, "events 10..19 share a trace");
}

#[test]
fn the_rate_limit_answers_429() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut cfg = collector_config(&pki, &dir.path().join("store"), addr(0));
    cfg.limits.rate_per_sec = 0.01;
    cfg.limits.rate_burst = 3;
    let collector = Collector::start_in_thread(cfg).unwrap();
    let port = collector.addr.port();
    let (_, good) = batch("rate", 5);
    for i in 0..3 {
        let (st, _) = ingest(
            tls(&pki, None),
            port,
            Some(TOKEN),
            &format!("b{i}"),
            good.clone(),
        )
        .unwrap();
        assert_eq!(st, 200);
    }
    let (st, _) = ingest(tls(&pki, None), port, Some(TOKEN), "b4", good).unwrap();
    assert_eq!(st, 429);
}

#[test]
fn mtls_refuses_untrusted_and_missing_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut cfg = collector_config(&pki, &dir.path().join("store"), addr(0));
    cfg.client_ca = Some(pki.ca.clone());
    let collector = Collector::start_in_thread(cfg).unwrap();
    let port = collector.addr.port();
    let (evs, good) = batch("mtls", 20);
    let rogue = tls(&pki, Some((&pki.rogue_cert, &pki.rogue_key)));
    assert!(
        ingest(rogue, port, Some(TOKEN), "b1", good.clone()).is_err(),
        "untrusted client cert"
    );
    assert!(
        ingest(tls(&pki, None), port, Some(TOKEN), "b1", good.clone()).is_err(),
        "no client cert"
    );
    assert_eq!(collector.store().count().unwrap(), 0);
    // The real sender, with its certificate and token.
    let spool = dir.path().join("spool");
    let spec = sink(&pki, port, &spool, |s| {
        s.client_cert = Some(pki.client_cert.clone());
        s.client_key = Some(pki.client_key.clone());
    });
    let sinks = Sinks::start(&[spec]).unwrap();
    for e in &evs {
        sinks.send(e);
    }
    sinks.shutdown().unwrap();
    assert_all_delivered(collector.store(), &evs);
}

#[test]
fn a_sender_with_a_wrong_token_keeps_its_batches() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let collector = start_collector(&pki, &dir.path().join("store"), addr(0));
    let port = collector.addr.port();
    let spool = dir.path().join("spool");
    let evs = events("wrong-token", 300, 0);
    let spec = sink(&pki, port, &spool, |s| {
        s.token = Some("agent-1-token-WRONG-WRONG".into());
        s.shutdown_drain_ms = 1000;
    });
    let sinks = Sinks::start(&[spec]).unwrap();
    for e in &evs {
        sinks.send(e);
    }
    let stats = sinks.shutdown().unwrap();
    let ship = ship_stats(&stats);
    assert!(ship.batches_retried > 0);
    assert_eq!((ship.batches_acked, ship.events_dropped()), (0, 0));
    assert_eq!(ship.spool.events_written, 300);
    assert_eq!(collector.store().count().unwrap(), 0);
    // Fixed token: the kept batches go through.
    let sinks = Sinks::start(&[sink(&pki, port, &spool, |_| {})]).unwrap();
    sinks.shutdown().unwrap();
    assert_all_delivered(collector.store(), &evs);
}
