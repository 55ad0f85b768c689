//! Where the pipeline thread's time goes, stage by stage, for
//! `aitrail replay --bench`.
//!
//! Off in the daemon: a [`StageClock`] that was never enabled reads no clock
//! and costs one branch per stage. Enabled, each change of stage reads the
//! monotonic clock (vDSO, tens of ns; some 30 per LLM call), so a stage's
//! figure is the thread's wall time inside it: pure computation such as
//! HTTP parsing and decoding is its CPU time unless the thread was
//! preempted (which only makes the figure worse), while `deliver` also
//! holds the waits on a full channel to the sinks. The thread's CPU clock
//! would not count those waits, but reading it is a system call (~1 µs
//! here), which at one per TLS chunk distorted the figures it measured.

use std::time::{Duration, Instant};

/// The pipeline's stages, in the order a captured byte goes through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Record bookkeeping outside the stages below: sequence gaps, the
    /// process table, process and file events built from records.
    Records,
    /// TLS chunks into connection streams; HTTP/1, HTTP/2, SSE and
    /// WebSocket framing into exchanges.
    Http,
    /// An exchange into an LLM call or MCP exchange (provider decoders).
    Decode,
    /// LLM and MCP calls into traces: tool calls, turns, linked effects.
    Correlate,
    /// Detection rules over each event.
    Detect,
    /// Secrets out of each event and finding.
    Redact,
    /// Routing and handing each event to the sinks.
    Deliver,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Records,
        Stage::Http,
        Stage::Decode,
        Stage::Correlate,
        Stage::Detect,
        Stage::Redact,
        Stage::Deliver,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Stage::Records => "records",
            Stage::Http => "http",
            Stage::Decode => "decode",
            Stage::Correlate => "correlate",
            Stage::Detect => "detect",
            Stage::Redact => "redact",
            Stage::Deliver => "deliver",
        }
    }
}

/// Time spent in each [`Stage`], when enabled. Stages nest (an event is
/// detected inside the decoding of the record that made it): time is
/// charged to the innermost stage only, so the figures add up.
#[derive(Clone, Debug, Default)]
pub struct StageClock {
    enabled: bool,
    spent: [Duration; Stage::ALL.len()],
    /// The stages entered and not left, innermost last.
    stack: Vec<Stage>,
    /// When the innermost stage last began to be charged.
    mark: Option<Instant>,
}

impl StageClock {
    pub fn enable(&mut self) {
        self.enabled = true;
    }

    /// Enters `stage`: the stage it is nested in stops being charged.
    #[inline]
    pub fn enter(&mut self, stage: Stage) {
        if self.enabled {
            self.charge();
            self.stack.push(stage);
        }
    }

    /// Leaves the innermost stage: the one around it is charged again.
    #[inline]
    pub fn leave(&mut self) {
        if self.enabled {
            self.charge();
            self.stack.pop();
        }
    }

    fn charge(&mut self) {
        let now = Instant::now();
        if let (Some(&top), Some(mark)) = (self.stack.last(), self.mark) {
            self.spent[top as usize] += now - mark;
        }
        self.mark = Some(now);
    }

    /// Time per stage, in [`Stage::ALL`] order; empty when timing was off.
    pub fn spent(&self) -> Vec<(Stage, Duration)> {
        if !self.enabled {
            return Vec::new();
        }
        Stage::ALL
            .iter()
            .map(|&s| (s, self.spent[s as usize]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spent(c: &StageClock, stage: Stage) -> Duration {
        c.spent()
            .into_iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, d)| d)
            .unwrap_or_default()
    }

    #[test]
    fn off_it_reports_nothing() {
        let mut c = StageClock::default();
        c.enter(Stage::Http);
        c.leave();
        assert!(c.spent().is_empty());
        assert!(c.mark.is_none(), "no clock read");
    }

    #[test]
    fn time_goes_to_the_innermost_stage() {
        let ms = Duration::from_millis;
        let mut c = StageClock::default();
        c.enable();
        c.enter(Stage::Decode);
        std::thread::sleep(ms(2));
        c.enter(Stage::Detect);
        std::thread::sleep(ms(100));
        c.leave();
        std::thread::sleep(ms(2));
        c.leave();
        // Outside every stage: not charged.
        std::thread::sleep(ms(20));
        let (decode, detect) = (spent(&c, Stage::Decode), spent(&c, Stage::Detect));
        assert!(detect >= ms(100), "{detect:?}");
        // Decode's own 4 ms, without detect's 100 (however late sleeps wake).
        assert!(decode >= ms(4) && decode < ms(100), "{decode:?}");
        assert_eq!(spent(&c, Stage::Http), Duration::ZERO);
        assert_eq!(c.spent().len(), Stage::ALL.len());
    }
}
