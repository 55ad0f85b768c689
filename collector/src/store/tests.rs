use std::os::unix::fs::PermissionsExt as _;

use super::{Query, ReleaseSelector, Row, Store};
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

fn finding(id: &str, ts: i64, trace: &str, cites: &[&str]) -> Row {
    let mut f = row(id, ts, "finding", trace, "");
    f.evidence = cites.iter().map(|s| (*s).to_owned()).collect();
    f
}

fn ids_left(store: &Store) -> Vec<String> {
    store.all().unwrap().into_iter().map(|(id, _)| id).collect()
}

#[test]
fn released_findings_and_their_traces_fall_to_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = DAY_NS;
    store
        .insert(
            "agent",
            0,
            &[
                row("a-t1", old, "llm.call", "t1", ""),
                row("a-cited", old, "file.open", "t2", ""),
                row("a-t2", old, "llm.call", "t2", ""),
                row("a-t3", old, "llm.call", "t3", ""),
                row("a-t4", old, "llm.call", "t4", ""),
                finding("f1", old, "t1", &["a-cited"]),
                finding("f2", old, "t3", &[]),
                // Two findings in one trace: releasing one keeps the trace.
                finding("f4a", old, "t4", &[]),
                finding("f4b", old, "t4", &[]),
            ],
        )
        .unwrap();
    let cutoff = 50 * DAY_NS;
    assert_eq!(store.apply_retention(cutoff).unwrap(), 0, "all held");
    assert!(store.is_held("f1").unwrap());

    let r = store
        .release(
            &ReleaseSelector::Ids(vec![
                "f1".into(),
                "f4a".into(),
                "a-t1".into(),
                "nope".into(),
            ]),
            "cli:root (uid 0)",
            Some("case 42 closed"),
        )
        .unwrap();
    assert_eq!(r.released, 2);
    assert_eq!(r.unknown, ["nope"]);
    assert_eq!(r.not_findings, ["a-t1"]);
    let again = store
        .release(&ReleaseSelector::Ids(vec!["f1".into()]), "x", None)
        .unwrap();
    assert_eq!((again.released, again.already), (0, 1));
    assert!(!store.is_held("f1").unwrap() && store.is_held("f2").unwrap());

    // f1, its trace and the event it cites (and that event's trace) go;
    // f4a stays with f4b's trace, which is still held.
    assert_eq!(store.apply_retention(cutoff).unwrap(), 4);
    assert_eq!(ids_left(&store), ["a-t3", "a-t4", "f2", "f4a", "f4b"]);

    let r = store
        .release(&ReleaseSelector::Before(old + 1), "api:token:abc", None)
        .unwrap();
    assert_eq!(
        (r.released, r.already),
        (2, 1),
        "f2 and f4b; f4a was already"
    );
    assert_eq!(store.apply_retention(cutoff).unwrap(), 5);
    assert_eq!(store.count().unwrap(), 0);

    // The audit log tells who released what, newest first.
    let log: Vec<serde_json::Value> = store
        .search(&Query {
            kind: Some("release".into()),
            ..Query::default()
        })
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["release"]["by"], "api:token:abc");
    assert_eq!(log[0]["release"]["released"], 2);
    assert_eq!(log[1]["release"]["note"], "case 42 closed");
    assert_eq!(log[1]["release"]["ids"], serde_json::json!(["f1", "f4a"]));
    assert_eq!(log[1]["kind"], "release");
}

/// The schema of the first stores (`user_version` 0), as they were created.
const SCHEMA_V0: &str = "
CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL,
    kind TEXT NOT NULL, host TEXT, user TEXT, trace_id TEXT, severity INTEGER NOT NULL, rule TEXT,
    agent TEXT NOT NULL, received INTEGER NOT NULL, body TEXT NOT NULL);
CREATE INDEX events_ts ON events(ts);
CREATE INDEX events_kind_ts ON events(kind, ts);
CREATE INDEX events_host_ts ON events(host, ts);
CREATE INDEX events_user_ts ON events(user, ts);
CREATE INDEX events_trace ON events(trace_id);
CREATE INDEX events_severity_ts ON events(severity, ts);
CREATE INDEX events_rule ON events(rule) WHERE rule IS NOT NULL;
CREATE TABLE evidence (event_id TEXT NOT NULL, finding_seq INTEGER NOT NULL);
CREATE INDEX evidence_event ON evidence(event_id);
CREATE VIRTUAL TABLE events_fts USING fts5(text, content='', contentless_delete=1);
CREATE TRIGGER events_ad AFTER DELETE ON events BEGIN
    DELETE FROM events_fts WHERE rowid = old.seq;
    DELETE FROM evidence WHERE finding_seq = old.seq;
END;
INSERT INTO events VALUES (1, 'old-1', 1, 'llm.call', 'h', 'alice', 't', 0, NULL, 'a', 1, '{\"id\":\"old-1\"}');
INSERT INTO events VALUES (2, 'old-2', 2, 'llm.call', 'h', 'bob', 't', 0, NULL, 'a', 1, '{\"id\":\"old-2\"}');
INSERT INTO events_fts (rowid, text) VALUES (1, 'migrated words'), (2, 'other words');
";

#[test]
fn a_first_schema_store_is_migrated_with_its_seqs_and_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(dir.path().join("events.db")).unwrap();
        c.execute_batch(SCHEMA_V0).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(ids_left(&store), ["old-1", "old-2"]);
    let found = store
        .search(&Query {
            text: Some("migrated".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(found, [r#"{"id":"old-1"}"#]);
    // The newest event deleted: its seq is not handed out again.
    store
        .forget(&super::ForgetRequest {
            user: "bob",
            by: "test",
            include_held: false,
            reason: None,
        })
        .unwrap();
    store
        .insert("a", 5, &[row("new", 5, "llm.call", "t", "")])
        .unwrap();
    let seq: i64 = store
        .reader()
        .query_row("SELECT seq FROM events WHERE id = 'new'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seq, 3);
    let v: i64 = store
        .reader()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, super::schema::VERSION);
    drop(store);
    // Opened again: nothing to migrate, nothing lost.
    assert_eq!(
        ids_left(&Store::open(dir.path()).unwrap()),
        ["old-1", "new"]
    );
}

#[test]
fn tail_reads_new_events_in_store_order_through_the_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let calls = Query {
        kind: Some("llm.call".into()),
        ..Query::default()
    };
    let (none, top) = store.tail_start(&calls, 10).unwrap();
    assert!(none.is_empty());
    assert_eq!(top, 0);
    store
        .insert(
            "a",
            0,
            &[
                row("a1", 30, "llm.call", "t", ""),
                row("a2", 10, "file.open", "t", ""),
                row("a3", 20, "llm.call", "t", ""),
                row("a4", 40, "llm.call", "t", ""),
            ],
        )
        .unwrap();
    let body = |id: &str| format!(r#"{{"id":"{id}"}}"#);
    // The last two matching, oldest (by store order) first.
    let (last, top) = store.tail_start(&calls, 2).unwrap();
    assert_eq!(last, [body("a3"), body("a4")]);
    assert_eq!(top, 4);
    store
        .insert(
            "a",
            0,
            &[
                row("b1", 1, "llm.call", "t", ""),
                row("b2", 1, "process.exec", "t", ""),
                row("b3", 1, "llm.call", "t", ""),
                row("b4", 1, "llm.call", "t", ""),
            ],
        )
        .unwrap();
    // Pages of two: what was stored after `top`, in store order (not by
    // event time), filtered.
    let (page, next) = store.tail_next(&calls, top, 2).unwrap();
    assert_eq!(page, [body("b1"), body("b3")]);
    let (page, next) = store.tail_next(&calls, next, 2).unwrap();
    assert_eq!(page, [body("b4")]);
    let (page, again) = store.tail_next(&calls, next, 2).unwrap();
    assert!(page.is_empty());
    assert_eq!(again, next);
}
