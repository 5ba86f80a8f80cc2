//! The policy file routes: ETags, `ts-default`, 412 races, HuJSON and the tests evaluator.

mod common;

use common::{Api, KEN_POLICY};
use ken_testserver_tailscale::{TestServer, TestServerConfig, CONCURRENT_EDIT_COMMENT, DEFAULT_POLICY_ETAG};
use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, IF_MATCH};
use serde_json::Value;

fn etag_of(response: &reqwest::Response) -> String {
    let raw = response.headers()[ETAG].to_str().expect("ASCII ETag");
    assert!(raw.starts_with('"'), "ETag {raw} is not quoted");
    assert!(raw.ends_with('"'), "ETag {raw} is not quoted");
    raw.trim_matches('"').to_owned()
}

#[tokio::test]
async fn get_returns_hujson_or_json_with_etag() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());

    let hujson = api.get("tailnet/-/acl").await;
    assert_eq!(hujson.status(), 200);
    assert_eq!(hujson.headers()[CONTENT_TYPE], "application/hujson");
    let etag = etag_of(&hujson);
    assert_eq!(etag, server.policy_etag());
    let text = hujson.text().await.expect("body");
    assert!(text.contains("//"), "HuJSON keeps comments");

    let json = api
        .http
        .get(api.url("tailnet/-/acl"))
        .bearer_auth(&api.token)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .expect("reaches");
    assert_eq!(etag_of(&json), etag);
    let value: Value = json.json().await.expect("plain JSON");
    assert_eq!(value["acls"][0]["src"][0], "*");
}

#[tokio::test]
async fn ts_default_matches_only_untouched_default() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());

    let first = api.post_policy(KEN_POLICY, DEFAULT_POLICY_ETAG).await;
    assert_eq!(first.status(), 200, "{}", first.text().await.unwrap_or_default());
    assert!(!server.policy_is_default());
    assert_eq!(server.policy_text(), KEN_POLICY);

    let second = api.post_policy(KEN_POLICY, DEFAULT_POLICY_ETAG).await;
    assert_eq!(second.status(), 412);
    let body: Value = second.json().await.expect("JSON");
    assert_eq!(body["message"], "precondition failed, invalid old hash");
    server.assert_no_violations();
}

#[tokio::test]
async fn stale_etag_after_concurrent_edit() {
    let server = TestServer::start(TestServerConfig::default().with_policy(KEN_POLICY)).await;
    let api = Api::new(&server, server.api_token());
    server.edit_policy_after_next_get();

    let read = api.get("tailnet/-/acl").await;
    let etag = etag_of(&read);
    let text = read.text().await.expect("body");
    assert!(!text.contains(CONCURRENT_EDIT_COMMENT));
    assert!(server.policy_text().contains(CONCURRENT_EDIT_COMMENT));

    let stale = api.post_policy(&text, &etag).await;
    assert_eq!(stale.status(), 412);
    assert_eq!(server.policy_writes(), 0);

    let again = api.get("tailnet/-/acl").await;
    let etag = etag_of(&again);
    let text = again.text().await.expect("body");
    assert!(text.contains(CONCURRENT_EDIT_COMMENT), "the other admin's edit is visible");
    let merged = format!("{text}\n// merged by the test\n");
    let ok = api.post_policy(&merged, &etag).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(server.policy_text(), merged);
    assert_ne!(etag_of(&ok), etag, "a write changes the ETag");
    server.assert_no_violations();
}

#[tokio::test]
async fn if_match_quoting_checked() {
    let server = TestServer::start(TestServerConfig::default().with_policy(KEN_POLICY)).await;
    let api = Api::new(&server, server.api_token());
    let etag = server.policy_etag();
    for bad in [etag.clone(), format!("\"\"{etag}\"\"")] {
        let response = api
            .http
            .post(api.url("tailnet/-/acl"))
            .bearer_auth(&api.token)
            .header(CONTENT_TYPE, "application/hujson")
            .header(IF_MATCH, bad.clone())
            .body(KEN_POLICY)
            .send()
            .await
            .expect("reaches");
        assert_eq!(response.status(), 412, "If-Match {bad}");
    }
    assert_eq!(server.take_violations().len(), 2);
}

#[tokio::test]
async fn ken_policy_passes_its_tests() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());
    let body = api.validate(KEN_POLICY).await;
    assert!(body.get("message").is_none_or(|m| m == ""), "{body}");

    let acl_form = KEN_POLICY.replace(
        r#"{"src": ["autogroup:member"], "dst": ["tag:ken-sandbox"], "ip": ["*"]},"#,
        "",
    );
    let acl_form = acl_form.replace(
        r#""tests""#,
        r#""acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:ken-sandbox:*"]}],
  "tests""#,
    );
    let body = api.validate(&acl_form).await;
    assert!(body.get("message").is_none_or(|m| m == ""), "{body}");
}

#[tokio::test]
async fn allow_all_rule_fails_deny_test() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());
    let with_allow_all = KEN_POLICY.replace(
        r#""grants": ["#,
        r#""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "grants": ["#,
    );

    let body = api.validate(&with_allow_all).await;
    assert_eq!(body["message"], "test(s) failed");
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["user"], "tag:ken-sandbox");
    assert_eq!(data[0]["errors"].as_array().map(Vec::len), Some(4));

    let write = api.post_policy(&with_allow_all, &server.policy_etag()).await;
    assert_eq!(write.status(), 400);
    let body: Value = write.json().await.expect("JSON");
    assert_eq!(body["message"], "test(s) failed");
    assert!(server.policy_is_default(), "a rejected write changes nothing");
}

#[tokio::test]
async fn evaluator_source_kinds() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());
    let cases: &[(&str, &str, bool)] = &[
        // (rule src, test src, expect accepted)
        (r#""*""#, "tag:ken-sandbox", true),
        (r#""autogroup:tagged""#, "tag:ken-sandbox", true),
        (r#""autogroup:tagged""#, "bob@example.com", false),
        (r#""autogroup:member""#, "tag:ken-sandbox", false),
        (r#""group:devs""#, "bob@example.com", true),
        (r#""group:devs""#, "carol@example.com", false),
        (r#""bob@example.com""#, "bob@example.com", true),
        (r#""tag:ci""#, "tag:ci", true),
        (r#""tag:ci""#, "tag:ken-sandbox", false),
        (r#""100.64.0.0/10""#, "tag:ken-sandbox", true),
        (r#""192.168.0.0/16""#, "tag:ken-sandbox", false),
        (r#""192.168.0.0/16""#, "192.168.4.4", true),
        (r#""office""#, "10.1.2.3", true),
    ];
    for (src, who, accepted) in cases {
        let (accept, deny) = if *accepted {
            ("\"tag:ken-sandbox:22\"", "")
        } else {
            ("", "\"tag:ken-sandbox:22\"")
        };
        let policy = format!(
            r#"{{
  "groups": {{"group:devs": ["bob@example.com"]}},
  "hosts": {{"office": "10.1.0.0/16"}},
  "tagOwners": {{"tag:ken-sandbox": [], "tag:ci": []}},
  "acls": [{{"action": "accept", "src": [{src}], "dst": ["tag:ken-sandbox:22"]}}],
  "tests": [{{"src": "{who}", "accept": [{accept}], "deny": [{deny}]}}],
}}"#
        );
        let body = api.validate(&policy).await;
        assert!(
            body.get("message").is_none_or(|m| m == ""),
            "src {src}, test src {who}, expected accepted={accepted}: {body}"
        );
    }
}

#[tokio::test]
async fn evaluator_ports_protocols_self() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());
    let policy = r#"{
  "tagOwners": {"tag:web": []},
  "acls": [
    {"action": "accept", "src": ["autogroup:member"], "dst": ["tag:web:80,443", "autogroup:self:*"]},
    {"action": "accept", "proto": "udp", "src": ["autogroup:member"], "dst": ["tag:web:53"]},
  ],
  "grants": [{"src": ["autogroup:member"], "dst": ["tag:web"], "ip": ["tcp:8000-8100"]}],
  "tests": [
    {"src": "bob@example.com", "accept": ["tag:web:80", "tag:web:443", "tag:web:8050", "bob@example.com:22"],
     "deny": ["tag:web:22", "tag:web:53", "alice@example.com:22", "tag:web:8101"]},
    {"src": "bob@example.com", "proto": "udp", "accept": ["tag:web:53"], "deny": ["tag:web:8050"]},
  ],
}"#;
    let body = api.validate(policy).await;
    assert!(body.get("message").is_none_or(|m| m == ""), "{body}");
}

#[tokio::test]
async fn validate_tests_array_against_current() {
    let server = TestServer::start(TestServerConfig::default().with_policy(KEN_POLICY)).await;
    let api = Api::new(&server, server.api_token());
    let passing = r#"[{"src": "alice@example.com", "accept": ["tag:ken-sandbox:443"]}]"#;
    let body = api.validate(passing).await;
    assert!(body.get("message").is_none_or(|m| m == ""), "{body}");

    let failing = r#"[{"src": "tag:ken-sandbox", "accept": ["tag:ken-sandbox:443"]}]"#;
    let body = api.validate(failing).await;
    assert_eq!(body["message"], "test(s) failed");
}

#[tokio::test]
async fn unsupported_policy_rejected() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());
    let cases = [
        r#"{"acls": [{"action": "accept", "src": ["autogroup:admin"], "dst": ["*:*"]}]}"#,
        r#"{"acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]}"#,
        r#"{"acls": [{"action": "accept", "src": ["tag:undefined"], "dst": ["*:*"]}]}"#,
        r#"{"acls": [{"action": "accept", "src": ["100.100.0.0/16"], "dst": ["*:*"]}],
            "tagOwners": {"tag:a": []},
            "tests": [{"src": "tag:a", "accept": ["1.2.3.4:80"]}]}"#,
        r#"{"bogusSection": {}}"#,
        r#"{"acls": [ oops ]}"#,
    ];
    for policy in cases {
        let write = api.post_policy(policy, &server.policy_etag()).await;
        assert_eq!(write.status(), 400, "{policy}");
        let body: Value = write.json().await.expect("JSON");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{policy}");
    }
    assert!(server.policy_is_default());
}
