//! `cargo xtask setup`: what the eBPF build needs, per docs in
//! /work/shared/TOOLCHAIN.md (kept in sync with .ci/run):
//! 1. rust-src for the nightly toolchain (`-Z build-std=core`);
//! 2. bpf-linker 0.13, built against the LLVM inside the nightly toolchain
//!    (Debian's LLVM is too old), through a prefix of symlinks in
//!    `~/.cache/aitrail/llvm/lib`;
//! 3. tracefs mounted (tracepoints attach through it), when root.
//!
//! It never installs or updates toolchains.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _};

use crate::util::{self, output};

const BPF_LINKER_SERIES: &str = "0.13.";
const TRACEFS: &str = "/sys/kernel/tracing";

pub fn run() -> anyhow::Result<()> {
    let start = Instant::now();
    let nightly = Nightly::find()?;
    println!(
        "setup: nightly toolchain: rustc {} (LLVM {}), sysroot {}",
        nightly.release,
        nightly.llvm_version,
        nightly.sysroot.display()
    );
    rust_src(&nightly)?;
    bpf_linker(&nightly)?;
    tracefs()?;
    println!("setup: done in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

struct Nightly {
    sysroot: PathBuf,
    release: String,
    llvm_version: String,
    llvm_major: String,
}

impl Nightly {
    fn find() -> anyhow::Result<Self> {
        let missing = "the nightly toolchain is needed for the eBPF build; install it with \
            `rustup toolchain install nightly --component rust-src` (setup does not install toolchains)";
        let vv = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
            .context(missing)?;
        let field = |name: &str| {
            vv.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .with_context(|| format!("`rustc +nightly -vV` has no `{name}` line"))
        };
        let release = field("release:")?;
        let llvm_version = field("LLVM version:")?;
        let llvm_major = llvm_version
            .split('.')
            .next()
            .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
            .with_context(|| format!("cannot read the LLVM major of `{llvm_version}`"))?
            .to_owned();
        let sysroot =
            output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
                .context(missing)?;
        Ok(Self {
            sysroot: PathBuf::from(sysroot.trim()),
            release,
            llvm_version,
            llvm_major,
        })
    }

    /// The toolchain's `lib/libLLVM.so.<ver>-rust-<release>`.
    fn libllvm(&self) -> anyhow::Result<PathBuf> {
        let lib = self.sysroot.join("lib");
        let mut found: Vec<PathBuf> = fs::read_dir(&lib)
            .with_context(|| format!("read {}", lib.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libLLVM.so."))
            })
            .collect();
        found.sort();
        match found.pop() {
            Some(p) => Ok(p),
            None => bail!(
                "no libLLVM.so.* in {}: this nightly does not ship LLVM as a shared library",
                lib.display()
            ),
        }
    }
}

fn rust_src(nightly: &Nightly) -> anyhow::Result<()> {
    let src = nightly.sysroot.join("lib/rustlib/src/rust/library/core");
    if src.is_dir() {
        println!("setup: rust-src (nightly): present, skipped");
        return Ok(());
    }
    println!("setup: rust-src (nightly): missing, adding it");
    util::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// The bpf-linker that `cargo` would run: on PATH, else in `$CARGO_HOME/bin`.
fn find_bpf_linker() -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("bpf-linker");
            if p.is_file() {
                return Ok(Some(p));
            }
        }
    }
    let p = util::cargo_home()?.join("bin/bpf-linker");
    Ok(p.is_file().then_some(p))
}

/// `bpf-linker --version` if it runs and is of the 0.13 series.
fn bpf_linker_version(linker: &Path, nightly: &Nightly) -> Option<String> {
    // The binary's rpath finds libLLVM through the prefix; the toolchain's
    // lib dir is a fallback, as `rustup run nightly` gives it at build time.
    let v = output(
        Command::new(linker)
            .arg("--version")
            .env("LD_LIBRARY_PATH", nightly.sysroot.join("lib")),
    )?;
    let v = v.trim().to_owned();
    v.strip_prefix("bpf-linker ")
        .is_some_and(|ver| ver.starts_with(BPF_LINKER_SERIES))
        .then_some(v)
}

/// Makes `prefix/lib/{libLLVM.so, <soname>}` point at the toolchain's
/// libLLVM. The first is what the build links against; the second is what
/// the built binary asks the loader for (its `DT_NEEDED`), found through its
/// rpath to this directory.
fn llvm_prefix(nightly: &Nightly) -> anyhow::Result<PathBuf> {
    let prefix = util::home()?.join(".cache/aitrail/llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("create {}", lib.display()))?;
    let target = nightly.libllvm()?;
    let soname = target.file_name().context("libLLVM has no file name")?;
    for name in [Path::new("libLLVM.so"), Path::new(soname)] {
        let link = lib.join(name);
        if fs::read_link(&link).is_ok_and(|t| t == target) {
            continue;
        }
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("remove {}", link.display()))?;
        }
        symlink(&target, &link).with_context(|| format!("symlink {}", link.display()))?;
        println!("setup: linked {} -> {}", link.display(), target.display());
    }
    Ok(prefix)
}

fn bpf_linker(nightly: &Nightly) -> anyhow::Result<()> {
    let prefix = llvm_prefix(nightly)?;
    let found = find_bpf_linker()?;
    if let Some(linker) = &found {
        if let Some(v) = bpf_linker_version(linker, nightly) {
            println!("setup: bpf-linker: {v} at {}, skipped", linker.display());
            return Ok(());
        }
        println!(
            "setup: bpf-linker at {} does not run or is not {BPF_LINKER_SERIES}x: rebuilding it",
            linker.display()
        );
    } else {
        println!("setup: bpf-linker: missing, building it (about 2-4 minutes)");
    }
    let root = util::cargo_home()?;
    util::run(
        util::cargo()
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker",
                "--version",
                "^0.13",
                "--locked",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{}", nightly.llvm_major))
            .arg("--root")
            .arg(&root)
            .arg("--force"),
    )?;
    let linker = root.join("bin/bpf-linker");
    match bpf_linker_version(&linker, nightly) {
        Some(v) => println!("setup: bpf-linker: installed {v} at {}", linker.display()),
        None => bail!(
            "bpf-linker was installed at {} but `bpf-linker --version` fails",
            linker.display()
        ),
    }
    match find_bpf_linker()? {
        Some(first) if first != linker => println!(
            "setup: warning: {} comes first on PATH; builds use it, not {}",
            first.display(),
            linker.display()
        ),
        _ => {}
    }
    if !on_path(&root.join("bin")) {
        println!(
            "setup: note: add {} to PATH (the eBPF build runs bpf-linker from PATH)",
            root.join("bin").display()
        );
    }
    Ok(())
}

fn on_path(dir: &Path) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d == dir))
}

fn tracefs_mounted() -> bool {
    fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some(TRACEFS) && f.next() == Some("tracefs")
        })
    })
}

fn tracefs() -> anyhow::Result<()> {
    if tracefs_mounted() {
        println!("setup: tracefs: mounted at {TRACEFS}, skipped");
    } else if util::is_root() {
        println!("setup: tracefs: not mounted, mounting it at {TRACEFS}");
        util::run(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]))?;
    } else {
        println!("setup: tracefs: not mounted and not root: skipped (the daemon mounts it when it starts as root)");
    }
    Ok(())
}
