//! Turning gRPC statuses into Ken's typed errors.

use std::fmt;
use std::time::Duration;

use ken_core::Error;
use prost::Message;
use tonic::{Code, Status};

use crate::config::ModalConfig;
use crate::proto::headers::RPC_RETRY_POLICY_TYPE_URL;
use crate::proto::modal_client::RpcRetryPolicy;
use crate::proto::rpc_status;

/// The service name in Ken errors.
pub(crate) const SERVICE: &str = "modal";

/// A failed call: the method and the final status, after any retries.
#[derive(Debug)]
pub(crate) struct RpcError {
    /// The gRPC method path.
    pub(crate) method: &'static str,
    /// The server's (or the transport's) status.
    pub(crate) status: Status,
}

impl RpcError {
    pub(crate) fn new(method: &'static str, status: Status) -> Self {
        RpcError { method, status }
    }

    /// Returns the status code.
    pub(crate) fn code(&self) -> Code {
        self.status.code()
    }

    /// Returns true when the status is Modal's `NOT_FOUND` for the environment
    /// named in the request (`Environment '<name>' not found`).
    pub(crate) fn is_unknown_environment(&self) -> bool {
        self.code() == Code::NotFound && self.status.message().starts_with("Environment '")
    }

    /// Maps the status like [`into_ken`](Self::into_ken), except that an unknown
    /// environment becomes [`Error::InvalidInput`] naming the setting it came from.
    pub(crate) fn into_ken_with_environment(self, config: &ModalConfig, context: impl Into<String>) -> Error {
        if !self.is_unknown_environment() {
            return self.into_ken(context);
        }
        Error::InvalidInput {
            what: format!("Modal environment (from {})", config.environment_origin),
            value: config.environment_name(),
            reason: format!(
                "Modal has no environment of that name ({}); set it to an environment of your \
                 workspace (`modal environment list` shows them), or unset it to use the default one",
                self.status.message()
            ),
        }
    }

    /// Maps the status to a Ken error. `context` describes the operation that
    /// failed, with the names involved.
    pub(crate) fn into_ken(self, context: impl Into<String>) -> Error {
        let context = context.into();
        let message = self.status.message().to_owned();
        let method = short_method(self.method);
        match self.status.code() {
            Code::ResourceExhausted => Error::RateLimited {
                service: SERVICE.to_owned(),
                message: format!("{context}: {message}"),
                retry_after: retry_after(&self.status),
            },
            Code::Unauthenticated | Code::PermissionDenied => Error::Unauthenticated {
                service: SERVICE.to_owned(),
                message: format!("{context}: {message}"),
            },
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => Error::InvalidInput {
                what: format!("request {method}"),
                value: context,
                reason: format!("Modal rejected it: {message}"),
            },
            Code::NotFound => Error::NotFound {
                kind: "Modal object",
                name: format!("{context} ({message})"),
            },
            Code::AlreadyExists => Error::AlreadyExists {
                kind: "Modal object",
                name: context,
            },
            Code::Cancelled => Error::Cancelled { operation: context },
            code => Error::Backend {
                service: SERVICE.to_owned(),
                message: format!("{context}: {method} failed with {code:?}: {message}"),
                retryable: is_retryable(code),
                // The message already contains the method, code and status text, so
                // the status is not kept as the source (it would print them twice).
                source: None,
            },
        }
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} returned {:?}: {}",
            short_method(self.method),
            self.status.code(),
            self.status.message()
        )
    }
}

impl std::error::Error for RpcError {}

/// Returns the method name without its service, for messages.
pub(crate) fn short_method(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Returns true for the codes a unary call is retried on.
pub(crate) fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::DeadlineExceeded | Code::Unavailable | Code::Cancelled | Code::Internal | Code::Unknown
    )
}

/// Reads a `modal.client.RPCRetryPolicy` detail from the status, if there is one.
pub(crate) fn retry_after(status: &Status) -> Option<Duration> {
    let details = status.details();
    if details.is_empty() {
        return None;
    }
    let decoded = rpc_status::Status::decode(details).ok()?;
    decoded
        .details
        .iter()
        .filter(|any| any.type_url == RPC_RETRY_POLICY_TYPE_URL)
        .find_map(|any| RpcRetryPolicy::decode(any.value.as_slice()).ok())
        .map(|policy| Duration::from_secs(u64::from(policy.retry_after_secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::paths;

    #[test]
    fn rate_limit_keeps_message_and_retry_after() {
        let detail = rpc_status::Status {
            code: Code::ResourceExhausted as i32,
            message: "limit".into(),
            details: vec![rpc_status::Any {
                type_url: RPC_RETRY_POLICY_TYPE_URL.into(),
                value: RpcRetryPolicy { retry_after_secs: 1 }.encode_to_vec(),
            }],
        };
        let status = Status::with_details(
            Code::ResourceExhausted,
            "Sandbox creation rate limit (5/s) exceeded",
            detail.encode_to_vec().into(),
        );
        let error = RpcError::new(paths::SANDBOX_CREATE, status).into_ken("creating sandbox demo");
        assert!(error.is_retryable());
        match error {
            Error::RateLimited { message, retry_after, .. } => {
                assert!(message.contains("rate limit (5/s) exceeded"), "{message}");
                assert_eq!(retry_after, Some(Duration::from_secs(1)));
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }

    #[test]
    fn codes_map_to_kinds() {
        let map = |code| RpcError::new(paths::SANDBOX_LIST, Status::new(code, "m")).into_ken("x");
        assert!(matches!(map(Code::Unauthenticated), Error::Unauthenticated { .. }));
        assert!(matches!(map(Code::InvalidArgument), Error::InvalidInput { .. }));
        assert!(map(Code::NotFound).is_not_found());
        assert!(map(Code::AlreadyExists).is_already_exists());
        assert!(map(Code::Unavailable).is_retryable());
        assert!(!map(Code::Unimplemented).is_retryable());
        let rate = map(Code::ResourceExhausted);
        assert!(matches!(rate, Error::RateLimited { retry_after: None, .. }));
    }

    #[test]
    fn unknown_environment_names_its_setting() {
        let config = ModalConfig::new("ak-1", "as-1").with_environment("nope");
        let status = Status::not_found("Environment 'nope' not found");
        let error = RpcError::new(paths::APP_GET_OR_CREATE, status).into_ken_with_environment(&config, "x");
        let text = error.to_string();
        assert!(matches!(error, Error::InvalidInput { .. }), "{error:?}");
        assert!(text.contains("\"nope\""), "{text}");
        assert!(text.contains("modal environment list"), "{text}");
        // Another object that is not found keeps its usual error.
        let status = Status::not_found("App ap-1 not found");
        let error = RpcError::new(paths::APP_GET_OR_CREATE, status).into_ken_with_environment(&config, "x");
        assert!(error.is_not_found());
    }

    #[test]
    fn backend_error_has_no_repeated_source() {
        let status = Status::unavailable("cannot connect");
        let error = RpcError::new(paths::SANDBOX_LIST, status).into_ken("listing sandboxes");
        assert!(std::error::Error::source(&error).is_none());
        assert!(error.to_string().contains("cannot connect"));
    }
}
