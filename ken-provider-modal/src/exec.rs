//! Running commands in a sandbox through its task command router.
//!
//! Each exec gets a client-made UUIDv4 id. Output comes from two
//! `TaskExecStdioRead` streams (stdout and stderr), each reopened at its byte
//! offset after a retryable error; a clean end is end-of-file. Input goes through
//! `TaskExecStdinWrite` with offsets, always ending with `eof`, so a command
//! without input reads end-of-file at once.
//!
//! The router has no kill call, so every command runs under a small `sh` wrapper
//! that records its process group in [`EXEC_STATE_DIR`]; a kill is a second exec
//! that sends TERM, then KILL, to that group. The exec timeout is enforced the
//! same way by [`ExecProcess`]. A command run as another user gets a `setpriv`
//! prefix (see [`crate::user`]) after the wrapper, so it stays in that group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use ken_core::exec::{ExecProcess, ExecRequest, OutputChunk, OutputStream, ProcessKiller, Stdin};
use ken_core::{process_group, Error, Result, SandboxName};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::error::is_retryable;
use crate::proto::paths;
use crate::proto::task_command_router::{
    ExitStatus, TaskExecPollRequest, TaskExecPollResponse, TaskExecStartRequest, TaskExecStartResponse,
    TaskExecStderrConfig, TaskExecStdinWriteRequest, TaskExecStdinWriteResponse, TaskExecStdioFileDescriptor,
    TaskExecStdioReadRequest, TaskExecStdioReadResponse, TaskExecStdoutConfig, TaskExecWaitRequest,
    TaskExecWaitResponse,
};
use crate::retry::STDIO;
use crate::router::Router;
use crate::sandbox::check_env_name;
use crate::user::check_user;
use crate::ModalProvider;

/// Directory inside the sandbox with one process-group file per exec.
pub(crate) const EXEC_STATE_DIR: &str = "/tmp/.ken-exec";
/// Maximum wait for a sandbox's task before an exec.
const TASK_WAIT_LIMIT: Duration = Duration::from_secs(300);
/// Total size limit of a command's arguments.
const MAX_ARGS_BYTES: usize = 64 * 1024;
/// Size of one stdin write.
const STDIN_CHUNK: usize = 1024 * 1024;
/// Deadline of one `TaskExecWait` call; the server replies within about 60 s.
const WAIT_CALL_DEADLINE: Duration = Duration::from_secs(70);
/// Deadline of the other router calls.
const CALL_DEADLINE: Duration = Duration::from_secs(60);
/// Extra time past the caller's timeout after which the router itself stops an
/// exec, in case Ken's own kill did not get through.
const ROUTER_TIMEOUT_MARGIN: Duration = Duration::from_secs(60);
/// Upper bound on a whole kill.
const KILL_DEADLINE: Duration = Duration::from_secs(20);

/// The task, exec id and router that address one exec.
#[derive(Clone)]
struct ExecHandle {
    router: Arc<Router>,
    exec_id: String,
    sandbox: SandboxName,
}

impl ExecHandle {
    fn task_id(&self) -> String {
        self.router.task_id().to_owned()
    }
}

impl ModalProvider {
    pub(crate) async fn exec_impl(&self, sandbox: &SandboxName, request: ExecRequest) -> Result<ExecProcess> {
        if request.command.is_empty() {
            return Err(Error::invalid(
                "exec command",
                "[]",
                "give at least the program to run, for example [\"sh\", \"-c\", \"...\"]",
            ));
        }
        if let Some(user) = &request.user {
            check_user(user)?;
        }
        for key in request.env.keys() {
            check_env_name(key)?;
        }
        let router = self.router_for(sandbox).await?;
        let mut env = request.env;
        let mut user_prefix = Vec::new();
        if let Some(user) = &request.user {
            let found = self.exec_user(sandbox, router.task_id(), user).await?;
            user_prefix = found.command_prefix();
            if let Some(home) = found.home() {
                // NOTE: this also replaces a HOME set in the sandbox's own environment,
                // which `docker exec --user` would keep.
                env.entry("HOME".to_owned()).or_insert_with(|| home.to_owned());
            }
        }
        let exec_id = uuid::Uuid::new_v4().to_string();
        let pgid_file = format!("{EXEC_STATE_DIR}/{exec_id}.pgid");
        let mut command = vec!["sh".to_owned(), "-c".to_owned(), wrapper_script(&pgid_file), "sh".to_owned()];
        command.extend(user_prefix);
        command.extend(request.command.iter().cloned());
        let handle = ExecHandle {
            router,
            exec_id,
            sandbox: sandbox.clone(),
        };
        tracing::debug!(provider = "modal", sandbox.name = %sandbox, exec.id = %handle.exec_id, command = ?request.command, user = ?request.user, "starting exec");
        let router_timeout = request.timeout.map(|t| t + ROUTER_TIMEOUT_MARGIN);
        let parts = start(&handle, command, env, request.workdir, router_timeout, request.stdin).await?;
        let killer = Arc::new(ModalKiller {
            handle: handle.clone(),
            pgid_file,
            output_finished: parts.output_finished.clone(),
        });
        Ok(ExecProcess::new(parts.output, parts.exit, killer, request.timeout))
    }

    /// Returns the router of the sandbox's task, waiting for the task to start.
    async fn router_for(&self, sandbox: &SandboxName) -> Result<Arc<Router>> {
        let id = self.running_sandbox_id(sandbox).await?;
        let task_id = self.wait_for_task(sandbox, &id, TASK_WAIT_LIMIT).await?;
        Ok(self.state.routers.get(&self.control, &task_id))
    }

    /// Runs `command` (no wrapper, no stdin) to its end and returns its exit code
    /// and output, for internal work such as file transfers.
    pub(crate) async fn run_collect(
        &self,
        sandbox: &SandboxName,
        command: Vec<String>,
        stdin: Option<Bytes>,
    ) -> Result<(Option<i64>, Bytes, Bytes)> {
        let router = self.router_for(sandbox).await?;
        let handle = ExecHandle {
            router,
            exec_id: uuid::Uuid::new_v4().to_string(),
            sandbox: sandbox.clone(),
        };
        collect(&handle, command, stdin.map(Stdin::Bytes)).await
    }
}

/// The pieces of a started exec.
struct Parts {
    output: BoxStream<'static, Result<OutputChunk>>,
    exit: BoxFuture<'static, Result<Option<i64>>>,
    output_finished: Arc<AtomicBool>,
}

/// Starts an exec and returns its output stream and exit future.
async fn start(
    handle: &ExecHandle,
    command: Vec<String>,
    env: std::collections::BTreeMap<String, String>,
    workdir: Option<String>,
    timeout: Option<Duration>,
    stdin: Option<Stdin>,
) -> Result<Parts> {
    let args_bytes: usize = command.iter().map(String::len).sum();
    if args_bytes > MAX_ARGS_BYTES {
        return Err(Error::invalid(
            "exec command",
            format!("{args_bytes} bytes of arguments"),
            "Modal limits a command's arguments to 64 KiB in total; pass large data on standard input",
        ));
    }
    let sandbox = &handle.sandbox;
    let _: TaskExecStartResponse = handle
        .router
        .unary(
            paths::TASK_EXEC_START,
            TaskExecStartRequest {
                task_id: handle.task_id(),
                exec_id: handle.exec_id.clone(),
                command_args: command,
                stdout_config: TaskExecStdoutConfig::Pipe as i32,
                stderr_config: TaskExecStderrConfig::Pipe as i32,
                timeout_secs: timeout.map(|t| t.as_secs().clamp(1, u64::from(u32::MAX)) as u32),
                workdir,
                secret_ids: Vec::new(),
                env: env.into_iter().collect::<HashMap<_, _>>(),
            },
            CALL_DEADLINE,
        )
        .await
        .map_err(|e| {
            if e.code() == Code::NotFound {
                crate::sandbox::not_found(sandbox)
            } else {
                e.into_ken(format!("starting a command in sandbox \"{sandbox}\""))
            }
        })?;

    // A separate task writes stdin. It stops when the output stream is dropped, so
    // nothing keeps running after the caller drops the process.
    let cancel = CancellationToken::new();
    tokio::spawn(write_stdin(handle.clone(), stdin, cancel.clone()));
    let guard = cancel.drop_guard();

    let stdout = stdio_stream(handle.clone(), TaskExecStdioFileDescriptor::Stdout);
    let stderr = stdio_stream(handle.clone(), TaskExecStdioFileDescriptor::Stderr);
    let output_finished = Arc::new(AtomicBool::new(false));
    let finished = output_finished.clone();
    let end = stream::once(async move {
        finished.store(true, Ordering::SeqCst);
        None
    })
    .filter_map(futures::future::ready);
    let output = stream::select(stdout, stderr)
        .chain(end)
        .map(move |item| {
            let _keep = &guard;
            item
        })
        .boxed();
    let exit = wait_for_exit(handle.clone()).boxed();
    Ok(Parts {
        output,
        exit,
        output_finished,
    })
}

/// Runs `command` to its end and returns its exit code, stdout and stderr.
async fn collect(handle: &ExecHandle, command: Vec<String>, stdin: Option<Stdin>) -> Result<(Option<i64>, Bytes, Bytes)> {
    let mut parts = start(handle, command, Default::default(), None, None, stdin).await?;
    let mut stdout = BytesMut::new();
    let mut stderr = BytesMut::new();
    while let Some(chunk) = parts.output.next().await {
        let chunk = chunk?;
        match chunk.stream {
            OutputStream::Stdout => stdout.extend_from_slice(&chunk.bytes),
            OutputStream::Stderr => stderr.extend_from_slice(&chunk.bytes),
        }
    }
    let code = parts.exit.await?;
    Ok((code, stdout.freeze(), stderr.freeze()))
}

/// State of one output stream.
struct StdioState {
    handle: ExecHandle,
    fd: TaskExecStdioFileDescriptor,
    offset: u64,
    stream: Option<tonic::Streaming<TaskExecStdioReadResponse>>,
    failures: u32,
    done: bool,
}

/// Reads one output stream to its end, reopening it at the byte offset after a
/// retryable error. Reads only when polled, so unread output stays on the server.
fn stdio_stream(handle: ExecHandle, fd: TaskExecStdioFileDescriptor) -> BoxStream<'static, Result<OutputChunk>> {
    let state = StdioState {
        handle,
        fd,
        offset: 0,
        stream: None,
        failures: 0,
        done: false,
    };
    let which = match fd {
        TaskExecStdioFileDescriptor::Stdout => OutputStream::Stdout,
        TaskExecStdioFileDescriptor::Stderr => OutputStream::Stderr,
    };
    stream::unfold(state, move |mut state| async move {
        if state.done {
            return None;
        }
        loop {
            let status = match state.stream.as_mut() {
                None => {
                    let request = TaskExecStdioReadRequest {
                        task_id: state.handle.task_id(),
                        exec_id: state.handle.exec_id.clone(),
                        offset: state.offset,
                        file_descriptor: state.fd as i32,
                    };
                    match state.handle.router.server_stream(paths::TASK_EXEC_STDIO_READ, request).await {
                        Ok(opened) => {
                            state.stream = Some(opened);
                            continue;
                        }
                        Err(e) => e.status,
                    }
                }
                Some(open) => match open.message().await {
                    Ok(Some(item)) => {
                        if item.data.is_empty() {
                            continue;
                        }
                        state.offset += item.data.len() as u64;
                        state.failures = 0;
                        let chunk = OutputChunk {
                            stream: which,
                            bytes: item.data,
                        };
                        return Some((Ok(chunk), state));
                    }
                    Ok(None) => return None,
                    Err(status) => status,
                },
            };
            state.stream = None;
            let sandbox = &state.handle.sandbox;
            if is_retryable(status.code()) && state.failures < STDIO.retries {
                let wait = STDIO.delay(state.failures);
                tracing::debug!(provider = "modal", sandbox.name = %sandbox, exec.id = %state.handle.exec_id, stream = ?which, offset = state.offset, code = ?status.code(), retry_in = ?wait, "exec output stream failed; reopening at its offset");
                tokio::time::sleep(wait).await;
                state.failures += 1;
                continue;
            }
            tracing::warn!(provider = "modal", sandbox.name = %sandbox, exec.id = %state.handle.exec_id, stream = ?which, code = ?status.code(), message = status.message(), "exec output stream failed");
            state.done = true;
            let error = crate::error::RpcError::new(paths::TASK_EXEC_STDIO_READ, status)
                .into_ken(format!("reading the output of a command in sandbox \"{sandbox}\""));
            return Some((Err(error), state));
        }
    })
    .boxed()
}

/// Writes `stdin` with offsets, then end-of-file.
async fn write_stdin(handle: ExecHandle, stdin: Option<Stdin>, cancel: CancellationToken) {
    let work = async {
        let mut offset: u64 = 0;
        match stdin {
            None => {}
            Some(Stdin::Bytes(bytes)) => {
                for chunk in bytes.chunks(STDIN_CHUNK) {
                    send_stdin(&handle, offset, chunk.to_vec(), false).await?;
                    offset += chunk.len() as u64;
                }
            }
            Some(Stdin::Reader(mut reader)) => {
                let mut buffer = vec![0u8; STDIN_CHUNK];
                loop {
                    let read = reader
                        .read(&mut buffer)
                        .await
                        .map_err(|e| Error::io("reading standard input for an exec", e))?;
                    if read == 0 {
                        break;
                    }
                    send_stdin(&handle, offset, buffer[..read].to_vec(), false).await?;
                    offset += read as u64;
                }
            }
        }
        send_stdin(&handle, offset, Vec::new(), true).await
    };
    tokio::select! {
        result = work => {
            if let Err(error) = result {
                // Usual when the process exits without reading all of its input.
                tracing::debug!(provider = "modal", sandbox.name = %handle.sandbox, exec.id = %handle.exec_id, error = %error, "standard input of an exec closed early");
            }
        }
        _ = cancel.cancelled() => {}
    }
}

async fn send_stdin(handle: &ExecHandle, offset: u64, data: Vec<u8>, eof: bool) -> Result<()> {
    let _: TaskExecStdinWriteResponse = handle
        .router
        .unary(
            paths::TASK_EXEC_STDIN_WRITE,
            TaskExecStdinWriteRequest {
                task_id: handle.task_id(),
                exec_id: handle.exec_id.clone(),
                offset,
                data,
                eof,
            },
            CALL_DEADLINE,
        )
        .await
        .map_err(|e| e.into_ken(format!("writing standard input in sandbox \"{}\"", handle.sandbox)))?;
    Ok(())
}

/// Maps an exit status to an exit code: a signal is 128 + signal.
fn exit_code(status: ExitStatus) -> i64 {
    match status {
        ExitStatus::Code(code) => i64::from(code),
        ExitStatus::Signal(signal) => 128 + i64::from(signal),
    }
}

/// Calls `TaskExecWait` until the exec has ended.
async fn wait_for_exit(handle: ExecHandle) -> Result<Option<i64>> {
    loop {
        let response: std::result::Result<TaskExecWaitResponse, _> = handle
            .router
            .unary(
                paths::TASK_EXEC_WAIT,
                TaskExecWaitRequest {
                    task_id: handle.task_id(),
                    exec_id: handle.exec_id.clone(),
                },
                WAIT_CALL_DEADLINE,
            )
            .await;
        match response {
            Ok(TaskExecWaitResponse {
                exit_status: Some(status),
            }) => return Ok(Some(exit_code(status))),
            Ok(_) => continue,
            Err(e) if e.code() == Code::DeadlineExceeded => continue,
            // The sandbox ended while the command ran, and its execs with it.
            Err(e) if e.code() == Code::NotFound => {
                tracing::debug!(provider = "modal", sandbox.name = %handle.sandbox, exec.id = %handle.exec_id, "exec vanished with its sandbox; exit code unknown");
                return Ok(None);
            }
            Err(e) => {
                return Err(e.into_ken(format!(
                    "waiting for a command in sandbox \"{}\" to end",
                    handle.sandbox
                )))
            }
        }
    }
}



/// Returns the wrapper that creates [`EXEC_STATE_DIR`], records the process group
/// in `pgid_file` and `exec`s `"$@"`.
fn wrapper_script(pgid_file: &str) -> String {
    process_group::wrapper_script(pgid_file, &format!("mkdir -p {EXEC_STATE_DIR} 2>/dev/null; "), "")
}

/// Kills the process group of one exec with a second exec.
struct ModalKiller {
    handle: ExecHandle,
    pgid_file: String,
    output_finished: Arc<AtomicBool>,
}

#[async_trait]
impl ProcessKiller for ModalKiller {
    async fn kill(&self) -> Result<()> {
        let handle = &self.handle;
        let sandbox = &handle.sandbox;
        let polled: std::result::Result<TaskExecPollResponse, _> = handle
            .router
            .unary(
                paths::TASK_EXEC_POLL,
                TaskExecPollRequest {
                    task_id: handle.task_id(),
                    exec_id: handle.exec_id.clone(),
                },
                CALL_DEADLINE,
            )
            .await;
        let running = match polled {
            Ok(response) => response.exit_status.is_none(),
            Err(e) if e.code() == Code::NotFound => return Ok(()),
            Err(e) => return Err(e.into_ken(format!("checking a command in sandbox \"{sandbox}\" before killing it"))),
        };
        // Once the leader exited and the output closed, nothing of the group is
        // left, and its id may belong to another process by now.
        if !running && self.output_finished.load(Ordering::SeqCst) {
            return Ok(());
        }
        tracing::info!(provider = "modal", sandbox.name = %sandbox, exec.id = %handle.exec_id, "killing the process group of an exec");
        let file_wait_tenths = if running { 20 } else { 0 };
        let killer = ExecHandle {
            router: handle.router.clone(),
            exec_id: uuid::Uuid::new_v4().to_string(),
            sandbox: sandbox.clone(),
        };
        let command = vec!["sh".to_owned(), "-c".to_owned(), process_group::kill_script(&self.pgid_file, file_wait_tenths)];
        match tokio::time::timeout(KILL_DEADLINE, collect(&killer, command, None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) if error.is_not_found() => Ok(()),
            Ok(Err(error)) => {
                tracing::warn!(provider = "modal", sandbox.name = %sandbox, exec.id = %handle.exec_id, error = %error, "failed to kill an exec");
                Err(error)
            }
            Err(_) => Err(Error::Timeout {
                operation: format!("killing a command in sandbox \"{sandbox}\""),
                after: KILL_DEADLINE,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_128_plus() {
        assert_eq!(exit_code(ExitStatus::Code(3)), 3);
        assert_eq!(exit_code(ExitStatus::Signal(9)), 137);
    }

    #[test]
    fn wrapper_runs_the_command_and_records_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.pgid");
        let script = wrapper_script(file.to_str().unwrap());
        let output = std::process::Command::new("sh")
            .args(["-c", &script, "sh", "printf", "%s|%s", "a b", "$HOME"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout), "a b|$HOME");
        let recorded = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(recorded.trim().parse::<u32>().is_ok(), "recorded {recorded:?}");
    }
}
