//! The rsyslog the syslog and CEF tests send to: a foreground rsyslogd
//! (Debian `rsyslog` + `rsyslog-gnutls`) with its own config, work
//! directory and pid file in a temp dir, listening on TLS on 127.0.0.1 only.

use std::{
    collections::HashMap,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{
    pki::Pki,
    support::{tail, wait_for},
};

/// A foreground rsyslogd with its own config, work directory, pid file and
/// output files, all under `dir`; no socket but its TLS listener on
/// 127.0.0.1.
pub struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
    /// One JSON object per received message (the template below).
    pub out: PathBuf,
    log: PathBuf,
    conf: PathBuf,
}

fn rsyslogd() -> &'static str {
    for p in ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"] {
        if Path::new(p).is_file() {
            return p;
        }
    }
    panic!("rsyslogd not found: install rsyslog and rsyslog-gnutls (tests/setup-test-deps.sh)");
}

impl Rsyslog {
    /// Starts rsyslog on `port` (0: any free port). Clients must present a
    /// certificate of the test CA named `agent-1` (x509/name).
    pub fn start(dir: &Path, pki: &Pki, port: u16) -> Self {
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let out = dir.join("out.jsonl");
        let conf = dir.join("rsyslog.conf");
        // The template keeps each property rsyslog parsed, as JSON.
        let text = format!(
            r#"global(workDirectory="{work}" maxMessageSize="128k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{ca}"
  defaultNetstreamDriverCertFile="{cert}"
  defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
  StreamDriver.AuthMode="x509/name" PermittedPeer=["agent-1"])
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="time" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
template(name="line" type="list") {{
  constant(value="\n")
}}
ruleset(name="fwd") {{
  action(type="omfile" file="{out}" template="fields")
  action(type="omfile" file="{out}" template="line")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" listenPortFileName="{dir}/port" ruleset="fwd")
*.* action(type="omfile" file="{dir}/internal.log")
"#,
            work = work.display(),
            ca = pki.ca.display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            out = out.display(),
            dir = dir.display(),
        );
        std::fs::write(&conf, text).unwrap();
        let mut r = Self {
            child: None,
            dir: dir.to_owned(),
            port,
            out,
            log: dir.join("rsyslogd.log"),
            conf,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let port_file = self.dir.join("port");
        let _ = std::fs::remove_file(&port_file);
        if self.port != 0 {
            // A restart: listen where the forwarder connects.
            let text = std::fs::read_to_string(&self.conf).unwrap();
            let text = text.replacen(r#"port="0""#, &format!(r#"port="{}""#, self.port), 1);
            std::fs::write(&self.conf, text).unwrap();
        }
        let child = Command::new(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(
                File::options()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            )
            .stderr(
                File::options()
                    .create(true)
                    .append(true)
                    .open(&self.log)
                    .unwrap(),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rsyslogd: {e}"));
        self.child = Some(child);
        let log = self.log.clone();
        let internal = self.dir.join("internal.log");
        let port = wait_for(Duration::from_secs(20), "rsyslog listening", || {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "rsyslogd exited ({status}):\n{}\n{}",
                    tail(&log, 4000),
                    tail(&internal, 4000)
                );
            }
            if self.port != 0 {
                // rsyslog writes the port file only for port 0.
                return std::net::TcpStream::connect(("127.0.0.1", self.port))
                    .ok()
                    .map(|_| self.port);
            }
            std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok())
                .filter(|p| *p != 0)
        });
        assert!(self.port == 0 || self.port == port);
        self.port = port;
    }

    /// Stops it with `signal` (SIGTERM: orderly; SIGKILL: a crash) and
    /// waits for it to exit.
    pub fn stop(&mut self, signal: i32) {
        if let Some(mut c) = self.child.take() {
            let pid = i32::try_from(c.id()).unwrap();
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            unsafe { libc::kill(pid, signal) };
            c.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.spawn();
    }

    /// The messages written so far.
    pub fn received(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    pub fn internal_log(&self) -> String {
        tail(&self.dir.join("internal.log"), 8000)
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The keys that make the forwarder trust the test CA and present the
/// `agent-1` client certificate rsyslog asks for.
pub fn mtls(pki: &Pki) -> String {
    format!(
        "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display(),
    )
}

/// SD params of rsyslog's `structured-data` property, unescaped.
pub fn sd_params(sd: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let inner = sd
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("one SD-ELEMENT: {sd}"));
    let (_, mut rest) = inner.split_once(' ').unwrap_or((inner, ""));
    while !rest.is_empty() {
        let (name, r) = rest.split_once("=\"").unwrap();
        let mut value = String::new();
        let mut end = r.len();
        let mut it = r.char_indices().peekable();
        while let Some((i, c)) = it.next() {
            match c {
                '\\' if matches!(it.peek(), Some((_, '"' | '\\' | ']'))) => {
                    value.push(it.next().unwrap().1);
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(name.trim().to_owned(), value);
        rest = r[end..].trim_start();
    }
    out
}

pub fn wait_received(rs: &Rsyslog, n: usize) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let got = rs.received();
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "rsyslog wrote {} of {n} messages in 30 s; its logs:\n{}\n{}",
            got.len(),
            tail(&rs.log, 4000),
            rs.internal_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
