//! `POST /api/v2/oauth/token`: the client-credentials grant for OAuth clients.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::scopes_cover;
use super::error;
use crate::config::KNOWN_SCOPES;
use crate::form::decode_form;
use crate::ids;
use crate::model::Route;
use crate::state::{IssuedToken, Shared};

/// Issues an access token for a client id and secret.
pub(crate) async fn token(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let route = Route::OAuthToken;
    let fields = match decode_form(&body) {
        Ok(fields) => fields,
        Err(e) => {
            shared.lock().violation(route, format!("malformed form body: {e}"));
            return error(StatusCode::BAD_REQUEST, format!("invalid form body: {e}"));
        }
    };
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    for (key, _) in &fields {
        if !["client_id", "client_secret", "grant_type", "scope", "tags"].contains(&key.as_str()) {
            shared.lock().violation(route, format!("unknown form field {key:?}"));
        }
    }
    if let Some(grant) = field("grant_type") {
        if grant != "client_credentials" {
            shared.lock().violation(route, format!("grant_type {grant:?}"));
            return error(StatusCode::BAD_REQUEST, format!("unsupported grant_type {grant:?}"));
        }
    }

    let (Some(id), Some(secret)) = (field("client_id"), field("client_secret")) else {
        shared.lock().violation(route, "token request without client_id or client_secret");
        return error(StatusCode::UNAUTHORIZED, "API token invalid");
    };
    let Some(client) = shared.config.oauth_clients.iter().find(|c| c.id == id && c.secret == secret) else {
        tracing::info!(client_id = %id, "test server rejected OAuth client credentials");
        return error(StatusCode::UNAUTHORIZED, "API token invalid");
    };

    let scopes: Vec<String> = match field("scope") {
        Some(requested) if !requested.trim().is_empty() => {
            let requested: Vec<String> = requested.split_whitespace().map(str::to_owned).collect();
            let missing: Vec<&str> = requested
                .iter()
                .filter(|s| !KNOWN_SCOPES.contains(&s.as_str()) || !scopes_cover(&client.scopes, s))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return error(
                    StatusCode::FORBIDDEN,
                    format!("OAuth client cannot grant scopes \"{}\"", missing.join(" ")),
                );
            }
            requested
        }
        _ => client.scopes.clone(),
    };

    let tags: Vec<String> = match field("tags") {
        Some(requested) if !requested.trim().is_empty() => {
            let requested: Vec<String> = requested
                .split([',', ' '])
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            let foreign: Vec<&str> = requested
                .iter()
                .filter(|t| !client.tags.contains(t))
                .map(String::as_str)
                .collect();
            if !foreign.is_empty() {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("requested tags [{}] are invalid or not permitted", foreign.join(" ")),
                );
            }
            requested
        }
        _ => client.tags.clone(),
    };

    let lifetime = shared.config.oauth_token_lifetime;
    let access_token = format!("tskey-api-{}-{}", ids::stable_id('k'), ids::random_alnum(32));
    {
        let mut state = shared.lock();
        state.tokens_issued += 1;
        state.tokens.insert(
            access_token.clone(),
            IssuedToken {
                client_id: client.id.clone(),
                scopes: scopes.clone(),
                tags,
                expires_at: Instant::now() + lifetime,
            },
        );
    }
    tracing::info!(client_id = %client.id, "test server issued an OAuth access token");
    Json(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": lifetime.as_secs(),
        "scope": scopes.join(" "),
    }))
    .into_response()
}
