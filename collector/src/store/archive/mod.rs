//! The archive: every stored event, again, in compressed NDJSON segments
//! for cold storage — `DIR/YYYY-MM-DD/NNNNNN.ndjson.zst` (`.enc` appended
//! when sealed), files 0600, directories 0700, optionally uploaded to S3.
//!
//! # Where a segment comes from
//!
//! The archive follows the database, never the ingest: an [`Archiver`]
//! reads events stored after the archive cursor (`meta.archive_cursor`, the
//! last seq in a closed segment), in seq order, and writes them into an open
//! segment (`….partial`). The day is the UTC day the store committed the
//! event (`received`), not the event's own `time`, which an agent sets. A
//! segment closes when it reaches `segment_max_bytes` (uncompressed), has
//! been open `segment_max_secs`, the day changes, or the archive stops.
//! Closing: end the zstd frame, seal, fsync the file; then in one write
//! transaction check the forget epoch (below), rename the file to its final
//! name, fsync the directory, record the segment (and the users whose
//! events it holds) and move the cursor; commit.
//!
//! # Crashes
//!
//! Events are archived only after their commit in the database, and the
//! cursor moves only with a closed, fsynced, renamed segment. At start
//! ([`Archive::recover`]) `.partial` and `.rewrite` files are deleted, and
//! so is any segment file the table does not know (renamed, but the
//! transaction did not commit); the archiver then reads again from the
//! cursor. So a crash loses nothing and duplicates nothing: each event is
//! in exactly one closed segment. Retention of the database never deletes
//! an event above the cursor.
//!
//! # Forget
//!
//! `forget` deletes rows and bumps `meta.forget_epoch` in one transaction.
//! An open segment remembers the epoch of the snapshot its first events
//! were read in; if the epoch changed when it closes (checked inside the
//! closing transaction), the segment is thrown away and read again from the
//! cursor, without the forgotten rows. Closed segments that hold the
//! user's events (`archive_segment_users`) are listed in `archive_forget`
//! and rewritten without the lines whose user hashes to the tombstone's
//! hash — locally, and in object storage (see `forget`).
//!
//! # Object storage
//!
//! An uploader puts closed segments (`prefix/YYYY-MM-DD/NAME`), checks the
//! stored size, records the uploaded version, and deletes the local copy
//! when `delete_local_after_upload` says so. A segment rewritten by forget
//! gets a new version and is put again.
//!
//! Who may change a closed segment (uploader, retention, forget — from the
//! collector or from the `aitrail` command line) holds `DIR/.lock` (flock)
//! while it does.

pub mod crypt;
pub mod remote;
pub mod segment;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use rusqlite::{params, Connection, OptionalExtension as _};
use serde::Serialize;

pub use self::remote::{Remote, RemoteError, S3Config};
use self::segment::SegmentWriter;
use super::{meta_get, meta_set, now_ns, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive {path}: {what}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(
        "archive segments of this store are in object storage ({url}) and no [store.archive.s3] \
         settings were given: pass the collector's config (--config)"
    )]
    RemoteNeeded { url: String },
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// `[store.archive]`, validated.
#[derive(Clone, Debug)]
pub struct ArchiveConfig {
    pub dir: PathBuf,
    /// Uncompressed NDJSON bytes at which a segment closes.
    pub segment_max_bytes: u64,
    /// Time after which an open segment closes.
    pub segment_max_age: Duration,
    /// Segments of days older than this are deleted (local and remote).
    pub retention: Option<Duration>,
    pub s3: Option<S3Config>,
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct ArchiveCounters {
    pub segments_closed: AtomicU64,
    pub events_archived: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Open segments thrown away because a forget ran meanwhile.
    pub segments_discarded: AtomicU64,
    pub partials_recovered: AtomicU64,
    pub orphans_deleted: AtomicU64,
    /// Segments the table lists but whose file is missing.
    pub files_missing: AtomicU64,
    pub uploads: AtomicU64,
    pub upload_bytes: AtomicU64,
    pub upload_failures: AtomicU64,
    pub local_deleted_after_upload: AtomicU64,
    pub segments_expired: AtomicU64,
    pub segments_rewritten: AtomicU64,
    pub errors: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A plain copy of [`ArchiveCounters`].
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ArchiveStats {
    pub segments_closed: u64,
    pub events_archived: u64,
    pub bytes_written: u64,
    pub segments_discarded: u64,
    pub partials_recovered: u64,
    pub orphans_deleted: u64,
    pub files_missing: u64,
    pub uploads: u64,
    pub upload_bytes: u64,
    pub upload_failures: u64,
    pub local_deleted_after_upload: u64,
    pub segments_expired: u64,
    pub segments_rewritten: u64,
    pub errors: u64,
}

impl ArchiveCounters {
    pub fn snapshot(&self) -> ArchiveStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ArchiveStats {
            segments_closed: g(&self.segments_closed),
            events_archived: g(&self.events_archived),
            bytes_written: g(&self.bytes_written),
            segments_discarded: g(&self.segments_discarded),
            partials_recovered: g(&self.partials_recovered),
            orphans_deleted: g(&self.orphans_deleted),
            files_missing: g(&self.files_missing),
            uploads: g(&self.uploads),
            upload_bytes: g(&self.upload_bytes),
            upload_failures: g(&self.upload_failures),
            local_deleted_after_upload: g(&self.local_deleted_after_upload),
            segments_expired: g(&self.segments_expired),
            segments_rewritten: g(&self.segments_rewritten),
            errors: g(&self.errors),
        }
    }
}

/// The archive of a store: its directory, its object storage, counters.
pub struct Archive {
    dir: PathBuf,
    /// `None` when this process only found the archive (the command line
    /// without the collector's config): it rewrites local segments for
    /// forget but writes no new ones.
    cfg: Option<ArchiveConfig>,
    remote: Option<Remote>,
    pub counters: ArchiveCounters,
}

/// A closed segment, as the table has it.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    pub id: i64,
    pub day: String,
    pub name: String,
    pub sealed: bool,
    pub events: u64,
    pub bytes: u64,
    pub version: i64,
    pub local: bool,
    pub uploaded_version: Option<i64>,
    pub remote_key: Option<String>,
}

const SEGMENT_COLUMNS: &str =
    "id, day, name, sealed, events, bytes, version, local, uploaded_version, remote_key";

fn segment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SegmentInfo> {
    Ok(SegmentInfo {
        id: r.get(0)?,
        day: r.get(1)?,
        name: r.get(2)?,
        sealed: r.get(3)?,
        events: r.get(4)?,
        bytes: r.get(5)?,
        version: r.get(6)?,
        local: r.get(7)?,
        uploaded_version: r.get(8)?,
        remote_key: r.get(9)?,
    })
}

/// Creates `dir` (and parents) 0700.
pub fn make_dir(dir: &Path) -> Result<(), ArchiveError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("cannot create", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err("cannot chmod", dir))
}

/// fsyncs a directory, so that a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot fsync", dir))
}

/// The UTC day of ns since the epoch, `YYYY-MM-DD`.
pub fn day_of(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d")
        .to_string()
}

fn is_day(name: &str) -> bool {
    name.len() == 10 && chrono::NaiveDate::parse_from_str(name, "%Y-%m-%d").is_ok()
}

/// An exclusive flock, released on drop.
pub struct SegmentsLock(File);

impl Drop for SegmentsLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Archive {
    /// The archive of the store in `store_dir`: the configured one, or the
    /// one a previous run recorded (`meta.archive_dir`), or none.
    pub(super) fn open(
        conn: &Connection,
        cfg: Option<ArchiveConfig>,
    ) -> Result<Option<Self>, StoreError> {
        let recorded: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'archive_dir'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let Some(cfg) = cfg else {
            let Some(dir) = recorded.map(PathBuf::from) else {
                return Ok(None);
            };
            return Ok(Some(Self {
                dir,
                cfg: None,
                remote: None,
                counters: ArchiveCounters::default(),
            }));
        };
        make_dir(&cfg.dir)?;
        let dir = cfg
            .dir
            .canonicalize()
            .map_err(io_err("cannot resolve", &cfg.dir))?;
        let text = dir.display().to_string();
        if recorded.as_deref() != Some(text.as_str()) {
            conn.execute(
                "INSERT INTO meta (name, value) VALUES ('archive_dir', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [&text],
            )?;
        }
        let remote = cfg
            .s3
            .as_ref()
            .map(Remote::new)
            .transpose()
            .map_err(ArchiveError::from)?;
        if let Some(r) = &remote {
            conn.execute(
                "INSERT INTO meta (name, value) VALUES ('archive_remote', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                [&r.url],
            )?;
        }
        Ok(Some(Self {
            dir,
            cfg: Some(cfg),
            remote,
            counters: ArchiveCounters::default(),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> Option<&ArchiveConfig> {
        self.cfg.as_ref()
    }

    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// Whether this process writes new segments.
    pub fn writes(&self) -> bool {
        self.cfg.is_some()
    }

    /// Takes the lock of closed segments.
    pub fn lock(&self) -> Result<SegmentsLock, ArchiveError> {
        let path = self.dir.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("cannot open", &path))?;
        f.lock().map_err(io_err("cannot lock", &path))?;
        Ok(SegmentsLock(f))
    }

    pub fn segment_path(&self, day: &str, name: &str) -> PathBuf {
        self.dir.join(day).join(name)
    }

    /// Deletes what a crash left: open (`.partial`) and half-rewritten
    /// (`.rewrite`) files, and segment files the table does not know.
    /// Only one process may write the archive (the service lock).
    pub fn recover(&self, store: &Store) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let known: BTreeSet<(String, String)> = {
            let conn = store.reader();
            let mut stmt =
                conn.prepare("SELECT day, name FROM archive_segments WHERE deleted IS NULL")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        let Ok(days) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        for day in days.flatten() {
            let day_name = day.file_name().to_string_lossy().into_owned();
            if !is_day(&day_name) || !day.path().is_dir() {
                continue;
            }
            let Ok(files) = std::fs::read_dir(day.path()) else {
                continue;
            };
            let mut changed = false;
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let counter = if name.ends_with(".partial") || name.ends_with(".rewrite") {
                    &self.counters.partials_recovered
                } else if !known.contains(&(day_name.clone(), name.clone())) {
                    &self.counters.orphans_deleted
                } else {
                    continue;
                };
                tracing::info!(file = %f.path().display(), "archive: deleting a file a crash left");
                std::fs::remove_file(f.path()).map_err(io_err("cannot delete", &f.path()))?;
                add(counter, 1);
                changed = true;
            }
            if changed {
                sync_dir(&day.path())?;
            }
        }
        let missing: Vec<SegmentInfo> = self
            .segments(store, "deleted IS NULL AND local = 1")?
            .into_iter()
            .filter(|s| !self.segment_path(&s.day, &s.name).exists())
            .collect();
        for s in &missing {
            tracing::error!(day = %s.day, name = %s.name, "archive: segment file missing");
        }
        add(&self.counters.files_missing, missing.len() as u64);
        Ok(())
    }

    /// Segments matching an SQL condition.
    pub fn segments(&self, store: &Store, filter: &str) -> Result<Vec<SegmentInfo>, StoreError> {
        let conn = store.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT {SEGMENT_COLUMNS} FROM archive_segments WHERE {filter} ORDER BY id"
        ))?;
        let rows = stmt.query_map([], segment_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn segment(conn: &Connection, id: i64) -> rusqlite::Result<Option<SegmentInfo>> {
        conn.query_row(
            &format!(
                "SELECT {SEGMENT_COLUMNS} FROM archive_segments WHERE id = ?1 AND deleted IS NULL"
            ),
            [id],
            segment_row,
        )
        .optional()
    }

    /// The bytes of a closed segment: its local file, or its object.
    pub fn read_segment(&self, s: &SegmentInfo) -> Result<Vec<u8>, StoreError> {
        if s.local {
            let p = self.segment_path(&s.day, &s.name);
            return Ok(std::fs::read(&p).map_err(io_err("cannot read", &p))?);
        }
        let key = s.remote_key.as_deref().unwrap_or_default();
        let remote = self
            .remote
            .as_ref()
            .ok_or_else(|| ArchiveError::RemoteNeeded {
                url: key.to_owned(),
            })?;
        Ok(remote.get(key).map_err(ArchiveError::from)?)
    }

    /// Puts closed segments that object storage does not have (in their
    /// current version); deletes local copies when configured. Returns how
    /// many were uploaded.
    pub fn upload_pending(&self, store: &Store) -> Result<u64, StoreError> {
        let (Some(remote), Some(cfg)) = (&self.remote, &self.cfg) else {
            return Ok(0);
        };
        let delete_local = cfg.s3.as_ref().is_some_and(|s| s.delete_local_after_upload);
        let mut pending = self.segments(
            store,
            "deleted IS NULL AND local = 1 \
             AND (uploaded_version IS NULL OR uploaded_version < version)",
        )?;
        pending.truncate(16);
        let mut done = 0;
        for s in pending {
            let _lock = self.lock()?;
            // Read again under the lock: a forget may have rewritten it.
            let Some(s) = Self::segment(&store.reader(), s.id)? else {
                continue;
            };
            if !s.local || s.uploaded_version.is_some_and(|v| v >= s.version) {
                continue;
            }
            let path = self.segment_path(&s.day, &s.name);
            let bytes = std::fs::read(&path).map_err(io_err("cannot read", &path))?;
            let len = bytes.len() as u64;
            let key = remote.key(&s.day, &s.name);
            if let Err(e) = remote.put(&key, bytes) {
                add(&self.counters.upload_failures, 1);
                return Err(ArchiveError::from(e).into());
            }
            add(&self.counters.uploads, 1);
            add(&self.counters.upload_bytes, len);
            store.writer().execute(
                "UPDATE archive_segments SET uploaded_version = ?2, remote_key = ?3
                 WHERE id = ?1 AND version = ?2",
                params![s.id, s.version, key],
            )?;
            if delete_local {
                std::fs::remove_file(&path).map_err(io_err("cannot delete", &path))?;
                sync_dir(path.parent().unwrap_or(&self.dir))?;
                store.writer().execute(
                    "UPDATE archive_segments SET local = 0 WHERE id = ?1",
                    [s.id],
                )?;
                add(&self.counters.local_deleted_after_upload, 1);
            }
            done += 1;
        }
        Ok(done)
    }

    /// Deletes the segments of days before `cutoff_day` (`YYYY-MM-DD`),
    /// here and in object storage. Returns how many.
    pub fn apply_retention(&self, store: &Store, cutoff_day: &str) -> Result<u64, StoreError> {
        let old = {
            let conn = store.reader();
            let mut stmt = conn.prepare(&format!(
                "SELECT {SEGMENT_COLUMNS} FROM archive_segments
                 WHERE deleted IS NULL AND day < ?1 ORDER BY id"
            ))?;
            let rows = stmt.query_map([cutoff_day], segment_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        if old.is_empty() {
            return Ok(0);
        }
        let _lock = self.lock()?;
        let mut days = BTreeSet::new();
        for s in &old {
            self.delete_segment(store, s)?;
            days.insert(s.day.clone());
            add(&self.counters.segments_expired, 1);
        }
        for d in days {
            // Gone when empty; a day still in use keeps its directory.
            let _ = std::fs::remove_dir(self.dir.join(&d));
        }
        sync_dir(&self.dir)?;
        Ok(old.len() as u64)
    }

    /// Deletes a segment's file and object and marks it deleted. The
    /// caller holds the lock.
    fn delete_segment(&self, store: &Store, s: &SegmentInfo) -> Result<(), StoreError> {
        if let Some(key) = &s.remote_key {
            let remote = self
                .remote
                .as_ref()
                .ok_or_else(|| ArchiveError::RemoteNeeded { url: key.clone() })?;
            remote.delete(key).map_err(ArchiveError::from)?;
        }
        let path = self.segment_path(&s.day, &s.name);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.dir))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ArchiveError::Io {
                    what: "cannot delete",
                    path,
                    source: e,
                }
                .into())
            }
        }
        let conn = store.writer();
        conn.execute(
            "UPDATE archive_segments SET deleted = ?2, local = 0 WHERE id = ?1",
            params![s.id, now_ns()],
        )?;
        conn.execute(
            "DELETE FROM archive_segment_users WHERE segment = ?1",
            [s.id],
        )?;
        conn.execute("DELETE FROM archive_forget WHERE segment = ?1", [s.id])?;
        Ok(())
    }

    /// Rewrites the segments a forget listed (`archive_forget`) without
    /// the lines of the forgotten users, here and in object storage.
    pub fn rewrite_pending(&self, store: &Store) -> Result<RewriteReport, StoreError> {
        let pending: BTreeMap<i64, BTreeSet<String>> = {
            let conn = store.reader();
            let mut stmt = conn.prepare("SELECT segment, subject FROM archive_forget")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            let mut m: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
            for row in rows {
                let (seg, subject) = row?;
                m.entry(seg).or_default().insert(subject);
            }
            m
        };
        let mut report = RewriteReport::default();
        if pending.is_empty() {
            return Ok(report);
        }
        let tombstones: BTreeSet<String> = {
            let conn = store.reader();
            let mut stmt = conn.prepare("SELECT DISTINCT tombstone FROM archive_forget")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let _lock = self.lock()?;
        for (id, subjects) in pending {
            let Some(s) = Self::segment(&store.reader(), id)? else {
                store
                    .writer()
                    .execute("DELETE FROM archive_forget WHERE segment = ?1", [id])?;
                continue;
            };
            self.rewrite_one(store, &s, &subjects, &mut report)?;
            let conn = store.writer();
            for subject in &subjects {
                conn.execute(
                    "DELETE FROM archive_forget WHERE segment = ?1 AND subject = ?2",
                    params![id, subject],
                )?;
            }
        }
        if report.objects_pending == 0 {
            for t in &tombstones {
                mark_tombstone_done(store, t)?;
            }
        }
        Ok(report)
    }

    fn rewrite_one(
        &self,
        store: &Store,
        s: &SegmentInfo,
        subjects: &BTreeSet<String>,
        report: &mut RewriteReport,
    ) -> Result<(), StoreError> {
        let bytes = self.read_segment(s)?;
        let final_path = self.segment_path(&s.day, &s.name);
        let tmp = final_path.with_file_name(format!("{}.rewrite", s.name));
        let _ = std::fs::remove_file(&tmp);
        make_dir(final_path.parent().unwrap_or(&self.dir))?;
        let key = if s.sealed { store.archive_key() } else { None };
        if s.sealed && key.is_none() {
            return Err(StoreError::Invalid(format!(
                "archive segment {}/{} is sealed and no store key was given",
                s.day, s.name
            )));
        }
        let mut w = SegmentWriter::create(&tmp, key).map_err(io_err("cannot create", &tmp))?;
        let (mut kept, mut removed) = (0u64, 0u64);
        segment::for_each_line(bytes.as_slice(), key, |line| {
            let user = crate::ingest::user_of_line(line);
            if user.is_some_and(|u| subjects.contains(&store.user_hash(&u))) {
                removed += 1;
                Ok(())
            } else {
                kept += 1;
                w.write_line(line)
            }
        })
        .map_err(io_err("cannot rewrite", &final_path))?;
        drop(bytes);
        if removed == 0 {
            drop(w);
            let _ = std::fs::remove_file(&tmp);
            return Ok(());
        }
        report.lines_removed += removed;
        if kept == 0 {
            drop(w);
            let _ = std::fs::remove_file(&tmp);
            self.delete_segment(store, s)?;
            report.segments_deleted += 1;
            if s.remote_key.is_some() {
                report.objects_deleted += 1;
            }
            return Ok(());
        }
        let size = w.finish().map_err(io_err("cannot write", &tmp))?;
        std::fs::rename(&tmp, &final_path).map_err(io_err("cannot rename", &tmp))?;
        sync_dir(final_path.parent().unwrap_or(&self.dir))?;
        let version = s.version + 1;
        store.writer().execute(
            "UPDATE archive_segments SET version = ?2, events = ?3, bytes = ?4, local = 1
             WHERE id = ?1",
            params![s.id, version, kept, size],
        )?;
        report.segments_rewritten += 1;
        add(&self.counters.segments_rewritten, 1);
        if let Some(key) = &s.remote_key {
            // Replace the object now; if that fails the uploader puts the
            // new version later (it is newer than the uploaded one).
            let put = self.remote.as_ref().map_or_else(
                || Err(RemoteError::Ended),
                |r| {
                    std::fs::read(&final_path)
                        .map_err(|source| RemoteError::File {
                            what: "cannot read",
                            path: final_path.clone(),
                            source,
                        })
                        .and_then(|b| r.put(key, b))
                },
            );
            match put {
                Ok(()) => {
                    report.objects_rewritten += 1;
                    store.writer().execute(
                        "UPDATE archive_segments SET uploaded_version = ?2 WHERE id = ?1",
                        params![s.id, version],
                    )?;
                    let delete_local = self
                        .cfg
                        .as_ref()
                        .and_then(|c| c.s3.as_ref())
                        .is_some_and(|c| c.delete_local_after_upload);
                    if delete_local || !s.local {
                        std::fs::remove_file(&final_path)
                            .map_err(io_err("cannot delete", &final_path))?;
                        sync_dir(final_path.parent().unwrap_or(&self.dir))?;
                        store.writer().execute(
                            "UPDATE archive_segments SET local = 0 WHERE id = ?1",
                            [s.id],
                        )?;
                    }
                }
                Err(error) => {
                    tracing::error!(%error, key, "archive: rewritten segment not uploaded yet");
                    report.objects_pending += 1;
                }
            }
        }
        Ok(())
    }
}

/// Sets a tombstone's status to `done` once no segment waits for it (a
/// forget whose archive part finished later, e.g. at the archive's start).
fn mark_tombstone_done(store: &Store, id: &str) -> Result<(), StoreError> {
    let conn = store.writer();
    let waiting: i64 = conn.query_row(
        "SELECT count(*) FROM archive_forget WHERE tombstone = ?1",
        [id],
        |r| r.get(0),
    )?;
    if waiting > 0 {
        return Ok(());
    }
    let body: Option<String> = conn
        .query_row("SELECT body FROM audit WHERE id = ?1", [id], |r| r.get(0))
        .optional()?;
    let Some(mut v) = body.and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok()) else {
        return Ok(());
    };
    if v["tombstone"]["status"] != "done" {
        v["tombstone"]["status"] = "done".into();
        conn.execute(
            "UPDATE audit SET body = ?2 WHERE id = ?1",
            params![id, v.to_string()],
        )?;
    }
    Ok(())
}

/// What rewriting segments for a forget did.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RewriteReport {
    pub lines_removed: u64,
    pub segments_rewritten: u64,
    /// Segments that held only the forgotten user's events.
    pub segments_deleted: u64,
    pub objects_rewritten: u64,
    pub objects_deleted: u64,
    /// Objects to replace that could not be replaced yet (the uploader
    /// retries).
    pub objects_pending: u64,
}

/// An event read for the archive.
struct ArchRow {
    seq: i64,
    received: i64,
    user: Option<String>,
    body: String,
}

struct OpenSegment {
    day: String,
    num: i64,
    name: String,
    partial: PathBuf,
    writer: SegmentWriter,
    first_seq: i64,
    last_seq: i64,
    events: u64,
    opened: Instant,
    users: BTreeSet<String>,
    /// The forget epoch of the snapshot its first events came from.
    epoch: i64,
}

/// Rows read per step.
const READ_BATCH: u32 = 1000;

/// Writes segments from the store (one per archive; see the module doc).
pub struct Archiver<'a> {
    store: &'a Store,
    archive: &'a Archive,
    cfg: &'a ArchiveConfig,
    open: Option<OpenSegment>,
    /// The last seq written into the open segment (or the cursor).
    next_after: Option<i64>,
}

impl Store {
    /// The archive cursor, when this process writes the archive: retention
    /// keeps events above it.
    pub(crate) fn archive_cursor(&self) -> Result<Option<i64>, StoreError> {
        if !self.archive().is_some_and(Archive::writes) {
            return Ok(None);
        }
        Ok(Some(
            meta_get(&self.reader(), "archive_cursor")?.unwrap_or(0),
        ))
    }
}

impl<'a> Archiver<'a> {
    /// `None` when the store has no archive this process writes.
    pub fn new(store: &'a Store) -> Option<Self> {
        let archive = store.archive()?;
        let cfg = archive.cfg.as_ref()?;
        Some(Self {
            store,
            archive,
            cfg,
            open: None,
            next_after: None,
        })
    }

    /// Reads the forget epoch, the cursor and up to `READ_BATCH` events
    /// after `after` (the cursor when `None`) in one snapshot.
    fn read(&self, after: Option<i64>) -> Result<(i64, i64, Vec<ArchRow>), StoreError> {
        let mut conn = self.store.reader();
        let tx = conn.transaction()?;
        let epoch = meta_get(&tx, "forget_epoch")?.unwrap_or(0);
        let after = match after {
            Some(a) => a,
            None => meta_get(&tx, "archive_cursor")?.unwrap_or(0),
        };
        let rows = {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, received, user, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after, READ_BATCH], |r| {
                Ok(ArchRow {
                    seq: r.get(0)?,
                    received: r.get(1)?,
                    user: r.get(2)?,
                    body: r.get(3)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        drop(tx);
        Ok((epoch, after, rows))
    }

    /// Archives what was stored since the last step; closes the segment
    /// when it is full, old or of another day. Returns the events written.
    pub fn step(&mut self) -> Result<u64, StoreError> {
        let mut written = 0u64;
        // Bounded per step, so that a stop request is seen.
        for _ in 0..32 {
            let (epoch, after, rows) = self.read(self.next_after)?;
            if self.open.as_ref().is_some_and(|o| o.epoch != epoch) {
                self.discard();
                continue;
            }
            let n = rows.len();
            for row in rows {
                self.write(row, epoch)?;
                written += 1;
            }
            if self.next_after.is_none() {
                self.next_after = Some(after);
            }
            if n < READ_BATCH as usize {
                break;
            }
        }
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.opened.elapsed() >= self.cfg.segment_max_age)
        {
            self.close()?;
        }
        Ok(written)
    }

    fn write(&mut self, row: ArchRow, epoch: i64) -> Result<(), StoreError> {
        let day = day_of(row.received);
        let line = row.body.len() as u64 + 1;
        if let Some(o) = &self.open {
            if o.day != day
                || (o.events > 0 && o.writer.raw_bytes + line > self.cfg.segment_max_bytes)
            {
                self.close()?;
            }
        }
        if self.open.is_none() {
            self.open = Some(self.open_segment(&day, row.seq, epoch)?);
        }
        let o = self.open.as_mut().expect("a segment was just opened");
        o.writer
            .write_line(row.body.as_bytes())
            .map_err(io_err("cannot write", &o.partial))?;
        o.last_seq = row.seq;
        o.events += 1;
        if let Some(u) = row.user {
            o.users.insert(u);
        }
        self.next_after = Some(row.seq);
        Ok(())
    }

    fn open_segment(
        &self,
        day: &str,
        first_seq: i64,
        epoch: i64,
    ) -> Result<OpenSegment, StoreError> {
        let day_dir = self.archive.dir.join(day);
        if !day_dir.exists() {
            make_dir(&day_dir)?;
            sync_dir(&self.archive.dir)?;
        }
        let mut num: i64 = self.store.reader().query_row(
            "SELECT coalesce(max(num), 0) + 1 FROM archive_segments WHERE day = ?1",
            [day],
            |r| r.get(0),
        )?;
        let key = self.store.archive_key();
        let suffix = if key.is_some() {
            ".ndjson.zst.enc"
        } else {
            ".ndjson.zst"
        };
        loop {
            let name = format!("{num:06}{suffix}");
            let partial = day_dir.join(format!("{name}.partial"));
            match SegmentWriter::create(&partial, key) {
                Ok(writer) => {
                    return Ok(OpenSegment {
                        day: day.to_owned(),
                        num,
                        name,
                        partial,
                        writer,
                        first_seq,
                        last_seq: first_seq,
                        events: 0,
                        opened: Instant::now(),
                        users: BTreeSet::new(),
                        epoch,
                    })
                }
                // A file of a number the table does not know (left by a
                // run that crashed before its recovery): take the next.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && num < 999_999 => {
                    num += 1;
                }
                Err(e) => {
                    return Err(ArchiveError::Io {
                        what: "cannot create",
                        path: partial,
                        source: e,
                    }
                    .into())
                }
            }
        }
    }

    /// Throws the open segment away; the next step reads from the cursor.
    fn discard(&mut self) {
        if let Some(o) = self.open.take() {
            drop(o.writer);
            let _ = std::fs::remove_file(&o.partial);
            add(&self.archive.counters.segments_discarded, 1);
            tracing::info!(day = %o.day, name = %o.name, "archive: open segment discarded after a forget; reading again");
        }
        self.next_after = None;
    }

    /// Closes the open segment (see the module doc for the order).
    pub fn close(&mut self) -> Result<(), StoreError> {
        let Some(o) = self.open.take() else {
            return Ok(());
        };
        let raw = o.writer.raw_bytes;
        let size = match o.writer.finish() {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&o.partial);
                self.next_after = None;
                return Err(io_err("cannot finish", &o.partial)(e).into());
            }
        };
        let final_path = o.partial.with_file_name(&o.name);
        let mut conn = self.store.writer();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let epoch = meta_get(&tx, "forget_epoch")?.unwrap_or(0);
        if epoch != o.epoch {
            drop(tx);
            drop(conn);
            let _ = std::fs::remove_file(&o.partial);
            add(&self.archive.counters.segments_discarded, 1);
            self.next_after = None;
            return Ok(());
        }
        std::fs::rename(&o.partial, &final_path).map_err(io_err("cannot rename", &o.partial))?;
        let committed = (|| -> Result<(), StoreError> {
            sync_dir(final_path.parent().unwrap_or(&self.archive.dir))?;
            tx.execute(
                "INSERT INTO archive_segments
                 (day, num, name, sealed, first_seq, last_seq, events, bytes, closed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    o.day,
                    o.num,
                    o.name,
                    self.store.archive_key().is_some(),
                    o.first_seq,
                    o.last_seq,
                    o.events,
                    size,
                    now_ns()
                ],
            )?;
            let id = tx.last_insert_rowid();
            for u in &o.users {
                tx.execute(
                    "INSERT OR IGNORE INTO archive_segment_users (user, segment) VALUES (?1, ?2)",
                    params![u, id],
                )?;
            }
            meta_set(&tx, "archive_cursor", o.last_seq)?;
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = committed {
            // Not recorded: the file must not stay, the events are read
            // again from the cursor.
            let _ = std::fs::remove_file(&final_path);
            self.next_after = None;
            return Err(e);
        }
        let c = &self.archive.counters;
        add(&c.segments_closed, 1);
        add(&c.events_archived, o.events);
        add(&c.bytes_written, size);
        tracing::debug!(day = %o.day, name = %o.name, events = o.events, raw, size, "archive: segment closed");
        Ok(())
    }
}
