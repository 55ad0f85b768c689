//! Findings only the correlator can raise, because it holds both the
//! wire (what the tool result and the model said) and the kernel (what the
//! effects did).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::LazyLock,
};

use regex::Regex;

use super::{Correlator, Effect, Pending};
use crate::event::{kind, Event, FindingInfo, Severity};

/// Traces whose effects are remembered, and entries per trace, at most.
const MAX_TRACES: usize = 4096;
const MAX_PER_TRACE: usize = 4096;

/// Paths opened and programs run in each trace (bounded; the oldest trace
/// is forgotten first).
#[derive(Default)]
pub(super) struct SeenEffects {
    traces: HashMap<String, (HashSet<String>, HashSet<String>)>,
    order: VecDeque<String>,
}

impl SeenEffects {
    pub(super) fn record(&mut self, trace: &str, eff: &Effect<'_>) {
        if !self.traces.contains_key(trace) {
            self.order.push_back(trace.to_owned());
            while self.order.len() > MAX_TRACES {
                if let Some(old) = self.order.pop_front() {
                    self.traces.remove(&old);
                }
            }
        }
        let (paths, programs) = self.traces.entry(trace.to_owned()).or_default();
        match eff {
            Effect::File { path } if paths.len() < MAX_PER_TRACE => {
                paths.insert((*path).to_owned());
            }
            Effect::Exec { filename, args } if programs.len() < MAX_PER_TRACE => {
                programs.insert(base(filename).to_owned());
                if let Some(a0) = args.first() {
                    programs.insert(base(a0).to_owned());
                }
            }
            _ => {}
        }
    }

    fn saw_path(&self, trace: &str, claimed: &str) -> bool {
        let Some((paths, _)) = self.traces.get(trace) else {
            return false;
        };
        let claimed = claimed.trim_end_matches(['/', ',', ':', ';', ')']);
        match claimed.strip_prefix('~') {
            // `~/x`: any home.
            Some(rest) => paths.iter().any(|p| p.ends_with(rest)),
            None => paths
                .iter()
                .any(|p| p == claimed || p.starts_with(&format!("{claimed}/"))),
        }
    }

    fn saw_program(&self, trace: &str, program: &str) -> bool {
        self.traces
            .get(trace)
            .is_some_and(|(_, programs)| programs.contains(base(program)))
    }
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// "I have created /tmp/x", "I ran `make test`": the model's own account of
/// an action, with its target. Only actions the kernel can show are
/// checked: opening or writing a file, running a program (a deletion is not
/// hooked, so "I deleted …" is never held against the model).
static CLAIM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:i(?:'ve| have)?|successfully|has been|have been)\s+(?:(?:just|now|already|also)\s+)?(created|wrote|written|saved|updated|modified|edited|read|opened|ran|run|executed)\b[^\n.`/~]{0,60}(`[^`\n]{1,200}`|~?/[\w.\-/]+)",
    )
    .expect("static regex")
});

/// One linked effect and how it ended, for claimed-vs-actual.
#[derive(Debug)]
pub(super) struct Outcome {
    pub event_id: String,
    pub pid: u32,
    /// `open /etc/x`, `exec rm`, `connect 1.2.3.4:443`.
    pub what: String,
    /// Linked by argument match (not by lineage alone).
    pub matched: bool,
    /// `None` until known (an exec's exit).
    pub ok: Option<bool>,
    /// `EACCES`, `exit 2`.
    pub detail: Option<String>,
    /// A network connection or a process the arguments did not name.
    pub notable: bool,
}

impl Correlator {
    /// Actions the model's answer claims that no effect in its trace shows.
    pub(super) fn model_claims(&self, ev: &Event) -> Vec<Event> {
        let Some(llm) = &ev.llm else {
            return Vec::new();
        };
        let text = llm.output.text.get(..16 * 1024).unwrap_or(&llm.output.text);
        let mut out = Vec::new();
        for c in CLAIM.captures_iter(text).take(8) {
            let verb = c[1].to_ascii_lowercase();
            let target = c[2].trim_matches('`');
            let runs = matches!(verb.as_str(), "ran" | "run" | "executed");
            let seen = if runs {
                let program = target.split_whitespace().next().unwrap_or("");
                program.is_empty() || self.seen.saw_program(&ev.trace_id, program)
            } else {
                !target.starts_with(['/', '~']) || self.seen.saw_path(&ev.trace_id, target)
            };
            if seen {
                continue;
            }
            let what = if runs {
                "running a program"
            } else {
                "a file action"
            };
            let mut f = self.finding_for(
                ev,
                "corr.unbacked_claim",
                "The model's answer claims an action the kernel did not see",
                "claimed_vs_actual",
                Severity::Low,
            );
            if let Some(info) = &mut f.finding {
                let (start, end) = (
                    c.get(0).map_or(0, |m| m.start()),
                    c.get(0).map_or(0, |m| m.end()),
                );
                info.detail = Some(format!(
                    "the answer claims {what} ({verb}) with no matching exec or open in its trace"
                ));
                info.matches.push(crate::event::FindingMatch {
                    event: ev.id.clone(),
                    field: "llm.output.text".into(),
                    what: "claim".into(),
                    start,
                    end,
                });
            }
            out.push(f);
        }
        out
    }

    pub(super) fn unrequested(&self, ev: &Event, eff: &Effect<'_>) -> Event {
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
    pub(super) fn claimed_vs_actual(&self, p: &Pending, ktime_ns: u64) -> Vec<Event> {
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
}

/// How an effect ended, as far as the kernel has told yet.
pub(super) fn outcome(ev: &Event, pid: u32, eff: &Effect<'_>, matched: bool) -> Outcome {
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
pub(super) fn describe(eff: &Effect<'_>) -> String {
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
