//! The store's parts that forwarders rely on, together with the store's
//! own features: one schema version sequence (a first store with or
//! without `forward_cursor`, a version-2 store without it), retention with
//! held findings and forwarder holds at once, forget against cursors.

use super::{
    forward::{Filter, Registration},
    ForgetRequest, ReleaseSelector, Row, Store,
};

const DAY_NS: i64 = 86_400 * 1_000_000_000;

fn row(id: &str, ts: i64, kind: &str, trace: &str, user: &str) -> Row {
    Row {
        id: id.into(),
        ts,
        kind: kind.into(),
        host: Some("h1".into()),
        user: Some(user.into()),
        trace_id: Some(trace.into()),
        severity: u8::from(kind == "finding") * 3,
        rule: (kind == "finding").then(|| "inj.override".into()),
        evidence: Vec::new(),
        text: format!("{id} words"),
        body: format!(r#"{{"id":"{id}"}}"#),
    }
}

fn reg(name: &str, hold_ns: i64) -> Registration {
    Registration {
        name: name.into(),
        filter: Filter::default(),
        hold_ns,
        start_at_newest: false,
    }
}

fn version(store: &Store) -> i64 {
    store
        .reader()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

fn seq_of(store: &Store, id: &str) -> i64 {
    store
        .reader()
        .query_row("SELECT seq FROM events WHERE id = ?1", [id], |r| r.get(0))
        .unwrap()
}

fn ids_left(store: &Store) -> Vec<String> {
    store.all().unwrap().into_iter().map(|(id, _)| id).collect()
}

/// A store as the forwarders' first version left it: `user_version` 0,
/// plain rowid `seq`, `forward_cursor` with two cursors — one of them past
/// the largest stored seq (the newest events were deleted by hand).
const MAIN_V0: &str = "
CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL,
    kind TEXT NOT NULL, host TEXT, user TEXT, trace_id TEXT, severity INTEGER NOT NULL, rule TEXT,
    agent TEXT NOT NULL, received INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE evidence (event_id TEXT NOT NULL, finding_seq INTEGER NOT NULL);
CREATE VIRTUAL TABLE events_fts USING fts5(text, content='', contentless_delete=1);
CREATE TABLE forward_cursor (name TEXT PRIMARY KEY, cursor INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 1, hold_ns INTEGER NOT NULL DEFAULT 0, kinds TEXT,
    min_severity INTEGER NOT NULL DEFAULT 0, expired INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0);
CREATE TRIGGER events_ad AFTER DELETE ON events BEGIN
    DELETE FROM events_fts WHERE rowid = old.seq;
    DELETE FROM evidence WHERE finding_seq = old.seq;
END;
INSERT INTO events VALUES (1, 'old-1', 1, 'llm.call', 'h', 'alice', 't', 0, NULL, 'a', 1, '{\"id\":\"old-1\"}');
INSERT INTO events VALUES (2, 'old-2', 2, 'llm.call', 'h', 'bob', 't', 0, NULL, 'a', 1, '{\"id\":\"old-2\"}');
INSERT INTO events_fts (rowid, text) VALUES (1, 'first words'), (2, 'second words');
INSERT INTO forward_cursor (name, cursor, expired) VALUES ('splunk', 1, 3), ('ahead', 5, 0);
";

#[test]
fn a_first_store_with_forwarder_cursors_is_migrated_keeping_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = rusqlite::Connection::open(dir.path().join("events.db")).unwrap();
        c.execute_batch(MAIN_V0).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(version(&store), super::schema::VERSION);
    assert_eq!(ids_left(&store), ["old-1", "old-2"]);
    let s = store.forward_state("splunk").unwrap().unwrap();
    assert_eq!((s.cursor, s.expired), (1, 3));
    // The forwarder goes on from its cursor.
    let chunk = store
        .forward_reader()
        .unwrap()
        .read(1, &Filter::default(), 10, 1 << 20)
        .unwrap();
    assert_eq!(chunk.rows, [(2, r#"{"id":"old-2"}"#.to_owned())]);
    // No seq at or below a cursor is handed out again ("ahead" was at 5).
    store
        .insert("a", 9, &[row("new", 9, "llm.call", "t", "carol")])
        .unwrap();
    assert_eq!(seq_of(&store, "new"), 6);
}

#[test]
fn a_version_2_store_gains_the_forwarders_table() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .insert("a", 1, &[row("e1", 1, "llm.call", "t", "alice")])
            .unwrap();
        // As the store branch's version 2 left it: no forward_cursor.
        store
            .writer()
            .execute_batch("DROP TABLE forward_cursor; PRAGMA user_version = 2;")
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(version(&store), super::schema::VERSION);
    let st = store.forward_register(&[reg("fw", 0)]).unwrap();
    assert_eq!(st[0].cursor, 0);
    store.forward_ack("fw", 1).unwrap();
    assert_eq!(store.forward_state("fw").unwrap().unwrap().cursor, 1);
    assert_eq!(ids_left(&store), ["e1"]);
}

#[test]
fn retention_applies_the_hold_on_findings_and_the_forwarders_hold_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = DAY_NS;
    let mut f1 = row("f1", old, "finding", "t1", "alice");
    f1.evidence = vec!["cited".into()];
    store
        .insert(
            "a",
            0,
            &[
                row("t1-a", old, "llm.call", "t1", "alice"),
                row("cited", old, "file.open", "t2", "alice"),
                row("t2-a", old, "llm.call", "t2", "alice"),
                row("u1", old, "llm.call", "u1", "bob"),
                row("u2", old, "llm.call", "u2", "bob"),
                f1,
            ],
        )
        .unwrap();
    // "fw" holds what it has not sent for two days past the age.
    store.forward_register(&[reg("fw", 2 * DAY_NS)]).unwrap();
    let cutoff = 2 * DAY_NS;
    assert_eq!(store.apply_retention(cutoff).unwrap(), 0, "unsent, held");
    // Sent up to u1: u1 goes; u2 is still unsent; the finding's traces
    // (t1, and t2 through the event it cites) are held by the finding.
    store.forward_ack("fw", seq_of(&store, "u1")).unwrap();
    assert_eq!(store.apply_retention(cutoff).unwrap(), 1);
    assert_eq!(ids_left(&store), ["t1-a", "cited", "t2-a", "u2", "f1"]);
    // The finding released: its traces are free as far as the hold goes,
    // but f1 itself (and u2) were not sent yet.
    store
        .release(&ReleaseSelector::Ids(vec!["f1".into()]), "test", None)
        .unwrap();
    assert_eq!(store.apply_retention(cutoff).unwrap(), 3);
    assert_eq!(ids_left(&store), ["u2", "f1"]);
    assert_eq!(store.forward_state("fw").unwrap().unwrap().expired, 0);
    // Past the forwarder's hold: deleted anyway, and counted as expired.
    assert_eq!(store.apply_retention(old + 2 * DAY_NS + 1).unwrap(), 2);
    assert_eq!(store.count().unwrap(), 0);
    assert_eq!(store.forward_state("fw").unwrap().unwrap().expired, 2);
    assert_eq!(
        store
            .counters
            .retention_deleted
            .load(std::sync::atomic::Ordering::Relaxed),
        6
    );
}

#[test]
fn forget_counts_what_each_forwarder_sent_and_the_rest_is_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rows: Vec<Row> = [
        ("a1", "alice"),
        ("b1", "bob"),
        ("a2", "alice"),
        ("a3", "alice"),
        ("b2", "bob"),
        ("a4", "alice"),
    ]
    .iter()
    .map(|(id, u)| row(id, 1, "llm.call", id, u))
    .collect();
    store.insert("a", 0, &rows).unwrap();
    let mut findings_only = reg("findings", 0);
    findings_only.filter.kinds = vec!["finding".into()];
    store
        .forward_register(&[reg("fw", 0), findings_only])
        .unwrap();
    // "fw" has sent a1, b1, a2.
    store.forward_ack("fw", 3).unwrap();
    let tombstone = store
        .forget(&ForgetRequest {
            user: "alice",
            by: "test",
            include_held: false,
            reason: None,
        })
        .unwrap();
    let fw = tombstone.tombstone.forwarders["fw"];
    assert_eq!((fw.sent, fw.unsent), (2, 2));
    assert!(
        !tombstone.tombstone.forwarders.contains_key("findings"),
        "its filter matched none of alice's events"
    );
    let json = serde_json::to_value(&tombstone).unwrap();
    assert_eq!(json["tombstone"]["forwarders"]["fw"]["sent"], 2);
    // What "fw" reads next: bob's b2 only. The newest seq is still 6 though
    // alice's a4 (seq 6) is gone: not a store replaced under the cursor.
    let chunk = store
        .forward_reader()
        .unwrap()
        .read(3, &Filter::default(), 10, 1 << 20)
        .unwrap();
    assert_eq!(chunk.rows, [(5, r#"{"id":"b2"}"#.to_owned())]);
    assert_eq!(chunk.newest, 6);
    assert_eq!(chunk.read_upto, 6);
    store
        .insert("a", 0, &[row("b3", 2, "llm.call", "b3", "bob")])
        .unwrap();
    assert_eq!(seq_of(&store, "b3"), 7);
}
