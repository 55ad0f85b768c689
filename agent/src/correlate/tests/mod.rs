use super::*;
use crate::event::{Message, Output};

fn call(messages: Vec<Message>, tool_calls: Vec<ToolCallSpec>) -> LlmCall {
    LlmCall {
        provider: "openai".into(),
        messages,
        output: Output {
            tool_calls,
            ..Output::default()
        },
        ..LlmCall::default()
    }
}

fn msg(role: &str, content: &str) -> Message {
    Message {
        role: role.into(),
        content: content.into(),
        ..Message::default()
    }
}

fn spec(id: &str, name: &str, args: &str) -> ToolCallSpec {
    ToolCallSpec {
        id: id.into(),
        name: name.into(),
        arguments: args.into(),
    }
}

fn obs(c: LlmCall, tgid: u32, t: u64) -> LlmObservation {
    LlmObservation {
        call: c,
        process: None,
        tgid,
        start_ns: t,
        end_ns: t + 10,
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, told in order")]
fn a_tool_loop_is_one_trace_and_effects_link_to_their_call() {
    let mut c = Correlator::new(Envelope::new(), 1_000_000_000_000);
    let sys = msg("system", "be useful");
    let user = msg("user", "read FILE:/tmp/x.txt then CMD:echo hi");
    let first = c.on_llm_call(obs(
        call(
            vec![sys.clone(), user.clone()],
            vec![spec("call_1", "read_file", r#"{"path":"/tmp/x.txt"}"#)],
        ),
        100,
        1000,
    ));
    assert_eq!(first.len(), 1);
    let trace = first[0].trace_id.clone();

    // The agent opens the file itself, and some unrelated file.
    let env = Envelope::new();
    let mut open = env.event(kind::FILE_OPEN, 2000, None);
    c.place(
        &mut open,
        100,
        Vec::new,
        2000,
        &Effect::File { path: "/tmp/x.txt" },
    );
    assert_eq!(open.trace_id, trace);
    let mut other = env.event(kind::FILE_OPEN, 2001, None);
    c.place(
        &mut other,
        100,
        Vec::new,
        2001,
        &Effect::File {
            path: "/usr/lib/python3/foo.py",
        },
    );
    assert_eq!(
        other.trace_id, trace,
        "the caller's own events stay in its trace"
    );
    assert_eq!(other.parent_span_id, None, "but are no effect");

    let mut assistant = msg("assistant", "");
    assistant.tool_calls = vec![spec("call_1", "read_file", r#"{"path":"/tmp/x.txt"}"#)];
    let mut result = msg("tool", "hello");
    result.tool_call_id = Some("call_1".into());
    let second = c.on_llm_call(obs(
        call(
            vec![sys.clone(), user.clone(), assistant.clone(), result.clone()],
            vec![spec("call_2", "run_command", r#"{"command":"echo hi"}"#)],
        ),
        100,
        3000,
    ));
    assert_eq!(second.len(), 2, "llm.call then the closed tool.call");
    assert_eq!(second[0].trace_id, trace);
    let tool = second[1].tool.as_ref().unwrap();
    assert_eq!(tool.name, "read_file");
    assert_eq!(tool.result.as_deref(), Some("hello"));
    assert_eq!(tool.effects, vec![open.id.clone()]);
    assert_eq!(
        open.parent_span_id.as_deref(),
        Some(second[1].span_id.as_str())
    );
    assert!(tool.confidence >= 0.9);

    // The command runs in a child: sh -c "echo hi".
    c.on_fork(100, 200);
    let mut exec = env.event(kind::PROCESS_EXEC, 4000, None);
    let args = vec!["/bin/sh".to_owned(), "-c".to_owned(), "echo hi".to_owned()];
    c.place(
        &mut exec,
        200,
        || vec![100],
        4000,
        &Effect::Exec {
            filename: "/bin/sh",
            args: &args,
        },
    );
    let mut child_open = env.event(kind::FILE_OPEN, 4001, None);
    c.place(
        &mut child_open,
        200,
        || vec![100],
        4001,
        &Effect::File {
            path: "/etc/ld.so.cache",
        },
    );

    let mut a2 = msg("assistant", "");
    a2.tool_calls = vec![spec("call_2", "run_command", r#"{"command":"echo hi"}"#)];
    let mut r2 = msg("tool", "hi");
    r2.tool_call_id = Some("call_2".into());
    let third = c.on_llm_call(obs(
        call(vec![sys, user, assistant, result, a2, r2], vec![]),
        100,
        5000,
    ));
    assert_eq!(third[0].trace_id, trace);
    let t2 = third[1].tool.as_ref().unwrap();
    assert_eq!(t2.effects, vec![exec.id.clone(), child_open.id.clone()]);
    assert!((t2.confidence - 0.95).abs() < 1e-9);
    assert_eq!(
        exec.parent_span_id.as_deref(),
        Some(third[1].span_id.as_str())
    );
}

#[test]
fn different_conversations_and_processes_stay_apart() {
    let mut c = Correlator::new(Envelope::new(), 1_000_000_000);
    let a = c.on_llm_call(obs(
        call(vec![msg("system", "s"), msg("user", "a")], vec![]),
        1,
        0,
    ));
    let b = c.on_llm_call(obs(
        call(vec![msg("system", "s"), msg("user", "b")], vec![]),
        1,
        0,
    ));
    let a_other_proc = c.on_llm_call(obs(
        call(vec![msg("system", "s"), msg("user", "a")], vec![]),
        2,
        0,
    ));
    assert_ne!(
        a[0].trace_id, b[0].trace_id,
        "same system prompt is not one conversation"
    );
    assert_ne!(a[0].trace_id, a_other_proc[0].trace_id);
    let a2 = c.on_llm_call(obs(
        call(
            vec![
                msg("system", "s"),
                msg("user", "a"),
                msg("assistant", ""),
                msg("user", "more"),
            ],
            vec![],
        ),
        1,
        0,
    ));
    assert_eq!(a2[0].trace_id, a[0].trace_id);
}

#[test]
fn unanswered_tool_calls_expire_and_flush() {
    let mut c = Correlator::new(Envelope::new(), 100);
    c.on_llm_call(obs(
        call(vec![msg("user", "x")], vec![spec("1", "t", "{}")]),
        1,
        0,
    ));
    assert!(c.expire(50).is_empty());
    let e = c.expire(1000);
    assert_eq!(e.len(), 1);
    assert!(e[0].tool.as_ref().unwrap().result.is_none());
    c.on_llm_call(obs(
        call(vec![msg("user", "y")], vec![spec("2", "t", "{}")]),
        1,
        0,
    ));
    assert_eq!(c.flush(0, None).len(), 1);
}

#[test]
fn argument_matching() {
    let n = needles(
        r#"{"path":"notes.txt","opts":{"cmd":"ls -la /tmp"},"url":"https://example.com:8443/x"}"#,
    );
    assert!(matches(
        &n,
        &Effect::File {
            path: "/home/u/notes.txt"
        }
    ));
    assert!(!matches(
        &n,
        &Effect::File {
            path: "/home/u/othernotes.txt"
        }
    ));
    let args = vec!["ls".to_owned(), "-la".to_owned(), "/tmp".to_owned()];
    assert!(matches(
        &n,
        &Effect::Exec {
            filename: "/usr/bin/ls",
            args: &args
        }
    ));
    assert!(matches(
        &n,
        &Effect::Connect {
            address: "example.com",
            port: 8443
        }
    ));
    assert!(needles("not json").contains(&"not json".to_owned()));
}

#[test]
fn ancestors_are_asked_for_only_when_needed() {
    let mut c = Correlator::new(Envelope::new(), 1_000_000_000);
    let env = Envelope::new();
    // No process talks to a model yet: the parent chain is not walked.
    let mut ev = env.event(kind::FILE_OPEN, 1, None);
    c.place(
        &mut ev,
        5,
        || panic!("walked the parent chain for nothing"),
        1,
        &Effect::File { path: "/x" },
    );

    // A grandchild of a caller, started before any tool call: its trace is
    // the caller's, found through its ancestors.
    let first = c.on_llm_call(obs(call(vec![msg("user", "hi")], vec![]), 1, 0));
    let mut ev = env.event(kind::FILE_OPEN, 20, None);
    c.place(&mut ev, 5, || vec![3, 1], 20, &Effect::File { path: "/x" });
    assert_eq!(ev.trace_id, first[0].trace_id);
    assert_eq!(ev.parent_span_id, None);
}

mod attribution;
mod conversations;
mod mcp;
