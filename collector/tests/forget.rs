//! `forget --user`: a person's events leave every file of the store and of
//! its archive (raw bytes, WAL and shared memory included), the full-text
//! index, and the archive segments; everyone else's stay; a tombstone
//! without the name is left.

mod common;

use aitrail_collector::store::{
    archive::Archiver, ForgetRequest, Query, ReleaseSelector, Store, StoreError, StoreOptions,
};
use common::{
    archive_config, archive_lines, big_event, event, grep, ids, markers, store_lines, DAY_NS, T0,
};

const HOUR_NS: i64 = 3_600_000_000_000;

fn text_hits(store: &Store, words: &str) -> usize {
    store
        .search(&Query {
            text: Some(words.into()),
            ..Query::default()
        })
        .unwrap()
        .len()
}

/// Terms of the FTS index that start with `prefix` (read through
/// fts5vocab, on a connection of its own).
fn index_terms(db: &std::path::Path, prefix: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, 'events_fts', 'row');")
        .unwrap();
    let mut stmt = c
        .prepare("SELECT term FROM vocab WHERE term >= ?1 AND term < ?1 || 'zzzz'")
        .unwrap();
    stmt.query_map([prefix], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, checked file by file")]
fn forget_erases_alice_from_every_file_and_keeps_bob() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open_with(
        &dir,
        StoreOptions {
            key: None,
            archive: Some(archive_config(&dir.join("archive"), 16 * 1024)),
        },
    )
    .unwrap();
    let mut archiver = Archiver::new(&store).unwrap();
    let (mut alice, mut bob) = (Vec::new(), Vec::new());
    let mut bob_ids = Vec::new();
    // Six batches of both users over two days: segments mixing them.
    for b in 0..6usize {
        let mut lines = Vec::new();
        for n in b * 4..b * 4 + 4 {
            let who = if n % 2 == 0 { "alice" } else { "bob" };
            for kind in ["llm.call", "process.exec"] {
                lines.push(event(who, n, kind));
                if who == "bob" {
                    bob_ids.push(format!("bob-{n:04}-{kind}"));
                }
            }
            if who == "bob" {
                bob.push(n);
            } else {
                alice.push(n);
            }
        }
        store_lines(&store, T0 + i64::try_from(b).unwrap() * 8 * HOUR_NS, &lines);
        archiver.step().unwrap();
    }
    // A segment of alice alone, and a large event of hers (overflow pages).
    store_lines(
        &store,
        T0 + DAY_NS + 2 * HOUR_NS,
        &[event("alice", 100, "llm.call"), big_event("alice", 101, 40)],
    );
    alice.extend([100, 101]);
    archiver.step().unwrap();
    archiver.close().unwrap();
    // A finding of alice's, and an open segment that holds it.
    store_lines(
        &store,
        T0 + DAY_NS + 3 * HOUR_NS,
        &[
            event("alice", 102, "finding"),
            event("bob", 103, "llm.call"),
        ],
    );
    alice.push(102);
    bob.push(103);
    bob_ids.push("bob-0103-llm.call".into());
    archiver.step().unwrap();
    let segments_before = store.archive().unwrap().counters.snapshot().segments_closed;
    assert!(segments_before >= 3, "{segments_before} segments");
    let total = store.count().unwrap();

    // A held finding stops the forget before anything is deleted.
    let req = ForgetRequest {
        user: "alice",
        by: "cli:root (uid 0)",
        include_held: false,
        reason: Some("GDPR request 2026-117"),
    };
    match store.forget(&req) {
        Err(StoreError::Held {
            count: 1, example, ..
        }) => assert_eq!(example, "alice-0102-finding"),
        other => panic!("expected Held, got {other:?}"),
    }
    assert_eq!(store.count().unwrap(), total);
    store
        .release(
            &ReleaseSelector::Ids(vec!["alice-0102-finding".into()]),
            "cli:root (uid 0)",
            None,
        )
        .unwrap();

    let alice_markers: Vec<String> = alice.iter().flat_map(|&n| markers("alice", n)).collect();
    let bob_markers: Vec<String> = bob.iter().flat_map(|&n| markers("bob", n)).collect();
    assert!(alice_markers.iter().all(|m| !grep(&dir, m).is_empty()));
    assert!(text_hits(&store, &alice_markers[0]) > 0);
    assert_eq!(
        index_terms(&dir.join("events.db"), "zqalice").len(),
        alice.len() * 4
    );

    let t = store.forget(&req).unwrap();
    let b = &t.tombstone;
    assert_eq!(t.kind, "tombstone");
    assert_eq!(b.events_deleted, 2 * 12 + 3, "{b:?}");
    assert_eq!((b.findings_deleted, b.held_findings_deleted), (1, 0));
    assert_eq!(b.by_kind["llm.call"], 14);
    assert_eq!(b.by, "cli:root (uid 0)");
    assert_eq!(b.reason.as_deref(), Some("GDPR request 2026-117"));
    assert!(b.wal_truncated);
    assert_eq!(b.status, "done");
    let rewrite = b.archive.expect("the archive was rewritten");
    assert_eq!(
        rewrite.lines_removed,
        2 * 12 + 2,
        "the finding was not archived yet"
    );
    assert!(
        rewrite.segments_rewritten >= 1 && rewrite.segments_deleted >= 1,
        "{rewrite:?}"
    );
    assert!(b.user_hash.starts_with("hmac-sha256:") && b.user_hash.len() == 12 + 64);

    // The open segment read alice's finding before the forget: closing it
    // throws it away and reads the store again.
    archiver.step().unwrap();
    archiver.close().unwrap();
    let c = store.archive().unwrap().counters.snapshot();
    assert_eq!(c.segments_discarded, 1, "{c:?}");

    // Raw bytes of every file under the store and its archive (database,
    // -wal, -shm, segments, locks): none of alice's markers …
    for m in &alice_markers {
        let hits = grep(tmp.path(), m);
        assert!(hits.is_empty(), "{m} still in {hits:?}");
    }
    // … and every one of bob's (in the database: the segments are
    // compressed).
    for m in &bob_markers {
        assert!(!grep(&dir, m).is_empty(), "{m} lost");
    }
    // Nor in the index: no term of hers is left, all of his are.
    let db = dir.join("events.db");
    assert_eq!(index_terms(&db, "zqalice"), Vec::<String>::new());
    // (the command line is not indexed: 4 indexed markers per event)
    assert_eq!(index_terms(&db, "zqbob").len(), bob.len() * 4);
    assert_eq!(text_hits(&store, &alice_markers[0]), 0);
    assert_eq!(
        text_hits(&store, &bob_markers[0]),
        2,
        "its llm.call and its exec"
    );

    // The archive holds every event of bob's exactly once, none of hers.
    let lines = archive_lines(&dir.join("archive"), None);
    assert!(lines.iter().all(|l| l["process"]["user"] == "bob"));
    bob_ids.sort();
    assert_eq!(ids(&lines), bob_ids);

    // The tombstone: found by the name's hash, without the name.
    let stones = store
        .search(&Query {
            kind: Some("tombstone".into()),
            user: Some("alice".into()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(stones.len(), 1);
    assert!(!stones[0].contains("alice"), "{}", stones[0]);
    let found: serde_json::Value = serde_json::from_str(&stones[0]).unwrap();
    assert_eq!(found["id"], t.id.as_str());
    assert_eq!(found["tombstone"]["events_deleted"], 27);
    assert!(store
        .search(&Query {
            kind: Some("tombstone".into()),
            user: Some("bob".into()),
            ..Query::default()
        })
        .unwrap()
        .is_empty());

    // Closed and opened again, the store says the same.
    drop(archiver);
    drop(store);
    for m in &alice_markers {
        assert!(grep(tmp.path(), m).is_empty(), "{m} back after reopening");
    }
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.count().unwrap(), total - 27);
}
