//! Findings only the correlator can raise, because it holds both the
//! wire (what the tool result and the model said) and the kernel (what the
//! effects did).

use super::{Correlator, Effect, Pending};
use crate::event::{kind, Event, FindingInfo, Severity};

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
