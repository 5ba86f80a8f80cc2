//! Removing a sandbox from the tailnet.

use ken_core::{Result, Sandbox};

use super::commands;
use super::names::{key_description, parse_hostname};
use super::state::AttachState;
use super::TailscaleNetwork;
use crate::client::DeviceFilter;

/// Logs the node out inside the sandbox, deletes its device and revokes its key.
///
/// Each step tolerates the others having happened: a dead sandbox skips the
/// logout, and a device or key that is already gone counts as removed. Without a
/// record (this process's or the state file), the sandbox's devices are found by
/// host name and its keys by description.
pub(super) async fn detach(network: &TailscaleNetwork, sandbox: &Sandbox) -> Result<()> {
    let state = match network.state_of(sandbox).await {
        Ok(state) => state,
        Err(error) => {
            tracing::warn!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", %error, "failed to read the attach record; looking the sandbox up through the API");
            None
        }
    };
    tracing::info!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", recorded = state.is_some(), "detaching the sandbox from the tailnet");

    logout(sandbox).await;

    let client = network.client();
    let mut devices = Vec::new();
    let mut keys = Vec::new();
    match &state {
        Some(AttachState { node_id: Some(node_id), .. }) => devices.push(node_id.clone()),
        Some(state) => {
            let filter = DeviceFilter::tagged(network.config().tag.clone());
            for device in client.list_devices(&filter).await? {
                if device.hostname == state.hostname {
                    devices.push(device.api_id().to_owned());
                }
            }
        }
        None => {
            // A device of the same name in another scope belongs to a teammate's
            // sandbox on the same tailnet, so only this sandbox's scope counts.
            let prefix = &network.config().hostname_prefix;
            let scope = network.sandbox_scope(sandbox);
            let filter = DeviceFilter::tagged(network.config().tag.clone()).hostname_prefix(prefix.clone());
            for device in client.list_devices(&filter).await? {
                let parts = parse_hostname(prefix, &device.hostname);
                if parts.is_some_and(|parts| parts.sandbox == sandbox.name().as_str() && parts.scope == scope) {
                    devices.push(device.api_id().to_owned());
                }
            }
        }
    }
    match state.as_ref().and_then(|state| state.key_id.clone()) {
        Some(key_id) => keys.push(key_id),
        None => {
            let description = key_description(sandbox.name().as_str());
            for key in client.list_keys().await? {
                if key.description.as_deref() == Some(description.as_str()) && key.is_usable() {
                    keys.push(key.id);
                }
            }
        }
    }

    let mut first_error = None;
    for device in &devices {
        if let Err(error) = client.delete_device(device).await {
            tracing::error!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", device.id = %device, %error, "failed to delete the device");
            first_error.get_or_insert(error);
        }
    }
    for key in &keys {
        if let Err(error) = client.revoke_key(key).await {
            tracing::error!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", key.id = %key, %error, "failed to revoke the auth key");
            first_error.get_or_insert(error);
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    network.forget(sandbox);
    tracing::info!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", devices = ?devices, keys = ?keys, "detached the sandbox from the tailnet");
    Ok(())
}

impl TailscaleNetwork {
    /// Runs `tailscale logout` inside `sandbox` and stops its `tailscaled`, with no
    /// API call, and returns whether the logout succeeded.
    ///
    /// This is what can be done for a tailnet sandbox when no API credentials are
    /// configured: the node leaves the tailnet, but its device record and auth key
    /// stay until `ken gc` runs with credentials. A failure (no daemon, a stopped
    /// or missing sandbox) is logged and returns `false`.
    pub async fn logout_only(sandbox: &Sandbox) -> bool {
        logout(sandbox).await
    }
}

/// Runs `tailscale logout` inside the sandbox and returns whether it succeeded. A
/// failure (no daemon, a stopped or missing sandbox) is only logged, because the
/// host deletes the device next.
async fn logout(sandbox: &Sandbox) -> bool {
    match sandbox.exec_output(commands::logout()).await {
        Ok(output) if output.status.success() => {
            tracing::debug!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", "logged the node out");
            true
        }
        Ok(output) => {
            tracing::debug!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", status = %output.status, stderr = %output.stderr_text().trim(), "tailscale logout failed; the device is deleted through the API instead");
            false
        }
        Err(error) => {
            tracing::debug!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", %error, "could not run tailscale logout; the device is deleted through the API instead");
            false
        }
    }
}
