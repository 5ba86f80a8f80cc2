//! Running commands in a sandbox through the engine's exec API.
//!
//! Every command runs under a small `sh` wrapper that writes the process group id
//! to `/run/ken/exec/<key>.pgid` and then `exec`s the command, so the command keeps
//! the wrapper's pid. Runc makes each exec process the leader of its own session
//! and process group, so the wrapper's pid is the group id. Where the wrapper finds
//! that it does not lead its group, it starts the command under `setsid -w`
//! instead. Killing then means a second exec, as root, that signals the whole
//! group.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt};
use ken_core::exec::{ExecProcess, ExecRequest, OutputChunk, OutputStream, ProcessKiller, Stdin};
use ken_core::{process_group, Error, Result, SandboxName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error;
use crate::DockerProvider;

/// Directory inside the sandbox that contains one process-group file per exec.
/// Created with mode 1777 when the sandbox starts, so every user can write there.
// NOTE: only a kill removes a file, so a sandbox collects one small file per exec
// that ended by itself, for as long as it lives.
pub(crate) const EXEC_STATE_DIR: &str = "/run/ken/exec";

/// Upper bound on a whole kill, so that [`ProcessKiller::kill`] returns promptly
/// even when the engine is slow.
const KILL_DEADLINE: Duration = Duration::from_secs(10);

impl DockerProvider {
    pub(crate) async fn exec_impl(&self, sandbox: &SandboxName, request: ExecRequest) -> Result<ExecProcess> {
        if request.command.is_empty() {
            return Err(Error::invalid(
                "exec command",
                "[]",
                "give at least the program to run, for example [\"sh\", \"-c\", \"...\"]",
            ));
        }
        let mut env = Vec::with_capacity(request.env.len());
        for (key, value) in &request.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(Error::invalid(
                    "environment variable name",
                    key.as_str(),
                    "use a non-empty name without `=`",
                ));
            }
            env.push(format!("{key}={value}"));
        }

        let container = Self::container_name(sandbox);
        let key = new_exec_key();
        let pgid_file = format!("{EXEC_STATE_DIR}/{key}.pgid");
        let keep_pwd = request.env.contains_key("PWD");
        let mut cmd = vec![
            "sh".to_owned(),
            "-c".to_owned(),
            process_group::wrapper_script(&pgid_file, "", if keep_pwd { "" } else { "unset PWD; " }),
            "sh".to_owned(),
        ];
        cmd.extend(request.command.iter().cloned());

        let options = CreateExecOptions {
            attach_stdin: Some(request.stdin.is_some()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            env: Some(env),
            cmd: Some(cmd),
            user: request.user.clone(),
            working_dir: request.workdir.clone(),
            ..Default::default()
        };
        let exec_id = self.create_exec(sandbox, &container, options).await?;
        tracing::debug!(provider = "docker", sandbox.name = %sandbox, exec.id = %exec_id, command = ?request.command, "starting exec");

        let started = self
            .docker
            .start_exec(&exec_id, Some(StartExecOptions::default()))
            .await
            .map_err(|e| error::backend(format!("failed to start a command in sandbox \"{sandbox}\""), e))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(Error::backend(
                error::SERVICE,
                format!("the engine started a command in sandbox \"{sandbox}\" detached, so its output is lost"),
            ));
        };

        if let Some(stdin) = request.stdin {
            tokio::spawn(write_stdin(stdin, input, sandbox.clone()));
        }

        let output_finished = Arc::new(AtomicBool::new(false));
        let output = output_stream(output, sandbox.clone(), output_finished.clone());
        let exit = wait_for_exit(self.docker.clone(), exec_id.clone(), sandbox.clone()).boxed();
        let killer = Arc::new(DockerKiller {
            provider: self.clone(),
            sandbox: sandbox.clone(),
            exec_id,
            pgid_file,
            output_finished,
        });
        Ok(ExecProcess::new(output, exit, killer, request.timeout))
    }

    /// Creates an exec instance and returns its id.
    async fn create_exec(
        &self,
        sandbox: &SandboxName,
        container: &str,
        options: CreateExecOptions<String>,
    ) -> Result<String> {
        match self.docker.create_exec(container, options).await {
            Ok(created) => Ok(created.id),
            Err(e) if error::is_not_found(&e) => Err(crate::sandbox_not_found(sandbox)),
            Err(e) if error::is_conflict(&e) => Err(error::backend(
                format!("sandbox \"{sandbox}\" is not running, so no command can start in it; destroy it and launch a new one"),
                e,
            )),
            Err(e) => Err(error::backend(format!("failed to create a command in sandbox \"{sandbox}\""), e)),
        }
    }

    /// Runs `script` with `sh -c` as root in the container `container` and returns
    /// its exit code and its combined output.
    pub(crate) async fn run_as_root(&self, container: &str, script: &str) -> Result<(Option<i64>, String)> {
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            user: Some("0".to_owned()),
            cmd: Some(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(container, options)
            .await
            .map_err(|e| error::backend(format!("failed to create a command in container {container}"), e))?;
        let started = self
            .docker
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await
            .map_err(|e| error::backend(format!("failed to start a command in container {container}"), e))?;
        let mut text = String::new();
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(item) = output.next().await {
                let item =
                    item.map_err(|e| error::backend(format!("failed to read command output from {container}"), e))?;
                text.push_str(&String::from_utf8_lossy(item.as_ref()));
            }
        }
        let code = exit_code(&self.docker, &created.id).await.map_err(|e| {
            error::backend(format!("failed to read the exit code of a command in container {container}"), e)
        })?;
        Ok((code, text))
    }
}


/// Returns a key for one exec, unique within the sandbox.
fn new_exec_key() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let digest = Sha256::digest(format!("{}:{nanos}:{count}", std::process::id()));
    hex::encode(&digest[..12])
}

/// Copies `stdin` into the exec's input, then closes it so the process reads
/// end-of-file.
async fn write_stdin(stdin: Stdin, mut input: std::pin::Pin<Box<dyn AsyncWrite + Send>>, sandbox: SandboxName) {
    let result = async {
        match stdin {
            Stdin::Bytes(bytes) => input.write_all(&bytes).await?,
            Stdin::Reader(mut reader) => {
                tokio::io::copy(&mut reader, &mut input).await?;
            }
        }
        input.shutdown().await
    }
    .await;
    if let Err(e) = result {
        // Usual when the process exits without reading all of its input.
        tracing::debug!(provider = "docker", sandbox.name = %sandbox, error = %e, "standard input of an exec closed early");
    }
}

/// Turns the engine's demultiplexed output into [`OutputChunk`]s.
///
/// The stream reads from the connection only when polled, so a process that
/// writes faster than its caller reads blocks on its full pipe instead of filling
/// memory here. What is buffered is bollard's read buffer and at most one frame,
/// which Docker 20.10 keeps to 32 KiB or less (`exec_output_chunks_are_bounded`
/// in `tests/docker.rs` checks it). The stream sets `finished` once the engine
/// closed the output.
fn output_stream(
    output: std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>>,
    sandbox: SandboxName,
    finished: Arc<AtomicBool>,
) -> BoxStream<'static, Result<OutputChunk>> {
    let chunks = output.filter_map(move |item| {
        let chunk = match item {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => Some(Ok(OutputChunk {
                stream: OutputStream::Stdout,
                bytes: message,
            })),
            Ok(LogOutput::StdErr { message }) => Some(Ok(OutputChunk {
                stream: OutputStream::Stderr,
                bytes: message,
            })),
            Ok(LogOutput::StdIn { .. }) => None,
            Err(e) => Some(Err(error::backend(
                format!("failed to read the output of a command in sandbox \"{sandbox}\""),
                e,
            ))),
        };
        futures::future::ready(chunk)
    });
    let end = stream::once(async move {
        finished.store(true, Ordering::SeqCst);
        None
    })
    .filter_map(futures::future::ready);
    chunks.chain(end).boxed()
}

/// Waits until the engine reports the exec as finished and returns its exit code.
async fn wait_for_exit(docker: Docker, exec_id: String, sandbox: SandboxName) -> Result<Option<i64>> {
    match exit_code(&docker, &exec_id).await {
        Ok(code) => Ok(code),
        // The sandbox was removed while the command ran, and its exec records with it.
        Err(e) if error::is_not_found(&e) => {
            tracing::debug!(provider = "docker", sandbox.name = %sandbox, exec.id = %exec_id, "exec vanished with its sandbox; exit code unknown");
            Ok(None)
        }
        Err(e) => Err(error::backend(
            format!("failed to read the exit code of a command in sandbox \"{sandbox}\""),
            e,
        )),
    }
}

/// Polls exec inspect until the exec is no longer running and returns its exit
/// code. Usually the first poll is enough, because callers wait for the output
/// to end first.
async fn exit_code(docker: &Docker, exec_id: &str) -> Result<Option<i64>, bollard::errors::Error> {
    let mut delay = Duration::from_millis(5);
    loop {
        let inspect = docker.inspect_exec(exec_id).await?;
        if inspect.running != Some(true) {
            return Ok(inspect.exit_code);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Kills the process group of one exec with a second exec.
struct DockerKiller {
    provider: DockerProvider,
    sandbox: SandboxName,
    exec_id: String,
    pgid_file: String,
    output_finished: Arc<AtomicBool>,
}

#[async_trait]
impl ProcessKiller for DockerKiller {
    async fn kill(&self) -> Result<()> {
        let sandbox = &self.sandbox;
        let running = match self.provider.docker.inspect_exec(&self.exec_id).await {
            Ok(inspect) => inspect.running == Some(true),
            Err(e) if error::is_not_found(&e) => return Ok(()),
            Err(e) => {
                return Err(error::backend(
                    format!("failed to inspect a command in sandbox \"{sandbox}\" before killing it"),
                    e,
                ));
            }
        };
        // Once the leader exited and the output closed, nothing of the group is
        // left that Ken can see, and its id may belong to another process by now.
        if !running && self.output_finished.load(Ordering::SeqCst) {
            return Ok(());
        }

        tracing::info!(provider = "docker", sandbox.name = %sandbox, exec.id = %self.exec_id, "killing the process group of an exec");
        // Right after start the wrapper may not have written its file yet, so a
        // running exec gets up to 2 s for that.
        let file_wait_tenths = if running { 20 } else { 0 };
        let script = process_group::kill_script(&self.pgid_file, file_wait_tenths);
        let container = DockerProvider::container_name(sandbox);
        let result = tokio::time::timeout(KILL_DEADLINE, self.provider.run_as_root(&container, &script)).await;
        match result {
            Ok(Ok(_)) => Ok(()),
            // The sandbox is gone or stopped, and the process with it.
            Ok(Err(Error::Backend { source: Some(source), .. }))
                if source
                    .downcast_ref::<bollard::errors::Error>()
                    .and_then(error::status_code)
                    .is_some_and(|code| code == 404 || code == 409) =>
            {
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::warn!(provider = "docker", sandbox.name = %sandbox, exec.id = %self.exec_id, error = %e, "failed to kill an exec");
                Err(e)
            }
            Err(_) => Err(Error::Timeout {
                operation: format!("killing a command in sandbox \"{sandbox}\""),
                after: KILL_DEADLINE,
            }),
        }
    }
}

