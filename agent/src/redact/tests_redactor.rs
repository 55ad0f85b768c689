//! Redactor tests: modes per class, HMAC joins, every field of an event,
//! JSON kept valid, and properties (total, idempotent).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::scan::DataClass;
use super::{Mode, RedactConfig, RedactStats, Redactor};
use crate::event::{
    Event, ExecInfo, FileInfo, LlmCall, Message, Output, ProcessInfo, SystemPrompt, ToolCall,
    ToolCallSpec,
};

const AWS_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const OPENAI_KEY: &str = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fFAKE";
const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
const PEM_LINE: &str = "MIIEowIBAAKCAQEAfg83xEkhvT9lZOrffxQqcmaMR";
const CARD: &str = "4111 1111 1111 1111";
const EMAIL: &str = "jane.doe@example.com";
const SSN: &str = "123-45-6789";

fn pem() -> String {
    format!("-----BEGIN RSA PRIVATE KEY-----\n{PEM_LINE}+Ij0W7djEe0avxbruJh9Ts\nSAEla4henJBR8yCw24Pznqetv==\n-----END RSA PRIVATE KEY-----")
}

/// A sample text per class and the value in it that must disappear.
fn sample(class: DataClass) -> (String, &'static str) {
    let (text, value) = match class {
        DataClass::ApiKey => (format!("key {OPENAI_KEY} ok"), OPENAI_KEY),
        DataClass::AwsKey => (format!("id {AWS_ID} ok"), AWS_ID),
        DataClass::GcpKey => (
            "oauth GOCSPX-FAKEfake0123456789abcdefghij ok".to_owned(),
            "GOCSPX-FAKEfake0123456789abcdefghij",
        ),
        DataClass::AzureKey => (
            "secret abc8Q~FAKEfake0123456789abcdEFGHijklmnop ok".to_owned(),
            "abc8Q~FAKEfake0123456789abcdEFGHijklmnop",
        ),
        DataClass::PrivateKey => (format!("key:\n{}\nok", pem()), PEM_LINE),
        DataClass::Jwt => (format!("jwt {JWT} ok"), JWT),
        DataClass::Password => ("password=hunter22 ok".to_owned(), "hunter22"),
        DataClass::CardNumber => (format!("card {CARD} ok"), CARD),
        DataClass::Iban => (
            "iban DE89 3704 0044 0532 0130 00 ok".to_owned(),
            "0532 0130",
        ),
        DataClass::Email => (format!("mail {EMAIL} ok"), EMAIL),
        DataClass::Phone => ("call (415) 555-0132 ok".to_owned(), "555-0132"),
        DataClass::UsSsn => (format!("ssn {SSN} ok"), SSN),
    };
    (text, value)
}

fn redactor_with(modes: &[(DataClass, Mode)], key: &[u8]) -> Redactor {
    let config = RedactConfig {
        modes: modes.iter().copied().collect(),
        hmac_key_file: None,
    };
    Redactor::with_key(&config, key.to_vec()).expect("valid config")
}

/// Default modes, fixed key; shared because compiling the scanner is slow.
fn redactor() -> &'static Redactor {
    static R: OnceLock<Redactor> = OnceLock::new();
    R.get_or_init(|| redactor_with(&[], b"test-key-0123456789abcdef"))
}

fn redact_one(r: &Redactor, text: &str) -> String {
    r.redact_text(text, &mut RedactStats::default())
}

#[test]
fn every_mode_for_every_class() {
    for &class in DataClass::ALL {
        let (text, value) = sample(class);
        let name = class.name();
        for mode in [Mode::Mask, Mode::Hash, Mode::Drop, Mode::Keep] {
            if mode == Mode::Keep && class.is_secret() {
                continue;
            }
            let r = redactor_with(&[(class, mode)], b"k".repeat(32).as_slice());
            let mut stats = RedactStats::default();
            let out = r.redact_text(&text, &mut stats);
            if mode == Mode::Keep {
                assert_eq!(out, text, "{name}");
                assert_eq!(stats.total(), 0, "{name}");
                continue;
            }
            assert!(!out.contains(value), "{name} {mode:?}: {out}");
            assert_eq!(
                stats.redacted.get(&class),
                Some(&1),
                "{name} {mode:?}: {stats:?}"
            );
            match mode {
                Mode::Mask => assert!(
                    out.contains(&format!("[{name}")) && !out.contains(":hmac:"),
                    "{out}"
                ),
                Mode::Hash => assert!(out.contains(&format!("[{name}:hmac:")), "{out}"),
                Mode::Drop => assert_eq!(out, format!("[dropped:{name}]")),
                Mode::Keep => unreachable!(),
            }
            if mode != Mode::Drop {
                assert!(
                    out.starts_with(&text[..3]) && out.ends_with(" ok") || out.ends_with("\nok"),
                    "{out}"
                );
            }
        }
    }
}

#[test]
fn mask_hints_are_the_documented_ones() {
    let r = redactor_with(
        &[
            (DataClass::CardNumber, Mode::Mask),
            (DataClass::Email, Mode::Mask),
        ],
        b"k",
    );
    assert_eq!(
        redact_one(&r, "card 4242 4242 4242 4242."),
        "card [card_number:…4242]."
    );
    assert_eq!(
        redact_one(&r, "to Jane@Example.com"),
        "to [email:…@example.com]"
    );
    assert_eq!(redact_one(&r, &format!("k={AWS_ID}")), "k=[aws_key:AKIA…]");
}

#[test]
fn hashes_join_across_events_and_depend_on_the_key() {
    let a = redact_one(redactor(), "from jane.doe@example.com");
    let b = redact_one(redactor(), "cc JANE.DOE@example.com, please");
    let token = a.strip_prefix("from ").expect("prefix");
    assert!(token.starts_with("[email:hmac:"), "{a}");
    assert!(b.contains(token), "{b}");
    let other = redactor_with(&[], b"another-key-0123456789abcdef");
    assert!(!redact_one(&other, "from jane.doe@example.com").contains(token));
}

#[test]
fn a_value_found_in_one_field_is_redacted_in_all() {
    let mut ev = Event {
        tool: Some(ToolCall {
            arguments: r#"{"command":"psql","password":"Wint3rIsComing"}"#.to_owned(),
            result: Some("logged in with Wint3rIsComing".to_owned()),
            ..ToolCall::default()
        }),
        exec: Some(ExecInfo {
            filename: "/usr/bin/psql".to_owned(),
            args: vec!["psql".to_owned(), "Wint3rIsComing".to_owned()],
            ..ExecInfo::default()
        }),
        ..Event::default()
    };
    let stats = redactor().redact_event(&mut ev);
    let json = serde_json::to_string(&ev).expect("serialises");
    assert!(!json.contains("Wint3rIsComing"), "{json}");
    assert_eq!(
        stats.redacted.get(&DataClass::Password),
        Some(&3),
        "{stats:?}"
    );
}

#[test]
fn mcp_error_and_path_are_redacted() {
    let mut ev = Event {
        tool: Some(ToolCall {
            mcp: Some(crate::event::McpInfo {
                path: format!("/mcp?note={EMAIL}"),
                error: Some(format!("-32602: bad key {OPENAI_KEY}")),
                ..crate::event::McpInfo::default()
            }),
            ..ToolCall::default()
        }),
        ..Event::default()
    };
    redactor().redact_event(&mut ev);
    let json = serde_json::to_string(&ev).expect("serialises");
    assert!(
        !json.contains(OPENAI_KEY) && !json.contains(EMAIL),
        "{json}"
    );
}

#[test]
fn json_texts_stay_valid_json() {
    let args = serde_json::json!({
        "private_key": pem(),
        "note": format!("card {CARD}, key {OPENAI_KEY}"),
        "n": 4_111_111_111_111_111_u64,
        "cmd": "curl -u admin:'x\", \"y' https://h",
        "auth": format!("password='pa ss\", \"{AWS_ID}'"),
    })
    .to_string();
    let out = redact_one(redactor(), &args);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(
        !out.contains(PEM_LINE) && !out.contains("4111") && !out.contains(OPENAI_KEY),
        "{out}"
    );
    assert!(!out.contains(AWS_ID), "{out}");
    assert!(
        v["private_key"]
            .as_str()
            .is_some_and(|s| s.starts_with("[private_key")),
        "{out}"
    );
    let dropped = redactor_with(&[(DataClass::ApiKey, Mode::Drop)], b"k");
    let out = redact_one(&dropped, &args);
    assert_eq!(out, "\"[dropped:api_key]\"");
}

#[test]
fn argv_is_scanned_with_its_context() {
    let mut ev = Event {
        process: Some(ProcessInfo {
            args: ["mysql", "-u", "root", "-pSup3rS3cret", "-e", "select 1"]
                .map(str::to_owned)
                .to_vec(),
            ..ProcessInfo::default()
        }),
        ..Event::default()
    };
    redactor().redact_event(&mut ev);
    let args = &ev.process.expect("process").args;
    assert_eq!(args[3], "-p[password]");
    assert_eq!(args[..3], ["mysql", "-u", "root"]);
}

#[test]
fn too_many_values_drop_the_field() {
    let text = "a@example.com ".repeat(super::scan::MAX_MATCHES + 1);
    let mut stats = RedactStats::default();
    assert_eq!(
        redactor().redact_text(&text, &mut stats),
        "[dropped:overflow]"
    );
    assert_eq!(stats.fields_overflowed, 1);
}

fn full_event() -> Event {
    let spec = |args: String| ToolCallSpec {
        id: "call_1".into(),
        name: "bash".into(),
        arguments: args,
    };
    let system = format!("You are a bot. Use key {OPENAI_KEY}.");
    Event {
        kind: "llm.call".into(),
        process: Some(ProcessInfo {
            args: vec!["agent".into(), format!("OPENAI_API_KEY={OPENAI_KEY}")],
            ..ProcessInfo::default()
        }),
        llm: Some(LlmCall {
            system: Some(SystemPrompt {
                sha256: "ab".repeat(32),
                text: system,
            }),
            messages: vec![
                Message {
                    role: "user".into(),
                    content: format!("my card is {CARD} and ssn {SSN}"),
                    ..Message::default()
                },
                Message {
                    role: "assistant".into(),
                    tool_calls: vec![spec(
                        serde_json::json!({"command": format!("export AWS_SECRET_ACCESS_KEY=\"{AWS_SECRET}\" AWS_ACCESS_KEY_ID={AWS_ID}")}).to_string(),
                    )],
                    ..Message::default()
                },
                Message {
                    role: "tool".into(),
                    content: serde_json::json!({"private_key": pem()}).to_string(),
                    ..Message::default()
                },
            ],
            output: Output {
                text: format!("Sure, mail {EMAIL} with token {JWT}"),
                refusal: Some("I will not reuse hunter22".into()),
                reasoning: Some(format!("The key is {OPENAI_KEY}")),
                tool_calls: vec![spec(r#"{"password":"hunter22"}"#.into())],
                ..Output::default()
            },
            error: Some(format!("invalid api key {OPENAI_KEY}")),
            api_user: Some(EMAIL.into()),
            path: format!("/v1/chat?token={JWT}"),
            ..LlmCall::default()
        }),
        tool: Some(ToolCall {
            arguments: serde_json::json!({"cmd": format!("curl -H 'Authorization: Bearer {JWT}' https://x")}).to_string(),
            result: Some(pem()),
            ..ToolCall::default()
        }),
        exec: Some(ExecInfo {
            filename: format!("/tmp/{AWS_ID}/run"),
            args: vec!["mysql".into(), format!("-p{AWS_SECRET}"), SSN.into()],
            ..ExecInfo::default()
        }),
        file: Some(FileInfo {
            path: format!("/srv/exports/{EMAIL}/cards.csv"),
            ..FileInfo::default()
        }),
        ..Event::default()
    }
}

#[test]
fn no_fed_secret_survives_in_the_serialised_event() {
    let mut ev = full_event();
    let stats = redactor().redact_event(&mut ev);
    let json = serde_json::to_string(&ev).expect("serialises");
    for secret in [
        OPENAI_KEY,
        AWS_ID,
        AWS_SECRET,
        "wJalrXUtnFEMI",
        CARD,
        "4111111111111111",
        PEM_LINE,
        JWT,
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        EMAIL,
        SSN,
        "hunter22",
    ] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
    let llm = ev.llm.as_ref().expect("llm");
    assert_eq!(llm.system.as_ref().expect("system").sha256, "ab".repeat(32));
    for args in llm.messages[1]
        .tool_calls
        .iter()
        .chain(&llm.output.tool_calls)
    {
        serde_json::from_str::<serde_json::Value>(&args.arguments).expect("still JSON");
    }
    serde_json::from_str::<serde_json::Value>(&ev.tool.as_ref().expect("tool").arguments)
        .expect("still JSON");
    for class in [
        DataClass::ApiKey,
        DataClass::AwsKey,
        DataClass::PrivateKey,
        DataClass::Jwt,
        DataClass::Password,
        DataClass::CardNumber,
        DataClass::Email,
        DataClass::UsSsn,
    ] {
        assert!(
            stats.redacted.get(&class).is_some_and(|&n| n > 0),
            "{class:?}: {stats:?}"
        );
    }
    let counters = stats.counters();
    assert_eq!(counters["redacted_iban"], 0);
    assert!(counters["redacted_fields"] >= 15, "{counters:?}");
    // Idempotent on a real event too.
    let again = ev.clone();
    let second = redactor().redact_event(&mut ev);
    assert_eq!(ev, again);
    assert_eq!(second.total(), 0);
}

#[test]
fn stats_add_up() {
    let mut total = RedactStats::default();
    let one = RedactStats {
        redacted: BTreeMap::from([(DataClass::Email, 2)]),
        fields_touched: 1,
        ..RedactStats::default()
    };
    total.add(&one);
    total.add(&one);
    assert_eq!(total.redacted[&DataClass::Email], 4);
    assert_eq!(total.fields_touched, 2);
    assert_eq!(total.counters()["redacted_email"], 4);
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9 +().-]{0,24}",
        "[A-Za-z0-9@.:/=_\\\\-]{0,40}",
        Just(OPENAI_KEY.to_owned()),
        Just(JWT.to_owned()),
        Just(AWS_ID.to_owned()),
        Just(format!("aws_secret_access_key={AWS_SECRET}")),
        Just(pem()),
        Just(pem().replace('\n', "\\n")),
        Just("password=".to_owned()),
        Just("\"password\": \"".to_owned()),
        Just("\\\"".to_owned()),
        Just(CARD.to_owned()),
        Just(EMAIL.to_owned()),
        Just(SSN.to_owned()),
        Just("+44 20 7946 0958".to_owned()),
        Just("DE89 3704 0044 0532 0130 00".to_owned()),
        Just("[email:hmac:".to_owned()),
        Just("]".to_owned()),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(fragment(), 0..10).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn redaction_is_total_and_idempotent(a in text(), b in text(), c in text()) {
        let mut ev = Event {
            process: Some(ProcessInfo { args: vec![a.clone(), b.clone()], ..ProcessInfo::default() }),
            tool: Some(ToolCall { arguments: b, result: Some(c.clone()), ..ToolCall::default() }),
            file: Some(FileInfo { path: a, ..FileInfo::default() }),
            ..Event::default()
        };
        redactor().redact_event(&mut ev);
        let once = ev.clone();
        redactor().redact_event(&mut ev);
        prop_assert_eq!(ev, once);
    }

    #[test]
    fn json_texts_stay_json(values in prop::collection::vec(text(), 0..6)) {
        let obj: serde_json::Map<String, serde_json::Value> = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("k{i}"), serde_json::Value::String(v)))
            .collect();
        let json = serde_json::Value::Object(obj).to_string();
        let out = redact_one(redactor(), &json);
        prop_assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{}", out);
    }
}

/// Regressions found by `redaction_is_total_and_idempotent`.
#[test]
fn glued_values_neither_leak_nor_change_on_a_second_pass() {
    // The key's run reaches into the dashes of the PEM line and loses the
    // overlap to the block; it must still go.
    let glued = format!("{OPENAI_KEY}{}", pem());
    let out = redact_one(redactor(), &glued);
    assert!(!out.contains("Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"), "{out}");
    // Masking the card exposes the phone the card's digits were glued to.
    for text in [
        format!("{CARD}+44 20 7946 0958"),
        "+44 20 7946 09584111 1111 1111 1111".to_owned(),
    ] {
        let once = redact_one(redactor(), &text);
        assert_eq!(redact_one(redactor(), &once), once, "{text}");
    }
}

/// The `llm.call` events of one conversation: every turn repeats the
/// history, in which secrets of every class appear early, and a password
/// recognised only by its `password=` keyword in the first turn reappears
/// bare in a later one.
fn conversation(turns: usize) -> Vec<Event> {
    let mut messages: Vec<Message> = Vec::new();
    let mut out = Vec::new();
    for k in 0..turns {
        let content = match k {
            0 => "connect with password=Tr0ub4dor-and-3 please".to_owned(),
            1 => format!("my card is {CARD}, mail {EMAIL}"),
            2 => serde_json::json!({"private_key": pem(), "aws": AWS_SECRET}).to_string(),
            3 => "it said Tr0ub4dor-and-3 was wrong".to_owned(),
            _ => sample(DataClass::ALL[k % DataClass::ALL.len()]).0,
        };
        messages.push(Message {
            role: if k % 3 == 2 { "tool" } else { "user" }.into(),
            content,
            ..Message::default()
        });
        let mut ev = full_event();
        if let Some(l) = ev.llm.as_mut() {
            l.messages.clone_from(&messages);
        }
        out.push(ev);
    }
    out
}

#[test]
fn the_scan_cache_changes_no_byte_of_any_event() {
    let cached = redactor_with(&[], b"test-key-0123456789abcdef");
    let fresh = redactor_with(&[], b"test-key-0123456789abcdef").without_cache();
    // Twice over: the second pass sees every text already in the cache.
    for round in 0..2 {
        for (i, ev) in conversation(16).into_iter().enumerate() {
            let (mut with_cache, mut afresh) = (ev.clone(), ev);
            let stats_with_cache = cached.redact_event(&mut with_cache);
            let stats_afresh = fresh.redact_event(&mut afresh);
            let json = serde_json::to_string(&with_cache).expect("serialises");
            let reference = serde_json::to_string(&afresh).expect("serialises");
            assert_eq!(json, reference, "round {round}, turn {i}");
            assert_eq!(stats_with_cache, stats_afresh, "round {round}, turn {i}");
            for secret in ["Tr0ub4dor-and-3", CARD, EMAIL, PEM_LINE, AWS_SECRET] {
                assert!(!json.contains(secret), "{secret} in turn {i}: {json}");
            }
        }
    }
    let c = cached.cache_counters();
    assert!(c["redact_cache_hits"] > c["redact_cache_misses"], "{c:?}");
    assert_eq!(fresh.cache_counters()["redact_cache_hits"], 0);
}

#[test]
fn a_secret_in_a_cached_message_is_scrubbed_from_every_later_event() {
    let r = redactor_with(&[], b"test-key-0123456789abcdef");
    let secret_msg = Message {
        role: "user".into(),
        content: format!("use {OPENAI_KEY} for the deploy"),
        ..Message::default()
    };
    let mut history = vec![secret_msg];
    for k in 0..6 {
        let mut ev = Event {
            kind: "llm.call".into(),
            llm: Some(LlmCall {
                messages: history.clone(),
                ..LlmCall::default()
            }),
            ..Event::default()
        };
        let stats = r.redact_event(&mut ev);
        let json = serde_json::to_string(&ev).expect("serialises");
        assert!(!json.contains(OPENAI_KEY), "turn {k}: {json}");
        assert_eq!(stats.redacted.get(&DataClass::ApiKey), Some(&1), "turn {k}");
        history.push(Message {
            role: "user".into(),
            content: format!("turn {k}: go on"),
            ..Message::default()
        });
    }
    assert!(r.cache_counters()["redact_cache_hits"] >= 5);
}
