//! Ken: disposable sandboxes for coding agents.
//!
//! This facade re-exports [`ken_core`] (traits, manifest, orchestrator) and, behind
//! features, the backends:
//!
//! | feature | module | backend |
//! |---|---|---|
//! | `docker` (default) | [`docker`] | local Docker engine |
//! | `modal` | `modal` | sandboxes on Modal's cloud |
//! | `tailscale` | `tailscale` | the team's tailnet as the sandboxes' network |
//! | `testkit` | `core::testkit` | the provider conformance kit |
//!
//! ```no_run
//! # #[cfg(feature = "docker")]
//! # async fn run() -> ken::Result<()> {
//! use std::sync::Arc;
//! use ken::{Manifest, Orchestrator};
//! use ken::orchestrator::LaunchOptions;
//!
//! let provider = Arc::new(ken::docker::DockerProvider::connect().await?);
//! let orchestrator = Orchestrator::builder(provider).build();
//! let manifest = Manifest::load("examples/demo-app/ken.toml")?;
//! let launched = orchestrator.launch(&manifest, LaunchOptions::default()).await?;
//! for endpoint in &launched.endpoints {
//!     println!("{} {}", endpoint.name, endpoint.url);
//! }
//! # Ok(())
//! # }
//! ```

pub use ken_core as core;
pub use ken_core::*;

/// Local sandboxes on a Docker engine.
#[cfg(feature = "docker")]
pub mod docker {
    pub use ken_provider_docker::*;
}

/// Sandboxes on Modal, over its gRPC protocol.
#[cfg(feature = "modal")]
pub mod modal {
    pub use ken_provider_modal::*;
}

/// A Tailscale tailnet as the sandboxes' network.
#[cfg(feature = "tailscale")]
pub mod tailscale {
    pub use ken_network_tailscale::*;
}
