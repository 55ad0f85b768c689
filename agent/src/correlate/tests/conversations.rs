//! Which trace a request joins.

use super::*;

fn turn(c: &mut Correlator, tgid: u32, history: &[Message], answer: &str) -> String {
    let mut call = call(history.to_vec(), vec![]);
    call.output.text = answer.to_owned();
    c.on_llm_call(obs(call, tgid, 0))[0].trace_id.clone()
}

#[test]
fn interleaved_conversations_in_one_process_stay_apart() {
    let mut c = Correlator::new(Envelope::new(), 1_000_000_000);
    let sys = msg("system", "You are a helpful assistant.");
    let mut a = vec![sys.clone(), msg("user", "plan a trip to Rome")];
    let mut b = vec![sys, msg("user", "fix my SQL query")];
    let ta = turn(&mut c, 7, &a, "Day 1: Colosseum");
    let tb = turn(&mut c, 7, &b, "Use a JOIN");
    assert_ne!(ta, tb);
    for (i, _) in (0..3).enumerate() {
        a.push(msg(
            "assistant",
            if i == 0 { "Day 1: Colosseum" } else { "ok" },
        ));
        a.push(msg("user", &format!("more about Rome {i}")));
        b.push(msg("assistant", if i == 0 { "Use a JOIN" } else { "ok" }));
        b.push(msg("user", &format!("more about SQL {i}")));
        assert_eq!(turn(&mut c, 7, &a, "ok"), ta, "turn {i} of A");
        assert_eq!(turn(&mut c, 7, &b, "ok"), tb, "turn {i} of B");
    }
}

#[test]
fn truncated_and_edited_histories_keep_their_trace() {
    let mut c = Correlator::new(Envelope::new(), 1_000_000_000);
    let sys = msg("system", "s");
    let mut h = vec![sys.clone(), msg("user", "q1")];
    let t = turn(&mut c, 9, &h, "a1");
    for i in 2..=5 {
        h.push(msg("assistant", &format!("a{}", i - 1)));
        h.push(msg("user", &format!("q{i}")));
        assert_eq!(turn(&mut c, 9, &h, &format!("a{i}")), t);
    }
    // The agent drops the oldest turns to fit its context window.
    let mut cut = vec![sys.clone()];
    cut.extend_from_slice(&h[5..]);
    cut.push(msg("assistant", "a5"));
    cut.push(msg("user", "q6"));
    assert_eq!(turn(&mut c, 9, &cut, "a6"), t, "truncated history");
    // Or edits an earlier message (a summarised tool result).
    let mut edited = h.clone();
    edited[2] = msg("assistant", "a1 (summarised)");
    edited.push(msg("assistant", "a5"));
    edited.push(msg("user", "q7"));
    assert_eq!(turn(&mut c, 9, &edited, "a7"), t, "edited history");
    // One shared message is not enough to join.
    let other = vec![
        sys,
        msg("user", "a different start"),
        msg("assistant", "a2"),
        msg("user", "new"),
    ];
    assert_ne!(turn(&mut c, 9, &other, "x"), t);
    // The same messages in another process are another conversation.
    assert_ne!(turn(&mut c, 10, &cut, "a6"), t, "another agent");
}

#[test]
fn previous_response_id_joins_the_trace_of_that_response() {
    let mut c = Correlator::new(Envelope::new(), 1_000_000_000);
    let mut first = call(vec![msg("user", "plan the migration")], vec![]);
    first.response_id = Some("resp_1".into());
    let t = c.on_llm_call(obs(first, 11, 0))[0].trace_id.clone();
    // The next request carries only the new turn, and names its parent —
    // even from another process (a helper continuing the conversation).
    let mut next = call(vec![msg("user", "now do step 2")], vec![]);
    next.previous_response_id = Some("resp_1".into());
    next.response_id = Some("resp_2".into());
    assert_eq!(c.on_llm_call(obs(next, 12, 0))[0].trace_id, t);
    let mut third = call(vec![msg("user", "and step 3")], vec![]);
    third.previous_response_id = Some("resp_2".into());
    assert_eq!(c.on_llm_call(obs(third, 11, 0))[0].trace_id, t);
    // An unknown parent (captured before we started) gives a new trace.
    let mut orphan = call(vec![msg("user", "x")], vec![]);
    orphan.previous_response_id = Some("resp_unknown".into());
    assert_ne!(c.on_llm_call(obs(orphan, 11, 0))[0].trace_id, t);
}
