//! Auth keys: create, get, list and revoke.

use std::fmt;
use std::time::Duration;

use ken_core::{Error, Result, Secret};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{api_error, requested_tags};
use super::{url_segment, Call, TailscaleClient};

/// The maximum length of a key description the API accepts.
pub const MAX_DESCRIPTION_LEN: usize = 50;

/// The request for a new auth key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthKeyRequest {
    /// The tags every device that joins with the key carries.
    pub tags: Vec<String>,
    /// The key's lifetime, sent as `expirySeconds`.
    pub expiry: Duration,
    /// A description of at most 50 letters, digits, `-`, `_` and spaces.
    pub description: String,
    /// Whether the key can be used more than once.
    pub reusable: bool,
    /// Whether devices that join with it are removed once offline.
    pub ephemeral: bool,
    /// Whether devices that join with it need no approval.
    pub preauthorized: bool,
}

impl AuthKeyRequest {
    /// Returns the request Ken makes for a sandbox: single-use, ephemeral,
    /// pre-authorized, tagged with `tag`.
    pub fn single_use(tag: &str, expiry: Duration, description: impl Into<String>) -> Self {
        AuthKeyRequest {
            tags: vec![tag.to_owned()],
            expiry,
            description: description.into(),
            reusable: false,
            ephemeral: true,
            preauthorized: true,
        }
    }

    fn validate(&self) -> Result<()> {
        let valid = self.description.len() <= MAX_DESCRIPTION_LEN
            && self
                .description
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == ' ');
        if !valid {
            return Err(Error::invalid(
                "auth key description",
                self.description.clone(),
                "use at most 50 letters, digits, '-', '_' and spaces",
            ));
        }
        if self.expiry.as_secs() == 0 {
            return Err(Error::invalid("auth key expiry", "0s", "use at least one second"));
        }
        Ok(())
    }
}

/// A new auth key. The key itself is a [`Secret`] and the API shows it only once.
#[derive(Clone)]
pub struct CreatedAuthKey {
    /// The key's id, used to get or revoke it.
    pub id: String,
    /// The `tskey-auth-...` key.
    pub key: Secret,
    /// The expiry time as RFC 3339, when the API sent it.
    pub expires: Option<String>,
}

impl fmt::Debug for CreatedAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedAuthKey")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("expires", &self.expires)
            .finish()
    }
}

#[derive(Deserialize)]
struct CreatedRaw {
    id: String,
    key: String,
    #[serde(default)]
    expires: Option<String>,
}

/// The API's details of an existing key (never the key itself).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct KeyInfo {
    /// The key's id.
    pub id: String,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
    /// Creation time, RFC 3339.
    #[serde(default)]
    pub created: Option<String>,
    /// Expiry time, RFC 3339.
    #[serde(default)]
    pub expires: Option<String>,
    /// True once the key is used up, revoked or expired.
    #[serde(default)]
    pub invalid: bool,
    /// The key's capabilities as the API sent them.
    #[serde(default)]
    pub capabilities: Value,
}

impl KeyInfo {
    /// Returns the tags of devices created with the key.
    pub fn tags(&self) -> Vec<String> {
        self.capabilities["devices"]["create"]["tags"]
            .as_array()
            .map(|tags| tags.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Returns whether the key can still be used: not invalid and not past its
    /// expiry.
    pub fn is_usable(&self) -> bool {
        if self.invalid {
            return false;
        }
        let Some(expires) = &self.expires else {
            return true;
        };
        match time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339) {
            Ok(expires) => expires > time::OffsetDateTime::now_utc(),
            Err(_) => true,
        }
    }
}

#[derive(Deserialize)]
struct KeyList {
    #[serde(default)]
    keys: Vec<KeyId>,
}

#[derive(Deserialize)]
struct KeyId {
    id: String,
}

impl TailscaleClient {
    /// Creates an auth key.
    ///
    /// A 400 saying the requested tags are not permitted becomes
    /// [`Error::InvalidInput`] naming the requested tags and the tags the OAuth
    /// client may mint, as far as the configuration or the token response name them.
    pub async fn create_auth_key(&self, request: &AuthKeyRequest) -> Result<CreatedAuthKey> {
        request.validate()?;
        let body = json!({
            "capabilities": {"devices": {"create": {
                "reusable": request.reusable,
                "ephemeral": request.ephemeral,
                "preauthorized": request.preauthorized,
                "tags": request.tags,
            }}},
            "expirySeconds": request.expiry.as_secs(),
            "description": request.description,
        });
        let path = format!("tailnet/{}/keys", self.tailnet());
        let call = Call::new(format!("creating an auth key ({})", request.description));
        // NOTE: a 5xx after the key was made is retried and can mint a second key.
        // Both are single-use with a short expiry, and reap revokes leftovers by
        // their description.
        let result: Result<CreatedRaw> = self.call_json(call, |r| r.json(&body), Method::POST, &path).await;
        let raw = match result {
            Ok(raw) => raw,
            Err(error) => return Err(self.explain_tag_error(error, &request.tags).await),
        };
        tracing::info!(provider = "tailscale", key.id = %raw.id, description = %request.description, tags = ?request.tags, "created an auth key");
        Ok(CreatedAuthKey {
            id: raw.id,
            key: Secret::new(raw.key),
            expires: raw.expires,
        })
    }

    async fn explain_tag_error(&self, error: Error, tags: &[String]) -> Error {
        let Some(api) = api_error(&error).filter(|api| api.status == 400) else {
            return error;
        };
        let Some(mut requested) = requested_tags(&api.message) else {
            return error;
        };
        if requested.is_empty() {
            requested = tags.to_vec();
        }
        let allowed = self.known_client_tags();
        let allowed_text = if allowed.is_empty() {
            format!(
                "the OAuth client's own tags are unknown to Ken, because the API does not report them; \
                 see them on the client's page under Settings > OAuth clients in the admin console, \
                 and export {}=\"tag:a tag:b\" with them so that this error names them",
                crate::config::env::OAUTH_TAGS
            )
        } else {
            format!("the OAuth client may mint only [{}] (from {})", allowed.join(" "), crate::config::env::OAUTH_TAGS)
        };
        let fix = if self.uses_oauth() {
            format!(
                "give the OAuth client the tag {} (or a tag that owns it in tagOwners), or set KEN_TAILSCALE_TAG to one of its tags",
                tags.join(" ")
            )
        } else {
            format!(
                "the API access token's user must own {} in the policy file's tagOwners; run `ken policy apply` or edit tagOwners",
                tags.join(" ")
            )
        };
        tracing::error!(provider = "tailscale", requested = ?requested, allowed = ?allowed, message = %api.message, "the API rejected the auth key's tags");
        Error::invalid(
            "auth key tags",
            format!("[{}]", requested.join(" ")),
            format!("Tailscale rejected them ({}); {allowed_text}; {fix}", api.message),
        )
    }

    /// Gets an auth key's details. Fails with [`Error::NotFound`] when it does not
    /// exist.
    pub async fn get_key(&self, id: &str) -> Result<KeyInfo> {
        let path = format!("tailnet/{}/keys/{}", self.tailnet(), url_segment(id));
        let call = Call::new(format!("getting auth key {id}")).resource("auth key", id);
        self.call_json(call, |r| r, Method::GET, &path).await
    }

    /// Revokes an auth key. Succeeds when the key does not exist (any more).
    pub async fn revoke_key(&self, id: &str) -> Result<()> {
        let path = format!("tailnet/{}/keys/{}", self.tailnet(), url_segment(id));
        let call = Call::new(format!("revoking auth key {id}")).resource("auth key", id);
        match self.call(call, |r| r, Method::DELETE, &path).await {
            Ok(_) => {
                tracing::info!(provider = "tailscale", key.id = %id, "revoked the auth key");
                Ok(())
            }
            Err(error) if error.is_not_found() => {
                tracing::debug!(provider = "tailscale", key.id = %id, "the auth key is already gone");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Lists the ids of the tailnet's keys the credential can see.
    pub async fn list_key_ids(&self) -> Result<Vec<String>> {
        let path = format!("tailnet/{}/keys", self.tailnet());
        let list: KeyList = self.call_json(Call::new("listing auth keys"), |r| r, Method::GET, &path).await?;
        Ok(list.keys.into_iter().map(|key| key.id).collect())
    }

    /// Lists the tailnet's keys with their details, one request per key. Keys that
    /// vanish between the list and the get are left out.
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut keys = Vec::new();
        for id in self.list_key_ids().await? {
            match self.get_key(&id).await {
                Ok(info) => keys.push(info),
                Err(error) if error.is_not_found() => {}
                Err(error) => return Err(error),
            }
        }
        Ok(keys)
    }
}
