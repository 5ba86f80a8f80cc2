//! Package `modal.task_command_router`, service `TaskCommandRouter`: exec inside a
//! task, on a per-task URL.

use std::collections::HashMap;

/// Exec stdout config: DEVNULL 0 (an unset field drops output), PIPE 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TaskExecStdoutConfig {
    /// 0: discard.
    Devnull = 0,
    /// 1: keep for `TaskExecStdioRead`.
    Pipe = 1,
}

/// Exec stderr config: DEVNULL 0, PIPE 1, STDOUT 2 (merge into stdout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TaskExecStderrConfig {
    /// 0: discard.
    Devnull = 0,
    /// 1: keep for `TaskExecStdioRead`.
    Pipe = 1,
    /// 2: merge into stdout.
    Stdout = 2,
}

/// The router's stdio selector: STDOUT 0, STDERR 1 (unlike the control plane's
/// `FileDescriptor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TaskExecStdioFileDescriptor {
    /// 0: standard output.
    Stdout = 0,
    /// 1: standard error.
    Stderr = 1,
}

/// `TaskExecStart{task_id=1, exec_id=2, command_args=3, stdout_config=4,
/// stderr_config=5, timeout_secs=6, workdir=7, secret_ids=8, env=12}`. Arguments are
/// limited to 64 KiB in total.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskExecStartRequest {
    /// The task.
    #[prost(string, tag = "1")]
    pub task_id: String,
    /// A UUIDv4 made by the client.
    #[prost(string, tag = "2")]
    pub exec_id: String,
    /// The command and its arguments.
    #[prost(string, repeated, tag = "3")]
    pub command_args: Vec<String>,
    /// A [`TaskExecStdoutConfig`].
    #[prost(enumeration = "TaskExecStdoutConfig", tag = "4")]
    pub stdout_config: i32,
    /// A [`TaskExecStderrConfig`].
    #[prost(enumeration = "TaskExecStderrConfig", tag = "5")]
    pub stderr_config: i32,
    /// Seconds after which the router kills the exec.
    #[prost(uint32, optional, tag = "6")]
    pub timeout_secs: Option<u32>,
    /// Working directory.
    #[prost(string, optional, tag = "7")]
    pub workdir: Option<String>,
    /// Secrets whose variables are set in the process environment.
    #[prost(string, repeated, tag = "8")]
    pub secret_ids: Vec<String>,
    /// Environment variables (newer protocol versions).
    #[prost(map = "string, string", tag = "12")]
    pub env: HashMap<String, String>,
}

/// `TaskExecStart` response: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskExecStartResponse {}

/// `TaskExecStdioRead{task_id=1, exec_id=2, offset=3, file_descriptor=4}`: a server
/// stream of output from a byte offset; a clean end means EOF.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskExecStdioReadRequest {
    /// The task.
    #[prost(string, tag = "1")]
    pub task_id: String,
    /// The exec.
    #[prost(string, tag = "2")]
    pub exec_id: String,
    /// Bytes of this stream already received.
    #[prost(uint64, tag = "3")]
    pub offset: u64,
    /// A [`TaskExecStdioFileDescriptor`].
    #[prost(enumeration = "TaskExecStdioFileDescriptor", tag = "4")]
    pub file_descriptor: i32,
}

/// A `TaskExecStdioRead` item `{data=1 bytes}`; may be empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskExecStdioReadResponse {
    /// Output bytes.
    #[prost(bytes = "bytes", tag = "1")]
    pub data: bytes::Bytes,
}

/// `TaskExecStdinWrite{task_id=1, exec_id=2, offset=3, data=4, eof=5}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskExecStdinWriteRequest {
    /// The task.
    #[prost(string, tag = "1")]
    pub task_id: String,
    /// The exec.
    #[prost(string, tag = "2")]
    pub exec_id: String,
    /// Bytes of stdin written before this call.
    #[prost(uint64, tag = "3")]
    pub offset: u64,
    /// Bytes to write.
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
    /// Close stdin after `data`.
    #[prost(bool, tag = "5")]
    pub eof: bool,
}

/// `TaskExecStdinWrite` response: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskExecStdinWriteResponse {}

/// `TaskExecWait{task_id=1, exec_id=2}`: blocks up to about 60 s.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskExecWaitRequest {
    /// The task.
    #[prost(string, tag = "1")]
    pub task_id: String,
    /// The exec.
    #[prost(string, tag = "2")]
    pub exec_id: String,
}

/// `TaskExecWait` response: oneof `{code=1 | signal=2}`; none set means "still
/// running, call again".
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskExecWaitResponse {
    /// Exit status of the exec.
    #[prost(oneof = "ExitStatus", tags = "1, 2")]
    pub exit_status: Option<ExitStatus>,
}

/// `TaskExecPoll{task_id=1, exec_id=2}`: like `TaskExecWait` without blocking.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskExecPollRequest {
    /// The task.
    #[prost(string, tag = "1")]
    pub task_id: String,
    /// The exec.
    #[prost(string, tag = "2")]
    pub exec_id: String,
}

/// `TaskExecPoll` response: oneof `{code=1 | signal=2}`; none set while running.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskExecPollResponse {
    /// Exit status of the exec.
    #[prost(oneof = "ExitStatus", tags = "1, 2")]
    pub exit_status: Option<ExitStatus>,
}

/// The end of an exec: an exit code, or a signal (reported as 128 + signal).
#[derive(Clone, Copy, PartialEq, Eq, prost::Oneof)]
pub enum ExitStatus {
    /// 1: the exit code.
    #[prost(int32, tag = "1")]
    Code(i32),
    /// 2: the signal that ended it.
    #[prost(int32, tag = "2")]
    Signal(i32),
}
