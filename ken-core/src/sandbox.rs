//! The sandbox provider trait and the types it works with.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use url::Url;

use crate::error::{Error, Result, Secret};
use crate::exec::{ExecProcess, ExecRequest};
use crate::labels::{LabelSelector, Labels};
use crate::phase::EventSink;

/// A validated sandbox name: 1 to 40 characters of `a-z`, `0-9` and `-`, starting
/// with a letter and not ending with `-`.
///
/// The same name is a container name, a DNS label and a tailnet host name, so it is
/// kept to what all of them accept.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SandboxName(String);

impl SandboxName {
    /// Maximum length of a sandbox name.
    pub const MAX_LEN: usize = 40;

    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > Self::MAX_LEN {
            Some("it is longer than 40 characters")
        } else if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            Some("it must start with a lowercase letter")
        } else if name.ends_with('-') {
            Some("it must not end with '-'")
        } else if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            Some("only lowercase letters, digits and '-' are allowed")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::invalid(
                "sandbox name",
                name,
                format!("{reason}; use a name such as `demo-1`"),
            )),
            None => Ok(SandboxName(name)),
        }
    }

    /// Returns the name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SandboxName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        SandboxName::new(s)
    }
}

/// The definition of an image to build.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Contents of the Dockerfile, after Ken's own additions (see [`crate::image`]).
    pub dockerfile: String,
    /// Directory sent as the build context.
    pub context: PathBuf,
    /// Files added to the context under the given relative names, for example the
    /// host's CA bundle.
    pub extra_files: BTreeMap<String, Bytes>,
    /// Labels for the image.
    pub labels: Labels,
}

/// A prepared image a sandbox can be created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRef {
    /// The provider's reference, for example `ken-image:3f2a...`.
    pub reference: String,
    /// True when the image existed already and nothing was built.
    pub cached: bool,
}

/// Resource limits for a sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Resources {
    /// CPU cores, fractional allowed.
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes.
    pub pids: Option<u64>,
}

/// A port inside the sandbox to make reachable from outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortSpec {
    /// A short name, for example `web`.
    pub name: String,
    /// The port the service listens on inside the sandbox.
    pub port: u16,
    /// The URL scheme to show for it, usually `http`.
    pub scheme: String,
}

/// Everything a provider needs to create a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The sandbox's name, unique per provider.
    pub name: SandboxName,
    /// The image to start.
    pub image: ImageRef,
    /// Resource limits.
    pub resources: Resources,
    /// Labels for the sandbox and everything made for it.
    pub labels: Labels,
    /// Environment for every process in the sandbox.
    pub env: BTreeMap<String, String>,
    /// Secret environment, passed without being logged.
    pub secret_env: BTreeMap<String, Secret>,
    /// Ports to expose.
    pub ports: Vec<PortSpec>,
    /// Default working directory.
    pub workdir: Option<String>,
    /// Time after which the provider may stop the sandbox by itself, when it can.
    pub ttl: Duration,
}

/// The lifecycle state of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SandboxState {
    /// Being created; not ready for exec yet.
    Creating,
    /// Running; exec works.
    Running,
    /// Stopped or exited.
    Stopped,
    /// The provider reported something Ken does not know.
    Unknown,
}

impl fmt::Display for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SandboxState::Creating => "creating",
            SandboxState::Running => "running",
            SandboxState::Stopped => "stopped",
            SandboxState::Unknown => "unknown",
        })
    }
}

/// A provider's description of a sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxInfo {
    /// The provider's id for it, for example a container id.
    pub id: String,
    /// Its name.
    pub name: SandboxName,
    /// The provider that runs it.
    pub provider: String,
    /// Its state.
    pub state: SandboxState,
    /// Its labels.
    pub labels: Labels,
    /// Creation time in Unix seconds, when known.
    pub created_at: Option<u64>,
    /// The image it was created from.
    pub image: String,
}

/// Login details for an endpoint. The password is a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// An address a user can open, for a port of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The port's name, for example `web`.
    pub name: String,
    /// The port inside the sandbox.
    pub port: u16,
    /// The URL to open.
    pub url: Url,
    /// Login details, when the endpoint needs them. Never serialized.
    #[serde(skip)]
    pub credentials: Option<Credentials>,
}

/// Something a provider made, found by its labels.
#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    /// The resource's kind.
    pub kind: ResourceKind,
    /// The provider's id for it.
    pub id: String,
    /// Its labels.
    pub labels: Labels,
}

/// The kinds of resource a provider makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResourceKind {
    /// A sandbox (a container, a cloud sandbox).
    Sandbox,
    /// A network.
    Network,
    /// A volume.
    Volume,
    /// An image.
    Image,
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResourceKind::Sandbox => "sandbox",
            ResourceKind::Network => "network",
            ResourceKind::Volume => "volume",
            ResourceKind::Image => "image",
        })
    }
}

/// The operations a provider supports. Other calls return [`Error::Unsupported`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Builds images from a Dockerfile.
    pub build_images: bool,
    /// Takes snapshots of a sandbox into an image.
    pub snapshot: bool,
    /// Exposes ports as endpoints reachable by the user.
    pub endpoints: bool,
    /// Accepts standard input for exec.
    pub stdin: bool,
    /// Runs exec as another user.
    pub exec_user: bool,
    /// Enforces resource limits.
    pub resource_limits: bool,
    /// Keeps sandboxes from reaching each other over the network.
    pub isolation: bool,
}

impl Capabilities {
    /// Capabilities with every flag off; set the ones a provider has.
    pub fn none() -> Self {
        Capabilities::default()
    }

    /// Sets [`Capabilities::build_images`].
    pub fn with_build_images(mut self, value: bool) -> Self {
        self.build_images = value;
        self
    }

    /// Sets [`Capabilities::snapshot`].
    pub fn with_snapshot(mut self, value: bool) -> Self {
        self.snapshot = value;
        self
    }

    /// Sets [`Capabilities::endpoints`].
    pub fn with_endpoints(mut self, value: bool) -> Self {
        self.endpoints = value;
        self
    }

    /// Sets [`Capabilities::stdin`].
    pub fn with_stdin(mut self, value: bool) -> Self {
        self.stdin = value;
        self
    }

    /// Sets [`Capabilities::exec_user`].
    pub fn with_exec_user(mut self, value: bool) -> Self {
        self.exec_user = value;
        self
    }

    /// Sets [`Capabilities::resource_limits`].
    pub fn with_resource_limits(mut self, value: bool) -> Self {
        self.resource_limits = value;
        self
    }

    /// Sets [`Capabilities::isolation`].
    pub fn with_isolation(mut self, value: bool) -> Self {
        self.isolation = value;
        self
    }
}

/// A backend that runs sandboxes: a local Docker engine, a cloud service.
///
/// # Contract
/// - Every resource the provider makes carries the labels of the [`SandboxSpec`]
///   (or of the [`ImageSpec`]), so that [`list`](Self::list) and
///   [`resources`](Self::resources) find them with no other state.
/// - [`destroy`](Self::destroy) removes everything made for the sandbox and succeeds
///   when the sandbox is already gone, including while it is still being created.
/// - Calls outside [`capabilities`](Self::capabilities) return
///   [`Error::Unsupported`] naming the operation and the provider.
/// - Exec output is bytes; a provider buffers only a bounded amount and never loses
///   output that was not read yet.
#[async_trait]
pub trait SandboxProvider: Send + Sync + fmt::Debug {
    /// Returns the provider's short name, for example `docker`.
    fn name(&self) -> &str;

    /// Returns what this provider can do.
    fn capabilities(&self) -> Capabilities;

    /// Builds the image, or finds it built already (a cache hit builds nothing).
    async fn prepare_image(&self, spec: &ImageSpec, events: &EventSink) -> Result<ImageRef>;

    /// Creates and starts a sandbox. Fails with [`Error::AlreadyExists`] when the
    /// name is taken.
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxInfo>;

    /// Looks up a sandbox by name. Fails with [`Error::NotFound`].
    async fn get(&self, name: &SandboxName) -> Result<SandboxInfo>;

    /// Lists the sandboxes whose labels match `selector`.
    async fn list(&self, selector: &LabelSelector) -> Result<Vec<SandboxInfo>>;

    /// Starts a command inside the sandbox.
    async fn exec(&self, sandbox: &SandboxName, request: ExecRequest) -> Result<ExecProcess>;

    /// Unpacks the tar archive `archive` into the directory `dest` inside the sandbox.
    async fn upload(&self, sandbox: &SandboxName, dest: &str, archive: Bytes) -> Result<()>;

    /// Returns the file or directory at `path` inside the sandbox as a tar archive.
    async fn download(&self, sandbox: &SandboxName, path: &str) -> Result<Bytes>;

    /// Returns the endpoint for an exposed port of the sandbox.
    async fn endpoint(&self, sandbox: &SandboxName, port: &PortSpec) -> Result<Endpoint>;

    /// Saves the sandbox's file system as an image named `reference`.
    async fn snapshot(&self, sandbox: &SandboxName, reference: &str) -> Result<ImageRef>;

    /// Stops and removes the sandbox and everything made for it. Idempotent.
    async fn destroy(&self, sandbox: &SandboxName) -> Result<()>;

    /// Lists every resource whose labels match `selector`, sandboxes included.
    async fn resources(&self, selector: &LabelSelector) -> Result<Vec<Resource>>;

    /// Removes one resource returned by [`resources`](Self::resources). Idempotent.
    async fn remove_resource(&self, resource: &Resource) -> Result<()>;
}

/// A sandbox together with the provider that runs it.
///
/// This is what the network provider, the harness and the seeders receive: enough to
/// exec into the sandbox and to ask for its endpoints.
#[derive(Clone)]
pub struct Sandbox {
    provider: Arc<dyn SandboxProvider>,
    info: SandboxInfo,
}

impl Sandbox {
    /// Pairs `info` with the provider that runs it.
    pub fn new(provider: Arc<dyn SandboxProvider>, info: SandboxInfo) -> Self {
        Sandbox { provider, info }
    }

    /// Returns the sandbox's name.
    pub fn name(&self) -> &SandboxName {
        &self.info.name
    }

    /// Returns what the provider reported about the sandbox.
    pub fn info(&self) -> &SandboxInfo {
        &self.info
    }

    /// Returns the provider.
    pub fn provider(&self) -> &Arc<dyn SandboxProvider> {
        &self.provider
    }

    /// Starts a command inside the sandbox.
    pub async fn exec(&self, request: ExecRequest) -> Result<ExecProcess> {
        self.provider.exec(&self.info.name, request).await
    }

    /// Runs a command to completion and returns its output.
    pub async fn exec_output(&self, request: ExecRequest) -> Result<crate::exec::ExecOutput> {
        self.exec(request).await?.output().await
    }

    /// Destroys the sandbox; see [`SandboxProvider::destroy`].
    pub async fn destroy(&self) -> Result<()> {
        self.provider.destroy(&self.info.name).await
    }
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("provider", &self.provider.name())
            .field("name", &self.info.name)
            .field("id", &self.info.id)
            .finish()
    }
}

/// Conveniences available on every [`SandboxProvider`].
#[async_trait]
pub trait SandboxProviderExt: SandboxProvider {
    /// Runs a command to completion and returns its output.
    async fn exec_output(&self, sandbox: &SandboxName, request: ExecRequest) -> Result<crate::exec::ExecOutput> {
        self.exec(sandbox, request).await?.output().await
    }

    /// Runs `script` with `sh -c` and fails with [`Error::StepFailed`] unless it
    /// exits with 0; returns its standard output.
    async fn run_script(&self, sandbox: &SandboxName, what: &str, script: &str) -> Result<Bytes> {
        let output = self.exec_output(sandbox, ExecRequest::shell(script)).await?;
        if !output.status.success() {
            let mut log = output.stdout_text();
            log.push_str(&output.stderr_text());
            return Err(Error::StepFailed {
                step: what.to_owned(),
                status: output.status.to_string(),
                log_tail: crate::plan::tail_lines(&log, 20),
            });
        }
        Ok(output.stdout)
    }

    /// Writes one file of `contents` with `mode` at the absolute `path`.
    async fn write_file(&self, sandbox: &SandboxName, path: &str, contents: Bytes, mode: u32) -> Result<()> {
        let (dir, name) = path
            .rsplit_once('/')
            .filter(|(_, name)| !name.is_empty())
            .ok_or_else(|| Error::invalid("sandbox path", path, "expected an absolute file path"))?;
        let dir = if dir.is_empty() { "/" } else { dir };
        let archive = crate::archive::single_file(name, &contents, mode)?;
        self.exec_output(sandbox, ExecRequest::new(["mkdir", "-p", dir])).await?;
        self.upload(sandbox, dir, archive).await
    }

    /// Waits until a TCP connection to `port` inside the sandbox succeeds.
    async fn wait_for_port(&self, sandbox: &SandboxName, port: u16, timeout: Duration) -> Result<()> {
        let probe = crate::plan::Probe::Tcp { port };
        crate::plan::wait_for_probe(self, sandbox, &probe, timeout, "port probe").await
    }
}

impl<T: SandboxProvider + ?Sized> SandboxProviderExt for T {}
