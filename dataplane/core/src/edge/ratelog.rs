//! Rate-limited logging: a flood must not turn into a flood of log lines
//! (disk, journald, the operator's terminal).
//!
//! Each kind of message has a budget of lines per window; beyond it lines
//! are counted, not written, and the first line of the next window says
//! how many were suppressed.
use std::time::{Duration, Instant};

/// One kind of message's budget.
#[derive(Debug)]
pub struct RateLog {
    per_window: u32,
    window: Duration,
    start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl RateLog {
    /// At most `per_window` lines each `window`.
    pub const fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be written now: `Some(n)` with the lines
    /// suppressed since the last one written (say so in the line), or
    /// `None` (the line is counted as suppressed).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window)
        {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used >= self.per_window {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// ` (N similar lines suppressed)`, or nothing for 0.
pub fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar lines suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_budget_are_counted_then_reported() {
        let mut r = RateLog::new(3, Duration::from_secs(10));
        let t = Instant::now();
        let allowed: Vec<_> = (0..10)
            .map(|i| r.allow(t + Duration::from_millis(i)))
            .collect();
        assert_eq!(&allowed[..3], &[Some(0), Some(0), Some(0)]);
        assert!(allowed[3..].iter().all(Option::is_none));
        assert_eq!(r.allow(t + Duration::from_secs(10)), Some(7));
        assert_eq!(r.allow(t + Duration::from_secs(11)), Some(0));
        assert_eq!(suppressed_note(7), " (7 similar lines suppressed)");
        assert_eq!(suppressed_note(0), "");
    }
}
