//! The stand-ins in a `debian:bookworm-slim` container on a Docker network of the
//! test's own (a bridge with inter-container traffic off, like Ken's sandbox network),
//! talking to the control listener bound to that network's gateway, as the end-to-end
//! tests do.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ken_core::testkit::require_docker_or_skip;
use ken_testserver_tailscale::standin::standin_dockerfile_lines;
use ken_testserver_tailscale::{docker, KeyCreateCapabilities, TestServer, TestServerConfig};
use serde_json::Value;

/// Returns `Ok` when `docker info` succeeds.
fn docker_probe() -> Result<(), String> {
    let output = Command::new("docker")
        .arg("info")
        .output()
        .map_err(|e| format!("running docker info: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

fn docker(args: &[&str]) -> (bool, String, String) {
    let output = Command::new("docker").args(args).output().expect("docker runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A bridge network made for one test, removed when dropped.
struct NetworkGuard(String);

impl NetworkGuard {
    /// Creates a network with a name unique to this process and inter-container
    /// traffic off, as Ken's `ken-sandboxes` network has.
    fn create() -> NetworkGuard {
        let name = format!("ken-test-tailscale-{}", std::process::id());
        let (created, _, stderr) = docker(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--opt",
            "com.docker.network.bridge.enable_icc=false",
            &name,
        ]);
        assert!(created, "docker network create {name} failed: {stderr}");
        NetworkGuard(name)
    }
}

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let (removed, _, stderr) = docker(&["network", "rm", &self.0]);
        if !removed {
            eprintln!("failed to remove test network {}: {stderr}", self.0);
        }
    }
}

/// Removes the test image when dropped.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[tokio::test]
async fn unknown_network_names_it() {
    if require_docker_or_skip("unknown_network_names_it", docker_probe()).is_none() {
        return;
    }
    let error = docker::network_gateway("ken-test-no-such-network")
        .await
        .expect_err("network does not exist");
    assert!(error.to_string().contains("ken-test-no-such-network"), "{error}");
}

#[tokio::test]
async fn standin_joins_from_container() {
    if require_docker_or_skip("standin_joins_from_container", docker_probe()).is_none() {
        return;
    }
    let network = NetworkGuard::create();
    let network_name = network.0.clone();
    let gateway = docker::network_gateway(&network_name).await.expect("gateway");
    assert!(gateway.is_ipv4());
    assert!(!gateway.is_loopback());
    let config = TestServerConfig::default().with_control_bind(Some(SocketAddr::new(gateway, 0)));
    let server = TestServer::start(config).await;
    let control = server.control_url().expect("control listener");
    assert!(control.starts_with(&format!("http://{gateway}:")), "{control}");
    assert!(server.api_url().starts_with("http://127.0.0.1:"));

    // Build a sandbox-like image with the install lines the end-to-end tests use.
    let context = tempfile::tempdir().expect("temp dir");
    let dockerfile = format!("FROM debian:bookworm-slim\n{}", standin_dockerfile_lines());
    std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    let tag = format!("ken-testserver-tailscale-standin:{}", std::process::id());
    let _image = ImageGuard(tag.clone());
    let context_path = context.path().display().to_string();
    let (built, _, stderr) = docker(&["build", "-q", "-t", &tag, &context_path]);
    assert!(built, "docker build failed: {stderr}");

    let capabilities = KeyCreateCapabilities {
        ephemeral: true,
        preauthorized: true,
        tags: vec!["tag:ken-sandbox".to_owned()],
        ..KeyCreateCapabilities::default()
    };
    let key = server.mint_key(capabilities, Duration::from_secs(600));
    let key_dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(key_dir.path().join("authkey"), &key.key).expect("write key");

    let script = format!(
        "tailscaled --tun=userspace-networking --state=mem: --statedir=/tmp --socket=/tmp/tailscaled.sock 2>/dev/null &
         sleep 0.5
         tailscale --socket=/tmp/tailscaled.sock up --auth-key=file:/run/ken/authkey --hostname=ctr-standin \
           --advertise-tags=tag:ken-sandbox --accept-dns=false --timeout=30s --login-server={control} || exit 10
         tailscale --socket=/tmp/tailscaled.sock status --json || exit 11
         tailscale --socket=/tmp/tailscaled.sock logout || exit 12"
    );
    let mount = format!("{}:/run/ken:ro", key_dir.path().display());
    let (ran, stdout, stderr) = tokio::task::spawn_blocking(move || {
        docker(&[
            "run", "--rm", "--network", &network_name, "-v", &mount, &tag, "bash", "-c", &script,
        ])
    })
    .await
    .expect("docker run task");
    assert!(ran, "container failed: {stderr}");

    let status: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("status --json ({e}): {stdout}"));
    assert_eq!(status["BackendState"], "Running");
    assert_eq!(status["Self"]["DNSName"], "ctr-standin.tail1234.ts.net.");
    assert_eq!(server.received_auth_keys(), vec![key.key.clone()]);
    assert!(server.key(&key.id).expect("key").is_used());
    assert!(server.devices().is_empty(), "logout removed the ephemeral device");
}
