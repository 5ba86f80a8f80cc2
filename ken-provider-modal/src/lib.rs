//! Ken sandboxes on Modal, over Modal's gRPC protocol.
//!
//! [`ModalProvider`] speaks the protocol of Modal's SDKs with tonic and
//! hand-derived prost messages ([`proto`]), so building needs no `protoc`. Every
//! sandbox belongs to one Modal app (`ken` unless configured) and carries Ken's
//! labels as Modal sandbox tags, so listing and garbage collection work from Modal
//! alone.
//!
//! Credentials come from `MODAL_TOKEN_ID` / `MODAL_TOKEN_SECRET` or the active
//! profile of `~/.modal.toml`; see [`config`].
//!
//! ```no_run
//! # async fn demo() -> ken_core::Result<()> {
//! use ken_provider_modal::ModalProvider;
//!
//! let provider = ModalProvider::from_env().await?;
//! # let _ = provider;
//! # Ok(())
//! # }
//! ```
//!
//! What differs from the Docker provider:
//! - Images are built by Modal from the Dockerfile's lines. Local `COPY`/`ADD`
//!   sources cannot be sent, so such a line is rejected with an error naming it
//!   (see [`dockerfile`]); Ken's own host-CA lines are left out, because the build
//!   runs on Modal's network, not behind the host's proxy.
//! - Exec as another user runs the command under `setpriv` (util-linux), after
//!   looking the user up in the sandbox, because the router has no user field.
//! - A sandbox that has ended is gone: `get` and `exec` report it as not found,
//!   with how it ended when Modal still lists it.
//! - Snapshot images cannot be deleted through the protocol. `remove_resource`
//!   of one does nothing and returns `Ok`, so the image stays in Modal's store.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use ken_core::exec::{ExecProcess, ExecRequest};
use ken_core::sandbox::{Capabilities, Resource};
use ken_core::{
    Endpoint, EventSink, ImageRef, ImageSpec, LabelSelector, PortSpec, Result, SandboxInfo, SandboxName,
    SandboxProvider, SandboxSpec,
};

mod auth;
mod client;
pub mod config;
pub mod dockerfile;
mod error;
mod exec;
mod files;
mod image;
mod locks;
pub mod proto;
mod retry;
mod router;
mod sandbox;
mod transport;
mod user;

pub use config::ModalConfig;

use client::ControlClient;
use locks::KeyedLocks;
use router::RouterCache;

/// The provider's name, as returned by [`SandboxProvider::name`].
pub const PROVIDER_NAME: &str = "modal";

/// A [`SandboxProvider`] that runs sandboxes on Modal.
///
/// Cloning is cheap: clones share the connection, the auth token and the caches.
#[derive(Clone)]
pub struct ModalProvider {
    control: ControlClient,
    state: Arc<SharedState>,
}

/// State shared by the clones of a provider.
#[derive(Default)]
struct SharedState {
    /// Id of the Modal app, once looked up.
    app_id: tokio::sync::OnceCell<String>,
    /// Command router clients by task id.
    routers: RouterCache,
    /// Task ids by sandbox id.
    tasks: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// Serializes create and destroy of the same sandbox name.
    sandbox_locks: KeyedLocks,
    /// Exec users looked up, by task id and user.
    users: user::UserCache,
}

impl ModalProvider {
    /// Connects with `config` and checks the credentials by fetching an auth
    /// token, so that a wrong token fails here with
    /// [`Error::Unauthenticated`](ken_core::Error::Unauthenticated).
    pub async fn connect(config: ModalConfig) -> Result<Self> {
        let provider = Self::new(config)?;
        provider.control.check_credentials().await?;
        tracing::info!(provider = "modal", server = %provider.config().server_url, "connected to Modal");
        Ok(provider)
    }

    /// Reads the configuration with [`ModalConfig::from_env`] and connects.
    pub async fn from_env() -> Result<Self> {
        Self::connect(ModalConfig::from_env()?).await
    }

    /// Creates the provider without contacting Modal; the first call connects.
    pub fn new(config: ModalConfig) -> Result<Self> {
        Ok(ModalProvider {
            control: ControlClient::new(config)?,
            state: Arc::new(SharedState::default()),
        })
    }

    /// Returns the configuration.
    pub fn config(&self) -> &ModalConfig {
        self.control.config()
    }
}

impl fmt::Debug for ModalProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = self.config();
        f.debug_struct("ModalProvider")
            .field("server_url", &config.server_url.as_str())
            .field("environment", &config.environment)
            .field("app_name", &config.app_name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl SandboxProvider for ModalProvider {
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
