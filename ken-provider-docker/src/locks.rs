//! Per-key async locks, so that calls for the same sandbox or image run one at a
//! time within this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};

use tokio::sync::{Mutex, OwnedMutexGuard};

/// A map from keys to async mutexes. Entries that are not locked are dropped on
/// the next call, so the map stays as small as the number of keys in use.
#[derive(Debug, Default)]
pub(crate) struct KeyedLocks {
    locks: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for the lock of `key` and returns its guard.
    pub(crate) async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            locks.retain(|_, mutex| Arc::strong_count(mutex) > 1);
            locks.entry(key.to_owned()).or_default().clone()
        };
        mutex.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_key_does_not() {
        let locks = Arc::new(KeyedLocks::default());
        let held = locks.lock("a").await;

        let other = tokio::time::timeout(Duration::from_millis(100), locks.lock("b")).await;
        assert!(other.is_ok(), "a different key must not wait");

        let same = tokio::time::timeout(Duration::from_millis(100), locks.lock("a")).await;
        assert!(same.is_err(), "the same key must wait while held");

        drop(held);
        let again = tokio::time::timeout(Duration::from_millis(100), locks.lock("a")).await;
        assert!(again.is_ok(), "the key must be free after the guard is dropped");
    }
}
