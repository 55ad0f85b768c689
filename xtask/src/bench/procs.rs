//! The processes of a bench run: workloads, the daemon under test, and
//! helpers that must not outlive the run.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{net::UnixDatagram, process::ExitStatusExt as _},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::{Env, Sample};
use crate::util;

/// Children killed and reaped when the bench ends, even on error.
#[derive(Default)]
pub(super) struct Guards(pub(super) Vec<Child>);

impl Drop for Guards {
    fn drop(&mut self) {
        for c in &mut self.0 {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

/// A workload process, stopped at its `ready` line.
pub(super) struct Load {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    reaped: bool,
}

impl Load {
    pub(super) fn start(cmd: &mut Command) -> anyhow::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", util::show(cmd)))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut load = Self {
            child,
            stdin,
            stdout,
            reaped: false,
        };
        let line = load.line()?;
        if line.trim() != "ready" {
            bail!("workload said {line:?} instead of `ready`");
        }
        Ok(load)
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .context("read from the workload")?;
        if line.is_empty() {
            bail!("the workload ended early");
        }
        Ok(line)
    }

    /// Starts the loop; returns its sample once the process has exited.
    pub(super) fn go(&mut self) -> anyhow::Result<Sample> {
        writeln!(self.stdin, "go").context("tell the workload to go")?;
        self.stdin.flush().ok();
        let line = self.line()?;
        let v: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("workload result {line:?}"))?;
        let (status, proc_cpu_s) = self.wait4()?;
        if !status.success() {
            bail!("workload failed: {status}");
        }
        Ok(Sample {
            ops: v["ops"].as_u64().context("no ops")?,
            loop_cpu_s: v["cpu_s"].as_f64().context("no cpu_s")?,
            loop_wall_s: v["wall_s"].as_f64().context("no wall_s")?,
            proc_cpu_s,
        })
    }

    /// Reaps the process with `wait4`, for its rusage (std's `wait` drops it).
    fn wait4(&mut self) -> anyhow::Result<(ExitStatus, f64)> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid")?;
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our unreaped child; status and ru are valid for writes.
        let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut ru) };
        if r != pid {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        self.reaped = true;
        #[expect(
            clippy::cast_precision_loss,
            reason = "CPU seconds and µs are far below 2^52"
        )]
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok((
            ExitStatus::from_raw(status),
            tv(ru.ru_utime) + tv(ru.ru_stime),
        ))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if !self.reaped {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// The daemon under test, started scoped and ready (probes attached).
pub(super) struct Daemon {
    child: Child,
    pub(super) events: PathBuf,
    log: PathBuf,
    stopped: bool,
}

impl Daemon {
    #[expect(
        clippy::duration_suboptimal_units,
        reason = "from_mins needs Rust 1.91; rust-version is 1.87"
    )]
    const READY_TIMEOUT: Duration = Duration::from_secs(120);
    #[expect(
        clippy::duration_suboptimal_units,
        reason = "from_mins needs Rust 1.91; rust-version is 1.87"
    )]
    const STOP_TIMEOUT: Duration = Duration::from_secs(60);

    pub(super) fn start(env: &Env, scope_pid: u32) -> anyhow::Result<Self> {
        let n = env.runs;
        let sock_path = env.dir.join(format!("notify-{n}.sock"));
        let events = env.dir.join(format!("events-{n}.ndjson"));
        let log = env.dir.join(format!("daemon-{n}.log"));
        fs::remove_file(&sock_path).ok();
        let sock = UnixDatagram::bind(&sock_path)
            .with_context(|| format!("bind {}", sock_path.display()))?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let log_file =
            fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new(&env.daemon);
        cmd.args(["agent", "--pid", &scope_pid.to_string()])
            .arg("--sink")
            .arg(format!("file:{}", events.display()))
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", util::show(&cmd)))?;
        let mut daemon = Self {
            child,
            events,
            log,
            stopped: false,
        };
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match sock.recv(&mut buf) {
                Ok(n)
                    if String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == "READY=1") =>
                {
                    break
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e).context("read the notify socket"),
            }
            if let Some(status) = daemon.child.try_wait()? {
                daemon.stopped = true;
                bail!(
                    "the daemon exited before READY=1 ({status}); `{}`; its log:\n{}",
                    util::show(&cmd),
                    daemon.log_tail()
                );
            }
            if start.elapsed() > Self::READY_TIMEOUT {
                bail!(
                    "no READY=1 from the daemon within {:?}; its log:\n{}",
                    Self::READY_TIMEOUT,
                    daemon.log_tail()
                );
            }
        }
        fs::remove_file(&sock_path).ok();
        Ok(daemon)
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn status_field(&self, name: &str) -> anyhow::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in /proc/PID/status"))
    }

    pub(super) fn vm_hwm_kib(&self) -> anyhow::Result<u64> {
        self.status_field("VmHWM:")
    }

    /// user+sys of the daemon so far, from /proc/PID/stat.
    pub(super) fn cpu_s(&self) -> anyhow::Result<f64> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command (which may hold spaces) start at state.
        let after = stat.rsplit_once(')').context("bad /proc/PID/stat")?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?; // utime, stime
                                                                        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        #[expect(clippy::cast_precision_loss, reason = "tick counts are far below 2^52")]
        Ok(ticks as f64 / hz as f64)
    }

    pub(super) fn stop(mut self) -> anyhow::Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("pid")?;
        // SAFETY: pid is our child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if start.elapsed() > Self::STOP_TIMEOUT {
                bail!(
                    "the daemon did not stop within {:?} of SIGTERM",
                    Self::STOP_TIMEOUT
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.stopped = true;
        if !status.success() {
            bail!(
                "the daemon exited with {status} after SIGTERM; its log:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.stopped {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}
