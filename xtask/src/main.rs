//! Project tasks: `cargo xtask <setup|build|test|bench|fuzz|package|detect-eval>`.
//!
//! Every task prints what it runs, and fails with the step that failed.

mod bench;
mod detect_eval;
mod fuzz;
mod package;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "aitrail project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the eBPF build needs (rust-src, bpf-linker) and mount
    /// tracefs; quick and idempotent when all is present.
    Setup,
    /// Build the daemon in release mode, eBPF programs embedded.
    #[command(alias = "build-ebpf")]
    Build {
        /// Extra arguments for `cargo build`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit and fixture tests, then (as root) the privileged
    /// end-to-end tests with real eBPF.
    Test(test::TestArgs),
    /// Measure the daemon's cost on watched and unwatched workloads; writes
    /// docs/benchmarks.md.
    Bench(bench::BenchArgs),
    /// Run every cargo-fuzz target (fuzz/) for a bounded time on the corpus
    /// under tests/fuzz-corpus; crashes become tests/fuzz-regressions files.
    Fuzz(fuzz::FuzzArgs),
    /// Build target/package/aitrail_<version>_<arch>.{tar.gz,deb}.
    Package(package::PackageArgs),
    /// Score detection on the labelled corpus (tests/corpus) with the release
    /// daemon: precision and recall per class, benign false positives, time
    /// per llm.call. `--goals` fails when a goal of issue 4 is missed.
    DetectEval(detect_eval::DetectEvalArgs),
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Setup => setup::run(),
        Cmd::Build { args } => util::build_release(&args),
        Cmd::Test(args) => test::run(&args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Fuzz(args) => fuzz::run(&args),
        Cmd::Package(args) => package::run(&args),
        Cmd::DetectEval(args) => detect_eval::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the causes on one line, without the backtrace that
            // RUST_BACKTRACE would add to anyhow's Debug output.
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
