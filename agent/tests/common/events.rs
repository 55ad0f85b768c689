//! Reading the daemon's events, describing them, and checking them.

#![allow(
    clippy::wildcard_imports,
    reason = "one test-support module split in files"
)]

use super::*;

// ------------------------------------------------------------------ events

/// The events the daemon wrote, in file order.
pub struct Events {
    pub all: Vec<Event>,
    pub path: PathBuf,
}

impl Events {
    /// Reads an NDJSON file; every line must be an [`Event`].
    pub fn read(path: &Path) -> Self {
        let text = fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "cannot read the daemon's events file {}: {e}",
                path.display()
            )
        });
        let mut all = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "{}:{}: not JSON ({e}): {}",
                    path.display(),
                    i + 1,
                    cut(line, 400)
                )
            });
            let ev: Event = serde_json::from_value(v).unwrap_or_else(|e| {
                panic!(
                    "{}:{}: does not match the event model in agent/src/event.rs ({e}): {}",
                    path.display(),
                    i + 1,
                    cut(line, 600)
                )
            });
            all.push(ev);
        }
        Events {
            all,
            path: path.to_path_buf(),
        }
    }

    pub fn of_kind(&self, k: &str) -> Vec<&Event> {
        self.all.iter().filter(|e| e.kind == k).collect()
    }

    pub fn by_id(&self, id: &str) -> Option<&Event> {
        self.all.iter().find(|e| e.id == id)
    }

    /// llm.call events sorted by time (then file order).
    pub fn llm_calls(&self) -> Vec<&Event> {
        let mut v = self.of_kind(kind::LLM_CALL);
        v.sort_by_key(|e| time_key(&e.time));
        v
    }

    /// A readable listing for failure messages: every event but the
    /// file.open/exec/exit of paths unrelated to the run (counted instead).
    pub fn summary(&self, related: &[&str]) -> String {
        let mut out = String::new();
        let mut hidden: BTreeMap<&str, usize> = BTreeMap::new();
        let _ = writeln!(
            out,
            "--- {} events in {} ---",
            self.all.len(),
            self.path.display()
        );
        for e in &self.all {
            let line = describe(e);
            let noisy = matches!(
                e.kind.as_str(),
                kind::FILE_OPEN | kind::PROCESS_EXEC | kind::PROCESS_EXIT | kind::NET_CONNECT
            );
            let is_related = related.iter().any(|r| !r.is_empty() && line.contains(r))
                || !e.parent_span_id.as_deref().unwrap_or("").is_empty();
            if noisy && !is_related {
                *hidden.entry(e.kind.as_str()).or_default() += 1;
                continue;
            }
            let _ = writeln!(out, "{line}");
        }
        if !hidden.is_empty() {
            let _ = writeln!(
                out,
                "(not shown, unrelated to the run and unlinked: {hidden:?})"
            );
        }
        out
    }
}

fn time_key(t: &str) -> (i64, String) {
    let ns = chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
        .unwrap_or(i64::MAX);
    (ns, t.to_string())
}

pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} bytes]", &s[..end], s.len())
}

pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// One line per event, with the fields the assertions look at.
pub fn describe(e: &Event) -> String {
    let mut s = format!(
        "{} id={} trace={} span={} parent={}",
        e.kind,
        short(&e.id),
        short(&e.trace_id),
        e.span_id,
        e.parent_span_id.as_deref().unwrap_or("-")
    );
    if let Some(p) = &e.process {
        let _ = write!(s, " pid={} comm={}", p.pid, p.comm);
    }
    if let Some(l) = &e.llm {
        let roles: Vec<String> = l
            .messages
            .iter()
            .map(|m| match &m.tool_call_id {
                Some(id) => format!("{}({id})", m.role),
                None => m.role.clone(),
            })
            .collect();
        let calls: Vec<String> = l
            .output
            .tool_calls
            .iter()
            .map(|c| format!("{}:{}{}", c.id, c.name, c.arguments))
            .collect();
        let _ = write!(
            s,
            " provider={} path={} model={:?} stream={} status={:?} server={}:{} tools={:?} messages={roles:?} \
             out.text={:?} out.finish={:?} out.tool_calls={calls:?} usage={:?}/{:?} truncated={} key_id={:?}",
            l.provider,
            l.path,
            l.model,
            l.stream,
            l.status,
            l.server.host,
            l.server.port,
            l.tools,
            cut(&l.output.text, 80),
            l.output.finish_reason,
            l.usage.input_tokens,
            l.usage.output_tokens,
            l.truncated,
            l.api_key_id
        );
    }
    if let Some(t) = &e.tool {
        let effects: Vec<&str> = t.effects.iter().map(|x| short(x)).collect();
        let _ = write!(
            s,
            " call_id={} name={} args={} result={:?} effects={effects:?} confidence={}",
            t.call_id,
            t.name,
            t.arguments,
            t.result.as_deref().map(|r| cut(r, 60)),
            t.confidence
        );
    }
    if let Some(x) = &e.exec {
        let _ = write!(
            s,
            " filename={} args={:?} exit_code={:?}",
            x.filename, x.args, x.exit_code
        );
    }
    if let Some(f) = &e.file {
        let _ = write!(
            s,
            " path={} flags={:?} result={}",
            f.path, f.flags, f.result
        );
    }
    if let Some(n) = &e.net {
        let _ = write!(
            s,
            " {} {}:{} result={}",
            n.family, n.address, n.port, n.result
        );
    }
    if let Some(f) = &e.finding {
        let _ = write!(s, " rule={} title={:?}", f.rule, f.title);
    }
    if let Some(h) = &e.health {
        let _ = write!(
            s,
            " emitted={} dropped={:?} counters={:?}",
            h.events_emitted, h.dropped, h.counters
        );
    }
    s
}

// ------------------------------------------------------------------ checks

/// Collects failed expectations so that one run reports all of them, with
/// the events found.
#[derive(Default)]
pub struct Checker {
    failures: Vec<String>,
}

impl Checker {
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) -> bool {
        if !ok {
            self.failures.push(msg());
        }
        ok
    }

    pub fn eq<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        expected: T,
        found: T,
    ) -> bool {
        let ok = expected == found;
        if !ok {
            self.failures
                .push(format!("{what}: expected {expected:?}, found {found:?}"));
        }
        ok
    }

    pub fn fail(&mut self, msg: String) {
        self.failures.push(msg);
    }

    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Panics with every failure and the listing of events.
    pub fn finish(self, events: &Events, related: &[&str], context: &str) {
        if self.failures.is_empty() {
            return;
        }
        let mut msg = format!(
            "{} expectation(s) failed ({context}):\n",
            self.failures.len()
        );
        for (i, f) in self.failures.iter().enumerate() {
            let _ = writeln!(msg, "  {}. {f}", i + 1);
        }
        msg.push_str(&events.summary(related));
        panic!("{msg}");
    }
}

/// JSON texts equal as values (spacing and key order do not matter).
pub fn json_text_eq(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Every regular file under `dir` that contains one of `markers`, with the
/// marker and its byte offset.
pub fn find_secrets(dir: &Path, markers: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for entry in rd.flatten() {
            let p = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let mut bytes = Vec::new();
                if File::open(&p)
                    .and_then(|mut f| f.read_to_end(&mut bytes))
                    .is_err()
                {
                    continue;
                }
                for m in markers {
                    if let Some(off) = memchr::memmem::find(&bytes, m.as_bytes()) {
                        let lo = off.saturating_sub(80);
                        let hi = (off + m.len() + 80).min(bytes.len());
                        hits.push(format!(
                            "{} contains {m:?} at byte {off}: …{}…",
                            p.display(),
                            String::from_utf8_lossy(&bytes[lo..hi])
                        ));
                    }
                }
            }
        }
    }
    hits
}

/// Asserts that no file the daemon wrote holds a secret.
pub fn assert_no_secrets(daemon: &Daemon) {
    let hits = find_secrets(&daemon.dir, SECRET_MARKERS);
    assert!(
        hits.is_empty(),
        "secrets reached disk (redaction must run before anything is written):\n{}",
        hits.join("\n")
    );
}
