//! [`TailscaleClient`]: the subset of the Tailscale API v2 Ken uses, over reqwest.

use std::sync::Arc;
use std::time::Duration;

use ken_core::{Error, Result};
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::auth::TokenSource;
use crate::config::TailscaleConfig;
use crate::retry::{retry_after, RetryPolicy};

pub mod devices;
pub mod error;
pub mod keys;
pub mod policy;

pub use devices::{Device, DeviceFilter};
pub use error::{api_error, is_precondition_failed, ApiError};
pub use keys::{AuthKeyRequest, CreatedAuthKey, KeyInfo};
pub use policy::PolicyText;

/// The time limit of one HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of the Tailscale API for one tailnet.
///
/// Cheap to clone; clones share the HTTP connection pool and the OAuth token cache.
/// Requests that get 429 or 5xx are sent again as [`RetryPolicy`] sets out.
/// Other errors are returned at once, mapped as [`error`] describes.
#[derive(Debug, Clone)]
pub struct TailscaleClient {
    http: reqwest::Client,
    config: Arc<TailscaleConfig>,
    tokens: Arc<TokenSource>,
    retry: RetryPolicy,
}

/// The body and headers of a successful response.
pub(crate) struct Reply {
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

/// One API call: what it is called in logs and errors, and what a 404 means.
pub(crate) struct Call<'a> {
    pub(crate) operation: String,
    pub(crate) resource: Option<(&'static str, &'a str)>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(operation: impl Into<String>) -> Self {
        Call {
            operation: operation.into(),
            resource: None,
        }
    }

    pub(crate) fn resource(mut self, kind: &'static str, id: &'a str) -> Self {
        self.resource = Some((kind, id));
        self
    }
}

impl TailscaleClient {
    /// Creates a client for `config`.
    pub fn new(config: TailscaleConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("ken-network-tailscale/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::backend_with("tailscale", "failed to build the HTTP client", e))?;
        let token_url = config.api_url("oauth/token")?;
        let tokens = TokenSource::new(config.credentials.clone(), token_url);
        Ok(TailscaleClient {
            http,
            config: Arc::new(config),
            tokens: Arc::new(tokens),
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Returns the configuration.
    pub fn config(&self) -> &TailscaleConfig {
        &self.config
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Returns the tags the OAuth client may mint, from `KEN_TAILSCALE_OAUTH_TAGS`
    /// (empty when unset). The API does not report an OAuth client's tags: the
    /// token response carries only `access_token`, `token_type`, `expires_in` and
    /// `scope`.
    pub(crate) fn known_client_tags(&self) -> &[String] {
        &self.config.oauth_tags
    }

    /// Returns whether the credential is an OAuth client.
    pub(crate) fn uses_oauth(&self) -> bool {
        self.tokens.is_oauth()
    }

    /// Sends the request `make` builds, again after 429 and 5xx responses as the
    /// retry policy allows, and returns the last response whatever its status.
    pub(crate) async fn send_raw(&self, operation: &str, make: impl Fn() -> RequestBuilder) -> Result<Response> {
        let mut attempt = 1;
        loop {
            let response = make().send().await.map_err(|e| Error::Backend {
                service: "tailscale".to_owned(),
                message: format!("{operation}: the request to the Tailscale API failed: {e}"),
                retryable: e.is_timeout() || e.is_connect(),
                source: Some(Box::new(e)),
            })?;
            let status = response.status();
            if !RetryPolicy::is_retryable(status) || attempt >= self.retry.max_attempts {
                return Ok(response);
            }
            let delay = self.retry.delay(attempt, &response);
            tracing::warn!(
                provider = "tailscale",
                operation,
                status = status.as_u16(),
                attempt,
                max_attempts = self.retry.max_attempts,
                delay_ms = delay.as_millis() as u64,
                "the Tailscale API asked to retry; sending the request again"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Sends an authenticated request and returns the body of a 2xx response, or
    /// the mapped error. An OAuth token rejected with 401 is fetched again once.
    pub(crate) async fn call(&self, call: Call<'_>, make: impl Fn(RequestBuilder) -> RequestBuilder, method: Method, path: &str) -> Result<Reply> {
        let url = self.config.api_url(path)?;
        let mut refreshed = false;
        loop {
            let token = self.tokens.bearer(self).await?;
            let response = self
                .send_raw(&call.operation, || {
                    make(self.http.request(method.clone(), url.clone()).header(AUTHORIZATION, format!("Bearer {}", token.expose())))
                })
                .await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && self.tokens.is_oauth() && !refreshed {
                tracing::info!(provider = "tailscale", operation = %call.operation, "the API rejected the OAuth access token; fetching a new one");
                self.tokens.invalidate().await;
                refreshed = true;
                continue;
            }
            let wait = retry_after(&response);
            let headers = response.headers().clone();
            let body = response
                .text()
                .await
                .map_err(|e| Error::backend_with("tailscale", format!("{}: failed to read the response", call.operation), e))?;
            if status.is_success() {
                return Ok(Reply { headers, body });
            }
            let error = if status == StatusCode::NOT_FOUND && call.resource.is_none() && path.starts_with("tailnet/") {
                self.unknown_tailnet(&call.operation)
            } else {
                error::from_response(status, &body, &call.operation, call.resource, wait)
            };
            tracing::debug!(provider = "tailscale", operation = %call.operation, status = status.as_u16(), %error, "the Tailscale API returned an error");
            return Err(error);
        }
    }

    /// Like [`call`](Self::call), and parses the body as JSON.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        call: Call<'_>,
        make: impl Fn(RequestBuilder) -> RequestBuilder,
        method: Method,
        path: &str,
    ) -> Result<T> {
        let operation = call.operation.clone();
        let reply = self.call(call, make, method, path).await?;
        serde_json::from_str(&reply.body)
            .map_err(|e| Error::backend_with("tailscale", format!("{operation}: the response is not the expected JSON"), e))
    }

    /// Builds the error for a 404 on a tailnet-wide path (devices, keys, policy
    /// file). Such a 404 means the credential has no access to a tailnet of the
    /// configured name.
    // NOTE: a 404 on one key or device under a wrong tailnet still reads as that
    // key or device being gone.
    fn unknown_tailnet(&self, operation: &str) -> Error {
        Error::invalid(
            "tailnet",
            self.config.tailnet.clone(),
            format!(
                "{operation} returned HTTP 404: the credential has no access to a tailnet of that name; set {} (or tailnet in \
                 [network]) to the tailnet's name from the admin console's Settings > General page, or to - for the \
                 credential's own tailnet",
                crate::config::env::TAILNET
            ),
        )
    }

    /// Returns the tailnet path segment.
    pub(crate) fn tailnet(&self) -> String {
        url_segment(&self.config.tailnet)
    }
}

/// Percent-encodes `value` for use as one path segment.
pub(crate) fn url_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
