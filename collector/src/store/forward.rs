//! What forwarders need from the store: a durable cursor per forwarder and
//! a reader that pages through `events` by `seq`.
//!
//! `events.seq` is the rowid: every stored event gets a larger `seq` than
//! every event committed before it (one writer; an insert takes max + 1).
//! A forwarder's cursor is the last `seq` it is done with: sent and
//! acknowledged, refused for good, or read and left out by its filter. It
//! lives in `forward_cursor` and moves only forward, and only after the
//! destination acknowledged, so a restart resends at most the batch that
//! was in flight.
//!
//! `seq` would be reused if the row holding the largest one were deleted
//! (`SQLite` then gives max + 1 again); retention never deletes that row,
//! and a forwarder whose cursor is past the newest row (a store replaced
//! under it) moves its cursor back to that row ([`ForwardReader::read`]
//! reports `newest`, the runner compares).
//!
//! Retention and forwarders: an event an active forwarder has not sent yet
//! (above its cursor and matching its filter) is kept `hold_ns` past the
//! retention age; after that retention deletes it anyway and adds it to the
//! forwarder's `expired` count, so a destination down for longer than that
//! costs counted events, never unbounded disk.

use std::fmt::Write as _;

use rusqlite::{params, types::Value, Connection, OpenFlags, OptionalExtension as _};

use super::{lock, Store, StoreError};

/// SQL condition, with the cursor row as `f` and the event as `events`:
/// the event is one that active forwarder has not sent yet.
pub(super) const UNSENT_BY_F: &str = "f.active = 1 AND events.seq > f.cursor
    AND (f.kinds IS NULL OR instr(f.kinds, ',' || events.kind || ',') > 0)
    AND events.severity >= f.min_severity";

/// Which events a forwarder sends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Event kinds; empty: every kind.
    pub kinds: Vec<String>,
    /// At least this severity (0 info … 4 critical).
    pub min_severity: u8,
}

impl Filter {
    /// `,kind,kind,` for `instr` in SQL, or `None` for every kind.
    fn kinds_column(&self) -> Option<String> {
        (!self.kinds.is_empty()).then(|| format!(",{},", self.kinds.join(",")))
    }
}

/// A forwarder as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub filter: Filter,
    /// How long past the retention age unsent events are kept, in ns.
    pub hold_ns: i64,
    /// A forwarder seen for the first time starts after the newest event
    /// (true) or before the oldest (false).
    pub start_at_newest: bool,
}

/// A forwarder's persisted state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CursorState {
    pub cursor: i64,
    /// Events retention deleted before this forwarder sent them (since the
    /// forwarder was first configured).
    pub expired: u64,
}

/// Rows read for a forwarder.
#[derive(Debug, Default)]
pub struct Chunk {
    /// `(seq, body)`, oldest first, matching the filter.
    pub rows: Vec<(i64, String)>,
    /// Every event up to this `seq` was looked at: the rows above, and the
    /// ones the filter left out.
    pub read_upto: i64,
    /// The newest `seq` in the store when this was read (0 when empty).
    pub newest: i64,
}

impl Store {
    /// Records the configured forwarders: each one's cursor row is created
    /// when new, its filter and hold are updated, and forwarders no longer
    /// configured are marked inactive (they keep their cursor, but no
    /// longer hold retention back). Returns each one's state, in order.
    pub fn forward_register(&self, regs: &[Registration]) -> Result<Vec<CursorState>, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        tx.execute("UPDATE forward_cursor SET active = 0", [])?;
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let mut out = Vec::with_capacity(regs.len());
        for r in regs {
            tx.execute(
                "INSERT OR IGNORE INTO forward_cursor (name, cursor, updated)
                 VALUES (?1, CASE WHEN ?2 THEN (SELECT coalesce(max(seq), 0) FROM events) ELSE 0 END, ?3)",
                params![r.name, r.start_at_newest, now],
            )?;
            tx.execute(
                "UPDATE forward_cursor SET active = 1, hold_ns = ?2, kinds = ?3, min_severity = ?4
                 WHERE name = ?1",
                params![
                    r.name,
                    r.hold_ns,
                    r.filter.kinds_column(),
                    r.filter.min_severity
                ],
            )?;
            out.push(tx.query_row(
                "SELECT cursor, expired FROM forward_cursor WHERE name = ?1",
                [&r.name],
                |row| {
                    Ok(CursorState {
                        cursor: row.get(0)?,
                        expired: row.get(1)?,
                    })
                },
            )?);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Moves a forwarder's cursor forward to `cursor` (never back, except
    /// with [`Store::forward_reset`]), durably.
    pub fn forward_ack(&self, name: &str, cursor: i64) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let conn = lock(&self.writer);
        conn.execute(
            "UPDATE forward_cursor SET cursor = ?2, updated = ?3 WHERE name = ?1 AND cursor < ?2",
            params![name, cursor, now],
        )?;
        Ok(())
    }

    /// Sets a forwarder's cursor to `cursor` even if that is backwards: for
    /// a cursor found past the newest event of the store.
    pub fn forward_reset(&self, name: &str, cursor: i64) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let conn = lock(&self.writer);
        conn.execute(
            "UPDATE forward_cursor SET cursor = ?2, updated = ?3 WHERE name = ?1",
            params![name, cursor, now],
        )?;
        Ok(())
    }

    /// A forwarder's persisted state, `None` when it was never registered.
    pub fn forward_state(&self, name: &str) -> Result<Option<CursorState>, StoreError> {
        let conn = lock(&self.reader);
        Ok(conn
            .query_row(
                "SELECT cursor, expired FROM forward_cursor WHERE name = ?1",
                [name],
                |row| {
                    Ok(CursorState {
                        cursor: row.get(0)?,
                        expired: row.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    /// A read-only connection of its own for one forwarder, so that its
    /// reads do not wait for the query API's (and the other way round).
    pub fn forward_reader(&self) -> Result<ForwardReader, StoreError> {
        let path = lock(&self.reader)
            .path()
            .map(str::to_owned)
            .ok_or_else(|| {
                StoreError::Sql(rusqlite::Error::InvalidPath(
                    "the store has no file path".into(),
                ))
            })?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(ForwardReader { conn })
    }
}

/// A forwarder's reader (its own connection).
pub struct ForwardReader {
    conn: Connection,
}

impl ForwardReader {
    /// The newest `seq` in the store (0 when empty).
    pub fn newest(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?)
    }

    /// Events after `after` that match `filter`, oldest first: at most
    /// `max_events`, and no more once their bodies reach `max_bytes` (the
    /// row that crosses it is included, so one large event still goes).
    pub fn read(
        &mut self,
        after: i64,
        filter: &Filter,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Chunk, StoreError> {
        // One read transaction: `newest` and the rows are one snapshot, so
        // "every event up to `newest` was looked at" holds when the rows
        // run out before a limit.
        let tx = self.conn.unchecked_transaction()?;
        let newest: i64 =
            tx.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?;
        let mut sql = String::from("SELECT seq, body FROM events WHERE seq > ?1 AND seq <= ?2");
        let mut args: Vec<Value> = vec![Value::Integer(after), Value::Integer(newest)];
        if !filter.kinds.is_empty() {
            sql.push_str(" AND kind IN (");
            for (i, k) in filter.kinds.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                args.push(Value::Text(k.clone()));
                let _ = write!(sql, "?{}", args.len());
            }
            sql.push(')');
        }
        if filter.min_severity > 0 {
            args.push(Value::Integer(i64::from(filter.min_severity)));
            let _ = write!(sql, " AND severity >= ?{}", args.len());
        }
        sql.push_str(" ORDER BY seq");
        let mut chunk = Chunk {
            newest,
            read_upto: newest.max(after),
            ..Chunk::default()
        };
        {
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
            let mut bytes = 0usize;
            while let Some(row) = rows.next()? {
                let seq: i64 = row.get(0)?;
                let body: String = row.get(1)?;
                bytes += body.len();
                chunk.rows.push((seq, body));
                if chunk.rows.len() >= max_events || bytes >= max_bytes {
                    // Stopped at a limit: only what was returned was seen.
                    chunk.read_upto = seq;
                    break;
                }
            }
        }
        tx.finish()?;
        Ok(chunk)
    }
}
