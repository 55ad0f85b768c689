//! The Go test client (tests/clients/agent_go.go), built with the `go` on
//! PATH (Debian's `golang-go`; tests/setup-test-deps.sh installs it) once
//! per source change and cached under the cargo target dir.

#![allow(
    clippy::wildcard_imports,
    reason = "one test-support module split in files"
)]

use super::*;

/// How the Go client is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoBuild {
    /// `go build`: symbol table and DWARF kept.
    Normal,
    /// `go build -ldflags='-s -w'`: no symbol table, no DWARF; only the
    /// runtime's `.gopclntab` names the functions.
    Stripped,
}

impl GoBuild {
    pub fn file_name(self) -> &'static str {
        match self {
            GoBuild::Normal => "agent_go",
            GoBuild::Stripped => "agent_go_stripped",
        }
    }
}

/// Where built Go clients are kept.
pub fn go_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-clients")
}

/// Builds (when missing or older than its source) and returns the Go
/// client. Static (`CGO_ENABLED=0`), as Go programs are usually shipped.
pub fn go_client(build: GoBuild) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _one = BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let src = repo_root().join("tests/clients/agent_go.go");
    let dir = go_cache_dir();
    let out = dir.join(build.file_name());
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(bin), Some(s)) = (mtime(&out), mtime(&src)) {
        if bin >= s {
            return out;
        }
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let go = which(&env_or("AITRAIL_TEST_GO", "go"));
    let tmp = dir.join(format!("{}.{}.tmp", build.file_name(), std::process::id()));
    let mut cmd = Command::new(&go);
    cmd.arg("build").arg("-trimpath");
    if build == GoBuild::Stripped {
        cmd.arg("-ldflags=-s -w");
    }
    cmd.arg("-o")
        .arg(&tmp)
        .arg(&src)
        .current_dir(src.parent().expect("tests/clients"))
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOFLAGS", "")
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local");
    let started = Instant::now();
    let res = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {go}: {e}"));
    assert!(
        res.status.success(),
        "go build of {} failed ({}): {}",
        src.display(),
        res.status,
        String::from_utf8_lossy(&res.stderr)
    );
    fs::rename(&tmp, &out).unwrap_or_else(|e| panic!("rename to {}: {e}", out.display()));
    eprintln!(
        "go client: built {} in {:?}",
        out.display(),
        started.elapsed()
    );
    out
}

/// `go version` of the toolchain the clients are built with.
pub fn go_version() -> String {
    let go = which(&env_or("AITRAIL_TEST_GO", "go"));
    let out = Command::new(&go)
        .arg("version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {go}: {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
