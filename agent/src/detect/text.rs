//! Text normalisation before matching.
//!
//! Attackers dress instructions up so that naive matching misses them:
//! zero-width characters between letters, Cyrillic or fullwidth lookalikes,
//! `1gn0re`, `ignore_all_previous`, or the whole sentence in base64. Rules
//! therefore match normalised *views* of a field's text, never the raw text:
//!
//! - the **plain** view: invisible code points removed (Unicode tag
//!   characters, which spell ASCII invisibly, are turned back into ASCII),
//!   fullwidth forms and Cyrillic/Greek lookalikes folded to ASCII, every
//!   letter lowercased, every run of whitespace one space. Regexes
//!   (`regex`) run on it.
//! - the **word** view, built from the plain one: only letters and digits
//!   survive, everything else separates words (one space), and in a word
//!   that has letters the leetspeak digits and `@`/`$` become letters
//!   (`1gn0r3` → `ignore`). Keywords and `word_regex` run on it.
//!
//! Every byte of a view remembers the byte range of the original character it
//! came from, so a match in a view is reported as a range of the captured
//! text. One pass per view, no backtracking: linear in the input, and input
//! is cut at a configured size before it gets here.

use super::decode;

/// Code points that render as nothing (zero-width, bidi controls, tags).
/// Returns `None` for ordinary characters, else whether it counts as a
/// suspicious invisible (joiners and variation selectors are part of emoji
/// and do not count).
fn invisible(c: char) -> Option<bool> {
    match u32::from(c) {
        0x200D | 0xFE00..=0xFE0F | 0x00AD | 0x034F | 0xE0100..=0xE01EF => Some(false),
        0x200B
        | 0x200C
        | 0x200E
        | 0x200F
        | 0x202A..=0x202E
        | 0x2060..=0x2064
        | 0x2066..=0x2069
        | 0xFEFF
        | 0x180E
        | 0x061C
        | 0xE0000..=0xE007F => Some(true),
        _ => None,
    }
}

/// Lookalike letters that render like ASCII ones (Cyrillic, Greek, a few
/// Latin extensions), folded to the ASCII letter they imitate.
fn homoglyph(c: char) -> Option<char> {
    Some(match c {
        'а' | 'α' | 'ɑ' | 'А' | 'Α' => 'a',
        'в' | 'β' | 'В' | 'Β' => 'b',
        'с' | 'ϲ' | 'С' | 'Ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'ё' | 'ε' | 'Е' | 'Ε' => 'e',
        'һ' | 'Н' | 'Η' => 'h',
        'і' | 'ї' | 'ι' | 'ı' | 'І' | 'Ι' => 'i',
        'ј' | 'Ј' => 'j',
        'к' | 'κ' | 'К' | 'Κ' => 'k',
        'ӏ' => 'l',
        'м' | 'М' | 'Μ' => 'm',
        'п' | 'η' | 'Ν' => 'n',
        'о' | 'ο' | 'σ' | 'О' | 'Ο' => 'o',
        'р' | 'ρ' | 'Р' | 'Ρ' => 'p',
        'ԛ' => 'q',
        'г' => 'r',
        'ѕ' | 'Ѕ' => 's',
        'т' | 'τ' | 'Т' | 'Τ' => 't',
        'υ' | 'μ' => 'u',
        'ν' | 'ѵ' => 'v',
        'ԝ' | 'ω' => 'w',
        'х' | 'χ' | 'Х' | 'Χ' => 'x',
        'у' | 'γ' | 'У' | 'Υ' => 'y',
        'ᴢ' | 'Ζ' => 'z',
        _ => return None,
    })
}

/// Fullwidth ASCII forms (`ｉｇｎｏｒｅ`) and the ideographic space.
fn fullwidth(c: char) -> Option<char> {
    match u32::from(c) {
        cp @ 0xFF01..=0xFF5E => char::from_u32(cp - 0xFF01 + 0x21),
        0x3000 => Some(' '),
        _ => None,
    }
}

/// Signals found while normalising, for rules with `signal = …`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// Suspicious invisible code points removed.
    pub invisible: usize,
    /// Original byte range from the first to the last of them.
    pub invisible_span: (usize, usize),
    /// Words that mix ASCII letters with lookalikes from other scripts.
    pub mixed_script: usize,
}

/// A normalised view and the original range of each of its bytes.
#[derive(Debug, Default)]
pub struct View {
    pub text: String,
    /// Original (start, end) of each byte of `text`; empty when the view was
    /// built without ranges (decoded runs report the encoded run's range,
    /// never a range of their own views).
    map: Vec<(u32, u32)>,
    mapped: bool,
}

impl View {
    /// Empties the view, keeping its buffers for the next text.
    fn reset(&mut self, mapped: bool, capacity: usize) {
        self.text.clear();
        self.map.clear();
        self.mapped = mapped;
        self.text.reserve(capacity);
        if mapped {
            self.map.reserve(capacity);
        }
    }

    fn push(&mut self, c: char, start: usize, end: usize) {
        self.push_range(c, (to_u32(start), to_u32(end)));
    }

    #[inline]
    fn push_range(&mut self, c: char, range: (u32, u32)) {
        if self.mapped {
            for _ in 0..c.len_utf8() {
                self.map.push(range);
            }
        }
        self.text.push(c);
    }

    fn ends_with_space(&self) -> bool {
        self.text.as_bytes().last() == Some(&b' ')
    }

    /// The original byte range of the view's bytes `start..end`; `(0, 0)`
    /// for an empty range or a view built without ranges.
    pub fn original(&self, start: usize, end: usize) -> (usize, usize) {
        if start >= end || end > self.map.len() {
            return (0, 0);
        }
        (self.map[start].0 as usize, self.map[end - 1].1 as usize)
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The normalised views of one field's text.
#[derive(Debug, Default)]
pub struct Norm {
    pub plain: View,
    pub word: View,
    pub signals: Signals,
}

/// Which views [`Norm::build`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// The word view (the plain one, and the signals, are always built).
    pub word: bool,
    /// Original ranges for each view byte (`View::original`).
    pub ranges: bool,
}

impl Want {
    pub const ALL: Want = Want {
        word: true,
        ranges: true,
    };
}

impl Norm {
    /// Both views of `text`, with ranges (the reference the lazy scan is
    /// tested against; rule loading uses it for keywords).
    pub fn new(text: &str) -> Self {
        let mut n = Self::default();
        n.build(text, Want::ALL);
        n
    }

    /// Rebuilds the views for `text` in this `Norm`'s buffers (no allocation
    /// once they have grown to the size of the texts seen). A view not
    /// wanted is left empty: the caller must not match it.
    pub fn build(&mut self, text: &str, want: Want) {
        self.signals = plain_view(text, &mut self.plain, want.ranges);
        if want.word {
            word_view(&self.plain, &mut self.word);
        } else {
            self.word.reset(want.ranges, 0);
        }
    }

    /// Longest repetition in the plain view: how many times one character,
    /// or one unit of up to `MAX_PERIOD` bytes that holds a letter or digit,
    /// repeats back to back. Separator runs (`-----`, `=====`) do not count.
    pub fn repetition(&self) -> usize {
        repetition(self.plain.text.as_bytes())
    }
}

/// Builds the plain view of `text` into `v` and returns the signals.
///
/// ASCII bytes take a fast path that is the general path below specialised
/// to them, so the view is the same byte for byte: no ASCII character is an
/// invisible code point, a fullwidth form or a lookalike (`invisible`,
/// `fullwidth` and `homoglyph` only list code points ≥ U+00AD), an ASCII
/// character lowercases to one ASCII byte, and `char::is_whitespace` is
/// asked of the same character. The test `ascii_fast_path_is_the_general_path`
/// checks the first claim for all 128 of them.
fn plain_view(text: &str, v: &mut View, ranges: bool) -> Signals {
    v.reset(ranges, text.len());
    let mut sig = Signals::default();
    // Per word: saw an ASCII letter / a folded lookalike.
    let (mut ascii_letter, mut folded) = (false, false);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii() {
            let c = char::from(b);
            if c.is_whitespace() {
                if ascii_letter && folded {
                    sig.mixed_script += 1;
                }
                (ascii_letter, folded) = (false, false);
                if !v.text.is_empty() && !v.ends_with_space() {
                    v.push(' ', i, i + 1);
                }
                i += 1;
            } else {
                // A run of ASCII bytes that are not whitespace, each one
                // pushed as its lowercase with its own one-byte range:
                // copied and lowercased at once.
                let run = bytes[i..]
                    .iter()
                    .position(|&b| !b.is_ascii() || char::from(b).is_whitespace())
                    .map_or(bytes.len(), |n| i + n);
                ascii_letter |= bytes[i..run].iter().any(u8::is_ascii_alphabetic);
                let at = v.text.len();
                v.text.push_str(&text[i..run]);
                if let Some(added) = v.text.get_mut(at..) {
                    added.make_ascii_lowercase();
                }
                if v.mapped {
                    v.map.extend((i..run).map(|k| (to_u32(k), to_u32(k + 1))));
                }
                i = run;
            }
            continue;
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        let end = i + c.len_utf8();
        let start = i;
        i = end;
        if let Some(counts) = invisible(c) {
            if counts {
                if sig.invisible == 0 {
                    sig.invisible_span.0 = start;
                }
                sig.invisible += 1;
                sig.invisible_span.1 = end;
            }
            // Tag characters spell ASCII invisibly ("ASCII smuggling").
            let cp = u32::from(c);
            if (0xE0020..=0xE007E).contains(&cp) {
                if let Some(a) = char::from_u32(cp - 0xE0000) {
                    v.push(a.to_ascii_lowercase(), start, end);
                }
            }
            continue;
        }
        let c = fullwidth(c).unwrap_or(c);
        if c.is_whitespace() {
            if ascii_letter && folded {
                sig.mixed_script += 1;
            }
            (ascii_letter, folded) = (false, false);
            if !v.text.is_empty() && !v.ends_with_space() {
                v.push(' ', start, end);
            }
            continue;
        }
        if let Some(a) = homoglyph(c) {
            folded = true;
            v.push(a, start, end);
        } else if c.is_ascii() {
            ascii_letter |= c.is_ascii_alphabetic();
            v.push(c.to_ascii_lowercase(), start, end);
        } else {
            for l in c.to_lowercase() {
                v.push(l, start, end);
            }
        }
    }
    if ascii_letter && folded {
        sig.mixed_script += 1;
    }
    sig
}

fn leet(c: char) -> char {
    match c {
        '0' => 'o',
        '1' => 'i',
        '3' => 'e',
        '4' | '@' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        '8' => 'b',
        _ => c,
    }
}

fn token_char(c: char) -> bool {
    c.is_alphanumeric() || c == '@' || c == '$'
}

/// Builds the word view of `plain` into `w`: tokens are the runs of
/// [`token_char`]s, read in place in the plain text (no per-token buffer).
/// ASCII bytes are classified as bytes (for an ASCII character,
/// `is_alphanumeric` is `is_ascii_alphanumeric`).
fn word_view(plain: &View, out: &mut View) {
    out.reset(plain.mapped, plain.text.len());
    let text = plain.text.as_str();
    let bytes = text.as_bytes();
    let mut start: Option<usize> = None;
    let mut at = 0;
    while at < bytes.len() {
        let (token, len) = if bytes[at].is_ascii() {
            let b = bytes[at];
            (b.is_ascii_alphanumeric() || b == b'@' || b == b'$', 1)
        } else {
            let ch = text[at..].chars().next().unwrap_or(' ');
            (token_char(ch), ch.len_utf8())
        };
        if token {
            start.get_or_insert(at);
        } else if let Some(s) = start.take() {
            flush_token(plain, s, at, out);
        }
        at += len;
    }
    if let Some(s) = start {
        flush_token(plain, s, text.len(), out);
    }
}

/// Appends the token `plain.text[s..e]` to the word view: with its
/// leetspeak undone if it holds a letter, else its digits only (`@`/`$`
/// alone are separators, not letters); nothing if it holds neither.
fn flush_token(plain: &View, s: usize, e: usize, w: &mut View) {
    let token = &plain.text[s..e];
    let range = |j: usize| plain.map.get(j).copied().unwrap_or_default();
    let ascii = token.is_ascii();
    let letters = if ascii {
        token.bytes().any(|b| b.is_ascii_alphabetic())
    } else {
        token.chars().any(char::is_alphabetic)
    };
    if !letters && !token.chars().any(char::is_alphanumeric) {
        return;
    }
    if !w.text.is_empty() && !w.ends_with_space() {
        let first = range(s).0;
        w.push_range(' ', (first, first));
    }
    if ascii && letters {
        // Every byte kept (`leet` maps ASCII to ASCII), each with its range.
        w.text.extend(token.bytes().map(|b| leet(char::from(b))));
        if let Some(ranges) = plain.map.get(s..e).filter(|_| w.mapped) {
            w.map.extend_from_slice(ranges);
        }
        return;
    }
    for (k, c) in token.char_indices() {
        if letters {
            w.push_range(leet(c), range(s + k));
        } else if c.is_alphanumeric() {
            w.push_range(c, range(s + k));
        }
    }
}

/// Longest back-to-back repetition of a period of up to this many bytes.
const MAX_PERIOD: usize = 8;

fn repetition(b: &[u8]) -> usize {
    let mut best = 0;
    for p in 1..=MAX_PERIOD {
        let mut run = 0usize;
        for i in p..b.len() {
            if b[i] == b[i - p] {
                run += 1;
                let unit = &b[i + 1 - p..=i];
                if (run + p) / p > best && unit.iter().any(u8::is_ascii_alphanumeric) {
                    best = (run + p) / p;
                }
            } else {
                run = 0;
            }
        }
    }
    best
}

/// A decoded run of a field: the original range of the encoded text, its
/// encoding, and the views of what it decodes to.
#[cfg(test)]
pub struct Decoded {
    pub start: usize,
    pub end: usize,
    pub encoding: &'static str,
    pub norm: Norm,
}

/// Decodes the base64 / hex / URL-encoded runs of `text` that hold readable
/// text, recursively up to `depth`, keeping at most `max` of them. Ranges are
/// those of the outermost encoded run in `text`. Both views of each, built
/// eagerly: the matcher builds them one at a time from [`decoded_texts`].
#[cfg(test)]
pub fn decoded_runs(text: &str, depth: usize, max: usize) -> Vec<Decoded> {
    decoded_texts(text, depth, max)
        .into_iter()
        .map(|r| Decoded {
            start: r.start,
            end: r.end,
            encoding: r.encoding,
            norm: Norm::new(&r.text),
        })
        .collect()
}

/// The decoded texts of [`decoded_runs`], in the same order, without views.
pub fn decoded_texts(text: &str, depth: usize, max: usize) -> Vec<decode::Run> {
    let mut out = Vec::new();
    if depth == 0 {
        return out;
    }
    for run in decode::runs(text, max) {
        let inner = decoded_texts(&run.text, depth - 1, max);
        let (start, end) = (run.start, run.end);
        out.push(run);
        out.extend(inner.into_iter().map(|d| decode::Run { start, end, ..d }));
        if out.len() >= max {
            out.truncate(max);
            break;
        }
    }
    out
}

/// Undoes JSON string escapes (`\n`, `\"`, `\u0041`) so that tool arguments
/// match like the command they carry; each output character keeps the range
/// of its escape in the original, which `Norm` then composes with its own.
pub fn json_unescape(text: &str) -> (String, Vec<(u32, u32)>) {
    let mut out = String::with_capacity(text.len());
    let mut map = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut it = text.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c != '\\' {
            push_mapped(&mut out, &mut map, c, i, i + c.len_utf8());
            continue;
        }
        let Some(&(_, e)) = it.peek() else {
            push_mapped(&mut out, &mut map, c, i, i + 1);
            continue;
        };
        let decoded = match e {
            'n' => Some(('\n', 2)),
            't' => Some(('\t', 2)),
            'r' => Some(('\r', 2)),
            '"' | '\\' | '/' => Some((e, 2)),
            'u' => text
                .get(i + 2..i + 6)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .and_then(char::from_u32)
                .map(|c| (c, 6)),
            _ => None,
        };
        match decoded {
            Some((d, len)) if i + len <= bytes.len() => {
                push_mapped(&mut out, &mut map, d, i, i + len);
                // Skip the rest of the escape (all ASCII).
                for _ in 1..len {
                    it.next();
                }
            }
            _ => push_mapped(&mut out, &mut map, c, i, i + 1),
        }
    }
    (out, map)
}

fn push_mapped(out: &mut String, map: &mut Vec<(u32, u32)>, c: char, s: usize, e: usize) {
    for _ in 0..c.len_utf8() {
        map.push((to_u32(s), to_u32(e)));
    }
    out.push(c);
}

/// Re-bases a view built over a transformed text onto the original, given
/// the transformed text's byte → original range map.
pub fn rebase(norm: &mut Norm, map: &[(u32, u32)]) {
    for v in [&mut norm.plain, &mut norm.word] {
        for (s, e) in &mut v.map {
            let (os, _) = map.get(*s as usize).copied().unwrap_or_default();
            let last = (*e as usize).saturating_sub(1);
            let (_, oe) = map.get(last).copied().unwrap_or((os, os));
            (*s, *e) = (os, oe);
        }
    }
}

/// Longest `/* … */` comment taken for a space by [`deobfuscate`].
const MAX_COMMENT: usize = 64;

/// Whether a command or tool argument hides its words: a quote or a
/// backslash inside a word (`'r''m'`, `r"m"`, `c\url`) or an SQL comment
/// in place of a space (`DROP/**/TABLE`).
fn obfuscated(b: &[u8]) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric();
    b.windows(2).any(|w| w == b"/*")
        || b.windows(3).any(|w| {
            word(w[0]) && matches!(w[1], b'\'' | b'"' | b'\\') && (word(w[2]) || w[2] == w[1])
        })
}

/// The text as a shell or SQL parser would read it, for commands and tool
/// arguments that hide their words from the patterns: quotes next to a
/// letter or digit and the backslash before one dropped, `/* … */` comments (up to
/// [`MAX_COMMENT`] bytes) read as one space. `None` when the text shows no
/// such trick (most texts: the caller then scans nothing twice). Each
/// output byte keeps the range it came from, for [`rebase`]. One pass.
pub fn deobfuscate(text: &str) -> Option<(String, Vec<(u32, u32)>)> {
    let b = text.as_bytes();
    if !obfuscated(b) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut map = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let word = |j: Option<usize>| {
            j.and_then(|j| b.get(j))
                .is_some_and(u8::is_ascii_alphanumeric)
        };
        match b[i] {
            // A quote next to a letter or digit opens or closes part of a
            // word (`'r''m'` is `rm`); one between spaces or punctuation
            // still ends a string (`"/"}`), which the patterns look for.
            b'\'' | b'"' if word(i.checked_sub(1)) || word(Some(i + 1)) => i += 1,
            b'\\' if b.get(i + 1).is_some_and(u8::is_ascii_alphanumeric) => i += 1,
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = b[i + 2..b.len().min(i + 2 + MAX_COMMENT)]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map(|p| i + 2 + p + 2);
                if let Some(end) = end {
                    push_mapped(&mut out, &mut map, ' ', i, end);
                    i = end;
                } else {
                    push_mapped(&mut out, &mut map, '/', i, i + 1);
                    i += 1;
                }
            }
            _ => {
                let c = text[i..].chars().next().unwrap_or(' ');
                push_mapped(&mut out, &mut map, c, i, i + c.len_utf8());
                i += c.len_utf8();
            }
        }
    }
    Some((out, map))
}

/// `inner` maps a text derived from `outer`'s text; the result maps it to
/// `outer`'s original.
pub fn compose(inner: &[(u32, u32)], outer: &[(u32, u32)]) -> Vec<(u32, u32)> {
    inner
        .iter()
        .map(|&(s, e)| {
            let (os, _) = outer.get(s as usize).copied().unwrap_or_default();
            let (_, oe) = outer
                .get((e as usize).saturating_sub(1))
                .copied()
                .unwrap_or((os, os));
            (os, oe)
        })
        .collect()
}

#[cfg(test)]
mod tests;
