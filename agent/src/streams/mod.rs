//! Per-connection, per-direction byte streams from TLS chunks.
//!
//! A connection is (tgid, the TLS stack's connection object: `SSL *`, `GnuTLS`
//! session, NSPR descriptor). Chunks of one TLS call arrive in order
//! (one CPU, one ring buffer); a call whose chunks are missing, or whose tail
//! was cut at the capture cap, becomes an explicit gap for the HTTP parser,
//! which marks the message truncated. The table is bounded: idle connections
//! are finished after a timeout (except a WebSocket between turns, whose
//! compression context the next turn needs), the least recently used are finished first
//! when it is full, and every connection of an exiting process is finished.
//! Memory is bounded in all, not only per connection: when the bytes held by
//! every parser pass a budget, the connection holding the most is finished
//! (its exchange marked truncated) and counted.
//!
//! rustls connections are named by the kernel's socket cookie instead of an
//! `SSL *`; their first records may come before that name is known and are
//! held by [`link::Links`] until it is.

mod link;

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
    /// What `parser` held after the last call, for the running total.
    held: usize,
    last_ns: u64,
    out: DirState,
    inb: DirState,
}

/// Outputs of the HTTP layer, with the connection they came from.
pub type StreamOutput = (ConnKey, HttpOutput);

pub struct Streams {
    conns: HashMap<ConnKey, Conn>,
    limits: Limits,
    max_conns: usize,
    /// Budget of bytes held by all parsers together.
    max_held: usize,
    held: usize,
    /// Bytes the parser was told are missing.
    pub gap_bytes: u64,
    /// Connections finished early because the table was full.
    pub evicted: u64,
    /// Chunks skipped on connections known not to carry HTTP (1.x or 2).
    pub skipped_not_http: u64,
    /// Connections finished early because all parsers together held more
    /// than the memory budget.
    pub evicted_for_memory: u64,
    /// rustls records waiting for their connection.
    pub links: link::Links,
}

impl Streams {
    pub fn new(limits: Limits, max_conns: usize, max_held: usize) -> Self {
        Self {
            conns: HashMap::new(),
            limits,
            max_conns,
            max_held,
            held: 0,
            evicted_for_memory: 0,
            gap_bytes: 0,
            evicted: 0,
            skipped_not_http: 0,
            links: link::Links::new(max_held / 4),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn on_chunk(&mut self, c: &TlsChunk, out: &mut Vec<StreamOutput>) {
        if c.flags & (tls_flags::LINK | tls_flags::UNLINKED) != 0 {
            for c in self.links.route(c) {
                self.feed(&c, out);
            }
            return;
        }
        self.feed(c, out);
    }

    fn feed(&mut self, c: &TlsChunk, out: &mut Vec<StreamOutput>) {
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
            held: 0,
            last_ns: c.hdr.ktime_ns,
            out: DirState::default(),
            inb: DirState::default(),
        });
        conn.last_ns = c.hdr.ktime_ns;
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
        let now_held = conn.parser.buffered_bytes();
        self.held = self.held - conn.held + now_held;
        conn.held = now_held;
        if self.held > self.max_held {
            self.evict_largest(c.hdr.ktime_ns, out);
        }
    }

    /// Bytes held by all parsers together.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    fn evict_largest(&mut self, now_ns: u64, out: &mut Vec<StreamOutput>) {
        while self.held > self.max_held {
            let Some(key) = self
                .conns
                .iter()
                .max_by_key(|(_, c)| c.held)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.evicted_for_memory += 1;
            self.finish(key, now_ns, out);
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
            self.held -= c.held;
            for o in c.parser.finish(now_ns) {
                out.push((key, o));
            }
        }
    }

    /// Finishes connections idle for longer than `idle_ns`.
    pub fn expire(&mut self, now_ns: u64, idle_ns: u64, out: &mut Vec<StreamOutput>) {
        for c in self.links.expire(now_ns) {
            self.feed(&c, out);
        }
        let idle: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                now_ns.saturating_sub(c.last_ns) > idle_ns && !c.parser.is_idle_websocket()
            })
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            self.finish(k, now_ns, out);
        }
    }

    /// Finishes every connection of a process that exited.
    pub fn close_process(&mut self, tgid: u32, now_ns: u64, out: &mut Vec<StreamOutput>) {
        for c in self.links.release_process(Some(tgid)) {
            self.feed(&c, out);
        }
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
        for c in self.links.release_process(None) {
            self.feed(&c, out);
        }
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for k in keys {
            self.finish(k, now_ns, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use agent_common::RecordHeader;

    use super::*;

    fn chunk(tgid: u32, ssl: u64, dir: u8, t: u64, data: &[u8]) -> TlsChunk {
        TlsChunk {
            hdr: RecordHeader {
                kind: agent_common::kind::TLS_CHUNK,
                cpu: 0,
                seq: t,
                ktime_ns: t,
                pid_tgid: u64::from(tgid) << 32,
            },
            conn: ssl,
            offset: 0,
            total_len: u32::try_from(data.len()).unwrap(),
            fd: -1,
            dir,
            flags: tls_flags::LAST,
            data: data.to_vec(),
        }
    }

    fn request_head(len: usize) -> Vec<u8> {
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n")
            .into_bytes()
    }

    #[test]
    fn memory_budget_evicts_the_largest_connection() {
        let mut s = Streams::new(Limits::default(), 16, 64 * 1024);
        let mut out = Vec::new();
        // Two connections, each with a request body in progress.
        let mut small = request_head(1_000_000);
        small.extend_from_slice(&[b'a'; 1000]);
        s.on_chunk(&chunk(1, 0xa, dir::WRITE, 1, &small), &mut out);
        let mut big = request_head(1_000_000);
        big.extend_from_slice(&vec![b'b'; 40_000]);
        s.on_chunk(&chunk(1, 0xb, dir::WRITE, 2, &big), &mut out);
        assert_eq!(s.evicted_for_memory, 0);
        assert!(s.held_bytes() > 40_000);
        // The big one grows past the budget: it is finished, not the other.
        s.on_chunk(&chunk(1, 0xb, dir::WRITE, 3, &vec![b'b'; 30_000]), &mut out);
        assert_eq!(s.evicted_for_memory, 1);
        assert_eq!(s.len(), 1);
        assert!(s.held_bytes() <= 64 * 1024);
        let truncated: Vec<_> = out
            .iter()
            .filter_map(|(k, o)| match o {
                HttpOutput::Exchange(e) => Some((k.ssl, e.truncated)),
                HttpOutput::Error(_) => None,
            })
            .collect();
        assert_eq!(truncated, vec![(0xb, true)]);
    }

    #[test]
    fn close_finishes_the_connection() {
        let mut s = Streams::new(Limits::default(), 16, usize::MAX);
        let mut out = Vec::new();
        s.on_chunk(&chunk(1, 0xa, dir::WRITE, 1, &request_head(0)), &mut out);
        let mut close = chunk(1, 0xa, dir::READ, 2, &[]);
        close.flags = tls_flags::CLOSE | tls_flags::LAST;
        s.on_chunk(&close, &mut out);
        assert!(s.is_empty());
        assert_eq!(s.held_bytes(), 0);
        assert!(out
            .iter()
            .any(|(_, o)| matches!(o, HttpOutput::Exchange(e) if e.response.is_none())));
    }

    fn rustls_chunk(tgid: u32, conn: u64, dir: u8, t: u64, flags: u8, data: &[u8]) -> TlsChunk {
        TlsChunk {
            flags: flags | tls_flags::LAST,
            ..chunk(tgid, conn, dir, t, data)
        }
    }

    fn link(tgid: u32, key: u64, conn: u64, t: u64) -> TlsChunk {
        rustls_chunk(
            tgid,
            conn,
            dir::WRITE,
            t,
            tls_flags::LINK,
            &key.to_ne_bytes(),
        )
    }

    fn exchanges(out: &[StreamOutput]) -> Vec<(u64, u16, usize)> {
        out.iter()
            .filter_map(|(k, o)| match o {
                HttpOutput::Exchange(e) => e
                    .response
                    .as_ref()
                    .map(|r| (k.ssl, r.status, e.request.body.len())),
                HttpOutput::Error(_) => None,
            })
            .collect()
    }

    const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    /// A plain-HTTP chunk as agent-ebpf/src/plain.rs sends it: part of one
    /// socket call of `total` bytes, at `offset`.
    fn plain_chunk(
        conn: u64,
        dir: u8,
        t: u64,
        offset: u32,
        total: u32,
        last: bool,
        data: &[u8],
    ) -> TlsChunk {
        TlsChunk {
            offset,
            total_len: total,
            fd: 5,
            flags: tls_flags::PLAIN | if last { tls_flags::LAST } else { 0 },
            ..chunk(7, conn | agent_common::PLAIN_CONN_TAG, dir, t, data)
        }
    }

    #[test]
    fn plain_http_iovec_chunks_make_one_exchange_apart_from_a_tls_stream_of_the_same_cookie() {
        let mut s = Streams::new(Limits::default(), 16, 1 << 20);
        let mut out = Vec::new();
        // A writev of head and body: two chunks of one call.
        let head = request_head(4);
        let total = u32::try_from(head.len() + 4).unwrap();
        let head_len = u32::try_from(head.len()).unwrap();
        s.on_chunk(
            &plain_chunk(42, dir::WRITE, 1, 0, total, false, &head),
            &mut out,
        );
        // A rustls connection of the same process whose socket cookie is
        // 42 too: its own stream.
        s.on_chunk(&chunk(7, 42, dir::WRITE, 2, &request_head(0)), &mut out);
        s.on_chunk(
            &plain_chunk(42, dir::WRITE, 3, head_len, total, true, b"abcd"),
            &mut out,
        );
        assert_eq!(s.len(), 2);
        let resp_len = u32::try_from(RESPONSE.len()).unwrap();
        s.on_chunk(
            &plain_chunk(42, dir::READ, 4, 0, resp_len, true, RESPONSE),
            &mut out,
        );
        assert_eq!(
            exchanges(&out),
            vec![(0x2a | agent_common::PLAIN_CONN_TAG, 200, 4)],
            "the plain request, body whole, with its answer"
        );
        assert_eq!(s.gap_bytes, 0);
        // A call whose bytes the kernel could not copy (sendfile): a marker
        // of its size, a gap for the parser.
        let mut cut = plain_chunk(42, dir::WRITE, 5, 0, 100, true, &[]);
        cut.flags |= tls_flags::TRUNCATED;
        s.on_chunk(&cut, &mut out);
        assert_eq!(s.gap_bytes, 100);
        // The server closed: the plain stream ends, the TLS one stays.
        let mut close = plain_chunk(42, dir::READ, 6, 0, 0, true, &[]);
        close.flags |= tls_flags::CLOSE;
        s.on_chunk(&close, &mut out);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn rustls_records_written_before_their_link_join_the_connection() {
        // The request goes out in two records under the write key 0x7f10
        // before the kernel knew the socket (cookie 42); the LINK follows,
        // then the answer is read on the socket.
        let mut s = Streams::new(Limits::default(), 16, 1 << 20);
        let mut out = Vec::new();
        let mut req = request_head(4);
        let body = req.split_off(10);
        s.on_chunk(
            &rustls_chunk(7, 0x7f10, dir::WRITE, 1, tls_flags::UNLINKED, &req),
            &mut out,
        );
        let mut rest = body;
        rest.extend_from_slice(b"abcd");
        s.on_chunk(
            &rustls_chunk(7, 0x7f10, dir::WRITE, 2, tls_flags::UNLINKED, &rest),
            &mut out,
        );
        assert!(s.is_empty(), "held, not parsed under the key");
        assert_eq!(s.links.held_bytes(), req.len() + rest.len());
        s.on_chunk(&link(7, 0x7f10, 42, 3), &mut out);
        assert_eq!(s.links.held_bytes(), 0);
        s.on_chunk(&rustls_chunk(7, 42, dir::READ, 4, 0, RESPONSE), &mut out);
        assert_eq!(exchanges(&out), vec![(42, 200, 4)]);
        assert_eq!(s.links.released_unlinked, 0);
        assert_eq!(s.links.unused, 0);
    }

    #[test]
    fn a_link_names_the_key_of_its_own_process_only() {
        let mut s = Streams::new(Limits::default(), 16, 1 << 20);
        let mut out = Vec::new();
        let req = request_head(0);
        s.on_chunk(
            &rustls_chunk(7, 0x7f10, dir::WRITE, 1, tls_flags::UNLINKED, &req),
            &mut out,
        );
        // Same key value in another process: nothing of process 7 moves.
        s.on_chunk(&link(8, 0x7f10, 42, 2), &mut out);
        assert_eq!(s.links.unused, 1);
        assert_eq!(s.links.held_bytes(), req.len());
        assert!(s.is_empty());
    }

    #[test]
    fn records_whose_link_never_comes_are_parsed_alone_and_counted() {
        let mut s = Streams::new(Limits::default(), 16, 1 << 20);
        let mut out = Vec::new();
        let req = request_head(0);
        s.on_chunk(
            &rustls_chunk(7, 0x7f10, dir::WRITE, 1, tls_flags::UNLINKED, &req),
            &mut out,
        );
        // Not yet: the wait has not passed.
        s.expire(link::LINK_WAIT_NS, u64::MAX, &mut out);
        assert!(s.is_empty());
        s.expire(link::LINK_WAIT_NS + 2, u64::MAX, &mut out);
        assert_eq!(s.links.released_unlinked, 1);
        assert_eq!(s.links.held_bytes(), 0);
        // Parsed under the key: the request is there, without an answer.
        assert_eq!(s.len(), 1);
        s.finish_all(10, &mut out);
        let reqs: Vec<u64> = out
            .iter()
            .filter_map(|(k, o)| matches!(o, HttpOutput::Exchange(_)).then_some(k.ssl))
            .collect();
        assert_eq!(reqs, vec![0x7f10]);
    }

    #[test]
    fn held_records_are_bounded_oldest_released_first() {
        // Budget 4 * 1000 / 4 = 1000 bytes held.
        let mut s = Streams::new(Limits::default(), 16, 4000);
        let mut out = Vec::new();
        let a = vec![b'a'; 600];
        let b = vec![b'b'; 600];
        s.on_chunk(
            &rustls_chunk(7, 0xa, dir::WRITE, 1, tls_flags::UNLINKED, &a),
            &mut out,
        );
        s.on_chunk(
            &rustls_chunk(7, 0xb, dir::WRITE, 2, tls_flags::UNLINKED, &b),
            &mut out,
        );
        assert_eq!(s.links.released_unlinked, 1, "0xa made room for 0xb");
        assert_eq!(s.links.held_bytes(), 600);
        // The released one went to its own (non-HTTP) stream.
        assert_eq!(s.skipped_not_http + u64::try_from(s.len()).unwrap(), 1);
        s.on_chunk(&link(7, 0xb, 42, 3), &mut out);
        assert_eq!(s.links.held_bytes(), 0);
    }

    #[test]
    fn an_exiting_process_releases_what_it_held() {
        let mut s = Streams::new(Limits::default(), 16, 1 << 20);
        let mut out = Vec::new();
        let req = request_head(0);
        s.on_chunk(
            &rustls_chunk(7, 0x7f10, dir::WRITE, 1, tls_flags::UNLINKED, &req),
            &mut out,
        );
        s.on_chunk(
            &rustls_chunk(9, 0x7f20, dir::WRITE, 1, tls_flags::UNLINKED, &req),
            &mut out,
        );
        s.close_process(7, 5, &mut out);
        assert_eq!(s.links.released_unlinked, 1);
        assert_eq!(s.links.held_bytes(), req.len());
    }
}
