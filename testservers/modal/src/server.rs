//! Starting and stopping the server, and the handle tests use to inspect it and
//! to turn fault knobs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ken_core::Secret;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::config::{ModalTestServerConfig, StreamBehavior};
use crate::inspect::{
    AppRecord, ExecRecord, ImageRecord, RequestRecord, SandboxRecord, SecretRecord, Violation,
};
use crate::rpc::{ControlService, RouterService};
use crate::runtime::Host;
use crate::state::{FailMode, State};

/// A running Modal test server: the control plane and the task command router,
/// each on its own port of 127.0.0.1.
///
/// Dropping it (or calling [`shutdown`](Self::shutdown)) stops both listeners,
/// kills every sandbox process and removes every mount, network namespace and
/// directory the server made. Docker images it built stay as a build cache,
/// labelled `ken-testserver-modal=1`.
pub struct ModalTestServer {
    state: Arc<State>,
    url: String,
    control_addr: SocketAddr,
}

impl std::fmt::Debug for ModalTestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModalTestServer")
            .field("url", &self.url)
            .field("router_url", &self.state.router_url)
            .finish_non_exhaustive()
    }
}

impl ModalTestServer {
    /// Starts a server with `config`.
    ///
    /// # Errors
    /// When the process does not run as root, a host tool the sandboxes need
    /// (`nsenter`, `unshare`, `ip`, `mount`, `tini`) is missing, or a listener
    /// cannot be bound. The Docker engine is needed only to build images; a build
    /// without it fails with a message saying so.
    pub async fn start(config: ModalTestServerConfig) -> ken_core::Result<ModalTestServer> {
        let host = Arc::new(Host::new(config.rootfs_cache.as_deref())?);
        let control = bind().await?;
        let router = bind().await?;
        let control_addr = local_addr(&control)?;
        let router_addr = local_addr(&router)?;
        let state = Arc::new(State::new(
            config,
            format!("http://{router_addr}"),
            host,
        ));

        let shutdown = state.shutdown.clone();
        let service = ControlService(state.clone());
        tokio::spawn(async move {
            let served = Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(control), shutdown.cancelled())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the control-plane listener failed");
            }
        });
        let shutdown = state.shutdown.clone();
        let service = RouterService(state.clone());
        tokio::spawn(async move {
            let served = Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(router), shutdown.cancelled())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the task command router listener failed");
            }
        });

        let url = format!("http://{control_addr}");
        tracing::info!(url, router_url = %state.router_url, "Modal test server started");
        Ok(ModalTestServer {
            state,
            url,
            control_addr,
        })
    }

    /// Starts a server with the default configuration.
    ///
    /// # Errors
    /// See [`start`](Self::start).
    pub async fn start_default() -> ken_core::Result<ModalTestServer> {
        Self::start(ModalTestServerConfig::new()).await
    }

    /// Returns the control plane's URL, `http://127.0.0.1:PORT`, for `MODAL_SERVER_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns the control plane's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// Returns the task command router's URL, as `TaskGetCommandRouterAccess` returns it.
    pub fn router_url(&self) -> &str {
        &self.state.router_url
    }

    /// Returns the token id clients must send.
    pub fn token_id(&self) -> &str {
        &self.state.config.token_id
    }

    /// Returns the token secret clients must send.
    pub fn token_secret(&self) -> &Secret {
        &self.state.config.token_secret
    }

    /// Returns the name of the server's only environment.
    pub fn environment(&self) -> &str {
        &self.state.config.environment
    }

    /// Returns the `MODAL_*` variables a client needs to reach this server, secret included.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MODAL_SERVER_URL", self.url.clone()),
            ("MODAL_TOKEN_ID", self.state.config.token_id.clone()),
            (
                "MODAL_TOKEN_SECRET",
                self.state.config.token_secret.expose().to_owned(),
            ),
            ("MODAL_ENVIRONMENT", self.state.config.environment.clone()),
        ]
    }

    // ---- inspection -------------------------------------------------------

    /// Returns every sandbox created so far, oldest first.
    pub fn sandboxes(&self) -> Vec<SandboxRecord> {
        let mut sandboxes: Vec<_> = self.state.lock().sandboxes.values().cloned().collect();
        sandboxes.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        sandboxes.iter().map(|sandbox| sandbox.record()).collect()
    }

    /// Returns the sandbox with `id`, if it exists.
    pub fn sandbox(&self, id: &str) -> Option<SandboxRecord> {
        let sandbox = self.state.lock().sandboxes.get(id).cloned();
        sandbox.map(|sandbox| sandbox.record())
    }

    /// Returns the number of sandboxes created with idempotency key `key`. More than
    /// 1 means a client retry created a duplicate.
    pub fn creates_for_key(&self, key: &str) -> usize {
        self.state
            .lock()
            .creates_per_key
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Returns every app created so far.
    pub fn apps(&self) -> Vec<AppRecord> {
        self.state.lock().apps.values().cloned().collect()
    }

    /// Returns every image created so far.
    pub fn images(&self) -> Vec<ImageRecord> {
        let images: Vec<_> = self.state.lock().images.values().cloned().collect();
        images.iter().map(|image| image.record()).collect()
    }

    /// Returns every secret created so far.
    pub fn secrets(&self) -> Vec<SecretRecord> {
        self.state
            .lock()
            .secrets
            .iter()
            .map(|(id, env)| SecretRecord {
                id: id.clone(),
                env: env.clone(),
            })
            .collect()
    }

    /// Returns every exec started so far.
    pub fn execs(&self) -> Vec<ExecRecord> {
        let sandboxes: Vec<_> = self.state.lock().sandboxes.values().cloned().collect();
        sandboxes
            .iter()
            .flat_map(|sandbox| {
                sandbox
                    .execs()
                    .values()
                    .map(|exec| exec.record())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Returns every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.lock().requests.clone()
    }

    /// Returns the requests for `method` (for example `SandboxCreate`).
    pub fn requests_for(&self, method: &str) -> Vec<RequestRecord> {
        self.state
            .lock()
            .requests
            .iter()
            .filter(|request| request.method == method)
            .cloned()
            .collect()
    }

    /// Returns every protocol violation recorded so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.state.lock().violations.clone()
    }

    /// Returns the methods called with a wrong token id or secret so far, in order.
    pub fn rejected_credentials(&self) -> Vec<String> {
        self.state.lock().rejected_credentials.clone()
    }

    /// Panics with the list of violations, if there is any.
    ///
    /// # Panics
    /// When a client broke the protocol.
    pub fn assert_no_violations(&self) {
        let violations = self.violations();
        if !violations.is_empty() {
            let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
            panic!(
                "the Modal test server saw {} protocol violation(s):\n  {}",
                list.len(),
                list.join("\n  ")
            );
        }
    }

    /// Number of sandboxes that still have processes, mounts or namespaces on
    /// the host.
    pub fn active_host_sandboxes(&self) -> usize {
        self.state.host.active_count()
    }

    // ---- knobs -------------------------------------------------------------

    /// Makes every call of `method` (a name like `SandboxCreate` or a full path)
    /// fail once with `UNAVAILABLE` per idempotency key, so that each logical call
    /// succeeds on its retry. A call without a key (a stream) fails once, then the
    /// knob turns itself off for that method.
    pub fn fail_once(&self, method: &str, mode: FailMode) {
        let method = crate::rpc::method_name(method).to_owned();
        self.state.lock().armed.insert(method, mode);
    }

    /// Turns off every [`fail_once`](Self::fail_once) knob.
    pub fn clear_faults(&self) {
        self.state.lock().armed.clear();
    }

    /// Limits sandbox creations per second; `None` removes the limit.
    pub fn set_sandbox_rate_limit(&self, per_second: Option<u32>) {
        let mut inner = self.state.lock();
        inner.rate_limit = per_second;
        inner.recent_creations.clear();
    }

    /// Changes when streams opened from now on end early.
    pub fn set_streams(&self, streams: StreamBehavior) {
        self.state.lock().streams = streams;
    }

    /// Changes the delay until the task of a new sandbox exists.
    pub fn set_task_delay(&self, delay: Duration) {
        self.state.lock().task_delay = delay;
    }

    /// Changes the lifetime of router JWTs issued from now on.
    pub fn set_router_jwt_ttl(&self, ttl: Duration) {
        self.state.lock().router_jwt_ttl = ttl;
    }

    /// Changes the lifetime of auth tokens issued from now on.
    pub fn set_auth_token_ttl(&self, ttl: Duration) {
        self.state.lock().auth_token_ttl = ttl;
    }

    /// Makes every router JWT issued so far invalid, as if it had expired, so the
    /// router returns `UNAUTHENTICATED` for it.
    pub fn expire_router_tokens(&self) {
        let mut inner = self.state.lock();
        let issued = std::mem::take(&mut inner.issued_jwts);
        inner.revoked_jwts.extend(issued);
    }

    /// Stops the server and removes everything it made on the host.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        let host = self.state.host.clone();
        let _ = tokio::task::spawn_blocking(move || host.teardown_all()).await;
    }
}

impl Drop for ModalTestServer {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        self.state.host.teardown_all();
        tracing::info!(url = %self.url, "Modal test server stopped");
    }
}

async fn bind() -> ken_core::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| ken_core::Error::io("binding a listener on 127.0.0.1", error))
}

fn local_addr(listener: &TcpListener) -> ken_core::Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|error| ken_core::Error::io("reading a listener's address", error))
}
