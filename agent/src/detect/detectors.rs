//! Stateful detectors and sequences: what one event cannot show alone.
//!
//! - `token_spike` (per process exe + API user): a call's tokens far above
//!   the median of that application's last calls. The median, not a mean,
//!   so one earlier spike does not raise the bar for the next.
//! - `output_loop` (per trace): the same output text, or the same tool call
//!   with the same arguments, `count` times.
//! - `call_rate` (per process): more than `per_minute` llm.calls in 60 s.
//! - `refusal_rate` (per API user, else exe): refusals in a sliding window.
//! - `content_filter`: the provider's content filter stopped the answer or
//!   rejected the request. A refusal the model wrote (`output.refusal`) is
//!   not one: a single refusal is ordinary, `refusal_rate` counts them.
//! - `system_prompt` (per exe + provider + model): a system prompt version
//!   not seen before; the first one is only recorded.
//! - sequences: ordered steps within one trace and a time window.
//!
//! Each finding fires once when its condition becomes true (a loop at its
//! `count`-th repeat, a refusal window then starts afresh), so a steady
//! state does not raise a finding per event.

use std::collections::VecDeque;

use sha2::{Digest, Sha256};

use super::{
    rules::{DetectorKind, How, Number, Rule},
    select,
    state::{self, Bounded, Partial, TraceState, MAX_PARTIALS},
    text::{Norm, Want},
    Found,
};
use crate::event::{kind, Event, FindingMatch, LlmCall};

/// System prompt versions remembered per application.
const MAX_PROMPT_VERSIONS: usize = 64;
/// Shortest output text whose repeats make a loop (`min_text`).
const MIN_LOOP_TEXT: usize = 64;
/// Bytes of output text searched for refusal phrasings (they open a reply).
const REFUSAL_PREFIX: usize = 400;

struct Prompts {
    versions: VecDeque<String>,
    last: String,
    lines: Vec<u64>,
}

pub struct State {
    spikes: Bounded<(usize, String), VecDeque<u64>>,
    rates: Bounded<(usize, String), (VecDeque<f64>, f64)>,
    refusals: Bounded<(usize, String), VecDeque<(bool, String)>>,
    prompts: Bounded<String, Prompts>,
    /// System prompt versions recorded (first ones included).
    pub prompt_versions: u64,
    /// Buffers of the refusal check's plain view, reused.
    refusal_norm: Norm,
}

fn found(rule: usize, r: &Rule, evidence: Vec<String>, detail: String) -> Found {
    Found {
        rule,
        severity: r.severity,
        matches: Vec::new(),
        more_evidence: evidence,
        detail: Some(detail),
    }
}

impl State {
    pub fn new(max_keys: usize) -> Self {
        Self {
            spikes: Bounded::new(max_keys),
            rates: Bounded::new(max_keys),
            refusals: Bounded::new(max_keys),
            prompts: Bounded::new(max_keys),
            prompt_versions: 0,
            refusal_norm: Norm::default(),
        }
    }

    pub fn evictions(&self) -> [(&'static str, u64); 4] {
        [
            ("token_baselines", self.spikes.evicted),
            ("call_rates", self.rates.evicted),
            ("refusal_windows", self.refusals.evicted),
            ("system_prompts", self.prompts.evicted),
        ]
    }

    pub(super) fn judge(
        &mut self,
        rules: &[Rule],
        trace: &mut TraceState,
        ev: &Event,
    ) -> Vec<Found> {
        let (Some(llm), kind::LLM_CALL) = (&ev.llm, ev.kind.as_str()) else {
            return Vec::new();
        };
        let exe = ev.process.as_ref().map_or("", |p| p.exe.as_str());
        let t = state::seconds(&ev.time).unwrap_or(0.0);
        let mut out = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let How::Detector(d) = r.how else { continue };
            let p = &r.params;
            let f = match d {
                DetectorKind::TokenSpike => {
                    let key = format!("{exe}\0{}", llm.api_user.as_deref().unwrap_or(""));
                    let metric = p.metric.as_deref().unwrap_or("output_tokens");
                    let value = if metric == "input_tokens" {
                        llm.usage.input_tokens
                    } else {
                        llm.usage.output_tokens
                    };
                    value.and_then(|v| {
                        let hist = self.spikes.get_or_insert_with((i, key), VecDeque::new);
                        let f = spike(i, r, hist, v, metric);
                        hist.push_back(v);
                        while hist.len() > p.history.unwrap_or(20).max(1) {
                            hist.pop_front();
                        }
                        f
                    })
                }
                DetectorKind::OutputLoop => output_loop(i, r, trace, ev, llm),
                DetectorKind::CallRate => {
                    let key = ev.process.as_ref().map_or_else(String::new, |p| {
                        if p.exec_id.is_empty() {
                            p.pid.to_string()
                        } else {
                            p.exec_id.clone()
                        }
                    });
                    let (times, last) = self
                        .rates
                        .get_or_insert_with((i, key), || (VecDeque::new(), f64::MIN));
                    times.push_back(t);
                    while times.front().is_some_and(|&f| f < t - 60.0) || times.len() > 100_000 {
                        times.pop_front();
                    }
                    let limit = p.per_minute.unwrap_or(60);
                    (times.len() > limit && t - *last >= 60.0).then(|| {
                        *last = t;
                        found(
                            i,
                            r,
                            Vec::new(),
                            format!("{} llm.calls in 60 s, more than {limit}", times.len()),
                        )
                    })
                }
                DetectorKind::RefusalRate => {
                    let key = llm.api_user.clone().unwrap_or_else(|| exe.to_owned());
                    let refused = is_refusal(r, llm, &mut self.refusal_norm);
                    let win = self.refusals.get_or_insert_with((i, key), VecDeque::new);
                    refusal_rate(i, r, win, refused, &ev.id)
                }
                DetectorKind::ContentFilter => content_filter(i, r, llm),
                DetectorKind::SystemPrompt => {
                    let key = format!(
                        "{exe}\0{}\0{}",
                        llm.provider,
                        llm.model.as_deref().unwrap_or("")
                    );
                    self.system_prompt(i, r, key, llm)
                }
            };
            out.extend(f);
        }
        out
    }

    fn system_prompt(&mut self, i: usize, r: &Rule, key: String, llm: &LlmCall) -> Option<Found> {
        let sys = llm
            .system
            .as_ref()
            .filter(|s| !s.text.is_empty() || !s.sha256.is_empty())?;
        let sha = if sys.sha256.is_empty() {
            hex::encode(Sha256::digest(sys.text.as_bytes()))
        } else {
            sys.sha256.clone()
        };
        let lines: Vec<u64> = sys.text.lines().map(|l| state::hash(&[l.trim()])).collect();
        let known = self.prompts.contains(&key);
        let app = self.prompts.get_or_insert_with(key, || Prompts {
            versions: VecDeque::new(),
            last: String::new(),
            lines: Vec::new(),
        });
        if app.last == sha {
            return None;
        }
        let new_version = !app.versions.contains(&sha);
        let detail = diff_summary(&app.lines, &lines);
        if new_version {
            self.prompt_versions += 1;
            app.versions.push_back(sha.clone());
            if app.versions.len() > MAX_PROMPT_VERSIONS {
                app.versions.pop_front();
            }
        }
        app.last = sha;
        app.lines = lines;
        (known && new_version).then(|| {
            found(
                i,
                r,
                Vec::new(),
                format!("new system prompt version: {detail}"),
            )
        })
    }
}

fn median(v: &VecDeque<u64>) -> u64 {
    let mut s: Vec<u64> = v.iter().copied().collect();
    s.sort_unstable();
    s[s.len() / 2]
}

fn spike(rule: usize, r: &Rule, hist: &VecDeque<u64>, value: u64, metric: &str) -> Option<Found> {
    let (p, v) = (&r.params, value);
    if hist.len() < p.min_history.unwrap_or(5).max(1) || v < p.min_value.unwrap_or(1000) {
        return None;
    }
    let m = median(hist).max(1);
    let factor = p.factor.unwrap_or(10.0);
    #[expect(
        clippy::cast_precision_loss,
        reason = "token counts are far below 2^52"
    )]
    let ratio = v as f64 / m as f64;
    (ratio > factor).then(|| {
        found(
            rule,
            r,
            Vec::new(),
            format!(
                "{metric} {v} is {ratio:.0}x the median {m} of the last {} calls",
                hist.len()
            ),
        )
    })
}

fn output_loop(
    i: usize,
    r: &Rule,
    trace: &mut TraceState,
    ev: &Event,
    llm: &LlmCall,
) -> Option<Found> {
    let count = r.params.count.unwrap_or(5).max(2);
    let mut keys: Vec<(u64, &str)> = Vec::new();
    let text = llm.output.text.trim();
    if text.len() >= r.params.min_text.unwrap_or(MIN_LOOP_TEXT).max(1) {
        keys.push((state::hash(&["output", text]), "output text"));
    }
    for c in &llm.output.tool_calls {
        keys.push((
            state::hash(&["tool", &c.name, c.arguments.trim()]),
            "tool call",
        ));
    }
    let mut hit = None;
    for (k, what) in keys {
        let (n, first) = trace.loops.get_or_insert_with(k, || (0, ev.id.clone()));
        *n += 1;
        if *n == count && hit.is_none() {
            hit = Some(found(
                i,
                r,
                vec![first.clone()],
                format!("the same {what} {count} times in this trace"),
            ));
        }
    }
    hit
}

fn is_refusal(r: &Rule, llm: &LlmCall, norm: &mut Norm) -> bool {
    if llm
        .output
        .refusal
        .as_deref()
        .is_some_and(|s| !s.trim().is_empty())
        || llm.output.finish_reason.as_deref() == Some("content_filter")
    {
        return true;
    }
    let text = llm.output.text.trim_start();
    if text.is_empty() {
        return false;
    }
    let mut cut = text.len().min(REFUSAL_PREFIX);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    // Only the plain view is matched: the word view and the ranges are
    // not built.
    norm.build(
        &text[..cut],
        Want {
            word: false,
            ranges: false,
        },
    );
    r.regex
        .iter()
        .any(|re| re.is_match(norm.plain.text.as_bytes()))
}

fn refusal_rate(
    i: usize,
    r: &Rule,
    win: &mut VecDeque<(bool, String)>,
    refused: bool,
    id: &str,
) -> Option<Found> {
    let p = &r.params;
    win.push_back((refused, id.to_owned()));
    while win.len() > p.window.unwrap_or(10).max(1) {
        win.pop_front();
    }
    let n = win.iter().filter(|(x, _)| *x).count();
    #[expect(clippy::cast_precision_loss, reason = "window sizes are small")]
    let ratio = n as f64 / win.len() as f64;
    if !refused || n < p.min_refusals.unwrap_or(3) || ratio < p.ratio.unwrap_or(0.5) {
        return None;
    }
    let evidence: Vec<String> = win
        .iter()
        .rev()
        .filter(|(x, e)| *x && e != id)
        .take(8)
        .map(|(_, e)| e.clone())
        .collect();
    let detail = format!("{n} refusals in the last {} calls", win.len());
    // Start afresh: the next finding needs new refusals.
    win.clear();
    Some(found(i, r, evidence, detail))
}

/// Finish reasons that mean the provider's filter, not the model, ended
/// the answer: `OpenAI` and Azure (`content_filter`), Bedrock guardrails and
/// filters, Gemini's safety stops.
const FILTER_FINISH_REASONS: &[&str] = &[
    "content_filter",
    "guardrail_intervened",
    "content_filtered",
    "CONTENT_FILTERED",
    "SAFETY",
    "PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "IMAGE_SAFETY",
    "MODEL_ARMOR",
];

fn content_filter(i: usize, r: &Rule, llm: &LlmCall) -> Option<Found> {
    let o = &llm.output;
    let error = llm.error.as_deref().unwrap_or("").to_ascii_lowercase();
    let detail = if o
        .finish_reason
        .as_deref()
        .is_some_and(|f| FILTER_FINISH_REASONS.contains(&f))
    {
        "the provider's content filter stopped the answer"
    } else if [
        "content_filter",
        "content_policy",
        "content management policy",
    ]
    .iter()
    .any(|k| error.contains(k))
    {
        "the provider rejected the request under its content policy"
    } else {
        return None;
    };
    Some(found(i, r, Vec::new(), detail.to_owned()))
}

/// "+2 lines, -1 line, 34% changed", by line multisets.
fn diff_summary(old: &[u64], new: &[u64]) -> String {
    let mut pool: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for h in old {
        *pool.entry(*h).or_default() += 1;
    }
    let mut added = 0usize;
    for h in new {
        match pool.get_mut(h) {
            Some(n) if *n > 0 => *n -= 1,
            _ => added += 1,
        }
    }
    let removed: usize = pool.values().sum();
    let total = (old.len() + new.len()).max(1);
    let plural = |n: usize| if n == 1 { "line" } else { "lines" };
    format!(
        "+{added} {}, -{removed} {}, {}% changed",
        plural(added),
        plural(removed),
        (added + removed) * 100 / total
    )
}

/// `above` thresholds on `llm.call` numbers.
pub(super) fn numbers(rules: &[Rule], ev: &Event) -> Vec<Found> {
    let (Some(llm), kind::LLM_CALL) = (&ev.llm, ev.kind.as_str()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        for &(n, limit) in &r.above {
            #[expect(
                clippy::cast_precision_loss,
                reason = "token counts are far below 2^52"
            )]
            let (value, field) = match n {
                Number::InputTokens => (
                    llm.usage.input_tokens.map(|v| v as f64),
                    "llm.usage.input_tokens",
                ),
                Number::OutputTokens => (
                    llm.usage.output_tokens.map(|v| v as f64),
                    "llm.usage.output_tokens",
                ),
                Number::LatencyMs => (llm.latency_ms, "llm.latency_ms"),
            };
            if let Some(v) = value.filter(|v| *v > limit) {
                let mut f = found(i, r, Vec::new(), format!("{field} {v} above {limit}"));
                f.matches.push(FindingMatch {
                    event: ev.id.clone(),
                    field: field.to_owned(),
                    what: "above".into(),
                    start: 0,
                    end: 0,
                });
                out.push(f);
                break;
            }
        }
    }
    out
}

/// Advances the sequence rules with `ev`, which raised `classes`; returns
/// the sequences it completes (evidence: `ev` first, then earlier steps).
pub(super) fn sequences(
    rules: &[Rule],
    trace: &mut TraceState,
    ev: &Event,
    classes: &[&str],
) -> Vec<Found> {
    let t = state::seconds(&ev.time).unwrap_or(0.0);
    let mut out: Vec<Found> = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let How::Sequence { steps, window_s } = &r.how else {
            continue;
        };
        let ok = |s: usize| {
            let st = &steps[s];
            st.kind.as_ref().is_none_or(|k| *k == ev.kind)
                && st
                    .class
                    .as_ref()
                    .is_none_or(|c| classes.contains(&c.as_str()))
                && st.globs.as_ref().is_none_or(|g| {
                    ev.file
                        .as_ref()
                        .is_some_and(|f| g.is_match(f.path.as_bytes()))
                })
                && (!st.external
                    || ev
                        .net
                        .as_ref()
                        .is_some_and(|n| select::external(n, st.attempts)))
                && (!st.new_dest
                    || ev
                        .net
                        .as_ref()
                        .is_some_and(|n| !trace.dests.contains(state::hash(&[&select::dest(n)]))))
        };
        let last = steps.len() - 1;
        trace
            .partials
            .retain(|p| p.rule != i || t - p.started <= *window_s);
        let mut done: Vec<String> = Vec::new();
        let mut advanced = false;
        for p in trace.partials.iter_mut().filter(|p| p.rule == i) {
            if ok(p.next) {
                p.evidence.push(ev.id.clone());
                p.next += 1;
                advanced = true;
            }
        }
        trace.partials.retain(|p| {
            if p.rule == i && p.next > last {
                done.extend(p.evidence.iter().rev().skip(1).cloned());
                false
            } else {
                true
            }
        });
        if !advanced && ok(0) {
            if trace.partials.len() >= MAX_PARTIALS {
                trace.partials.remove(0);
                trace.evicted_partials += 1;
            }
            trace.partials.push(Partial {
                rule: i,
                next: 1,
                started: t,
                evidence: vec![ev.id.clone()],
            });
        }
        if !done.is_empty() {
            done.dedup();
            done.truncate(8);
            let detail = format!("{} steps within {window_s:.0} s in one trace", steps.len());
            out.push(found(i, r, done, detail));
        }
    }
    out
}
