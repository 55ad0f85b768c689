use std::{collections::BTreeSet, path::Path, time::Duration};

use serde_json::json;

use super::{
    corpus::{load_dir, merge, parse_file},
    metrics::{self, Outcome},
    run, EvalError, EvalOptions, CLASSES,
};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn outcome(id: &str, expect: &[&str], allow: &[&str], raised: &[&str]) -> Outcome {
    Outcome {
        id: id.into(),
        expect: set(expect),
        allow: set(allow),
        raised: set(raised),
    }
}

fn line(v: &serde_json::Value) -> String {
    format!("{v}\n")
}

// --- merge and event building ---------------------------------------------------

#[test]
fn merge_is_deep_for_objects_and_replaces_everything_else() {
    let mut base = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {"f": true}});
    merge(
        &mut base,
        &json!({"a": {"c": [3], "g": 4}, "d": null, "e": 5, "h": {"i": 1}}),
    );
    assert_eq!(
        base,
        json!({"a": {"b": 1, "c": [3], "g": 4}, "d": null, "e": 5, "h": {"i": 1}})
    );
}

#[test]
fn partial_events_get_an_envelope_and_keep_what_they_set() {
    let case = json!({"id": "c-1", "expect": [], "note": "n", "events": [
        {"kind": "llm.call", "llm": {"provider": "openai", "messages": [{"role": "user", "content": "hi"}]}},
        {"kind": "file.open", "id": "mine", "time": "2025-06-02T10:00:00.5Z",
         "process": {"pid": 7, "exe": "/usr/bin/cat"}, "file": {"path": "/etc/hosts", "result": 3}},
        {"kind": "net.connect", "trace_id": "ff", "net": {"address": "10.0.0.1", "port": 443}},
    ]});
    let cases = parse_file("t.jsonl", &line(&case), 4).unwrap();
    let ev = &cases[0].events;
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[0].id, "c-1-0");
    assert_eq!(ev[1].id, "mine");
    assert_eq!(ev[0].time, "2025-06-02T09:00:00.000000000Z");
    assert_eq!(ev[2].time, "2025-06-02T09:00:02.000000000Z");
    assert_eq!(ev[1].time, "2025-06-02T10:00:00.5Z");
    // One trace per case unless an event sets its own; a span per event.
    assert_eq!(ev[0].trace_id, ev[1].trace_id);
    assert_eq!(ev[0].trace_id.len(), 32);
    assert_eq!(ev[2].trace_id, "ff");
    assert_ne!(ev[0].span_id, ev[1].span_id);
    assert_eq!(ev[0].span_id.len(), 16);
    assert_eq!(ev[0].host.name, "corpus");
    let llm = ev[0].llm.as_ref().unwrap();
    assert_eq!(llm.provider, "openai");
    assert_eq!(llm.messages[0].content, "hi");
    // The default process is merged with the partial one, field by field.
    let p = ev[1].process.as_ref().unwrap();
    assert_eq!((p.pid, p.exe.as_str(), p.uid), (7, "/usr/bin/cat", 1000));
    assert_eq!(ev[1].file.as_ref().unwrap().path, "/etc/hosts");
    assert!(ev[1].llm.is_none());
    assert_eq!(ev[2].net.as_ref().unwrap().port, 443);
}

#[test]
fn another_case_gets_another_trace() {
    let text =
        line(&json!({"id": "a", "expect": [], "note": "", "events": [{"kind": "file.open"}]}))
            + &line(
                &json!({"id": "b", "expect": [], "note": "", "events": [{"kind": "file.open"}]}),
            );
    let cases = parse_file("t.jsonl", &text, 0).unwrap();
    assert_ne!(cases[0].events[0].trace_id, cases[1].events[0].trace_id);
    assert_eq!(cases[1].line, 2);
}

// --- loader errors ----------------------------------------------------------------

fn parse_err(case: &serde_json::Value) -> String {
    let text =
        line(&json!({"id": "ok", "expect": [], "note": "", "events": [{"kind": "file.open"}]}))
            + &line(case);
    parse_file("bad.jsonl", &text, 0).unwrap_err().to_string()
}

#[test]
fn a_line_that_is_not_json_names_file_and_line() {
    let err = parse_file("bad.jsonl", "{\"id\": \"x\"\n", 0).unwrap_err();
    assert!(matches!(err, EvalError::Json { line: 1, .. }), "{err}");
    assert!(err.to_string().starts_with("bad.jsonl:1:"), "{err}");
    let err = parse_err(&json!({"id": "x", "expect": [], "note": "", "events": [], "extra": 1}));
    assert!(err.starts_with("bad.jsonl:2:"), "{err}");
}

#[test]
fn an_event_that_does_not_deserialize_names_the_case() {
    let err = parse_err(&json!({"id": "bad-event", "expect": ["secret"], "note": "",
        "events": [{"kind": "file.open"}, {"kind": "file.open", "file": {"result": "three"}}]}));
    assert!(
        err.starts_with("bad.jsonl:2: case bad-event: event 1 is not an event"),
        "{err}"
    );
}

#[test]
fn a_misspelt_field_is_an_error_not_an_empty_event() {
    let err = parse_err(&json!({"id": "typo", "expect": ["pii"], "note": "",
        "events": [{"kind": "llm.call", "llm": {"provider": "openai", "modle": "gpt-4o"}}]}));
    assert!(err.contains("case typo: event 0:"), "{err}");
    assert!(err.contains("llm.modle"), "{err}");
}

#[test]
fn case_level_problems_are_named() {
    let err = parse_err(
        &json!({"id": "cls", "expect": ["secrets"], "note": "", "events": [{"kind": "file.open"}]}),
    );
    assert!(err.contains("case cls: unknown class \"secrets\""), "{err}");
    let err =
        parse_err(&json!({"id": "k", "expect": [], "note": "", "events": [{"kind": "file.read"}]}));
    assert!(err.contains("unknown kind \"file.read\""), "{err}");
    let err = parse_err(&json!({"id": "k", "expect": [], "note": "", "events": [{"file": {}}]}));
    assert!(err.contains("no \"kind\""), "{err}");
    let err = parse_err(
        &json!({"id": "b", "expect": [], "allow": ["pii"], "note": "", "events": [{"kind": "file.open"}]}),
    );
    assert!(err.contains("benign case"), "{err}");
    let err = parse_err(
        &json!({"id": "b", "expect": ["pii"], "allow": ["pii"], "note": "", "events": [{"kind": "file.open"}]}),
    );
    assert!(err.contains("both expected and allowed"), "{err}");
    let err = parse_err(&json!({"id": "e", "expect": [], "note": "", "events": []}));
    assert!(err.contains("no events"), "{err}");
}

#[test]
fn ids_are_unique_across_files_and_an_empty_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_dir(dir.path()).unwrap_err();
    assert!(matches!(err, EvalError::Empty { .. }), "{err}");
    let c =
        line(&json!({"id": "same", "expect": [], "note": "", "events": [{"kind": "file.open"}]}));
    std::fs::write(dir.path().join("a.jsonl"), &c).unwrap();
    std::fs::write(dir.path().join("b.jsonl"), format!("\n{c}")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert_eq!(err, "b.jsonl:2: case id same already used at a.jsonl:1");
}

// --- metrics ----------------------------------------------------------------------

#[test]
fn per_class_counts_precision_and_recall() {
    let outcomes = [
        outcome("s1", &["secret"], &[], &["secret"]),
        outcome("s2", &["secret"], &["pii"], &["secret", "pii"]),
        outcome("s3", &["secret"], &[], &[]),
        outcome("p1", &["pii"], &[], &["pii", "secret"]),
        outcome("b1", &[], &[], &[]),
        outcome("b2", &[], &[], &["pii"]),
        outcome("b3", &[], &[], &["made_up"]),
        outcome("b4", &[], &[], &[]),
    ];
    let s = metrics::score(&outcomes);
    let names: Vec<&str> = s.classes.iter().map(|c| c.class.as_str()).collect();
    // Canonical order first, unknown classes after.
    assert_eq!(names, ["secret", "pii", "made_up"]);
    let secret = &s.classes[0];
    assert_eq!(
        (secret.cases, secret.tp, secret.fn_, secret.fp),
        (3, 2, 1, 1)
    );
    assert_eq!(secret.precision, Some(2.0 / 3.0));
    assert_eq!(secret.recall, Some(2.0 / 3.0));
    // s2's pii is allowed: neither TP nor FP.
    let pii = &s.classes[1];
    assert_eq!((pii.cases, pii.tp, pii.fn_, pii.fp), (1, 1, 0, 1));
    let made_up = &s.classes[2];
    assert_eq!((made_up.cases, made_up.fp, made_up.recall), (0, 1, None));
    assert_eq!(made_up.precision, Some(0.0));
    assert_eq!((s.benign_cases, s.benign_flagged), (4, 2));
    assert!((s.benign_fp_rate - 0.5).abs() < 1e-12);
    let ids = |v: &[metrics::CaseClass]| -> Vec<String> {
        v.iter().map(|c| format!("{}/{}", c.id, c.class)).collect()
    };
    assert_eq!(ids(&s.misses), ["s3/secret"]);
    assert_eq!(
        ids(&s.false_positives),
        ["p1/secret", "b2/pii", "b3/made_up"]
    );
}

#[test]
fn percentiles_are_nearest_rank() {
    let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
    let l = metrics::latency(&mut samples);
    assert_eq!(l.samples, 100);
    assert!((l.p50_us - 50.0).abs() < 1e-9, "{l:?}");
    assert!((l.p99_us - 99.0).abs() < 1e-9, "{l:?}");
    assert!((l.max_us - 100.0).abs() < 1e-9, "{l:?}");
    let l = metrics::latency(&mut [Duration::from_micros(7)]);
    assert!((l.p50_us - 7.0).abs() < 1e-9 && (l.p99_us - 7.0).abs() < 1e-9);
    assert_eq!(metrics::latency(&mut []).samples, 0);
}

#[test]
fn goals_follow_the_issue() {
    let mut outcomes: Vec<Outcome> = (0..19)
        .map(|i| outcome(&format!("s{i}"), &["secret"], &[], &["secret"]))
        .collect();
    outcomes.push(outcome("s19", &["secret"], &[], &[]));
    outcomes.extend((0..200).map(|i| outcome(&format!("b{i}"), &[], &[], &[])));
    outcomes.push(outcome("p", &["pii"], &[], &[]));
    let fast = metrics::Latency {
        samples: 10,
        p50_us: 5.0,
        p99_us: 900.0,
        max_us: 2000.0,
    };
    let g = metrics::goals(&metrics::score(&outcomes), &fast);
    let met = |name: &str| g.iter().find(|g| g.name == name).unwrap().met;
    assert!(met("recall secret"), "19/20 = 0.95 meets the goal");
    assert!(!met("recall pii"));
    assert!(met("benign false positives"));
    assert!(met("llm.call detection p99"));
    // One flagged benign case in 200 is 0.5%: still within the goal; two are not.
    outcomes[20].raised = set(&["pii"]);
    assert!(metrics::goals(&metrics::score(&outcomes), &fast)[2].met);
    outcomes[21].raised = set(&["pii"]);
    assert!(!metrics::goals(&metrics::score(&outcomes), &fast)[2].met);
    let none = metrics::goals(&metrics::score(&outcomes), &metrics::Latency::default());
    assert!(
        !none.last().unwrap().met,
        "no latency sample is no evidence"
    );
}

// --- running and the real corpus ---------------------------------------------------

#[test]
fn run_scores_every_case_and_times_every_llm_call() {
    let dir = tempfile::tempdir().unwrap();
    let text = line(
        &json!({"id": "a", "expect": ["secret"], "note": "", "events": [
            {"kind": "llm.call", "llm": {"provider": "openai"}}, {"kind": "file.open"}]}),
    ) + &line(&json!({"id": "b", "expect": [], "note": "", "events": [
            {"kind": "llm.call"}, {"kind": "llm.call"}]}));
    std::fs::write(dir.path().join("x.jsonl"), text).unwrap();
    let report = run(&EvalOptions {
        corpus: dir.path().to_path_buf(),
        rounds: 3,
    })
    .unwrap();
    assert_eq!((report.cases, report.rounds), (2, 3));
    assert_eq!(report.latency.samples, 3 * 3);
    let secret = &report.scores.classes[0];
    assert_eq!(secret.class, "secret");
    assert_eq!(secret.tp + secret.fn_, 1);
    assert_eq!(report.scores.benign_cases, 1);
    let text = report.text();
    assert!(text.contains("detect-eval: 2 cases (1 benign)"), "{text}");
    assert!(text.contains("recall secret"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["scores"]["classes"][0]["class"], "secret");
    assert!(json["scores"]["classes"][0].get("fn").is_some());
}

/// Minimum cases per class the issue asks the corpus for.
const MINIMUMS: &[(&str, usize)] = &[
    ("prompt_injection", 60),
    ("secret", 40),
    ("pii", 40),
    ("sensitive_file", 30),
    ("dangerous_command", 40),
    ("destructive_sql", 20),
    ("exfiltration", 15),
    ("denial_of_wallet", 10),
    ("refusal_probing", 10),
    ("system_prompt_change", 8),
];

#[test]
fn the_real_corpus_is_well_formed_and_large_enough() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    // load_dir fails on JSON errors, events that do not deserialize, unknown
    // fields or classes, and duplicate ids.
    let cases = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 300, "{} cases", cases.len());
    for (class, min) in MINIMUMS {
        assert!(CLASSES.contains(class));
        let n = cases.iter().filter(|c| c.expect.contains(*class)).count();
        assert!(n >= *min, "{class}: {n} cases, want at least {min}");
    }
    // The issue asks for 150; 200 gives the false-positive rate a resolution
    // of 0.5%, so that a single false positive does not already miss the goal.
    let benign = cases.iter().filter(|c| c.is_benign()).count();
    assert!(benign >= 200, "{benign} benign cases");
    for c in &cases {
        assert!(!c.note.is_empty(), "{} has no note", c.id);
        let kinds: BTreeSet<&str> = c.events.iter().map(|e| e.kind.as_str()).collect();
        assert!(
            !kinds.contains("finding"),
            "{}: a case feeds captured events, not findings",
            c.id
        );
    }
}

/// The detection goals of the issue that do not depend on the machine
/// (recall per class, benign false positives), held on the real corpus, so
/// a rule change that loses recall or adds false positives fails the tests.
/// Latency is a benchmark: `cargo xtask detect-eval`.
#[test]
fn the_built_in_pack_meets_the_recall_and_false_positive_goals() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus");
    let report = run(&EvalOptions { corpus, rounds: 1 }).expect("the corpus runs");
    let missed: Vec<String> = report
        .goals
        .iter()
        .filter(|g| !g.met && !g.name.contains("p99"))
        .map(|g| format!("{}: {} (goal {})", g.name, g.actual, g.target))
        .collect();
    assert!(
        missed.is_empty(),
        "goals missed:\n{}\nmisses: {:?}\nfalse positives: {:?}",
        missed.join("\n"),
        report.scores.misses,
        report.scores.false_positives
    );
    assert!(report.scores.classes.iter().all(|c| c.cases > 0));
}
