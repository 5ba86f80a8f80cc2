//! Mapping of API error responses onto [`ken_core::Error`].

use std::fmt;
use std::time::Duration;

use ken_core::Error;
use reqwest::StatusCode;
use serde_json::Value;

/// An error response of the Tailscale API, kept as the source of the
/// [`ken_core::Error`] it was mapped to.
///
/// [`api_error`] finds it again, for example to tell a stale ETag (412) apart.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The server's `message`, or the body when it is not the usual JSON.
    pub message: String,
    /// The server's `data`, when it sent one (failed policy tests, for example).
    pub data: Option<Value>,
    /// The operation, for example `revoking auth key k123`.
    pub operation: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} returned HTTP {}: {}", self.operation, self.status, self.message)?;
        if let Some(data) = &self.data {
            write!(f, " ({data})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Returns the [`ApiError`] behind `error`, when an API response caused it.
pub fn api_error(error: &Error) -> Option<&ApiError> {
    let source = match error.root() {
        Error::Backend { source: Some(source), .. } => source,
        _ => return None,
    };
    source.downcast_ref::<ApiError>()
}

/// Returns whether `error` is the API's 412: the policy file changed since its ETag
/// was read.
pub fn is_precondition_failed(error: &Error) -> bool {
    api_error(error).is_some_and(|api| api.status == StatusCode::PRECONDITION_FAILED.as_u16())
}

/// Maps an error response to an [`Error`].
///
/// 401 and 403 become [`Error::Unauthenticated`], 404 [`Error::NotFound`] of
/// `resource` (kind and id), 429 [`Error::RateLimited`]; everything else, 412
/// included, becomes [`Error::Backend`] with an [`ApiError`] source that keeps the
/// server's message.
pub(crate) fn from_response(
    status: StatusCode,
    body: &str,
    operation: &str,
    resource: Option<(&'static str, &str)>,
    retry_after: Option<Duration>,
) -> Error {
    let (message, data) = parse_body(body);
    let api = ApiError {
        status: status.as_u16(),
        message: message.clone(),
        data,
        operation: operation.to_owned(),
    };
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthenticated {
            service: "tailscale".to_owned(),
            message: format!(
                "{operation} returned HTTP {}: {message}; check the credential and that it has the auth_keys, \
                 devices:core and policy_file scopes",
                status.as_u16()
            ),
        },
        StatusCode::NOT_FOUND => match resource {
            Some((kind, name)) => Error::NotFound {
                kind,
                name: name.to_owned(),
            },
            None => Error::NotFound {
                kind: "tailscale resource",
                name: operation.to_owned(),
            },
        },
        StatusCode::TOO_MANY_REQUESTS => Error::RateLimited {
            service: "tailscale".to_owned(),
            message: format!("{operation}: {message}"),
            retry_after,
        },
        StatusCode::PRECONDITION_FAILED => Error::Backend {
            service: "tailscale".to_owned(),
            message: format!("{operation}: the policy file changed since it was read (HTTP 412: {message})"),
            source: Some(Box::new(api)),
            retryable: true,
        },
        _ => Error::Backend {
            service: "tailscale".to_owned(),
            message: api.to_string(),
            retryable: status.is_server_error(),
            source: Some(Box::new(api)),
        },
    }
}

/// Splits an error body into its `message` and `data`.
fn parse_body(body: &str) -> (String, Option<Value>) {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(mut map)) => {
            let message = match map.remove("message") {
                Some(Value::String(message)) => message,
                Some(other) => other.to_string(),
                None => body.trim().to_owned(),
            };
            let data = map.remove("data").filter(|data| !data.is_null());
            (message, data)
        }
        _ if body.trim().is_empty() => ("(empty body)".to_owned(), None),
        _ => (truncate(body.trim(), 500), None),
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// Returns the tags in a `requested tags [tag:a tag:b] are invalid or not permitted`
/// message, or `None` when `message` is not that error.
pub(crate) fn requested_tags(message: &str) -> Option<Vec<String>> {
    let rest = &message[message.find("requested tags")? + "requested tags".len()..];
    let open = rest.find('[')?;
    let close = rest[open..].find(']')? + open;
    Some(
        rest[open + 1..close]
            .split([' ', ','])
            .map(|tag| tag.trim_matches('"'))
            .filter(|tag| !tag.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_kinds() {
        let error = from_response(StatusCode::UNAUTHORIZED, r#"{"message":"API token invalid"}"#, "listing devices", None, None);
        assert!(matches!(&error, Error::Unauthenticated { message, .. } if message.contains("API token invalid")), "{error}");

        let error = from_response(StatusCode::NOT_FOUND, r#"{"message":"not found"}"#, "getting device n1", Some(("device", "n1")), None);
        assert!(error.is_not_found(), "{error}");

        let error = from_response(StatusCode::TOO_MANY_REQUESTS, "{}", "listing devices", None, Some(Duration::from_secs(3)));
        assert!(matches!(error, Error::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(3)));

        let error = from_response(StatusCode::PRECONDITION_FAILED, r#"{"message":"precondition failed, invalid old hash"}"#, "writing the policy file", None, None);
        assert!(is_precondition_failed(&error), "{error}");
        assert!(error.to_string().contains("invalid old hash"), "{error}");

        let error = from_response(StatusCode::BAD_REQUEST, r#"{"message":"test(s) failed","data":[{"user":"x"}]}"#, "writing the policy file", None, None);
        assert!(!is_precondition_failed(&error));
        let api = api_error(&error).expect("an ApiError source");
        assert_eq!(api.status, 400);
        assert_eq!(api.message, "test(s) failed");
        assert!(api.data.is_some());
    }

    #[test]
    fn requested_tags_are_parsed() {
        assert_eq!(
            requested_tags("requested tags [tag:ken-sandbox tag:other] are invalid or not permitted"),
            Some(vec!["tag:ken-sandbox".to_owned(), "tag:other".to_owned()])
        );
        assert_eq!(requested_tags("some other message"), None);
    }
}
