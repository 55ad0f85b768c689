//! Where OpenSSL lives on this host: shared libraries (`libssl.so.*`, in the
//! system, venvs, conda, /opt) and executables that link it statically and
//! export its symbols (node).
//!
//! A target is resolved once: the file offsets of the four hooked functions
//! are read from its ELF symbol tables, so attaching to one more process costs
//! no ELF parsing (node is ~100 MB). Executables that embed `BoringSSL` with its
//! symbols stripped (Bun, Claude Code) are located by `boringssl` instead.

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use object::{Object, ObjectSection, ObjectSymbol};

/// The hooked functions, in the order of [`TlsTarget::offsets`].
pub const FUNCTIONS: [&str; 5] = [
    "SSL_write",
    "SSL_write_ex",
    "SSL_read",
    "SSL_read_ex",
    "SSL_free",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsTarget {
    pub path: PathBuf,
    /// (device, inode): one file reached by several paths is one target.
    pub id: (u64, u64),
    /// File offsets of [`FUNCTIONS`], where present.
    pub offsets: [Option<u64>; 5],
    /// A shared library (any process may map it), as opposed to a program
    /// that embeds OpenSSL (node), which only its own processes run.
    pub library: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an ELF object we can parse")]
    Parse {
        path: String,
        #[source]
        source: object::Error,
    },
    #[error("{path} exports no SSL_write/SSL_read")]
    NoSymbols { path: String },
    /// Stripped `BoringSSL` whose functions were not proven: nothing is
    /// attached (see `boringssl`).
    #[error("{path}: BoringSSL offsets refused")]
    BoringSslRefused {
        path: String,
        #[source]
        source: super::boringssl::LocateError,
    },
}

/// Reads `path` and returns it as a target if it exports OpenSSL's I/O
/// functions (dynamic symbols first, then the full symbol table).
pub fn resolve(path: &Path) -> Result<TlsTarget, TargetError> {
    let read_err = |source| TargetError::Read {
        path: path.display().to_string(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_err)?;
    let file = fs::File::open(path).map_err(read_err)?;
    // SAFETY: the mapping is read-only and private; a file changed under us
    // at worst yields wrong offsets, which attach then rejects.
    let map = unsafe { memmap_ro(&file) }.map_err(read_err)?;
    let obj = object::File::parse(&*map).map_err(|source| TargetError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    let mut offsets = [None; 5];
    for sym in obj.dynamic_symbols().chain(obj.symbols()) {
        let Ok(name) = sym.name() else { continue };
        let Some(i) = FUNCTIONS.iter().position(|f| *f == name) else {
            continue;
        };
        if offsets[i].is_some() || sym.address() == 0 || !sym.is_definition() {
            continue;
        }
        let Some(section) = sym
            .section_index()
            .and_then(|i| obj.section_by_index(i).ok())
        else {
            continue;
        };
        let Some((file_off, _)) = section.file_range() else {
            continue;
        };
        offsets[i] = Some(sym.address() - section.address() + file_off);
        // The dynamic symbols come first and usually have them all: stop
        // before the full symbol table (megabytes in node) is touched.
        if offsets.iter().all(Option::is_some) {
            break;
        }
    }
    if offsets[0].is_none() && offsets[2].is_none() {
        return boringssl_target(path, (meta.dev(), meta.ino()), &map);
    }
    Ok(TlsTarget {
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
        offsets,
        library: path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".so")),
    })
}

/// An executable without OpenSSL symbols: stripped `BoringSSL`, when its
/// `SSL_write`/`SSL_read` can be proven. `SSL_shutdown` takes the slot of
/// `SSL_free` (the connection-end marker): `BoringSSL`'s `SSL_free` cannot be
/// recognised soundly, and no plaintext moves after `SSL_shutdown`.
fn boringssl_target(path: &Path, id: (u64, u64), map: &[u8]) -> Result<TlsTarget, TargetError> {
    use super::boringssl::{locate, LocateError};
    match locate(path, map) {
        Ok(b) => {
            tracing::info!(
                path = %path.display(),
                method = b.method.as_str(),
                build_id = b.build_id.as_deref().unwrap_or("-"),
                took_ms = b.took.as_millis(),
                evidence = ?b.evidence,
                "BoringSSL located in a stripped executable"
            );
            Ok(TlsTarget {
                path: path.to_path_buf(),
                id,
                offsets: [Some(b.write), None, Some(b.read), None, b.shutdown],
                library: false,
            })
        }
        Err(LocateError::NotBoringSsl { .. }) => Err(TargetError::NoSymbols {
            path: path.display().to_string(),
        }),
        Err(source) => Err(TargetError::BoringSslRefused {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// A read-only view of a whole file.
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps what `memmap_ro` mapped.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

unsafe fn memmap_ro(file: &fs::File) -> std::io::Result<Mapped> {
    use std::os::fd::AsRawFd;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(0);
    if len == 0 {
        return Ok(Mapped {
            ptr: std::ptr::null_mut(),
            len: 0,
        });
    }
    // SAFETY: a fresh private read-only mapping of an open file.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Mapped { ptr, len })
}

/// Does this file name look like an OpenSSL `libssl`?
pub fn is_libssl_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("libssl") && n.contains(".so"))
}

/// The set of known targets, by file identity.
#[derive(Default)]
pub struct Targets {
    by_id: HashMap<(u64, u64), TlsTarget>,
    /// Files already checked and found not to be targets, by (dev, ino):
    /// every exec looks at `/proc/PID/exe`, a new path each time for the
    /// same few binaries.
    rejected: HashSet<(u64, u64)>,
}

impl Targets {
    pub fn all(&self) -> impl Iterator<Item = &TlsTarget> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Resolves `path` if it is new; returns the target when it is one.
    pub fn learn(&mut self, path: &Path) -> Option<TlsTarget> {
        let meta = fs::metadata(path).ok()?;
        let id = (meta.dev(), meta.ino());
        if let Some(t) = self.by_id.get(&id) {
            return Some(t.clone());
        }
        if self.rejected.contains(&id) {
            return None;
        }
        match resolve(path) {
            Ok(t) => {
                tracing::info!(path = %path.display(), functions = ?present(&t), "TLS library found");
                self.by_id.insert(id, t.clone());
                Some(t)
            }
            Err(e @ TargetError::BoringSslRefused { .. }) => {
                // Never probed: a wrong offset would corrupt the program.
                // (Counted by `boringssl`, cited by blind_spot findings.)
                tracing::warn!(
                    path = %path.display(),
                    error = %DisplayChain(&e),
                    "no TLS probes for this executable: its BoringSSL could not be located soundly"
                );
                if self.rejected.len() < 65536 {
                    self.rejected.insert(id);
                }
                None
            }
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "not a TLS target");
                if self.rejected.len() < 65536 {
                    self.rejected.insert(id);
                }
                None
            }
        }
    }

    /// Seeds the set from the usual library directories and from the
    /// executables of well-known runtimes that link a TLS library statically.
    pub fn discover_host(&mut self) {
        for dir in [
            "/usr/lib/x86_64-linux-gnu",
            "/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/lib64",
            "/usr/lib",
            "/usr/local/lib",
            "/usr/local/lib64",
            "/usr/local/ssl/lib",
        ] {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if is_libssl_name(&p) {
                    self.learn(&p);
                }
            }
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path)
            .chain(["/usr/bin", "/usr/local/bin"].iter().map(PathBuf::from))
        {
            // node exports OpenSSL; bun and claude (Claude Code) embed a
            // stripped BoringSSL, located once here rather than at their
            // first exec, where a short client would outrun the analysis.
            for exe in ["node", "nodejs", "bun", "claude"] {
                let p = dir.join(exe);
                if p.is_file() {
                    self.learn(&p);
                }
            }
        }
    }

    /// Learns the TLS files a process has mapped (libssl copies) and its
    /// executable when it exports OpenSSL.
    pub fn discover_process(&mut self, pid: u32) -> Vec<TlsTarget> {
        let mut found = Vec::new();
        if let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) {
            for line in maps.lines() {
                let Some(path) = line.split_whitespace().nth(5) else {
                    continue;
                };
                let p = Path::new(path);
                if path.starts_with('/') && is_libssl_name(p) {
                    // Through the process's root, so containers work too.
                    let via_root = PathBuf::from(format!("/proc/{pid}/root{path}"));
                    let p = if via_root.exists() {
                        via_root
                    } else {
                        p.to_path_buf()
                    };
                    if let Some(t) = self.learn(&p) {
                        found.push(t);
                    }
                }
            }
        }
        // The executable through /proc, so a deleted or namespaced one
        // still opens.
        if let Some(t) = self.learn(Path::new(&format!("/proc/{pid}/exe"))) {
            found.push(t);
        }
        found
    }
}

/// An error and its sources, on one line.
struct DisplayChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut src = self.0.source();
        while let Some(s) = src {
            write!(f, ": {s}")?;
            src = s.source();
        }
        Ok(())
    }
}

fn present(t: &TlsTarget) -> Vec<&'static str> {
    FUNCTIONS
        .iter()
        .zip(t.offsets)
        .filter(|(_, o)| o.is_some())
        .map(|(f, _)| *f)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_file_is_remembered_by_identity_not_path() {
        // Every exec looks at /proc/PID/exe; the same binary must not be
        // parsed again under another path.
        let mut t = Targets::default();
        let exe = std::env::current_exe().unwrap();
        assert!(t.learn(&exe).is_none());
        assert!(t.learn(Path::new("/proc/self/exe")).is_none());
        assert_eq!(t.rejected.len(), 1);
    }

    #[test]
    fn libssl_names() {
        assert!(is_libssl_name(Path::new(
            "/usr/lib/x86_64-linux-gnu/libssl.so.3"
        )));
        assert!(is_libssl_name(Path::new("/opt/venv/lib/libssl.so.1.1")));
        assert!(!is_libssl_name(Path::new("/usr/lib/libssl.a")));
        assert!(!is_libssl_name(Path::new("/usr/lib/libcrypto.so.3")));
    }

    #[test]
    fn a_file_without_openssl_is_no_target() {
        let exe = std::env::current_exe().unwrap();
        assert!(matches!(resolve(&exe), Err(TargetError::NoSymbols { .. })));
        assert!(matches!(
            resolve(Path::new("/proc/self/status")),
            Err(TargetError::Parse { .. } | TargetError::Read { .. })
        ));
    }

    #[test]
    fn system_libssl_resolves() {
        // The test machines run Debian with OpenSSL 3 (libssl3).
        let mut t = Targets::default();
        t.discover_host();
        let lib = t
            .all()
            .find(|t| t.path.to_string_lossy().contains("libssl.so"))
            .expect("the system libssl is found");
        assert!(lib.offsets.iter().all(Option::is_some), "{lib:?}");
    }
}
