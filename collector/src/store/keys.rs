//! The store's encryption key and the keys derived from it.
//!
//! `[store] encryption_key_file` names a file holding 32 random bytes as 64
//! hex digits (`aitrail keygen FILE` writes one; `openssl rand -hex 32`
//! does too). The file must exist — the store never makes up its own key,
//! which would then sit next to the data it protects — and must not be
//! readable by group or others. Two keys are derived from it with
//! HKDF-SHA256, so that no key is used for two jobs:
//!
//! - the `SQLCipher` key of `events.db` (a raw key: the master key is
//!   random, so `SQLCipher`'s passphrase KDF would add cost and nothing
//!   else), and
//! - the key of the archive segments (see `archive::crypt`).
//!
//! Key material lives in [`Secret`]s, which are zeroed when dropped.

use std::{
    fs::OpenOptions,
    io::Write as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use ring::{
    hkdf,
    rand::{SecureRandom as _, SystemRandom},
};
use zeroize::{Zeroize as _, Zeroizing};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path}: cannot create")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path}: mode {mode:o} lets group or others read it; chmod 600 it")]
    Mode { path: PathBuf, mode: u32 },
    #[error("key file {path}: owned by uid {owner}, neither root nor this process's user")]
    Owner { path: PathBuf, owner: u32 },
    #[error(
        "key file {path}: expected 64 hex digits (32 random bytes), e.g. from `aitrail keygen`"
    )]
    Format { path: PathBuf },
    #[error("no random numbers from the system")]
    Random,
}

/// 32 bytes of key material, zeroed on drop.
pub type Secret = Zeroizing<[u8; 32]>;

/// The store's master key.
pub struct StoreKey {
    master: Secret,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(…)")
    }
}

/// Random bytes from the system.
pub fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| KeyError::Random)?;
    Ok(out)
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// HKDF-SHA256 of `ikm` with `salt`, for `info`.
pub fn derive(ikm: &[u8], salt: &[u8], info: &[u8]) -> Secret {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    let infos = [info];
    // Len32 asks for 32 bytes, well under HKDF-SHA256's limit of 8160.
    prk.expand(&infos, Len32)
        .and_then(|okm| okm.fill(out.as_mut()))
        .expect("32 bytes of HKDF-SHA256 output");
    out
}

fn decode_hex32(text: &str) -> Option<Secret> {
    let t = text.trim();
    if t.len() != 64 {
        return None;
    }
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(t, out.as_mut()).ok()?;
    Some(out)
}

impl StoreKey {
    /// Reads the key file: it must exist, hold 64 hex digits, be owned by
    /// root or this process's user, and not be readable by group or others.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let read = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Mode {
                path: path.to_owned(),
                mode,
            });
        }
        let euid = euid();
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(KeyError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
            });
        }
        let mut text = Zeroizing::new(std::fs::read_to_string(path).map_err(read)?);
        let master = decode_hex32(&text).ok_or_else(|| KeyError::Format {
            path: path.to_owned(),
        });
        text.zeroize();
        Ok(Self { master: master? })
    }

    /// A key from its bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            master: Zeroizing::new(bytes),
        }
    }

    /// Writes a new random key to `path` (mode 0600); an existing file is
    /// never overwritten.
    pub fn generate(path: &Path) -> Result<(), KeyError> {
        let create = |source| KeyError::Create {
            path: path.to_owned(),
            source,
        };
        let key = Zeroizing::new(random::<32>()?);
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_ref())));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(create)?;
        f.write_all(text.as_bytes()).map_err(create)?;
        f.sync_all().map_err(create)?;
        Ok(())
    }

    /// The `SQLCipher` key, as the value of `PRAGMA key` (`x'…'`: a raw
    /// 256-bit key, no passphrase derivation).
    pub fn sqlcipher_pragma(&self) -> Zeroizing<String> {
        let k = derive(
            self.master.as_ref(),
            b"aitrail store v1",
            b"sqlcipher page key",
        );
        Zeroizing::new(format!("x'{}'", hex::encode(k.as_ref())))
    }

    /// The key the archive segments are sealed with.
    pub fn archive_key(&self) -> Secret {
        derive(
            self.master.as_ref(),
            b"aitrail store v1",
            b"archive segment key",
        )
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn key_files_are_checked_and_keys_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        StoreKey::generate(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            StoreKey::generate(&path).is_err(),
            "an existing key is never overwritten"
        );
        let k = StoreKey::load(&path).unwrap();
        let pragma = k.sqlcipher_pragma();
        assert!(pragma.starts_with("x'") && pragma.len() == 67);
        assert_ne!(
            &pragma[2..66],
            hex::encode(k.archive_key().as_ref()),
            "one key per job"
        );
        // Same file, same keys.
        assert_eq!(
            StoreKey::load(&path).unwrap().archive_key(),
            k.archive_key()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            StoreKey::load(&path),
            Err(KeyError::Mode { mode: 0o640, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            StoreKey::load(&path),
            Err(KeyError::Format { .. })
        ));
        assert!(matches!(
            StoreKey::load(&dir.path().join("missing")),
            Err(KeyError::Read { .. })
        ));
    }
}
