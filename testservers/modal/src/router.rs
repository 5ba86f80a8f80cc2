//! Handlers of `modal.task_command_router.TaskCommandRouter`: exec start, output,
//! input and exit status.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::BoxBody;
use tonic::Status;

use crate::checks::Call;
use crate::exec::{start_exec, ExecContext, ExecEntry};
use crate::ids::is_uuid_v4;
use crate::inspect::ServiceKind;
use crate::pacing::Pacer;
use crate::rpc::{server_streaming, unary, unimplemented, ResponseStream};
use crate::sandbox::{SandboxEntry, MAX_TIMEOUT_SECS};
use crate::state::State;
use ken_provider_modal::proto::paths;
use ken_provider_modal::proto::task_command_router::{
    ExitStatus, TaskExecPollRequest, TaskExecPollResponse, TaskExecStartRequest, TaskExecStartResponse,
    TaskExecStderrConfig, TaskExecStdinWriteRequest, TaskExecStdinWriteResponse, TaskExecStdioFileDescriptor,
    TaskExecStdioReadRequest, TaskExecStdioReadResponse, TaskExecStdoutConfig, TaskExecWaitRequest,
    TaskExecWaitResponse,
};

/// Limit on the total size of an exec's arguments.
const MAX_ARGS_BYTES: usize = 64 * 1024;
/// Largest chunk of output in one stream item.
const MAX_CHUNK: usize = 64 * 1024;
/// Maximum time a `TaskExecWait` call is held open before the client must call again.
const MAX_WAIT: Duration = Duration::from_secs(55);

/// Routes a router request by its path.
pub(crate) async fn route(state: Arc<State>, request: http::Request<BoxBody>) -> http::Response<BoxBody> {
    let kind = ServiceKind::Router;
    let path = request.uri().path().to_owned();
    match path.as_str() {
        paths::TASK_EXEC_START => unary(state, kind, request, exec_start).await,
        paths::TASK_EXEC_STDIO_READ => server_streaming(state, kind, request, stdio_read).await,
        paths::TASK_EXEC_STDIN_WRITE => unary(state, kind, request, stdin_write).await,
        paths::TASK_EXEC_WAIT => unary(state, kind, request, exec_wait).await,
        paths::TASK_EXEC_POLL => unary(state, kind, request, exec_poll).await,
        _ => unimplemented(&state, kind, &path),
    }
}

fn invalid(state: &State, call: &Call, message: impl Into<String>) -> Status {
    let message = message.into();
    state.violation(&call.method, message.clone());
    Status::invalid_argument(message)
}

/// Returns the task's sandbox after checking that the caller's JWT is for it.
fn sandbox_for(state: &State, call: &Call, task_id: &str) -> Result<Arc<SandboxEntry>, Status> {
    if call.router_task.as_deref() != Some(task_id) {
        let message = format!("the router token was issued for another task than {task_id}");
        state.violation(&call.method, message.clone());
        return Err(Status::permission_denied(message));
    }
    state.sandbox_of_task(task_id)
}

fn exec_for(state: &State, call: &Call, task_id: &str, exec_id: &str) -> Result<Arc<ExecEntry>, Status> {
    let sandbox = sandbox_for(state, call, task_id)?;
    let exec = sandbox.execs().get(exec_id).cloned();
    exec.ok_or_else(|| Status::not_found(format!("Exec {exec_id} not found in task {task_id}")))
}

async fn exec_start(
    state: Arc<State>,
    call: Call,
    request: TaskExecStartRequest,
) -> Result<TaskExecStartResponse, Status> {
    let sandbox = sandbox_for(&state, &call, &request.task_id)?;
    if !is_uuid_v4(&request.exec_id) {
        return Err(invalid(&state, &call, format!("exec_id {:?} is not a UUIDv4", request.exec_id)));
    }
    if request.command_args.is_empty() {
        return Err(invalid(&state, &call, "command_args is empty"));
    }
    let args_bytes: usize = request.command_args.iter().map(String::len).sum();
    if args_bytes > MAX_ARGS_BYTES {
        return Err(invalid(
            &state,
            &call,
            format!("command_args total {args_bytes} bytes, over the limit of {MAX_ARGS_BYTES}"),
        ));
    }
    let stdout = TaskExecStdoutConfig::try_from(request.stdout_config)
        .map_err(|_| invalid(&state, &call, format!("unknown stdout_config {}", request.stdout_config)))?;
    let stderr = TaskExecStderrConfig::try_from(request.stderr_config)
        .map_err(|_| invalid(&state, &call, format!("unknown stderr_config {}", request.stderr_config)))?;
    if stdout == TaskExecStdoutConfig::Devnull {
        state.violation(
            &call.method,
            "stdout_config is DEVNULL (0), the value of an unset field, so the exec's output is discarded",
        );
    }
    if let Some(timeout) = request.timeout_secs {
        if timeout > MAX_TIMEOUT_SECS {
            return Err(invalid(&state, &call, format!("timeout_secs {timeout} is over 24 h")));
        }
    }
    if let Some(workdir) = &request.workdir {
        if !workdir.starts_with('/') {
            return Err(invalid(&state, &call, format!("workdir {workdir:?} must be an absolute path")));
        }
    }

    if let Some(existing) = sandbox.execs().get(&request.exec_id) {
        return if existing.request == request {
            Ok(TaskExecStartResponse {})
        } else {
            Err(Status::already_exists(format!(
                "Exec {} exists with another command",
                request.exec_id
            )))
        };
    }
    let Some(running) = sandbox.running().clone() else {
        return Err(Status::failed_precondition(format!("Task {} is not running", request.task_id)));
    };
    let built = sandbox
        .image
        .progress()
        .built
        .clone()
        .ok_or_else(|| Status::internal("the sandbox's image has no file system"))?;

    let mut env = sandbox.base_env(&built);
    {
        let inner = state.lock();
        for id in &request.secret_ids {
            let secret = inner
                .secrets
                .get(id)
                .ok_or_else(|| Status::not_found(format!("Secret {id} not found")))?;
            env.extend(secret.iter().map(|(key, value)| (key.clone(), value.expose().to_owned())));
        }
    }
    env.extend(request.env.iter().map(|(key, value)| (key.clone(), value.clone())));
    let env = dedup_env(env);

    let Some(init_pid) = running.init_pid else {
        return Err(Status::failed_precondition(format!("Task {} has finished", request.task_id)));
    };
    let context = ExecContext {
        host: &state.host,
        sandbox_id: &sandbox.id,
        init_pid,
        workdir: request.workdir.clone().unwrap_or_else(|| sandbox.workdir(&built)),
        env,
        stdout: stdout == TaskExecStdoutConfig::Pipe,
        stderr: match stderr {
            TaskExecStderrConfig::Devnull => None,
            TaskExecStderrConfig::Pipe => Some(false),
            TaskExecStderrConfig::Stdout => Some(true),
        },
        stopped: sandbox.stopped.clone(),
    };
    let exec_id = request.exec_id.clone();
    let exec = start_exec(context, request)
        .map_err(|message| Status::internal(format!("exec {exec_id} failed to start: {message}")))?;
    sandbox.touch();
    tracing::info!(sandbox.id = %sandbox.id, exec.id = %exec_id, "exec started");
    sandbox.execs().insert(exec_id, exec);
    Ok(TaskExecStartResponse {})
}

/// Keeps the last value of every variable, in first-seen order.
fn dedup_env(env: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut result: Vec<(String, String)> = Vec::with_capacity(env.len());
    for (key, value) in env {
        match result.iter_mut().find(|(existing, _)| *existing == key) {
            Some(entry) => entry.1 = value,
            None => result.push((key, value)),
        }
    }
    result
}

async fn stdio_read(
    state: Arc<State>,
    call: Call,
    request: TaskExecStdioReadRequest,
) -> Result<ResponseStream<TaskExecStdioReadResponse>, Status> {
    let exec = exec_for(&state, &call, &request.task_id, &request.exec_id)?;
    let descriptor = TaskExecStdioFileDescriptor::try_from(request.file_descriptor)
        .map_err(|_| invalid(&state, &call, format!("unknown file_descriptor {}", request.file_descriptor)))?;
    let behavior = state.lock().streams.clone();
    let mut pacer = Pacer::new(&behavior, None);
    let mut offset = usize::try_from(request.offset).unwrap_or(usize::MAX);

    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let buffer = match descriptor {
            TaskExecStdioFileDescriptor::Stdout => &exec.stdout,
            TaskExecStdioFileDescriptor::Stderr => &exec.stderr,
        };
        let mut progress = buffer.subscribe();
        if behavior.empty_batches && sender.send(Ok(TaskExecStdioReadResponse::default())).await.is_err() {
            return;
        }
        loop {
            progress.borrow_and_update();
            let (chunk, at_end) = buffer.read(offset, MAX_CHUNK);
            if !chunk.is_empty() {
                if pacer.end_before_item() {
                    break;
                }
                offset += chunk.len();
                let item = TaskExecStdioReadResponse { data: chunk.into() };
                if sender.send(Ok(item)).await.is_err() {
                    return;
                }
                continue;
            }
            if at_end {
                return;
            }
            tokio::select! {
                changed = progress.changed() => if changed.is_err() { return },
                () = pacer.until_deadline() => break,
            }
        }
        // A clean end means EOF on this stream, so an early end is an error the
        // client resumes from its byte offset.
        let _ = sender
            .send(Err(Status::unavailable("exec output stream interrupted; resume from your byte offset")))
            .await;
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

async fn stdin_write(
    state: Arc<State>,
    call: Call,
    request: TaskExecStdinWriteRequest,
) -> Result<TaskExecStdinWriteResponse, Status> {
    let exec = exec_for(&state, &call, &request.task_id, &request.exec_id)?;
    let mut stdin = exec.stdin.lock().await;
    let end = request.offset + request.data.len() as u64;
    if request.offset > stdin.offset {
        return Err(invalid(
            &state,
            &call,
            format!(
                "stdin offset {} is past the {} bytes written so far",
                request.offset, stdin.offset
            ),
        ));
    }
    if stdin.closed {
        if end <= stdin.offset && request.eof {
            return Ok(TaskExecStdinWriteResponse {});
        }
        if !request.data.is_empty() && end > stdin.offset {
            return Err(Status::failed_precondition("stdin of this exec is closed"));
        }
        return Ok(TaskExecStdinWriteResponse {});
    }
    // A retried write overlaps bytes already written; only the rest is new.
    let skip = (stdin.offset - request.offset).min(request.data.len() as u64) as usize;
    let fresh = &request.data[skip..];
    if !fresh.is_empty() {
        if let Some(pipe) = stdin.pipe.as_mut() {
            if let Err(error) = pipe.write_all(fresh).await {
                tracing::debug!(exec.id = %exec.exec_id, %error, "exec closed its standard input");
            }
        }
        stdin.offset += fresh.len() as u64;
    }
    if request.eof {
        stdin.closed = true;
        if let Some(mut pipe) = stdin.pipe.take() {
            let _ = pipe.shutdown().await;
        }
    }
    Ok(TaskExecStdinWriteResponse {})
}

async fn exec_wait(
    state: Arc<State>,
    call: Call,
    request: TaskExecWaitRequest,
) -> Result<TaskExecWaitResponse, Status> {
    let exec = exec_for(&state, &call, &request.task_id, &request.exec_id)?;
    let mut exit = exec.exit.subscribe();
    let wait = async move { exit.wait_for(Option::is_some).await.map(|status| *status) };
    match tokio::time::timeout(MAX_WAIT, wait).await {
        Ok(Ok(exit_status)) => Ok(TaskExecWaitResponse { exit_status }),
        Ok(Err(_)) => Err(Status::internal("the exec's waiter stopped")),
        Err(_) => Err(Status::deadline_exceeded("the exec is still running; call TaskExecWait again")),
    }
}

async fn exec_poll(
    state: Arc<State>,
    call: Call,
    request: TaskExecPollRequest,
) -> Result<TaskExecPollResponse, Status> {
    let exec = exec_for(&state, &call, &request.task_id, &request.exec_id)?;
    let exit_status: Option<ExitStatus> = *exec.exit.borrow();
    Ok(TaskExecPollResponse { exit_status })
}
