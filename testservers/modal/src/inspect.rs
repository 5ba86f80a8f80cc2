//! Records tests read back from a running server: every object, the request log
//! and the protocol violations the server saw.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ken_core::Secret;
use ken_provider_modal::proto::modal_client::{GenericResult, Sandbox};
use ken_provider_modal::proto::task_command_router::ExitStatus;

/// One of the two gRPC services the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    /// `modal.client.ModalClient`, the control plane.
    Control,
    /// `modal.task_command_router.TaskCommandRouter`, on its own listener.
    Router,
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    /// The service that received it.
    pub service: ServiceKind,
    /// The method name, for example `SandboxCreate`.
    pub method: String,
    /// The `x-idempotency-key` header, when sent.
    pub idempotency_key: Option<String>,
    /// The `x-retry-attempt` header, when sent and valid.
    pub retry_attempt: Option<u32>,
    /// The status the server returned (for a stream, the status of opening it).
    pub code: tonic::Code,
    /// The status message, empty on success.
    pub message: String,
    /// True when the status was injected by a fault knob.
    pub injected: bool,
}

/// A request that broke the protocol: a missing or wrong header, a missing field,
/// a value out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The method name, for example `SandboxCreate`.
    pub method: String,
    /// Description of the problem.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.method, self.message)
    }
}

/// An app created by `AppGetOrCreate`.
#[derive(Debug, Clone)]
pub struct AppRecord {
    /// The app id (`ap-…`).
    pub id: String,
    /// The app name; empty for an ephemeral app created without one.
    pub name: String,
    /// The environment it belongs to.
    pub environment: String,
    /// True when it was created with `ObjectCreationType::Ephemeral`.
    pub ephemeral: bool,
}

/// An image created by `ImageGetOrCreate` or `SandboxSnapshotFs`.
#[derive(Debug, Clone)]
pub struct ImageRecord {
    /// The image id (`im-…`).
    pub id: String,
    /// The Dockerfile lines of its layer; empty for a snapshot.
    pub dockerfile_commands: Vec<String>,
    /// Ids of the images it builds on.
    pub base_image_ids: Vec<String>,
    /// The build result, or `None` while it builds.
    pub result: Option<GenericResult>,
    /// Number of times the server ran a build for it.
    pub builds: usize,
    /// The sandbox it was snapshotted from, for a snapshot.
    pub snapshot_of: Option<String>,
}

/// An ephemeral secret created by `SecretGetOrCreate`.
#[derive(Debug, Clone)]
pub struct SecretRecord {
    /// The secret id (`st-…`).
    pub id: String,
    /// Its variables.
    pub env: BTreeMap<String, Secret>,
}

/// A sandbox created by `SandboxCreate`.
#[derive(Debug, Clone)]
pub struct SandboxRecord {
    /// The sandbox id (`sb-…`).
    pub id: String,
    /// The app it belongs to.
    pub app_id: String,
    /// The definition the client sent.
    pub definition: Sandbox,
    /// The idempotency key of the request that created it.
    pub idempotency_key: Option<String>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// Its task id, once the task exists.
    pub task_id: Option<String>,
    /// Its result, once it finished.
    pub result: Option<GenericResult>,
    /// The sandbox's IPv4 address on its link to the host, while it runs.
    pub address: Option<Ipv4Addr>,
    /// The name of its network namespace (under `/run/netns`), while it runs.
    pub network_namespace: Option<String>,
}

/// An exec started by `TaskExecStart`.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    /// The client-made exec id.
    pub exec_id: String,
    /// The task it runs in.
    pub task_id: String,
    /// The sandbox it runs in.
    pub sandbox_id: String,
    /// The command and its arguments.
    pub args: Vec<String>,
    /// The working directory it was started in.
    pub workdir: String,
    /// Bytes written to its standard input so far.
    pub stdin_bytes: u64,
    /// Bytes of standard output collected so far.
    pub stdout_bytes: usize,
    /// Bytes of standard error collected so far.
    pub stderr_bytes: usize,
    /// Exit status, once it ended.
    pub exit: Option<ExitStatus>,
}
