//! Redaction of secrets before anything is stored.
//!
//! Two layers. Every captured event goes through [`Redactor`] before
//! routing and sinks: it finds secrets and personal data with
//! [`scan::Scanner`] in every field that carries captured text and replaces
//! them by markers, as the `[redact]` config ([`RedactConfig`]) says. See
//! docs/redaction.md.
//!
//! Earlier, at capture, API keys are never kept in clear, not even in memory longer than it takes
//! to parse an HTTP head: the parser replaces them with a fingerprint that
//! identifies a key (which key did this call?) without revealing it. The
//! fingerprint shows a few characters of both ends, enough for a human to
//! match it against a key listing, and a short hash of the whole key so two
//! keys with the same ends still differ. Keys shorter than 12 characters
//! show no characters at all: the ends would be most of the key.

pub mod policy;
mod redactor;
pub mod scan;
#[cfg(test)]
mod tests_redactor;
mod text;

pub use policy::{Mode, RedactConfig, RedactError};
pub use redactor::{RedactStats, Redactor};

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// What replaces values that are secret but are not API keys (cookies).
pub const REDACTED: &str = "[redacted]";

/// Below this many characters a key shows neither prefix nor suffix.
const MIN_CHARS_FOR_ENDS: usize = 12;
const PREFIX_CHARS: usize = 3;
const SUFFIX_CHARS: usize = 4;
/// Hex digits of the sha256 kept in the fingerprint (32 bits).
const HASH_HEX_DIGITS: usize = 8;

/// Headers that carry an API key or credentials.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    // AWS temporary credentials: secret, but the access key id in the
    // SigV4 `authorization` names the caller.
    "x-amz-security-token",
];

/// Headers whose values are session secrets but not keys worth a fingerprint.
const COOKIE_HEADERS: &[&str] = &["cookie", "set-cookie"];

/// Query parameters that carry API keys (Gemini's `?key=`, and common
/// variants); the same secret as a header, in the URL.
const SECRET_QUERY_PARAMS: &[&str] = &["key", "api_key", "api-key", "apikey", "access_token"];

/// Fingerprint of a secret: `sk-…cdef#a1b2c3d4` (first 3 and last 4
/// characters, then the first 8 hex digits of the sha256 of the whole
/// secret), or `…#a1b2c3d4` for secrets shorter than 12 characters.
pub fn fingerprint_key(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hash = hex::encode(&digest[..HASH_HEX_DIGITS / 2]);
    let chars = secret.chars().count();
    if chars < MIN_CHARS_FOR_ENDS {
        return format!("…#{hash}");
    }
    let prefix: String = secret.chars().take(PREFIX_CHARS).collect();
    let suffix: String = secret.chars().skip(chars - SUFFIX_CHARS).collect();
    format!("{prefix}…{suffix}#{hash}")
}

/// Whether a header (any case) carries an API key or credentials.
pub fn is_secret_header(name: &str) -> bool {
    SECRET_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Whether a header (any case) carries cookies.
pub fn is_cookie_header(name: &str) -> bool {
    COOKIE_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The credential inside an authorization header value: the part after an
/// auth scheme such as `Bearer ` or `Basic `, else the whole value.
pub fn credential_of(value: &str) -> &str {
    let value = value.trim();
    // AWS SigV4: `AWS4-HMAC-SHA256 Credential=AKID/date/region/service/
    // aws4_request, SignedHeaders=…, Signature=…`: the access key id is the
    // stable identity (the signature changes with every request).
    if let Some(rest) = value.strip_prefix("AWS4-HMAC-SHA256 ") {
        if let Some(cred) = rest
            .split(',')
            .find_map(|p| p.trim().strip_prefix("Credential="))
        {
            return cred.split('/').next().unwrap_or(cred);
        }
    }
    for scheme in ["bearer ", "basic "] {
        if let Some(head) = value.get(..scheme.len()) {
            if head.eq_ignore_ascii_case(scheme) {
                // `get` above proved the boundary is a char boundary.
                return value[scheme.len()..].trim_start();
            }
        }
    }
    value
}

/// Replaces API keys in the query of a request target by their fingerprint.
/// Returns the target to store and the fingerprint of the first key found.
pub fn redact_target(target: &str) -> (Cow<'_, str>, Option<String>) {
    let Some((path, query)) = target.split_once('?') else {
        return (Cow::Borrowed(target), None);
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let mut first_key = None;
    let mut changed = false;
    let params: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, value))
                if !value.is_empty()
                    && SECRET_QUERY_PARAMS
                        .iter()
                        .any(|p| p.eq_ignore_ascii_case(name)) =>
            {
                let fp = fingerprint_key(value);
                first_key.get_or_insert_with(|| fp.clone());
                changed = true;
                Cow::Owned(format!("{name}={fp}"))
            }
            _ => Cow::Borrowed(param),
        })
        .collect();
    if !changed {
        return (Cow::Borrowed(target), None);
    }
    let mut out = format!("{path}?{}", params.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    (Cow::Owned(out), first_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_shows_ends_and_hash() {
        let secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789cdef";
        let fp = fingerprint_key(secret);
        let digest = hex::encode(Sha256::digest(secret.as_bytes()));
        assert_eq!(fp, format!("sk-…cdef#{}", &digest[..8]));
        assert!(!fp.contains("abcdefghij"));
    }

    #[test]
    fn short_secret_shows_only_hash() {
        let fp = fingerprint_key("hunter2");
        assert!(fp.starts_with("…#"), "{fp}");
        assert_eq!(fp.chars().count(), 10);
        // 11 chars: still too short for ends; 12: ends shown.
        assert!(fingerprint_key("abcdefghijk").starts_with("…#"));
        assert!(fingerprint_key("abcdefghijkl").starts_with("abc…ijkl#"));
    }

    #[test]
    fn fingerprint_is_char_safe() {
        let fp = fingerprint_key("ключ-секрет-очень-длинный");
        assert!(fp.starts_with("клю…нный#"), "{fp}");
    }

    #[test]
    fn different_keys_same_ends_differ() {
        assert_ne!(
            fingerprint_key("sk-aaaaaaaaaaaa-cdef"),
            fingerprint_key("sk-bbbbbbbbbbbb-cdef")
        );
    }

    #[test]
    fn secret_headers_any_case() {
        for h in [
            "Authorization",
            "PROXY-AUTHORIZATION",
            "X-Api-Key",
            "api-key",
            "x-goog-api-key",
        ] {
            assert!(is_secret_header(h), "{h}");
        }
        assert!(!is_secret_header("content-type"));
        assert!(is_cookie_header("Set-Cookie"));
        assert!(!is_cookie_header("cookies"));
    }

    #[test]
    fn credential_strips_scheme() {
        assert_eq!(credential_of("Bearer sk-123"), "sk-123");
        assert_eq!(credential_of("bearer   sk-123"), "sk-123");
        assert_eq!(credential_of("Basic dXNlcjpwYXNz"), "dXNlcjpwYXNz");
        assert_eq!(credential_of("sk-ant-xyz"), "sk-ant-xyz");
        assert_eq!(credential_of("Bé"), "Bé");
        assert_eq!(
            credential_of(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20250820/us-east-1/bedrock/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=0f1e2d3c"
            ),
            "AKIAIOSFODNN7EXAMPLE"
        );
    }

    #[test]
    fn query_keys_are_redacted() {
        let (t, fp) =
            redact_target("/v1beta/models/g:generateContent?alt=sse&key=AIzaSyA-very-secret-key#x");
        assert!(!t.contains("very-secret"), "{t}");
        let fp = fp.expect("a key");
        assert_eq!(
            t,
            format!("/v1beta/models/g:generateContent?alt=sse&key={fp}#x")
        );
        let (t, fp) = redact_target("/v1/messages?beta=true");
        assert_eq!(t, "/v1/messages?beta=true");
        assert!(fp.is_none());
    }
}

/// Header-like arguments (`Authorization: Bearer …`) and flags that carry a
/// credential (`--api-key VALUE`, `--token=VALUE`).
fn arg_patterns() -> &'static [regex::Regex; 3] {
    static P: std::sync::OnceLock<[regex::Regex; 3]> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        [
            // A header given on a command line (curl -H, httpie).
            regex::Regex::new(
                r"(?i)^\s*(authorization|proxy-authorization|x-api-key|api-key|x-goog-api-key)\s*:\s*(?:(?:bearer|basic)\s+)?(.+?)\s*$",
            )
            .expect("static regex"),
            // NAME=VALUE where NAME says it is a secret (env-style or --flag=).
            regex::Regex::new(
                r"(?i)^(-{0,2}[a-z0-9_.-]*(?:api[_-]?key|token|secret|password|passwd)[a-z0-9_.-]*)=(.+)$",
            )
            .expect("static regex"),
            // Provider key shapes anywhere in an argument.
            regex::Regex::new(
                r"\b(sk-(?:ant-|proj-)?[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{35}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,})",
            )
            .expect("static regex"),
        ]
    })
}

/// Is this argument a flag whose next argument is a credential?
fn is_secret_flag(arg: &str) -> bool {
    let a = arg.trim_start_matches('-').to_ascii_lowercase();
    arg.starts_with('-')
        && [
            "api-key",
            "api_key",
            "apikey",
            "token",
            "password",
            "secret",
            "auth-token",
        ]
        .iter()
        .any(|k| a == *k || a.ends_with(&format!("-{k}")))
}

/// Replaces credentials in a command line by their fingerprints, in place:
/// header arguments, `--api-key VALUE` pairs, `NAME=VALUE` secrets, and
/// provider key shapes anywhere. argv is captured from every exec, so this
/// runs before any process event is stored.
pub fn redact_args(args: &mut [String]) {
    let [header, assign, shapes] = arg_patterns();
    let mut next_is_secret = false;
    for a in args.iter_mut() {
        if next_is_secret {
            next_is_secret = false;
            *a = fingerprint_key(a);
            continue;
        }
        if is_secret_flag(a) {
            next_is_secret = true;
            continue;
        }
        if let Some(c) = header.captures(a) {
            let name = c.get(1).map_or("", |m| m.as_str());
            let value = c.get(2).map_or("", |m| m.as_str());
            *a = format!("{name}: {}", fingerprint_key(value));
            continue;
        }
        if let Some(c) = assign.captures(a) {
            let name = c.get(1).map_or("", |m| m.as_str()).to_owned();
            let value = c.get(2).map_or("", |m| m.as_str());
            *a = format!("{name}={}", fingerprint_key(value));
            continue;
        }
        if shapes.is_match(a) {
            *a = shapes
                .replace_all(a, |c: &regex::Captures<'_>| fingerprint_key(&c[0]))
                .into_owned();
        }
    }
}

#[cfg(test)]
mod args_tests {
    use super::*;

    #[test]
    fn command_line_secrets_are_fingerprinted() {
        let key = "sk-test-AITRAIL-SECRET-0123456789abcdef";
        let mut a: Vec<String> = [
            "curl",
            "-H",
            &format!("Authorization: Bearer {key}"),
            "--api-key",
            "hunter2hunter2",
            "OPENAI_API_KEY=abcdefabcdef1234",
            &format!("https://x/?k={key}"),
            "-X",
            "POST",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        redact_args(&mut a);
        let joined = a.join(" ");
        assert!(!joined.contains("AITRAIL-SECRET"), "{joined}");
        assert!(!joined.contains("hunter2"), "{joined}");
        assert!(!joined.contains("abcdefabcdef1234"), "{joined}");
        assert!(joined.contains("Authorization: sk-…cdef#"), "{joined}");
        assert_eq!(a[0], "curl");
        assert_eq!(a[7], "-X");
        assert_eq!(a[8], "POST");
    }
}
