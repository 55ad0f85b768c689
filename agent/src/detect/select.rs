//! Field selectors: which texts of an event a rule's `fields` name.
//!
//! | selector      | texts                                                        |
//! |---------------|--------------------------------------------------------------|
//! | `prompt`      | `llm.system.text`, `llm.messages[i].content` of role user / system / developer |
//! | `tool_result` | `llm.messages[i].content` of role tool, `tool.result`        |
//! | `output`      | `llm.output.text`, `llm.output.refusal`                      |
//! | `tool_args`   | `llm.output.tool_calls[i].arguments`, `llm.messages[i].tool_calls[j].arguments`, `tool.arguments` (JSON escapes undone) |
//! | `command`     | `exec.args` joined by single spaces (a `sh -c` payload is one argument) |
//! | `file.path`   | `file.path`                                                  |
//! | `net.dest`    | `net.address:net.port`                                       |
//!
//! The text of assistant messages in the history is not scanned: it is an
//! earlier output, scanned as `output` when its call was seen. Their tool
//! calls are (as `tool_args`): that is where the policy counts commands
//! headed for execution, and a call already seen as output is skipped. Texts that repeat
//! within a trace (the history every turn, a tool result seen both in
//! `tool.call` and in the next request, the same arguments in the call's
//! output and in its `tool.call`) are given only once: `fresh` remembers
//! them per trace.

use std::borrow::Cow;

use super::rules::Selector;
use crate::event::{kind, Event};

pub struct Field<'a> {
    pub sel: Selector,
    /// The field's path in the event, e.g. `llm.messages[3].content`.
    pub name: String,
    pub text: Cow<'a, str>,
    /// JSON text whose string escapes are undone before matching.
    pub json: bool,
}

/// The texts of `ev` to scan. `fresh(selector, text)` says whether a text is
/// new in this trace (and remembers it).
pub fn fields<'a>(ev: &'a Event, fresh: &mut dyn FnMut(&str, &str) -> bool) -> Vec<Field<'a>> {
    let mut out = Vec::new();
    let mut add = |sel: Selector, name: String, text: &'a str| {
        let key = Selector::ALL
            .iter()
            .find(|(_, s)| *s == sel)
            .map_or("", |(n, _)| n);
        if !text.trim().is_empty() && fresh(key, text) {
            out.push(Field {
                sel,
                name,
                text: Cow::Borrowed(text),
                json: sel == Selector::ToolArgs,
            });
        }
    };
    let owned = |sel: Selector, name: &str, text: String| Field {
        sel,
        name: name.to_owned(),
        text: Cow::Owned(text),
        json: false,
    };
    match (ev.kind.as_str(), &ev.llm, &ev.tool) {
        (kind::LLM_CALL, Some(llm), _) => {
            if let Some(sys) = &llm.system {
                add(Selector::Prompt, "llm.system.text".into(), &sys.text);
            }
            for (i, m) in llm.messages.iter().enumerate() {
                // The tool calls of assistant turns in the history: a client
                // can replay (or forge) a call the detector never saw as
                // output; one it did see is skipped as already scanned.
                for (j, c) in m.tool_calls.iter().enumerate() {
                    let name = format!("llm.messages[{i}].tool_calls[{j}].arguments");
                    add(Selector::ToolArgs, name, &c.arguments);
                }
                let sel = match m.role.as_str() {
                    "user" | "system" | "developer" => Selector::Prompt,
                    "tool" => Selector::ToolResult,
                    _ => continue,
                };
                add(sel, format!("llm.messages[{i}].content"), &m.content);
            }
            add(Selector::Output, "llm.output.text".into(), &llm.output.text);
            if let Some(r) = &llm.output.refusal {
                add(Selector::Output, "llm.output.refusal".into(), r);
            }
            for (i, c) in llm.output.tool_calls.iter().enumerate() {
                let name = format!("llm.output.tool_calls[{i}].arguments");
                add(Selector::ToolArgs, name, &c.arguments);
            }
        }
        (kind::TOOL_CALL, _, Some(t)) => {
            add(Selector::ToolArgs, "tool.arguments".into(), &t.arguments);
            if let Some(r) = &t.result {
                add(Selector::ToolResult, "tool.result".into(), r);
            }
        }
        (kind::PROCESS_EXEC, ..) => {
            if let Some(x) = ev.exec.as_ref().filter(|x| !x.args.is_empty()) {
                out.push(owned(Selector::Command, "exec.args", x.args.join(" ")));
            }
        }
        (kind::FILE_OPEN, ..) => {
            if let Some(f) = &ev.file {
                out.push(owned(Selector::FilePath, "file.path", f.path.clone()));
            }
        }
        (kind::NET_CONNECT, ..) => {
            if let Some(n) = &ev.net {
                out.push(owned(Selector::NetDest, "net.dest", dest(n)));
            }
        }
        _ => {}
    }
    out
}

/// `address:port` (IPv6 in brackets).
pub fn dest(n: &crate::event::NetInfo) -> String {
    if n.address.contains(':') {
        format!("[{}]:{}", n.address, n.port)
    } else {
        format!("{}:{}", n.address, n.port)
    }
}

/// A connect that leaves the host for the internet: not loopback, not a
/// private, link-local, carrier-grade NAT or unique-local address (the
/// cluster's API server, the office NAS), not a DNS resolver (port 53), not
/// a unix socket. It must have succeeded unless `attempts` is set, when a
/// connect the peer refused or the network could not route counts too.
pub fn external(n: &crate::event::NetInfo, attempts: bool) -> bool {
    use std::net::IpAddr;
    let internal = match n.address.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => internal_v4(a),
        Ok(IpAddr::V6(a)) => {
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || a.to_ipv4_mapped().is_some_and(internal_v4)
        }
        Err(_) => n.address == "localhost",
    };
    (n.result == 0 || (attempts && n.result < 0))
        && matches!(n.family.as_str(), "ipv4" | "ipv6")
        && !internal
        && n.port != 53
}

fn internal_v4(a: std::net::Ipv4Addr) -> bool {
    let [o0, o1, ..] = a.octets();
    a.is_loopback()
        || a.is_unspecified()
        || a.is_private()
        || a.is_link_local()
        || (o0 == 100 && (64..128).contains(&o1))
}
