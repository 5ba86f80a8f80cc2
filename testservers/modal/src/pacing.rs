//! Early ends of server streams, so that clients must resume them.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::StreamBehavior;

/// Decides when a stream has sent enough and must end early.
#[derive(Debug)]
pub(crate) struct Pacer {
    deadline: Option<Instant>,
    items_left: Option<usize>,
}

impl Pacer {
    /// Starts pacing a stream; `limit` is the client's own timeout for it, if any.
    pub(crate) fn new(behavior: &StreamBehavior, limit: Option<Duration>) -> Self {
        let end_after = match (behavior.end_after, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Pacer {
            deadline: end_after.map(|after| Instant::now() + after),
            items_left: behavior.end_after_items,
        }
    }

    /// Returns true when the stream must end before sending another item, and
    /// counts the item otherwise.
    pub(crate) fn end_before_item(&mut self) -> bool {
        if self.expired() {
            return true;
        }
        match &mut self.items_left {
            Some(0) => true,
            Some(left) => {
                *left -= 1;
                false
            }
            None => false,
        }
    }

    /// Returns true when the stream's time is up.
    pub(crate) fn expired(&self) -> bool {
        self.deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }

    /// Waits until the stream's time is up; forever when it has no deadline.
    pub(crate) async fn until_deadline(&self) {
        match self.deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }
}
