//! Turning a plaintext store into an encrypted one (`aitrail
//! store-encrypt`), offline: `SQLCipher`'s `sqlcipher_export` copies every
//! table into a new encrypted database, which then replaces the old file.
//!
//! The old file is unlinked, not overwritten: its blocks stay on the disk
//! until the filesystem reuses them. Archive segments written before stay
//! as they are (plaintext); new ones are sealed.

use std::{fs::OpenOptions, os::unix::fs::OpenOptionsExt as _, path::Path};

use rusqlite::Connection;

use super::{archive::sync_dir, keys::StoreKey, service, Store, StoreError, StoreOptions};

/// Encrypts the plaintext store in `dir` with `key`. The store must not be
/// in use (no collector or `aitrail run` on it). Returns the events copied.
pub fn encrypt_store(dir: &Path, key: StoreKey) -> Result<u64, StoreError> {
    let _lock = service::service_lock(dir)?;
    let db = dir.join("events.db");
    // Opened plaintext: checks it is one, migrates it to this schema.
    let count = Store::open(dir)?.count()?;
    let tmp = dir.join("events.db.encrypting");
    let _ = std::fs::remove_file(&tmp);
    let create = |source| StoreError::Create {
        path: tmp.clone(),
        source,
    };
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(create)?;
    let done = (|| -> Result<(), StoreError> {
        let c = Connection::open(&db)?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let path = tmp
            .to_str()
            .ok_or_else(|| StoreError::Invalid(format!("{}: not a UTF-8 path", tmp.display())))?;
        c.execute(
            "ATTACH DATABASE ?1 AS enc KEY ?2",
            rusqlite::params![path, key.sqlcipher_pragma().as_str()],
        )?;
        c.query_row("SELECT sqlcipher_export('enc')", [], |_| Ok(()))?;
        c.execute_batch(&format!(
            "PRAGMA enc.user_version = {version}; DETACH DATABASE enc;"
        ))?;
        Ok(())
    })();
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &db).map_err(create)?;
    for side in ["events.db-wal", "events.db-shm"] {
        let _ = std::fs::remove_file(dir.join(side));
    }
    sync_dir(dir)?;
    let store = Store::open_with(
        dir,
        StoreOptions {
            key: Some(key),
            archive: None,
        },
    )?;
    let after = store.count()?;
    if after != count {
        return Err(StoreError::Invalid(format!(
            "encrypted store has {after} events, the plaintext one had {count}"
        )));
    }
    Ok(after)
}
