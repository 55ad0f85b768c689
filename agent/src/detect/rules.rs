//! Rule files: the TOML schema and its validation into compiled rules.
//!
//! A rule file holds `[[rule]]` tables. Every rule has an id, a title, a
//! finding class, a severity and MITRE ids, and exactly one way to match:
//! matchers over named fields (`keywords`, `regex`, `word_regex`, `globs`,
//! `data_classes`, `signal`, `above`), a `sequence` of steps within one
//! trace and a time window, or a stateful `detector` with its `params`.
//! docs/detection.md documents every key. Errors name the file and line:
//! TOML errors by their span, semantic errors by the rule's `[[rule]]` line.

use std::collections::BTreeMap;

use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

use super::text::Norm;
use crate::{event::Severity, redact::scan::DataClass};

/// Classes a rule may raise (`finding.class`).
pub const CLASSES: &[&str] = &[
    "prompt_injection",
    "secret",
    "pii",
    "sensitive_file",
    "dangerous_command",
    "destructive_sql",
    "exfiltration",
    "denial_of_wallet",
    "refusal_probing",
    "blind_spot",
    "claimed_vs_actual",
    "unrequested_effect",
    "system_prompt_change",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleFile {
    #[serde(default)]
    pub(super) rule: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSpec {
    id: String,
    title: String,
    class: String,
    severity: Severity,
    #[serde(default)]
    mitre: Vec<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    fields: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    regex: Vec<String>,
    #[serde(default)]
    word_regex: Vec<String>,
    #[serde(default)]
    globs: Vec<String>,
    #[serde(default)]
    data_classes: Vec<String>,
    signal: Option<SignalSpec>,
    #[serde(default)]
    above: BTreeMap<String, f64>,
    #[serde(default)]
    unless: Vec<String>,
    #[serde(default)]
    unless_process: Vec<String>,
    #[serde(default)]
    path_in_args: bool,
    #[serde(default)]
    open_flags: Vec<String>,
    failed_severity: Option<Severity>,
    #[serde(default)]
    severity_by_field: BTreeMap<String, Severity>,
    min_matches: Option<usize>,
    #[serde(default)]
    sequence: Vec<StepSpec>,
    window_s: Option<f64>,
    detector: Option<String>,
    #[serde(default)]
    params: Params,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalSpec {
    name: String,
    min: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    kind: Option<String>,
    class: Option<String>,
    #[serde(default)]
    globs: Vec<String>,
    #[serde(default)]
    new_dest: bool,
    #[serde(default)]
    external: bool,
    #[serde(default)]
    attempts: bool,
}

/// Settings of the stateful detectors; each reads the ones it needs.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// `input_tokens` or `output_tokens` (`token_spike`).
    pub metric: Option<String>,
    /// How far above the baseline's median counts as a spike.
    pub factor: Option<f64>,
    /// Calls of history needed before spikes are judged.
    pub min_history: Option<usize>,
    /// Calls kept in the baseline.
    pub history: Option<usize>,
    /// Smallest value that can be a spike.
    pub min_value: Option<u64>,
    /// Repeats that make a loop (`output_loop`).
    pub count: Option<u32>,
    /// Shortest output text whose repeats count (`output_loop`): "done",
    /// "OK" and "Summary." repeat in every healthy batch job.
    pub min_text: Option<usize>,
    /// llm.calls per minute per process (`call_rate`).
    pub per_minute: Option<usize>,
    /// Calls in the sliding window (`refusal_rate`).
    pub window: Option<usize>,
    pub min_refusals: Option<usize>,
    pub ratio: Option<f64>,
}

/// Where a rule looks. See docs/detection.md "Field selectors".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    Prompt,
    ToolResult,
    Output,
    ToolArgs,
    Command,
    FilePath,
    NetDest,
}

impl Selector {
    pub const ALL: &'static [(&'static str, Selector)] = &[
        ("prompt", Selector::Prompt),
        ("tool_result", Selector::ToolResult),
        ("output", Selector::Output),
        ("tool_args", Selector::ToolArgs),
        ("command", Selector::Command),
        ("file.path", Selector::FilePath),
        ("net.dest", Selector::NetDest),
    ];

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, v)| *v)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Invisible,
    MixedScript,
    Repetition,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Number {
    InputTokens,
    OutputTokens,
    LatencyMs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetectorKind {
    TokenSpike,
    OutputLoop,
    CallRate,
    RefusalRate,
    ContentFilter,
    SystemPrompt,
}

#[derive(Debug)]
pub struct Step {
    pub kind: Option<String>,
    pub class: Option<String>,
    pub globs: Option<Regex>,
    pub new_dest: bool,
    pub external: bool,
    /// With `external`: failed connects (refused, unreachable) count too.
    pub attempts: bool,
}

#[derive(Debug)]
pub enum How {
    Match,
    Sequence { steps: Vec<Step>, window_s: f64 },
    Detector(DetectorKind),
}

/// A validated, compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub class: String,
    pub severity: Severity,
    pub mitre: Vec<String>,
    pub description: String,
    pub fields: Vec<Selector>,
    /// Normalised like the word view.
    pub keywords: Vec<String>,
    pub regex: Vec<Regex>,
    pub word_regex: Vec<Regex>,
    pub globs: Option<Regex>,
    pub data_classes: Vec<DataClass>,
    pub signal: Option<(Signal, usize)>,
    pub above: Vec<(Number, f64)>,
    pub unless: Vec<Regex>,
    pub unless_process: Option<Regex>,
    pub path_in_args: bool,
    pub open_flags: Vec<String>,
    pub failed_severity: Option<Severity>,
    pub severity_by_field: Vec<(Selector, Severity)>,
    pub min_matches: usize,
    pub how: How,
    pub params: Params,
}

impl Rule {
    pub fn severity_for(&self, sel: Selector) -> Severity {
        self.severity_by_field
            .iter()
            .find(|(s, _)| *s == sel)
            .map_or(self.severity, |(_, v)| *v)
    }
}

/// Compiles a rule pattern over bytes, with ASCII classes (`\w`, `\s`,
/// `\b`, `[^x]` of any byte) where the pattern allows it: the views are
/// lowercase and mostly ASCII, and Unicode classes make automata many times
/// larger (slower to build, to start and to search, and the lazy DFA gives
/// up on Unicode `\b` before non-ASCII text). A pattern that needs Unicode
/// (`\p{Greek}`) keeps it. `as_str()` is the pattern as compiled, so the
/// shared `RegexSet`s get the same form.
fn compile(pattern: &str) -> Result<Regex, String> {
    let build = |p: &str| RegexBuilder::new(p).size_limit(1 << 21).build();
    build(&format!("(?-u:{pattern})"))
        .or_else(|_| build(pattern))
        .map_err(|e| format!("bad regex {pattern:?}: {e}"))
}

/// Shell-style globs as one anchored regex: `**` any path, `*` and `?` within
/// one path segment, `{a,b}` alternatives, `~/` any home (`/root`, `/home/*`).
pub fn globs_regex(globs: &[String]) -> Result<Option<Regex>, String> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut alts = Vec::with_capacity(globs.len());
    for g in globs {
        let (prefix, rest) = match g.strip_prefix("~/") {
            Some(r) => ("(?:/root|/home/[^/]+)/", r),
            None => ("", g.as_str()),
        };
        let mut re = String::from(prefix);
        let mut chars = rest.chars().peekable();
        let mut depth = 0usize;
        while let Some(c) = chars.next() {
            match c {
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    re.push_str(".*");
                }
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                '{' => {
                    depth += 1;
                    re.push_str("(?:");
                }
                '}' if depth > 0 => {
                    depth -= 1;
                    re.push(')');
                }
                ',' if depth > 0 => re.push('|'),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        if depth != 0 {
            return Err(format!("unclosed '{{' in glob {g:?}"));
        }
        alts.push(re);
    }
    compile(&format!("^(?:{})$", alts.join("|"))).map(Some)
}

fn mitre_ok(id: &str) -> bool {
    let rest = id.strip_prefix("AML.").unwrap_or(id);
    let Some(num) = rest.strip_prefix('T') else {
        return false;
    };
    let (main, sub) = num.split_once('.').unwrap_or((num, ""));
    main.len() == 4
        && main.bytes().all(|b| b.is_ascii_digit())
        && (sub.is_empty() || (sub.len() == 3 && sub.bytes().all(|b| b.is_ascii_digit())))
}

#[expect(
    clippy::too_many_lines,
    reason = "one check per key, in the order of the schema"
)]
pub(super) fn validate(s: RuleSpec) -> Result<Rule, String> {
    if s.id.is_empty()
        || !s
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "rule id {:?}: use letters, digits, '.', '_', '-'",
            s.id
        ));
    }
    let ctx = |p: String| format!("rule {}: {p}", s.id);
    if !CLASSES.contains(&s.class.as_str()) {
        return Err(ctx(format!("unknown class {:?}", s.class)));
    }
    if s.severity == Severity::Info || s.failed_severity == Some(Severity::Info) {
        return Err(ctx("severity must be low, medium, high or critical".into()));
    }
    if let Some(m) = s.mitre.iter().find(|m| !mitre_ok(m)) {
        return Err(ctx(format!(
            "bad MITRE id {m:?} (AML.T0051.000, T1552.001)"
        )));
    }
    let fields = s
        .fields
        .iter()
        .map(|f| Selector::parse(f).ok_or_else(|| ctx(format!("unknown field selector {f:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let severity_by_field = s
        .severity_by_field
        .iter()
        .map(|(f, v)| {
            Selector::parse(f)
                .map(|sel| (sel, *v))
                .ok_or_else(|| ctx(format!("unknown field selector {f:?} in severity_by_field")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let data_classes = s
        .data_classes
        .iter()
        .map(|c| DataClass::from_name(c).ok_or_else(|| ctx(format!("unknown data class {c:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let signal = match &s.signal {
        None => None,
        Some(sig) => Some((
            match sig.name.as_str() {
                "invisible" => Signal::Invisible,
                "mixed_script" => Signal::MixedScript,
                "repetition" => Signal::Repetition,
                n => return Err(ctx(format!("unknown signal {n:?}"))),
            },
            sig.min.max(1),
        )),
    };
    let above = s
        .above
        .iter()
        .map(|(k, v)| {
            let n = match k.as_str() {
                "input_tokens" => Number::InputTokens,
                "output_tokens" => Number::OutputTokens,
                "latency_ms" => Number::LatencyMs,
                _ => return Err(ctx(format!("unknown number {k:?} in above"))),
            };
            Ok((n, *v))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let regex = s
        .regex
        .iter()
        .map(|p| compile(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ctx)?;
    let word_regex = s
        .word_regex
        .iter()
        .map(|p| compile(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ctx)?;
    let unless = s
        .unless
        .iter()
        .map(|p| compile(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ctx)?;
    let globs = globs_regex(&s.globs).map_err(ctx)?;
    let unless_process = globs_regex(&s.unless_process).map_err(ctx)?;
    let keywords: Vec<String> = s
        .keywords
        .iter()
        .map(|k| Norm::new(k).word.text)
        .filter(|k| !k.is_empty())
        .collect();
    if keywords.len() != s.keywords.len() {
        return Err(ctx("a keyword has no letters or digits".into()));
    }
    let matchers = !keywords.is_empty()
        || !regex.is_empty()
        || !word_regex.is_empty()
        || globs.is_some()
        || !data_classes.is_empty()
        || signal.is_some()
        || !above.is_empty();
    let how =
        match (matchers, s.sequence.is_empty(), &s.detector) {
            (true, true, None) => How::Match,
            (false, false, None) => How::Sequence {
                steps: steps(&s.sequence).map_err(ctx)?,
                window_s: s.window_s.unwrap_or(300.0),
            },
            // A detector may carry `regex` (refusal phrasings), nothing else.
            (_, true, Some(d))
                if keywords.is_empty()
                    && word_regex.is_empty()
                    && globs.is_none()
                    && data_classes.is_empty()
                    && signal.is_none()
                    && above.is_empty()
                    && (regex.is_empty() || d == "refusal_rate") =>
            {
                How::Detector(match d.as_str() {
                    "token_spike" => DetectorKind::TokenSpike,
                    "output_loop" => DetectorKind::OutputLoop,
                    "call_rate" => DetectorKind::CallRate,
                    "refusal_rate" => DetectorKind::RefusalRate,
                    "content_filter" => DetectorKind::ContentFilter,
                    "system_prompt" => DetectorKind::SystemPrompt,
                    d => return Err(ctx(format!("unknown detector {d:?}"))),
                })
            }
            _ => return Err(ctx(
                "give matchers (keywords, regex, word_regex, globs, data_classes, signal, above), \
                 a sequence, or a detector: exactly one of them"
                    .into(),
            )),
        };
    if matches!(how, How::Match) {
        let text_matchers = !keywords.is_empty()
            || !regex.is_empty()
            || !word_regex.is_empty()
            || !data_classes.is_empty()
            || signal.is_some();
        if (text_matchers || globs.is_some()) && fields.is_empty() {
            return Err(ctx("matchers need `fields` to look in".into()));
        }
        if globs.is_some() && !fields.contains(&Selector::FilePath) {
            return Err(ctx("globs match `file.path`: add it to `fields`".into()));
        }
        if s.params.metric.is_some() {
            return Err(ctx("params are for detectors".into()));
        }
    }
    if let Some(m) = s.params.metric.as_deref() {
        if !matches!(m, "input_tokens" | "output_tokens") {
            return Err(ctx(format!("unknown metric {m:?}")));
        }
    }
    Ok(Rule {
        id: s.id,
        title: s.title,
        class: s.class,
        severity: s.severity,
        mitre: s.mitre,
        description: s.description,
        fields,
        keywords,
        regex,
        word_regex,
        globs,
        data_classes,
        signal,
        above,
        unless,
        unless_process,
        path_in_args: s.path_in_args,
        open_flags: s.open_flags,
        failed_severity: s.failed_severity,
        severity_by_field,
        min_matches: s.min_matches.unwrap_or(1).max(1),
        how,
        params: s.params,
    })
}

fn steps(specs: &[StepSpec]) -> Result<Vec<Step>, String> {
    if specs.len() < 2 {
        return Err("a sequence needs at least two steps".into());
    }
    specs
        .iter()
        .map(|st| {
            if st.attempts && !st.external {
                return Err("`attempts` qualifies `external = true`".into());
            }
            if let Some(c) = &st.class {
                if !CLASSES.contains(&c.as_str()) {
                    return Err(format!("unknown class {c:?} in sequence"));
                }
            }
            Ok(Step {
                kind: st.kind.clone(),
                class: st.class.clone(),
                globs: globs_regex(&st.globs)?,
                new_dest: st.new_dest,
                external: st.external,
                attempts: st.attempts,
            })
        })
        .collect()
}
