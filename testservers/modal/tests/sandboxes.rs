//! Sandboxes end to end: image builds, creation, execs, isolation and cleanup.
//! These tests need root and a Docker engine.

mod support;

use std::time::Duration;

use ken_provider_modal::proto::modal_client::generic_result::GenericStatus;
use ken_provider_modal::proto::modal_client::*;
use ken_provider_modal::proto::paths;
use ken_provider_modal::proto::task_command_router::ExitStatus;
use ken_testserver_modal::{FailMode, ModalTestServer, ModalTestServerConfig, StreamBehavior};
use support::{definition, host_leftovers, Client};
use tonic::Code;

const BASE: &str = "FROM debian:bookworm-slim";

/// Starts a server and builds the base image, or returns `None` (skipped) when the
/// Docker engine is unreachable and `KEN_REQUIRE_DOCKER` is not set.
async fn setup(test: &str, config: ModalTestServerConfig) -> Option<(ModalTestServer, Client, String, String)> {
    support::init_tracing();
    ken_core::testkit::require_docker_or_skip(test, ken_testserver_modal::docker_available().await)?;
    let server = ModalTestServer::start(config).await.expect("starting the test server");
    let mut client = Client::connect(&server).await;
    let app_id = client.app("tests").await;
    let (image_id, result, logs) = client.image(&app_id, &[BASE]).await;
    assert_eq!(result.status, GenericStatus::Success as i32, "base image build failed: {result:?}\n{logs}");
    Some((server, client, app_id, image_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_stdin_stdout_exit_code() {
    let Some((server, mut client, app_id, image_id)) = setup("exec_stdin_stdout_exit_code", ModalTestServerConfig::new()).await else {
        return;
    };
    let sandbox_id = client.create(&app_id, definition(&image_id)).await.expect("SandboxCreate");
    let task_id = client.task_id(&sandbox_id).await;
    let router = client.router(&task_id).await;

    let output = router
        .run(&["/bin/sh", "-c", "cat; echo err >&2; exit 3"], b"hello from stdin", None)
        .await;
    assert_eq!(output.stdout, b"hello from stdin");
    assert_eq!(output.stderr, b"err\n");
    assert_eq!(output.exit, Some(ExitStatus::Code(3)));

    let binary = router.sh(r"printf '\000\377\376'").await;
    assert_eq!(binary.stdout, vec![0u8, 0xff, 0xfe]);

    let workdir = router.sh("pwd; id -u; hostname").await;
    let text = String::from_utf8_lossy(&workdir.stdout).into_owned();
    assert!(text.starts_with("/\n0\nmodal-"), "unexpected pwd/id/hostname output {text:?}");

    client.terminate(&sandbox_id).await;
    let record = server.sandbox(&sandbox_id).expect("sandbox record");
    assert_eq!(record.result.map(|result| result.status), Some(GenericStatus::Terminated as i32));
    server.assert_no_violations();
    drop(server);
    let leftovers: Vec<String> = host_leftovers()
        .into_iter()
        .filter(|line| line.contains(&sandbox_id))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_output_resumed() {
    let Some((server, mut client, app_id, image_id)) = setup("large_output_resumed", ModalTestServerConfig::new()).await else {
        return;
    };
    let sandbox_id = client.create(&app_id, definition(&image_id)).await.expect("SandboxCreate");
    let task_id = client.task_id(&sandbox_id).await;
    let router = client.router(&task_id).await;

    let output = router
        .sh("head -c 10000000 /dev/zero | tr '\\0' 'x'; exit 3")
        .await;
    assert_eq!(output.stdout.len(), 10_000_000);
    assert!(output.stdout.iter().all(|byte| *byte == b'x'));
    assert_eq!(output.exit, Some(ExitStatus::Code(3)));
    assert!(
        output.stdout_streams > 1,
        "10 MB in 64 KiB items must take more than one stream, took {}",
        output.stdout_streams
    );
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_timeout_kills_group() {
    let Some((server, mut client, app_id, image_id)) = setup("exec_timeout_kills_group", ModalTestServerConfig::new()).await else {
        return;
    };
    let sandbox_id = client.create(&app_id, definition(&image_id)).await.expect("SandboxCreate");
    let task_id = client.task_id(&sandbox_id).await;
    let router = client.router(&task_id).await;

    let output = router
        .run(
            &["/bin/sh", "-c", "for i in 1 2 3; do echo $i; sleep 1; done; sleep 100 & wait"],
            b"",
            Some(5),
        )
        .await;
    assert_eq!(output.stdout, b"1\n2\n3\n");
    assert_eq!(output.exit, Some(ExitStatus::Signal(9)));

    let left = router.sh("for p in /proc/[0-9]*; do cat $p/cmdline; echo; done").await;
    let text = String::from_utf8_lossy(&left.stdout).replace('\0', " ");
    assert!(!text.contains("sleep 100"), "the timed-out exec left processes behind:\n{text}");
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_isolated_from_each_other() {
    let Some((server, mut client, app_id, image_id)) = setup("sandboxes_isolated_from_each_other", ModalTestServerConfig::new()).await else {
        return;
    };
    let a = client.create(&app_id, definition(&image_id)).await.expect("create a");
    let b = client.create(&app_id, definition(&image_id)).await.expect("create b");
    let task_a = client.task_id(&a).await;
    let task_b = client.task_id(&b).await;
    let router_a = client.router(&task_a).await;
    let router_b = client.router(&task_b).await;

    let listen = "bash -c 'exec 3<>/dev/tcp/127.0.0.1/9' 2>/dev/null; echo $?";
    let local = router_a.sh(listen).await;
    assert_eq!(String::from_utf8_lossy(&local.stdout), "1\n", "nothing listens on port 9 in sandbox a");

    let address_b = server.sandbox(&b).and_then(|record| record.address).expect("address of b");
    let probe = format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{address_b}/22' 2>/dev/null; echo $?");
    let reach = router_a.sh(&probe).await;
    let code = String::from_utf8_lossy(&reach.stdout).trim().to_owned();
    assert_ne!(code, "0", "sandbox a connected to sandbox b at {address_b}");

    let own = router_b.sh("hostname -I 2>/dev/null || cat /proc/net/fib_trie").await;
    assert!(
        String::from_utf8_lossy(&own.stdout).contains(&address_b.to_string()),
        "sandbox b does not have its address {address_b}"
    );
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_appears_after_delay() {
    let config = ModalTestServerConfig::new().with_task_delay(Duration::from_secs(2));
    let Some((server, mut client, app_id, image_id)) = setup("task_appears_after_delay", config).await else {
        return;
    };
    let sandbox_id = client.create(&app_id, definition(&image_id)).await.expect("SandboxCreate");
    let response: SandboxGetTaskIdResponse = client
        .call(
            paths::SANDBOX_GET_TASK_ID,
            SandboxGetTaskIdRequest { sandbox_id: sandbox_id.clone() },
        )
        .await
        .expect("SandboxGetTaskId");
    assert_eq!(response.task_id, None, "the task exists right after SandboxCreate");
    assert_eq!(response.task_result, None);
    let task_id = client.task_id(&sandbox_id).await;
    assert!(task_id.starts_with("ta-"));
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_create_makes_one_sandbox() {
    let Some((server, mut client, app_id, image_id)) = setup("retried_create_makes_one_sandbox", ModalTestServerConfig::new()).await else {
        return;
    };
    server.fail_once(paths::SANDBOX_CREATE, FailMode::AfterHandling);
    let (result, key) = client
        .call_retrying::<_, SandboxCreateResponse>(
            paths::SANDBOX_CREATE,
            SandboxCreateRequest { app_id: app_id.clone(), definition: Some(definition(&image_id)) },
        )
        .await;
    let sandbox_id = result.expect("the retried create succeeds").sandbox_id;
    assert_eq!(server.creates_for_key(&key), 1);
    assert_eq!(server.sandboxes().len(), 1);
    assert_eq!(server.sandboxes()[0].id, sandbox_id);
    assert_eq!(server.requests_for("SandboxCreate").len(), 2);
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_taken_name() {
    let config = ModalTestServerConfig::new().with_task_delay(Duration::from_secs(30));
    let Some((server, mut client, app_id, image_id)) = setup("rate_limit_and_taken_name", config).await else {
        return;
    };
    let named = Sandbox { name: Some("demo".to_owned()), ..definition(&image_id) };
    client.create(&app_id, named.clone()).await.expect("first named create");
    let taken = client.create(&app_id, named).await.expect_err("the name is taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    assert!(taken.message().contains("'demo'"), "message {:?}", taken.message());

    server.set_sandbox_rate_limit(Some(5));
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(client.create(&app_id, definition(&image_id)).await.map(|_| ()));
    }
    let limited: Vec<_> = codes.iter().filter_map(|result| result.as_ref().err()).collect();
    assert_eq!(limited.len(), 1, "exactly the 6th create within a second is limited: {codes:?}");
    assert_eq!(limited[0].code(), Code::ResourceExhausted);
    assert_eq!(limited[0].message(), "Sandbox creation rate limit (5/s) exceeded");
    assert!(!limited[0].details().is_empty(), "the status carries a retry policy detail");
    server.set_sandbox_rate_limit(None);
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_logs_resumed_and_failure() {
    let config = ModalTestServerConfig::new().with_streams(StreamBehavior::default().with_end_after_items(Some(2)));
    let Some((server, mut client, app_id, image_id)) = setup("image_logs_resumed_and_failure", config).await else {
        return;
    };
    let (result, logs, streams) = client.join_image(&image_id).await;
    assert_eq!(result.status, 1);
    assert!(streams > 1, "logs of several lines in streams of 2 items need more than one stream");
    assert!(logs.contains("Step 1/"), "the logs are docker build's output: {logs}");

    let (_, failed, failed_logs) = client.image(&app_id, &[BASE, "COPY missing.txt /missing.txt"]).await;
    assert_eq!(failed.status, GenericStatus::Failure as i32);
    assert!(failed.exception.contains("missing.txt"), "exception {:?}", failed.exception);
    assert!(failed_logs.contains("missing.txt"));
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_jwt_expiry_and_refetch() {
    let Some((server, mut client, app_id, image_id)) = setup("router_jwt_expiry_and_refetch", ModalTestServerConfig::new()).await else {
        return;
    };
    let sandbox_id = client.create(&app_id, definition(&image_id)).await.expect("SandboxCreate");
    let task_id = client.task_id(&sandbox_id).await;
    let router = client.router(&task_id).await;
    assert_eq!(router.sh("echo ok").await.stdout, b"ok\n");

    server.expire_router_tokens();
    let status = router.start(&["true"], None).await.expect_err("an expired JWT must fail");
    assert_eq!(status.code(), Code::Unauthenticated);
    let fresh = client.router(&task_id).await;
    assert_eq!(fresh.sh("echo again").await.stdout, b"again\n");
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tags_wait_and_task_result() {
    let Some((server, mut client, app_id, image_id)) = setup("list_tags_wait_and_task_result", ModalTestServerConfig::new()).await else {
        return;
    };
    let mut ids = Vec::new();
    for index in 0..12 {
        let id = client.create(&app_id, definition(&image_id)).await.expect("SandboxCreate");
        let tags = vec![SandboxTag { tag_name: "ken.owner".to_owned(), tag_value: format!("o{}", index % 2) }];
        let _: SandboxTagsSetResponse = client
            .call(paths::SANDBOX_TAGS_SET, SandboxTagsSetRequest { environment_name: String::new(), sandbox_id: id.clone(), tags })
            .await
            .expect("SandboxTagsSet");
        ids.push(id);
    }
    let got: SandboxTagsGetResponse = client
        .call(paths::SANDBOX_TAGS_GET, SandboxTagsGetRequest { sandbox_id: ids[1].clone() })
        .await
        .expect("SandboxTagsGet");
    assert_eq!(got.tags[0].tag_value, "o1");

    let mut listed = Vec::new();
    let mut before = 0.0;
    for _ in 0..10 {
        let page: SandboxListResponse = client
            .call(
                paths::SANDBOX_LIST,
                SandboxListRequest {
                    app_id: app_id.clone(),
                    before_timestamp: before,
                    environment_name: String::new(),
                    include_finished: false,
                    tags: vec![SandboxTag { tag_name: "ken.owner".to_owned(), tag_value: "o0".to_owned() }],
                },
            )
            .await
            .expect("SandboxList");
        let Some(last) = page.sandboxes.last() else { break };
        before = last.created_at;
        listed.extend(page.sandboxes.iter().map(|info| info.id.clone()));
    }
    let mut expected: Vec<String> = ids.iter().step_by(2).cloned().collect();
    expected.reverse();
    assert_eq!(listed, expected, "6 sandboxes with owner o0, newest first, over pages of 10");

    let ending = Sandbox { entrypoint_args: vec!["sh".to_owned(), "-c".to_owned(), "exit 7".to_owned()], ..definition(&image_id) };
    let ended = client.create(&app_id, ending).await.expect("SandboxCreate");
    let waited: SandboxWaitResponse = client
        .call(paths::SANDBOX_WAIT, SandboxWaitRequest { sandbox_id: ended.clone(), timeout: 30.0 })
        .await
        .expect("SandboxWait");
    let result = waited.result.expect("the sandbox finished");
    assert_eq!(result.status, GenericStatus::Failure as i32);
    assert_eq!(result.exitcode, 7);
    let task: SandboxGetTaskIdResponse = client
        .call(paths::SANDBOX_GET_TASK_ID, SandboxGetTaskIdRequest { sandbox_id: ended })
        .await
        .expect("SandboxGetTaskId");
    assert_eq!(task.task_result.map(|result| result.exitcode), Some(7));
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_and_snapshot() {
    let Some((server, mut client, app_id, image_id)) = setup("tunnels_and_snapshot", ModalTestServerConfig::new()).await else {
        return;
    };
    let with_port = Sandbox {
        open_ports: Some(PortSpecs { ports: vec![PortSpec { port: 8080, unencrypted: true }] }),
        ..definition(&image_id)
    };
    let sandbox_id = client.create(&app_id, with_port).await.expect("SandboxCreate");
    let task_id = client.task_id(&sandbox_id).await;
    let router = client.router(&task_id).await;
    let serve = "nohup perl -MIO::Socket::INET -e '$s=IO::Socket::INET->new(LocalPort=>8080,Listen=>5,ReuseAddr=>1) or die; while($c=$s->accept){print $c \"hello-tunnel\\n\"; close $c}' >/dev/null 2>&1 &";
    router.sh(serve).await;

    let tunnels: SandboxGetTunnelsResponse = client
        .call(paths::SANDBOX_GET_TUNNELS, SandboxGetTunnelsRequest { sandbox_id: sandbox_id.clone(), timeout: 10.0 })
        .await
        .expect("SandboxGetTunnels");
    let tunnel = &tunnels.tunnels[0];
    assert_eq!(tunnel.container_port, 8080);
    assert_eq!(tunnel.unencrypted_host.as_deref(), Some("127.0.0.1"));
    let port = tunnel.unencrypted_port.expect("unencrypted port") as u16;
    let mut answer = String::new();
    for _ in 0..50 {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::AsyncReadExt;
            answer.clear();
            let _ = stream.read_to_string(&mut answer).await;
            if answer == "hello-tunnel\n" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, "hello-tunnel\n");

    router.sh("echo kept > /root/snapshot.txt").await;
    let snapshot: SandboxSnapshotFsResponse = client
        .call(paths::SANDBOX_SNAPSHOT_FS, SandboxSnapshotFsRequest { sandbox_id: sandbox_id.clone(), timeout: 55.0 })
        .await
        .expect("SandboxSnapshotFs");
    assert_eq!(snapshot.result.map(|result| result.status), Some(GenericStatus::Success as i32));
    let restored = client.create(&app_id, definition(&snapshot.image_id)).await.expect("create from snapshot");
    let restored_task = client.task_id(&restored).await;
    let restored_router = client.router(&restored_task).await;
    assert_eq!(restored_router.sh("cat /root/snapshot.txt").await.stdout, b"kept\n");
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_removes_everything() {
    let Some((server, mut client, app_id, image_id)) = setup("drop_removes_everything", ModalTestServerConfig::new()).await else {
        return;
    };
    let sandbox_id = client.create(&app_id, definition(&image_id)).await.expect("SandboxCreate");
    let task_id = client.task_id(&sandbox_id).await;
    let router = client.router(&task_id).await;
    router.sh("nohup sleep 1000 >/dev/null 2>&1 &").await;
    let netns = server
        .sandbox(&sandbox_id)
        .and_then(|record| record.network_namespace)
        .expect("the running sandbox has a network namespace");
    let mine = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .filter(|line| line.contains(&sandbox_id) || line.contains(&netns))
            .collect()
    };
    let before = mine(host_leftovers());
    assert!(before.iter().any(|line| line.starts_with("netns")), "{before:?}");
    assert!(before.iter().any(|line| line.starts_with("mount")), "{before:?}");
    assert!(before.iter().any(|line| line.contains("sleep 1000")), "{before:?}");
    drop(router);
    drop(server);
    assert_eq!(mine(host_leftovers()), Vec::<String>::new());
}
