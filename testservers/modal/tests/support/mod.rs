#![allow(clippy::result_large_err)]
//! A raw tonic client for the test server's own tests: each call sets the headers
//! by hand, so tests can also send wrong ones.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use http::uri::PathAndQuery;
use prost::Message;
use tonic::codec::{ProstCodec, Streaming};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

use ken_provider_modal::proto::headers;
use ken_provider_modal::proto::modal_client::*;
use ken_provider_modal::proto::paths;
use ken_provider_modal::proto::task_command_router::*;
use ken_testserver_modal::ModalTestServer;

/// Connects a channel to `url`.
pub async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .expect("valid URL")
        .connect()
        .await
        .expect("connecting to the test server")
}

/// Sends one unary request on `channel`.
pub async fn raw_unary<Req, Resp>(
    channel: &Channel,
    path: &'static str,
    request: tonic::Request<Req>,
) -> Result<Resp, Status>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| Status::unknown(error.to_string()))?;
    let codec = ProstCodec::<Req, Resp>::default();
    grpc.unary(request, PathAndQuery::from_static(path), codec)
        .await
        .map(tonic::Response::into_inner)
}

/// Opens one server stream on `channel`.
pub async fn raw_stream<Req, Resp>(
    channel: &Channel,
    path: &'static str,
    request: tonic::Request<Req>,
) -> Result<Streaming<Resp>, Status>
where
    Req: Message + Send + Sync + 'static,
    Resp: Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| Status::unknown(error.to_string()))?;
    let codec = ProstCodec::<Req, Resp>::default();
    grpc.server_streaming(request, PathAndQuery::from_static(path), codec)
        .await
        .map(tonic::Response::into_inner)
}

fn set(request: &mut tonic::metadata::MetadataMap, name: &'static str, value: &str) {
    request.insert(name, MetadataValue::try_from(value).expect("ASCII header value"));
}

/// A control-plane client that behaves like a correct SDK.
pub struct Client {
    pub channel: Channel,
    pub token_id: String,
    pub token_secret: String,
    pub auth_token: Option<String>,
}

impl Client {
    pub async fn connect(server: &ModalTestServer) -> Client {
        Client {
            channel: channel(server.url()).await,
            token_id: server.token_id().to_owned(),
            token_secret: server.token_secret().expose().to_owned(),
            auth_token: None,
        }
    }

    /// Builds a request with every control-plane header; `key` and `attempt` set
    /// the idempotency and retry headers.
    pub fn request<T>(&self, message: T, key: Option<&str>, attempt: u32) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let metadata = request.metadata_mut();
        set(metadata, headers::CLIENT_TYPE, headers::CLIENT_TYPE_VALUE);
        set(metadata, headers::CLIENT_VERSION, headers::CLIENT_VERSION_VALUE);
        set(metadata, headers::TOKEN_ID, &self.token_id);
        set(metadata, headers::TOKEN_SECRET, &self.token_secret);
        if let Some(token) = &self.auth_token {
            set(metadata, headers::AUTH_TOKEN, token);
        }
        if let Some(key) = key {
            set(metadata, headers::IDEMPOTENCY_KEY, key);
            set(metadata, headers::RETRY_ATTEMPT, &attempt.to_string());
            set(metadata, headers::RETRY_DELAY, &format!("{}", f64::from(attempt) * 0.1));
        }
        request
    }

    pub async fn authenticate(&mut self) {
        if self.auth_token.is_some() {
            return;
        }
        let key = new_key();
        let request = self.request(AuthTokenGetRequest {}, Some(&key), 0);
        let response: AuthTokenGetResponse = raw_unary(&self.channel, paths::AUTH_TOKEN_GET, request)
            .await
            .expect("AuthTokenGet");
        self.auth_token = Some(response.token);
    }

    /// Sends one attempt with a fresh key.
    pub async fn call<Req, Resp>(&mut self, path: &'static str, message: Req) -> Result<Resp, Status>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        self.authenticate().await;
        let key = new_key();
        self.call_with(path, message, &key, 0).await
    }

    /// Sends one attempt with the given key and attempt number.
    pub async fn call_with<Req, Resp>(
        &mut self,
        path: &'static str,
        message: Req,
        key: &str,
        attempt: u32,
    ) -> Result<Resp, Status>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        self.authenticate().await;
        let request = self.request(message, Some(key), attempt);
        raw_unary(&self.channel, path, request).await
    }

    /// Up to 4 attempts with one key, retrying `UNAVAILABLE`, as the SDKs do.
    pub async fn call_retrying<Req, Resp>(&mut self, path: &'static str, message: Req) -> (Result<Resp, Status>, String)
    where
        Req: Message + Clone + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let key = new_key();
        let mut attempt = 0;
        loop {
            let result = self.call_with(path, message.clone(), &key, attempt).await;
            match &result {
                Err(status) if status.code() == Code::Unavailable && attempt < 3 => attempt += 1,
                _ => return (result, key),
            }
        }
    }

    pub async fn stream<Req, Resp>(&mut self, path: &'static str, message: Req) -> Result<Streaming<Resp>, Status>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        self.authenticate().await;
        let request = self.request(message, None, 0);
        raw_stream(&self.channel, path, request).await
    }

    pub async fn app(&mut self, name: &str) -> String {
        let response: AppGetOrCreateResponse = self
            .call(
                paths::APP_GET_OR_CREATE,
                AppGetOrCreateRequest {
                    app_name: name.to_owned(),
                    environment_name: String::new(),
                    object_creation_type: ObjectCreationType::CreateIfMissing as i32,
                },
            )
            .await
            .expect("AppGetOrCreate");
        response.app_id
    }

    /// Builds an image and follows its logs to the end, resuming after every early
    /// end. Returns the image id, the final result and the log text.
    pub async fn image(&mut self, app_id: &str, commands: &[&str]) -> (String, GenericResult, String) {
        let response: ImageGetOrCreateResponse = self
            .call(
                paths::IMAGE_GET_OR_CREATE,
                ImageGetOrCreateRequest {
                    image: Some(Image {
                        dockerfile_commands: commands.iter().map(|line| (*line).to_owned()).collect(),
                        ..Image::default()
                    }),
                    app_id: app_id.to_owned(),
                    force_build: false,
                    builder_version: "2024.10".to_owned(),
                },
            )
            .await
            .expect("ImageGetOrCreate");
        let image_id = response.image_id;
        if let Some(result) = response.result.filter(|result| result.status != 0) {
            return (image_id, result, String::new());
        }
        let (result, logs, _) = self.join_image(&image_id).await;
        (image_id, result, logs)
    }

    /// Follows an image build; returns the result, the logs and the number of
    /// streams opened.
    pub async fn join_image(&mut self, image_id: &str) -> (GenericResult, String, usize) {
        let mut last_entry_id = String::new();
        let mut logs = Vec::new();
        for streams in 1..=500 {
            let mut stream: Streaming<ImageJoinStreamingResponse> = self
                .stream(
                    paths::IMAGE_JOIN_STREAMING,
                    ImageJoinStreamingRequest {
                        image_id: image_id.to_owned(),
                        timeout: 55.0,
                        last_entry_id: last_entry_id.clone(),
                        include_logs_for_finished: true,
                    },
                )
                .await
                .expect("ImageJoinStreaming");
            loop {
                match stream.message().await {
                    Ok(Some(item)) => {
                        for log in &item.task_logs {
                            logs.extend_from_slice(&log.data);
                        }
                        if !item.entry_id.is_empty() {
                            last_entry_id = item.entry_id.clone();
                        }
                        if let Some(result) = item.result.filter(|result| result.status != 0) {
                            return (result, String::from_utf8_lossy(&logs).into_owned(), streams);
                        }
                    }
                    Ok(None) => break,
                    Err(status) if status.code() == Code::Unavailable => break,
                    Err(status) => panic!("ImageJoinStreaming failed: {status}"),
                }
            }
        }
        panic!("image {image_id} did not finish after 500 streams");
    }

    pub async fn create(&mut self, app_id: &str, definition: Sandbox) -> Result<String, Status> {
        let (result, _) = self
            .call_retrying::<_, SandboxCreateResponse>(
                paths::SANDBOX_CREATE,
                SandboxCreateRequest {
                    app_id: app_id.to_owned(),
                    definition: Some(definition),
                },
            )
            .await;
        result.map(|response| response.sandbox_id)
    }

    /// Polls `SandboxGetTaskId` until the task exists; panics on a task result.
    pub async fn task_id(&mut self, sandbox_id: &str) -> String {
        for _ in 0..600 {
            let response: SandboxGetTaskIdResponse = self
                .call(
                    paths::SANDBOX_GET_TASK_ID,
                    SandboxGetTaskIdRequest {
                        sandbox_id: sandbox_id.to_owned(),
                    },
                )
                .await
                .expect("SandboxGetTaskId");
            if let Some(result) = response.task_result {
                panic!("sandbox {sandbox_id} ended before its task started: {result:?}");
            }
            if let Some(task_id) = response.task_id {
                return task_id;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("sandbox {sandbox_id} got no task id within 60 s");
    }

    pub async fn router(&mut self, task_id: &str) -> Router {
        let access: TaskGetCommandRouterAccessResponse = self
            .call(
                paths::TASK_GET_COMMAND_ROUTER_ACCESS,
                TaskGetCommandRouterAccessRequest {
                    task_id: task_id.to_owned(),
                },
            )
            .await
            .expect("TaskGetCommandRouterAccess");
        Router {
            channel: channel(&access.url).await,
            jwt: access.jwt,
            task_id: task_id.to_owned(),
        }
    }

    pub async fn terminate(&mut self, sandbox_id: &str) {
        let _: SandboxTerminateResponse = self
            .call(
                paths::SANDBOX_TERMINATE,
                SandboxTerminateRequest {
                    sandbox_id: sandbox_id.to_owned(),
                },
            )
            .await
            .expect("SandboxTerminate");
    }
}

/// A router client for one task.
pub struct Router {
    pub channel: Channel,
    pub jwt: String,
    pub task_id: String,
}

/// What an exec produced.
#[derive(Debug)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: Option<ExitStatus>,
    /// Streams opened for stdout, including resumes.
    pub stdout_streams: usize,
}

impl Router {
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        set(request.metadata_mut(), headers::AUTHORIZATION, &format!("Bearer {}", self.jwt));
        request
    }

    pub async fn start(&self, args: &[&str], timeout_secs: Option<u32>) -> Result<String, Status> {
        let exec_id = uuid::Uuid::new_v4().to_string();
        let request = self.request(TaskExecStartRequest {
            task_id: self.task_id.clone(),
            exec_id: exec_id.clone(),
            command_args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            stdout_config: TaskExecStdoutConfig::Pipe as i32,
            stderr_config: TaskExecStderrConfig::Pipe as i32,
            timeout_secs,
            workdir: None,
            secret_ids: Vec::new(),
            env: Default::default(),
        });
        let _: TaskExecStartResponse = raw_unary(&self.channel, paths::TASK_EXEC_START, request).await?;
        Ok(exec_id)
    }

    pub async fn write_stdin(&self, exec_id: &str, offset: u64, data: &[u8], eof: bool) -> Result<(), Status> {
        let request = self.request(TaskExecStdinWriteRequest {
            task_id: self.task_id.clone(),
            exec_id: exec_id.to_owned(),
            offset,
            data: data.to_vec(),
            eof,
        });
        let _: TaskExecStdinWriteResponse = raw_unary(&self.channel, paths::TASK_EXEC_STDIN_WRITE, request).await?;
        Ok(())
    }

    /// Reads one output stream to its end, resuming from the byte offset after
    /// every `UNAVAILABLE`. Returns the bytes and the number of streams opened.
    pub async fn read_all(&self, exec_id: &str, descriptor: TaskExecStdioFileDescriptor) -> (Vec<u8>, usize) {
        let mut data = Vec::new();
        for streams in 1..=10_000 {
            let request = self.request(TaskExecStdioReadRequest {
                task_id: self.task_id.clone(),
                exec_id: exec_id.to_owned(),
                offset: data.len() as u64,
                file_descriptor: descriptor as i32,
            });
            let mut stream: Streaming<TaskExecStdioReadResponse> =
                raw_stream(&self.channel, paths::TASK_EXEC_STDIO_READ, request)
                    .await
                    .expect("TaskExecStdioRead");
            loop {
                match stream.message().await {
                    Ok(Some(item)) => data.extend_from_slice(&item.data),
                    Ok(None) => return (data, streams),
                    Err(status) if status.code() == Code::Unavailable => break,
                    Err(status) => panic!("TaskExecStdioRead failed: {status}"),
                }
            }
        }
        panic!("exec {exec_id} output did not end after 10000 streams");
    }

    pub async fn wait(&self, exec_id: &str) -> Option<ExitStatus> {
        loop {
            let request = self.request(TaskExecWaitRequest {
                task_id: self.task_id.clone(),
                exec_id: exec_id.to_owned(),
            });
            match raw_unary::<_, TaskExecWaitResponse>(&self.channel, paths::TASK_EXEC_WAIT, request).await {
                Ok(response) => return response.exit_status,
                Err(status) if status.code() == Code::DeadlineExceeded => continue,
                Err(status) => panic!("TaskExecWait failed: {status}"),
            }
        }
    }

    /// Runs a command with `stdin`, reads all output and waits for its exit.
    pub async fn run(&self, args: &[&str], stdin: &[u8], timeout_secs: Option<u32>) -> ExecOutput {
        let exec_id = self.start(args, timeout_secs).await.expect("TaskExecStart");
        self.write_stdin(&exec_id, 0, stdin, true).await.expect("TaskExecStdinWrite");
        let ((stdout, stdout_streams), (stderr, _), exit) = tokio::join!(
            self.read_all(&exec_id, TaskExecStdioFileDescriptor::Stdout),
            self.read_all(&exec_id, TaskExecStdioFileDescriptor::Stderr),
            self.wait(&exec_id),
        );
        ExecOutput {
            stdout,
            stderr,
            exit,
            stdout_streams,
        }
    }

    pub async fn sh(&self, script: &str) -> ExecOutput {
        self.run(&["/bin/sh", "-c", script], b"", None).await
    }
}

pub fn new_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Returns a sandbox definition with `image_id`, a 600 s timeout and nothing else set.
pub fn definition(image_id: &str) -> Sandbox {
    Sandbox {
        image_id: image_id.to_owned(),
        timeout_secs: 600,
        ..Sandbox::default()
    }
}

/// Lists what the server left on the host: network namespaces and mounts that
/// carry its names, and its processes.
pub fn host_leftovers() -> Vec<String> {
    let mut leftovers = Vec::new();
    let netns = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    for line in String::from_utf8_lossy(&netns.stdout).lines() {
        if line.starts_with("ken-modal-") {
            leftovers.push(format!("netns {line}"));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mounts.lines() {
        if line.contains("ken-testserver-modal-") {
            leftovers.push(format!("mount {line}"));
        }
    }
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        let root = std::fs::read_link(entry.path().join("root")).unwrap_or_default();
        if root.to_string_lossy().contains("ken-testserver-modal-") {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            leftovers.push(format!(
                "process {} in {} {}",
                entry.file_name().to_string_lossy(),
                root.display(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    leftovers
}

/// Sends the server's logs to the test output; `RUST_LOG` filters them.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("ken_testserver_modal=debug")),
        )
        .with_test_writer()
        .try_init();
}
