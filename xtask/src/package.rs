//! `cargo xtask package`: a Debian package and the same tree as a tarball.
//!
//! Layout (also the tarball's, DEBIAN/ included):
//! ```text
//! usr/bin/aitrail
//! lib/systemd/system/aitrail-agent.service
//! etc/aitrail/agent.toml                      (a conffile: upgrades keep local edits)
//! usr/share/doc/aitrail/{README.md,events.md}
//! DEBIAN/{control,conffiles,postinst,prerm,postrm}
//! ```
//! The service is installed but neither enabled nor started: its scope and
//! sinks should be chosen first.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use anyhow::Context as _;

use crate::util::{self, output};

#[derive(clap::Args)]
pub struct PackageArgs {
    /// Package the existing target/release/aitrail instead of building it.
    #[arg(long)]
    no_build: bool,
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn run(args: &PackageArgs) -> anyhow::Result<()> {
    if !args.no_build {
        util::build_release(&[])?;
    }
    let root = util::root();
    let binary = util::daemon_binary()?;
    let arch = output(Command::new("dpkg").arg("--print-architecture")).map_or_else(
        || {
            match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            }
            .to_owned()
        },
        |a| a.trim().to_owned(),
    );
    let name = format!("aitrail_{VERSION}_{arch}");
    let out = util::target_dir()?.join("package");
    let stage = out.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clean {}", stage.display()))?;
    }

    stage_files(&root, &binary, &stage)?;
    debian_files(&stage, &arch)?;
    // Directories 0755 whatever the umask: dpkg-deb insists.
    dir_modes(&stage)?;

    let tarball = out.join(format!("{name}.tar.gz"));
    util::run(
        Command::new("tar")
            .arg("--owner=0")
            .arg("--group=0")
            .arg("-C")
            .arg(&out)
            .arg("-czf")
            .arg(&tarball)
            .arg(&name),
    )?;
    println!("package: {}", tarball.display());
    if output(Command::new("dpkg-deb").arg("--version")).is_some() {
        let deb = out.join(format!("{name}.deb"));
        util::run(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "--build"])
                .arg(&stage)
                .arg(&deb),
        )?;
        println!("package: {}", deb.display());
    } else {
        println!("package: dpkg-deb not found: no .deb, the tarball only");
    }
    Ok(())
}

/// The installed files.
fn stage_files(root: &Path, binary: &Path, stage: &Path) -> anyhow::Result<()> {
    put(binary, &stage.join("usr/bin/aitrail"), 0o755)?;
    // Debug info is most of the binary's size; keep it out of the package.
    if let Err(e) = util::run(
        Command::new("strip")
            .arg("--strip-debug")
            .arg(stage.join("usr/bin/aitrail")),
    ) {
        eprintln!("package: not stripped ({e:#})");
    }
    put(
        &root.join("packaging/aitrail-agent.service"),
        &stage.join("lib/systemd/system/aitrail-agent.service"),
        0o644,
    )?;
    put(
        &root.join("config/agent.toml"),
        &stage.join("etc/aitrail/agent.toml"),
        0o600,
    )?;
    put(
        &root.join("README.md"),
        &stage.join("usr/share/doc/aitrail/README.md"),
        0o644,
    )?;
    put(
        &root.join("docs/events.md"),
        &stage.join("usr/share/doc/aitrail/events.md"),
        0o644,
    )?;

    Ok(())
}

/// DEBIAN/: control, conffiles, maintainer scripts.
fn debian_files(stage: &Path, arch: &str) -> anyhow::Result<()> {
    let size_kib = dir_size(stage)? / 1024;
    let control = format!(
        "Package: aitrail\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: aitrail maintainers <aitrail@localhost>\n\
         Installed-Size: {size_kib}\n\
         Depends: libc6, libssl3\n\
         Recommends: systemd\n\
         Section: admin\n\
         Priority: optional\n\
         Description: eBPF host daemon that shows what AI agents say and do\n \
         aitrail reads LLM API traffic as TLS plaintext with eBPF uprobes, joins it\n \
         to the exec, file and network activity of the agent's tools, and writes\n \
         security events as NDJSON. Secrets are fingerprinted before anything is\n \
         written.\n"
    );
    write(&stage.join("DEBIAN/control"), &control, 0o644)?;
    write(
        &stage.join("DEBIAN/conffiles"),
        "/etc/aitrail/agent.toml\n",
        0o644,
    )?;
    write(
        &stage.join("DEBIAN/postinst"),
        "#!/bin/sh\nset -e\n\
         if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n\
         echo 'aitrail: edit /etc/aitrail/agent.toml, then: systemctl enable --now aitrail-agent'\n",
        0o755,
    )?;
    write(
        &stage.join("DEBIAN/prerm"),
        "#!/bin/sh\nset -e\n\
         if [ -d /run/systemd/system ] && [ \"$1\" = remove ]; then\n  \
         systemctl disable --now aitrail-agent.service || true\nfi\n",
        0o755,
    )?;
    write(
        &stage.join("DEBIAN/postrm"),
        "#!/bin/sh\nset -e\n\
         if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi\n",
        0o755,
    )?;

    Ok(())
}

fn put(from: &Path, to: &Path, mode: u32) -> anyhow::Result<()> {
    let data = fs::read(from).with_context(|| format!("read {}", from.display()))?;
    write_bytes(to, &data, mode)
}

fn write(to: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    write_bytes(to, text.as_bytes(), mode)
}

fn write_bytes(to: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = to.parent().context("no parent")?;
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::write(to, data).with_context(|| format!("write {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", to.display()))
}

fn dir_modes(dir: &Path) -> anyhow::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            dir_modes(&e.path())?;
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}
