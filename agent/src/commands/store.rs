//! Opening a store from the command line: `--store DIR`, `--config FILE`
//! (a collector.toml or agent.toml: its `[store]` section gives the
//! directory, the key file and the archive settings), `--key-file FILE`.

use std::path::{Path, PathBuf};

use aitrail_collector::{
    config::StoreSection,
    store::{Store, StoreConfig},
};
use anyhow::Context as _;

/// Where `aitrail run` keeps its store unless told otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/aitrail/store";

#[derive(clap::Args, Clone, Debug, Default)]
pub struct StoreArgs {
    /// The store directory [default: the config's [store] dir, else
    /// /var/lib/aitrail/store].
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// A collector.toml or agent.toml whose [store] section gives the
    /// directory, the encryption key file and the archive settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The store's key file (its `encryption_key_file`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
}

/// The `[store]` table of a config file (collector or agent: the section is
/// the same), or the defaults when it has none.
pub fn store_section(path: &Path) -> anyhow::Result<StoreSection> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
    match table.get("store") {
        None => Ok(StoreSection::default()),
        Some(v) => v
            .clone()
            .try_into()
            .with_context(|| format!("{}: [store]", path.display())),
    }
}

impl StoreArgs {
    /// The validated settings; `archive` keeps the archive's (needed by
    /// commands that rewrite it, `forget`).
    pub fn config(&self, archive: bool) -> anyhow::Result<StoreConfig> {
        let mut section = match &self.config {
            Some(p) => store_section(p)?,
            None => StoreSection::default(),
        };
        if !archive {
            section.archive = aitrail_collector::config::ArchiveSection::default();
        }
        if let Some(k) = &self.key_file {
            section.encryption_key_file = Some(k.clone());
        }
        let dir = self
            .store
            .clone()
            .or_else(|| section.dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE));
        Ok(section.validate(&dir)?)
    }

    /// Opens an existing store.
    pub fn open(&self, archive: bool) -> anyhow::Result<Store> {
        let cfg = self.config(archive)?;
        anyhow::ensure!(
            cfg.dir.join("events.db").exists(),
            "no store at {}",
            cfg.dir.display()
        );
        cfg.open()
            .with_context(|| format!("opening the store {}", cfg.dir.display()))
    }
}

/// Who runs this command, for the records of changes:
/// `cli:NAME (uid N)`, with the sudo caller when there is one.
pub fn actor() -> String {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| "?".to_owned(), |u| u.name);
    match std::env::var("SUDO_USER") {
        Ok(s) if !s.is_empty() && uid.is_root() => format!("cli:{name} (uid {uid}, sudo by {s})"),
        _ => format!("cli:{name} (uid {uid})"),
    }
}
