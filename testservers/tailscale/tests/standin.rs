//! The stand-in `tailscale`/`tailscaled` scripts run with bash on the host against the
//! server's control plane on 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use ken_testserver_tailscale::standin::{self, TAILSCALED_SCRIPT, TAILSCALE_SCRIPT};
use ken_testserver_tailscale::{KeyCreateCapabilities, RegistrationMode, TestServer, TestServerConfig};
use serde_json::Value;
use tokio::process::{Child, Command};

/// A running stand-in daemon in a temporary state directory.
struct Node {
    dir: tempfile::TempDir,
    daemon: Child,
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn script(name: &str) -> PathBuf {
    standin::standin_dir().join(name)
}

impl Node {
    async fn start() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("tailscaled.sock");
        let daemon = Command::new("bash")
            .arg(script("tailscaled"))
            .arg("--tun=userspace-networking")
            .arg("--state=mem:")
            .arg(format!("--statedir={}", dir.path().join("state").display()))
            .arg(format!("--socket={}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("bash runs the stand-in tailscaled");
        let node = Node { dir, daemon };
        for _ in 0..100 {
            if node.socket().exists() {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the stand-in tailscaled did not create its socket file");
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tailscaled.sock")
    }

    async fn tailscale(&self, args: &[&str]) -> Output {
        let output = Command::new("bash")
            .arg(script("tailscale"))
            .arg(format!("--socket={}", self.socket().display()))
            .args(args)
            .output()
            .await
            .expect("bash runs the stand-in tailscale");
        Output {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn write_key(&self, key: &str) -> PathBuf {
        let path = self.dir.path().join("authkey");
        std::fs::write(&path, format!("{key}\n")).expect("write key file");
        path
    }

    async fn up(&self, server: &TestServer, key_file: &Path, hostname: &str, timeout: &str) -> Output {
        let control = server.control_url().expect("control listener");
        self.tailscale(&[
            "up",
            &format!("--auth-key=file:{}", key_file.display()),
            &format!("--hostname={hostname}"),
            "--advertise-tags=tag:ken-sandbox",
            "--accept-dns=false",
            &format!("--timeout={timeout}"),
            &format!("--login-server={control}"),
        ])
        .await
    }

    async fn status(&self) -> Value {
        let output = self.tailscale(&["status", "--json"]).await;
        assert_eq!(output.code, 0, "status failed: {}", output.stderr);
        serde_json::from_str(&output.stdout).unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", output.stdout))
    }

    /// Sends SIGTERM to the daemon this test started, by its pid.
    async fn stop(mut self) {
        let pid = self.daemon.id().expect("daemon still running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success());
        let _ = self.daemon.wait().await;
    }
}

fn sandbox_key(server: &TestServer, preauthorized: bool) -> String {
    let capabilities = KeyCreateCapabilities {
        reusable: false,
        ephemeral: true,
        preauthorized,
        tags: vec!["tag:ken-sandbox".to_owned()],
    };
    server.mint_key(capabilities, Duration::from_secs(600)).key
}

#[tokio::test]
async fn up_status_serve_logout() {
    let server = TestServer::start(TestServerConfig::default().with_policy(common::KEN_POLICY)).await;
    let node = Node::start().await;

    // Mint the key through the API with the OAuth client, as Ken does.
    let api = common::Api::new(&server, &common::oauth_token(&server).await);
    let created: Value = api
        .post_json("tailnet/-/keys", &common::key_request(&["tag:ken-sandbox"]))
        .await
        .json()
        .await
        .expect("JSON");
    let key = created["key"].as_str().expect("key").to_owned();
    let key_file = node.write_key(&key);

    let before = node.status().await;
    assert_eq!(before["BackendState"], "NeedsLogin");

    let up = node.up(&server, &key_file, "ken-demo-1", "120s").await;
    assert_eq!(up.code, 0, "up failed: {}", up.stderr);

    let status = node.status().await;
    assert_eq!(status["BackendState"], "Running");
    let devices = server.devices();
    assert_eq!(devices.len(), 1);
    let device = &devices[0];
    assert_eq!(status["Self"]["ID"], device.node_id.as_str());
    assert_eq!(status["Self"]["HostName"], "ken-demo-1");
    assert_eq!(status["Self"]["DNSName"], format!("{}.", device.name));
    assert_eq!(status["Self"]["TailscaleIPs"][0], device.ipv4.to_string());
    assert_eq!(status["Self"]["Online"], true);
    assert_eq!(status["MagicDNSSuffix"], "tail1234.ts.net");
    assert_eq!(status["CurrentTailnet"]["Name"], "example.com");
    assert!(device.is_ephemeral);
    assert_eq!(device.tags, vec!["tag:ken-sandbox"]);
    let stored = server.key(created["id"].as_str().expect("id")).expect("key stored");
    assert!(stored.is_used());

    let serve = node.tailscale(&["serve", "--bg", "--https=443", "http://127.0.0.1:8080"]).await;
    assert_eq!(serve.code, 0, "serve failed: {}", serve.stderr);
    assert!(serve.stdout.contains(&format!("https://{}/", device.name)));
    let configs = server.serve_configs();
    assert_eq!(configs.len(), 1);
    assert_eq!(configs[0].target, "http://127.0.0.1:8080");
    assert_eq!(configs[0].https_port, 443);

    let logout = node.tailscale(&["logout"]).await;
    assert_eq!(logout.code, 0, "logout failed: {}", logout.stderr);
    assert!(server.devices().is_empty(), "the ephemeral device is removed after logout");
    assert_eq!(node.status().await["BackendState"], "NeedsLogin");

    // The only credential the sandbox side ever sent is the single-use key.
    assert_eq!(server.received_auth_keys(), vec![key.clone()]);
    for request in server.control_requests() {
        for (_, value) in &request.fields {
            assert!(!value.contains("tskey-api-"), "API token reached the control plane");
            assert!(!value.contains("tskey-client-"), "OAuth secret reached the control plane");
        }
    }
    assert!(!up.stderr.contains(&key), "up printed the key");
    assert!(!up.stdout.contains(&key), "up printed the key");
    server.assert_no_violations();
    node.stop().await;
}

#[tokio::test]
async fn used_key_needs_login() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let key = sandbox_key(&server, true);
    let first = Node::start().await;
    let file = first.write_key(&key);
    assert_eq!(first.up(&server, &file, "a", "10s").await.code, 0);

    let second = Node::start().await;
    let file = second.write_key(&key);
    let up = second.up(&server, &file, "b", "10s").await;
    assert_ne!(up.code, 0);
    assert!(up.stderr.contains("backend error: invalid key: API key"), "{}", up.stderr);
    assert!(!up.stderr.contains(&key), "the error echoes the secret key");
    assert_eq!(second.status().await["BackendState"], "NeedsLogin");
    assert_eq!(server.devices().len(), 1);
}

#[tokio::test]
async fn revoked_and_expired_keys_rejected() {
    let server = TestServer::start(TestServerConfig::default()).await;
    for spoil in ["revoke", "expire"] {
        let capabilities = KeyCreateCapabilities {
            preauthorized: true,
            tags: vec!["tag:ken-sandbox".to_owned()],
            ..KeyCreateCapabilities::default()
        };
        let key = server.mint_key(capabilities, Duration::from_secs(600));
        match spoil {
            "revoke" => assert!(server.revoke_key(&key.id)),
            _ => assert!(server.expire_key(&key.id)),
        }
        let node = Node::start().await;
        let file = node.write_key(&key.key);
        let up = node.up(&server, &file, spoil, "10s").await;
        assert_ne!(up.code, 0, "{spoil}d key accepted");
        assert!(up.stderr.contains("invalid key"), "{}", up.stderr);
        assert_eq!(node.status().await["BackendState"], "NeedsLogin");
    }
    assert!(server.devices().is_empty());
}

#[tokio::test]
async fn not_preauthorized_needs_machine_auth() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let node = Node::start().await;
    let file = node.write_key(&sandbox_key(&server, false));
    let up = node.up(&server, &file, "unapproved", "1s").await;
    assert_ne!(up.code, 0);
    assert!(up.stderr.contains("last state was NeedsMachineAuth"), "{}", up.stderr);
    assert_eq!(node.status().await["BackendState"], "NeedsMachineAuth");
    let devices = server.devices();
    assert_eq!(devices.len(), 1);
    assert!(!devices[0].authorized);
}

#[tokio::test]
async fn approval_completes_waiting_up() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let node = Node::start().await;
    let file = node.write_key(&sandbox_key(&server, false));
    let up = node.up(&server, &file, "approved-later", "60s");
    let approve = async {
        loop {
            if let Some(device) = server.devices().first() {
                assert!(server.authorize_device(&device.node_id));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (up, ()) = tokio::join!(up, approve);
    assert_eq!(up.code, 0, "{}", up.stderr);
    assert_eq!(node.status().await["BackendState"], "Running");
}

#[tokio::test]
async fn invisible_device_never_appears() {
    let server = TestServer::start(TestServerConfig::default()).await;
    server.set_registration_mode(RegistrationMode::Invisible);
    let node = Node::start().await;
    let file = node.write_key(&sandbox_key(&server, true));
    let up = node.up(&server, &file, "ghost", "10s").await;
    assert_eq!(up.code, 0, "{}", up.stderr);
    assert_eq!(node.status().await["BackendState"], "Running");
    assert!(server.devices().is_empty());
    assert_eq!(server.all_devices().len(), 1);
}

#[tokio::test]
async fn hanging_registration_times_out() {
    let server = TestServer::start(TestServerConfig::default()).await;
    server.set_registration_mode(RegistrationMode::Hang);
    let node = Node::start().await;
    let file = node.write_key(&sandbox_key(&server, true));
    let up = node.up(&server, &file, "stuck", "1s").await;
    assert_ne!(up.code, 0);
    assert!(up.stderr.contains("timeout waiting for Tailscale service to enter a Running state"), "{}", up.stderr);
    assert!(server.all_devices().is_empty());
}

#[tokio::test]
async fn missing_login_server_fails() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let node = Node::start().await;
    let file = node.write_key(&sandbox_key(&server, true));
    let up = node
        .tailscale(&["up", &format!("--auth-key=file:{}", file.display()), "--hostname=x"])
        .await;
    assert_ne!(up.code, 0);
    assert!(up.stderr.contains("--login-server is required"), "{}", up.stderr);
    assert!(server.control_requests().is_empty());
}

#[tokio::test]
async fn cli_without_daemon_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new("bash")
        .arg(script("tailscale"))
        .arg(format!("--socket={}", dir.path().join("none.sock").display()))
        .args(["status", "--json"])
        .output()
        .await
        .expect("bash runs");
    assert_ne!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stderr).contains("failed to connect to local tailscaled"));
}

#[tokio::test]
async fn daemon_reports_offline_and_deletion() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let node = Node::start().await;
    let file = node.write_key(&sandbox_key(&server, true));
    assert_eq!(node.up(&server, &file, "hb", "10s").await.code, 0);
    let node_id = server.devices()[0].node_id.clone();

    // A device deleted through the API makes the daemon fall back to NeedsLogin.
    let deleted = {
        let api = common::Api::new(&server, server.api_token());
        api.delete(&format!("device/{node_id}")).await.status()
    };
    assert_eq!(deleted, 200);
    let mut state = Value::Null;
    for _ in 0..100 {
        state = node.status().await["BackendState"].clone();
        if state == "NeedsLogin" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "NeedsLogin");
    node.stop().await;
}

#[tokio::test]
async fn daemon_stop_marks_offline() {
    let server = TestServer::start(TestServerConfig::default()).await;
    let node = Node::start().await;
    let file = node.write_key(&sandbox_key(&server, true));
    assert_eq!(node.up(&server, &file, "bye", "10s").await.code, 0);
    let node_id = server.devices()[0].node_id.clone();
    assert!(server.device(&node_id).expect("device").connected_to_control);
    node.stop().await;
    assert!(!server.device(&node_id).expect("device").connected_to_control);
}

#[tokio::test]
async fn dockerfile_lines_carry_scripts() {
    let lines = standin::standin_dockerfile_lines();
    let engine = base64::engine::general_purpose::STANDARD;
    let mut decoded = Vec::new();
    for line in lines.lines() {
        let encoded = line.split('\'').nth(1).expect("quoted base64");
        decoded.push(String::from_utf8(engine.decode(encoded).expect("base64")).expect("UTF-8"));
        assert!(line.contains("/usr/bin/tailscale") || line.contains("/usr/sbin/tailscaled"));
    }
    assert_eq!(decoded, vec![TAILSCALE_SCRIPT.to_owned(), TAILSCALED_SCRIPT.to_owned()]);
    assert!(TAILSCALE_SCRIPT.contains("TEST STAND-IN"));
    assert!(TAILSCALED_SCRIPT.contains("TEST STAND-IN"));

    for name in ["tailscale", "tailscaled"] {
        let check = Command::new("bash").arg("-n").arg(script(name)).status().await.expect("bash");
        assert!(check.success(), "{name} has a bash syntax error");
    }
}
