//! Loading the corpus: `*.jsonl` files of cases, each case's partial events
//! completed into full [`Event`]s.
//!
//! A partial event carries only what the case is about. It is deep-merged
//! over a default event of its `kind`: objects merge key by key, anything else
//! (arrays, strings, numbers, `null`) replaces. The default holds the envelope
//! (schema version, a corpus host, an id `<case>-<n>`, a time `n` seconds after
//! the corpus epoch, one trace per case, a span per event), a default agent
//! process and the kind's member at its `Default`. A field the event model
//! does not know is an error, so a typo cannot silently empty a case.

use std::{
    collections::{BTreeSet, HashMap},
    fs,
    path::Path,
};

use serde::Deserialize;
use serde_json::Value;

use super::EvalError;
use crate::event::{
    kind, Event, ExecInfo, FileInfo, FindingInfo, Health, Host, LlmCall, NetInfo, ProcessInfo,
    ToolCall, SCHEMA_VERSION,
};

/// Every finding class (`FindingInfo::class`): the detector's list.
pub use crate::detect::rules::CLASSES;

/// Where events without a `time` start: the generator's `at(0)`.
const EPOCH_S: i64 = 1_748_854_800; // 2025-06-02T09:00:00Z

/// One labelled case, its events complete.
#[derive(Clone, Debug)]
pub struct Case {
    pub id: String,
    /// The file name, for messages.
    pub file: String,
    pub line: usize,
    /// Classes the case must raise (empty: benign, must raise nothing).
    pub expect: BTreeSet<String>,
    /// Classes the case may raise without counting either way.
    pub allow: BTreeSet<String>,
    pub note: String,
    pub events: Vec<Event>,
}

impl Case {
    pub fn is_benign(&self) -> bool {
        self.expect.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    id: String,
    expect: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
    note: String,
    events: Vec<Value>,
}

/// Held-out cases, written apart from the tuned corpus and scored on their
/// own: loading the directory leaves this file out, naming it loads only it.
pub const HELDOUT: &str = "heldout.jsonl";

/// Every case of every `*.jsonl` in `dir` but [`HELDOUT`], files in name
/// order; or, when `dir` is a `.jsonl` file, the cases of that file. Ids are
/// unique across the corpus.
pub fn load_dir(dir: &Path) -> Result<Vec<Case>, EvalError> {
    if dir.is_file() {
        return load_files(dir, vec![dir.to_path_buf()]);
    }
    let entries = fs::read_dir(dir).map_err(|source| EvalError::ReadDir {
        dir: dir.display().to_string(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| EvalError::ReadDir {
                dir: dir.display().to_string(),
                source,
            })?
            .path();
        if path.extension().is_some_and(|e| e == "jsonl")
            && path.file_name().is_none_or(|n| n != HELDOUT)
        {
            files.push(path);
        }
    }
    files.sort();
    load_files(dir, files)
}

fn load_files(dir: &Path, files: Vec<std::path::PathBuf>) -> Result<Vec<Case>, EvalError> {
    let mut cases = Vec::new();
    let mut first_seen: HashMap<String, (String, usize)> = HashMap::new();
    for path in files {
        let text = fs::read_to_string(&path).map_err(|source| EvalError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        for case in parse_file(&name, &text, cases.len())? {
            if let Some((file, line)) = first_seen.get(&case.id) {
                return Err(EvalError::DuplicateId {
                    id: case.id,
                    file: case.file,
                    line: case.line,
                    first: format!("{file}:{line}"),
                });
            }
            first_seen.insert(case.id.clone(), (case.file.clone(), case.line));
            cases.push(case);
        }
    }
    if cases.is_empty() {
        return Err(EvalError::Empty {
            dir: dir.display().to_string(),
        });
    }
    Ok(cases)
}

/// The cases of one file; `first_index` numbers them corpus-wide (trace ids).
pub fn parse_file(file: &str, text: &str, first_index: usize) -> Result<Vec<Case>, EvalError> {
    let mut out = Vec::new();
    for (n, raw_line) in text.lines().enumerate() {
        let line = n + 1;
        if raw_line.trim().is_empty() {
            continue;
        }
        let raw: RawCase = serde_json::from_str(raw_line).map_err(|source| EvalError::Json {
            file: file.to_owned(),
            line,
            source,
        })?;
        let bad = |problem: String| EvalError::Case {
            file: file.to_owned(),
            line,
            id: raw.id.clone(),
            problem,
        };
        if raw.id.is_empty() {
            return Err(bad("empty id".into()));
        }
        for class in raw.expect.iter().chain(&raw.allow) {
            if !CLASSES.contains(&class.as_str()) {
                return Err(bad(format!("unknown class {class:?}")));
            }
        }
        if raw.expect.is_empty() && !raw.allow.is_empty() {
            // A benign case must raise nothing at all: that is what the
            // false-positive rate counts.
            return Err(bad("a benign case (expect []) cannot allow classes".into()));
        }
        if let Some(c) = raw.allow.iter().find(|c| raw.expect.contains(c)) {
            return Err(bad(format!("{c:?} is both expected and allowed")));
        }
        if raw.events.is_empty() {
            return Err(bad("no events".into()));
        }
        let index = first_index + out.len();
        let mut events = Vec::with_capacity(raw.events.len());
        for (k, partial) in raw.events.iter().enumerate() {
            let ev = build_event(index, &raw.id, k, partial).map_err(|problem| match problem {
                Built::Invalid(problem) => bad(format!("event {k}: {problem}")),
                Built::Serde(source) => EvalError::Event {
                    file: file.to_owned(),
                    line,
                    id: raw.id.clone(),
                    index: k,
                    source,
                },
            })?;
            events.push(ev);
        }
        out.push(Case {
            id: raw.id,
            file: file.to_owned(),
            line,
            expect: raw.expect.into_iter().collect(),
            allow: raw.allow.into_iter().collect(),
            note: raw.note,
            events,
        });
    }
    Ok(out)
}

/// Why a partial event did not make an [`Event`].
#[derive(Debug)]
pub enum Built {
    Invalid(String),
    Serde(serde_json::Error),
}

/// Event `k` of case number `index` (corpus-wide) with id `case_id`.
pub fn build_event(index: usize, case_id: &str, k: usize, partial: &Value) -> Result<Event, Built> {
    let Some(kind) = partial.get("kind").and_then(Value::as_str) else {
        return Err(Built::Invalid("no \"kind\"".into()));
    };
    let mut full = default_event(kind, index, case_id, k)?;
    merge(&mut full, partial);
    let ev: Event = serde_json::from_value(full).map_err(Built::Serde)?;
    // Anything in the partial that did not survive the round trip is a field
    // the event model does not have.
    let back = serde_json::to_value(&ev).map_err(Built::Serde)?;
    let mut unknown = Vec::new();
    unknown_fields(partial, &back, "", &mut unknown);
    if !unknown.is_empty() {
        return Err(Built::Invalid(format!(
            "fields the event model does not have: {}",
            unknown.join(", ")
        )));
    }
    Ok(ev)
}

fn default_event(kind: &str, index: usize, case_id: &str, k: usize) -> Result<Value, Built> {
    let mut ev = Event {
        v: SCHEMA_VERSION,
        id: format!("{case_id}-{k}"),
        time: time_after_epoch(k),
        kind: kind.to_owned(),
        host: Host {
            name: "corpus".into(),
            id: "corpus".into(),
        },
        trace_id: format!("{:032x}", index + 1),
        span_id: format!("{:08x}{:08x}", index + 1, k + 1),
        process: Some(ProcessInfo {
            pid: 4000,
            ppid: 1,
            uid: 1000,
            user: Some("dev".into()),
            comm: "agent".into(),
            exe: "/usr/bin/agent".into(),
            args: vec!["agent".into()],
            exec_id: format!("corpus-{index}"),
            parent_exec_id: None,
        }),
        ..Event::default()
    };
    match kind {
        kind::LLM_CALL => ev.llm = Some(LlmCall::default()),
        kind::TOOL_CALL => ev.tool = Some(ToolCall::default()),
        kind::PROCESS_EXEC | kind::PROCESS_EXIT => ev.exec = Some(ExecInfo::default()),
        kind::FILE_OPEN => ev.file = Some(FileInfo::default()),
        kind::NET_CONNECT => ev.net = Some(NetInfo::default()),
        kind::FINDING => ev.finding = Some(FindingInfo::default()),
        kind::AGENT_HEALTH => ev.health = Some(Health::default()),
        other => return Err(Built::Invalid(format!("unknown kind {other:?}"))),
    }
    serde_json::to_value(&ev).map_err(Built::Serde)
}

fn time_after_epoch(k: usize) -> String {
    let secs = EPOCH_S + i64::try_from(k).unwrap_or(i64::MAX - EPOCH_S);
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Deep-merges `over` into `base`: objects key by key, anything else replaces.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (key, value) in o {
                match b.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        b.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (slot, value) => *slot = value.clone(),
    }
}

/// Paths of `partial` that `full` lacks. Values a serializer skips when they
/// are empty (`null`, `false`, `""`, `[]`) may be missing legitimately.
fn unknown_fields(partial: &Value, full: &Value, path: &str, out: &mut Vec<String>) {
    match (partial, full) {
        (Value::Object(p), Value::Object(f)) => {
            for (key, value) in p {
                let sub = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match f.get(key) {
                    Some(fv) => unknown_fields(value, fv, &sub, out),
                    None if is_empty(value) => {}
                    None => out.push(sub),
                }
            }
        }
        (Value::Array(p), Value::Array(f)) => {
            for (i, (pv, fv)) in p.iter().zip(f).enumerate() {
                unknown_fields(pv, fv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}
