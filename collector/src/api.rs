//! The JSON query API (`Authorization: Bearer` an `[api]` token):
//!
//! - `GET /api/search?kind=&host=&user=&trace=&severity=&rule=&q=&since=&until=&limit=`:
//!   events newest first; `severity` is a minimum, `since`/`until` are
//!   RFC 3339, `q` is words that must all appear in the text (prompts,
//!   outputs, tool calls, command lines, paths), `limit` ≤ 1000 (100).
//! - `GET /api/trace/ID`: every event of a trace, oldest first.
//!
//! Both answer `{"count": N, "events": [ … ]}` with each event exactly as
//! the agent sent it. `kind=tombstone` and `kind=release` read the store's
//! audit log instead (`user=` then matches a tombstone by the name's hash).
//!
//! Changes, with an `[api] admin_tokens` token only (a query token gets
//! 403), a JSON body of at most 64 KiB:
//!
//! - `POST /api/release` `{"ids": [FINDING_ID, …]}` or `{"before":
//!   RFC3339}`, optional `"note"`: lifts the hold on findings; answers
//!   `{"id", "released", "already", "unknown", "not_findings"}`.
//! - `POST /api/forget` `{"user": NAME, "include_held": false, "reason":
//!   …}`: erases NAME's events (store, index, archive, object storage) and
//!   answers the tombstone; 409 when NAME has findings still held and
//!   `include_held` is not true.
//!
//! Who made a change is recorded as `api:token:` and the first 12 hex
//! digits of the token's SHA-256.

use std::sync::Arc;

use std::time::Duration;

use http_body_util::{BodyExt as _, Limited};
use hyper::{body::Incoming, header, Method, Request, StatusCode};
use serde::Deserialize;
use sha2::Digest as _;

use crate::{
    auth,
    server::{reply, Resp, State},
    store::{ForgetRequest, Query, ReleaseSelector, StoreError},
};

/// Largest body of a `POST /api/…`.
const MAX_POST_BODY: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    #[error("unknown parameter `{0}`")]
    Unknown(String),
    #[error("`{name}`: {problem}")]
    Bad {
        name: &'static str,
        problem: &'static str,
    },
}

/// Decodes `%XX` and `+` of a query string component.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = char::from(bytes.next()?).to_digit(16)?;
                let lo = char::from(bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn time_ns(name: &'static str, v: &str) -> Result<i64, QueryError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or(QueryError::Bad {
            name,
            problem: "expected RFC 3339, e.g. 2026-11-27T12:00:00Z",
        })
}

/// Parses a search's query string.
pub fn parse_query(qs: &str) -> Result<Query, QueryError> {
    let mut q = Query::default();
    for pair in qs.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v).ok_or(QueryError::Bad {
            name: "query",
            problem: "bad percent-encoding",
        })?;
        let text = Some(v.clone()).filter(|s| !s.is_empty());
        match k {
            "kind" => q.kind = text,
            "host" => q.host = text,
            "user" => q.user = text,
            "trace" => q.trace = text,
            "rule" => q.rule = text,
            "q" => q.text = text,
            "since" => q.since = Some(time_ns("since", &v)?),
            "until" => q.until = Some(time_ns("until", &v)?),
            "severity" => {
                q.min_severity = Some(match v.as_str() {
                    "info" => 0,
                    "low" => 1,
                    "medium" => 2,
                    "high" => 3,
                    "critical" => 4,
                    _ => {
                        return Err(QueryError::Bad {
                            name: "severity",
                            problem: "info, low, medium, high or critical",
                        })
                    }
                });
            }
            "limit" => {
                q.limit = v.parse().map_err(|_| QueryError::Bad {
                    name: "limit",
                    problem: "a number",
                })?;
            }
            other => return Err(QueryError::Unknown(other.to_owned())),
        }
    }
    Ok(q)
}

fn events_reply(events: &[String]) -> Resp {
    // Each body was checked to be a JSON object at ingest.
    let mut out = format!("{{\"count\":{},\"events\":[", events.len());
    out.push_str(&events.join(","));
    out.push_str("]}\n");
    let mut r = reply(StatusCode::OK, out);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn json_ok(body: String) -> Resp {
    let mut r = reply(StatusCode::OK, body + "\n");
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `api:token:` and the first 12 hex digits of the token's SHA-256: who
/// made a change, without the token.
pub fn token_fingerprint(token: &str) -> String {
    let h = sha2::Sha256::digest(token.as_bytes());
    format!("api:token:{}", &hex::encode(h)[..12])
}

pub async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Resp {
    let cfg = &state.cfg;
    if cfg.api_tokens.is_empty() && cfg.admin_tokens.is_empty() {
        return reply(
            StatusCode::NOT_FOUND,
            "query API is off (no [api] tokens)\n",
        );
    }
    let token = auth::bearer(req.headers().get(header::AUTHORIZATION)).map(str::to_owned);
    let admin = token
        .as_deref()
        .is_some_and(|t| auth::any_matches(&cfg.admin_tokens, t));
    let query = token
        .as_deref()
        .is_some_and(|t| auth::any_matches(&cfg.api_tokens, t));
    if !admin && !query {
        return reply(StatusCode::UNAUTHORIZED, "unauthorized\n");
    }
    if req.method() == Method::POST {
        if !admin {
            return reply(StatusCode::FORBIDDEN, "an [api] admin token is needed\n");
        }
        let by = token_fingerprint(token.as_deref().unwrap_or_default());
        return change(state, req, by).await;
    }
    let path = req.uri().path();
    let store = Arc::clone(&state.store);
    let result: Result<Vec<String>, StoreError> = if path == "/api/search" {
        let q = match parse_query(req.uri().query().unwrap_or("")) {
            Ok(q) => q,
            Err(e) => return reply(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        tokio::task::spawn_blocking(move || store.search(&q))
            .await
            .unwrap_or_else(|_| Ok(Vec::new()))
    } else if let Some(id) = path.strip_prefix("/api/trace/").filter(|s| !s.is_empty()) {
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || store.trace(&id))
            .await
            .unwrap_or_else(|_| Ok(Vec::new()))
    } else {
        return reply(StatusCode::NOT_FOUND, "not found\n");
    };
    match result {
        Ok(events) => events_reply(&events),
        Err(error) => {
            tracing::error!(%error, "query failed");
            reply(StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    #[serde(default)]
    ids: Vec<String>,
    before: Option<String>,
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetBody {
    user: String,
    #[serde(default)]
    include_held: bool,
    reason: Option<String>,
}

/// Most ids one release names.
const MAX_RELEASE_IDS: usize = 10_000;
/// Longest note or reason kept.
const MAX_NOTE: usize = 1024;

fn bad(why: impl std::fmt::Display) -> Resp {
    reply(StatusCode::BAD_REQUEST, format!("{why}\n"))
}

/// `POST /api/release` and `POST /api/forget`.
async fn change(state: &Arc<State>, req: Request<Incoming>, by: String) -> Resp {
    let path = req.uri().path().to_owned();
    if path != "/api/release" && path != "/api/forget" {
        return reply(StatusCode::NOT_FOUND, "not found\n");
    }
    let body = match tokio::time::timeout(
        Duration::from_secs(30),
        Limited::new(req.into_body(), MAX_POST_BODY).collect(),
    )
    .await
    {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return reply(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
        Err(_) => return bad("body not read"),
    };
    let store = Arc::clone(&state.store);
    let done = if path == "/api/release" {
        let r: ReleaseBody = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad(format_args!("release: {e}")),
        };
        let sel = match (r.ids.is_empty(), r.before.as_deref()) {
            (false, None) if r.ids.len() <= MAX_RELEASE_IDS => ReleaseSelector::Ids(r.ids),
            (true, Some(t)) => match time_ns("before", t) {
                Ok(ns) => ReleaseSelector::Before(ns),
                Err(e) => return bad(e),
            },
            _ => {
                return bad(format_args!(
                    "release: give \"ids\" (at most {MAX_RELEASE_IDS}) or \"before\""
                ))
            }
        };
        let note = r.note.filter(|n| n.len() <= MAX_NOTE);
        tokio::task::spawn_blocking(move || {
            let rep = store.release(&sel, &by, note.as_deref())?;
            serde_json::to_string(&rep).map_err(|e| StoreError::Invalid(e.to_string()))
        })
        .await
    } else {
        let f: ForgetBody = match serde_json::from_slice(&body) {
            Ok(f) => f,
            Err(e) => return bad(format_args!("forget: {e}")),
        };
        let reason = f.reason.filter(|n| n.len() <= MAX_NOTE);
        tokio::task::spawn_blocking(move || {
            let t = store.forget(&ForgetRequest {
                user: &f.user,
                by: &by,
                include_held: f.include_held,
                reason: reason.as_deref(),
            })?;
            serde_json::to_string(&t).map_err(|e| StoreError::Invalid(e.to_string()))
        })
        .await
    };
    match done {
        Ok(Ok(json)) => json_ok(json),
        Ok(Err(e @ StoreError::Held { .. })) => reply(StatusCode::CONFLICT, format!("{e}\n")),
        Ok(Err(e @ StoreError::Invalid(_))) => bad(e),
        Ok(Err(error)) => {
            tracing::error!(%error, %path, "store change failed");
            reply(StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n"))
        }
        Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "failed\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let q = parse_query("kind=llm.call&user=alice&severity=high&q=rm+-rf%20%2F&limit=5&since=2026-11-27T12:00:00Z").unwrap();
        assert_eq!(q.kind.as_deref(), Some("llm.call"));
        assert_eq!(q.min_severity, Some(3));
        assert_eq!(q.text.as_deref(), Some("rm -rf /"));
        assert_eq!(q.limit, 5);
        assert_eq!(q.since, Some(1_795_780_800_000_000_000));
        assert_eq!(
            parse_query("bogus=1"),
            Err(QueryError::Unknown("bogus".into()))
        );
        assert!(parse_query("severity=extreme").is_err());
        assert!(parse_query("since=yesterday").is_err());
        assert!(parse_query("q=%zz").is_err());
    }
}
