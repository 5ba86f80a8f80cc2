//! Garbage collection: finds what Ken left behind, from labels alone.

use serde::Serialize;

use super::{launcher, marker, Orchestrator};
use crate::error::Result;
use crate::labels::{self, LabelSelector};
use crate::network::ReapReport;
use crate::sandbox::{Resource, ResourceKind, Sandbox, SandboxInfo, SandboxName, SandboxState};

/// The reason garbage collection removes a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GcReason {
    /// Its time to live has passed.
    Expired,
    /// Its launch never finished and the launching process is gone (or the launch
    /// deadline passed).
    Abandoned,
    /// It belongs to a sandbox that no longer exists.
    Orphaned,
}

/// One resource garbage collection removed, or would remove in a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct GcItem {
    /// The resource's kind.
    pub kind: ResourceKind,
    /// The provider's id, or the sandbox name for sandboxes.
    pub id: String,
    /// The sandbox it belongs to.
    pub sandbox: Option<String>,
    /// The reason it is removed.
    pub reason: GcReason,
    /// The error, when removing it failed.
    pub error: Option<String>,
}

/// The result of [`Orchestrator::gc`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// True when nothing was removed, only listed.
    pub dry_run: bool,
    /// Resources removed (or to remove).
    pub items: Vec<GcItem>,
    /// The network's own report.
    pub network: ReapReport,
}

impl Orchestrator {
    /// Removes expired sandboxes, sandboxes whose launch was abandoned, and resources
    /// of sandboxes that no longer exist; then lets the network reap its leftovers.
    /// With `dry_run`, only reports what it would remove.
    pub async fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let now = labels::unix_now();
        let resources = self.provider.resources(&LabelSelector::managed()).await?;
        let sandboxes = self.provider.list(&LabelSelector::managed()).await?;
        let mut report = GcReport {
            dry_run,
            ..GcReport::default()
        };

        let mut live: Vec<SandboxInfo> = Vec::new();
        for info in sandboxes {
            let reason = self.sandbox_reason(&info, now).await;
            let Some(reason) = reason else {
                live.push(info);
                continue;
            };
            let mut item = GcItem {
                kind: ResourceKind::Sandbox,
                id: info.name.to_string(),
                sandbox: Some(info.name.to_string()),
                reason,
                error: None,
            };
            tracing::info!(sandbox.name = %info.name, provider = self.provider.name(), ?reason, dry_run, "garbage collecting sandbox");
            if !dry_run {
                if let Err(error) = self.destroy(&info.name).await {
                    tracing::error!(sandbox.name = %info.name, provider = self.provider.name(), %error, "garbage collection failed to remove sandbox");
                    item.error = Some(error.to_string());
                }
            }
            report.items.push(item);
        }

        let live_names: Vec<&str> = live.iter().map(|s| s.name.as_str()).collect();
        for resource in resources {
            if resource.kind == ResourceKind::Sandbox || !is_orphan(&resource, &live_names) {
                continue;
            }
            let mut item = GcItem {
                kind: resource.kind,
                id: resource.id.clone(),
                sandbox: resource.labels.sandbox().map(str::to_owned),
                reason: GcReason::Orphaned,
                error: None,
            };
            tracing::info!(resource.kind = %resource.kind, resource.id = %resource.id, provider = self.provider.name(), dry_run, "garbage collecting orphaned resource");
            if !dry_run {
                if let Err(error) = self.provider.remove_resource(&resource).await {
                    if !error.is_not_found() {
                        tracing::error!(resource.id = %resource.id, provider = self.provider.name(), %error, "garbage collection failed to remove resource");
                        item.error = Some(error.to_string());
                    }
                }
            }
            report.items.push(item);
        }

        report.network = self.network.reap(&live, dry_run).await?;
        Ok(report)
    }

    /// Decides whether a sandbox goes, from its labels and its ready marker.
    async fn sandbox_reason(&self, info: &SandboxInfo, now: u64) -> Option<GcReason> {
        if info.labels.is_expired_at(now) {
            return Some(GcReason::Expired);
        }
        let sandbox = Sandbox::new(self.provider.clone(), info.clone());
        let ready = info.state == SandboxState::Running && marker::read(&sandbox).await.is_some();
        if ready {
            return None;
        }
        launch_abandoned(info, now).then_some(GcReason::Abandoned)
    }
}

/// Returns true when the launch of a sandbox that is not ready will never finish:
/// its launcher process is gone or its launch deadline passed.
pub(super) fn launch_abandoned(info: &SandboxInfo, now: u64) -> bool {
    let launcher_dead = info.labels.get(labels::LAUNCHER).is_some_and(launcher::is_dead);
    let deadline_passed = info.labels.launch_deadline().is_some_and(|deadline| deadline <= now);
    launcher_dead || deadline_passed
}

/// Returns the launcher label of a sandbox whose launch was abandoned, for messages.
pub(super) fn abandoned_by(info: &SandboxInfo) -> Option<String> {
    launch_abandoned(info, labels::unix_now()).then(|| {
        info.labels
            .get(labels::LAUNCHER)
            .unwrap_or("unknown launcher")
            .to_owned()
    })
}

/// Returns true for a resource that names a sandbox which no longer exists. Cached
/// images and shared resources (no sandbox label) are never orphans.
fn is_orphan(resource: &Resource, live: &[&str]) -> bool {
    if resource.labels.get(labels::CACHE) == Some("true") {
        return false;
    }
    match resource.labels.sandbox() {
        Some(sandbox) => !live.contains(&sandbox) && SandboxName::new(sandbox).is_ok(),
        None => false,
    }
}
