//! Connecting to the sandbox provider and building the orchestrator every command uses.

use std::sync::Arc;

use clap::ValueEnum;
use ken_core::orchestrator::Orchestrator;
use ken_core::{EventSink, SandboxProvider};
use ken_provider_docker::DockerProvider;

use crate::GlobalArgs;

/// The sandbox providers this build of `ken` contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProviderKind {
    /// Containers on the local Docker engine (DOCKER_HOST, or its default socket).
    Docker,
}

/// Connects to the provider chosen by `--provider`.
pub(crate) async fn connect(kind: ProviderKind) -> anyhow::Result<Arc<dyn SandboxProvider>> {
    match kind {
        ProviderKind::Docker => {
            // The provider's error names the engine's address and the fix (start the engine
            // or set DOCKER_HOST).
            let provider = DockerProvider::connect().await?;
            Ok(Arc::new(provider))
        }
    }
}

/// Builds an orchestrator for the global options, sending launch progress to `events`.
pub(crate) async fn orchestrator(
    global: &GlobalArgs,
    events: EventSink,
) -> anyhow::Result<Orchestrator> {
    let provider = connect(global.provider).await?;
    let mut builder = Orchestrator::builder(provider).events(events);
    if let Some(owner) = &global.owner {
        builder = builder.owner(owner.clone());
    }
    let orchestrator = builder.build();
    tracing::debug!(?orchestrator, "orchestrator ready");
    Ok(orchestrator)
}
