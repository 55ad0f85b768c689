//! Detection evaluation: the detector against the labelled corpus.
//!
//! The corpus (tests/corpus/*.jsonl, see docs/detection.md "Evaluation") is
//! a set of cases, each a short sequence of partial events and the finding
//! classes it must raise; benign cases must raise nothing. [`run`] loads it
//! (`corpus`), feeds every case's events in order to a fresh [`Detector`]
//! with the default configuration, keeps the classes of findings with
//! severity ≥ low, and scores them per class (`metrics`). It times
//! `on_event` for each `llm.call` and runs the whole corpus `rounds` times so
//! the p99 rests on enough samples; findings come from the first round (the
//! detector is deterministic, and a fresh one per case holds no state across
//! rounds).

pub mod corpus;
pub mod metrics;
pub mod report;

#[cfg(test)]
mod tests;

use std::{path::PathBuf, time::Instant};

pub use self::{
    corpus::{Case, CLASSES},
    metrics::{Goal, Latency, Outcome, Scores},
    report::{Report, SlowCase},
};

/// Cases listed as the slowest (by their slowest `llm.call`): where to look
/// first when the latency goal is missed.
const SLOWEST: usize = 5;
use crate::{
    detect::{DetectConfig, Detector, RuleError},
    event::{kind, Event, Severity},
    util::Envelope,
};

#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The directory of `*.jsonl` case files.
    pub corpus: PathBuf,
    /// Runs of the whole corpus for the latency figures (at least 1).
    pub rounds: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read corpus directory {dir}")]
    ReadDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: not a case: {source}")]
    Json {
        file: String,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}:{line}: case {id}: {problem}")]
    Case {
        file: String,
        line: usize,
        id: String,
        problem: String,
    },
    #[error("{file}:{line}: case {id}: event {index} is not an event: {source}")]
    Event {
        file: String,
        line: usize,
        id: String,
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}:{line}: case id {id} already used at {first}")]
    DuplicateId {
        id: String,
        file: String,
        line: usize,
        first: String,
    },
    #[error("no cases in {dir} (no *.jsonl, or all empty)")]
    Empty { dir: String },
    #[error("cannot start the detector: {source}")]
    Detector {
        #[source]
        source: RuleError,
    },
}

/// Loads the corpus, runs the detector over it and scores the result.
pub fn run(opts: &EvalOptions) -> Result<Report, EvalError> {
    let cases = corpus::load_dir(&opts.corpus)?;
    let rounds = opts.rounds.max(1);
    let env = Envelope::new();
    let cfg = DetectConfig::default();
    let mut outcomes = Vec::with_capacity(cases.len());
    let mut samples = Vec::new();
    // Per case, its slowest llm.call over all rounds.
    let mut slowest = vec![std::time::Duration::ZERO; cases.len()];
    for round in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            let mut det = Detector::new(&cfg, env.clone())
                .map_err(|source| EvalError::Detector { source })?;
            let before = samples.len();
            let raised = run_case(&mut det, &case.events, &mut samples);
            if let Some(&m) = samples[before..].iter().max() {
                slowest[i] = slowest[i].max(m);
            }
            if round == 0 {
                outcomes.push(Outcome {
                    id: case.id.clone(),
                    expect: case.expect.clone(),
                    allow: case.allow.clone(),
                    raised,
                });
            }
        }
    }
    let scores = metrics::score(&outcomes);
    let latency = metrics::latency(&mut samples);
    let goals = metrics::goals(&scores, &latency);
    let mut slow: Vec<(std::time::Duration, &str)> = slowest
        .iter()
        .zip(&cases)
        .map(|(d, c)| (*d, c.id.as_str()))
        .collect();
    slow.sort_unstable_by(|a, b| b.cmp(a));
    let slowest = slow
        .into_iter()
        .take(SLOWEST)
        .filter(|(d, _)| !d.is_zero())
        .map(|(d, id)| SlowCase {
            id: id.to_owned(),
            max_us: d.as_secs_f64() * 1e6,
        })
        .collect();
    Ok(Report {
        slowest,
        corpus: opts.corpus.display().to_string(),
        cases: cases.len(),
        rounds,
        scores,
        latency,
        goals,
    })
}

/// The classes `events` raise (severity ≥ low), timing each `llm.call`.
fn run_case(
    det: &mut Detector,
    events: &[Event],
    samples: &mut Vec<std::time::Duration>,
) -> std::collections::BTreeSet<String> {
    let mut raised = std::collections::BTreeSet::new();
    for ev in events {
        let start = Instant::now();
        let findings = det.on_event(ev);
        let took = start.elapsed();
        if ev.kind == kind::LLM_CALL {
            samples.push(took);
        }
        for f in findings {
            if f.severity < Severity::Low {
                continue;
            }
            // A finding without a class is a detector bug; it is reported
            // under a name of its own rather than dropped.
            let class = f
                .finding
                .map(|i| i.class)
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "(no class)".into());
            raised.insert(class);
        }
    }
    raised
}
