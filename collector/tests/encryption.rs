//! Encryption at rest: with `encryption_key_file`, no byte on disk shows
//! what was stored — database, WAL, shared memory, archive segments — and
//! search, trace, tail and the archive still work with the key.

mod common;

use aitrail_collector::store::{
    archive::Archiver, keys::StoreKey, Query, Store, StoreConfig, StoreError, StoreOptions,
};
use common::{
    archive_config, archive_lines, event, files_under, grep, ids, markers, store_lines, T0,
};

fn config(dir: &std::path::Path, key: &std::path::Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.key_file = Some(key.to_owned());
    c.archive = Some(archive_config(&dir.join("archive"), 8 * 1024));
    c
}

#[test]
fn an_encrypted_store_shows_nothing_on_disk_and_still_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let key_file = tmp.path().join("store.key");
    StoreKey::generate(&key_file).unwrap();
    let store = config(&dir, &key_file).open().unwrap();
    let mut archiver = Archiver::new(&store).unwrap();
    let mut lines = Vec::new();
    for n in 0..40 {
        let user = if n % 2 == 0 { "alice" } else { "bob" };
        lines.push(event(user, n, "llm.call"));
    }
    store_lines(&store, T0, &lines[..20]);
    archiver.step().unwrap();
    archiver.close().unwrap();
    // The rest stays in the WAL (no checkpoint yet) and an open segment.
    store_lines(&store, T0, &lines[20..]);
    archiver.step().unwrap();

    // Search and trace work through the key.
    let m = markers("alice", 22);
    let hits = store
        .search(&Query {
            text: Some(m[0].clone()),
            ..Query::default()
        })
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert!(hits[0].contains(&m[1]));
    let trace = format!("{:032x}", 22);
    assert_eq!(store.trace(&trace).unwrap().len(), 1);

    // Every file, with the store open: not one marker, not one field name.
    let files = files_under(tmp.path());
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    assert!(
        names.iter().any(|n| n.ends_with("events.db-wal")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.ends_with(".ndjson.zst.enc")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
    for n in 0..40 {
        let user = if n % 2 == 0 { "alice" } else { "bob" };
        for m in markers(user, n) {
            assert!(grep(&dir, &m).is_empty(), "{m} readable on disk");
        }
    }
    for plain in [
        "llm.call",
        "SQLite format 3",
        "\"messages\"",
        "events_fts",
        "alice",
        "read_file",
    ] {
        let hits = grep(&dir, plain);
        assert!(hits.is_empty(), "{plain:?} readable in {hits:?}");
    }

    archiver.close().unwrap();
    drop(archiver);
    // The archive reads back with the store's key, and only with it.
    let key = StoreKey::load(&key_file).unwrap().archive_key();
    let back = archive_lines(&dir.join("archive"), Some(&key));
    assert_eq!(back.len(), 40);
    assert_eq!(ids(&back).len(), 40);
    let seg = files_under(&dir.join("archive"))
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".enc"))
        .unwrap();
    let wrong = zeroize::Zeroizing::new([9u8; 32]);
    let e = aitrail_collector::store::archive::segment::for_each_line(
        std::fs::File::open(&seg).unwrap(),
        Some(&wrong),
        |_| Ok(()),
    )
    .unwrap_err();
    assert!(e.to_string().contains("another key"), "{e}");
    drop(store);

    // Without the key, with another key, and a key on a plaintext store:
    // refused with what to do.
    assert!(matches!(
        Store::open(&dir),
        Err(StoreError::Encrypted { .. })
    ));
    let other = tmp.path().join("other.key");
    StoreKey::generate(&other).unwrap();
    assert!(matches!(
        config(&dir, &other).open(),
        Err(StoreError::WrongKey { .. })
    ));
    let plain = tmp.path().join("plain");
    drop(Store::open(&plain).unwrap());
    assert!(matches!(
        Store::open_with(
            &plain,
            StoreOptions {
                key: Some(StoreKey::load(&key_file).unwrap()),
                archive: None
            }
        ),
        Err(StoreError::NotEncrypted { .. })
    ));
    // Opened again with its key: all there.
    let store = config(&dir, &key_file).open().unwrap();
    assert_eq!(store.count().unwrap(), 40);
}
