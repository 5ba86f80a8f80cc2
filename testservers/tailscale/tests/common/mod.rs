//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use ken_testserver_tailscale::TestServer;
use reqwest::header::{CONTENT_TYPE, IF_MATCH};
use reqwest::{Client, Response};
use serde_json::Value;

/// An API client for the test server that authenticates with a given token.
pub struct Api {
    pub http: Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(server: &TestServer, token: &str) -> Api {
        Api {
            http: Client::new(),
            base: server.api_url(),
            token: token.to_owned(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v2/{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET reaches the test server")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.http
            .delete(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("DELETE reaches the test server")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("POST reaches the test server")
    }

    /// Writes a HuJSON policy with `If-Match: "<etag>"`.
    pub async fn post_policy(&self, text: &str, etag: &str) -> Response {
        self.http
            .post(self.url("tailnet/-/acl"))
            .bearer_auth(&self.token)
            .header(CONTENT_TYPE, "application/hujson")
            .header(IF_MATCH, format!("\"{etag}\""))
            .body(text.to_owned())
            .send()
            .await
            .expect("POST reaches the test server")
    }

    pub async fn validate(&self, text: &str) -> Value {
        let response = self
            .http
            .post(self.url("tailnet/-/acl/validate"))
            .bearer_auth(&self.token)
            .header(CONTENT_TYPE, "application/hujson")
            .body(text.to_owned())
            .send()
            .await
            .expect("POST reaches the test server");
        assert_eq!(response.status(), 200);
        response.json().await.expect("JSON body")
    }
}

/// Fetches an OAuth access token for the server's first OAuth client.
pub async fn oauth_token(server: &TestServer) -> String {
    let client = server.oauth_client();
    let response = Client::new()
        .post(format!("{}/api/v2/oauth/token", server.api_url()))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("client_id={}&client_secret={}", client.id, client.secret))
        .send()
        .await
        .expect("POST reaches the test server");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON body");
    body["access_token"].as_str().expect("access_token").to_owned()
}

/// Builds the key-creation body Ken sends.
pub fn key_request(tags: &[&str]) -> Value {
    serde_json::json!({
        "capabilities": {"devices": {"create": {
            "reusable": false, "ephemeral": true, "preauthorized": true, "tags": tags
        }}},
        "expirySeconds": 600,
        "description": "ken sandbox abc123"
    })
}

/// A policy in the shape Ken renders: tag owners, one grant, tests both ways.
pub const KEN_POLICY: &str = r#"{
  // Admins keep their own rules.
  "groups": {"group:admins": ["admin@example.com"]},
  "tagOwners": {"tag:ken-sandbox": ["group:admins", "tag:ken-sandbox"]},
  "grants": [
    // Ken: any member reaches any sandbox; no sandbox reaches another.
    {"src": ["autogroup:member"], "dst": ["tag:ken-sandbox"], "ip": ["*"]},
  ],
  "tests": [
    {"src": "alice@example.com", "accept": ["tag:ken-sandbox:22", "tag:ken-sandbox:443", "tag:ken-sandbox:8080"]},
    {"src": "tag:ken-sandbox", "deny": ["tag:ken-sandbox:22", "tag:ken-sandbox:443", "tag:ken-sandbox:8080", "alice@example.com:22"]},
  ],
}"#;
