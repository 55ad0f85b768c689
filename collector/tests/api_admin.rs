//! `POST /api/release` and `POST /api/forget` on a running collector over
//! TLS: admin tokens only, bounded and checked JSON bodies, the hold
//! honoured, the changes recorded with the token's fingerprint and found
//! again through `GET /api/search?kind=…`.

mod common;

use std::{net::SocketAddr, path::Path, sync::Arc};

use aitrail_collector::{config::LimitsSection, store::StoreConfig, Collector, Config};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject as _, CertificateDer};
use sha2::Digest as _;

const AGENT: &str = "agent-token-0123456789abcdef";
const QUERY: &str = "query-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";

struct Pki {
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let w = |n: &str, t: &str| {
        let p = dir.join(n);
        std::fs::write(&p, t).unwrap();
        p
    };
    Pki {
        ca: w("ca.pem", &ca.pem()),
        cert: w("c.pem", &cert.pem()),
        key: w("c.key", &key.serialize_pem()),
    }
}

fn request(
    ca: &Path,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, String) {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let tls = Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    })
}

/// The collector with query and admin tokens, no forwarders.
fn config(tmp: &Path, pki: &Pki) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert: pki.cert.clone(),
        tls_key: pki.key.clone(),
        client_ca: None,
        agent_tokens: [(AGENT.to_owned(), "a".to_owned())].into(),
        limits: LimitsSection::default(),
        store: StoreConfig::new(&tmp.join("store")),
        api_tokens: vec![QUERY.to_owned()],
        admin_tokens: vec![ADMIN.to_owned()],
        metrics_tokens: Vec::new(),
        forward: Vec::new(),
    }
}

#[test]
fn release_and_forget_over_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki(tmp.path());
    let cfg = config(tmp.path(), &pki);
    let running = Collector::start_in_thread(cfg).unwrap();
    let addr = running.addr;
    common::store_lines(
        running.store(),
        common::T0,
        &[
            common::event("alice", 1, "llm.call"),
            common::event("alice", 2, "finding"),
            common::event("bob", 3, "llm.call"),
        ],
    );
    let call = |method: &str, path: &str, token: Option<&str>, body: &str| {
        request(&pki.ca, addr, method, path, token, body.as_bytes().to_vec())
    };
    let forget = r#"{"user": "alice", "reason": "GDPR 17"}"#;

    // Who may do what.
    assert_eq!(call("POST", "/api/forget", None, forget).0, 401);
    assert_eq!(call("POST", "/api/forget", Some(AGENT), forget).0, 401);
    assert_eq!(call("POST", "/api/forget", Some(QUERY), forget).0, 403);
    assert_eq!(
        call("GET", "/api/search?kind=finding", Some(ADMIN), "").0,
        200
    );
    assert_eq!(running.store().count().unwrap(), 3, "nothing changed yet");

    // Bodies are checked before anything is done.
    for bad in [
        r#"{"user": ""}"#,
        r#"{"user": "alice", "extra": 1}"#,
        "not json",
        r#"{"user": 7}"#,
    ] {
        let (status, text) = call("POST", "/api/forget", Some(ADMIN), bad);
        assert_eq!(status, 400, "{bad}: {text}");
    }
    let big = format!(r#"{{"user": "{}"}}"#, "x".repeat(100 * 1024));
    assert_eq!(call("POST", "/api/forget", Some(ADMIN), &big).0, 413);
    assert_eq!(
        call(
            "POST",
            "/api/release",
            Some(ADMIN),
            r#"{"ids": ["a"], "before": "2026-01-01T00:00:00Z"}"#
        )
        .0,
        400
    );
    assert_eq!(call("POST", "/api/nothing", Some(ADMIN), "{}").0, 404);

    // The hold: 409 until the finding is released.
    let (status, text) = call("POST", "/api/forget", Some(ADMIN), forget);
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("alice-0002-finding"), "{text}");
    let (status, text) = call(
        "POST",
        "/api/release",
        Some(ADMIN),
        r#"{"ids": ["alice-0002-finding", "nope"], "note": "closed"}"#,
    );
    assert_eq!(status, 200, "{text}");
    let rep: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(rep["released"], 1);
    assert_eq!(rep["unknown"], serde_json::json!(["nope"]));

    let (status, text) = call("POST", "/api/forget", Some(ADMIN), forget);
    assert_eq!(status, 200, "{text}");
    let stone: serde_json::Value = serde_json::from_str(&text).unwrap();
    let fp = format!(
        "api:token:{}",
        &hex::encode(sha2::Sha256::digest(ADMIN))[..12]
    );
    assert_eq!(stone["tombstone"]["by"], fp.as_str());
    assert_eq!(stone["tombstone"]["events_deleted"], 2);
    assert_eq!(stone["tombstone"]["reason"], "GDPR 17");
    assert!(!text.contains("\"alice\""));
    assert!(!text.contains(ADMIN));

    // Read back with a query token.
    let get = |q: &str| -> serde_json::Value {
        let (status, text) = call("GET", &format!("/api/search?{q}"), Some(QUERY), "");
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    };
    let stones = get("kind=tombstone&user=alice");
    assert_eq!(stones["count"], 1);
    assert_eq!(stones["events"][0]["id"], stone["id"]);
    assert_eq!(get("kind=tombstone&user=bob")["count"], 0);
    assert_eq!(
        get("kind=release")["events"][0]["release"]["by"],
        fp.as_str()
    );
    assert_eq!(get("user=alice")["count"], 0);
    assert_eq!(get("user=bob")["count"], 1);
    running.stop();
}
