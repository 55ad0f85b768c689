//! Per-connection, per-direction byte streams from TLS chunks.
//!
//! A connection is (tgid, `SSL *`). Chunks of one SSL call arrive in order
//! (one CPU, one ring buffer); a call whose chunks are missing, or whose tail
//! was cut at the capture cap, becomes an explicit gap for the HTTP parser,
//! which marks the message truncated. The table is bounded: idle connections
//! are finished after a timeout, the least recently used are finished first
//! when it is full, and every connection of an exiting process is finished.

use std::collections::HashMap;

use agent_common::{dir, tls_flags};

use crate::{
    capture::records::TlsChunk,
    http::{Direction, HttpOutput, HttpParser, Limits},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub ssl: u64,
}

#[derive(Default)]
struct DirState {
    /// Next offset expected inside the current call, when a call is open.
    next_offset: Option<u32>,
    total: u32,
}

struct Conn {
    parser: HttpParser,
    last_ns: u64,
    out: DirState,
    inb: DirState,
    fd: i32,
}

/// Outputs of the HTTP layer, with the connection they came from.
pub type StreamOutput = (ConnKey, HttpOutput);

pub struct Streams {
    conns: HashMap<ConnKey, Conn>,
    limits: Limits,
    max_conns: usize,
    /// Bytes the parser was told are missing.
    pub gap_bytes: u64,
    /// Connections finished early because the table was full.
    pub evicted: u64,
    /// Chunks skipped on connections known not to carry HTTP/1.
    pub skipped_not_http: u64,
}

impl Streams {
    pub fn new(limits: Limits, max_conns: usize) -> Self {
        Self {
            conns: HashMap::new(),
            limits,
            max_conns,
            gap_bytes: 0,
            evicted: 0,
            skipped_not_http: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// The socket fd learned for a connection, if any.
    pub fn fd(&self, key: ConnKey) -> Option<i32> {
        self.conns.get(&key).map(|c| c.fd).filter(|fd| *fd >= 0)
    }

    pub fn on_chunk(&mut self, c: &TlsChunk, out: &mut Vec<StreamOutput>) {
        let key = ConnKey {
            tgid: (c.hdr.pid_tgid >> 32) as u32,
            ssl: c.conn,
        };
        if !self.conns.contains_key(&key) && self.conns.len() >= self.max_conns {
            self.evict_oldest(c.hdr.ktime_ns, out);
        }
        let limits = self.limits;
        let conn = self.conns.entry(key).or_insert_with(|| Conn {
            parser: HttpParser::new(limits),
            last_ns: c.hdr.ktime_ns,
            out: DirState::default(),
            inb: DirState::default(),
            fd: -1,
        });
        conn.last_ns = c.hdr.ktime_ns;
        if c.fd >= 0 {
            conn.fd = c.fd;
        }
        if c.flags & tls_flags::CLOSE != 0 {
            self.finish(key, c.hdr.ktime_ns, out);
            return;
        }
        if !conn.parser.is_http() {
            self.skipped_not_http += 1;
            return;
        }
        let (d, st) = if c.dir == dir::WRITE {
            (Direction::Outbound, &mut conn.out)
        } else {
            (Direction::Inbound, &mut conn.inb)
        };
        // Gaps: the rest of an earlier call that never came, or a hole in
        // this one.
        let mut missing: u64 = 0;
        match st.next_offset {
            Some(next) if c.offset == 0 => missing += u64::from(st.total.saturating_sub(next)),
            Some(next) if c.offset > next => missing += u64::from(c.offset - next),
            None if c.offset > 0 => missing += u64::from(c.offset),
            _ => {}
        }
        if missing > 0 {
            self.gap_bytes += missing;
            for o in conn.parser.gap(d, missing) {
                out.push((key, o));
            }
        }
        if c.flags & tls_flags::READ_FAILED != 0 {
            let n = c.data.len() as u64;
            self.gap_bytes += n;
            for o in conn.parser.gap(d, n) {
                out.push((key, o));
            }
        } else {
            for o in conn.parser.feed(d, c.hdr.ktime_ns, &c.data) {
                out.push((key, o));
            }
        }
        let end = c
            .offset
            .saturating_add(u32::try_from(c.data.len()).unwrap_or(u32::MAX));
        if c.flags & tls_flags::LAST != 0 {
            st.next_offset = None;
            if c.flags & tls_flags::TRUNCATED != 0 {
                let cut = u64::from(c.total_len.saturating_sub(end));
                if cut > 0 {
                    self.gap_bytes += cut;
                    for o in conn.parser.gap(d, cut) {
                        out.push((key, o));
                    }
                }
            }
        } else {
            st.next_offset = Some(end);
            st.total = c.total_len;
        }
    }

    fn evict_oldest(&mut self, now_ns: u64, out: &mut Vec<StreamOutput>) {
        if let Some(key) = self
            .conns
            .iter()
            .min_by_key(|(_, c)| c.last_ns)
            .map(|(k, _)| *k)
        {
            self.evicted += 1;
            self.finish(key, now_ns, out);
        }
    }

    fn finish(&mut self, key: ConnKey, now_ns: u64, out: &mut Vec<StreamOutput>) {
        if let Some(mut c) = self.conns.remove(&key) {
            for o in c.parser.finish(now_ns) {
                out.push((key, o));
            }
        }
    }

    /// Finishes connections idle for longer than `idle_ns`.
    pub fn expire(&mut self, now_ns: u64, idle_ns: u64, out: &mut Vec<StreamOutput>) {
        let idle: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| now_ns.saturating_sub(c.last_ns) > idle_ns)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            self.finish(k, now_ns, out);
        }
    }

    /// Finishes every connection of a process that exited.
    pub fn close_process(&mut self, tgid: u32, now_ns: u64, out: &mut Vec<StreamOutput>) {
        let keys: Vec<ConnKey> = self
            .conns
            .keys()
            .filter(|k| k.tgid == tgid)
            .copied()
            .collect();
        for k in keys {
            self.finish(k, now_ns, out);
        }
    }

    pub fn finish_all(&mut self, now_ns: u64, out: &mut Vec<StreamOutput>) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for k in keys {
            self.finish(k, now_ns, out);
        }
    }
}
