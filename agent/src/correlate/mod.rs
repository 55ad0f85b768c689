//! Correlation: one trace per conversation, and each tool call tied to what
//! it really did in the kernel.
//!
//! Conversations are stitched from the wire alone. Each request's history is
//! hashed prefix by prefix (system prompt, then each message's role, text and
//! tool-call ids), keyed by the calling process; a request whose history
//! extends an earlier one (its longest known prefix that holds at least one
//! non-system message) joins that trace.
//!
//! A Responses API request that names `previous_response_id` joins the
//! trace of that response, whatever its input holds (it usually carries
//! only the new turn).
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

mod args;
mod claims;
mod history;

use std::collections::{HashMap, VecDeque};

use self::{
    args::{matches, needles},
    claims::{outcome, Outcome},
    history::{canonical_output, extend_hash, history_hashes, message_hash, message_hashes},
};

use crate::{
    event::{kind, Event, LlmCall, ProcessInfo, ToolCall, ToolCallSpec},
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
    /// An MCP `tools/call` was already tied to this call.
    mcp_linked: bool,
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
    /// Responses API response id → trace (bounded like `conversations`).
    responses: HashMap<String, String>,
    response_order: VecDeque<String>,
    /// What each trace's processes did, for checking the model's claims.
    seen: claims::SeenEffects,
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

/// An MCP `tools/call` the mcp layer decoded (`tool.mcp` set), with its
/// process and timing.
pub struct McpObservation {
    pub tool: ToolCall,
    pub process: Option<ProcessInfo>,
    pub tgid: u32,
    /// Boot-time ns when the request started and when the exchange ended.
    pub start_ns: u64,
    pub end_ns: u64,
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
            responses: HashMap::new(),
            response_order: VecDeque::new(),
            seen: claims::SeenEffects::default(),
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
        // The Responses API names the answer it continues: the surest link.
        let continued = obs
            .call
            .previous_response_id
            .as_ref()
            .and_then(|id| self.responses.get(id).cloned());
        let trace_id = continued
            .or_else(|| {
                hashes
                    .iter()
                    .rev()
                    .filter(|(_, has_dialogue)| *has_dialogue)
                    .find_map(|(h, _)| self.conversations.get(h).cloned())
            })
            .or_else(|| self.vote(obs.tgid, &obs.call))
            .unwrap_or_else(new_trace_id);
        self.remember_messages(obs.tgid, &obs.call, &trace_id);
        if let Some(id) = &obs.call.response_id {
            self.remember_response(id, &trace_id);
        }

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
        let claims = self.model_claims(&ev);
        out.insert(0, ev);
        out.extend(claims);

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
                mcp_linked: false,
            });
        }
        out
    }

    /// An MCP `tools/call` completed (or was seen without its answer).
    /// Returns its `tool.call` event, in the trace of the process that
    /// sent it (its own trace when the process is not known to talk to a
    /// model, e.g. the MCP server's side). When a pending tool call of that
    /// process (or of the caller that started it) is the model's request
    /// for this tool, the MCP call becomes a child span of it and one of
    /// its effects:
    /// - same tool name (the agent's name may prefix the MCP server's,
    ///   as in `mcp__files__read_file`) and equal arguments as JSON:
    ///   confidence 0.9;
    /// - same name, and the only pending call with that name: 0.7.
    ///
    /// A pending call is matched by one MCP call at most.
    pub fn on_mcp_call(&mut self, obs: McpObservation) -> Event {
        let mut ev = self.env.event(kind::TOOL_CALL, obs.end_ns, obs.process);
        let mut tool = obs.tool;
        let caller = if self.proc_trace.contains_key(&obs.tgid) {
            Some(obs.tgid)
        } else {
            self.tool_children.get(&obs.tgid).map(|(c, _)| *c)
        };
        let Some(caller) = caller else {
            ev.tool = Some(tool);
            return ev;
        };
        let args = serde_json::from_str::<serde_json::Value>(&tool.arguments).ok();
        let named: Vec<usize> = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                p.caller == caller
                    && !p.mcp_linked
                    && obs.start_ns >= p.start_ns
                    && same_tool(&p.spec.name, &tool.name)
            })
            .map(|(i, _)| i)
            .collect();
        let exact = named.iter().copied().find(|&i| {
            args.is_some()
                && serde_json::from_str::<serde_json::Value>(&self.pending[i].spec.arguments).ok()
                    == args
        });
        let chosen = match (exact, named.as_slice()) {
            (Some(i), _) => Some((i, 0.9, "mcp call, arguments match")),
            (None, [i]) => Some((*i, 0.7, "mcp call, tool name")),
            _ => None,
        };
        if let Some((i, conf, why)) = chosen {
            let p = &mut self.pending[i];
            p.mcp_linked = true;
            ev.trace_id.clone_from(&p.trace_id);
            ev.parent_span_id = Some(p.span_id.clone());
            if p.effects.len() < 10_000 {
                p.effects.push(ev.id.clone());
            }
            if p.confidence < conf {
                p.confidence = conf;
            }
            if !p.reasons.iter().any(|r| r == why) {
                p.reasons.push(why.to_owned());
            }
            tool.confidence = conf;
            tool.reasons.push(format!("{why}: {}", p.spec.id));
        } else if let Some(t) = self.proc_trace.get(&caller) {
            ev.trace_id.clone_from(t);
        }
        ev.tool = Some(tool);
        ev
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

    fn remember_response(&mut self, id: &str, trace: &str) {
        if self
            .responses
            .insert(id.to_owned(), trace.to_owned())
            .is_none()
        {
            self.response_order.push_back(id.to_owned());
            while self.response_order.len() > self.max_conversations {
                if let Some(old) = self.response_order.pop_front() {
                    self.responses.remove(&old);
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
            ..ToolCall::default()
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
        let finding = if let Some((i, conf, why)) = chosen {
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
        };
        self.seen.record(&ev.trace_id, eff);
        finding
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

/// The model's name for a tool is the MCP server's, or that name behind
/// the agent's prefix for the server (`mcp__files__read_file`,
/// `files.read_file`, `files-read_file`).
fn same_tool(model_name: &str, mcp_name: &str) -> bool {
    if mcp_name.is_empty() {
        return false;
    }
    model_name == mcp_name
        || model_name
            .strip_suffix(mcp_name)
            .is_some_and(|head| head.ends_with(['_', '.', '-', '/', ':']))
}

#[cfg(test)]
mod tests;
