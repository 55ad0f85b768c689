//! `cargo xtask fuzz`: runs every cargo-fuzz target (fuzz/) for a bounded
//! time. Captured bytes are hostile; these targets are the decoders they
//! reach (agent/src/fuzz.rs).
//!
//! 1. installs cargo-fuzz when missing (`cargo install cargo-fuzz --locked`);
//! 2. seeds tests/fuzz-corpus/<target>/ from the capture fixtures
//!    (tests/fuzz-corpus/seed.py, idempotent);
//! 3. per target, `cargo +nightly fuzz run` with two corpus directories: a
//!    scratch one under the target dir, where libFuzzer writes what it
//!    finds, then the kept corpus (read); `--keep` merges the scratch corpus
//!    into the kept one, minimised (`-merge=1`), to be committed;
//! 4. a crash or a leak fails the task; its input is copied to
//!    tests/fuzz-regressions/<target>/, where the corpus replay test
//!    (`aitrail::fuzz` tests, part of `cargo test`) runs it from then on —
//!    fix the decoder and commit the file.

use std::{fs, path::Path, process::Command};

use anyhow::{bail, Context as _};

use crate::util::{self, show};

/// The targets of fuzz/Cargo.toml, as in `aitrail::fuzz::TARGETS`.
pub const TARGETS: &[&str] = &[
    "connection",
    "h2_connection",
    "websocket",
    "hpack",
    "sse",
    "eventstream",
    "llm_exchange",
    "record",
];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 20)]
    pub secs: u32,
    /// Merge what the run found into tests/fuzz-corpus (minimised).
    #[arg(long)]
    pub keep: bool,
    /// Only these targets (default: all).
    pub targets: Vec<String>,
}

pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let root = util::root();
    install_cargo_fuzz()?;
    util::run(Command::new("python3").arg(root.join("tests/fuzz-corpus/seed.py")))
        .context("seeding the fuzz corpus")?;
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    // One build of every target first: they share the (sanitized) crates.
    let mut build = Command::new("cargo");
    build
        .current_dir(&root)
        .env("AYA_BUILD_SKIP", "1")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["+nightly", "fuzz", "build", "--fuzz-dir", "fuzz"]);
    util::run(&mut build).context("building the fuzz targets")?;
    let scratch_root = util::target_dir()?.join("fuzz-scratch");
    let mut failed = Vec::new();
    for t in targets {
        if !TARGETS.contains(&t) {
            bail!("unknown fuzz target {t}; known: {}", TARGETS.join(", "));
        }
        let kept = root.join("tests/fuzz-corpus").join(t);
        let scratch = scratch_root.join(t);
        let artifacts = scratch_root.join("artifacts").join(t);
        for d in [&kept, &scratch, &artifacts] {
            fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        let mut cmd = fuzz_cmd(t);
        cmd.arg(&scratch).arg(&kept).arg("--").args([
            format!("-max_total_time={}", args.secs),
            "-max_len=65536".into(),
            "-rss_limit_mb=2048".into(),
            "-timeout=10".into(),
            format!("-artifact_prefix={}/", artifacts.display()),
            "-print_final_stats=1".into(),
        ]);
        eprintln!("xtask: running {}", show(&cmd));
        let status = cmd
            .status()
            .with_context(|| format!("cannot start {}", show(&cmd)))?;
        if !status.success() {
            let saved = save_artifacts(&artifacts, &root.join("tests/fuzz-regressions").join(t))?;
            eprintln!(
                "xtask: fuzz target {t} failed ({status}); inputs saved as regression fixtures: {saved:?}"
            );
            failed.push(t.to_owned());
            continue;
        }
        if args.keep {
            let mut merge = fuzz_cmd(t);
            merge.arg(&kept).arg(&scratch).args([
                "--",
                "-merge=1",
                "-max_len=65536",
                "-rss_limit_mb=2048",
            ]);
            util::run(&mut merge).with_context(|| format!("merging the {t} corpus"))?;
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

/// `cargo +nightly fuzz run TARGET` in fuzz/, with the placeholder eBPF
/// object (the targets never load it).
fn fuzz_cmd(target: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(util::root())
        .env("AYA_BUILD_SKIP", "1")
        // rustup picks the toolchain from `+nightly`, not from the
        // environment cargo-xtask runs in.
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", target]);
    cmd
}

fn install_cargo_fuzz() -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    util::run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .context("installing cargo-fuzz")
}

/// Copies crash/leak/timeout inputs into the regression directory.
fn save_artifacts(from: &Path, to: &Path) -> anyhow::Result<Vec<String>> {
    fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    let mut saved = Vec::new();
    for e in fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let e = e?;
        let dest = to.join(e.file_name());
        fs::copy(e.path(), &dest).with_context(|| format!("copy to {}", dest.display()))?;
        saved.push(dest.display().to_string());
    }
    Ok(saved)
}
