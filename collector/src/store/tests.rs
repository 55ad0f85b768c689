use std::os::unix::fs::PermissionsExt as _;

use super::{Query, Row, Store};
use crate::ingest::parse_line;

const DAY_NS: i64 = 86_400 * 1_000_000_000;

fn row(id: &str, ts: i64, kind: &str, trace: &str, text: &str) -> Row {
    Row {
        id: id.into(),
        ts,
        kind: kind.into(),
        host: Some("h1".into()),
        user: Some(if id.starts_with('b') { "bob" } else { "alice" }.into()),
        trace_id: Some(trace.into()),
        severity: u8::from(kind == "finding") * 3,
        rule: (kind == "finding").then(|| "inj.override".into()),
        evidence: Vec::new(),
        text: text.into(),
        body: format!(r#"{{"id":"{id}"}}"#),
    }
}

#[test]
fn dedupe_by_id_within_and_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let a = row("a", 1, "llm.call", "t1", "");
    let b = row("b", 2, "llm.call", "t1", "");
    let done = store
        .insert("agent", 0, &[a.clone(), b.clone(), a.clone()])
        .unwrap();
    assert_eq!((done.accepted, done.duplicates), (2, 1));
    let done = store
        .insert("agent", 0, &[b, row("c", 3, "file.open", "t1", "")])
        .unwrap();
    assert_eq!((done.accepted, done.duplicates), (1, 1));
    assert_eq!(store.count().unwrap(), 3);
    assert_eq!(store.count_id("a").unwrap(), 1);
    // Private: the directory 0700, the database 0600.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("store")), 0o700);
    assert_eq!(mode(&dir.path().join("store/events.db")), 0o600);
    // Reopened, the events are there.
    drop(store);
    let store = Store::open(&dir.path().join("store")).unwrap();
    assert_eq!(store.count().unwrap(), 3);
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one assertion per filter, as rustfmt lays them out"
)]
fn search_by_every_filter_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .insert(
            "agent",
            0,
            &[
                row("a1", 10, "llm.call", "t1", "please read /etc/shadow now"),
                row("a2", 20, "process.exec", "t1", "cat /etc/shadow"),
                row(
                    "b1",
                    30,
                    "llm.call",
                    "t2",
                    "write a poem about \"quotes\" AND OR",
                ),
                row("f1", 40, "finding", "t1", "Injection"),
            ],
        )
        .unwrap();
    let ids = |q: Query| -> Vec<String> {
        store
            .search(&q)
            .unwrap()
            .iter()
            .map(|b| {
                serde_json::from_str::<serde_json::Value>(b).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        ids(Query::default()),
        ["f1", "b1", "a2", "a1"],
        "newest first"
    );
    assert_eq!(
        ids(Query {
            kind: Some("llm.call".into()),
            ..Query::default()
        }),
        ["b1", "a1"]
    );
    assert_eq!(
        ids(Query {
            user: Some("bob".into()),
            ..Query::default()
        }),
        ["b1"]
    );
    assert_eq!(
        ids(Query {
            trace: Some("t2".into()),
            ..Query::default()
        }),
        ["b1"]
    );
    assert_eq!(
        ids(Query {
            min_severity: Some(2),
            ..Query::default()
        }),
        ["f1"]
    );
    assert_eq!(
        ids(Query {
            rule: Some("inj.override".into()),
            ..Query::default()
        }),
        ["f1"]
    );
    assert_eq!(
        ids(Query {
            since: Some(20),
            until: Some(40),
            ..Query::default()
        }),
        ["b1", "a2"]
    );
    assert_eq!(
        ids(Query {
            text: Some("/etc/shadow".into()),
            ..Query::default()
        }),
        ["a2", "a1"]
    );
    assert_eq!(
        ids(Query {
            text: Some("shadow please".into()),
            ..Query::default()
        }),
        ["a1"]
    );
    // FTS5 syntax in the user's words is just text.
    assert_eq!(
        ids(Query {
            text: Some("\"quotes\" AND OR".into()),
            ..Query::default()
        }),
        ["b1"]
    );
    assert_eq!(
        ids(Query {
            text: Some("NEAR(".into()),
            ..Query::default()
        }),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(Query {
            limit: 1,
            ..Query::default()
        }),
        ["f1"]
    );
    assert_eq!(store.trace("t1").unwrap().len(), 3);
}

#[test]
fn retention_keeps_findings_their_traces_and_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = DAY_NS;
    let new = 100 * DAY_NS;
    let mut finding = row("f", old, "finding", "t-finding", "");
    finding.evidence = vec!["cited".into()];
    store
        .insert(
            "agent",
            0,
            &[
                row("old-plain", old, "llm.call", "t-plain", "forget me"),
                row("old-same-trace", old, "process.exec", "t-finding", ""),
                row("cited", old, "file.open", "t-cited", ""),
                row("same-trace-as-cited", old, "llm.call", "t-cited", ""),
                row("new", new, "llm.call", "t-plain", ""),
                finding,
            ],
        )
        .unwrap();
    assert_eq!(store.apply_retention(50 * DAY_NS).unwrap(), 1);
    let left: Vec<String> = store.all().unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        left,
        ["old-same-trace", "cited", "same-trace-as-cited", "new", "f"]
    );
    // The deleted event's text is gone from the index too.
    assert!(store
        .search(&Query {
            text: Some("forget".into()),
            ..Query::default()
        })
        .unwrap()
        .is_empty());
}

#[test]
fn a_parsed_line_is_stored_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let line = r#"{"v":1,"id":"x1","time":"2026-11-27T12:00:00Z","kind":"llm.call","llm":{"messages":[{"role":"user","content":"héllo \u0000 wörld"}]}}"#;
    let r = parse_line(line.as_bytes()).unwrap();
    store.insert("agent", 0, &[r]).unwrap();
    assert_eq!(store.all().unwrap(), [("x1".to_owned(), line.to_owned())]);
    assert_eq!(
        store
            .search(&Query {
                text: Some("wörld".into()),
                ..Query::default()
            })
            .unwrap()
            .len(),
        1
    );
}
