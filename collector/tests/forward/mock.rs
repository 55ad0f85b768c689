//! Mock destinations on 127.0.0.1, written for these tests: a Splunk HEC
//! endpoint, an Elasticsearch `_bulk` endpoint and a plain NDJSON receiver.
//! Each checks what a real one checks (auth, path, body shape), records
//! what it accepted by event id, and fails on command.

use std::{
    collections::HashMap,
    convert::Infallible,
    io::Read as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::pki::Pki;

pub type Handler =
    dyn Fn(&hyper::http::request::Parts, &[u8]) -> (StatusCode, String) + Send + Sync;

/// A server on its own thread; stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `handler` over HTTPS (the test PKI's server certificate) or,
/// when `pki` is `None`, plain HTTP.
pub fn serve(pki: Option<&Pki>, handler: Arc<Handler>) -> Server {
    let tls = pki.map(|p| {
        aitrail_collector::tls::server_config(&p.server_cert, &p.server_key, None).unwrap()
    });
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let addr = std_listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let (tcp, _) = tokio::select! {
                    _ = &mut rx => break,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let handler = Arc::clone(&handler);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = Arc::clone(&handler);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(http_body_util::Collected::to_bytes)
                                .unwrap_or_default();
                            let (status, text) = handler(&parts, &body);
                            let mut r = Response::new(Full::new(Bytes::from(text)));
                            *r.status_mut() = status;
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
    });
    Server {
        addr,
        stop: Some(tx),
        thread: Some(thread),
    }
}

/// The body, gunzipped when it says it is gzip.
fn body_of(parts: &hyper::http::request::Parts, body: &[u8]) -> Vec<u8> {
    if parts
        .headers
        .get("content-encoding")
        .is_some_and(|v| v == "gzip")
    {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .expect("gzip body");
        out
    } else {
        body.to_vec()
    }
}

/// What a mock accepted.
#[derive(Default)]
pub struct Record {
    /// Event id → how many times it was accepted.
    pub ids: Mutex<HashMap<String, u32>>,
    pub requests: AtomicU64,
    pub refused: AtomicU64,
    /// While set, every request gets the outage answer.
    pub down: AtomicBool,
    /// Anything wrong in what was received (the test asserts it is empty).
    pub problems: Mutex<Vec<String>>,
    pub gzip_requests: AtomicU64,
}

impl Record {
    fn accept(&self, id: &str) {
        *self.ids.lock().unwrap().entry(id.to_owned()).or_default() += 1;
    }

    fn problem(&self, p: String) {
        self.problems.lock().unwrap().push(p);
    }

    pub fn count(&self) -> usize {
        self.ids.lock().unwrap().len()
    }
}

/// Splunk HEC: `POST /services/collector/event`, `Authorization: Splunk
/// TOKEN`, concatenated event objects; 503 `{"code":9}` while down; a
/// request holding an event whose id is in `bad` is refused whole with 400
/// `{"code":6}` (invalid data format), as HEC refuses a batch with one
/// event it cannot parse.
pub fn hec(pki: &Pki, token: &str, rec: Arc<Record>, bad: &'static [&'static str]) -> Server {
    let want = format!("Splunk {token}");
    serve(
        Some(pki),
        Arc::new(move |parts, body| {
            rec.requests.fetch_add(1, Ordering::Relaxed);
            if parts.uri.path() != "/services/collector/event" {
                return (
                    StatusCode::NOT_FOUND,
                    r#"{"text":"The requested URL was not found on this server.","code":404}"#
                        .into(),
                );
            }
            if parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                != Some(want.as_str())
            {
                rec.refused.fetch_add(1, Ordering::Relaxed);
                return (
                    StatusCode::UNAUTHORIZED,
                    r#"{"text":"Invalid authorization","code":3}"#.into(),
                );
            }
            if rec.down.load(Ordering::Relaxed) {
                rec.refused.fetch_add(1, Ordering::Relaxed);
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"text":"Server is busy","code":9}"#.into(),
                );
            }
            if parts.headers.get("content-encoding").is_some() {
                rec.gzip_requests.fetch_add(1, Ordering::Relaxed);
            }
            let body = body_of(parts, body);
            let mut events = Vec::new();
            for obj in serde_json::Deserializer::from_slice(&body).into_iter::<Value>() {
                let Ok(obj) = obj else {
                    return (
                        StatusCode::BAD_REQUEST,
                        r#"{"text":"Invalid data format","code":6}"#.into(),
                    );
                };
                let Some(ev) = obj.get("event").filter(|e| e.is_object()) else {
                    return (
                        StatusCode::BAD_REQUEST,
                        r#"{"text":"Event field is required","code":12}"#.into(),
                    );
                };
                if !obj["time"].is_number()
                    || obj["sourcetype"] != "aitrail:event"
                    || obj["source"] != "aitrail"
                    || !obj["host"].is_string()
                {
                    rec.problem(format!("HEC envelope: {obj}"));
                }
                events.push(ev["id"].as_str().unwrap_or("").to_owned());
            }
            if events.is_empty() {
                return (
                    StatusCode::BAD_REQUEST,
                    r#"{"text":"No data","code":5}"#.into(),
                );
            }
            if events.iter().any(|id| bad.contains(&id.as_str())) {
                rec.refused.fetch_add(1, Ordering::Relaxed);
                return (
                    StatusCode::BAD_REQUEST,
                    r#"{"text":"Invalid data format","code":6,"invalid-event-number":0}"#.into(),
                );
            }
            for id in &events {
                rec.accept(id);
            }
            (StatusCode::OK, r#"{"text":"Success","code":0}"#.into())
        }),
    )
}

/// Elasticsearch `_bulk` with `create` semantics (409 for an `_id` it
/// has), `Authorization: ApiKey KEY`. The first time it sees an id of
/// `flaky` it answers that item 429; ids in `bad` get a 400 mapping error.
pub fn bulk(
    pki: &Pki,
    api_key: &str,
    rec: Arc<Record>,
    flaky: fn(&str) -> bool,
    bad: &'static [&'static str],
) -> Server {
    let want = format!("ApiKey {api_key}");
    let seen = Mutex::new(std::collections::HashSet::<String>::new());
    serve(
        Some(pki),
        Arc::new(move |parts, body| {
            rec.requests.fetch_add(1, Ordering::Relaxed);
            if parts.uri.path() != "/_bulk"
                || !parts.uri.query().unwrap_or("").contains("filter_path=")
            {
                rec.problem(format!("bulk path {}", parts.uri));
                return (StatusCode::NOT_FOUND, "{}".into());
            }
            if parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                != Some(want.as_str())
            {
                rec.refused.fetch_add(1, Ordering::Relaxed);
                return (
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":{"type":"security_exception"},"status":401}"#.into(),
                );
            }
            if rec.down.load(Ordering::Relaxed) {
                rec.refused.fetch_add(1, Ordering::Relaxed);
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"error":"unavailable","status":503}"#.into(),
                );
            }
            if parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                != Some("application/x-ndjson")
            {
                rec.problem("bulk content-type".into());
            }
            let body = body_of(parts, body);
            let text = String::from_utf8(body).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            if !lines.len().is_multiple_of(2) || !text.ends_with('\n') {
                return (
                    StatusCode::BAD_REQUEST,
                    r#"{"error":"malformed bulk"}"#.into(),
                );
            }
            let mut items = Vec::new();
            let mut errors = false;
            for pair in lines.chunks(2) {
                let action: Value = serde_json::from_str(pair[0]).unwrap();
                let doc: Value = serde_json::from_str(pair[1]).unwrap();
                let id = action["create"]["_id"].as_str().unwrap_or("").to_owned();
                let index = action["create"]["_index"].as_str().unwrap_or("");
                if !index.starts_with("aitrail-2026.11.")
                    || doc["event"]["id"] != id.as_str()
                    || doc["@timestamp"].is_null()
                {
                    rec.problem(format!("bulk item {id}: index {index}, doc {doc}"));
                }
                let first_time = seen.lock().unwrap().insert(id.clone());
                let status = if bad.contains(&id.as_str()) {
                    400
                } else if first_time && flaky(&id) {
                    429
                } else if rec.ids.lock().unwrap().contains_key(&id) {
                    409
                } else {
                    rec.accept(&id);
                    201
                };
                errors |= status >= 300;
                items.push(match status {
                    201 => json!({"create": {"status": 201}}),
                    409 => json!({"create": {"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": format!("[{id}]: version conflict, document already exists")}}}),
                    429 => json!({"create": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution"}}}),
                    _ => json!({"create": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field"}}}),
                });
            }
            // As with filter_path: no items at all when there is no error.
            let answer = if errors {
                json!({"errors": true, "items": items})
            } else {
                json!({"errors": false})
            };
            (StatusCode::OK, answer.to_string())
        }),
    )
}

/// A plain NDJSON receiver (any path, `Authorization: Bearer TOKEN` when
/// given): records `metadata.uid` of OCSF events (or `id`).
pub fn ndjson(pki: Option<&Pki>, rec: Arc<Record>) -> Server {
    serve(
        pki,
        Arc::new(move |parts, body| {
            rec.requests.fetch_add(1, Ordering::Relaxed);
            if rec.down.load(Ordering::Relaxed) {
                rec.refused.fetch_add(1, Ordering::Relaxed);
                return (StatusCode::BAD_GATEWAY, "down".into());
            }
            let body = body_of(parts, body);
            for line in String::from_utf8(body).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                let id = v["metadata"]["uid"]
                    .as_str()
                    .or(v["id"].as_str())
                    .unwrap_or("")
                    .to_owned();
                if v.get("class_uid").is_none() {
                    rec.problem(format!("not OCSF: {line}"));
                }
                rec.accept(&id);
            }
            (StatusCode::NO_CONTENT, String::new())
        }),
    )
}
