//! The orchestrator: launches sandboxes phase by phase, lists them, removes them and
//! collects garbage, all from labels.

mod gc;
mod launch;
mod launcher;
mod marker;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use gc::abandoned_by;
use crate::exec::{ExecProcess, ExecRequest};
use crate::harness::AgentHarness;
use crate::labels::{self, LabelSelector};
use crate::network::{LocalNetwork, NetworkProvider, NetworkProviderExt};
use crate::phase::EventSink;
use crate::plan::LOG_DIR;
use crate::policy::AccessPolicy;
use crate::sandbox::{Endpoint, PortSpec, Sandbox, SandboxInfo, SandboxName, SandboxProvider};

pub use gc::{GcItem, GcReason, GcReport};
pub use launch::{BootReport, LaunchOptions, Launched, PhaseTiming, LAUNCH_DEADLINE};
pub use marker::ReadyMarker;

/// Label listing the exposed ports as `name:port:scheme`, comma-separated.
pub const PORTS_LABEL: &str = "ken.ports";

/// Launches, lists and removes sandboxes on one sandbox provider and one network.
///
/// Cheap to clone; clones share the teardown tracker, so
/// [`wait_for_teardowns`](Self::wait_for_teardowns) waits for the teardowns started
/// by any of them.
#[derive(Clone)]
pub struct Orchestrator {
    provider: Arc<dyn SandboxProvider>,
    network: Arc<dyn NetworkProvider>,
    harness: Option<Arc<dyn AgentHarness>>,
    policy: AccessPolicy,
    owner: String,
    events: EventSink,
    teardowns: TaskTracker,
}

/// Builds an [`Orchestrator`].
pub struct OrchestratorBuilder {
    provider: Arc<dyn SandboxProvider>,
    network: Option<Arc<dyn NetworkProvider>>,
    harness: Option<Arc<dyn AgentHarness>>,
    policy: AccessPolicy,
    owner: Option<String>,
    events: EventSink,
}

impl OrchestratorBuilder {
    /// Sets the network; the default is [`LocalNetwork`].
    pub fn network(mut self, network: Arc<dyn NetworkProvider>) -> Self {
        self.network = Some(network);
        self
    }

    /// Sets the agent harness started in every sandbox.
    pub fn harness(mut self, harness: Arc<dyn AgentHarness>) -> Self {
        self.harness = Some(harness);
        self
    }

    /// Sets the access policy; the default is [`AccessPolicy::standard`].
    pub fn policy(mut self, policy: AccessPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the owner label; the default is [`default_owner`].
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Sets the receiver of launch progress events.
    pub fn events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }

    /// Builds the orchestrator.
    pub fn build(self) -> Orchestrator {
        let isolates = self.provider.capabilities().isolation;
        let network = self
            .network
            .unwrap_or_else(|| Arc::new(LocalNetwork::new().with_provider_isolation(isolates)));
        let owner = self
            .owner
            .filter(|o| !o.is_empty())
            .unwrap_or_else(default_owner);
        Orchestrator {
            provider: self.provider,
            network,
            harness: self.harness,
            policy: self.policy,
            owner,
            events: self.events,
            teardowns: TaskTracker::new(),
        }
    }
}

/// A sandbox as `ken list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxSummary {
    /// The provider's description of the sandbox.
    #[serde(flatten)]
    pub info: SandboxInfo,
    /// True once the launch finished and marked the sandbox ready.
    pub ready: bool,
    /// The sandbox's endpoints; empty while it is not running.
    pub endpoints: Vec<Endpoint>,
}

impl Orchestrator {
    /// Starts building an orchestrator for `provider`.
    pub fn builder(provider: Arc<dyn SandboxProvider>) -> OrchestratorBuilder {
        OrchestratorBuilder {
            provider,
            network: None,
            harness: None,
            policy: AccessPolicy::standard(),
            owner: None,
            events: EventSink::none(),
        }
    }

    /// Returns the sandbox provider.
    pub fn provider(&self) -> &Arc<dyn SandboxProvider> {
        &self.provider
    }

    /// Returns the network provider.
    pub fn network(&self) -> &Arc<dyn NetworkProvider> {
        &self.network
    }

    /// Returns the owner written into labels.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Looks up a sandbox by name.
    pub async fn sandbox(&self, name: &SandboxName) -> Result<Sandbox> {
        let info = self.provider.get(name).await?;
        Ok(Sandbox::new(self.provider.clone(), info))
    }

    /// Lists every sandbox Ken manages on this provider, with readiness and endpoints.
    pub async fn list(&self) -> Result<Vec<SandboxSummary>> {
        let sandboxes = self.provider.list(&LabelSelector::managed()).await?;
        let summaries = join_all(sandboxes.into_iter().map(|info| self.summarize(info))).await;
        let mut summaries: Vec<SandboxSummary> = summaries.into_iter().collect();
        summaries.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        Ok(summaries)
    }

    /// Returns one sandbox's summary.
    pub async fn get(&self, name: &SandboxName) -> Result<SandboxSummary> {
        let info = self.provider.get(name).await?;
        Ok(self.summarize(info).await)
    }

    async fn summarize(&self, info: SandboxInfo) -> SandboxSummary {
        let sandbox = Sandbox::new(self.provider.clone(), info.clone());
        let running = info.state == crate::sandbox::SandboxState::Running;
        let ready = running && marker::read(&sandbox).await.is_some();
        let endpoints = if running {
            self.endpoints_of(&sandbox).await.unwrap_or_default()
        } else {
            Vec::new()
        };
        SandboxSummary {
            info,
            ready,
            endpoints,
        }
    }

    /// Returns the endpoints of a sandbox's exposed ports.
    pub async fn endpoints(&self, name: &SandboxName) -> Result<Vec<Endpoint>> {
        let sandbox = self.sandbox(name).await?;
        self.endpoints_of(&sandbox).await
    }

    async fn endpoints_of(&self, sandbox: &Sandbox) -> Result<Vec<Endpoint>> {
        let ports = ports_from_labels(sandbox.info());
        self.network.expose_all(sandbox, &ports).await
    }

    /// Waits until the sandbox exists and its launch has finished, for at most
    /// `timeout`. A command sent to a sandbox that is still starting waits here, so it
    /// never runs against a missing repository or service.
    pub async fn wait_ready(&self, name: &SandboxName, timeout: Duration) -> Result<Sandbox> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = false;
        loop {
            match self.provider.get(name).await {
                Ok(info) => {
                    seen = true;
                    let sandbox = Sandbox::new(self.provider.clone(), info);
                    if marker::read(&sandbox).await.is_some() {
                        return Ok(sandbox);
                    }
                    if sandbox.info().state == crate::sandbox::SandboxState::Stopped {
                        return Err(Error::backend(
                            self.provider.name(),
                            format!("sandbox {name} stopped before it became ready; see `ken logs {name}`"),
                        ));
                    }
                    if let Some(launcher) = abandoned_by(sandbox.info()) {
                        // The launcher may have written the marker just before it exited.
                        if marker::read(&sandbox).await.is_some() {
                            return Ok(sandbox);
                        }
                        tracing::warn!(sandbox.name = %name, provider = self.provider.name(), %launcher, "sandbox launch was abandoned");
                        return Err(Error::backend(
                            self.provider.name(),
                            format!(
                                "sandbox {name} will never become ready: the process that launched it ({launcher}) \
                                 is gone or its launch deadline passed; remove it with `ken rm {name}` or `ken gc`"
                            ),
                        ));
                    }
                }
                // A launch that failed removed the sandbox again.
                Err(e) if e.is_not_found() && seen => return Err(e),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    operation: format!("waiting for sandbox {name} to become ready"),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Starts `tail` on a service's log (or on every log when `service` is `None`).
    pub async fn logs(&self, name: &SandboxName, service: Option<&str>, follow: bool) -> Result<ExecProcess> {
        let sandbox = self.sandbox(name).await?;
        let follow_flag = if follow { " -F" } else { "" };
        let script = match service {
            Some(service) => {
                let valid = !service.is_empty()
                    && service.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !valid {
                    return Err(Error::invalid("service name", service, "use the name of a step or service from ken.toml"));
                }
                let file = format!("{LOG_DIR}/{service}.log");
                let check = sandbox.exec_output(ExecRequest::new(["test", "-f", file.as_str()])).await?;
                if !check.status.success() {
                    return Err(Error::NotFound {
                        kind: "service log",
                        name: service.to_owned(),
                    });
                }
                format!("exec tail -n +1{follow_flag} {file}")
            }
            None => format!("exec tail -v -n 50{follow_flag} {LOG_DIR}/*.log"),
        };
        sandbox.exec(ExecRequest::shell(script)).await
    }

    /// Removes a sandbox: detaches it from the network and destroys it. Succeeds when
    /// it is already gone.
    pub async fn destroy(&self, name: &SandboxName) -> Result<()> {
        let span = tracing::info_span!("destroy", sandbox.name = %name, provider = self.provider.name());
        let _enter = span.enter();
        drop(_enter);
        match self.provider.get(name).await {
            Ok(info) => {
                let sandbox = Sandbox::new(self.provider.clone(), info);
                if let Err(error) = self.network.detach(&sandbox).await {
                    tracing::warn!(sandbox.name = %name, network = self.network.name(), %error, "failed to detach sandbox from the network; destroying it anyway");
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        self.provider.destroy(name).await?;
        tracing::info!(sandbox.name = %name, provider = self.provider.name(), "sandbox removed");
        Ok(())
    }

    /// Waits until every teardown started for a dropped (cancelled) launch finished.
    pub async fn wait_for_teardowns(&self) {
        self.teardowns.close();
        self.teardowns.wait().await;
        self.teardowns.reopen();
    }
}

impl fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Orchestrator")
            .field("provider", &self.provider.name())
            .field("network", &self.network.name())
            .field("harness", &self.harness.as_ref().map(|h| h.name().to_owned()))
            .field("owner", &self.owner)
            .finish()
    }
}

/// Returns the login name of the current user: `USER`, then `LOGNAME`, then the
/// name of this process's uid in `/etc/passwd`, then `uid-N`.
pub fn default_owner() -> String {
    for variable in ["USER", "LOGNAME"] {
        if let Ok(name) = std::env::var(variable) {
            if !name.is_empty() {
                return name;
            }
        }
    }
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next().map(str::to_owned))
    });
    let Some(uid) = uid else {
        return "unknown".to_owned();
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() > 2 && fields[2] == uid)
        .map(|fields| fields[0].to_owned())
        .unwrap_or_else(|| format!("uid-{uid}"))
}

/// Encodes ports for the [`PORTS_LABEL`] label.
fn ports_label(ports: &[PortSpec]) -> String {
    ports
        .iter()
        .map(|p| format!("{}:{}:{}", p.name, p.port, p.scheme))
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes the [`PORTS_LABEL`] label of a sandbox.
pub fn ports_from_labels(info: &SandboxInfo) -> Vec<PortSpec> {
    let Some(value) = info.labels.get(PORTS_LABEL) else {
        return Vec::new();
    };
    value
        .split(',')
        .filter_map(|entry| {
            let mut parts = entry.splitn(3, ':');
            let name = parts.next()?.to_owned();
            let port = parts.next()?.parse().ok()?;
            let scheme = parts.next().unwrap_or("http").to_owned();
            Some(PortSpec { name, port, scheme })
        })
        .collect()
}

/// Returns the selector for one sandbox's resources.
pub fn sandbox_selector(name: &SandboxName) -> LabelSelector {
    LabelSelector::managed().with(labels::SANDBOX, name.as_str())
}

#[cfg(test)]
mod tests;
