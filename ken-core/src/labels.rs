//! Labels that Ken puts on every resource it makes.
//!
//! Listing and garbage collection work from these labels alone: there is no state
//! file on the host. A provider stores them as container labels, cloud tags or the
//! closest thing its backend has.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Label whose value is always [`MANAGED_BY_VALUE`] on resources Ken made.
pub const MANAGED_BY: &str = "ken.managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "ken";
/// Label naming the user who launched the sandbox.
pub const OWNER: &str = "ken.owner";
/// Label naming the sandbox a resource belongs to.
pub const SANDBOX: &str = "ken.sandbox";
/// Label with a hash of the manifest the sandbox was launched from.
pub const MANIFEST_HASH: &str = "ken.manifest-hash";
/// Label with the time after which the resource may be removed, in Unix seconds.
pub const EXPIRES_AT: &str = "ken.expires-at";
/// Label with the time by which the launch must have finished, in Unix seconds.
///
/// A sandbox that is not ready after this time was abandoned by its launcher.
pub const LAUNCH_DEADLINE: &str = "ken.launch-deadline";
/// Label with `HOST/PID` of the process that launched the sandbox.
pub const LAUNCHER: &str = "ken.launcher";
/// Label set on images that Ken keeps on purpose as a build cache.
pub const CACHE: &str = "ken.cache";
/// Label naming the network provider the sandbox joined, for example `tailscale`.
///
/// Commands that act on an existing sandbox read it to reach the same network.
pub const NETWORK: &str = "ken.network";

/// A set of labels, kept sorted so that hashes and output are stable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// Creates an empty label set.
    pub fn new() -> Self {
        Labels::default()
    }

    /// Creates the labels of a sandbox launched by `owner` that expires after `ttl`.
    pub fn for_sandbox(sandbox: &str, owner: &str, ttl: Duration) -> Self {
        let expires_at = unix_now() + ttl.as_secs();
        let mut labels = Labels::new();
        labels.insert(MANAGED_BY, MANAGED_BY_VALUE);
        labels.insert(OWNER, owner);
        labels.insert(SANDBOX, sandbox);
        labels.insert(EXPIRES_AT, expires_at.to_string());
        labels
    }

    /// Sets `key` to `value`, replacing an earlier value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Returns the value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Iterates over the labels in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Returns true when the resource was made by Ken.
    pub fn is_managed(&self) -> bool {
        self.get(MANAGED_BY) == Some(MANAGED_BY_VALUE)
    }

    /// Returns the sandbox this resource belongs to.
    pub fn sandbox(&self) -> Option<&str> {
        self.get(SANDBOX)
    }

    /// Returns the expiry time in Unix seconds, if the label is present and valid.
    pub fn expires_at(&self) -> Option<u64> {
        self.get(EXPIRES_AT)?.parse().ok()
    }

    /// Returns true when the expiry label lies before `now` (Unix seconds).
    pub fn is_expired_at(&self, now: u64) -> bool {
        self.expires_at().is_some_and(|at| at <= now)
    }

    /// Returns the launch deadline in Unix seconds, if present and valid.
    pub fn launch_deadline(&self) -> Option<u64> {
        self.get(LAUNCH_DEADLINE)?.parse().ok()
    }

    /// Returns true when every pair of `selector` is present here.
    pub fn matches(&self, selector: &LabelSelector) -> bool {
        selector.pairs.iter().all(|(k, v)| self.get(k) == Some(v.as_str()))
    }

    /// Returns the labels as a map, for backends that take one.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.clone()
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<T: IntoIterator<Item = (String, String)>>(iter: T) -> Self {
        Labels(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Equality matches on labels, used to list resources.
///
/// An empty selector matches every resource, so providers should always add
/// [`LabelSelector::managed`] to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pairs: BTreeMap<String, String>,
}

impl LabelSelector {
    /// Selects every resource Ken made.
    pub fn managed() -> Self {
        LabelSelector::default().with(MANAGED_BY, MANAGED_BY_VALUE)
    }

    /// Adds the requirement `key == value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.pairs.insert(key.into(), value.into());
        self
    }

    /// Iterates over the required pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Returns the current time in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_labels_carry_owner_and_expiry() {
        let labels = Labels::for_sandbox("demo", "alice", Duration::from_secs(60));
        assert!(labels.is_managed());
        assert_eq!(labels.sandbox(), Some("demo"));
        assert_eq!(labels.get(OWNER), Some("alice"));
        let expires = labels.expires_at().unwrap();
        assert!(expires >= unix_now() + 59);
        assert!(!labels.is_expired_at(unix_now()));
        assert!(labels.is_expired_at(expires));
    }

    #[test]
    fn selector_matches_subset() {
        let labels = Labels::for_sandbox("demo", "alice", Duration::from_secs(60));
        assert!(labels.matches(&LabelSelector::managed()));
        assert!(labels.matches(&LabelSelector::managed().with(SANDBOX, "demo")));
        assert!(!labels.matches(&LabelSelector::managed().with(SANDBOX, "other")));
    }
}
