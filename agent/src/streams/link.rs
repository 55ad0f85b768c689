//! rustls records written before their socket was known.
//!
//! The kernel ties a rustls write key to its connection at the first send
//! that follows its first record (agent-ebpf/src/tls_rustls.rs), so the
//! first records of a connection — the HTTP/2 preface and the request —
//! arrive `UNLINKED`, carrying the key instead of the connection, and a
//! `LINK` record naming both follows within microseconds. They are held
//! here until then and fed as the connection's own. Held bytes are bounded;
//! records whose link does not come in time (or that overflow the bound)
//! are fed under their key alone, which parses the request without its
//! answer, and are counted.

use std::collections::HashMap;

use agent_common::tls_flags;

use crate::capture::records::TlsChunk;

/// How long records wait for their link.
pub const LINK_WAIT_NS: u64 = 2_000_000_000;

#[derive(Default)]
struct Held {
    first_ns: u64,
    chunks: Vec<TlsChunk>,
}

pub struct Links {
    held: HashMap<(u32, u64), Held>,
    bytes: usize,
    max_bytes: usize,
    /// Chunks fed without their link (it came late, or never).
    pub released_unlinked: u64,
    /// `LINK` records that found nothing held (the key's records were all
    /// released already, or it had none).
    pub unused: u64,
}

fn tgid(c: &TlsChunk) -> u32 {
    (c.hdr.pid_tgid >> 32) as u32
}

impl Links {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            held: HashMap::new(),
            bytes: 0,
            max_bytes,
            released_unlinked: 0,
            unused: 0,
        }
    }

    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Takes an `UNLINKED` or `LINK` chunk; returns the chunks to feed now,
    /// in order.
    pub fn route(&mut self, c: &TlsChunk) -> Vec<TlsChunk> {
        if c.flags & tls_flags::LINK != 0 {
            let Some(key) = c.data.get(..8).and_then(|b| b.try_into().ok()) else {
                return Vec::new();
            };
            let key = u64::from_ne_bytes(key);
            let Some(held) = self.held.remove(&(tgid(c), key)) else {
                self.unused += 1;
                return Vec::new();
            };
            return held
                .chunks
                .into_iter()
                .map(|mut h| {
                    self.bytes -= h.data.len();
                    h.conn = c.conn;
                    h.flags &= !tls_flags::UNLINKED;
                    h
                })
                .collect();
        }
        let mut out = Vec::new();
        while self.bytes + c.data.len() > self.max_bytes && !self.held.is_empty() {
            let oldest = self
                .held
                .iter()
                .min_by_key(|(_, h)| h.first_ns)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                out.extend(self.release(k));
            }
        }
        let h = self.held.entry((tgid(c), c.conn)).or_default();
        if h.chunks.is_empty() {
            h.first_ns = c.hdr.ktime_ns;
        }
        self.bytes += c.data.len();
        h.chunks.push(c.clone());
        out
    }

    fn release(&mut self, key: (u32, u64)) -> Vec<TlsChunk> {
        let Some(held) = self.held.remove(&key) else {
            return Vec::new();
        };
        self.released_unlinked += held.chunks.len() as u64;
        held.chunks
            .into_iter()
            .map(|mut h| {
                self.bytes -= h.data.len();
                h.flags &= !tls_flags::UNLINKED;
                h
            })
            .collect()
    }

    /// Releases what waited longer than [`LINK_WAIT_NS`].
    pub fn expire(&mut self, now_ns: u64) -> Vec<TlsChunk> {
        let old: Vec<(u32, u64)> = self
            .held
            .iter()
            .filter(|(_, h)| now_ns.saturating_sub(h.first_ns) > LINK_WAIT_NS)
            .map(|(k, _)| *k)
            .collect();
        old.into_iter().flat_map(|k| self.release(k)).collect()
    }

    /// Releases everything of a process that exited (or of all, `None`).
    pub fn release_process(&mut self, tgid: Option<u32>) -> Vec<TlsChunk> {
        let keys: Vec<(u32, u64)> = self
            .held
            .keys()
            .filter(|k| tgid.is_none_or(|t| k.0 == t))
            .copied()
            .collect();
        keys.into_iter().flat_map(|k| self.release(k)).collect()
    }
}
