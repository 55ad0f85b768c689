//! Who is calling, and how fast they may call.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::Instant,
};

/// Equal in time that depends only on the lengths, so a wrong token's
/// timing does not tell how much of it was right.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of `Authorization: Bearer TOKEN`.
pub fn bearer(header: Option<&hyper::header::HeaderValue>) -> Option<&str> {
    let v = header?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The agent a token belongs to. Every token is compared in full.
pub fn agent_of<'a>(tokens: &'a BTreeMap<String, String>, token: &str) -> Option<&'a str> {
    let mut found = None;
    for (t, name) in tokens {
        if ct_eq(t.as_bytes(), token.as_bytes()) {
            found = Some(name.as_str());
        }
    }
    found
}

/// Whether `token` is one of `tokens`, comparing each in full.
pub fn any_matches(tokens: &[String], token: &str) -> bool {
    tokens
        .iter()
        .fold(false, |hit, t| hit | ct_eq(t.as_bytes(), token.as_bytes()))
}

/// A token bucket per agent: `rate` batches per second, `burst` at once.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `agent`; `false` when it has none left.
    pub fn allow(&self, agent: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = buckets.entry(agent.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_rates() {
        let tokens: BTreeMap<String, String> =
            [("t-0123456789abcdef".to_owned(), "web-1".to_owned())].into();
        assert_eq!(agent_of(&tokens, "t-0123456789abcdef"), Some("web-1"));
        assert_eq!(agent_of(&tokens, "t-0123456789abcdeF"), None);
        assert_eq!(agent_of(&tokens, ""), None);
        let h = hyper::header::HeaderValue::from_static("Bearer abc");
        assert_eq!(bearer(Some(&h)), Some("abc"));
        let h = hyper::header::HeaderValue::from_static("Basic abc");
        assert_eq!(bearer(Some(&h)), None);
        let r = RateLimiter::new(0.001, 3);
        assert!((0..3).all(|_| r.allow("a")));
        assert!(!r.allow("a"));
        assert!(r.allow("b"), "buckets are per agent");
    }
}
