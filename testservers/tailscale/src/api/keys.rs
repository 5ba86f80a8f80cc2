//! Auth key routes: create, list, get, revoke.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use time::{Duration as TimeDuration, OffsetDateTime};

use super::{check_tailnet, error, parse_json, Caller};
use crate::ids;
use crate::model::{AuthKey, KeyCreateCapabilities, Route};
use crate::policy::eval::Policy;
use crate::policy::hujson;
use crate::state::{Shared, State as ServerState};

/// Maximum key lifetime the API accepts: 90 days.
const MAX_EXPIRY_SECONDS: i64 = 90 * 24 * 3600;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateKeyRequest {
    capabilities: Capabilities,
    #[serde(default)]
    expiry_seconds: Option<i64>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Capabilities {
    devices: DeviceCapabilities,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceCapabilities {
    create: KeyCreateCapabilities,
}

/// Returns whether a key description is valid: at most 50 letters, digits, `-`, `_` or spaces.
pub(crate) fn valid_description(text: &str) -> bool {
    text.chars().count() <= 50
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == ' ')
}

/// Returns the tags of `requested` that `caller` may not put on a device, given the
/// current policy. An OAuth client may use its own tags and tags they own; an API
/// access token (an admin) may use any tag defined in `tagOwners`.
pub(crate) fn forbidden_tags(state: &ServerState, caller: &Caller, requested: &[String]) -> Vec<String> {
    let policy = hujson::to_json(&state.policy.text)
        .ok()
        .and_then(|v| Policy::parse(&v).ok())
        .unwrap_or_default();
    requested
        .iter()
        .filter(|tag| {
            if !tag.starts_with("tag:") || tag.len() <= 4 {
                return true;
            }
            if caller.oauth_client.is_some() {
                !caller.tags.contains(tag) && !policy.tag_owned_by_any(tag, &caller.tags)
            } else {
                !policy.tag_defined(tag)
            }
        })
        .cloned()
        .collect()
}

/// Formats the API's tag rejection message, `requested tags [a b] are invalid or not permitted`.
pub(crate) fn tags_message(tags: &[String]) -> String {
    format!("requested tags [{}] are invalid or not permitted", tags.join(" "))
}

pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Path(tailnet): Path<String>,
    Extension(caller): Extension<Caller>,
    body: String,
) -> Response {
    let route = Route::CreateKey;
    if let Err(response) = check_tailnet(&shared, &tailnet) {
        return response;
    }
    let request: CreateKeyRequest = match parse_json(&shared, route, &body) {
        Ok(request) => request,
        Err(response) => return response,
    };

    let description = request.description.unwrap_or_default();
    if !valid_description(&description) {
        shared
            .lock()
            .violation(route, format!("invalid key description {description:?}"));
        return error(
            StatusCode::BAD_REQUEST,
            "description is invalid: use at most 50 letters, digits, hyphens, underscores or spaces",
        );
    }
    let expiry = match request.expiry_seconds {
        None | Some(0) => MAX_EXPIRY_SECONDS,
        Some(s) if (1..=MAX_EXPIRY_SECONDS).contains(&s) => s,
        Some(s) => {
            shared.lock().violation(route, format!("expirySeconds {s} out of range"));
            return error(
                StatusCode::BAD_REQUEST,
                format!("expirySeconds {s} is invalid: must be between 1 and {MAX_EXPIRY_SECONDS}"),
            );
        }
    };

    let capabilities = request.capabilities.devices.create;
    let mut state = shared.lock();
    if caller.oauth_client.is_some() && capabilities.tags.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "keys created by an OAuth client must have tags: requested tags [] are invalid or not permitted",
        );
    }
    let forbidden = forbidden_tags(&state, &caller, &capabilities.tags);
    if !forbidden.is_empty() {
        tracing::info!(?forbidden, "test server rejected auth key tags");
        return error(StatusCode::BAD_REQUEST, tags_message(&forbidden));
    }

    let id = ids::stable_id('k');
    let created = OffsetDateTime::now_utc();
    let key = AuthKey {
        key: format!("tskey-auth-{id}-{}", ids::random_alnum(32)),
        id,
        description,
        capabilities,
        created,
        expires: created + TimeDuration::seconds(expiry),
        revoked: None,
        uses: 0,
        minted_by_oauth_client: caller.oauth_client.clone(),
    };
    state.keys.push(key.clone());
    drop(state);
    tracing::info!(key_id = %key.id, "test server created an auth key");

    let mut body = key.to_json();
    body["key"] = json!(key.key);
    Json(body).into_response()
}

pub(crate) async fn list(State(shared): State<Arc<Shared>>, Path(tailnet): Path<String>) -> Response {
    if let Err(response) = check_tailnet(&shared, &tailnet) {
        return response;
    }
    let state = shared.lock();
    let keys: Vec<_> = state
        .keys
        .iter()
        .filter(|k| !k.is_revoked())
        .map(AuthKey::to_json)
        .collect();
    Json(json!({ "keys": keys })).into_response()
}

pub(crate) async fn get(State(shared): State<Arc<Shared>>, Path((tailnet, id)): Path<(String, String)>) -> Response {
    if let Err(response) = check_tailnet(&shared, &tailnet) {
        return response;
    }
    let state = shared.lock();
    match state.keys.iter().find(|k| k.id == id) {
        Some(key) => Json(key.to_json()).into_response(),
        None => error(StatusCode::NOT_FOUND, "key not found"),
    }
}

pub(crate) async fn revoke(State(shared): State<Arc<Shared>>, Path((tailnet, id)): Path<(String, String)>) -> Response {
    if let Err(response) = check_tailnet(&shared, &tailnet) {
        return response;
    }
    let mut state = shared.lock();
    let Some(key) = state.keys.iter_mut().find(|k| k.id == id) else {
        return error(StatusCode::NOT_FOUND, "key not found");
    };
    if key.revoked.is_none() {
        key.revoked = Some(OffsetDateTime::now_utc());
        tracing::info!(key_id = %id, "test server revoked an auth key");
    }
    StatusCode::OK.into_response()
}
