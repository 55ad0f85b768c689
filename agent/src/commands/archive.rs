//! `aitrail archive`: read archive segments (`cat`, plain or sealed) and
//! list a store's segments (`ls`).

use std::{io::Write as _, path::PathBuf};

use aitrail_collector::store::{archive::segment, StoreKey};
use anyhow::Context as _;

use super::store::{store_section, StoreArgs};

#[derive(clap::Subcommand)]
pub enum ArchiveCmd {
    /// Print the events of segment files (`*.ndjson.zst`, sealed
    /// `*.ndjson.zst.enc` with the store's key) as NDJSON.
    Cat(CatArgs),
    /// List the store's archive segments, one JSON object per line.
    Ls(LsArgs),
}

#[derive(clap::Args)]
pub struct CatArgs {
    /// Segment files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The store's key file, for sealed segments.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// A config whose `[store] encryption_key_file` is the key.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    store: StoreArgs,
}

pub fn run(cmd: &ArchiveCmd) -> anyhow::Result<()> {
    match cmd {
        ArchiveCmd::Cat(a) => cat(a),
        ArchiveCmd::Ls(a) => ls(a),
    }
}

fn cat(args: &CatArgs) -> anyhow::Result<()> {
    let key_file = match (&args.key_file, &args.config) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(c)) => store_section(c)?.encryption_key_file,
        (None, None) => None,
    };
    let key = key_file
        .map(|p| StoreKey::load(&p).map(|k| k.archive_key()))
        .transpose()?;
    let mut out = std::io::stdout().lock();
    for f in &args.files {
        let file = std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
        let done = segment::for_each_line(file, key.as_ref(), |line| {
            out.write_all(line)?;
            out.write_all(b"\n")
        });
        match done {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", f.display())),
        }
    }
    Ok(())
}

fn ls(args: &LsArgs) -> anyhow::Result<()> {
    let store = args.store.open(false)?;
    let Some(archive) = store.archive() else {
        anyhow::bail!("the store {} has no archive", store.dir().display());
    };
    let mut out = std::io::stdout().lock();
    for s in archive.segments(&store, "deleted IS NULL")? {
        let path = archive.segment_path(&s.day, &s.name);
        writeln!(
            out,
            "{}",
            serde_json::json!({
                "day": s.day, "name": s.name, "events": s.events, "bytes": s.bytes,
                "sealed": s.sealed, "version": s.version,
                "local": s.local.then(|| path.display().to_string()),
                "remote": s.remote_key, "uploaded_version": s.uploaded_version,
            })
        )?;
    }
    Ok(())
}
