//! gRPC method paths of both services.

/// Service name of the control plane.
pub const MODAL_CLIENT_SERVICE: &str = "modal.client.ModalClient";
/// Service name of the task command router.
pub const TASK_COMMAND_ROUTER_SERVICE: &str = "modal.task_command_router.TaskCommandRouter";

/// `AuthTokenGet` (unary).
pub const AUTH_TOKEN_GET: &str = "/modal.client.ModalClient/AuthTokenGet";
/// `AppGetOrCreate` (unary).
pub const APP_GET_OR_CREATE: &str = "/modal.client.ModalClient/AppGetOrCreate";
/// `ImageGetOrCreate` (unary).
pub const IMAGE_GET_OR_CREATE: &str = "/modal.client.ModalClient/ImageGetOrCreate";
/// `ImageJoinStreaming` (server stream).
pub const IMAGE_JOIN_STREAMING: &str = "/modal.client.ModalClient/ImageJoinStreaming";
/// `SecretGetOrCreate` (unary).
pub const SECRET_GET_OR_CREATE: &str = "/modal.client.ModalClient/SecretGetOrCreate";
/// `SandboxCreate` (unary).
pub const SANDBOX_CREATE: &str = "/modal.client.ModalClient/SandboxCreate";
/// `SandboxGetFromName` (unary).
pub const SANDBOX_GET_FROM_NAME: &str = "/modal.client.ModalClient/SandboxGetFromName";
/// `SandboxList` (unary).
pub const SANDBOX_LIST: &str = "/modal.client.ModalClient/SandboxList";
/// `SandboxTagsSet` (unary).
pub const SANDBOX_TAGS_SET: &str = "/modal.client.ModalClient/SandboxTagsSet";
/// `SandboxTagsGet` (unary).
pub const SANDBOX_TAGS_GET: &str = "/modal.client.ModalClient/SandboxTagsGet";
/// `SandboxWait` (unary).
pub const SANDBOX_WAIT: &str = "/modal.client.ModalClient/SandboxWait";
/// `SandboxTerminate` (unary).
pub const SANDBOX_TERMINATE: &str = "/modal.client.ModalClient/SandboxTerminate";
/// `SandboxGetTunnels` (unary).
pub const SANDBOX_GET_TUNNELS: &str = "/modal.client.ModalClient/SandboxGetTunnels";
/// `SandboxSnapshotFs` (unary).
pub const SANDBOX_SNAPSHOT_FS: &str = "/modal.client.ModalClient/SandboxSnapshotFs";
/// `SandboxGetTaskId` (unary).
pub const SANDBOX_GET_TASK_ID: &str = "/modal.client.ModalClient/SandboxGetTaskId";
/// `TaskGetCommandRouterAccess` (unary).
pub const TASK_GET_COMMAND_ROUTER_ACCESS: &str = "/modal.client.ModalClient/TaskGetCommandRouterAccess";

/// `TaskExecStart` (unary, router).
pub const TASK_EXEC_START: &str = "/modal.task_command_router.TaskCommandRouter/TaskExecStart";
/// `TaskExecStdioRead` (server stream, router).
pub const TASK_EXEC_STDIO_READ: &str = "/modal.task_command_router.TaskCommandRouter/TaskExecStdioRead";
/// `TaskExecStdinWrite` (unary, router).
pub const TASK_EXEC_STDIN_WRITE: &str = "/modal.task_command_router.TaskCommandRouter/TaskExecStdinWrite";
/// `TaskExecWait` (unary, router).
pub const TASK_EXEC_WAIT: &str = "/modal.task_command_router.TaskCommandRouter/TaskExecWait";
/// `TaskExecPoll` (unary, router).
pub const TASK_EXEC_POLL: &str = "/modal.task_command_router.TaskCommandRouter/TaskExecPoll";
