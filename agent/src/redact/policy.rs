//! The redaction policy: the `[redact]` section of the agent config, and
//! the HMAC key that makes hashed values joinable.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::scan::DataClass;

/// Bytes of a key file this agent creates.
pub const KEY_BYTES: usize = 32;
/// Shortest key file accepted: below 128 bits the tokens of low-entropy
/// values (phone numbers, SSNs) could be brute-forced by whoever guesses
/// the key.
pub const MIN_KEY_BYTES: usize = 16;

/// What happens to a value of a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Replaced by `[class]` or `[class:hint]` with a harmless hint.
    Mask,
    /// Replaced by `[class:hmac:<16 hex>]`, a keyed hash: equal values give
    /// equal tokens, so events stay joinable without the value.
    Hash,
    /// The whole field's text is replaced by `[dropped:class]`.
    Drop,
    /// Left as is; only for personal data, never for secrets.
    Keep,
}

/// `[redact]`: the mode per data class and the HMAC key file.
///
/// Default: every secret class (`api_key`, `aws_key`, `gcp_key`,
/// `azure_key`, `private_key`, `jwt`, `password`) is masked, every personal
/// data class (`card_number`, `iban`, `email`, `phone`, `us_ssn`) is hashed,
/// and the HMAC key is random per run (tokens do not join across restarts).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactConfig {
    /// Mode per class; a class not listed takes its default (secrets
    /// `mask`, personal data `hash`).
    pub modes: BTreeMap<DataClass, Mode>,
    /// File holding the HMAC key (at least 16 bytes, owner-only
    /// permissions). Created with 32 random bytes and mode 0600 if missing.
    pub hmac_key_file: Option<PathBuf>,
}

impl RedactConfig {
    /// The mode that applies to `class`.
    pub fn mode(&self, class: DataClass) -> Mode {
        self.modes
            .get(&class)
            .copied()
            .unwrap_or(if class.is_secret() {
                Mode::Mask
            } else {
                Mode::Hash
            })
    }

    /// Rejects `keep` for secrets: a config must not be able to turn off the
    /// guarantee that credentials never leave the host in clear.
    pub fn validate(&self) -> Result<(), RedactError> {
        match self
            .modes
            .iter()
            .find(|(class, mode)| class.is_secret() && **mode == Mode::Keep)
        {
            Some((class, _)) => Err(RedactError::KeepSecret {
                class: class.name(),
            }),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("redact: mode `keep` is not allowed for the secret class {class}")]
    KeepSecret { class: &'static str },
    #[error("redact: cannot read or create the HMAC key file {path}")]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("redact: HMAC key file {path} has mode {mode:o}; it must be readable by its owner only (0600)")]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    #[error("redact: HMAC key file {path} holds {len} bytes; at least {MIN_KEY_BYTES} are needed")]
    KeyFileTooShort { path: PathBuf, len: usize },
    #[error("redact: cannot read random bytes for the HMAC key")]
    Random {
        #[source]
        source: std::io::Error,
    },
}

/// Random bytes from the kernel.
pub(crate) fn random_key() -> Result<Vec<u8>, RedactError> {
    let mut key = vec![0u8; KEY_BYTES];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|source| RedactError::Random { source })?;
    Ok(key)
}

/// Reads the key file, or creates it with a fresh random key when missing.
/// Permissions are checked on the opened file, not the path, so the file
/// read is the file checked.
pub(crate) fn load_or_create_key(path: &Path) -> Result<Vec<u8>, RedactError> {
    let io_err = |source| RedactError::KeyFile {
        path: path.to_owned(),
        source,
    };
    match File::open(path) {
        Ok(mut file) => {
            let mode = file.metadata().map_err(io_err)?.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(RedactError::KeyFilePermissions {
                    path: path.to_owned(),
                    mode,
                });
            }
            let mut key = Vec::new();
            file.read_to_end(&mut key).map_err(io_err)?;
            if key.len() < MIN_KEY_BYTES {
                return Err(RedactError::KeyFileTooShort {
                    path: path.to_owned(),
                    len: key.len(),
                });
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_key()?;
            // `create_new`: if another process created it meanwhile, fail
            // rather than overwrite a key whose tokens are already stored.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io_err)?;
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .map_err(io_err)?;
            tracing::info!(path = %path.display(), "created the redaction HMAC key file");
            Ok(key)
        }
        Err(e) => Err(io_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_mask_secrets_and_hash_personal_data() {
        let c = RedactConfig::default();
        for &class in DataClass::ALL {
            let want = if class.is_secret() {
                Mode::Mask
            } else {
                Mode::Hash
            };
            assert_eq!(c.mode(class), want, "{}", class.name());
        }
        assert!(c.validate().is_ok());
    }

    #[test]
    fn toml_section_parses_and_rejects_unknown_names() {
        let c: RedactConfig = toml::from_str(
            "hmac_key_file = \"/var/lib/aitrail/redact.key\"\n[modes]\nemail = \"keep\"\ncard_number = \"mask\"\napi_key = \"drop\"\n",
        )
        .expect("valid section");
        assert_eq!(c.mode(DataClass::Email), Mode::Keep);
        assert_eq!(c.mode(DataClass::CardNumber), Mode::Mask);
        assert_eq!(c.mode(DataClass::ApiKey), Mode::Drop);
        assert_eq!(c.mode(DataClass::Phone), Mode::Hash);
        assert!(c.validate().is_ok());
        assert!(toml::from_str::<RedactConfig>("[modes]\ncredit_card = \"mask\"\n").is_err());
        assert!(toml::from_str::<RedactConfig>("[modes]\nemail = \"blur\"\n").is_err());
        assert!(toml::from_str::<RedactConfig>("hmac_key = \"x\"\n").is_err());
    }

    #[test]
    fn keep_is_refused_for_secrets() {
        for &class in DataClass::ALL.iter().filter(|c| c.is_secret()) {
            let c = RedactConfig {
                modes: BTreeMap::from([(class, Mode::Keep)]),
                hmac_key_file: None,
            };
            assert!(
                matches!(c.validate(), Err(RedactError::KeepSecret { class: n }) if n == class.name()),
                "{}",
                class.name()
            );
        }
    }

    #[test]
    fn missing_key_file_is_created_owner_only_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("redact.key");
        let key = load_or_create_key(&path).expect("created");
        assert_eq!(key.len(), KEY_BYTES);
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_key(&path).expect("read back"), key);
    }

    #[test]
    fn readable_by_others_or_short_key_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("redact.key");
        std::fs::write(&path, [7u8; 32]).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            load_or_create_key(&path),
            Err(RedactError::KeyFilePermissions { mode: 0o644, .. })
        ));
        std::fs::write(&path, [7u8; 8]).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            load_or_create_key(&path),
            Err(RedactError::KeyFileTooShort { len: 8, .. })
        ));
    }
}
