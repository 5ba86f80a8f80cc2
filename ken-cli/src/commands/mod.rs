//! One module per `ken` command. Each has an `Args` struct for clap and a `run`
//! function that returns the exit status.

pub(crate) mod attach;
pub(crate) mod exec;
pub(crate) mod gc;
pub(crate) mod list;
pub(crate) mod logs;
pub(crate) mod new;
pub(crate) mod policy;
pub(crate) mod prompt;
pub(crate) mod rm;
pub(crate) mod urls;

use ken_core::SandboxName;

/// Parses a sandbox name on the command line, so that an invalid one is a usage
/// error (exit status 2) that names it.
pub(crate) fn sandbox_name(value: &str) -> Result<SandboxName, ken_core::Error> {
    SandboxName::new(value)
}
