//! The API v2 listener: routing, the request gate (log, faults, auth) and error bodies.

mod auth;
mod devices;
mod keys;
mod oauth;

pub(crate) use auth::Caller;
pub(crate) use keys::tags_message;

use std::sync::Arc;
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::model::{AuthKind, RecordedRequest, Route};
use crate::state::Shared;

/// Largest request body the server reads.
const MAX_BODY: usize = 1 << 20;

/// Builds an API error response `{"message": ...}` with `status`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "message": message.into() }))).into_response()
}

/// Builds the API router.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v2/oauth/token", post(oauth::token))
        .route("/api/v2/tailnet/:tailnet/keys", post(keys::create).get(keys::list))
        .route("/api/v2/tailnet/:tailnet/keys/:id", get(keys::get).delete(keys::revoke))
        .route("/api/v2/tailnet/:tailnet/devices", get(devices::list))
        .route("/api/v2/device/:id", get(devices::get).delete(devices::delete))
        .route("/api/v2/device/:id/tags", post(devices::set_tags))
        .route(
            "/api/v2/tailnet/:tailnet/acl",
            get(crate::policy::get_policy).post(crate::policy::set_policy),
        )
        .route("/api/v2/tailnet/:tailnet/acl/validate", post(crate::policy::validate_policy))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

async fn unknown_route() -> Response {
    error(StatusCode::NOT_FOUND, "not found")
}

/// Returns the content types a route accepts for its body, if it takes one.
fn expected_content_types(route: Route) -> Option<&'static [&'static str]> {
    match route {
        Route::OAuthToken => Some(&["application/x-www-form-urlencoded"]),
        Route::CreateKey | Route::SetDeviceTags => Some(&["application/json"]),
        Route::SetPolicy | Route::ValidatePolicy => Some(&["application/json", "application/hujson"]),
        _ => None,
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Replaces every configured OAuth client secret and API token in a request body, and
/// the value of a `client_secret` form field, so the request log contains no secret.
fn redact_secrets(shared: &Shared, body: &str) -> String {
    let mut text = body
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("client_secret", _)) => "client_secret=<redacted>".to_owned(),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&");
    let config = &shared.config;
    let secrets = config
        .oauth_clients
        .iter()
        .map(|c| c.secret.as_str())
        .chain(config.api_tokens.iter().map(|t| t.token.as_str()));
    for secret in secrets.filter(|s| !s.is_empty()) {
        text = text.replace(secret, "<redacted>");
    }
    text
}

/// Runs before every API handler: reads the body, applies rate limits and injected
/// failures, checks the content type and the credential, then logs the exchange.
async fn gate(AxumState(shared): AxumState<Arc<Shared>>, request: Request, next: Next) -> Response {
    let route = Route::from_parts(
        request.method().as_str(),
        request.extensions().get::<MatchedPath>().map(MatchedPath::as_str),
    );
    let (mut parts, body) = request.into_parts();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, format!("reading request body: {e}")),
    };
    let body_text = String::from_utf8_lossy(&bytes).into_owned();
    let mut record = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        route,
        content_type: header_text(&parts.headers, header::CONTENT_TYPE),
        accept: header_text(&parts.headers, header::ACCEPT),
        if_match: header_text(&parts.headers, header::IF_MATCH),
        auth: AuthKind::None,
        body: redact_secrets(&shared, &body_text),
        status: 0,
    };

    if route == Route::Unknown {
        let message = format!("request to an unknown route: {} {}", record.method, record.path);
        shared.lock().violation(route, message);
    }
    let early = precheck(&shared, route, &record);
    let response = match early {
        Some(response) => response,
        None => match auth::authenticate(&shared, route, &parts.headers) {
            Ok(caller) => {
                record.auth = caller.kind.clone();
                parts.extensions.insert(caller);
                next.run(Request::from_parts(parts, Body::from(bytes))).await
            }
            Err((kind, response)) => {
                record.auth = kind;
                response
            }
        },
    };

    record.status = response.status().as_u16();
    tracing::debug!(method = %record.method, path = %record.path, status = record.status, "test server handled request");
    shared.lock().requests.push(record);
    response
}

/// Applies rate limits, injected failures and the content-type check.
fn precheck(shared: &Shared, route: Route, record: &RecordedRequest) -> Option<Response> {
    let mut state = shared.lock();

    if let Some(limit) = state.rate_limit.as_mut() {
        if let Some(wait) = limit.admit(Instant::now()) {
            return Some(with_retry_after(
                error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded"),
                Some(wait),
            ));
        }
    }

    if let Some(i) = state
        .failures
        .iter()
        .position(|f| f.remaining > 0 && f.route.is_none_or(|r| r == route))
    {
        let failure = &mut state.failures[i];
        failure.remaining -= 1;
        let status = StatusCode::from_u16(failure.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = failure.retry_after;
        if failure.remaining == 0 {
            state.failures.remove(i);
        }
        tracing::info!(?route, %status, "test server injected a failure");
        return Some(with_retry_after(
            error(status, format!("injected failure ({status})")),
            retry_after,
        ));
    }

    if let Some(expected) = expected_content_types(route) {
        let essence = record
            .content_type
            .as_deref()
            .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let ok = essence.as_deref().is_some_and(|e| expected.contains(&e));
        if !ok {
            let got = record.content_type.clone().unwrap_or_else(|| "no Content-Type".to_owned());
            state.violation(route, format!("Content-Type {got:?}, expected one of {expected:?}"));
            return Some(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Type {got:?}; expected {}", expected.join(" or ")),
            ));
        }
    }
    None
}

fn with_retry_after(mut response: Response, seconds: Option<u64>) -> Response {
    if let Some(seconds) = seconds {
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

/// Resolves the `{tailnet}` path segment: `-` or the configured name, else a 404.
pub(crate) fn check_tailnet(shared: &Shared, tailnet: &str) -> Result<(), Response> {
    if tailnet == "-" || tailnet == shared.config.tailnet {
        Ok(())
    } else {
        Err(error(StatusCode::NOT_FOUND, format!("tailnet {tailnet:?} not found")))
    }
}

/// Parses a JSON body strictly, recording a violation and returning a 400 on failure.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    route: Route,
    body: &str,
) -> Result<T, Response> {
    serde_json::from_str(body).map_err(|e| {
        shared.lock().violation(route, format!("invalid JSON body: {e}"));
        error(StatusCode::BAD_REQUEST, format!("invalid request body: {e}"))
    })
}
