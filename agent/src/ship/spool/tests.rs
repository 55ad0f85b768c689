use std::{os::unix::fs::PermissionsExt as _, time::Duration};

use super::{FsyncPolicy, Header, Spool, SpoolConfig, SpoolError, HEADER_LEN, QUARANTINE};

fn config(dir: &std::path::Path, max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.join("spool"),
        max_bytes,
        max_age: Duration::from_hours(1),
        fsync: FsyncPolicy::Segment,
    }
}

fn id(n: u8) -> [u8; 16] {
    [n; 16]
}

/// Appends a segment whose payload is `n` bytes of `fill`.
fn put(spool: &Spool, n: usize, fill: u8, findings: u32) -> super::Segment {
    spool
        .append(id(fill), &vec![fill; n], 0, 10, findings)
        .unwrap()
        .expect("spooled, not dropped by the full policy")
}

#[test]
fn header_round_trips_and_rejects_damage() {
    let h = Header {
        batch_id: id(7),
        created_ms: 1_700_000_000_123,
        payload_len: 4242,
        events: 99,
        findings: 3,
        raw_len: 100_000,
        payload_crc: 0xdead_beef,
    };
    let bytes = h.encode();
    assert_eq!(Header::decode(&bytes).unwrap(), h);
    assert_eq!(
        h.batch_id(),
        "07070707-0707-0707-0707-070707070707",
        "batch id is a UUID string"
    );
    for i in 0..60 {
        let mut bad = bytes;
        bad[i] ^= 0x40;
        assert!(Header::decode(&bad).is_err(), "flipped byte {i} accepted");
    }
    assert!(Header::decode(&bytes[..10]).is_err());
}

#[test]
fn segments_survive_a_restart_in_order_with_private_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 1 << 20);
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        for i in 1..=3 {
            put(&spool, 100, i, 0);
        }
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cfg.dir), 0o700);
    assert_eq!(mode(&cfg.dir.join(QUARANTINE)), 0o700);
    for e in std::fs::read_dir(&cfg.dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    // A leftover temp file is a write a crash cut: removed and counted.
    std::fs::write(cfg.dir.join("00000000000000000009.tmp"), b"half").unwrap();
    let spool = Spool::open(cfg.clone()).unwrap();
    assert_eq!(spool.stats().segments_now, 3);
    assert_eq!(spool.stats().segments_torn, 1);
    assert!(!cfg.dir.join("00000000000000000009.tmp").exists());
    // Oldest first, payload intact; new segments number after the old ones.
    let new = put(&spool, 5, 9, 0);
    assert_eq!(new.seq, 3);
    for expect in [1u8, 2, 3, 9] {
        let s = spool.take_oldest().unwrap();
        assert_eq!(s.header.batch_id, id(expect));
        let payload = spool.read(&s).unwrap();
        assert!(payload.iter().all(|&b| b == expect));
        spool.acked(&s).unwrap();
    }
    assert!(spool.take_oldest().is_none());
    let st = spool.stats();
    assert_eq!(
        (st.segments_acked, st.events_acked, st.bytes_now),
        (4, 40, 0)
    );
}

#[test]
fn corrupt_segments_are_quarantined_at_start_and_at_read() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 1 << 20);
    let (a, b, c) = {
        let spool = Spool::open(cfg.clone()).unwrap();
        (
            put(&spool, 100, 1, 0),
            put(&spool, 100, 2, 0),
            put(&spool, 100, 3, 1),
        )
    };
    let path = |s: &super::Segment| cfg.dir.join(format!("{:020}.seg", s.seq));
    // a: a flipped payload byte; b: torn (cut short).
    let mut bytes = std::fs::read(path(&a)).unwrap();
    bytes[HEADER_LEN + 10] ^= 1;
    std::fs::write(path(&a), bytes).unwrap();
    let bytes = std::fs::read(path(&b)).unwrap();
    std::fs::write(path(&b), &bytes[..HEADER_LEN + 30]).unwrap();
    let spool = Spool::open(cfg.clone()).unwrap();
    let st = spool.stats();
    assert_eq!((st.segments_now, st.segments_quarantined), (1, 2));
    assert!(cfg
        .dir
        .join(QUARANTINE)
        .join(path(&a).file_name().unwrap())
        .exists());
    // c goes bad after the start: caught at read, counted with its events.
    let mut bytes = std::fs::read(path(&c)).unwrap();
    bytes[HEADER_LEN] ^= 1;
    std::fs::write(path(&c), bytes).unwrap();
    let s = spool.take_oldest().unwrap();
    assert!(matches!(spool.read(&s), Err(SpoolError::Corrupt { .. })));
    let st = spool.stats();
    assert_eq!(
        (
            st.segments_now,
            st.segments_quarantined,
            st.dropped_corrupt,
            st.findings_dropped
        ),
        (0, 3, 10, 1)
    );
    assert!(spool.take_oldest().is_none());
}

#[test]
fn full_spool_drops_oldest_without_findings_first_then_findings_for_findings() {
    let tmp = tempfile::tempdir().unwrap();
    let seg = (HEADER_LEN + 100) as u64;
    let spool = Spool::open(config(tmp.path(), 4 * seg)).unwrap();
    put(&spool, 100, 1, 2); // findings
    put(&spool, 100, 2, 0);
    put(&spool, 100, 3, 1); // findings
    put(&spool, 100, 4, 0);
    // Full: the next two evict 2 then 4 (no findings), keeping 1 and 3.
    put(&spool, 100, 5, 0);
    put(&spool, 100, 6, 0);
    let ids = |spool: &Spool| {
        let index = spool.lock();
        index
            .segments
            .values()
            .map(|s| s.header.batch_id[0])
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&spool), [1, 3, 5, 6]);
    let st = spool.stats();
    assert_eq!((st.dropped_full, st.findings_dropped), (20, 0));
    // A segment with findings when only findings and newer ones are left:
    // 5 and 6 go first, then the oldest finding.
    put(&spool, 100, 7, 1);
    put(&spool, 100, 8, 1);
    assert_eq!(ids(&spool), [1, 3, 7, 8]);
    put(&spool, 100, 9, 1);
    assert_eq!(ids(&spool), [3, 7, 8, 9]);
    let st = spool.stats();
    assert_eq!((st.dropped_full, st.findings_dropped), (50, 2));
    assert_eq!(st.bytes_now, 4 * seg);
    // A batch without findings never pushes a finding out: with only
    // findings left, it is the one dropped (and counted).
    let dropped = spool.append(id(20), &[20; 100], 0, 10, 0).unwrap();
    assert!(dropped.is_none());
    assert_eq!(ids(&spool), [3, 7, 8, 9]);
    let st = spool.stats();
    assert_eq!((st.dropped_full, st.findings_dropped), (60, 2));
    // The segment in flight is never evicted.
    let oldest = spool.take_oldest().unwrap();
    assert_eq!(oldest.header.batch_id[0], 3);
    put(&spool, 100, 10, 1);
    assert_eq!(ids(&spool), [3, 8, 9, 10]);
    // Larger than the whole spool: refused, nothing evicted.
    assert!(matches!(
        spool.append(id(11), &vec![0; 5 * 164], 0, 1, 0),
        Err(SpoolError::TooLarge { .. })
    ));
    assert_eq!(ids(&spool), [3, 8, 9, 10]);
}

#[test]
fn old_segments_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), 1 << 20);
    cfg.max_age = Duration::from_millis(50);
    let spool = Spool::open(cfg.clone()).unwrap();
    put(&spool, 10, 1, 1);
    std::thread::sleep(Duration::from_millis(120));
    put(&spool, 10, 2, 0);
    let s = spool.take_oldest().unwrap();
    assert_eq!(s.header.batch_id[0], 2);
    let st = spool.stats();
    assert_eq!((st.dropped_expired, st.findings_dropped), (10, 1));
    // Also at start.
    spool.release();
    drop(spool);
    std::thread::sleep(Duration::from_millis(120));
    let spool = Spool::open(cfg).unwrap();
    assert!(spool.is_empty());
    assert_eq!(spool.stats().dropped_expired, 10);
}

#[test]
fn rejected_segments_are_dropped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(tmp.path(), 1 << 20)).unwrap();
    put(&spool, 10, 1, 4);
    let s = spool.take_oldest().unwrap();
    spool.rejected(&s);
    let st = spool.stats();
    assert_eq!(
        (st.dropped_rejected, st.findings_dropped, st.segments_now),
        (10, 4, 0)
    );
}
