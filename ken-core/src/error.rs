//! The error type shared by every Ken crate.

use std::fmt;
use std::time::Duration;

use crate::phase::Phase;

/// A boxed error kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A `Result` whose error is Ken's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Ken, grouped by meaning rather than by backend.
///
/// Backends map their own failures onto these variants and keep the original error
/// as the `source`, so callers can branch on the kind (`is_not_found`, `is_retryable`)
/// and still print the full chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value given by the caller (a manifest field, a name, an option) is invalid.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        /// The kind of value, for example `sandbox name`.
        what: String,
        /// The rejected value, or a short description of it when it is a secret.
        value: String,
        /// The reason for the rejection and what to do instead.
        reason: String,
    },

    /// The `ken.toml` manifest is invalid; the message names the value and its line.
    #[error("{path}:{line}:{column}: {message}")]
    Manifest {
        /// Path of the manifest file.
        path: String,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// The problem and how to fix it.
        message: String,
    },

    /// The named resource does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// Kind of resource, for example `sandbox`.
        kind: &'static str,
        /// Name or id that was looked up.
        name: String,
    },

    /// A resource with that name exists already.
    #[error("{kind} {name:?} already exists; pick another name or remove it with `ken rm {name}`")]
    AlreadyExists {
        /// Kind of resource, for example `sandbox`.
        kind: &'static str,
        /// The conflicting name.
        name: String,
    },

    /// The provider does not implement this operation.
    #[error("{operation} is not supported by the {provider} provider")]
    Unsupported {
        /// The operation that was requested, for example `snapshot`.
        operation: &'static str,
        /// Name of the provider, for example `docker`.
        provider: String,
    },

    /// An operation did not finish in time.
    #[error("{operation} timed out after {}", humantime::format_duration(*.after))]
    Timeout {
        /// The operation that was waited for.
        operation: String,
        /// The limit that was exceeded.
        after: Duration,
    },

    /// The backend rejected the credentials.
    #[error("authentication with {service} failed: {message}")]
    Unauthenticated {
        /// The service that rejected the request.
        service: String,
        /// The service's message, with no secret in it.
        message: String,
    },

    /// The backend asked the caller to slow down.
    #[error("rate limited by {service}: {message}")]
    RateLimited {
        /// The service that rate-limited the request.
        service: String,
        /// The service's message.
        message: String,
        /// The wait the service requested, when it sent one.
        retry_after: Option<Duration>,
    },

    /// A command inside the sandbox (a startup step, a seed, a probe) failed.
    #[error("{step} failed ({status}){}", format_log_tail(log_tail))]
    StepFailed {
        /// Name of the step, service or seeder.
        step: String,
        /// The failure: an exit code, a timeout, or a probe that never passed.
        status: String,
        /// The last lines the step printed.
        log_tail: String,
    },

    /// A launch failed and everything it made was removed. The inner error gives the cause.
    #[error("launch of sandbox {sandbox:?} failed in phase {phase}: {source}")]
    Launch {
        /// Name of the sandbox that was being launched.
        sandbox: String,
        /// The phase that failed.
        phase: Phase,
        /// The underlying failure.
        #[source]
        source: Box<Error>,
    },

    /// The operation was cancelled (Ctrl-C, or the future was dropped).
    #[error("{operation} was cancelled")]
    Cancelled {
        /// The operation that was cancelled.
        operation: String,
    },

    /// A backend (Docker engine, cloud API, network service) failed.
    #[error("{service}: {message}")]
    Backend {
        /// The backend, for example `docker`.
        service: String,
        /// The failed operation, with the ids involved.
        message: String,
        /// The backend's own error.
        #[source]
        source: Option<BoxError>,
        /// Whether the same call may succeed if retried.
        retryable: bool,
    },

    /// A local I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// The operation that failed, with the path involved.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Formats the log tail of [`Error::StepFailed`], saying so when the step printed
/// nothing.
fn format_log_tail(tail: &str) -> String {
    if tail.trim().is_empty() {
        "; it printed nothing".to_owned()
    } else {
        format!("; last lines of its log:\n{tail}")
    }
}

impl Error {
    /// Builds an [`Error::InvalidInput`].
    pub fn invalid(what: impl Into<String>, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            what: what.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Backend`] without a source.
    pub fn backend(service: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Backend {
            service: service.into(),
            message: message.into(),
            source: None,
            retryable: false,
        }
    }

    /// Builds an [`Error::Backend`] that keeps `source`.
    pub fn backend_with(
        service: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            service: service.into(),
            message: message.into(),
            source: Some(source.into()),
            retryable: false,
        }
    }

    /// Builds an [`Error::Io`] for `context`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds an [`Error::Unsupported`].
    pub fn unsupported(operation: &'static str, provider: impl Into<String>) -> Self {
        Error::Unsupported {
            operation,
            provider: provider.into(),
        }
    }

    /// Returns true when the error reports that something does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound { .. } => true,
            Error::Launch { source, .. } => source.is_not_found(),
            _ => false,
        }
    }

    /// Returns true when the error reports that something exists already.
    pub fn is_already_exists(&self) -> bool {
        match self {
            Error::AlreadyExists { .. } => true,
            Error::Launch { source, .. } => source.is_already_exists(),
            _ => false,
        }
    }

    /// Returns true when retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::RateLimited { .. } | Error::Timeout { .. } => true,
            Error::Backend { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Returns the launch phase this error happened in, if it came from a launch.
    pub fn phase(&self) -> Option<Phase> {
        match self {
            Error::Launch { phase, .. } => Some(*phase),
            _ => None,
        }
    }

    /// Returns the innermost Ken error, looking through [`Error::Launch`].
    pub fn root(&self) -> &Error {
        match self {
            Error::Launch { source, .. } => source.root(),
            other => other,
        }
    }
}

/// A string that must not reach a log, an error message or `Debug` output.
///
/// Its `Debug` and `Display` print `[redacted]`; read the value with
/// [`Secret::expose`] at the one place that hands it to its consumer.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Returns the secret value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}
