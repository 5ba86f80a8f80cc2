//! Records the server keeps and hands to tests: auth keys, devices, requests, violations.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::ids::rfc3339;

/// The `capabilities.devices.create` part of an auth key.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCreateCapabilities {
    /// Whether the key can register more than one device.
    #[serde(default)]
    pub reusable: bool,
    /// Whether devices registered with the key are removed after going offline.
    #[serde(default)]
    pub ephemeral: bool,
    /// Whether devices registered with the key need no admin approval.
    #[serde(default)]
    pub preauthorized: bool,
    /// Tags the registered devices get.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// An auth key as the server stores it, with its lifecycle state.
///
/// Its `Debug` output leaves out the key value.
#[derive(Clone)]
pub struct AuthKey {
    /// The key id, for example `kXRqeW7CNTRL`.
    pub id: String,
    /// The secret key value `tskey-auth-...`, returned only by the create call.
    pub key: String,
    /// The key's description.
    pub description: String,
    /// The capabilities the key was created with.
    pub capabilities: KeyCreateCapabilities,
    /// Creation time.
    pub created: OffsetDateTime,
    /// Expiry time.
    pub expires: OffsetDateTime,
    /// Revocation time, once revoked.
    pub revoked: Option<OffsetDateTime>,
    /// How many devices registered with the key.
    pub uses: u32,
    /// The OAuth client id that minted the key, or `None` for an API access token.
    pub minted_by_oauth_client: Option<String>,
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .field("description", &self.description)
            .field("capabilities", &self.capabilities)
            .field("created", &self.created)
            .field("expires", &self.expires)
            .field("revoked", &self.revoked)
            .field("uses", &self.uses)
            .field("minted_by_oauth_client", &self.minted_by_oauth_client)
            .finish()
    }
}

impl AuthKey {
    /// Returns whether the key was used up (single-use and used once).
    pub fn is_used(&self) -> bool {
        !self.capabilities.reusable && self.uses > 0
    }

    /// Returns whether the key is revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked.is_some()
    }

    /// Returns whether the key is past its expiry time.
    pub fn is_expired(&self) -> bool {
        self.expires <= OffsetDateTime::now_utc()
    }

    /// Returns whether the key can no longer register a device: used up, revoked or expired.
    pub fn is_invalid(&self) -> bool {
        self.is_used() || self.is_revoked() || self.is_expired()
    }

    /// The key as `GET .../keys/{id}` returns it (without the secret value).
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "description": self.description,
            "created": rfc3339(self.created),
            "expires": rfc3339(self.expires),
            "capabilities": {"devices": {"create": self.capabilities}},
            "invalid": self.is_invalid(),
        });
        if let Some(revoked) = self.revoked {
            v["revoked"] = json!(rfc3339(revoked));
        }
        v
    }
}

/// A device (node) of the tailnet.
#[derive(Clone, Debug)]
pub struct Device {
    /// Legacy numeric id.
    pub id: String,
    /// Stable node id like `n1234CNTRL`, equal to `Self.ID` in `tailscale status --json`.
    pub node_id: String,
    /// Host name the device reported.
    pub hostname: String,
    /// MagicDNS name without the trailing dot, for example `host.tail1234.ts.net`.
    pub name: String,
    /// The device's tailnet IPv4 address in 100.64.0.0/10.
    pub ipv4: Ipv4Addr,
    /// The device's tailnet IPv6 address in fd7a:115c:a1e0::/48.
    pub ipv6: Ipv6Addr,
    /// The device's tags (empty for a user-owned device).
    pub tags: Vec<String>,
    /// Login name of the owner.
    pub user: String,
    /// Whether an admin or a pre-authorized key approved the device.
    pub authorized: bool,
    /// Whether the device is removed once it goes offline.
    pub is_ephemeral: bool,
    /// Whether the device is connected to the control plane (online).
    pub connected_to_control: bool,
    /// Last time the device talked to the control plane.
    pub last_seen: OffsetDateTime,
    /// Registration time.
    pub created: OffsetDateTime,
    /// Node key expiry.
    pub expires: OffsetDateTime,
    /// Id of the auth key the device registered with, if any.
    pub auth_key_id: Option<String>,
    /// Whether the device is hidden from the API (see
    /// [`RegistrationMode::Invisible`](crate::RegistrationMode::Invisible)).
    pub hidden: bool,
}

impl Device {
    /// The device as the API returns it; `all` adds the fields only `?fields=all` gives.
    pub(crate) fn to_json(&self, all: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "nodeId": self.node_id,
            "name": self.name,
            "hostname": self.hostname,
            "user": self.user,
            "addresses": [self.ipv4.to_string(), self.ipv6.to_string()],
            "tags": self.tags,
            "authorized": self.authorized,
            "os": "linux",
            "clientVersion": "1.80.0-standin",
            "created": rfc3339(self.created),
            "lastSeen": rfc3339(self.last_seen),
            "expires": rfc3339(self.expires),
            "keyExpiryDisabled": !self.tags.is_empty(),
            "isExternal": false,
            "blocksIncomingConnections": false,
            "updateAvailable": false,
        });
        if all {
            v["isEphemeral"] = json!(self.is_ephemeral);
            v["connectedToControl"] = json!(self.connected_to_control);
        }
        v
    }
}

/// An API route of the server, used to aim fault injection and to read the request log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Route {
    /// `POST /api/v2/oauth/token`
    OAuthToken,
    /// `POST /api/v2/tailnet/{tailnet}/keys`
    CreateKey,
    /// `GET /api/v2/tailnet/{tailnet}/keys`
    ListKeys,
    /// `GET /api/v2/tailnet/{tailnet}/keys/{id}`
    GetKey,
    /// `DELETE /api/v2/tailnet/{tailnet}/keys/{id}`
    DeleteKey,
    /// `GET /api/v2/tailnet/{tailnet}/devices`
    ListDevices,
    /// `GET /api/v2/device/{id}`
    GetDevice,
    /// `DELETE /api/v2/device/{id}`
    DeleteDevice,
    /// `POST /api/v2/device/{id}/tags`
    SetDeviceTags,
    /// `GET /api/v2/tailnet/{tailnet}/acl`
    GetPolicy,
    /// `POST /api/v2/tailnet/{tailnet}/acl`
    SetPolicy,
    /// `POST /api/v2/tailnet/{tailnet}/acl/validate`
    ValidatePolicy,
    /// Any path the server does not implement.
    Unknown,
}

impl Route {
    /// Maps a method and a matched axum path pattern to the route.
    pub(crate) fn from_parts(method: &str, pattern: Option<&str>) -> Route {
        match (method, pattern.unwrap_or("")) {
            ("POST", "/api/v2/oauth/token") => Route::OAuthToken,
            ("POST", "/api/v2/tailnet/:tailnet/keys") => Route::CreateKey,
            ("GET", "/api/v2/tailnet/:tailnet/keys") => Route::ListKeys,
            ("GET", "/api/v2/tailnet/:tailnet/keys/:id") => Route::GetKey,
            ("DELETE", "/api/v2/tailnet/:tailnet/keys/:id") => Route::DeleteKey,
            ("GET", "/api/v2/tailnet/:tailnet/devices") => Route::ListDevices,
            ("GET", "/api/v2/device/:id") => Route::GetDevice,
            ("DELETE", "/api/v2/device/:id") => Route::DeleteDevice,
            ("POST", "/api/v2/device/:id/tags") => Route::SetDeviceTags,
            ("GET", "/api/v2/tailnet/:tailnet/acl") => Route::GetPolicy,
            ("POST", "/api/v2/tailnet/:tailnet/acl") => Route::SetPolicy,
            ("POST", "/api/v2/tailnet/:tailnet/acl/validate") => Route::ValidatePolicy,
            _ => Route::Unknown,
        }
    }
}

/// The credential kind a request authenticated with, with no secret in it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthKind {
    /// No `Authorization` header.
    None,
    /// An API access token sent as a Bearer token.
    ApiTokenBearer,
    /// An API access token sent as the HTTP Basic user name.
    ApiTokenBasic,
    /// An access token issued to the named OAuth client.
    OAuth {
        /// The OAuth client id.
        client_id: String,
    },
    /// A header the server did not accept.
    Invalid,
}

/// One API request as the server saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// The route it matched.
    pub route: Route,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Accept` header.
    pub accept: Option<String>,
    /// The `If-Match` header.
    pub if_match: Option<String>,
    /// The credential kind (set once the credential was checked).
    pub auth: AuthKind,
    /// The request body as text; the OAuth token form has its secret replaced.
    pub body: String,
    /// The status the server responded with.
    pub status: u16,
}

/// Something a correct client never sends, recorded for [`TestServer::assert_no_violations`].
///
/// [`TestServer::assert_no_violations`]: crate::TestServer::assert_no_violations
#[derive(Clone, Debug)]
pub struct Violation {
    /// The route of the offending request.
    pub route: Route,
    /// The problem, without any secret.
    pub message: String,
}

/// One request the control plane received from a stand-in script.
#[derive(Clone, Debug)]
pub struct ControlRequest {
    /// Control endpoint, for example `/control/register`.
    pub path: String,
    /// The form fields, in order, exactly as received (the auth key included).
    pub fields: Vec<(String, String)>,
}

/// An HTTPS serve configuration a device set with `tailscale serve`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeConfig {
    /// The node id of the device.
    pub node_id: String,
    /// The HTTPS port, usually 443.
    pub https_port: u16,
    /// The proxy target, for example `http://127.0.0.1:8080`.
    pub target: String,
}
