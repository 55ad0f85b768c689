//! Positives and negatives per class, overlaps, and properties. Every
//! credential here is a documented example or obviously fake.

use proptest::prelude::*;

use super::*;

pub(crate) const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub(crate) const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub(crate) const OPENAI_KEY: &str = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fFAKE";
pub(crate) const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
pub(crate) const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAfg83xEkhvT9lZOrffxQqcmaMR+Ij0W7djEe0avxbruJh9TsmF\nSAEla4henJBR8yCw24PznqetvQ105t7H89+uzI9kZWZkGnuiZg8wEfw1cCkcV5kN\nGgCRJokZ8l2dBhLfNZ1gJqJA9FiaXXkfHdl8/vp3entPFSQav1e9==\n-----END RSA PRIVATE KEY-----";
const AZURE_ACCOUNT_KEY: &str =
    "pTyGJMuHbEL31IeL2HPcHyGcFRl1SPnXNYvMIHa/2o76umfXfKm/r5kJP1VrT+1FJors/6ILi8IHn5kxsC7tVO==";

/// One scanner for all tests: compiling the detectors is the slow part.
pub(crate) fn scanner() -> &'static Scanner {
    static S: std::sync::OnceLock<Scanner> = std::sync::OnceLock::new();
    S.get_or_init(Scanner::new)
}

fn found(text: &str) -> Vec<(DataClass, &str)> {
    let mut out = Vec::new();
    scanner().scan(text, &mut out);
    out.iter()
        .map(|m| (m.class, &text[m.start..m.end]))
        .collect()
}

fn assert_finds(text: &str, class: DataClass, value: &str) {
    let f = found(text);
    assert!(
        f.contains(&(class, value)),
        "{text:?}: want {class:?} {value:?}, got {f:?}"
    );
}

fn assert_none(text: &str) {
    let f = found(text);
    assert!(f.is_empty(), "{text:?}: want nothing, got {f:?}");
}

#[test]
fn provider_keys() {
    use DataClass::ApiKey;
    assert_finds(&format!("OPENAI_API_KEY={OPENAI_KEY}"), ApiKey, OPENAI_KEY);
    let anthropic = "sk-ant-api03-FAKEfake0123456789abcdefABCDEF_ghijklmnop-qrstuvwxyz0123456789AA";
    assert_finds(&format!("x-api-key: {anthropic}\n"), ApiKey, anthropic);
    let google = "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI";
    assert_finds(&format!("?key={google}&alt=sse"), ApiKey, google);
    let github = "ghp_FAKE0123456789abcdefghijABCDEFGHIJ01";
    assert_finds(&format!("token {github}"), ApiKey, github);
    let pat = "github_pat_11FAKE0123456789_abcdefghijABCDEFGHIJ0123456789abcdef";
    assert_finds(pat, ApiKey, pat);
    let slack = "xoxb-1234567890-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx";
    assert_finds(&format!("SLACK={slack}"), ApiKey, slack);
    let stripe = "sk_live_FAKEfake0123456789abcdEF";
    assert_finds(&format!("stripe.api_key = '{stripe}'"), ApiKey, stripe);
    let hf = "hf_AbCdEfGhIjKlMnOpQrStUvWxYzFakeKey12";
    assert_finds(&format!("HF_TOKEN={hf}"), ApiKey, hf);
}

#[test]
fn generic_key_assignments_need_random_values() {
    use DataClass::ApiKey;
    let v = "Zx8q2LmN4pR7sT1vW9yB3cD6";
    assert_finds(&format!(r#"{{"api_key": "{v}"}}"#), ApiKey, v);
    assert_finds(&format!("client_secret={v}"), ApiKey, v);
    assert_finds(&format!("Authorization: Bearer {v}"), ApiKey, v);
    assert_none("api_key: your-api-key-here");
    assert_none("api_key = os.environ['OPENAI_API_KEY']");
    assert_none("access_token: placeholder_access_token_value");
    assert_none("The bearer of this letter is trusted.");
}

#[test]
fn aws_keys() {
    use DataClass::AwsKey;
    assert_finds(&format!("aws_access_key_id = {AWS_ID}"), AwsKey, AWS_ID);
    assert_finds(
        &format!("aws_secret_access_key = {AWS_SECRET}"),
        AwsKey,
        AWS_SECRET,
    );
    assert_finds(
        &format!(r#""SecretAccessKey": "{AWS_SECRET}""#),
        AwsKey,
        AWS_SECRET,
    );
    assert_finds(
        &format!("aws configure set aws_secret_access_key {AWS_SECRET}"),
        AwsKey,
        AWS_SECRET,
    );
    // 40 base64 characters without an AWS keyword are not a secret key.
    assert_none(&format!("blob {AWS_SECRET}"));
    assert_none("AKIAIOSFODNN7EXAMPLE0 is too long, AKIAshort too short");
}

#[test]
fn gcp_and_azure_keys() {
    let id = "0123456789abcdef0123456789abcdef01234567";
    assert_finds(
        &format!(r#""private_key_id": "{id}","#),
        DataClass::GcpKey,
        id,
    );
    assert_finds(
        &format!(r#"\"private_key_id\": \"{id}\""#),
        DataClass::GcpKey,
        id,
    );
    let oauth = "GOCSPX-FAKEfake0123456789abcdefghij";
    assert_finds(oauth, DataClass::GcpKey, oauth);
    let conn = format!(
        "DefaultEndpointsProtocol=https;AccountName=fake;AccountKey={AZURE_ACCOUNT_KEY};EndpointSuffix=core.windows.net"
    );
    assert_finds(&conn, DataClass::AzureKey, AZURE_ACCOUNT_KEY);
    let sig = "Zm9vYmFyYmF6cXV4ZmFrZWZha2VmYWtlZmFrZWZha2U%3D";
    assert_finds(
        &format!("https://acct.blob.core.windows.net/c/b?sv=2022-11-02&sr=b&sig={sig}"),
        DataClass::AzureKey,
        sig,
    );
    let client_secret = "abc8Q~FAKEfake0123456789abcdEFGHijklmnop";
    assert_finds(client_secret, DataClass::AzureKey, client_secret);
    assert_none("AccountKey=short==");
}

#[test]
fn private_keys_whole_escaped_and_truncated() {
    use DataClass::PrivateKey;
    assert_finds(&format!("key:\n{PEM}\nthanks"), PrivateKey, PEM);
    let escaped = PEM.replace('\n', "\\n");
    let json = format!(r#"{{"private_key": "{escaped}\n", "x": 1}}"#);
    assert_finds(&json, PrivateKey, &escaped);
    for label in ["EC", "OPENSSH", "DSA", "ENCRYPTED", ""] {
        let sp = if label.is_empty() { "" } else { " " };
        let pem = format!(
            "-----BEGIN {label}{sp}PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7\n-----END {label}{sp}PRIVATE KEY-----"
        );
        assert_finds(&pem, PrivateKey, &pem);
    }
    // Cut short by a capture cap: up to the end of the base64 run.
    let cut = "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
    assert_finds(&format!("{cut}\\n\" [truncated]"), PrivateKey, cut);
    // Legacy encrypted PEM headers stay inside the block.
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0123ABCD\n\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END RSA PRIVATE KEY-----";
    assert_finds(legacy, PrivateKey, legacy);
    assert_none("-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----");
    assert_none("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYI\n-----END PUBLIC KEY-----");
}

#[test]
fn jwts_need_a_header_with_alg() {
    assert_finds(&format!("Authorization: Bearer {JWT}"), DataClass::Jwt, JWT);
    assert_finds(&format!("token={JWT}&x=1"), DataClass::Jwt, JWT);
    // {"not":"jwt"} . {"x":1} . sig
    assert_none("eyJub3QiOiJqd3QifQ.eyJ4IjoxfQ.c2lnbmF0dXJl");
    assert_none("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9 without the other parts");
}

#[test]
fn passwords() {
    use DataClass::Password;
    assert_finds("password=hunter22&user=x", Password, "hunter22");
    assert_finds("passwd: s3cr3t-Pa55", Password, "s3cr3t-Pa55");
    assert_finds("pwd=Tr0ub4dor", Password, "Tr0ub4dor");
    assert_finds(
        r#"{"password": "correct horse battery"}"#,
        Password,
        "correct horse battery",
    );
    assert_finds(
        r#"{\"db_password\": \"p@ss\\\"w0rd\"}"#,
        Password,
        r#"p@ss\\\"w0rd"#,
    );
    assert_none("Enter your password:\nthe next line");
    assert_finds("PGPASSWORD=Sup3rS3cret psql -h db", Password, "Sup3rS3cret");
    assert_finds(
        "postgres://app:Sup3rS3cret@db.internal:5432/app",
        Password,
        "Sup3rS3cret",
    );
    assert_finds("mysql -u root -pSup3rS3cret -h db", Password, "Sup3rS3cret");
    assert_none("def login(user: str, password: str) -> bool:");
    assert_none("password=${DB_PASSWORD}");
    assert_none("password = getpass()");
    assert_none("Enter your password:\n");
    assert_none("mysql -u root -p -h db");
    assert_none("https://example.com:8443/path");
    // A `#` left raw in a URL's password; no user name at all.
    assert_finds(
        "postgres://app_user:Xk9#mQ2vL8pR@db.internal:5432/orders",
        Password,
        "Xk9#mQ2vL8pR",
    );
    assert_finds(
        "redis://:9fJ3kLm2Qw8e@cache:6379/0",
        Password,
        "9fJ3kLm2Qw8e",
    );
    assert_none("https://docs.example.com/page#section");
    // In prose, without `=`: only a value that looks like a password.
    assert_finds(
        "log in with user admin and password Qz8!mR4#tLw2 and export",
        Password,
        "Qz8!mR4#tLw2",
    );
    assert_finds(
        "the wifi password is Bl4ckbird-77.",
        Password,
        "Bl4ckbird-77",
    );
    for text in [
        "the password reset flow sends a link",
        "password authentication failed for user app",
        "the password is at least 12 characters",
        "password 123456789",
        "password e3b0c44298fc1c149afbf4c8996fb924",
        "password field is required",
    ] {
        assert_none(text);
    }
}

#[test]
fn cards_luhn_and_issuer_checked() {
    use DataClass::CardNumber;
    for card in [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555555555554444",
        "2223003122003222",
        "3782 822463 10005",
        "6011111111111117",
        "3530111333300000",
        "30569309025904",
    ] {
        assert_finds(&format!("card: {card}, exp 12/29"), CardNumber, card);
    }
    assert_finds("1 4111 1111 1111 1111", CardNumber, "4111 1111 1111 1111");
    assert_none("order 4111111111111112 shipped");
    assert_none("ts 1700000000000 ms");
    assert_none("41111111111111111234");
    assert_none("4111 1111-1111 1111");
    assert_none("1111111111111117");
    assert_none("v4111111111111111");
}

#[test]
fn ibans_mod97_and_length_checked() {
    use DataClass::Iban;
    for iban in [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "FR1420041010050500013M02606",
        "NL91ABNA0417164300",
    ] {
        assert_finds(&format!("IBAN: {iban}."), Iban, iban);
    }
    assert_finds(
        "to DE89 3704 0044 0532 0130 00 AB12",
        Iban,
        "DE89 3704 0044 0532 0130 00",
    );
    assert_none("DE89 3704 0044 0532 0130 01");
    assert_none("DE8937040044053201300099");
    assert_none("XX89370400440532013000");
}

#[test]
fn ssns() {
    use DataClass::UsSsn;
    assert_finds("SSN 123-45-6789 on file", UsSsn, "123-45-6789");
    assert_finds("social security number: 123456789", UsSsn, "123456789");
    for bad in [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "123-00-4567",
        "123-45-0000",
    ] {
        assert_none(bad);
    }
    // Nine bare digits need the keyword.
    assert_none("id 123456789");
    assert_none("build 1-123-45-6789-2");
}

#[test]
fn phones() {
    use DataClass::Phone;
    for phone in [
        "(415) 555-0132",
        "415-555-0132",
        "415.555.0132",
        "+1 415 555 0132",
        "+1-415-555-0132",
        "+44 20 7946 0958",
        "+14155550132",
        "020 7946 0958",
        "07700 900461",
        "+33 6 12 34 56 78",
    ] {
        assert_finds(&format!("call {phone} now"), Phone, phone);
    }
    for benign in [
        "2024-01-15 10:30:00",
        "12/31/2024",
        "10.0.0.1 and 192.168.100.200",
        "version 1.2.3",
        "4155550132",
        "1+2345678",
        "v1.0.0+20130313144700",
        "415-555-01320",
        "order 0412 55",
        "build 01 2345",
    ] {
        assert_none(benign);
    }
}

#[test]
fn emails() {
    use DataClass::Email;
    assert_finds(
        "mail jane.doe+x@mail.example.com.",
        Email,
        "jane.doe+x@mail.example.com",
    );
    assert_finds("<ops@example.org>", Email, "ops@example.org");
    assert_none("git@github.com:org/repo.git");
    assert_none("icon@2x.png");
    assert_none("npm i react@18.2.0 @scope/pkg@1.0.0");
    assert_none("user@localhost");
}

#[test]
fn benign_agent_text_matches_nothing() {
    for benign in [
        "123e4567-e89b-12d3-a456-426614174000",
        "commit da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "node v20.11.1, rustc 1.87.0 (17067e9ac 2025-05-09)",
        "2024-01-15T10:30:00.123456789Z",
        "SGVsbG8gd29ybGQsIHRoaXMgaXMgYmFzZTY0IGJsb2I=",
        "pip install scikit-learn; the task-manager-extension works",
        "max_tokens: 1024, input_tokens: 5321",
        "See https://docs.example.com/v1/api-keys#rotate for details.",
        "ls -la /home/user/.ssh && cat ~/.aws/credentials",
    ] {
        assert_none(benign);
    }
}

#[test]
fn overlaps_keep_the_most_specific() {
    // A JWT holds `eyJ` runs and base64; a PEM body holds everything.
    let text = format!("{PEM} {JWT} password={JWT}");
    let f = found(&text);
    assert_eq!(
        f,
        vec![
            (DataClass::PrivateKey, PEM),
            (DataClass::Jwt, JWT),
            (DataClass::Jwt, JWT)
        ]
    );
    // The password in a URL is not also an email.
    let f = found("redis://admin:hunter22@cache.example.com");
    assert_eq!(f, vec![(DataClass::Password, "hunter22")]);
}

#[test]
fn match_cap_is_reported() {
    let text = "a@example.com ".repeat(MAX_MATCHES + 5);
    let mut out = Vec::new();
    assert!(!scanner().scan_complete(&text, &mut out));
    assert_eq!(out.len(), MAX_MATCHES);
    let mut out = Vec::new();
    assert!(scanner().scan_complete("a@example.com", &mut out));
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9 +().-]{0,24}",
        "[A-Za-z0-9+/=_\\\\-]{0,48}",
        Just("sk-".to_owned()),
        Just("eyJ".to_owned()),
        Just("AKIA".to_owned()),
        Just("password=".to_owned()),
        Just("\\\"".to_owned()),
        Just("\\n".to_owned()),
        Just("-----BEGIN RSA PRIVATE KEY-----".to_owned()),
        Just("-----END RSA PRIVATE KEY-----".to_owned()),
        Just("@".to_owned()),
        Just("://u:".to_owned()),
        Just(JWT.to_owned()),
        Just("4111 1111 1111 1111".to_owned()),
        Just("é€😀".to_owned()),
    ]
}

proptest! {
    #[test]
    fn scan_is_total_sorted_disjoint_and_on_char_boundaries(
        parts in prop::collection::vec(fragment(), 0..16)
    ) {
        let text = parts.concat();
        let mut out = Vec::new();
        scanner().scan(&text, &mut out);
        let mut last_end = 0;
        for m in &out {
            prop_assert!(m.start < m.end && m.end <= text.len());
            prop_assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
            prop_assert!(m.start >= last_end, "sorted and disjoint: {out:?}");
            last_end = m.end;
        }
    }
}
