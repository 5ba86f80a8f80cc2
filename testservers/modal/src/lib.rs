//! A Modal gRPC test server on 127.0.0.1 for Ken's tests.
//!
//! [`ModalTestServer`] serves `modal.client.ModalClient` and, on a second port,
//! `modal.task_command_router.TaskCommandRouter`, with the subset of calls Ken's
//! Modal provider uses. It behaves like the real service where clients tend to
//! get it wrong:
//!
//! - `SandboxCreate` returns before the task exists; the task id appears after
//!   [`ModalTestServerConfig::task_delay`].
//! - Streams end early ([`StreamBehavior`]) and must be resumed. Image logs end
//!   cleanly and resume from the last entry id. Exec output ends with
//!   `UNAVAILABLE`, because a clean end means EOF there, and resumes from the
//!   byte offset.
//! - [`ModalTestServer::fail_once`] fails chosen calls once with `UNAVAILABLE`,
//!   optionally after acting on them; idempotency keys are honoured, so a retried
//!   `SandboxCreate` returns the same sandbox.
//! - A sandbox creation rate limit can be switched on.
//! - Every call's headers and required fields are checked; problems become the
//!   status a real server would return and are recorded as [`Violation`]s.
//!
//! Sandboxes are real. Images are built with `docker build` on the local engine
//! and exported once. The builds trust the host's CA bundle, as Ken's Docker
//! provider does, so they work behind a TLS-inspecting proxy. Each sandbox runs
//! in an overlay of its image's file system, in its own mount, PID, UTS, IPC and
//! network namespaces, with `tini` as PID 1. Execs
//! join those namespaces with `nsenter`. Each sandbox's network namespace has
//! only a /30 link to the host, so sandboxes cannot reach each other. Tunnels
//! listen on 127.0.0.1 and forward plain TCP to the sandbox. The server must run
//! as root.

// Handlers return `tonic::Status` as tonic's own services do; boxing it would only
// add noise at every call site.
#![allow(clippy::result_large_err)]

mod buffer;
mod checks;
mod config;
mod control;
mod exec;
mod ids;
mod image;
mod inspect;
mod pacing;
mod router;
mod rpc;
mod runtime;
mod sandbox;
mod server;
mod state;

pub use config::{ModalTestServerConfig, StreamBehavior};
pub use inspect::{
    AppRecord, ExecRecord, ImageRecord, RequestRecord, SandboxRecord, SecretRecord, ServiceKind,
    Violation,
};
pub use server::ModalTestServer;
pub use state::FailMode;

/// Checks that the Docker engine is reachable, for tests that build images; pass the
/// result to `ken_core::testkit::require_docker_or_skip`.
///
/// # Errors
/// A message with the output of `docker info` when the engine is unreachable.
pub async fn docker_available() -> Result<(), String> {
    tokio::task::spawn_blocking(|| runtime::run("docker", &["info", "--format", "{{.ServerVersion}}"]).map(|_| ()))
        .await
        .map_err(|error| format!("docker info task failed: {error}"))?
}
