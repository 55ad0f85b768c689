//! The store's background work: retention (database and archive), the
//! archiver, the uploader. The collector runs it, and so does `aitrail run`
//! (the `store:` sink); one process per store at a time (`service.lock`).

use std::{
    fs::File,
    path::Path,
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use super::{
    archive::{day_of, Archiver},
    now_ns, Store, StoreError,
};

/// How often the archiver looks for new events.
const ARCHIVE_POLL: Duration = Duration::from_secs(1);
/// How often the uploader looks for closed segments, and its longest
/// backoff after failures.
const UPLOAD_POLL: Duration = Duration::from_secs(5);
const UPLOAD_BACKOFF_MAX: Duration = Duration::from_mins(5);

#[derive(Clone, Copy, Debug)]
pub struct ServiceConfig {
    /// Events older than this are deleted (see `retention`); `None` keeps all.
    pub retention: Option<Duration>,
    pub retention_interval: Duration,
}

/// A stop flag threads can sleep on.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Stop {
    /// Sleeps up to `d`; true when stopped.
    fn wait(&self, d: Duration) -> bool {
        let g = self
            .stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (g, _) = self
            .cv
            .wait_timeout_while(g, d, |s| !*s)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *g
    }

    fn set(&self) {
        *self
            .stopped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.cv.notify_all();
    }
}

/// The running background work; stopped (the open segment closed) on
/// [`StoreService::stop`] or drop.
pub struct StoreService {
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
    _lock: File,
}

/// The lock only one process that writes the store in the background (or
/// rewrites it whole) may hold.
pub(crate) fn service_lock(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join("service.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| StoreError::Create {
            path: path.clone(),
            source,
        })?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Invalid(format!(
            "store {} is in use by another collector or `aitrail run`",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Create { path, source }),
    }
}

impl StoreService {
    pub fn start(store: &Arc<Store>, cfg: ServiceConfig) -> Result<Self, StoreError> {
        let lock = service_lock(store.dir())?;
        let stop = Arc::new(Stop::default());
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|source| StoreError::Create {
                    path: store.dir().to_owned(),
                    source,
                })
        };
        if let Some(archive) = store.archive().filter(|a| a.writes()) {
            archive.recover(store)?;
            let (s, st) = (Arc::clone(store), Arc::clone(&stop));
            threads.push(spawn("archive", Box::new(move || archive_loop(&s, &st)))?);
            if archive.remote().is_some() {
                let (s, st) = (Arc::clone(store), Arc::clone(&stop));
                threads.push(spawn(
                    "archive-upload",
                    Box::new(move || upload_loop(&s, &st)),
                )?);
            }
        }
        let archive_retention = store
            .archive()
            .and_then(|a| a.config())
            .and_then(|c| c.retention);
        if cfg.retention.is_some() || archive_retention.is_some() {
            let (s, st) = (Arc::clone(store), Arc::clone(&stop));
            threads.push(spawn(
                "store-retention",
                Box::new(move || retention_loop(&s, &st, cfg)),
            )?);
        }
        Ok(Self {
            stop,
            threads,
            _lock: lock,
        })
    }

    /// Stops the threads; the archiver closes its open segment first.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.set();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for StoreService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn count_error(store: &Store) {
    if let Some(a) = store.archive() {
        a.counters
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn archive_loop(store: &Store, stop: &Stop) {
    let Some(mut archiver) = Archiver::new(store) else {
        return;
    };
    // A forget that stopped half-way (crash, object storage down) is
    // finished first.
    if let Some(a) = store.archive() {
        if let Err(error) = a.rewrite_pending(store) {
            count_error(store);
            tracing::error!(%error, "archive: pending forget rewrite failed");
        }
    }
    loop {
        if let Err(error) = archiver.step() {
            count_error(store);
            tracing::error!(%error, "archive: step failed; retrying");
        }
        if stop.wait(ARCHIVE_POLL) {
            break;
        }
    }
    // Archive what was stored up to now and close the segment, so that a
    // clean stop leaves no open segment behind.
    if let Err(error) = archiver.step().and_then(|_| archiver.close()) {
        count_error(store);
        tracing::error!(%error, "archive: closing the open segment at stop failed");
    }
}

fn upload_loop(store: &Store, stop: &Stop) {
    let Some(archive) = store.archive() else {
        return;
    };
    let mut wait = UPLOAD_POLL;
    loop {
        match archive.upload_pending(store) {
            Ok(n) => {
                wait = if n > 0 { Duration::ZERO } else { UPLOAD_POLL };
            }
            Err(error) => {
                count_error(store);
                tracing::warn!(%error, retry_in_secs = wait.as_secs(), "archive: upload failed");
                wait = (wait * 2).clamp(UPLOAD_POLL, UPLOAD_BACKOFF_MAX);
            }
        }
        if stop.wait(wait) {
            break;
        }
    }
}

fn retention_loop(store: &Store, stop: &Stop, cfg: ServiceConfig) {
    loop {
        run_retention(store, cfg);
        if stop.wait(cfg.retention_interval) {
            break;
        }
    }
}

/// One round of retention, database then archive.
pub fn run_retention(store: &Store, cfg: ServiceConfig) {
    let now = now_ns();
    if let Some(keep) = cfg.retention {
        let cutoff = now - i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX);
        match store.apply_retention(cutoff) {
            Ok(n) if n > 0 => tracing::info!(deleted = n, "retention: old events deleted"),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "retention failed"),
        }
    }
    let Some(archive) = store.archive() else {
        return;
    };
    if let Some(keep) = archive.config().and_then(|c| c.retention) {
        let cutoff = day_of(now - i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX));
        match archive.apply_retention(store, &cutoff) {
            Ok(n) if n > 0 => {
                tracing::info!(segments = n, before = %cutoff, "archive retention: old segments deleted");
            }
            Ok(_) => {}
            Err(error) => {
                count_error(store);
                tracing::error!(%error, "archive retention failed");
            }
        }
    }
}
