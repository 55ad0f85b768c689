//! Event envelopes: ids, clocks, host identity.

use std::fs;

use crate::event::{Event, Host, ProcessInfo, Severity, SCHEMA_VERSION};

/// Makes event envelopes: unique ids, wall-clock times from the kernel's
/// boot-time clock, the host's identity.
#[derive(Clone, Debug)]
pub struct Envelope {
    host: Host,
    /// wall-clock ns minus boot-time ns, measured at start.
    boot_to_wall_ns: i128,
}

impl Default for Envelope {
    fn default() -> Self {
        Self::new()
    }
}

impl Envelope {
    pub fn new() -> Self {
        let name = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        let id = fs::read_to_string("/etc/machine-id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self {
            host: Host { name, id },
            boot_to_wall_ns: wall_ns() - i128::from(boot_ns()),
        }
    }

    /// An envelope for events of a recorded host: its identity and its
    /// clock offset as they were, so replayed times are the original ones.
    pub fn replayed(host: Host, boot_to_wall_ns: i128) -> Self {
        Self {
            host,
            boot_to_wall_ns,
        }
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Wall-clock ns minus boot-time ns, as measured at start.
    pub fn boot_to_wall_ns(&self) -> i128 {
        self.boot_to_wall_ns
    }

    /// RFC 3339 UTC time with nanoseconds of a boot-time timestamp.
    pub fn time_of(&self, ktime_ns: u64) -> String {
        let wall = i128::from(ktime_ns) + self.boot_to_wall_ns;
        let secs = i64::try_from(wall.div_euclid(1_000_000_000)).unwrap_or(0);
        let nanos = u32::try_from(wall.rem_euclid(1_000_000_000)).unwrap_or(0);
        chrono::DateTime::from_timestamp(secs, nanos)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    }

    /// A new event of `kind` at `ktime_ns`, in a trace and span of its own
    /// until the correlator places it.
    pub fn event(&self, kind: &str, ktime_ns: u64, process: Option<ProcessInfo>) -> Event {
        Event {
            v: SCHEMA_VERSION,
            id: uuid::Uuid::now_v7().simple().to_string(),
            time: self.time_of(ktime_ns),
            kind: kind.to_owned(),
            host: self.host.clone(),
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            parent_span_id: None,
            severity: Severity::Info,
            process,
            ..Event::default()
        }
    }
}

/// 32 hex digits.
pub fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// 16 hex digits.
pub fn new_span_id() -> String {
    let u = uuid::Uuid::new_v4();
    hex::encode(&u.as_bytes()[..8])
}

/// The kernel's boot-time clock (`bpf_ktime_get_boot_ns`), in ns.
pub fn boot_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

fn wall_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_times() {
        let env = Envelope::new();
        let e = env.event("file.open", boot_ns(), None);
        assert_eq!(e.trace_id.len(), 32);
        assert_eq!(e.span_id.len(), 16);
        assert!(e.time.ends_with('Z'), "{}", e.time);
        let year: i32 = e.time[..4].parse().unwrap();
        assert!(year >= 2024);
        assert_ne!(env.event("x", 0, None).id, e.id);
    }
}
