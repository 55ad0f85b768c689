//! Routing: which sinks see which events.
//!
//! A decision list in the config. Routes are tried in order; an event goes
//! to the sinks of every route it matches, and a matching route with
//! `last = true` ends the walk (so a specific route placed first can keep
//! its events out of the general ones after it). Sinks named at the top
//! level of the config or with `--sink` form an implicit first route that
//! takes everything. An event that reaches no sink is counted
//! (`events_unrouted` in `agent.health`), never dropped silently.
//!
//! Typical tree: everything to an archive file; findings of `high` and
//! above to an alert sink; tool calls and their effects to a real-time
//! sink; events whose captured text holds a flagged keyword to review.
//!
//! Keywords are matched case-insensitively on the event's captured text
//! after redaction (a keyword is not a secret, and a sink must never see
//! more than the redacted event).

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

use crate::{
    event::{Event, Severity},
    sinks::{SinkSpec, Sinks},
};

/// At most this many distinct sinks (routing keeps a 64-bit mask).
pub const MAX_SINKS: usize = 64;

/// `[[route]]` in the agent's config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Shown in logs and counters.
    pub name: String,
    /// Where matching events go (`stdout`, `file:PATH`).
    pub sinks: Vec<SinkSpec>,
    /// Event kinds this route takes (`finding`, `tool.call`, …); empty = all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Only events at or above this severity.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// For findings: only these classes (`secret`, `prompt_injection`, …);
    /// empty = all. Events that are not findings never match a route that
    /// lists classes.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Only events whose captured text contains one of these words (any case).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Stop at this route when it matches.
    #[serde(default)]
    pub last: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("route {route:?}: {problem}")]
    Invalid { route: String, problem: String },
}

struct Route {
    name: String,
    mask: u64,
    kinds: Vec<String>,
    min_severity: Option<Severity>,
    classes: Vec<String>,
    keywords: Option<Regex>,
    last: bool,
}

/// The compiled decision list.
pub struct Router {
    /// Sinks that take everything (top-level `sinks`, `--sink`).
    all_mask: u64,
    routes: Vec<Route>,
    /// Events that matched a route, per route name (same order as config).
    pub routed: Vec<(String, u64)>,
    /// Events that went to no sink at all.
    pub unrouted: u64,
}

impl Router {
    /// Every sink spec the routes name, for starting the sinks.
    pub fn sink_specs(routes: &[RouteConfig]) -> Vec<SinkSpec> {
        routes
            .iter()
            .flat_map(|r| r.sinks.iter().cloned())
            .collect()
    }

    /// Compiles the routes against the running sinks. `catch_all` are the
    /// sinks that take every event.
    pub fn new(
        routes: &[RouteConfig],
        catch_all: &[SinkSpec],
        sinks: &Sinks,
    ) -> Result<Self, RouteError> {
        let mask_of = |name: &str, specs: &[SinkSpec]| -> Result<u64, RouteError> {
            let mut mask = 0u64;
            for spec in specs {
                let i = sinks.index_of(spec).ok_or_else(|| RouteError::Invalid {
                    route: name.to_owned(),
                    problem: format!("sink {spec} is not running"),
                })?;
                if i >= MAX_SINKS {
                    return Err(RouteError::Invalid {
                        route: name.to_owned(),
                        problem: format!("more than {MAX_SINKS} sinks"),
                    });
                }
                mask |= 1 << i;
            }
            Ok(mask)
        };
        let all_mask = mask_of("(all)", catch_all)?;
        let mut compiled = Vec::with_capacity(routes.len());
        for r in routes {
            if r.sinks.is_empty() {
                return Err(RouteError::Invalid {
                    route: r.name.clone(),
                    problem: "has no sinks".into(),
                });
            }
            let keywords = if r.keywords.iter().all(|k| k.trim().is_empty()) {
                None
            } else {
                let alternation: Vec<String> = r
                    .keywords
                    .iter()
                    .filter(|k| !k.trim().is_empty())
                    .map(|k| regex::escape(k.trim()))
                    .collect();
                Some(
                    RegexBuilder::new(&alternation.join("|"))
                        .case_insensitive(true)
                        .build()
                        .map_err(|e| RouteError::Invalid {
                            route: r.name.clone(),
                            problem: format!("keywords: {e}"),
                        })?,
                )
            };
            compiled.push(Route {
                name: r.name.clone(),
                mask: mask_of(&r.name, &r.sinks)?,
                kinds: r.kinds.clone(),
                min_severity: r.min_severity,
                classes: r.classes.clone(),
                keywords,
                last: r.last,
            });
        }
        Ok(Self {
            all_mask,
            routed: compiled.iter().map(|r| (r.name.clone(), 0)).collect(),
            routes: compiled,
            unrouted: 0,
        })
    }

    /// The sinks `ev` goes to, as a bit mask over the sinks' positions.
    pub fn targets(&mut self, ev: &Event) -> u64 {
        let mut mask = self.all_mask;
        for (i, r) in self.routes.iter().enumerate() {
            if r.matches(ev) {
                mask |= r.mask;
                self.routed[i].1 += 1;
                if r.last {
                    break;
                }
            }
        }
        if mask == 0 {
            self.unrouted += 1;
        }
        mask
    }
}

impl Route {
    fn matches(&self, ev: &Event) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&ev.kind) {
            return false;
        }
        if self.min_severity.is_some_and(|min| ev.severity < min) {
            return false;
        }
        if !self.classes.is_empty() {
            let Some(f) = &ev.finding else { return false };
            if !self.classes.contains(&f.class) {
                return false;
            }
        }
        if let Some(re) = &self.keywords {
            let mut hit = false;
            for_each_text(ev, &mut |t| hit = hit || re.is_match(t));
            if !hit {
                return false;
            }
        }
        true
    }
}

/// Calls `f` with every field of `ev` that holds captured text.
pub fn for_each_text(ev: &Event, f: &mut dyn FnMut(&str)) {
    if let Some(l) = &ev.llm {
        if let Some(s) = &l.system {
            f(&s.text);
        }
        for m in &l.messages {
            f(&m.content);
            for t in &m.tool_calls {
                f(&t.arguments);
            }
        }
        f(&l.output.text);
        if let Some(r) = &l.output.refusal {
            f(r);
        }
        if let Some(r) = &l.output.reasoning {
            f(r);
        }
        for t in &l.output.tool_calls {
            f(&t.arguments);
        }
    }
    if let Some(t) = &ev.tool {
        f(&t.arguments);
        if let Some(r) = &t.result {
            f(r);
        }
    }
    if let Some(x) = &ev.exec {
        for a in &x.args {
            f(a);
        }
    }
    if let Some(file) = &ev.file {
        f(&file.path);
    }
}

#[cfg(test)]
mod tests;
