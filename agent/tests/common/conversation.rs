//! The big assertion: what a conversation must have produced.

#![allow(
    clippy::wildcard_imports,
    reason = "one test-support module split in files"
)]

use super::*;

// ------------------------------------------------------------------ the big assertion

/// One answered model call, as the mock recorded it.
pub struct Answer {
    pub step: usize,
    pub tool: Option<String>,
    pub call_id: Option<String>,
    pub arguments: Option<String>,
    pub usage: (u64, u64),
}

pub fn answers(records: &[Value]) -> Vec<Answer> {
    records
        .iter()
        .map(|r| Answer {
            step: usize::try_from(r["step"].as_u64().expect("step")).expect("small"),
            tool: r["tool"].as_str().map(str::to_string),
            call_id: r["call_id"].as_str().map(str::to_string),
            arguments: r["arguments"].as_str().map(str::to_string),
            usage: (
                r["usage"][0].as_u64().expect("usage"),
                r["usage"][1].as_u64().expect("usage"),
            ),
        })
        .collect()
}

/// Checks the whole chain of a tool-using conversation: llm.call per model
/// call, tool.call per tool call, and the kernel-seen effects linked to them.
pub fn check_conversation(run: &Run) {
    let ev = &run.events;
    let client = run.client;
    let answers = answers(&run.mock_records);
    let mut c = Checker::default();
    let ctx = format!(
        "{client:?} stream={} — run dir {}",
        run.stream,
        run.dir.path.display()
    );

    // unique ids
    let mut seen = BTreeSet::new();
    for e in &ev.all {
        c.check(seen.insert(e.id.as_str()), || {
            format!("event id {} is not unique", e.id)
        });
        c.check(e.v == aitrail::event::SCHEMA_VERSION, || {
            format!("event {} has v={}", e.id, e.v)
        });
        c.check(is_hex(&e.trace_id, 32), || {
            format!("event {} trace_id {:?} is not 32 hex", e.id, e.trace_id)
        });
        c.check(is_hex(&e.span_id, 16), || {
            format!("event {} span_id {:?} is not 16 hex", e.id, e.span_id)
        });
    }

    let calls = ev.llm_calls();
    if !c.eq("number of llm.call events", client.calls(), calls.len()) {
        c.finish(ev, &run.related(), &ctx);
        return;
    }
    let trace = calls[0].trace_id.clone();
    for (i, e) in calls.iter().enumerate() {
        c.eq(
            &format!("llm.call[{i}].trace_id (one trace per conversation)"),
            trace.as_str(),
            e.trace_id.as_str(),
        );
    }

    for (i, (e, a)) in calls.iter().zip(&answers).enumerate() {
        let w = format!("llm.call[{i}]");
        let Some(l) = &e.llm else {
            c.fail(format!("{w} has no `llm` member"));
            continue;
        };
        c.eq(
            &format!("{w}.provider"),
            client.provider(),
            l.provider.as_str(),
        );
        c.eq(
            &format!("{w}.path"),
            client.path(run.stream).as_str(),
            l.path.as_str(),
        );
        c.eq(
            &format!("{w}.model"),
            Some(client.model()),
            l.model.as_deref(),
        );
        c.eq(&format!("{w}.stream"), run.stream, l.stream);
        c.eq(&format!("{w}.status"), Some(200), l.status);
        c.eq(&format!("{w}.truncated"), false, l.truncated);
        c.eq(&format!("{w}.role"), aitrail::event::Role::Client, l.role);
        c.eq(&format!("{w}.server.port"), run.port, l.server.port);
        c.check(
            ["127.0.0.1", "localhost"].contains(&l.server.host.as_str()),
            || {
                format!(
                    "{w}.server.host: expected 127.0.0.1 or localhost, found {:?}",
                    l.server.host
                )
            },
        );
        if let Some(p) = &e.process {
            c.eq(
                &format!("{w}.process.pid (the client)"),
                run.client_pid,
                p.pid,
            );
        } else {
            c.fail(format!("{w} has no `process`"));
        }
        let mut tools: Vec<&str> = l.tools.iter().map(String::as_str).collect();
        tools.sort_unstable();
        c.eq(&format!("{w}.tools (declared)"), TOOL_NAMES.to_vec(), tools);
        // the API key only as a fingerprint
        let key = client.key();
        match &l.api_key_id {
            Some(id) => {
                c.check(!id.contains(key) && !id.contains("AITRAIL-SECRET"), || {
                    format!("{w}.api_key_id {id:?} holds the key")
                });
                c.check(id.contains(&key[key.len() - 4..]), || {
                    format!("{w}.api_key_id {id:?} should show the key's last 4 characters (sk-…cdef#hash)")
                });
            }
            None => c.fail(format!(
                "{w}.api_key_id is missing (a fingerprint of the API key)"
            )),
        }
        // messages: the system prompt, the user prompt, and one tool result per earlier step
        let sys_ok = l.system.as_ref().is_some_and(|s| s.text == SYSTEM_PROMPT)
            || l.messages
                .iter()
                .any(|m| m.role == "system" && m.content == SYSTEM_PROMPT);
        c.check(sys_ok, || {
            format!(
                "{w}: system prompt {SYSTEM_PROMPT:?} in neither llm.system nor a system message"
            )
        });
        let user_ok = l.messages.iter().any(|m| {
            m.role == "user"
                && m.content.contains(&format!("FILE: {}", run.file))
                && m.content.contains(&format!("CMD: {}", run.command))
        });
        c.check(user_ok, || {
            format!(
                "{w}: no user message with the prompt (FILE: {} / CMD: {})",
                run.file, run.command
            )
        });
        let tool_msgs: Vec<_> = l.messages.iter().filter(|m| m.role == "tool").collect();
        c.eq(
            &format!("{w}: number of tool-result messages"),
            a.step,
            tool_msgs.len(),
        );
        for (j, m) in tool_msgs.iter().enumerate() {
            let Some(prev) = answers.get(j) else { break };
            c.eq(
                &format!("{w}.messages tool[{j}].tool_call_id"),
                prev.call_id.as_deref(),
                m.tool_call_id.as_deref(),
            );
            let expect = if j == 0 {
                run.file_content.trim()
            } else {
                "exit_code=0"
            };
            c.check(m.content.contains(expect), || {
                format!(
                    "{w}.messages tool[{j}].content should contain {expect:?}, found {:?}",
                    cut(&m.content, 200)
                )
            });
        }
        let asked: Vec<&str> = l
            .messages
            .iter()
            .filter(|m| m.role == "assistant")
            .flat_map(|m| m.tool_calls.iter().map(|t| t.id.as_str()))
            .collect();
        let expect_asked: Vec<&str> = answers[..a.step]
            .iter()
            .filter_map(|p| p.call_id.as_deref())
            .collect();
        c.eq(
            &format!("{w}: tool call ids of the assistant messages in the history"),
            expect_asked,
            asked,
        );
        // output
        let (ein, eout) = a.usage;
        c.eq(
            &format!("{w}.usage.input_tokens"),
            Some(ein),
            l.usage.input_tokens,
        );
        c.eq(
            &format!("{w}.usage.output_tokens"),
            Some(eout),
            l.usage.output_tokens,
        );
        c.eq(
            &format!("{w}.usage (mock formula)"),
            mock_usage(a.step),
            a.usage,
        );
        if let (Some(name), Some(id), Some(args)) = (&a.tool, &a.call_id, &a.arguments) {
            c.eq(
                &format!("{w}.output.finish_reason"),
                Some(client.tool_finish()),
                l.output.finish_reason.as_deref(),
            );
            if c.eq(
                &format!("{w}: number of output.tool_calls"),
                1,
                l.output.tool_calls.len(),
            ) {
                let t = &l.output.tool_calls[0];
                c.eq(
                    &format!("{w}.output.tool_calls[0].id"),
                    id.as_str(),
                    t.id.as_str(),
                );
                c.eq(
                    &format!("{w}.output.tool_calls[0].name"),
                    name.as_str(),
                    t.name.as_str(),
                );
                c.check(json_text_eq(args, &t.arguments), || {
                    format!(
                        "{w}.output.tool_calls[0].arguments: expected {args}, found {}",
                        t.arguments
                    )
                });
            }
            let text = if client.lead_text() {
                format!("I will use the {name} tool.")
            } else {
                String::new()
            };
            c.eq(
                &format!("{w}.output.text"),
                text.as_str(),
                l.output.text.as_str(),
            );
        } else {
            c.eq(
                &format!("{w}.output.finish_reason"),
                Some(client.stop_finish()),
                l.output.finish_reason.as_deref(),
            );
            c.eq(
                &format!("{w}.output.tool_calls"),
                0,
                l.output.tool_calls.len(),
            );
            let text = format!("done: {} tools used", a.step);
            c.eq(
                &format!("{w}.output.text"),
                text.as_str(),
                l.output.text.as_str(),
            );
        }
    }

    // tool.call per tool call, and their effects
    let tool_events = ev.of_kind(kind::TOOL_CALL);
    let expected_tools = answers.iter().filter(|a| a.tool.is_some()).count();
    c.eq(
        "number of tool.call events",
        expected_tools,
        tool_events.len(),
    );
    for (i, a) in answers.iter().enumerate() {
        let (Some(name), Some(id), Some(args)) = (&a.tool, &a.call_id, &a.arguments) else {
            continue;
        };
        let w = format!("tool.call {name} ({id})");
        let found: Vec<&&Event> = tool_events
            .iter()
            .filter(|e| e.tool.as_ref().is_some_and(|t| t.call_id == *id))
            .collect();
        if !c.eq(
            &format!("{w}: number of tool.call events with this call_id"),
            1,
            found.len(),
        ) {
            continue;
        }
        let e = found[0];
        let t = e.tool.as_ref().expect("filtered");
        c.eq(&format!("{w}.name"), name.as_str(), t.name.as_str());
        c.check(json_text_eq(args, &t.arguments), || {
            format!("{w}.arguments: expected {args}, found {}", t.arguments)
        });
        c.eq(
            &format!("{w}.parent_span_id (its llm.call)"),
            Some(calls[i].span_id.as_str()),
            e.parent_span_id.as_deref(),
        );
        c.eq(
            &format!("{w}.trace_id"),
            trace.as_str(),
            e.trace_id.as_str(),
        );
        for fx in &t.effects {
            c.check(ev.by_id(fx).is_some(), || {
                format!("{w}.effects names {fx}, which is no event in the file")
            });
        }
        if client == Client::Curl {
            // curl never runs the tool: no result and no effects are expected.
            continue;
        }
        let expect = if name == "read_file" {
            run.file_content.trim()
        } else {
            "exit_code=0"
        };
        c.check(
            t.result.as_deref().is_some_and(|r| r.contains(expect)),
            || {
                format!(
                    "{w}.result should contain {expect:?}, found {:?}",
                    t.result.as_deref().map(|r| cut(r, 200))
                )
            },
        );
        c.check(!t.effects.is_empty(), || format!("{w}.effects is empty"));
        if name == "read_file" {
            check_effect(
                &mut c,
                ev,
                e,
                &trace,
                &w,
                "file.open of the read file",
                |x| {
                    x.kind == kind::FILE_OPEN && x.file.as_ref().is_some_and(|f| f.path == run.file)
                },
                |x| {
                    let f = x.file.as_ref().expect("file.open");
                    if f.result >= 0 {
                        None
                    } else {
                        Some(format!("result {} < 0", f.result))
                    }
                },
            );
        } else {
            check_effect(
                &mut c,
                ev,
                e,
                &trace,
                &w,
                "process.exec of `ls` listing the work dir",
                |x| {
                    x.kind == kind::PROCESS_EXEC
                        && x.exec.as_ref().is_some_and(|ex| {
                            let base = ex.filename.rsplit('/').next().unwrap_or("");
                            base == "ls" && ex.args.iter().any(|a| a == &run.workdir)
                        })
                },
                |_| None,
            );
        }
    }

    c.check(!ev.of_kind(kind::AGENT_HEALTH).is_empty(), || {
        "no agent.health event (the daemon emits one at shutdown)".into()
    });
    if client != Client::Curl {
        c.check(
            run.client_stdout.contains("FINAL: done: 2 tools used"),
            || {
                format!(
                    "client stdout lacks `FINAL: done: 2 tools used`: {:?}",
                    run.client_stdout
                )
            },
        );
    }
    c.finish(ev, &run.related(), &ctx);
}

/// An effect of `tool`: some event matching `is_it` must exist, be a child
/// span of the tool.call, be listed in its effects and share its trace.
pub fn check_effect(
    c: &mut Checker,
    ev: &Events,
    tool: &Event,
    trace: &str,
    w: &str,
    what: &str,
    is_it: impl Fn(&Event) -> bool,
    extra: impl Fn(&Event) -> Option<String>,
) {
    let candidates: Vec<&Event> = ev.all.iter().filter(|x| is_it(x)).collect();
    if candidates.is_empty() {
        c.fail(format!("{w}: no {what} at all"));
        return;
    }
    let effects = &tool.tool.as_ref().expect("tool.call").effects;
    let good = candidates.iter().find(|x| {
        x.parent_span_id.as_deref() == Some(tool.span_id.as_str())
            && effects.contains(&x.id)
            && x.trace_id == trace
            && extra(x).is_none()
    });
    if good.is_none() {
        let mut why = String::new();
        for x in &candidates {
            let _ = write!(
                why,
                "\n      {} — parent_span_id {} (want {}), in effects: {}, trace {} (want {}){}",
                describe(x),
                x.parent_span_id.as_deref().unwrap_or("-"),
                tool.span_id,
                effects.contains(&x.id),
                short(&x.trace_id),
                short(trace),
                extra(x).map(|m| format!(", {m}")).unwrap_or_default()
            );
        }
        c.fail(format!("{w}: no {what} linked to it; candidates:{why}"));
    }
}

pub fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}
