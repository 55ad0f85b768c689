//! Clients whose TLS is a statically linked, stripped BoringSSL: Bun, and
//! Claude Code (a Bun single-file executable). The pinned npm builds are
//! installed by tests/setup-test-deps.sh under `AITRAIL_TEST_NPM_DIR`
//! (default /var/cache/aitrail-test/npm).

use std::path::PathBuf;

use aitrail::{capture::stacks::boringssl, event::Event};

use super::*;
use common::{check_effect, cut, ANTHROPIC_KEY};

/// The pinned builds and where their functions are, read by hand from the
/// disassembly against BoringSSL's ssl_lib.cc (virtual addresses):
/// Bun 1.4.5: SSL_write 0x2607c30, SSL_read 0x2586500, SSL_shutdown
/// 0x25b4290 (.text at 0x1a40d00, file offset 0x1838d00).
/// Claude Code 2.1.332 (Bun 1.4.6): SSL_write 0x3531300, SSL_read 0x35314b0,
/// SSL_shutdown 0x35341f0 (.text at 0x211cd00, file offset 0x1f1bd00).
/// The locator must find exactly these file offsets.
const BUN_OFFSETS: (u64, u64, u64) = (0x23f_fc30, 0x237_e500, 0x23a_c290);
const CLAUDE_OFFSETS: (u64, u64, u64) = (0x333_0300, 0x333_04b0, 0x333_31f0);

fn npm_dir() -> PathBuf {
    std::env::var_os("AITRAIL_TEST_NPM_DIR")
        .filter(|v| !v.is_empty())
        .map_or_else(
            || PathBuf::from("/var/cache/aitrail-test/npm"),
            PathBuf::from,
        )
}

fn npm_bin(rel: &str) -> PathBuf {
    let p = npm_dir().join("node_modules").join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run tests/setup-test-deps.sh (it installs the pinned Bun and Claude Code)",
        p.display()
    );
    p
}

fn bun() -> PathBuf {
    npm_bin("@oven/bun-linux-x64/bin/bun")
}

fn claude() -> PathBuf {
    npm_bin("@anthropic-ai/claude-code-linux-x64/claude")
}

fn locate(path: &PathBuf) -> boringssl::BoringOffsets {
    let bytes = std::fs::read(path).expect("read the binary");
    boringssl::locate(path, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
#[ignore = "needs the npm packages of tests/setup-test-deps.sh; run by cargo xtask test"]
fn stripped_boringssl_of_the_pinned_bun_and_claude_code_is_located() {
    for (path, want) in [(bun(), BUN_OFFSETS), (claude(), CLAUDE_OFFSETS)] {
        let o = locate(&path);
        eprintln!(
            "{}: {} in {:?}\n  {}",
            path.display(),
            o.source.as_str(),
            o.took,
            o.evidence.join("\n  ")
        );
        assert_eq!(
            (o.write, o.read, o.shutdown),
            (want.0, want.1, Some(want.2)),
            "{}: {o:#?}",
            path.display()
        );
        assert_eq!(o.source, boringssl::Source::Analysis);
        // The same build-id again: from the cache, checked against the bytes.
        let again = locate(&path);
        assert_eq!(again.source, boringssl::Source::MemoryCache);
        assert_eq!((again.write, again.read), (o.write, o.read));
        // What the disk cache keeps, proven again on the file as a
        // restarted daemon does before use.
        let bytes = std::fs::read(&path).expect("read the binary");
        let proven = boringssl::reprove(&path, &bytes, o.entries)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!(
            "  proven again from the cached entries in {:?}",
            proven.took
        );
        assert_eq!(proven.source, boringssl::Source::DiskCache);
        assert_eq!(
            (proven.write, proven.read, proven.shutdown),
            (o.write, o.read, o.shutdown)
        );
        // Entries that name other functions are refused.
        let swapped = boringssl::Entries {
            write: o.entries.read,
            read: o.entries.write,
            ..o.entries
        };
        assert!(boringssl::reprove(&path, &bytes, swapped).is_err());
    }
}

/// Starts the daemon scoped to `pid`, with `exe` in `capture.watch_exe`: the
/// daemon locates its BoringSSL before it reports ready, as a deployment
/// that lists its agents does (a debug build of the daemon takes seconds for
/// it, far longer than the client waits before its first request).
fn daemon_watching(dir: &TestDir, pid: u32, exe: &str) -> Daemon {
    let cfg = dir.join("daemon/agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[capture]\nwatch_exe = [{}]\n",
            serde_json::to_string(exe).expect("json")
        ),
    )
    .expect("write the daemon config");
    Daemon::start_scoped(
        dir,
        &[
            "--pid".into(),
            pid.to_string(),
            "--config".into(),
            cfg.display().to_string(),
        ],
    )
}

/// The last `agent.health` counters.
fn last_counters(ev: &Events) -> std::collections::BTreeMap<String, u64> {
    ev.of_kind(kind::AGENT_HEALTH)
        .last()
        .and_then(|h| h.health.as_ref())
        .map(|h| h.counters.clone())
        .expect("a final agent.health")
}

fn user_prompt(e: &Event) -> String {
    e.llm
        .as_ref()
        .and_then(|l| l.messages.iter().find(|m| m.role == "user"))
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn bun_fetch_is_captured_through_its_stripped_boringssl() {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("bun-fetch");
    let pki = make_cert(&dir);
    let mut mock = MockServer::start(&dir, &pki);
    let file = dir.join("work/bun-notes.txt");
    std::fs::write(&file, "notes for the bun test\n").expect("write work file");
    let script = common::repo_root().join("tests/clients/bun_fetch.js");
    let args = vec![
        script.display().to_string(),
        "--base-url".into(),
        mock.base_url.clone(),
        "--file".into(),
        file.display().to_string(),
    ];
    let env = [
        ("NODE_EXTRA_CA_CERTS", pki.ca.display().to_string()),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY.to_string()),
        ("HOME", dir.join("work").display().to_string()),
    ];
    let bun = bun().display().to_string();
    let mut client = Launched::spawn(&dir, "bun", &bun, &args, &env);
    let mut daemon = daemon_watching(&dir, client.pid(), &bun);
    client.release();
    let out = client.wait_success(CLIENT_TIMEOUT);
    assert!(
        out.contains("FINAL: done: 1 tools used"),
        "bun output: {out}"
    );
    common::grace();
    daemon.stop();
    mock.stop();
    common::assert_no_secrets(&daemon);

    let answers = mock.llm_records();
    assert_eq!(answers.len(), 2, "the mock answered {answers:?}");
    let ev = Events::read(&daemon.events);
    let mut c = Checker::default();
    let counters = last_counters(&ev);
    c.check(located(&counters) >= 1, || {
        format!("Bun's BoringSSL was not located: {counters:?}")
    });
    let calls = ev.llm_calls();
    c.eq("llm.call events", 2, calls.len());
    for (step, (e, stream)) in calls.iter().zip([false, true]).enumerate() {
        let l = e.llm.as_ref().expect("llm");
        let w = format!("llm.call #{step}");
        c.eq(&format!("{w}.provider"), "anthropic", l.provider.as_str());
        c.eq(&format!("{w}.path"), "/v1/messages", l.path.as_str());
        c.eq(&format!("{w}.stream"), stream, l.stream);
        c.eq(&format!("{w}.status"), Some(200), l.status);
        c.eq(
            &format!("{w}.model"),
            Some("claude-sonnet-4-6"),
            l.model.as_deref(),
        );
        c.check(
            user_prompt(e).contains(&format!("FILE: {}", file.display())),
            || format!("{w}: prompt {:?}", user_prompt(e)),
        );
        c.check(
            l.system
                .as_ref()
                .is_some_and(|s| s.text.contains("aitrail bun test")),
            || format!("{w}: system {:?}", l.system),
        );
        let (i, o) = common::mock_usage(step);
        c.eq(&format!("{w}.usage.input"), Some(i), l.usage.input_tokens);
        c.eq(&format!("{w}.usage.output"), Some(o), l.usage.output_tokens);
        c.check(l.api_key_id.is_some(), || format!("{w}: no api_key_id"));
        c.eq(
            &format!("{w}.process.exe"),
            Some(bun.as_str()),
            e.process.as_ref().map(|p| p.exe.as_str()),
        );
    }
    if let Some(first) = calls.first() {
        let l = first.llm.as_ref().expect("llm");
        c.check(
            l.output.tool_calls.iter().any(|t| {
                t.name == "read_file" && t.arguments.contains(&file.display().to_string())
            }),
            || {
                format!(
                    "first call: no read_file tool call: {:?}",
                    l.output.tool_calls
                )
            },
        );
    }
    if let Some(second) = calls.get(1) {
        let l = second.llm.as_ref().expect("llm");
        c.eq(
            "second call: output",
            "done: 1 tools used",
            l.output.text.as_str(),
        );
        c.check(
            l.messages
                .iter()
                .any(|m| m.role == "tool" && m.content.contains("notes for the bun test")),
            || format!("second call: no tool result in {:?}", l.messages),
        );
    }
    c.finish(&ev, &[], "bun fetch");
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn claude_code_bash_tool_call_is_captured_and_its_exec_linked() {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("claude-code");
    let pki = make_cert(&dir);
    let mut mock = MockServer::start(&dir, &pki);
    let home = dir.join("work/home");
    std::fs::create_dir_all(&home).expect("mkdir home");
    let prompt = "run: cat /etc/hostname";
    let args = vec![
        "-p".to_string(),
        prompt.into(),
        "--allowedTools".into(),
        "Bash".into(),
    ];
    let env = [
        ("ANTHROPIC_BASE_URL", mock.base_url.clone()),
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY.to_string()),
        ("NODE_EXTRA_CA_CERTS", pki.ca.display().to_string()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_string()),
        ("DISABLE_AUTOUPDATER", "1".to_string()),
        ("HOME", home.display().to_string()),
    ];
    let claude = claude().display().to_string();
    let mut client = Launched::spawn(&dir, "claude", &claude, &args, &env);
    let mut daemon = daemon_watching(&dir, client.pid(), &claude);
    client.release();
    let out = client.wait_success(CLIENT_TIMEOUT);
    common::grace();
    daemon.stop();
    mock.stop();
    common::assert_no_secrets(&daemon);

    let hostname = std::fs::read_to_string("/etc/hostname")
        .expect("read /etc/hostname")
        .trim()
        .to_owned();
    assert!(
        out.contains("done: 1 tools used"),
        "claude's answer: {out:?}"
    );
    // What Claude Code really sent: the turns the mock answered.
    let answers = mock.llm_records();
    let turns: Vec<_> = answers
        .iter()
        .filter(|r| r["step"].is_u64() && r["count_tokens"].is_null())
        .collect();
    assert_eq!(turns.len(), 2, "the mock answered {answers:?}");
    let model = turns[0]["model"].as_str().expect("model").to_owned();

    let ev = Events::read(&daemon.events);
    let mut c = Checker::default();
    let counters = last_counters(&ev);
    c.check(located(&counters) >= 1, || {
        format!("Claude Code's BoringSSL was not located: {counters:?}")
    });
    let calls: Vec<&Event> = ev
        .llm_calls()
        .into_iter()
        .filter(|e| {
            e.llm
                .as_ref()
                .is_some_and(|l| l.path.split('?').next() == Some("/v1/messages"))
        })
        .collect();
    c.eq("llm.call events on /v1/messages", 2, calls.len());
    // Claude Code asks for the beta API, as on api.anthropic.com.
    c.check(
        calls.iter().all(|e| {
            e.llm
                .as_ref()
                .is_some_and(|l| l.path == "/v1/messages?beta=true")
        }),
        || "turns not on /v1/messages?beta=true".into(),
    );
    for (step, e) in calls.iter().enumerate() {
        let l = e.llm.as_ref().expect("llm");
        let w = format!("turn {step}");
        c.eq(&format!("{w}.provider"), "anthropic", l.provider.as_str());
        c.eq(&format!("{w}.stream"), true, l.stream);
        c.eq(&format!("{w}.status"), Some(200), l.status);
        c.eq(
            &format!("{w}.model"),
            Some(model.as_str()),
            l.model.as_deref(),
        );
        c.check(user_prompt(e).contains(prompt), || {
            format!("{w}: prompt {:?}", cut(&user_prompt(e), 300))
        });
        c.check(
            l.system.as_ref().is_some_and(|s| !s.text.is_empty()),
            || format!("{w}: no system prompt"),
        );
        c.check(l.tools.iter().any(|t| t == "Bash"), || {
            format!("{w}: tools {:?}", l.tools)
        });
        let (i, o) = common::mock_usage(step);
        c.eq(&format!("{w}.usage.input"), Some(i), l.usage.input_tokens);
        c.eq(&format!("{w}.usage.output"), Some(o), l.usage.output_tokens);
        c.check(l.api_key_id.is_some(), || format!("{w}: no api_key_id"));
    }
    let trace = calls
        .first()
        .map(|e| e.trace_id.clone())
        .unwrap_or_default();
    if let Some(first) = calls.first() {
        let l = first.llm.as_ref().expect("llm");
        c.check(
            l.output
                .tool_calls
                .iter()
                .any(|t| t.name == "Bash" && t.arguments.contains("cat /etc/hostname")),
            || format!("turn 0: no Bash tool call: {:?}", l.output.tool_calls),
        );
    }
    if let Some(second) = calls.get(1) {
        c.eq(
            "turn 1 in the same trace",
            trace.as_str(),
            second.trace_id.as_str(),
        );
        let l = second.llm.as_ref().expect("llm");
        c.eq(
            "turn 1: output",
            "done: 1 tools used",
            l.output.text.as_str(),
        );
    }
    let tools: Vec<&Event> = ev
        .of_kind(kind::TOOL_CALL)
        .into_iter()
        .filter(|e| e.tool.as_ref().is_some_and(|t| t.name == "Bash"))
        .collect();
    c.eq("Bash tool.call events", 1, tools.len());
    if let (Some(tool), Some(first)) = (tools.first(), calls.first()) {
        let t = tool.tool.as_ref().expect("tool");
        c.check(t.arguments.contains("cat /etc/hostname"), || {
            format!("tool.arguments {}", t.arguments)
        });
        c.eq(
            "tool.call parent (its llm.call)",
            Some(first.span_id.as_str()),
            tool.parent_span_id.as_deref(),
        );
        c.eq("tool.call trace", trace.as_str(), tool.trace_id.as_str());
        c.check(
            t.result.as_deref().is_some_and(|r| r.contains(&hostname)),
            || format!("tool.result {:?} lacks the hostname {hostname:?}", t.result),
        );
        check_effect(
            &mut c,
            &ev,
            tool,
            &trace,
            "Bash tool.call",
            "process.exec of `cat /etc/hostname`",
            |x| {
                x.kind == kind::PROCESS_EXEC
                    && x.exec.as_ref().is_some_and(|ex| {
                        ex.filename.rsplit('/').next() == Some("cat")
                            && ex.args.iter().any(|a| a == "/etc/hostname")
                    })
            },
            |_| None,
        );
    }
    c.finish(&ev, &[], "claude code");
}

/// Executables whose BoringSSL was located, by a search or from the
/// build-id cache (the daemon's default `hook_cache_dir` keeps what an
/// earlier run proved; the entries are proven again before use).
fn located(counters: &std::collections::BTreeMap<String, u64>) -> u64 {
    [
        "kernel_tls_boringssl_located",
        "kernel_tls_boringssl_located_from_cache",
    ]
    .iter()
    .filter_map(|k| counters.get(*k))
    .sum()
}
