//! Ken's policy section against the Tailscale test server: apply, re-apply, 412
//! races, conflicting rules, and the read-only check behind `ensure_policy`.

mod common;

use common::{server_with_policy, token_config};
use ken_core::{AccessPolicy, NetworkProvider};
use ken_network_tailscale::policy::MARKER;
use ken_network_tailscale::TailscaleNetwork;
use ken_testserver_tailscale::{Route, CONCURRENT_EDIT_COMMENT, CONCURRENT_EDIT_RULE, DEFAULT_POLICY};

/// The admins' policy without anything of Ken's: groups, a tag, an ACL, a test and
/// comments of both kinds.
const TEAM_POLICY: &str = r#"// Example Corp tailnet policy.
{
	"groups": {
		"group:dev": ["admin@example.com", "bob@example.com"],
	},
	"tagOwners": {
		"tag:web": ["group:dev"], // web servers
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

const ADMIN_LINES: [&str; 6] = [
	"// Example Corp tailnet policy.",
	r#""group:dev": ["admin@example.com", "bob@example.com"],"#,
	r#""tag:web": ["group:dev"], // web servers"#,
	"/* developers reach the web servers */",
	r#"{"action": "accept", "src": ["group:dev"], "dst": ["tag:web:443"]},"#,
	r#"{"src": "bob@example.com", "accept": ["tag:web:443"]},"#,
];

fn network(server: &ken_testserver_tailscale::TestServer) -> TailscaleNetwork {
    TailscaleNetwork::with_client(common::client(token_config(server)))
}

#[tokio::test]
async fn apply_keeps_admin_rules_and_passes_tests() {
    let server = server_with_policy(TEAM_POLICY).await;
    let network = network(&server);

    let outcome = network.apply_policy(&AccessPolicy::standard()).await.unwrap();

    assert!(outcome.changed);
    assert_eq!(outcome.attempts, 1);
    assert_eq!(server.policy_writes(), 1);
    let text = server.policy_text();
    for line in ADMIN_LINES {
        assert!(text.contains(line), "lost {line:?}:\n{text}");
    }
    assert!(text.contains(r#"{"src": ["autogroup:member"], "dst": ["tag:ken-sandbox"], "ip": ["*"]}"#), "{text}");
    assert!(text.contains(r#""tag:ken-sandbox": ["autogroup:admin"]"#), "{text}");
    assert!(text.contains(r#"{"src": "admin@example.com", "accept": ["tag:ken-sandbox:22", "tag:ken-sandbox:443", "tag:ken-sandbox:8080"]}"#), "{text}");

    let writes = server.requests_to(Route::SetPolicy);
    assert_eq!(writes[0].content_type.as_deref(), Some("application/hujson"));
    let if_match = writes[0].if_match.as_deref().expect("the policy write sends If-Match");
    assert!(if_match.starts_with('"'), "{writes:?}");
    assert!(if_match.ends_with('"'), "{writes:?}");
    assert_eq!(server.requests_to(Route::ValidatePolicy).len(), 1);

    // The written policy, tests included, validates against the server's evaluator.
    network.client().validate_policy(&text).await.unwrap();
    server.assert_no_violations();
}

#[tokio::test]
async fn reapply_changes_nothing() {
    let server = server_with_policy(TEAM_POLICY).await;
    let network = network(&server);
    network.apply_policy(&AccessPolicy::standard()).await.unwrap();
    let first = server.policy_text();

    let outcome = network.apply_policy(&AccessPolicy::standard()).await.unwrap();

    assert!(!outcome.changed);
    assert_eq!(server.policy_writes(), 1);
    assert_eq!(server.policy_text(), first);
    assert_eq!(first.matches(MARKER).count(), 5, "{first}");
}

#[tokio::test]
async fn concurrent_edit_is_merged_not_lost() {
    let server = server_with_policy(TEAM_POLICY).await;
    let network = network(&server);
    server.edit_policy_after_next_get();

    let outcome = network.apply_policy(&AccessPolicy::standard()).await.unwrap();

    assert_eq!(outcome.attempts, 2);
    let writes = server.requests_to(Route::SetPolicy);
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[0].status, 412);
    assert_eq!(writes[1].status, 200);
    assert_eq!(server.requests_to(Route::GetPolicy).len(), 2);
    let text = server.policy_text();
    assert!(text.contains(CONCURRENT_EDIT_COMMENT), "{text}");
    assert!(text.contains(CONCURRENT_EDIT_RULE), "{text}");
    for line in ADMIN_LINES {
        assert!(text.contains(line), "lost {line:?}:\n{text}");
    }
    assert!(text.contains(r#""dst": ["tag:ken-sandbox"]"#), "{text}");
    server.assert_no_violations();
}

#[tokio::test]
async fn allow_all_default_is_refused_with_rule_quoted() {
    let server = server_with_policy(DEFAULT_POLICY).await;
    let network = network(&server);

    let error = network.apply_policy(&AccessPolicy::standard()).await.unwrap_err();

    let message = error.to_string();
    assert!(message.contains(r#"{"action": "accept", "src": ["*"], "dst": ["*:*"]}"#), "{message}");
    assert!(message.contains("acls rule on line"), "{message}");
    assert_eq!(server.policy_writes(), 0);
    assert!(server.requests_to(Route::SetPolicy).is_empty());
}

#[tokio::test]
async fn sandbox_tag_source_is_refused() {
    let policy = TEAM_POLICY.replace(
        r#"{"action": "accept", "src": ["group:dev"], "dst": ["tag:web:443"]},"#,
        r#"{"action": "accept", "src": ["group:dev"], "dst": ["tag:web:443"]},
		{"action": "accept", "src": ["tag:ken-sandbox"], "dst": ["tag:web:443"]},"#,
    );
    let server = server_with_policy(&policy).await;
    let error = network(&server).apply_policy(&AccessPolicy::standard()).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains(r#"{"action": "accept", "src": ["tag:ken-sandbox"], "dst": ["tag:web:443"]}"#), "{message}");
    assert_eq!(server.policy_writes(), 0);
}

#[tokio::test]
async fn ensure_policy_fails_until_applied() {
    let server = server_with_policy(TEAM_POLICY).await;
    let network = network(&server);

    let message = network.ensure_policy(&AccessPolicy::standard()).await.unwrap_err().to_string();
    assert!(message.contains("ken policy apply"), "{message}");
    assert!(message.contains("apply_policy"), "{message}");
    assert_eq!(server.policy_writes(), 0);

    network.apply_policy(&AccessPolicy::standard()).await.unwrap();
    network.ensure_policy(&AccessPolicy::standard()).await.unwrap();
    assert_eq!(server.policy_writes(), 1);
}

#[tokio::test]
async fn ensure_policy_reports_conflicts() {
    let server = server_with_policy(DEFAULT_POLICY).await;
    let message = network(&server).ensure_policy(&AccessPolicy::standard()).await.unwrap_err().to_string();
    assert!(message.contains(r#""src": ["*"]"#), "{message}");
}

#[tokio::test]
async fn ensure_policy_applies_when_configured() {
    let server = server_with_policy(TEAM_POLICY).await;
    let mut config = token_config(&server);
    config.apply_policy = true;
    let network = TailscaleNetwork::with_client(common::client(config));

    network.ensure_policy(&AccessPolicy::standard()).await.unwrap();

    assert_eq!(server.policy_writes(), 1);
    assert!(network.check_policy(&AccessPolicy::standard()).await.unwrap().is_in_force());
}

#[tokio::test]
async fn test_user_comes_from_a_member_device() {
    let server = server_with_policy(TEAM_POLICY).await;
    let mut config = token_config(&server);
    config.policy_test_user = None;
    let network = TailscaleNetwork::with_client(common::client(config));

    let error = network.policy_section(&AccessPolicy::standard()).await.unwrap_err().to_string();
    assert!(error.contains("KEN_TAILSCALE_POLICY_TEST_USER"), "{error}");

    server.add_device(ken_testserver_tailscale::DeviceSpec::new("laptop", &[]));
    let section = network.policy_section(&AccessPolicy::standard()).await.unwrap();
    assert_eq!(section.tests[0]["src"], "admin@example.com");
}

#[tokio::test]
async fn failing_policy_tests_are_reported() {
    let server = server_with_policy(TEAM_POLICY).await;
    let network = network(&server);
    let broken = TEAM_POLICY.replace(r#""accept": ["tag:web:443"]"#, r#""deny": ["tag:web:443"]"#);
    let message = network.client().validate_policy(&broken).await.unwrap_err().to_string();
    assert!(message.contains("bob@example.com"), "{message}");
}
