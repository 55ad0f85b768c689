//! Conversation identity: hashes of a request's history, prefix by prefix
//! and message by message.

use sha2::{Digest, Sha256};

use crate::event::LlmCall;

/// Canonical text of one history entry.
pub(super) fn canonical(
    role: &str,
    content: &str,
    ids: &[&str],
    tool_call_id: Option<&str>,
) -> Vec<u8> {
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

pub(super) fn canonical_output(call: &LlmCall) -> Vec<u8> {
    let ids: Vec<&str> = call
        .output
        .tool_calls
        .iter()
        .map(|t| t.id.as_str())
        .collect();
    canonical("assistant", &call.output.text, &ids, None)
}

pub(super) fn extend_hash(prev: &[u8; 32], item: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(Sha256::digest(item));
    h.finalize().into()
}

/// Hash of each prefix of the request's history, with whether that prefix
/// holds any non-system message.
pub(super) fn history_hashes(tgid: u32, call: &LlmCall) -> Vec<([u8; 32], bool)> {
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

pub(super) fn message_hash(tgid: u32, canonical: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(tgid.to_le_bytes());
    h.update(canonical);
    h.finalize().into()
}

/// Hash of each non-system message of the request, on its own.
pub(super) fn message_hashes(tgid: u32, call: &LlmCall) -> Vec<[u8; 32]> {
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
