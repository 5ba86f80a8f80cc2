//! Fault injection: failing requests, rate limits, concurrent policy edits, lost devices.

use std::time::{Duration, Instant};

use crate::model::Route;

/// A queued failure: the next `remaining` requests to `route` get `status`.
#[derive(Clone, Debug)]
pub(crate) struct InjectedFailure {
    pub(crate) route: Option<Route>,
    pub(crate) remaining: u32,
    pub(crate) status: u16,
    pub(crate) retry_after: Option<u64>,
}

/// A fixed-window rate limit over all API requests.
#[derive(Clone, Debug)]
pub(crate) struct RateLimit {
    pub(crate) max_requests: u32,
    pub(crate) window: Duration,
    pub(crate) window_start: Instant,
    pub(crate) count: u32,
}

impl RateLimit {
    /// Counts one request; returns the seconds to wait when it is over the limit.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.window_start) >= self.window {
            self.window_start = now;
            self.count = 0;
        }
        self.count += 1;
        if self.count <= self.max_requests {
            return None;
        }
        let left = self.window.saturating_sub(now.duration_since(self.window_start));
        Some(left.as_secs().max(1))
    }
}

/// The control plane's response to a valid registration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationMode {
    /// The device registers and appears in the API.
    #[default]
    Normal,
    /// The key is consumed and the stand-in reports `Running`, but the device never
    /// appears in the API (a device lost between control and API).
    Invisible,
    /// The control plane never completes the registration: the stand-in stays in
    /// `Starting` until its `--timeout` runs out.
    Hang,
}

/// The rule and comment inserted by [`crate::TestServer::edit_policy_after_next_get`]
/// unless a test gives its own.
pub const CONCURRENT_EDIT_COMMENT: &str = "// Added by another admin while Ken was merging.";

/// The rule inserted together with [`CONCURRENT_EDIT_COMMENT`].
pub const CONCURRENT_EDIT_RULE: &str =
    r#"{"action": "accept", "src": ["autogroup:member"], "dst": ["192.0.2.10:443"]}"#;

/// Inserts `comment` and `rule` at the start of the `acls` array of a HuJSON policy, or
/// adds an `acls` array after the opening brace when the policy has none.
pub(crate) fn insert_acl_rule(hujson: &str, comment: &str, rule: &str) -> String {
    let insertion = format!("\n\t\t{comment}\n\t\t{rule},");
    if let Some(at) = find_key_array(hujson, "acls") {
        let mut out = hujson.to_owned();
        out.insert_str(at, &insertion);
        return out;
    }
    let Some(brace) = hujson.find('{') else {
        return hujson.to_owned();
    };
    let mut out = hujson.to_owned();
    out.insert_str(brace + 1, &format!("\n\t\"acls\": [{insertion}\n\t],"));
    out
}

/// Returns the byte offset just after the `[` that opens the top-level array `"key": [`.
fn find_key_array(text: &str, key: &str) -> Option<usize> {
    let stripped = crate::policy::hujson::blank_comments(text);
    let needle = format!("\"{key}\"");
    let mut from = 0;
    while let Some(pos) = stripped[from..].find(&needle) {
        let after = from + pos + needle.len();
        let rest = &stripped[after..];
        let trimmed = rest.trim_start();
        if let Some(tail) = trimmed.strip_prefix(':') {
            let value = tail.trim_start();
            if value.starts_with('[') {
                let offset = stripped.len() - value.len();
                return Some(offset + 1);
            }
        }
        from = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_into_existing_acls() {
        let policy = "{\n // c\n \"acls\": [\n  {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]},\n ],\n}";
        let out = insert_acl_rule(policy, "// x", "{\"a\": 1}");
        assert!(out.contains("// x"));
        let json = crate::policy::hujson::to_json(&out).expect("still valid HuJSON");
        assert_eq!(json["acls"].as_array().map(Vec::len), Some(2));
        assert!(out.contains("// c"));
    }

    #[test]
    fn insert_without_acls() {
        let out = insert_acl_rule("{\"groups\": {}}", "// x", "{\"a\": 1}");
        let json = crate::policy::hujson::to_json(&out).expect("still valid HuJSON");
        assert_eq!(json["acls"].as_array().map(Vec::len), Some(1));
    }
}
