//! Retention, and the hold on findings.
//!
//! A finding is held from the moment it is stored: retention keeps it, the
//! events it cites and every event of the traces of both, however old.
//! `release` lifts the hold on findings (by id, or all found before a
//! time); from then on retention treats them and their traces like any
//! other event — unless another finding, still held, keeps them. Releases
//! are recorded per finding (`releases`) and as an entry of the audit log
//! (`aitrail search --kind release`).

use rusqlite::{params, OptionalExtension as _};
use serde::Serialize;

use super::{new_id, now_ns, rfc3339, Store, StoreError};

/// Rows deleted per retention transaction, so ingest is not held up long.
const RETENTION_CHUNK: u32 = 5000;
/// Ids listed in a release's audit entry at most (the count is exact).
const AUDIT_IDS: usize = 100;

/// Which findings to release.
#[derive(Clone, Debug)]
pub enum ReleaseSelector {
    /// These finding ids.
    Ids(Vec<String>),
    /// Every finding whose time is before this (ns since the epoch).
    Before(i64),
}

/// What a release did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReleaseReport {
    /// The audit entry's id.
    pub id: String,
    pub released: u64,
    /// Already released before.
    pub already: u64,
    /// Ids the store does not have.
    pub unknown: Vec<String>,
    /// Ids of events that are not findings.
    pub not_findings: Vec<String>,
}

#[derive(Serialize)]
struct ReleaseEntry<'a> {
    v: u8,
    id: &'a str,
    time: String,
    kind: &'static str,
    release: ReleaseBody<'a>,
}

#[derive(Serialize)]
struct ReleaseBody<'a> {
    by: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    before: Option<String>,
    released: u64,
    already: u64,
    /// The first released ids (all of them up to 100).
    ids: Vec<String>,
    unknown: &'a [String],
    not_findings: &'a [String],
}

impl Store {
    /// Releases findings from the hold; `by` names who asked (recorded).
    pub fn release(
        &self,
        sel: &ReleaseSelector,
        by: &str,
        note: Option<&str>,
    ) -> Result<ReleaseReport, StoreError> {
        let now = now_ns();
        let mut report = ReleaseReport {
            id: new_id()?,
            ..ReleaseReport::default()
        };
        let mut listed = Vec::new();
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO releases (finding_id, ts, by) VALUES (?1, ?2, ?3)",
            )?;
            match sel {
                ReleaseSelector::Ids(ids) => {
                    let mut kind_of = tx.prepare_cached("SELECT kind FROM events WHERE id = ?1")?;
                    for id in ids {
                        match kind_of
                            .query_row([id], |r| r.get::<_, String>(0))
                            .optional()?
                        {
                            None => report.unknown.push(id.clone()),
                            Some(k) if k != "finding" => report.not_findings.push(id.clone()),
                            Some(_) => {
                                if insert.execute(params![id, now, by])? == 1 {
                                    report.released += 1;
                                    if listed.len() < AUDIT_IDS {
                                        listed.push(id.clone());
                                    }
                                } else {
                                    report.already += 1;
                                }
                            }
                        }
                    }
                }
                ReleaseSelector::Before(before) => {
                    report.already = tx.query_row(
                        "SELECT count(*) FROM events WHERE kind = 'finding' AND ts < ?1
                           AND id IN (SELECT finding_id FROM releases)",
                        [before],
                        |r| r.get(0),
                    )?;
                    let mut held = tx.prepare(
                        "SELECT id FROM events WHERE kind = 'finding' AND ts < ?1
                           AND id NOT IN (SELECT finding_id FROM releases) ORDER BY ts",
                    )?;
                    let ids = held
                        .query_map([before], |r| r.get::<_, String>(0))?
                        .collect::<Result<Vec<_>, _>>()?;
                    for id in ids {
                        insert.execute(params![id, now, by])?;
                        report.released += 1;
                        if listed.len() < AUDIT_IDS {
                            listed.push(id);
                        }
                    }
                }
            }
        }
        if report.released > 0 {
            let entry = ReleaseEntry {
                v: 1,
                id: &report.id,
                time: rfc3339(now),
                kind: "release",
                release: ReleaseBody {
                    by,
                    note,
                    before: match sel {
                        ReleaseSelector::Before(t) => Some(rfc3339(*t)),
                        ReleaseSelector::Ids(_) => None,
                    },
                    released: report.released,
                    already: report.already,
                    ids: listed,
                    unknown: &report.unknown,
                    not_findings: &report.not_findings,
                },
            };
            let body = serde_json::to_string(&entry)
                .map_err(|e| StoreError::Invalid(format!("release entry: {e}")))?;
            tx.execute(
                "INSERT INTO audit (id, ts, kind, subject, body) VALUES (?1, ?2, 'release', NULL, ?3)",
                params![report.id, now, body],
            )?;
        }
        tx.commit()?;
        Ok(report)
    }

    /// Whether a finding is still held.
    pub fn is_held(&self, finding_id: &str) -> Result<bool, StoreError> {
        let conn = self.reader();
        Ok(conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM events WHERE id = ?1 AND kind = 'finding')
                AND NOT EXISTS (SELECT 1 FROM releases WHERE finding_id = ?1)",
            [finding_id],
            |r| r.get(0),
        )?)
    }

    /// Deletes events older than `before_ns`, except:
    /// - held findings, the events they cite, and every event of a trace
    ///   that holds either (see the module's doc);
    /// - with an archive this process writes, events not yet in a closed
    ///   segment (above the archive cursor);
    /// - events an active forwarder has not sent yet, for that forwarder's
    ///   `hold_ns` past the age; after that they are deleted anyway and
    ///   counted in its `expired` (see `forward`).
    ///
    /// All three are checked in each chunk's transaction against what is
    /// stored then: a finding stored while retention runs is held by the
    /// next chunk. Returns how many were deleted.
    pub fn apply_retention(&self, before_ns: i64) -> Result<u64, StoreError> {
        let max_seq = self.archive_cursor()?.unwrap_or(i64::MAX);
        // The keep sets are built once, then topped up in each chunk's
        // transaction with the findings stored since (`seq` above `seen`):
        // findings only arrive, and a release can only make the sets too
        // large (kept one round longer), never too small.
        self.writer().execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS held (seq INTEGER PRIMARY KEY);
                 CREATE TEMP TABLE IF NOT EXISTS keep_ids (id TEXT PRIMARY KEY);
                 CREATE TEMP TABLE IF NOT EXISTS keep_traces (trace_id TEXT PRIMARY KEY);
                 CREATE TEMP TABLE IF NOT EXISTS doomed (seq INTEGER PRIMARY KEY);
             DELETE FROM held; DELETE FROM keep_ids; DELETE FROM keep_traces;",
        )?;
        let mut seen = 0i64;
        let mut deleted = 0u64;
        loop {
            // One chunk per lock and transaction: ingest gets the writer
            // between chunks.
            let mut conn = self.writer();
            let tx = conn.transaction()?;
            let top = super::top_seq(&tx)?;
            if top > seen {
                tx.execute(
                    "INSERT OR IGNORE INTO held SELECT seq FROM events
                     WHERE seq > ?1 AND seq <= ?2 AND kind = 'finding'
                       AND id NOT IN (SELECT finding_id FROM releases)",
                    params![seen, top],
                )?;
                tx.execute_batch(&format!(
                    "INSERT OR IGNORE INTO keep_ids SELECT event_id FROM evidence
                         WHERE finding_seq IN (SELECT seq FROM held WHERE seq > {seen});
                     INSERT OR IGNORE INTO keep_traces SELECT trace_id FROM events
                         WHERE seq IN (SELECT seq FROM held WHERE seq > {seen})
                           AND trace_id IS NOT NULL;
                     INSERT OR IGNORE INTO keep_traces SELECT x.trace_id
                         FROM evidence v JOIN events x ON x.id = v.event_id
                         WHERE v.finding_seq IN (SELECT seq FROM held WHERE seq > {seen})
                           AND x.trace_id IS NOT NULL;"
                ))?;
                seen = top;
            }
            tx.execute("DELETE FROM doomed", [])?;
            let n = tx.execute(
                &format!(
                    "INSERT INTO doomed
                     SELECT seq FROM events
                     WHERE ts < ?1 AND seq <= ?3
                       AND seq NOT IN (SELECT seq FROM held)
                       AND (trace_id IS NULL OR trace_id NOT IN (SELECT trace_id FROM keep_traces))
                       AND id NOT IN (SELECT id FROM keep_ids)
                       AND NOT EXISTS (SELECT 1 FROM forward_cursor f
                           WHERE {} AND events.ts >= ?1 - f.hold_ns)
                     LIMIT ?2",
                    super::forward::UNSENT_BY_F
                ),
                params![before_ns, RETENTION_CHUNK, max_seq],
            )?;
            if n > 0 {
                tx.execute(
                    &format!(
                        "UPDATE forward_cursor AS f SET expired = expired + (
                             SELECT count(*) FROM doomed JOIN events USING (seq)
                             WHERE {})
                         WHERE f.active = 1",
                        super::forward::UNSENT_BY_F
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
                break;
            }
        }
        self.counters
            .retention_deleted
            .fetch_add(deleted, std::sync::atomic::Ordering::Relaxed);
        // Releases of findings that are gone: the audit log keeps the story.
        self.writer().execute(
            "DELETE FROM releases WHERE finding_id NOT IN (SELECT id FROM events)",
            [],
        )?;
        Ok(deleted)
    }
}
