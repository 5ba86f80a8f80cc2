//! Shared setup: a Modal test server on 127.0.0.1 and a provider pointed at it.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use ken_core::exec::{ExecProcess, ExecRequest};
use ken_core::sandbox::{Capabilities, Resource};
use ken_core::{
    Endpoint, EventSink, ImageRef, ImageSpec, LabelSelector, PortSpec, Result, SandboxInfo, SandboxName,
    SandboxProvider, SandboxSpec,
};
use ken_provider_modal::{ModalConfig, ModalProvider};
use ken_testserver_modal::{ModalTestServer, ModalTestServerConfig};

/// Directory where the server keeps exported image file systems between runs.
pub fn rootfs_cache() -> std::path::PathBuf {
    std::env::temp_dir().join("ken-modal-provider-tests-rootfs")
}

/// Starts a server with `config`, or returns `None` (after saying why) when the
/// Docker engine is unreachable and `KEN_REQUIRE_DOCKER` is not set.
pub async fn server(test: &str, config: ModalTestServerConfig) -> Option<ModalTestServer> {
    // `RUST_LOG=ken_provider_modal=debug` shows the provider's log in failing tests.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    ken_core::testkit::require_docker_or_skip(test, ken_testserver_modal::docker_available().await)?;
    let server = ModalTestServer::start(config.with_rootfs_cache(rootfs_cache()))
        .await
        .unwrap_or_else(|error| panic!("the Modal test server did not start: {error}"));
    Some(server)
}

/// Returns a provider for `server`, with plain TCP tunnels (the kit's HTTP client
/// cannot trust a test TLS certificate).
pub fn provider(server: &ModalTestServer) -> ModalProvider {
    let config = ModalConfig::new(server.token_id(), server.token_secret().clone())
        .with_server_url(server.url())
        .expect("the test server's URL is valid")
        .with_environment(server.environment())
        .with_plain_ports(true);
    ModalProvider::new(config).expect("the provider accepts the test server's settings")
}

/// A provider that owns the server it talks to, so the server lives exactly as
/// long as one conformance check.
#[derive(Debug, Clone)]
pub struct ServedProvider {
    pub provider: ModalProvider,
    pub server: Arc<ModalTestServer>,
}

#[async_trait]
impl SandboxProvider for ServedProvider {
    fn name(&self) -> &str {
        self.provider.name()
    }
    fn capabilities(&self) -> Capabilities {
        self.provider.capabilities()
    }
    async fn prepare_image(&self, spec: &ImageSpec, events: &EventSink) -> Result<ImageRef> {
        self.provider.prepare_image(spec, events).await
    }
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxInfo> {
        self.provider.create(spec).await
    }
    async fn get(&self, name: &SandboxName) -> Result<SandboxInfo> {
        self.provider.get(name).await
    }
    async fn list(&self, selector: &LabelSelector) -> Result<Vec<SandboxInfo>> {
        self.provider.list(selector).await
    }
    async fn exec(&self, sandbox: &SandboxName, request: ExecRequest) -> Result<ExecProcess> {
        self.provider.exec(sandbox, request).await
    }
    async fn upload(&self, sandbox: &SandboxName, dest: &str, archive: Bytes) -> Result<()> {
        self.provider.upload(sandbox, dest, archive).await
    }
    async fn download(&self, sandbox: &SandboxName, path: &str) -> Result<Bytes> {
        self.provider.download(sandbox, path).await
    }
    async fn endpoint(&self, sandbox: &SandboxName, port: &PortSpec) -> Result<Endpoint> {
        self.provider.endpoint(sandbox, port).await
    }
    async fn snapshot(&self, sandbox: &SandboxName, reference: &str) -> Result<ImageRef> {
        self.provider.snapshot(sandbox, reference).await
    }
    async fn destroy(&self, sandbox: &SandboxName) -> Result<()> {
        self.provider.destroy(sandbox).await
    }
    async fn resources(&self, selector: &LabelSelector) -> Result<Vec<Resource>> {
        self.provider.resources(selector).await
    }
    async fn remove_resource(&self, resource: &Resource) -> Result<()> {
        self.provider.remove_resource(resource).await
    }
}

/// Builds the kit image on `provider`.
pub async fn kit_image(provider: &ModalProvider) -> ImageRef {
    provider
        .prepare_image(&ken_core::testkit::kit_image_spec(), &EventSink::none())
        .await
        .unwrap_or_else(|error| panic!("building the kit image on the test server failed: {error}"))
}

/// Returns a sandbox spec for `name` on `image`, with Ken's labels and a 10 min
/// lifetime.
pub fn spec(name: &str, image: &ImageRef) -> SandboxSpec {
    let name = SandboxName::new(name).expect("a valid sandbox name");
    let ttl = std::time::Duration::from_secs(600);
    SandboxSpec {
        labels: ken_core::labels::Labels::for_sandbox(name.as_str(), "modal-tests", ttl),
        name,
        image: image.clone(),
        resources: Default::default(),
        env: Default::default(),
        secret_env: Default::default(),
        ports: Vec::new(),
        workdir: None,
        ttl,
    }
}

/// Runs `script` with `sh -c` in `sandbox` and returns its output.
pub async fn sh(provider: &ModalProvider, sandbox: &SandboxName, script: &str) -> ken_core::exec::ExecOutput {
    provider
        .exec(sandbox, ExecRequest::shell(script))
        .await
        .unwrap_or_else(|error| panic!("exec of {script:?} in {sandbox} failed to start: {error}"))
        .output()
        .await
        .unwrap_or_else(|error| panic!("exec of {script:?} in {sandbox} failed: {error}"))
}

/// Returns the number of processes in `sandbox` whose command line contains
/// `marker` (the `ps` of this check excluded).
pub async fn processes_with(provider: &ModalProvider, sandbox: &SandboxName, marker: &str) -> usize {
    let script = format!(
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done | grep -F -- {} | grep -v -c -F 'grep -F' || true",
        ken_core::exec::shell_quote(marker)
    );
    let output = sh(provider, sandbox, &script).await;
    output.stdout_text().trim().parse().unwrap_or_else(|_| panic!("counting processes gave {output:?}"))
}
