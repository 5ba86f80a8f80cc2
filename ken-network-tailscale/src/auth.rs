//! Bearer tokens for the API: a static API access token, or access tokens fetched
//! with an OAuth client and refreshed before they expire.

use std::time::Duration;

use ken_core::{Error, Result, Secret};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;
use url::Url;

use crate::config::ApiCredentials;

/// How long before its expiry an OAuth access token is replaced.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// The lifetime assumed when the token response has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// A cached OAuth access token.
struct CachedToken {
    token: Secret,
    refresh_at: Instant,
}

/// The source of the `Authorization: Bearer` token of every API request.
///
/// With an OAuth client, concurrent callers share one token request: the first
/// caller fetches while holding the cache's lock and the others wait for its result.
pub(crate) struct TokenSource {
    credentials: ApiCredentials,
    token_url: Url,
    cache: Mutex<Option<CachedToken>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

impl TokenSource {
    pub(crate) fn new(credentials: ApiCredentials, token_url: Url) -> Self {
        TokenSource {
            credentials,
            token_url,
            cache: Mutex::new(None),
        }
    }

    /// Returns whether tokens come from an OAuth client.
    pub(crate) fn is_oauth(&self) -> bool {
        matches!(self.credentials, ApiCredentials::OAuth { .. })
    }

    /// Returns a token valid for at least [`REFRESH_MARGIN`] (or half the token's
    /// lifetime when that is shorter), fetching a new one when needed.
    pub(crate) async fn bearer(&self, client: &crate::client::TailscaleClient) -> Result<Secret> {
        let (client_id, client_secret) = match &self.credentials {
            ApiCredentials::ApiKey(key) => return Ok(key.clone()),
            ApiCredentials::OAuth { client_id, client_secret } => (client_id, client_secret),
        };
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref() {
            if Instant::now() < cached.refresh_at {
                return Ok(cached.token.clone());
            }
            tracing::debug!(provider = "tailscale", "the OAuth access token is about to expire; fetching a new one");
        }

        let form = [("client_id", client_id.as_str()), ("client_secret", client_secret.expose())];
        let response = client
            .send_raw("fetching an OAuth access token", || {
                client.http().post(self.token_url.clone()).form(&form)
            })
            .await?;
        let status = response.status();
        let body = response.text().await.map_err(|e| Error::backend_with("tailscale", "failed to read the OAuth token response", e))?;
        if !status.is_success() {
            let error = crate::client::error::from_response(status, &body, "fetching an OAuth access token", None, None);
            return Err(match error {
                Error::Unauthenticated { service, message } => Error::Unauthenticated {
                    service,
                    message: format!(
                        "{message}; check {} and {} (the OAuth client may have been deleted or its secret rotated)",
                        crate::config::env::OAUTH_CLIENT_ID,
                        crate::config::env::OAUTH_CLIENT_SECRET
                    ),
                },
                other => other,
            });
        }
        let parsed: TokenResponse = serde_json::from_str(&body)
            .map_err(|e| Error::backend_with("tailscale", "the OAuth token response is not the expected JSON (access_token, expires_in)", e))?;

        let lifetime = parsed.expires_in.map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        let token = Secret::new(parsed.access_token);
        let scope = parsed.scope.unwrap_or_default();
        tracing::info!(provider = "tailscale", client_id = %client_id, expires_in = lifetime.as_secs(), scope = %scope, "fetched an OAuth access token");
        *cache = Some(CachedToken {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime - margin,
        });
        Ok(token)
    }

    /// Drops the cached token, so the next request fetches a new one.
    pub(crate) async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("credentials", &self.credentials)
            .field("token_url", &self.token_url.as_str())
            .finish()
    }
}
