//! `cargo xtask detect-eval`: builds the release daemon and runs
//! `aitrail detect-eval --corpus tests/corpus`, passing the remaining
//! arguments through (`--json`, `--goals`, `--rounds N`).
//!
//! The release build, because the latency goal (p99 ≤ 1 ms per `llm.call`)
//! is about what ships; a debug build is many times slower.

use std::process::Command;

use anyhow::bail;

use crate::util;

#[derive(clap::Args)]
pub struct DetectEvalArgs {
    /// Use the existing target/release/aitrail instead of building it.
    #[arg(long)]
    no_build: bool,
    /// Passed to `aitrail detect-eval` (e.g. `--goals`, `--json`,
    /// `--rounds 10`, `--corpus DIR`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(args: &DetectEvalArgs) -> anyhow::Result<()> {
    if !args.no_build {
        util::build_release(&[])?;
    }
    let daemon = util::daemon_binary()?;
    if !daemon.is_file() {
        bail!(
            "{} not found: build it (cargo xtask build)",
            daemon.display()
        );
    }
    let mut cmd = Command::new(daemon);
    cmd.current_dir(util::root()).arg("detect-eval");
    // The daemon rejects a repeated --corpus, so the default goes in only
    // when the caller did not name one.
    if !args
        .args
        .iter()
        .any(|a| a == "--corpus" || a.starts_with("--corpus="))
    {
        cmd.args(["--corpus", "tests/corpus"]);
    }
    cmd.args(&args.args);
    util::run(&mut cmd)
}
