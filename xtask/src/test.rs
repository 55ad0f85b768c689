//! `cargo xtask test`: every test tier that can run here.
//!
//! 1. `setup` (toolchain for the eBPF build), then tests/setup-test-deps.sh
//!    (the test clients' apt and pip packages) if present;
//! 2. `cargo test --workspace --exclude agent-ebpf` (the eBPF crate is never
//!    built for the host);
//! 3. `cargo xtask fuzz` with `--fuzz-secs` per target (default 20; 0
//!    skips it);
//! 4. as root, the privileged end-to-end tests, which plain `cargo test`
//!    skips (`#[ignore]`): `cargo test -p aitrail --test e2e --
//!    --include-ignored --test-threads=1`.
//!
//! It sums cargo's `test result:` lines into one `N passed, N failed` line
//! and fails if anything failed or did not run.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _};

use crate::util::{self, show};

#[derive(clap::Args)]
pub struct TestArgs {
    /// Do not fail when the privileged tests cannot run (not root), and do
    /// not run them as root either.
    #[arg(long)]
    unprivileged: bool,
    /// Skip `cargo xtask setup` and tests/setup-test-deps.sh.
    #[arg(long)]
    no_setup: bool,
    /// Seconds each fuzz target runs (`cargo xtask fuzz`); 0 skips fuzzing.
    #[arg(long, default_value_t = 20)]
    fuzz_secs: u32,
    /// Passed to the test binaries (e.g. a test name filter, `--nocapture`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Steps that failed (including ones that failed without a test result:
    /// a build error).
    failed_steps: Vec<String>,
}

impl Tally {
    /// Adds one `test result: ok. 3 passed; 0 failed; 1 ignored; …` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.split_once("test result:").map(|(_, r)| r) else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }

    /// Runs a `cargo test` command, echoing its output and counting results.
    fn cargo_test(&mut self, step: &str, cmd: &mut Command) -> anyhow::Result<()> {
        eprintln!("xtask: running {}", show(cmd));
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", show(cmd)))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut out = std::io::stdout().lock();
        for line in BufReader::new(stdout).lines() {
            let line = line.context("read test output")?;
            self.add_line(&line);
            writeln!(out, "{line}").ok();
        }
        drop(out);
        let status = child.wait().context("wait for cargo test")?;
        if !status.success() {
            self.failed_steps.push(format!("{step} ({status})"));
        }
        Ok(())
    }
}

/// Runs every fuzz target for `secs` seconds (0: not at all).
fn fuzz(secs: u32, tally: &mut Tally) {
    if secs == 0 {
        eprintln!("xtask: --fuzz-secs 0: fuzzing skipped");
        return;
    }
    let args = crate::fuzz::FuzzArgs {
        secs,
        keep: false,
        targets: Vec::new(),
    };
    match crate::fuzz::run(&args) {
        Ok(()) => eprintln!(
            "xtask: fuzzing: {} targets, {secs} s each, no crash",
            crate::fuzz::TARGETS.len()
        ),
        Err(e) => tally.failed_steps.push(format!("fuzzing: {e:#}")),
    }
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    let root = util::root();
    let privileged = util::is_root() && !args.unprivileged;

    if args.no_setup {
        eprintln!("xtask: --no-setup: skipping setup and test dependencies");
    } else {
        crate::setup::run().context("setup failed")?;
        let deps = root.join("tests/setup-test-deps.sh");
        if deps.is_file() {
            util::run(Command::new("bash").arg(&deps).current_dir(&root))
                .context("tests/setup-test-deps.sh failed")?;
        } else {
            eprintln!(
                "xtask: tests/setup-test-deps.sh not found: test client dependencies not installed"
            );
        }
    }

    let mut tally = Tally::default();
    let mut cmd = util::cargo();
    cmd.args([
        "test",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "agent-ebpf",
    ]);
    if !args.args.is_empty() {
        cmd.arg("--").args(&args.args);
    }
    if privileged && std::env::var_os("AYA_BUILD_SKIP").is_some() {
        eprintln!(
            "xtask: AYA_BUILD_SKIP ignored: the privileged tests need the real eBPF programs"
        );
        cmd.env_remove("AYA_BUILD_SKIP");
    }
    tally.cargo_test("unit and fixture tests", &mut cmd)?;

    // The long reliability test (the collector down for 60 s under load):
    // no privileges needed, ignored by a plain `cargo test` for its length.
    if root.join("agent/tests/shipping/main.rs").is_file() {
        let mut cmd = util::cargo();
        cmd.args([
            "test",
            "--no-fail-fast",
            "--package",
            "aitrail",
            "--test",
            "shipping",
            "--",
            "--ignored",
        ]);
        tally.cargo_test("long reliability tests", &mut cmd)?;
    }

    fuzz(args.fuzz_secs, &mut tally);

    let mut not_run = None;
    if privileged {
        let e2e = ["agent/tests/e2e.rs", "agent/tests/e2e/main.rs"];
        if e2e.iter().any(|p| root.join(p).is_file()) {
            let mut cmd = util::cargo();
            cmd.env_remove("AYA_BUILD_SKIP")
                .args([
                    "test",
                    "--no-fail-fast",
                    "--package",
                    "aitrail",
                    "--test",
                    "e2e",
                    "--",
                ])
                .args(["--include-ignored", "--test-threads=1"])
                .args(&args.args);
            tally.cargo_test("privileged end-to-end tests", &mut cmd)?;
        } else {
            tally
                .failed_steps
                .push("privileged end-to-end tests (agent/tests/e2e/main.rs not found)".into());
        }
    } else if args.unprivileged {
        not_run = Some("--unprivileged given");
    } else {
        not_run = Some("not root");
    }

    println!();
    if let Some(why) = not_run {
        println!("xtask: PRIVILEGED TESTS NOT RUN ({why}): the end-to-end tests with real eBPF need root");
    }
    for step in &tally.failed_steps {
        println!("xtask: FAILED: {step}");
    }
    // The ignored ones are the privileged tests as a plain `cargo test`
    // sees them; they ran in the privileged step when it is counted above.
    println!(
        "xtask: {} test(s) listed as ignored by a plain cargo test",
        tally.ignored
    );
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if !tally.failed_steps.is_empty() || tally.failed > 0 {
        bail!("tests failed");
    }
    if not_run.is_some() && !args.unprivileged {
        bail!("privileged tests were not run; run as root, or pass --unprivileged to accept that");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn sums_test_result_lines() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 12 passed; 0 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        t.add_line(
            "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 5 filtered out",
        );
        t.add_line("running 3 tests");
        t.add_line("test foo ... ok");
        assert_eq!((t.passed, t.failed, t.ignored), (13, 2, 3));
    }
}
