//! [`TailscaleNetwork`]: the [`NetworkProvider`] that joins sandboxes to a tailnet.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use ken_core::network::{Attachment, NetworkProvider, ReapReport};
use ken_core::sandbox::{Endpoint, PortSpec, Sandbox, SandboxInfo};
use ken_core::{AccessPolicy, Error, Result};
use url::Url;

use crate::client::{DeviceFilter, TailscaleClient};
use crate::config::{env, TailscaleConfig};
use crate::policy::{self, ApplyOutcome, PolicySection, PolicyStatus, RenderOptions};

mod attach;
pub mod commands;
mod detach;
mod names;
mod reap;
pub mod state;

pub use state::AttachState;

/// A network provider that puts each sandbox on the team's tailnet.
///
/// # Contract
/// - API credentials stay on the host. The only secret that enters a sandbox is a
///   single-use, ephemeral, pre-authorized auth key with a short expiry, written as
///   a 0600 file that `tailscale up --auth-key=file:...` reads and that is deleted
///   right after, whatever `up` returned.
/// - [`attach`](NetworkProvider::attach) leaves nothing behind when it fails: it
///   detaches what it made before returning the error.
/// - [`detach`](NetworkProvider::detach) works from a fresh process: it reads the
///   record at `/run/ken/tailscale/state.json` in the sandbox, or finds the
///   sandbox's devices and keys through the API when the sandbox is gone.
/// - [`ensure_policy`](NetworkProvider::ensure_policy) only reads the policy file,
///   unless `apply_policy` is set.
///
/// # Example
/// ```no_run
/// # async fn example() -> ken_core::Result<()> {
/// use ken_core::{AccessPolicy, NetworkProvider};
/// use ken_network_tailscale::TailscaleNetwork;
///
/// // TAILSCALE_OAUTH_CLIENT_ID and TAILSCALE_OAUTH_CLIENT_SECRET are exported.
/// let network = TailscaleNetwork::from_env()?;
/// network.ensure_policy(&AccessPolicy::standard()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TailscaleNetwork {
    client: TailscaleClient,
    /// Records of the sandboxes this process attached, by sandbox id, so detach and
    /// expose need no exec to read the state file.
    attached: Mutex<HashMap<String, AttachState>>,
    /// The owner whose devices [`reap`](NetworkProvider::reap) may delete while
    /// they are online; see [`TailscaleNetwork::with_owner`].
    owner: String,
}

impl TailscaleNetwork {
    /// Creates the provider for `config`.
    pub fn new(config: TailscaleConfig) -> Result<Self> {
        Ok(Self::with_client(TailscaleClient::new(config)?))
    }

    /// Creates the provider around an existing client.
    pub fn with_client(client: TailscaleClient) -> Self {
        TailscaleNetwork {
            client,
            attached: Mutex::new(HashMap::new()),
            owner: ken_core::orchestrator::default_owner(),
        }
    }

    /// Sets the owner this process acts for, as in the sandboxes' `ken.owner` label
    /// (default: [`default_owner`](ken_core::orchestrator::default_owner)).
    ///
    /// Each device's host name carries a scope, a short hash of the launching
    /// machine and the owner. `reap` deletes an online device whose sandbox is gone
    /// only when the scope is this machine's and this owner's, so that on a shared
    /// tailnet one user's `ken gc` leaves teammates' sandboxes alone.
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Returns the owner set with [`with_owner`](Self::with_owner).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Returns the scope written into the host names of this machine's and this
    /// owner's devices.
    fn own_scope(&self) -> String {
        names::scope(&names::machine_hostname(), &self.owner)
    }

    /// Returns the scope of `sandbox`: the machine in its `ken.launcher` label (else
    /// this one) and the owner in its `ken.owner` label (else this network's owner).
    fn sandbox_scope(&self, sandbox: &Sandbox) -> String {
        let labels = &sandbox.info().labels;
        let host = labels
            .get(ken_core::labels::LAUNCHER)
            .and_then(|launcher| launcher.rsplitn(3, '/').nth(2))
            .map(str::to_owned)
            .unwrap_or_else(names::machine_hostname);
        let owner = labels.get(ken_core::labels::OWNER).unwrap_or(&self.owner);
        names::scope(&host, owner)
    }

    /// Creates the provider from the process environment (see [`crate::config::env`]).
    pub fn from_env() -> Result<Self> {
        Self::new(TailscaleConfig::from_env()?)
    }

    /// Creates the provider from the manifest's `[network]` settings and the
    /// credentials in the process environment.
    pub fn from_settings(settings: &toml::Table) -> Result<Self> {
        Self::new(TailscaleConfig::from_settings(settings, |name| std::env::var(name).ok())?)
    }

    /// Returns the API client.
    pub fn client(&self) -> &TailscaleClient {
        &self.client
    }

    /// Returns the configuration.
    pub fn config(&self) -> &TailscaleConfig {
        self.client.config()
    }

    /// Renders Ken's section of the policy file for `policy`.
    ///
    /// The tests need a member's login. It comes from `KEN_TAILSCALE_POLICY_TEST_USER`
    /// (or `policy_test_user`), else from the owner of a user-owned device in the
    /// tailnet, and fails naming the variable when neither exists.
    pub async fn policy_section(&self, policy: &AccessPolicy) -> Result<PolicySection> {
        let test_user = match &self.config().policy_test_user {
            Some(user) => user.clone(),
            None => self.find_member().await?,
        };
        self.render(policy, Some(test_user))
    }

    /// Merges Ken's section for `policy` into the tailnet's policy file
    /// (`ken policy apply`); see [`policy::apply`].
    pub async fn apply_policy(&self, policy: &AccessPolicy) -> Result<ApplyOutcome> {
        let section = self.policy_section(policy).await?;
        policy::apply(&self.client, &section).await
    }

    /// Reads the tailnet's policy file and reports whether Ken's section is in
    /// force and which rules conflict with it.
    pub async fn check_policy(&self, policy: &AccessPolicy) -> Result<PolicyStatus> {
        let section = self.render(policy, self.config().policy_test_user.clone())?;
        policy::check(&self.client, &section).await
    }

    /// Checks, before any key is minted, that the OAuth client may mint keys with
    /// the sandbox tag. This runs only when the client's tags are configured
    /// (`KEN_TAILSCALE_OAUTH_TAGS`). The tag must be one of them or be owned by one
    /// of them in `tagOwners`. When the tag has no owners yet, the check uses those
    /// that `apply_policy` would write.
    fn check_client_tags(&self, status: &PolicyStatus) -> Result<()> {
        let config = self.config();
        let client_tags = &config.oauth_tags;
        if !self.client.uses_oauth() || client_tags.is_empty() {
            return Ok(());
        }
        let owners = if status.tag_owners.is_empty() { &config.tag_owners } else { &status.tag_owners };
        let tag = &config.tag;
        if client_tags.contains(tag) || owners.iter().any(|owner| client_tags.contains(owner)) {
            return Ok(());
        }
        tracing::error!(provider = "tailscale", phase = "network", tag = %tag, client_tags = ?client_tags, owners = ?owners, "the OAuth client may not mint keys with the sandbox tag");
        Err(Error::invalid(
            "KEN_TAILSCALE_TAG or network.tag",
            tag.clone(),
            format!(
                "the OAuth client may mint keys only with its own tags [{}] (from {}) or tags they own in tagOwners, \
                 and tagOwners gives {tag} the owners [{}]; give the OAuth client the tag {tag} in the admin console, \
                 set KEN_TAILSCALE_TAG to one of the client's tags, or add one of them to tagOwners[\"{tag}\"]",
                client_tags.join(" "),
                env::OAUTH_TAGS,
                owners.join(" "),
            ),
        ))
    }

    fn render(&self, policy: &AccessPolicy, test_user: Option<String>) -> Result<PolicySection> {
        let config = self.config();
        policy::render(
            policy,
            &RenderOptions {
                tag: config.tag.clone(),
                tag_owners: config.tag_owners.clone(),
                test_user,
            },
        )
    }

    async fn find_member(&self) -> Result<String> {
        let devices = self.client.list_devices(&DeviceFilter::default()).await?;
        devices
            .into_iter()
            .find(|device| device.tags.is_empty() && !device.user.is_empty())
            .map(|device| device.user)
            .ok_or_else(|| {
                Error::invalid(
                    env::POLICY_TEST_USER,
                    "(not set)",
                    "the policy tests need a member's login and the tailnet has no user-owned device to take one from; \
                     export KEN_TAILSCALE_POLICY_TEST_USER=alice@example.com or set policy_test_user in [network]",
                )
            })
    }

    fn remembered(&self, sandbox: &Sandbox) -> Option<AttachState> {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sandbox.info().id)
            .cloned()
    }

    fn remember(&self, sandbox: &Sandbox, state: &AttachState) {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sandbox.info().id.clone(), state.clone());
    }

    fn forget(&self, sandbox: &Sandbox) -> Option<AttachState> {
        self.attached.lock().unwrap_or_else(|e| e.into_inner()).remove(&sandbox.info().id)
    }

    /// Returns the sandbox's record: this process's copy, else the state file.
    async fn state_of(&self, sandbox: &Sandbox) -> Result<Option<AttachState>> {
        if let Some(state) = self.remembered(sandbox) {
            return Ok(Some(state));
        }
        AttachState::load(sandbox).await
    }
}

#[async_trait]
impl NetworkProvider for TailscaleNetwork {
    fn name(&self) -> &str {
        "tailscale"
    }

    fn image_lines(&self) -> Vec<String> {
        if self.config().install {
            crate::image_lines()
        } else {
            Vec::new()
        }
    }

    async fn ensure_policy(&self, policy: &AccessPolicy) -> Result<()> {
        let status = self.check_policy(policy).await?;
        self.check_client_tags(&status)?;
        if status.is_in_force() {
            tracing::debug!(provider = "tailscale", phase = "network", tag = %self.config().tag, "the tailnet policy is in force");
            return Ok(());
        }
        if self.config().apply_policy && status.conflicts.is_empty() {
            tracing::info!(provider = "tailscale", phase = "network", "Ken's policy section is missing; applying it because apply_policy is set");
            self.apply_policy(policy).await?;
            return Ok(());
        }
        policy::status_error(&status, &self.config().tag)
    }

    async fn attach(&self, sandbox: &Sandbox) -> Result<Attachment> {
        attach::attach(self, sandbox).await
    }

    async fn expose(&self, sandbox: &Sandbox, port: &PortSpec) -> Result<Endpoint> {
        let state = self.state_of(sandbox).await?;
        let Some(dns_name) = state.and_then(|state| state.dns_name) else {
            return Err(Error::invalid(
                "sandbox",
                sandbox.name().to_string(),
                "it is not attached to the tailnet; attach it before exposing ports",
            ));
        };
        let scheme = if self.config().https {
            attach::serve_https(sandbox, port.port).await?;
            "https"
        } else {
            "http"
        };
        let text = format!("{scheme}://{dns_name}:{}/", port.port);
        let url = Url::parse(&text).map_err(|e| Error::invalid("tailnet endpoint", text.clone(), format!("not a valid URL: {e}")))?;
        tracing::info!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", port = port.port, %url, "exposed a port on the tailnet");
        Ok(Endpoint {
            name: port.name.clone(),
            port: port.port,
            url,
            credentials: None,
        })
    }

    async fn detach(&self, sandbox: &Sandbox) -> Result<()> {
        detach::detach(self, sandbox).await
    }

    async fn reap(&self, live: &[SandboxInfo], dry_run: bool) -> Result<ReapReport> {
        reap::reap(self, live, dry_run).await
    }
}
