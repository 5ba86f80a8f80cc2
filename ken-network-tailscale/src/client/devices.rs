//! Devices: list with filters, get, delete, set tags, and wait for one to appear.

use std::time::Duration;

use ken_core::{Error, Result};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::{url_segment, Call, TailscaleClient};

/// A device of the tailnet, with the fields Ken reads (`?fields=all`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The legacy device id.
    #[serde(default)]
    pub id: String,
    /// The node id, equal to `Self.ID` in `tailscale status --json`.
    #[serde(default)]
    pub node_id: String,
    /// The MagicDNS name (FQDN), without a trailing dot.
    #[serde(default)]
    pub name: String,
    /// The host name the device registered with.
    #[serde(default)]
    pub hostname: String,
    /// The login of the user who owns it; for tagged devices, the user who added it.
    #[serde(default)]
    pub user: String,
    /// Its tailnet addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether it is authorized.
    #[serde(default)]
    pub authorized: bool,
    /// Whether it is removed automatically once offline.
    #[serde(default)]
    pub is_ephemeral: bool,
    /// Whether it is connected to the control server now; `None` when not sent.
    #[serde(default)]
    pub connected_to_control: Option<bool>,
    /// When it was last seen, RFC 3339.
    #[serde(default)]
    pub last_seen: Option<String>,
}

impl Device {
    /// Returns the id to use in device URLs: the node id, else the legacy id.
    pub fn api_id(&self) -> &str {
        if self.node_id.is_empty() {
            &self.id
        } else {
            &self.node_id
        }
    }

    /// Returns whether the API reports the device as not connected.
    pub fn is_offline(&self) -> bool {
        self.connected_to_control == Some(false)
    }
}

/// Client-side filters for [`TailscaleClient::list_devices`]; the API has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Keep devices carrying this tag.
    pub tag: Option<String>,
    /// Keep devices whose host name starts with this.
    pub hostname_prefix: Option<String>,
}

impl DeviceFilter {
    /// Keeps devices carrying `tag`.
    pub fn tagged(tag: impl Into<String>) -> Self {
        DeviceFilter {
            tag: Some(tag.into()),
            hostname_prefix: None,
        }
    }

    /// Also keeps only host names starting with `prefix`.
    pub fn hostname_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.hostname_prefix = Some(prefix.into());
        self
    }

    fn matches(&self, device: &Device) -> bool {
        self.tag.as_ref().is_none_or(|tag| device.tags.iter().any(|t| t == tag))
            && self
                .hostname_prefix
                .as_ref()
                .is_none_or(|prefix| device.hostname.starts_with(prefix.as_str()))
    }
}

#[derive(Deserialize)]
struct DeviceList {
    #[serde(default)]
    devices: Vec<Device>,
}

impl TailscaleClient {
    /// Lists the tailnet's devices that match `filter`.
    pub async fn list_devices(&self, filter: &DeviceFilter) -> Result<Vec<Device>> {
        let path = format!("tailnet/{}/devices", self.tailnet());
        let list: DeviceList = self
            .call_json(Call::new("listing devices"), |r| r.query(&[("fields", "all")]), Method::GET, &path)
            .await?;
        Ok(list.devices.into_iter().filter(|d| filter.matches(d)).collect())
    }

    /// Gets a device by node id (or legacy id). Fails with [`Error::NotFound`].
    pub async fn get_device(&self, id: &str) -> Result<Device> {
        let path = format!("device/{}", url_segment(id));
        let call = Call::new(format!("getting device {id}")).resource("device", id);
        self.call_json(call, |r| r.query(&[("fields", "all")]), Method::GET, &path).await
    }

    /// Deletes a device. Succeeds when it does not exist (any more).
    pub async fn delete_device(&self, id: &str) -> Result<()> {
        let path = format!("device/{}", url_segment(id));
        let call = Call::new(format!("deleting device {id}")).resource("device", id);
        match self.call(call, |r| r, Method::DELETE, &path).await {
            Ok(_) => {
                tracing::info!(provider = "tailscale", device.id = %id, "deleted the device");
                Ok(())
            }
            Err(error) if error.is_not_found() => {
                tracing::debug!(provider = "tailscale", device.id = %id, "the device is already gone");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Replaces a device's tags.
    pub async fn set_device_tags(&self, id: &str, tags: &[String]) -> Result<()> {
        let path = format!("device/{}/tags", url_segment(id));
        let call = Call::new(format!("setting the tags of device {id}")).resource("device", id);
        let body = json!({ "tags": tags });
        self.call(call, |r| r.json(&body), Method::POST, &path).await?;
        Ok(())
    }

    /// Gets the device `node_id`, asking again while the API does not know it yet,
    /// for at most `timeout`.
    pub async fn wait_for_device(&self, node_id: &str, timeout: Duration) -> Result<Device> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut interval = Duration::from_millis(250);
        loop {
            match self.get_device(node_id).await {
                Ok(device) => return Ok(device),
                Err(error) if error.is_not_found() => {}
                Err(error) => return Err(error),
            }
            if tokio::time::Instant::now() + interval > deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "waiting for device {node_id} to appear in the Tailscale API (tailscaled reported it joined, \
                         but the API does not list it; check that the tailnet and the control server are the same)"
                    ),
                    after: timeout,
                });
            }
            tracing::debug!(provider = "tailscale", device.id = %node_id, "the device is not in the API yet; asking again");
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_secs(2));
        }
    }
}
