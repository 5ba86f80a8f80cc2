//! Object ids in Modal's format and the JWTs the server issues.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::Rng;
use sha2::{Digest, Sha256};

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Returns `len` random characters from `[0-9A-Za-z]`.
pub(crate) fn random_base62(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect()
}

/// Returns a new id: `prefix`, a dash and 22 base62 characters, like `sb-…`.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", random_base62(22))
}

/// Returns an id derived from `content`, so that equal content gets equal ids.
pub(crate) fn content_id(prefix: &str, content: &[u8]) -> String {
    let digest = Sha256::digest(content);
    let id: String = digest
        .iter()
        .take(22)
        .map(|byte| BASE62[usize::from(*byte) % BASE62.len()] as char)
        .collect();
    format!("{prefix}-{id}")
}

/// Returns true when `value` is a UUID of version 4 in its hyphenated form.
pub(crate) fn is_uuid_v4(value: &str) -> bool {
    value.len() == 36
        && uuid::Uuid::parse_str(value)
            .map(|uuid| uuid.get_version_num() == 4)
            .unwrap_or(false)
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Issues a JWT for `subject` that expires after `ttl`, signed with `key`
/// (HMAC-like SHA-256 over the key and the signed part).
pub(crate) fn issue_jwt(key: &[u8], subject: &str, ttl: Duration) -> String {
    let exp = (unix_seconds(SystemTime::now()) + ttl.as_secs_f64()).floor() as u64;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({ "sub": subject, "exp": exp, "jti": random_base62(16) });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let signature = URL_SAFE_NO_PAD.encode(sign(key, &signed));
    format!("{signed}.{signature}")
}

/// Reason a JWT was rejected.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JwtError {
    Malformed,
    BadSignature,
    Expired,
}

/// Checks the signature and expiry of `token` and returns its subject.
pub(crate) fn verify_jwt(key: &[u8], token: &str) -> Result<String, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let expected = URL_SAFE_NO_PAD.encode(sign(key, &format!("{header}.{payload}")));
    if expected != signature {
        return Err(JwtError::BadSignature);
    }
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(JwtError::Malformed)?;
    let exp = claims["exp"].as_f64().ok_or(JwtError::Malformed)?;
    if exp <= unix_seconds(SystemTime::now()) {
        return Err(JwtError::Expired);
    }
    claims["sub"]
        .as_str()
        .map(str::to_owned)
        .ok_or(JwtError::Malformed)
}

fn sign(key: &[u8], signed: &str) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(key);
    hasher.update(signed.as_bytes());
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_round_trip() {
        let token = issue_jwt(b"key", "ta-1", Duration::from_secs(60));
        assert_eq!(verify_jwt(b"key", &token), Ok("ta-1".to_owned()));
        assert_eq!(verify_jwt(b"other", &token), Err(JwtError::BadSignature));
    }

    #[test]
    fn jwt_expired() {
        let token = issue_jwt(b"key", "ta-1", Duration::ZERO);
        assert_eq!(verify_jwt(b"key", &token), Err(JwtError::Expired));
    }

    #[test]
    fn uuid_v4_check() {
        assert!(is_uuid_v4(&uuid::Uuid::new_v4().to_string()));
        assert!(!is_uuid_v4("not-a-uuid"));
        assert!(!is_uuid_v4("00000000-0000-1000-8000-000000000000"));
    }

    #[test]
    fn ids_have_modal_shape() {
        let id = new_id("sb");
        assert_eq!(id.len(), 25);
        assert!(id.starts_with("sb-"));
        assert_eq!(content_id("im", b"x"), content_id("im", b"x"));
    }
}
