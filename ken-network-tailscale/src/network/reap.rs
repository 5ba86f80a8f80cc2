//! Removing tailnet devices and keys that belong to no live sandbox.

use std::collections::HashSet;

use ken_core::network::ReapReport;
use ken_core::sandbox::SandboxInfo;
use ken_core::Result;

use super::names::{parse_hostname, sandbox_of_description};
use super::TailscaleNetwork;
use crate::client::DeviceFilter;

/// Deletes devices carrying the sandbox tag that are offline, or that are online
/// with a host name of this machine's and owner's scope naming no sandbox in
/// `live`, and revokes usable keys Ken minted for sandboxes not in `live`. With
/// `dry_run`, only reports them.
///
/// NOTE: `live` contains only the sandboxes of this machine's provider, so an online
/// device of another scope (a teammate's, or another machine's) is never deleted
/// for a missing sandbox: its sandbox may be alive elsewhere. It is deleted once
/// it is offline. A tagged device whose host name Ken did not make is likewise
/// deleted only when offline, because it may be another tool's.
pub(super) async fn reap(network: &TailscaleNetwork, live: &[SandboxInfo], dry_run: bool) -> Result<ReapReport> {
    let config = network.config();
    let client = network.client();
    let live: HashSet<&str> = live.iter().map(|info| info.name.as_str()).collect();
    let own_scope = network.own_scope();
    let mut report = ReapReport::default();
    let mut first_error = None;

    for device in client.list_devices(&DeviceFilter::tagged(config.tag.clone())).await? {
        let parts = parse_hostname(&config.hostname_prefix, &device.hostname);
        let reason = match parts {
            Some(parts) if parts.scope == own_scope && !live.contains(parts.sandbox) => {
                format!("sandbox {} no longer exists", parts.sandbox)
            }
            _ if device.is_offline() => "it is offline".to_owned(),
            Some(parts) if !live.contains(parts.sandbox) => {
                tracing::debug!(provider = "tailscale", phase = "gc", device.id = %device.api_id(), hostname = %device.hostname, scope = parts.scope, "kept an online device of another machine or owner");
                continue;
            }
            _ => continue,
        };
        let line = format!("tailnet device {} ({}): {reason}", device.hostname, device.api_id());
        tracing::info!(provider = "tailscale", phase = "gc", device.id = %device.api_id(), hostname = %device.hostname, %reason, dry_run, "reaping a tailnet device");
        if !dry_run {
            if let Err(error) = client.delete_device(device.api_id()).await {
                tracing::error!(provider = "tailscale", phase = "gc", device.id = %device.api_id(), %error, "failed to delete the device");
                first_error.get_or_insert(error);
                continue;
            }
        }
        report.removed.push(line);
    }

    // NOTE: key descriptions carry no scope, so a teammate's key minted for a sandbox
    // name missing from `live` is revoked too. That only matters in the seconds
    // between minting and `tailscale up`, and that launch then fails and cleans up.
    for key in client.list_keys().await? {
        let Some(name) = key.description.as_deref().and_then(sandbox_of_description) else {
            continue;
        };
        if live.contains(name) || !key.is_usable() {
            continue;
        }
        let line = format!("auth key {} (minted for sandbox {name}, which no longer exists)", key.id);
        tracing::info!(provider = "tailscale", phase = "gc", key.id = %key.id, sandbox.name = %name, dry_run, "revoking a leftover auth key");
        if !dry_run {
            if let Err(error) = client.revoke_key(&key.id).await {
                tracing::error!(provider = "tailscale", phase = "gc", key.id = %key.id, %error, "failed to revoke the auth key");
                first_error.get_or_insert(error);
                continue;
            }
        }
        report.removed.push(line);
    }

    match first_error {
        Some(error) => Err(error),
        None => Ok(report),
    }
}
