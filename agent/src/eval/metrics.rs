//! Scoring: pure functions over what each case expected and what it raised,
//! so they are tested without a detector.
//!
//! Per class C, over all cases: TP = C expected and raised, FN = expected and
//! not raised, FP = raised but neither expected nor allowed. A benign case
//! (nothing expected) with any finding counts once towards the benign
//! false-positive rate, whatever the class.

use std::{collections::BTreeSet, time::Duration};

use serde::Serialize;

use super::corpus::CLASSES;

/// What one case expected and what the detector raised (classes of findings
/// with severity ≥ low).
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub id: String,
    pub expect: BTreeSet<String>,
    pub allow: BTreeSet<String>,
    pub raised: BTreeSet<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    pub class: String,
    /// Cases that expect this class.
    pub cases: usize,
    pub tp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
    pub fp: usize,
    /// `None` when the class was never raised.
    pub precision: Option<f64>,
    /// `None` when no case expects the class.
    pub recall: Option<f64>,
}

/// A case and the class it missed or raised wrongly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseClass {
    pub id: String,
    pub class: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scores {
    pub classes: Vec<ClassScore>,
    pub benign_cases: usize,
    /// Benign cases that raised anything.
    pub benign_flagged: usize,
    pub benign_fp_rate: f64,
    pub misses: Vec<CaseClass>,
    pub false_positives: Vec<CaseClass>,
}

pub fn score(outcomes: &[Outcome]) -> Scores {
    let mut classes: Vec<String> = CLASSES
        .iter()
        .map(|c| (*c).to_owned())
        .filter(|c| {
            outcomes
                .iter()
                .any(|o| o.expect.contains(c) || o.raised.contains(c))
        })
        .collect();
    // Classes the detector invented (or left empty) still show, after the
    // known ones, so they cannot hide.
    let extra: BTreeSet<&String> = outcomes
        .iter()
        .flat_map(|o| &o.raised)
        .filter(|c| !CLASSES.contains(&c.as_str()))
        .collect();
    classes.extend(extra.into_iter().cloned());

    let mut misses = Vec::new();
    let mut false_positives = Vec::new();
    let mut scores = Vec::new();
    for class in classes {
        let (mut cases, mut tp, mut fn_, mut fp) = (0, 0, 0, 0);
        for o in outcomes {
            let expected = o.expect.contains(&class);
            let raised = o.raised.contains(&class);
            if expected {
                cases += 1;
                if raised {
                    tp += 1;
                } else {
                    fn_ += 1;
                    misses.push(CaseClass {
                        id: o.id.clone(),
                        class: class.clone(),
                    });
                }
            } else if raised && !o.allow.contains(&class) {
                fp += 1;
                false_positives.push(CaseClass {
                    id: o.id.clone(),
                    class: class.clone(),
                });
            }
        }
        scores.push(ClassScore {
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            class,
            cases,
            tp,
            fn_,
            fp,
        });
    }
    let benign: Vec<&Outcome> = outcomes.iter().filter(|o| o.expect.is_empty()).collect();
    let benign_flagged = benign.iter().filter(|o| !o.raised.is_empty()).count();
    Scores {
        classes: scores,
        benign_cases: benign.len(),
        benign_flagged,
        benign_fp_rate: ratio(benign_flagged, benign.len()).unwrap_or(0.0),
        misses,
        false_positives,
    }
}

#[expect(clippy::cast_precision_loss, reason = "case counts are far below 2^52")]
fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Detection time per `llm.call`, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// Nearest-rank percentiles of `samples` (sorted in place).
pub fn latency(samples: &mut [Duration]) -> Latency {
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let rank = |p: usize| {
        // The smallest sample with at least p% of samples at or below it.
        let n = samples.len();
        samples[(n * p).div_ceil(100).clamp(1, n) - 1]
    };
    match samples.last() {
        None => Latency::default(),
        Some(&max) => Latency {
            samples: samples.len(),
            p50_us: us(rank(50)),
            p99_us: us(rank(99)),
            max_us: us(max),
        },
    }
}

/// The goals.
pub const MIN_RECALL: f64 = 0.95;
pub const MAX_BENIGN_FP_RATE: f64 = 0.005;
pub const MAX_P99_US: f64 = 1000.0;

/// One goal, whether it was met.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Goal {
    pub name: String,
    pub target: String,
    pub actual: String,
    pub met: bool,
}

pub fn goals(scores: &Scores, lat: &Latency) -> Vec<Goal> {
    let mut out = Vec::new();
    for c in &scores.classes {
        // Only classes the corpus expects have a recall to meet.
        if let Some(recall) = c.recall {
            out.push(Goal {
                name: format!("recall {}", c.class),
                target: format!(">= {MIN_RECALL:.2}"),
                actual: format!("{recall:.2}"),
                met: recall >= MIN_RECALL,
            });
        }
    }
    out.push(Goal {
        name: "benign false positives".into(),
        target: format!("<= {:.2}%", MAX_BENIGN_FP_RATE * 100.0),
        actual: format!("{:.2}%", scores.benign_fp_rate * 100.0),
        met: scores.benign_cases > 0 && scores.benign_fp_rate <= MAX_BENIGN_FP_RATE,
    });
    out.push(Goal {
        name: "llm.call detection p99".into(),
        target: format!("<= {MAX_P99_US:.0} µs"),
        actual: format!("{:.1} µs", lat.p99_us),
        // No sample is no evidence.
        met: lat.samples > 0 && lat.p99_us <= MAX_P99_US,
    });
    out
}
