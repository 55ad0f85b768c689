//! Codex CLI: a stripped, static (musl) Rust binary whose model traffic goes
//! through rustls with the aws-lc-rs provider, over HTTP/2. Its plaintext is
//! read where aws-lc seals and opens each TLS record
//! (agent/src/capture/stacks/rustls.rs, agent-ebpf/src/tls_rustls.rs).

use std::fs;

use aitrail::event::Event;

use super::*;

/// The pinned Codex CLI build (tests/setup-test-deps.sh).
const CODEX_VERSION: &str = "0.171.0";

fn codex_binary() -> String {
    let cache = std::env::var_os("AITRAIL_TEST_CACHE").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            std::path::Path::new(&home).join(".cache/aitrail-tests")
        },
        std::path::PathBuf::from,
    );
    let bin = cache.join(format!(
        "codex-{CODEX_VERSION}/package/vendor/x86_64-unknown-linux-musl/bin/codex"
    ));
    assert!(
        bin.is_file(),
        "{} is missing: run tests/setup-test-deps.sh (it installs the pinned Codex CLI)",
        bin.display()
    );
    bin.display().to_string()
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn codex_cli_over_http2_through_rustls() {
    // TLS 1.3: records sealed by EVP_AEAD_CTX_seal, the content type inside.
    codex_turn("TLSv1.3", Start::Scoped);
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn codex_cli_over_tls12() {
    // TLS 1.2 (AES-GCM): records sealed by EVP_AEAD_CTX_seal_scatter, the
    // content type in the 13-byte record header.
    codex_turn("TLSv1.2", Start::Scoped);
}

/// How the daemon meets Codex.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// `--pid` of a launcher that runs `codex --version`, then the turn: the
    /// hooks are found at the first exec, the turn's process reuses them.
    Scoped,
    /// `aitrail agent -- codex exec …` with an empty hook cache: the hooks
    /// are searched for and attached before the program runs, so even the
    /// first process of a build is seen from its first record.
    Command,
}

#[test]
#[ignore = "privileged: needs root and eBPF; run by cargo xtask test"]
fn codex_as_the_daemons_command_with_no_hook_cache() {
    codex_turn("TLSv1.3", Start::Command);
}

/// A Codex home with a custom provider (Codex ignores `OPENAI_BASE_URL`):
/// returns (HOME, `CODEX_HOME`).
fn codex_home(dir: &TestDir, mock: &MockServer) -> (String, String) {
    let home = dir.join("work/home");
    let codex_home = home.join(".codex");
    fs::create_dir_all(&codex_home).expect("mkdir codex home");
    fs::write(
        codex_home.join("config.toml"),
        format!(
            "model = \"gpt-4.1-mini\"\nmodel_provider = \"mock\"\n\n\
             [model_providers.mock]\nname = \"aitrail mock\"\nbase_url = \"{}/v1\"\n\
             env_key = \"AITRAIL_CODEX_KEY\"\nwire_api = \"responses\"\n",
            mock.base_url
        ),
    )
    .expect("write codex config");
    (home.display().to_string(), codex_home.display().to_string())
}

fn codex_turn(tls: &str, start: Start) {
    common::require_root();
    let _serial = common::serial();
    let dir = TestDir::new("codex");
    let pki = make_cert(&dir);
    let mut mock = if tls == "TLSv1.2" {
        MockServer::start_h2_tls12(&dir, &pki)
    } else {
        MockServer::start_h2(&dir, &pki)
    };
    let codex = codex_binary();
    let (home, codex_home) = codex_home(&dir, &mock);
    let marker = dir.join("work/codex-was-here.txt");
    let command = format!("echo codex-was-here > {}", marker.display());
    let prompt = format!("Run the command for me.\nCMD: {command}\n");
    let env = [
        ("HOME", home),
        ("CODEX_HOME", codex_home),
        ("AITRAIL_CODEX_KEY", OPENAI_KEY.to_string()),
        ("CODEX_CA_CERTIFICATE", pki.ca.display().to_string()),
    ];
    let (daemon, out) = match start {
        Start::Scoped => {
            // `codex --version` first: the daemon finds the hooks of a new
            // build when its process starts (0.4-0.8 s for this 300 MB
            // binary in a debug build, or from its disk cache); the same
            // file then needs no search, so the turn's first request cannot
            // go out before its probes are in place.
            let script = "\"$0\" --version && exec \"$0\" exec --skip-git-repo-check -s danger-full-access \"$1\" < /dev/null";
            let args = vec!["-c".to_string(), script.to_string(), codex, prompt];
            let mut client = Launched::spawn(&dir, "codex", "/bin/sh", &args, &env);
            let mut daemon = Daemon::start(&dir, client.pid());
            client.release();
            let out = client.wait_success(CLIENT_TIMEOUT);
            common::grace();
            daemon.stop();
            (daemon, out)
        }
        Start::Command => {
            // A hook cache of this test's own, empty: the search runs.
            let config = dir.join("daemon/agent.toml");
            fs::write(
                &config,
                format!(
                    "[capture]\nhook_cache_dir = \"{}\"\n",
                    dir.join("daemon/hooks").display()
                ),
            )
            .expect("write daemon config");
            let args = vec![
                "--config".to_string(),
                config.display().to_string(),
                "--".into(),
                codex,
                "exec".into(),
                "--skip-git-repo-check".into(),
                "-s".into(),
                "danger-full-access".into(),
                prompt,
            ];
            let mut daemon = Daemon::start_with_env(&dir, "agent", &args, &env);
            daemon.wait_exit(CLIENT_TIMEOUT);
            let out = fs::read_to_string(&daemon.stdout).unwrap_or_default();
            let cached = fs::read_dir(dir.join("daemon/hooks")).map_or(0, Iterator::count);
            assert_eq!(cached, 1, "the search's result was not cached");
            (daemon, out)
        }
    };
    mock.stop();
    common::assert_no_secrets(&daemon);

    // The world did what the test says: two turns over HTTP/2 (the mock
    // speaks nothing else), the tool ran.
    let reqs = mock.llm_records();
    assert_eq!(
        reqs.len(),
        2,
        "mock requests: {reqs:?}\ncodex output: {out}"
    );
    assert_eq!(
        fs::read_to_string(&marker).ok().as_deref(),
        Some("codex-was-here\n"),
        "codex did not run the command; output: {out}"
    );
    for r in &reqs {
        assert_eq!(r["tls"], tls, "the mock negotiated another version");
    }
    let call_id = reqs[0]["call_id"]
        .as_str()
        .expect("a tool call")
        .to_string();

    let ev = Events::read(&daemon.events);
    let mut c = Checker::default();
    let calls: Vec<&Event> = ev
        .llm_calls()
        .into_iter()
        .filter(|e| e.llm.as_ref().is_some_and(|l| l.path == "/v1/responses"))
        .collect();
    c.eq("llm.calls to /v1/responses", 2, calls.len());
    for (i, e) in calls.iter().enumerate() {
        let l = e.llm.as_ref().expect("llm");
        let (input, output) = common::mock_usage(i);
        c.eq("provider", "openai", l.provider.as_str());
        c.eq("operation", "responses", l.operation.as_str());
        c.eq("model", Some("gpt-4.1-mini"), l.model.as_deref());
        c.eq("stream", true, l.stream);
        c.eq("status", Some(200), l.status);
        c.eq("input tokens", Some(input), l.usage.input_tokens);
        c.eq("output tokens", Some(output), l.usage.output_tokens);
        c.check(!l.truncated, || format!("call {i} truncated"));
        c.check(l.api_key_id.is_some(), || {
            format!("call {i}: no api_key_id")
        });
        c.check(
            l.messages
                .iter()
                .any(|m| m.role == "user" && m.content.contains("CMD: echo codex-was-here")),
            || format!("call {i}: the prompt is missing from {:?}", l.messages),
        );
        c.check(l.tools.iter().any(|t| t == "exec_command"), || {
            format!(
                "call {i}: exec_command not among the declared tools {:?}",
                l.tools
            )
        });
    }
    let mut tool_span = None;
    if let [first, second] = calls[..] {
        let l = first.llm.as_ref().expect("llm");
        c.check(
            l.output.tool_calls.iter().any(|t| {
                t.id == call_id && t.name == "exec_command" && t.arguments.contains(&command)
            }),
            || {
                format!(
                    "first turn: no exec_command call {call_id}: {:?}",
                    l.output.tool_calls
                )
            },
        );
        let l2 = second.llm.as_ref().expect("llm");
        c.eq(
            "final answer",
            "done: 1 tools used",
            l2.output.text.as_str(),
        );
        let tools: Vec<&Event> = ev
            .of_kind(kind::TOOL_CALL)
            .into_iter()
            .filter(|e| e.tool.as_ref().is_some_and(|t| t.call_id == call_id))
            .collect();
        c.eq("tool.calls for the call", 1, tools.len());
        if let Some(t) = tools.first() {
            c.eq(
                "tool.call parent",
                Some(first.span_id.as_str()),
                t.parent_span_id.as_deref(),
            );
            let tc = t.tool.as_ref().expect("tool");
            c.eq("tool name", "exec_command", tc.name.as_str());
            c.check(tc.result.is_some(), || "no tool result".into());
            tool_span = Some((t.span_id.clone(), tc.effects.clone()));
        }
    }
    // The command Codex ran: a child span of the tool call, and one of its
    // effects.
    let execs: Vec<&Event> = ev
        .of_kind(kind::PROCESS_EXEC)
        .into_iter()
        .filter(|e| {
            e.exec
                .as_ref()
                .is_some_and(|x| x.args.iter().any(|a| a == &command))
        })
        .collect();
    c.check(!execs.is_empty(), || format!("no exec of `{command}`"));
    if let (Some(x), Some((span, effects))) = (execs.first(), &tool_span) {
        c.eq(
            "exec parent",
            Some(span.as_str()),
            x.parent_span_id.as_deref(),
        );
        c.check(effects.contains(&x.id), || {
            format!(
                "the exec {} is not among the tool's effects {effects:?}",
                x.id
            )
        });
    }
    // Both turns' connections were paired, and nothing was parsed alone.
    if let Some(h) = ev
        .of_kind(kind::AGENT_HEALTH)
        .last()
        .and_then(|h| h.health.as_ref())
    {
        let links = h.counters.get("kernel_rustls_links").copied().unwrap_or(0);
        c.check(links >= 2, || format!("kernel_rustls_links = {links}"));
        c.eq(
            "rustls_unlinked_chunks",
            Some(&0),
            h.dropped.get("rustls_unlinked_chunks"),
        );
        c.eq(
            "kernel_rustls_padding_lost",
            Some(&0),
            h.dropped.get("kernel_rustls_padding_lost"),
        );
    } else {
        c.fail("no agent.health".into());
    }
    c.finish(&ev, &[], &format!("codex exec over {tls}"));
}
