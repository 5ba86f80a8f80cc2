//! Waiting for Ctrl-C (SIGINT) or SIGTERM.
//!
//! Once `ken` listens for a signal, the default action (ending the process) no longer
//! happens, so every command that listens must also decide how to exit.

/// The signal that interrupted a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// SIGINT, usually Ctrl-C.
    Int,
    /// SIGTERM.
    Term,
}

impl Interrupt {
    /// Returns the shell's exit status for a process ended by this signal: 128 plus
    /// the signal number.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Interrupt::Int => 130,
            Interrupt::Term => 143,
        }
    }
}

/// Waits for the next SIGINT or SIGTERM.
#[cfg(unix)]
pub(crate) async fn interrupted() -> Interrupt {
    use tokio::signal::unix::{signal, SignalKind};

    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(int), Ok(term)) => (int, term),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(%error, "failed to listen for SIGINT and SIGTERM; Ctrl-C ends ken without cleanup");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = int.recv() => Interrupt::Int,
        _ = term.recv() => Interrupt::Term,
    }
}

/// Waits for the next Ctrl-C.
#[cfg(not(unix))]
pub(crate) async fn interrupted() -> Interrupt {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::warn!(%error, "failed to listen for Ctrl-C; Ctrl-C ends ken without cleanup");
        std::future::pending::<()>().await;
    }
    Interrupt::Int
}
