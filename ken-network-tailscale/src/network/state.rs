//! The provider's record of an attached sandbox, and the parsed output of
//! `tailscale status --json`.

use bytes::Bytes;
use ken_core::{archive, Error, Result, Sandbox};
use serde::{Deserialize, Serialize};

use super::commands::{state_file_path, TAILSCALE_DIR};

/// The non-secret record of a sandbox's tailnet membership, stored inside the
/// sandbox at `/run/ken/tailscale/state.json`, so that another process (`ken rm`)
/// can detach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachState {
    /// The host name the node registered with.
    pub hostname: String,
    /// The id of the auth key minted for it.
    #[serde(default)]
    pub key_id: Option<String>,
    /// Its node id, once it joined.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Its MagicDNS name without the trailing dot, once it joined.
    #[serde(default)]
    pub dns_name: Option<String>,
    /// Its tailnet addresses, once it joined.
    #[serde(default)]
    pub addresses: Vec<String>,
}

impl AttachState {
    /// Writes the record into the sandbox with mode 0600.
    pub(crate) async fn save(&self, sandbox: &Sandbox) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::backend_with("tailscale", "failed to encode the attach state", e))?;
        let name = state_file_path().rsplit('/').next().unwrap_or("state.json").to_owned();
        let archive = archive::single_file(&name, &json, 0o600)?;
        sandbox.provider().upload(sandbox.name(), TAILSCALE_DIR, archive).await
    }

    /// Reads the record from the sandbox; `None` when the sandbox has none.
    pub(crate) async fn load(sandbox: &Sandbox) -> Result<Option<AttachState>> {
        let archive: Bytes = match sandbox.provider().download(sandbox.name(), &state_file_path()).await {
            Ok(archive) => archive,
            Err(error) if error.is_not_found() => return Ok(None),
            Err(error) => return Err(error),
        };
        let contents = archive::first_file(&archive)?;
        serde_json::from_slice(&contents)
            .map(Some)
            .map_err(|e| Error::backend_with("tailscale", format!("{} in sandbox {} is not valid JSON", state_file_path(), sandbox.name()), e))
    }
}

/// The parts of `tailscale status --json` the provider reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Status {
    #[serde(rename = "BackendState", default)]
    pub(crate) backend_state: String,
    #[serde(rename = "AuthURL", default)]
    pub(crate) auth_url: String,
    #[serde(rename = "Self", default)]
    pub(crate) self_node: Option<SelfNode>,
}

/// The `Self` object of `tailscale status --json`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct SelfNode {
    #[serde(rename = "ID", default)]
    pub(crate) id: String,
    #[serde(rename = "DNSName", default)]
    pub(crate) dns_name: String,
    #[serde(rename = "TailscaleIPs", default)]
    pub(crate) tailscale_ips: Option<Vec<String>>,
}

impl Status {
    /// Returns the node when the backend is running and has addresses.
    pub(crate) fn joined(&self) -> Option<&SelfNode> {
        let node = self.self_node.as_ref()?;
        let has_addresses = node.tailscale_ips.as_ref().is_some_and(|ips| !ips.is_empty());
        (self.backend_state == "Running" && has_addresses && !node.id.is_empty()).then_some(node)
    }
}
