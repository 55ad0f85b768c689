//! `file.open` against the path globs of the rules.
//!
//! Opens are the most frequent events of an agent's tree (interpreters,
//! loaders, locales, `node_modules`), so the common system reads are turned
//! away by prefix before any glob runs, and all globs run as one `RegexSet`.
//! A failed open (`result < 0`) is still an attempt: it raises the rule's
//! `failed_severity`, or nothing when the rule has none.

use super::{
    matchers::Matchers,
    rules::{How, Rule},
    Found,
};
use crate::event::{kind, Event, FindingMatch};

/// Reads that every process does (the dynamic loader, libraries, locales,
/// terminfo, proc/sys); none of them is a sensitive file.
const ROUTINE: &[&str] = &[
    "/lib/",
    "/lib64/",
    "/usr/lib/",
    "/usr/lib64/",
    "/usr/share/locale/",
    "/usr/share/zoneinfo/",
    "/usr/share/terminfo/",
    "/etc/ld.so.",
    "/etc/locale",
    "/proc/",
    "/sys/",
    "/dev/",
];

pub(super) fn judge(rules: &[Rule], matchers: &Matchers, ev: &Event) -> Vec<Found> {
    let (Some(f), kind::FILE_OPEN) = (&ev.file, ev.kind.as_str()) else {
        return Vec::new();
    };
    if ROUTINE.iter().any(|p| f.path.starts_with(p)) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in matchers.glob_rules(&f.path) {
        let r = &rules[i];
        if !matches!(r.how, How::Match) || r.unless.iter().any(|u| u.is_match(f.path.as_bytes())) {
            continue;
        }
        if let (Some(unless), Some(p)) = (&r.unless_process, &ev.process) {
            // The exe, and the script an interpreter runs (`python3 /usr/bin/gcloud`).
            let mut names =
                std::iter::once(p.exe.as_str()).chain(p.args.iter().take(2).map(String::as_str));
            if names.any(|n| unless.is_match(n.as_bytes())) {
                continue;
            }
        }
        if r.path_in_args && !asked_for(ev, &f.path) {
            continue;
        }
        if !r.open_flags.is_empty() && !f.flags.iter().any(|fl| r.open_flags.contains(fl)) {
            continue;
        }
        let severity = if f.result < 0 {
            match r.failed_severity {
                Some(s) => s,
                None => continue,
            }
        } else {
            r.severity
        };
        let detail = if f.result < 0 {
            "open failed: an attempt".to_owned()
        } else {
            "opened".to_owned()
        };
        out.push(Found {
            rule: i,
            severity,
            matches: vec![FindingMatch {
                event: ev.id.clone(),
                field: "file.path".into(),
                what: "glob".into(),
                start: 0,
                end: f.path.len(),
            }],
            more_evidence: Vec::new(),
            detail: Some(detail),
        });
    }
    out
}

/// The process named the file on its command line (`cat /etc/passwd`), as
/// opposed to a library reading it on its own (NSS reading /etc/passwd for
/// `ls -l`).
fn asked_for(ev: &Event, path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    ev.process.as_ref().is_some_and(|p| {
        p.args
            .iter()
            .skip(1)
            .any(|a| a.contains(path) || a.split(['/', ' ', '=']).any(|w| w == base))
    })
}
