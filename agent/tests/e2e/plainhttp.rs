//! Plain HTTP to local model servers (`[capture] plain_http_ports`,
//! agent-ebpf/src/plain.rs): a tool-using agent on the official `ollama`
//! client against an Ollama-shaped server on 127.0.0.1:11434, and one on the
//! official `openai` SDK against a vLLM-shaped (OpenAI-compatible) server
//! on 127.0.0.1:8000, both without TLS. The daemon runs with its default
//! port list, unless the test finds the default port taken on this host:
//! then the mock listens on a free port that the test's config names.
//!
//! `aitrail agent --record FILE` in the same run, then `aitrail replay
//! FILE`: the replay must give the same llm.call and tool.call events.

use std::{fs, net::TcpListener, os::unix::fs::PermissionsExt, path::PathBuf, process::Stdio};

use aitrail::event::Event;
use serde_json::Value;

use super::*;
use crate::common::{
    answers, assert_no_secrets, check_effect, cut, env_or, grace, json_text_eq, make_work,
    mock_usage, repo_root, require_root, serial, Run, SYSTEM_PROMPT, TOOL_NAMES,
};

const OLLAMA_MODEL: &str = "llama3.2";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlainClient {
    /// tests/clients/agent_ollama.py (`ollama` package) → /api/chat
    Ollama,
    /// tests/clients/agent_openai.py (`openai` SDK) → /v1/chat/completions
    OpenAi,
}

impl PlainClient {
    fn default_port(self) -> u16 {
        match self {
            PlainClient::Ollama => 11434,
            PlainClient::OpenAi => 8000,
        }
    }
}

/// The default port when it is free here, else a free one and a config
/// that names it.
fn model_port(dir: &TestDir, default: u16) -> (u16, Vec<String>) {
    if TcpListener::bind(("127.0.0.1", default)).is_ok() {
        return (default, Vec::new());
    }
    let port = crate::common::free_port();
    eprintln!("e2e: port {default} is taken on this host; the mock listens on {port}");
    let cfg = dir.join("plain-agent.toml");
    fs::write(&cfg, format!("[capture]\nplain_http_ports = [{port}]\n")).expect("write config");
    (port, vec!["--config".into(), cfg.display().to_string()])
}

struct PlainRun {
    run: Run,
    recording: Option<PathBuf>,
}

fn run_plain(name: &str, client: PlainClient, stream: bool, record: bool) -> PlainRun {
    require_root();
    let _serial = serial();
    let dir = TestDir::new(name);
    let (port, mut scope) = model_port(&dir, client.default_port());
    let mut mock = MockServer::start_plain(&dir, port);
    let w = make_work(&dir, name);
    let clients = repo_root().join("tests/clients");
    let script = match client {
        PlainClient::Ollama => "agent_ollama.py",
        PlainClient::OpenAi => "agent_openai.py",
    };
    let mut args = vec![
        clients.join(script).display().to_string(),
        "--base-url".into(),
        mock.base_url.clone(),
        "--file".into(),
        w.file.clone(),
        "--command".into(),
        w.command.clone(),
    ];
    if stream {
        args.push("--stream".into());
    }
    let env = match client {
        PlainClient::Ollama => vec![],
        PlainClient::OpenAi => vec![("OPENAI_API_KEY", OPENAI_KEY.to_string())],
    };
    let mut launched = Launched::spawn(&dir, name, &python(), &args, &env);
    let client_pid = launched.pid();
    let recording = record.then(|| dir.join("daemon/kernel.rec"));
    if let Some(r) = &recording {
        scope.extend(["--record".into(), r.display().to_string()]);
    }
    scope.extend(["--pid".into(), client_pid.to_string()]);
    let mut daemon = Daemon::start_scoped(&dir, &scope);
    launched.release();
    let client_stdout = launched.wait_success(CLIENT_TIMEOUT);
    daemon.assert_running("while the client ran");
    grace();
    daemon.stop();
    mock.stop();
    let events = Events::read(&daemon.events);
    assert_no_secrets(&daemon);
    let mock_records = mock.llm_records();
    assert_eq!(
        mock_records.len(),
        3,
        "the mock answered {} LLM calls, the client should have made 3 (see {})",
        mock_records.len(),
        mock.record.display()
    );
    PlainRun {
        run: Run {
            daemon_dir: daemon.dir.clone(),
            dir,
            client: Client::OpenAiPy,
            stream,
            port,
            file: w.file,
            file_content: w.file_content,
            workdir: w.workdir,
            command: w.command,
            client_pid,
            client_stdout,
            mock_records,
            events,
            outsider_pid: None,
            outsider_requests: 0,
        },
        recording,
    }
}

/// The last agent.health's counter or drop count `k`.
fn health(ev: &Events, k: &str) -> Option<u64> {
    let h = ev.of_kind(kind::AGENT_HEALTH);
    let last = h.last().and_then(|h| h.health.as_ref())?;
    last.counters
        .get(k)
        .or_else(|| last.dropped.get(k))
        .copied()
}

/// What the kernel side says of the run: plain calls were copied, none
/// lost, cut or missed, and every chunk was HTTP.
fn check_kernel(c: &mut Checker, ev: &Events) {
    c.check(health(ev, "kernel_plain_calls").unwrap_or(0) >= 6, || {
        format!(
            "too few plain-HTTP calls copied: kernel_plain_calls = {:?}",
            health(ev, "kernel_plain_calls")
        )
    });
    for k in [
        "kernel_plain_truncated",
        "kernel_plain_bytes_lost",
        "kernel_plain_unsupported",
        "kernel_ringbuf_full",
        "kernel_read_failed",
        "stream_gap_bytes",
        "tls_chunks_not_http",
    ] {
        c.eq(k, Some(0), health(ev, k));
    }
}

/// The Ollama conversation: three /api/chat calls named `ollama`, the tool
/// calls with the ids the daemon gives them (Ollama sends none), usage from
/// `prompt_eval_count`/`eval_count`, and each tool's kernel-seen effect.
fn check_ollama(run: &Run) {
    let ev = &run.events;
    let answers = answers(&run.mock_records);
    let mut c = Checker::default();
    let ctx = format!(
        "ollama stream={} — run dir {}",
        run.stream,
        run.dir.path.display()
    );
    let calls = ev.llm_calls();
    if !c.eq("number of llm.call events", 3, calls.len()) {
        c.finish(ev, &run.related(), &ctx);
        return;
    }
    let trace = calls[0].trace_id.clone();
    let mut ids: Vec<Option<String>> = Vec::new();
    for (i, (e, a)) in calls.iter().zip(&answers).enumerate() {
        let w = format!("llm.call[{i}]");
        let Some(l) = &e.llm else {
            c.fail(format!("{w} has no `llm` member"));
            ids.push(None);
            continue;
        };
        c.eq(
            &format!("{w}.trace_id"),
            trace.as_str(),
            e.trace_id.as_str(),
        );
        c.eq(&format!("{w}.provider"), "ollama", l.provider.as_str());
        c.eq(&format!("{w}.operation"), "chat", l.operation.as_str());
        c.eq(&format!("{w}.path"), "/api/chat", l.path.as_str());
        c.eq(
            &format!("{w}.model"),
            Some(OLLAMA_MODEL),
            l.model.as_deref(),
        );
        c.eq(&format!("{w}.stream"), run.stream, l.stream);
        c.eq(&format!("{w}.status"), Some(200), l.status);
        c.eq(&format!("{w}.truncated"), false, l.truncated);
        c.eq(&format!("{w}.role"), aitrail::event::Role::Client, l.role);
        c.eq(&format!("{w}.server.port"), run.port, l.server.port);
        c.eq(
            &format!("{w}.server.host"),
            "127.0.0.1",
            l.server.host.as_str(),
        );
        c.eq(
            &format!("{w}.process.pid (the client)"),
            Some(run.client_pid),
            e.process.as_ref().map(|p| p.pid),
        );
        let mut tools: Vec<&str> = l.tools.iter().map(String::as_str).collect();
        tools.sort_unstable();
        c.eq(&format!("{w}.tools (declared)"), TOOL_NAMES.to_vec(), tools);
        c.check(
            l.system.as_ref().is_some_and(|s| s.text == SYSTEM_PROMPT),
            || format!("{w}.system is not the system prompt: {:?}", l.system),
        );
        c.check(
            l.messages
                .iter()
                .any(|m| m.role == "user" && m.content.contains(&format!("FILE: {}", run.file))),
            || format!("{w}: no user message with the prompt"),
        );
        let results: Vec<_> = l.messages.iter().filter(|m| m.role == "tool").collect();
        c.eq(&format!("{w}: tool-result messages"), a.step, results.len());
        c.eq(
            &format!("{w}.usage"),
            (Some(a.usage.0), Some(a.usage.1)),
            (l.usage.input_tokens, l.usage.output_tokens),
        );
        c.eq(
            &format!("{w}.usage (mock formula)"),
            mock_usage(a.step),
            a.usage,
        );
        if let (Some(name), Some(args)) = (&a.tool, &a.arguments) {
            if c.eq(
                &format!("{w}: output.tool_calls"),
                1,
                l.output.tool_calls.len(),
            ) {
                let t = &l.output.tool_calls[0];
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
                c.check(!t.id.is_empty(), || format!("{w}: the tool call got no id"));
                ids.push(Some(t.id.clone()));
            } else {
                ids.push(None);
            }
        } else {
            let text = format!("done: {} tools used", a.step);
            c.eq(
                &format!("{w}.output.text"),
                text.as_str(),
                l.output.text.as_str(),
            );
            c.eq(
                &format!("{w}.output.tool_calls"),
                0,
                l.output.tool_calls.len(),
            );
            c.eq(
                &format!("{w}.output.finish_reason"),
                Some("stop"),
                l.output.finish_reason.as_deref(),
            );
            ids.push(None);
        }
    }
    let tool_events = ev.of_kind(kind::TOOL_CALL);
    c.eq("number of tool.call events", 2, tool_events.len());
    for (i, a) in answers.iter().enumerate() {
        let (Some(name), Some(Some(id))) = (&a.tool, ids.get(i)) else {
            continue;
        };
        let w = format!("tool.call {name} ({id})");
        let found: Vec<&&Event> = tool_events
            .iter()
            .filter(|e| e.tool.as_ref().is_some_and(|t| t.call_id == *id))
            .collect();
        if !c.eq(
            &format!("{w}: tool.call events with this id"),
            1,
            found.len(),
        ) {
            continue;
        }
        let e = found[0];
        let t = e.tool.as_ref().expect("filtered");
        c.eq(&format!("{w}.name"), name.as_str(), t.name.as_str());
        c.eq(
            &format!("{w}.parent_span_id (its llm.call)"),
            Some(calls[i].span_id.as_str()),
            e.parent_span_id.as_deref(),
        );
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
                |_| None,
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
                            ex.filename.rsplit('/').next() == Some("ls")
                                && ex.args.iter().any(|a| a == &run.workdir)
                        })
                },
                |_| None,
            );
        }
    }
    c.check(
        run.client_stdout.contains("FINAL: done: 2 tools used"),
        || format!("client stdout: {:?}", run.client_stdout),
    );
    check_kernel(&mut c, ev);
    c.finish(ev, &run.related(), &ctx);
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn ollama_python_plain_http_stream() {
    check_ollama(&run_plain("ollama-plain-stream", PlainClient::Ollama, true, false).run);
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn ollama_python_plain_http_json() {
    check_ollama(&run_plain("ollama-plain-json", PlainClient::Ollama, false, false).run);
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn openai_sdk_to_vllm_plain_http() {
    for stream in [false, true] {
        let name = if stream {
            "vllm-plain-stream"
        } else {
            "vllm-plain"
        };
        let r = run_plain(name, PlainClient::OpenAi, stream, false);
        check_conversation(&r.run);
        let mut c = Checker::default();
        check_kernel(&mut c, &r.run.events);
        c.finish(&r.run.events, &r.run.related(), name);
    }
}

/// The llm.call and tool.call content the replay must reproduce.
fn exchange_summary(ev: &Events) -> Vec<Value> {
    ev.all
        .iter()
        .filter(|e| e.kind == kind::LLM_CALL || e.kind == kind::TOOL_CALL)
        .map(|e| {
            if let Some(l) = &e.llm {
                serde_json::json!({
                    "kind": e.kind, "provider": l.provider, "path": l.path, "model": l.model,
                    "stream": l.stream, "status": l.status, "messages": l.messages.len(),
                    "tools": l.tools, "text": l.output.text,
                    "tool_calls": l.output.tool_calls.iter()
                        .map(|t| (t.id.clone(), t.name.clone(), t.arguments.clone()))
                        .collect::<Vec<_>>(),
                    "usage": [l.usage.input_tokens, l.usage.output_tokens],
                    "pid": e.process.as_ref().map(|p| p.pid),
                })
            } else {
                let t = e.tool.as_ref().expect("tool.call has `tool`");
                let effects: Vec<String> = t
                    .effects
                    .iter()
                    .filter_map(|id| ev.by_id(id))
                    .map(|x| {
                        let what = x
                            .exec
                            .as_ref()
                            .map(|ex| ex.filename.clone())
                            .or_else(|| x.file.as_ref().map(|f| f.path.clone()))
                            .unwrap_or_default();
                        format!("{} {what}", x.kind)
                    })
                    .collect();
                serde_json::json!({
                    "kind": e.kind, "call_id": t.call_id, "name": t.name,
                    "arguments": t.arguments, "result": t.result, "effects": effects,
                })
            }
        })
        .collect()
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn recording_of_the_real_kernel_replays_to_the_same_events() {
    let r = run_plain("record-replay", PlainClient::Ollama, true, true);
    check_ollama(&r.run);
    let rec = r.recording.expect("recorded");
    let mode = fs::metadata(&rec)
        .expect("the recording exists")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the recording holds plaintext: mode 0600"
    );
    let out = r.run.dir.join("replayed.ndjson");
    let exe = env_or("AITRAIL_E2E_DAEMON_BIN", env!("CARGO_BIN_EXE_aitrail"));
    let replay = std::process::Command::new(&exe)
        .arg("replay")
        .arg(&rec)
        .arg("--sink")
        .arg(format!("file:{}", out.display()))
        .stdin(Stdio::null())
        .output()
        .expect("run aitrail replay");
    assert!(
        replay.status.success(),
        "aitrail replay failed ({}): {}",
        replay.status,
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed = Events::read(&out);
    let live = exchange_summary(&r.run.events);
    let again = exchange_summary(&replayed);
    assert_eq!(live.len(), 5, "3 llm.call + 2 tool.call live: {live:#?}");
    assert_eq!(
        live,
        again,
        "the replay of {} gave other llm.call/tool.call events than the live run",
        rec.display()
    );
}
