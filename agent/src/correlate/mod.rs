//! Correlation: one trace per conversation, and each tool call tied to what
//! it really did in the kernel.
//!
//! Conversations are stitched from the wire alone. Each request's history is
//! hashed prefix by prefix (system prompt, then each message's role, text and
//! tool-call ids), keyed by the calling process; a request whose history
//! extends an earlier one (its longest known prefix that holds at least one
//! non-system message) joins that trace.
//!
//! A history that was truncated (oldest turns dropped to fit the context)
//! or edited matches no prefix; it still joins the trace that holds most of
//! its earlier messages (each message is also remembered on its own, per
//! process), when that is at least two messages and a strict majority.
//!
//! Tool calls: an answer that asks for tools opens one pending `tool.call`
//! per call. Exec, file and network events of the calling process and its
//! descendants that follow are linked to the pending call they match:
//! - argument match: a path, command line or host:port in the call's
//!   arguments (confidence 0.9, or 0.95 with lineage as well);
//! - lineage: the event comes from a process the caller started while the
//!   call was pending (confidence 0.6 when nothing matched);
//! - the time window: only events after the answer and before the request
//!   that carries the call's result count.
//!
//! Events of the caller itself that match no argument are placed in the
//! conversation's trace but are not listed as effects: a python agent opens
//! many files of its own while a tool runs. A pending call is emitted when
//! the request with its result arrives, when its window expires, or at
//! shutdown; its effects are child spans of it.
//!
//! Findings the correlator raises itself, because only it holds both sides:
//! - `unrequested_effect`: a process started by a caller's tree while no
//!   tool call of that caller was pending — the agent acting on its own;
//! - `claimed_vs_actual`: the tool result sent back to the model says the
//!   call worked while the kernel saw its matched effect fail, or says it
//!   failed while every matched effect succeeded; and effects linked by
//!   lineage alone that the arguments never named (what the tool hid).

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

use crate::{
    event::{kind, Event, FindingInfo, LlmCall, ProcessInfo, Severity, ToolCall, ToolCallSpec},
    util::{new_span_id, new_trace_id, Envelope},
};

/// What an effect event did, for matching against tool arguments.
#[derive(Clone, Debug)]
pub enum Effect<'a> {
    Exec {
        filename: &'a str,
        args: &'a [String],
    },
    File {
        path: &'a str,
    },
    Connect {
        address: &'a str,
        port: u16,
    },
}

#[derive(Debug)]
struct Pending {
    span_id: String,
    /// The `llm.call` that asked for this tool: the tool call's parent span.
    llm_span: String,
    trace_id: String,
    caller: u32,
    spec: ToolCallSpec,
    /// String values in the arguments (paths, commands, URLs).
    needles: Vec<String>,
    start_ns: u64,
    process: Option<ProcessInfo>,
    effects: Vec<String>,
    /// What the kernel said about each linked effect.
    outcomes: Vec<Outcome>,
    reasons: Vec<String>,
    confidence: f64,
    result: Option<String>,
    /// The agent marked the result as an error (Anthropic `is_error`).
    result_is_error: bool,
}

/// One linked effect and how it ended, for claimed-vs-actual.
#[derive(Debug)]
struct Outcome {
    event_id: String,
    pid: u32,
    /// `open /etc/x`, `exec rm`, `connect 1.2.3.4:443`.
    what: String,
    /// Linked by argument match (not by lineage alone).
    matched: bool,
    /// `None` until known (an exec's exit).
    ok: Option<bool>,
    /// `EACCES`, `exit 2`.
    detail: Option<String>,
    /// A network connection or a process the arguments did not name.
    notable: bool,
}

pub struct Correlator {
    env: Envelope,
    /// Prefix hash → trace id (bounded, oldest forgotten first).
    conversations: HashMap<[u8; 32], String>,
    conv_order: VecDeque<[u8; 32]>,
    /// (process, message) hash → trace, for histories that were cut or
    /// edited (bounded like `conversations`).
    messages: HashMap<[u8; 32], String>,
    msg_order: VecDeque<[u8; 32]>,
    /// Latest trace of each process that made LLM calls.
    proc_trace: HashMap<u32, String>,
    pending: Vec<Pending>,
    /// Processes started by a caller while tools were pending → the pending
    /// call's span id (or None when not decided yet).
    tool_children: HashMap<u32, (u32, Option<String>)>,
    window_ns: u64,
    max_conversations: usize,
    max_pending: usize,
    /// Tool calls dropped because the pending table was full.
    pub dropped_pending: u64,
}

/// A request/response the llm layer decoded, with its process and timing.
pub struct LlmObservation {
    pub call: LlmCall,
    pub process: Option<ProcessInfo>,
    pub tgid: u32,
    /// Boot-time ns when the request started and when the response ended.
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Correlator {
    pub fn new(env: Envelope, window_ns: u64) -> Self {
        Self {
            env,
            conversations: HashMap::new(),
            conv_order: VecDeque::new(),
            messages: HashMap::new(),
            msg_order: VecDeque::new(),
            proc_trace: HashMap::new(),
            pending: Vec::new(),
            tool_children: HashMap::new(),
            window_ns,
            max_conversations: 100_000,
            max_pending: 10_000,
            dropped_pending: 0,
        }
    }

    /// Is this process known to talk to a model?
    pub fn is_caller(&self, tgid: u32) -> bool {
        self.proc_trace.contains_key(&tgid)
    }

    /// An LLM call completed. Returns the events to emit: the `llm.call`,
    /// then the `tool.call`s whose results this request carried.
    pub fn on_llm_call(&mut self, obs: LlmObservation) -> Vec<Event> {
        let mut out = Vec::new();
        let hashes = history_hashes(obs.tgid, &obs.call);
        let trace_id = hashes
            .iter()
            .rev()
            .filter(|(_, has_dialogue)| *has_dialogue)
            .find_map(|(h, _)| self.conversations.get(h).cloned())
            .or_else(|| self.vote(obs.tgid, &obs.call))
            .unwrap_or_else(new_trace_id);
        self.remember_messages(obs.tgid, &obs.call, &trace_id);

        // Results of earlier tool calls close them.
        for m in &obs.call.messages {
            let Some(id) = m.tool_call_id.as_deref() else {
                continue;
            };
            if let Some(i) = self
                .pending
                .iter()
                .position(|p| p.caller == obs.tgid && p.spec.id == id)
            {
                let mut p = self.pending.remove(i);
                p.result = Some(m.content.clone());
                p.result_is_error = m.is_error == Some(true);
                let findings = self.claimed_vs_actual(&p, obs.start_ns);
                out.push(self.tool_event(p, obs.start_ns));
                out.extend(findings);
            }
        }

        let mut ev = self
            .env
            .event(kind::LLM_CALL, obs.end_ns, obs.process.clone());
        ev.trace_id.clone_from(&trace_id);
        let llm_span = ev.span_id.clone();
        let tool_calls = obs.call.output.tool_calls.clone();

        // Remember this history, and the history with this answer appended,
        // so that the next turn finds its trace.
        if let Some((last, _)) = hashes.last() {
            self.remember(*last, &trace_id);
            let next = extend_hash(last, &canonical_output(&obs.call));
            self.remember(next, &trace_id);
        }
        self.proc_trace.insert(obs.tgid, trace_id.clone());
        ev.llm = Some(obs.call);
        // The llm.call goes out before its tool calls and their effects.
        out.insert(0, ev);

        for spec in tool_calls {
            if self.pending.len() >= self.max_pending {
                self.dropped_pending += 1;
                continue;
            }
            self.pending.push(Pending {
                span_id: new_span_id(),
                llm_span: llm_span.clone(),
                trace_id: trace_id.clone(),
                caller: obs.tgid,
                needles: needles(&spec.arguments),
                spec,
                start_ns: obs.end_ns,
                process: obs.process.clone(),
                effects: Vec::new(),
                outcomes: Vec::new(),
                reasons: Vec::new(),
                confidence: 0.0,
                result: None,
                result_is_error: false,
            });
        }
        out
    }

    /// The trace holding most of this request's earlier messages, when
    /// that is at least two of them and more than half.
    fn vote(&self, tgid: u32, call: &LlmCall) -> Option<String> {
        let hashes = message_hashes(tgid, call);
        // The last message is the new turn: it cannot be known yet.
        let earlier = &hashes[..hashes.len().saturating_sub(1)];
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for h in earlier {
            if let Some(t) = self.messages.get(h) {
                *votes.entry(t.as_str()).or_default() += 1;
            }
        }
        let (trace, n) = votes.into_iter().max_by_key(|(_, n)| *n)?;
        (n >= 2 && n * 2 > earlier.len()).then(|| trace.to_owned())
    }

    fn remember_messages(&mut self, tgid: u32, call: &LlmCall, trace: &str) {
        let mut hashes = message_hashes(tgid, call);
        hashes.push(message_hash(tgid, &canonical_output(call)));
        for h in hashes {
            if self.messages.insert(h, trace.to_owned()).is_none() {
                self.msg_order.push_back(h);
                while self.msg_order.len() > self.max_conversations {
                    if let Some(old) = self.msg_order.pop_front() {
                        self.messages.remove(&old);
                    }
                }
            }
        }
    }

    fn remember(&mut self, h: [u8; 32], trace: &str) {
        if self.conversations.insert(h, trace.to_owned()).is_none() {
            self.conv_order.push_back(h);
            while self.conv_order.len() > self.max_conversations {
                if let Some(old) = self.conv_order.pop_front() {
                    self.conversations.remove(&old);
                }
            }
        }
    }

    fn tool_event(&self, p: Pending, ktime_ns: u64) -> Event {
        let mut ev = self.env.event(kind::TOOL_CALL, ktime_ns, p.process);
        ev.trace_id = p.trace_id;
        ev.span_id = p.span_id;
        ev.parent_span_id = Some(p.llm_span);
        ev.tool = Some(ToolCall {
            call_id: p.spec.id,
            name: p.spec.name,
            arguments: p.spec.arguments,
            result: p.result,
            effects: p.effects,
            confidence: p.confidence,
            reasons: p.reasons,
        });
        ev
    }

    /// A process forked: a child of a caller with tools pending may be the
    /// tool running.
    pub fn on_fork(&mut self, parent: u32, child: u32) {
        let caller = if self.pending.iter().any(|p| p.caller == parent) {
            Some((parent, None))
        } else {
            self.tool_children.get(&parent).cloned()
        };
        if let Some(c) = caller {
            if self.tool_children.len() < 65536 {
                self.tool_children.insert(child, c);
            }
        }
    }

    /// A process ended with `status` (wait status: exit code in bits 8..16,
    /// signal in the low 7): an exec effect of that process now has its
    /// outcome.
    pub fn on_exit(&mut self, pid: u32, status: u32) {
        self.tool_children.remove(&pid);
        let (code, signal) = ((status >> 8) & 0xff, status & 0x7f);
        for p in &mut self.pending {
            for o in p
                .outcomes
                .iter_mut()
                .filter(|o| o.pid == pid && o.ok.is_none())
            {
                o.ok = Some(code == 0 && signal == 0);
                o.detail = Some(if signal == 0 {
                    format!("exit {code}")
                } else {
                    format!("signal {signal}")
                });
            }
        }
    }

    /// Places an exec/file/net event: sets its trace and, when it is the
    /// effect of a pending tool call, its parent span, and records it there.
    /// `ancestors` (the parent chain, nearest first) is only asked for when
    /// the process is neither a caller nor a known tool child.
    ///
    /// Returns an `unrequested_effect` finding when a process of a caller's
    /// tree starts with no tool call of that caller pending.
    pub fn place(
        &mut self,
        ev: &mut Event,
        tgid: u32,
        ancestors: impl FnOnce() -> Vec<u32>,
        ktime_ns: u64,
        eff: &Effect<'_>,
    ) -> Option<Event> {
        // Which caller does this process act for?
        let lineage = self.tool_children.get(&tgid).cloned();
        let caller = if self.proc_trace.contains_key(&tgid) {
            Some(tgid)
        } else if let Some((c, _)) = &lineage {
            Some(*c)
        } else if self.proc_trace.is_empty() {
            None
        } else {
            ancestors()
                .into_iter()
                .find(|a| self.proc_trace.contains_key(a))
        };
        let caller = caller?;

        let candidates: Vec<usize> = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.caller == caller && ktime_ns >= p.start_ns)
            .map(|(i, _)| i)
            .collect();
        let matched = candidates
            .iter()
            .copied()
            .find(|&i| matches(&self.pending[i].needles, eff));
        let via_lineage = lineage.is_some() && tgid != caller;
        let chosen = match (matched, via_lineage) {
            (Some(i), _) => Some((i, if via_lineage { 0.95 } else { 0.9 }, "argument match")),
            (None, true) => {
                // The call this child was tied to, else the oldest pending.
                let decided = lineage.as_ref().and_then(|(_, s)| s.clone());
                let i = decided
                    .and_then(|s| {
                        candidates
                            .iter()
                            .copied()
                            .find(|&i| self.pending[i].span_id == s)
                    })
                    .or_else(|| candidates.first().copied());
                i.map(|i| (i, 0.6, "lineage"))
            }
            (None, false) => None,
        };
        if let Some((i, conf, why)) = chosen {
            let p = &mut self.pending[i];
            ev.trace_id.clone_from(&p.trace_id);
            ev.parent_span_id = Some(p.span_id.clone());
            if p.effects.len() < 10_000 {
                p.effects.push(ev.id.clone());
                p.outcomes
                    .push(outcome(ev, tgid, eff, why == "argument match"));
            }
            if p.confidence < conf {
                p.confidence = conf;
            }
            let reason = if via_lineage && why == "argument match" {
                "argument match, lineage"
            } else {
                why
            };
            if !p.reasons.iter().any(|r| r == reason) {
                p.reasons.push(reason.to_owned());
            }
            // A child whose exec matched a call belongs to that call.
            if via_lineage {
                let span = p.span_id.clone();
                if let Some(entry) = self.tool_children.get_mut(&tgid) {
                    entry.1.get_or_insert(span);
                }
            }
            None
        } else {
            if let Some(t) = self.proc_trace.get(&caller) {
                ev.trace_id.clone_from(t);
            }
            // A process of the agent's tree started while it had no tool
            // call pending: the agent acted on its own.
            let unrequested = tgid != caller
                && matches!(eff, Effect::Exec { .. })
                && !self.pending.iter().any(|p| p.caller == caller);
            unrequested.then(|| self.unrequested(ev, eff))
        }
    }

    fn unrequested(&self, ev: &Event, eff: &Effect<'_>) -> Event {
        let what = describe(eff);
        let mut f = self.finding_for(
            ev,
            "corr.unrequested_effect",
            "A process the agent started with no tool call asking for it",
            "unrequested_effect",
            Severity::Low,
        );
        if let Some(info) = &mut f.finding {
            info.detail = Some(format!(
                "{what} by a process of the agent's tree while no tool call was pending"
            ));
        }
        f
    }

    /// A finding about `ev`, in its trace and under its span.
    fn finding_for(
        &self,
        ev: &Event,
        rule: &str,
        title: &str,
        class: &str,
        severity: Severity,
    ) -> Event {
        let mut f = self.env.event(kind::FINDING, 0, ev.process.clone());
        f.time.clone_from(&ev.time);
        f.trace_id.clone_from(&ev.trace_id);
        f.parent_span_id = Some(ev.span_id.clone());
        f.severity = severity;
        f.finding = Some(FindingInfo {
            rule: rule.to_owned(),
            title: title.to_owned(),
            evidence: vec![ev.id.clone()],
            class: class.to_owned(),
            mitre: vec!["AML.T0053".to_owned()],
            ..FindingInfo::default()
        });
        f
    }

    /// What the tool result claims set against what the kernel saw.
    fn claimed_vs_actual(&self, p: &Pending, ktime_ns: u64) -> Vec<Event> {
        let mut out = Vec::new();
        let Some(result) = p.result.as_deref() else {
            return out;
        };
        // The finding hangs under the tool call's span.
        let mut anchor = self.env.event(kind::TOOL_CALL, ktime_ns, p.process.clone());
        anchor.trace_id.clone_from(&p.trace_id);
        anchor.span_id.clone_from(&p.span_id);
        anchor.id = String::new();
        let matched: Vec<&Outcome> = p.outcomes.iter().filter(|o| o.matched).collect();
        let failed: Vec<&Outcome> = matched
            .iter()
            .copied()
            .filter(|o| o.ok == Some(false))
            .collect();
        let claims_failure = p.result_is_error || claims_failure(result);
        let mut raise = |rule: &str, title: &str, severity, detail: String, ev_ids: Vec<String>| {
            let mut f = self.finding_for(&anchor, rule, title, "claimed_vs_actual", severity);
            if let Some(info) = &mut f.finding {
                info.evidence = ev_ids;
                info.detail = Some(detail);
            }
            out.push(f);
        };
        if !claims_failure && !failed.is_empty() {
            let o = failed[0];
            raise(
                "corr.claimed_success",
                "Tool result reports success; the kernel saw the call's effect fail",
                Severity::Medium,
                format!(
                    "tool {:?}: {} failed ({}), the result reports no error",
                    p.spec.name,
                    o.what,
                    o.detail.as_deref().unwrap_or("error")
                ),
                failed.iter().map(|o| o.event_id.clone()).collect(),
            );
        }
        if claims_failure && !matched.is_empty() && matched.iter().all(|o| o.ok == Some(true)) {
            raise(
                "corr.claimed_failure",
                "Tool result reports failure; the kernel saw every effect of the call succeed",
                Severity::Medium,
                format!(
                    "tool {:?}: {} succeeded, the result reports an error",
                    p.spec.name, matched[0].what
                ),
                matched.iter().map(|o| o.event_id.clone()).collect(),
            );
        }
        // Children of a named command (a test runner's compilers) are
        // expected; a process or a remote connection from a call whose
        // arguments named none of its effects is not.
        let hidden: Vec<&Outcome> = p
            .outcomes
            .iter()
            .filter(|o| !o.matched && o.notable)
            .filter(|o| o.what.starts_with("connect ") || matched.is_empty())
            .collect();
        if !hidden.is_empty() {
            raise(
                "corr.hidden_effect",
                "Tool call had effects its arguments did not name",
                Severity::Medium,
                format!(
                    "tool {:?}: {} unnamed effect(s), first: {}",
                    p.spec.name,
                    hidden.len(),
                    hidden[0].what
                ),
                hidden.iter().map(|o| o.event_id.clone()).collect(),
            );
        }
        out
    }

    /// Tool calls whose window ended without a result.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Event> {
        let window = self.window_ns;
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| now_ns.saturating_sub(p.start_ns) > window);
        self.pending = keep;
        old.into_iter()
            .map(|p| self.tool_event(p, now_ns))
            .collect()
    }

    /// Everything still pending (shutdown, or the caller exited).
    pub fn flush(&mut self, now_ns: u64, caller: Option<u32>) -> Vec<Event> {
        let (go, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| caller.is_none_or(|c| c == p.caller));
        self.pending = keep;
        go.into_iter().map(|p| self.tool_event(p, now_ns)).collect()
    }

    pub fn forget_process(&mut self, tgid: u32) {
        self.proc_trace.remove(&tgid);
    }
}

/// How an effect ended, as far as the kernel has told yet.
fn outcome(ev: &Event, pid: u32, eff: &Effect<'_>, matched: bool) -> Outcome {
    let (ok, detail) = match (eff, &ev.file, &ev.net) {
        (Effect::File { .. }, Some(f), _) => (Some(f.result >= 0), f.error.clone()),
        // EINPROGRESS: a non-blocking connect that has not failed.
        (Effect::Connect { .. }, _, Some(n)) => (
            Some(n.result >= 0 || n.result == -i64::from(libc::EINPROGRESS)),
            n.error.clone(),
        ),
        _ => (None, None),
    };
    let notable = match eff {
        Effect::Exec { .. } => true,
        Effect::Connect { address, .. } => !is_loopback(address),
        Effect::File { .. } => false,
    };
    Outcome {
        event_id: ev.id.clone(),
        pid,
        what: describe(eff),
        matched,
        ok,
        detail: if ok == Some(false) { detail } else { None },
        notable,
    }
}

fn is_loopback(address: &str) -> bool {
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_loopback() || a.is_unspecified())
        || address.is_empty()
}

/// A short description of an effect (never argument values beyond the
/// program name, path or destination: those are what the analyst needs).
fn describe(eff: &Effect<'_>) -> String {
    match eff {
        Effect::Exec { filename, .. } => format!("exec {filename}"),
        Effect::File { path } => format!("open {path}"),
        Effect::Connect { address, port } => format!("connect {address}:{port}"),
    }
}

/// Does a tool result say the call failed? Tool runners report errors in
/// words, exit codes or tracebacks; a result with none of them claims
/// success.
fn claims_failure(result: &str) -> bool {
    static FAILURE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"(?i)\b(error|errno|failed|failure|denied|not permitted|no such file|not found|cannot|can't|could not|unable to|exception|traceback)\b|exit (code|status):? *[1-9]|returned non-zero",
        )
        .expect("static regex")
    });
    let head = result.get(..4096).unwrap_or(result);
    FAILURE.is_match(head)
}

/// Canonical text of one history entry.
fn canonical(role: &str, content: &str, ids: &[&str], tool_call_id: Option<&str>) -> Vec<u8> {
    let mut v = Vec::with_capacity(content.len() + 32);
    v.extend_from_slice(role.as_bytes());
    v.push(0x1f);
    v.extend_from_slice(content.trim().as_bytes());
    v.push(0x1f);
    for id in ids {
        v.extend_from_slice(id.as_bytes());
        v.push(0x1e);
    }
    v.push(0x1f);
    v.extend_from_slice(tool_call_id.unwrap_or("").as_bytes());
    v
}

fn canonical_output(call: &LlmCall) -> Vec<u8> {
    let ids: Vec<&str> = call
        .output
        .tool_calls
        .iter()
        .map(|t| t.id.as_str())
        .collect();
    canonical("assistant", &call.output.text, &ids, None)
}

fn extend_hash(prev: &[u8; 32], item: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(Sha256::digest(item));
    h.finalize().into()
}

/// Hash of each prefix of the request's history, with whether that prefix
/// holds any non-system message.
fn history_hashes(tgid: u32, call: &LlmCall) -> Vec<([u8; 32], bool)> {
    let mut out = Vec::with_capacity(call.messages.len() + 1);
    let mut h: [u8; 32] = Sha256::digest(tgid.to_le_bytes()).into();
    if let Some(sys) = &call.system {
        h = extend_hash(&h, &canonical("system", &sys.text, &[], None));
    }
    out.push((h, false));
    for m in &call.messages {
        if m.role == "system" || m.role == "developer" {
            continue;
        }
        let ids: Vec<&str> = m.tool_calls.iter().map(|t| t.id.as_str()).collect();
        h = extend_hash(
            &h,
            &canonical(&m.role, &m.content, &ids, m.tool_call_id.as_deref()),
        );
        out.push((h, true));
    }
    out
}

fn message_hash(tgid: u32, canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(tgid.to_le_bytes());
    h.update(canonical);
    h.finalize().into()
}

/// Hash of each non-system message of the request, on its own.
fn message_hashes(tgid: u32, call: &LlmCall) -> Vec<[u8; 32]> {
    call.messages
        .iter()
        .filter(|m| m.role != "system" && m.role != "developer")
        .map(|m| {
            let ids: Vec<&str> = m.tool_calls.iter().map(|t| t.id.as_str()).collect();
            message_hash(
                tgid,
                &canonical(&m.role, &m.content, &ids, m.tool_call_id.as_deref()),
            )
        })
        .collect()
}

/// String values of a tool call's JSON arguments (all depths), or the raw
/// text when it is not JSON.
fn needles(arguments: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) if !s.trim().is_empty() => out.push(s.trim().to_owned()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(v) => walk(&v, &mut out),
        Err(_) if !arguments.trim().is_empty() => out.push(arguments.trim().to_owned()),
        Err(_) => {}
    }
    out.truncate(64);
    out
}

/// Does an effect match any argument string of a tool call?
fn matches(needles: &[String], eff: &Effect<'_>) -> bool {
    match eff {
        Effect::File { path } => needles.iter().any(|n| {
            n == path
                || (n.len() >= 3
                    && path.ends_with(n.as_str())
                    && path[..path.len() - n.len()].ends_with('/'))
                || (n.contains(path) && path.len() >= 4 && path.starts_with('/'))
        }),
        Effect::Exec { filename, args } => {
            let line = args.join(" ");
            let base = filename.rsplit('/').next().unwrap_or(filename);
            needles.iter().any(|n| {
                (!line.is_empty() && (n.contains(&line) || line.contains(n.as_str())))
                    || n.split_whitespace().next().is_some_and(|first| {
                        first == *filename || first.rsplit('/').next() == Some(base)
                    })
            })
        }
        Effect::Connect { address, port } => {
            let hp = format!("{address}:{port}");
            needles
                .iter()
                .any(|n| n.contains(&hp) || (n.contains(address) && !address.is_empty()))
        }
    }
}

#[cfg(test)]
mod tests;
