//! Running commands inside a sandbox.
//!
//! A provider starts the process and hands back an [`ExecProcess`] built from three
//! parts: a stream of output chunks, a future for the exit code, and a
//! [`ProcessKiller`]. `ExecProcess` adds what every provider needs in the same way:
//! the timeout (kill the whole process group, keep the output so far, flag it),
//! collecting output, and killing from another task.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// A command to run inside a sandbox.
///
/// `command` is an argument vector, not a shell line: use `["sh", "-c", "..."]` for a
/// shell. Environment values are passed unchanged, newlines and quotes included.
pub struct ExecRequest {
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory; the sandbox's default when `None`.
    pub workdir: Option<String>,
    /// User name or uid to run as; the image's default user when `None`.
    pub user: Option<String>,
    /// Data for standard input. Without it the process reads end-of-file at once.
    pub stdin: Option<Stdin>,
    /// Time after which the whole process group is killed.
    pub timeout: Option<Duration>,
}

impl ExecRequest {
    /// Creates a request for the argument vector `command`.
    pub fn new<I, S>(command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            command: command.into_iter().map(Into::into).collect(),
            env: BTreeMap::new(),
            workdir: None,
            user: None,
            stdin: None,
            timeout: None,
        }
    }

    /// Creates a request that runs `script` with `sh -c`.
    pub fn shell(script: impl Into<String>) -> Self {
        ExecRequest::new(["sh".to_owned(), "-c".to_owned(), script.into()])
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the working directory.
    pub fn workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Sets the user to run as.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets standard input.
    pub fn stdin(mut self, stdin: impl Into<Stdin>) -> Self {
        self.stdin = Some(stdin.into());
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl fmt::Debug for ExecRequest {
    // Environment values can be secrets (tokens passed to a clone, for example), so
    // only their names are printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecRequest")
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("workdir", &self.workdir)
            .field("user", &self.user)
            .field("stdin", &self.stdin.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Standard input for an exec: fixed bytes or a reader.
pub enum Stdin {
    /// Bytes written in full, then end-of-file.
    Bytes(Bytes),
    /// A reader copied until its end, then end-of-file.
    Reader(Pin<Box<dyn AsyncRead + Send>>),
}

impl From<Bytes> for Stdin {
    fn from(value: Bytes) -> Self {
        Stdin::Bytes(value)
    }
}

impl From<Vec<u8>> for Stdin {
    fn from(value: Vec<u8>) -> Self {
        Stdin::Bytes(value.into())
    }
}

impl From<&'static str> for Stdin {
    fn from(value: &'static str) -> Self {
        Stdin::Bytes(Bytes::from_static(value.as_bytes()))
    }
}

impl From<String> for Stdin {
    fn from(value: String) -> Self {
        Stdin::Bytes(value.into())
    }
}

/// The output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A piece of output, as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    /// The stream it came from.
    pub stream: OutputStream,
    /// The bytes, not necessarily valid UTF-8 and not split on lines.
    pub bytes: Bytes,
}

/// The way a process ended: exit code, timeout or kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitStatus {
    /// The exit code, or `None` when the backend could not tell (for example after
    /// the process was killed by a signal and the backend reports no code).
    pub code: Option<i64>,
    /// True when the process was killed because its timeout passed.
    pub timed_out: bool,
    /// True when the process was killed by [`ExecProcess::kill`].
    pub killed: bool,
}

impl ExitStatus {
    /// Returns true when the process exited with code 0 and was neither killed nor
    /// timed out.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out && !self.killed
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.timed_out {
            return f.write_str("timed out");
        }
        if self.killed {
            return f.write_str("killed");
        }
        match self.code {
            Some(code) => write!(f, "exit code {code}"),
            None => f.write_str("unknown exit code"),
        }
    }
}

/// The collected output and status of a finished process.
#[derive(Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Everything written to standard output.
    pub stdout: Bytes,
    /// Everything written to standard error.
    pub stderr: Bytes,
    /// The process's exit status.
    pub status: ExitStatus,
}

impl ExecOutput {
    /// Returns standard output as text, replacing invalid UTF-8.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Returns standard error as text, replacing invalid UTF-8.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl fmt::Debug for ExecOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecOutput")
            .field("stdout_len", &self.stdout.len())
            .field("stderr_len", &self.stderr.len())
            .field("status", &self.status)
            .finish()
    }
}

/// Kills a running exec: TERM to its whole process group, then KILL after a grace
/// period. Implemented by each provider.
#[async_trait]
pub trait ProcessKiller: Send + Sync {
    /// Kills the process group and returns once it is gone, or after the KILL.
    ///
    /// Killing a process that already exited succeeds.
    async fn kill(&self) -> Result<()>;
}

struct KillState {
    killer: Arc<dyn ProcessKiller>,
    killed: AtomicBool,
    timed_out: AtomicBool,
    finished: Notify,
}

/// A cloneable handle that kills an [`ExecProcess`] from another task.
#[derive(Clone)]
pub struct KillHandle {
    state: Arc<KillState>,
}

impl KillHandle {
    /// Kills the process group; see [`ProcessKiller::kill`].
    pub async fn kill(&self) -> Result<()> {
        self.state.killed.store(true, Ordering::SeqCst);
        self.state.killer.kill().await
    }
}

impl fmt::Debug for KillHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KillHandle").finish_non_exhaustive()
    }
}

/// A running command inside a sandbox.
///
/// Read its output with [`next_chunk`](Self::next_chunk), or collect everything with
/// [`output`](Self::output). Output is buffered by the provider only up to a bound,
/// so a process that writes a lot waits until its output is read. It never deadlocks, and
/// no byte is lost. Dropping the `ExecProcess` does not kill the process, so call
/// [`kill`](Self::kill) for that.
pub struct ExecProcess {
    output: BoxStream<'static, Result<OutputChunk>>,
    exit: Option<BoxFuture<'static, Result<Option<i64>>>>,
    state: Arc<KillState>,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl ExecProcess {
    /// Assembles a process from a provider's parts.
    ///
    /// `output` must end when the process has closed its output; `exit` is polled
    /// only after that and returns the exit code. When `timeout` is set, a timer task
    /// kills the process group through `killer` when it passes, and the final status
    /// is flagged as timed out.
    pub fn new(
        output: BoxStream<'static, Result<OutputChunk>>,
        exit: BoxFuture<'static, Result<Option<i64>>>,
        killer: Arc<dyn ProcessKiller>,
        timeout: Option<Duration>,
    ) -> Self {
        let state = Arc::new(KillState {
            killer,
            killed: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            finished: Notify::new(),
        });
        let timer = timeout.map(|limit| {
            let state = state.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(limit) => {}
                    _ = state.finished.notified() => return,
                }
                state.timed_out.store(true, Ordering::SeqCst);
                tracing::debug!(timeout = ?limit, "exec timed out; killing its process group");
                if let Err(error) = state.killer.kill().await {
                    tracing::warn!(%error, "failed to kill a timed-out exec");
                }
            })
        });
        ExecProcess {
            output,
            exit: Some(exit),
            state,
            timer,
        }
    }

    /// Returns the next chunk of output, or `None` once the output has ended.
    pub async fn next_chunk(&mut self) -> Option<Result<OutputChunk>> {
        self.output.next().await
    }

    /// Returns a handle that kills this process from another task.
    pub fn kill_handle(&self) -> KillHandle {
        KillHandle {
            state: self.state.clone(),
        }
    }

    /// Kills the whole process group: TERM, then KILL after a grace period.
    pub async fn kill(&self) -> Result<()> {
        self.kill_handle().kill().await
    }

    /// Discards the remaining output and waits for the process to end.
    pub async fn wait(mut self) -> Result<ExitStatus> {
        while let Some(chunk) = self.output.next().await {
            chunk?;
        }
        self.finish().await
    }

    /// Reads all output and waits for the process to end.
    pub async fn output(mut self) -> Result<ExecOutput> {
        let mut stdout = BytesMut::new();
        let mut stderr = BytesMut::new();
        while let Some(chunk) = self.output.next().await {
            let chunk = chunk?;
            match chunk.stream {
                OutputStream::Stdout => stdout.extend_from_slice(&chunk.bytes),
                OutputStream::Stderr => stderr.extend_from_slice(&chunk.bytes),
            }
        }
        let status = self.finish().await?;
        Ok(ExecOutput {
            stdout: stdout.freeze(),
            stderr: stderr.freeze(),
            status,
        })
    }

    /// Waits for the exit code after the output has ended.
    pub async fn finish(&mut self) -> Result<ExitStatus> {
        let exit = self
            .exit
            .take()
            .ok_or_else(|| Error::backend("exec", "finish was called twice on the same process"))?;
        let code = exit.await;
        self.state.finished.notify_one();
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
        Ok(ExitStatus {
            code: code?,
            timed_out: self.state.timed_out.load(Ordering::SeqCst),
            killed: self.state.killed.load(Ordering::SeqCst),
        })
    }
}

impl Drop for ExecProcess {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            timer.abort();
        }
    }
}

impl fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecProcess")
            .field("finished", &self.exit.is_none())
            .finish_non_exhaustive()
    }
}

/// Quotes `value` for a POSIX shell, so it reaches the command as one literal word.
pub fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+".contains(&b))
    {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_keeps_plain_words() {
        assert_eq!(shell_quote("abc-1.2/x"), "abc-1.2/x");
    }

    #[test]
    fn shell_quote_wraps_specials() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's $HOME"), r"'it'\''s $HOME'");
    }

    #[test]
    fn exec_request_debug_hides_env_values() {
        let request = ExecRequest::shell("true").env("TOKEN", "s3cr3t-value");
        let printed = format!("{request:?}");
        assert!(printed.contains("TOKEN"));
        assert!(!printed.contains("s3cr3t-value"));
    }
}
