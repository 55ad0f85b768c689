//! Capture fixtures (`tests/fixtures/{http,llm}/*.cap`) for tests.
//!
//! Format (see tests/fixtures/http/README.md): lines `%% # comment`,
//! `%% out|in <ts_ns> <len>` followed by exactly `<len>` raw bytes and a
//! newline, and `%% gap out|in <len>`.

use super::{Direction, Exchange, HttpOutput, HttpParser, Limits};

#[derive(Clone, Debug)]
pub(crate) enum Record {
    Data {
        dir: Direction,
        ts: u64,
        bytes: Vec<u8>,
    },
    Gap {
        dir: Direction,
        len: u64,
    },
}

fn dir_of(s: &str) -> Direction {
    match s {
        "out" => Direction::Outbound,
        "in" => Direction::Inbound,
        other => panic!("bad direction {other:?}"),
    }
}

/// Loads `tests/fixtures/<rel>`.
pub(crate) fn fixture(rel: &str) -> Vec<Record> {
    let path = format!("{}/../tests/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {path}: {e}"));
    parse(&raw)
}

/// All fixture names in `tests/fixtures/<dir>`.
pub(crate) fn fixture_names(dir: &str) -> Vec<String> {
    let path = format!("{}/../tests/fixtures/{dir}", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("cannot list {path}: {e}"))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|e| e == "cap")
        })
        .map(|n| format!("{dir}/{n}"))
        .collect();
    names.sort();
    names
}

pub(crate) fn parse(raw: &[u8]) -> Vec<Record> {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let eol = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .expect("record line ends")
            + pos;
        let line = std::str::from_utf8(&raw[pos..eol]).expect("record line is text");
        pos = eol + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.first(), Some(&"%%"), "bad record line {line:?}");
        match fields[1..] {
            ["#", ..] => {}
            ["gap", d, n] => records.push(Record::Gap {
                dir: dir_of(d),
                len: n.parse().expect("gap length"),
            }),
            [d, ts, n] => {
                let n: usize = n.parse().expect("length");
                records.push(Record::Data {
                    dir: dir_of(d),
                    ts: ts.parse().expect("timestamp"),
                    bytes: raw[pos..pos + n].to_vec(),
                });
                assert_eq!(
                    raw[pos + n],
                    b'\n',
                    "record of {n} bytes not followed by a newline"
                );
                pos += n + 1;
            }
            _ => panic!("bad record line {line:?}"),
        }
    }
    records
}

/// The timestamp `finish` is called with: just after the last record.
pub(crate) fn end_ts(records: &[Record]) -> u64 {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Data { ts, .. } => Some(*ts),
            Record::Gap { .. } => None,
        })
        .max()
        .unwrap_or(0)
        + 1_000_000
}

/// Feeds every record whole, then finishes.
pub(crate) fn run(records: &[Record], limits: Limits) -> Vec<HttpOutput> {
    run_split(records, limits, |_, _| vec![])
}

/// Feeds records cut where `cuts(record_index, len)` says (offsets inside
/// the record), then finishes.
pub(crate) fn run_split(
    records: &[Record],
    limits: Limits,
    mut cuts: impl FnMut(usize, usize) -> Vec<usize>,
) -> Vec<HttpOutput> {
    let mut p = HttpParser::new(limits);
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if !p.is_http() {
            break;
        }
        match r {
            Record::Data { dir, ts, bytes } => {
                let mut offsets = cuts(i, bytes.len());
                offsets.retain(|&o| o > 0 && o < bytes.len());
                offsets.sort_unstable();
                offsets.dedup();
                let mut start = 0;
                for o in offsets.into_iter().chain([bytes.len()]) {
                    out.extend(p.feed(*dir, *ts, &bytes[start..o]));
                    start = o;
                }
            }
            Record::Gap { dir, len } => out.extend(p.gap(*dir, *len)),
        }
    }
    out.extend(p.finish(end_ts(records)));
    out
}

pub(crate) fn exchanges(outs: &[HttpOutput]) -> Vec<Exchange> {
    outs.iter()
        .filter_map(|o| match o {
            HttpOutput::Exchange(e) => Some(e.clone()),
            HttpOutput::Error(_) => None,
        })
        .collect()
}

pub(crate) fn error_names(outs: &[HttpOutput]) -> Vec<&'static str> {
    outs.iter()
        .filter_map(|o| match o {
            HttpOutput::Error(e) => Some(e.name()),
            HttpOutput::Exchange(_) => None,
        })
        .collect()
}

/// The single exchange of a one-exchange fixture.
pub(crate) fn only_exchange(rel: &str) -> Exchange {
    let outs = run(&fixture(rel), Limits::default());
    let mut ex = exchanges(&outs);
    assert_eq!(ex.len(), 1, "{rel}: {outs:?}");
    ex.remove(0)
}
