//! Policy file routes: get with ETag, conditional write, validate.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::eval::{parse_tests, Policy};
use super::{hujson, PolicyFile};
use crate::api::{check_tailnet, error};
use crate::faults::insert_acl_rule;
use crate::model::Route;
use crate::state::Shared;

/// Returns whether the client requested plain JSON rather than HuJSON.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json") && !accept.contains("application/hujson"))
}

/// Renders the policy file in the requested format with its `ETag`.
fn policy_response(policy: &PolicyFile, json_format: bool) -> Response {
    let mut response = if json_format {
        match hujson::to_json(&policy.text) {
            Ok(value) => Json(value).into_response(),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    } else {
        let mut response = policy.text.clone().into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/hujson"));
        response
    };
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", policy.etag())) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// Parses a policy text and runs its tests; the error is the API's 400 body.
fn check_policy(text: &str) -> Result<(), Value> {
    let value = hujson::to_json(text).map_err(|m| json!({ "message": m }))?;
    let policy = Policy::parse(&value).map_err(|m| json!({ "message": m }))?;
    let failures = policy.run_tests(&policy.tests).map_err(|m| json!({ "message": m }))?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(json!({ "message": "test(s) failed", "data": failures }))
    }
}

pub(crate) async fn get_policy(
    State(shared): State<Arc<Shared>>,
    Path(tailnet): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(response) = check_tailnet(&shared, &tailnet) {
        return response;
    }
    let mut state = shared.lock();
    let response = policy_response(&state.policy, wants_json(&headers));

    if let Some(edit) = state.edit_after_get.take() {
        let text = insert_acl_rule(&state.policy.text, &edit.comment, &edit.rule);
        state.policy = PolicyFile {
            text,
            untouched_default: false,
        };
        tracing::info!("test server changed the policy file after a read, as another admin would");
    }
    response
}

pub(crate) async fn set_policy(
    State(shared): State<Arc<Shared>>,
    Path(tailnet): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let route = Route::SetPolicy;
    if let Err(response) = check_tailnet(&shared, &tailnet) {
        return response;
    }
    let mut state = shared.lock();

    // NOTE: the real API also accepts a write without If-Match (it overwrites). The test
    // server does the same but records a violation, because Ken must always send one.
    match headers.get(header::IF_MATCH).map(|v| v.to_str().unwrap_or("")) {
        None => state.violation(route, "policy write without If-Match"),
        Some(raw) => {
            let unquoted = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"'));
            let Some(tag) = unquoted.filter(|t| !t.contains('"')) else {
                state.violation(route, format!("If-Match {raw:?} is not one quoted ETag"));
                return error(StatusCode::PRECONDITION_FAILED, "precondition failed, invalid old hash");
            };
            if !state.policy.matches(tag) {
                tracing::info!("test server rejected a policy write with a stale ETag");
                return error(StatusCode::PRECONDITION_FAILED, "precondition failed, invalid old hash");
            }
        }
    }

    if let Err(body) = check_policy(&body) {
        tracing::info!(%body, "test server rejected a policy file");
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    state.policy = PolicyFile {
        text: body,
        untouched_default: false,
    };
    state.policy_writes += 1;
    tracing::info!(etag = %state.policy.etag(), "test server stored a new policy file");
    policy_response(&state.policy, wants_json(&headers))
}

pub(crate) async fn validate_policy(
    State(shared): State<Arc<Shared>>,
    Path(tailnet): Path<String>,
    body: String,
) -> Response {
    let route = Route::ValidatePolicy;
    if let Err(response) = check_tailnet(&shared, &tailnet) {
        return response;
    }
    let value = match hujson::to_json(&body) {
        Ok(value) => value,
        Err(e) => {
            shared.lock().violation(route, format!("unparsable validate body: {e}"));
            return error(StatusCode::BAD_REQUEST, e);
        }
    };

    let outcome = match value {
        Value::Array(_) => {
            let current = shared.lock().policy.text.clone();
            let policy = hujson::to_json(&current).and_then(|v| Policy::parse(&v));
            match (policy, parse_tests(&value)) {
                (Ok(policy), Ok(tests)) => match policy.run_tests(&tests) {
                    Ok(failures) if failures.is_empty() => Ok(()),
                    Ok(failures) => Err(json!({ "message": "test(s) failed", "data": failures })),
                    Err(m) => Err(json!({ "message": m })),
                },
                (Err(m), _) | (_, Err(m)) => Err(json!({ "message": m })),
            }
        }
        Value::Object(_) => check_policy(&body),
        _ => Err(json!({ "message": "expected a policy object or an array of tests" })),
    };
    match outcome {
        Ok(()) => Json(json!({})).into_response(),
        Err(body) => Json(body).into_response(),
    }
}
