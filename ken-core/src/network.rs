//! The network provider trait and the local default that needs no VPN.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::policy::{AccessPolicy, Principal};
use crate::sandbox::{Endpoint, PortSpec, Sandbox, SandboxInfo};

/// The record of a sandbox joined to a network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// The network provider's name.
    pub network: String,
    /// The sandbox's host name on that network, when it has one.
    pub hostname: Option<String>,
    /// Its addresses on that network.
    pub addresses: Vec<String>,
    /// The network's id for the sandbox, for example a tailnet node id.
    pub device_id: Option<String>,
}

/// The result of [`NetworkProvider::reap`]: what it removed or would remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReapReport {
    /// Human-readable descriptions of what was removed.
    pub removed: Vec<String>,
}

/// A network that makes sandboxes reachable by users and keeps the access policy.
///
/// # Contract
/// - [`ensure_policy`](Self::ensure_policy) fails rather than run with a weaker
///   policy than the one asked for.
/// - [`detach`](Self::detach) and [`reap`](Self::reap) are idempotent, and each step
///   of them tolerates the others having happened already.
/// - Credentials of the network stay on the host; only single-use material enters the
///   sandbox.
#[async_trait]
pub trait NetworkProvider: Send + Sync + fmt::Debug {
    /// Returns the network's short name, for example `local`.
    fn name(&self) -> &str;

    /// Returns Dockerfile lines the network needs in every sandbox image, for example
    /// lines that install a VPN client. The default implementation returns none.
    ///
    /// A launch appends them to the end of the manifest's Dockerfile before the image
    /// is prepared, so they are part of the image's content hash. They run in the
    /// last build stage as its last `USER`, so they need that user's permissions.
    fn image_lines(&self) -> Vec<String> {
        Vec::new()
    }

    /// Makes sure `policy` is in force, or fails saying why it cannot be.
    async fn ensure_policy(&self, policy: &AccessPolicy) -> Result<()>;

    /// Joins the sandbox to the network.
    async fn attach(&self, sandbox: &Sandbox) -> Result<Attachment>;

    /// Makes a port of an attached sandbox reachable on the network.
    async fn expose(&self, sandbox: &Sandbox, port: &PortSpec) -> Result<Endpoint>;

    /// Removes the sandbox from the network. Succeeds when it was never attached.
    async fn detach(&self, sandbox: &Sandbox) -> Result<()>;

    /// Removes what the network holds for sandboxes that no longer exist. `live` lists
    /// the sandboxes that do; with `dry_run` nothing is removed.
    async fn reap(&self, live: &[SandboxInfo], dry_run: bool) -> Result<ReapReport>;
}

/// The default network: endpoints are the sandbox provider's own (ports published on
/// 127.0.0.1 for Docker), and isolation between sandboxes is the provider's job.
///
/// `ensure_policy` checks that the provider isolates sandboxes when the policy
/// forbids sandbox-to-sandbox traffic, and fails otherwise.
#[derive(Debug, Clone, Default)]
pub struct LocalNetwork {
    provider_isolates: Option<bool>,
}

impl LocalNetwork {
    /// Creates the local network.
    pub fn new() -> Self {
        LocalNetwork::default()
    }

    /// Records whether the sandbox provider isolates sandboxes from each other.
    ///
    /// The orchestrator sets this from the provider's capabilities.
    pub fn with_provider_isolation(mut self, isolates: bool) -> Self {
        self.provider_isolates = Some(isolates);
        self
    }
}

#[async_trait]
impl NetworkProvider for LocalNetwork {
    fn name(&self) -> &str {
        "local"
    }

    async fn ensure_policy(&self, policy: &AccessPolicy) -> Result<()> {
        let needs_isolation = !policy.allows(&Principal::AnySandbox, &Principal::AnySandbox);
        match self.provider_isolates {
            Some(false) if needs_isolation => Err(Error::invalid(
                "access policy",
                "no sandbox to sandbox",
                "the sandbox provider does not isolate sandboxes from each other; \
                 use a provider that does (docker does) or allow sandbox-to-sandbox traffic",
            )),
            None if needs_isolation => Err(Error::invalid(
                "access policy",
                "no sandbox to sandbox",
                "the local network was not told whether the provider isolates sandboxes; \
                 call LocalNetwork::with_provider_isolation",
            )),
            _ => Ok(()),
        }
    }

    async fn attach(&self, sandbox: &Sandbox) -> Result<Attachment> {
        Ok(Attachment {
            network: self.name().to_owned(),
            hostname: Some("127.0.0.1".to_owned()),
            addresses: vec!["127.0.0.1".to_owned()],
            device_id: Some(sandbox.info().id.clone()),
        })
    }

    async fn expose(&self, sandbox: &Sandbox, port: &PortSpec) -> Result<Endpoint> {
        sandbox.provider().endpoint(sandbox.name(), port).await
    }

    async fn detach(&self, _sandbox: &Sandbox) -> Result<()> {
        Ok(())
    }

    async fn reap(&self, _live: &[SandboxInfo], _dry_run: bool) -> Result<ReapReport> {
        Ok(ReapReport::default())
    }
}

/// Conveniences available on every [`NetworkProvider`].
#[async_trait]
pub trait NetworkProviderExt: NetworkProvider {
    /// Exposes each of `ports` in order and returns their endpoints.
    async fn expose_all(&self, sandbox: &Sandbox, ports: &[PortSpec]) -> Result<Vec<Endpoint>> {
        let mut endpoints = Vec::with_capacity(ports.len());
        for port in ports {
            endpoints.push(self.expose(sandbox, port).await?);
        }
        Ok(endpoints)
    }
}

impl<T: NetworkProvider + ?Sized> NetworkProviderExt for T {}
