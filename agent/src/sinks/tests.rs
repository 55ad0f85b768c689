use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    writer::{Output, Pending},
    SinkError, SinkSpec, Sinks, PARCEL_LINES, QUEUE_CAPACITY,
};
use crate::event::{kind, Event, FileInfo, Host};

fn event(n: usize) -> Event {
    Event {
        v: crate::event::SCHEMA_VERSION,
        id: format!("ev-{n}"),
        time: "2026-11-27T12:00:00.000000001Z".into(),
        kind: kind::FILE_OPEN.into(),
        host: Host {
            name: "test".into(),
            id: "h1".into(),
        },
        trace_id: "0".repeat(32),
        span_id: format!("{n:016x}"),
        file: Some(FileInfo {
            path: format!("/tmp/file-{n}\n\"quoted\""),
            flags: vec!["O_RDONLY".into()],
            result: 3,
            error: None,
        }),
        ..Event::default()
    }
}

fn read_events(path: &Path) -> Vec<Event> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// An in-memory output; `fail` makes a write fail.
#[derive(Clone, Default)]
struct Memory {
    buf: Arc<Mutex<Vec<u8>>>,
    batches: Arc<Mutex<usize>>,
    fail: Arc<Mutex<bool>>,
    fail_finish: bool,
    panic: bool,
    /// A collector-like policy instead of the local one.
    policy: Option<super::writer::BatchPolicy>,
}

impl Output for Memory {
    fn write_batch(&mut self, batch: &Pending<'_>) -> io::Result<()> {
        let batch = batch.bytes;
        assert!(!self.panic, "test output panics");
        *self.batches.lock().unwrap() += 1;
        if *self.fail.lock().unwrap() {
            return Err(io::Error::other("disk on fire"));
        }
        self.buf.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.fail_finish {
            Err(io::Error::other("fsync failed"))
        } else {
            Ok(())
        }
    }

    fn policy(&self) -> super::writer::BatchPolicy {
        self.policy.unwrap_or_default()
    }
}

#[test]
fn a_finding_closes_its_batch_early() {
    let m = Memory {
        policy: Some(super::writer::BatchPolicy {
            max_bytes: 1 << 20,
            max_lines: 10_000,
            max_wait: Duration::from_secs(30),
            finding_max_wait: Some(Duration::from_millis(50)),
            when_idle: false,
        }),
        ..Memory::default()
    };
    let sinks = start_memory(&m);
    sinks.send(&event(1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(*m.batches.lock().unwrap(), 0, "no finding: the batch waits");
    let mut f = event(2);
    f.kind = kind::FINDING.into();
    let t = Instant::now();
    sinks.send(&f);
    wait_until("the finding's batch", || *m.batches.lock().unwrap() == 1);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let text = String::from_utf8(m.buf.lock().unwrap().clone()).unwrap();
    assert_eq!(text.lines().count(), 2, "the event before it went along");
    drop(sinks);
}

fn start_memory(m: &Memory) -> Sinks {
    Sinks::start_outputs(vec![("memory".into(), Box::new(m.clone()))]).unwrap()
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn spec_parses_and_displays() {
    assert_eq!("stdout".parse::<SinkSpec>().unwrap(), SinkSpec::Stdout);
    assert_eq!(
        "file:/var/log/aitrail/events.ndjson"
            .parse::<SinkSpec>()
            .unwrap(),
        SinkSpec::File(PathBuf::from("/var/log/aitrail/events.ndjson"))
    );
    // Only the first colon separates: paths may hold colons.
    assert_eq!(
        "file:/tmp/a:b".parse::<SinkSpec>().unwrap(),
        SinkSpec::File(PathBuf::from("/tmp/a:b"))
    );
    for s in ["stdout", "file:/tmp/x.ndjson", "file:rel/x"] {
        assert_eq!(s.parse::<SinkSpec>().unwrap().to_string(), s);
    }
    for bad in ["", "file:", "file", "stderr", "STDOUT", "tcp:1.2.3.4:5"] {
        assert!(
            matches!(bad.parse::<SinkSpec>(), Err(SinkError::InvalidSpec { .. })),
            "{bad:?} should not parse"
        );
    }
}

#[test]
fn spec_deserialises_from_strings_and_tables() {
    #[derive(serde::Deserialize)]
    struct Config {
        sinks: Vec<SinkSpec>,
    }
    let c: Config = toml::from_str(r#"sinks = ["stdout", "file:/tmp/e.ndjson"]"#).unwrap();
    assert_eq!(
        c.sinks,
        [SinkSpec::Stdout, SinkSpec::File("/tmp/e.ndjson".into())]
    );
    let c: Config = toml::from_str(
        r#"
        [[sinks]]
        type = "stdout"
        [[sinks]]
        type = "file"
        path = "/tmp/e.ndjson"
        "#,
    )
    .unwrap();
    assert_eq!(
        c.sinks,
        [SinkSpec::Stdout, SinkSpec::File("/tmp/e.ndjson".into())]
    );
    for bad in [
        r#"sinks = ["nope"]"#,
        r#"sinks = ["file:"]"#,
        "[[sinks]]\ntype = \"file\"",
        "[[sinks]]\ntype = \"file\"\npath = \"\"",
        "[[sinks]]\ntype = \"stdout\"\npath = \"/x\"",
        "[[sinks]]\ntype = \"kafka\"",
    ] {
        assert!(
            toml::from_str::<Config>(bad).is_err(),
            "{bad:?} should not parse"
        );
    }
    // Serialises back to the string form.
    assert_eq!(
        serde_json::to_string(&SinkSpec::File("/a b".into())).unwrap(),
        r#""file:/a b""#
    );
}

#[test]
fn start_rejects_nothing_and_missing_dirs() {
    assert!(matches!(Sinks::start(&[]), Err(SinkError::NoSinks)));
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/events.ndjson");
    assert!(matches!(
        Sinks::start(&[SinkSpec::File(missing.clone())]),
        Err(SinkError::NoParentDir { .. })
    ));
    assert!(!missing.exists());
    // A directory is not a file.
    assert!(matches!(
        Sinks::start(&[SinkSpec::File(dir.path().to_owned())]),
        Err(SinkError::Open { .. })
    ));
}

#[test]
fn file_sink_writes_every_event_as_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let sinks = Sinks::start(&[SinkSpec::File(path.clone())]).unwrap();
    // More than a queue holds: exercises backpressure (send blocks, never drops).
    let n = QUEUE_CAPACITY * 2 + 17;
    for i in 0..n {
        sinks.send(&event(i));
    }
    let stats = sinks.shutdown().unwrap();
    let got = read_events(&path);
    assert_eq!(got.len(), n);
    for (i, ev) in got.iter().enumerate() {
        assert_eq!(ev, &event(i));
    }
    let s = &stats.sinks[0];
    assert_eq!(s.sink, format!("file:{}", path.display()));
    assert_eq!(s.lines_queued, n as u64);
    assert_eq!(s.lines_written, n as u64);
    assert_eq!(s.bytes_written, std::fs::metadata(&path).unwrap().len());
    assert_eq!(
        (s.write_errors, s.lines_dropped, stats.lines_dropped()),
        (0, 0, 0)
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn a_sink_given_twice_is_written_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let spec = SinkSpec::File(path.clone());
    let sinks = Sinks::start(&[spec.clone(), spec]).unwrap();
    sinks.send(&event(1));
    let stats = sinks.shutdown().unwrap();
    assert_eq!(stats.sinks.len(), 1);
    assert_eq!(read_events(&path), [event(1)]);
}

#[test]
fn file_sink_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    for round in 0..2 {
        let sinks = Sinks::start(&[SinkSpec::File(path.clone())]).unwrap();
        sinks.send(&event(round));
        sinks.shutdown().unwrap();
    }
    assert_eq!(read_events(&path), [event(0), event(1)]);
}

#[test]
fn file_sink_writes_without_waiting_for_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let sinks = Sinks::start(&[SinkSpec::File(path.clone())]).unwrap();
    sinks.send(&event(7));
    // At most FLUSH_INTERVAL (1 s), in practice at once since the queue is empty.
    wait_until("the line on disk", || {
        std::fs::read_to_string(&path).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(read_events(&path), [event(7)]);
    assert_eq!(sinks.stats().sinks[0].lines_written, 1);
    drop(sinks);
}

/// Held lines wait for `flush` (or a full parcel), are counted as queued
/// meanwhile, and go out whole and in order; shutdown sends what is held.
#[test]
fn held_lines_go_out_in_parcels_in_order() {
    let m = Memory::default();
    let mut sinks = start_memory(&m);
    sinks.hold_until_flush();
    let lines = |m: &Memory| String::from_utf8(m.buf.lock().unwrap().clone()).unwrap();
    for i in 0..3 {
        sinks.send(&event(i));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(lines(&m), "", "nothing written before the flush");
    assert_eq!(sinks.stats().sinks[0].lines_queued, 3);
    sinks.flush();
    wait_until("the flushed parcel", || lines(&m).lines().count() == 3);
    // A full parcel goes without a flush.
    for i in 3..3 + PARCEL_LINES {
        sinks.send(&event(i));
    }
    wait_until("the full parcel", || {
        lines(&m).lines().count() == 3 + PARCEL_LINES
    });
    // The rest goes at shutdown.
    let n = 3 + PARCEL_LINES + 5;
    for i in 3 + PARCEL_LINES..n {
        sinks.send(&event(i));
    }
    let stats = sinks.shutdown().unwrap();
    let got: Vec<Event> = lines(&m)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, (0..n).map(event).collect::<Vec<_>>());
    let s = &stats.sinks[0];
    assert_eq!(
        (s.lines_queued, s.lines_written, s.lines_dropped),
        (n as u64, n as u64, 0)
    );
}

/// Held parcels keep the queue's bound in lines: a writer that cannot keep
/// up makes `send` wait, and nothing is lost.
#[test]
fn held_lines_beyond_the_queue_wait_and_are_all_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let mut sinks = Sinks::start(&[SinkSpec::File(path.clone())]).unwrap();
    sinks.hold_until_flush();
    let n = QUEUE_CAPACITY * 2 + 17;
    for i in 0..n {
        sinks.send(&event(i));
    }
    let stats = sinks.shutdown().unwrap();
    assert_eq!(read_events(&path).len(), n);
    assert_eq!(stats.sinks[0].lines_written, n as u64);
}

#[test]
fn drop_drains_like_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let sinks = Sinks::start(&[SinkSpec::File(path.clone())]).unwrap();
    for i in 0..1000 {
        sinks.send(&event(i));
    }
    drop(sinks);
    assert_eq!(read_events(&path).len(), 1000);
}

#[test]
fn every_sink_gets_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.ndjson");
    let mem = Memory::default();
    let outputs: Vec<(String, Box<dyn Output>)> = vec![
        ("memory".into(), Box::new(mem.clone())),
        (
            "file".into(),
            Box::new(super::file::FileOutput::open(&path).unwrap()),
        ),
    ];
    let sinks = Sinks::start_outputs(outputs).unwrap();
    for i in 0..500 {
        sinks.send(&event(i));
    }
    let stats = sinks.shutdown().unwrap();
    assert_eq!(*mem.buf.lock().unwrap(), std::fs::read(&path).unwrap());
    assert_eq!(stats.sinks[0].bytes_written, stats.sinks[1].bytes_written);
}

#[test]
fn concurrent_senders_keep_lines_whole() {
    let mem = Memory::default();
    let sinks = Arc::new(start_memory(&mem));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let sinks = Arc::clone(&sinks);
            std::thread::spawn(move || {
                for i in 0..2000 {
                    sinks.send(&event(t * 10_000 + i));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = Arc::into_inner(sinks).unwrap().shutdown().unwrap();
    let text = String::from_utf8(mem.buf.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8000);
    for l in lines {
        serde_json::from_str::<Event>(l).unwrap();
    }
    assert_eq!(stats.sinks[0].lines_written, 8000);
}

#[test]
fn write_errors_are_counted_not_silent() {
    let mem = Memory::default();
    let sinks = start_memory(&mem);
    *mem.fail.lock().unwrap() = true;
    for i in 0..10 {
        sinks.send(&event(i));
    }
    wait_until("the failed lines counted", || {
        sinks.stats().sinks[0].lines_dropped == 10
    });
    *mem.fail.lock().unwrap() = false;
    sinks.send(&event(10));
    let stats = sinks.shutdown().unwrap();
    let s = &stats.sinks[0];
    assert_eq!(s.lines_queued, 11);
    assert_eq!(s.lines_written, 1);
    assert_eq!(s.lines_dropped, 10);
    assert!(s.write_errors >= 1 && s.write_errors <= 10);
    assert_eq!(stats.lines_dropped(), 10);
    let text = String::from_utf8(mem.buf.lock().unwrap().clone()).unwrap();
    assert_eq!(
        serde_json::from_str::<Event>(text.trim_end()).unwrap(),
        event(10)
    );
}

#[test]
fn full_disk_is_counted() {
    let dev_full = Path::new("/dev/full");
    if !dev_full.exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let sinks = Sinks::start(&[SinkSpec::File(dev_full.to_owned())]).unwrap();
    for i in 0..3 {
        sinks.send(&event(i));
    }
    let stats = sinks.shutdown().unwrap();
    let s = &stats.sinks[0];
    assert_eq!((s.lines_written, s.lines_dropped), (0, 3));
    assert!(s.write_errors >= 1);
}

#[test]
fn final_flush_failure_is_reported() {
    let mem = Memory {
        fail_finish: true,
        ..Memory::default()
    };
    let sinks = start_memory(&mem);
    sinks.send(&event(0));
    assert!(matches!(sinks.shutdown(), Err(SinkError::Finish { .. })));
}

#[test]
fn lines_for_a_dead_writer_are_counted() {
    let mem = Memory {
        panic: true,
        ..Memory::default()
    };
    let sinks = start_memory(&mem);
    sinks.send(&event(0));
    wait_until("the writer to end", || {
        sinks.handles[0]
            .thread
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished)
    });
    sinks.send(&event(1));
    let s = sinks.stats().sinks[0].clone();
    assert_eq!((s.lines_queued, s.lines_dropped), (2, 1));
    let mut sinks = sinks;
    assert!(matches!(
        sinks.handles[0].close(),
        Err(SinkError::WriterPanicked { .. })
    ));
    // The line in the writer's hands when it died is counted too.
    let s = sinks.stats().sinks[0].clone();
    assert_eq!((s.lines_written, s.lines_dropped), (0, 2));
    assert!(sinks.shutdown().is_ok());
}

#[test]
fn collector_spec_parses_and_takes_the_config_section() {
    let spec: SinkSpec = "collector:https://collector.example:8443".parse().unwrap();
    assert_eq!(spec.to_string(), "collector:https://collector.example:8443");
    let SinkSpec::Collector(c) = &spec else {
        panic!("not a collector sink: {spec:?}")
    };
    assert_eq!((c.host.as_str(), c.port), ("collector.example", 8443));
    for bad in ["collector:", "collector:http://c:1", "collector:c:1"] {
        assert!(bad.parse::<SinkSpec>().is_err(), "{bad:?} should not parse");
    }
    let cfg = crate::config::FileConfig::parse(
        "sinks = [\"collector:https://c:1\"]\n[collector]\ntoken = \"t0123456789abcdef\"\nbatch_max_events = 7\n",
        "x",
    )
    .unwrap()
    .validate()
    .unwrap();
    let SinkSpec::Collector(c) = &cfg.sinks[0] else {
        panic!()
    };
    assert_eq!(c.settings.batch_max_events, 7);
    // Without credentials the config is refused.
    let no_auth = crate::config::FileConfig::parse("sinks = [\"collector:https://c:1\"]", "x")
        .unwrap()
        .validate();
    assert!(no_auth.is_err());
}
