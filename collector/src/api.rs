//! The JSON query API (`Authorization: Bearer` an `[api]` token):
//!
//! - `GET /api/search?kind=&host=&user=&trace=&severity=&rule=&q=&since=&until=&limit=`:
//!   events newest first; `severity` is a minimum, `since`/`until` are
//!   RFC 3339, `q` is words that must all appear in the text (prompts,
//!   outputs, tool calls, command lines, paths), `limit` ≤ 1000 (100).
//! - `GET /api/trace/ID`: every event of a trace, oldest first.
//!
//! Both answer `{"count": N, "events": [ … ]}` with each event exactly as
//! the agent sent it.

use std::sync::Arc;

use hyper::{body::Incoming, header, Request, StatusCode};

use crate::{
    auth,
    server::{reply, Resp, State},
    store::{Query, StoreError},
};

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

pub async fn handle(state: &Arc<State>, req: &Request<Incoming>) -> Resp {
    if state.cfg.api_tokens.is_empty() {
        return reply(
            StatusCode::NOT_FOUND,
            "query API is off (no [api] tokens)\n",
        );
    }
    let authorized = auth::bearer(req.headers().get(header::AUTHORIZATION))
        .is_some_and(|t| auth::any_matches(&state.cfg.api_tokens, t));
    if !authorized {
        return reply(StatusCode::UNAUTHORIZED, "unauthorized\n");
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
