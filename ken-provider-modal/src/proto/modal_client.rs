//! Package `modal.client`, service `ModalClient`: the control plane.

use std::collections::HashMap;

// ---------------------------------------------------------------------------
// Shared enums and messages
// ---------------------------------------------------------------------------

/// `GenericResult{status=1, exception=2 string, exitcode=3 int32}`: the outcome of
/// a build, a sandbox or a snapshot.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GenericResult {
    /// A [`generic_result::GenericStatus`].
    #[prost(enumeration = "generic_result::GenericStatus", tag = "1")]
    pub status: i32,
    /// The failure message, for example a build error.
    #[prost(string, tag = "2")]
    pub exception: String,
    /// The exit code, when the result is a process's.
    #[prost(int32, tag = "3")]
    pub exitcode: i32,
}

/// Nested types of [`GenericResult`].
pub mod generic_result {
    /// The status of a [`GenericResult`](super::GenericResult).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum GenericStatus {
        /// 0: not set; for a build or a sandbox it means "still running".
        Unspecified = 0,
        /// 1: succeeded.
        Success = 1,
        /// 2: failed; the message is in `exception`.
        Failure = 2,
        /// 3: terminated (exit code 137).
        Terminated = 3,
        /// 4: timed out (exit code 124; for tunnels, "not ready yet").
        Timeout = 4,
        /// 5: failed to start.
        InitFailure = 5,
        /// 6: Modal's own failure.
        InternalFailure = 6,
        /// 7: stopped by the idle timeout.
        IdleTimeout = 7,
    }
}

/// `FileDescriptor` of the control plane: STDOUT 1, STDERR 2, INFO 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum FileDescriptor {
    /// 0: not set.
    Unspecified = 0,
    /// 1: standard output.
    Stdout = 1,
    /// 2: standard error.
    Stderr = 2,
    /// 3: Modal's own progress messages.
    Info = 3,
}

/// `ObjectCreationType`: lookup only 0, CREATE_IF_MISSING 1, EPHEMERAL 5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ObjectCreationType {
    /// 0: look the object up only; NOT_FOUND when missing.
    Unspecified = 0,
    /// 1: create the object when it is missing.
    CreateIfMissing = 1,
    /// 5: an ephemeral object, removed with what uses it.
    Ephemeral = 5,
}

/// `modal.client.RPCRetryPolicy{retry_after_secs=1}`: a status detail of
/// RESOURCE_EXHAUSTED asking the client to wait before retrying.
///
/// NOTE: the spec gives the field number, not its type; `uint32` is assumed, and a
/// detail that does not decode is ignored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcRetryPolicy {
    /// Seconds to wait before retrying.
    #[prost(uint32, tag = "1")]
    pub retry_after_secs: u32,
}

/// `AuthTokenGet` request: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthTokenGetRequest {}

/// `AuthTokenGet` response `{token=1}`: a JWT for `x-modal-auth-token`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthTokenGetResponse {
    /// The JWT.
    #[prost(string, tag = "1")]
    pub token: String,
}

// ---------------------------------------------------------------------------
// Apps
// ---------------------------------------------------------------------------

/// `AppGetOrCreate{app_name=1, environment_name=2, object_creation_type=3}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AppGetOrCreateRequest {
    /// The app's name.
    #[prost(string, tag = "1")]
    pub app_name: String,
    /// The environment; empty means the account's default.
    #[prost(string, tag = "2")]
    pub environment_name: String,
    /// An [`ObjectCreationType`].
    #[prost(enumeration = "ObjectCreationType", tag = "3")]
    pub object_creation_type: i32,
}

/// `AppGetOrCreate` response `{app_id=1}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AppGetOrCreateResponse {
    /// The app's id.
    #[prost(string, tag = "1")]
    pub app_id: String,
}

// ---------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------

/// `BaseImage{image_id=1, docker_tag=2}`: an earlier layer, named in the
/// Dockerfile commands as `FROM <docker_tag>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BaseImage {
    /// Id of the earlier image.
    #[prost(string, tag = "1")]
    pub image_id: String,
    /// The name the commands use for it, for example `base`.
    #[prost(string, tag = "2")]
    pub docker_tag: String,
}

/// A file of an image's build context: `ImageContextFile{filename=1, data=2}`.
///
/// NOTE: the spec names `context_files=7` without its type; this is the type of
/// Modal's public proto. Ken does not send context files (see the provider's COPY
/// handling).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageContextFile {
    /// Path of the file in the build context.
    #[prost(string, tag = "1")]
    pub filename: String,
    /// The file's contents.
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// `Image{base_images=5, dockerfile_commands=6, context_files=7, secret_ids=12}`: one
/// image layer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    /// Earlier layers this one builds on.
    #[prost(message, repeated, tag = "5")]
    pub base_images: Vec<BaseImage>,
    /// Dockerfile lines, starting with `FROM <registry tag>` or `FROM base`.
    #[prost(string, repeated, tag = "6")]
    pub dockerfile_commands: Vec<String>,
    /// Files of the build context.
    #[prost(message, repeated, tag = "7")]
    pub context_files: Vec<ImageContextFile>,
    /// Secrets available to the build.
    #[prost(string, repeated, tag = "12")]
    pub secret_ids: Vec<String>,
}

/// `ImageGetOrCreate{image=2, app_id=4, force_build=7, builder_version=9}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageGetOrCreateRequest {
    /// The layer to build.
    #[prost(message, optional, tag = "2")]
    pub image: Option<Image>,
    /// The app the image belongs to.
    #[prost(string, tag = "4")]
    pub app_id: String,
    /// Rebuild even when a matching image exists.
    #[prost(bool, tag = "7")]
    pub force_build: bool,
    /// Image builder version, "2024.10" unless configured.
    #[prost(string, tag = "9")]
    pub builder_version: String,
}

/// `ImageGetOrCreate` response `{image_id=1, result=2}`; a missing or UNSPECIFIED
/// result means the image is still building.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageGetOrCreateResponse {
    /// The image's id.
    #[prost(string, tag = "1")]
    pub image_id: String,
    /// The build result, when the build has finished.
    #[prost(message, optional, tag = "2")]
    pub result: Option<GenericResult>,
}

/// `ImageJoinStreaming{image_id=1, timeout=2 float, last_entry_id=3,
/// include_logs_for_finished=4}`: a server stream of build logs and the result.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageJoinStreamingRequest {
    /// The image being built.
    #[prost(string, tag = "1")]
    pub image_id: String,
    /// Seconds the server keeps the stream open (the SDKs send 55).
    #[prost(float, tag = "2")]
    pub timeout: f32,
    /// Resume after this entry; empty for the start.
    #[prost(string, tag = "3")]
    pub last_entry_id: String,
    /// Send the logs even when the build has finished already.
    #[prost(bool, tag = "4")]
    pub include_logs_for_finished: bool,
}

/// `TaskLogs{data=1}`: a piece of log text (declared as bytes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskLogs {
    /// The log text, not necessarily valid UTF-8 or whole lines.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    /// The stream the text came from, a [`FileDescriptor`].
    ///
    /// NOTE: not in the spec; number 8 is from Modal's public proto.
    #[prost(enumeration = "FileDescriptor", tag = "8")]
    pub file_descriptor: i32,
}

/// An `ImageJoinStreaming` item `{result=1, task_logs=2, entry_id=3, eof=4}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageJoinStreamingResponse {
    /// The build result; present once the build has finished.
    #[prost(message, optional, tag = "1")]
    pub result: Option<GenericResult>,
    /// Log pieces; may be empty.
    #[prost(message, repeated, tag = "2")]
    pub task_logs: Vec<TaskLogs>,
    /// The id to resume after; remember the last non-empty one.
    #[prost(string, tag = "3")]
    pub entry_id: String,
    /// True on the last item of the logs.
    #[prost(bool, tag = "4")]
    pub eof: bool,
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

/// `SecretGetOrCreate{environment_name=3, object_creation_type=4, env_dict=5}`; Ken
/// sends EPHEMERAL secrets holding a sandbox's environment.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecretGetOrCreateRequest {
    /// The environment.
    #[prost(string, tag = "3")]
    pub environment_name: String,
    /// An [`ObjectCreationType`], EPHEMERAL (5) for Ken.
    #[prost(enumeration = "ObjectCreationType", tag = "4")]
    pub object_creation_type: i32,
    /// The variables.
    #[prost(map = "string, string", tag = "5")]
    pub env_dict: HashMap<String, String>,
}

/// `SecretGetOrCreate` response `{secret_id=1}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SecretGetOrCreateResponse {
    /// The secret's id.
    #[prost(string, tag = "1")]
    pub secret_id: String,
}

// ---------------------------------------------------------------------------
// Sandboxes
// ---------------------------------------------------------------------------

/// `Resources{memory_mb=2, milli_cpu=3, memory_mb_max=5, milli_cpu_max=7}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resources {
    /// Memory request in MiB.
    #[prost(uint32, tag = "2")]
    pub memory_mb: u32,
    /// CPU request in thousandths of a core.
    #[prost(uint32, tag = "3")]
    pub milli_cpu: u32,
    /// Memory limit in MiB; 0 for none.
    #[prost(uint32, tag = "5")]
    pub memory_mb_max: u32,
    /// CPU limit in thousandths of a core; 0 for none.
    #[prost(uint32, tag = "7")]
    pub milli_cpu_max: u32,
}

/// `PortSpec{port=1, unencrypted=2}`: a port to open as a tunnel.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PortSpec {
    /// Port inside the sandbox.
    #[prost(uint32, tag = "1")]
    pub port: u32,
    /// True for a plain TCP tunnel; Ken opens encrypted (TLS) tunnels.
    #[prost(bool, tag = "2")]
    pub unencrypted: bool,
}

/// `PortSpecs{ports=1}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PortSpecs {
    /// The ports.
    #[prost(message, repeated, tag = "1")]
    pub ports: Vec<PortSpec>,
}

/// `NetworkAccess{network_access_type=1, allowed_cidrs=2}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NetworkAccess {
    /// A [`network_access::NetworkAccessType`].
    #[prost(enumeration = "network_access::NetworkAccessType", tag = "1")]
    pub network_access_type: i32,
    /// CIDRs reachable with ALLOWLIST.
    #[prost(string, repeated, tag = "2")]
    pub allowed_cidrs: Vec<String>,
}

/// Nested types of [`NetworkAccess`].
pub mod network_access {
    /// Outbound network policy: OPEN 1, BLOCKED 2, ALLOWLIST 3.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum NetworkAccessType {
        /// 0: not set.
        Unspecified = 0,
        /// 1: open internet access.
        Open = 1,
        /// 2: no network access.
        Blocked = 2,
        /// 3: only `allowed_cidrs`.
        Allowlist = 3,
    }
}

/// `Sandbox`: the definition of a sandbox in `SandboxCreate`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sandbox {
    /// 1: the entrypoint command and arguments.
    #[prost(string, repeated, tag = "1")]
    pub entrypoint_args: Vec<String>,
    /// 3: the image.
    #[prost(string, tag = "3")]
    pub image_id: String,
    /// 4: secrets whose variables every process sees.
    #[prost(string, repeated, tag = "4")]
    pub secret_ids: Vec<String>,
    /// 5: CPU and memory.
    #[prost(message, optional, tag = "5")]
    pub resources: Option<Resources>,
    /// 7: lifetime in whole seconds; 0 means 300; at most 24 h.
    #[prost(uint32, tag = "7")]
    pub timeout_secs: u32,
    /// 8: working directory (absolute).
    #[prost(string, optional, tag = "8")]
    pub workdir: Option<String>,
    /// 20: ports opened as tunnels.
    #[prost(message, optional, tag = "20")]
    pub open_ports: Option<PortSpecs>,
    /// 22: outbound network policy.
    #[prost(message, optional, tag = "22")]
    pub network_access: Option<NetworkAccess>,
    /// 30: unique name within the app.
    #[prost(string, optional, tag = "30")]
    pub name: Option<String>,
    /// 33: seconds without activity after which the sandbox stops.
    #[prost(uint32, optional, tag = "33")]
    pub idle_timeout_secs: Option<u32>,
}

/// `SandboxCreate{app_id=1, definition=2}`; ALREADY_EXISTS when the name is taken.
/// Returns before the container runs.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxCreateRequest {
    /// The app.
    #[prost(string, tag = "1")]
    pub app_id: String,
    /// The sandbox.
    #[prost(message, optional, tag = "2")]
    pub definition: Option<Sandbox>,
}

/// `SandboxCreate` response `{sandbox_id=1}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxCreateResponse {
    /// The new sandbox's id (`sb-` plus 22 characters).
    #[prost(string, tag = "1")]
    pub sandbox_id: String,
}

/// `SandboxGetFromName{sandbox_name=1, environment_name=2, app_name=3}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxGetFromNameRequest {
    /// The sandbox's name.
    #[prost(string, tag = "1")]
    pub sandbox_name: String,
    /// The environment.
    #[prost(string, tag = "2")]
    pub environment_name: String,
    /// The app's name.
    #[prost(string, tag = "3")]
    pub app_name: String,
}

/// `SandboxGetFromName` response `{sandbox_id=1}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxGetFromNameResponse {
    /// The sandbox's id.
    #[prost(string, tag = "1")]
    pub sandbox_id: String,
}

/// `SandboxTag{tag_name=1, tag_value=2}`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, prost::Message)]
pub struct SandboxTag {
    /// The tag's name.
    #[prost(string, tag = "1")]
    pub tag_name: String,
    /// The tag's value.
    #[prost(string, tag = "2")]
    pub tag_value: String,
}

/// `SandboxList{app_id=1, before_timestamp=2, environment_name=3,
/// include_finished=4, tags=5}`; page by passing the last `created_at` until a page
/// is empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxListRequest {
    /// Only sandboxes of this app; empty for all.
    #[prost(string, tag = "1")]
    pub app_id: String,
    /// Only sandboxes created before this Unix time; 0 for the first page.
    #[prost(double, tag = "2")]
    pub before_timestamp: f64,
    /// The environment.
    #[prost(string, tag = "3")]
    pub environment_name: String,
    /// Include sandboxes that have finished.
    #[prost(bool, tag = "4")]
    pub include_finished: bool,
    /// Only sandboxes carrying all of these tags.
    #[prost(message, repeated, tag = "5")]
    pub tags: Vec<SandboxTag>,
}

/// `SandboxInfo{id=1, created_at=3, app_id=5, tags=6, name=7, image_id=8}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxInfo {
    /// The sandbox's id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Creation time in Unix seconds.
    #[prost(double, tag = "3")]
    pub created_at: f64,
    /// The app's id.
    #[prost(string, tag = "5")]
    pub app_id: String,
    /// Its tags.
    #[prost(message, repeated, tag = "6")]
    pub tags: Vec<SandboxTag>,
    /// Its name; empty when it has none.
    #[prost(string, tag = "7")]
    pub name: String,
    /// Its image.
    #[prost(string, tag = "8")]
    pub image_id: String,
}

/// `SandboxList` response `{sandboxes=1}`, newest first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxListResponse {
    /// One page of sandboxes.
    #[prost(message, repeated, tag = "1")]
    pub sandboxes: Vec<SandboxInfo>,
}

/// `SandboxTagsSet{environment_name=1, sandbox_id=2, tags=3}`: replaces all tags.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxTagsSetRequest {
    /// The environment.
    #[prost(string, tag = "1")]
    pub environment_name: String,
    /// The sandbox.
    #[prost(string, tag = "2")]
    pub sandbox_id: String,
    /// The new tags.
    #[prost(message, repeated, tag = "3")]
    pub tags: Vec<SandboxTag>,
}

/// `SandboxTagsSet` response: empty.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxTagsSetResponse {}

/// `SandboxTagsGet{sandbox_id=1}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxTagsGetRequest {
    /// The sandbox.
    #[prost(string, tag = "1")]
    pub sandbox_id: String,
}

/// `SandboxTagsGet` response `{tags=1}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxTagsGetResponse {
    /// The sandbox's tags.
    #[prost(message, repeated, tag = "1")]
    pub tags: Vec<SandboxTag>,
}

/// `SandboxWait{sandbox_id=1, timeout=2 float}`; timeout 0 polls; NOT_FOUND means no
/// such sandbox.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxWaitRequest {
    /// The sandbox.
    #[prost(string, tag = "1")]
    pub sandbox_id: String,
    /// Seconds to wait; 0 polls.
    #[prost(float, tag = "2")]
    pub timeout: f32,
}

/// `SandboxWait` response `{result=1}`, present when the sandbox has finished. Exit
/// code: TIMEOUT 124, TERMINATED 137, else `exitcode`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxWaitResponse {
    /// The result, when finished.
    #[prost(message, optional, tag = "1")]
    pub result: Option<GenericResult>,
}

/// `SandboxTerminate{sandbox_id=1}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxTerminateRequest {
    /// The sandbox.
    #[prost(string, tag = "1")]
    pub sandbox_id: String,
}

/// `SandboxTerminate` response: Ken reads no field of it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxTerminateResponse {}

/// `SandboxGetTunnels{sandbox_id=1, timeout=2 float}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxGetTunnelsRequest {
    /// The sandbox.
    #[prost(string, tag = "1")]
    pub sandbox_id: String,
    /// Seconds to wait for the tunnels.
    #[prost(float, tag = "2")]
    pub timeout: f32,
}

/// `TunnelData{host=1, port=2, unencrypted_host=3, unencrypted_port=4,
/// container_port=5}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TunnelData {
    /// Public TLS host.
    #[prost(string, tag = "1")]
    pub host: String,
    /// Public TLS port; the URL omits it when it is 443.
    #[prost(uint32, tag = "2")]
    pub port: u32,
    /// Host of the plain TCP tunnel, for unencrypted ports.
    #[prost(string, optional, tag = "3")]
    pub unencrypted_host: Option<String>,
    /// Port of the plain TCP tunnel.
    #[prost(uint32, optional, tag = "4")]
    pub unencrypted_port: Option<u32>,
    /// The port inside the sandbox.
    #[prost(uint32, tag = "5")]
    pub container_port: u32,
}

/// `SandboxGetTunnels` response `{result=1, tunnels=2}`; a TIMEOUT result means the
/// tunnels are not ready yet.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxGetTunnelsResponse {
    /// SUCCESS, or TIMEOUT when not ready yet.
    #[prost(message, optional, tag = "1")]
    pub result: Option<GenericResult>,
    /// The tunnels.
    #[prost(message, repeated, tag = "2")]
    pub tunnels: Vec<TunnelData>,
}

/// `SandboxSnapshotFs{sandbox_id=1, timeout=2 float}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxSnapshotFsRequest {
    /// The sandbox.
    #[prost(string, tag = "1")]
    pub sandbox_id: String,
    /// Seconds to wait for the snapshot.
    #[prost(float, tag = "2")]
    pub timeout: f32,
}

/// `SandboxSnapshotFs` response `{image_id=1, result=2}`; an error unless the result
/// is SUCCESS and the image id is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxSnapshotFsResponse {
    /// The new image.
    #[prost(string, tag = "1")]
    pub image_id: String,
    /// The snapshot's result.
    #[prost(message, optional, tag = "2")]
    pub result: Option<GenericResult>,
}

/// `SandboxGetTaskId{sandbox_id=1}`: poll every 0.5 s until a task id arrives.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxGetTaskIdRequest {
    /// The sandbox.
    #[prost(string, tag = "1")]
    pub sandbox_id: String,
}

/// `SandboxGetTaskId` response `{task_id=1 optional, task_result=2 optional}`; a
/// task result means the sandbox has finished already.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SandboxGetTaskIdResponse {
    /// The task running the sandbox, once it exists.
    #[prost(string, optional, tag = "1")]
    pub task_id: Option<String>,
    /// The result, when the sandbox has finished.
    #[prost(message, optional, tag = "2")]
    pub task_result: Option<GenericResult>,
}

/// `TaskGetCommandRouterAccess{task_id=1}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskGetCommandRouterAccessRequest {
    /// The task.
    #[prost(string, tag = "1")]
    pub task_id: String,
}

/// `TaskGetCommandRouterAccess` response `{jwt=1, url=2}`: where and how to reach the
/// task's command router.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskGetCommandRouterAccessResponse {
    /// Bearer token for the router.
    #[prost(string, tag = "1")]
    pub jwt: String,
    /// The router's URL.
    #[prost(string, tag = "2")]
    pub url: String,
}
