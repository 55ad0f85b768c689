//! The embedded store: one `SQLite` database (`events.db`) in one directory.
//!
//! Why `SQLite`: one file and no server to run, indexes for every filter the
//! query API has, FTS5 for the text of prompts and outputs, and a primary
//! key that makes dedupe by event `id` an `INSERT OR IGNORE`. It is compiled
//! in (rusqlite's `bundled-sqlcipher`), so the version (and FTS5) does not
//! depend on the host. Fleet-scale search belongs to the forwarders' targets
//! (a SIEM, `OpenSearch`), not to this store.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a committed
//! transaction has been fsynced to the WAL. [`Store::insert`] writes a
//! whole batch in one transaction and returns only after the commit: the
//! ingest acks a batch only then, so an acked batch survives a crash of the
//! process or the machine (given a disk that honours fsync). A batch that
//! fails mid-way is rolled back whole and not acked; the agent resends it
//! and the ids already stored are counted as duplicates.
//!
//! Layout (see `schema`): `events` keeps each event's line exactly as
//! received (`body`) next to the columns the filters use; `events_fts`
//! (contentless FTS5, rowid = `events.seq`) indexes the text; `evidence`
//! lists the event ids each finding cites, for retention. `seq` only grows
//! (AUTOINCREMENT): the archive and `aitrail tail` follow the store by it.
//!
//! Deletion is meant: the writer runs with `secure_delete` (freed content
//! and pages are overwritten with zeros) and the FTS index with its own
//! `secure-delete` (a row's terms leave the index, no delete marker).
//! `forget` then checkpoints and truncates the WAL (see `forget`).
//!
//! Encryption at rest (optional, `[store] encryption_key_file`): the
//! database is a `SQLCipher` database — every page of the file, of the WAL
//! and of the FTS index is encrypted (AES-256, HMAC-SHA512 per page);
//! archive segments are sealed (see `archive::crypt`). See `keys`.

pub mod archive;
mod encrypt;
mod forget;
pub mod forward;
pub mod keys;
pub mod query;
mod retention;
mod schema;
pub mod service;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_forward;

use std::{
    fs::OpenOptions,
    io::Read as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use ring::hmac;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension as _};

use self::{archive::ArchiveError, keys::Secret};
pub use self::{
    archive::{Archive, ArchiveConfig},
    encrypt::encrypt_store,
    forget::{ForgetRequest, ForwardedCount, Tombstone},
    keys::{KeyError, StoreKey},
    query::{Query, MAX_LIMIT},
    retention::{ReleaseReport, ReleaseSelector},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: cannot create")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store: SQLite")]
    Sql(#[from] rusqlite::Error),
    #[error("store {path} is encrypted: give its key (encryption_key_file, --key-file)")]
    Encrypted { path: PathBuf },
    #[error(
        "store {path} is not encrypted but a key was given: encrypt it first \
         (`aitrail store-encrypt`), or remove encryption_key_file"
    )]
    NotEncrypted { path: PathBuf },
    #[error("store {path}: the key does not open it (wrong key file)")]
    WrongKey { path: PathBuf },
    #[error("store {path}: schema version {found} is newer than this aitrail ({supported})")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(
        "{user}: {count} finding(s) still held (not released), e.g. {example}: release them \
         first (`aitrail release`), or forget with --include-held"
    )]
    Held {
        user: String,
        count: u64,
        example: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// One event ready to store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub id: String,
    /// `time`, as ns since the Unix epoch.
    pub ts: i64,
    pub kind: String,
    pub host: Option<String>,
    pub user: Option<String>,
    pub trace_id: Option<String>,
    /// 0 info … 4 critical.
    pub severity: u8,
    pub rule: Option<String>,
    /// Event ids a finding cites.
    pub evidence: Vec<String>,
    /// Text for full-text search (prompts, outputs, tool arguments, …).
    pub text: String,
    /// The line as received.
    pub body: String,
}

/// What an insert did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    pub accepted: u64,
    /// Ids the store already had.
    pub duplicates: u64,
}

/// A store's settings (`[store]` of collector.toml and agent.toml),
/// validated; the key file is read by [`StoreConfig::open`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub dir: PathBuf,
    pub key_file: Option<PathBuf>,
    pub retention: Option<std::time::Duration>,
    pub retention_interval: std::time::Duration,
    pub archive: Option<ArchiveConfig>,
}

impl StoreConfig {
    /// A plaintext store in `dir` that keeps everything, with no archive.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            key_file: None,
            retention: None,
            retention_interval: std::time::Duration::from_hours(1),
            archive: None,
        }
    }

    /// Opens the store: reads the key file, sets up the archive.
    pub fn open(&self) -> Result<Store, StoreError> {
        let key = self.key_file.as_deref().map(StoreKey::load).transpose()?;
        Store::open_with(
            &self.dir,
            StoreOptions {
                key,
                archive: self.archive.clone(),
            },
        )
    }

    pub fn service(&self) -> service::ServiceConfig {
        service::ServiceConfig {
            retention: self.retention,
            retention_interval: self.retention_interval,
        }
    }
}

/// How a store is opened.
#[derive(Default)]
pub struct StoreOptions {
    /// The key of an encrypted store (`encryption_key_file`).
    pub key: Option<StoreKey>,
    /// The archive, when this process writes one (or needs its object
    /// storage to rewrite segments for `forget`).
    pub archive: Option<ArchiveConfig>,
}

/// The store. The writer and the reader are separate connections: queries
/// run while a batch commits (WAL).
pub struct Store {
    dir: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    archive_key: Option<Secret>,
    /// HMAC key of user-name hashes (tombstones), kept in `meta`.
    name_key: hmac::Key,
    archive: Option<Archive>,
    /// The database key, for the connections opened later (forwarders).
    key: Option<StoreKey>,
    pub counters: StoreCounters,
}

/// What the store's own work did, for `/metrics`.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Events deleted by retention.
    pub retention_deleted: std::sync::atomic::AtomicU64,
    /// Events deleted by forget.
    pub forget_deleted: std::sync::atomic::AtomicU64,
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // SQLite rolls back an unfinished transaction itself; the connection
    // stays usable after a panic elsewhere.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The first 16 bytes of every plaintext `SQLite` database.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// RFC 3339 (UTC, ns) of ns since the epoch.
pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A fresh random id (128 bits, hex).
pub fn new_id() -> Result<String, StoreError> {
    Ok(hex::encode(keys::random::<16>()?))
}

impl Store {
    /// Opens or creates a plaintext store in `dir`, without an archive.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens or creates the store in `dir` (mode 0700; the database 0600,
    /// and `SQLite` gives its WAL files the database's mode).
    pub fn open_with(dir: &Path, opts: StoreOptions) -> Result<Self, StoreError> {
        fn create(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
            move |source| StoreError::Create {
                path: path.to_owned(),
                source,
            }
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(create(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(create(dir))?;
        let db = dir.join("events.db");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&db)
            .map_err(create(&db))?;
        let mut head = Vec::with_capacity(16);
        (&mut file)
            .take(16)
            .read_to_end(&mut head)
            .map_err(create(&db))?;
        drop(file);
        let plaintext = head.as_slice() == SQLITE_MAGIC;
        match (&opts.key, head.len()) {
            (_, 0) => {}
            (Some(_), _) if plaintext => return Err(StoreError::NotEncrypted { path: db }),
            (None, _) if !plaintext => return Err(StoreError::Encrypted { path: db }),
            _ => {}
        }
        let key = opts.key.as_ref();
        let mut writer = connect(&db, OpenFlags::default(), key)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer.pragma_update(None, "secure_delete", "ON")?;
        let found: i64 = writer.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > schema::VERSION {
            return Err(StoreError::TooNew {
                path: db,
                found,
                supported: schema::VERSION,
            });
        }
        schema::migrate(&mut writer)?;
        let name_key = name_key(&writer)?;
        let reader = connect(
            &db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            key,
        )?;
        let archive_key = opts.key.as_ref().map(StoreKey::archive_key);
        let archive = Archive::open(&writer, opts.archive)?;
        Ok(Self {
            dir: dir.to_owned(),
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            archive_key,
            name_key,
            archive,
            key: opts.key,
            counters: StoreCounters::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn archive(&self) -> Option<&Archive> {
        self.archive.as_ref()
    }

    pub(crate) fn archive_key(&self) -> Option<&Secret> {
        self.archive_key.as_ref()
    }

    pub(crate) fn writer(&self) -> MutexGuard<'_, Connection> {
        lock(&self.writer)
    }

    pub(crate) fn reader(&self) -> MutexGuard<'_, Connection> {
        lock(&self.reader)
    }

    /// The keyed hash a tombstone keeps instead of a user name:
    /// `hmac-sha256:` and 64 hex digits. The key is this store's (in its
    /// database): equal names hash equal here, and the hash says nothing
    /// without the database.
    pub fn user_hash(&self, user: &str) -> String {
        let tag = hmac::sign(&self.name_key, format!("user\0{user}").as_bytes());
        format!("hmac-sha256:{}", hex::encode(tag.as_ref()))
    }

    /// Stores a batch in one durable transaction; ids already stored (or
    /// repeated in the batch) are skipped and counted.
    pub fn insert(
        &self,
        agent: &str,
        received_ns: i64,
        rows: &[Row],
    ) -> Result<Inserted, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let mut done = Inserted::default();
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR IGNORE INTO events
                 (id, ts, kind, host, user, trace_id, severity, rule, agent, received, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let mut fts =
                tx.prepare_cached("INSERT INTO events_fts (rowid, text) VALUES (?1, ?2)")?;
            let mut evidence =
                tx.prepare_cached("INSERT INTO evidence (event_id, finding_seq) VALUES (?1, ?2)")?;
            for r in rows {
                let n = ins.execute(params![
                    r.id,
                    r.ts,
                    r.kind,
                    r.host,
                    r.user,
                    r.trace_id,
                    r.severity,
                    r.rule,
                    agent,
                    received_ns,
                    r.body
                ])?;
                if n == 0 {
                    done.duplicates += 1;
                    continue;
                }
                done.accepted += 1;
                let seq = tx.last_insert_rowid();
                if !r.text.is_empty() {
                    fts.execute(params![seq, r.text])?;
                }
                for e in &r.evidence {
                    evidence.execute(params![e, seq])?;
                }
            }
        }
        tx.commit()?;
        Ok(done)
    }

    /// Events matching `q`, newest first, as stored (one JSON text each).
    /// `kind` `tombstone` or `release` reads the audit log instead.
    pub fn search(&self, q: &Query) -> Result<Vec<String>, StoreError> {
        if let Some(kind) = q.audit_kind() {
            return self.audit(kind, q);
        }
        let (sql, args) = q.to_sql();
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Entries of the audit log (`tombstone`, `release`), newest first;
    /// `user` matches a tombstone by the hash of the name.
    fn audit(&self, kind: &str, q: &Query) -> Result<Vec<String>, StoreError> {
        let subject = q.user.as_deref().map(|u| self.user_hash(u));
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(
            "SELECT body FROM audit WHERE kind = ?1
               AND (?2 IS NULL OR subject = ?2)
               AND (?3 IS NULL OR ts >= ?3) AND (?4 IS NULL OR ts < ?4)
             ORDER BY seq DESC LIMIT ?5",
        )?;
        let rows = stmt.query_map(
            params![kind, subject, q.since, q.until, q.effective_limit()],
            |r| r.get(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every event of a trace, oldest first.
    pub fn trace(&self, trace_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(
            "SELECT body FROM events WHERE trace_id = ?1 ORDER BY ts, seq LIMIT 100000",
        )?;
        let rows = stmt.query_map([trace_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// For `tail`: the newest `last` events matching `q` (oldest of them
    /// first) and the highest seq handed out so far, read at one instant.
    pub fn tail_start(&self, q: &Query, last: u32) -> Result<(Vec<String>, i64), StoreError> {
        let mut conn = lock(&self.reader);
        let tx = conn.transaction()?;
        let top = top_seq(&tx)?;
        let mut events = Vec::new();
        if last > 0 {
            let (sql, args) = q.to_sql_after(None, true, last);
            let mut stmt = tx.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(1))?;
            events = rows.collect::<Result<Vec<String>, _>>()?;
            events.reverse();
        }
        drop(tx);
        Ok((events, top))
    }

    /// For `tail`: events matching `q` stored after `after_seq`, in the
    /// order they were stored, at most `limit`; with the last seq looked at
    /// (the next call's `after_seq`).
    pub fn tail_next(
        &self,
        q: &Query,
        after_seq: i64,
        limit: u32,
    ) -> Result<(Vec<String>, i64), StoreError> {
        let mut conn = lock(&self.reader);
        let tx = conn.transaction()?;
        let top = top_seq(&tx)?;
        // Look at no more than `limit` seqs at a time: a filter that
        // matches rarely must not scan the whole rest of the store at once.
        let upto = top.min(after_seq.saturating_add(i64::from(limit.max(1)) * 64));
        let (sql, args) = q.to_sql_after(Some((after_seq, upto)), false, limit);
        let mut stmt = tx.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let rows = rows.collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(tx);
        let next = if rows.len() >= limit as usize {
            rows.last().map_or(upto, |r| r.0)
        } else {
            upto
        };
        Ok((rows.into_iter().map(|r| r.1).collect(), next))
    }

    /// How many times `id` is stored (0 or 1: the tests' oracle).
    pub fn count_id(&self, id: &str) -> Result<u64, StoreError> {
        let conn = lock(&self.reader);
        Ok(
            conn.query_row("SELECT count(*) FROM events WHERE id = ?1", [id], |r| {
                r.get(0)
            })?,
        )
    }

    /// Every stored (id, body), for the tests' oracle.
    pub fn all(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare("SELECT id, body FROM events ORDER BY seq")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn count(&self) -> Result<u64, StoreError> {
        let conn = lock(&self.reader);
        Ok(conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?)
    }

    /// Checkpoints the WAL into the database and truncates it to zero
    /// bytes, retrying while readers hold it. Returns whether it was
    /// truncated.
    pub fn checkpoint_truncate(&self) -> Result<bool, StoreError> {
        for attempt in 0..50 {
            let busy: i64 = {
                let conn = lock(&self.writer);
                conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?
            };
            if busy == 0 {
                return Ok(true);
            }
            std::thread::sleep(std::time::Duration::from_millis(20 * (attempt + 1)));
        }
        Ok(false)
    }
}

/// The highest seq ever handed out (0 for an empty store).
pub(crate) fn top_seq(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0))
}

pub(crate) fn connect(
    db: &Path,
    flags: OpenFlags,
    key: Option<&StoreKey>,
) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(db, flags)?;
    if let Some(k) = key {
        let pragma =
            zeroize::Zeroizing::new(format!("PRAGMA key = \"{}\";", &*k.sqlcipher_pragma()));
        conn.execute_batch(&pragma)?;
    }
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // Sorts and temporary indexes stay in memory, never in a temp file.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The first read tells a wrong key ("file is not a database").
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(conn),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if key.is_some() && e.code == rusqlite::ErrorCode::NotADatabase =>
        {
            Err(StoreError::WrongKey {
                path: db.to_owned(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The user-name hash key, made on first use.
fn name_key(conn: &Connection) -> Result<hmac::Key, StoreError> {
    let get = || -> rusqlite::Result<Option<Vec<u8>>> {
        conn.query_row(
            "SELECT value FROM meta WHERE name = 'name_hash_key'",
            [],
            |r| r.get(0),
        )
        .optional()
    };
    let bytes = if let Some(b) = get()? {
        b
    } else {
        let fresh = keys::random::<32>()?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('name_hash_key', ?1)",
            [&fresh[..]],
        )?;
        get()?.unwrap_or_else(|| fresh.to_vec())
    };
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

/// A value of `meta`.
pub(crate) fn meta_get(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
}

pub(crate) fn meta_set(conn: &Connection, name: &str, value: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        params![name, value],
    )?;
    Ok(())
}
