//! The short-lived auth token (`x-modal-auth-token`) and when to refresh it.
//!
//! The token is a JWT from `AuthTokenGet`. Its `exp` claim is read without
//! verifying the signature (the server verifies it; the client only needs to know
//! when to fetch a new one). It is refreshed when less than
//! [`REFRESH_BEFORE_EXPIRY`] remains, or [`REFRESH_WITHOUT_EXPIRY`] after it was
//! fetched when it has no `exp`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ken_core::Secret;
use tokio::time::Instant;

/// Refresh the token when it expires within this time.
pub(crate) const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// Refresh a token without `exp` after this time.
pub(crate) const REFRESH_WITHOUT_EXPIRY: Duration = Duration::from_secs(20 * 60);

/// A token and the moment it must be replaced.
#[derive(Clone, Debug)]
pub(crate) struct CachedToken {
    pub(crate) token: Secret,
    pub(crate) refresh_at: Instant,
}

impl CachedToken {
    /// Wraps a freshly fetched `token`.
    pub(crate) fn new(token: String, fetched_at: Instant) -> Self {
        let refresh_at = refresh_at(&token, unix_now(), fetched_at);
        CachedToken {
            token: Secret::new(token),
            refresh_at,
        }
    }

    /// Returns true while the token can still be sent.
    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        now < self.refresh_at
    }
}

/// Returns when a token fetched at `fetched_at` (Unix time `now_unix`) must be
/// replaced.
pub(crate) fn refresh_at(token: &str, now_unix: u64, fetched_at: Instant) -> Instant {
    match jwt_expiry(token) {
        Some(exp) => {
            let left = exp.saturating_sub(now_unix);
            fetched_at + Duration::from_secs(left).saturating_sub(REFRESH_BEFORE_EXPIRY)
        }
        None => fetched_at + REFRESH_WITHOUT_EXPIRY,
    }
}

/// Reads the `exp` claim (Unix seconds) of a JWT, without verifying it.
pub(crate) fn jwt_expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match claims.get("exp")? {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
        _ => None,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.signature",
            engine.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            engine.encode(claims)
        )
    }

    #[test]
    fn reads_exp() {
        assert_eq!(jwt_expiry(&jwt(r#"{"exp":1700000000,"sub":"x"}"#)), Some(1_700_000_000));
        assert_eq!(jwt_expiry(&jwt(r#"{"exp":1700000000.5}"#)), Some(1_700_000_000));
    }

    #[test]
    fn missing_or_broken_exp_is_none() {
        assert_eq!(jwt_expiry(&jwt(r#"{"sub":"x"}"#)), None);
        assert_eq!(jwt_expiry(&jwt(r#"{"exp":"soon"}"#)), None);
        assert_eq!(jwt_expiry("not-a-jwt"), None);
        assert_eq!(jwt_expiry("a.%%%.c"), None);
    }

    #[test]
    fn refresh_five_minutes_before_exp() {
        let now = Instant::now();
        let at = refresh_at(&jwt(r#"{"exp":10000}"#), 10000 - 3600, now);
        assert_eq!(at - now, Duration::from_secs(3600 - 300));
    }

    #[test]
    fn near_expiry_refreshes_at_once() {
        let now = Instant::now();
        let token = CachedToken {
            token: Secret::new("t"),
            refresh_at: refresh_at(&jwt(r#"{"exp":10000}"#), 10000 - 100, now),
        };
        assert!(!token.is_fresh(now));
    }

    #[test]
    fn without_exp_refresh_after_twenty_minutes() {
        let now = Instant::now();
        let at = refresh_at("opaque-token", 0, now);
        assert_eq!(at - now, REFRESH_WITHOUT_EXPIRY);
    }
}
