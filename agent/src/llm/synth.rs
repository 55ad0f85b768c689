//! Ids for tool calls whose API gives them none (Gemini, Ollama).
//!
//! The correlator closes a tool call when a later request carries a result
//! with the same id. Gemini's `functionCall` and Ollama's `tool_calls`
//! usually have no id, and their results name the function instead. So an
//! id is derived from what both the answer and the next request's replay
//! of it hold: the call's position in its turn, its name and its
//! arguments (`<prefix>-<n>-<8 hex>`); the same call decodes to the same id
//! in the answer and in every later history. A result is matched to the
//! first call of the latest assistant turn that has its name and is not
//! answered yet, which is how both APIs pair them (by name, in order).
//!
//! Clients may give such a call an id of their own when they replay it:
//! Gemini CLI (0.61) writes `run_shell_command_<ms>_<n>` into the history's
//! `functionCall` and the same id into its `functionResponse`. That id was
//! never in the answer, so it cannot be the call's id: the derived id
//! stays, and a result naming the replayed id answers the call replayed
//! with it.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::ToolCallSpec;

/// The id of the `index`-th tool call of a turn.
pub(super) fn call_id(prefix: &str, index: usize, name: &str, args: &Value) -> String {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x1f]);
    canonical(args, &mut h);
    let digest = h.finalize();
    format!("{prefix}-{index}-{}", hex::encode(&digest[..4]))
}

/// Hashes a JSON value with object keys sorted, so that the id does not
/// depend on the order a client replays the arguments in.
fn canonical(v: &Value, h: &mut Sha256) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            h.update(b"{");
            for k in keys {
                h.update(serde_json::to_string(k).unwrap_or_default().as_bytes());
                h.update(b":");
                canonical(&map[k], h);
                h.update(b",");
            }
            h.update(b"}");
        }
        Value::Array(items) => {
            h.update(b"[");
            for i in items {
                canonical(i, h);
                h.update(b",");
            }
            h.update(b"]");
        }
        other => h.update(serde_json::to_string(other).unwrap_or_default().as_bytes()),
    }
}

/// Tool calls of the latest assistant turn still waiting for a result,
/// each with the id the client replayed it with, if any.
#[derive(Debug, Default)]
pub(super) struct OpenCalls {
    calls: Vec<(ToolCallSpec, Option<String>)>,
}

impl OpenCalls {
    /// A new assistant turn: its calls are the ones results answer now.
    pub(super) fn open(&mut self, calls: &[ToolCallSpec]) {
        self.open_replayed(calls, &[]);
    }

    /// A new assistant turn whose `i`-th call the client replayed with the
    /// id `replayed[i]` (missing or `None`: without one).
    pub(super) fn open_replayed(&mut self, calls: &[ToolCallSpec], replayed: &[Option<String>]) {
        self.calls.clear();
        self.calls.extend(
            calls
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), replayed.get(i).cloned().flatten())),
        );
    }

    /// The id of the first open call named `name` (any call when the
    /// result does not say), which is then answered.
    pub(super) fn answer(&mut self, name: Option<&str>) -> Option<String> {
        let i = self
            .calls
            .iter()
            .position(|(c, _)| name.is_none_or(|n| c.name == n))?;
        Some(self.calls.remove(i).0.id)
    }

    /// The id of the open call the client replayed with `id`, which is
    /// then answered; `None` when no open call was replayed with it.
    pub(super) fn answer_replayed(&mut self, id: &str) -> Option<String> {
        let i = self
            .calls
            .iter()
            .position(|(_, r)| r.as_deref() == Some(id))?;
        Some(self.calls.remove(i).0.id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_ignore_key_order_and_differ_by_position_name_and_arguments() {
        let a = call_id("gemini", 0, "ls", &json!({"path": "/", "all": true}));
        let b = call_id("gemini", 0, "ls", &json!({"all": true, "path": "/"}));
        assert_eq!(a, b);
        assert!(a.starts_with("gemini-0-") && a.len() == "gemini-0-".len() + 8);
        assert_ne!(
            a,
            call_id("gemini", 1, "ls", &json!({"path": "/", "all": true}))
        );
        assert_ne!(
            a,
            call_id("gemini", 0, "cat", &json!({"path": "/", "all": true}))
        );
        assert_ne!(
            a,
            call_id("gemini", 0, "ls", &json!({"path": "/tmp", "all": true}))
        );
    }

    #[test]
    fn results_answer_calls_by_name_then_order() {
        let spec = |id: &str, name: &str| ToolCallSpec {
            id: id.into(),
            name: name.into(),
            arguments: String::new(),
        };
        let mut open = OpenCalls::default();
        open.open(&[spec("a", "ls"), spec("b", "cat"), spec("c", "ls")]);
        assert_eq!(open.answer(Some("ls")).as_deref(), Some("a"));
        assert_eq!(open.answer(Some("ls")).as_deref(), Some("c"));
        assert_eq!(open.answer(Some("ls")), None);
        assert_eq!(open.answer(None).as_deref(), Some("b"));
        assert_eq!(open.answer(None), None);
    }

    #[test]
    fn results_answer_calls_by_the_id_the_client_replayed_them_with() {
        let spec = |id: &str, name: &str| ToolCallSpec {
            id: id.into(),
            name: name.into(),
            arguments: String::new(),
        };
        let mut open = OpenCalls::default();
        open.open_replayed(
            &[spec("a", "ls"), spec("b", "ls"), spec("c", "cat")],
            &[Some("ls_1_0".into()), Some("ls_1_1".into())],
        );
        // The second call first, by its replayed id, not by name order.
        assert_eq!(open.answer_replayed("ls_1_1").as_deref(), Some("b"));
        assert_eq!(open.answer_replayed("ls_1_1"), None);
        assert_eq!(open.answer_replayed("cat_1_2"), None);
        assert_eq!(open.answer(Some("ls")).as_deref(), Some("a"));
        assert_eq!(open.answer(Some("cat")).as_deref(), Some("c"));
    }
}
