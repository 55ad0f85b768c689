//! The evaluation's result and its text form.

use std::fmt::Write as _;

use serde::Serialize;

use super::metrics::{Goal, Latency, Scores};

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub corpus: String,
    pub cases: usize,
    /// Times the whole corpus was run (for stable latency percentiles).
    pub rounds: usize,
    pub scores: Scores,
    pub latency: Latency,
    pub goals: Vec<Goal>,
    /// The cases whose slowest `llm.call` took longest, slowest first.
    pub slowest: Vec<SlowCase>,
}

/// A case and its slowest `llm.call` over all rounds.
#[derive(Clone, Debug, Serialize)]
pub struct SlowCase {
    pub id: String,
    pub max_us: f64,
}

impl Report {
    pub fn goals_met(&self) -> bool {
        self.goals.iter().all(|g| g.met)
    }

    pub fn missed_goals(&self) -> Vec<&Goal> {
        self.goals.iter().filter(|g| !g.met).collect()
    }

    /// A table per class, the benign rate, latency, goals, then every miss
    /// and false positive by case id.
    pub fn text(&self) -> String {
        let s = &self.scores;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "detect-eval: {} cases ({} benign) from {}, {} round(s)\n",
            self.cases, s.benign_cases, self.corpus, self.rounds
        );
        let _ = writeln!(
            out,
            "{:<22} {:>5} {:>5} {:>5} {:>5} {:>9} {:>7}",
            "class", "cases", "TP", "FN", "FP", "precision", "recall"
        );
        for c in &s.classes {
            let _ = writeln!(
                out,
                "{:<22} {:>5} {:>5} {:>5} {:>5} {:>9} {:>7}",
                c.class,
                c.cases,
                c.tp,
                c.fn_,
                c.fp,
                fixed(c.precision),
                fixed(c.recall)
            );
        }
        let _ = writeln!(
            out,
            "\nbenign: {} of {} cases raised a finding: false-positive rate {:.2}%",
            s.benign_flagged,
            s.benign_cases,
            s.benign_fp_rate * 100.0
        );
        let l = &self.latency;
        let _ = writeln!(
            out,
            "llm.call detection: {} samples, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            l.samples, l.p50_us, l.p99_us, l.max_us
        );
        if !self.slowest.is_empty() {
            let slow: Vec<String> = self
                .slowest
                .iter()
                .map(|c| format!("{} {:.0} µs", c.id, c.max_us))
                .collect();
            let _ = writeln!(out, "slowest cases: {}", slow.join(", "));
        }
        let _ = writeln!(out, "\ngoals:");
        for g in &self.goals {
            let _ = writeln!(
                out,
                "  {:<4} {:<32} {:>10} (goal {})",
                if g.met { "ok" } else { "MISS" },
                g.name,
                g.actual,
                g.target
            );
        }
        list(&mut out, "missed (expected, not raised)", &s.misses);
        list(
            &mut out,
            "false positives (raised, not expected)",
            &s.false_positives,
        );
        out
    }
}

fn fixed(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn list(out: &mut String, title: &str, items: &[super::metrics::CaseClass]) {
    let _ = writeln!(out, "\n{title}: {}", items.len());
    for i in items {
        let _ = writeln!(out, "  {:<28} {}", i.id, i.class);
    }
}
