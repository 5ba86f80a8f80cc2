//! Helpers shared by the integration tests: configurations pointed at the test
//! server and a scripted sandbox provider.

#![allow(dead_code, unreachable_pub)]

pub mod fake;

use std::time::Duration;

use ken_network_tailscale::{RetryPolicy, TailscaleClient, TailscaleConfig};
use ken_testserver_tailscale::{TestServer, TestServerConfig};
use url::Url;

/// A policy with the admins' own rules and comments, and no rule that conflicts
/// with Ken's.
pub const ADMIN_POLICY: &str = r#"// Example Corp tailnet policy.
{
	"groups": {
		"group:dev": ["admin@example.com", "bob@example.com"],
	},
	"tagOwners": {
		"tag:web": ["group:dev"], // web servers
		"tag:ken-sandbox": ["autogroup:admin"],
	},
	/* developers reach the web servers */
	"acls": [
		{"action": "accept", "src": ["group:dev"], "dst": ["tag:web:443"]},
	],
	"tests": [
		{"src": "bob@example.com", "accept": ["tag:web:443"]},
	],
}
"#;

/// Retries with short waits, so tests of retries do not wait for long.
pub fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
    }
}

pub async fn server() -> TestServer {
    TestServer::start(TestServerConfig::default().with_control_bind(None)).await
}

pub async fn server_with_policy(policy: &str) -> TestServer {
    TestServer::start(TestServerConfig::default().with_control_bind(None).with_policy(policy)).await
}

/// Returns a configuration that uses the server's API access token.
pub fn token_config(server: &TestServer) -> TailscaleConfig {
    TailscaleConfig::builder()
        .api_key(server.api_token())
        .base_url(Url::parse(&server.api_url()).unwrap())
        .policy_test_user("admin@example.com")
        .build()
        .unwrap()
}

/// Returns a configuration that uses the server's OAuth client.
pub fn oauth_config(server: &TestServer) -> TailscaleConfig {
    let client = server.oauth_client();
    TailscaleConfig::builder()
        .oauth_client(client.id.clone(), client.secret.clone())
        .base_url(Url::parse(&server.api_url()).unwrap())
        .policy_test_user("admin@example.com")
        .build()
        .unwrap()
}

pub fn client(config: TailscaleConfig) -> TailscaleClient {
    TailscaleClient::new(config).unwrap().with_retry_policy(quick_retry())
}
