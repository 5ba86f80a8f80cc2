//! Copying the output of a command inside a sandbox to the local stdout and stderr.

use std::io::ErrorKind;
use std::time::Duration;

use ken_core::exec::KillHandle;
use ken_core::{ExecProcess, OutputStream};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The reason copying the output stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyEnd {
    /// The process closed its output.
    Finished,
    /// The local reader of stdout or stderr went away (for example `| head`).
    BrokenPipe,
}

/// Copies every output chunk of `process` to the local stdout or stderr, as bytes and
/// as soon as it arrives.
pub(crate) async fn copy_output(process: &mut ExecProcess) -> anyhow::Result<CopyEnd> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    while let Some(chunk) = process.next_chunk().await {
        let chunk = chunk?;
        let target: &mut (dyn AsyncWrite + Unpin + Send) = match chunk.stream {
            OutputStream::Stdout => &mut stdout,
            OutputStream::Stderr => &mut stderr,
        };
        let written = async {
            target.write_all(&chunk.bytes).await?;
            target.flush().await
        };
        match written.await {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::BrokenPipe => return Ok(CopyEnd::BrokenPipe),
            Err(error) => {
                return Err(
                    anyhow::Error::new(error).context("failed to write the command's output")
                )
            }
        }
    }
    Ok(CopyEnd::Finished)
}

/// Kills the process group behind `handle`, giving up after 15 s so that an
/// unreachable engine cannot keep `ken` from exiting.
pub(crate) async fn kill(handle: &KillHandle) {
    match tokio::time::timeout(Duration::from_secs(15), handle.kill()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "failed to kill the command inside the sandbox"),
        Err(_) => {
            tracing::warn!("killing the command inside the sandbox did not finish within 15 s")
        }
    }
}
