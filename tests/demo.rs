//! The demo project launched end to end on a real Docker engine: image, clone,
//! Postgres, schema, web service, seed; then listed, queried and removed.

use std::path::Path;
use std::sync::Arc;

use ken::docker::DockerProvider;
use ken::orchestrator::{sandbox_selector, LaunchOptions};
use ken::{ExecRequest, Manifest, Orchestrator, Phase, SandboxName, SandboxProvider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(url: &url::Url, path: &str) -> (u16, String) {
    let port = url.port().expect("endpoint port");
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_seeded_rows_and_leaves_nothing() {
    let Some(provider) = ken::core::testkit::require_docker_or_skip("demo end to end", DockerProvider::connect().await) else {
        return;
    };
    let provider: Arc<dyn SandboxProvider> = Arc::new(provider);
    let manifest = Manifest::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo-app/ken.toml")).unwrap();
    let orchestrator = Orchestrator::builder(provider.clone()).owner("ken-tests").build();
    let name = SandboxName::new(format!("demo-e2e-{}", std::process::id())).unwrap();

    let launched = orchestrator
        .launch(&manifest, LaunchOptions::default().name(name.clone()))
        .await
        .unwrap();
    let result = std::panic::AssertUnwindSafe(async {
        for phase in [Phase::Image, Phase::Create, Phase::Repository, Phase::Plan, Phase::Seed, Phase::Network, Phase::Ready] {
            let timing = launched.report.phase(phase).unwrap();
            assert!(!timing.skipped, "phase {phase} was skipped");
        }
        let web = launched.endpoints.iter().find(|e| e.name == "web").expect("web endpoint");
        assert_eq!(web.url.host_str(), Some("127.0.0.1"));

        let (status, body) = http_get(&web.url, "/api/tasks?limit=5").await;
        assert_eq!(status, 200, "{body}");
        let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
        let rows = rows.as_array().or_else(|| rows["tasks"].as_array()).expect("a list of tasks");
        assert_eq!(rows.len(), 5, "{body}");

        let (status, page) = http_get(&web.url, "/").await;
        assert_eq!(status, 200);
        assert!(page.contains("style.css"), "{page}");

        let count = launched
            .sandbox
            .exec_output(ExecRequest::new(["psql", "-tA", "-U", "postgres", "-d", "demo", "-c", "select count(*) from tasks"]).user("postgres"))
            .await
            .unwrap();
        let tasks: u64 = count.stdout_text().trim().parse().unwrap();
        assert!(tasks >= 1000, "only {tasks} seeded tasks");

        let clone = launched
            .sandbox
            .exec_output(ExecRequest::new(["git", "-C", "/workspace/repo", "log", "-1", "--format=%H"]))
            .await
            .unwrap();
        assert!(clone.status.success(), "the sandbox has no git clone");

        let listed = orchestrator.list().await.unwrap();
        let entry = listed.iter().find(|s| s.info.name == name).expect("listed");
        assert!(entry.ready);
        assert_eq!(entry.endpoints.len(), 1);
    })
    .catch_unwind_safe()
    .await;

    orchestrator.destroy(&name).await.unwrap();
    let left = provider.resources(&sandbox_selector(&name)).await.unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

trait CatchUnwindSafe: std::future::Future + Sized {
    fn catch_unwind_safe(self) -> futures::future::CatchUnwind<Self>
    where
        Self: std::panic::UnwindSafe,
    {
        futures::FutureExt::catch_unwind(self)
    }
}

impl<F: std::future::Future> CatchUnwindSafe for F {}
