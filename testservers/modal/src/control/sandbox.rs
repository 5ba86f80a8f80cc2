//! `SandboxCreate`, lookups, tags, wait, terminate, tunnels and snapshots.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost::Message;
use tonic::{Code, Status};

use super::{invalid, wait_limit};
use crate::checks::Call;
use crate::ids::{new_id, unix_seconds};
use crate::image::{BuiltImage, ImageEntry};
use crate::runtime::copy_layer;
use crate::sandbox::{run_lifecycle, SandboxEntry, SandboxStatus, MAX_TIMEOUT_SECS};
use crate::state::State;
use ken_provider_modal::proto::headers::RPC_RETRY_POLICY_TYPE_URL;
use ken_provider_modal::proto::modal_client::{
    generic_result::GenericStatus, GenericResult, Image, RpcRetryPolicy, Sandbox, SandboxCreateRequest,
    SandboxCreateResponse, SandboxGetFromNameRequest, SandboxGetFromNameResponse, SandboxGetTunnelsRequest,
    SandboxGetTunnelsResponse, SandboxInfo, SandboxListRequest, SandboxListResponse, SandboxSnapshotFsRequest,
    SandboxSnapshotFsResponse, SandboxTag, SandboxTagsGetRequest, SandboxTagsGetResponse, SandboxTagsSetRequest,
    SandboxTagsSetResponse, SandboxTerminateRequest, SandboxTerminateResponse, SandboxWaitRequest,
    SandboxWaitResponse,
};
use ken_provider_modal::proto::rpc_status;

/// Maximum length of a sandbox name. NOTE: an estimate of Modal's limit, not
/// taken from its documentation.
const MAX_NAME_LEN: usize = 64;

pub(super) async fn sandbox_create(
    state: Arc<State>,
    call: Call,
    request: SandboxCreateRequest,
) -> Result<SandboxCreateResponse, Status> {
    if let Some(existing) = created_for_key(&state, &call) {
        return Ok(SandboxCreateResponse { sandbox_id: existing });
    }

    let method = call.method.as_str();
    if request.app_id.is_empty() {
        return Err(invalid(&state, method, "app_id is required"));
    }
    if !state.lock().apps.contains_key(&request.app_id) {
        return Err(Status::not_found(format!("App {} not found", request.app_id)));
    }
    let Some(definition) = request.definition else {
        return Err(invalid(&state, method, "definition is required"));
    };
    validate_definition(&state, method, &definition)?;
    let image = image_for(&state, method, &definition.image_id)?;
    let secret_env = secret_env(&state, &definition.secret_ids)?;

    let mut inner = state.lock();
    if let Some(key) = &call.idempotency_key {
        if let Some(existing) = inner.create_keys.get(key) {
            return Ok(SandboxCreateResponse {
                sandbox_id: existing.clone(),
            });
        }
    }
    if let Some(name) = &definition.name {
        let taken = inner.sandboxes.values().any(|sandbox| {
            sandbox.app_id == request.app_id
                && sandbox.definition.name.as_ref() == Some(name)
                && !sandbox.is_finished()
        });
        if taken {
            return Err(Status::already_exists(format!(
                "Sandbox with name '{name}' already exists in this app"
            )));
        }
    }
    if let Some(limit) = inner.rate_limit {
        let now = tokio::time::Instant::now();
        while inner
            .recent_creations
            .front()
            .is_some_and(|time| now.duration_since(*time) >= Duration::from_secs(1))
        {
            inner.recent_creations.pop_front();
        }
        if inner.recent_creations.len() >= limit as usize {
            return Err(rate_limited(limit));
        }
        inner.recent_creations.push_back(now);
    }

    let id = new_id("sb");
    let created_at = unix_seconds(SystemTime::now()).max(inner.last_created_at + 1e-6);
    inner.last_created_at = created_at;
    let sandbox = Arc::new(SandboxEntry::new(
        id.clone(),
        request.app_id,
        definition,
        created_at,
        call.idempotency_key.clone(),
        image,
        secret_env,
    ));
    inner.sandboxes.insert(id.clone(), sandbox.clone());
    if let Some(key) = &call.idempotency_key {
        inner.create_keys.insert(key.clone(), id.clone());
        *inner.creates_per_key.entry(key.clone()).or_default() += 1;
    }
    drop(inner);

    tracing::info!(sandbox.id = %id, sandbox.name = ?sandbox.definition.name, "sandbox created");
    tokio::spawn(run_lifecycle(state.clone(), sandbox));
    Ok(SandboxCreateResponse { sandbox_id: id })
}

fn created_for_key(state: &State, call: &Call) -> Option<String> {
    let key = call.idempotency_key.as_ref()?;
    state.lock().create_keys.get(key).cloned()
}

/// Builds the status for a creation over the rate limit, with the retry policy
/// detail that newer SDKs honour.
fn rate_limited(limit: u32) -> Status {
    let message = format!("Sandbox creation rate limit ({limit}/s) exceeded");
    let details = rpc_status::Status {
        code: Code::ResourceExhausted as i32,
        message: message.clone(),
        details: vec![rpc_status::Any {
            type_url: RPC_RETRY_POLICY_TYPE_URL.to_owned(),
            value: RpcRetryPolicy { retry_after_secs: 1 }.encode_to_vec(),
        }],
    };
    Status::with_details(Code::ResourceExhausted, message, details.encode_to_vec().into())
}

fn validate_definition(state: &State, method: &str, definition: &Sandbox) -> Result<(), Status> {
    if definition.image_id.is_empty() {
        return Err(invalid(state, method, "definition.image_id is required"));
    }
    if definition.timeout_secs > MAX_TIMEOUT_SECS {
        return Err(invalid(
            state,
            method,
            format!(
                "timeout_secs {} is over the maximum of {MAX_TIMEOUT_SECS} (24 h)",
                definition.timeout_secs
            ),
        ));
    }
    if let Some(idle) = definition.idle_timeout_secs {
        if idle == 0 || idle > MAX_TIMEOUT_SECS {
            return Err(invalid(
                state,
                method,
                format!("idle_timeout_secs {idle} must be between 1 and {MAX_TIMEOUT_SECS}"),
            ));
        }
    }
    if let Some(workdir) = &definition.workdir {
        if !workdir.starts_with('/') {
            return Err(invalid(
                state,
                method,
                format!("workdir {workdir:?} must be an absolute path"),
            ));
        }
    }
    if let Some(name) = &definition.name {
        let valid = !name.is_empty()
            && name.len() <= MAX_NAME_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(invalid(
                state,
                method,
                format!(
                    "sandbox name {name:?} is invalid: use at most {MAX_NAME_LEN} letters, digits, '-', '_' or '.'"
                ),
            ));
        }
    }
    let ports = definition
        .open_ports
        .as_ref()
        .map(|ports| ports.ports.as_slice())
        .unwrap_or_default();
    for (index, port) in ports.iter().enumerate() {
        if port.port == 0 || port.port > 65535 {
            return Err(invalid(state, method, format!("open port {} is out of range", port.port)));
        }
        if ports[..index].iter().any(|other| other.port == port.port) {
            return Err(invalid(state, method, format!("open port {} is listed twice", port.port)));
        }
    }
    if let Some(resources) = &definition.resources {
        if resources.memory_mb_max != 0 && resources.memory_mb_max < resources.memory_mb {
            return Err(invalid(state, method, "resources.memory_mb_max is below memory_mb"));
        }
        if resources.milli_cpu_max != 0 && resources.milli_cpu_max < resources.milli_cpu {
            return Err(invalid(state, method, "resources.milli_cpu_max is below milli_cpu"));
        }
    }
    Ok(())
}

fn image_for(state: &State, method: &str, image_id: &str) -> Result<Arc<ImageEntry>, Status> {
    let image = state
        .lock()
        .images
        .get(image_id)
        .cloned()
        .ok_or_else(|| Status::not_found(format!("Image {image_id} not found")))?;
    let status = image.progress().result.as_ref().map(|result| result.status);
    match status {
        Some(status) if status == GenericStatus::Success as i32 => Ok(image),
        Some(_) => Err(Status::failed_precondition(format!(
            "Image {image_id} failed to build"
        ))),
        None => {
            state.violation(method, format!("SandboxCreate with image {image_id}, which is still building"));
            Err(Status::failed_precondition(format!(
                "Image {image_id} has not finished building; wait with ImageJoinStreaming"
            )))
        }
    }
}

fn secret_env(state: &State, secret_ids: &[String]) -> Result<Vec<(String, String)>, Status> {
    let inner = state.lock();
    let mut env = Vec::new();
    for id in secret_ids {
        let secret = inner
            .secrets
            .get(id)
            .ok_or_else(|| Status::not_found(format!("Secret {id} not found")))?;
        env.extend(
            secret
                .iter()
                .map(|(key, value)| (key.clone(), value.expose().to_owned())),
        );
    }
    Ok(env)
}

pub(super) async fn sandbox_get_from_name(
    state: Arc<State>,
    call: Call,
    request: SandboxGetFromNameRequest,
) -> Result<SandboxGetFromNameResponse, Status> {
    let environment = state.environment(&request.environment_name)?;
    if request.sandbox_name.is_empty() || request.app_name.is_empty() {
        return Err(invalid(&state, &call.method, "sandbox_name and app_name are required"));
    }
    let inner = state.lock();
    let app = inner
        .apps
        .values()
        .find(|app| app.name == request.app_name && app.environment == environment && !app.ephemeral)
        .ok_or_else(|| Status::not_found(format!("App '{}' not found", request.app_name)))?;
    inner
        .sandboxes
        .values()
        .find(|sandbox| {
            sandbox.app_id == app.id
                && sandbox.definition.name.as_deref() == Some(request.sandbox_name.as_str())
                && !sandbox.is_finished()
        })
        .map(|sandbox| SandboxGetFromNameResponse {
            sandbox_id: sandbox.id.clone(),
        })
        .ok_or_else(|| {
            Status::not_found(format!(
                "Sandbox with name '{}' not found in app '{}'",
                request.sandbox_name, request.app_name
            ))
        })
}

pub(super) async fn sandbox_list(
    state: Arc<State>,
    _call: Call,
    request: SandboxListRequest,
) -> Result<SandboxListResponse, Status> {
    state.environment(&request.environment_name)?;
    let inner = state.lock();
    if !request.app_id.is_empty() && !inner.apps.contains_key(&request.app_id) {
        return Err(Status::not_found(format!("App {} not found", request.app_id)));
    }
    let mut matching: Vec<&Arc<SandboxEntry>> = inner
        .sandboxes
        .values()
        .filter(|sandbox| request.app_id.is_empty() || sandbox.app_id == request.app_id)
        .filter(|sandbox| request.include_finished || !sandbox.is_finished())
        .filter(|sandbox| request.before_timestamp <= 0.0 || sandbox.created_at < request.before_timestamp)
        .filter(|sandbox| {
            let tags = sandbox.tags();
            request
                .tags
                .iter()
                .all(|tag| tags.get(&tag.tag_name) == Some(&tag.tag_value))
        })
        .collect();
    matching.sort_by(|a, b| b.created_at.total_cmp(&a.created_at));
    let sandboxes = matching
        .into_iter()
        .take(state.config.list_page_size)
        .map(|sandbox| SandboxInfo {
            id: sandbox.id.clone(),
            created_at: sandbox.created_at,
            app_id: sandbox.app_id.clone(),
            tags: tag_list(&sandbox.tags()),
            name: sandbox.definition.name.clone().unwrap_or_default(),
            image_id: sandbox.definition.image_id.clone(),
        })
        .collect();
    Ok(SandboxListResponse { sandboxes })
}

fn tag_list(tags: &std::collections::BTreeMap<String, String>) -> Vec<SandboxTag> {
    tags.iter()
        .map(|(name, value)| SandboxTag {
            tag_name: name.clone(),
            tag_value: value.clone(),
        })
        .collect()
}

pub(super) async fn sandbox_tags_set(
    state: Arc<State>,
    call: Call,
    request: SandboxTagsSetRequest,
) -> Result<SandboxTagsSetResponse, Status> {
    state.environment(&request.environment_name)?;
    let sandbox = state.sandbox(&request.sandbox_id)?;
    let mut tags = std::collections::BTreeMap::new();
    for tag in request.tags {
        if tag.tag_name.is_empty() {
            return Err(invalid(&state, &call.method, "a tag has an empty tag_name"));
        }
        if tags.insert(tag.tag_name.clone(), tag.tag_value).is_some() {
            return Err(invalid(&state, &call.method, format!("tag {:?} is set twice", tag.tag_name)));
        }
    }
    *sandbox.tags() = tags;
    Ok(SandboxTagsSetResponse {})
}

pub(super) async fn sandbox_tags_get(
    state: Arc<State>,
    _call: Call,
    request: SandboxTagsGetRequest,
) -> Result<SandboxTagsGetResponse, Status> {
    let sandbox = state.sandbox(&request.sandbox_id)?;
    let tags = tag_list(&sandbox.tags());
    Ok(SandboxTagsGetResponse { tags })
}

/// Waits up to `limit` for the sandbox to finish and returns its result.
async fn finished_within(sandbox: &SandboxEntry, limit: Duration) -> Option<GenericResult> {
    let mut status = sandbox.status.subscribe();
    let wait = async move {
        let status = status
            .wait_for(|status| matches!(status, SandboxStatus::Finished { .. }))
            .await
            .ok()?;
        match &*status {
            SandboxStatus::Finished { result, .. } => Some(result.clone()),
            _ => None,
        }
    };
    tokio::time::timeout(limit, wait).await.ok().flatten()
}

pub(super) async fn sandbox_wait(
    state: Arc<State>,
    _call: Call,
    request: SandboxWaitRequest,
) -> Result<SandboxWaitResponse, Status> {
    let sandbox = state.sandbox(&request.sandbox_id)?;
    let result = finished_within(&sandbox, wait_limit(request.timeout)).await;
    Ok(SandboxWaitResponse { result })
}

pub(super) async fn sandbox_terminate(
    state: Arc<State>,
    _call: Call,
    request: SandboxTerminateRequest,
) -> Result<SandboxTerminateResponse, Status> {
    let sandbox = state.sandbox(&request.sandbox_id)?;
    if !sandbox.is_finished() {
        tracing::info!(sandbox.id = %sandbox.id, "terminating sandbox");
        sandbox.terminate.cancel();
        // Replies once the host resources are gone, so that a client that checks
        // right after termination finds nothing left.
        if finished_within(&sandbox, Duration::from_secs(30)).await.is_none() {
            tracing::warn!(sandbox.id = %sandbox.id, "sandbox did not stop within 30 s of terminate");
        }
    }
    Ok(SandboxTerminateResponse {})
}

pub(super) async fn sandbox_get_tunnels(
    state: Arc<State>,
    _call: Call,
    request: SandboxGetTunnelsRequest,
) -> Result<SandboxGetTunnelsResponse, Status> {
    let sandbox = state.sandbox(&request.sandbox_id)?;
    let mut status = sandbox.status.subscribe();
    let started = status.wait_for(|status| !matches!(status, SandboxStatus::Pending));
    let _ = tokio::time::timeout(wait_limit(request.timeout), started).await;
    if sandbox.is_finished() {
        return Err(Status::failed_precondition(format!(
            "Sandbox {} has finished",
            sandbox.id
        )));
    }
    let running = sandbox.running().clone();
    Ok(match running {
        Some(running) => SandboxGetTunnelsResponse {
            result: Some(crate::image::success()),
            tunnels: running.tunnels,
        },
        None => SandboxGetTunnelsResponse {
            result: Some(GenericResult {
                status: GenericStatus::Timeout as i32,
                exception: "tunnels are not ready yet".to_owned(),
                exitcode: 0,
            }),
            tunnels: Vec::new(),
        },
    })
}

pub(super) async fn sandbox_snapshot_fs(
    state: Arc<State>,
    _call: Call,
    request: SandboxSnapshotFsRequest,
) -> Result<SandboxSnapshotFsResponse, Status> {
    let sandbox = state.sandbox(&request.sandbox_id)?;
    let Some(running) = sandbox.running().clone() else {
        return Err(Status::failed_precondition(format!(
            "Sandbox {} is not running; only a running sandbox can be snapshotted",
            sandbox.id
        )));
    };
    let built = sandbox
        .image
        .progress()
        .built
        .clone()
        .ok_or_else(|| Status::internal("the sandbox's image has no file system"))?;

    let image_id = new_id("im");
    let dest = state.host.work_dir.join("snapshots").join(&image_id);
    let upper = running.upper_dir.clone();
    let copy_dest = dest.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(copy_dest.parent().unwrap_or(&copy_dest))
            .map_err(|error| error.to_string())?;
        copy_layer(&upper, &copy_dest)
    })
    .await
    .map_err(|error| Status::internal(format!("snapshot task failed: {error}")))?
    .map_err(|message| Status::internal(format!("snapshot of {} failed: {message}", sandbox.id)))?;

    let mut layers = vec![dest];
    layers.extend(built.layers.iter().cloned());
    let snapshot = Arc::new(ImageEntry::new(
        image_id.clone(),
        Image::default(),
        Some(sandbox.id.clone()),
    ));
    snapshot.finish_built(BuiltImage {
        layers,
        env: built.env.clone(),
        workdir: built.workdir.clone(),
        docker_ref: None,
    });
    state.lock().images.insert(image_id.clone(), snapshot);
    tracing::info!(sandbox.id = %sandbox.id, image.id = %image_id, "file system snapshot taken");
    Ok(SandboxSnapshotFsResponse {
        image_id,
        result: Some(crate::image::success()),
    })
}
