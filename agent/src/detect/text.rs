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
    starts: Vec<u32>,
    ends: Vec<u32>,
}

impl View {
    fn push(&mut self, c: char, start: usize, end: usize) {
        let (s, e) = (to_u32(start), to_u32(end));
        for _ in 0..c.len_utf8() {
            self.starts.push(s);
            self.ends.push(e);
        }
        self.text.push(c);
    }

    /// The original byte range of the view's bytes `start..end`.
    pub fn original(&self, start: usize, end: usize) -> (usize, usize) {
        if start >= end || end > self.starts.len() {
            return (0, 0);
        }
        (self.starts[start] as usize, self.ends[end - 1] as usize)
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

impl Norm {
    pub fn new(text: &str) -> Self {
        let (plain, signals) = plain_view(text);
        let word = word_view(&plain);
        Self {
            plain,
            word,
            signals,
        }
    }

    /// Longest repetition in the plain view: how many times one character,
    /// or one unit of up to `MAX_PERIOD` bytes that holds a letter or digit,
    /// repeats back to back. Separator runs (`-----`, `=====`) do not count.
    pub fn repetition(&self) -> usize {
        repetition(self.plain.text.as_bytes())
    }
}

fn plain_view(text: &str) -> (View, Signals) {
    let mut v = View {
        text: String::with_capacity(text.len()),
        starts: Vec::with_capacity(text.len()),
        ends: Vec::with_capacity(text.len()),
    };
    let mut sig = Signals::default();
    // Per word: saw an ASCII letter / a folded lookalike.
    let (mut ascii_letter, mut folded) = (false, false);
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        if let Some(counts) = invisible(c) {
            if counts {
                if sig.invisible == 0 {
                    sig.invisible_span.0 = i;
                }
                sig.invisible += 1;
                sig.invisible_span.1 = end;
            }
            // Tag characters spell ASCII invisibly ("ASCII smuggling").
            let cp = u32::from(c);
            if (0xE0020..=0xE007E).contains(&cp) {
                if let Some(a) = char::from_u32(cp - 0xE0000) {
                    v.push(a.to_ascii_lowercase(), i, end);
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
            if !v.text.is_empty() && !v.text.ends_with(' ') {
                v.push(' ', i, end);
            }
            continue;
        }
        if let Some(a) = homoglyph(c) {
            folded = true;
            v.push(a, i, end);
        } else if c.is_ascii() {
            ascii_letter |= c.is_ascii_alphabetic();
            v.push(c.to_ascii_lowercase(), i, end);
        } else {
            for l in c.to_lowercase() {
                v.push(l, i, end);
            }
        }
    }
    if ascii_letter && folded {
        sig.mixed_script += 1;
    }
    (v, sig)
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

fn word_view(plain: &View) -> View {
    let mut w = View {
        text: String::with_capacity(plain.text.len()),
        starts: Vec::with_capacity(plain.text.len()),
        ends: Vec::with_capacity(plain.text.len()),
    };
    // (char, original start, original end) of the current token.
    let mut token: Vec<(char, u32, u32)> = Vec::new();
    let flush = |token: &mut Vec<(char, u32, u32)>, w: &mut View| {
        let letters = token.iter().any(|(c, ..)| c.is_alphabetic());
        // `@`/`$` alone are separators, not letters.
        if letters {
            if !w.text.is_empty() && !w.text.ends_with(' ') {
                w.push(' ', token[0].1 as usize, token[0].1 as usize);
            }
            for &(c, s, e) in token.iter() {
                w.push(leet(c), s as usize, e as usize);
            }
        } else if token.iter().any(|(c, ..)| c.is_alphanumeric()) {
            if !w.text.is_empty() && !w.text.ends_with(' ') {
                w.push(' ', token[0].1 as usize, token[0].1 as usize);
            }
            for &(c, s, e) in token.iter().filter(|(c, ..)| c.is_alphanumeric()) {
                w.push(c, s as usize, e as usize);
            }
        }
        token.clear();
    };
    for (j, c) in plain.text.char_indices() {
        if c.is_alphanumeric() || c == '@' || c == '$' {
            token.push((c, plain.starts[j], plain.ends[j]));
        } else {
            flush(&mut token, &mut w);
        }
    }
    flush(&mut token, &mut w);
    w
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
pub struct Decoded {
    pub start: usize,
    pub end: usize,
    pub encoding: &'static str,
    pub norm: Norm,
}

/// Decodes the base64 / hex / URL-encoded runs of `text` that hold readable
/// text, recursively up to `depth`, keeping at most `max` of them. Ranges are
/// those of the outermost encoded run in `text`.
pub fn decoded_runs(text: &str, depth: usize, max: usize) -> Vec<Decoded> {
    let mut out = Vec::new();
    if depth == 0 {
        return out;
    }
    for run in decode::runs(text, max) {
        let inner = decoded_runs(&run.text, depth - 1, max);
        out.push(Decoded {
            start: run.start,
            end: run.end,
            encoding: run.encoding,
            norm: Norm::new(&run.text),
        });
        out.extend(inner.into_iter().map(|d| Decoded {
            start: run.start,
            end: run.end,
            ..d
        }));
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
        for (s, e) in v.starts.iter_mut().zip(v.ends.iter_mut()) {
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
