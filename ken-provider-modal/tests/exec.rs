//! Exec on Modal beyond the conformance kit, against the Modal test server: running
//! as another user, letting go of a running command, and exec in a sandbox that
//! has already ended.

mod support;

use std::time::Duration;

use ken_core::{Error, ExecRequest, SandboxName, SandboxProvider};
use ken_testserver_modal::{ModalTestServer, ModalTestServerConfig};

/// Upper bound for waits that must end. Reaching it means a hang, not slowness.
const HANG_LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_as_user_sets_identity() {
    let Some(server) = support::server("exec_user", ModalTestServerConfig::new()).await else {
        return;
    };
    let provider = support::provider(&server);
    let image = support::kit_image(&provider).await;
    let name = provider.create(&support::spec("user-1", &image)).await.unwrap().name;

    let made = support::sh(
        &provider,
        &name,
        "groupadd -g 1234 alice && groupadd -g 2345 crew && useradd -m -u 1234 -g alice -G crew alice && echo made",
    )
    .await;
    assert_eq!(made.stdout_text(), "made\n", "adding a user as root: {made:?}");

    let who = "whoami; id -u; id -g; id -Gn; echo \"$HOME\"; touch \"$HOME/mine\" && stat -c %U \"$HOME/mine\"";
    let alice = provider
        .exec(&name, ExecRequest::shell(who).user("alice"))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(
        alice.stdout_text(),
        "alice\n1234\n1234\nalice crew\n/home/alice\nalice\n",
        "identity of a command run as alice (stderr: {})",
        alice.stderr_text()
    );

    let by_uid = provider
        .exec(&name, ExecRequest::new(["id", "-un"]).user("1234"))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(by_uid.stdout_text(), "alice\n");

    // A uid without a passwd entry runs with group 0, as with `docker exec --user`.
    let bare = provider
        .exec(&name, ExecRequest::shell("id -u; id -g; id -G").user("4242"))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(bare.stdout_text(), "4242\n0\n0\n", "stderr: {}", bare.stderr_text());

    // An explicit HOME wins over the user's home directory.
    let home = provider
        .exec(&name, ExecRequest::shell("echo $HOME").user("alice").env("HOME", "/tmp/h"))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(home.stdout_text(), "/tmp/h\n");

    // Without a user the command runs as the sandbox's own user.
    assert_eq!(support::sh(&provider, &name, "id -un").await.stdout_text(), "root\n");

    // A user is looked up once per sandbox, not before every exec.
    let lookups = server
        .execs()
        .iter()
        .filter(|exec| exec.args.iter().any(|arg| arg.contains("no-setpriv")))
        .count();
    assert_eq!(lookups, 3, "lookups of alice, 1234 and 4242");

    provider.destroy(&name).await.unwrap();
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_is_rejected_before_running() {
    let Some(server) = support::server("exec_unknown_user", ModalTestServerConfig::new()).await else {
        return;
    };
    let provider = support::provider(&server);
    let image = support::kit_image(&provider).await;
    let name = provider.create(&support::spec("user-2", &image)).await.unwrap().name;

    let error = provider
        .exec(&name, ExecRequest::new(["touch", "/tmp/ghost-ran"]).user("ghost"))
        .await
        .expect_err("exec as a user the image does not have");
    assert!(matches!(error, Error::InvalidInput { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("\"ghost\""), "the error does not name the user: {message}");
    assert!(message.contains("user-2"), "the error does not name the sandbox: {message}");
    assert!(message.contains("no such user"), "{message}");

    for malformed in ["alice:crew", "-x", "a b"] {
        let before = server.execs().len();
        let error = provider
            .exec(&name, ExecRequest::new(["true"]).user(malformed))
            .await
            .expect_err(malformed);
        assert!(error.to_string().contains(&format!("{malformed:?}")), "{error}");
        assert_eq!(server.execs().len(), before, "a malformed user {malformed:?} started an exec");
    }

    let ran = support::sh(&provider, &name, "test -e /tmp/ghost-ran && echo ran || echo not").await;
    assert_eq!(ran.stdout_text(), "not\n", "the command ran although its user is unknown");
    provider.destroy(&name).await.unwrap();
    server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_as_user_stops_the_group() {
    let Some(server) = support::server("exec_user_kill", ModalTestServerConfig::new()).await else {
        return;
    };
    let provider = support::provider(&server);
    let image = support::kit_image(&provider).await;
    let name = provider.create(&support::spec("user-3", &image)).await.unwrap().name;

    let marker = "641.5";
    let process = provider
        .exec(
            &name,
            ExecRequest::shell(format!("sleep {marker} & sleep {marker}; echo never")).user("nobody"),
        )
        .await
        .unwrap();
    tokio::time::timeout(HANG_LIMIT, async {
        while support::processes_with(&provider, &name, &format!("sleep {marker}")).await < 2 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the two sleeps did not start");
    let owners = support::sh(
        &provider,
        &name,
        &format!("ps -o user=,args= -C sleep | grep -F 'sleep {marker}' | cut -d' ' -f1 | sort -u"),
    )
    .await;
    assert_eq!(owners.stdout_text(), "nobody\n", "owners of the sleeps");

    process.kill().await.expect("kill");
    let output = tokio::time::timeout(HANG_LIMIT, process.output())
        .await
        .expect("the output did not end after the kill")
        .unwrap();
    assert!(output.status.killed, "{}", output.status);
    assert!(!output.stdout_text().contains("never"));
    assert_eq!(support::processes_with(&provider, &name, &format!("sleep {marker}")).await, 0);
    provider.destroy(&name).await.unwrap();
    server.assert_no_violations();
}

/// Waits until the server reports that sandbox `id` has ended.
async fn wait_until_ended(server: &ModalTestServer, id: &str) {
    tokio::time::timeout(HANG_LIMIT, async {
        while server.sandbox(id).and_then(|s| s.result).is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the sandbox did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_in_ended_sandbox_reports_result() {
    let Some(server) = support::server("exec_ended", ModalTestServerConfig::new()).await else {
        return;
    };
    let provider = support::provider(&server);
    let image = support::kit_image(&provider).await;

    // Its time to live runs out.
    let mut short = support::spec("ended-1", &image);
    short.ttl = Duration::from_secs(2);
    let info = provider.create(&short).await.unwrap();
    wait_until_ended(&server, &info.id).await;
    let error = tokio::time::timeout(HANG_LIMIT, provider.exec(&info.name, ExecRequest::new(["true"])))
        .await
        .expect("exec in an ended sandbox hung")
        .expect_err("exec in an ended sandbox");
    assert!(error.is_not_found(), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("ended-1"), "the error does not name the sandbox: {message}");
    assert!(message.contains("TIMEOUT"), "the error does not say how it ended: {message}");
    let error = provider.get(&info.name).await.expect_err("get of an ended sandbox");
    assert!(error.is_not_found(), "{error:?}");
    assert!(error.to_string().contains("TIMEOUT"), "{error}");

    // Another client terminates it while this one has its task cached and a
    // command running.
    let info = provider.create(&support::spec("ended-2", &image)).await.unwrap();
    assert_eq!(support::sh(&provider, &info.name, "echo up").await.stdout_text(), "up\n");
    let running = provider
        .exec(&info.name, ExecRequest::shell("echo started; sleep 600"))
        .await
        .unwrap();
    let other = support::provider(&server);
    other.destroy(&info.name).await.unwrap();
    let finished = tokio::time::timeout(HANG_LIMIT, running.output())
        .await
        .expect("a command in a terminated sandbox hung");
    if let Ok(output) = &finished {
        assert_ne!(output.status.code, Some(0), "{output:?}");
    }
    let error = tokio::time::timeout(HANG_LIMIT, provider.exec(&info.name, ExecRequest::new(["true"])))
        .await
        .expect("exec in a terminated sandbox hung")
        .expect_err("exec in a terminated sandbox");
    assert!(error.is_not_found(), "{error:?}");
    assert!(error.to_string().contains("TERMINATED"), "{error}");

    // Destroying an ended sandbox succeeds and changes nothing.
    provider.destroy(&info.name).await.unwrap();
    provider.destroy(&SandboxName::new("ended-1").unwrap()).await.unwrap();
    server.assert_no_violations();
}

/// Returns the client runtime's live task count once it has not changed for a
/// few samples.
async fn settled_tasks() -> usize {
    let metrics = tokio::runtime::Handle::current().metrics();
    let mut last = metrics.num_alive_tasks();
    let mut same = 0;
    while same < 5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = metrics.num_alive_tasks();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// Waits until the client runtime has at most `limit` live tasks, and panics
/// with `what` if it never does.
async fn tasks_drop_to(limit: usize, what: &str) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let reached = tokio::time::timeout(HANG_LIMIT, async {
        while metrics.num_alive_tasks() > limit {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "{what}: {} client tasks are alive, {limit} before the exec",
        metrics.num_alive_tasks()
    );
}

/// The server runs on a runtime of its own, so that the client runtime's task
/// count is the provider's alone.
#[test]
fn dropped_consumer_leaves_no_task() {
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    };
    let server_runtime = runtime("modal-server");
    let Some(server) = server_runtime.block_on(support::server("dropped_consumer", ModalTestServerConfig::new()))
    else {
        return;
    };
    let client_runtime = runtime("modal-client");
    client_runtime.block_on(async {
        let provider = support::provider(&server);
        let image = support::kit_image(&provider).await;
        let name = provider.create(&support::spec("drop-1", &image)).await.unwrap().name;
        // The first exec opens the router channel, which stays.
        assert_eq!(support::sh(&provider, &name, "echo warm").await.stdout_text(), "warm\n");
        let baseline = settled_tasks().await;

        let marker = "ken-drop-7";
        let script = format!("while :; do echo {marker}; sleep 0.05; done");
        // Standard input that never ends: its writer task stops only when cancelled.
        let (mut input, reader) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut input, b"some input\n").await.unwrap();
        let stdin = ken_core::exec::Stdin::Reader(Box::pin(reader));
        let mut process = provider
            .exec(&name, ExecRequest::shell(&script).stdin(stdin))
            .await
            .unwrap();
        let killer = process.kill_handle();
        let consumer = tokio::spawn(async move {
            while let Some(chunk) = process.next_chunk().await {
                chunk.expect("an output chunk");
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!consumer.is_finished(), "the endless command's output ended");
        consumer.abort();
        assert!(consumer.await.unwrap_err().is_cancelled());

        // Output streams and the stdin writer stop with the consumer.
        tasks_drop_to(baseline, "after the consumer was dropped").await;
        // Dropping does not kill (see `ExecProcess`): the command still runs.
        let running: Vec<_> = server
            .execs()
            .into_iter()
            .filter(|exec| exec.args.iter().any(|arg| arg.contains(marker)))
            .collect();
        assert_eq!(running.len(), 1, "{running:?}");
        assert!(running[0].exit.is_none(), "the command ended on its own: {:?}", running[0].exit);

        killer.kill().await.expect("kill after the consumer was dropped");
        let exec_id = running[0].exec_id.clone();
        tokio::time::timeout(HANG_LIMIT, async {
            while server.execs().iter().any(|exec| exec.exec_id == exec_id && exec.exit.is_none()) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the killed command is still running on the server");
        assert_eq!(support::processes_with(&provider, &name, marker).await, 0);
        tasks_drop_to(baseline, "after the kill").await;

        provider.destroy(&name).await.unwrap();
        drop(input);
    });
    drop(client_runtime);
    server.assert_no_violations();
    server_runtime.block_on(server.shutdown());
}
