//! The archive: segments per day, closed by size, age and day; written
//! after the commit and exactly once across crashes; retention on both
//! sides; the background service.

mod common;

use std::{path::Path, sync::Arc, time::Duration};

use aitrail_collector::store::{
    archive::Archiver,
    service::{ServiceConfig, StoreService},
    Store, StoreOptions,
};
use common::{
    archive_config, archive_lines, event, files_under, ids, mode, store_lines, DAY_NS, T0,
};

fn open(dir: &Path, max_bytes: u64, age: Duration) -> Store {
    let mut cfg = archive_config(&dir.join("archive"), max_bytes);
    cfg.segment_max_age = age;
    Store::open_with(
        dir,
        StoreOptions {
            key: None,
            archive: Some(cfg),
        },
    )
    .unwrap()
}

fn lines(user: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| event(user, n, "llm.call")).collect()
}

fn all_ids(user: &str, range: std::ops::Range<usize>) -> Vec<String> {
    let mut v: Vec<String> = range.map(|n| format!("{user}-{n:04}-llm.call")).collect();
    v.sort();
    v
}

#[test]
fn segments_close_by_size_age_and_day_and_hold_every_event_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = open(&dir, 6 * 1024, Duration::from_millis(300));
    let mut a = Archiver::new(&store).unwrap();
    // Day one: 30 events in segments of at most 6 KiB.
    let day_one = lines("bob", 0..30);
    let bytes: usize = day_one.iter().map(|l| l.len() + 1).sum();
    store_lines(&store, T0, &day_one);
    a.step().unwrap();
    // Day two: the day's first event closes day one's open segment.
    store_lines(&store, T0 + DAY_NS, &lines("bob", 30..32));
    a.step().unwrap();
    let closed = store.archive().unwrap().counters.snapshot().segments_closed;
    assert!(
        closed >= (bytes as u64).div_ceil(6 * 1024),
        "{closed} segments for {bytes} bytes"
    );
    // Day two's segment closes by age.
    std::thread::sleep(Duration::from_millis(350));
    a.step().unwrap();
    let segs = store.archive().unwrap().segments(&store, "1 = 1").unwrap();
    assert_eq!(segs.len() as u64, closed + 1);
    let arch = dir.join("archive");
    let day1: Vec<_> = files_under(&arch.join("2026-11-27"));
    let day2: Vec<_> = files_under(&arch.join("2026-11-28"));
    assert_eq!(day2.len(), 1, "{day2:?}");
    assert_eq!(
        day2[0].file_name().unwrap().to_string_lossy(),
        "000001.ndjson.zst"
    );
    assert!(day1
        .iter()
        .all(|p| p.to_string_lossy().ends_with(".ndjson.zst")));
    assert_eq!(day1.len() + 1, segs.len());
    // Private: segments 0600, directories 0700.
    assert!(day1.iter().chain(&day2).all(|p| mode(p) == 0o600));
    assert_eq!(mode(&arch), 0o700);
    assert_eq!(mode(&arch.join("2026-11-27")), 0o700);
    // Each segment under its size (the last line may pass it), every
    // event exactly once, in store order within a segment.
    let back = archive_lines(&arch, None);
    assert_eq!(ids(&back), all_ids("bob", 0..32));
    for s in &segs {
        assert!(s.events >= 1 && s.bytes > 0);
    }
    // Nothing new: nothing written.
    assert_eq!(a.step().unwrap(), 0);
}

#[test]
fn a_crash_between_commit_and_archive_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    {
        let store = open(&dir, 64 * 1024, Duration::from_hours(1));
        let mut a = Archiver::new(&store).unwrap();
        store_lines(&store, T0, &lines("bob", 0..10));
        a.step().unwrap();
        a.close().unwrap();
        // Committed in the database, written to an open segment, then the
        // process dies: the open segment stays as `.partial`.
        store_lines(&store, T0, &lines("bob", 10..20));
        a.step().unwrap();
        std::mem::forget(a);
    }
    let day = dir.join("archive/2026-11-27");
    // And a segment renamed whose transaction never committed.
    std::fs::write(day.join("000009.ndjson.zst"), b"torn").unwrap();
    assert!(files_under(&day)
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".partial")));

    let store = open(&dir, 64 * 1024, Duration::from_hours(1));
    let archive = store.archive().unwrap();
    archive.recover(&store).unwrap();
    let c = archive.counters.snapshot();
    assert_eq!((c.partials_recovered, c.orphans_deleted), (1, 1), "{c:?}");
    let mut a = Archiver::new(&store).unwrap();
    // Stored while the archiver was down.
    store_lines(&store, T0, &lines("bob", 20..25));
    a.step().unwrap();
    a.close().unwrap();
    let back = archive_lines(&dir.join("archive"), None);
    assert_eq!(ids(&back), all_ids("bob", 0..25), "each event once");
    let names: Vec<String> = files_under(&day)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["000001.ndjson.zst", "000002.ndjson.zst"]);
}

#[test]
fn retention_waits_for_the_archive_and_old_days_of_the_archive_go() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = open(&dir, 64 * 1024, Duration::from_hours(1));
    let mut a = Archiver::new(&store).unwrap();
    store_lines(&store, T0, &lines("bob", 0..5));
    a.step().unwrap();
    // Old events not yet in a closed segment are kept.
    let cutoff = T0 + 10 * DAY_NS;
    assert_eq!(store.apply_retention(cutoff).unwrap(), 0);
    a.close().unwrap();
    store_lines(&store, T0 + DAY_NS, &lines("bob", 5..8));
    a.step().unwrap();
    a.close().unwrap();
    assert_eq!(store.apply_retention(cutoff).unwrap(), 8);
    // The archive keeps them until its own retention: day one goes.
    let archive = store.archive().unwrap();
    assert_eq!(archive.apply_retention(&store, "2026-11-28").unwrap(), 1);
    assert!(!dir.join("archive/2026-11-27").exists());
    assert_eq!(
        ids(&archive_lines(&dir.join("archive"), None)),
        all_ids("bob", 5..8)
    );
    assert_eq!(archive.counters.snapshot().segments_expired, 1);
}

#[test]
fn the_service_archives_in_the_background_and_closes_at_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Arc::new(open(&dir, 1 << 20, Duration::from_hours(1)));
    let cfg = ServiceConfig {
        retention: None,
        retention_interval: Duration::from_hours(1),
    };
    let service = StoreService::start(&store, cfg).unwrap();
    // One service per store.
    let again = StoreService::start(&store, cfg);
    assert!(again.is_err());
    store_lines(&store, T0, &lines("bob", 0..50));
    let start = std::time::Instant::now();
    while !files_under(&dir.join("archive"))
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".partial"))
    {
        assert!(start.elapsed() < Duration::from_secs(10), "no open segment");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A stop closes the open segment: nothing is left half-written.
    service.stop();
    let back = archive_lines(&dir.join("archive"), None);
    assert_eq!(ids(&back), all_ids("bob", 0..50));
    assert!(!files_under(&dir.join("archive"))
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".partial")));
    // The lock is free again.
    StoreService::start(&store, cfg).unwrap().stop();
}
