//! The file sink: one NDJSON file, appended to.
//!
//! The file is opened with `O_APPEND | O_CREAT` and mode 0600 (events carry
//! prompts and command lines). Its directory must exist: the daemon does not
//! create directories with guessed owners and modes. A batch that fails
//! half-way is cut off again (`ftruncate` to the length before the batch), so
//! the file only ever holds whole lines.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use super::{
    writer::{Output, Pending},
    SinkError,
};

pub(super) struct FileOutput {
    file: File,
    path: PathBuf,
    /// A regular file (not `/dev/…` or a FIFO): can be cut back and fsynced.
    regular: bool,
}

impl FileOutput {
    pub(super) fn open(path: &Path) -> Result<Self, SinkError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            return Err(SinkError::NoParentDir {
                path: path.to_owned(),
                dir: dir.to_owned(),
            });
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| SinkError::Open {
                path: path.to_owned(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| SinkError::Open {
            path: path.to_owned(),
            source,
        })?;
        let regular = meta.is_file();
        // The mode only applies to a file we create; say so if an existing
        // one is readable by others.
        if regular && meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "event file is accessible to group or others; events hold prompts and command lines"
            );
        }
        Ok(Self {
            file,
            path: path.to_owned(),
            regular,
        })
    }
}

impl Output for FileOutput {
    fn write_batch(&mut self, batch: &Pending<'_>) -> io::Result<()> {
        let batch = batch.bytes;
        let before = if self.regular {
            Some(self.file.metadata()?.len())
        } else {
            None
        };
        let result = self.file.write_all(batch);
        if let (Err(_), Some(len)) = (&result, before) {
            if let Err(error) = self.file.set_len(len) {
                tracing::debug!(path = %self.path.display(), %error, "could not cut a failed batch off the file");
            }
        }
        result
    }

    fn finish(&mut self) -> io::Result<()> {
        // `File` has no user-space buffer; write_batch already wrote through.
        if self.regular {
            self.file.sync_data()?;
        }
        Ok(())
    }
}
