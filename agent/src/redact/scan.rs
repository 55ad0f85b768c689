//! Finds secrets and personal data in captured text.
//!
//! CONTRACT (shared by redaction and detection; the redaction helper fills
//! in the implementation, the signatures below do not change):
//! - `Scanner::new()` compiles everything once; `scan` is then cheap and
//!   allocation-free apart from `out`.
//! - `scan` appends every match, as byte ranges into `text` that fall on
//!   char boundaries, sorted by `start`, never overlapping (the longest /
//!   most specific class wins an overlap).
//! - Checksummed classes are validated (Luhn for cards, mod-97 for IBANs,
//!   area/group rules for US SSNs) so random digits do not match.

use serde::{Deserialize, Serialize};

/// A kind of sensitive value. The `snake_case` name is what configs, findings
/// and redaction markers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    /// LLM and `SaaS` provider API keys (`sk-…`, `sk-ant-…`, `AIza…`, GitHub,
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

/// Compiled detectors for every [`DataClass`].
pub struct Scanner {
    _private: (),
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    pub fn new() -> Self {
        Self { _private: () }
    }

    /// Appends the sensitive values found in `text` to `out`.
    pub fn scan(&self, text: &str, out: &mut Vec<Match>) {
        // Placeholder until the redaction work lands: finds nothing.
        let _ = (text, out);
    }
}
