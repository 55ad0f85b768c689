//! Privileged end-to-end tests: the real daemon with real eBPF probes, a local
//! HTTPS mock LLM server (tests/mock/mock_llm.py) and real tool-using clients
//! (tests/clients/) that really read a file and really run a command.
//!
//! Run as root: `cargo xtask test`, or
//! `cargo test -p aitrail --test e2e -- --include-ignored --test-threads=1`.
//! Needs python3 with the packages of tests/clients/requirements.txt, node,
//! curl and openssl (tests/setup-test-deps.sh installs them).
//!
//! Each test: temp dir, test PKI, mock server (port 0), the client held by a
//! launcher, `aitrail agent --pid <launcher> --sink file:<dir>/daemon/events.ndjson`
//! with NOTIFY_SOCKET, wait for READY=1, release the client, wait for it,
//! SIGTERM the daemon (exit 0 expected), then check the events. See
//! tests/common/mod.rs and tests/clients/README.md.
//!
//! The `harness_*` tests run the mock server and the clients without the
//! daemon (no root needed): when an e2e test fails, they tell whether the
//! test world or the daemon is at fault.

// Test code: long check lists and by-value comparisons read better here.
#![allow(
    clippy::doc_markdown,
    clippy::too_many_lines,
    clippy::too_many_arguments,
    clippy::many_single_char_names,
    clippy::similar_names,
    clippy::needless_pass_by_value,
    clippy::duration_suboptimal_units
)]

mod boringssl;
mod codex;
#[path = "../common/mod.rs"]
mod common;
mod detection;
mod doctor;
mod gemini_cli;
mod go;
mod mcp_sse;
mod onehost;
mod plainhttp;
mod protocols;
mod spool;
mod stacks;

use std::time::Duration;

use aitrail::event::kind;
use common::{
    check_conversation, make_cert, make_work, python, run_scenario, run_scenario_in, Checker,
    Client, Daemon, Events, Launched, MockServer, ScopeKind, TestDir, CLIENT_TIMEOUT, OPENAI_KEY,
};

// ------------------------------------------------------------------ SDK agents

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn openai_python_sdk_plain() {
    check_conversation(&run_scenario("openai-py", Client::OpenAiPy, false));
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn openai_python_sdk_stream() {
    check_conversation(&run_scenario("openai-py-stream", Client::OpenAiPy, true));
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn anthropic_python_sdk_plain() {
    check_conversation(&run_scenario("anthropic-py", Client::AnthropicPy, false));
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn anthropic_python_sdk_stream() {
    check_conversation(&run_scenario(
        "anthropic-py-stream",
        Client::AnthropicPy,
        true,
    ));
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn bedrock_boto3_converse() {
    check_conversation(&run_scenario("bedrock", Client::BedrockPy, false));
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn bedrock_boto3_converse_stream() {
    check_conversation(&run_scenario("bedrock-stream", Client::BedrockPy, true));
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn bedrock_boto3_invoke_model() {
    check_conversation(&run_scenario(
        "bedrock-invoke",
        Client::BedrockInvokePy,
        false,
    ));
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn bedrock_boto3_invoke_model_stream() {
    check_conversation(&run_scenario(
        "bedrock-invoke-stream",
        Client::BedrockInvokePy,
        true,
    ));
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn node_https_plain() {
    check_conversation(&run_scenario("node", Client::Node, false));
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn node_https_stream() {
    check_conversation(&run_scenario("node-stream", Client::Node, true));
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn curl_plain_post() {
    let run = run_scenario("curl", Client::Curl, false);
    // curl prints the (gzip-decoded) reply: the mock asked for read_file.
    assert!(
        run.client_stdout.contains("\"read_file\""),
        "curl's output lacks the tool call: {}",
        run.client_stdout
    );
    check_conversation(&run);
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn a_private_libssl_copy_loaded_later_is_attached() {
    // As from a venv or /opt: an OpenSSL the daemon did not find at start,
    // opened by the client after the daemon is up (LIB_OPEN → attach).
    let run = run_scenario_in(
        "openai-py-private-ssl",
        Client::OpenAiPy,
        false,
        ScopeKind::PidPrivateLibssl,
    );
    check_conversation(&run);
    let health = run.events.of_kind(kind::AGENT_HEALTH);
    let last = health
        .last()
        .and_then(|h| h.health.as_ref())
        .expect("a final agent.health");
    let opens = last.counters.get("tls_library_opens").copied().unwrap_or(0);
    assert!(
        opens >= 1,
        "the private libssl open was not reported: {:?}",
        last.counters
    );
    let targets = last
        .counters
        .get("kernel_tls_targets")
        .copied()
        .unwrap_or(0);
    assert!(
        targets >= 3,
        "the private libssl was not learned as a target: {:?}",
        last.counters
    );
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn cgroup_scope_sees_the_agent_and_nothing_outside() {
    // The scope is a cgroup v2 subtree: the agent runs inside it, and a
    // second LLM client runs outside it at the same time.
    let run = run_scenario_in(
        "openai-py-cgroup",
        Client::OpenAiPy,
        false,
        ScopeKind::Cgroup,
    );
    check_conversation(&run);
    let outsider = run.outsider_pid.expect("the outsider ran");
    assert_eq!(
        run.outsider_requests, 5,
        "the outsider's HTTPS requests must have reached the server for this test to mean anything"
    );
    let leaked: Vec<String> = run
        .events
        .all
        .iter()
        .filter(|e| {
            e.process.as_ref().is_some_and(|p| {
                p.pid == outsider
                    || p.ppid == outsider
                    || p.args.iter().any(|a| a.contains("OUTSIDER"))
            })
        })
        .map(common::describe)
        .collect();
    assert!(
        leaked.is_empty(),
        "events of processes outside the cgroup scope: {leaked:#?}"
    );
    // Its TLS was not read either: the only HTTP exchanges are the agent's.
    let health = run.events.of_kind(kind::AGENT_HEALTH);
    let last = health
        .last()
        .and_then(|h| h.health.as_ref())
        .expect("a final agent.health");
    assert_eq!(
        last.counters.get("http_exchanges").copied(),
        Some(3),
        "HTTP exchanges seen (the agent made 3; the outsider's 5 must not be): {:?}",
        last.counters
    );
}

// ------------------------------------------------------------------ hostile input

/// Random bytes, truncated requests, a 10 MiB upload and non-LLM GETs, then
/// valid requests: the daemon stays up, reports nothing for non-LLM traffic,
/// still reports the valid calls, and counts the parse failures.
#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn robustness_garbage_and_non_llm_traffic() {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("robustness");
    let pki = make_cert(&dir);
    let mut mock = MockServer::start(&dir, &pki);
    let script = common::repo_root().join("tests/clients/robustness.py");
    let args = vec![
        script.display().to_string(),
        "--base-url".into(),
        mock.base_url.clone(),
        "--ca".into(),
        pki.ca.display().to_string(),
    ];
    let env = [("OPENAI_API_KEY", OPENAI_KEY.to_string())];
    let mut client = Launched::spawn(&dir, "robustness", &python(), &args, &env);
    let client_pid = client.pid();
    let mut daemon = Daemon::start(&dir, client_pid);
    client.release();
    let out = client.wait_success(CLIENT_TIMEOUT);
    assert!(out.contains("FINAL: ok"), "robustness client output: {out}");
    daemon.assert_running("after the hostile traffic");
    common::grace();
    daemon.stop();
    mock.stop();
    common::assert_no_secrets(&daemon);

    let ev = Events::read(&daemon.events);
    let mut c = Checker::default();
    let calls = ev.llm_calls();
    let non_llm = ["/upload", "/index.html", "/health", "/"];
    for e in &calls {
        let l = e.llm.as_ref().expect("llm.call has llm");
        c.check(!non_llm.contains(&l.path.as_str()), || {
            format!("llm.call for non-LLM traffic: {}", common::describe(e))
        });
    }
    // The two valid calls: on the keep-alive connection after the 10 MiB
    // upload, and on a fresh connection at the end.
    for marker in ["ROBUST-KEEPALIVE", "ROBUST-FINAL"] {
        let found: Vec<_> = calls
            .iter()
            .filter(|e| {
                e.llm.as_ref().is_some_and(|l| {
                    l.messages
                        .iter()
                        .any(|m| m.role == "user" && m.content.contains(marker))
                })
            })
            .collect();
        if !c.eq(
            &format!("llm.call events with prompt {marker}"),
            1,
            found.len(),
        ) {
            continue;
        }
        let e = found[0];
        let l = e.llm.as_ref().expect("llm");
        c.eq(
            &format!("{marker}: provider"),
            "openai",
            l.provider.as_str(),
        );
        c.eq(
            &format!("{marker}: path"),
            "/v1/chat/completions",
            l.path.as_str(),
        );
        c.eq(
            &format!("{marker}: model"),
            Some(common::OPENAI_MODEL),
            l.model.as_deref(),
        );
        c.eq(&format!("{marker}: status"), Some(200), l.status);
        c.eq(&format!("{marker}: stream"), false, l.stream);
        c.eq(
            &format!("{marker}: output.text"),
            "done: 0 tools used",
            l.output.text.as_str(),
        );
        c.eq(
            &format!("{marker}: output.finish_reason"),
            Some("stop"),
            l.output.finish_reason.as_deref(),
        );
        c.eq(
            &format!("{marker}: usage.input_tokens"),
            Some(120),
            l.usage.input_tokens,
        );
        c.eq(
            &format!("{marker}: usage.output_tokens"),
            Some(20),
            l.usage.output_tokens,
        );
        c.eq(&format!("{marker}: truncated"), false, l.truncated);
        if let Some(p) = &e.process {
            c.eq(&format!("{marker}: process.pid"), client_pid, p.pid);
        }
    }
    // Any other llm.call can only be the truncated request, reported as such.
    for e in &calls {
        let l = e.llm.as_ref().expect("llm");
        let valid = l.messages.iter().any(|m| m.content.contains("ROBUST-"));
        if !valid {
            c.check(l.truncated || l.status != Some(200), || {
                format!(
                    "llm.call that is neither a valid request nor marked truncated/failed: {}",
                    common::describe(e)
                )
            });
        }
    }
    // No tools were declared anywhere: no tool.call can exist.
    let tools = ev.of_kind(kind::TOOL_CALL);
    c.check(tools.is_empty(), || {
        format!(
            "{} tool.call event(s) though no request declared tools",
            tools.len()
        )
    });
    // Parse failures are counted (no silent loss), in the last agent.health.
    let health = ev.of_kind(kind::AGENT_HEALTH);
    match health.last() {
        None => c.fail("no agent.health event (the daemon emits one at shutdown)".into()),
        Some(h) => {
            let hh = h.health.as_ref().expect("agent.health has health");
            let words = [
                "parse",
                "malformed",
                "invalid",
                "http_error",
                "bad_request",
                "garbage",
                "not_http",
            ];
            let counted: Vec<(&String, &u64)> = hh
                .dropped
                .iter()
                .chain(hh.counters.iter())
                .filter(|(k, v)| {
                    let k = k.to_ascii_lowercase();
                    **v > 0 && words.iter().any(|w| k.contains(w))
                })
                .collect();
            c.check(!counted.is_empty(), || {
                format!(
                    "the last agent.health counts no parse error (a key containing one of {words:?} \
                     with a value > 0 in health.dropped or health.counters): dropped={:?} counters={:?}",
                    hh.dropped, hh.counters
                )
            });
        }
    }
    c.finish(
        &ev,
        &[dir.path.to_str().unwrap_or("")],
        &format!("robustness — run dir {}", dir.path.display()),
    );
}

// ------------------------------------------------------------------ the test world alone

/// Runs one client against the mock server, without the daemon: the client
/// must finish its loop with the scripted answers.
fn harness_run(name: &str, client: Client, stream: bool) {
    let _serial = common::serial();
    let dir = TestDir::new(name);
    let pki = make_cert(&dir);
    let mut mock = MockServer::start(&dir, &pki);
    let w = make_work(&dir, name);
    let clients = common::repo_root().join("tests/clients");
    let key = |name: &'static str, value: &str| vec![(name, value.to_string())];
    let (program, script, env) = match client {
        Client::OpenAiPy => (
            python(),
            "agent_openai.py",
            key("OPENAI_API_KEY", common::OPENAI_KEY),
        ),
        Client::AnthropicPy => (
            python(),
            "agent_anthropic.py",
            key("ANTHROPIC_API_KEY", common::ANTHROPIC_KEY),
        ),
        Client::Node => (
            common::node(),
            "agent_node.js",
            key("OPENAI_API_KEY", common::OPENAI_KEY),
        ),
        Client::BedrockPy | Client::BedrockInvokePy => {
            (python(), "agent_bedrock.py", common::bedrock_env())
        }
        Client::Curl => unreachable!("curl has no loop"),
        Client::Go { .. } => unreachable!("the Go client's harness is in e2e/go.rs"),
    };
    let mut args = vec![
        clients.join(script).display().to_string(),
        "--base-url".into(),
        mock.base_url.clone(),
        "--ca".into(),
        pki.ca.display().to_string(),
        "--file".into(),
        w.file.clone(),
        "--command".into(),
        w.command.clone(),
    ];
    if stream {
        args.push("--stream".into());
    }
    if client == Client::BedrockInvokePy {
        args.push("--invoke".into());
    }
    let mut l = Launched::spawn(&dir, name, &program, &args, &env);
    l.release();
    let out = l.wait_success(Duration::from_secs(60));
    mock.stop();
    assert!(
        out.contains("FINAL: done: 2 tools used"),
        "{name}: stdout {out:?}"
    );
    let recs = mock.llm_records();
    let steps: Vec<u64> = recs.iter().filter_map(|r| r["step"].as_u64()).collect();
    assert_eq!(steps, vec![0, 1, 2], "{name}: steps the mock saw: {recs:?}");
    assert!(
        recs.iter().all(|r| r["stream"] == stream),
        "{name}: stream flags: {recs:?}"
    );
    // the tool results the client sent back are the real ones
    let last = &recs[2]["body"];
    let text = last.to_string();
    assert!(
        text.contains("the quick brown fox"),
        "{name}: file content not sent back: {text}"
    );
    assert!(
        text.contains("exit_code=0"),
        "{name}: command result not sent back: {text}"
    );
    // the mock never records the key
    let hits = common::find_secrets(&dir.join("mock"), common::SECRET_MARKERS);
    assert!(hits.is_empty(), "{name}: the mock wrote a secret: {hits:?}");
}

#[test]
#[ignore = "needs python3 (tests/clients/requirements.txt), node and openssl; run by cargo xtask test"]
fn harness_clients_against_mock() {
    harness_run("h-openai", Client::OpenAiPy, false);
    harness_run("h-openai-stream", Client::OpenAiPy, true);
    harness_run("h-anthropic", Client::AnthropicPy, false);
    harness_run("h-anthropic-stream", Client::AnthropicPy, true);
    harness_run("h-node", Client::Node, false);
    harness_run("h-node-stream", Client::Node, true);
    harness_run("h-bedrock", Client::BedrockPy, false);
    harness_run("h-bedrock-stream", Client::BedrockPy, true);
    harness_run("h-bedrock-invoke", Client::BedrockInvokePy, false);
    harness_run("h-bedrock-invoke-stream", Client::BedrockInvokePy, true);
}

#[test]
#[ignore = "needs python3 and openssl; run by cargo xtask test"]
fn harness_robustness_client_against_mock() {
    let _serial = common::serial();
    let dir = TestDir::new("h-robustness");
    let pki = make_cert(&dir);
    let mut mock = MockServer::start(&dir, &pki);
    let script = common::repo_root().join("tests/clients/robustness.py");
    let args = vec![
        script.display().to_string(),
        "--base-url".into(),
        mock.base_url.clone(),
        "--ca".into(),
        pki.ca.display().to_string(),
    ];
    let mut l = Launched::spawn(
        &dir,
        "h-robustness",
        &python(),
        &args,
        &[("OPENAI_API_KEY", OPENAI_KEY.to_string())],
    );
    l.release();
    let out = l.wait_success(Duration::from_secs(60));
    assert!(out.contains("FINAL: ok"), "robustness client: {out}");
    mock.stop();
}
