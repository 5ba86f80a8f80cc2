//! Ken's core: the traits every sandbox, network, harness and seeder backend
//! implements, the `ken.toml` manifest, the startup-plan executor and the
//! orchestrator that launches, lists and removes sandboxes.
//!
//! `ken-core` contains no backend code. Backends live in their own crates
//! (`ken-provider-docker`, ...) and the `ken` facade re-exports them behind features.

pub mod archive;
pub mod error;
pub mod exec;
pub mod harness;
pub mod image;
pub mod labels;
pub mod manifest;
pub mod network;
pub mod orchestrator;
pub mod phase;
pub mod plan;
pub mod policy;
pub mod process_group;
pub mod repo;
pub mod sandbox;
pub mod seed;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Error, Result, Secret};
pub use exec::{ExecOutput, ExecProcess, ExecRequest, ExitStatus, OutputChunk, OutputStream};
pub use harness::{AgentEvent, AgentHarness, AgentHarnessExt, AgentTurn, HarnessContext, PromptRequest};
pub use labels::{LabelSelector, Labels};
pub use manifest::Manifest;
pub use network::{LocalNetwork, NetworkProvider, NetworkProviderExt};
pub use orchestrator::Orchestrator;
pub use phase::{EventSink, LaunchEvent, Phase, PhaseLog};
pub use policy::AccessPolicy;
pub use sandbox::{
    Capabilities, Endpoint, ImageRef, ImageSpec, PortSpec, Sandbox, SandboxInfo, SandboxName,
    SandboxProvider, SandboxProviderExt, SandboxSpec,
};
pub use seed::Seeder;
