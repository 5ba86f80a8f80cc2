//! The scheduler of the startup plan: it starts every task whose dependencies are
//! done, so independent tasks run in parallel.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tracing::Instrument;

use super::task::{TaskContext, PREPARE_DIRS};
use super::{LOG_DIR, RUN_DIR};
use crate::error::{Error, Result};
use crate::exec::ExecRequest;
use crate::manifest::{Manifest, Task, TaskKind};
use crate::phase::{EventSink, LaunchEvent};
use crate::sandbox::Sandbox;

/// The result of a finished startup plan.
#[derive(Debug, Clone, Default)]
pub struct PlanReport {
    /// Every step and service, in the order they finished (steps) or became ready
    /// (services).
    pub tasks: Vec<TaskTiming>,
}

/// How long one step or service took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTiming {
    /// Name of the step or service.
    pub name: String,
    /// Step or service.
    pub kind: TaskKind,
    /// For a step, the time from start to exit. For a service, the time from start
    /// until its readiness probe passed, or until it was started when it has no probe.
    pub duration: Duration,
}

/// Folders for logs and pid files inside the sandbox. Tests on the host use
/// temporary folders in place of [`LOG_DIR`] and [`RUN_DIR`].
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) log_dir: String,
    pub(crate) run_dir: String,
}

impl Layout {
    pub(crate) fn standard() -> Self {
        Layout {
            log_dir: LOG_DIR.to_owned(),
            run_dir: RUN_DIR.to_owned(),
        }
    }

    pub(crate) fn log_file(&self, task: &str) -> String {
        format!("{}/{task}.log", self.log_dir)
    }

    pub(crate) fn pid_file(&self, service: &str) -> String {
        format!("{}/services/{service}.pid", self.run_dir)
    }
}

/// Runs the startup plan of `manifest` inside `sandbox`.
///
/// It first creates [`LOG_DIR`] and `RUN_DIR/services` as root, with mode 1777 so
/// that services running as other users can write there. Then it starts every task
/// whose dependencies are done at once: a step is done when it exited with 0, a
/// service when it was started and its readiness probe passed. Each task's output
/// goes to `LOG_DIR/NAME.log`, and each service's pid to `RUN_DIR/services/NAME.pid`.
/// Services keep running after this returns.
///
/// Emits [`LaunchEvent::StepStarted`] and [`LaunchEvent::StepFinished`] for every
/// task.
///
/// # Errors
/// Returns the first failure, usually [`Error::StepFailed`] with the task's name and
/// the last lines of its log. Tasks still running at that moment are no longer
/// waited for, and their processes keep running in the sandbox, which the caller is
/// expected to destroy. A manifest that did not come from [`Manifest::parse`] may
/// also fail with [`Error::InvalidInput`] for a task name that cannot be a file name,
/// an unknown dependency or a dependency cycle.
pub async fn run_plan(
    sandbox: &Sandbox,
    manifest: &Manifest,
    events: &EventSink,
) -> Result<PlanReport> {
    run_plan_in(sandbox, manifest, events, &Layout::standard()).await
}

pub(crate) async fn run_plan_in(
    sandbox: &Sandbox,
    manifest: &Manifest,
    events: &EventSink,
    layout: &Layout,
) -> Result<PlanReport> {
    validate_tasks(manifest.tasks())?;
    let context = TaskContext::new(sandbox, manifest, layout);
    prepare_dirs(&context).await?;

    let mut waiting: Vec<&Task> = manifest.tasks().iter().collect();
    let mut done: HashSet<&str> = HashSet::new();
    let mut running = FuturesUnordered::new();
    let mut report = PlanReport::default();
    loop {
        let (ready, blocked): (Vec<&Task>, Vec<&Task>) = waiting.into_iter().partition(|task| {
            task.depends_on
                .iter()
                .all(|dependency| done.contains(dependency.as_str()))
        });
        waiting = blocked;
        for task in ready {
            events.emit(LaunchEvent::StepStarted {
                step: task.name.clone(),
            });
            let span = tracing::info_span!(
                "plan_task",
                sandbox.name = %sandbox.name(),
                phase = "plan",
                step = %task.name,
            );
            running.push(run_task(&context, task).instrument(span));
        }

        // validate_tasks guarantees that something is running while tasks wait.
        let Some((task, result)) = running.next().await else {
            break;
        };
        let duration = result?;
        done.insert(task.name.as_str());
        events.emit(LaunchEvent::StepFinished {
            step: task.name.clone(),
            duration,
        });
        report.tasks.push(TaskTiming {
            name: task.name.clone(),
            kind: task.kind,
            duration,
        });
    }
    Ok(report)
}

async fn run_task<'a>(context: &TaskContext<'a>, task: &'a Task) -> (&'a Task, Result<Duration>) {
    let started = Instant::now();
    let what = match task.kind {
        TaskKind::Step => "step",
        TaskKind::Service => "service",
    };
    tracing::info!(kind = what, "{what} started");
    let result = match task.kind {
        TaskKind::Step => context.run_step(task).await,
        TaskKind::Service => context.start_service(task).await,
    };
    let duration = started.elapsed();
    match &result {
        Ok(()) => {
            let outcome = if task.kind == TaskKind::Service {
                "ready"
            } else {
                "finished"
            };
            tracing::info!(
                kind = what,
                duration_ms = duration.as_millis() as u64,
                "{what} {outcome}"
            );
        }
        // The log tail stays out of the tracing output because it can contain
        // anything the task printed; the caller shows it to the user.
        Err(Error::StepFailed { status, .. }) => {
            tracing::warn!(kind = what, duration_ms = duration.as_millis() as u64, %status, "{what} failed");
        }
        Err(error) => {
            tracing::warn!(kind = what, duration_ms = duration.as_millis() as u64, %error, "{what} failed");
        }
    }
    (task, result.map(|()| duration))
}

async fn prepare_dirs(context: &TaskContext<'_>) -> Result<()> {
    let mut request = ExecRequest::shell(PREPARE_DIRS)
        .env("KEN_LOG_DIR", &context.layout.log_dir)
        .env("KEN_RUN_DIR", &context.layout.run_dir)
        .timeout(super::task::CONTROL_TIMEOUT);
    request.user = context.admin_user.clone();
    let output = super::exec_combined(context.sandbox, request).await?;
    if output.status.success() {
        return Ok(());
    }
    let step = format!(
        "creating {} and {}/services",
        context.layout.log_dir, context.layout.run_dir
    );
    tracing::warn!(
        sandbox.name = %context.sandbox.name(),
        phase = "plan",
        step = %step,
        status = %output.status,
        "failed to create the log and run folders"
    );
    Err(Error::StepFailed {
        step,
        status: output.status.to_string(),
        log_tail: super::tail_lines(&output.text, super::task::TAIL_LINES),
    })
}

/// Checks what [`Manifest::parse`] checks already, for manifests built in code:
/// names usable as file names, unique, known dependencies and no cycle.
fn validate_tasks(tasks: &[Task]) -> Result<()> {
    let mut names: HashSet<&str> = HashSet::new();
    for task in tasks {
        let valid = !task.name.is_empty()
            && task.name.len() <= 64
            && task
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(Error::invalid(
                "step name",
                &task.name,
                "use 1 to 64 letters, digits, '-' and '_'; the name is also the log file's name",
            ));
        }
        if !names.insert(task.name.as_str()) {
            return Err(Error::invalid(
                "step name",
                &task.name,
                "names of steps and services must be unique",
            ));
        }
    }
    for task in tasks {
        if let Some(unknown) = task.depends_on.iter().find(|d| !names.contains(d.as_str())) {
            return Err(Error::invalid(
                "dependency",
                unknown,
                format!(
                    "{:?} depends on it, but no step or service has that name",
                    task.name
                ),
            ));
        }
    }

    // Kahn's algorithm: whatever is never freed is on a cycle or waits on one.
    let mut remaining: BTreeMap<&str, usize> = tasks
        .iter()
        .map(|t| (t.name.as_str(), t.depends_on.len()))
        .collect();
    let mut free: Vec<&str> = remaining
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(name, _)| *name)
        .collect();
    while let Some(name) = free.pop() {
        remaining.remove(name);
        for task in tasks
            .iter()
            .filter(|t| t.depends_on.iter().any(|d| d == name))
        {
            if let Some(count) = remaining.get_mut(task.name.as_str()) {
                *count -= task.depends_on.iter().filter(|d| *d == name).count();
                if *count == 0 {
                    free.push(task.name.as_str());
                }
            }
        }
    }
    if !remaining.is_empty() {
        let names: Vec<&str> = remaining.keys().copied().collect();
        return Err(Error::invalid(
            "startup plan",
            names.join(", "),
            "these steps and services are on a dependency cycle or depend on one; remove a `depends_on` entry",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
