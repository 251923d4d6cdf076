//! A line budget for the node console: a guest that faults in a loop must not flood it (nor
//! slow the lines of other slices). A burst of lines is printed at once; after that one line
//! per interval, which says how many were left out since the last one.

/// Lines printed at once before the limit applies.
pub const BURST: u32 = 8;

/// Decides, per event, whether its line is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineBudget {
    /// Lines that may still be printed without waiting.
    tokens: u32,
    /// When the last token was given back (counter ticks).
    refilled_at: u64,
    /// Events whose lines were left out since the last printed one.
    suppressed: u64,
}

/// The answer for one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Print the line; `suppressed` lines were left out before it.
    Print { suppressed: u64 },
    /// Leave it out.
    Suppress,
}

impl Default for LineBudget {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBudget {
    pub const fn new() -> Self {
        LineBudget {
            tokens: BURST,
            refilled_at: 0,
            suppressed: 0,
        }
    }

    /// One event at `now` (counter ticks); one token comes back every `interval` ticks, up to
    /// [`BURST`].
    pub fn event(&mut self, now: u64, interval: u64) -> Verdict {
        let interval = interval.max(1);
        let elapsed = now.saturating_sub(self.refilled_at);
        let earned = elapsed / interval;
        if earned > 0 {
            self.tokens = self
                .tokens
                .saturating_add(u32::try_from(earned).unwrap_or(u32::MAX))
                .min(BURST);
            self.refilled_at = if self.tokens == BURST {
                now
            } else {
                self.refilled_at + earned * interval
            };
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return Verdict::Suppress;
        }
        self.tokens -= 1;
        Verdict::Print {
            suppressed: core::mem::take(&mut self.suppressed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_line_per_interval_counting_what_was_left_out() {
        let mut b = LineBudget::new();
        for _ in 0..BURST {
            assert_eq!(b.event(100, 1000), Verdict::Print { suppressed: 0 });
        }
        for t in 0..5 {
            assert_eq!(b.event(100 + t, 1000), Verdict::Suppress);
        }
        assert_eq!(b.event(1000, 1000), Verdict::Print { suppressed: 5 });
        assert_eq!(b.event(1500, 1000), Verdict::Suppress);
        assert_eq!(b.event(2000, 1000), Verdict::Print { suppressed: 1 });
    }

    #[test]
    fn quiet_time_refills_up_to_the_burst_only() {
        let mut b = LineBudget::new();
        for _ in 0..BURST {
            b.event(0, 10);
        }
        let printed = (0..100)
            .filter(|_| matches!(b.event(1_000_000, 10), Verdict::Print { .. }))
            .count();
        assert_eq!(printed, BURST as usize);
    }

    #[test]
    fn a_clock_that_goes_backwards_or_a_zero_interval_does_not_panic() {
        let mut b = LineBudget::new();
        b.event(u64::MAX, 0);
        b.event(0, 0);
        b.event(u64::MAX, u64::MAX);
    }
}
