//! Joining the two halves of an HTTP+SSE (2024-11-05) `tools/call`.
//!
//! The client posts the request to `/messages?sessionId=…` and gets `202
//! Accepted`; the response comes as an `event: message` on the `GET`
//! stream it opened first, another HTTP exchange and (HTTP/1.1) another
//! connection. So a posted call's `tool.call` is held here until an
//! exchange of the same stream arrives with an answer carrying its
//! JSON-RPC id: same process, same server, same session. The stream is
//! one exchange that ends when the client closes it, which is when its
//! answers are seen; a call is never held past `hold_ns` nor beyond
//! `max_held` calls, and is then released without its result, marked
//! truncated and counted ([`SseJoin::released_unanswered`]).
//!
//! The halves can also come in the other order: when the client exits, all
//! its connections end at once, and the stream may be decoded before the
//! `POST` of its last call (seen here: the answer was on the stream before
//! the client read its `202`). So an answer no held call takes is kept
//! (as boundedly, and as long, as a held call) for a call posted after it.

use std::collections::VecDeque;

use super::McpCall;
use crate::event::Event;

/// Where an answer may come from: one process's session with one server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JoinKey {
    pub tgid: u32,
    pub host: String,
    pub port: u16,
    pub session: String,
}

#[derive(Debug)]
struct Held {
    key: JoinKey,
    id: String,
    since_ns: u64,
    event: Event,
}

/// `tool.call`s of the older transport waiting for their answer.
#[derive(Debug)]
pub struct SseJoin {
    held: VecDeque<Held>,
    /// Answers that came before their call: (stream, answer, when).
    early: VecDeque<(JoinKey, McpCall, u64)>,
    max_held: usize,
    hold_ns: u64,
    /// Calls released with their answer.
    pub joined: u64,
    /// Calls released without one (timeout, bound, the stream ended
    /// without it, the process exited, shutdown).
    pub released_unanswered: u64,
}

impl SseJoin {
    pub fn new(max_held: usize, hold_ns: u64) -> Self {
        Self {
            held: VecDeque::new(),
            early: VecDeque::new(),
            max_held: max_held.max(1),
            hold_ns,
            joined: 0,
            released_unanswered: 0,
        }
    }

    /// Holds the `tool.call` of call `id`, or returns it answered when its
    /// answer came first; also returns the oldest held call, released
    /// unanswered, when the bound is reached.
    pub fn hold(&mut self, key: JoinKey, id: String, event: Event, now_ns: u64) -> Vec<Event> {
        if let Some(i) = self
            .early
            .iter()
            .position(|(k, a, _)| *k == key && a.id == id)
        {
            if let Some((_, a, _)) = self.early.remove(i) {
                self.joined += 1;
                return vec![fill(event, &a)];
            }
        }
        let evicted = (self.held.len() >= self.max_held)
            .then(|| self.held.pop_front())
            .flatten()
            .map(|h| self.unanswered(h));
        self.held.push_back(Held {
            key,
            id,
            since_ns: now_ns,
            event,
        });
        evicted.into_iter().collect()
    }

    /// An exchange of the stream of `key` ended with these answers: the
    /// held calls they answer are released with their results. When the
    /// stream itself ended (`stream_ended`), its other held calls will
    /// never be answered and are released too.
    /// Answers no held call takes are kept for a call posted later (until
    /// `hold_ns` after `now_ns`).
    pub fn answer(
        &mut self,
        key: &JoinKey,
        answers: &[McpCall],
        stream_ended: bool,
        now_ns: u64,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let mut taken = vec![false; answers.len()];
        let mut keep = VecDeque::with_capacity(self.held.len());
        for h in std::mem::take(&mut self.held) {
            if h.key != *key {
                keep.push_back(h);
                continue;
            }
            match answers.iter().position(|a| a.id == h.id) {
                Some(i) => {
                    self.joined += 1;
                    taken[i] = true;
                    out.push(fill(h.event, &answers[i]));
                }
                None if stream_ended => out.push(self.unanswered(h)),
                None => keep.push_back(h),
            }
        }
        self.held = keep;
        for (a, _) in answers.iter().zip(taken).filter(|(_, t)| !t) {
            if self.early.len() >= self.max_held {
                self.early.pop_front();
            }
            self.early.push_back((key.clone(), a.clone(), now_ns));
        }
        out
    }

    /// Calls held longer than `hold_ns`.
    pub fn expire(&mut self, now_ns: u64) -> Vec<Event> {
        let hold = self.hold_ns;
        self.early
            .retain(|(_, _, since)| now_ns.saturating_sub(*since) <= hold);
        self.release_where(|h| now_ns.saturating_sub(h.since_ns) > hold)
    }

    /// The calls of a process that exited.
    pub fn release_process(&mut self, tgid: u32) -> Vec<Event> {
        self.early.retain(|(k, _, _)| k.tgid != tgid);
        self.release_where(|h| h.key.tgid == tgid)
    }

    /// Everything (shutdown).
    pub fn drain(&mut self) -> Vec<Event> {
        self.early.clear();
        self.release_where(|_| true)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn release_where(&mut self, pred: impl Fn(&Held) -> bool) -> Vec<Event> {
        let (go, keep): (Vec<Held>, Vec<Held>) =
            std::mem::take(&mut self.held).into_iter().partition(pred);
        self.held = keep.into();
        go.into_iter().map(|h| self.unanswered(h)).collect()
    }

    fn unanswered(&mut self, h: Held) -> Event {
        self.released_unanswered += 1;
        let mut ev = h.event;
        if let Some(t) = ev.tool.as_mut() {
            t.truncated = true;
        }
        ev
    }
}

/// The held `tool.call` with its answer.
fn fill(mut ev: Event, a: &McpCall) -> Event {
    if let Some(t) = ev.tool.as_mut() {
        t.result.clone_from(&a.result);
        t.is_error = a.is_error;
        t.truncated |= a.truncated;
        if let Some(mcp) = t.mcp.as_mut() {
            mcp.error.clone_from(&a.error);
        }
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{McpInfo, ToolCall};
    use crate::util::Envelope;

    fn key(tgid: u32, session: &str) -> JoinKey {
        JoinKey {
            tgid,
            host: "127.0.0.1".into(),
            port: 8443,
            session: session.into(),
        }
    }

    fn posted(id: &str) -> Event {
        let mut ev = Envelope::new().event(crate::event::kind::TOOL_CALL, 1, None);
        ev.tool = Some(ToolCall {
            call_id: id.into(),
            name: "read_file".into(),
            mcp: Some(McpInfo::default()),
            ..ToolCall::default()
        });
        ev
    }

    fn answer(id: &str, result: &str) -> McpCall {
        McpCall {
            id: id.into(),
            result: Some(result.into()),
            is_error: Some(false),
            ..McpCall::default()
        }
    }

    #[test]
    fn answers_join_by_process_session_and_id() {
        let mut j = SseJoin::new(16, 1_000);
        assert!(j.hold(key(1, "s1"), "7".into(), posted("7"), 0).is_empty());
        assert!(j.hold(key(1, "s1"), "8".into(), posted("8"), 0).is_empty());
        // Same id, another session or process: not theirs.
        assert!(j.hold(key(1, "s2"), "7".into(), posted("7"), 0).is_empty());
        assert!(j.hold(key(2, "s1"), "7".into(), posted("7"), 0).is_empty());
        let out = j.answer(&key(1, "s1"), &[answer("8", "eight")], false, 0);
        assert_eq!(out.len(), 1);
        let t = out[0].tool.as_ref().unwrap();
        assert_eq!(
            (t.call_id.as_str(), t.result.as_deref()),
            ("8", Some("eight"))
        );
        assert!(!t.truncated);
        assert_eq!(j.len(), 3);
        // The stream ended without answering 7: released, truncated.
        let out = j.answer(&key(1, "s1"), &[], true, 0);
        assert_eq!(out.len(), 1);
        assert!(out[0].tool.as_ref().unwrap().truncated);
        assert_eq!((j.joined, j.released_unanswered, j.len()), (1, 1, 2));
        assert_eq!(j.release_process(2).len(), 1);
        assert_eq!(j.drain().len(), 1);
        assert!(j.is_empty());
        assert_eq!(j.released_unanswered, 3);
    }

    #[test]
    fn held_calls_are_bounded_in_number_and_time() {
        let mut j = SseJoin::new(2, 1_000);
        assert!(j.hold(key(1, "s"), "1".into(), posted("1"), 0).is_empty());
        assert!(j.hold(key(1, "s"), "2".into(), posted("2"), 500).is_empty());
        let evicted = j.hold(key(1, "s"), "3".into(), posted("3"), 600).remove(0);
        assert_eq!(evicted.tool.as_ref().unwrap().call_id, "1");
        assert!(evicted.tool.as_ref().unwrap().truncated);
        let old = j.expire(1_501);
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].tool.as_ref().unwrap().call_id, "2");
        assert_eq!((j.len(), j.released_unanswered), (1, 2));
    }

    #[test]
    fn an_error_answer_fills_the_error() {
        let mut j = SseJoin::new(4, 1_000);
        j.hold(key(1, "s"), "3".into(), posted("3"), 0);
        let err = McpCall {
            id: "3".into(),
            is_error: Some(true),
            error: Some("-32602: Unknown tool: nope".into()),
            ..McpCall::default()
        };
        let out = j.answer(&key(1, "s"), &[err], false, 0);
        let t = out[0].tool.as_ref().unwrap();
        assert_eq!(t.is_error, Some(true));
        assert_eq!(
            t.mcp.as_ref().unwrap().error.as_deref(),
            Some("-32602: Unknown tool: nope")
        );
    }

    /// The stream (ended by the client's exit) is decoded before the `POST`
    /// of the last call: the answer waits for its call, and is its result.
    #[test]
    fn an_answer_that_comes_before_its_call_is_kept_for_it() {
        let mut j = SseJoin::new(16, 1_000);
        assert!(j.hold(key(1, "s"), "1".into(), posted("1"), 0).is_empty());
        let out = j.answer(
            &key(1, "s"),
            &[answer("1", "one"), answer("2", "two")],
            true,
            10,
        );
        assert_eq!(out.len(), 1);
        // Another session's call of the same id does not take it.
        assert!(j
            .hold(key(1, "other"), "2".into(), posted("2"), 20)
            .is_empty());
        let out = j.hold(key(1, "s"), "2".into(), posted("2"), 20);
        assert_eq!(out.len(), 1);
        let t = out[0].tool.as_ref().unwrap();
        assert_eq!(t.result.as_deref(), Some("two"));
        assert!(!t.truncated);
        assert_eq!((j.joined, j.released_unanswered), (2, 0));
        // Taken once: the same id again is held, unanswered.
        assert!(j.hold(key(1, "s"), "2".into(), posted("2"), 30).is_empty());
        // Early answers are kept no longer than a held call.
        j.answer(&key(1, "s"), &[answer("9", "nine")], false, 40);
        j.expire(40 + 1_001);
        let out = j.hold(key(1, "s"), "9".into(), posted("9"), 1_100);
        assert!(out.is_empty(), "expired: held, not joined");
        assert_eq!(j.joined, 2);
    }
}
