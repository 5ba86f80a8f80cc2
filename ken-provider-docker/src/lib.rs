//! Ken sandboxes on a local Docker engine, through bollard.
//!
//! Each sandbox is a container named `ken-<sandbox name>`, started from an image that
//! [`DockerProvider`] builds from the team's Dockerfile and tags by content hash
//! (`ken-image:<hash>`), so an unchanged definition starts without a build. All
//! sandboxes join one user-defined bridge network with inter-container traffic
//! disabled, so they cannot reach each other, and their ports are published on
//! `127.0.0.1` only, on host ports the engine picks.
//!
//! The provider touches only containers, networks, volumes and images labelled
//! `ken.managed-by=ken`, and only containers whose names start with `ken-`.
//!
//! ```no_run
//! # async fn demo() -> ken_core::Result<()> {
//! use ken_provider_docker::DockerProvider;
//!
//! let provider = DockerProvider::connect().await?.with_network_name("ken-ci");
//! # let _ = provider;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bytes::Bytes;
use ken_core::exec::{ExecProcess, ExecRequest};
use ken_core::sandbox::{Capabilities, Resource};
use ken_core::{
    Endpoint, Error, EventSink, ImageRef, ImageSpec, LabelSelector, PortSpec, Result, SandboxInfo,
    SandboxName, SandboxProvider, SandboxSpec,
};
use tokio::sync::Mutex;

mod container;
mod error;
mod exec;
mod files;
mod image;
mod locks;
mod network;
mod resources;

use locks::KeyedLocks;

/// Name of the shared network all sandboxes join, unless
/// [`DockerProvider::with_network_name`] sets another.
pub const DEFAULT_NETWORK_NAME: &str = "ken-sandboxes";

/// Prefix of every container name the provider makes: sandbox `demo` runs in
/// container `ken-demo`.
pub const CONTAINER_PREFIX: &str = "ken-";

/// Repository of the images the provider builds: `ken-image:<content hash>`.
pub const IMAGE_REPOSITORY: &str = "ken-image";

/// Default time the provider waits for the engine to start responding to a request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// The provider's name, as returned by [`SandboxProvider::name`].
const PROVIDER_NAME: &str = "docker";

/// A [`SandboxProvider`] backed by a Docker engine.
///
/// Cloning is cheap: clones share the engine connection and the state that keeps
/// calls for the same sandbox in order.
#[derive(Clone)]
pub struct DockerProvider {
    docker: Docker,
    host: String,
    network_name: String,
    state: Arc<SharedState>,
}

/// State shared by the clones of a provider.
#[derive(Debug, Default)]
struct SharedState {
    /// Id of the shared network once it is known to exist.
    network_id: Mutex<Option<String>>,
    /// Serializes create and destroy of the same sandbox.
    sandbox_locks: KeyedLocks,
    /// Serializes builds of the same image tag.
    image_locks: KeyedLocks,
}

impl DockerProvider {
    /// Connects to the engine named by `DOCKER_HOST`, or to the local socket
    /// `unix:///var/run/docker.sock` when it is unset, and negotiates the API
    /// version.
    ///
    /// Fails when the engine does not respond.
    pub async fn connect() -> Result<Self> {
        let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
        let docker = Docker::connect_with_defaults().map_err(|e| {
            error::backend(
                format!("failed to set up a connection to the Docker engine at {host}; check DOCKER_HOST"),
                e,
            )
        })?;
        Self::from_docker(docker, host).await
    }

    /// Uses an existing bollard client, for example one connected over TCP, and
    /// negotiates the API version. `host` names the engine in error messages.
    ///
    /// The client's request timeout is set to [`DEFAULT_REQUEST_TIMEOUT`]; change
    /// it with [`with_request_timeout`](Self::with_request_timeout).
    pub async fn from_docker(docker: Docker, host: impl Into<String>) -> Result<Self> {
        let host = host.into();
        let docker = docker
            .with_timeout(DEFAULT_REQUEST_TIMEOUT)
            .negotiate_version()
            .await
            .map_err(|e| {
                error::backend(
                    format!(
                        "failed to reach the Docker engine at {host}; start the engine or set DOCKER_HOST to its address"
                    ),
                    e,
                )
            })?;
        Ok(DockerProvider {
            docker,
            host,
            network_name: DEFAULT_NETWORK_NAME.to_owned(),
            state: Arc::new(SharedState::default()),
        })
    }

    /// Sets the name of the shared network sandboxes join (default
    /// [`DEFAULT_NETWORK_NAME`]).
    pub fn with_network_name(mut self, name: impl Into<String>) -> Self {
        self.network_name = name.into();
        self.state = Arc::new(SharedState::default());
        self
    }

    /// Sets how long the provider waits for the engine to start responding to a
    /// request (default [`DEFAULT_REQUEST_TIMEOUT`]). Streams that already
    /// started, such as build output and exec output, are not limited by it.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.docker = self.docker.with_timeout(timeout);
        self
    }

    /// Returns the bollard client, for calls the provider does not wrap.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Returns the name of the shared network sandboxes join.
    pub fn network_name(&self) -> &str {
        &self.network_name
    }

    /// Returns the name of the container that runs `sandbox`.
    pub fn container_name(sandbox: &SandboxName) -> String {
        format!("{CONTAINER_PREFIX}{sandbox}")
    }
}

impl fmt::Debug for DockerProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerProvider")
            .field("host", &self.host)
            .field("network_name", &self.network_name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SandboxProvider for DockerProvider {
    fn name(&self) -> &str {
        PROVIDER_NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
            .with_build_images(true)
            .with_snapshot(true)
            .with_endpoints(true)
            .with_stdin(true)
            .with_exec_user(true)
            .with_resource_limits(true)
            .with_isolation(true)
    }

    async fn prepare_image(&self, spec: &ImageSpec, events: &EventSink) -> Result<ImageRef> {
        self.prepare_image_impl(spec, events).await
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxInfo> {
        self.create_impl(spec).await
    }

    async fn get(&self, name: &SandboxName) -> Result<SandboxInfo> {
        self.get_impl(name).await
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<SandboxInfo>> {
        self.list_impl(selector).await
    }

    async fn exec(&self, sandbox: &SandboxName, request: ExecRequest) -> Result<ExecProcess> {
        self.exec_impl(sandbox, request).await
    }

    async fn upload(&self, sandbox: &SandboxName, dest: &str, archive: Bytes) -> Result<()> {
        self.upload_impl(sandbox, dest, archive).await
    }

    async fn download(&self, sandbox: &SandboxName, path: &str) -> Result<Bytes> {
        self.download_impl(sandbox, path).await
    }

    async fn endpoint(&self, sandbox: &SandboxName, port: &PortSpec) -> Result<Endpoint> {
        self.endpoint_impl(sandbox, port).await
    }

    async fn snapshot(&self, sandbox: &SandboxName, reference: &str) -> Result<ImageRef> {
        self.snapshot_impl(sandbox, reference).await
    }

    async fn destroy(&self, sandbox: &SandboxName) -> Result<()> {
        self.destroy_impl(sandbox).await
    }

    async fn resources(&self, selector: &LabelSelector) -> Result<Vec<Resource>> {
        self.resources_impl(selector).await
    }

    async fn remove_resource(&self, resource: &Resource) -> Result<()> {
        self.remove_resource_impl(resource).await
    }
}

/// Builds the error for a sandbox that does not exist.
fn sandbox_not_found(sandbox: &SandboxName) -> Error {
    Error::NotFound {
        kind: "sandbox",
        name: sandbox.to_string(),
    }
}
