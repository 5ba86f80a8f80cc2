//! Docker-specific behaviour of `DockerProvider`, against a real engine.
//!
//! Every test skips with a message when no engine responds, and fails instead when
//! `KEN_REQUIRE_DOCKER=1`. The tests need the local image `debian:bookworm-slim`
//! (no registry access) and remove every container, network and image they make,
//! except the fixture image `ken-image:*` labelled `ken.cache=true`, which stays as
//! a build cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveImageOptionsBuilder,
};
use bytes::Bytes;
use futures::FutureExt;
use ken_core::exec::ExecRequest;
use ken_core::image::{image_spec, HOST_CA_ENV_VARS, HOST_CA_IMAGE_PATH};
use ken_core::labels::{self, Labels, LabelSelector};
use ken_core::sandbox::{Resource, ResourceKind, Resources, SandboxState};
use ken_core::{
    Error, EventSink, ImageRef, ImageSpec, LaunchEvent, PortSpec, SandboxName, SandboxProvider, SandboxSpec,
};
use ken_provider_docker::{DockerProvider, CONTAINER_PREFIX, DEFAULT_NETWORK_NAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BASE_IMAGE: &str = "debian:bookworm-slim";

/// Connects to the engine, or returns `None` (after printing why) when the tests
/// should be skipped. Panics instead when `KEN_REQUIRE_DOCKER` is `1` or `true`.
async fn provider() -> Option<DockerProvider> {
    let required = matches!(std::env::var("KEN_REQUIRE_DOCKER").as_deref(), Ok("1") | Ok("true"));
    let skip = |reason: String| {
        if required {
            panic!("{reason}, and KEN_REQUIRE_DOCKER is set");
        }
        eprintln!("skipping: {reason}; set KEN_REQUIRE_DOCKER=1 to fail instead");
        None
    };
    let provider = match DockerProvider::connect().await {
        Ok(provider) => provider,
        Err(error) => return skip(format!("no Docker engine responds ({error})")),
    };
    if provider.docker().inspect_image(BASE_IMAGE).await.is_err() {
        return skip(format!("the engine has no local image {BASE_IMAGE}"));
    }
    Some(provider)
}

/// Returns a sandbox name no other test or run uses.
fn unique_name(tag: &str) -> SandboxName {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    SandboxName::new(format!("kd-{tag}-{:x}{:x}-{count}", std::process::id(), nanos % 0xfffff)).unwrap()
}

/// Removes what a test made when it ends, also after a failed assertion.
///
/// Cleanup runs on its own thread and runtime, because `Drop` cannot await.
#[derive(Default)]
struct Cleanup {
    sandboxes: Mutex<Vec<SandboxName>>,
    images: Mutex<Vec<String>>,
    networks: Mutex<Vec<String>>,
}

impl Cleanup {
    fn sandbox(&self, name: &SandboxName) {
        self.sandboxes.lock().unwrap().push(name.clone());
    }

    fn image(&self, reference: &str) {
        self.images.lock().unwrap().push(reference.to_owned());
    }

    fn network(&self, name: &str) {
        self.networks.lock().unwrap().push(name.to_owned());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let sandboxes = std::mem::take(&mut *self.sandboxes.lock().unwrap());
        let images = std::mem::take(&mut *self.images.lock().unwrap());
        let networks = std::mem::take(&mut *self.networks.lock().unwrap());
        let worker = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let Ok(provider) = DockerProvider::connect().await else { return };
                for name in &sandboxes {
                    if let Err(error) = provider.destroy(name).await {
                        eprintln!("cleanup: failed to destroy sandbox {name}: {error}");
                    }
                }
                let options = RemoveImageOptionsBuilder::default().force(true).build();
                for image in &images {
                    if let Err(error) = provider.docker().remove_image(image, Some(options.clone()), None).await {
                        eprintln!("cleanup: failed to remove image {image}: {error}");
                    }
                }
                for network in &networks {
                    let _ = provider.docker().remove_network(network).await;
                }
            });
        });
        let _ = worker.join();
    }
}

/// Returns the spec of an image with `dockerfile` and one context file holding
/// `contents`.
fn context_spec(dockerfile: &str, contents: &str, ca: Option<Bytes>) -> (tempfile::TempDir, ImageSpec) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("contents.txt"), contents).unwrap();
    let mut labels = Labels::new();
    labels.insert(labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    labels.insert("ken.test", "docker-provider");
    let spec = image_spec(dockerfile, dir.path(), ca, labels);
    (dir, spec)
}

/// Prepares the shared fixture image: the base image and nothing else. It stays
/// after the tests as a labelled cache entry.
async fn fixture_image(provider: &DockerProvider) -> ImageRef {
    let (_dir, spec) = context_spec(&format!("FROM {BASE_IMAGE}\n"), "fixture", None);
    provider
        .prepare_image(&spec, &EventSink::none())
        .await
        .expect("failed to prepare the fixture image")
}

fn sandbox_spec(name: &SandboxName, image: &ImageRef) -> SandboxSpec {
    SandboxSpec {
        name: name.clone(),
        image: image.clone(),
        resources: Resources::default(),
        labels: Labels::for_sandbox(name.as_str(), "docker-tests", Duration::from_secs(3600)),
        env: Default::default(),
        secret_env: Default::default(),
        ports: Vec::new(),
        workdir: None,
        ttl: Duration::from_secs(3600),
    }
}

async fn sh(provider: &DockerProvider, name: &SandboxName, script: &str) -> String {
    let output = provider
        .exec(name, ExecRequest::shell(script))
        .await
        .unwrap_or_else(|error| panic!("exec of {script:?} in {name} failed to start: {error}"))
        .output()
        .await
        .unwrap_or_else(|error| panic!("exec of {script:?} in {name} failed: {error}"));
    assert!(
        output.status.success(),
        "{script:?} in {name} ended with {}: {}",
        output.status,
        output.stderr_text()
    );
    output.stdout_text()
}

/// Collects the output lines a prepare_image sends to its event sink.
fn recording_sink() -> (EventSink, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let recorded = lines.clone();
    let sink = EventSink::new(move |event| {
        if let LaunchEvent::Output { line, .. } = event {
            recorded.lock().unwrap().push(line);
        }
    });
    (sink, lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn image_cache_hit_builds_nothing() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let nonce = unique_name("img");
    let (_dir, spec) = context_spec(
        &format!("FROM {BASE_IMAGE}\nCOPY contents.txt /contents.txt\n"),
        nonce.as_str(),
        None,
    );

    let (sink, lines) = recording_sink();
    let first = provider.prepare_image(&spec, &sink).await.expect("first prepare failed");
    cleanup.image(&first.reference);
    assert!(!first.cached, "a definition never built before was reported as cached");
    assert!(first.reference.starts_with("ken-image:"), "reference {}", first.reference);
    assert!(
        lines.lock().unwrap().iter().any(|line| line.contains("COPY contents.txt")),
        "the build output did not reach the event sink: {:?}",
        lines.lock().unwrap()
    );

    let (sink, lines) = recording_sink();
    let second = provider.prepare_image(&spec, &sink).await.expect("second prepare failed");
    assert!(second.cached, "the second prepare of the same definition was not a cache hit");
    assert_eq!(second.reference, first.reference);
    assert!(lines.lock().unwrap().is_empty(), "a cache hit produced build output: {:?}", lines.lock().unwrap());

    let image = provider.docker().inspect_image(&first.reference).await.unwrap();
    let image_labels = image.config.and_then(|config| config.labels).unwrap_or_default();
    assert_eq!(image_labels.get(labels::CACHE).map(String::as_str), Some("true"));
    assert_eq!(image_labels.get(labels::MANAGED_BY).map(String::as_str), Some("ken"));
    assert_eq!(image_labels.get("ken.test").map(String::as_str), Some("docker-provider"));
}

#[tokio::test(flavor = "multi_thread")]
async fn image_build_failure_shows_log_tail() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let marker = unique_name("fail");
    let dockerfile = format!("FROM {BASE_IMAGE}\nRUN echo {marker} && exit 3\n");
    let (_dir, spec) = context_spec(&dockerfile, "x", None);

    let error = provider
        .prepare_image(&spec, &EventSink::none())
        .await
        .expect_err("a build whose RUN exits 3 succeeded");
    let Error::StepFailed { status, log_tail, .. } = &error else {
        panic!("expected a StepFailed error, got {error:?}");
    };
    assert!(status.contains("returned a non-zero code: 3"), "status: {status}");
    assert!(log_tail.contains(marker.as_str()), "log tail lacks the RUN output: {log_tail}");

    // `forcerm` removes the container of the failed step.
    let options = ListContainersOptionsBuilder::default().all(true).build();
    let containers = provider.docker().list_containers(Some(options)).await.unwrap();
    let leftovers: Vec<_> = containers
        .iter()
        .filter(|container| container.command.as_deref().unwrap_or("").contains(marker.as_str()))
        .collect();
    assert!(leftovers.is_empty(), "the failed build left containers: {leftovers:?}");
    drop(cleanup);
}

#[tokio::test(flavor = "multi_thread")]
async fn image_carries_host_ca() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let name = unique_name("ca");
    let bundle = format!("-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n");
    let (_dir, spec) = context_spec(&format!("FROM {BASE_IMAGE} AS base\n"), "ca", Some(Bytes::from(bundle.clone())));

    let image = provider.prepare_image(&spec, &EventSink::none()).await.expect("build with a CA failed");
    cleanup.image(&image.reference);
    cleanup.sandbox(&name);
    provider.create(&sandbox_spec(&name, &image)).await.expect("create failed");

    assert_eq!(sh(&provider, &name, &format!("cat {HOST_CA_IMAGE_PATH}")).await, bundle);
    for variable in HOST_CA_ENV_VARS {
        let value = sh(&provider, &name, &format!("printf %s \"${variable}\"")).await;
        assert_eq!(value, HOST_CA_IMAGE_PATH, "{variable} in the sandbox");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_sets_init_limits_labels_and_local_ports() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;
    let name = unique_name("limits");
    let mut spec = sandbox_spec(&name, &image);
    spec.resources = Resources {
        cpus: Some(0.5),
        memory_bytes: Some(256 * 1024 * 1024),
        pids: Some(128),
    };
    spec.labels.insert("ken.test", "limits");
    let web = PortSpec {
        name: "web".to_owned(),
        port: 8080,
        scheme: "http".to_owned(),
    };
    spec.ports = vec![web.clone()];
    cleanup.sandbox(&name);
    let info = provider.create(&spec).await.expect("create failed");
    assert_eq!(info.state, SandboxState::Running);
    assert_eq!(info.provider, "docker");

    let container = format!("{CONTAINER_PREFIX}{name}");
    let inspect = provider
        .docker()
        .inspect_container(&container, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let host = inspect.host_config.clone().unwrap();
    assert_eq!(host.init, Some(true), "init");
    assert_eq!(host.nano_cpus, Some(500_000_000), "NanoCpus");
    assert_eq!(host.memory, Some(256 * 1024 * 1024), "Memory");
    assert_eq!(host.pids_limit, Some(128), "PidsLimit");
    let requested = host.port_bindings.unwrap().remove("8080/tcp").flatten().unwrap();
    assert_eq!(requested[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(requested[0].host_port.as_deref(), Some(""), "Ken must let the engine pick the host port");

    let container_labels = inspect.config.unwrap().labels.unwrap();
    assert_eq!(container_labels.get("ken.test").map(String::as_str), Some("limits"));
    assert_eq!(container_labels.get(labels::SANDBOX).map(String::as_str), Some(name.as_str()));
    assert_eq!(container_labels.get(labels::MANAGED_BY).map(String::as_str), Some("ken"));
    assert_eq!(
        container_labels.get(labels::CACHE).map(String::as_str),
        Some("false"),
        "a container must not look like a kept cache image"
    );

    let published = inspect.network_settings.unwrap().ports.unwrap().remove("8080/tcp").flatten().unwrap();
    assert!(
        published.iter().all(|binding| binding.host_ip.as_deref() == Some("127.0.0.1")),
        "port published beyond 127.0.0.1: {published:?}"
    );

    // The endpoint reaches a server inside the sandbox.
    let endpoint = provider.endpoint(&name, &web).await.expect("endpoint failed");
    assert_eq!(endpoint.url.host_str(), Some("127.0.0.1"));
    let host_port = endpoint.url.port().unwrap();
    assert_ne!(host_port, 0);
    assert_eq!(endpoint.url.as_str(), format!("http://127.0.0.1:{host_port}/"));
    let _server = provider.exec(&name, ExecRequest::new(["perl", "-MIO::Socket::INET", "-e", HTTP_SERVER])).await.unwrap();
    let body = http_get(host_port).await;
    assert!(body.ends_with("ok"), "response from the sandbox's server: {body:?}");
}

/// A one-line HTTP server on port 8080 that returns `ok`, in the base image's perl.
const HTTP_SERVER: &str = r#"$s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die "listen: $!"; while ($c = $s->accept) { <$c>; print $c "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"; close $c }"#;

/// Fetches `/` from 127.0.0.1:`port`, retrying while the server starts.
async fn http_get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await?;
            Ok::<_, std::io::Error>(response)
        };
        match attempt.await {
            Ok(response) if response.starts_with("HTTP/1.0 200") => return response,
            result if Instant::now() > deadline => panic!("no HTTP response on 127.0.0.1:{port}: {result:?}"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn network_disables_inter_container_traffic() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;
    let server = unique_name("iso-a");
    let client = unique_name("iso-b");
    cleanup.sandbox(&server);
    cleanup.sandbox(&client);
    provider.create(&sandbox_spec(&server, &image)).await.expect("create of the server failed");
    provider.create(&sandbox_spec(&client, &image)).await.expect("create of the client failed");

    let network = provider.docker().inspect_network(DEFAULT_NETWORK_NAME, None).await.unwrap();
    let options = network.options.unwrap_or_default();
    assert_eq!(
        options.get("com.docker.network.bridge.enable_icc").map(String::as_str),
        Some("false"),
        "driver options of {DEFAULT_NETWORK_NAME}: {options:?}"
    );
    assert_eq!(network.driver.as_deref(), Some("bridge"));
    let network_labels = network.labels.unwrap_or_default();
    assert_eq!(network_labels.get(labels::MANAGED_BY).map(String::as_str), Some("ken"));

    let inspect = provider
        .docker()
        .inspect_container(&format!("{CONTAINER_PREFIX}{server}"), None::<InspectContainerOptions>)
        .await
        .unwrap();
    let networks = inspect.network_settings.unwrap().networks.unwrap();
    let address = networks[DEFAULT_NETWORK_NAME].ip_address.clone().unwrap();
    assert!(!address.is_empty(), "the server sandbox has no address on {DEFAULT_NETWORK_NAME}");

    let _listener = provider
        .exec(&server, ExecRequest::new(["perl", "-MIO::Socket::INET", "-e", HTTP_SERVER]))
        .await
        .unwrap();
    let probe = format!(
        r#"for (1..50) {{ $c = IO::Socket::INET->new(PeerAddr => "{address}:8080", Timeout => 3); if ($c) {{ print "connected"; exit }} select(undef, undef, undef, 0.2) }} print "blocked""#
    );
    let probe_request = |from: &SandboxName| {
        let request = ExecRequest::new(["perl", "-MIO::Socket::INET", "-e", probe.as_str()]);
        let provider = provider.clone();
        let from = from.clone();
        async move { provider.exec(&from, request).await.unwrap().output().await.unwrap().stdout_text() }
    };
    // The server accepts connections on its own address, so a blocked connection from the
    // other sandbox is the network's doing.
    assert_eq!(probe_request(&server).await, "connected", "the server never listened");
    let from_client = tokio::time::timeout(Duration::from_secs(10), probe_request(&client)).await;
    // A probe still retrying after 10 s means no connection went through either.
    if let Ok(seen) = from_client {
        assert_eq!(seen, "blocked", "one sandbox reached another");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_is_idempotent() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;
    let name = unique_name("destroy");
    cleanup.sandbox(&name);
    provider.create(&sandbox_spec(&name, &image)).await.expect("create failed");

    provider.destroy(&name).await.expect("first destroy failed");
    provider.destroy(&name).await.expect("second destroy failed");
    let never = unique_name("never");
    provider.destroy(&never).await.expect("destroy of a sandbox that never existed failed");

    let error = provider.get(&name).await.expect_err("get after destroy found the sandbox");
    assert!(error.is_not_found(), "get after destroy: {error:?}");
    let left = provider
        .resources(&LabelSelector::managed().with(labels::SANDBOX, name.as_str()))
        .await
        .unwrap();
    assert!(left.is_empty(), "destroy left resources: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_name_leaves_first_untouched() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;
    let name = unique_name("dup");
    cleanup.sandbox(&name);
    let first = provider.create(&sandbox_spec(&name, &image)).await.expect("create failed");
    sh(&provider, &name, "echo kept > /tmp/kept").await;

    let mut second_spec = sandbox_spec(&name, &image);
    second_spec.labels.insert("ken.test-second", "yes");
    let error = provider.create(&second_spec).await.expect_err("a second create with the same name succeeded");
    assert!(
        matches!(&error, Error::AlreadyExists { kind: "sandbox", name: taken } if taken == name.as_str()),
        "expected AlreadyExists for {name}, got {error:?}"
    );

    let after = provider.get(&name).await.expect("the first sandbox is gone");
    assert_eq!(after.id, first.id, "the container was replaced");
    assert_eq!(after.state, SandboxState::Running);
    assert_eq!(after.labels.get("ken.test-second"), None, "the second spec's labels reached the first sandbox");
    assert_eq!(sh(&provider, &name, "cat /tmp/kept").await, "kept\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_during_create_leaves_nothing() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;

    // Destroy runs while create is in progress.
    let name = unique_name("race");
    cleanup.sandbox(&name);
    let spec = sandbox_spec(&name, &image);
    let (created, destroyed) = tokio::join!(provider.create(&spec), async {
        tokio::task::yield_now().await;
        provider.destroy(&name).await
    });
    destroyed.expect("destroy during create failed");
    if let Err(error) = created {
        eprintln!("create that raced with destroy failed (allowed): {error}");
    }
    assert_gone(&provider, &name).await;

    // The caller gives up on create (drops its future) and destroys at once.
    let name = unique_name("cancel");
    cleanup.sandbox(&name);
    let spec = sandbox_spec(&name, &image);
    let mut create = provider.create(&spec).boxed();
    assert!(futures::poll!(&mut create).is_pending(), "create finished in its first poll");
    drop(create);
    provider.destroy(&name).await.expect("destroy after a dropped create failed");
    assert_gone(&provider, &name).await;
}

async fn assert_gone(provider: &DockerProvider, name: &SandboxName) {
    let error = provider.get(name).await.expect_err("the sandbox survived destroy");
    assert!(error.is_not_found(), "get of {name}: {error:?}");
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([("label", vec![format!("{}={name}", labels::SANDBOX)])]))
        .build();
    let left = provider.docker().list_containers(Some(options)).await.unwrap();
    assert!(left.is_empty(), "containers of {name} left: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_share_one_network() {
    let Some(base) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&base).await;
    let network = format!("ken-test-{}", unique_name("net"));
    cleanup.network(&network);
    // Separate providers, as separate `ken` processes would be.
    let mut providers = Vec::new();
    for _ in 0..20 {
        providers.push(DockerProvider::connect().await.unwrap().with_network_name(&network));
    }
    let names: Vec<SandboxName> = (0..20).map(|i| unique_name(&format!("many{i}"))).collect();
    for name in &names {
        cleanup.sandbox(name);
    }

    let specs: Vec<SandboxSpec> = names.iter().map(|name| sandbox_spec(name, &image)).collect();
    let creates = providers.iter().zip(&specs).map(|(provider, spec)| provider.create(spec));
    let results = futures::future::join_all(creates).await;
    for (name, result) in names.iter().zip(&results) {
        if let Err(error) = result {
            panic!("create of {name} failed: {error}");
        }
    }

    let filters = HashMap::from([("name", vec![network.clone()])]);
    let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
    let listed = base.docker().list_networks(Some(options)).await.unwrap();
    let same_name: Vec<_> = listed.iter().filter(|n| n.name.as_deref() == Some(network.as_str())).collect();
    assert_eq!(same_name.len(), 1, "networks named {network}: {same_name:?}");

    // Everything is destroyed before the cleanup removes the network.
    for (provider, name) in providers.iter().zip(&names) {
        provider.destroy(name).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_resource_keeps_network_in_use() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;
    let network = format!("ken-test-{}", unique_name("gc"));
    cleanup.network(&network);
    let provider = provider.with_network_name(&network);
    let name = unique_name("gc");
    cleanup.sandbox(&name);
    provider.create(&sandbox_spec(&name, &image)).await.expect("create failed");

    let resources = provider.resources(&LabelSelector::managed()).await.unwrap();
    let sandbox = find_resource(&resources, ResourceKind::Sandbox, |r| r.labels.sandbox() == Some(name.as_str()));
    let shared = provider.docker().inspect_network(&network, None).await.unwrap();
    let shared_id = shared.id.unwrap();
    let network_resource = find_resource(&resources, ResourceKind::Network, |r| r.id == shared_id);

    let error = provider
        .remove_resource(&network_resource)
        .await
        .expect_err("the network was removed while a sandbox used it");
    assert!(error.to_string().contains("still used"), "{error}");
    assert!(provider.docker().inspect_network(&network, None).await.is_ok(), "the network is gone");

    provider.remove_resource(&sandbox).await.expect("removing the sandbox failed");
    provider.remove_resource(&sandbox).await.expect("removing a removed sandbox failed");
    assert!(provider.get(&name).await.unwrap_err().is_not_found());
    provider.remove_resource(&network_resource).await.expect("removing the unused network failed");
    provider.remove_resource(&network_resource).await.expect("removing a removed network failed");
}

fn find_resource(resources: &[Resource], kind: ResourceKind, predicate: impl Fn(&Resource) -> bool) -> Resource {
    resources
        .iter()
        .find(|resource| resource.kind == kind && predicate(resource))
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} resource found among {resources:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_is_labelled_and_removable() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;
    let name = unique_name("snap");
    cleanup.sandbox(&name);
    provider.create(&sandbox_spec(&name, &image)).await.expect("create failed");
    sh(&provider, &name, "echo saved > /saved").await;

    let reference = format!("ken-test-snapshot:{name}");
    cleanup.image(&reference);
    let snapshot = provider.snapshot(&name, &reference).await.expect("snapshot failed");
    assert_eq!(snapshot.reference, reference);
    let inspect = provider.docker().inspect_image(&reference).await.unwrap();
    let image_labels = inspect.config.and_then(|config| config.labels).unwrap_or_default();
    assert_eq!(image_labels.get("ken.snapshot-of").map(String::as_str), Some(name.as_str()));
    assert_eq!(image_labels.get(labels::MANAGED_BY).map(String::as_str), Some("ken"));
    assert_eq!(image_labels.get(labels::SANDBOX).map(String::as_str), Some(name.as_str()));

    let copy = unique_name("snapcopy");
    cleanup.sandbox(&copy);
    provider.create(&sandbox_spec(&copy, &snapshot)).await.expect("create from the snapshot failed");
    assert_eq!(sh(&provider, &copy, "cat /saved").await, "saved\n");
    provider.destroy(&copy).await.unwrap();

    let resources = provider
        .resources(&LabelSelector::managed().with(labels::SANDBOX, name.as_str()))
        .await
        .unwrap();
    let snapshot_resource = find_resource(&resources, ResourceKind::Image, |_| true);
    provider.remove_resource(&snapshot_resource).await.expect("removing the snapshot failed");
    assert!(provider.docker().inspect_image(&reference).await.is_err(), "the snapshot image is still there");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_round_trip_and_missing_path() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;
    let name = unique_name("files");
    cleanup.sandbox(&name);
    provider.create(&sandbox_spec(&name, &image)).await.expect("create failed");

    let archive = ken_core::archive::single_file("hello.bin", b"\x00\xffhello", 0o600).unwrap();
    provider.upload(&name, "/tmp", archive).await.expect("upload failed");
    let downloaded = provider.download(&name, "/tmp/hello.bin").await.expect("download failed");
    assert_eq!(ken_core::archive::first_file(&downloaded).unwrap(), b"\x00\xffhello");

    let error = provider.download(&name, "/no/such/file").await.expect_err("download of a missing path");
    assert!(matches!(&error, Error::NotFound { kind: "path", .. }), "{error:?}");
    let archive = ken_core::archive::single_file("x", b"x", 0o644).unwrap();
    let error = provider.upload(&name, "/no/such/dir", archive).await.expect_err("upload into a missing dir");
    assert!(matches!(&error, Error::NotFound { kind: "path", .. }), "{error:?}");

    let missing = unique_name("nofiles");
    let error = provider.download(&missing, "/tmp").await.expect_err("download from a missing sandbox");
    assert!(matches!(&error, Error::NotFound { kind: "sandbox", .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoint_of_unpublished_port_names_it() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;
    let name = unique_name("noport");
    cleanup.sandbox(&name);
    provider.create(&sandbox_spec(&name, &image)).await.expect("create failed");
    let port = PortSpec {
        name: "admin".to_owned(),
        port: 9999,
        scheme: "http".to_owned(),
    };
    let error = provider.endpoint(&name, &port).await.expect_err("endpoint of a port never published");
    let message = error.to_string();
    assert!(message.contains("9999"), "the error does not name the port: {message}");
    assert!(message.contains("admin"), "the error does not name the port's name: {message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_kill_early_and_unprivileged() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;
    let name = unique_name("kill");
    cleanup.sandbox(&name);
    provider.create(&sandbox_spec(&name, &image)).await.expect("create failed");

    for user in [None, Some("nobody")] {
        let marker = format!("600.{}", std::process::id());
        let mut request = ExecRequest::shell(format!("sleep {marker} & sleep {marker}; echo never"));
        if let Some(user) = user {
            request = request.user(user);
        }
        let process = provider.exec(&name, request).await.expect("exec failed");
        // No pause: the wrapper may not have written its group file yet.
        process.kill().await.expect("kill failed");
        let output = tokio::time::timeout(Duration::from_secs(10), process.output())
            .await
            .expect("the output did not end after kill")
            .unwrap();
        assert!(output.status.killed, "status after kill as {user:?}: {}", output.status);
        assert!(!output.stdout_text().contains("never"));
        let left = sh(
            &provider,
            &name,
            &format!("for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done | grep -c 'slee[p] {marker}' || true"),
        )
        .await;
        assert_eq!(left.trim(), "0", "processes of the killed exec as {user:?} are left");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_environment_is_exactly_the_request() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;
    let name = unique_name("env");
    cleanup.sandbox(&name);
    let mut spec = sandbox_spec(&name, &image);
    spec.workdir = Some("/srv/work".to_owned());
    provider.create(&spec).await.expect("create failed");

    let value = "line one\nline \"two\" 'three' $HOME \\ `x`";
    let request = ExecRequest::new(["env"]).env("KEN_VALUE", value);
    let output = provider.exec(&name, request).await.unwrap().output().await.unwrap();
    let text = output.stdout_text();
    assert!(text.contains(&format!("KEN_VALUE={value}\n")), "env output: {text}");
    assert!(!text.contains("PWD="), "the wrapper leaked PWD: {text}");

    assert_eq!(sh(&provider, &name, "pwd").await, "/srv/work\n", "default working directory");
    let output = provider
        .exec(&name, ExecRequest::new(["pwd"]).workdir("/tmp").user("nobody"))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(output.stdout_text(), "/tmp\n");

    let missing = unique_name("noexec");
    let error = provider.exec(&missing, ExecRequest::new(["true"])).await.expect_err("exec in a missing sandbox");
    assert!(error.is_not_found(), "{error:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_output_chunks_are_bounded() {
    let Some(provider) = provider().await else { return };
    let cleanup = Cleanup::default();
    let image = fixture_image(&provider).await;
    let name = unique_name("chunks");
    cleanup.sandbox(&name);
    provider.create(&sandbox_spec(&name, &image)).await.expect("create failed");

    let mut process = provider
        .exec(&name, ExecRequest::new(["head", "-c", "5000000", "/dev/zero"]))
        .await
        .expect("exec failed");
    let mut total = 0;
    let mut largest = 0;
    while let Some(chunk) = process.next_chunk().await {
        let chunk = chunk.expect("reading output failed");
        total += chunk.bytes.len();
        largest = largest.max(chunk.bytes.len());
    }
    let status = process.finish().await.unwrap();
    assert_eq!(status.code, Some(0));
    assert_eq!(total, 5_000_000, "bytes received");
    assert!(largest <= 32 * 1024, "largest output chunk: {largest} bytes");
}
