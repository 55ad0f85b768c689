//! Gemini CLI (`@google/gemini-cli`, a bundled JavaScript program): node's
//! fetch (undici) over the OpenSSL 3.0 linked into `/usr/bin/node`, whose
//! `SSL_read`/`SSL_write(_ex)` the daemon hooks; HTTP/1.1 with keep-alive,
//! `POST /v1beta/models/M:streamGenerateContent?alt=sse`, the key in
//! `x-goog-api-key`. The mock (tests/mock/mock_llm.py) asks for the CLI's
//! shell tool `run_shell_command`, the CLI really runs the command, and the
//! mock then answers with text.
//!
//! Nothing may leave the host: the CLI gets a HOME of its own whose
//! settings turn off usage statistics, telemetry and update checks, and a
//! proxy on a closed loopback port for anything but 127.0.0.1; the test
//! checks that every connection the daemon saw went to loopback.

use std::fs;

use aitrail::event::Event;

use super::*;

/// The pinned Gemini CLI (tests/setup-test-deps.sh).
const GEMINI_CLI_VERSION: &str = "0.61.0";
const GEMINI_MODEL: &str = "gemini-2.5-flash";
/// Holds `AITRAIL-SECRET-0123456789`, so the common secret scan looks for
/// it too.
const GEMINI_KEY: &str = "AIzaSyAITRAIL-SECRET-0123456789abcdefXYZ";

fn gemini_js() -> String {
    let cache = std::env::var_os("AITRAIL_TEST_CACHE").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            std::path::Path::new(&home).join(".cache/aitrail-tests")
        },
        std::path::PathBuf::from,
    );
    let js = cache.join(format!(
        "gemini-cli-{GEMINI_CLI_VERSION}/package/bundle/gemini.js"
    ));
    assert!(
        js.is_file(),
        "{} is missing: run tests/setup-test-deps.sh (it installs the pinned Gemini CLI)",
        js.display()
    );
    js.display().to_string()
}

/// A HOME for the CLI: API-key auth, and nothing that phones home.
fn gemini_home(dir: &TestDir) -> String {
    let home = dir.join("work/home");
    let gemini = home.join(".gemini");
    fs::create_dir_all(&gemini).expect("mkdir .gemini");
    let settings = serde_json::json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "general": {"enableAutoUpdate": false, "enableAutoUpdateNotification": false},
        "privacy": {"usageStatisticsEnabled": false},
        "telemetry": {"enabled": false},
    });
    fs::write(
        gemini.join("settings.json"),
        serde_json::to_vec_pretty(&settings).expect("settings json"),
    )
    .expect("write settings.json");
    home.display().to_string()
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn gemini_cli_runs_a_shell_command_through_node_openssl() {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("gemini-cli");
    let pki = make_cert(&dir);
    let mut mock = MockServer::start(&dir, &pki);
    let js = gemini_js();
    let home = gemini_home(&dir);
    let marker = dir.join("work/gemini-was-here.txt");
    // A pipe, so the shell really execs a program (tee) and the command's
    // output comes back as the tool's result.
    let command = format!("echo gemini-was-here | tee {}", marker.display());
    let prompt = format!("Run the command for me.\nCMD: {command}\n");
    // `env -i`: the CLI sees only this environment (no key or proxy of the
    // caller's); the launcher's `exec` keeps the scoped pid.
    let args: Vec<String> = [
        "-i".to_string(),
        "PATH=/usr/local/bin:/usr/bin:/bin".into(),
        format!("HOME={home}"),
        "TERM=dumb".into(),
        format!("GEMINI_API_KEY={GEMINI_KEY}"),
        format!("GOOGLE_GEMINI_BASE_URL={}", mock.base_url),
        format!("NODE_EXTRA_CA_CERTS={}", pki.ca.display()),
        "GEMINI_CLI_TRUST_WORKSPACE=true".into(),
        // Anything not for the mock goes to a closed port and fails here.
        "HTTPS_PROXY=http://127.0.0.1:9".into(),
        "HTTP_PROXY=http://127.0.0.1:9".into(),
        "NO_PROXY=127.0.0.1".into(),
        common::node(),
        js,
        "-m".into(),
        GEMINI_MODEL.into(),
        "--approval-mode".into(),
        "yolo".into(),
        "-p".into(),
        prompt,
    ]
    .into();
    let mut client = Launched::spawn(&dir, "gemini", "/usr/bin/env", &args, &[]);
    let mut daemon = Daemon::start_scoped(
        &dir,
        &[
            "--pid".into(),
            client.pid().to_string(),
            "--watch-all".into(),
        ],
    );
    client.release();
    let out = client.wait_success(CLIENT_TIMEOUT);
    common::grace();
    daemon.stop();
    mock.stop();
    common::assert_no_secrets(&daemon);
    let hits = common::find_secrets(&daemon.dir, &[GEMINI_KEY]);
    assert!(
        hits.is_empty(),
        "the Gemini key reached disk:\n{}",
        hits.join("\n")
    );

    // The world did what the test says: two turns, the tool ran.
    let reqs = mock.llm_records();
    assert_eq!(
        reqs.len(),
        2,
        "mock requests: {reqs:?}\ngemini output: {out}"
    );
    assert_eq!(
        reqs[0]["tool"], "run_shell_command",
        "the mock did not ask for the shell tool: {:?}",
        reqs[0]
    );
    assert_eq!(
        fs::read_to_string(&marker).ok().as_deref(),
        Some("gemini-was-here\n"),
        "Gemini CLI did not run the command; output: {out}"
    );
    assert!(out.contains("done: 1 tools used"), "gemini output: {out}");

    let ev = Events::read(&daemon.events);
    let mut c = Checker::default();
    let calls: Vec<&Event> = ev
        .llm_calls()
        .into_iter()
        .filter(|e| {
            e.llm
                .as_ref()
                .is_some_and(|l| l.path.contains(":streamGenerateContent"))
        })
        .collect();
    c.eq("llm.calls to streamGenerateContent", 2, calls.len());
    for (i, e) in calls.iter().enumerate() {
        let l = e.llm.as_ref().expect("llm");
        let (input, output) = common::mock_usage(i);
        c.eq("provider", "gemini", l.provider.as_str());
        c.eq("operation", "generate_content", l.operation.as_str());
        c.eq("model", Some(GEMINI_MODEL), l.model.as_deref());
        c.eq(
            "path",
            format!("/v1beta/models/{GEMINI_MODEL}:streamGenerateContent?alt=sse"),
            l.path.clone(),
        );
        c.eq("stream", true, l.stream);
        c.eq("status", Some(200), l.status);
        c.eq("server port", mock.port, l.server.port);
        c.eq("input tokens", Some(input), l.usage.input_tokens);
        c.eq("output tokens", Some(output), l.usage.output_tokens);
        c.check(!l.truncated, || format!("call {i} truncated"));
        c.check(l.api_key_id.is_some(), || {
            format!("call {i}: no api_key_id from x-goog-api-key")
        });
        c.check(
            l.system.as_ref().is_some_and(|s| !s.text.is_empty()),
            || format!("call {i}: no system instruction"),
        );
        c.check(
            l.messages
                .iter()
                .any(|m| m.role == "user" && m.content.contains("CMD: echo gemini-was-here")),
            || format!("call {i}: the prompt is missing from {:?}", l.messages),
        );
        c.check(l.tools.iter().any(|t| t == "run_shell_command"), || {
            format!("call {i}: run_shell_command not declared in {:?}", l.tools)
        });
    }
    let mut tool_span = None;
    if let [first, second] = calls[..] {
        c.eq("one trace", &first.trace_id, &second.trace_id);
        let l = first.llm.as_ref().expect("llm");
        let asked: Vec<_> = l
            .output
            .tool_calls
            .iter()
            .filter(|t| t.name == "run_shell_command" && t.arguments.contains(&command))
            .collect();
        c.eq("run_shell_command calls in the answer", 1, asked.len());
        let l2 = second.llm.as_ref().expect("llm");
        c.eq(
            "final answer",
            "done: 1 tools used",
            l2.output.text.as_str(),
        );
        c.eq(
            "finish reason",
            Some("STOP"),
            l2.output.finish_reason.as_deref(),
        );
        let tools: Vec<&Event> = ev
            .of_kind(kind::TOOL_CALL)
            .into_iter()
            .filter(|e| {
                e.tool
                    .as_ref()
                    .is_some_and(|t| t.name == "run_shell_command")
            })
            .collect();
        c.eq("run_shell_command tool.calls", 1, tools.len());
        if let (Some(t), Some(spec)) = (tools.first(), asked.first()) {
            let tc = t.tool.as_ref().expect("tool");
            c.eq("tool.call id", spec.id.as_str(), tc.call_id.as_str());
            c.eq("tool.call trace", &first.trace_id, &t.trace_id);
            c.eq(
                "tool.call parent",
                Some(first.span_id.as_str()),
                t.parent_span_id.as_deref(),
            );
            // The CLI's functionResponse, from the second request.
            c.check(
                tc.result
                    .as_deref()
                    .is_some_and(|r| r.contains("gemini-was-here")),
                || format!("tool result: {:?}", tc.result),
            );
            tool_span = Some((t.span_id.clone(), tc.effects.clone()));
        }
    }
    // The shell the CLI started for the command (`bash -c` with the command
    // wrapped in its own script), and tee in it: child spans of the tool
    // call and among its effects. (The CLI's own argv holds the prompt, so
    // the command too: only shells and tee are looked at.)
    let execs: Vec<&Event> = ev
        .of_kind(kind::PROCESS_EXEC)
        .into_iter()
        .filter(|e| {
            e.exec.as_ref().is_some_and(|x| {
                (x.filename.ends_with("/bash")
                    && x.args.get(1).is_some_and(|a| a == "-c")
                    && x.args.get(2).is_some_and(|a| a.contains(&command)))
                    || (x.filename.ends_with("/tee")
                        && x.args.iter().any(|a| a == &marker.display().to_string()))
            })
        })
        .collect();
    c.check(
        execs.iter().any(|e| {
            e.exec
                .as_ref()
                .is_some_and(|x| x.filename.ends_with("/bash"))
        }),
        || "no bash -c running the command".into(),
    );
    c.check(
        execs.iter().any(|e| {
            e.exec
                .as_ref()
                .is_some_and(|x| x.filename.ends_with("/tee"))
        }),
        || "no exec of tee".into(),
    );
    if let Some((span, effects)) = &tool_span {
        for x in &execs {
            c.eq(
                "exec parent",
                Some(span.as_str()),
                x.parent_span_id.as_deref(),
            );
            c.check(effects.contains(&x.id), || {
                format!("the exec {} is not among the tool's effects", x.id)
            });
        }
    }
    // Every connection the CLI's tree made stayed on loopback.
    let connects = ev.of_kind(kind::NET_CONNECT);
    c.check(
        connects
            .iter()
            .any(|e| e.net.as_ref().is_some_and(|n| n.port == mock.port)),
        || "no net.connect to the mock".into(),
    );
    for e in &connects {
        let n = e.net.as_ref().expect("net");
        if n.family == "ipv4" || n.family == "ipv6" {
            c.check(n.address == "127.0.0.1" || n.address == "::1", || {
                format!("a connection left loopback: {}:{}", n.address, n.port)
            });
        }
    }
    c.finish(&ev, &[], "gemini cli");
}
