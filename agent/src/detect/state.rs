//! Bounded state: every map the detector keeps is capped, and what it
//! forgets to stay under the cap is counted (`evicted.*` counters), so a
//! host with many traces costs bounded memory and the loss is visible.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{BuildHasher, Hash, Hasher},
};

/// A map that forgets its least recently used entries when full: an eighth
/// of them at once, so eviction costs O(1) amortised per insert.
pub struct Bounded<K, V> {
    map: HashMap<K, (V, u64)>,
    tick: u64,
    cap: usize,
    pub evicted: u64,
}

impl<K: Hash + Eq + Clone, V> Bounded<K, V> {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            tick: 0,
            cap: cap.max(1),
            evicted: 0,
        }
    }

    pub fn get_or_insert_with(&mut self, k: K, f: impl FnOnce() -> V) -> &mut V {
        self.tick += 1;
        if !self.map.contains_key(&k) && self.map.len() >= self.cap {
            self.evict();
        }
        let tick = self.tick;
        let slot = self.map.entry(k).or_insert_with(|| (f(), tick));
        slot.1 = tick;
        &mut slot.0
    }

    pub fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn evict(&mut self) {
        let n = (self.cap / 8).max(1);
        let mut ticks: Vec<u64> = self.map.values().map(|(_, t)| *t).collect();
        let (_, &mut cut, _) = ticks.select_nth_unstable(n - 1);
        let before = self.map.len();
        self.map.retain(|_, (_, t)| *t > cut);
        self.evicted += (before - self.map.len()) as u64;
    }
}

/// A set of hashes that forgets its oldest members when full.
pub struct SeenSet {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    cap: usize,
    pub evicted: u64,
}

impl SeenSet {
    pub fn new(cap: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            evicted: 0,
        }
    }

    /// Adds `h`; whether it was new.
    pub fn insert(&mut self, h: u64) -> bool {
        if !self.set.insert(h) {
            return false;
        }
        self.order.push_back(h);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
                self.evicted += 1;
            }
        }
        true
    }

    pub fn contains(&self, h: u64) -> bool {
        self.set.contains(&h)
    }
}

/// Hash of a few strings, stable within one run of the daemon (it keys
/// in-memory state only, never anything stored).
pub fn hash(parts: &[&str]) -> u64 {
    static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = SEED.get_or_init(Default::default).build_hasher();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// A sequence rule part-way through: steps done so far in one trace.
pub struct Partial {
    pub rule: usize,
    /// Index of the next step to satisfy.
    pub next: usize,
    pub started: f64,
    /// Event ids of the steps done, in order.
    pub evidence: Vec<String>,
}

/// Sequences in progress per trace.
pub const MAX_PARTIALS: usize = 32;
/// Distinct repeated outputs / tool calls counted per trace.
pub const MAX_LOOP_KEYS: usize = 512;

/// What the detector remembers of one trace.
pub struct TraceState {
    /// Texts already scanned (role + content hashes): `llm.messages` repeats
    /// the whole history every turn.
    pub seen: SeenSet,
    /// Destinations (`address:port`) connected to.
    pub dests: SeenSet,
    pub partials: Vec<Partial>,
    /// Output / tool call hash → (times seen, first event id).
    pub loops: Bounded<u64, (u32, String)>,
    pub evicted_partials: u64,
}

impl TraceState {
    pub fn new(max_seen: usize) -> Self {
        Self {
            seen: SeenSet::new(max_seen),
            dests: SeenSet::new(max_seen),
            partials: Vec::new(),
            loops: Bounded::new(MAX_LOOP_KEYS),
            evicted_partials: 0,
        }
    }

    pub fn evictions(&self) -> u64 {
        self.seen.evicted + self.dests.evicted + self.loops.evicted + self.evicted_partials
    }
}

/// Seconds since the epoch of an RFC 3339 time; `None` if unparsable.
pub fn seconds(time: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(time).ok()?;
    #[expect(clippy::cast_precision_loss, reason = "seconds fit f64 for millennia")]
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_evicts_least_recent_and_counts() {
        let mut b: Bounded<u32, u32> = Bounded::new(8);
        for i in 0..8 {
            *b.get_or_insert_with(i, || i) += 1;
        }
        // Touch 0 so that 1 is the oldest.
        b.get_or_insert_with(0, || 0);
        b.get_or_insert_with(100, || 0);
        assert_eq!(b.evicted, 1);
        assert!(b.contains(&0));
        assert!(!b.contains(&1));
        assert_eq!(b.len(), 8);
    }

    #[test]
    fn seen_set_forgets_oldest() {
        let mut s = SeenSet::new(2);
        assert!(s.insert(1));
        assert!(!s.insert(1));
        assert!(s.insert(2));
        assert!(s.insert(3));
        assert_eq!(s.evicted, 1);
        assert!(!s.contains(1));
        assert!(s.contains(3));
    }

    #[test]
    fn parses_times() {
        let a = seconds("2025-01-01T00:00:00.500000000Z").unwrap();
        let b = seconds("2025-01-01T00:05:00Z").unwrap();
        assert!((b - a - 299.5).abs() < 1e-6);
        assert!(seconds("nope").is_none());
    }
}
