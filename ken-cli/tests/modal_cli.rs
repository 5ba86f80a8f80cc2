//! End-to-end test of `ken --provider modal` against the Modal test server.
//!
//! The test server (`ken-testserver-modal`) runs in this test process on
//! 127.0.0.1 and builds images with the local Docker engine. The `ken` binary gets
//! `MODAL_SERVER_URL`, `MODAL_TOKEN_ID`, `MODAL_TOKEN_SECRET` and
//! `MODAL_ENVIRONMENT` for it. It also gets `KEN_MODAL_PLAIN_PORTS=1`, the user
//! option for plain TCP tunnels, because the server's tunnels do not speak TLS.
//! Everything else is the real `ken` binary with the real orchestrator and Modal
//! provider, launching the demo project (examples/demo-app/ken.toml) unchanged.
//!
//! The server needs root and the Docker engine. The test skips itself (printing
//! why) when the engine is unreachable, unless KEN_REQUIRE_DOCKER=1 is set, in
//! which case it fails.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{code, describe, stderr, stdout, unique_name};
use ken_testserver_modal::{ModalTestServer, ModalTestServerConfig};

/// The phases of a launch of the demo: it has no `[harness]`, so there is no
/// harness phase.
const DEMO_PHASES: [&str; 7] = ["image", "create", "repository", "plan", "seed", "network", "ready"];

/// Returns the workspace's root folder.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ken-cli is inside the workspace")
        .to_owned()
}

/// Returns `ken --provider modal` with the test server's settings.
fn ken_modal(server: &ModalTestServer, config_dir: &Path) -> Command {
    let mut command = common::ken();
    for (name, value) in server.client_env() {
        command.env(name, value);
    }
    command
        .env("KEN_MODAL_PLAIN_PORTS", "1")
        // No profile file of the user's may change the settings.
        .env("MODAL_CONFIG_PATH", config_dir.join("absent.toml"))
        .env_remove("MODAL_PROFILE")
        .args(["--provider", "modal"]);
    command
}

/// Runs `ken --provider modal ARGS`.
fn run(server: &ModalTestServer, config_dir: &Path, args: &[&str]) -> Output {
    ken_modal(server, config_dir)
        .args(args)
        .output()
        .expect("failed to run the ken binary")
}

/// Sends `GET path` to `url` (an `http://127.0.0.1:PORT/` tunnel) and returns the
/// status line and the body.
fn http_get(url: &str, path: &str) -> (String, String) {
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert!(address.starts_with("127.0.0.1:"), "tunnel {url} is not on 127.0.0.1");
    let mut stream = TcpStream::connect(&address).unwrap_or_else(|e| panic!("connecting to {address}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[test]
fn demo_launch_exec_and_rm_on_modal() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let probe = runtime.block_on(ken_testserver_modal::docker_available());
    if ken_core::testkit::require_docker_or_skip("demo_launch_exec_and_rm_on_modal", probe).is_none() {
        return;
    }
    let rootfs_cache = std::env::temp_dir().join("ken-modal-provider-tests-rootfs");
    let server = runtime
        .block_on(ModalTestServer::start(
            ModalTestServerConfig::new().with_rootfs_cache(rootfs_cache),
        ))
        .unwrap_or_else(|error| panic!("the Modal test server did not start: {error}"));
    let config_dir = tempfile::tempdir().unwrap();
    let dir = config_dir.path();
    let manifest = workspace().join("examples/demo-app/ken.toml");
    let manifest = manifest.to_str().unwrap();
    let name = unique_name("mdemo");

    let launch = run(&server, dir, &["new", "--name", &name, "--manifest", manifest]);
    let removed_early = if code(&launch) != 0 { Some(run(&server, dir, &["rm", &name])) } else { None };
    assert_eq!(code(&launch), 0, "{}\ncleanup: {removed_early:?}", describe(&launch));
    assert_eq!(stdout(&launch).lines().next(), Some(name.as_str()), "{}", describe(&launch));
    for phase in DEMO_PHASES {
        assert!(
            stderr(&launch).contains(&format!("phase {phase} finished")),
            "phase {phase} did not finish:\n{}",
            describe(&launch)
        );
    }
    let created: Vec<_> = server
        .sandboxes()
        .into_iter()
        .filter(|s| s.definition.name.as_deref() == Some(name.as_str()))
        .collect();
    assert_eq!(created.len(), 1, "one launch made {} sandboxes", created.len());
    let ports = created[0].definition.open_ports.clone().unwrap_or_default().ports;
    assert!(ports.iter().any(|p| p.port == 8080 && p.unencrypted), "{ports:?}");

    // The sandbox is listed, ready.
    let list = run(&server, dir, &["list", "--json"]);
    assert_eq!(code(&list), 0, "{}", describe(&list));
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).expect("list --json prints JSON");
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} missing from {listed}"));
    assert_eq!(entry["ready"], true, "{entry}");

    // Postgres runs as user postgres, as the manifest requests.
    let owner = run(&server, dir, &["exec", &name, "--", "sh", "-c", "ps -o user= -C postgres | sort -u"]);
    assert_eq!(code(&owner), 0, "{}", describe(&owner));
    assert_eq!(stdout(&owner), "postgres\n", "{}", describe(&owner));

    // The seeded API responds inside the sandbox...
    let fetch = "import json, urllib.request; \
                 tasks = json.load(urllib.request.urlopen('http://127.0.0.1:8080/api/tasks?limit=5')); \
                 print(type(tasks).__name__, len(tasks['tasks'] if isinstance(tasks, dict) else tasks))";
    let inside = run(&server, dir, &["exec", &name, "--", "python3", "-c", fetch]);
    assert_eq!(code(&inside), 0, "{}", describe(&inside));
    assert!(stdout(&inside).trim_end().ends_with(" 5"), "{}", describe(&inside));

    // ...and through the tunnel from the host.
    let urls = run(&server, dir, &["urls", &name, "--json"]);
    assert_eq!(code(&urls), 0, "{}", describe(&urls));
    let endpoints: serde_json::Value = serde_json::from_slice(&urls.stdout).expect("urls --json prints JSON");
    let url = endpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["port"] == 8080)
        .and_then(|e| e["url"].as_str())
        .unwrap_or_else(|| panic!("no URL for port 8080 in {endpoints}"))
        .to_owned();
    let (status, body) = http_get(&url, "/api/tasks?limit=3");
    assert!(status.contains(" 200 "), "GET /api/tasks through {url}: {status}\n{body}");
    assert!(body.contains("\"title\""), "{body}");

    // `ken rm` terminates it, and nothing of it is left on the server.
    let removed = run(&server, dir, &["rm", &name]);
    assert_eq!(code(&removed), 0, "{}", describe(&removed));
    assert_eq!(stdout(&removed), format!("removed {name}\n"));
    let record = server.sandbox(&created[0].id).expect("the server keeps the record");
    let result = record.result.expect("the sandbox has ended after ken rm");
    assert_eq!(result.status, 3, "the sandbox ended without being terminated: {result:?}");
    assert_eq!(server.active_host_sandboxes(), 0, "the server still runs processes of {name}");
    let list = run(&server, dir, &["list", "--json"]);
    assert!(!stdout(&list).contains(&name), "{}", describe(&list));
    let again = run(&server, dir, &["rm", &name]);
    assert_eq!(code(&again), 0, "{}", describe(&again));

    server.assert_no_violations();
    runtime.block_on(server.shutdown());
}

#[test]
fn missing_modal_credentials_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let output = common::ken()
        .env_remove("MODAL_TOKEN_ID")
        .env_remove("MODAL_TOKEN_SECRET")
        .env_remove("MODAL_PROFILE")
        .env("MODAL_SERVER_URL", "http://127.0.0.1:9")
        .env("MODAL_CONFIG_PATH", dir.path().join("absent.toml"))
        .args(["--provider", "modal", "list"])
        .output()
        .expect("failed to run the ken binary");
    assert_ne!(code(&output), 0, "{}", describe(&output));
    assert!(stderr(&output).contains("MODAL_TOKEN_ID"), "{}", describe(&output));
}
