//! Device routes: list, get, delete, set tags.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::keys::{forbidden_tags, tags_message};
use super::{check_tailnet, error, parse_json, Caller};
use crate::model::Route;
use crate::state::Shared;

/// Reads `?fields=`: `all` adds the extended fields, `default` or none keeps the default set.
fn wants_all_fields(shared: &Shared, route: Route, query: &HashMap<String, String>) -> Result<bool, Response> {
    match query.get("fields").map(String::as_str) {
        None | Some("default") => Ok(false),
        Some("all") => Ok(true),
        Some(other) => {
            shared.lock().violation(route, format!("fields={other:?}"));
            Err(error(
                StatusCode::BAD_REQUEST,
                format!("invalid fields value {other:?}: use all or default"),
            ))
        }
    }
}

pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Path(tailnet): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(response) = check_tailnet(&shared, &tailnet) {
        return response;
    }
    let all = match wants_all_fields(&shared, Route::ListDevices, &query) {
        Ok(all) => all,
        Err(response) => return response,
    };
    let state = shared.lock();
    let devices: Vec<_> = state
        .devices
        .iter()
        .filter(|d| !d.hidden)
        .map(|d| d.to_json(all))
        .collect();
    Json(json!({ "devices": devices })).into_response()
}

pub(crate) async fn get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let all = match wants_all_fields(&shared, Route::GetDevice, &query) {
        Ok(all) => all,
        Err(response) => return response,
    };
    let state = shared.lock();
    match state.device_index(&id) {
        Some(i) => Json(state.devices[i].to_json(all)).into_response(),
        None => error(StatusCode::NOT_FOUND, "device not found"),
    }
}

pub(crate) async fn delete(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut state = shared.lock();
    match state.device_index(&id) {
        Some(i) => {
            let device = state.devices.remove(i);
            tracing::info!(node_id = %device.node_id, "test server deleted a device");
            StatusCode::OK.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "device not found"),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetTagsRequest {
    tags: Vec<String>,
}

pub(crate) async fn set_tags(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Extension(caller): Extension<Caller>,
    body: String,
) -> Response {
    let request: SetTagsRequest = match parse_json(&shared, Route::SetDeviceTags, &body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let mut state = shared.lock();
    let Some(i) = state.device_index(&id) else {
        return error(StatusCode::NOT_FOUND, "device not found");
    };
    let forbidden = forbidden_tags(&state, &caller, &request.tags);
    if !forbidden.is_empty() {
        return error(StatusCode::BAD_REQUEST, tags_message(&forbidden));
    }
    let device = &mut state.devices[i];
    device.tags = request.tags;
    if !device.tags.is_empty() {
        device.user = "tagged-devices".to_owned();
    }
    StatusCode::OK.into_response()
}
