//! Finds secrets and personal data in captured text.
//!
//! CONTRACT (shared by redaction and detection; the signatures below do not
//! change):
//! - `Scanner::new()` compiles everything once; `scan` is then cheap and
//!   allocation-free apart from `out` (and a scratch vector of candidates).
//! - `scan` appends every match, as byte ranges into `text` that fall on
//!   char boundaries, sorted by `start`, never overlapping (the most specific
//!   class wins an overlap, then the longer match).
//! - Checksummed classes are validated (Luhn for cards, mod-97 for IBANs,
//!   area/group rules for US SSNs) so random digits do not match.
//!
//! How it works, and why it stays linear in the length of the text:
//! - Every detector is either a regex (finite automata in the `regex` crate:
//!   no backtracking, each search linear) whose repetitions are bounded, or a
//!   hand-written forward walk. Bounded patterns matter for iteration: an
//!   unbounded pattern can make a search read far past the match it reports,
//!   and the next search reads that stretch again; with a bound `L` on a
//!   pattern's length no byte is read more than `L` times.
//! - Provider key shapes and JWTs share one regex that finds only their
//!   short literal starts (`sk-`, `AKIA`, `eyJ`, …); the token is then read
//!   forward by hand up to a per-shape length bound and validated.
//!   Keyword detectors (`password=`, `AccountKey=`) match the keyword and
//!   read the value after it the same way.
//! - PEM private keys are found with `memmem` and walked to their END line;
//!   the search resumes after the block.
//! - Candidates from all detectors are then resolved by specificity in
//!   `O(m log m)` for `m` candidates.
//! - A text can hold at most [`MAX_MATCHES`] matches; past that the scan
//!   stops and [`Scanner::scan_complete`] says so, so a caller that must not
//!   leak (the redactor) can drop the whole text instead.

mod checks;
mod detectors;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A kind of sensitive value. The `snake_case` name is what configs, findings
/// and redaction markers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    /// LLM and other service providers' API keys (`sk-…`, `sk-ant-…`, `AIza…`, GitHub,
    /// Slack, Stripe tokens, …).
    ApiKey,
    /// AWS access key ids and secret access keys.
    AwsKey,
    /// GCP service-account private key material and key ids.
    GcpKey,
    /// Azure storage account keys, SAS signatures, client secrets.
    AzureKey,
    /// PEM private keys (RSA, EC, OpenSSH, PKCS#8).
    PrivateKey,
    /// JSON Web Tokens.
    Jwt,
    /// Passwords in `password=…`, URLs with credentials, and the like.
    Password,
    /// Payment card numbers (Luhn-checked).
    CardNumber,
    /// International bank account numbers (mod-97 checked).
    Iban,
    Email,
    Phone,
    /// US social security numbers.
    UsSsn,
}

impl DataClass {
    pub const ALL: &'static [DataClass] = &[
        DataClass::ApiKey,
        DataClass::AwsKey,
        DataClass::GcpKey,
        DataClass::AzureKey,
        DataClass::PrivateKey,
        DataClass::Jwt,
        DataClass::Password,
        DataClass::CardNumber,
        DataClass::Iban,
        DataClass::Email,
        DataClass::Phone,
        DataClass::UsSsn,
    ];

    /// The `snake_case` name, as in configs and findings.
    pub fn name(self) -> &'static str {
        match self {
            DataClass::ApiKey => "api_key",
            DataClass::AwsKey => "aws_key",
            DataClass::GcpKey => "gcp_key",
            DataClass::AzureKey => "azure_key",
            DataClass::PrivateKey => "private_key",
            DataClass::Jwt => "jwt",
            DataClass::Password => "password",
            DataClass::CardNumber => "card_number",
            DataClass::Iban => "iban",
            DataClass::Email => "email",
            DataClass::Phone => "phone",
            DataClass::UsSsn => "us_ssn",
        }
    }

    /// Parses a `snake_case` name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Credentials (as opposed to personal data).
    pub fn is_secret(self) -> bool {
        matches!(
            self,
            DataClass::ApiKey
                | DataClass::AwsKey
                | DataClass::GcpKey
                | DataClass::AzureKey
                | DataClass::PrivateKey
                | DataClass::Jwt
                | DataClass::Password
        )
    }
}

/// One sensitive value found in a text: its class and byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    pub class: DataClass,
    pub start: usize,
    pub end: usize,
}

/// Most matches one text yields. Texts with more are adversarial or binary
/// junk; stopping bounds the time and memory a single event can cost.
pub const MAX_MATCHES: usize = 10_000;

impl DataClass {
    /// Specificity: lower wins an overlap. A PEM block contains base64 that
    /// looks like anything; a JWT contains `eyJ` runs that look like keys;
    /// a password value may hold digits that look like a card.
    pub(crate) fn rank(self) -> u8 {
        match self {
            DataClass::PrivateKey => 0,
            DataClass::Jwt => 1,
            DataClass::ApiKey | DataClass::AwsKey | DataClass::GcpKey | DataClass::AzureKey => 2,
            DataClass::Password => 3,
            DataClass::CardNumber => 4,
            DataClass::Iban => 5,
            DataClass::UsSsn => 6,
            DataClass::Phone => 7,
            DataClass::Email => 8,
        }
    }
}

/// Compiled detectors for every [`DataClass`].
pub struct Scanner {
    detectors: detectors::Detectors,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    pub fn new() -> Self {
        Self {
            detectors: detectors::Detectors::new(),
        }
    }

    /// Appends the sensitive values found in `text` to `out`.
    pub fn scan(&self, text: &str, out: &mut Vec<Match>) {
        self.scan_complete(text, out);
    }

    /// Like [`Scanner::scan`]; returns `false` when the text held more
    /// candidates than the scanner looks at ([`MAX_MATCHES`]), i.e. when
    /// values past the last match may have gone unseen.
    pub fn scan_complete(&self, text: &str, out: &mut Vec<Match>) -> bool {
        let mut candidates = Vec::new();
        let complete = self.detectors.run(text, &mut candidates);
        let before = out.len();
        resolve(candidates, out, None);
        if out.len() - before > MAX_MATCHES {
            out.truncate(before + MAX_MATCHES);
            return false;
        }
        complete
    }

    /// For redaction, where a leak is worse than a wide marker: the resolved
    /// matches plus the secret candidates that lost an overlap (an API key
    /// glued to a PEM block loses to the block but must go too). The result
    /// is not sorted and may overlap; `false` as for `scan_complete`.
    pub(crate) fn scan_for_redaction(&self, text: &str, out: &mut Vec<Match>) -> bool {
        let mut candidates = Vec::new();
        let complete = self.detectors.run(text, &mut candidates);
        let before = out.len();
        let mut losers = Vec::new();
        resolve(candidates, out, Some(&mut losers));
        if out.len() - before > MAX_MATCHES {
            return false;
        }
        out.extend(losers.into_iter().filter(|m| m.class.is_secret()));
        complete
    }
}

/// Keeps, among overlapping candidates, the most specific then the longest,
/// and appends the survivors to `out` sorted by start.
/// Candidates that lose go to `losers` when given.
fn resolve(mut candidates: Vec<Match>, out: &mut Vec<Match>, mut losers: Option<&mut Vec<Match>>) {
    candidates.sort_unstable_by_key(|m| (m.class.rank(), usize::MAX - (m.end - m.start), m.start));
    // start -> (end, class) of the accepted matches.
    let mut kept: BTreeMap<usize, (usize, DataClass)> = BTreeMap::new();
    for m in candidates {
        if m.start >= m.end {
            continue;
        }
        let before = kept.range(..=m.start).next_back();
        let after = kept.range(m.start..).next();
        if before.is_some_and(|(_, &(end, _))| end > m.start)
            || after.is_some_and(|(&start, _)| start < m.end)
        {
            if let Some(losers) = losers.as_deref_mut() {
                losers.push(m);
            }
            continue;
        }
        kept.insert(m.start, (m.end, m.class));
    }
    out.extend(
        kept.into_iter()
            .map(|(start, (end, class))| Match { class, start, end }),
    );
}
