use std::{collections::BTreeMap, fs, io::Write, path::Path};

use serde_json::Value;

use super::*;
use crate::{
    blindspot::{BlindSpotConfig, BlindSpots},
    config::{Config, FileConfig},
    detect::Detector,
    event::{kind, Host},
    opinion::Opinion,
    pipeline::Stages,
    redact::Redactor,
    route::Router,
    sinks::{SinkSpec, Sinks},
};

fn header() -> RecordingHeader {
    RecordingHeader {
        aitrail_version: "test".into(),
        endian: if cfg!(target_endian = "little") {
            "little".into()
        } else {
            "big".into()
        },
        boot_to_wall_ns: 1_700_000_000_000_000_000,
        boot_id: "00000000-test-boot".into(),
        host: Host {
            name: "recorded-host".into(),
            id: "0123456789abcdef".into(),
        },
        synthetic: true,
    }
}

/// A replaying pipeline writing NDJSON to `out`, built as `main` builds
/// the daemon's stages.
fn pipeline(out: &Path, h: &RecordingHeader) -> Pipeline {
    pipeline_with(out, h, true)
}

/// [`pipeline`], its redactor with or without its scan cache.
fn pipeline_with(out: &Path, h: &RecordingHeader, cached: bool) -> Pipeline {
    let mut cfg: Config = FileConfig::default().validate().expect("default config");
    cfg.sinks = vec![SinkSpec::File(out.to_owned())];
    let env = h.envelope();
    let sinks = Sinks::start(&cfg.sinks).expect("sinks");
    let stages = Stages {
        detector: Detector::new(&cfg.detect, env.clone()).expect("rules"),
        // No resolver thread in tests: no blind spots to look for.
        blind_spots: BlindSpots::start(
            &BlindSpotConfig {
                enabled: false,
                ..BlindSpotConfig::default()
            },
            env.clone(),
        ),
        redactor: {
            let r = Redactor::new(&cfg.redact).expect("redactor");
            if cached {
                r
            } else {
                r.without_cache()
            }
        },
        router: Router::new(&cfg.routes, &cfg.sinks, &sinks).expect("router"),
        opinion: Opinion::start(&cfg.second_opinion).expect("opinion"),
    };
    Pipeline::replaying(&cfg, stages, sinks, env, &h.boot_id)
}

fn events(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .expect("events file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("event json"))
        .collect()
}

/// An event without what varies between runs (random ids, uptime).
fn stable(mut v: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in [
                    "id",
                    "trace_id",
                    "span_id",
                    "parent_span_id",
                    "event",
                    "effects",
                    "uptime_s",
                    // How far the sinks' threads got when the health event
                    // was made: timing, not the recording.
                    "bytes_shipped",
                    "spool_depth",
                ] {
                    m.remove(k);
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

fn count_kinds(evs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in evs {
        *m.entry(e["kind"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    m
}

fn write_synth(path: &Path, calls: usize) -> Vec<Record> {
    let recs = synth::records(calls);
    recording::write_all(path, &header(), recs.iter().map(records::encode)).expect("write");
    recs
}

#[test]
fn encode_inverts_decode_for_synthesised_records() {
    for r in synth::records(4) {
        assert_eq!(records::decode(&records::encode(&r)), Ok(r));
    }
}

#[test]
fn replay_gives_the_events_of_feeding_the_records_directly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rec.aitrail");
    let recs = write_synth(&file, 10);

    let direct_out = dir.path().join("direct.ndjson");
    let p = pipeline(&direct_out, &header());
    let (tx, rx) = flume::unbounded();
    let (_kc_tx, kc_rx) = flume::unbounded();
    for b in recs.chunks(BATCH) {
        tx.send(b.to_vec()).expect("send");
    }
    drop(tx);
    p.run(&rx, &kc_rx).expect("direct run");

    let loaded = load(&file).expect("load");
    assert!(loaded.error.is_none());
    assert_eq!(loaded.header, header());
    assert_eq!(loaded.records.len(), recs.len());
    let replay_out = dir.path().join("replay.ndjson");
    let summary = run(pipeline(&replay_out, &loaded.header), &loaded.records).expect("replay");
    assert!(summary.decode_errors.is_empty());
    assert_eq!(summary.pipeline.llm_calls, 10);

    let direct: Vec<Value> = events(&direct_out).into_iter().map(stable).collect();
    let replayed: Vec<Value> = events(&replay_out).into_iter().map(stable).collect();
    assert!(direct.len() > 30, "{} events", direct.len());
    assert_eq!(direct.len(), replayed.len());
    for (i, (d, r)) in direct.iter().zip(&replayed).enumerate() {
        assert_eq!(d, r, "event {i} differs");
    }
    // Times are the recorded host's, not this one's.
    let first = &events(&replay_out)[0];
    assert!(
        first["time"].as_str().unwrap().starts_with("2023-11-14T"),
        "{first}"
    );
    assert_eq!(first["host"]["name"], "recorded-host");
}

#[test]
fn synthesised_calls_replay_into_llm_and_tool_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rec.aitrail");
    write_synth(&file, 6);
    let loaded = load(&file).expect("load");
    let out = dir.path().join("out.ndjson");
    run(pipeline(&out, &loaded.header), &loaded.records).expect("replay");
    let evs = events(&out);
    let kinds = count_kinds(&evs);
    assert_eq!(kinds.get(kind::LLM_CALL), Some(&6), "{kinds:?}");
    assert_eq!(kinds.get(kind::TOOL_CALL), Some(&6), "{kinds:?}");
    // One agent process plus one shell per OpenAI call.
    assert_eq!(kinds.get(kind::PROCESS_EXEC), Some(&4), "{kinds:?}");
    assert_eq!(kinds.get(kind::FILE_OPEN), Some(&3), "{kinds:?}");
    let providers: Vec<&str> = evs
        .iter()
        .filter(|e| e["kind"] == kind::LLM_CALL)
        .filter_map(|e| e["llm"]["provider"].as_str())
        .collect();
    assert_eq!(providers.iter().filter(|p| **p == "openai").count(), 3);
    assert_eq!(providers.iter().filter(|p| **p == "anthropic").count(), 3);
    // The API keys in the requests never come out.
    let all = fs::read_to_string(&out).expect("read");
    assert!(!all.contains("sk-proj-synth"), "key leaked");
    assert!(!all.contains("sk-ant-api03-synth"), "key leaked");
    // The live host's processes are not mixed in: only recorded pids.
    for e in &evs {
        if let Some(pid) = e["process"]["pid"].as_u64() {
            assert!(
                (2000..3000).contains(&pid),
                "pid {pid} is not from the recording"
            );
        }
    }
}

#[test]
fn a_truncated_recording_gives_its_records_and_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rec.aitrail");
    let recs = write_synth(&file, 64);
    let len = fs::metadata(&file).expect("meta").len();
    let mut some_records = false;
    for cut in [len - 1, len / 2, 40, 13, 12, 5] {
        let short = dir.path().join(format!("cut{cut}"));
        let bytes = fs::read(&file).expect("read");
        fs::write(&short, &bytes[..usize::try_from(cut).unwrap()]).expect("write");
        match load(&short) {
            Ok(l) => {
                let e = l.error.expect("a cut recording reports an error");
                assert!(l.records.len() < recs.len());
                assert_eq!(e.records_before(), Some(l.records.len() as u64));
                assert!(e.to_string().contains("truncated"), "{e}");
                some_records |= !l.records.is_empty();
            }
            // Cut inside the magic, or before the header came out whole.
            Err(e) => assert!(
                matches!(
                    e,
                    RecordingError::NotARecording { .. }
                        | RecordingError::Truncated { records: 0, .. }
                ),
                "cut at {cut}: {e}"
            ),
        }
    }
    assert!(some_records, "no cut kept the records before it");
}

#[test]
fn garbage_is_refused_or_reported_never_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rec.aitrail");
    write_synth(&file, 2);
    let good = fs::read(&file).expect("read");

    let not = dir.path().join("not");
    fs::write(&not, b"hello world, not a recording").expect("write");
    assert!(matches!(
        load(&not),
        Err(RecordingError::NotARecording { .. })
    ));

    let mut v2 = good.clone();
    v2[8] = 2;
    let p = dir.path().join("v2");
    fs::write(&p, &v2).expect("write");
    assert!(matches!(
        load(&p),
        Err(RecordingError::Version { found: 2, .. })
    ));

    // A huge length in a valid stream.
    let p = dir.path().join("huge");
    {
        let mut f = fs::File::create(&p).expect("create");
        f.write_all(recording::MAGIC).expect("w");
        f.write_all(&recording::VERSION.to_le_bytes()).expect("w");
        let mut enc = zstd::stream::write::Encoder::new(f, 1).expect("enc");
        let json = serde_json::to_vec(&header()).expect("json");
        enc.write_all(&u32::try_from(json.len()).unwrap().to_le_bytes())
            .expect("w");
        enc.write_all(&json).expect("w");
        enc.write_all(&u32::MAX.to_le_bytes()).expect("w");
        enc.finish().expect("finish");
    }
    let l = load(&p).expect("header is fine");
    assert!(matches!(
        l.error,
        Some(RecordingError::Corrupt { records: 0, .. })
    ));

    // Flipped bytes anywhere: an error or fewer records, never a panic;
    // records that do come out go through decode and the pipeline.
    for i in (12..good.len()).step_by(good.len() / 40 + 1) {
        let mut bad = good.clone();
        bad[i] ^= 0x5a;
        let p = dir.path().join(format!("flip{i}"));
        fs::write(&p, &bad).expect("write");
        if let Ok(l) = load(&p) {
            let out = dir.path().join(format!("flip{i}.ndjson"));
            run(pipeline(&out, &l.header), &l.records).expect("replay");
        }
    }
}

#[test]
fn the_recorder_writes_what_it_is_given_and_refuses_an_existing_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rec.aitrail");
    let recs: Vec<Vec<u8>> = synth::records(3).iter().map(records::encode).collect();
    let mut r = Recorder::create(&file, &header()).expect("create");
    for (i, b) in recs.iter().enumerate() {
        r.push(b);
        if i % 7 == 0 {
            r.end_batch();
        }
    }
    assert_eq!(r.finish(), recs.len() as u64);
    let mode = fs::metadata(&file).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let l = load(&file).expect("load");
    assert!(l.error.is_none());
    assert_eq!(l.records, recs);
    assert!(matches!(
        Recorder::create(&file, &header()),
        Err(RecordingError::Io { .. })
    ));
}

/// Every capture fixture of the tests (all providers, HTTP/2, MCP, HTTP
/// edge cases).
fn all_captures() -> Vec<mix::Capture> {
    ["llm", "h2", "mcp", "http"]
        .iter()
        .flat_map(|d| {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures")
                .join(d);
            mix::load_dir(&dir).expect("fixtures")
        })
        .collect()
}

#[test]
fn the_redaction_cache_changes_no_event_of_a_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let captures = all_captures();
    assert!(captures.len() > 80, "{} fixtures", captures.len());
    // Twice each: the second copy of a fixture hits the cache throughout.
    let twice: Vec<mix::Capture> = captures.iter().chain(&captures).cloned().collect();
    let recs: Vec<Vec<u8>> = synth::records_mixed(48, 3, &twice)
        .iter()
        .map(records::encode)
        .collect();
    let mut outs = Vec::new();
    for cached in [true, false] {
        let out = dir.path().join(format!("cached-{cached}.ndjson"));
        let s = run(pipeline_with(&out, &header(), cached), &recs).expect("replay");
        assert!(s.decode_errors.is_empty());
        outs.push(out);
    }
    let strip_cache = |mut v: Value| {
        // Evidence names events by their random ids.
        if let Some(f) = v.get_mut("finding").and_then(Value::as_object_mut) {
            f.remove("evidence");
        }
        if let Some(c) = v.get_mut("health").and_then(|h| h.get_mut("counters")) {
            if let Some(m) = c.as_object_mut() {
                m.retain(|k, _| !k.starts_with("redact_cache_"));
            }
        }
        stable(v)
    };
    let cached: Vec<Value> = events(&outs[0]).into_iter().map(strip_cache).collect();
    let fresh: Vec<Value> = events(&outs[1]).into_iter().map(strip_cache).collect();
    let kinds = count_kinds(&cached);
    assert!(
        kinds.get(kind::LLM_CALL).copied().unwrap_or(0) > 48 + 80,
        "{kinds:?}"
    );
    assert!(
        kinds.get(kind::FINDING).copied().unwrap_or(0) > 0,
        "{kinds:?}"
    );
    assert_eq!(cached.len(), fresh.len());
    for (i, (a, b)) in cached.iter().zip(&fresh).enumerate() {
        assert_eq!(a, b, "event {i} differs");
    }
    // The cache was used: the last health event says so.
    let raw = events(&outs[0]);
    let health = raw
        .iter()
        .rev()
        .find(|e| e["kind"] == kind::AGENT_HEALTH)
        .expect("a health event");
    let hits = health
        .pointer("/health/counters/redact_cache_hits")
        .and_then(Value::as_u64);
    assert!(hits.is_some_and(|h| h > 1000), "{health}");
}

/// `replay --bench`'s "through decode alone" does the pipeline's decoding
/// work: the same plaintext, the same LLM calls.
#[test]
fn decoding_alone_finds_the_calls_the_pipeline_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recs: Vec<Vec<u8>> = synth::records_mixed(24, 0, &all_captures())
        .iter()
        .map(records::encode)
        .collect();
    let out = dir.path().join("out.ndjson");
    let s = run(pipeline(&out, &header()), &recs).expect("replay");
    let cfg = FileConfig::default().validate().expect("config");
    let d = decode_only(&cfg, &recs);
    assert_eq!(d.tls_bytes, s.pipeline.tls_bytes);
    assert_eq!(d.llm_calls, s.pipeline.llm_calls);
    assert!(d.llm_calls > 24 + 50, "{d:?}");
    assert!(d.mcp_exchanges > 5, "{d:?}");
    assert!(d.exchanges >= d.llm_calls + d.mcp_exchanges, "{d:?}");
}

#[test]
fn fixtures_mixed_in_replay_as_calls_of_every_provider() {
    let dir = tempfile::tempdir().expect("tempdir");
    let captures =
        mix::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm"))
            .expect("fixtures");
    let recs: Vec<Vec<u8>> = synth::records_mixed(16, 0, &captures)
        .iter()
        .map(records::encode)
        .collect();
    let out = dir.path().join("out.ndjson");
    run(pipeline(&out, &header()), &recs).expect("replay");
    let evs = events(&out);
    let providers: std::collections::BTreeSet<&str> = evs
        .iter()
        .filter(|e| e["kind"] == kind::LLM_CALL)
        .filter_map(|e| e["llm"]["provider"].as_str())
        .collect();
    for p in [
        "openai",
        "anthropic",
        "gemini",
        "ollama",
        "aws.bedrock",
        "azure.openai",
        "groq",
    ] {
        assert!(providers.contains(p), "{p} missing from {providers:?}");
    }
    // Every fixture was its own process, forked from the shell.
    let execs = evs
        .iter()
        .filter(|e| e["kind"] == kind::PROCESS_EXEC && e["exec"]["args"][1] == "client.py")
        .count();
    assert_eq!(execs, captures.len());
}

#[test]
fn a_bad_capture_is_an_error_not_a_panic() {
    for raw in [
        &b"%% out 1 10\nshort\n"[..],
        b"%% out 1 x\n",
        b"%% sideways 1 1\na\n",
        b"no marker\n",
        b"%% out 1 1\nab",
        b"%% gap out\n",
        b"%% out 1 1",
    ] {
        assert!(mix::parse("bad", raw).is_err(), "{raw:?}");
    }
    let c = mix::parse("ok", b"%% # hi\n%% out 5 2\nab\n%% gap in 3\n").expect("parses");
    assert_eq!(c.records.len(), 2);
}
