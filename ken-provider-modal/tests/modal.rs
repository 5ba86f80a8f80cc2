//! Modal-specific behaviour of `ModalProvider` against the Modal test server:
//! retried creates, rate limits, late tasks, resumed output streams, and all of
//! those faults in one launch.

mod support;

use std::time::Duration;

use ken_core::{Error, ExecRequest, SandboxProvider, SandboxSpec};
use ken_provider_modal::proto::paths;
use ken_testserver_modal::{FailMode, ModalTestServerConfig, StreamBehavior};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_after_create_makes_exactly_one_sandbox() {
    let Some(server) = support::server("unavailable_after_create", ModalTestServerConfig::new()).await else {
        return;
    };
    let provider = support::provider(&server);
    let image = support::kit_image(&provider).await;
    server.fail_once(paths::SANDBOX_CREATE, FailMode::AfterHandling);

    let info = provider.create(&support::spec("once-1", &image)).await.expect("create after one UNAVAILABLE");
    let creates = server.requests_for("SandboxCreate");
    assert_eq!(creates.len(), 2, "one failed attempt and one retry: {creates:?}");
    assert_eq!(creates[0].idempotency_key, creates[1].idempotency_key);
    let named: Vec<_> = server
        .sandboxes()
        .into_iter()
        .filter(|s| s.definition.name.as_deref() == Some("once-1"))
        .collect();
    assert_eq!(named.len(), 1, "a retried create made {} sandboxes", named.len());
    assert_eq!(named[0].id, info.id);
    provider.destroy(&info.name).await.unwrap();
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_gives_a_clear_retryable_error() {
    let Some(server) = support::server("rate_limit", ModalTestServerConfig::new()).await else {
        return;
    };
    let provider = support::provider(&server);
    let image = support::kit_image(&provider).await;
    server.set_sandbox_rate_limit(Some(5));

    let specs: Vec<SandboxSpec> = (0..10).map(|i| support::spec(&format!("rate-{i}"), &image)).collect();
    let results = futures::future::join_all(specs.iter().map(|s| provider.create(s))).await;
    let limited: Vec<&Error> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|e| matches!(e, Error::RateLimited { .. }))
        .collect();
    let other: Vec<&Error> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|e| !matches!(e, Error::RateLimited { .. }))
        .collect();
    assert!(other.is_empty(), "errors other than the rate limit: {other:?}");
    assert!(!limited.is_empty(), "10 creates at once passed a 5/s limit");
    for error in &limited {
        assert!(error.is_retryable());
        assert!(error.to_string().contains("rate limit"), "{error}");
    }
    for spec in &specs {
        provider.destroy(&spec.name).await.unwrap();
    }
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_waits_for_a_late_task() {
    let config = ModalTestServerConfig::new().with_task_delay(Duration::from_secs(3));
    let Some(server) = support::server("late_task", config).await else {
        return;
    };
    let provider = support::provider(&server);
    let image = support::kit_image(&provider).await;
    let info = provider.create(&support::spec("late-1", &image)).await.unwrap();
    assert_eq!(info.state, ken_core::sandbox::SandboxState::Running);
    let polls = server.requests_for("SandboxGetTaskId").len();
    assert!(polls >= 2, "the task id was polled {polls} times");
    provider.destroy(&info.name).await.unwrap();
    provider.destroy(&info.name).await.unwrap();
    let gone = provider.get(&info.name).await;
    assert!(matches!(gone, Err(ref e) if e.is_not_found()), "{gone:?}");
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_output_streams_deliver_every_byte() {
    let Some(server) = support::server("interrupted_streams", ModalTestServerConfig::new()).await else {
        return;
    };
    let provider = support::provider(&server);
    let image = support::kit_image(&provider).await;
    let info = provider.create(&support::spec("streams-1", &image)).await.unwrap();
    let mut streams = StreamBehavior::complete();
    streams.end_after = Some(Duration::from_millis(200));
    streams.end_after_items = Some(3);
    streams.empty_batches = true;
    streams.end_with_unavailable = true;
    server.set_streams(streams);
    let output = provider
        .exec(&info.name, ExecRequest::shell("seq 1 200000; echo done >&2; exit 3"))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    assert_eq!(output.stdout.len(), expected.len());
    assert!(output.stdout == expected.as_bytes(), "stdout differs after resumed streams");
    assert_eq!(output.stderr_text(), "done\n");
    assert_eq!(output.status.code, Some(3));
    provider.destroy(&info.name).await.unwrap();
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_everywhere_keep_output_complete() {
    let Some(server) = support::server("faults_everywhere", ModalTestServerConfig::new()).await else {
        return;
    };
    let provider = support::provider(&server);
    // Every call of a launch fails once with UNAVAILABLE after the server acted on
    // it, and every stream ends early, after empty batches.
    let methods = [
        "AppGetOrCreate",
        "ImageGetOrCreate",
        "SecretGetOrCreate",
        "SandboxCreate",
        "SandboxTagsSet",
        "SandboxGetTaskId",
        "TaskGetCommandRouterAccess",
        "TaskExecStart",
        "TaskExecStdinWrite",
        "TaskExecWait",
    ];
    for method in methods {
        server.fail_once(method, FailMode::AfterHandling);
    }
    let mut streams = StreamBehavior::complete();
    streams.end_after_items = Some(2);
    streams.empty_batches = true;
    streams.end_with_unavailable = true;
    server.set_streams(streams);

    let image = support::kit_image(&provider).await;
    let mut spec = support::spec("faults-1", &image);
    spec.env.insert("KEN_FAULTS".to_owned(), "on".to_owned());
    let info = provider.create(&spec).await.expect("create despite faults");

    let input: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let output = provider
        .exec(
            &info.name,
            ExecRequest::shell("cat; seq 1 50000 >&2; printenv KEN_FAULTS >&2; exit 3").stdin(input.clone()),
        )
        .await
        .expect("exec despite faults")
        .output()
        .await
        .expect("output despite faults");
    assert!(output.stdout == input, "stdin came back with {} of {} bytes", output.stdout.len(), input.len());
    let expected: String = (1..=50_000).map(|i| format!("{i}\n")).chain(["on\n".to_owned()]).collect();
    assert!(output.stderr_text() == expected, "stderr differs after resumed streams");
    assert_eq!(output.status.code, Some(3));

    for method in methods {
        let injected = server.requests_for(method).iter().filter(|r| r.injected).count();
        // One fault per logical call: a method called several times (task polls)
        // fails once for each.
        assert!(injected >= 1, "{method} was never failed: the fault did not fire");
    }
    let named: Vec<_> = server
        .sandboxes()
        .into_iter()
        .filter(|s| s.definition.name.as_deref() == Some("faults-1"))
        .collect();
    assert_eq!(named.len(), 1, "retries made {} sandboxes", named.len());
    let key = named[0].idempotency_key.clone().expect("SandboxCreate carries a key");
    assert_eq!(server.creates_for_key(&key), 1);
    // The test server deduplicates only SandboxCreate by key (an extra ephemeral
    // secret is harmless); the client must still send one key per logical call.
    let secret_calls = server.requests_for("SecretGetOrCreate");
    assert_eq!(secret_calls.len(), 2, "{secret_calls:?}");
    assert_eq!(secret_calls[0].idempotency_key, secret_calls[1].idempotency_key);
    provider.destroy(&info.name).await.unwrap();
    server.assert_no_violations();
}

/// Settings as a user sets them in the environment, aimed at `server`.
fn settings_from_env(server: &ken_testserver_modal::ModalTestServer, secret: &str, environment: &str) -> ken_provider_modal::ModalConfig {
    let variables: std::collections::HashMap<String, String> = [
        ("MODAL_TOKEN_ID", server.token_id()),
        ("MODAL_TOKEN_SECRET", secret),
        ("MODAL_SERVER_URL", server.url()),
        ("MODAL_ENVIRONMENT", environment),
    ]
    .iter()
    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
    .collect();
    ken_provider_modal::ModalConfig::resolve(&variables, None).expect("complete settings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_error_names_its_id_and_origin() {
    let Some(server) = support::server("wrong_token", ModalTestServerConfig::new()).await else {
        return;
    };
    let config = settings_from_env(&server, "as-wrong-secret", server.environment());
    let error = ken_provider_modal::ModalProvider::connect(config).await.expect_err("a wrong secret must fail");
    let text = error.to_string();
    assert!(matches!(error, Error::Unauthenticated { .. }), "{error:?}");
    assert!(text.contains("invalid token id or token secret"), "{text}");
    assert!(text.contains(&format!("token id {} from MODAL_TOKEN_ID and MODAL_TOKEN_SECRET", server.token_id())), "{text}");
    assert_eq!(text.matches("MODAL_TOKEN_SECRET").count(), 2, "the hint is repeated: {text}");
    assert!(!text.contains("as-wrong-secret"), "{text}");
    assert!(!text.contains(".modal.toml"), "{text}");
    assert_eq!(server.rejected_credentials(), ["AuthTokenGet"]);
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_environment_names_the_variable() {
    let Some(server) = support::server("unknown_environment", ModalTestServerConfig::new()).await else {
        return;
    };
    let secret = server.token_secret().expose().to_owned();
    let config = settings_from_env(&server, &secret, "no-such-env");
    let provider = ken_provider_modal::ModalProvider::connect(config).await.expect("the token is right");
    let error = provider
        .list(&ken_core::labels::LabelSelector::managed())
        .await
        .expect_err("an unknown environment must fail");
    let text = error.to_string();
    assert!(matches!(error, Error::InvalidInput { .. }), "{error:?}");
    assert!(text.contains("MODAL_ENVIRONMENT"), "{text}");
    assert!(text.contains("\"no-such-env\""), "{text}");
    assert!(!text.contains("Modal object"), "{text}");
    server.assert_no_violations();
}
