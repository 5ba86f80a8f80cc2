//! Running one step or service of the startup plan inside the sandbox.
//!
//! Every command goes through a fixed `sh` wrapper, and the user's script, the log
//! path and the pid file path reach it as environment variables. The user's script
//! therefore needs no quoting, and task names never end up inside a shell line.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::run::Layout;
use super::tail_lines;
use crate::error::{Error, Result};
use crate::exec::{ExecRequest, ExitStatus};
use crate::manifest::{Manifest, Readiness, Task};
use crate::sandbox::Sandbox;

/// Number of log lines shown when a task fails.
pub(crate) const TAIL_LINES: usize = 30;

/// Timeout of one readiness probe attempt.
pub(crate) const PROBE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Timeout of Ken's own short commands: creating folders, starting a service in the
/// background, checking that it is alive, reading a log tail.
pub(crate) const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum wait between two readiness probe attempts.
const MAX_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Creates the log folder and the pid file folder, writable by every user.
pub(crate) const PREPARE_DIRS: &str = r#"mkdir -p "$KEN_LOG_DIR" "$KEN_RUN_DIR/services" &&
chmod 1777 "$KEN_LOG_DIR" "$KEN_RUN_DIR/services""#;

/// Runs a step's script with `sh -c`, with its stdout and stderr appended to its log.
pub(crate) const STEP_WRAPPER: &str = r#"script=$KEN_TASK_SCRIPT log=$KEN_TASK_LOG
unset KEN_TASK_SCRIPT KEN_TASK_LOG
exec sh -c "$script" >>"$log" 2>&1"#;

/// Starts a service's script with `sh -c` in a new session, detached from the exec:
/// stdin from /dev/null, stdout and stderr appended to its log, its pid written to
/// its pid file. The wrapper exits at once and the service is left to the
/// container's init.
///
/// `setsid` does not fork here because a background job of a non-interactive shell
/// is never a process group leader, so `$!` is the service's own pid.
pub(crate) const SERVICE_WRAPPER: &str = r#"script=$KEN_TASK_SCRIPT log=$KEN_TASK_LOG pidfile=$KEN_TASK_PIDFILE
unset KEN_TASK_SCRIPT KEN_TASK_LOG KEN_TASK_PIDFILE
command -v setsid >/dev/null || { echo "setsid not found; the image needs util-linux or busybox to run services" >&2; exit 127; }
: >>"$log" || exit 1
setsid sh -c "$script" </dev/null >>"$log" 2>&1 &
echo "$!" >"$pidfile""#;

/// Exits with 0 while the process in the pid file runs and is not a zombie.
///
/// `kill -0` fails with EPERM for another user's process when this does not run as
/// root, so the existence of `/proc/PID` counts as alive too.
pub(crate) const ALIVE_CHECK: &str = r#"pid=$(cat "$KEN_TASK_PIDFILE") || exit 1
kill -0 "$pid" 2>/dev/null || [ -d "/proc/$pid" ] || exit 1
! grep -qs '^State:[[:space:]]*Z' "/proc/$pid/status""#;

/// Prints the last [`TAIL_LINES`] lines of a task's log.
pub(crate) const TAIL_LOG: &str = r#"tail -n "$KEN_TAIL_LINES" -- "$KEN_TASK_LOG""#;

/// Output of a finished exec, with stdout and stderr interleaved in the order the
/// provider delivered them.
#[derive(Debug)]
pub(crate) struct CombinedOutput {
    pub(crate) status: ExitStatus,
    pub(crate) text: String,
}

/// Runs `request` to completion and returns its status and combined output.
pub(crate) async fn exec_combined(
    sandbox: &Sandbox,
    request: ExecRequest,
) -> Result<CombinedOutput> {
    let mut process = sandbox.exec(request).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = process.next_chunk().await {
        bytes.extend_from_slice(&chunk?.bytes);
    }
    let status = process.finish().await?;
    Ok(CombinedOutput {
        status,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// State shared by the tasks of one plan run.
pub(crate) struct TaskContext<'a> {
    pub(crate) sandbox: &'a Sandbox,
    pub(crate) manifest: &'a Manifest,
    pub(crate) layout: &'a Layout,
    /// `Some("0")` when the provider can exec as another user, else `None`. Ken's own
    /// commands (folders, liveness checks, log tails) run as this user. Root can
    /// check and read what a service running as any user writes.
    pub(crate) admin_user: Option<String>,
}

impl<'a> TaskContext<'a> {
    pub(crate) fn new(sandbox: &'a Sandbox, manifest: &'a Manifest, layout: &'a Layout) -> Self {
        let admin_user = sandbox
            .provider()
            .capabilities()
            .exec_user
            .then(|| "0".to_owned());
        TaskContext {
            sandbox,
            manifest,
            layout,
            admin_user,
        }
    }

    /// Returns the task's working directory: its `workdir`, resolved against the
    /// project directory when relative, or the project directory.
    fn workdir(&self, task: &Task) -> String {
        let project = self.manifest.project_dir();
        match &task.workdir {
            Some(dir) if dir.starts_with('/') => dir.clone(),
            Some(dir) => format!("{}/{}", project.trim_end_matches('/'), dir),
            None => project,
        }
    }

    /// Builds a request that runs `script` with `sh -c` as the task's user, in its
    /// working directory, with the manifest's environment and then the task's.
    fn task_request(&self, task: &Task, script: &str) -> ExecRequest {
        let mut env: BTreeMap<String, String> = self.manifest.env.clone();
        env.extend(task.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut request = ExecRequest::shell(script).workdir(self.workdir(task));
        request.env = env;
        request.user = task.user.clone();
        request
    }

    /// Builds a request for one of Ken's own short commands about `task`.
    fn control_request(&self, task: &Task, script: &str) -> ExecRequest {
        let mut request = ExecRequest::shell(script)
            .env("KEN_TASK_LOG", self.layout.log_file(&task.name))
            .env("KEN_TASK_PIDFILE", self.layout.pid_file(&task.name))
            .timeout(CONTROL_TIMEOUT);
        request.user = self.admin_user.clone();
        request
    }

    /// Runs a step to completion.
    pub(crate) async fn run_step(&self, task: &Task) -> Result<()> {
        let request = self
            .task_request(task, STEP_WRAPPER)
            .env("KEN_TASK_SCRIPT", &task.run)
            .env("KEN_TASK_LOG", self.layout.log_file(&task.name))
            .timeout(task.timeout);
        let output = exec_combined(self.sandbox, request).await?;
        if output.status.success() {
            return Ok(());
        }
        let status = if output.status.timed_out {
            format!(
                "timed out after {}",
                humantime::format_duration(task.timeout)
            )
        } else {
            output.status.to_string()
        };
        Err(Error::StepFailed {
            step: task.name.clone(),
            status,
            log_tail: self.log_tail(task, &output.text).await,
        })
    }

    /// Starts a service in the background and waits for its readiness probe, if it
    /// has one.
    pub(crate) async fn start_service(&self, task: &Task) -> Result<()> {
        let request = self
            .task_request(task, SERVICE_WRAPPER)
            .env("KEN_TASK_SCRIPT", &task.run)
            .env("KEN_TASK_LOG", self.layout.log_file(&task.name))
            .env("KEN_TASK_PIDFILE", self.layout.pid_file(&task.name))
            .timeout(CONTROL_TIMEOUT);
        let output = exec_combined(self.sandbox, request).await?;
        if !output.status.success() {
            return Err(Error::StepFailed {
                step: task.name.clone(),
                status: format!("could not be started in the background ({})", output.status),
                log_tail: self.log_tail(task, &output.text).await,
            });
        }
        tracing::debug!(pid_file = %self.layout.pid_file(&task.name), "service started in the background");
        match &task.ready {
            Some(readiness) => self.wait_until_ready(task, readiness).await,
            // NOTE: without a probe a service counts as ready once started, even if
            // it exits a moment later.
            None => Ok(()),
        }
    }

    /// Runs the readiness probe until it passes, the service exits, or the timeout
    /// passes. Waits 50 ms after the first failed attempt, growing by half up to 250 ms.
    async fn wait_until_ready(&self, task: &Task, readiness: &Readiness) -> Result<()> {
        let deadline = Instant::now() + readiness.timeout;
        let mut interval = Duration::from_millis(50);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let attempt = self
                .task_request(task, &readiness.probe.script())
                .timeout(PROBE_ATTEMPT_TIMEOUT);
            let probe = exec_combined(self.sandbox, attempt).await?;
            if probe.status.success() {
                tracing::debug!(attempts, "readiness probe passed");
                return Ok(());
            }
            if !self.is_alive(task).await? {
                return Err(Error::StepFailed {
                    step: task.name.clone(),
                    status: format!(
                        "exited before its readiness probe ({}) passed",
                        readiness.probe
                    ),
                    log_tail: self.log_tail(task, "").await,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                let mut log_tail = self.log_tail(task, "").await;
                let probe_output = tail_lines(&probe.text, 5);
                if !probe_output.trim().is_empty() {
                    log_tail.push_str("\n(last output of the readiness probe:)\n");
                    log_tail.push_str(&probe_output);
                }
                return Err(Error::StepFailed {
                    step: task.name.clone(),
                    status: format!(
                        "readiness probe ({}) did not pass within {} ({attempts} attempts)",
                        readiness.probe,
                        humantime::format_duration(readiness.timeout)
                    ),
                    log_tail,
                });
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval * 3 / 2).min(MAX_PROBE_INTERVAL);
        }
    }

    /// Checks that the service's process still runs.
    async fn is_alive(&self, task: &Task) -> Result<bool> {
        let output = exec_combined(self.sandbox, self.control_request(task, ALIVE_CHECK)).await?;
        Ok(output.status.success())
    }

    /// Returns the last lines of the task's log, followed by `extra` (output of the
    /// wrapper itself, such as "cannot create the log file") when it is not empty.
    /// A log that cannot be read is reported in the text in place of its lines.
    async fn log_tail(&self, task: &Task, extra: &str) -> String {
        let request = self
            .control_request(task, TAIL_LOG)
            .env("KEN_TAIL_LINES", TAIL_LINES.to_string());
        let mut tail = match exec_combined(self.sandbox, request).await {
            Ok(output) if output.status.success() => output.text,
            Ok(output) => {
                tracing::warn!(status = %output.status, "failed to read the log tail");
                format!(
                    "(could not read {}: {})",
                    self.layout.log_file(&task.name),
                    output.text.trim()
                )
            }
            Err(error) => {
                tracing::warn!(%error, "failed to read the log tail");
                format!(
                    "(could not read {}: {error})",
                    self.layout.log_file(&task.name)
                )
            }
        };
        if !extra.trim().is_empty() {
            if !tail.is_empty() && !tail.ends_with('\n') {
                tail.push('\n');
            }
            tail.push_str(extra);
        }
        tail_lines(&tail, TAIL_LINES)
    }
}
