//! Orchestration tests with mocked providers: a launch that fails in any phase, or is
//! cancelled, removes what it made and names the phase.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use super::*;
use crate::plan::testing::MockProvider;
use crate::phase::Phase;
use crate::exec::{OutputChunk, OutputStream, ProcessKiller};
use crate::labels::Labels;
use crate::manifest::Manifest;
use crate::network::{Attachment, ReapReport};
use crate::sandbox::{Capabilities, ImageRef, Resource, ResourceKind, SandboxState};

mockall::mock! {
    pub Network {}

    impl std::fmt::Debug for Network {
        fn fmt<'a>(&self, f: &mut std::fmt::Formatter<'a>) -> std::fmt::Result;
    }

    #[async_trait]
    impl NetworkProvider for Network {
        fn name(&self) -> &str;
        fn image_lines(&self) -> Vec<String>;
        async fn ensure_policy(&self, policy: &AccessPolicy) -> Result<()>;
        async fn attach(&self, sandbox: &Sandbox) -> Result<Attachment>;
        async fn expose(&self, sandbox: &Sandbox, port: &PortSpec) -> Result<Endpoint>;
        async fn detach(&self, sandbox: &Sandbox) -> Result<()>;
        async fn reap(&self, live: &[SandboxInfo], dry_run: bool) -> Result<ReapReport>;
    }
}

struct NoKill;

#[async_trait]
impl ProcessKiller for NoKill {
    async fn kill(&self) -> Result<()> {
        Ok(())
    }
}

/// Builds an exec that already finished with `code` after printing `stdout`.
fn finished(code: i64, stdout: &str) -> ExecProcess {
    let chunk = OutputChunk {
        stream: OutputStream::Stdout,
        bytes: Bytes::from(stdout.to_owned()),
    };
    ExecProcess::new(
        futures::stream::iter(vec![Ok(chunk)]).boxed(),
        async move { Ok(Some(code)) }.boxed(),
        Arc::new(NoKill),
        None,
    )
}

/// Builds an exec that never ends.
fn hanging() -> ExecProcess {
    ExecProcess::new(
        futures::stream::pending().boxed(),
        futures::future::pending().boxed(),
        Arc::new(NoKill),
        None,
    )
}

fn info(name: &SandboxName) -> SandboxInfo {
    SandboxInfo {
        id: format!("id-{name}"),
        name: name.clone(),
        provider: "mock".into(),
        state: SandboxState::Running,
        labels: Labels::new(),
        created_at: None,
        image: "mock-image".into(),
    }
}

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM debian:bookworm-slim\n").unwrap();
        std::fs::write(dir.path().join("seed.sql"), "insert into t values (1);\n").unwrap();
        let text = format!("name = \"demo\"\n{extra}");
        std::fs::write(dir.path().join("ken.toml"), text).unwrap();
        Project { dir }
    }

    fn manifest(&self) -> Manifest {
        Manifest::load(self.dir.path().join("ken.toml")).unwrap()
    }
}

/// Records which sandboxes were destroyed.
#[derive(Clone, Default)]
struct Destroyed(Arc<Mutex<Vec<String>>>);

impl Destroyed {
    fn names(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Builds a provider whose every call succeeds. Its exec returns what
/// `exec_result` makes of the request.
fn provider_with(
    destroyed: &Destroyed,
    exec_result: impl Fn(&ExecRequest) -> ExecProcess + Send + Sync + 'static,
) -> MockProvider {
    let mut provider = MockProvider::new();
    provider.expect_name().return_const("mock".to_owned());
    provider
        .expect_capabilities()
        .returning(|| Capabilities::none().with_isolation(true));
    provider.expect_get().returning(|name| {
        Err(Error::NotFound {
            kind: "sandbox",
            name: name.to_string(),
        })
    });
    provider.expect_prepare_image().returning(|_, _| {
        Ok(ImageRef {
            reference: "mock-image".into(),
            cached: true,
        })
    });
    provider.expect_create().returning(|spec| Ok(info(&spec.name)));
    provider.expect_exec().returning(move |_, request| Ok(exec_result(&request)));
    provider.expect_upload().returning(|_, _, _| Ok(()));
    let log = destroyed.clone();
    provider.expect_destroy().returning(move |name| {
        log.0.lock().unwrap().push(name.to_string());
        Ok(())
    });
    provider
}

fn mentions(request: &ExecRequest, needle: &str) -> bool {
    request.command.iter().any(|a| a.contains(needle)) || request.env.values().any(|v| v.contains(needle))
}

fn name() -> SandboxName {
    SandboxName::new("t-1").unwrap()
}

async fn launch(provider: MockProvider, manifest: &Manifest) -> Result<Launched> {
    let orchestrator = Orchestrator::builder(Arc::new(provider)).owner("tester").build();
    orchestrator
        .launch(manifest, LaunchOptions::default().name(name()))
        .await
}

#[tokio::test]
async fn image_failure_creates_nothing() {
    let project = Project::new("");
    let destroyed = Destroyed::default();
    let mut provider = MockProvider::new();
    provider.expect_name().return_const("mock".to_owned());
    provider.expect_capabilities().returning(|| Capabilities::none().with_isolation(true));
    provider.expect_get().returning(|n| Err(Error::NotFound { kind: "sandbox", name: n.to_string() }));
    provider
        .expect_prepare_image()
        .returning(|_, _| Err(Error::backend("mock", "build failed at step 2")));
    provider.expect_create().never();
    provider.expect_destroy().never();

    let error = launch(provider, &project.manifest()).await.unwrap_err();
    assert_eq!(error.phase(), Some(Phase::Image));
    assert!(error.to_string().contains("phase image"), "{error}");
    assert!(destroyed.names().is_empty());
}

#[tokio::test]
async fn create_failure_destroys_partial_sandbox() {
    let project = Project::new("");
    let destroyed = Destroyed::default();
    let mut provider = provider_with(&destroyed, |_| finished(0, ""));
    provider.checkpoint();
    provider.expect_name().return_const("mock".to_owned());
    provider.expect_capabilities().returning(|| Capabilities::none().with_isolation(true));
    provider.expect_get().returning(|n| Err(Error::NotFound { kind: "sandbox", name: n.to_string() }));
    provider.expect_prepare_image().returning(|_, _| Ok(ImageRef { reference: "i".into(), cached: true }));
    provider
        .expect_create()
        .returning(|_| Err(Error::backend("mock", "container start failed")));
    let log = destroyed.clone();
    provider.expect_destroy().returning(move |n| {
        log.0.lock().unwrap().push(n.to_string());
        Ok(())
    });

    let error = launch(provider, &project.manifest()).await.unwrap_err();
    assert_eq!(error.phase(), Some(Phase::Create));
    assert_eq!(destroyed.names(), vec!["t-1".to_owned()]);
}

#[tokio::test]
async fn existing_name_is_left_alone() {
    let project = Project::new("");
    let mut provider = MockProvider::new();
    provider.expect_name().return_const("mock".to_owned());
    provider.expect_capabilities().returning(|| Capabilities::none().with_isolation(true));
    provider.expect_get().returning(|n| Ok(info(n)));
    provider.expect_prepare_image().never();
    provider.expect_create().never();
    provider.expect_destroy().never();

    let error = launch(provider, &project.manifest()).await.unwrap_err();
    assert!(error.is_already_exists(), "{error}");
    assert!(error.to_string().contains("\"t-1\""), "{error}");
}

#[tokio::test]
async fn create_race_on_name_is_left_alone() {
    let project = Project::new("");
    let mut provider = MockProvider::new();
    provider.expect_name().return_const("mock".to_owned());
    provider.expect_capabilities().returning(|| Capabilities::none().with_isolation(true));
    provider.expect_get().returning(|n| Err(Error::NotFound { kind: "sandbox", name: n.to_string() }));
    provider.expect_prepare_image().returning(|_, _| Ok(ImageRef { reference: "i".into(), cached: true }));
    provider.expect_create().returning(|spec| {
        Err(Error::AlreadyExists {
            kind: "sandbox",
            name: spec.name.to_string(),
        })
    });
    provider.expect_destroy().never();

    let error = launch(provider, &project.manifest()).await.unwrap_err();
    assert!(error.is_already_exists(), "{error}");
}

#[tokio::test]
async fn plan_failure_names_step_and_tears_down() {
    let project = Project::new("[[steps]]\nname = \"migrate\"\nrun = \"exit 7\"\n");
    let destroyed = Destroyed::default();
    let provider = provider_with(&destroyed, |request| {
        if mentions(request, "exit 7") {
            finished(7, "")
        } else if mentions(request, "tail") {
            finished(0, "relation \"users\" does not exist\n")
        } else {
            finished(0, "")
        }
    });

    let error = launch(provider, &project.manifest()).await.unwrap_err();
    assert_eq!(error.phase(), Some(Phase::Plan));
    assert!(error.to_string().contains("migrate"), "{error}");
    assert_eq!(destroyed.names(), vec!["t-1".to_owned()]);
}

#[tokio::test]
async fn seed_failure_tears_down() {
    let project = Project::new("[seed]\nsql = [\"seed.sql\"]\ndatabase = \"demo\"\n");
    let destroyed = Destroyed::default();
    let provider = provider_with(&destroyed, |request| {
        if mentions(request, "psql") {
            let chunk = OutputChunk {
                stream: OutputStream::Stderr,
                bytes: Bytes::from_static(b"ERROR:  relation \"t\" does not exist\n"),
            };
            ExecProcess::new(
                futures::stream::iter(vec![Ok(chunk)]).boxed(),
                async { Ok(Some(3)) }.boxed(),
                Arc::new(NoKill),
                None,
            )
        } else {
            finished(0, "")
        }
    });

    let error = launch(provider, &project.manifest()).await.unwrap_err();
    assert_eq!(error.phase(), Some(Phase::Seed));
    assert!(error.to_string().contains("does not exist"), "{error}");
    assert_eq!(destroyed.names(), vec!["t-1".to_owned()]);
}

#[tokio::test]
async fn network_failure_detaches_then_destroys() {
    let project = Project::new("");
    let destroyed = Destroyed::default();
    let provider = provider_with(&destroyed, |_| finished(0, ""));
    let order = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let mut network = MockNetwork::new();
    network.expect_name().return_const("local".to_owned());
    network.expect_image_lines().returning(Vec::new);
    network.expect_ensure_policy().returning(|_| Ok(()));
    network
        .expect_attach()
        .returning(|_| Err(Error::backend("mock-net", "auth key rejected")));
    let detach_order = order.clone();
    network.expect_detach().times(1).returning(move |_| {
        detach_order.lock().unwrap().push("detach");
        Ok(())
    });

    let orchestrator = Orchestrator::builder(Arc::new(provider))
        .network(Arc::new(network))
        .build();
    let error = orchestrator
        .launch(&project.manifest(), LaunchOptions::default().name(name()))
        .await
        .unwrap_err();
    assert_eq!(error.phase(), Some(Phase::Network));
    assert_eq!(order.lock().unwrap().as_slice(), ["detach"]);
    assert_eq!(destroyed.names(), vec!["t-1".to_owned()]);
}

#[tokio::test]
async fn network_image_lines_end_the_dockerfile() {
    let project = Project::new("");
    std::fs::write(project.dir.path().join("Dockerfile"), "FROM debian:bookworm-slim\nRUN true").unwrap();
    let built = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut provider = MockProvider::new();
    provider.expect_name().return_const("mock".to_owned());
    provider.expect_capabilities().returning(|| Capabilities::none().with_isolation(true));
    provider.expect_get().returning(|n| Err(Error::NotFound { kind: "sandbox", name: n.to_string() }));
    let log = built.clone();
    provider.expect_prepare_image().times(1).returning(move |spec, _| {
        log.lock().unwrap().push(spec.dockerfile.clone());
        Err(Error::backend("mock", "stop after the image"))
    });
    provider.expect_create().never();
    let mut network = MockNetwork::new();
    network.expect_name().return_const("local".to_owned());
    network.expect_ensure_policy().returning(|_| Ok(()));
    network
        .expect_image_lines()
        .returning(|| vec!["RUN install-vpn-client".to_owned(), "ENV VPN=1\n".to_owned()]);

    let orchestrator = Orchestrator::builder(Arc::new(provider)).network(Arc::new(network)).build();
    let error = orchestrator
        .launch(&project.manifest(), LaunchOptions::default().name(name()))
        .await
        .unwrap_err();

    assert_eq!(error.phase(), Some(Phase::Image), "{error}");
    let dockerfiles = built.lock().unwrap().clone();
    assert_eq!(dockerfiles.len(), 1);
    assert!(
        dockerfiles[0].ends_with("RUN true\nRUN install-vpn-client\nENV VPN=1\n"),
        "{}",
        dockerfiles[0]
    );
    assert!(dockerfiles[0].starts_with("FROM debian:bookworm-slim\n"), "{}", dockerfiles[0]);
}

#[test]
fn image_lines_keep_dockerfile_as_is_when_empty() {
    let mut dockerfile = "FROM scratch".to_owned();
    launch::append_image_lines(&mut dockerfile, &[]);
    assert_eq!(dockerfile, "FROM scratch");
}

#[tokio::test(start_paused = true)]
async fn ready_failure_when_endpoint_is_closed() {
    let project = Project::new("[[ports]]\nname = \"web\"\nport = 8080\n");
    let destroyed = Destroyed::default();
    let mut provider = provider_with(&destroyed, |_| finished(0, ""));
    provider.expect_endpoint().returning(|_, port| {
        // Port 9 (discard) is not listening on the test machine's loopback.
        Ok(Endpoint {
            name: port.name.clone(),
            port: port.port,
            url: "http://127.0.0.1:9/".parse().unwrap(),
            credentials: None,
        })
    });

    let error = launch(provider, &project.manifest()).await.unwrap_err();
    assert_eq!(error.phase(), Some(Phase::Ready));
    assert!(error.to_string().contains("web"), "{error}");
    assert_eq!(destroyed.names(), vec!["t-1".to_owned()]);
}

#[tokio::test]
async fn cancelled_launch_tears_down() {
    let project = Project::new("[[steps]]\nname = \"slow\"\nrun = \"sleep 600\"\n");
    let destroyed = Destroyed::default();
    let provider = provider_with(&destroyed, |request| {
        if mentions(request, "sleep 600") {
            hanging()
        } else {
            finished(0, "")
        }
    });
    let orchestrator = Orchestrator::builder(Arc::new(provider)).build();
    let manifest = project.manifest();

    let launch = orchestrator.launch(&manifest, LaunchOptions::default().name(name()));
    let outcome = tokio::time::timeout(Duration::from_millis(300), launch).await;
    assert!(outcome.is_err(), "the launch should still be running");
    orchestrator.wait_for_teardowns().await;
    assert_eq!(destroyed.names(), vec!["t-1".to_owned()]);
}

#[tokio::test]
async fn successful_launch_reports_every_phase() {
    let project = Project::new("[[steps]]\nname = \"build\"\nrun = \"true\"\n");
    let destroyed = Destroyed::default();
    let provider = provider_with(&destroyed, |_| finished(0, ""));
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink_events = events.clone();
    let orchestrator = Orchestrator::builder(Arc::new(provider))
        .events(EventSink::new(move |e| sink_events.lock().unwrap().push(e)))
        .build();

    let launched = orchestrator
        .launch(&project.manifest(), LaunchOptions::default().name(name()))
        .await
        .unwrap();
    let phases: Vec<Phase> = launched.report.phases.iter().map(|p| p.phase).collect();
    assert_eq!(phases, Phase::ALL.to_vec());
    assert!(launched.report.phase(Phase::Plan).is_some_and(|p| !p.skipped));
    assert!(launched.report.phase(Phase::Repository).is_some_and(|p| p.skipped));
    assert!(destroyed.names().is_empty());
    let finished_events = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, crate::phase::LaunchEvent::PhaseFinished { .. }))
        .count();
    assert_eq!(finished_events, 5, "image, create, plan, network and ready finish; the rest are skipped");
}

#[tokio::test]
async fn missing_secret_fails_before_anything_is_made() {
    let project = Project::new("secrets = [\"KEN_TEST_MISSING_SECRET_7F3A\"]\n");
    let mut provider = MockProvider::new();
    provider.expect_name().return_const("mock".to_owned());
    provider.expect_capabilities().returning(|| Capabilities::none().with_isolation(true));
    provider.expect_prepare_image().never();
    provider.expect_create().never();

    let error = launch(provider, &project.manifest()).await.unwrap_err();
    assert!(error.to_string().contains("KEN_TEST_MISSING_SECRET_7F3A"), "{error}");
    assert_eq!(error.phase(), None);
}

#[tokio::test]
async fn wrong_network_kind_fails_before_anything_is_made() {
    let project = Project::new("[network]\nkind = \"tailscale\"\n");
    let mut provider = MockProvider::new();
    provider.expect_name().return_const("mock".to_owned());
    provider.expect_capabilities().returning(|| Capabilities::none().with_isolation(true));
    provider.expect_prepare_image().never();

    let error = launch(provider, &project.manifest()).await.unwrap_err();
    assert!(error.to_string().contains("tailscale"), "{error}");
}

#[test]
fn ports_label_round_trips() {
    let ports = vec![
        PortSpec { name: "web".into(), port: 8080, scheme: "http".into() },
        PortSpec { name: "db".into(), port: 5432, scheme: "tcp".into() },
    ];
    let mut sandbox = info(&name());
    sandbox.labels.insert(PORTS_LABEL, ports_label(&ports));
    assert_eq!(ports_from_labels(&sandbox), ports);
}

/// A `MakeWriter` that appends everything to one shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn secrets_stay_out_of_logs_errors_and_debug() {
    const VALUE: &str = "ken-secret-9d7c1f-do-not-print";
    std::env::set_var("KEN_TEST_SECRET_9D7C", VALUE);
    let project = Project::new("secrets = [\"KEN_TEST_SECRET_9D7C\"]\n");
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut provider = MockProvider::new();
    provider.expect_name().return_const("mock".to_owned());
    provider.expect_capabilities().returning(|| Capabilities::none().with_isolation(true));
    provider.expect_get().returning(|n| Err(Error::NotFound { kind: "sandbox", name: n.to_string() }));
    provider.expect_prepare_image().returning(|_, _| Ok(ImageRef { reference: "i".into(), cached: true }));
    let seen_by_create = seen.clone();
    provider.expect_create().returning(move |spec| {
        let secret = spec.secret_env.get("KEN_TEST_SECRET_9D7C").map(|s| s.expose().to_owned());
        assert_eq!(secret.as_deref(), Some(VALUE), "the secret must reach the provider");
        tracing::debug!(?spec, "mock provider received spec");
        seen_by_create.lock().unwrap().push(format!("{spec:?}"));
        Err(Error::backend("mock", "engine refused the container"))
    });
    provider.expect_destroy().returning(|_| Ok(()));

    let error = launch(provider, &project.manifest()).await.unwrap_err();
    let mut printed = format!("{error}\n{error:?}\n");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        printed.push_str(&format!("{cause}\n"));
        source = cause.source();
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let debug = seen.lock().unwrap().join("\n");

    assert!(logs.contains("mock provider received spec"), "tracing was not captured");
    assert!(!logs.contains(VALUE), "secret in logs:\n{logs}");
    assert!(!printed.contains(VALUE), "secret in error:\n{printed}");
    assert!(!debug.is_empty());
    assert!(!debug.contains(VALUE), "secret in Debug:\n{debug}");
}

/// Builds a sandbox for the garbage collection tests, with `extra` labels.
fn gc_sandbox(name: &str, extra: &[(&str, String)]) -> SandboxInfo {
    let name = SandboxName::new(name).unwrap();
    let mut sandbox = info(&name);
    sandbox.labels = Labels::for_sandbox(name.as_str(), "tester", Duration::from_secs(3600));
    for (key, value) in extra {
        sandbox.labels.insert(*key, value.clone());
    }
    sandbox
}

fn resource(kind: ResourceKind, id: &str, sandbox: Option<&str>, cache: bool) -> Resource {
    let mut labels = Labels::new();
    labels.insert(labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    if let Some(sandbox) = sandbox {
        labels.insert(labels::SANDBOX, sandbox);
    }
    if cache {
        labels.insert(labels::CACHE, "true");
    }
    Resource {
        kind,
        id: id.to_owned(),
        labels,
    }
}

/// Builds a provider with `ready` (launched, marker present), `expired` (past its time to
/// live), `abandoned` (no marker, launcher dead), `starting` (no marker, launcher
/// alive), an orphaned volume, a cached image and the shared network.
fn gc_provider(removed: &Destroyed) -> MockProvider {
    let past = (labels::unix_now() - 10).to_string();
    let dead_launcher = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        format!("{}/{pid}/1", host.trim())
    };
    let sandboxes = vec![
        gc_sandbox("ready", &[]),
        gc_sandbox("expired", &[(labels::EXPIRES_AT, past)]),
        gc_sandbox("abandoned", &[(labels::LAUNCHER, dead_launcher)]),
        gc_sandbox("starting", &[(labels::LAUNCHER, launcher::current())]),
    ];
    let resources = vec![
        resource(ResourceKind::Volume, "vol-of-gone", Some("gone"), false),
        resource(ResourceKind::Volume, "vol-of-ready", Some("ready"), false),
        resource(ResourceKind::Image, "cached-image", Some("gone"), true),
        resource(ResourceKind::Network, "ken-sandboxes", None, false),
    ];

    let mut provider = MockProvider::new();
    provider.expect_name().return_const("mock".to_owned());
    provider.expect_capabilities().returning(|| Capabilities::none().with_isolation(true));
    let listed = sandboxes.clone();
    provider.expect_list().returning(move |_| Ok(listed.clone()));
    provider.expect_resources().returning(move |_| Ok(resources.clone()));
    let by_name = sandboxes.clone();
    provider.expect_get().returning(move |name| {
        by_name
            .iter()
            .find(|s| &s.name == name)
            .cloned()
            .ok_or_else(|| Error::NotFound { kind: "sandbox", name: name.to_string() })
    });
    provider.expect_exec().returning(|sandbox, request| {
        let reads_marker = request.command.iter().any(|a| a.ends_with("ready.json"));
        if reads_marker && sandbox.as_str() == "ready" {
            Ok(finished(0, r#"{"ready_at":1,"phases":[],"seed_fingerprint":null}"#))
        } else {
            Ok(finished(1, ""))
        }
    });
    let log = removed.clone();
    provider.expect_destroy().returning(move |name| {
        log.0.lock().unwrap().push(format!("sandbox {name}"));
        Ok(())
    });
    let log = removed.clone();
    provider.expect_remove_resource().returning(move |resource| {
        log.0.lock().unwrap().push(format!("{} {}", resource.kind, resource.id));
        Ok(())
    });
    provider
}

#[tokio::test]
async fn gc_removes_expired_abandoned_and_orphans() {
    let removed = Destroyed::default();
    let orchestrator = Orchestrator::builder(Arc::new(gc_provider(&removed))).build();

    let report = orchestrator.gc(false).await.unwrap();
    let mut names = removed.names();
    names.sort();
    assert_eq!(names, ["sandbox abandoned", "sandbox expired", "volume vol-of-gone"]);
    let reasons: Vec<(String, GcReason)> = report.items.iter().map(|i| (i.id.clone(), i.reason)).collect();
    assert!(reasons.contains(&("expired".into(), GcReason::Expired)));
    assert!(reasons.contains(&("abandoned".into(), GcReason::Abandoned)));
    assert!(reasons.contains(&("vol-of-gone".into(), GcReason::Orphaned)));
    assert_eq!(report.items.len(), 3);
}

#[tokio::test]
async fn gc_dry_run_removes_nothing() {
    let removed = Destroyed::default();
    let orchestrator = Orchestrator::builder(Arc::new(gc_provider(&removed))).build();

    let report = orchestrator.gc(true).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(report.items.len(), 3);
    assert!(removed.names().is_empty(), "{:?}", removed.names());
}

#[tokio::test(start_paused = true)]
async fn wait_ready_stops_for_abandoned_launch() {
    let removed = Destroyed::default();
    let orchestrator = Orchestrator::builder(Arc::new(gc_provider(&removed))).build();
    let name = SandboxName::new("abandoned").unwrap();

    let error = orchestrator
        .wait_ready(&name, Duration::from_secs(600))
        .await
        .expect_err("an abandoned launch never becomes ready");
    let message = error.to_string();
    assert!(!matches!(error, Error::Timeout { .. }), "{message}");
    assert!(message.contains("will never become ready"), "{message}");
    assert!(message.contains("ken rm abandoned"), "{message}");
    assert!(!message.contains("SandboxName("), "{message}");
}

#[tokio::test(start_paused = true)]
async fn wait_ready_keeps_waiting_for_live_launcher() {
    let removed = Destroyed::default();
    let orchestrator = Orchestrator::builder(Arc::new(gc_provider(&removed))).build();
    let name = SandboxName::new("starting").unwrap();

    let error = orchestrator
        .wait_ready(&name, Duration::from_secs(5))
        .await
        .expect_err("no marker appears");
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(error.to_string().contains("sandbox starting to become ready"), "{error}");
}

#[test]
fn default_owner_is_never_empty() {
    assert!(!default_owner().is_empty());
}

#[tokio::test]
async fn secret_printed_by_failing_step_is_redacted() {
    const VALUE: &str = "ken-secret-step-4411";
    std::env::set_var("KEN_TEST_STEP_SECRET_4411", VALUE);
    let project = Project::new(
        "secrets = [\"KEN_TEST_STEP_SECRET_4411\"]\n[[steps]]\nname = \"leaky\"\nrun = \"echo $KEN_TEST_STEP_SECRET_4411; exit 9\"\n",
    );
    let destroyed = Destroyed::default();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink_events = events.clone();
    let provider = provider_with(&destroyed, |request| {
        if mentions(request, "exit 9") {
            finished(9, "")
        } else if mentions(request, "tail") {
            finished(0, &format!("token is {VALUE}\n"))
        } else {
            finished(0, "")
        }
    });
    let orchestrator = Orchestrator::builder(Arc::new(provider))
        .events(EventSink::new(move |e| sink_events.lock().unwrap().push(format!("{e:?}"))))
        .build();

    let error = orchestrator
        .launch(&project.manifest(), LaunchOptions::default().name(name()))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("token is [redacted]"), "{message}");
    assert!(!message.contains(VALUE), "{message}");
    let events = events.lock().unwrap().join("\n");
    assert!(!events.contains(VALUE), "{events}");
}
