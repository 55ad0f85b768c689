//! The detectors: compiled once, each appending candidates that the
//! scanner then resolves. Every regex here has bounded repetitions (see the
//! module doc of `scan` for why), and every hand-read value has a length cap.

use regex::Regex;

use super::checks::{self, is_key_char, run_end};
use super::{DataClass, Match, MAX_MATCHES};

/// Candidates looked at per text; overlaps are resolved after, so this is
/// larger than the number of matches kept.
const MAX_CANDIDATES: usize = 4 * MAX_MATCHES;
/// Longest provider key read after its prefix.
const MAX_KEY: usize = 512;
/// Longest value read after a `password=`-style keyword.
const MAX_PASSWORD: usize = 256;
/// Longest token read after `Bearer` or an `api_key=` keyword.
const MAX_TOKEN: usize = 4096;

/// Separator between a keyword and its value: optional (escaped) closing
/// quote of the key, `:`/`=`/`=>`, and the value's optional opening quote,
/// captured so that the value can be read to the matching close.
const ASSIGN: &str = r#"\\?["']?[ \t]{0,3}(?:[:=]|=>)[ \t]{0,3}(\\?["'])?"#;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static detector regex")
}

pub(super) struct Detectors {
    /// Literal starts of provider keys and JWTs.
    token_start: Regex,
    /// `api_key = …`, `client_secret: …` with any value.
    key_assign: Regex,
    bearer: Regex,
    aws_secret: Regex,
    gcp_key_id: Regex,
    azure_assign: Regex,
    azure_sas: Regex,
    azure_client_secret: Regex,
    password_assign: Regex,
    /// `… with password Qz8!mR4#tLw2 and …`: no `=`, so only values that
    /// look like a password (see `strong_password`).
    password_prose: Regex,
    url_password: Regex,
    mysql_password: Regex,
    card: Regex,
    iban: Regex,
    ssn: Regex,
    ssn_keyword: Regex,
    phone_intl: Regex,
    phone_nanp: Regex,
    phone_national: Regex,
    email: Regex,
}

/// Where candidates go; stops taking them at [`MAX_CANDIDATES`].
struct Sink<'a> {
    out: &'a mut Vec<Match>,
}

impl Sink<'_> {
    fn full(&self) -> bool {
        self.out.len() >= MAX_CANDIDATES
    }

    fn push(&mut self, class: DataClass, start: usize, end: usize) {
        if !self.full() && start < end {
            self.out.push(Match { class, start, end });
        }
    }
}

impl Detectors {
    pub(super) fn new() -> Self {
        Self {
            token_start: re(concat!(
                r"(?-u:\b)(?:eyJ|sk-|AIza|gh[pousr]_|github_pat_|xox[abprse]-|[sr]k_(?:live|test)_",
                r"|hf_|GOCSPX-|A(?:KIA|SIA|GPA|IDA|ROA|IPA|NPA|NVA|BIA|CCA))"
            )),
            key_assign: re(&format!(
                r"(?i)(?:api[_-]?key|api[_-]?token|access[_-]?token|auth[_-]?token|secret[_-]?key|client[_-]?secret|private[_-]?token|bearer[_-]?token){ASSIGN}"
            )),
            bearer: re(r"(?i)(?-u:\b)bearer\s{1,3}"),
            aws_secret: re(&format!(
                r"(?i)(?:aws[_\-. ]?secret(?:[_\-. ]?access)?(?:[_\-. ]?key)?|secret[_\-. ]?access[_\-. ]?key)(?:{ASSIGN}|\s{{1,3}})"
            )),
            gcp_key_id: re(&format!(r"(?i)private_key_id{ASSIGN}")),
            azure_assign: re(r"(?i)(?:AccountKey|SharedAccessKey|AccessKey)="),
            azure_sas: re(r"[?&;]sig="),
            azure_client_secret: re(r"(?-u:\b)[A-Za-z0-9_~.-]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}"),
            // Starts at the keyword: a literal start lets the search skip
            // to candidates (`DB_PASSWORD=` still matches at `PASSWORD`).
            password_assign: re(&format!(
                r"(?i)(?:password|passwd|passphrase|pwd|_pass){ASSIGN}"
            )),
            // The user may be empty (`redis://:pw@host`); a `#` that should
            // have been percent-encoded is still part of the password.
            url_password: re(
                r#"(?i)(?-u:\b)[a-z][a-z0-9+.-]{1,15}://[^\s:/?#@\[\]"'<>\\]{0,128}:([^\s:/?@\[\]"'<>\\]{1,128})@[A-Za-z0-9\[]"#,
            ),
            password_prose: re(
                r"(?i)(?-u:\b)(?:password|passwd|passphrase)[ \t]{1,3}(?:(?:is|was|of|set to)[ \t]{1,3})?",
            ),
            mysql_password: re(
                r#"(?-u:\b)(?:mysql|mysqldump|mysqladmin|mariadb)(?-u:\b)[^\n;|&]{0,256}?\s-p([^\s'"\\]{1,128})"#,
            ),
            card: re(r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)"),
            iban: re(r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?-u:\b)"),
            ssn: re(r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)"),
            ssn_keyword: re(
                r"(?i)(?-u:\b)(?:ssn|social[ _-]?security(?:[ _-]?(?:number|no|#))?)[^0-9\n]{0,24}([0-9]{3} ?[0-9]{2} ?[0-9]{4})(?-u:\b)",
            ),
            phone_intl: re(r"\+[1-9][0-9 ().-]{6,22}[0-9]"),
            phone_nanp: re(
                r"(?:\([2-9][0-9]{2}\) ?|(?-u:\b)[2-9][0-9]{2}[-. ])[2-9][0-9]{2}[-. ][0-9]{4}(?-u:\b)",
            ),
            // Trunk prefix 0, area code, then two groups or one (UK mobiles
            // `07700 900461`); `phone_ok` wants 10 or 11 digits in all.
            phone_national: re(
                r"(?-u:\b)0[1-9][0-9]{1,4}[ -](?:[0-9]{3,4}[ -][0-9]{3,4}|[0-9]{5,7})(?-u:\b)",
            ),
            email: re(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}"),
        }
    }

    /// Appends candidates to `out`; `false` when it stopped at the cap.
    pub(super) fn run(&self, text: &str, out: &mut Vec<Match>) -> bool {
        let mut sink = Sink { out };
        private_keys(text, &mut sink);
        self.tokens(text, &mut sink);
        self.assignments(text, &mut sink);
        self.passwords(text, &mut sink);
        self.personal(text, &mut sink);
        !sink.full()
    }

    fn tokens(&self, text: &str, sink: &mut Sink<'_>) {
        let b = text.as_bytes();
        let mut at = 0;
        while let Some(m) = self.token_start.find_at(text, at) {
            if sink.full() {
                return;
            }
            match classify_token(b, m.start(), m.end()) {
                Some((class, end)) => {
                    sink.push(class, m.start(), end);
                    at = end;
                }
                None => at = m.end(),
            }
        }
    }

    /// Keyword-led secrets other than passwords.
    fn assignments(&self, text: &str, sink: &mut Sink<'_>) {
        let b = text.as_bytes();
        // Generic `api_key = "…"`: only values that look generated.
        each_value(&self.key_assign, text, sink, |_, v| {
            let end = run_end(b, v, is_token_char, MAX_TOKEN)?;
            checks::looks_random(&b[v..end]).then_some((DataClass::ApiKey, end))
        });
        each_value(&self.bearer, text, sink, |_, v| {
            let end = run_end(b, v, is_token_char, MAX_TOKEN)?;
            checks::looks_random(&b[v..end]).then_some((DataClass::ApiKey, end))
        });
        // AWS secret access keys: exactly 40 base64 characters.
        each_value(&self.aws_secret, text, sink, |_, v| {
            let end = run_end(b, v, checks::is_b64_char, 41)?;
            (end - v == 40).then_some((DataClass::AwsKey, end))
        });
        each_value(&self.gcp_key_id, text, sink, |_, v| {
            let end = run_end(b, v, |c| c.is_ascii_hexdigit(), 41)?;
            (end - v == 40).then_some((DataClass::GcpKey, end))
        });
        // Storage account keys are 88 base64 characters, Service Bus keys
        // 44; 40 rules out short placeholders.
        each_value(&self.azure_assign, text, sink, |_, v| {
            let end = run_end(b, v, checks::is_b64_char, 128)?;
            (end - v >= 40).then_some((DataClass::AzureKey, end))
        });
        // SAS signatures: a URL-encoded base64 HMAC-SHA256 (44 characters
        // decoded).
        each_value(&self.azure_sas, text, sink, |_, v| {
            let end = run_end(b, v, |c| checks::is_b64_char(c) || c == b'%', 256)?;
            let encoded = memchr::memchr_iter(b'%', &b[v..end]).count();
            (end - v - 2 * encoded >= 40).then_some((DataClass::AzureKey, end))
        });
        for m in self.azure_client_secret.find_iter(text) {
            let (s, e) = (m.start(), m.end());
            let clean_end = b
                .get(e)
                .is_none_or(|&c| !is_key_char(c) && c != b'~' && c != b'.');
            if clean_end && checks::looks_random(&b[s..e]) {
                sink.push(DataClass::AzureKey, s, e);
            }
        }
    }

    fn passwords(&self, text: &str, sink: &mut Sink<'_>) {
        let b = text.as_bytes();
        let mut at = 0;
        while let Some(c) = self.password_assign.captures_at(text, at) {
            if sink.full() {
                return;
            }
            let whole = c.get(0).expect("group 0");
            let quote = c.get(1).map(|q| q.as_str());
            at = whole.end().max(whole.start() + 1);
            if let Some((s, e)) = password_value(text, whole.end(), quote) {
                sink.push(DataClass::Password, s, e);
                at = e;
            }
        }
        for m in self.password_prose.find_iter(text) {
            if sink.full() {
                return;
            }
            if let Some((s, e)) = password_value(text, m.end(), None) {
                let e = s + b[s..e]
                    .iter()
                    .rposition(|c| !matches!(c, b'.' | b',' | b':' | b';'))
                    .map_or(0, |p| p + 1);
                if strong_password(&b[s..e]) {
                    sink.push(DataClass::Password, s, e);
                }
            }
        }
        for re in [&self.url_password, &self.mysql_password] {
            for c in re.captures_iter(text) {
                if let Some(v) = c.get(1) {
                    if !is_placeholder(&b[v.start()..v.end()]) {
                        sink.push(DataClass::Password, v.start(), v.end());
                    }
                }
            }
        }
    }

    fn personal(&self, text: &str, sink: &mut Sink<'_>) {
        let b = text.as_bytes();
        self.cards(text, sink);
        for m in self.iban.find_iter(text) {
            if let Some(end) = iban_end(b, m.start(), m.end()) {
                sink.push(DataClass::Iban, m.start(), end);
            }
        }
        for m in self.ssn.find_iter(text) {
            let digits: Vec<u8> = m.as_str().bytes().filter(u8::is_ascii_digit).collect();
            if checks::ssn_ok(&digits) && checks::isolated_number(b, m.start(), m.end()) {
                sink.push(DataClass::UsSsn, m.start(), m.end());
            }
        }
        for c in self.ssn_keyword.captures_iter(text) {
            let v = c.get(1).expect("group 1");
            let digits: Vec<u8> = v.as_str().bytes().filter(u8::is_ascii_digit).collect();
            if checks::ssn_ok(&digits) && checks::isolated_number(b, v.start(), v.end()) {
                sink.push(DataClass::UsSsn, v.start(), v.end());
            }
        }
        for re in [&self.phone_intl, &self.phone_nanp, &self.phone_national] {
            for m in re.find_iter(text) {
                if checks::phone_ok(b, m.start(), m.end()) {
                    sink.push(DataClass::Phone, m.start(), m.end());
                }
            }
        }
        for m in self.email.find_iter(text) {
            if sink.full() {
                return;
            }
            if let Some(end) = checks::email_end(b, m.start(), m.end()) {
                sink.push(DataClass::Email, m.start(), end);
            }
        }
    }

    fn cards(&self, text: &str, sink: &mut Sink<'_>) {
        let b = text.as_bytes();
        let mut at = 0;
        while let Some(m) = self.card.find_at(text, at) {
            if sink.full() {
                return;
            }
            let (s, e) = (m.start(), m.end());
            let cand = &b[s..e];
            let digits: Vec<u8> = cand.iter().copied().filter(u8::is_ascii_digit).collect();
            if checks::card_groups_ok(cand)
                && checks::isolated_number(b, s, e)
                && checks::card_iin_ok(&digits)
                && checks::luhn(&digits)
            {
                sink.push(DataClass::CardNumber, s, e);
                at = e;
                continue;
            }
            // `1 4111 1111 1111 1111`: the greedy candidate began one group
            // early; retry from the next group.
            at = match cand.iter().position(|c| !c.is_ascii_digit()) {
                Some(p) => s + p + 1,
                None => e,
            };
        }
    }
}

fn is_token_char(c: u8) -> bool {
    is_key_char(c) || matches!(c, b'.' | b'+' | b'/' | b'=' | b'~')
}

/// PEM private key blocks, found by their BEGIN line and walked to the
/// END line; the search resumes after each block.
fn private_keys(text: &str, sink: &mut Sink<'_>) {
    let b = text.as_bytes();
    let finder = memchr::memmem::Finder::new(b"-----BEGIN ");
    let mut at = 0;
    while let Some(p) = finder.find(&b[at..]) {
        let start = at + p;
        if sink.full() {
            return;
        }
        match checks::private_key_end(b, start) {
            Some(end) => {
                sink.push(DataClass::PrivateKey, start, end);
                at = end.max(start + 1);
            }
            None => at = start + 1,
        }
    }
}

/// Runs a keyword regex; for each match, `value` reads the value starting
/// at the match's end and says its class and end. The search resumes after
/// an accepted value, so values are read once.
fn each_value(
    re: &Regex,
    text: &str,
    sink: &mut Sink<'_>,
    mut value: impl FnMut(usize, usize) -> Option<(DataClass, usize)>,
) {
    let mut at = 0;
    while let Some(m) = re.find_at(text, at) {
        if sink.full() {
            return;
        }
        at = m.end().max(m.start() + 1);
        if let Some((class, end)) = value(m.start(), m.end()) {
            if end > m.end() {
                sink.push(class, m.end(), end);
                at = end;
            }
        }
    }
}

/// Provider key or JWT starting at `start` (the regex matched its prefix up
/// to `prefix_end`): its class and end.
fn classify_token(b: &[u8], start: usize, prefix_end: usize) -> Option<(DataClass, usize)> {
    let prefix = &b[start..prefix_end];
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    let body = |keep: fn(u8) -> bool| run_end(b, prefix_end, keep, MAX_KEY);
    let class = match prefix {
        b"eyJ" => return checks::jwt_end(b, start).map(|e| (DataClass::Jwt, e)),
        // OpenAI (legacy 48, project ~160) and Anthropic (`sk-ant-api03-…`).
        b"sk-" => {
            let end = body(is_key_char)?;
            let ok = end - prefix_end >= 20 && checks::looks_random(&b[prefix_end..end]);
            return ok.then_some((DataClass::ApiKey, end));
        }
        b"AIza" => {
            let end = body(is_key_char)?;
            return (end - start == 39).then_some((DataClass::ApiKey, end));
        }
        b"GOCSPX-" => {
            let end = body(is_key_char)?;
            return (end - prefix_end == 28).then_some((DataClass::GcpKey, end));
        }
        p if p.starts_with(b"gh") && p.len() == 4 => {
            let end = body(alnum)?;
            return (end - prefix_end >= 36).then_some((DataClass::ApiKey, end));
        }
        b"github_pat_" => {
            let end = body(|c| c.is_ascii_alphanumeric() || c == b'_')?;
            return (end - prefix_end >= 40).then_some((DataClass::ApiKey, end));
        }
        p if p.starts_with(b"xox") => {
            let end = body(|c| c.is_ascii_alphanumeric() || c == b'-')?;
            let v = &b[prefix_end..end];
            let ok = v.len() >= 20 && v.iter().filter(|c| c.is_ascii_digit()).count() >= 4;
            return ok.then_some((DataClass::ApiKey, end));
        }
        b"hf_" => {
            let end = body(alnum)?;
            let v = &b[prefix_end..end];
            let ok = (30..=40).contains(&v.len())
                && v.iter().any(u8::is_ascii_uppercase)
                && v.iter().any(u8::is_ascii_lowercase);
            return ok.then_some((DataClass::ApiKey, end));
        }
        p if p.ends_with(b"_live_") || p.ends_with(b"_test_") => DataClass::ApiKey,
        // AWS key ids: 4-letter type prefix and 16 upper-case base32-ish.
        _ => {
            let end = run_end(b, start, alnum, 21)?;
            let ok = end - start == 20
                && b[prefix_end..end]
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
            return ok.then_some((DataClass::AwsKey, end));
        }
    };
    // Stripe secret and restricted keys.
    let end = body(alnum)?;
    (end - prefix_end >= 20).then_some((class, end))
}

/// Values that name a password rather than hold one: placeholders,
/// variables, type names, masks.
fn is_placeholder(v: &[u8]) -> bool {
    const WORDS: &[&str] = &[
        "str",
        "string",
        "int",
        "bool",
        "none",
        "null",
        "nil",
        "undefined",
        "true",
        "false",
        "optional",
        "password",
        "required",
        "secret",
        "redacted",
        "changeme",
        "xxx",
        "env",
    ];
    let Some(&first) = v.first() else {
        return true;
    };
    if matches!(first, b'$' | b'{' | b'<' | b'%' | b'[' | b'(' | b'*') {
        return true;
    }
    if v.iter()
        .all(|&c| c == b'*' || c == b'x' || c == b'X' || c == b'.')
    {
        return true;
    }
    std::str::from_utf8(v).is_ok_and(|s| WORDS.iter().any(|w| w.eq_ignore_ascii_case(s)))
}

/// The value after a `password=`-style keyword ending at `from`: up to the
/// matching quote when the value is quoted, else up to whitespace or a
/// delimiter. `None` for placeholders and code (`password = getpass()`).
fn password_value(text: &str, from: usize, quote: Option<&str>) -> Option<(usize, usize)> {
    let b = text.as_bytes();
    let limit = b.len().min(from + MAX_PASSWORD);
    let end = if let Some(q) = quote {
        // The first closing quote not itself escaped at this level: `\"`
        // inside `"…"`, `\\\"` inside `\"…\"`.
        memchr::memmem::find_iter(&b[from..limit], q.as_bytes())
            .map(|p| from + p)
            .find(|&p| p == 0 || b[p - 1] != b'\\')?
    } else {
        let stop = |c: u8| {
            c.is_ascii_whitespace() || b"\"'`,;&<>)}]\\".contains(&c) || c == b'(' || c == b'['
        };
        let mut end = b[from..limit]
            .iter()
            .position(|&c| stop(c))
            .map_or(limit, |p| from + p);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if matches!(b.get(end), Some(b'(' | b'[')) {
            return None;
        }
        end
    };
    let v = &b[from..end];
    if v.len() < 3 || is_placeholder(v) || v.contains(&b'\n') {
        return None;
    }
    Some((from, end))
}

/// A word after `password` in prose that is a password rather than the
/// next word of the sentence: 8 to 64 bytes with a letter and a digit, and
/// either both cases or a symbol; not a hash or a hex id.
fn strong_password(v: &[u8]) -> bool {
    let has = |f: fn(&u8) -> bool| v.iter().any(f);
    let symbol = |c: &u8| c.is_ascii_punctuation();
    let hexish = v.iter().filter(|c| c.is_ascii_hexdigit()).count() * 10 >= v.len() * 9;
    (8..=64).contains(&v.len())
        && has(u8::is_ascii_alphabetic)
        && has(u8::is_ascii_digit)
        && ((has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase)) || has(symbol))
        && !hexish
        && !is_placeholder(v)
}

/// Validates an IBAN candidate: known country, its exact length (a spaced
/// candidate may be cut where the next word starts), mod-97.
fn iban_end(b: &[u8], start: usize, end: usize) -> Option<usize> {
    let want = checks::iban_length(&b[start..start + 2])?;
    let mut compact = Vec::with_capacity(34);
    let mut cut = None;
    for (i, &c) in b[start..end].iter().enumerate() {
        if c != b' ' {
            compact.push(c);
            if compact.len() == want {
                cut = Some(start + i + 1);
                break;
            }
        }
    }
    let cut = cut?;
    // Cut inside a compact run of characters: a longer token, not an IBAN.
    if cut < end && b[cut] != b' ' {
        return None;
    }
    checks::iban_mod97(&compact).then_some(cut)
}
