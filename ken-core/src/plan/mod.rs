//! The startup plan: its executor ([`run_plan`]), readiness probes and helpers shared
//! with the seeders and the repository clone.

use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::exec::{shell_quote, ExecRequest};
use crate::sandbox::{SandboxName, SandboxProvider, SandboxProviderExt};

mod run;
mod task;
#[cfg(test)]
pub(crate) mod testing;

pub use run::{run_plan, PlanReport, TaskTiming};
pub(crate) use task::exec_combined;

/// Folder inside the sandbox that contains the combined stdout and stderr of every
/// step and service, one `NAME.log` file each (see [`log_file`]).
pub const LOG_DIR: &str = "/var/log/ken";

/// Folder inside the sandbox for Ken's runtime state. The pid of each service is in
/// `services/NAME.pid` (see [`pid_file`]).
pub const RUN_DIR: &str = "/run/ken";

/// Returns the path of the log file of the step or service `task` inside the sandbox.
pub fn log_file(task: &str) -> String {
    format!("{LOG_DIR}/{task}.log")
}

/// Returns the path of the pid file of the service `service` inside the sandbox.
pub fn pid_file(service: &str) -> String {
    format!("{RUN_DIR}/services/{service}.pid")
}

/// A readiness check, run inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// A TCP connection to `127.0.0.1:port` succeeds.
    Tcp {
        /// The port.
        port: u16,
    },
    /// An HTTP GET of `http://127.0.0.1:port/path` returns a 2xx or 3xx status.
    Http {
        /// The port.
        port: u16,
        /// The path, starting with `/`.
        path: String,
    },
    /// A shell command exits with 0.
    Command {
        /// The command, run with `sh -c`.
        command: String,
    },
}

impl Probe {
    /// Returns the shell script that runs the probe once. It needs `bash` in the image
    /// for the TCP and HTTP probes, because it uses bash's `/dev/tcp`.
    pub fn script(&self) -> String {
        match self {
            Probe::Tcp { port } => format!(
                "exec bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null"
            ),
            Probe::Http { port, path } => {
                let request = format!("GET {path} HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n");
                let script = format!(
                    "exec 3<>/dev/tcp/127.0.0.1/{port} || exit 1; printf '{request}' >&3; \
                     read -r _ status _ <&3; case \"$status\" in 2??|3??) exit 0;; *) exit 1;; esac"
                );
                format!("exec bash -c {} 2>/dev/null", shell_quote(&script))
            }
            Probe::Command { command } => command.clone(),
        }
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Tcp { port } => write!(f, "tcp port {port}"),
            Probe::Http { port, path } => write!(f, "http://127.0.0.1:{port}{path}"),
            Probe::Command { command } => write!(f, "command `{command}`"),
        }
    }
}

/// Runs `probe` inside the sandbox until it passes or `timeout` passes.
pub async fn wait_for_probe<P: SandboxProvider + ?Sized>(
    provider: &P,
    sandbox: &SandboxName,
    probe: &Probe,
    timeout: Duration,
    what: &str,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = Duration::from_millis(50);
    loop {
        let attempt = ExecRequest::shell(probe.script()).timeout(Duration::from_secs(5));
        let output = provider.exec_output(sandbox, attempt).await?;
        if output.status.success() {
            return Ok(());
        }
        if tokio::time::Instant::now() + interval > deadline {
            let mut log = output.stdout_text();
            log.push_str(&output.stderr_text());
            return Err(Error::StepFailed {
                step: what.to_owned(),
                status: format!("readiness probe ({probe}) did not pass within {}", humantime::format_duration(timeout)),
                log_tail: tail_lines(&log, 20),
            });
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 3 / 2).min(Duration::from_millis(250));
    }
}

/// Returns the last `count` lines of `text`.
pub fn tail_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(count);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_keeps_the_end() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
        assert_eq!(tail_lines("", 5), "");
    }
}
