//! The embedded store: one `SQLite` database (`events.db`) in one directory.
//!
//! Why `SQLite`: one file and no server to run, indexes for every filter the
//! query API has, FTS5 for the text of prompts and outputs, and a primary
//! key that makes dedupe by event `id` an `INSERT OR IGNORE`. It is compiled
//! in (rusqlite's `bundled`), so the version (and FTS5) does not depend on
//! the host. Fleet-scale search belongs to the forwarders' targets (a SIEM,
//! `OpenSearch`), not to this store.
//!
//! Durability: WAL journal with `synchronous = FULL`, so a committed
//! transaction has been fsynced to the WAL. [`Store::insert`] writes a
//! whole batch in one transaction and returns only after the commit: the
//! ingest acks a batch only then, so an acked batch survives a crash of the
//! process or the machine (given a disk that honours fsync). A batch that
//! fails mid-way is rolled back whole and not acked; the agent resends it
//! and the ids already stored are counted as duplicates.
//!
//! Layout: `events` keeps each event's line exactly as received (`body`)
//! next to the columns the filters use; `events_fts` (contentless FTS5,
//! rowid = `events.seq`) indexes the text; `evidence` lists the event ids
//! each finding cites, for retention.

pub mod forward;
pub mod query;
#[cfg(test)]
mod tests;

use std::{
    fs::OpenOptions,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use rusqlite::{params, Connection, OpenFlags};

pub use self::query::{Query, MAX_LIMIT};

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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    host TEXT,
    user TEXT,
    trace_id TEXT,
    severity INTEGER NOT NULL,
    rule TEXT,
    agent TEXT NOT NULL,
    received INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_kind_ts ON events(kind, ts);
CREATE INDEX IF NOT EXISTS events_host_ts ON events(host, ts);
CREATE INDEX IF NOT EXISTS events_user_ts ON events(user, ts);
CREATE INDEX IF NOT EXISTS events_trace ON events(trace_id);
CREATE INDEX IF NOT EXISTS events_severity_ts ON events(severity, ts);
CREATE INDEX IF NOT EXISTS events_rule ON events(rule) WHERE rule IS NOT NULL;
CREATE TABLE IF NOT EXISTS evidence (
    event_id TEXT NOT NULL,
    finding_seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_event ON evidence(event_id);
CREATE VIRTUAL TABLE IF NOT EXISTS events_fts
    USING fts5(text, content='', contentless_delete=1);
CREATE TABLE IF NOT EXISTS forward_cursor (
    name TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 1,
    hold_ns INTEGER NOT NULL DEFAULT 0,
    kinds TEXT,
    min_severity INTEGER NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS events_ad AFTER DELETE ON events BEGIN
    DELETE FROM events_fts WHERE rowid = old.seq;
    DELETE FROM evidence WHERE finding_seq = old.seq;
END;
";

/// Rows deleted per retention transaction, so ingest is not held up long.
const RETENTION_CHUNK: u32 = 5000;

/// The store. The writer and the reader are separate connections: queries
/// run while a batch commits (WAL).
pub struct Store {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // SQLite rolls back an unfinished transaction itself; the connection
    // stays usable after a panic elsewhere.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Store {
    /// Opens or creates the store in `dir` (mode 0700; the database 0600,
    /// and `SQLite` gives its WAL files the database's mode).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
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
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&db)
            .map_err(create(&db))?;
        let writer = Connection::open(&db)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer.busy_timeout(std::time::Duration::from_secs(10))?;
        writer.execute_batch(SCHEMA)?;
        let reader = Connection::open_with_flags(
            &db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Self {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
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
    pub fn search(&self, q: &Query) -> Result<Vec<String>, StoreError> {
        let (sql, args) = q.to_sql();
        let conn = lock(&self.reader);
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
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

    /// Deletes events older than `before_ns`, except findings, the events
    /// they cite, and every event of a trace that holds a finding or a
    /// cited event. Returns how many were deleted.
    pub fn apply_retention(&self, before_ns: i64) -> Result<u64, StoreError> {
        {
            let conn = lock(&self.writer);
            conn.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS keep_traces (trace_id TEXT PRIMARY KEY);
                 DELETE FROM keep_traces;
                 INSERT OR IGNORE INTO keep_traces
                     SELECT trace_id FROM events WHERE kind = 'finding' AND trace_id IS NOT NULL;
                 INSERT OR IGNORE INTO keep_traces
                     SELECT x.trace_id FROM evidence v JOIN events x ON x.id = v.event_id
                     WHERE x.trace_id IS NOT NULL;",
            )?;
        }
        let mut deleted = 0u64;
        loop {
            // One chunk per lock and transaction: ingest gets the writer
            // between chunks. Two more rules than age (see forward.rs):
            // the newest row is never deleted, so its `seq` is never given
            // again to a later event (forwarder cursors rely on `seq` only
            // growing); and an event an active forwarder has not sent yet
            // is held `hold_ns` longer, after which it is deleted and
            // counted in that forwarder's `expired`.
            let mut conn = lock(&self.writer);
            let tx = conn.transaction()?;
            tx.execute_batch(
                "CREATE TEMP TABLE IF NOT EXISTS doomed (seq INTEGER PRIMARY KEY);
                 DELETE FROM doomed;",
            )?;
            let n = tx.execute(
                &format!(
                    "INSERT INTO doomed
                    SELECT seq FROM events
                    WHERE ts < ?1 AND kind <> 'finding'
                      AND (trace_id IS NULL OR trace_id NOT IN (SELECT trace_id FROM keep_traces))
                      AND id NOT IN (SELECT event_id FROM evidence)
                      AND seq < (SELECT max(seq) FROM events)
                      AND NOT EXISTS (SELECT 1 FROM forward_cursor f
                          WHERE {} AND events.ts >= ?1 - f.hold_ns)
                    LIMIT ?2",
                    forward::UNSENT_BY_F
                ),
                params![before_ns, RETENTION_CHUNK],
            )?;
            if n > 0 {
                tx.execute(
                    &format!(
                        "UPDATE forward_cursor AS f SET expired = expired + (
                            SELECT count(*) FROM doomed JOIN events USING (seq)
                            WHERE {})
                         WHERE f.active = 1",
                        forward::UNSENT_BY_F
                    ),
                    [],
                )?;
                tx.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM doomed)",
                    [],
                )?;
            }
            tx.commit()?;
            deleted += n as u64;
            if n < RETENTION_CHUNK as usize {
                return Ok(deleted);
            }
        }
    }
}
