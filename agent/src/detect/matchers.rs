//! The matchers of all pattern rules, compiled once into shared automata:
//! one Aho-Corasick automaton for every keyword, one `RegexSet` per view for
//! every regex, one `RegexSet` for every glob. A field is scanned once per
//! automaton whatever the number of rules; only the rules the sets report
//! run their own regex to find positions.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::RegexSet;

use super::{
    rules::{How, Rule, Selector, Signal},
    text::{self, Norm, View, Want},
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

/// A `RegexSet` and, for each of its patterns, (rule, index of the pattern
/// in the rule's `regex` or `word_regex`).
struct Set {
    set: RegexSet,
    owner: Vec<(usize, usize)>,
}

impl Set {
    fn new(patterns: &[String], owner: Vec<(usize, usize)>) -> Self {
        Self {
            set: set(patterns),
            owner,
        }
    }
}

/// What the rules reading one selector need of its text, so that nothing
/// they cannot use is built or searched.
///
/// Every hit of `scan_views` for a rule is kept only if the rule reads the
/// selector (`fields.contains(&sel)`), so a view that no such rule reads,
/// and a pattern of a rule that does not read the selector, cannot add a
/// hit: skipping them changes no result.
struct Plan {
    /// Some rule reading the selector has keywords.
    keywords: bool,
    /// The `regex` patterns of the rules reading the selector (plain view),
    /// in the order of the pack-wide set, so hits come in the same order.
    plain: Set,
    /// Their `word_regex` patterns (word view), likewise.
    word: Set,
    /// The word view is needed: `keywords` or a `word_regex`.
    needs_word: bool,
    /// Some view is needed: keywords, regexes or a signal (the signals are
    /// counted while the plain view is built). When false, the text is not
    /// normalised, nor deobfuscated, nor are its encoded runs decoded: only
    /// `scan_views` reads those, and it would find no rule to report.
    needs_views: bool,
}

/// Buffers the matcher reuses from one text to the next (owned by the
/// detector: one per thread scanning), so normalising a text allocates
/// nothing once they have grown to the size of the texts seen.
#[derive(Default)]
pub struct Scratch {
    /// Views of the field's text (signals included).
    main: Norm,
    /// Views of a deobfuscated or decoded form, one after the other.
    other: Norm,
}

/// Buffer capacity kept between texts: a rare huge text does not pin its
/// buffers for the detector's life.
const MAX_KEPT_SCRATCH: usize = 1 << 20;

impl Scratch {
    fn trim(&mut self) {
        for n in [&mut self.main, &mut self.other] {
            if n.plain.text.capacity() > MAX_KEPT_SCRATCH
                || n.word.text.capacity() > MAX_KEPT_SCRATCH
            {
                *n = Norm::default();
            }
        }
    }
}

pub struct Matchers {
    keywords: Option<AhoCorasick>,
    keyword_rule: Vec<usize>,
    /// Pack-wide sets, for the eager reference scan of the tests.
    #[cfg(test)]
    plain: RegexSet,
    #[cfg(test)]
    plain_owner: Vec<(usize, usize)>,
    #[cfg(test)]
    word: RegexSet,
    #[cfg(test)]
    word_owner: Vec<(usize, usize)>,
    /// One per selector, in the order of `Selector::ALL`.
    plans: Vec<Plan>,
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
        let plans = Selector::ALL
            .iter()
            .map(|&(_, sel)| {
                let reads = |i: usize| rules[i].fields.contains(&sel);
                let subset = |patterns: &[String], owner: &[(usize, usize)]| {
                    let (p, o): (Vec<String>, Vec<(usize, usize)>) = patterns
                        .iter()
                        .zip(owner)
                        .filter(|(_, &(i, _))| reads(i))
                        .map(|(p, &o)| (p.clone(), o))
                        .unzip();
                    Set::new(&p, o)
                };
                let keywords = keyword_rule.iter().any(|&i| reads(i));
                let plain = subset(&plain, &plain_owner);
                let word = subset(&word, &word_owner);
                let needs_word = keywords || !word.owner.is_empty();
                let needs_views =
                    needs_word || !plain.owner.is_empty() || signal_rules.iter().any(|&i| reads(i));
                Plan {
                    keywords,
                    plain,
                    word,
                    needs_word,
                    needs_views,
                }
            })
            .collect();
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
            #[cfg(test)]
            plain: set(&plain),
            #[cfg(test)]
            plain_owner,
            #[cfg(test)]
            word: set(&word),
            #[cfg(test)]
            word_owner,
            plans,
            globs: set(&globs),
            glob_rule,
            data_rules,
            signal_rules,
            scanner: Scanner::new(),
            text_selectors,
        }
    }

    /// The scan as it was before views were built lazily: every view of
    /// every text built, every pattern searched. The reference the tests
    /// compare [`Matchers::scan`] with.
    #[cfg(test)]
    pub fn scan_eager(&self, rules: &[Rule], sel: Selector, raw: &str, json: bool) -> Vec<Hit> {
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
        self.scan_views_eager(rules, sel, &norm, None, &mut hits);
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
                self.scan_views_eager(rules, sel, &n, None, &mut hits);
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
            self.scan_views_eager(
                rules,
                sel,
                &d.norm,
                Some((d.start, d.end, d.encoding)),
                &mut hits,
            );
        }
        self.scan_data(rules, sel, raw, &mut hits);
        self.scan_signals(rules, sel, raw, &norm, &mut hits);
        min_matches(rules, &mut hits);
        hits
    }

    /// Every hit of every pattern rule looking at `sel` in a field's text.
    /// `json` undoes JSON string escapes first (tool arguments). Views are
    /// built in `scratch`'s buffers, and only those the rules reading `sel`
    /// use (see [`Plan`]); the hits are those of [`Matchers::scan_eager`],
    /// in the same order.
    pub fn scan(
        &self,
        rules: &[Rule],
        sel: Selector,
        raw: &str,
        json: bool,
        scratch: &mut Scratch,
    ) -> Vec<Hit> {
        if !self.text_selectors.contains(&sel) {
            return Vec::new();
        }
        let plan = self.plan(sel);
        let mut hits = Vec::new();
        if plan.needs_views {
            self.scan_text(rules, sel, plan, raw, json, scratch, &mut hits);
        }
        self.scan_data(rules, sel, raw, &mut hits);
        // No signal rule reads `sel` unless `plan.needs_views`: then
        // `scratch.main` holds this text's signals; else the loop reports
        // nothing (it skips rules not reading `sel`) whatever it holds.
        if plan.needs_views {
            self.scan_signals(rules, sel, raw, &scratch.main, &mut hits);
        }
        scratch.trim();
        min_matches(rules, &mut hits);
        hits
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the scan's context, passed down once"
    )]
    fn scan_text(
        &self,
        rules: &[Rule],
        sel: Selector,
        plan: &Plan,
        raw: &str,
        json: bool,
        scratch: &mut Scratch,
        hits: &mut Vec<Hit>,
    ) {
        // The word view only if a keyword or `word_regex` reads `sel`: else
        // `scan_views` never looks at it. Ranges only once a view has a
        // hit: see `scan_ranged`.
        let word = plan.needs_word;
        // JSON escapes are undone only if there is one: without a `\\`,
        // `json_unescape` returns the text itself and the identity map
        // (each byte of a character maps to that character's range), and
        // re-basing ranges that are character ranges of the text itself
        // (all view ranges are) through the identity changes none, so
        // the views, their ranges, and those of a deobfuscated form
        // (`compose` with the identity) are the same as without it.
        let unescaped = (json && raw.contains('\\')).then(|| text::json_unescape(raw));
        let (base, outer) = match &unescaped {
            Some((u, map)) => (u.as_str(), Some(map.as_slice())),
            None => (raw, None),
        };
        self.scan_ranged(rules, sel, plan, &mut scratch.main, base, outer, word, hits);
        // Commands and tool arguments are matched again as a shell or SQL
        // parser reads them when they hide words (`'r''m'`, `DROP/**/TABLE`).
        if matches!(sel, Selector::Command | Selector::ToolArgs) {
            if let Some((clear, map)) = text::deobfuscate(base) {
                let map = match outer {
                    Some(outer) => text::compose(&map, outer),
                    None => map,
                };
                self.scan_ranged(
                    rules,
                    sel,
                    plan,
                    &mut scratch.other,
                    &clear,
                    Some(&map),
                    word,
                    hits,
                );
            }
        }
        // Encoded runs: what they decode to is matched like the text, and
        // reported at the encoded run's range, so their views need no
        // ranges of their own (`scan_views` never asks them with
        // `decoded` set). Built one at a time in the same buffers.
        if matches!(sel, Selector::FilePath | Selector::NetDest) {
            return;
        }
        for d in text::decoded_texts(raw, DECODE_DEPTH, MAX_DECODED) {
            scratch.other.build(
                &d.text,
                Want {
                    word: plan.needs_word,
                    ranges: false,
                },
            );
            self.scan_views(
                rules,
                sel,
                plan,
                &scratch.other,
                Some((d.start, d.end, d.encoding)),
                hits,
            );
        }
    }

    /// Scans the views of `text` (re-based through `map` when it is a
    /// transformed form of the field's text), built in `norm`.
    ///
    /// The views are first built without ranges: nearly every text has no
    /// hit, and ranges are only read when a hit is reported. If the scan
    /// adds a hit, its hits are dropped and the views are built again with
    /// ranges and scanned again. This gives the hits of a scan with ranges
    /// from the start: a view's text does not depend on whether ranges are
    /// kept, `scan_views` decides what to report from the view texts and
    /// the hits already in `hits` alone (both the same in the two scans,
    /// once the first scan's hits are dropped), and reads ranges only for
    /// the hits it reports. The signals are counted the same either way.
    #[expect(
        clippy::too_many_arguments,
        reason = "the scan's context, passed down once"
    )]
    fn scan_ranged(
        &self,
        rules: &[Rule],
        sel: Selector,
        plan: &Plan,
        norm: &mut Norm,
        text: &str,
        map: Option<&[(u32, u32)]>,
        word: bool,
        hits: &mut Vec<Hit>,
    ) {
        let before = hits.len();
        norm.build(
            text,
            Want {
                word,
                ranges: false,
            },
        );
        self.scan_views(rules, sel, plan, norm, None, hits);
        if hits.len() == before {
            return;
        }
        hits.truncate(before);
        norm.build(text, Want { word, ranges: true });
        if let Some(map) = map {
            text::rebase(norm, map);
        }
        self.scan_views(rules, sel, plan, norm, None, hits);
    }

    fn scan_signals(
        &self,
        rules: &[Rule],
        sel: Selector,
        raw: &str,
        norm: &Norm,
        hits: &mut Vec<Hit>,
    ) {
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
    }

    #[cfg(test)]
    fn scan_views_eager(
        &self,
        rules: &[Rule],
        sel: Selector,
        norm: &Norm,
        decoded: Option<(usize, usize, &str)>,
        hits: &mut Vec<Hit>,
    ) {
        let sets = [
            (&self.plain, self.plain_owner.as_slice()),
            (&self.word, self.word_owner.as_slice()),
        ];
        self.scan_views_with(rules, sel, true, sets, norm, decoded, hits);
    }

    fn scan_views(
        &self,
        rules: &[Rule],
        sel: Selector,
        plan: &Plan,
        norm: &Norm,
        decoded: Option<(usize, usize, &str)>,
        hits: &mut Vec<Hit>,
    ) {
        let sets = [
            (&plan.plain.set, plan.plain.owner.as_slice()),
            (&plan.word.set, plan.word.owner.as_slice()),
        ];
        self.scan_views_with(rules, sel, plan.keywords, sets, norm, decoded, hits);
    }

    /// The hits of the keywords (if `keywords`) and of the plain and word
    /// `sets` in `norm`'s views.
    #[expect(
        clippy::too_many_arguments,
        reason = "the scan's context, passed down once"
    )]
    fn scan_views_with(
        &self,
        rules: &[Rule],
        sel: Selector,
        keywords: bool,
        sets: [(&RegexSet, &[(usize, usize)]); 2],
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
        if let Some(ac) = self.keywords.as_ref().filter(|_| keywords) {
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
        let [(plain, plain_owner), (word, word_owner)] = sets;
        for (set, owner, view, word) in [
            (plain, plain_owner, &norm.plain, false),
            (word, word_owner, &norm.word, true),
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

    /// Whether the rules reading `sel` need its word view.
    #[cfg(test)]
    pub fn needs_word(&self, sel: Selector) -> bool {
        self.plan(sel).needs_word
    }

    fn plan(&self, sel: Selector) -> &Plan {
        let i = Selector::ALL
            .iter()
            .position(|&(_, s)| s == sel)
            .unwrap_or_default();
        &self.plans[i]
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
