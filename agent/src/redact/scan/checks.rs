//! Validation of candidates: checksums, shapes and context that a regex
//! cannot express. Every function reads a bounded stretch of the text.

/// Longest JWT segment read; headers are short, payloads of identity
/// providers with many group claims reach a few KiB.
const MAX_JWT_HEADER: usize = 4096;
const MAX_JWT_SEGMENT: usize = 64 * 1024;

pub(super) fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

pub(super) fn is_b64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'='
}

/// End of the run of bytes satisfying `keep` from `from`, or `None` when it
/// runs past `max` bytes (too long to be the value looked for).
pub(super) fn run_end(b: &[u8], from: usize, keep: fn(u8) -> bool, max: usize) -> Option<usize> {
    let limit = b.len().min(from.saturating_add(max));
    let end = b[from..limit]
        .iter()
        .position(|&c| !keep(c))
        .map_or(limit, |p| from + p);
    if end == limit && limit < b.len() && keep(b[limit]) {
        return None;
    }
    Some(end)
}

/// Shannon entropy, in bits per byte.
#[expect(
    clippy::cast_precision_loss,
    reason = "counts of bytes in a short token fit f64 exactly"
)]
pub(super) fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &c in s {
        counts[usize::from(c)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// A generated credential rather than a word, a path or a placeholder:
/// long enough, letters and digits mixed, and high entropy (English words
/// and `your-api-key-here` sit below 3.3 bits; random base62 near 5).
pub(super) fn looks_random(s: &[u8]) -> bool {
    s.len() >= 16
        && s.iter().any(u8::is_ascii_digit)
        && s.iter().any(u8::is_ascii_alphabetic)
        && entropy(s) >= 3.3
}

/// Luhn checksum over ASCII digits.
pub(super) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn prefix_num(digits: &[u8], n: usize) -> u32 {
    digits
        .iter()
        .take(n)
        .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'))
}

/// Issuer prefix plausible for the number's length (Visa, Mastercard, Amex,
/// Discover, JCB, Diners): most Luhn-valid digit runs are not cards.
pub(super) fn card_iin_ok(digits: &[u8]) -> bool {
    let len = digits.len();
    let (p1, p2, p3, p4) = (
        prefix_num(digits, 1),
        prefix_num(digits, 2),
        prefix_num(digits, 3),
        prefix_num(digits, 4),
    );
    let visa = p1 == 4 && matches!(len, 13 | 16 | 19);
    let mastercard = ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16;
    let amex = matches!(p2, 34 | 37) && len == 15;
    let discover =
        (p4 == 6011 || p2 == 65 || (644..=649).contains(&p3)) && (16..=19).contains(&len);
    let jcb = (3528..=3589).contains(&p4) && (16..=19).contains(&len);
    let diners = ((300..=305).contains(&p3) || matches!(p2, 36 | 38)) && (14..=19).contains(&len);
    visa || mastercard || amex || discover || jcb || diners
}

/// Group layout of a card number written with separators: one group, or a
/// first group of 4 followed by groups of 3 to 6 (4-4-4-4, 4-6-5, 4-6-4,
/// 4-4-4-4-3), all with the same separator.
pub(super) fn card_groups_ok(candidate: &[u8]) -> bool {
    let sep = candidate.iter().copied().find(|c| !c.is_ascii_digit());
    let Some(sep) = sep else {
        return true;
    };
    let mut groups = candidate.split(|&c| !c.is_ascii_digit());
    if candidate.iter().any(|&c| !c.is_ascii_digit() && c != sep) {
        return false;
    }
    groups.next().is_some_and(|g| g.len() == 4) && groups.all(|g| (3..=6).contains(&g.len()))
}

/// IBAN lengths by country, for the countries that issue them.
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// The IBAN length of a country, `None` for countries without IBANs.
pub(super) fn iban_length(country: &[u8]) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| c.as_slice() == country)
        .map(|&(_, len)| len)
}

/// ISO 13616 check: the first four characters moved to the end, letters as
/// 10..=35, the number mod 97 is 1.
pub(super) fn iban_mod97(compact: &[u8]) -> bool {
    if compact.len() < 5 {
        return false;
    }
    let mut rem = 0u32;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000.
pub(super) fn ssn_ok(digits: &[u8]) -> bool {
    if digits.len() != 9 || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let area = prefix_num(digits, 3);
    let group = prefix_num(&digits[3..], 2);
    let serial = prefix_num(&digits[5..], 4);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// A number standing alone: not glued to digits, letters or a dotted or
/// dashed number on either side (versions, IPs, dates, longer ids).
pub(super) fn isolated_number(b: &[u8], start: usize, end: usize) -> bool {
    clean_before(b, start) && clean_after(b, end)
}

fn clean_before(b: &[u8], start: usize) -> bool {
    let Some(&c) = start.checked_sub(1).and_then(|i| b.get(i)) else {
        return true;
    };
    if c.is_ascii_alphanumeric() || c == b'_' {
        return false;
    }
    !(matches!(c, b'.' | b'-' | b'/' | b':' | b'+') && start > 1 && b[start - 2].is_ascii_digit())
}

fn clean_after(b: &[u8], end: usize) -> bool {
    let Some(&c) = b.get(end) else {
        return true;
    };
    if c.is_ascii_alphanumeric() || c == b'_' {
        return false;
    }
    !(matches!(c, b'.' | b'-' | b'/' | b':') && b.get(end + 1).is_some_and(u8::is_ascii_digit))
}

fn b64url_value(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    }))
}

/// Decodes unpadded base64url.
pub(super) fn b64url_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in s {
        acc = (acc << 6) | b64url_value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// End of a JWT (JWS: three segments, JWE: five) starting at `start` with
/// `eyJ`, if the first segment decodes to a JSON header naming an `alg`.
pub(super) fn jwt_end(b: &[u8], start: usize) -> Option<usize> {
    let is_seg = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
    let header_end = run_end(b, start, is_seg, MAX_JWT_HEADER)?;
    if b.get(header_end) != Some(&b'.') {
        return None;
    }
    let header = b64url_decode(&b[start..header_end])?;
    let header = header.trim_ascii();
    if header.first() != Some(&b'{') || !contains(header, b"\"alg\"") {
        return None;
    }
    let segments = if contains(header, b"\"enc\"") { 5 } else { 3 };
    let mut end = header_end;
    for i in 1..segments {
        if b.get(end) != Some(&b'.') {
            return None;
        }
        let seg_end = run_end(b, end + 1, is_seg, MAX_JWT_SEGMENT)?;
        // A JWS payload and a JWE ciphertext hold the data; the other
        // segments may be empty (`alg: none`, direct key agreement).
        let required = if segments == 3 { i == 1 } else { i == 3 };
        if required && seg_end - end - 1 < 2 {
            return None;
        }
        end = seg_end;
    }
    Some(end)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(hay, needle).is_some()
}

/// Labels of PEM blocks that hold private keys.
fn is_private_key_label(label: &[u8]) -> bool {
    is_label(label) && (label.ends_with(b"PRIVATE KEY") || label == b"PGP PRIVATE KEY BLOCK")
}

/// PEM labels are upper-case words; checking it keeps an END line from
/// being looked for across quotes or lines.
fn is_label(label: &[u8]) -> bool {
    label.iter().all(|&c| c.is_ascii_uppercase() || c == b' ')
}

/// End of the PEM private key block whose `-----BEGIN ` is at `start`: after
/// the matching END line, or, when the block is cut short, after the last
/// base64 character of its body. The body may hold real line breaks,
/// JSON escapes (`\n`, `\\n`, `\r`) and legacy headers (`Proc-Type: 4,ENCRYPTED`).
pub(super) fn private_key_end(b: &[u8], start: usize) -> Option<usize> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const DASHES: &[u8] = b"-----";
    let label_start = start + BEGIN.len();
    let window = &b[label_start..b.len().min(label_start + 48)];
    let label_len = memchr::memmem::find(window, DASHES)?;
    let label = &b[label_start..label_start + label_len];
    if !is_private_key_label(label) {
        return None;
    }
    let mut i = label_start + label_len + DASHES.len();
    let mut last_body = i;
    while i < b.len() {
        let c = b[i];
        if c == b'-' && b[i..].starts_with(DASHES) {
            let rest = &b[i + DASHES.len()..];
            if rest.starts_with(b"END ") {
                let end_label = i + DASHES.len() + 4;
                let window = &b[end_label..b.len().min(end_label + 48)];
                if let Some(n) = memchr::memmem::find(window, DASHES) {
                    if is_label(&window[..n]) {
                        return Some(end_label + n + DASHES.len());
                    }
                }
            }
            // Another block, or a stray line of dashes: the body ended.
            break;
        }
        if c == b'\\' {
            // A JSON escape inside the body; `\n` is not base64 `n`.
            i += 2;
            continue;
        }
        if is_b64_char(c) {
            i += 1;
            last_body = i;
            continue;
        }
        if matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b':' | b',' | b'-') {
            i += 1;
            continue;
        }
        break;
    }
    Some(last_body.min(b.len()))
}

// `icon@2x.png`, `pkg@1.0.tgz`: file names, not addresses.
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "js", "mjs", "cjs", "ts", "tsx", "jsx",
    "css", "scss", "json", "yaml", "yml", "toml", "lock", "py", "rs", "go", "md", "txt", "html",
    "htm", "xml", "zip", "gz", "tgz", "tar", "whl", "so", "wasm",
];

/// Validates an email candidate `[start, end)` found by the regex and
/// returns its end once trailing punctuation is trimmed.
pub(super) fn email_end(b: &[u8], start: usize, end: usize) -> Option<usize> {
    let is_local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    // The regex bounds the local part; a longer one shows up as a local
    // character just before the candidate.
    if start > 0 && (is_local(b[start - 1]) || b[start - 1] == b'@') {
        return None;
    }
    let at = start + memchr::memchr(b'@', &b[start..end])?;
    let local = &b[start..at];
    if local.first() == Some(&b'.') || local.last() == Some(&b'.') || contains(local, b"..") {
        return None;
    }
    // `git@github.com:org/repo` is an SSH remote, not a person.
    if local == b"git" {
        return None;
    }
    let mut dend = end;
    while dend > at + 1 && matches!(b[dend - 1], b'.' | b'-') {
        dend -= 1;
    }
    if b.get(dend) == Some(&b'@') {
        return None;
    }
    let domain = &b[at + 1..dend];
    let labels: Vec<&[u8]> = domain.split(|&c| c == b'.').collect();
    if labels.len() < 2
        || labels
            .iter()
            .any(|l| l.is_empty() || l.len() > 63 || l[0] == b'-' || l[l.len() - 1] == b'-')
    {
        return None;
    }
    let tld = labels[labels.len() - 1];
    if tld.len() < 2 || !tld.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    let tld = std::str::from_utf8(tld).ok()?;
    if FILE_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(tld)) {
        return None;
    }
    Some(dend)
}

/// Phone candidate: digit count plausible for its form, one kind of
/// separator, standing alone.
pub(super) fn phone_ok(b: &[u8], start: usize, end: usize) -> bool {
    let s = &b[start..end];
    let digits = s.iter().filter(|c| c.is_ascii_digit()).count();
    if s.first() == Some(&b'+') {
        if start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'+') {
            return false;
        }
        // E.164 allows 15 digits; fewer than 8 is a short code or a number.
        if !(8..=15).contains(&digits) {
            return false;
        }
    } else if !(10..=11).contains(&digits) {
        return false;
    }
    let mut kinds = [false; 3];
    for &c in s {
        match c {
            b' ' => kinds[0] = true,
            b'-' => kinds[1] = true,
            b'.' => kinds[2] = true,
            _ => {}
        }
    }
    let n_kinds = kinds.iter().filter(|&&k| k).count();
    // `(415) 555-0132` mixes a space after the parenthesis with dashes;
    // otherwise one kind of separator throughout.
    if n_kinds > 2 || (n_kinds == 2 && !(kinds[0] && s.contains(&b'('))) {
        return false;
    }
    let before_ok = matches!(s.first(), Some(b'(' | b'+')) || clean_before(b, start);
    before_ok && clean_after(b, end)
}
