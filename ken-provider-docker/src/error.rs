//! Mapping of bollard errors onto Ken's [`Error`].

use bollard::errors::Error as DockerError;
use ken_core::Error;

/// Service name used in [`Error::Backend`].
pub(crate) const SERVICE: &str = "docker";

/// Returns the HTTP status of an error response from the engine.
pub(crate) fn status_code(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Returns true when the engine responded `404 Not Found`.
pub(crate) fn is_not_found(error: &DockerError) -> bool {
    status_code(error) == Some(404)
}

/// Returns true when the engine responded `409 Conflict`.
pub(crate) fn is_conflict(error: &DockerError) -> bool {
    status_code(error) == Some(409)
}

/// Returns the engine's message for an error response, or the error's text.
pub(crate) fn engine_message(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_owned(),
        DockerError::DockerStreamError { error } => error.trim().to_owned(),
        other => other.to_string(),
    }
}

/// Wraps `error` as an [`Error::Backend`] whose message is `context` followed by
/// the engine's message. Transport failures and timeouts are marked retryable.
pub(crate) fn backend(context: impl Into<String>, error: DockerError) -> Error {
    let retryable = matches!(
        error,
        DockerError::RequestTimeoutError
            | DockerError::HyperResponseError { .. }
            | DockerError::IOError { .. }
            | DockerError::HyperLegacyError { .. }
    );
    let message = format!("{}: {}", context.into(), engine_message(&error));
    Error::Backend {
        service: SERVICE.to_owned(),
        message,
        source: Some(Box::new(error)),
        retryable,
    }
}

/// Wraps `error` as [`Error::NotFound`] for a 404 and as [`Error::Backend`]
/// otherwise.
pub(crate) fn not_found_or_backend(
    kind: &'static str,
    name: &str,
    context: impl Into<String>,
    error: DockerError,
) -> Error {
    if is_not_found(&error) {
        Error::NotFound {
            kind,
            name: name.to_owned(),
        }
    } else {
        backend(context, error)
    }
}
