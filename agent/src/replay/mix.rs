//! Capture fixtures (`tests/fixtures/{llm,h2,mcp,http}/*.cap`) as records,
//! so that a benchmark recording can mix the synthesised agent sessions
//! with the exchanges of every provider the fixtures hold
//! (`aitrail replay --synth --fixtures DIR`).
//!
//! The `.cap` format (tests/fixtures/http/README.md): lines `%% # comment`,
//! `%% out|in <ts_ns> <len>` followed by exactly `<len>` raw bytes and a
//! newline, and `%% gap out|in <len>`. Each file is one TLS connection; here
//! it becomes one process (forked from the same shell as the agents, exec'd
//! as `python3 client.py NAME`) that writes and reads it, then closes it and
//! exits. Gaps are left out: the capture has no record for bytes it lost
//! (the stream parser sees the bytes around them joined), so a fixture with
//! gaps replays as a damaged connection, which the pipeline must count.

use std::path::Path;

use agent_common::{dir, kind, tls_flags};

use super::synth::Gen;
use crate::capture::records::{Record, TlsChunk};

/// One `.cap` file.
#[derive(Clone, Debug)]
pub struct Capture {
    /// File name, without the directory.
    pub name: String,
    pub records: Vec<CapRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CapRecord {
    /// Bytes written (`SSL_write`) or read, at a time in ns.
    Data {
        write: bool,
        ts: u64,
        bytes: Vec<u8>,
    },
    /// Bytes the capture lost.
    Gap { write: bool, len: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum CapError {
    #[error("{name}: byte {at}: {problem}")]
    Format {
        name: String,
        at: usize,
        problem: &'static str,
    },
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Parses one `.cap` file (total: a bad line is an error, never a panic).
pub fn parse(name: &str, raw: &[u8]) -> Result<Capture, CapError> {
    let bad = |at: usize, problem: &'static str| CapError::Format {
        name: name.to_owned(),
        at,
        problem,
    };
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let eol =
            memchr::memchr(b'\n', &raw[pos..]).ok_or_else(|| bad(pos, "line not ended"))? + pos;
        let line = std::str::from_utf8(&raw[pos..eol]).map_err(|_| bad(pos, "line not UTF-8"))?;
        let at = pos;
        pos = eol + 1;
        let fields: Vec<&str> = line.split_whitespace().collect();
        let write = |d: &str| match d {
            "out" => Ok(true),
            "in" => Ok(false),
            _ => Err(bad(at, "direction is neither out nor in")),
        };
        match fields.as_slice() {
            ["%%", "#", ..] => {}
            ["%%", "gap", d, n] => records.push(CapRecord::Gap {
                write: write(d)?,
                len: n.parse().map_err(|_| bad(at, "bad gap length"))?,
            }),
            ["%%", d, ts, n] => {
                let n: usize = n.parse().map_err(|_| bad(at, "bad length"))?;
                let end = pos.checked_add(n).filter(|&e| e < raw.len());
                let end = end.ok_or_else(|| bad(at, "record runs past the end"))?;
                if raw[end] != b'\n' {
                    return Err(bad(end, "record not followed by a newline"));
                }
                records.push(CapRecord::Data {
                    write: write(d)?,
                    ts: ts.parse().map_err(|_| bad(at, "bad timestamp"))?,
                    bytes: raw[pos..end].to_vec(),
                });
                pos = end + 1;
            }
            _ => return Err(bad(at, "not a record line")),
        }
    }
    Ok(Capture {
        name: name.to_owned(),
        records,
    })
}

/// Every `*.cap` file of `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Capture>, CapError> {
    let read_err = |source| CapError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "cap"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let raw = std::fs::read(p).map_err(|source| CapError::Read {
                path: p.display().to_string(),
                source,
            })?;
            let name = p
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            parse(&name, &raw)
        })
        .collect()
}

/// The pid of the process replaying the `i`-th capture (above the agents').
const FIRST_PID: u32 = 200_000;
/// The shell the agents are forked from (see `synth`).
const SHELL_PID: u32 = 1500;

/// Appends the records of one capture: a process of its own that makes the
/// connection, its TLS calls at the capture's relative times, a close, an
/// exit.
pub(super) fn emit(g: &mut Gen, c: &Capture, i: usize) {
    let pid = FIRST_PID + u32::try_from(i).unwrap_or(u32::MAX - FIRST_PID);
    let conn = 0x7f20_0000_0000 | (u64::from(pid) << 8);
    g.fork(SHELL_PID, pid);
    g.advance_ms(2);
    g.exec(
        pid,
        SHELL_PID,
        "python3",
        "/usr/bin/python3",
        &["python3", "client.py", &c.name],
    );
    g.advance_ms(20);
    let base = g.t;
    let first = c
        .records
        .iter()
        .find_map(|r| match r {
            CapRecord::Data { ts, .. } => Some(*ts),
            CapRecord::Gap { .. } => None,
        })
        .unwrap_or(0);
    for r in &c.records {
        if let CapRecord::Data { write, ts, bytes } = r {
            g.t = g.t.max(base + ts.saturating_sub(first));
            let d = if *write { dir::WRITE } else { dir::READ };
            g.ssl_call(pid, conn, d, bytes);
        }
    }
    g.advance_ms(1);
    let hdr = g.hdr(kind::TLS_CHUNK, pid);
    g.out.push(Record::Tls(TlsChunk {
        hdr,
        conn,
        offset: 0,
        total_len: 0,
        fd: 5,
        dir: dir::READ,
        flags: tls_flags::CLOSE | tls_flags::LAST,
        data: Vec::new(),
    }));
    g.advance_ms(2);
    g.exit(pid);
    g.advance_ms(50);
}
