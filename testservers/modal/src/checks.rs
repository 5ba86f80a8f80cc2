//! Header checks on every call: client identity, credentials, auth token,
//! idempotency key and retry headers on the control plane; the bearer JWT on the
//! router.

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::ids::{is_uuid_v4, verify_jwt, JwtError};
use crate::inspect::ServiceKind;
use crate::state::{KeyUse, State};
use ken_provider_modal::proto::headers;

/// Client types the real service accepts: Python 1, JavaScript 8, Go 9.
const CLIENT_TYPES: [&str; 3] = ["1", "8", "9"];

/// Facts the checks extracted from one admitted call.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) retry_attempt: Option<u32>,
    /// For a router call, the task id the bearer JWT was issued for.
    pub(crate) router_task: Option<String>,
}

/// Checks the headers of a call and returns what it learned, or the status a real
/// server would return. Every problem is also recorded as a violation.
pub(crate) fn admit(
    state: &State,
    service: ServiceKind,
    method: &str,
    metadata: &MetadataMap,
    unary: bool,
) -> Result<Call, Status> {
    match service {
        ServiceKind::Control => admit_control(state, method, metadata, unary),
        ServiceKind::Router => admit_router(state, method, metadata),
    }
}

fn header<'a>(metadata: &'a MetadataMap, name: &str) -> Option<&'a str> {
    metadata.get(name).and_then(|value| value.to_str().ok())
}

fn admit_control(
    state: &State,
    method: &str,
    metadata: &MetadataMap,
    unary: bool,
) -> Result<Call, Status> {
    let reject = |status: Status| {
        state.violation(method, status.message().to_owned());
        Err(status)
    };

    match header(metadata, headers::CLIENT_TYPE) {
        Some(value) if CLIENT_TYPES.contains(&value) => {}
        Some(value) => {
            return reject(Status::failed_precondition(format!(
                "unknown client type {value:?} in {}; expected one of {CLIENT_TYPES:?}",
                headers::CLIENT_TYPE
            )))
        }
        None => {
            return reject(Status::failed_precondition(format!(
                "missing {} header",
                headers::CLIENT_TYPE
            )))
        }
    }
    match header(metadata, headers::CLIENT_VERSION) {
        Some(value) if !value.is_empty() => {}
        _ => {
            return reject(Status::failed_precondition(format!(
                "missing {} header",
                headers::CLIENT_VERSION
            )))
        }
    }

    let token_id = header(metadata, headers::TOKEN_ID);
    let token_secret = header(metadata, headers::TOKEN_SECRET);
    if token_id.is_none() || token_secret.is_none() {
        return reject(Status::unauthenticated(format!(
            "missing {} or {} header",
            headers::TOKEN_ID,
            headers::TOKEN_SECRET
        )));
    }
    if token_id != Some(state.config.token_id.as_str())
        || token_secret != Some(state.config.token_secret.expose())
    {
        state.reject_credentials(method);
        return Err(Status::unauthenticated("invalid token id or token secret"));
    }

    let auth_token = header(metadata, headers::AUTH_TOKEN);
    if method == "AuthTokenGet" {
        if auth_token.is_some() {
            state.violation(
                method,
                format!("{} sent on AuthTokenGet itself", headers::AUTH_TOKEN),
            );
        }
    } else {
        match auth_token.map(|token| verify_jwt(&state.jwt_key, token)) {
            Some(Ok(subject)) if subject == "auth" => {}
            Some(Err(JwtError::Expired)) => {
                return reject(Status::unauthenticated(format!(
                    "{} expired; fetch a new one with AuthTokenGet",
                    headers::AUTH_TOKEN
                )))
            }
            Some(_) => {
                return reject(Status::unauthenticated(format!(
                    "{} was not issued by this server",
                    headers::AUTH_TOKEN
                )))
            }
            None => {
                return reject(Status::unauthenticated(format!(
                    "missing {} header; call AuthTokenGet first",
                    headers::AUTH_TOKEN
                )))
            }
        }
    }

    let idempotency_key = header(metadata, headers::IDEMPOTENCY_KEY).map(str::to_owned);
    match &idempotency_key {
        Some(key) if !is_uuid_v4(key) => {
            return reject(Status::invalid_argument(format!(
                "{} {key:?} is not a UUIDv4",
                headers::IDEMPOTENCY_KEY
            )))
        }
        None if unary => {
            return reject(Status::invalid_argument(format!(
                "missing {} header on a unary call",
                headers::IDEMPOTENCY_KEY
            )))
        }
        _ => {}
    }

    let retry_attempt = match check_retry_headers(state, method, metadata, &idempotency_key, unary) {
        Ok(attempt) => attempt,
        Err(status) => return reject(status),
    };

    Ok(Call {
        method: method.to_owned(),
        idempotency_key,
        retry_attempt,
        router_task: None,
    })
}

/// Checks `x-retry-attempt` and `x-retry-delay`: both present on unary calls, the
/// attempt counting up by one per key from 0, the delay never going back, and a
/// key never reused for another method or a second first attempt.
fn check_retry_headers(
    state: &State,
    method: &str,
    metadata: &MetadataMap,
    key: &Option<String>,
    unary: bool,
) -> Result<Option<u32>, Status> {
    let attempt = header(metadata, headers::RETRY_ATTEMPT);
    let delay = header(metadata, headers::RETRY_DELAY);
    let (attempt, delay) = match (attempt, delay) {
        (None, None) if !unary => return Ok(None),
        (Some(attempt), Some(delay)) => (attempt, delay),
        _ => {
            return Err(Status::invalid_argument(format!(
                "a unary call needs both {} and {}",
                headers::RETRY_ATTEMPT,
                headers::RETRY_DELAY
            )))
        }
    };
    let attempt: u32 = attempt.parse().map_err(|_| {
        Status::invalid_argument(format!(
            "{} {attempt:?} is not a non-negative integer",
            headers::RETRY_ATTEMPT
        ))
    })?;
    let delay: f64 = delay
        .parse()
        .ok()
        .filter(|delay: &f64| delay.is_finite() && *delay >= 0.0)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{} {delay:?} is not a non-negative number of seconds",
                headers::RETRY_DELAY
            ))
        })?;
    let Some(key) = key else {
        return Ok(Some(attempt));
    };

    let mut inner = state.lock();
    let previous = inner.keys.get(key).cloned();
    let problem = match &previous {
        None if attempt != 0 => Some(format!(
            "first request with {} {key} has {} {attempt}, expected 0",
            headers::IDEMPOTENCY_KEY,
            headers::RETRY_ATTEMPT
        )),
        None => None,
        Some(used) if used.method != method => Some(format!(
            "{} {key} of a {} call was reused for {method}",
            headers::IDEMPOTENCY_KEY,
            used.method
        )),
        Some(used) if attempt != used.attempt + 1 => Some(format!(
            "{} {attempt} with {} {key} follows attempt {}; each retry must count up by one",
            headers::RETRY_ATTEMPT,
            headers::IDEMPOTENCY_KEY,
            used.attempt
        )),
        Some(used) if delay < used.delay => Some(format!(
            "{} {delay} is less than {} of the previous attempt",
            headers::RETRY_DELAY,
            used.delay
        )),
        Some(_) => None,
    };
    inner.keys.insert(
        key.clone(),
        KeyUse {
            method: method.to_owned(),
            attempt,
            delay,
        },
    );
    drop(inner);
    match problem {
        Some(problem) => Err(Status::invalid_argument(problem)),
        None => Ok(Some(attempt)),
    }
}

fn admit_router(state: &State, method: &str, metadata: &MetadataMap) -> Result<Call, Status> {
    for leaked in [headers::TOKEN_SECRET, headers::TOKEN_ID, headers::AUTH_TOKEN] {
        if metadata.contains_key(leaked) {
            state.violation(
                method,
                format!("{leaked} sent to the task command router, which needs only {}", headers::AUTHORIZATION),
            );
        }
    }

    let reject = |message: String| {
        state.violation(method, message.clone());
        Err(Status::unauthenticated(message))
    };
    let Some(value) = header(metadata, headers::AUTHORIZATION) else {
        return reject(format!("missing {} header", headers::AUTHORIZATION));
    };
    let Some(jwt) = value.strip_prefix("Bearer ") else {
        return reject(format!("{} is not `Bearer <jwt>`", headers::AUTHORIZATION));
    };
    if state.lock().revoked_jwts.contains(jwt) {
        // An expired token is normal: clients fetch a new one, so no violation.
        return Err(Status::unauthenticated("router token expired"));
    }
    let task = match verify_jwt(&state.jwt_key, jwt) {
        Ok(subject) => subject,
        Err(JwtError::Expired) => return Err(Status::unauthenticated("router token expired")),
        Err(_) => return reject("router token was not issued by this server".to_owned()),
    };
    Ok(Call {
        method: method.to_owned(),
        idempotency_key: None,
        retry_attempt: None,
        router_task: Some(task),
    })
}
