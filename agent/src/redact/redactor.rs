//! Rewrites every field of an event that carries captured text, so that no
//! secret or personal value reaches a sink in clear.
//!
//! Per event, two passes:
//! 1. each field is scanned, raw and (when it holds backslashes) as its
//!    JSON-unescaped view; matches in the view are mapped back to raw
//!    ranges that cover whole escapes;
//! 2. every value found anywhere in the event is also searched for
//!    literally in every field (as is and JSON-escaped), so a password
//!    recognised by its `password=` keyword in one field is also redacted
//!    where it appears bare in another.
//!
//! Then overlapping ranges are merged (the most specific class names the
//! merged range) and replaced by markers. Text that already holds markers
//! is left as is, so redaction is idempotent.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Mutex, PoisonError},
};

use regex::Regex;
use sha2::{Digest, Sha256};

use super::policy::{self, Mode, RedactConfig, RedactError};
use super::scan::{DataClass, Match, Scanner};
use super::text::{self, json_pieces, json_string_contents, Piece, Unescaped};
use crate::event::Event;

/// Values shorter than this are not searched for in other fields: a
/// three-letter password would redact every word containing it.
const MIN_PROPAGATED_CHARS: usize = 4;
/// Distinct values searched for across the fields of one event.
const MAX_PROPAGATED_VALUES: usize = 256;
/// Rescans after a rewrite, at most; each round only runs when the last
/// one changed the text.
const MAX_SETTLE_ROUNDS: usize = 3;
/// What replaces a field whose scan stopped at the match cap.
const OVERFLOW_MARKER: &str = "[dropped:overflow]";

/// What one `redact_event` (or a sum of them) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedactStats {
    /// Values masked, hashed or dropped, per class.
    pub redacted: BTreeMap<DataClass, u64>,
    /// Fields (list fields: elements) whose text changed.
    pub fields_touched: u64,
    /// Fields replaced whole by `[dropped:<class>]`.
    pub fields_dropped: u64,
    /// Fields replaced whole because they held more than
    /// [`super::scan::MAX_MATCHES`] candidates.
    pub fields_overflowed: u64,
}

impl RedactStats {
    /// Adds `other` into `self` (for totals since start).
    pub fn add(&mut self, other: &RedactStats) {
        for (class, n) in &other.redacted {
            *self.redacted.entry(*class).or_default() += n;
        }
        self.fields_touched += other.fields_touched;
        self.fields_dropped += other.fields_dropped;
        self.fields_overflowed += other.fields_overflowed;
    }

    /// Values redacted, all classes together.
    pub fn total(&self) -> u64 {
        self.redacted.values().sum()
    }

    /// Counters for `agent.health`: `redacted_<class>` for every class (zero
    /// included, so dashboards see the series), `redacted_fields`,
    /// `redacted_fields_dropped`, `redacted_fields_overflowed`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut c: BTreeMap<String, u64> = DataClass::ALL
            .iter()
            .map(|class| {
                let n = self.redacted.get(class).copied().unwrap_or(0);
                (format!("redacted_{}", class.name()), n)
            })
            .collect();
        c.insert("redacted_fields".into(), self.fields_touched);
        c.insert("redacted_fields_dropped".into(), self.fields_dropped);
        c.insert("redacted_fields_overflowed".into(), self.fields_overflowed);
        c
    }

    fn count(&mut self, class: DataClass) {
        *self.redacted.entry(class).or_default() += 1;
    }
}

/// A value found in a field: raw byte range, class, and the value as the
/// user meant it (unescaped), which is what hashes and hints use.
#[derive(Clone, Debug)]
struct Found {
    start: usize,
    end: usize,
    class: DataClass,
    value: String,
}

/// A field holding captured text. Lists (argv) are scanned joined by spaces
/// so that `mysql -p…` or `-H "Authorization: Bearer …"` keep their context.
enum Field<'a> {
    Text(&'a mut String),
    List(&'a mut Vec<String>),
}

impl Field<'_> {
    /// The text scanned: the field's own, or a list's elements joined.
    fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Field::Text(s) => std::borrow::Cow::Borrowed(s.as_str()),
            Field::List(v) => std::borrow::Cow::Owned(v.join(" ")),
        }
    }
}

/// Every field of `ev` that carries captured text. `llm.system.sha256`
/// stays: it identifies the prompt's version without holding its text.
fn fields(ev: &mut Event) -> Vec<Field<'_>> {
    let mut f = Vec::new();
    if let Some(p) = ev.process.as_mut() {
        f.push(Field::List(&mut p.args));
    }
    if let Some(l) = ev.llm.as_mut() {
        if let Some(s) = l.system.as_mut() {
            f.push(Field::Text(&mut s.text));
        }
        for m in &mut l.messages {
            f.push(Field::Text(&mut m.content));
            f.extend(
                m.tool_calls
                    .iter_mut()
                    .map(|t| Field::Text(&mut t.arguments)),
            );
        }
        let o = &mut l.output;
        f.push(Field::Text(&mut o.text));
        f.extend(o.refusal.as_mut().map(Field::Text));
        f.extend(o.reasoning.as_mut().map(Field::Text));
        f.extend(
            o.tool_calls
                .iter_mut()
                .map(|t| Field::Text(&mut t.arguments)),
        );
        f.extend(l.error.as_mut().map(Field::Text));
        f.extend(l.api_user.as_mut().map(Field::Text));
        f.push(Field::Text(&mut l.path));
    }
    if let Some(t) = ev.tool.as_mut() {
        f.push(Field::Text(&mut t.arguments));
        f.extend(t.result.as_mut().map(Field::Text));
        // An MCP server's error message may quote what it was sent.
        if let Some(m) = t.mcp.as_mut() {
            f.extend(m.error.as_mut().map(Field::Text));
            f.push(Field::Text(&mut m.path));
        }
    }
    if let Some(x) = ev.exec.as_mut() {
        f.push(Field::Text(&mut x.filename));
        f.push(Field::List(&mut x.args));
    }
    if let Some(file) = ev.file.as_mut() {
        f.push(Field::Text(&mut file.path));
    }
    f
}

/// Applies a [`RedactConfig`] to events.
pub struct Redactor {
    scanner: Scanner,
    config: RedactConfig,
    key: Vec<u8>,
    markers: Regex,
    /// `None`: every text is scanned afresh ([`Redactor::without_cache`]).
    cache: Option<Mutex<ScanCache>>,
}

impl Redactor {
    /// Validates the config and loads (or creates) the HMAC key.
    pub fn new(config: &RedactConfig) -> Result<Self, RedactError> {
        config.validate()?;
        let key = if let Some(path) = &config.hmac_key_file {
            policy::load_or_create_key(path)?
        } else {
            tracing::warn!(
                "redact: no hmac_key_file set; hashed values use a key made for this run and will not join across restarts"
            );
            policy::random_key()?
        };
        Self::with_key(config, key)
    }

    /// Like [`Redactor::new`] with a given key (tests, or a key from a
    /// secret store).
    pub fn with_key(config: &RedactConfig, key: Vec<u8>) -> Result<Self, RedactError> {
        config.validate()?;
        Ok(Self {
            scanner: Scanner::new(),
            config: config.clone(),
            key,
            markers: Regex::new(&text::marker_pattern()).expect("static marker regex"),
            cache: Some(Mutex::new(ScanCache::default())),
        })
    }

    /// Rewrites every captured-text field of `ev` in place. Texts seen
    /// recently are not scanned again (see [`ScanCache`]); the result is
    /// the same as without it ([`Redactor::without_cache`]).
    pub fn redact_event(&self, ev: &mut Event) -> RedactStats {
        match &self.cache {
            Some(cache) => {
                let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
                self.redact_with(ev, Some(&mut cache))
            }
            None => self.redact_with(ev, None),
        }
    }

    /// This redactor without its cache: [`Redactor::redact_event`] then
    /// scans every text afresh (the reference the cache is tested against).
    #[must_use]
    pub fn without_cache(mut self) -> Self {
        self.cache = None;
        self
    }

    /// `redact_cache_hits`, `redact_cache_misses` (texts scanned) and
    /// `redact_cache_evicted` since start, for `agent.health`.
    pub fn cache_counters(&self) -> BTreeMap<String, u64> {
        let (hits, misses, evicted) = self.cache.as_ref().map_or((0, 0, 0), |c| {
            let c = c.lock().unwrap_or_else(PoisonError::into_inner);
            (c.hits, c.misses, c.evicted)
        });
        BTreeMap::from([
            ("redact_cache_hits".to_owned(), hits),
            ("redact_cache_misses".to_owned(), misses),
            ("redact_cache_evicted".to_owned(), evicted),
        ])
    }

    fn redact_with(&self, ev: &mut Event, mut cache: Option<&mut ScanCache>) -> RedactStats {
        let mut stats = RedactStats::default();
        let mut fields = fields(ev);
        let mut found: Vec<Option<Vec<Found>>> = fields
            .iter()
            .map(|f| self.analyze_cached(&f.text(), cache.as_deref_mut()))
            .collect();

        let known = self.known_values(&found);
        if !known.is_empty() {
            for (field, found) in fields.iter().zip(&mut found) {
                if let Some(found) = found.as_mut() {
                    self.find_known(&field.text(), &known, found);
                }
            }
        }

        for (field, found) in fields.iter_mut().zip(found) {
            let Some(first) = found.as_ref().map(Vec::is_empty) else {
                // Overflowed: replaced whole, nothing left to settle.
                self.rewrite_field(field, found, &mut stats);
                continue;
            };
            if first {
                continue;
            }
            self.rewrite_field(field, found, &mut stats);
            // A marker can expose a neighbour that its value hid (a phone
            // glued to a card: `4111…1111+44 20 …`); rescan until stable,
            // so that redacting twice changes nothing.
            for _ in 0..MAX_SETTLE_ROUNDS {
                let found = {
                    let text = field.text();
                    let mut found = self.analyze_cached(&text, cache.as_deref_mut());
                    if let Some(found) = found.as_mut() {
                        if !known.is_empty() {
                            self.find_known(&text, &known, found);
                        }
                    }
                    found
                };
                if !self.rewrite_field(field, found, &mut stats) {
                    break;
                }
            }
        }
        stats
    }

    /// [`Redactor::analyze`], from `cache` when it saw the same bytes.
    fn analyze_cached(&self, text: &str, cache: Option<&mut ScanCache>) -> Option<Vec<Found>> {
        let Some(cache) = cache else {
            return self.analyze(text);
        };
        let key: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if let Some(found) = cache.get(&key) {
            return found;
        }
        let found = self.analyze(text);
        cache.insert(key, found.clone());
        found
    }

    /// Rewrites one field from its values; `true` when it changed.
    fn rewrite_field(
        &self,
        field: &mut Field<'_>,
        found: Option<Vec<Found>>,
        stats: &mut RedactStats,
    ) -> bool {
        match field {
            Field::Text(s) => match self.rewrite(s, found, stats) {
                Some(new) if new != **s => {
                    **s = new;
                    stats.fields_touched += 1;
                    true
                }
                _ => false,
            },
            Field::List(items) => self.rewrite_list(items, found, stats),
        }
    }

    /// Redacts one standalone text (not part of an event) with the same
    /// rules; returns the text to keep.
    pub fn redact_text(&self, text: &str, stats: &mut RedactStats) -> String {
        let mut cur = text.to_owned();
        for _ in 0..=MAX_SETTLE_ROUNDS {
            let found = self.analyze(&cur);
            match self.rewrite(&cur, found, stats) {
                Some(new) if new != cur => cur = new,
                _ => break,
            }
        }
        cur
    }

    /// Values in `text`, or `None` when the scan stopped at its cap.
    fn analyze(&self, text: &str) -> Option<Vec<Found>> {
        let mut matches: Vec<Match> = Vec::new();
        if !self.scanner.scan_for_redaction(text, &mut matches) {
            return None;
        }
        let mut found: Vec<Found> = matches
            .iter()
            .map(|m| {
                let (start, end) = text::align_to_escapes(text, m.start, m.end);
                Found {
                    start,
                    end,
                    class: m.class,
                    value: text::unescape(&text[m.start..m.end]),
                }
            })
            .collect();
        if let Some(view) = Unescaped::of(text) {
            matches.clear();
            if !self.scanner.scan_for_redaction(&view.text, &mut matches) {
                return None;
            }
            found.extend(matches.iter().map(|m| Found {
                start: view.raw_start(m.start),
                end: view.raw_end(m.end),
                class: m.class,
                value: view.text[m.start..m.end].to_owned(),
            }));
        }
        let markers = self.marker_ranges(text);
        found.retain(|f| !overlaps_any(&markers, f.start, f.end));
        Some(found)
    }

    fn marker_ranges(&self, text: &str) -> Vec<(usize, usize)> {
        self.markers
            .find_iter(text)
            .map(|m| (m.start(), m.end()))
            .collect()
    }

    /// The values worth searching for in every field: found, not kept,
    /// long enough to be specific.
    fn known_values(&self, found: &[Option<Vec<Found>>]) -> Vec<(DataClass, String)> {
        let mut set = BTreeSet::new();
        for f in found.iter().flatten().flatten() {
            if self.config.mode(f.class) != Mode::Keep
                && f.value.chars().count() >= MIN_PROPAGATED_CHARS
            {
                set.insert((f.class.rank(), f.class, f.value.clone()));
            }
        }
        set.into_iter()
            .take(MAX_PROPAGATED_VALUES)
            .map(|(_, c, v)| (c, v))
            .collect()
    }

    /// Adds the literal occurrences of known values in `text`.
    fn find_known(&self, text: &str, known: &[(DataClass, String)], found: &mut Vec<Found>) {
        let markers = self.marker_ranges(text);
        for (class, value) in known {
            let escaped = text::json_escaped(value);
            for needle in std::iter::once(value.as_str()).chain(escaped.as_deref()) {
                for start in memchr::memmem::find_iter(text.as_bytes(), needle.as_bytes()) {
                    let end = start + needle.len();
                    if !glued(text.as_bytes(), start, end) && !overlaps_any(&markers, start, end) {
                        found.push(Found {
                            start,
                            end,
                            class: *class,
                            value: value.clone(),
                        });
                    }
                }
            }
        }
    }

    /// The marker that replaces one value.
    fn marker(&self, class: DataClass, value: &str) -> String {
        match self.config.mode(class) {
            Mode::Hash => text::hash_token(&self.key, class, value),
            _ => text::mask(class, value),
        }
    }

    /// The new text of a field, or `None` when nothing changes.
    fn rewrite(
        &self,
        text: &str,
        found: Option<Vec<Found>>,
        stats: &mut RedactStats,
    ) -> Option<String> {
        let Some(found) = found else {
            stats.fields_overflowed += 1;
            return Some(OVERFLOW_MARKER.to_owned());
        };
        let merged = self.merge(text, found);
        if merged.is_empty() {
            return None;
        }
        for f in &merged {
            stats.count(f.class);
        }
        if let Some(class) = self.dropped_class(&merged) {
            stats.fields_dropped += 1;
            let marker = format!("[dropped:{}]", class.name());
            // A JSON text stays JSON: the marker as a string literal.
            let is_json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
            return Some(if is_json {
                format!("\"{marker}\"")
            } else {
                marker
            });
        }
        let strings = json_string_contents(text);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for f in &merged {
            let marker = self.marker(f.class, &f.value);
            let pieces = match &strings {
                Some(strings) => json_pieces(text, strings, f.start, f.end),
                None => vec![(f.start, f.end, Piece::Replace)],
            };
            for (start, end, piece) in pieces {
                out.push_str(&text[at..start]);
                match piece {
                    Piece::Replace => out.push_str(&marker),
                    Piece::Quote => {
                        out.push('"');
                        out.push_str(&marker);
                        out.push('"');
                    }
                    Piece::Keep => out.push_str(&text[start..end]),
                }
                at = end;
            }
        }
        out.push_str(&text[at..]);
        Some(out)
    }

    /// Redacts the elements of a list field from matches in its joined text.
    fn rewrite_list(
        &self,
        items: &mut [String],
        found: Option<Vec<Found>>,
        stats: &mut RedactStats,
    ) -> bool {
        let Some(found) = found else {
            if items.iter().all(|s| s == OVERFLOW_MARKER) {
                return false;
            }
            stats.fields_overflowed += 1;
            for s in items.iter_mut() {
                OVERFLOW_MARKER.clone_into(s);
            }
            return true;
        };
        let mut changed = false;
        let merged = self.merge(&items.join(" "), found);
        let mut offset = 0;
        for item in items.iter_mut() {
            let (lo, hi) = (offset, offset + item.len());
            offset = hi + 1;
            let mine: Vec<Found> = merged
                .iter()
                .filter(|f| f.start < hi && f.end > lo)
                .map(|f| Found {
                    start: f.start.max(lo) - lo,
                    end: f.end.min(hi) - lo,
                    class: f.class,
                    value: f.value.clone(),
                })
                .collect();
            if mine.is_empty() {
                continue;
            }
            // `rewrite` merges again; pieces are already disjoint.
            if let Some(new) = self.rewrite(item, Some(mine), stats) {
                if new != *item {
                    *item = new;
                    stats.fields_touched += 1;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Sorts, merges overlapping ranges (the most specific class names the
    /// union; its value is the union's text), and leaves out kept classes.
    fn merge(&self, text: &str, mut found: Vec<Found>) -> Vec<Found> {
        found.sort_by_key(|f| (f.start, usize::MAX - f.end));
        let mut merged: Vec<Found> = Vec::with_capacity(found.len());
        for f in found {
            if f.start >= f.end || f.end > text.len() {
                continue;
            }
            match merged.last_mut() {
                Some(last) if f.start < last.end => {
                    if f.end > last.end {
                        last.end = f.end;
                        last.value = text::unescape(&text[last.start..last.end]);
                    }
                    if f.class.rank() < last.class.rank() {
                        last.class = f.class;
                    }
                }
                _ => merged.push(f),
            }
        }
        merged.retain(|f| self.config.mode(f.class) != Mode::Keep);
        merged
    }

    /// The most specific class among `found` whose mode is `drop`.
    fn dropped_class(&self, found: &[Found]) -> Option<DataClass> {
        found
            .iter()
            .map(|f| f.class)
            .filter(|&c| self.config.mode(c) == Mode::Drop)
            .min_by_key(|c| c.rank())
    }
}

/// Texts whose scan results are remembered, per generation (see
/// [`ScanCache`]); two generations are kept.
const CACHE_ENTRIES_PER_GENERATION: usize = 16 * 1024;
/// Results with more values than this are not remembered: such texts are
/// rare, and their values would make one entry large.
const MAX_CACHED_VALUES: usize = 64;

/// What [`Redactor::analyze`] found in recently seen texts, so that the
/// history an LLM request repeats every turn is scanned once, not once per
/// turn.
///
/// Keyed by the SHA-256 of the text's exact bytes: a hit means the same
/// bytes (a collision would need a SHA-256 collision, which nobody can
/// make), so a hit gives exactly what scanning would give and redaction
/// then proceeds as without the cache — propagation across the fields of
/// the event and the rewrite run on every event as before. The cache holds
/// no texts, only digests and the values found (already in memory in the
/// events being redacted); it lives in memory only.
///
/// Bounded: two generations of [`CACHE_ENTRIES_PER_GENERATION`] entries;
/// when the current one is full the older one is forgotten (counted in
/// `evicted`) and a hit in it is moved to the current one.
#[derive(Default)]
struct ScanCache {
    current: HashMap<[u8; 32], Option<Vec<Found>>>,
    previous: HashMap<[u8; 32], Option<Vec<Found>>>,
    hits: u64,
    misses: u64,
    evicted: u64,
}

impl ScanCache {
    /// The remembered result of `analyze` for `key` (itself an `Option`),
    /// or `None` when the text was not seen.
    #[allow(
        clippy::option_option,
        reason = "outer: seen or not; inner: what analyze returned"
    )]
    fn get(&mut self, key: &[u8; 32]) -> Option<Option<Vec<Found>>> {
        if let Some(v) = self.current.get(key) {
            self.hits += 1;
            return Some(v.clone());
        }
        if let Some(v) = self.previous.remove(key) {
            self.hits += 1;
            self.insert(*key, v.clone());
            return Some(v);
        }
        self.misses += 1;
        None
    }

    fn insert(&mut self, key: [u8; 32], found: Option<Vec<Found>>) {
        if found.as_ref().is_some_and(|f| f.len() > MAX_CACHED_VALUES) {
            return;
        }
        if self.current.len() >= CACHE_ENTRIES_PER_GENERATION {
            self.evicted += self.previous.len() as u64;
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, found);
    }
}

/// Whether an occurrence of a known value continues a longer word or
/// number (`hunter22` in `hunter223`): then it is not that value, and
/// redacting it would change the context the scanner judged its neighbours by.
fn glued(b: &[u8], start: usize, end: usize) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let before = start > 0 && word(b[start - 1]) && word(b[start]);
    let after = end < b.len() && word(b[end]) && word(b[end - 1]);
    before || after
}

/// Whether `[start, end)` overlaps one of `ranges` (sorted, disjoint).
fn overlaps_any(ranges: &[(usize, usize)], start: usize, end: usize) -> bool {
    let i = ranges.partition_point(|&(_, e)| e <= start);
    ranges.get(i).is_some_and(|&(s, _)| s < end)
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn key(i: usize) -> [u8; 32] {
        Sha256::digest(i.to_le_bytes()).into()
    }

    #[test]
    fn the_cache_is_bounded_and_counts_what_it_forgets() {
        let mut c = ScanCache::default();
        let n = CACHE_ENTRIES_PER_GENERATION;
        for i in 0..=2 * n {
            c.insert(key(i), Some(Vec::new()));
        }
        // Two generations filled; the third insert dropped the first.
        assert_eq!(c.evicted, n as u64);
        assert!(c.current.len() + c.previous.len() <= 2 * n);
        assert!(c.get(&key(0)).is_none());
        assert_eq!(c.misses, 1);
        // A hit in the older generation moves the entry to the current one.
        assert!(c.get(&key(n + 1)).is_some());
        assert!(c.current.contains_key(&key(n + 1)));
        assert!(!c.previous.contains_key(&key(n + 1)));
        assert_eq!(c.hits, 1);
    }

    #[test]
    fn results_with_many_values_are_not_kept() {
        let mut c = ScanCache::default();
        let found = Found {
            start: 0,
            end: 1,
            class: DataClass::Email,
            value: "x".into(),
        };
        c.insert(key(1), Some(vec![found; MAX_CACHED_VALUES + 1]));
        c.insert(key(2), None);
        assert!(c.get(&key(1)).is_none());
        assert!(matches!(c.get(&key(2)), Some(None)));
    }
}
