//! Forgetting a person: `aitrail forget --user NAME`, `POST /api/forget`.
//!
//! # What is erased
//!
//! Every event whose `process.user` is NAME is deleted whole — the row
//! (the event as received: prompts, answers, tool arguments and results,
//! command lines, paths), its full-text index entries, the evidence links
//! of its findings, its release — and every archive line of it, locally
//! and in object storage. Nothing of it is kept as a "skeleton": ids,
//! times, hosts and trace structure of one person's activity are still
//! personal data, and an erasure that leaves them is not one. What the
//! security team keeps is a tombstone (below), and everything of other
//! people: their events, their findings (a finding names evidence by event
//! id only and never holds a matched value, so another user's finding that
//! cites a forgotten event keeps a dangling id, not the content).
//!
//! Held findings are not erased silently: when NAME has findings that were
//! not released (see `retention`), forget refuses unless asked to include
//! them — an erasure request meets a legal hold, and a person decides
//! (GDPR art. 17(3)(e) lets a hold for legal claims win).
//!
//! # Gone from the files, not hidden
//!
//! The writer runs with `secure_delete` (freed cells and pages are zeroed)
//! and the FTS index with `secure-delete` (terms leave the index at once).
//! After the delete commits, the WAL — which still holds the pages as they
//! were before — is checkpointed and truncated to zero bytes. Archive
//! segments that held the user's lines are rewritten (new file, fsync,
//! rename over the old one) and put again in object storage; a segment
//! with nothing else is deleted. Limits, stated in docs/shipping.md: blocks
//! a filesystem or an SSD keeps after a file is rewritten are out of
//! reach, and so are older versions of objects in a versioned bucket.
//!
//! # The tombstone
//!
//! An entry of the audit log (`aitrail search --kind tombstone`,
//! `GET /api/search?kind=tombstone`): when, by whom (the Unix user of the
//! command line, or the API token's fingerprint), why (optional), how many
//! events of which kinds from when to when, what the archive rewrite did —
//! and the name only as a keyed hash (HMAC-SHA256 with a key kept in the
//! database): `--user NAME` finds NAME's tombstone, and without the
//! database the hash says nothing.
//!
//! Events of NAME that arrive after the forget (an agent's spool catching
//! up, or NAME still at work) are stored again: forget is an erasure of
//! what is stored, not a capture policy.

use std::collections::BTreeMap;

use rusqlite::params;
use serde::Serialize;

use super::{
    archive::{ArchiveError, RewriteReport},
    meta_get, meta_set, new_id, now_ns, rfc3339, Store, StoreError,
};

/// Longest user name accepted.
const MAX_USER: usize = 256;

pub struct ForgetRequest<'a> {
    pub user: &'a str,
    /// Who asked: `cli:NAME (uid N)` or `api:token:FINGERPRINT`.
    pub by: &'a str,
    /// Also erase findings still held (not released).
    pub include_held: bool,
    /// Why (a ticket number…); recorded as given.
    pub reason: Option<&'a str>,
}

/// The tombstone, as stored in the audit log and returned.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Tombstone {
    pub v: u8,
    pub id: String,
    pub time: String,
    pub kind: &'static str,
    pub tombstone: TombstoneBody,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TombstoneBody {
    /// `hmac-sha256:` + 64 hex digits; never the name.
    pub user_hash: String,
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub events_deleted: u64,
    pub findings_deleted: u64,
    /// Findings that were still held and were erased on request.
    pub held_findings_deleted: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// Time of the first and last erased event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// Archive segments that held the user's events.
    pub archive_segments: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<RewriteReport>,
    /// Per forwarder (active ones, by name): how many of the erased events
    /// it had already sent (copies at its destination, which this erasure
    /// does not reach) and how many it had not (never sent now).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub forwarders: BTreeMap<String, ForwardedCount>,
    /// Whether the WAL was checkpointed and truncated (false when readers
    /// kept it busy; it is truncated at the next checkpoint).
    pub wal_truncated: bool,
    /// `done`, or `archive pending` when the archive rewrite did not finish
    /// (it is resumed by the next forget or archive start).
    pub status: String,
}

/// What one forwarder had done with a forgotten user's events.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ForwardedCount {
    /// Sent and acknowledged before the forget (or in the batch in flight
    /// then): copies are at the destination.
    pub sent: u64,
    /// Not sent yet: erased before the forwarder reached them.
    pub unsent: u64,
}

impl Store {
    /// Erases `req.user`'s events (see the module doc) and returns the
    /// tombstone.
    pub fn forget(&self, req: &ForgetRequest<'_>) -> Result<Tombstone, StoreError> {
        let user = req.user;
        if user.is_empty() || user.len() > MAX_USER || user.chars().any(char::is_control) {
            return Err(StoreError::Invalid(format!(
                "user name: 1 to {MAX_USER} characters, no control characters"
            )));
        }
        self.forget_precheck(user, req.include_held)?;
        let now = now_ns();
        let id = new_id()?;
        let mut body = TombstoneBody {
            user_hash: self.user_hash(user),
            by: req.by.to_owned(),
            reason: req.reason.map(str::to_owned),
            events_deleted: 0,
            findings_deleted: 0,
            held_findings_deleted: 0,
            by_kind: BTreeMap::new(),
            first: None,
            last: None,
            archive_segments: 0,
            archive: None,
            forwarders: BTreeMap::new(),
            wal_truncated: false,
            status: "archive pending".into(),
        };
        self.erase_rows(user, req.include_held, &id, now, &mut body)?;
        self.counters
            .forget_deleted
            .fetch_add(body.events_deleted, std::sync::atomic::Ordering::Relaxed);
        body.wal_truncated = self.checkpoint_truncate()?;
        if body.archive_segments > 0 {
            if let Some(archive) = self.archive() {
                match archive.rewrite_pending(self) {
                    Ok(r) => {
                        body.archive = Some(r);
                        body.status = if r.objects_pending == 0 {
                            "done".into()
                        } else {
                            "archive pending".into()
                        };
                    }
                    Err(error) => {
                        tracing::error!(%error, tombstone = %id, "forget: archive rewrite not finished");
                        self.update_tombstone(&id, now, &body)?;
                        return Err(error);
                    }
                }
            }
            self.update_tombstone(&id, now, &body)?;
            body.wal_truncated = self.checkpoint_truncate()?;
        }
        tracing::info!(tombstone = %id, events = body.events_deleted, by = %req.by, "forget: user erased");
        Ok(tombstone(&id, now, &body))
    }

    /// The database part of a forget, in one transaction: counts, deletes,
    /// the index merge, the epoch, the archive's to-do list, the tombstone.
    fn erase_rows(
        &self,
        user: &str,
        include_held: bool,
        id: &str,
        now: i64,
        body: &mut TombstoneBody,
    ) -> Result<(), StoreError> {
        let subject = body.user_hash.clone();
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        {
            let mut stmt = tx.prepare(
                "SELECT kind, count(*), min(ts), max(ts) FROM events WHERE user = ?1 GROUP BY kind",
            )?;
            let rows = stmt.query_map([user], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, u64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?;
            for row in rows {
                let (kind, n, lo, hi) = row?;
                body.events_deleted += n;
                first = first.min(lo);
                last = last.max(hi);
                body.by_kind.insert(kind, n);
            }
        }
        if body.events_deleted > 0 {
            body.first = Some(rfc3339(first));
            body.last = Some(rfc3339(last));
        }
        body.findings_deleted = body.by_kind.get("finding").copied().unwrap_or(0);
        // Checked again inside the transaction: a finding of the user's may
        // have been stored since the precheck.
        let (held, example): (u64, Option<String>) = tx.query_row(
            "SELECT count(*), min(id) FROM events WHERE user = ?1 AND kind = 'finding'
               AND id NOT IN (SELECT finding_id FROM releases)",
            [user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if held > 0 && !include_held {
            return Err(StoreError::Held {
                user: user.to_owned(),
                count: held,
                example: example.unwrap_or_default(),
            });
        }
        body.held_findings_deleted = held;
        tx.execute(
            "DELETE FROM releases WHERE finding_id IN
               (SELECT id FROM events WHERE user = ?1 AND kind = 'finding')",
            [user],
        )?;
        // What the forwarders did with these events, for the tombstone:
        // the ones a forwarder sent are at its destination; the others
        // are never sent (deleted before its cursor reaches them).
        {
            let mut stmt = tx.prepare(
                "SELECT f.name,
                        count(*) FILTER (WHERE events.seq <= f.cursor),
                        count(*) FILTER (WHERE events.seq > f.cursor)
                 FROM forward_cursor f JOIN events
                 WHERE events.user = ?1 AND f.active = 1
                   AND (f.kinds IS NULL OR instr(f.kinds, ',' || events.kind || ',') > 0)
                   AND events.severity >= f.min_severity
                 GROUP BY f.name",
            )?;
            let rows = stmt.query_map([user], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    ForwardedCount {
                        sent: r.get(1)?,
                        unsent: r.get(2)?,
                    },
                ))
            })?;
            for row in rows {
                let (name, count) = row?;
                body.forwarders.insert(name, count);
            }
        }
        tx.execute("DELETE FROM events WHERE user = ?1", [user])?;
        // FTS5's secure-delete takes a deleted row's terms out of the
        // index, but the first leaf of each segment keeps their bytes
        // (measured: every segment's page 1 still held the forgotten
        // terms). Merging all segments into one writes the index anew
        // from what is left; the old leaves are deleted, and zeroed by
        // secure_delete.
        tx.execute(
            "INSERT INTO events_fts (events_fts) VALUES ('optimize')",
            [],
        )?;
        let epoch = meta_get(&tx, "forget_epoch")?.unwrap_or(0);
        meta_set(&tx, "forget_epoch", epoch + 1)?;
        body.archive_segments = tx.execute(
            "INSERT OR IGNORE INTO archive_forget (segment, subject, tombstone)
             SELECT segment, ?2, ?3 FROM archive_segment_users WHERE user = ?1",
            params![user, subject, id],
        )? as u64;
        tx.execute("DELETE FROM archive_segment_users WHERE user = ?1", [user])?;
        if body.archive_segments == 0 {
            body.status = "done".into();
        }
        let stone = tombstone(id, now, body);
        tx.execute(
            "INSERT INTO audit (id, ts, kind, subject, body) VALUES (?1, ?2, 'tombstone', ?3, ?4)",
            params![id, now, subject, json(&stone)?],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Refuses, before anything is deleted, a forget that could not finish:
    /// held findings without `include_held`, segments in object storage
    /// without its settings, sealed segments without the key.
    fn forget_precheck(&self, user: &str, include_held: bool) -> Result<(), StoreError> {
        let conn = self.reader();
        if !include_held {
            let (count, example): (u64, Option<String>) = conn.query_row(
                "SELECT count(*), min(id) FROM events WHERE user = ?1 AND kind = 'finding'
                   AND id NOT IN (SELECT finding_id FROM releases)",
                [user],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if count > 0 {
                return Err(StoreError::Held {
                    user: user.to_owned(),
                    count,
                    example: example.unwrap_or_default(),
                });
            }
        }
        let (remote, sealed): (u64, u64) = conn.query_row(
            "SELECT coalesce(sum(s.remote_key IS NOT NULL OR s.local = 0), 0), coalesce(sum(s.sealed), 0)
             FROM archive_segment_users u JOIN archive_segments s ON s.id = u.segment
             WHERE u.user = ?1 AND s.deleted IS NULL",
            [user],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let archive = self.archive();
        if remote > 0 && archive.and_then(|a| a.remote()).is_none() {
            let url: Option<String> = conn
                .query_row(
                    "SELECT value FROM meta WHERE name = 'archive_remote'",
                    [],
                    |r| r.get(0),
                )
                .ok();
            return Err(ArchiveError::RemoteNeeded {
                url: url.unwrap_or_else(|| "object storage".into()),
            }
            .into());
        }
        if sealed > 0 && self.archive_key().is_none() {
            return Err(StoreError::Invalid(
                "archive segments of this user are sealed: give the store key".into(),
            ));
        }
        Ok(())
    }

    fn update_tombstone(&self, id: &str, now: i64, body: &TombstoneBody) -> Result<(), StoreError> {
        self.writer().execute(
            "UPDATE audit SET body = ?2 WHERE id = ?1",
            params![id, json(&tombstone(id, now, body))?],
        )?;
        Ok(())
    }
}

fn tombstone(id: &str, now: i64, body: &TombstoneBody) -> Tombstone {
    Tombstone {
        v: 1,
        id: id.to_owned(),
        time: rfc3339(now),
        kind: "tombstone",
        tombstone: body.clone(),
    }
}

fn json(t: &Tombstone) -> Result<String, StoreError> {
    serde_json::to_string(t).map_err(|e| StoreError::Invalid(format!("tombstone: {e}")))
}
