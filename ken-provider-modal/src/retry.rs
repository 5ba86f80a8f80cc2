//! Retry schedules: how often and how long to wait.

use std::time::Duration;

/// Retries of one call: the number of retries after the first attempt, and a delay
/// that doubles from `initial` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt.
    pub(crate) retries: u32,
    /// Delay before the first retry.
    pub(crate) initial: Duration,
    /// Longest delay.
    pub(crate) max: Duration,
}

/// Unary control-plane calls: 3 retries, 100 ms doubling to 1 s.
pub(crate) const UNARY: RetryPolicy = RetryPolicy {
    retries: 3,
    initial: Duration::from_millis(100),
    max: Duration::from_secs(1),
};

/// Reopening an exec output stream: 10 retries, 10 ms doubling (to 1 s); the
/// count starts again after every item received.
pub(crate) const STDIO: RetryPolicy = RetryPolicy {
    retries: 10,
    initial: Duration::from_millis(10),
    max: Duration::from_secs(1),
};

/// Reopening an image build log stream after an error: 10 retries, 100 ms
/// doubling to 5 s; the count starts again after every item received.
pub(crate) const BUILD_LOGS: RetryPolicy = RetryPolicy {
    retries: 10,
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

impl RetryPolicy {
    /// Returns the delay before retry number `retry` (0 for the first retry).
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unary_delays_double_to_one_second() {
        let delays: Vec<u128> = (0..5).map(|n| UNARY.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000]);
        assert_eq!(UNARY.retries, 3);
    }

    #[test]
    fn stdio_delays_start_small() {
        assert_eq!(STDIO.delay(0), Duration::from_millis(10));
        assert_eq!(STDIO.delay(3), Duration::from_millis(80));
        assert_eq!(STDIO.delay(40), Duration::from_secs(1));
    }
}
