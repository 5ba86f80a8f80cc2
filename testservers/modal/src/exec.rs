//! Execs: processes started in a sandbox by `TaskExecStart`, with their output
//! buffers, standard input and exit status.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::ChildStdin;
use tokio::sync::watch;

use crate::buffer::OutputBuffer;
use crate::inspect::ExecRecord;
use crate::runtime::{first_child, spawn_exec, ExecSpawn, Host};
use ken_provider_modal::proto::task_command_router::{ExitStatus, TaskExecStartRequest};

/// Standard input of an exec: the pipe, until EOF, and the bytes written so far.
#[derive(Debug)]
pub(crate) struct StdinState {
    pub(crate) pipe: Option<ChildStdin>,
    pub(crate) offset: u64,
    pub(crate) closed: bool,
}

/// One exec.
#[derive(Debug)]
pub(crate) struct ExecEntry {
    pub(crate) exec_id: String,
    pub(crate) sandbox_id: String,
    pub(crate) request: TaskExecStartRequest,
    pub(crate) workdir: String,
    pub(crate) stdout: OutputBuffer,
    pub(crate) stderr: OutputBuffer,
    pub(crate) stdin: tokio::sync::Mutex<StdinState>,
    pub(crate) exit: watch::Sender<Option<ExitStatus>>,
}

impl ExecEntry {
    pub(crate) fn record(&self) -> ExecRecord {
        let stdin_bytes = self
            .stdin
            .try_lock()
            .map(|stdin| stdin.offset)
            .unwrap_or_default();
        ExecRecord {
            exec_id: self.exec_id.clone(),
            task_id: self.request.task_id.clone(),
            sandbox_id: self.sandbox_id.clone(),
            args: self.request.command_args.clone(),
            workdir: self.workdir.clone(),
            stdin_bytes,
            stdout_bytes: self.stdout.len(),
            stderr_bytes: self.stderr.len(),
            exit: *self.exit.borrow(),
        }
    }
}

/// Sandbox details an exec needs.
pub(crate) struct ExecContext<'a> {
    pub(crate) host: &'a Arc<Host>,
    pub(crate) sandbox_id: &'a str,
    pub(crate) init_pid: u32,
    pub(crate) workdir: String,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) stdout: bool,
    pub(crate) stderr: Option<bool>,
    /// Cancelled when the sandbox stops; the exec is killed then.
    pub(crate) stopped: tokio_util::sync::CancellationToken,
}

/// Starts an exec and the tasks that collect its output and wait for its exit.
pub(crate) fn start_exec(
    context: ExecContext<'_>,
    request: TaskExecStartRequest,
) -> Result<Arc<ExecEntry>, String> {
    let mut child = spawn_exec(&ExecSpawn {
        init_pid: context.init_pid,
        args: &request.command_args,
        workdir: &context.workdir,
        env: &context.env,
        stdout: context.stdout,
        stderr: context.stderr,
    })?;
    let pgid = child
        .id()
        .ok_or_else(|| "the exec exited before it could be tracked".to_owned())?;
    context.host.update(context.sandbox_id, |resources| {
        resources.exec_groups.insert(pgid);
    });

    let entry = Arc::new(ExecEntry {
        exec_id: request.exec_id.clone(),
        sandbox_id: context.sandbox_id.to_owned(),
        workdir: context.workdir.clone(),
        request,
        stdout: OutputBuffer::new(),
        stderr: OutputBuffer::new(),
        stdin: tokio::sync::Mutex::new(StdinState {
            pipe: child.stdin.take(),
            offset: 0,
            closed: false,
        }),
        exit: watch::channel(None).0,
    });

    let stdout_done = collect(child.stdout.take(), entry.clone(), true);
    let stderr_done = collect(child.stderr.take(), entry.clone(), false);
    let timeout = entry
        .request
        .timeout_secs
        .filter(|secs| *secs > 0)
        .map(|secs| Duration::from_secs(u64::from(secs)));
    let host = context.host.clone();
    let sandbox_id = context.sandbox_id.to_owned();
    let waiter = entry.clone();
    tokio::spawn(async move {
        let exec_id = waiter.exec_id.clone();
        let timed_out = async {
            match timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let status = tokio::select! {
            status = child.wait() => status,
            () = timed_out => {
                tracing::info!(sandbox.id = %sandbox_id, exec.id = %exec_id, "exec timed out, killing its process groups");
                kill_groups(pgid);
                child.wait().await
            }
            () = context.stopped.cancelled() => {
                kill_groups(pgid);
                child.wait().await
            }
        };
        let exit = match status {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => ExitStatus::Code(code),
                (None, Some(signal)) => ExitStatus::Signal(signal),
                (None, None) => ExitStatus::Code(255),
            },
            Err(error) => {
                tracing::error!(sandbox.id = %sandbox_id, exec.id = %exec_id, %error, "waiting for an exec failed");
                ExitStatus::Code(255)
            }
        };
        host.update(&sandbox_id, |resources| {
            resources.exec_groups.remove(&pgid);
        });
        // Output that background processes still write keeps flowing; the exit
        // status is published once the main process is gone.
        tracing::debug!(sandbox.id = %sandbox_id, exec.id = %exec_id, ?exit, "exec finished");
        waiter.exit.send_replace(Some(exit));
        let _ = tokio::join!(stdout_done, stderr_done);
    });
    Ok(entry)
}

/// Kills the group `nsenter` leads on the host, and the session the command
/// started inside the sandbox, whose id is the host PID of `nsenter`'s child.
fn kill_groups(nsenter_pid: u32) {
    if let Some(command_pid) = first_child(nsenter_pid) {
        let _ = killpg(Pid::from_raw(command_pid as i32), Signal::SIGKILL);
    }
    let _ = killpg(Pid::from_raw(nsenter_pid as i32), Signal::SIGKILL);
}

/// Copies one output pipe into the exec's buffer until EOF, so that an exec whose
/// output no client reads never blocks on a full pipe. The buffer has no size limit.
fn collect<R>(pipe: Option<R>, entry: Arc<ExecEntry>, stdout: bool) -> tokio::task::JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let buffer = if stdout { &entry.stdout } else { &entry.stderr };
        if let Some(mut pipe) = pipe {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match pipe.read(&mut chunk).await {
                    Ok(0) => break,
                    Ok(n) => buffer.append(&chunk[..n]),
                    Err(error) => {
                        tracing::warn!(exec.id = %entry.exec_id, %error, "reading exec output failed");
                        break;
                    }
                }
            }
        }
        buffer.close();
    })
}
