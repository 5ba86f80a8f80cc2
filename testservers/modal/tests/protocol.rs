//! Header and field checks of the control plane and the router, without sandboxes.
//! The server needs root (it checks for it at start); no Docker engine is used.

mod support;

use std::time::Duration;

use ken_provider_modal::proto::headers;
use ken_provider_modal::proto::modal_client::*;
use ken_provider_modal::proto::paths;
use ken_provider_modal::proto::task_command_router::*;
use ken_testserver_modal::{ModalTestServer, ModalTestServerConfig};
use support::{new_key, raw_unary, Client};
use tonic::Code;

async fn server() -> (ModalTestServer, Client) {
    support::init_tracing();
    let server = ModalTestServer::start(ModalTestServerConfig::new().with_token("ak-test", "as-very-secret"))
        .await
        .expect("starting the test server");
    let client = Client::connect(&server).await;
    (server, client)
}

fn app_request(name: &str, creation: ObjectCreationType) -> AppGetOrCreateRequest {
    AppGetOrCreateRequest {
        app_name: name.to_owned(),
        environment_name: String::new(),
        object_creation_type: creation as i32,
    }
}

#[tokio::test]
async fn correct_client_has_no_violations() {
    let (server, mut client) = server().await;
    let first = client.app("ken").await;
    let second = client.app("ken").await;
    assert_eq!(first, second, "CREATE_IF_MISSING must return the existing app");
    assert!(first.starts_with("ap-"));
    server.assert_no_violations();
    assert_eq!(server.apps().len(), 1);
}

#[tokio::test]
async fn missing_auth_token_rejected() {
    let (server, client) = server().await;
    let request = client.request(app_request("ken", ObjectCreationType::CreateIfMissing), Some(&new_key()), 0);
    let result: Result<AppGetOrCreateResponse, _> = raw_unary(&client.channel, paths::APP_GET_OR_CREATE, request).await;
    let status = result.expect_err("a call without an auth token must fail");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains(headers::AUTH_TOKEN), "message {:?}", status.message());
    assert_eq!(server.violations().len(), 1);
}

#[tokio::test]
async fn wrong_token_secret_rejected() {
    let (server, mut client) = server().await;
    client.authenticate().await;
    client.token_secret = "as-wrong".to_owned();
    let result: Result<AppGetOrCreateResponse, _> = client
        .call(paths::APP_GET_OR_CREATE, app_request("ken", ObjectCreationType::CreateIfMissing))
        .await;
    let status = result.expect_err("a wrong secret must fail");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!status.message().contains("as-very-secret"));
    assert!(!status.message().contains("as-wrong"));
    assert!(!format!("{server:?}").contains("as-very-secret"));
    assert!(!format!("{:?}", server.token_secret()).contains("as-very-secret"));
    assert_eq!(status.message(), "invalid token id or token secret");
    assert_eq!(server.rejected_credentials(), ["AppGetOrCreate"]);
    server.assert_no_violations();
}

#[tokio::test]
async fn missing_client_headers_rejected() {
    let (server, client) = server().await;
    let mut request = tonic::Request::new(AuthTokenGetRequest {});
    request.metadata_mut().insert(headers::TOKEN_ID, "ak-test".parse().unwrap());
    request.metadata_mut().insert(headers::TOKEN_SECRET, "as-very-secret".parse().unwrap());
    let result: Result<AuthTokenGetResponse, _> = raw_unary(&client.channel, paths::AUTH_TOKEN_GET, request).await;
    assert_eq!(result.expect_err("no client type").code(), Code::FailedPrecondition);
    assert!(server.violations()[0].message.contains(headers::CLIENT_TYPE));
}

#[tokio::test]
async fn auth_token_on_auth_token_get_is_violation() {
    let (server, mut client) = server().await;
    client.authenticate().await;
    let request = client.request(AuthTokenGetRequest {}, Some(&new_key()), 0);
    let result: Result<AuthTokenGetResponse, _> = raw_unary(&client.channel, paths::AUTH_TOKEN_GET, request).await;
    assert!(result.is_ok());
    let violations = server.violations();
    assert_eq!(violations.len(), 1);
    assert!(violations[0].message.contains("AuthTokenGet itself"));
}

#[tokio::test]
async fn expired_auth_token_rejected() {
    let (server, mut client) = server().await;
    server.set_auth_token_ttl(Duration::ZERO);
    client.authenticate().await;
    let result: Result<AppGetOrCreateResponse, _> = client
        .call(paths::APP_GET_OR_CREATE, app_request("ken", ObjectCreationType::CreateIfMissing))
        .await;
    let status = result.expect_err("an expired token must fail");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"));
}

#[tokio::test]
async fn idempotency_key_must_be_uuid_v4() {
    let (server, mut client) = server().await;
    let result: Result<AppGetOrCreateResponse, _> = client
        .call_with(paths::APP_GET_OR_CREATE, app_request("ken", ObjectCreationType::CreateIfMissing), "key-1", 0)
        .await;
    assert_eq!(result.expect_err("not a UUID").code(), Code::InvalidArgument);
    assert!(server.violations()[0].message.contains(headers::IDEMPOTENCY_KEY));
}

#[tokio::test]
async fn reused_first_attempt_is_violation() {
    let (server, mut client) = server().await;
    let key = new_key();
    let request = app_request("ken", ObjectCreationType::CreateIfMissing);
    let first: Result<AppGetOrCreateResponse, _> =
        client.call_with(paths::APP_GET_OR_CREATE, request.clone(), &key, 0).await;
    assert!(first.is_ok());
    let second: Result<AppGetOrCreateResponse, _> =
        client.call_with(paths::APP_GET_OR_CREATE, request.clone(), &key, 0).await;
    assert_eq!(second.expect_err("attempt 0 twice").code(), Code::InvalidArgument);
    let retry: Result<AppGetOrCreateResponse, _> =
        client.call_with(paths::APP_GET_OR_CREATE, request, &new_key(), 1).await;
    assert_eq!(retry.expect_err("attempt 1 first").code(), Code::InvalidArgument);
    assert_eq!(server.violations().len(), 2);
}

#[tokio::test]
async fn unavailable_once_per_key() {
    let (server, mut client) = server().await;
    server.fail_once("AppGetOrCreate", ken_testserver_modal::FailMode::BeforeHandling);
    let (result, key) = client
        .call_retrying::<_, AppGetOrCreateResponse>(
            paths::APP_GET_OR_CREATE,
            app_request("ken", ObjectCreationType::CreateIfMissing),
        )
        .await;
    assert!(result.is_ok(), "the retry must succeed: {result:?}");
    let attempts: Vec<_> = server
        .requests_for("AppGetOrCreate")
        .into_iter()
        .filter(|request| request.idempotency_key.as_deref() == Some(key.as_str()))
        .map(|request| (request.retry_attempt, request.code, request.injected))
        .collect();
    assert_eq!(
        attempts,
        vec![(Some(0), Code::Unavailable, true), (Some(1), Code::Ok, false)]
    );
    server.assert_no_violations();
}

#[tokio::test]
async fn lookup_of_missing_app_not_found() {
    let (server, mut client) = server().await;
    let result: Result<AppGetOrCreateResponse, _> = client
        .call(paths::APP_GET_OR_CREATE, app_request("nope", ObjectCreationType::Unspecified))
        .await;
    assert_eq!(result.expect_err("lookup only").code(), Code::NotFound);
    let wrong_env: Result<AppGetOrCreateResponse, _> = client
        .call(
            paths::APP_GET_OR_CREATE,
            AppGetOrCreateRequest {
                environment_name: "staging".to_owned(),
                ..app_request("ken", ObjectCreationType::CreateIfMissing)
            },
        )
        .await;
    let status = wrong_env.expect_err("unknown environment");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("staging"));
    server.assert_no_violations();
}

#[tokio::test]
async fn ephemeral_secret_stored() {
    let (server, mut client) = server().await;
    let response: SecretGetOrCreateResponse = client
        .call(
            paths::SECRET_GET_OR_CREATE,
            SecretGetOrCreateRequest {
                environment_name: String::new(),
                object_creation_type: ObjectCreationType::Ephemeral as i32,
                env_dict: [("TOKEN".to_owned(), "s3cr3t-value".to_owned())].into(),
            },
        )
        .await
        .expect("SecretGetOrCreate");
    let secrets = server.secrets();
    assert_eq!(secrets.len(), 1);
    assert_eq!(secrets[0].id, response.secret_id);
    assert_eq!(secrets[0].env["TOKEN"].expose(), "s3cr3t-value");
    assert!(!format!("{secrets:?}").contains("s3cr3t-value"));
    server.assert_no_violations();
}

#[tokio::test]
async fn sandbox_create_checks_fields() {
    let (server, mut client) = server().await;
    let app_id = client.app("ken").await;
    let cases = [
        (SandboxCreateRequest { app_id: String::new(), definition: Some(support::definition("im-x")) }, Code::InvalidArgument),
        (SandboxCreateRequest { app_id: app_id.clone(), definition: None }, Code::InvalidArgument),
        (
            SandboxCreateRequest {
                app_id: app_id.clone(),
                definition: Some(Sandbox { timeout_secs: 86_401, ..support::definition("im-x") }),
            },
            Code::InvalidArgument,
        ),
        (
            SandboxCreateRequest {
                app_id: app_id.clone(),
                definition: Some(Sandbox { workdir: Some("relative".to_owned()), ..support::definition("im-x") }),
            },
            Code::InvalidArgument,
        ),
        (SandboxCreateRequest { app_id: app_id.clone(), definition: Some(support::definition("im-missing")) }, Code::NotFound),
    ];
    for (request, expected) in cases {
        let result: Result<SandboxCreateResponse, _> = client.call(paths::SANDBOX_CREATE, request.clone()).await;
        assert_eq!(result.expect_err("invalid create").code(), expected, "request {request:?}");
    }
    assert_eq!(server.violations().len(), 4);
    assert!(server.sandboxes().is_empty());
}

#[tokio::test]
async fn router_rejects_bad_jwt() {
    let (server, _client) = server().await;
    let channel = support::channel(server.router_url()).await;
    let mut request = tonic::Request::new(TaskExecPollRequest {
        task_id: "ta-x".to_owned(),
        exec_id: new_key(),
    });
    request
        .metadata_mut()
        .insert(headers::AUTHORIZATION, "Bearer not.a.jwt".parse().unwrap());
    let result: Result<TaskExecPollResponse, _> = raw_unary(&channel, paths::TASK_EXEC_POLL, request).await;
    assert_eq!(result.expect_err("bad JWT").code(), Code::Unauthenticated);

    let mut request = tonic::Request::new(TaskExecPollRequest::default());
    request.metadata_mut().insert(headers::TOKEN_SECRET, "as-very-secret".parse().unwrap());
    let result: Result<TaskExecPollResponse, _> = raw_unary(&channel, paths::TASK_EXEC_POLL, request).await;
    assert_eq!(result.expect_err("no JWT").code(), Code::Unauthenticated);
    let violations = server.violations();
    assert!(violations.iter().any(|violation| violation.message.contains(headers::TOKEN_SECRET)));
}

#[tokio::test]
async fn unknown_method_unimplemented() {
    let (server, mut client) = server().await;
    let result: Result<AuthTokenGetResponse, _> = client.call("/modal.client.ModalClient/NoSuchMethod", AuthTokenGetRequest {}).await;
    assert_eq!(result.expect_err("unknown method").code(), Code::Unimplemented);
    assert_eq!(server.requests_for("NoSuchMethod").len(), 1);
}
