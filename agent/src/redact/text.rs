//! Text helpers for the redactor: a JSON-unescaped view of a text with a
//! map back to the raw bytes, aligning ranges to whole escapes, and the
//! markers that replace values.
//!
//! Why a view: tool arguments and pasted configs are JSON texts, where a
//! PEM key reads `-----BEGIN…\nMII…` and an AWS secret may read `ab\/cd`.
//! Scanning the unescaped view finds what the escapes hide; mapping a match
//! back widens it to whole escapes, so a marker never leaves half an escape
//! behind and a JSON string literal stays valid (markers hold no quotes or
//! backslashes).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::scan::DataClass;

/// Hex digits of the HMAC kept in a token (64 bits: no collisions among
/// the values one deployment sees, too short to be an oracle).
pub const HMAC_HEX_DIGITS: usize = 16;

/// One escape sequence: where it is in the raw text and in the view.
#[derive(Clone, Copy, Debug)]
struct Escape {
    view: usize,
    view_len: usize,
    raw: usize,
    raw_len: usize,
}

/// The text with JSON string escapes decoded, and where each escape was.
pub struct Unescaped {
    pub text: String,
    escapes: Vec<Escape>,
}

fn hex4(b: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(b.get(..4)?).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// The escape starting at `i` (a backslash): its decoded char and raw length.
fn decode_escape(b: &[u8], i: usize) -> Option<(char, usize)> {
    let c = match *b.get(i + 1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(&b[i + 2..])?;
            if (0xd800..0xdc00).contains(&hi) && b.get(i + 6..i + 8) == Some(b"\\u") {
                let lo = hex4(&b[i + 8..])?;
                if (0xdc00..0xe000).contains(&lo) {
                    let cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                    return Some((char::from_u32(cp)?, 12));
                }
            }
            // A lone surrogate has no char; the view shows U+FFFD.
            return Some((char::from_u32(hi).unwrap_or('\u{fffd}'), 6));
        }
        _ => return None,
    };
    Some((c, 2))
}

impl Unescaped {
    /// The view of `raw`, or `None` when it holds no escapes.
    pub fn of(raw: &str) -> Option<Self> {
        let b = raw.as_bytes();
        memchr::memchr(b'\\', b)?;
        let mut text = String::with_capacity(raw.len());
        let mut escapes = Vec::new();
        let mut copied = 0;
        let mut i = 0;
        while let Some(p) = memchr::memchr(b'\\', &b[i..]) {
            let at = i + p;
            match decode_escape(b, at) {
                Some((c, raw_len)) => {
                    text.push_str(&raw[copied..at]);
                    escapes.push(Escape {
                        view: text.len(),
                        view_len: c.len_utf8(),
                        raw: at,
                        raw_len,
                    });
                    text.push(c);
                    i = at + raw_len;
                    copied = i;
                }
                // Not an escape: the backslash stays as it is.
                None => i = at + 1,
            }
        }
        text.push_str(&raw[copied..]);
        Some(Self { text, escapes })
    }

    /// The escape at or before view offset `d`.
    fn escape_before(&self, d: usize) -> Option<&Escape> {
        let n = self.escapes.partition_point(|e| e.view <= d);
        n.checked_sub(1).map(|i| &self.escapes[i])
    }

    /// Raw offset of view offset `d`, as the start of a range.
    pub fn raw_start(&self, d: usize) -> usize {
        match self.escape_before(d) {
            None => d,
            Some(e) if d < e.view + e.view_len => e.raw,
            Some(e) => e.raw + e.raw_len + (d - e.view - e.view_len),
        }
    }

    /// Raw offset of view offset `d`, as the end of a range: an end inside
    /// or just after an escape covers the whole escape.
    pub fn raw_end(&self, d: usize) -> usize {
        if d == 0 {
            return 0;
        }
        match self.escape_before(d - 1) {
            None => d,
            Some(e) if d - 1 < e.view + e.view_len => e.raw + e.raw_len,
            Some(e) => e.raw + e.raw_len + (d - e.view - e.view_len),
        }
    }
}

/// Whether the backslash at `j` starts an escape (an even number of
/// backslashes before it), looking back at most 1 KiB.
fn starts_escape(b: &[u8], j: usize) -> bool {
    let run = b[j.saturating_sub(1024)..j]
        .iter()
        .rev()
        .take_while(|&&c| c == b'\\')
        .count();
    run % 2 == 0
}

/// The escape sequence covering byte `i`, if any.
fn escape_covering(b: &[u8], i: usize) -> Option<(usize, usize)> {
    for j in (i.saturating_sub(5)..=i).rev() {
        if b[j] != b'\\' {
            continue;
        }
        if !starts_escape(b, j) {
            // The escaped half of `\\`.
            return (j == i).then(|| (j - 1, j + 1));
        }
        let len = match b.get(j + 1) {
            Some(b'u') if hex4(&b[j + 2..]).is_some() => 6,
            Some(c) if c.is_ascii() => 2,
            _ => 1,
        };
        return (j + len > i).then_some((j, j + len));
    }
    None
}

/// Widens `[start, end)` so that it neither starts nor ends inside an
/// escape sequence.
pub fn align_to_escapes(raw: &str, start: usize, end: usize) -> (usize, usize) {
    let b = raw.as_bytes();
    let start = escape_covering(b, start).map_or(start, |(s, _)| s.min(start));
    let end = if end > 0 {
        escape_covering(b, end - 1).map_or(end, |(_, e)| e.max(end))
    } else {
        end
    };
    (start, end.min(b.len()))
}

/// The text JSON-unescaped, for hashing and hints: `a\/b` and `a/b` are one
/// value.
pub fn unescape(raw: &str) -> String {
    Unescaped::of(raw).map_or_else(|| raw.to_owned(), |u| u.text)
}

/// The form of a value inside a JSON string literal, when it differs.
pub fn json_escaped(value: &str) -> Option<String> {
    let quoted = serde_json::to_string(value).ok()?;
    let inner = &quoted[1..quoted.len() - 1];
    (inner != value).then(|| inner.to_owned())
}

/// Regex matching exactly the markers this module writes, so that
/// redacting a redacted text changes nothing.
pub fn marker_pattern() -> String {
    let classes: Vec<&str> = DataClass::ALL.iter().map(|c| c.name()).collect();
    format!(
        r"\[(?:(?:{})(?::hmac:[0-9a-f]{{{HMAC_HEX_DIGITS}}}|:…[0-9]{{4}}|:…@[A-Za-z0-9.-]{{1,253}}|:[A-Z]{{2}}…|:[A-Za-z0-9_-]{{1,16}}…)?|dropped:[a-z_]{{1,24}})\]",
        classes.join("|")
    )
}

/// Known key prefixes shown in masks: they name the provider, not the key.
const KEY_HINTS: &[&str] = &[
    "sk-ant-",
    "sk-proj-",
    "sk-svcacct-",
    "sk-admin-",
    "sk-",
    "AIza",
    "ghp_",
    "gho_",
    "ghs_",
    "ghu_",
    "ghr_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "xoxr-",
    "xoxe-",
    "xoxs-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "rk_test_",
    "hf_",
    "GOCSPX-",
];

/// The mask of a value: `[class]`, or `[class:hint]` with a hint that does
/// not reveal the value (card last 4, email domain, IBAN country, key
/// provider prefix).
pub fn mask(class: DataClass, value: &str) -> String {
    let name = class.name();
    let hint = match class {
        DataClass::CardNumber => {
            let digits: Vec<char> = value.chars().filter(char::is_ascii_digit).collect();
            (digits.len() >= 12)
                .then(|| format!("…{}", digits[digits.len() - 4..].iter().collect::<String>()))
        }
        DataClass::Email => value.rsplit_once('@').and_then(|(_, d)| {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-');
            ok.then(|| format!("…@{}", d.to_ascii_lowercase()))
        }),
        DataClass::Iban => value
            .get(..2)
            .filter(|c| c.bytes().all(|b| b.is_ascii_uppercase()))
            .map(|c| format!("{c}…")),
        DataClass::ApiKey | DataClass::GcpKey => KEY_HINTS
            .iter()
            .find(|p| value.starts_with(*p) && value.len() > p.len() + 8)
            .map(|p| format!("{p}…")),
        DataClass::AwsKey => value
            .get(..4)
            .filter(|p| {
                value.len() == 20 && p.starts_with('A') && p.bytes().all(|b| b.is_ascii_uppercase())
            })
            .map(|p| format!("{p}…")),
        _ => None,
    };
    match hint {
        Some(h) => format!("[{name}:{h}]"),
        None => format!("[{name}]"),
    }
}

/// The form of a value that is hashed: separators and case do not make a
/// different person or card.
fn normalized(class: DataClass, value: &str) -> String {
    match class {
        DataClass::CardNumber | DataClass::UsSsn | DataClass::Phone => {
            value.chars().filter(char::is_ascii_digit).collect()
        }
        DataClass::Iban => value
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        DataClass::Email => value.to_lowercase(),
        _ => value.to_owned(),
    }
}

/// `[class:hmac:<hex>]`: HMAC-SHA256 of the class name and the normalised
/// value; the class is in the input so that one string found as two classes
/// gives two unrelated tokens.
pub fn hash_token(key: &[u8], class: DataClass, value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(class.name().as_bytes());
    mac.update(&[0]);
    mac.update(normalized(class, value).as_bytes());
    let tag = mac.finalize().into_bytes();
    format!(
        "[{}:hmac:{}]",
        class.name(),
        hex::encode(&tag[..HMAC_HEX_DIGITS / 2])
    )
}

/// How one piece of a redacted range is written in a JSON text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Inside a string literal (or not JSON): the marker.
    Replace,
    /// A bare number (`{"card": 4111111111111111}`): the marker as a string.
    Quote,
    /// JSON structure between string literals: kept so the text stays JSON.
    Keep,
}

/// Byte ranges of the contents of the string literals of `text`, when it is
/// a JSON text; `None` otherwise.
pub fn json_string_contents(text: &str) -> Option<Vec<(usize, usize)>> {
    let first = text.trim_start().as_bytes().first()?;
    if !matches!(first, b'{' | b'[' | b'"') {
        return None;
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let b = text.as_bytes();
    let mut regions = Vec::new();
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'"', &b[i..]) {
        let open = i + p + 1;
        let mut j = open;
        // The JSON is valid, so every literal closes.
        while b[j] != b'"' {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        regions.push((open, j));
        i = j + 1;
    }
    Some(regions)
}

/// Splits `[start, end)` of a JSON text along its string literals.
pub fn json_pieces(
    text: &str,
    strings: &[(usize, usize)],
    start: usize,
    end: usize,
) -> Vec<(usize, usize, Piece)> {
    let mut pieces = Vec::new();
    let mut at = start;
    let first = strings.partition_point(|&(_, e)| e <= start);
    for &(s, e) in &strings[first..] {
        if s >= end {
            break;
        }
        if at < s {
            pieces.push(outside_piece(text, at, s));
        }
        let (ps, pe) = (s.max(at), e.min(end));
        if ps < pe {
            pieces.push((ps, pe, Piece::Replace));
        }
        at = pe.max(at);
    }
    if at < end {
        pieces.push(outside_piece(text, at, end));
    }
    pieces
}

fn outside_piece(text: &str, start: usize, end: usize) -> (usize, usize, Piece) {
    let s = &text.as_bytes()[start..end];
    let number = s.iter().any(u8::is_ascii_digit)
        && s.iter()
            .all(|&c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'));
    (start, end, if number { Piece::Quote } else { Piece::Keep })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_maps_back_to_whole_escapes() {
        let raw = r#"{"k":"a\nb\/c\u00e9d\\e"}"#;
        let u = Unescaped::of(raw).expect("has escapes");
        assert_eq!(u.text, "{\"k\":\"a\nb/céd\\e\"}");
        let d = u.text.find('\n').expect("newline");
        assert_eq!(&raw[u.raw_start(d)..u.raw_end(d + 1)], r"\n");
        let e = u.text.find('é').expect("e acute");
        assert_eq!(&raw[u.raw_start(e)..u.raw_end(e + 2)], r"\u00e9");
        let whole = u.text.find('a').expect("a")..u.text.find('e').expect("e") + 1;
        assert_eq!(
            &raw[u.raw_start(whole.start)..u.raw_end(whole.end)],
            r"a\nb\/c\u00e9d\\e"
        );
        assert!(Unescaped::of("no escapes").is_none());
    }

    #[test]
    fn surrogate_pairs_and_bad_escapes() {
        let u = Unescaped::of(r"x\ud83d\ude00y\qz\u12").expect("escapes");
        assert_eq!(u.text, "x😀y\\qz\\u12");
        assert_eq!(u.raw_end(1 + 4), 1 + 12);
    }

    #[test]
    fn ranges_are_widened_to_whole_escapes() {
        let raw = r#"pw\"abc\"x \u0041BC"#;
        // Ends on the backslash of `\"`: widened over the quote.
        assert_eq!(align_to_escapes(raw, 3, 8), (2, 9));
        // Starts inside `\u0041`.
        let u = raw.find(r"\u").expect("u");
        assert_eq!(align_to_escapes(raw, u + 3, raw.len()), (u, raw.len()));
        // `\\` then `n`: the n is a plain letter.
        let raw = r"a\\nb";
        assert_eq!(align_to_escapes(raw, 3, 5), (3, 5));
        assert_eq!(align_to_escapes(raw, 2, 5), (1, 5));
    }

    #[test]
    fn masks_keep_only_harmless_hints() {
        assert_eq!(
            mask(DataClass::CardNumber, "4242 4242 4242 4242"),
            "[card_number:…4242]"
        );
        assert_eq!(
            mask(DataClass::Email, "Jane.Doe@Example.com"),
            "[email:…@example.com]"
        );
        assert_eq!(
            mask(DataClass::Iban, "DE89370400440532013000"),
            "[iban:DE…]"
        );
        assert_eq!(
            mask(DataClass::AwsKey, "AKIAIOSFODNN7EXAMPLE"),
            "[aws_key:AKIA…]"
        );
        assert_eq!(
            mask(DataClass::ApiKey, "sk-proj-abcdefghijklmnop0123456789"),
            "[api_key:sk-proj-…]"
        );
        assert_eq!(mask(DataClass::Password, "hunter22"), "[password]");
        let re = regex::Regex::new(&format!("^{}$", marker_pattern())).expect("marker regex");
        for m in [
            mask(DataClass::CardNumber, "4242424242424242"),
            mask(DataClass::Email, "a@b.example"),
            mask(DataClass::Iban, "GB82WEST12345698765432"),
            mask(
                DataClass::ApiKey,
                "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            ),
            mask(DataClass::Jwt, "x"),
            hash_token(b"k", DataClass::Phone, "+1 415 555 0132"),
            "[dropped:overflow]".to_owned(),
        ] {
            assert!(re.is_match(&m), "{m}");
            assert!(!m.contains(['"', '\\']), "{m}");
        }
    }

    #[test]
    fn hmac_tokens_join_equal_values_only_under_one_key() {
        let a = hash_token(b"key-one", DataClass::CardNumber, "4242 4242 4242 4242");
        let b = hash_token(b"key-one", DataClass::CardNumber, "4242-4242-4242-4242");
        let c = hash_token(b"key-two", DataClass::CardNumber, "4242424242424242");
        let d = hash_token(b"key-one", DataClass::CardNumber, "4000056655665556");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert!(a.starts_with("[card_number:hmac:") && a.len() == "[card_number:hmac:]".len() + 16);
        assert_eq!(
            hash_token(b"k", DataClass::Email, "A@Example.com"),
            hash_token(b"k", DataClass::Email, "a@example.com")
        );
    }
}
