//! `aitrail agent -- COMMAND…`: run a command inside the capture scope.
//!
//! The command is forked at once but held before its exec until the probes
//! are attached, so nothing it does escapes capture, and the daemon stops
//! (draining what is in flight) when it exits. Under sudo, the command runs
//! as the invoking user (`SUDO_UID`/`SUDO_GID`), not as root.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    process::ExitStatus,
};

use nix::{
    sys::{
        signal::{kill, Signal},
        wait::{waitpid, WaitStatus},
    },
    unistd::Pid,
};

/// A command forked and waiting at the gate.
pub struct Gated {
    pid: Pid,
    /// The program it will exec, resolved on PATH.
    program: std::path::PathBuf,
    gate: Option<OwnedFd>,
    reaped: bool,
}

/// Forks `argv`; the child waits until [`Gated::release`], then execs it.
///
/// `std::process::Command` cannot do this: its `spawn` waits for the child's
/// exec, and a child held before exec never gets there.
pub fn spawn_gated(argv: &[String]) -> io::Result<Gated> {
    if argv.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
    }
    // Everything the child needs is made before the fork: after it, the
    // child may only call async-signal-safe functions.
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in the command"))?;
    let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // Resolve the program now, so that a missing one is an error here.
    let program = resolve_program(&argv[0])?;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (r, w) = (read_end.as_raw_fd(), write_end.as_raw_fd());
    let ids = sudo_ids();
    // SAFETY: the child runs only async-signal-safe calls (close, read,
    // setgroups, setgid, setuid, execv, _exit) on data made before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; this branch never returns.
        unsafe {
            libc::close(w);
            let mut b = 0u8;
            // Returns when the daemon writes a byte, or exits (EOF).
            loop {
                let n = libc::read(r, (&raw mut b).cast(), 1);
                if n == 1 {
                    break;
                }
                if n == 0 || *libc::__errno_location() != libc::EINTR {
                    libc::_exit(126);
                }
            }
            libc::close(r);
            if let Some((uid, gid)) = ids {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    libc::_exit(126);
                }
            }
            libc::execv(program.as_ptr(), ptrs.as_ptr());
            libc::_exit(127);
        }
    }
    drop(read_end);
    Ok(Gated {
        pid: Pid::from_raw(pid),
        program: std::path::PathBuf::from(std::ffi::OsStr::from_bytes(program.as_bytes())),
        gate: Some(write_end),
        reaped: false,
    })
}

/// The program's path: as given when it has a slash, else the first
/// executable of that name on PATH.
fn resolve_program(name: &str) -> io::Result<CString> {
    use std::os::unix::fs::PermissionsExt;
    let found = if name.contains('/') {
        Some(std::path::PathBuf::from(name))
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    };
    let found = found.filter(|p| p.exists()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name}: command not found"),
        )
    })?;
    CString::new(found.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in the path"))
}

/// The invoking user under sudo, when the daemon itself is root.
fn sudo_ids() -> Option<(libc::uid_t, libc::gid_t)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    (uid != 0).then_some((uid, gid))
}

impl Gated {
    pub fn pid(&self) -> u32 {
        u32::try_from(self.pid.as_raw()).unwrap_or(0)
    }

    /// The program the command will exec.
    pub fn program(&self) -> &std::path::Path {
        &self.program
    }

    /// Lets the command run.
    pub fn release(&mut self) {
        if let Some(gate) = self.gate.take() {
            // SAFETY: writes one byte to the pipe we own, then closes it.
            unsafe { libc::write(gate.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
    }

    /// Releases the command if needed and waits for it to end.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        self.release();
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => {
                    self.reaped = true;
                    return Ok(ExitStatus::from_raw((code & 0xff) << 8));
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    self.reaped = true;
                    return Ok(ExitStatus::from_raw(sig as i32));
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Drop for Gated {
    /// A command never released (the daemon failed to start) is killed, not
    /// let run unwatched.
    fn drop(&mut self) {
        if self.gate.is_some() && !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn the_command_waits_at_the_gate() {
        let dir = std::env::temp_dir().join(format!("aitrail-gate-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let mut g = spawn_gated(&[
            "sh".into(),
            "-c".into(),
            format!("echo ran > {}", dir.display()),
        ])
        .expect("spawn");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!dir.exists(), "the command ran before release");
        g.release();
        let t = Instant::now();
        let status = g.wait().expect("wait");
        drop(g);
        assert!(status.success());
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(std::fs::read_to_string(&dir).unwrap().trim(), "ran");
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn a_command_never_released_is_killed() {
        let g = spawn_gated(&["sleep".into(), "30".into()]).expect("spawn");
        let pid = g.pid();
        drop(g);
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "the held command still runs");
    }

    #[test]
    fn empty_and_missing_commands_are_errors() {
        assert!(spawn_gated(&[]).is_err());
        assert!(spawn_gated(&["/nonexistent/aitrail-test".into()]).is_err());
    }
}
