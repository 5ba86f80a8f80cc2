//! Connecting to the sandbox provider, choosing the agent harness and building the
//! orchestrator every command uses.

use std::sync::Arc;

use clap::ValueEnum;
use ken_core::harness::AgentHarness;
use ken_core::manifest::ExtensionConfig;
use ken_core::orchestrator::Orchestrator;
use ken_core::network::{LocalNetwork, NetworkProvider};
use ken_core::{EventSink, SandboxProvider};
use ken_network_tailscale::TailscaleNetwork;
use ken_harness_opencode::{CommandHarness, OpenCodeHarness};
use ken_provider_docker::DockerProvider;
use ken_provider_modal::ModalProvider;

use crate::network::{NetworkRouter, Unavailable};
use crate::GlobalArgs;

/// The sandbox providers this build of `ken` contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProviderKind {
    /// Containers on the local Docker engine (DOCKER_HOST, or its default socket).
    Docker,
    /// Sandboxes on Modal (MODAL_TOKEN_ID and MODAL_TOKEN_SECRET, or ~/.modal.toml).
    Modal,
}

/// The `kind` values of `[harness]` this build of `ken` contains.
pub(crate) const HARNESS_KINDS: [&str; 3] = ["opencode", "claude-code", "codex"];

/// Connects to the provider chosen by `--provider`.
pub(crate) async fn connect(kind: ProviderKind) -> anyhow::Result<Arc<dyn SandboxProvider>> {
    match kind {
        ProviderKind::Docker => {
            // The provider's error names the engine's address and the fix (start the engine
            // or set DOCKER_HOST).
            let provider = DockerProvider::connect().await?;
            Ok(Arc::new(provider))
        }
        ProviderKind::Modal => {
            // The configuration error names the missing setting and where it was
            // looked for.
            let provider = ModalProvider::from_env().await?;
            Ok(Arc::new(provider))
        }
    }
}

/// An agent harness chosen by a manifest's `[harness]` table. The OpenCode harness is
/// kept as its own type too, because `ken attach` reads its raw event feed.
#[derive(Debug, Clone)]
pub(crate) enum Harness {
    /// `kind = "opencode"`.
    OpenCode(Arc<OpenCodeHarness>),
    /// `kind = "claude-code"` or `kind = "codex"`.
    Command(Arc<CommandHarness>),
}

impl Harness {
    /// Builds the harness of a `[harness]` table. An unknown kind or an invalid
    /// setting is invalid input (exit status 2).
    pub(crate) fn from_config(config: &ExtensionConfig) -> anyhow::Result<Harness> {
        let harness = match config.kind.as_str() {
            "opencode" => {
                Harness::OpenCode(Arc::new(OpenCodeHarness::from_settings(&config.settings)?))
            }
            "claude-code" => Harness::Command(Arc::new(CommandHarness::claude_code())),
            "codex" => Harness::Command(Arc::new(CommandHarness::codex())),
            other => {
                return Err(ken_core::Error::invalid(
                    "harness.kind",
                    other,
                    format!(
                        "unknown harness kind; use one of {} in the manifest's [harness] table",
                        HARNESS_KINDS.map(|kind| format!("\"{kind}\"")).join(", ")
                    ),
                )
                .into())
            }
        };
        Ok(harness)
    }

    /// Returns the harness as the trait object the orchestrator takes.
    pub(crate) fn as_dyn(&self) -> Arc<dyn AgentHarness> {
        match self {
            Harness::OpenCode(harness) => harness.clone(),
            Harness::Command(harness) => harness.clone(),
        }
    }
}

/// Builds an orchestrator for the global options, sending launch progress to `events`.
/// With a `harness`, every launch also starts that agent in the new sandbox; with a
/// `launch_network` (a manifest's `[network]` table), new sandboxes join that network.
pub(crate) async fn orchestrator_with(
    global: &GlobalArgs,
    events: EventSink,
    harness: Option<&Harness>,
    launch_network: Option<&ExtensionConfig>,
) -> anyhow::Result<Orchestrator> {
    let provider = connect(global.provider).await?;
    let network = networks(&provider, launch_network, global.owner.as_deref())?;
    let mut builder = Orchestrator::builder(provider)
        .events(events)
        .network(Arc::new(network));
    if let Some(owner) = &global.owner {
        builder = builder.owner(owner.clone());
    }
    if let Some(harness) = harness {
        builder = builder.harness(harness.as_dyn());
    }
    let orchestrator = builder.build();
    tracing::debug!(?orchestrator, "orchestrator ready");
    Ok(orchestrator)
}

/// Builds an orchestrator without an agent harness, for the commands that launch
/// nothing.
pub(crate) async fn orchestrator(
    global: &GlobalArgs,
    events: EventSink,
) -> anyhow::Result<Orchestrator> {
    orchestrator_with(global, events, None, None).await
}

/// The `kind` values of `[network]` this build of `ken` contains.
pub(crate) const NETWORK_KINDS: [&str; 2] = ["local", "tailscale"];

/// Builds the networks: the one new sandboxes join (the manifest's, else local) and
/// the others, which serve existing sandboxes by their `ken.network` label. Tailscale
/// is set up from the environment when a sandbox may need it. When its settings are
/// missing, only commands that touch a tailnet sandbox fail, naming the variable.
/// `owner` (`--owner`) sets whose devices the tailnet's garbage collection treats as
/// ours.
fn networks(
    provider: &Arc<dyn SandboxProvider>,
    launch: Option<&ExtensionConfig>,
    owner: Option<&str>,
) -> anyhow::Result<NetworkRouter> {
    let with_owner = |tailscale: TailscaleNetwork| match owner {
        Some(owner) => tailscale.with_owner(owner),
        None => tailscale,
    };
    let local: Arc<dyn NetworkProvider> = Arc::new(
        LocalNetwork::new().with_provider_isolation(provider.capabilities().isolation),
    );
    let kind = launch.map(|config| config.kind.as_str()).unwrap_or("local");
    match kind {
        "local" => {
            let (others, unavailable) = match TailscaleNetwork::from_env() {
                Ok(tailscale) => (vec![Arc::new(with_owner(tailscale)) as Arc<dyn NetworkProvider>], Vec::new()),
                Err(error) => (
                    Vec::new(),
                    vec![Unavailable {
                        name: "tailscale".to_owned(),
                        reason: error.to_string(),
                    }],
                ),
            };
            Ok(NetworkRouter::new(local, others, unavailable))
        }
        "tailscale" => {
            let settings = launch.map(|config| config.settings.clone()).unwrap_or_default();
            let tailscale = with_owner(TailscaleNetwork::from_settings(&settings)?);
            Ok(NetworkRouter::new(Arc::new(tailscale), vec![local], Vec::new()))
        }
        other => Err(ken_core::Error::invalid(
            "network.kind",
            other,
            format!(
                "unknown network kind; use one of {} in the manifest's [network] table",
                NETWORK_KINDS.map(|kind| format!("\"{kind}\"")).join(", ")
            ),
        )
        .into()),
    }
}
