//! The [`TestServer`] handle: start, inspect, inject faults, stop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ken_core::{Error, Result};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{OAuthClient, TestServerConfig};
use crate::faults::{InjectedFailure, RateLimit, RegistrationMode, CONCURRENT_EDIT_COMMENT, CONCURRENT_EDIT_RULE};
use crate::model::{AuthKey, ControlRequest, Device, KeyCreateCapabilities, RecordedRequest, Route, ServeConfig, Violation};
use crate::policy::PolicyFile;
use crate::state::{DeviceSpec, PendingEdit, Shared};

/// A running Tailscale API v2 test server on 127.0.0.1, with an optional control-plane
/// listener for the stand-in scripts.
///
/// Both listeners stop when the handle is dropped or [`TestServer::shutdown`] is called.
/// Every inspection method returns a snapshot.
pub struct TestServer {
    shared: Arc<Shared>,
    api_addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Io {
        context: format!("binding the Tailscale test server's {what} listener to {addr}"),
        source,
    })
}

fn spawn_listener(listener: TcpListener, router: axum::Router, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "Tailscale test server listener failed");
        }
    })
}

impl TestServer {
    /// Starts the server: the API on `127.0.0.1` with a free port, and the control plane
    /// on `config.control_bind` when set.
    ///
    /// # Panics
    /// Panics when a listener cannot bind; [`TestServer::try_start`] returns the error.
    pub async fn start(config: TestServerConfig) -> TestServer {
        match Self::try_start(config).await {
            Ok(server) => server,
            Err(e) => panic!("starting the Tailscale test server failed: {e}"),
        }
    }

    /// Starts the server like [`TestServer::start`], returning bind errors.
    pub async fn try_start(config: TestServerConfig) -> Result<TestServer> {
        let control_bind = config.control_bind;
        let shared = Arc::new(Shared::new(config));
        let (stop, stopped) = watch::channel(false);

        let api = bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0), "API").await?;
        let api_addr = api.local_addr().map_err(|source| Error::Io {
            context: "reading the API listener address".to_owned(),
            source,
        })?;
        let mut tasks = vec![spawn_listener(api, crate::api::router(shared.clone()), stopped.clone())];

        let mut control_addr = None;
        if let Some(addr) = control_bind {
            let control = bind(addr, "control").await?;
            let local = control.local_addr().map_err(|source| Error::Io {
                context: "reading the control listener address".to_owned(),
                source,
            })?;
            control_addr = Some(local);
            tasks.push(spawn_listener(control, crate::control::router(shared.clone()), stopped));
        }
        tracing::info!(%api_addr, ?control_addr, "Tailscale test server started");

        Ok(TestServer {
            shared,
            api_addr,
            control_addr,
            stop,
            tasks,
        })
    }

    /// Stops both listeners and waits for them to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        tracing::info!(api_addr = %self.api_addr, "Tailscale test server stopped");
    }

    // ---- addresses and credentials ----

    /// Returns the API base URL, `http://127.0.0.1:PORT` (paths start with `/api/v2/`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Returns the control-plane URL for `tailscale up --login-server=`, if that listener runs.
    pub fn control_url(&self) -> Option<String> {
        self.control_addr.map(|addr| format!("http://{addr}"))
    }

    /// Returns the configuration the server started with.
    pub fn config(&self) -> &TestServerConfig {
        &self.shared.config
    }

    /// Returns the first configured API access token (`tskey-api-...`).
    ///
    /// # Panics
    /// Panics when the configuration contains no API access token.
    pub fn api_token(&self) -> &str {
        match self.shared.config.api_tokens.first() {
            Some(token) => &token.token,
            None => panic!("the test server was configured without an API access token"),
        }
    }

    /// Returns the first configured OAuth client.
    ///
    /// # Panics
    /// Panics when the configuration contains no OAuth client.
    pub fn oauth_client(&self) -> &OAuthClient {
        match self.shared.config.oauth_clients.first() {
            Some(client) => client,
            None => panic!("the test server was configured without an OAuth client"),
        }
    }

    /// Returns the configured tailnet name (also reachable as `-`).
    pub fn tailnet(&self) -> &str {
        &self.shared.config.tailnet
    }

    /// Returns the MagicDNS suffix of device names, for example `tail1234.ts.net`.
    pub fn magic_dns_suffix(&self) -> &str {
        &self.shared.config.magic_dns_suffix
    }

    // ---- state inspection ----

    /// Returns all auth keys, including used, revoked and expired ones.
    pub fn keys(&self) -> Vec<AuthKey> {
        self.shared.lock().keys.clone()
    }

    /// Returns the auth key with `id`.
    pub fn key(&self, id: &str) -> Option<AuthKey> {
        self.shared.lock().keys.iter().find(|k| k.id == id).cloned()
    }

    /// Returns the keys that could still register a device: not used up, revoked or expired.
    pub fn valid_keys(&self) -> Vec<AuthKey> {
        self.keys().into_iter().filter(|k| !k.is_invalid()).collect()
    }

    /// Returns the devices visible through the API.
    pub fn devices(&self) -> Vec<Device> {
        self.shared.lock().devices.iter().filter(|d| !d.hidden).cloned().collect()
    }

    /// Returns every device, including those hidden by [`RegistrationMode::Invisible`].
    pub fn all_devices(&self) -> Vec<Device> {
        self.shared.lock().devices.clone()
    }

    /// Returns the device with this legacy id or node id, hidden ones included.
    pub fn device(&self, id: &str) -> Option<Device> {
        self.shared
            .lock()
            .devices
            .iter()
            .find(|d| d.id == id || d.node_id == id)
            .cloned()
    }

    /// Returns the policy file's HuJSON text.
    pub fn policy_text(&self) -> String {
        self.shared.lock().policy.text.clone()
    }

    /// Returns the policy file's current ETag, without quotes.
    pub fn policy_etag(&self) -> String {
        self.shared.lock().policy.etag()
    }

    /// Returns whether the policy is still the never-written default (matches `"ts-default"`).
    pub fn policy_is_default(&self) -> bool {
        self.shared.lock().policy.untouched_default
    }

    /// Returns how many policy writes through the API succeeded.
    pub fn policy_writes(&self) -> u32 {
        self.shared.lock().policy_writes
    }

    /// Returns every API request so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Returns the API requests that matched `route`.
    pub fn requests_to(&self, route: Route) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.route == route).collect()
    }

    /// Returns how many access tokens the OAuth token endpoint issued.
    pub fn oauth_tokens_issued(&self) -> u32 {
        self.shared.lock().tokens_issued
    }

    /// Returns the client mistakes recorded so far (missing auth, wrong content type, bad JSON, ...).
    pub fn violations(&self) -> Vec<Violation> {
        self.shared.lock().violations.clone()
    }

    /// Returns and clears the recorded violations, for tests that send bad requests on purpose.
    pub fn take_violations(&self) -> Vec<Violation> {
        std::mem::take(&mut self.shared.lock().violations)
    }

    /// Panics, listing them, if any violation was recorded.
    pub fn assert_no_violations(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "the client sent requests a correct client never sends:\n{}",
            violations
                .iter()
                .map(|v| format!("  {:?}: {}", v.route, v.message))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    /// Returns every request the control plane received, with its fields as sent.
    pub fn control_requests(&self) -> Vec<ControlRequest> {
        self.shared.lock().control_requests.clone()
    }

    /// Returns every value of the `key` field the control plane received, in order.
    pub fn received_auth_keys(&self) -> Vec<String> {
        self.control_requests()
            .iter()
            .flat_map(|r| r.fields.iter().filter(|(k, _)| k == "key").map(|(_, v)| v.clone()))
            .collect()
    }

    /// Returns the HTTPS serve configurations set with `tailscale serve`.
    pub fn serve_configs(&self) -> Vec<ServeConfig> {
        self.shared.lock().serve.clone()
    }

    // ---- direct changes and fault injection ----

    /// Makes the next `count` requests to `route` fail with `status`, sending
    /// `Retry-After: <seconds>` when given.
    pub fn fail_next(&self, route: Route, count: u32, status: u16, retry_after: Option<u64>) {
        self.shared.lock().failures.push(InjectedFailure {
            route: Some(route),
            remaining: count,
            status,
            retry_after,
        });
    }

    /// Makes the next `count` API requests, to any route, fail with `status`.
    pub fn fail_next_any(&self, count: u32, status: u16, retry_after: Option<u64>) {
        self.shared.lock().failures.push(InjectedFailure {
            route: None,
            remaining: count,
            status,
            retry_after,
        });
    }

    /// Limits the API to `max_requests` per `window`; requests over it get 429 with
    /// `Retry-After` set to the seconds left in the window.
    pub fn set_rate_limit(&self, max_requests: u32, window: Duration) {
        self.shared.lock().rate_limit = Some(RateLimit {
            max_requests,
            window,
            window_start: Instant::now(),
            count: 0,
        });
    }

    /// Removes the rate limit.
    pub fn clear_rate_limit(&self) {
        self.shared.lock().rate_limit = None;
    }

    /// Right after the next `GET` of the policy file, changes the policy as another admin
    /// would: inserts [`CONCURRENT_EDIT_COMMENT`] and [`CONCURRENT_EDIT_RULE`] at the
    /// start of `acls`, so a write with the ETag just read gets 412.
    pub fn edit_policy_after_next_get(&self) {
        self.edit_policy_after_next_get_with(CONCURRENT_EDIT_COMMENT, CONCURRENT_EDIT_RULE);
    }

    /// Like [`TestServer::edit_policy_after_next_get`] with a given comment line and rule.
    pub fn edit_policy_after_next_get_with(&self, comment: &str, rule: &str) {
        self.shared.lock().edit_after_get = Some(PendingEdit {
            comment: comment.to_owned(),
            rule: rule.to_owned(),
        });
    }

    /// Replaces the policy file directly, as an admin using the console would.
    pub fn set_policy_text(&self, hujson: impl Into<String>) {
        self.shared.lock().policy = PolicyFile {
            text: hujson.into(),
            untouched_default: false,
        };
    }

    /// Sets how the control plane treats valid registrations.
    pub fn set_registration_mode(&self, mode: RegistrationMode) {
        self.shared.lock().registration = mode;
    }

    /// Turns HTTPS certificates for the tailnet on or off (`tailscale serve` fails when off).
    pub fn set_https_enabled(&self, enabled: bool) {
        self.shared.lock().https_enabled = enabled;
    }

    /// Adds a device directly, for example a stale offline one for a reaper test.
    pub fn add_device(&self, spec: DeviceSpec) -> Device {
        let config = &self.shared.config;
        self.shared
            .lock()
            .add_device(spec, &config.magic_dns_suffix, &config.admin_user)
    }

    /// Marks a device online or offline; returns whether it exists.
    pub fn set_device_online(&self, id: &str, online: bool) -> bool {
        let mut state = self.shared.lock();
        let Some(device) = state.devices.iter_mut().find(|d| d.id == id || d.node_id == id) else {
            return false;
        };
        device.connected_to_control = online;
        if online {
            device.last_seen = OffsetDateTime::now_utc();
        }
        true
    }

    /// Approves a device, as an admin would for a key that was not pre-authorized;
    /// returns whether it exists.
    pub fn authorize_device(&self, id: &str) -> bool {
        let mut state = self.shared.lock();
        let Some(device) = state.devices.iter_mut().find(|d| d.id == id || d.node_id == id) else {
            return false;
        };
        device.authorized = true;
        true
    }

    /// Creates an auth key directly, as an admin would in the console.
    pub fn mint_key(&self, capabilities: KeyCreateCapabilities, lifetime: Duration) -> AuthKey {
        self.mint_key_with_description(capabilities, lifetime, "minted by the test")
    }

    /// Creates an auth key directly with `description`, for example one in the form
    /// Ken gives the keys it mints, as a leftover of an interrupted launch.
    pub fn mint_key_with_description(
        &self,
        capabilities: KeyCreateCapabilities,
        lifetime: Duration,
        description: &str,
    ) -> AuthKey {
        let id = crate::ids::stable_id('k');
        let created = OffsetDateTime::now_utc();
        let key = AuthKey {
            key: format!("tskey-auth-{id}-{}", crate::ids::random_alnum(32)),
            id,
            description: description.to_owned(),
            capabilities,
            created,
            expires: created + lifetime,
            revoked: None,
            uses: 0,
            minted_by_oauth_client: None,
        };
        self.shared.lock().keys.push(key.clone());
        key
    }

    /// Makes the key expire now; returns whether it exists.
    pub fn expire_key(&self, id: &str) -> bool {
        let mut state = self.shared.lock();
        let Some(key) = state.keys.iter_mut().find(|k| k.id == id) else {
            return false;
        };
        key.expires = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        true
    }

    /// Revokes the key; returns whether it exists.
    pub fn revoke_key(&self, id: &str) -> bool {
        let mut state = self.shared.lock();
        let Some(key) = state.keys.iter_mut().find(|k| k.id == id) else {
            return false;
        };
        key.revoked.get_or_insert(OffsetDateTime::now_utc());
        true
    }

    /// Makes every OAuth access token issued so far expire now.
    pub fn expire_oauth_tokens(&self) {
        let now = Instant::now();
        for token in self.shared.lock().tokens.values_mut() {
            token.expires_at = now;
        }
    }
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("api_addr", &self.api_addr)
            .field("control_addr", &self.control_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}
