//! Choosing the network each sandbox uses.
//!
//! A launch joins the network its manifest names. Every later command (`ken rm`,
//! `ken urls`, `ken gc`) finds that network again from the sandbox's `ken.network`
//! label, so removing a sandbox also removes its tailnet device even when the
//! command is run without the manifest.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use ken_core::labels;
use ken_core::network::{Attachment, NetworkProvider, ReapReport};
use ken_core::policy::AccessPolicy;
use ken_core::sandbox::{Endpoint, PortSpec, Sandbox, SandboxInfo};
use ken_network_tailscale::TailscaleNetwork;

/// A network that could not be set up, kept so that the error is reported only when
/// a sandbox actually needs that network.
#[derive(Debug, Clone)]
pub(crate) struct Unavailable {
    /// The network's name, for example `tailscale`.
    pub(crate) name: String,
    /// Reason it could not be set up, including what to do about it.
    pub(crate) reason: String,
}

/// Routes each sandbox to the network named by its `ken.network` label, and new
/// sandboxes to the launch network.
pub(crate) struct NetworkRouter {
    launch: Arc<dyn NetworkProvider>,
    others: Vec<Arc<dyn NetworkProvider>>,
    unavailable: Vec<Unavailable>,
}

impl NetworkRouter {
    /// Creates a router whose new sandboxes join `launch`. `others` serve existing
    /// sandboxes labelled with their names; `unavailable` lists the networks whose
    /// setup failed.
    pub(crate) fn new(
        launch: Arc<dyn NetworkProvider>,
        others: Vec<Arc<dyn NetworkProvider>>,
        unavailable: Vec<Unavailable>,
    ) -> Self {
        NetworkRouter {
            launch,
            others,
            unavailable,
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<dyn NetworkProvider>> {
        std::iter::once(&self.launch).chain(self.others.iter())
    }

    /// Returns the network of an existing sandbox; sandboxes made before the label
    /// existed are on the local network.
    fn of(&self, info: &SandboxInfo) -> ken_core::Result<&Arc<dyn NetworkProvider>> {
        let name = info
            .labels
            .get(labels::NETWORK)
            .unwrap_or("local");
        if let Some(network) = self.all().find(|network| network.name() == name) {
            return Ok(network);
        }
        let reason = match self.unavailable.iter().find(|u| u.name == name) {
            Some(unavailable) => unavailable.reason.clone(),
            None => format!("this build of ken does not know network {name:?}"),
        };
        Err(ken_core::Error::invalid(
            "network",
            name,
            format!("sandbox {} joined this network, but {reason}", info.name),
        ))
    }
}

/// Logs a tailnet sandbox's node out inside the sandbox when the Tailscale network
/// is not configured (no API credentials). It also warns on stderr that the device
/// and auth key stay in the tailnet until `ken gc` runs with credentials. The
/// sandbox itself is still removed, so `ken rm` exits 0.
async fn detach_without_api(sandbox: &Sandbox, unavailable: &Unavailable) {
    let logged_out = TailscaleNetwork::logout_only(sandbox).await;
    let logout = if logged_out {
        "the node was logged out inside the sandbox"
    } else {
        "`tailscale logout` inside the sandbox failed too"
    };
    tracing::warn!(sandbox.name = %sandbox.name(), network = %unavailable.name, phase = "network", logged_out, reason = %unavailable.reason, "tailnet device and auth key not removed: the Tailscale network is not configured");
    crate::output::note(&format!(
        "warning: sandbox {name}: its tailnet device and auth key were not removed through the Tailscale API \
         ({logout}), because the Tailscale network is not configured: {reason}. \
         Run `ken gc` with the Tailscale credentials exported to remove them.",
        name = sandbox.name(),
        reason = unavailable.reason,
    ));
}

impl fmt::Debug for NetworkRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkRouter")
            .field("launch", &self.launch.name())
            .field("others", &self.others.iter().map(|n| n.name()).collect::<Vec<_>>())
            .field("unavailable", &self.unavailable.iter().map(|u| &u.name).collect::<Vec<_>>())
            .finish()
    }
}

#[async_trait]
impl NetworkProvider for NetworkRouter {
    fn name(&self) -> &str {
        self.launch.name()
    }

    fn image_lines(&self) -> Vec<String> {
        self.launch.image_lines()
    }

    async fn ensure_policy(&self, policy: &AccessPolicy) -> ken_core::Result<()> {
        self.launch.ensure_policy(policy).await
    }

    async fn attach(&self, sandbox: &Sandbox) -> ken_core::Result<Attachment> {
        self.of(sandbox.info())?.attach(sandbox).await
    }

    async fn expose(&self, sandbox: &Sandbox, port: &PortSpec) -> ken_core::Result<Endpoint> {
        self.of(sandbox.info())?.expose(sandbox, port).await
    }

    async fn detach(&self, sandbox: &Sandbox) -> ken_core::Result<()> {
        let network = sandbox.info().labels.get(labels::NETWORK).unwrap_or("local");
        if network == "tailscale" && !self.all().any(|n| n.name() == network) {
            if let Some(unavailable) = self.unavailable.iter().find(|u| u.name == network) {
                detach_without_api(sandbox, unavailable).await;
                return Ok(());
            }
        }
        self.of(sandbox.info())?.detach(sandbox).await
    }

    async fn reap(&self, live: &[SandboxInfo], dry_run: bool) -> ken_core::Result<ReapReport> {
        let mut report = ReapReport::default();
        for network in self.all() {
            let part = network.reap(live, dry_run).await?;
            report.removed.extend(part.removed);
        }
        for unavailable in &self.unavailable {
            tracing::info!(network = %unavailable.name, reason = %unavailable.reason, "network not reaped: it is not configured");
        }
        Ok(report)
    }
}
