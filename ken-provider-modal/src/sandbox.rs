//! Creating, finding, listing and terminating sandboxes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ken_core::labels::{self, LabelSelector, Labels};
use ken_core::sandbox::{Resource, ResourceKind, SandboxState};
use ken_core::{Error, Result, SandboxInfo, SandboxName, SandboxSpec};
use tonic::Code;

use crate::error::SERVICE;
use crate::proto::modal_client::{
    generic_result::GenericStatus, AppGetOrCreateRequest, AppGetOrCreateResponse, GenericResult,
    ObjectCreationType, PortSpec, PortSpecs, Resources, Sandbox, SandboxCreateRequest, SandboxCreateResponse,
    SandboxGetFromNameRequest, SandboxGetFromNameResponse, SandboxGetTaskIdRequest, SandboxGetTaskIdResponse,
    SandboxListRequest, SandboxListResponse, SandboxTag, SandboxTagsGetRequest, SandboxTagsGetResponse,
    SandboxTagsSetRequest, SandboxTagsSetResponse, SandboxTerminateRequest, SandboxTerminateResponse,
    SandboxWaitRequest, SandboxWaitResponse, SecretGetOrCreateRequest, SecretGetOrCreateResponse,
};
use crate::proto::paths;
use crate::{ModalProvider, PROVIDER_NAME};

/// Maximum sandbox lifetime Modal accepts.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The entrypoint that keeps a sandbox running until it is terminated.
pub(crate) const ENTRYPOINT: [&str; 2] = ["sleep", "infinity"];
/// Interval between `SandboxGetTaskId` polls.
const TASK_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Maximum wait for a new sandbox's task to start.
const TASK_START_LIMIT: Duration = Duration::from_secs(600);
/// Maximum wait for a terminated sandbox to report that it ended.
const TERMINATE_WAIT: Duration = Duration::from_secs(60);
/// Prefix of the tags that record snapshot images taken of a sandbox. The rest of
/// the tag name is the image id.
pub(crate) const SNAPSHOT_TAG_PREFIX: &str = "ken.snapshot-image.";

impl ModalProvider {
    /// Returns the id of the Modal app, creating the app when it is missing.
    pub(crate) async fn app_id(&self) -> Result<String> {
        let config = self.config();
        let id = self
            .state
            .app_id
            .get_or_try_init(|| async {
                let response: AppGetOrCreateResponse = self
                    .control
                    .unary(
                        paths::APP_GET_OR_CREATE,
                        AppGetOrCreateRequest {
                            app_name: config.app_name.clone(),
                            environment_name: config.environment_name(),
                            object_creation_type: ObjectCreationType::CreateIfMissing as i32,
                        },
                    )
                    .await
                    .map_err(|e| e.into_ken_with_environment(config, format!("looking up the Modal app {:?}", config.app_name)))?;
                tracing::debug!(provider = "modal", app.id = %response.app_id, app.name = %config.app_name, "found the Modal app");
                Ok::<_, Error>(response.app_id)
            })
            .await?;
        Ok(id.clone())
    }

    pub(crate) async fn create_impl(&self, spec: &SandboxSpec) -> Result<SandboxInfo> {
        let definition = self.definition(spec)?;
        // The lock is taken first and kept by a task of its own until the create is
        // done. A caller who gives up halfway therefore leaves no half-made sandbox,
        // because the task finishes and a destroy of the same name waits for it.
        let guard = self.state.sandbox_locks.lock(spec.name.as_str()).await;
        let provider = self.clone();
        let spec = spec.clone();
        let name = spec.name.clone();
        let task = tokio::spawn(async move {
            let result = provider.create_locked(&spec, definition).await;
            drop(guard);
            result
        });
        task.await
            .map_err(|e| Error::backend_with(SERVICE, format!("the task creating sandbox \"{name}\" failed"), e))?
    }

    /// Checks the spec and builds the sandbox definition, before anything is made.
    fn definition(&self, spec: &SandboxSpec) -> Result<Sandbox> {
        let config = self.config();
        let name = &spec.name;

        let mut resources = Resources::default();
        if let Some(cpus) = spec.resources.cpus {
            if !cpus.is_finite() || cpus <= 0.0 || cpus > 64.0 {
                return Err(Error::invalid("CPU limit", cpus.to_string(), "use a number of cores between 0.001 and 64"));
            }
            let milli = (cpus * 1000.0).ceil() as u32;
            resources.milli_cpu = milli;
            resources.milli_cpu_max = milli;
        }

        if let Some(bytes) = spec.resources.memory_bytes {
            let mib = bytes.div_ceil(1024 * 1024);
            let mib = u32::try_from(mib)
                .ok()
                .filter(|mib| *mib > 0)
                .ok_or_else(|| Error::invalid("memory limit", bytes.to_string(), "use a value between 1 MiB and 4 PiB"))?;
            resources.memory_mb = mib;
            resources.memory_mb_max = mib;
        }

        if let Some(pids) = spec.resources.pids {
            // NOTE: Modal has no process limit; the value is not enforced.
            tracing::warn!(provider = "modal", sandbox.name = %name, pids, "Modal cannot limit the number of processes; ignoring the limit");
        }

        if let Some(dir) = &spec.workdir {
            if !dir.starts_with('/') {
                return Err(Error::invalid("working directory", dir.as_str(), "Modal needs an absolute path, such as /workspace"));
            }
        }

        for key in spec.env.keys().chain(spec.secret_env.keys()) {
            check_env_name(key)?;
        }

        let mut ports = Vec::new();
        for port in &spec.ports {
            if port.port == 0 {
                return Err(Error::invalid("port", format!("{} (0)", port.name), "use a port between 1 and 65535"));
            }
            if ports.iter().any(|p: &PortSpec| p.port == u32::from(port.port)) {
                return Err(Error::invalid("port", format!("{} ({})", port.name, port.port), "each port may be listed once"));
            }
            ports.push(PortSpec {
                port: u32::from(port.port),
                unencrypted: config.plain_ports,
            });
        }

        if spec.ttl > MAX_TIMEOUT {
            tracing::warn!(provider = "modal", sandbox.name = %name, ttl = ?spec.ttl, "Modal stops sandboxes after 24 h at most; using 24 h");
        }
        let timeout_secs = spec.ttl.min(MAX_TIMEOUT).as_secs().max(1) as u32;

        Ok(Sandbox {
            entrypoint_args: ENTRYPOINT.iter().map(|s| (*s).to_owned()).collect(),
            image_id: spec.image.reference.clone(),
            secret_ids: Vec::new(),
            resources: Some(resources).filter(|r| *r != Resources::default()),
            timeout_secs,
            workdir: spec.workdir.clone(),
            open_ports: Some(PortSpecs { ports }).filter(|p| !p.ports.is_empty()),
            network_access: None,
            name: Some(name.to_string()),
            idle_timeout_secs: config.idle_timeout.map(|t| t.as_secs().clamp(1, u64::from(u32::MAX)) as u32),
        })
    }

    /// Creates the sandbox; the caller holds its lock.
    async fn create_locked(&self, spec: &SandboxSpec, mut definition: Sandbox) -> Result<SandboxInfo> {
        let name = &spec.name;
        tracing::info!(provider = "modal", sandbox.name = %name, phase = "create", image = %spec.image.reference, "creating sandbox");
        let app_id = self.app_id().await?;

        let mut env: HashMap<String, String> = spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (key, value) in &spec.secret_env {
            env.insert(key.clone(), value.expose().to_owned());
        }
        if !env.is_empty() {
            let response: SecretGetOrCreateResponse = self
                .control
                .unary(
                    paths::SECRET_GET_OR_CREATE,
                    SecretGetOrCreateRequest {
                        environment_name: self.config().environment_name(),
                        object_creation_type: ObjectCreationType::Ephemeral as i32,
                        env_dict: env,
                    },
                )
                .await
                .map_err(|e| e.into_ken(format!("storing the environment of sandbox \"{name}\"")))?;
            definition.secret_ids.push(response.secret_id);
        }

        let created: SandboxCreateResponse = match self
            .control
            .unary(
                paths::SANDBOX_CREATE,
                SandboxCreateRequest {
                    app_id,
                    definition: Some(definition),
                },
            )
            .await
        {
            Ok(created) => created,
            Err(e) if e.code() == Code::AlreadyExists => {
                tracing::info!(provider = "modal", sandbox.name = %name, phase = "create", "sandbox name is taken; leaving the existing sandbox alone");
                return Err(Error::AlreadyExists {
                    kind: "sandbox",
                    name: name.to_string(),
                });
            }
            Err(e) => {
                let error = e.into_ken(format!("creating sandbox \"{name}\""));
                tracing::warn!(provider = "modal", sandbox.name = %name, phase = "create", error = %error, "sandbox create failed");
                return Err(error);
            }
        };
        let id = created.sandbox_id;

        // NOTE: SandboxCreate takes no tags, so they follow at once. A launcher killed
        // between the two calls leaves a sandbox Ken cannot find by labels; its
        // timeout (the time to live) still ends it.
        let finish = async {
            self.set_tags(&id, &spec.labels).await?;
            self.wait_for_task(name, &id, TASK_START_LIMIT).await
        };
        if let Err(error) = finish.await {
            tracing::warn!(provider = "modal", sandbox.name = %name, sandbox.id = %id, phase = "create", error = %error, "sandbox failed to start; terminating it");
            if let Err(terminate_error) = self.terminate(name.as_str(), &id).await {
                tracing::warn!(provider = "modal", sandbox.name = %name, sandbox.id = %id, error = %terminate_error, "failed to terminate a sandbox that failed to start");
            }
            return Err(error);
        }
        tracing::info!(provider = "modal", sandbox.name = %name, sandbox.id = %id, phase = "create", "sandbox created");
        Ok(SandboxInfo {
            id,
            name: name.clone(),
            provider: PROVIDER_NAME.to_owned(),
            state: SandboxState::Running,
            labels: spec.labels.clone(),
            created_at: Some(labels::unix_now()),
            image: spec.image.reference.clone(),
        })
    }

    /// Replaces the tags of sandbox `id` with `labels`.
    pub(crate) async fn set_tags(&self, id: &str, labels: &Labels) -> Result<()> {
        let _: SandboxTagsSetResponse = self
            .control
            .unary(
                paths::SANDBOX_TAGS_SET,
                SandboxTagsSetRequest {
                    environment_name: self.config().environment_name(),
                    sandbox_id: id.to_owned(),
                    tags: to_tags(labels),
                },
            )
            .await
            .map_err(|e| e.into_ken(format!("setting the tags of sandbox {id}")))?;
        Ok(())
    }

    /// Returns the tags of sandbox `id` as labels.
    pub(crate) async fn tags(&self, id: &str) -> Result<Labels> {
        let response: SandboxTagsGetResponse = self
            .control
            .unary(paths::SANDBOX_TAGS_GET, SandboxTagsGetRequest { sandbox_id: id.to_owned() })
            .await
            .map_err(|e| e.into_ken(format!("reading the tags of sandbox {id}")))?;
        Ok(from_tags(&response.tags))
    }

    /// Returns the id of the sandbox named `name`, or [`Error::NotFound`].
    pub(crate) async fn sandbox_id(&self, name: &SandboxName) -> Result<String> {
        let config = self.config();
        let response: std::result::Result<SandboxGetFromNameResponse, _> = self
            .control
            .unary(
                paths::SANDBOX_GET_FROM_NAME,
                SandboxGetFromNameRequest {
                    sandbox_name: name.to_string(),
                    environment_name: config.environment_name(),
                    app_name: config.app_name.clone(),
                },
            )
            .await;
        match response {
            Ok(found) if !found.sandbox_id.is_empty() => Ok(found.sandbox_id),
            Ok(_) => Err(not_found(name)),
            Err(e) if e.is_unknown_environment() => Err(e.into_ken_with_environment(config, "")),
            Err(e) if e.code() == Code::NotFound => Err(not_found(name)),
            Err(e) => Err(e.into_ken(format!("looking up sandbox \"{name}\""))),
        }
    }

    /// Returns the id of the running sandbox named `name`. When there is none, but
    /// a sandbox of that name has ended, the [`Error::NotFound`] states how it ended
    /// (for example its time to live ran out), so that the caller learns why.
    pub(crate) async fn running_sandbox_id(&self, name: &SandboxName) -> Result<String> {
        match self.sandbox_id(name).await {
            Err(error) if error.is_not_found() => Err(self.explain_missing(name).await.unwrap_or(error)),
            other => other,
        }
    }

    /// Returns the error for the newest ended sandbox named `name`, if Modal still
    /// lists one.
    async fn explain_missing(&self, name: &SandboxName) -> Option<Error> {
        let selector = LabelSelector::managed().with(labels::SANDBOX, name.as_str());
        let listed = match self.list_tagged(&selector, true).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::debug!(provider = "modal", sandbox.name = %name, error = %error, "could not look for an ended sandbox");
                return None;
            }
        };
        let newest = listed
            .into_iter()
            .filter(|info| info.name.is_empty() || info.name == name.as_str())
            .max_by(|a, b| a.created_at.total_cmp(&b.created_at))?;
        match self.poll_result(&newest.id, Duration::ZERO).await {
            Ok(Some(result)) => {
                tracing::info!(provider = "modal", sandbox.name = %name, sandbox.id = %newest.id, result = %describe_result(&result), "sandbox has already ended");
                Some(ended(name, &result))
            }
            Ok(None) => None,
            Err(error) => {
                tracing::debug!(provider = "modal", sandbox.name = %name, error = %error.status.message(), "could not read the result of an ended sandbox");
                None
            }
        }
    }

    /// Returns the task of sandbox `id`, polling until it exists. A sandbox that
    /// already ended gives [`Error::NotFound`] with its result.
    pub(crate) async fn wait_for_task(&self, name: &SandboxName, id: &str, limit: Duration) -> Result<String> {
        if let Some(task) = self.cached_task(id) {
            return Ok(task);
        }
        let started = tokio::time::Instant::now();
        let mut logged = false;
        loop {
            let response: SandboxGetTaskIdResponse = self
                .control
                .unary(paths::SANDBOX_GET_TASK_ID, SandboxGetTaskIdRequest { sandbox_id: id.to_owned() })
                .await
                .map_err(|e| {
                    if e.code() == Code::NotFound {
                        not_found(name)
                    } else {
                        e.into_ken(format!("looking up the task of sandbox \"{name}\""))
                    }
                })?;
            if let Some(result) = response.task_result.filter(|r| r.status != GenericStatus::Unspecified as i32) {
                tracing::info!(provider = "modal", sandbox.name = %name, sandbox.id = %id, result = %describe_result(&result), "sandbox has already ended");
                return Err(ended(name, &result));
            }
            if let Some(task) = response.task_id.filter(|t| !t.is_empty()) {
                self.state
                    .tasks
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(id.to_owned(), task.clone());
                return Ok(task);
            }
            if started.elapsed() >= limit {
                return Err(Error::Timeout {
                    operation: format!("waiting for sandbox \"{name}\" to start"),
                    after: limit,
                });
            }
            if !logged {
                tracing::debug!(provider = "modal", sandbox.name = %name, sandbox.id = %id, "waiting for the sandbox's task to start");
                logged = true;
            }
            tokio::time::sleep(TASK_POLL_INTERVAL).await;
        }
    }

    fn cached_task(&self, id: &str) -> Option<String> {
        self.state
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned()
    }

    /// Returns the result of sandbox `id` when it has ended.
    async fn poll_result(&self, id: &str, wait: Duration) -> std::result::Result<Option<GenericResult>, crate::error::RpcError> {
        let response: SandboxWaitResponse = self
            .control
            .unary_with(
                paths::SANDBOX_WAIT,
                SandboxWaitRequest {
                    sandbox_id: id.to_owned(),
                    timeout: wait.as_secs_f32(),
                },
                wait + crate::client::DEFAULT_DEADLINE,
            )
            .await?;
        Ok(response.result.filter(|r| r.status != GenericStatus::Unspecified as i32))
    }

    pub(crate) async fn get_impl(&self, name: &SandboxName) -> Result<SandboxInfo> {
        let id = self.running_sandbox_id(name).await?;
        match self.poll_result(&id, Duration::ZERO).await {
            Ok(Some(result)) => return Err(ended(name, &result)),
            Ok(None) => {}
            Err(e) if e.code() == Code::NotFound => return Err(not_found(name)),
            Err(e) => return Err(e.into_ken(format!("reading the state of sandbox \"{name}\""))),
        }
        let listed = self
            .list_raw(&LabelSelector::managed().with(labels::SANDBOX, name.as_str()))
            .await?
            .into_iter()
            .find(|info| info.id == id);
        let (labels, created_at, image) = match listed {
            Some(info) => (from_tags(&info.tags), Some(info.created_at.max(0.0) as u64), info.image_id),
            None => (self.tags(&id).await?, None, String::new()),
        };
        let state = if self.cached_task(&id).is_some() {
            SandboxState::Running
        } else {
            let response: SandboxGetTaskIdResponse = self
                .control
                .unary(paths::SANDBOX_GET_TASK_ID, SandboxGetTaskIdRequest { sandbox_id: id.clone() })
                .await
                .map_err(|e| e.into_ken(format!("looking up the task of sandbox \"{name}\"")))?;
            match (response.task_id, response.task_result) {
                (_, Some(result)) if result.status != GenericStatus::Unspecified as i32 => {
                    return Err(ended(name, &result))
                }
                (Some(task), _) if !task.is_empty() => SandboxState::Running,
                _ => SandboxState::Creating,
            }
        };
        Ok(SandboxInfo {
            id,
            name: name.clone(),
            provider: PROVIDER_NAME.to_owned(),
            state,
            labels: without_snapshot_tags(&labels),
            created_at,
            image,
        })
    }

    /// Lists running sandboxes of the app whose tags match `selector`, newest
    /// first, page by page.
    async fn list_raw(&self, selector: &LabelSelector) -> Result<Vec<crate::proto::modal_client::SandboxInfo>> {
        self.list_tagged(selector, false).await
    }

    /// Lists the sandboxes of the app whose tags match `selector`, ended ones too
    /// when `include_finished` is set, newest first, page by page.
    async fn list_tagged(
        &self,
        selector: &LabelSelector,
        include_finished: bool,
    ) -> Result<Vec<crate::proto::modal_client::SandboxInfo>> {
        let app_id = self.app_id().await?;
        let mut wanted: BTreeMap<String, String> = selector.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        wanted
            .entry(labels::MANAGED_BY.to_owned())
            .or_insert_with(|| labels::MANAGED_BY_VALUE.to_owned());
        let tags: Vec<SandboxTag> = wanted
            .iter()
            .map(|(k, v)| SandboxTag {
                tag_name: k.clone(),
                tag_value: v.clone(),
            })
            .collect();
        let mut all = Vec::new();
        let mut before = 0.0f64;
        loop {
            let page: SandboxListResponse = self
                .control
                .unary(
                    paths::SANDBOX_LIST,
                    SandboxListRequest {
                        app_id: app_id.clone(),
                        before_timestamp: before,
                        environment_name: self.config().environment_name(),
                        include_finished,
                        tags: tags.clone(),
                    },
                )
                .await
                .map_err(|e| e.into_ken("listing sandboxes"))?;
            let Some(last) = page.sandboxes.last().map(|info| info.created_at) else {
                break;
            };
            // A page that does not move back in time would repeat forever.
            if before != 0.0 && last >= before {
                tracing::warn!(provider = "modal", "SandboxList returned a page that does not go back in time; stopping");
                all.extend(page.sandboxes);
                break;
            }
            before = last;
            all.extend(page.sandboxes);
        }
        all.retain(|info| {
            let labels = from_tags(&info.tags);
            wanted.iter().all(|(k, v)| labels.get(k) == Some(v.as_str()))
        });
        all.dedup_by(|a, b| a.id == b.id);
        Ok(all)
    }

    pub(crate) async fn list_impl(&self, selector: &LabelSelector) -> Result<Vec<SandboxInfo>> {
        let raw = self.list_raw(selector).await?;
        Ok(raw
            .into_iter()
            .filter_map(|info| {
                let labels = from_tags(&info.tags);
                let name_text = if info.name.is_empty() {
                    labels.sandbox().unwrap_or_default().to_owned()
                } else {
                    info.name.clone()
                };
                let name = SandboxName::new(&name_text).ok().or_else(|| {
                    tracing::debug!(provider = "modal", sandbox.id = %info.id, name = %name_text, "skipping a sandbox whose name Ken does not accept");
                    None
                })?;
                Some(SandboxInfo {
                    id: info.id,
                    name,
                    provider: PROVIDER_NAME.to_owned(),
                    state: SandboxState::Running,
                    labels: without_snapshot_tags(&labels),
                    created_at: Some(info.created_at.max(0.0) as u64),
                    image: info.image_id,
                })
            })
            .collect())
    }

    pub(crate) async fn destroy_impl(&self, name: &SandboxName) -> Result<()> {
        let _guard = self.state.sandbox_locks.lock(name.as_str()).await;
        let id = match self.sandbox_id(name).await {
            Ok(id) => id,
            Err(error) if error.is_not_found() => {
                tracing::debug!(provider = "modal", sandbox.name = %name, phase = "destroy", "sandbox does not exist; nothing to destroy");
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        tracing::info!(provider = "modal", sandbox.name = %name, sandbox.id = %id, phase = "destroy", "terminating sandbox");
        self.terminate(name.as_str(), &id).await?;
        tracing::info!(provider = "modal", sandbox.name = %name, sandbox.id = %id, phase = "destroy", "sandbox terminated");
        Ok(())
    }

    /// Terminates sandbox `id` and waits until Modal reports it ended. A sandbox
    /// that is gone or ended already counts as terminated.
    pub(crate) async fn terminate(&self, name: &str, id: &str) -> Result<()> {
        let result: std::result::Result<SandboxTerminateResponse, _> = self
            .control
            .unary(paths::SANDBOX_TERMINATE, SandboxTerminateRequest { sandbox_id: id.to_owned() })
            .await;
        match result {
            Ok(_) => {}
            Err(e) if e.code() == Code::NotFound => return Ok(()),
            Err(e) => return Err(e.into_ken(format!("terminating sandbox \"{name}\" ({id})"))),
        }
        if let Some(task) = self
            .state
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(id)
        {
            self.state.routers.remove(&task);
            self.state.users.forget_task(&task);
        }
        let started = tokio::time::Instant::now();
        loop {
            match self.poll_result(id, Duration::from_secs(10)).await {
                Ok(Some(_)) => return Ok(()),
                Err(e) if e.code() == Code::NotFound => return Ok(()),
                Ok(None) => {}
                Err(e) => return Err(e.into_ken(format!("waiting for sandbox \"{name}\" to end"))),
            }
            if started.elapsed() >= TERMINATE_WAIT {
                return Err(Error::Timeout {
                    operation: format!("terminating sandbox \"{name}\" ({id})"),
                    after: TERMINATE_WAIT,
                });
            }
        }
    }

    pub(crate) async fn resources_impl(&self, selector: &LabelSelector) -> Result<Vec<Resource>> {
        let mut resources = Vec::new();
        for info in self.list_raw(selector).await? {
            let all = from_tags(&info.tags);
            let labels = without_snapshot_tags(&all);
            for (key, _) in all.iter() {
                if let Some(image_id) = key.strip_prefix(SNAPSHOT_TAG_PREFIX) {
                    resources.push(Resource {
                        kind: ResourceKind::Image,
                        id: image_id.to_owned(),
                        labels: labels.clone(),
                    });
                }
            }
            resources.push(Resource {
                kind: ResourceKind::Sandbox,
                id: info.id,
                labels,
            });
        }
        Ok(resources)
    }

    pub(crate) async fn remove_resource_impl(&self, resource: &Resource) -> Result<()> {
        match resource.kind {
            ResourceKind::Sandbox => {
                let name = resource.labels.sandbox().unwrap_or(resource.id.as_str()).to_owned();
                tracing::info!(provider = "modal", sandbox.name = %name, sandbox.id = %resource.id, phase = "gc", "terminating sandbox");
                self.terminate(&name, &resource.id).await
            }
            _ => {
                // NOTE: the protocol has no call to delete an image; snapshot images
                // stay in Modal's image store, unlisted once their sandbox is gone.
                tracing::debug!(provider = "modal", resource.kind = %resource.kind, resource.id = %resource.id, phase = "gc", "Modal cannot delete this kind of resource; nothing to do");
                Ok(())
            }
        }
    }
}

/// Checks an environment variable name.
pub(crate) fn check_env_name(key: &str) -> Result<()> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        return Err(Error::invalid("environment variable name", key, "use a non-empty name without `=`"));
    }
    Ok(())
}

/// Converts labels to Modal tags.
pub(crate) fn to_tags(labels: &Labels) -> Vec<SandboxTag> {
    labels
        .iter()
        .map(|(k, v)| SandboxTag {
            tag_name: k.to_owned(),
            tag_value: v.to_owned(),
        })
        .collect()
}

/// Converts Modal tags to labels.
pub(crate) fn from_tags(tags: &[SandboxTag]) -> Labels {
    tags.iter().map(|t| (t.tag_name.clone(), t.tag_value.clone())).collect()
}

/// Returns the labels without the tags that record snapshots.
fn without_snapshot_tags(labels: &Labels) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| !k.starts_with(SNAPSHOT_TAG_PREFIX))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Builds the error for a sandbox that does not exist.
pub(crate) fn not_found(name: &SandboxName) -> Error {
    Error::NotFound {
        kind: "sandbox",
        name: name.to_string(),
    }
}

/// Builds the error for a sandbox that has ended, which Ken treats as gone.
pub(crate) fn ended(name: &SandboxName, result: &GenericResult) -> Error {
    Error::NotFound {
        kind: "running sandbox",
        name: format!("{name} (it has ended: {})", describe_result(result)),
    }
}

/// Describes a result for messages, for example `TERMINATED (exit code 137)`.
pub(crate) fn describe_result(result: &GenericResult) -> String {
    let status = match GenericStatus::try_from(result.status) {
        Ok(GenericStatus::Unspecified) => "UNSPECIFIED".to_owned(),
        Ok(GenericStatus::Success) => "SUCCESS".to_owned(),
        Ok(GenericStatus::Failure) => "FAILURE".to_owned(),
        Ok(GenericStatus::Terminated) => "TERMINATED".to_owned(),
        Ok(GenericStatus::Timeout) => "TIMEOUT".to_owned(),
        Ok(GenericStatus::InitFailure) => "INIT_FAILURE".to_owned(),
        Ok(GenericStatus::InternalFailure) => "INTERNAL_FAILURE".to_owned(),
        Ok(GenericStatus::IdleTimeout) => "IDLE_TIMEOUT".to_owned(),
        Err(_) => format!("status {}", result.status),
    };
    let code = match GenericStatus::try_from(result.status) {
        Ok(GenericStatus::Timeout) => 124,
        Ok(GenericStatus::Terminated) => 137,
        _ => result.exitcode,
    };
    if result.exception.is_empty() {
        format!("{status} (exit code {code})")
    } else {
        format!("{status} (exit code {code}): {}", result.exception)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let mut labels = Labels::new();
        labels.insert("ken.sandbox", "demo").insert("ken.managed-by", "ken");
        assert_eq!(from_tags(&to_tags(&labels)), labels);
    }

    #[test]
    fn results_describe_exit_codes() {
        let result = GenericResult {
            status: GenericStatus::Terminated as i32,
            exception: String::new(),
            exitcode: 0,
        };
        assert!(describe_result(&result).contains("137"));
        let failed = GenericResult {
            status: GenericStatus::Failure as i32,
            exception: "boom".into(),
            exitcode: 3,
        };
        assert_eq!(describe_result(&failed), "FAILURE (exit code 3): boom");
    }
}
