//! The collector sink's spool on a small real tmpfs that fills (root: it
//! mounts one), with the collector away: the real `aitrail` process (its
//! whole pipeline driven by `aitrail replay`) must not crash, must count
//! every event it drops, must keep every finding, and must get ENOSPC from
//! the file system (the spool's byte bound is set far above the tmpfs).

use std::{path::PathBuf, process::Stdio, time::Instant};

use super::*;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&path).expect("mkdir mount point");
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs failed ({st})");
        Tmpfs { path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

fn replay(
    recording: &std::path::Path,
    config: &std::path::Path,
    log: &std::path::Path,
) -> std::process::Child {
    std::process::Command::new(common::aitrail_bin())
        .arg("replay")
        .arg(recording)
        .arg("--config")
        .arg(config)
        .env("AITRAIL_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("start aitrail replay")
}

/// Scrapes until the process ends; the last scrape falls in the sender's
/// drain (`shutdown_drain_ms`), after the writer has spooled its last batch.
fn run_scraped(
    recording: &std::path::Path,
    config: &std::path::Path,
    log: &std::path::Path,
    port: u16,
) -> (std::process::ExitStatus, Vec<common::Prom>) {
    let mut child = replay(recording, config, log);
    let start = Instant::now();
    let mut scrapes = Vec::new();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return (st, scrapes);
        }
        assert!(
            start.elapsed() < Duration::from_mins(10),
            "replay did not end:\n{}",
            common::tail(log, 3000)
        );
        if let Some(p) = common::scrape_agent(port) {
            scrapes.push(p);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "privileged: needs root (mount); run by cargo xtask test"]
fn a_spool_on_a_full_tmpfs_drops_counted_events_and_keeps_findings() {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("spool-tmpfs");
    let pki = make_cert(&dir);
    let mut collector =
        common::CollectorProc::configure(&dir.path, "collector", &pki, common::free_port());
    let fs = Tmpfs::mount(dir.join("spoolfs"), "256k");
    let spool = fs.path.join("spool");
    // ~3800 events, ~13 MB of NDJSON, 10 findings (one file read in 50
    // opens a private key): far more than 256 KiB even compressed.
    let recording = dir.join("work/synth.rec");
    common::synth_recording_with(&recording, 1000, 50);
    let run1_file = dir.join("daemon/run1.ndjson");
    let config1 = dir.join("daemon/agent1.toml");
    let m1 = common::free_port();
    common::agent_config(
        &config1,
        &collector,
        Some(&run1_file),
        &spool,
        m1,
        "batch_max_bytes = 65536\nspool_max_bytes = 67108864\nshutdown_drain_ms = 3000",
    );
    let log1 = dir.join("daemon/run1.log");
    let (st, scrapes) = run_scraped(&recording, &config1, &log1, m1);
    assert!(
        st.success(),
        "the daemon did not survive a full file system ({st}):\n{}",
        common::tail(&log1, 4000)
    );
    let sink = collector.sink();
    let last = scrapes.last().expect("scraped at least once");
    let n = |name: &str| last.n(name, &[("sink", sink.as_str())]);
    let queued = n("aitrail_sink_lines_queued_total");
    let written = n("aitrail_sink_lines_written_total");
    let lost_in_writer = n("aitrail_sink_lines_dropped_total");
    let produced = common::ndjson_by_id(&run1_file);
    assert_eq!(
        queued,
        produced.len() as u64,
        "the last scrape is after the writer's end"
    );
    assert_eq!(queued, written + lost_in_writer);
    let no_space = n("aitrail_ship_spool_no_space_total");
    let dropped_full = last.n(
        "aitrail_ship_events_dropped_total",
        &[("sink", sink.as_str()), ("cause", "full")],
    );
    assert!(no_space > 0, "the file system never said ENOSPC");
    assert!(
        dropped_full > 0,
        "nothing was dropped: the tmpfs did not fill"
    );
    assert_eq!(n("aitrail_ship_findings_dropped_total"), 0);
    assert!(
        n("aitrail_ship_spool_bytes") <= 256 * 1024,
        "the spool holds more than the tmpfs"
    );
    assert!(
        std::fs::read_to_string(&log1)
            .unwrap_or_default()
            .contains("no space left on the file system"),
        "ENOSPC was not logged"
    );

    // The collector comes back; a second run on the same spool sends it.
    collector.restart();
    let small = dir.join("work/small.rec");
    common::synth_recording(&small, 2);
    let run2_file = dir.join("daemon/run2.ndjson");
    let config2 = dir.join("daemon/agent2.toml");
    let m2 = common::free_port();
    common::agent_config(
        &config2,
        &collector,
        Some(&run2_file),
        &spool,
        m2,
        "batch_max_bytes = 65536\nspool_max_bytes = 67108864\nshutdown_drain_ms = 60000",
    );
    let log2 = dir.join("daemon/run2.log");
    let (st, _) = run_scraped(&small, &config2, &log2, m2);
    assert!(
        st.success(),
        "second run failed:\n{}",
        common::tail(&log2, 4000)
    );
    collector.stop();
    let stored = collector.stored();
    let run2 = common::ndjson_by_id(&run2_file);

    let findings: Vec<&String> = produced
        .iter()
        .filter(|(_, l)| l.contains("\"kind\":\"finding\""))
        .map(|(id, _)| id)
        .collect();
    assert!(findings.len() >= 10, "{} findings produced", findings.len());
    for id in &findings {
        assert!(stored.contains_key(*id), "finding {id} lost");
    }
    let mut stored_run1 = 0u64;
    for (id, body) in &stored {
        if let Some(line) = produced.get(id) {
            assert_eq!(line, body, "{id} altered");
            stored_run1 += 1;
        } else {
            assert!(run2.contains_key(id), "{id} stored but never produced");
        }
    }
    assert_eq!(
        stored_run1 + dropped_full + lost_in_writer,
        produced.len() as u64,
        "every event is stored or counted as dropped"
    );
    eprintln!(
        "tmpfs 256 KiB: {} events produced ({} findings); ENOSPC {no_space} times; \
         {dropped_full} dropped (full), {lost_in_writer} lost in the writer; {stored_run1} stored; \
         every finding stored",
        produced.len(),
        findings.len()
    );
}
