//! Retries of API requests: exponential backoff with full jitter on 429 and 5xx,
//! honouring `Retry-After`.

use std::time::Duration;

use rand::Rng;
use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};

/// When and how often a request is sent again.
///
/// Only responses with status 429 or 5xx are retried. A `Retry-After` header given
/// in seconds sets the wait, capped at [`max_retry_after`](Self::max_retry_after);
/// otherwise the wait is a random time up to `base * 2^(attempt-1)`, capped at
/// [`max_delay`](Self::max_delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total number of attempts, the first included.
    pub max_attempts: u32,
    /// The backoff before the second attempt, doubled for each further one.
    pub base_delay: Duration,
    /// The maximum backoff without `Retry-After`.
    pub max_delay: Duration,
    /// The maximum wait a `Retry-After` header can set.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Returns whether a response with `status` may be sent again.
    pub fn is_retryable(status: StatusCode) -> bool {
        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
    }

    /// Returns the wait before attempt `attempt + 1`, after attempt `attempt`
    /// (1-based) returned `response`.
    pub(crate) fn delay(&self, attempt: u32, response: &Response) -> Duration {
        if let Some(wait) = retry_after(response) {
            return wait.min(self.max_retry_after);
        }
        let exponent = attempt.saturating_sub(1).min(16);
        let ceiling = self.base_delay.saturating_mul(1 << exponent).min(self.max_delay);
        let millis = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(millis / 2..=millis))
    }
}

/// Reads `Retry-After` given in seconds.
///
/// NOTE: the HTTP-date form of `Retry-After` is not read; such a response gets the
/// ordinary backoff.
pub(crate) fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}
