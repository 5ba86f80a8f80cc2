//! The control-plane listener the stand-in `tailscale`/`tailscaled` scripts talk to.
//!
//! This is not Tailscale's control protocol. Each endpoint takes a form-urlencoded POST
//! body and returns `key=value` lines, so a bash script can use it over `/dev/tcp`:
//!
//! - `POST /control/register` `key`, `hostname`, `tags` (comma-separated), `ephemeral`
//!   (`1` for `--state=mem:`) registers a device with an auth key. It returns `state`
//!   (`Running`, `NeedsMachineAuth`, `Starting`) and the node's `node_id`, `name`,
//!   `ipv4`, `ipv6`, `tailnet` and `magic_dns_suffix`. A rejected key gets 401 or 403
//!   with `state=NeedsLogin` and `error`.
//! - `POST /control/heartbeat` `node_id`, `online` (`1`/`0`) sets the device's
//!   online state and returns its `state`; 404 when the device is gone.
//! - `POST /control/logout` `node_id` removes an ephemeral device (a non-ephemeral one
//!   goes offline).
//! - `POST /control/serve` `node_id`, `https_port`, `target` records an HTTPS serve
//!   configuration and returns its `url`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use time::OffsetDateTime;

use crate::faults::RegistrationMode;
use crate::form::decode_form;
use crate::model::{ControlRequest, Device, ServeConfig};
use crate::state::{DeviceSpec, Shared};

/// Builds the control-plane router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/control/register", post(register))
        .route("/control/heartbeat", post(heartbeat))
        .route("/control/logout", post(logout))
        .route("/control/serve", post(serve))
        .with_state(shared)
}

/// Builds a response of `key=value` lines.
fn lines(status: StatusCode, pairs: &[(&str, String)]) -> Response {
    let mut body = String::new();
    for (key, value) in pairs {
        body.push_str(key);
        body.push('=');
        body.push_str(&value.replace('\n', " "));
        body.push('\n');
    }
    (status, body).into_response()
}

fn failure(status: StatusCode, state: &str, message: String) -> Response {
    lines(status, &[("state", state.to_owned()), ("error", message)])
}

/// Decodes the form body and records the request with its fields.
fn record(shared: &Shared, path: &str, body: &str) -> Result<Vec<(String, String)>, Response> {
    let fields = decode_form(body).map_err(|e| failure(StatusCode::BAD_REQUEST, "NoState", e))?;
    shared.lock().control_requests.push(ControlRequest {
        path: path.to_owned(),
        fields: fields.clone(),
    });
    Ok(fields)
}

fn field(fields: &[(String, String)], name: &str) -> String {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn node_lines(shared: &Shared, state: &str, device: &Device) -> Response {
    lines(
        StatusCode::OK,
        &[
            ("state", state.to_owned()),
            ("node_id", device.node_id.clone()),
            ("name", device.name.clone()),
            ("ipv4", device.ipv4.to_string()),
            ("ipv6", device.ipv6.to_string()),
            ("tags", device.tags.join(",")),
            ("tailnet", shared.config.tailnet.clone()),
            ("magic_dns_suffix", shared.config.magic_dns_suffix.clone()),
        ],
    )
}

/// The id part of `tskey-auth-<id>-<secret>`, for error messages that must not echo the key.
fn key_id_of(key: &str) -> Option<&str> {
    key.strip_prefix("tskey-auth-")?.split('-').next()
}

async fn register(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let fields = match record(&shared, "/control/register", &body) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let value = field(&fields, "key");
    let hostname = field(&fields, "hostname");
    let advertised: Vec<String> = field(&fields, "tags")
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    let mem_state = field(&fields, "ephemeral") == "1";

    let not_valid = || {
        let message = match key_id_of(&value) {
            Some(id) => format!("invalid key: API key {id} not valid"),
            None => "invalid key: unable to validate API key".to_owned(),
        };
        failure(StatusCode::UNAUTHORIZED, "NeedsLogin", message)
    };
    if hostname.is_empty() {
        return failure(StatusCode::BAD_REQUEST, "NeedsLogin", "missing hostname".to_owned());
    }

    let mut state = shared.lock();
    let mode = state.registration;
    let Some(key) = state.keys.iter_mut().find(|k| k.key == value) else {
        tracing::info!("test control plane rejected an unknown auth key");
        return not_valid();
    };
    if key.is_invalid() {
        tracing::info!(key_id = %key.id, "test control plane rejected a used, revoked or expired auth key");
        return not_valid();
    }
    let rejected: Vec<String> = advertised
        .iter()
        .filter(|t| !key.capabilities.tags.contains(t))
        .cloned()
        .collect();
    if !rejected.is_empty() {
        return failure(
            StatusCode::FORBIDDEN,
            "NeedsLogin",
            crate::api::tags_message(&rejected),
        );
    }
    if mode == RegistrationMode::Hang {
        tracing::info!(key_id = %key.id, "test control plane leaves a registration pending");
        return lines(StatusCode::OK, &[("state", "Starting".to_owned())]);
    }

    key.uses += 1;
    let spec = DeviceSpec {
        hostname,
        tags: key.capabilities.tags.clone(),
        ephemeral: key.capabilities.ephemeral || mem_state,
        authorized: key.capabilities.preauthorized,
        online: true,
        last_seen_ago: time::Duration::ZERO,
        auth_key_id: Some(key.id.clone()),
        hidden: mode == RegistrationMode::Invisible,
    };
    let key_id = key.id.clone();
    let device = state.add_device(spec, &shared.config.magic_dns_suffix, &shared.config.admin_user);
    drop(state);
    tracing::info!(node_id = %device.node_id, %key_id, "test control plane registered a device");

    let backend_state = if device.authorized { "Running" } else { "NeedsMachineAuth" };
    node_lines(&shared, backend_state, &device)
}

async fn heartbeat(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let fields = match record(&shared, "/control/heartbeat", &body) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let node_id = field(&fields, "node_id");
    let online = field(&fields, "online") != "0";
    let mut state = shared.lock();
    let Some(device) = state.devices.iter_mut().find(|d| d.node_id == node_id) else {
        return failure(StatusCode::NOT_FOUND, "NeedsLogin", format!("node {node_id} not found"));
    };
    device.connected_to_control = online;
    device.last_seen = OffsetDateTime::now_utc();
    let device = device.clone();
    drop(state);
    let backend_state = if device.authorized { "Running" } else { "NeedsMachineAuth" };
    node_lines(&shared, backend_state, &device)
}

async fn logout(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let fields = match record(&shared, "/control/logout", &body) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let node_id = field(&fields, "node_id");
    let mut state = shared.lock();
    let Some(i) = state.devices.iter().position(|d| d.node_id == node_id) else {
        return failure(StatusCode::NOT_FOUND, "NeedsLogin", format!("node {node_id} not found"));
    };
    if state.devices[i].is_ephemeral {
        state.devices.remove(i);
        tracing::info!(%node_id, "test control plane removed an ephemeral device after logout");
    } else {
        state.devices[i].connected_to_control = false;
        tracing::info!(%node_id, "test control plane logged a device out");
    }
    lines(StatusCode::OK, &[("state", "NeedsLogin".to_owned())])
}

async fn serve(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let fields = match record(&shared, "/control/serve", &body) {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let node_id = field(&fields, "node_id");
    let target = field(&fields, "target");
    let Ok(https_port) = field(&fields, "https_port").parse::<u16>() else {
        return failure(StatusCode::BAD_REQUEST, "Running", "invalid https_port".to_owned());
    };
    let mut state = shared.lock();
    if !state.https_enabled {
        return failure(
            StatusCode::FORBIDDEN,
            "Running",
            "HTTPS certificates are not enabled for this tailnet; enable HTTPS in the admin console".to_owned(),
        );
    }
    let Some(device) = state.devices.iter().find(|d| d.node_id == node_id) else {
        return failure(StatusCode::NOT_FOUND, "NeedsLogin", format!("node {node_id} not found"));
    };
    let url = if https_port == 443 {
        format!("https://{}/", device.name)
    } else {
        format!("https://{}:{https_port}/", device.name)
    };
    state.serve.retain(|s| !(s.node_id == node_id && s.https_port == https_port));
    state.serve.push(ServeConfig {
        node_id,
        https_port,
        target,
    });
    lines(StatusCode::OK, &[("state", "Running".to_owned()), ("url", url)])
}
