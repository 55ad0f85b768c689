//! Helpers shared by the tasks.

use std::{
    env,
    ffi::OsStr,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

/// The workspace root (the parent of xtask/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `cargo`, the same one that runs xtask.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

pub fn home() -> anyhow::Result<PathBuf> {
    env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// `$CARGO_HOME`, default `~/.cargo`.
pub fn cargo_home() -> anyhow::Result<PathBuf> {
    match env::var_os("CARGO_HOME") {
        Some(h) => Ok(PathBuf::from(h)),
        None => Ok(home()?.join(".cargo")),
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Shows a command as it would be typed.
pub fn show(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            let _ = write!(s, "{}={} ", k.to_string_lossy(), v.to_string_lossy());
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

fn quote(a: &OsStr) -> String {
    let a = a.to_string_lossy();
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+^,@".contains(c))
    {
        a.into_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` with inherited stdio; fails unless it exits with 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout, or `None` if it cannot start or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR` and config).
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let out = output(cargo().args(["metadata", "--format-version=1", "--no-deps"]))
        .context("cargo metadata failed")?;
    let meta: serde_json::Value = serde_json::from_str(&out).context("cargo metadata: bad JSON")?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata: no target_directory")
}

/// `cargo build --release -p aitrail`: agent/build.rs builds the eBPF
/// programs with aya-build and embeds them.
pub fn build_release(extra: &[String]) -> anyhow::Result<()> {
    if env::var_os("AYA_BUILD_SKIP").is_some() {
        eprintln!("xtask: note: AYA_BUILD_SKIP is set; the binary will have no eBPF programs");
    }
    run(cargo()
        .args(["build", "--release", "--package", "aitrail"])
        .args(extra))
}

/// The release binary of the daemon.
pub fn daemon_binary() -> anyhow::Result<PathBuf> {
    Ok(target_dir()?.join("release").join("aitrail"))
}
