//! The optional second opinion: a configured classifier endpoint (for
//! example a small local model) asked about findings that are already
//! raised, whose verdict is added to the finding.
//!
//! Design:
//! - never blocks the pipeline: findings to ask about go into a bounded
//!   queue served by `max_in_flight` worker threads; when the queue is full
//!   the finding is delivered at once without a verdict (counted);
//! - every answer is bounded in time (`timeout_ms` for connect, write and
//!   read together) and size; a failure still yields a verdict, labelled
//!   `unavailable`, so an analyst sees that the opinion was asked for;
//! - only the redacted text of the field that matched is sent, at most
//!   [`MAX_TEXT`] bytes, and only to a loopback address over plain HTTP:
//!   captured text never leaves the host in clear (an HTTPS client belongs
//!   with the shipping work);
//! - at shutdown the pipeline waits for what is in flight, at most one
//!   timeout, then delivers the rest without a verdict.
//!
//! Wire format: `POST <path>` with `{"text", "rule", "class"}`; the answer is
//! `{"label": "…", "score": 0.0..1.0}` (score optional).

mod client;
#[cfg(test)]
mod tests;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::event::{Event, Verdict};

/// Text sent for one finding, at most.
pub const MAX_TEXT: usize = 8 * 1024;

/// `[second_opinion]` in the agent's config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpinionConfig {
    /// `http://127.0.0.1:PORT/path`; empty = off. Loopback only.
    pub url: String,
    /// Finding classes to ask about.
    pub classes: Vec<String>,
    /// For one answer: connect, send and read together.
    pub timeout_ms: u64,
    /// Questions asked at once (worker threads).
    pub max_in_flight: usize,
    /// Findings waiting for a worker; past it they go out without a verdict.
    pub max_queue: usize,
}

impl Default for OpinionConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            classes: vec!["prompt_injection".into()],
            timeout_ms: 2000,
            max_in_flight: 2,
            max_queue: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpinionError {
    #[error("second_opinion.url {url:?}: {problem}")]
    Url { url: String, problem: &'static str },
    #[error("second_opinion: cannot start a worker")]
    Spawn(#[source] std::io::Error),
}

/// Where the endpoint is, parsed from the URL.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, OpinionError> {
        let bad = |problem| OpinionError::Url {
            url: url.to_owned(),
            problem,
        };
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http:// (a loopback endpoint)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let host = authority.to_owned();
        let authority = if authority.starts_with("localhost:") {
            authority.replacen("localhost", "127.0.0.1", 1)
        } else {
            authority.to_owned()
        };
        let addr: SocketAddr = authority.parse().map_err(|_| {
            bad("needs an IP address and a port, e.g. http://127.0.0.1:8089/classify")
        })?;
        if !addr.ip().is_loopback() {
            return Err(bad(
                "must be a loopback address: captured text is sent in clear",
            ));
        }
        Ok(Self {
            addr,
            host,
            path: path.to_owned(),
        })
    }
}

/// One question: the finding and the redacted text it is about.
struct Question {
    finding: Event,
    text: String,
}

#[derive(Debug, Default)]
struct Counters {
    asked: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    skipped_busy: AtomicU64,
}

/// The running second opinion.
pub struct Opinion {
    classes: Vec<String>,
    timeout: Duration,
    questions: Option<flume::Sender<Question>>,
    answers: flume::Receiver<Event>,
    workers: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// Questions handed to workers and not yet answered.
    in_flight: u64,
}

impl Opinion {
    /// `None` when no URL is configured.
    pub fn start(cfg: &OpinionConfig) -> Result<Option<Self>, OpinionError> {
        if cfg.url.trim().is_empty() {
            return Ok(None);
        }
        let endpoint = Endpoint::parse(cfg.url.trim())?;
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let (q_tx, q_rx) = flume::bounded::<Question>(cfg.max_queue.max(1));
        let (a_tx, a_rx) = flume::unbounded();
        let counters = Arc::new(Counters::default());
        let mut workers = Vec::new();
        for i in 0..cfg.max_in_flight.max(1) {
            let (q_rx, a_tx) = (q_rx.clone(), a_tx.clone());
            let endpoint = endpoint.clone();
            let counters = Arc::clone(&counters);
            let w = std::thread::Builder::new()
                .name(format!("opinion-{i}"))
                .spawn(move || {
                    for q in q_rx {
                        let verdict = ask(&endpoint, &q, timeout, &counters);
                        let mut f = q.finding;
                        if let Some(info) = &mut f.finding {
                            info.verdict = Some(verdict);
                        }
                        if a_tx.send(f).is_err() {
                            return;
                        }
                    }
                })
                .map_err(OpinionError::Spawn)?;
            workers.push(w);
        }
        tracing::info!(url = %cfg.url, classes = ?cfg.classes, "second opinion enabled");
        Ok(Some(Self {
            classes: cfg.classes.clone(),
            timeout,
            questions: Some(q_tx),
            answers: a_rx,
            workers,
            counters,
            in_flight: 0,
        }))
    }

    /// Whether findings of this class are asked about.
    pub fn wants(&self, class: &str) -> bool {
        self.classes.iter().any(|c| c == class)
    }

    /// Queues a finding; gives it back when the queue is full (deliver it
    /// as it is).
    pub fn submit(&mut self, finding: Event, text: String) -> Option<Event> {
        let Some(tx) = &self.questions else {
            return Some(finding);
        };
        let text = cut(text, MAX_TEXT);
        match tx.try_send(Question { finding, text }) {
            Ok(()) => {
                self.in_flight += 1;
                None
            }
            Err(flume::TrySendError::Full(q) | flume::TrySendError::Disconnected(q)) => {
                self.counters.skipped_busy.fetch_add(1, Ordering::Relaxed);
                Some(q.finding)
            }
        }
    }

    /// Findings answered so far, with their verdicts.
    pub fn answered(&mut self) -> Vec<Event> {
        let out: Vec<Event> = self.answers.try_iter().collect();
        self.in_flight = self.in_flight.saturating_sub(out.len() as u64);
        out
    }

    /// Waits for what is in flight (at most about one timeout per queued
    /// round) and returns everything, answered or not.
    pub fn finish(mut self) -> Vec<Event> {
        drop(self.questions.take());
        let mut out = Vec::new();
        let deadline = Instant::now() + self.timeout * 2;
        while self.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(f) => {
                    self.in_flight -= 1;
                    out.push(f);
                }
                Err(_) => break,
            }
        }
        for w in self.workers.drain(..) {
            if w.is_finished() {
                let _ = w.join();
            }
        }
        out
    }

    pub fn counters(&self) -> [(&'static str, u64); 4] {
        let c = &self.counters;
        [
            ("opinion_asked", c.asked.load(Ordering::Relaxed)),
            ("opinion_answered", c.answered.load(Ordering::Relaxed)),
            ("opinion_failed", c.failed.load(Ordering::Relaxed)),
            (
                "opinion_skipped_busy",
                c.skipped_busy.load(Ordering::Relaxed),
            ),
        ]
    }
}

fn ask(endpoint: &Endpoint, q: &Question, timeout: Duration, counters: &Counters) -> Verdict {
    counters.asked.fetch_add(1, Ordering::Relaxed);
    let info = q.finding.finding.as_ref();
    let body = serde_json::json!({
        "text": q.text,
        "rule": info.map(|f| f.rule.as_str()),
        "class": info.map(|f| f.class.as_str()),
    });
    let source = format!("http://{}{}", endpoint.host, endpoint.path);
    match client::post_json(endpoint, &body, timeout) {
        Ok(answer) => {
            counters.answered.fetch_add(1, Ordering::Relaxed);
            Verdict {
                source,
                label: answer.label,
                score: answer.score,
            }
        }
        Err(error) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%error, "second opinion failed");
            Verdict {
                source,
                label: "unavailable".into(),
                score: None,
            }
        }
    }
}

/// `text` cut to at most `max` bytes on a char boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The text of a field of an event, by the path findings use
/// (`llm.messages[3].content`, `tool.arguments`, `exec.args`).
pub fn field_text(ev: &Event, field: &str) -> Option<String> {
    let value = serde_json::to_value(ev).ok()?;
    let mut cur = &value;
    for part in field.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.strip_suffix(']')?.parse::<usize>().ok()),
            None => (part, None),
        };
        cur = cur.get(name)?;
        if let Some(i) = index {
            cur = cur.get(i)?;
        }
    }
    match cur {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) => Some(
            a.iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}
