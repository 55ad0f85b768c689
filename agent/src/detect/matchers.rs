//! The matchers of all pattern rules, compiled once into shared automata:
//! one Aho-Corasick automaton for every keyword, one `RegexSet` per view for
//! every regex, one `RegexSet` for every glob. A field is scanned once per
//! automaton whatever the number of rules; only the rules the sets report
//! run their own regex to find positions.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::RegexSet;

use super::{
    rules::{How, Rule, Selector, Signal},
    text::{self, Norm, View},
};
use crate::redact::scan::{Match as DataMatch, Scanner};

/// Matches a single rule may report in one field.
const MAX_HITS_PER_RULE: usize = 16;
/// Encoded runs decoded per field.
const MAX_DECODED: usize = 8;
/// Nesting of encodings undone (base64 of URL-encoded text: 2).
const DECODE_DEPTH: usize = 2;

/// One place a rule matched in a field: the original byte range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub rule: usize,
    pub what: String,
    pub start: usize,
    pub end: usize,
}

pub struct Matchers {
    keywords: Option<AhoCorasick>,
    keyword_rule: Vec<usize>,
    plain: RegexSet,
    plain_owner: Vec<(usize, usize)>,
    word: RegexSet,
    word_owner: Vec<(usize, usize)>,
    globs: RegexSet,
    glob_rule: Vec<usize>,
    /// Pattern rules using data classes / signals (few: checked one by one).
    data_rules: Vec<usize>,
    signal_rules: Vec<usize>,
    scanner: Scanner,
    /// Selectors some rule matches text in: a field no rule reads (most
    /// `file.path`s: globs handle those) is not normalised at all.
    text_selectors: Vec<Selector>,
}

fn set(patterns: &[String]) -> RegexSet {
    // Every pattern compiled on its own already when the rule loaded.
    RegexSet::new(patterns).unwrap_or_else(|_| RegexSet::empty())
}

impl Matchers {
    pub fn new(rules: &[Rule]) -> Self {
        let (mut kws, mut keyword_rule) = (Vec::new(), Vec::new());
        let (mut plain, mut plain_owner) = (Vec::new(), Vec::new());
        let (mut word, mut word_owner) = (Vec::new(), Vec::new());
        let (mut globs, mut glob_rule) = (Vec::new(), Vec::new());
        let (mut data_rules, mut signal_rules) = (Vec::new(), Vec::new());
        let mut text_selectors = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            if !matches!(r.how, How::Match) {
                continue;
            }
            let reads_text = !r.keywords.is_empty()
                || !r.regex.is_empty()
                || !r.word_regex.is_empty()
                || !r.data_classes.is_empty()
                || r.signal.is_some();
            if reads_text {
                text_selectors.extend(r.fields.iter().copied());
            }
            for k in &r.keywords {
                kws.push(k.clone());
                keyword_rule.push(i);
            }
            for (j, re) in r.regex.iter().enumerate() {
                plain.push(re.as_str().to_owned());
                plain_owner.push((i, j));
            }
            for (j, re) in r.word_regex.iter().enumerate() {
                word.push(re.as_str().to_owned());
                word_owner.push((i, j));
            }
            if let Some(g) = &r.globs {
                globs.push(g.as_str().to_owned());
                glob_rule.push(i);
            }
            if !r.data_classes.is_empty() {
                data_rules.push(i);
            }
            if r.signal.is_some() {
                signal_rules.push(i);
            }
        }
        let keywords = (!kws.is_empty())
            .then(|| {
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .build(&kws)
                    .ok()
            })
            .flatten();
        Self {
            keywords,
            keyword_rule,
            plain: set(&plain),
            plain_owner,
            word: set(&word),
            word_owner,
            globs: set(&globs),
            glob_rule,
            data_rules,
            signal_rules,
            scanner: Scanner::new(),
            text_selectors,
        }
    }

    /// Every hit of every pattern rule looking at `sel` in a field's text.
    /// `json` undoes JSON string escapes first (tool arguments).
    pub fn scan(&self, rules: &[Rule], sel: Selector, raw: &str, json: bool) -> Vec<Hit> {
        if !self.text_selectors.contains(&sel) {
            return Vec::new();
        }
        let (norm, unescaped) = if json {
            let (unescaped, map) = text::json_unescape(raw);
            let mut n = Norm::new(&unescaped);
            text::rebase(&mut n, &map);
            (n, Some((unescaped, map)))
        } else {
            (Norm::new(raw), None)
        };
        let mut hits = Vec::new();
        self.scan_views(rules, sel, &norm, None, &mut hits);
        // Commands and tool arguments are matched again as a shell or SQL
        // parser reads them when they hide words (`'r''m'`, `DROP/**/TABLE`).
        if matches!(sel, Selector::Command | Selector::ToolArgs) {
            let base = unescaped.as_ref().map_or(raw, |(u, _)| u.as_str());
            if let Some((clear, map)) = text::deobfuscate(base) {
                let map = match &unescaped {
                    Some((_, outer)) => text::compose(&map, outer),
                    None => map,
                };
                let mut n = Norm::new(&clear);
                text::rebase(&mut n, &map);
                self.scan_views(rules, sel, &n, None, &mut hits);
            }
        }
        // Encoded runs: what they decode to is matched like the text, and
        // reported at the encoded run's range.
        let paths = matches!(sel, Selector::FilePath | Selector::NetDest);
        let decoded = if paths {
            Vec::new()
        } else {
            text::decoded_runs(raw, DECODE_DEPTH, MAX_DECODED)
        };
        for d in decoded {
            self.scan_views(
                rules,
                sel,
                &d.norm,
                Some((d.start, d.end, d.encoding)),
                &mut hits,
            );
        }
        self.scan_data(rules, sel, raw, &mut hits);
        for &i in &self.signal_rules {
            let r = &rules[i];
            let Some((sig, min)) = r.signal else { continue };
            if !r.fields.contains(&sel) {
                continue;
            }
            let (value, (start, end)) = match sig {
                Signal::Invisible => (norm.signals.invisible, norm.signals.invisible_span),
                Signal::MixedScript => (norm.signals.mixed_script, (0, raw.len())),
                Signal::Repetition => (norm.repetition(), (0, raw.len())),
            };
            if value >= min {
                let what = match sig {
                    Signal::Invisible => "invisible_chars",
                    Signal::MixedScript => "mixed_script",
                    Signal::Repetition => "repetition",
                };
                hits.push(Hit {
                    rule: i,
                    what: what.to_owned(),
                    start,
                    end,
                });
            }
        }
        min_matches(rules, &mut hits);
        hits
    }

    fn scan_views(
        &self,
        rules: &[Rule],
        sel: Selector,
        norm: &Norm,
        decoded: Option<(usize, usize, &str)>,
        hits: &mut Vec<Hit>,
    ) {
        let mut push = |rule: usize, view: &View, s: usize, e: usize, what: &str| {
            let r = &rules[rule];
            if hits.iter().filter(|h| h.rule == rule).count() >= MAX_HITS_PER_RULE
                || r.unless
                    .iter()
                    .any(|u| u.is_match(&view.text.as_bytes()[s..e]))
            {
                return;
            }
            let ((start, end), what) = match decoded {
                Some((ds, de, enc)) => ((ds, de), format!("{enc}:{what}")),
                None => (view.original(s, e), what.to_owned()),
            };
            hits.push(Hit {
                rule,
                what,
                start,
                end,
            });
        };
        if let Some(ac) = &self.keywords {
            let w = norm.word.text.as_bytes();
            for m in ac.find_overlapping_iter(&norm.word.text) {
                let rule = self.keyword_rule[m.pattern().as_usize()];
                let bounded = (m.start() == 0 || w[m.start() - 1] == b' ')
                    && (m.end() == w.len() || w[m.end()] == b' ');
                if bounded && rules[rule].fields.contains(&sel) {
                    push(rule, &norm.word, m.start(), m.end(), "keyword");
                }
            }
        }
        for (set, owner, view, word) in [
            (&self.plain, &self.plain_owner, &norm.plain, false),
            (&self.word, &self.word_owner, &norm.word, true),
        ] {
            if set.is_empty() {
                continue;
            }
            for idx in &set.matches(view.text.as_bytes()) {
                let (rule, j) = owner[idx];
                if !rules[rule].fields.contains(&sel) {
                    continue;
                }
                let re = if word {
                    &rules[rule].word_regex[j]
                } else {
                    &rules[rule].regex[j]
                };
                for m in re.find_iter(view.text.as_bytes()).take(MAX_HITS_PER_RULE) {
                    let what = if word {
                        format!("word_regex[{j}]")
                    } else {
                        format!("regex[{j}]")
                    };
                    push(rule, view, m.start(), m.end(), &what);
                }
            }
        }
    }

    fn scan_data(&self, rules: &[Rule], sel: Selector, raw: &str, hits: &mut Vec<Hit>) {
        if !self
            .data_rules
            .iter()
            .any(|&i| rules[i].fields.contains(&sel))
        {
            return;
        }
        let mut found: Vec<DataMatch> = Vec::new();
        self.scanner.scan(raw, &mut found);
        for &i in &self.data_rules {
            let r = &rules[i];
            if !r.fields.contains(&sel) {
                continue;
            }
            for m in found.iter().filter(|m| r.data_classes.contains(&m.class)) {
                if hits.iter().filter(|h| h.rule == i).count() >= MAX_HITS_PER_RULE {
                    break;
                }
                hits.push(Hit {
                    rule: i,
                    what: m.class.name().to_owned(),
                    start: m.start,
                    end: m.end,
                });
            }
        }
    }

    /// Rules whose globs match `path`.
    pub fn glob_rules(&self, path: &str) -> Vec<usize> {
        if self.globs.is_empty() {
            return Vec::new();
        }
        self.globs
            .matches(path.as_bytes())
            .iter()
            .map(|i| self.glob_rule[i])
            .collect()
    }
}

/// Drops the hits of rules that matched fewer times than their
/// `min_matches`, and repeated ranges of one rule (keywords that overlap a
/// regex of the same rule).
fn min_matches(rules: &[Rule], hits: &mut Vec<Hit>) {
    let mut seen = std::collections::HashSet::new();
    hits.retain(|h| seen.insert((h.rule, h.start, h.end)));
    let mut counts = std::collections::HashMap::<usize, usize>::new();
    for h in hits.iter() {
        *counts.entry(h.rule).or_default() += 1;
    }
    hits.retain(|h| counts[&h.rule] >= rules[h.rule].min_matches);
}
