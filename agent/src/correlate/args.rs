//! Matching effects against a tool call's arguments.

use super::Effect;

/// String values of a tool call's JSON arguments (all depths), or the raw
/// text when it is not JSON.
pub(super) fn needles(arguments: &str) -> Vec<String> {
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
pub(super) fn matches(needles: &[String], eff: &Effect<'_>) -> bool {
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
