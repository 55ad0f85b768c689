//! Where TLS libraries live on this host: shared libraries (`libssl.so.*`,
//! `libgnutls.so.*`, NSS's `libssl3.so` and `libnspr4.so`, in the system,
//! venvs, conda, /opt) and executables that link a TLS stack in (node, Bun,
//! Claude Code, Go programs, Codex). Which stacks are recognised, and how
//! their hook points are found, is in [`super::stacks`].
//!
//! A target is resolved once: the file offsets of its hooks are computed
//! when the file is first seen, so attaching to one more process costs no
//! ELF parsing (node is ~100 MB).

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{
    decisions::{Decision, DecisionLog, Outcome},
    stacks::{self, Elf, Hook, Method, Stack},
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsTarget {
    pub path: PathBuf,
    /// (device, inode): one file reached by several paths is one target.
    pub id: (u64, u64),
    pub stack: Stack,
    /// How the hooks were found.
    pub method: Method,
    pub hooks: Vec<Hook>,
    /// A shared library (any process may map it), as opposed to a program
    /// that embeds its TLS stack (node), which only its own processes run.
    pub library: bool,
}

impl TlsTarget {
    /// The hooked functions, once each, for logs.
    pub fn functions(&self) -> Vec<&'static str> {
        let mut f: Vec<&'static str> = self.hooks.iter().map(|h| h.function).collect();
        f.dedup();
        f
    }
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
    #[error("{path} holds no TLS stack we hook")]
    NoStack { path: String },
    #[error("{path} holds {stack}, but its hooks cannot be placed safely: {reason}")]
    Refused {
        path: String,
        stack: Stack,
        reason: String,
    },
}

/// The (device, inode) of every file `pid` maps (empty when it is gone or
/// unreadable): the identity [`TlsTarget::id`] is keyed by.
pub fn mapped_files(pid: u32) -> HashSet<(u64, u64)> {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|maps| maps.lines().filter_map(map_line_file).collect())
        .unwrap_or_default()
}

/// The file identity of one `/proc/PID/maps` line, e.g.
/// `7f..-7f.. r-xp 00028000 fd:01 1234 /usr/lib/libssl.so.3` → (fd:01, 1234);
/// None for anonymous mappings (inode 0).
fn map_line_file(line: &str) -> Option<(u64, u64)> {
    let mut it = line.split_whitespace();
    let dev = it.nth(3)?;
    let ino: u64 = it.next()?.parse().ok()?;
    let (major, minor) = dev.split_once(':')?;
    let major = u32::from_str_radix(major, 16).ok()?;
    let minor = u32::from_str_radix(minor, 16).ok()?;
    (ino != 0).then(|| (libc::makedev(major, minor), ino))
}

/// Reads `path` and returns it as a target if a resolver recognises its TLS
/// stack.
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
    let elf = Elf {
        path,
        data: &map,
        obj: &obj,
    };
    let library = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(".so"));
    let mut result = Err(TargetError::NoStack {
        path: path.display().to_string(),
    });
    for (stack, resolver) in stacks::RESOLVERS {
        match resolver(&elf) {
            Ok(None) => continue,
            Ok(Some(r)) => {
                result = Ok(TlsTarget {
                    path: path.to_path_buf(),
                    id: (meta.dev(), meta.ino()),
                    stack: r.stack,
                    method: r.method,
                    hooks: r.hooks,
                    library,
                });
            }
            Err(reason) => {
                result = Err(TargetError::Refused {
                    path: path.display().to_string(),
                    stack: *stack,
                    reason,
                });
            }
        }
        break;
    }
    // Programs (not libraries) are what `blind_spot` findings name by
    // build-id: remember what became of their TLS stack.
    if !library {
        use object::Object as _;
        if let Ok(Some(id)) = obj.build_id() {
            if let Some(outcome) = outcome(&result) {
                stacks::note_outcome(&hex::encode(id), outcome);
            }
        }
    }
    result
}

/// A resolver's verdict on a program, as a `blind_spot` finding cites it.
pub fn outcome(r: &Result<TlsTarget, TargetError>) -> Option<String> {
    match r {
        Ok(t) => {
            let mut at: Vec<String> = Vec::new();
            for h in &t.hooks {
                let s = format!("{} at file offset {:#x}", h.function, h.offset);
                if !at.contains(&s) {
                    at.push(s);
                }
            }
            Some(format!(
                "its TLS stack ({}) was found by {} and hooked ({})",
                t.stack,
                t.method,
                at.join(", ")
            ))
        }
        Err(TargetError::Refused { stack, reason, .. }) => Some(format!(
            "its TLS stack ({stack}) was found but no probe was attached: {reason}"
        )),
        Err(_) => None,
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

/// Is this the file name of a shared TLS library we hook?
pub fn is_tls_library_name(path: &Path) -> bool {
    stacks::is_library_name(path)
}

/// The set of known targets, by file identity.
#[derive(Default)]
pub struct Targets {
    by_id: HashMap<(u64, u64), TlsTarget>,
    /// Files already checked and found not to be targets, by (dev, ino):
    /// every exec looks at `/proc/PID/exe`, a new path each time for the
    /// same few binaries.
    rejected: HashSet<(u64, u64)>,
    /// Files whose stack was recognised but whose hooks could not be
    /// placed safely.
    refused: u64,
    /// Each stack recognised, hooked or refused, for `aitrail doctor`.
    pub decisions: DecisionLog,
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

    /// Files whose TLS stack was recognised but not attached (unsafe).
    pub fn refused(&self) -> u64 {
        self.refused
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
        let started = std::time::Instant::now();
        match resolve(path) {
            Ok(t) => {
                tracing::info!(
                    path = %path.display(), stack = %t.stack, method = %t.method,
                    functions = ?t.functions(), probes = t.hooks.len(),
                    took = ?started.elapsed(), "TLS library found"
                );
                let mut d = Decision::new(Outcome::Found, path);
                d.build_id = crate::blindspot::file_build_id(path);
                d.stack = Some(t.stack.to_string());
                d.method = Some(t.method.to_string());
                d.functions = t.functions().iter().map(|f| (*f).to_owned()).collect();
                d.probes = t.hooks.len();
                d.took_ms = started.elapsed().as_secs_f64() * 1e3;
                self.decisions.push(d);
                self.by_id.insert(id, t.clone());
                Some(t)
            }
            Err(e @ TargetError::Refused { .. }) => {
                tracing::warn!(error = %e, "TLS stack found, not attached");
                let mut d = Decision::new(Outcome::Refused, path);
                d.build_id = crate::blindspot::file_build_id(path);
                if let TargetError::Refused { stack, reason, .. } = &e {
                    d.stack = Some(stack.to_string());
                    d.reason = Some(reason.clone());
                }
                d.took_ms = started.elapsed().as_secs_f64() * 1e3;
                self.decisions.push(d);
                self.refused += 1;
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
    /// executables of well-known runtimes that link a TLS stack statically.
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
                if is_tls_library_name(&p) {
                    self.learn(&p);
                }
            }
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path)
            .chain(["/usr/bin", "/usr/local/bin"].iter().map(PathBuf::from))
        {
            // node exports OpenSSL; bun and claude (Claude Code) embed a
            // stripped BoringSSL, searched once here rather than at their
            // first exec, where a short client would outrun the search.
            for exe in ["node", "nodejs", "bun", "claude"] {
                let p = dir.join(exe);
                if p.is_file() {
                    self.learn(&p);
                }
            }
        }
    }

    /// Learns the TLS libraries a process has mapped and its executable
    /// when it links a TLS stack in.
    pub fn discover_process(&mut self, pid: u32) -> Vec<TlsTarget> {
        let mut found = Vec::new();
        if let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) {
            for line in maps.lines() {
                let Some(path) = line.split_whitespace().nth(5) else {
                    continue;
                };
                let p = Path::new(path);
                if path.starts_with('/') && is_tls_library_name(p) {
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
    fn mapped_files_match_the_identity_of_stat() {
        // This test binary maps libc; its (dev, ino) from maps is the one
        // stat gives, which is how targets are keyed.
        let mapped = mapped_files(std::process::id());
        let exe = fs::metadata("/proc/self/exe").expect("stat exe");
        assert!(mapped.contains(&(exe.dev(), exe.ino())), "{mapped:?}");
        assert_eq!(map_line_file("7f00-7f01 rw-p 00000000 00:00 0 "), None);
        assert_eq!(
            map_line_file("7f00-7f01 r-xp 00028000 fd:01 1234 /usr/lib/libssl.so.3"),
            Some((libc::makedev(0xfd, 1), 1234))
        );
        assert!(mapped_files(u32::MAX).is_empty());
    }

    #[test]
    fn library_names() {
        assert!(is_tls_library_name(Path::new(
            "/usr/lib/x86_64-linux-gnu/libssl.so.3"
        )));
        assert!(is_tls_library_name(Path::new(
            "/opt/venv/lib/libssl.so.1.1"
        )));
        assert!(!is_tls_library_name(Path::new("/usr/lib/libssl.a")));
        assert!(!is_tls_library_name(Path::new("/usr/lib/libcrypto.so.3")));
        assert!(is_tls_library_name(Path::new(
            "/usr/lib/x86_64-linux-gnu/libgnutls.so.30"
        )));
        assert!(is_tls_library_name(Path::new(
            "/usr/lib/x86_64-linux-gnu/libgnutls.so.30.34.3"
        )));
        assert!(is_tls_library_name(Path::new("/lib64/libssl3.so")));
        assert!(is_tls_library_name(Path::new("/lib64/libnspr4.so")));
        assert!(!is_tls_library_name(Path::new("/lib64/libnssutil3.so")));
    }

    #[test]
    fn a_file_without_openssl_is_no_target() {
        // Not this test binary: it holds the stacks' marker strings (the
        // locators' tests spell them out), so whether it resolves depends on
        // where the linker put them.
        let exe = ["/usr/bin/ls", "/bin/ls"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .expect("ls");
        let r = resolve(exe);
        assert!(matches!(r, Err(TargetError::NoStack { .. })), "{r:?}");
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
        assert_eq!(lib.stack, Stack::OpenSsl);
        assert_eq!(lib.method, Method::Symbol);
        // Four I/O functions with entry and return, and SSL_free.
        assert_eq!(lib.hooks.len(), 9, "{lib:?}");
        assert_eq!(
            lib.functions(),
            [
                "SSL_write",
                "SSL_write_ex",
                "SSL_read",
                "SSL_read_ex",
                "SSL_free"
            ]
        );
    }
}

#[cfg(test)]
mod system_stacks {
    //! The resolvers against the real Debian libraries (libgnutls30,
    //! libnss3 and libnspr4: tests/setup-test-deps.sh installs them).

    use super::*;

    const LIB_DIR: &str = "/usr/lib/x86_64-linux-gnu";

    fn host_target(name: &str) -> TlsTarget {
        let mut t = Targets::default();
        t.discover_host();
        let want = fs::metadata(Path::new(LIB_DIR).join(name))
            .unwrap_or_else(|e| panic!("{LIB_DIR}/{name}: {e} (run tests/setup-test-deps.sh)"));
        let found = t.all().find(|t| t.id == (want.dev(), want.ino())).cloned();
        found.unwrap_or_else(|| panic!("discover_host did not find {name}"))
    }

    /// Every hook sits on a distinct function inside the file, at the
    /// offset of its exported symbol.
    fn check_offsets(t: &TlsTarget) {
        use object::{Object, ObjectSymbol};
        let data = fs::read(&t.path).expect("read library");
        let obj = object::File::parse(&*data).expect("parse library");
        for h in &t.hooks {
            let sym = obj
                .dynamic_symbols()
                .find(|s| s.name() == Ok(h.function))
                .unwrap_or_else(|| panic!("{} not exported", h.function));
            assert_eq!(
                Some(h.offset),
                stacks::symbol_file_offset(&obj, &sym),
                "{}",
                h.function
            );
            assert!(h.offset < data.len() as u64);
        }
        let mut offsets: Vec<u64> = t.hooks.iter().map(|h| h.offset).collect();
        offsets.dedup();
        assert_eq!(offsets.len(), t.functions().len(), "{t:?}");
    }

    #[test]
    fn system_gnutls_resolves() {
        let t = host_target("libgnutls.so.30");
        assert_eq!(t.stack, Stack::GnuTls);
        assert_eq!(t.method, Method::Symbol);
        assert!(t.library);
        assert_eq!(
            t.functions(),
            [
                "gnutls_record_send",
                "gnutls_record_send2",
                "gnutls_record_recv",
                "gnutls_record_recv_seq",
                "gnutls_deinit"
            ]
        );
        // Four I/O functions with entry and return, and gnutls_deinit.
        assert_eq!(t.hooks.len(), 9, "{t:?}");
        assert!(t
            .hooks
            .iter()
            .filter(|h| h.function.starts_with("gnutls_record_send"))
            .all(|h| h.program.starts_with("tls_gnutls_send")));
        check_offsets(&t);
    }

    #[test]
    fn system_nspr_resolves() {
        let t = host_target("libnspr4.so");
        assert_eq!(t.stack, Stack::Nss);
        assert_eq!(
            t.functions(),
            ["PR_Write", "PR_Send", "PR_Read", "PR_Recv", "PR_Close"]
        );
        assert_eq!(t.hooks.len(), 9, "{t:?}");
        let recv: Vec<_> = t.hooks.iter().filter(|h| h.function == "PR_Recv").collect();
        assert_eq!(recv[0].program, "tls_nss_recv", "PR_Recv skips peeks");
        check_offsets(&t);
    }

    #[test]
    fn system_libssl3_gives_the_ssl_layer_identity() {
        let t = host_target("libssl3.so");
        assert_eq!(t.stack, Stack::Nss);
        assert_eq!(t.functions(), ["SSL_ImportFD"]);
        assert_eq!(t.hooks.len(), 1);
        assert_eq!(t.hooks[0].program, "tls_nss_import_fd_ret");
        check_offsets(&t);
    }

    #[test]
    fn debian_libnss3_is_no_target() {
        // The name is watched for Mozilla's folded builds; Debian's libnss3
        // is NSS proper, with neither NSPR's I/O nor SSL_ImportFD.
        let p = Path::new(LIB_DIR).join("libnss3.so");
        assert!(matches!(resolve(&p), Err(TargetError::NoStack { .. })));
    }

    #[test]
    fn every_hook_names_a_program_of_its_stack() {
        let mut t = Targets::default();
        t.discover_host();
        for target in t.all() {
            for h in &target.hooks {
                assert!(
                    stacks::programs_of(target.stack).contains(&h.program),
                    "{} → {} is not among the {} programs",
                    h.function,
                    h.program,
                    target.stack
                );
            }
        }
    }
}
