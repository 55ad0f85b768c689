//! Detection: rules over events, raising `finding` events.
//!
//! CONTRACT (other code builds on these signatures):
//! - `Detector::new(&DetectConfig)` loads the built-in rule pack
//!   (config/rules/*.toml, embedded) and the user's rule directory; a rule
//!   error names the file and line.
//! - `Detector::on_event(&mut self, &Event)` looks at one event *before*
//!   redaction and returns the findings it raises, as complete `finding`
//!   events (envelope filled, in the trace of their evidence, `severity`
//!   set, `finding.class` one of the classes listed on `FindingInfo`), never
//!   carrying a matched value.
//! - `Detector::counters()` gives what it counted (rules loaded, findings by
//!   class, state evictions) for `agent.health`.
//!
//! How an event is judged, in order: its texts (see `select`) are normalised
//! (`text`) and run through every pattern rule at once (`matchers`); a
//! `file.open` also goes through the path globs; an `llm.call` through the
//! numeric thresholds and the stateful detectors (`detectors`); last, the
//! sequence rules see the event together with the classes it just raised.
//! Per trace the detector remembers which texts it already scanned, so the
//! history that `llm.messages` repeats every turn raises nothing twice.
//! docs/detection.md documents the rule format and the built-in pack.

mod decode;
mod detectors;
mod files;
pub mod load;
mod matchers;
pub mod rules;
mod select;
mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_actions;
#[cfg(test)]
mod tests_lazy;
#[cfg(test)]
mod tests_rules;
#[cfg(test)]
mod tests_tuning;
mod text;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use serde::Deserialize;

use self::{
    matchers::{Matchers, Scratch},
    rules::{How, Rule},
    state::{Bounded, TraceState},
};
use crate::{
    event::{kind, Event, FindingInfo, FindingMatch, Severity},
    util::Envelope,
};

/// `[detect]` in the agent's config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Load the built-in rule pack.
    pub builtin: bool,
    /// A directory of the user's own `*.toml` rule files.
    pub rules_dir: Option<PathBuf>,
    /// Rule ids turned off.
    pub disabled: Vec<String>,
    /// Traces whose state is kept (least recently seen forgotten first).
    pub max_traces: usize,
    /// Texts remembered as scanned, and destinations, per trace.
    pub max_seen_per_trace: usize,
    /// Keys (applications, API users, processes) per stateful detector.
    pub max_keys: usize,
    /// Bytes of one field scanned; the rest is not (counted).
    pub max_scan_bytes: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            builtin: true,
            rules_dir: None,
            disabled: Vec::new(),
            max_traces: 4096,
            max_seen_per_trace: 2048,
            max_keys: 4096,
            max_scan_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}:{line}: {problem}")]
    Invalid {
        file: String,
        line: usize,
        problem: String,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// A rule's verdict on one event, before it becomes a `finding` event.
#[derive(Debug)]
struct Found {
    rule: usize,
    severity: Severity,
    matches: Vec<FindingMatch>,
    /// Other events that show it (the judged event is always first).
    more_evidence: Vec<String>,
    detail: Option<String>,
}

/// A compiled rule set: the rules and their shared automata. Immutable, so
/// detectors built from the same rule files share one (see [`pack`]).
struct Pack {
    rules: Vec<Rule>,
    matchers: Matchers,
}

/// Compiled packs kept for reuse, most recent last.
const MAX_PACKS: usize = 4;

type PackKey = (Vec<(String, String)>, Vec<String>);

/// The compiled pack for these rule files and disabled ids: compiled once
/// per process and shared by every detector built from the same texts.
/// Compiling costs tens of milliseconds, and the lazy DFAs of the regexes
/// fill their caches as they search: a detector built afresh for each test
/// or evaluation case would otherwise pay both on its first events, which a
/// running daemon pays once. Keyed by the exact texts, so a changed rule
/// file is compiled anew; at most [`MAX_PACKS`] are kept.
fn pack(cfg: &DetectConfig) -> Result<Arc<Pack>, RuleError> {
    static PACKS: Mutex<Vec<(PackKey, Arc<Pack>)>> = Mutex::new(Vec::new());
    let key = (
        load::sources(cfg.builtin, cfg.rules_dir.as_deref())?,
        cfg.disabled.clone(),
    );
    if let Some((_, p)) = PACKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|(k, _)| *k == key)
    {
        return Ok(Arc::clone(p));
    }
    let rules = load::compile(&key.0, &key.1)?;
    let matchers = Matchers::new(&rules);
    let p = Arc::new(Pack { rules, matchers });
    let mut packs = PACKS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if packs.len() >= MAX_PACKS {
        packs.remove(0);
    }
    packs.push((key, Arc::clone(&p)));
    Ok(p)
}

pub struct Detector {
    env: Envelope,
    cfg: DetectConfig,
    pack: Arc<Pack>,
    traces: Bounded<String, TraceState>,
    stateful: detectors::State,
    counters: BTreeMap<String, u64>,
    /// Evictions inside traces that were themselves evicted since.
    evicted_in_gone_traces: u64,
    /// Buffers of the text normalisation, reused from text to text.
    scratch: Scratch,
}

impl Detector {
    pub fn new(cfg: &DetectConfig, env: Envelope) -> Result<Self, RuleError> {
        let pack = pack(cfg)?;
        let mut counters = BTreeMap::new();
        counters.insert("rules_loaded".to_owned(), pack.rules.len() as u64);
        Ok(Self {
            env,
            cfg: cfg.clone(),
            pack,
            traces: Bounded::new(cfg.max_traces),
            stateful: detectors::State::new(cfg.max_keys),
            counters,
            evicted_in_gone_traces: 0,
            scratch: Scratch::default(),
        })
    }

    /// Ids of the loaded rules.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.pack.rules.iter().map(|r| r.id.as_str())
    }

    /// The findings `ev` raises.
    pub fn on_event(&mut self, ev: &Event) -> Vec<Event> {
        if matches!(ev.kind.as_str(), kind::FINDING | kind::AGENT_HEALTH) {
            return Vec::new();
        }
        let evicted_traces = self.traces.evicted;
        let max_seen = self.cfg.max_seen_per_trace;
        let trace = self
            .traces
            .get_or_insert_with(ev.trace_id.clone(), || TraceState::new(max_seen));
        let before = trace.evictions();
        let mut found = scan_fields(
            &self.pack.rules,
            &self.pack.matchers,
            self.cfg.max_scan_bytes,
            trace,
            ev,
            &mut self.counters,
            &mut self.scratch,
        );
        found.extend(files::judge(&self.pack.rules, &self.pack.matchers, ev));
        found.extend(detectors::numbers(&self.pack.rules, ev));
        found.extend(self.stateful.judge(&self.pack.rules, trace, ev));
        let classes: Vec<&str> = found
            .iter()
            .map(|f| self.pack.rules[f.rule].class.as_str())
            .collect();
        let seq = detectors::sequences(&self.pack.rules, trace, ev, &classes);
        found.extend(seq);
        if let Some(n) = &ev.net {
            trace.dests.insert(state::hash(&[&select::dest(n)]));
        }
        let grown = trace.evictions() - before;
        self.evicted_in_gone_traces += grown;
        if self.traces.evicted > evicted_traces {
            bump(
                &mut self.counters,
                "evicted.traces",
                self.traces.evicted - evicted_traces,
            );
        }
        found.into_iter().map(|f| self.finding(ev, f)).collect()
    }

    fn finding(&mut self, ev: &Event, f: Found) -> Event {
        let rule = &self.pack.rules[f.rule];
        bump(&mut self.counters, "findings", 1);
        bump(&mut self.counters, &format!("findings.{}", rule.class), 1);
        let mut out = self.env.event(kind::FINDING, 0, ev.process.clone());
        out.time.clone_from(&ev.time);
        out.trace_id.clone_from(&ev.trace_id);
        out.parent_span_id = (!ev.span_id.is_empty()).then(|| ev.span_id.clone());
        out.severity = f.severity;
        let mut evidence = vec![ev.id.clone()];
        evidence.extend(f.more_evidence.into_iter().filter(|e| *e != ev.id));
        let detail = f.detail.unwrap_or_else(|| default_detail(&f.matches));
        out.finding = Some(FindingInfo {
            rule: rule.id.clone(),
            title: rule.title.clone(),
            evidence,
            class: rule.class.clone(),
            mitre: rule.mitre.clone(),
            matches: f.matches,
            detail: Some(detail),
            verdict: None,
        });
        out
    }

    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut c = self.counters.clone();
        c.insert("evicted.trace_entries".into(), self.evicted_in_gone_traces);
        c.insert(
            "system_prompt_versions".into(),
            self.stateful.prompt_versions,
        );
        for (k, v) in self.stateful.evictions() {
            c.insert(format!("evicted.{k}"), v);
        }
        c
    }
}

fn bump(c: &mut BTreeMap<String, u64>, k: &str, n: u64) {
    *c.entry(k.to_owned()).or_default() += n;
}

/// `3 matches in tool_result (keyword, base64:keyword)`: where and how,
/// never what.
fn default_detail(matches: &[FindingMatch]) -> String {
    let mut fields: Vec<&str> = matches
        .iter()
        .map(|m| m.field.split('[').next().unwrap_or(&m.field))
        .collect();
    fields.dedup();
    let mut whats: Vec<&str> = matches.iter().map(|m| m.what.as_str()).collect();
    whats.sort_unstable();
    whats.dedup();
    format!(
        "{} match{} in {} ({})",
        matches.len(),
        if matches.len() == 1 { "" } else { "es" },
        fields.join(", "),
        whats.join(", ")
    )
}

/// Runs the pattern rules over the event's new texts: one `Found` per rule,
/// with every place it matched.
fn scan_fields(
    rules: &[Rule],
    matchers: &Matchers,
    max_bytes: usize,
    trace: &mut TraceState,
    ev: &Event,
    counters: &mut BTreeMap<String, u64>,
    scratch: &mut Scratch,
) -> Vec<Found> {
    let seen = &mut trace.seen;
    let mut skipped = 0u64;
    let fields = select::fields(ev, &mut |key, text| {
        let new = seen.insert(state::hash(&[key, text]));
        skipped += u64::from(!new);
        new
    });
    if skipped > 0 {
        bump(counters, "texts_already_scanned", skipped);
    }
    let mut found: Vec<Found> = Vec::new();
    for f in &fields {
        let mut cut = f.text.len().min(max_bytes);
        while !f.text.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut < f.text.len() {
            bump(counters, "texts_cut", 1);
        }
        bump(counters, "texts_scanned", 1);
        for h in matchers.scan(rules, f.sel, &f.text[..cut], f.json, scratch) {
            let r = &rules[h.rule];
            if !matches!(r.how, How::Match)
                || (f.sel == rules::Selector::FilePath && r.globs.is_some())
            {
                continue;
            }
            let m = FindingMatch {
                event: ev.id.clone(),
                field: f.name.clone(),
                what: h.what,
                start: h.start,
                end: h.end,
            };
            let sev = r.severity_for(f.sel);
            match found.iter_mut().find(|x| x.rule == h.rule) {
                Some(x) => {
                    x.severity = x.severity.max(sev);
                    if x.matches.len() < 32 {
                        x.matches.push(m);
                    }
                }
                None => found.push(Found {
                    rule: h.rule,
                    severity: sev,
                    matches: vec![m],
                    more_evidence: Vec::new(),
                    detail: None,
                }),
            }
        }
    }
    found
}
