//! The store's tables, and the migration of older stores.
//!
//! `PRAGMA user_version` holds the schema version; one sequence, and a
//! store of any earlier version is brought up to [`VERSION`] when opened:
//!
//! - 0: the first store (`events.seq` a plain rowid), with or without the
//!   forwarders' `forward_cursor` table (it came later, still version 0);
//! - 1: never written;
//! - 2: `seq` AUTOINCREMENT, so that a seq is never handed out twice even
//!   after the newest events are deleted (by `forget`): the archive,
//!   `aitrail tail` and the forwarders follow the store by seq and would
//!   otherwise miss events. It also adds the tables of releases, the audit
//!   log (tombstones, releases), the archive's segments and `meta`;
//! - 3: version 2 and `forward_cursor` in one schema.
//!
//! Every step is `CREATE … IF NOT EXISTS` except the rebuild of `events`
//! (version 0), so one migration serves every earlier version, in one
//! transaction.

use rusqlite::{Connection, OptionalExtension as _};

pub const VERSION: i64 = 3;

const EVENTS: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
);";

const REST: &str = "
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
CREATE INDEX IF NOT EXISTS evidence_finding ON evidence(finding_seq);
CREATE VIRTUAL TABLE IF NOT EXISTS events_fts
    USING fts5(text, content='', contentless_delete=1);
CREATE TRIGGER IF NOT EXISTS events_ad AFTER DELETE ON events BEGIN
    DELETE FROM events_fts WHERE rowid = old.seq;
    DELETE FROM evidence WHERE finding_seq = old.seq;
END;
-- Settings and state of this store: archive cursor, forget epoch, the
-- key of the user-name hashes.
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value ANY NOT NULL
) WITHOUT ROWID;
-- Findings released from the hold: retention treats them like any event.
CREATE TABLE IF NOT EXISTS releases (
    finding_id TEXT PRIMARY KEY,
    ts INTEGER NOT NULL,
    by TEXT NOT NULL
) WITHOUT ROWID;
-- What was done to the store: tombstones of `forget`, releases. `subject`
-- is the keyed hash of the forgotten name.
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_kind ON audit(kind, ts);
-- Each forwarder's durable cursor (see forward.rs).
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
-- Archive segments (see archive/mod.rs for their life).
CREATE TABLE IF NOT EXISTS archive_segments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    day TEXT NOT NULL,
    num INTEGER NOT NULL,
    name TEXT NOT NULL,
    sealed INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    events INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    closed INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    local INTEGER NOT NULL DEFAULT 1,
    uploaded_version INTEGER,
    remote_key TEXT,
    deleted INTEGER,
    UNIQUE (day, num)
);
-- The users whose events a segment holds, so that forget rewrites only
-- those segments.
CREATE TABLE IF NOT EXISTS archive_segment_users (
    user TEXT NOT NULL,
    segment INTEGER NOT NULL,
    PRIMARY KEY (user, segment)
) WITHOUT ROWID;
-- Segments still to rewrite for a forget (the lines whose user hashes to
-- `subject` go): a forget that stops half-way is finished later.
CREATE TABLE IF NOT EXISTS archive_forget (
    segment INTEGER NOT NULL,
    subject TEXT NOT NULL,
    tombstone TEXT NOT NULL,
    PRIMARY KEY (segment, subject)
) WITHOUT ROWID;
";

fn table_sql(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )
    .optional()
}

/// Creates the tables, or brings an older store up to [`VERSION`], in one
/// transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < VERSION {
        if let Some(sql) = table_sql(&tx, "events")? {
            if !sql.contains("AUTOINCREMENT") {
                // Rebuild `events` with the same rows and seqs (the FTS
                // rowids are seqs); its indexes and trigger go with the old
                // table and are made again below.
                tx.execute_batch(
                    "DROP TRIGGER IF EXISTS events_ad;
                     ALTER TABLE events RENAME TO events_v0;",
                )?;
                tx.execute_batch(EVENTS)?;
                tx.execute_batch(
                    "INSERT INTO events SELECT * FROM events_v0;
                     DROP TABLE events_v0;",
                )?;
            }
        }
        tx.execute_batch(EVENTS)?;
        tx.execute_batch(REST)?;
        // A version-0 store's forwarders may have a cursor above its
        // largest stored seq (never in practice: its retention kept the
        // newest row); seqs below a cursor are never handed out again.
        tx.execute_batch(
            "INSERT INTO sqlite_sequence (name, seq)
                 SELECT 'events', 0 WHERE NOT EXISTS
                     (SELECT 1 FROM sqlite_sequence WHERE name = 'events');
             UPDATE sqlite_sequence SET seq = max(seq,
                     (SELECT coalesce(max(cursor), 0) FROM forward_cursor))
                 WHERE name = 'events';",
        )?;
        // Deleting a row removes its terms from the index at once instead
        // of leaving a delete marker next to them until the next merge: a
        // forgotten or expired text is gone from the index, not hidden.
        tx.execute(
            "INSERT INTO events_fts (events_fts, rank) VALUES ('secure-delete', 1)",
            [],
        )?;
        tx.pragma_update(None, "user_version", VERSION)?;
    }
    tx.commit()
}
