//! Commands that change a store: `aitrail release`, `aitrail forget`,
//! `aitrail keygen`, `aitrail store-encrypt`. Each change is recorded in the
//! store's audit log with who ran it (`aitrail search --kind release`,
//! `--kind tombstone`).

use std::{io::IsTerminal as _, path::PathBuf};

use aitrail_collector::store::{encrypt_store, ForgetRequest, ReleaseSelector, StoreKey};
use anyhow::Context as _;

use super::store::{actor, StoreArgs};

#[derive(clap::Args)]
pub struct ReleaseArgs {
    /// Finding ids to release from the hold.
    ids: Vec<String>,
    /// Release every finding found before this time (RFC 3339, or an age
    /// like `90d`).
    #[arg(long, conflicts_with = "ids")]
    before: Option<String>,
    /// Why (recorded with the release).
    #[arg(long)]
    note: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(clap::Args)]
pub struct ForgetArgs {
    /// The user name (`process.user`) whose events are erased.
    #[arg(long)]
    user: String,
    /// Also erase the user's findings that are still held (not released).
    #[arg(long)]
    include_held: bool,
    /// Why (a ticket number…), recorded in the tombstone.
    #[arg(long)]
    reason: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// The key file to create (mode 0600; an existing file is never
    /// overwritten).
    file: PathBuf,
}

#[derive(clap::Args)]
pub struct EncryptArgs {
    /// The key to encrypt with (see `aitrail keygen`); then set it as the
    /// store's `encryption_key_file`.
    #[arg(long)]
    key_file: PathBuf,
    /// The store directory (not in use: stop its collector or `aitrail run`).
    #[arg(long)]
    store: PathBuf,
}

pub fn release(args: &ReleaseArgs) -> anyhow::Result<()> {
    let sel = match (&args.before, args.ids.is_empty()) {
        (Some(t), true) => {
            ReleaseSelector::Before(super::query::parse_time(t, chrono::Utc::now())?)
        }
        (None, false) => ReleaseSelector::Ids(args.ids.clone()),
        _ => anyhow::bail!("give finding ids or --before"),
    };
    let store = args.store.open(false)?;
    let report = store.release(&sel, &actor(), args.note.as_deref())?;
    println!("{}", serde_json::to_string(&report)?);
    if !report.unknown.is_empty() || !report.not_findings.is_empty() {
        anyhow::bail!(
            "not released: {} unknown id(s), {} id(s) of events that are not findings",
            report.unknown.len(),
            report.not_findings.len()
        );
    }
    Ok(())
}

pub fn forget(args: &ForgetArgs) -> anyhow::Result<()> {
    if !args.yes {
        anyhow::ensure!(
            std::io::stdin().is_terminal(),
            "forget erases for good: pass --yes, or run it from a terminal to confirm"
        );
        eprint!(
            "Erase every event of user {:?} from the store and its archive? Type the name to confirm: ",
            args.user
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        anyhow::ensure!(
            answer.trim_end() == args.user,
            "not confirmed; nothing erased"
        );
    }
    // With the archive's settings: its segments (and objects) are rewritten.
    let store = args.store.open(true)?;
    let tomb = store.forget(&ForgetRequest {
        user: &args.user,
        by: &actor(),
        include_held: args.include_held,
        reason: args.reason.as_deref(),
    })?;
    println!("{}", serde_json::to_string(&tomb)?);
    anyhow::ensure!(
        tomb.tombstone.status == "done",
        "the archive rewrite is not finished ({}); it resumes at the archive's next start",
        tomb.tombstone.status
    );
    Ok(())
}

pub fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    StoreKey::generate(&args.file)
        .with_context(|| format!("creating the key file {}", args.file.display()))?;
    eprintln!(
        "aitrail: key written to {} (0600). Keep a copy apart from the store: without it the store cannot be read.",
        args.file.display()
    );
    Ok(())
}

pub fn store_encrypt(args: &EncryptArgs) -> anyhow::Result<()> {
    let key = StoreKey::load(&args.key_file)?;
    let n = encrypt_store(&args.store, key)
        .with_context(|| format!("encrypting the store {}", args.store.display()))?;
    eprintln!(
        "aitrail: {} encrypted ({n} events); set encryption_key_file = \"{}\" in its [store] section",
        args.store.display(),
        args.key_file.display()
    );
    Ok(())
}
