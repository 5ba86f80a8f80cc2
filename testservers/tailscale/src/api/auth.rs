//! Credential checks: API access tokens, OAuth access tokens and their scopes.

use std::time::Instant;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;

use super::error;
use crate::model::{AuthKind, Route};
use crate::state::Shared;

/// A scope a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scope(pub(crate) &'static str);

/// The authenticated caller of a request, stored in the request extensions.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) kind: AuthKind,
    pub(crate) scopes: Vec<String>,
    /// Tags of the OAuth client behind the token; empty for an API access token.
    pub(crate) tags: Vec<String>,
    pub(crate) oauth_client: Option<String>,
}

impl Caller {
    /// Returns whether the caller has `scope`, directly or through a broader scope.
    pub(crate) fn has(&self, scope: Scope) -> bool {
        scopes_cover(&self.scopes, scope.0)
    }
}

/// Returns whether `held` grants `wanted`: the scope itself, its write form for a `:read`
/// scope, `all`, or `all:read` for a `:read` scope.
pub(crate) fn scopes_cover(held: &[String], wanted: &str) -> bool {
    let base = wanted.strip_suffix(":read");
    held.iter().any(|s| {
        s == wanted || s == "all" || Some(s.as_str()) == base || (base.is_some() && s == "all:read")
    })
}

/// Returns the scope a route needs.
pub(crate) fn required_scope(route: Route) -> Option<Scope> {
    let scope = match route {
        Route::CreateKey | Route::DeleteKey => "auth_keys",
        Route::ListKeys | Route::GetKey => "auth_keys:read",
        Route::DeleteDevice | Route::SetDeviceTags => "devices:core",
        Route::ListDevices | Route::GetDevice => "devices:core:read",
        Route::SetPolicy => "policy_file",
        Route::GetPolicy | Route::ValidatePolicy => "policy_file:read",
        Route::OAuthToken | Route::Unknown => return None,
    };
    Some(Scope(scope))
}

/// Checks the `Authorization` header of a request to `route`.
pub(crate) fn authenticate(shared: &Shared, route: Route, headers: &HeaderMap) -> Result<Caller, (AuthKind, Response)> {
    if matches!(route, Route::OAuthToken | Route::Unknown) {
        return Ok(Caller {
            kind: AuthKind::None,
            scopes: Vec::new(),
            tags: Vec::new(),
            oauth_client: None,
        });
    }

    let reject = |kind: AuthKind, message: &str, violation: String| {
        shared.lock().violation(route, violation);
        Err((kind, error(StatusCode::UNAUTHORIZED, message)))
    };

    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return reject(AuthKind::None, "missing Authorization header", "request without Authorization header".to_owned());
    };
    let Ok(value) = value.to_str() else {
        return reject(AuthKind::Invalid, "API token invalid", "Authorization header is not ASCII".to_owned());
    };

    let (token, basic) = if let Some(token) = value.strip_prefix("Bearer ") {
        (token.trim().to_owned(), false)
    } else if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((user, "")) => (user.to_owned(), true),
            Some(_) => {
                return reject(
                    AuthKind::Invalid,
                    "API token invalid",
                    "HTTP Basic credentials with a non-empty password".to_owned(),
                )
            }
            None => return reject(AuthKind::Invalid, "API token invalid", "malformed HTTP Basic credentials".to_owned()),
        }
    } else {
        return reject(
            AuthKind::Invalid,
            "API token invalid",
            "Authorization header is neither Bearer nor Basic".to_owned(),
        );
    };

    let caller = if shared.config.api_tokens.iter().any(|t| t.token == token) {
        Caller {
            kind: if basic {
                AuthKind::ApiTokenBasic
            } else {
                AuthKind::ApiTokenBearer
            },
            scopes: vec!["all".to_owned()],
            tags: Vec::new(),
            oauth_client: None,
        }
    } else {
        let issued = shared.lock().tokens.get(&token).cloned();
        match issued {
            Some(issued) if issued.expires_at > Instant::now() => Caller {
                kind: AuthKind::OAuth {
                    client_id: issued.client_id.clone(),
                },
                scopes: issued.scopes,
                tags: issued.tags,
                oauth_client: Some(issued.client_id),
            },
            Some(issued) => {
                return reject(
                    AuthKind::OAuth {
                        client_id: issued.client_id,
                    },
                    "API token expired",
                    "request with an expired OAuth access token".to_owned(),
                )
            }
            None if shared.config.oauth_clients.iter().any(|c| c.secret == token) => {
                return reject(
                    AuthKind::Invalid,
                    "API token invalid",
                    "OAuth client secret sent as a token; exchange it at /api/v2/oauth/token first".to_owned(),
                )
            }
            None => return reject(AuthKind::Invalid, "API token invalid", "unknown API token".to_owned()),
        }
    };

    if let Some(scope) = required_scope(route) {
        if !caller.has(scope) {
            return Err((
                caller.kind,
                error(
                    StatusCode::FORBIDDEN,
                    "calling actor does not have enough permissions to perform this function",
                ),
            ));
        }
    }
    Ok(caller)
}
