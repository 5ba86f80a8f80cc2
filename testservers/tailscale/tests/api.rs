//! The API routes: credentials, auth keys, devices, strict request checks, faults.

mod common;

use std::time::Duration;

use common::{key_request, oauth_token, Api};
use ken_testserver_tailscale::{AuthKind, DeviceSpec, OAuthClient, Route, TestServer, TestServerConfig};
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

#[tokio::test]
async fn key_lifecycle_with_api_token() {
    let server = TestServer::start(TestServerConfig::default().with_policy(common::KEN_POLICY)).await;
    let api = Api::new(&server, server.api_token());

    let response = api.post_json("tailnet/-/keys", &key_request(&["tag:ken-sandbox"])).await;
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.expect("JSON");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(created["key"].as_str().expect("key").starts_with("tskey-auth-"));
    assert_eq!(created["description"], "ken sandbox abc123");
    assert_eq!(created["capabilities"]["devices"]["create"]["tags"], json!(["tag:ken-sandbox"]));
    assert!(created["created"].is_string());
    assert!(created["expires"].is_string());

    let got: Value = api.get(&format!("tailnet/-/keys/{id}")).await.json().await.expect("JSON");
    assert_eq!(got["invalid"], false);
    assert!(got.get("key").is_none(), "GET must not return the secret key");

    let listed: Value = api.get("tailnet/example.com/keys").await.json().await.expect("JSON");
    assert_eq!(listed["keys"][0]["id"], id.as_str());
    assert_eq!(listed["keys"][0]["description"], "ken sandbox abc123");

    let revoked = api.delete(&format!("tailnet/-/keys/{id}")).await;
    assert_eq!(revoked.status(), 200);
    let got: Value = api.get(&format!("tailnet/-/keys/{id}")).await.json().await.expect("JSON");
    assert_eq!(got["invalid"], true);
    assert!(server.key(&id).expect("stored").is_revoked());

    let missing = api.get("tailnet/-/keys/kNOPECNTRL").await;
    assert_eq!(missing.status(), 404);
    server.assert_no_violations();
}

#[tokio::test]
async fn expired_key_is_invalid() {
    let server = TestServer::start(TestServerConfig::default().with_policy(common::KEN_POLICY)).await;
    let api = Api::new(&server, server.api_token());
    let created: Value = api
        .post_json("tailnet/-/keys", &key_request(&["tag:ken-sandbox"]))
        .await
        .json()
        .await
        .expect("JSON");
    let id = created["id"].as_str().expect("id");
    assert!(server.expire_key(id));
    let got: Value = api.get(&format!("tailnet/-/keys/{id}")).await.json().await.expect("JSON");
    assert_eq!(got["invalid"], true);
}

#[tokio::test]
async fn unknown_tailnet_is_404() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());
    assert_eq!(api.get("tailnet/other.org/keys").await.status(), 404);
    assert_eq!(api.get("tailnet/other.org/devices").await.status(), 404);
    assert_eq!(api.get("tailnet/other.org/acl").await.status(), 404);
}

#[tokio::test]
async fn oauth_tag_mismatch_message() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let token = oauth_token(&server).await;
    let api = Api::new(&server, &token);

    let response = api.post_json("tailnet/-/keys", &key_request(&["tag:other"])).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["message"], "requested tags [tag:other] are invalid or not permitted");

    let own = api.post_json("tailnet/-/keys", &key_request(&["tag:ken-sandbox"])).await;
    assert_eq!(own.status(), 200);
    let created: Value = own.json().await.expect("JSON");
    let key = server.key(created["id"].as_str().expect("id")).expect("stored");
    assert_eq!(key.minted_by_oauth_client.as_deref(), Some(server.oauth_client().id.as_str()));
    server.assert_no_violations();
}

#[tokio::test]
async fn oauth_owned_tags_allowed() {
    let policy = r#"{"tagOwners": {"tag:ken-sandbox": [], "tag:child": ["tag:ken-sandbox"]}}"#;
    let server = TestServer::start(TestServerConfig::default().with_policy(policy)).await;
    let api = Api::new(&server, &oauth_token(&server).await);
    let response = api.post_json("tailnet/-/keys", &key_request(&["tag:child"])).await;
    assert_eq!(response.status(), 200);
    let untagged = api.post_json("tailnet/-/keys", &key_request(&[])).await;
    assert_eq!(untagged.status(), 400);
}

#[tokio::test]
async fn api_token_tags_need_tag_owners() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());
    let response = api.post_json("tailnet/-/keys", &key_request(&["tag:ken-sandbox"])).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["message"], "requested tags [tag:ken-sandbox] are invalid or not permitted");
}

#[tokio::test]
async fn strict_key_request_checks() {
    let server = TestServer::start(TestServerConfig::default().with_policy(common::KEN_POLICY)).await;
    let api = Api::new(&server, server.api_token());

    let mut unknown = key_request(&["tag:ken-sandbox"]);
    unknown["capabilities"]["devices"]["create"]["bogus"] = json!(true);
    assert_eq!(api.post_json("tailnet/-/keys", &unknown).await.status(), 400);

    let missing = json!({"expirySeconds": 600});
    assert_eq!(api.post_json("tailnet/-/keys", &missing).await.status(), 400);

    let mut long = key_request(&["tag:ken-sandbox"]);
    long["description"] = json!("x".repeat(51));
    assert_eq!(api.post_json("tailnet/-/keys", &long).await.status(), 400);

    let mut punctuation = key_request(&["tag:ken-sandbox"]);
    punctuation["description"] = json!("ken: sandbox");
    assert_eq!(api.post_json("tailnet/-/keys", &punctuation).await.status(), 400);

    let wrong_type = api
        .http
        .post(api.url("tailnet/-/keys"))
        .bearer_auth(&api.token)
        .header(CONTENT_TYPE, "text/plain")
        .body(key_request(&["tag:ken-sandbox"]).to_string())
        .send()
        .await
        .expect("reaches server");
    assert_eq!(wrong_type.status(), 415);

    let violations = server.take_violations();
    assert_eq!(violations.len(), 5, "{violations:?}");
    assert!(violations.iter().all(|v| v.route == Route::CreateKey));
    assert!(server.keys().is_empty());
}

#[tokio::test]
async fn auth_header_checks() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v2/tailnet/-/devices", server.api_url());

    let none = http.get(&url).send().await.expect("reaches server");
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.expect("JSON");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    let wrong = http.get(&url).bearer_auth("tskey-api-nope").send().await.expect("reaches");
    assert_eq!(wrong.status(), 401);

    let basic = http
        .get(&url)
        .basic_auth(server.api_token(), Some(""))
        .send()
        .await
        .expect("reaches");
    assert_eq!(basic.status(), 200);
    assert_eq!(server.take_violations().len(), 2);

    let last = server.requests().pop().expect("logged");
    assert_eq!(last.auth, AuthKind::ApiTokenBasic);
    for request in server.requests() {
        assert!(!request.body.contains(server.api_token()));
    }
}

#[tokio::test]
async fn oauth_token_endpoint_checks() {
    let client = OAuthClient::generate(&["devices:core:read"], &["tag:ken-sandbox"]);
    let config = TestServerConfig::default()
        .with_oauth_client(client.clone())
        .with_oauth_token_lifetime(Duration::from_secs(7));
    let server = TestServer::start(config).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v2/oauth/token", server.api_url());

    let bad_secret = http
        .post(&url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("client_id={}&client_secret=tskey-client-wrong", client.id))
        .send()
        .await
        .expect("reaches");
    assert_eq!(bad_secret.status(), 401);
    let body: Value = bad_secret.json().await.expect("JSON");
    assert_eq!(body["message"], "API token invalid");

    let json_body = http
        .post(&url)
        .json(&json!({"client_id": client.id, "client_secret": client.secret}))
        .send()
        .await
        .expect("reaches");
    assert_eq!(json_body.status(), 415);
    assert_eq!(server.take_violations().len(), 1);

    let ok = http
        .post(&url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("client_id={}&client_secret={}", client.id, client.secret))
        .send()
        .await
        .expect("reaches");
    assert_eq!(ok.status(), 200);
    let token: Value = ok.json().await.expect("JSON");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 7);
    assert_eq!(token["scope"], "devices:core:read");
    let access = token["access_token"].as_str().expect("token");

    let api = Api::new(&server, access);
    assert_eq!(api.get("tailnet/-/devices").await.status(), 200);
    assert_eq!(api.get("tailnet/-/keys").await.status(), 403, "no auth_keys scope");
    assert_eq!(api.get("tailnet/-/acl").await.status(), 403, "no policy_file scope");

    server.expire_oauth_tokens();
    let expired = api.get("tailnet/-/devices").await;
    assert_eq!(expired.status(), 401);
    assert_eq!(server.take_violations().len(), 1);

    for request in server.requests() {
        assert!(!request.body.contains(&client.secret), "secret logged: {}", request.body);
    }
    assert_eq!(server.oauth_tokens_issued(), 1);
}

#[tokio::test]
async fn devices_list_get_delete_tags() {
    let server = TestServer::start(TestServerConfig::default().with_policy(common::KEN_POLICY)).await;
    let api = Api::new(&server, server.api_token());
    let stale = server.add_device(
        DeviceSpec::new("old-sandbox", &["tag:ken-sandbox"]).offline_since(time::Duration::hours(3)),
    );
    let laptop = server.add_device(DeviceSpec::new("laptop", &[]));

    let listed: Value = api.get("tailnet/-/devices?fields=all").await.json().await.expect("JSON");
    let devices = listed["devices"].as_array().expect("array");
    assert_eq!(devices.len(), 2);
    let first = &devices[0];
    assert_eq!(first["nodeId"], stale.node_id.as_str());
    assert_eq!(first["name"], "old-sandbox.tail1234.ts.net");
    assert_eq!(first["hostname"], "old-sandbox");
    assert_eq!(first["connectedToControl"], false);
    assert_eq!(first["isEphemeral"], false);
    assert_eq!(first["tags"], json!(["tag:ken-sandbox"]));
    let addresses = first["addresses"].as_array().expect("addresses");
    assert!(addresses[0].as_str().is_some_and(|a| a.starts_with("100.")));
    assert!(addresses[1].as_str().is_some_and(|a| a.starts_with("fd7a:115c:a1e0:")));
    for field in ["id", "authorized", "lastSeen", "created", "expires"] {
        assert!(first.get(field).is_some(), "missing {field}");
    }

    let default_fields: Value = api.get("tailnet/-/devices").await.json().await.expect("JSON");
    assert!(default_fields["devices"][0].get("connectedToControl").is_none());

    let got = api.get(&format!("device/{}", laptop.node_id)).await;
    assert_eq!(got.status(), 200);
    let by_id = api.get(&format!("device/{}", laptop.id)).await;
    assert_eq!(by_id.status(), 200);

    let tags = api
        .post_json(&format!("device/{}/tags", laptop.node_id), &json!({"tags": ["tag:ken-sandbox"]}))
        .await;
    assert_eq!(tags.status(), 200);
    assert_eq!(server.device(&laptop.node_id).expect("exists").tags, vec!["tag:ken-sandbox"]);

    let deleted = api.delete(&format!("device/{}", stale.node_id)).await;
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.text().await.expect("body"), "");
    let again = api.delete(&format!("device/{}", stale.node_id)).await;
    assert_eq!(again.status(), 404);
    assert_eq!(server.devices().len(), 1);
    server.assert_no_violations();
}

#[tokio::test]
async fn injected_failures_and_retry_after() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());
    server.fail_next(Route::ListDevices, 2, 503, Some(3));

    let first = api.get("tailnet/-/devices").await;
    assert_eq!(first.status(), 503);
    assert_eq!(first.headers()["retry-after"], "3");
    assert_eq!(api.get("tailnet/-/keys").await.status(), 200, "other routes unaffected");
    assert_eq!(api.get("tailnet/-/devices").await.status(), 503);
    assert_eq!(api.get("tailnet/-/devices").await.status(), 200);
}

#[tokio::test]
async fn rate_limit_returns_429() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());
    server.set_rate_limit(2, Duration::from_secs(3600));
    assert_eq!(api.get("tailnet/-/devices").await.status(), 200);
    assert_eq!(api.get("tailnet/-/devices").await.status(), 200);
    let limited = api.get("tailnet/-/devices").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    server.clear_rate_limit();
    assert_eq!(api.get("tailnet/-/devices").await.status(), 200);
}

#[tokio::test]
async fn oauth_scope_and_tags_requests() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let client = server.oauth_client().clone();
    let http = reqwest::Client::new();
    let url = format!("{}/api/v2/oauth/token", server.api_url());
    let request = |extra: &str| {
        http.post(&url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!("client_id={}&client_secret={}{extra}", client.id, client.secret))
            .send()
    };

    let narrowed = request("&scope=devices%3Acore%3Aread").await.expect("reaches");
    assert_eq!(narrowed.status(), 200);
    let body: Value = narrowed.json().await.expect("JSON");
    assert_eq!(body["scope"], "devices:core:read");
    let api = Api::new(&server, body["access_token"].as_str().expect("token"));
    assert_eq!(api.get("tailnet/-/devices").await.status(), 200);
    assert_eq!(api.delete("device/nNOPECNTRL").await.status(), 403, "read scope cannot delete");

    let too_broad = request("&scope=dns").await.expect("reaches");
    assert_eq!(too_broad.status(), 403);
    let body: Value = too_broad.json().await.expect("JSON");
    assert_eq!(body["message"], "OAuth client cannot grant scopes \"dns\"");

    let foreign_tag = request("&tags=tag%3Aprod").await.expect("reaches");
    assert_eq!(foreign_tag.status(), 400);
    server.assert_no_violations();
}

#[tokio::test]
async fn unknown_route_is_violation() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let api = Api::new(&server, server.api_token());
    assert_eq!(api.get("tailnet/-/nonsense").await.status(), 404);
    let violations = server.take_violations();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].route, Route::Unknown);
}

#[tokio::test]
async fn debug_output_hides_secrets() {
    let config = TestServerConfig::default().with_policy(common::KEN_POLICY);
    let secret = config.oauth_clients[0].secret.clone();
    let token = config.api_tokens[0].token.clone();
    assert!(!format!("{config:?}").contains(&secret));
    assert!(!format!("{config:?}").contains(&token));

    let server = TestServer::start(config).await;
    let api = Api::new(&server, server.api_token());
    let created: Value = api
        .post_json("tailnet/-/keys", &key_request(&["tag:ken-sandbox"]))
        .await
        .json()
        .await
        .expect("JSON");
    let key_value = created["key"].as_str().expect("key");
    let stored = server.key(created["id"].as_str().expect("id")).expect("stored");
    assert!(!format!("{stored:?}").contains(key_value));
    assert!(!format!("{server:?}").contains(&token));
    for request in server.requests() {
        assert!(!format!("{request:?}").contains(&token));
    }
}
