//! Loading rule files: the embedded pack, the user's directory, and errors
//! that name the file and line (TOML errors by their span, semantic errors
//! by the line of the rule's `[[rule]]` header).

use std::path::Path;

use super::{
    rules::{validate, Rule, RuleFile},
    RuleError,
};

/// The built-in pack, embedded so the binary needs no files.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "config/rules/prompt_injection.toml",
        include_str!("../../../config/rules/prompt_injection.toml"),
    ),
    (
        "config/rules/data.toml",
        include_str!("../../../config/rules/data.toml"),
    ),
    (
        "config/rules/files.toml",
        include_str!("../../../config/rules/files.toml"),
    ),
    (
        "config/rules/commands.toml",
        include_str!("../../../config/rules/commands.toml"),
    ),
    (
        "config/rules/sql.toml",
        include_str!("../../../config/rules/sql.toml"),
    ),
    (
        "config/rules/exfiltration.toml",
        include_str!("../../../config/rules/exfiltration.toml"),
    ),
    (
        "config/rules/usage.toml",
        include_str!("../../../config/rules/usage.toml"),
    ),
];

/// Loads the built-in pack (if asked) and the user's directory, drops the
/// disabled ids.
pub fn load(
    builtin: bool,
    dir: Option<&Path>,
    disabled: &[String],
) -> Result<Vec<Rule>, RuleError> {
    compile(&sources(builtin, dir)?, disabled)
}

/// The rule files to load, as (file name, text), in load order.
pub fn sources(builtin: bool, dir: Option<&Path>) -> Result<Vec<(String, String)>, RuleError> {
    let mut sources: Vec<(String, String)> = Vec::new();
    if builtin {
        sources.extend(
            BUILTIN
                .iter()
                .map(|(f, t)| ((*f).to_owned(), (*t).to_owned())),
        );
    }
    if let Some(dir) = dir {
        let read_err = |source| RuleError::Read {
            path: dir.display().to_string(),
            source,
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|source| RuleError::Read {
                path: f.display().to_string(),
                source,
            })?;
            sources.push((f.display().to_string(), text));
        }
    }
    Ok(sources)
}

/// Parses and validates `sources`, then drops the disabled ids.
pub fn compile(sources: &[(String, String)], disabled: &[String]) -> Result<Vec<Rule>, RuleError> {
    let mut rules: Vec<Rule> = Vec::new();
    for (file, text) in sources {
        for (n, rule) in parse(file, text)?.into_iter().enumerate() {
            if rules.iter().any(|r| r.id == rule.id) {
                return Err(invalid(
                    file,
                    text,
                    n,
                    format!("duplicate rule id {:?}", rule.id),
                ));
            }
            rules.push(rule);
        }
    }
    rules.retain(|r| !disabled.contains(&r.id));
    Ok(rules)
}

/// The line of the `n`-th `[[rule]]` header (1-based), for semantic errors.
fn rule_line(text: &str, n: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[rule]]"))
        .nth(n)
        .map_or(1, |(i, _)| i + 1)
}

fn invalid(file: &str, text: &str, n: usize, problem: String) -> RuleError {
    RuleError::Invalid {
        file: file.to_owned(),
        line: rule_line(text, n),
        problem,
    }
}

/// Parses and validates one rule file.
pub fn parse(file: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    let parsed: RuleFile = toml::from_str(text).map_err(|e| RuleError::Invalid {
        file: file.to_owned(),
        line: e.span().map_or(1, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        }),
        problem: e.message().to_owned(),
    })?;
    let mut out: Vec<Rule> = Vec::with_capacity(parsed.rule.len());
    for (n, spec) in parsed.rule.into_iter().enumerate() {
        let rule = validate(spec).map_err(|p| invalid(file, text, n, p))?;
        if out.iter().any(|r| r.id == rule.id) {
            return Err(invalid(
                file,
                text,
                n,
                format!("duplicate rule id {:?}", rule.id),
            ));
        }
        out.push(rule);
    }
    Ok(out)
}
