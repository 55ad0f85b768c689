//! Elasticsearch and `OpenSearch` `_bulk`: NDJSON pairs of
//! `{"create":{"_index":…,"_id":<event id>}}` and the document.
//!
//! - `create` with `_id` = the event id: a resend (after a crash between
//!   the answer and the cursor's commit) is refused with 409 instead of
//!   indexed twice, and 409 counts as delivered (`events_duplicate`).
//!   `create` also works for data streams.
//! - The index name comes from `index` with `%Y %m %d %H` taken from the
//!   event's own time (UTC), so a resend goes to the same index.
//! - The answer is read item by item (`filter_path` keeps it small): 2xx
//!   and 409 are done; 429 and 5xx are retried — only those items, the
//!   batch's other items are not sent again; other statuses (a mapping
//!   conflict, a document too large) refuse that item for good: counted in
//!   `events_rejected` and logged with the reason, once.
//! - A whole-request 400 or 413 refuses the batch (the forwarder splits
//!   it); 401/403/404, 429 and 5xx retry it.

use std::{
    collections::HashSet,
    fmt::Write as _,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use hyper::{header, Method};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    add,
    client::{classify, Compression, HttpClient},
    config::ForwardSpec,
    format::{get, Format},
    Destination, ForwardConfigError, ForwardCounters, ForwardError, SendFuture,
};

/// Bulk answers hold one small item per action (`filter_path`).
const MAX_ANSWER: usize = 16 * 1024 * 1024;
const FILTER_PATH: &str =
    "filter_path=errors,items.*.status,items.*.error.type,items.*.error.reason";

/// The `elasticsearch` / `opensearch` types' own keys.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// `ecs` (default), `ocsf` or `native`.
    #[serde(default = "ecs")]
    pub format: Format,
    /// Index (or data stream) name; `%Y %m %d %H` from the event's time.
    #[serde(default = "default_index")]
    pub index: String,
    /// Ingest pipeline to run the documents through.
    pub pipeline: Option<String>,
    /// Basic authentication (instead of `token`, which is sent as
    /// `Authorization: ApiKey <token>`).
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub compression: Compression,
}

fn ecs() -> Format {
    Format::Ecs
}

fn default_index() -> String {
    "aitrail-%Y.%m.%d".into()
}

/// Expands `%Y %m %d %H` of `pattern` for `time_ns`.
pub fn index_name(pattern: &str, time_ns: i64) -> Result<String, String> {
    use chrono::{Datelike as _, Timelike as _};
    let t = chrono::DateTime::from_timestamp_nanos(time_ns);
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => {
                let _ = write!(out, "{:04}", t.year());
            }
            Some('m') => {
                let _ = write!(out, "{:02}", t.month());
            }
            Some('d') => {
                let _ = write!(out, "{:02}", t.day());
            }
            Some('H') => {
                let _ = write!(out, "{:02}", t.hour());
            }
            other => {
                return Err(format!(
                    "%{} is not one of %Y %m %d %H",
                    other.unwrap_or(' ')
                ))
            }
        }
    }
    Ok(out)
}

/// Elasticsearch's rules for index names.
fn check_index(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("1 to 255 bytes".into());
    }
    if name.starts_with(['-', '_', '+']) || name == "." || name == ".." {
        return Err("cannot start with - _ + or be . or ..".into());
    }
    if name
        .chars()
        .any(|c| c.is_uppercase() || c.is_whitespace() || "\\/*?\"<>|,#:".contains(c))
    {
        return Err("lowercase, no spaces and none of \\ / * ? \" < > | , # :".into());
    }
    Ok(())
}

impl Options {
    pub fn parse(spec: &ForwardSpec) -> Result<Self, ForwardConfigError> {
        let o: Self = spec.options()?;
        let sample = index_name(&o.index, 1_795_780_800_000_000_000)
            .map_err(|p| spec.invalid("index", p))?;
        check_index(&sample).map_err(|p| spec.invalid("index", format!("{sample:?}: {p}")))?;
        if o.password.is_some() && o.password_file.is_some() {
            return Err(spec.invalid("password", "give password or password_file, not both"));
        }
        let basic = o.username.is_some() || o.password.is_some() || o.password_file.is_some();
        if basic && spec.token.is_some() {
            return Err(spec.invalid(
                "token",
                "give token (an API key) or username/password, not both",
            ));
        }
        if basic && (o.username.is_none() || (o.password.is_none() && o.password_file.is_none())) {
            return Err(spec.invalid("username", "give username with password or password_file"));
        }
        Ok(o)
    }
}

/// The items of the batch in flight that are done with, so that a retry
/// sends only the others.
#[derive(Debug, Default)]
struct Progress {
    /// First event id and length: which batch this is.
    key: (String, usize),
    done: HashSet<usize>,
    /// Items refused so far, counted when the batch completes (so the
    /// forwarder's `events_sent` leaves them out).
    rejected: u64,
}

pub struct Bulk {
    kind: &'static str,
    client: HttpClient,
    path: String,
    auth: Option<String>,
    options: Options,
    counters: Arc<ForwardCounters>,
    progress: Mutex<Progress>,
}

#[derive(Debug, Deserialize)]
struct BulkAnswer {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, Item>>,
}

#[derive(Debug, Deserialize)]
struct Item {
    status: u16,
    error: Option<ItemError>,
}

#[derive(Debug, Deserialize)]
struct ItemError {
    #[serde(rename = "type")]
    kind: Option<String>,
    reason: Option<String>,
}

impl Bulk {
    pub fn new(
        spec: &ForwardSpec,
        counters: Arc<ForwardCounters>,
    ) -> Result<Self, ForwardConfigError> {
        let options = Options::parse(spec)?;
        let client = HttpClient::new(spec, MAX_ANSWER)?.counting(Arc::clone(&counters));
        let auth = if let Some(user) = &options.username {
            let password = match (&options.password, &options.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|source| ForwardConfigError::Read {
                        name: spec.name.clone(),
                        path: path.clone(),
                        source,
                    })?
                    .trim_end()
                    .to_owned(),
                (None, None) => String::new(),
            };
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ))
        } else {
            spec.token.as_ref().map(|t| format!("ApiKey {t}"))
        };
        let mut path = format!("/_bulk?{FILTER_PATH}");
        if let Some(p) = &options.pipeline {
            path.push_str("&pipeline=");
            for b in p.bytes() {
                if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                    path.push(char::from(b));
                } else {
                    let _ = write!(path, "%{b:02X}");
                }
            }
        }
        Ok(Self {
            kind: if spec.kind == "opensearch" {
                "opensearch"
            } else {
                "elasticsearch"
            },
            client,
            path,
            auth,
            options,
            counters,
            progress: Mutex::new(Progress::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn post(&self, batch: &[Value]) -> Result<(), ForwardError> {
        let key = (
            batch
                .first()
                .and_then(|e| get::str(e, "/id"))
                .unwrap_or("")
                .to_owned(),
            batch.len(),
        );
        let done = {
            let mut p = self.lock();
            if p.key != key {
                *p = Progress {
                    key: key.clone(),
                    ..Progress::default()
                };
            }
            p.done.clone()
        };
        // The request: every item not done yet.
        let mut body = Vec::with_capacity(batch.len() * 768);
        let mut sent: Vec<usize> = Vec::new();
        let mut unmappable = Vec::new();
        for (i, ev) in batch.iter().enumerate() {
            if done.contains(&i) {
                continue;
            }
            let Some(id) = get::str(ev, "/id") else {
                unmappable.push((i, "no id".to_owned()));
                continue;
            };
            let index = get::time_ns(ev)
                .ok_or_else(|| "no valid time".to_owned())
                .and_then(|t| index_name(&self.options.index, t));
            let (index, doc) = match (index, self.options.format.render(ev)) {
                (Ok(ix), Ok(doc)) => (ix, doc),
                (Err(why), _) => {
                    unmappable.push((i, why));
                    continue;
                }
                (_, Err(why)) => {
                    unmappable.push((i, why.to_string()));
                    continue;
                }
            };
            let action = json!({"create": {"_index": index, "_id": id}});
            if serde_json::to_writer(&mut body, &action).is_err() {
                continue;
            }
            body.push(b'\n');
            if serde_json::to_writer(&mut body, &doc).is_err() {
                continue;
            }
            body.push(b'\n');
            sent.push(i);
        }
        if !unmappable.is_empty() {
            let mut p = self.lock();
            for (i, why) in &unmappable {
                tracing::warn!(forwarder_kind = self.kind, id = get::str(&batch[*i], "/id").unwrap_or("?"), %why, "event left out (counted in events_rejected)");
                if p.done.insert(*i) {
                    p.rejected += 1;
                }
            }
        }
        if !sent.is_empty() {
            let mut headers = vec![(header::CONTENT_TYPE, "application/x-ndjson".to_owned())];
            if let Some(a) = &self.auth {
                headers.push((header::AUTHORIZATION, a.clone()));
            }
            let body = self.options.compression.apply(body, &mut headers);
            let resp = self
                .client
                .request(Method::POST, &self.path, &headers, body)
                .await?;
            classify(&resp)?;
            let answer: BulkAnswer = serde_json::from_slice(&resp.body).map_err(|e| {
                ForwardError::Retry(format!("bulk answer is not JSON: {e}: {}", resp.snippet()))
            })?;
            self.take_answer(batch, &sent, &answer)?;
        }
        let mut p = self.lock();
        if p.done.len() < batch.len() {
            return Err(ForwardError::Retry(format!(
                "{} of {} items to retry (429/5xx)",
                batch.len() - p.done.len(),
                batch.len()
            )));
        }
        add(&self.counters.events_rejected, p.rejected);
        *p = Progress::default();
        Ok(())
    }

    /// Marks the items of `answer` done (or not); `Err` when the answer
    /// does not fit the request.
    fn take_answer(
        &self,
        batch: &[Value],
        sent: &[usize],
        answer: &BulkAnswer,
    ) -> Result<(), ForwardError> {
        let mut p = self.lock();
        if !answer.errors && answer.items.is_empty() {
            // filter_path drops `items` when there is nothing to show.
            p.done.extend(sent.iter().copied());
            return Ok(());
        }
        if answer.items.len() != sent.len() {
            return Err(ForwardError::Retry(format!(
                "bulk answer has {} items for {} actions",
                answer.items.len(),
                sent.len()
            )));
        }
        for (&i, item) in sent.iter().zip(&answer.items) {
            let Some(item) = item.values().next() else {
                continue;
            };
            match item.status {
                200..=299 => {
                    p.done.insert(i);
                }
                409 => {
                    add(&self.counters.events_duplicate, 1);
                    p.done.insert(i);
                }
                429 | 500..=599 => {}
                status => {
                    p.done.insert(i);
                    p.rejected += 1;
                    let e = item.error.as_ref();
                    let why = format!(
                        "{status} {}: {}",
                        e.and_then(|e| e.kind.as_deref()).unwrap_or("?"),
                        e.and_then(|e| e.reason.as_deref()).unwrap_or("")
                    );
                    tracing::error!(
                        forwarder_kind = self.kind,
                        id = get::str(&batch[i], "/id").unwrap_or("?"),
                        %why,
                        "bulk item refused for good; skipped (counted in events_rejected)"
                    );
                }
            }
        }
        Ok(())
    }
}

impl Destination for Bulk {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn send<'a>(&'a self, batch: &'a [Value]) -> SendFuture<'a> {
        Box::pin(self.post(batch))
    }
}
