//! Creating, finding and removing sandbox containers.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, EndpointSettings, HostConfig,
    NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use ken_core::labels::{Labels, CACHE, MANAGED_BY, MANAGED_BY_VALUE, SANDBOX};
use ken_core::sandbox::SandboxState;
use ken_core::{Error, LabelSelector, Result, SandboxInfo, SandboxName, SandboxSpec};

use crate::error;
use crate::exec::EXEC_STATE_DIR;
use crate::{sandbox_not_found, DockerProvider, CONTAINER_PREFIX, PROVIDER_NAME};

impl DockerProvider {
    pub(crate) async fn create_impl(&self, spec: &SandboxSpec) -> Result<SandboxInfo> {
        // The sandbox lock is taken before anything else and held by a task of its
        // own until the create is done. A caller who gives up halfway (drops this
        // future) cannot leave a half-made container behind: the task finishes,
        // and a destroy of the same sandbox waits for it on the lock.
        let guard = self.state.sandbox_locks.lock(spec.name.as_str()).await;
        let provider = self.clone();
        let spec = spec.clone();
        let name = spec.name.clone();
        let task = tokio::spawn(async move {
            let result = provider.create_locked(&spec).await;
            drop(guard);
            result
        });
        task.await.map_err(|e| {
            Error::backend_with(error::SERVICE, format!("the task creating sandbox \"{name}\" failed"), e)
        })?
    }

    /// Creates the sandbox; the caller holds its lock.
    async fn create_locked(&self, spec: &SandboxSpec) -> Result<SandboxInfo> {
        let name = &spec.name;
        tracing::info!(provider = "docker", sandbox.name = %name, image = %spec.image.reference, "creating sandbox");

        let image_labels = self.image_labels(name, &spec.image.reference).await?;
        let container = Self::container_name(name);
        let mut network_id = self.network_id(&spec.image.reference).await?;
        let mut retried = false;
        let id = loop {
            let body = container_body(spec, &network_id, &image_labels)?;
            let options = CreateContainerOptionsBuilder::default().name(&container).build();
            match self.docker.create_container(Some(options), body).await {
                Ok(response) => break response.id,
                Err(e) if error::is_conflict(&e) => {
                    tracing::info!(provider = "docker", sandbox.name = %name, "sandbox name is taken; leaving the existing container alone");
                    return Err(Error::AlreadyExists {
                        kind: "sandbox",
                        name: name.to_string(),
                    });
                }
                // The cached network was removed behind our back: find or make it again, once.
                Err(e) if error::is_not_found(&e) && !retried && error::engine_message(&e).contains("network") => {
                    retried = true;
                    self.forget_network().await;
                    network_id = self.network_id(&spec.image.reference).await?;
                }
                Err(e) => {
                    return Err(error::backend(format!("failed to create the container for sandbox \"{name}\""), e));
                }
            }
        };

        if let Err(e) = self.start_and_prepare(name, &id).await {
            tracing::warn!(provider = "docker", sandbox.name = %name, error = %e, "sandbox failed to start; removing its container");
            if let Err(remove_error) = self.remove_container(&id).await {
                tracing::warn!(provider = "docker", sandbox.name = %name, error = %remove_error, "failed to remove the container of a sandbox that failed to start");
            }
            return Err(e);
        }

        let info = self.get_impl(name).await?;
        tracing::info!(provider = "docker", sandbox.name = %name, container.id = %info.id, "sandbox created");
        Ok(info)
    }

    /// Returns the labels of the image `reference`, failing with a clear message
    /// when it does not exist.
    async fn image_labels(&self, name: &SandboxName, reference: &str) -> Result<HashMap<String, String>> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(image.config.and_then(|config| config.labels).unwrap_or_default()),
            Err(e) if error::is_not_found(&e) => Err(Error::NotFound {
                kind: "image",
                name: reference.to_owned(),
            }),
            Err(e) => Err(error::backend(
                format!("failed to inspect the image {reference:?} for sandbox \"{name}\""),
                e,
            )),
        }
    }

    /// Starts the container and creates the directory exec uses for process-group
    /// files, writable by every user.
    async fn start_and_prepare(&self, name: &SandboxName, id: &str) -> Result<()> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| error::backend(format!("failed to start the container of sandbox \"{name}\""), e))?;
        let script = format!("mkdir -p {EXEC_STATE_DIR} && chmod 1777 {EXEC_STATE_DIR}");
        let (code, output) = self.run_as_root(id, &script).await.map_err(|e| {
            Error::backend_with(
                error::SERVICE,
                format!("failed to prepare sandbox \"{name}\"; its image must contain /bin/sh"),
                e,
            )
        })?;
        if code != Some(0) {
            let code = code.map_or_else(|| "unknown".to_owned(), |code| code.to_string());
            return Err(Error::backend(
                error::SERVICE,
                format!(
                    "failed to create {EXEC_STATE_DIR} in sandbox \"{name}\" (exit code {code}): {}",
                    output.trim()
                ),
            ));
        }
        Ok(())
    }

    pub(crate) async fn get_impl(&self, name: &SandboxName) -> Result<SandboxInfo> {
        let container = Self::container_name(name);
        let filters = HashMap::from([
            ("name", vec![format!("^/{container}$")]),
            ("label", vec![format!("{MANAGED_BY}={MANAGED_BY_VALUE}")]),
        ]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| error::backend(format!("failed to look up sandbox \"{name}\""), e))?;
        containers
            .into_iter()
            .filter_map(sandbox_info)
            .find(|info| info.name == *name)
            .ok_or_else(|| sandbox_not_found(name))
    }

    pub(crate) async fn list_impl(&self, selector: &LabelSelector) -> Result<Vec<SandboxInfo>> {
        let containers = self.managed_containers(selector).await?;
        let mut sandboxes: Vec<SandboxInfo> = containers.into_iter().filter_map(sandbox_info).collect();
        sandboxes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(sandboxes)
    }

    /// Lists the containers, running or not, that Ken made and that match
    /// `selector`.
    pub(crate) async fn managed_containers(&self, selector: &LabelSelector) -> Result<Vec<ContainerSummary>> {
        let filters = HashMap::from([
            ("name", vec![format!("^/{CONTAINER_PREFIX}")]),
            ("label", label_filters(selector)),
        ]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| error::backend("failed to list sandbox containers", e))
    }

    pub(crate) async fn destroy_impl(&self, sandbox: &SandboxName) -> Result<()> {
        // Waits for a create of the same sandbox in this process to finish, so
        // that nothing it makes is left behind.
        // NOTE: a create running in another process is not waited for; a
        // container it makes after this destroy stays until garbage collection.
        let _guard = self.state.sandbox_locks.lock(sandbox.as_str()).await;
        tracing::info!(provider = "docker", sandbox.name = %sandbox, "destroying sandbox");

        let container = Self::container_name(sandbox);
        self.remove_container(&container)
            .await
            .map_err(|e| error::backend(format!("failed to remove the container of sandbox \"{sandbox}\""), e))?;

        // Also remove anything else labelled for this sandbox, for example a
        // container renamed by hand.
        let selector = LabelSelector::managed().with(SANDBOX, sandbox.as_str());
        for leftover in self.managed_containers(&selector).await? {
            let Some(id) = leftover.id else { continue };
            self.remove_container(&id).await.map_err(|e| {
                error::backend(format!("failed to remove container {id} labelled for sandbox \"{sandbox}\""), e)
            })?;
        }
        tracing::info!(provider = "docker", sandbox.name = %sandbox, "sandbox destroyed");
        Ok(())
    }

    /// Force-removes a container and its anonymous volumes. A container that is
    /// gone, or already being removed, counts as removed.
    pub(crate) async fn remove_container(&self, id: &str) -> Result<(), bollard::errors::Error> {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if error::is_not_found(&e) => Ok(()),
            Err(e) if error::is_conflict(&e) && error::engine_message(&e).contains("already in progress") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Returns the engine's `label` filter values for `selector`, always including
/// `ken.managed-by=ken`.
pub(crate) fn label_filters(selector: &LabelSelector) -> Vec<String> {
    let mut filters: Vec<String> = selector.iter().map(|(key, value)| format!("{key}={value}")).collect();
    let managed = format!("{MANAGED_BY}={MANAGED_BY_VALUE}");
    if !filters.contains(&managed) {
        filters.push(managed);
    }
    filters
}

/// Builds the engine's container configuration for `spec`.
fn container_body(
    spec: &SandboxSpec,
    network_id: &str,
    image_labels: &HashMap<String, String>,
) -> Result<ContainerCreateBody> {
    let name = spec.name.as_str();

    let mut labels = spec.labels.to_map();
    labels.insert(MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned());
    labels.insert(SANDBOX.to_owned(), name.to_owned());
    // A container inherits its image's labels, and Ken's images carry
    // `ken.cache=true`; the container itself is no cache.
    if image_labels.contains_key(CACHE) && !labels.contains_key(CACHE) {
        labels.insert(CACHE.to_owned(), "false".to_owned());
    }

    let mut env = Vec::with_capacity(spec.env.len() + spec.secret_env.len());
    for (key, value) in &spec.env {
        check_env_name(name, key)?;
        env.push(format!("{key}={value}"));
    }
    // NOTE: like any container environment, secret values are visible to every
    // user who can run `docker inspect` on the container.
    for (key, value) in &spec.secret_env {
        check_env_name(name, key)?;
        env.push(format!("{key}={}", value.expose()));
    }

    let mut exposed_ports = Vec::with_capacity(spec.ports.len());
    let mut port_bindings = HashMap::new();
    for port in &spec.ports {
        let key = format!("{}/tcp", port.port);
        exposed_ports.push(key.clone());
        // An empty host port makes the engine pick a free one. A port chosen here
        // could be taken by another sandbox starting at the same time.
        let binding = PortBinding {
            host_ip: Some("127.0.0.1".to_owned()),
            host_port: Some(String::new()),
        };
        port_bindings.insert(key, Some(vec![binding]));
    }

    let resources = spec.resources;
    let host_config = HostConfig {
        init: Some(true),
        nano_cpus: resources.cpus.map(|cpus| (cpus * 1e9).round() as i64),
        memory: resources.memory_bytes.map(|bytes| bytes.min(i64::MAX as u64) as i64),
        pids_limit: resources.pids.map(|pids| pids.min(i64::MAX as u64) as i64),
        port_bindings: Some(port_bindings),
        network_mode: Some(network_id.to_owned()),
        ..Default::default()
    };
    let networking_config = NetworkingConfig {
        endpoints_config: Some(HashMap::from([(network_id.to_owned(), EndpointSettings::default())])),
    };

    Ok(ContainerCreateBody {
        image: Some(spec.image.reference.clone()),
        hostname: Some(name.to_owned()),
        env: Some(env),
        labels: Some(labels.into_iter().collect()),
        working_dir: spec.workdir.clone(),
        // The container only has to stay up; work happens in exec. docker-init
        // (init: true) reaps orphans and forwards the stop signal.
        entrypoint: Some(vec!["sleep".to_owned()]),
        cmd: Some(vec!["infinity".to_owned()]),
        exposed_ports: Some(exposed_ports),
        host_config: Some(host_config),
        networking_config: Some(networking_config),
        ..Default::default()
    })
}

fn check_env_name(sandbox: &str, key: &str) -> Result<()> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        return Err(Error::invalid(
            "environment variable name",
            key,
            format!("sandbox \"{sandbox}\" needs names that are non-empty and contain no `=`"),
        ));
    }
    Ok(())
}

/// Converts a container listing into a [`SandboxInfo`], or `None` for a container
/// whose name is not a Ken sandbox name.
fn sandbox_info(summary: ContainerSummary) -> Option<SandboxInfo> {
    let container_name = summary
        .names
        .as_ref()?
        .iter()
        .find_map(|name| name.strip_prefix('/').and_then(|name| name.strip_prefix(CONTAINER_PREFIX)))?
        .to_owned();
    let name = match SandboxName::new(container_name.clone()) {
        Ok(name) => name,
        Err(_) => {
            tracing::debug!(provider = "docker", container = %container_name, "skipping a labelled container whose name is not a sandbox name");
            return None;
        }
    };
    let labels: Labels = summary.labels.unwrap_or_default().into_iter().collect();
    Some(SandboxInfo {
        id: summary.id.unwrap_or_default(),
        name,
        provider: PROVIDER_NAME.to_owned(),
        state: sandbox_state(summary.state),
        labels,
        created_at: summary.created.and_then(|created| u64::try_from(created).ok()),
        image: summary.image.unwrap_or_default(),
    })
}

fn sandbox_state(state: Option<ContainerSummaryStateEnum>) -> SandboxState {
    match state {
        Some(ContainerSummaryStateEnum::CREATED | ContainerSummaryStateEnum::RESTARTING) => SandboxState::Creating,
        Some(ContainerSummaryStateEnum::RUNNING) => SandboxState::Running,
        Some(
            ContainerSummaryStateEnum::EXITED
            | ContainerSummaryStateEnum::DEAD
            | ContainerSummaryStateEnum::REMOVING
            | ContainerSummaryStateEnum::STOPPING
            | ContainerSummaryStateEnum::PAUSED,
        ) => SandboxState::Stopped,
        Some(ContainerSummaryStateEnum::EMPTY) | None => SandboxState::Unknown,
    }
}
