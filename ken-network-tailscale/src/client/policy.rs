//! The tailnet policy file: read with its ETag, validate, write with `If-Match`.

use ken_core::{Error, Result};
use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_MATCH};
use reqwest::Method;
use serde_json::Value;

use super::{Call, TailscaleClient};

/// The policy file's text and the ETag it was read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyText {
    /// The HuJSON (or JSON) text.
    pub text: String,
    /// The `ETag` header, with its quotes, as the API sent it.
    pub etag: String,
}

impl TailscaleClient {
    /// Reads the policy file as HuJSON, comments included, with its ETag.
    pub async fn get_policy(&self) -> Result<PolicyText> {
        let path = format!("tailnet/{}/acl", self.tailnet());
        let reply = self
            .call(Call::new("reading the policy file"), |r| r.header(ACCEPT, "application/hujson"), Method::GET, &path)
            .await?;
        let etag = reply
            .headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Error::backend("tailscale", "reading the policy file: the response has no ETag header"))?;
        Ok(PolicyText { text: reply.body, etag })
    }

    /// Reads the policy file as JSON (comments are lost).
    pub async fn get_policy_json(&self) -> Result<Value> {
        let path = format!("tailnet/{}/acl", self.tailnet());
        self.call_json(
            Call::new("reading the policy file as JSON"),
            |r| r.header(ACCEPT, "application/json"),
            Method::GET,
            &path,
        )
        .await
    }

    /// Validates `policy` (HuJSON text) without saving it, running its tests.
    ///
    /// The API returns 200 for a failing policy too; a non-empty `message` in the
    /// response becomes [`Error::InvalidInput`] with the failures.
    pub async fn validate_policy(&self, policy: &str) -> Result<()> {
        let path = format!("tailnet/{}/acl/validate", self.tailnet());
        let body = policy.to_owned();
        let reply: Value = self
            .call_json(
                Call::new("validating the policy file"),
                |r| r.header(CONTENT_TYPE, "application/hujson").body(body.clone()),
                Method::POST,
                &path,
            )
            .await?;
        let message = reply["message"].as_str().unwrap_or_default();
        if message.is_empty() {
            return Ok(());
        }
        let data = match &reply["data"] {
            Value::Null => String::new(),
            data => format!(": {data}"),
        };
        Err(Error::invalid(
            "policy file",
            "(the tailnet policy with Ken's section merged in)",
            format!("Tailscale's validation failed: {message}{data}"),
        ))
    }

    /// Writes the whole policy file if its ETag is still `etag`, and returns the new
    /// ETag (empty when the API sent none).
    ///
    /// A stale ETag fails with the API's 412, which
    /// [`is_precondition_failed`](super::is_precondition_failed) recognises.
    pub async fn set_policy(&self, policy: &str, etag: &str) -> Result<String> {
        let path = format!("tailnet/{}/acl", self.tailnet());
        let if_match = if etag.starts_with('"') { etag.to_owned() } else { format!("\"{etag}\"") };
        let body = policy.to_owned();
        let reply = self
            .call(
                Call::new("writing the policy file"),
                |r| {
                    r.header(CONTENT_TYPE, "application/hujson")
                        .header(IF_MATCH, if_match.clone())
                        .body(body.clone())
                },
                Method::POST,
                &path,
            )
            .await?;
        Ok(reply
            .headers
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned())
    }
}
