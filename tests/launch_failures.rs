//! Launches made to fail in each phase against a real Docker engine, all at once:
//! each error names its phase, and nothing of any of them is left behind.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::join_all;
use ken::docker::DockerProvider;
use ken::harness::HarnessContext;
use ken::network::{Attachment, ReapReport};
use ken::orchestrator::{sandbox_selector, LaunchOptions};
use ken::policy::AccessPolicy;
use ken::{
    AgentHarness, AgentTurn, Endpoint, Error, LocalNetwork, Manifest, NetworkProvider, Orchestrator, Phase,
    PortSpec, PromptRequest, Result, Sandbox, SandboxInfo, SandboxName, SandboxProvider,
};

/// A harness whose server never starts.
#[derive(Debug)]
struct BrokenHarness;

#[async_trait]
impl AgentHarness for BrokenHarness {
    fn name(&self) -> &str {
        "broken"
    }

    fn image_lines(&self) -> Vec<String> {
        Vec::new()
    }

    async fn start(&self, _sandbox: &Sandbox, _context: &HarnessContext) -> Result<Vec<Endpoint>> {
        Err(Error::backend("broken-harness", "agent server exited during startup"))
    }

    async fn prompt(&self, _sandbox: &Sandbox, _request: PromptRequest) -> Result<AgentTurn> {
        Err(Error::unsupported("prompt", "broken"))
    }

    async fn abort(&self, _sandbox: &Sandbox, _session: &str) -> Result<()> {
        Ok(())
    }
}

/// The local network, except that joining always fails.
#[derive(Debug)]
struct RefusingNetwork(LocalNetwork);

#[async_trait]
impl NetworkProvider for RefusingNetwork {
    fn name(&self) -> &str {
        "local"
    }

    async fn ensure_policy(&self, policy: &AccessPolicy) -> Result<()> {
        self.0.ensure_policy(policy).await
    }

    async fn attach(&self, _sandbox: &Sandbox) -> Result<Attachment> {
        Err(Error::backend("refusing-network", "auth key was rejected"))
    }

    async fn expose(&self, sandbox: &Sandbox, port: &PortSpec) -> Result<Endpoint> {
        self.0.expose(sandbox, port).await
    }

    async fn detach(&self, sandbox: &Sandbox) -> Result<()> {
        self.0.detach(sandbox).await
    }

    async fn reap(&self, live: &[SandboxInfo], dry_run: bool) -> Result<ReapReport> {
        self.0.reap(live, dry_run).await
    }
}

enum Wiring {
    Plain,
    Harness,
    Network,
}

struct Case {
    label: &'static str,
    phase: Phase,
    dockerfile: &'static str,
    manifest: &'static str,
    wiring: Wiring,
    /// A word the error message must contain.
    expect: &'static str,
}

const PLAIN: &str = "FROM debian:bookworm-slim\n";
const WITH_GIT: &str = "FROM debian:bookworm-slim\n\
    RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*\n";

fn cases() -> Vec<Case> {
    vec![
        Case {
            label: "image",
            phase: Phase::Image,
            dockerfile: "FROM debian:bookworm-slim\nRUN echo build-step-broke && exit 1\n",
            manifest: "",
            wiring: Wiring::Plain,
            expect: "build-step-broke",
        },
        Case {
            label: "create",
            phase: Phase::Create,
            dockerfile: PLAIN,
            manifest: "[resources]\ncpus = 512\n",
            wiring: Wiring::Plain,
            expect: "CPU",
        },
        Case {
            label: "repository",
            phase: Phase::Repository,
            dockerfile: WITH_GIT,
            manifest: "[repository]\nurl = \"file:///nonexistent/repo.git\"\n",
            wiring: Wiring::Plain,
            expect: "does not appear to be a git repository",
        },
        Case {
            label: "step",
            phase: Phase::Plan,
            dockerfile: PLAIN,
            manifest: "[[steps]]\nname = \"migrate\"\nrun = \"echo applying-migration-42; exit 3\"\n",
            wiring: Wiring::Plain,
            expect: "applying-migration-42",
        },
        Case {
            label: "step-timeout",
            phase: Phase::Plan,
            dockerfile: PLAIN,
            manifest: "[[steps]]\nname = \"hang\"\nrun = \"sleep 60\"\ntimeout = \"2s\"\n",
            wiring: Wiring::Plain,
            expect: "hang",
        },
        Case {
            label: "probe",
            phase: Phase::Plan,
            dockerfile: PLAIN,
            manifest: "[[services]]\nname = \"api\"\nrun = \"exec sleep 600\"\nready = { tcp = 9999, timeout = \"3s\" }\n",
            wiring: Wiring::Plain,
            expect: "api",
        },
        Case {
            label: "seed",
            phase: Phase::Seed,
            dockerfile: PLAIN,
            manifest: "[seed]\ncommand = \"echo seed-data-missing >&2; exit 4\"\n",
            wiring: Wiring::Plain,
            expect: "seed-data-missing",
        },
        Case {
            label: "harness",
            phase: Phase::Harness,
            dockerfile: PLAIN,
            manifest: "[harness]\nkind = \"broken\"\n",
            wiring: Wiring::Harness,
            expect: "agent server exited",
        },
        Case {
            label: "network",
            phase: Phase::Network,
            dockerfile: PLAIN,
            manifest: "",
            wiring: Wiring::Network,
            expect: "auth key",
        },
        Case {
            label: "ready",
            phase: Phase::Ready,
            dockerfile: PLAIN,
            manifest: "[[ports]]\nname = \"web\"\nport = 8080\n",
            wiring: Wiring::Plain,
            expect: "web",
        },
    ]
}

/// Writes a project (a git repository with a Dockerfile and ken.toml) for `case`.
fn write_project(dir: &Path, case: &Case) {
    std::fs::write(dir.join("Dockerfile"), case.dockerfile).unwrap();
    let text = format!("name = \"fail\"\n{}", case.manifest);
    std::fs::write(dir.join("ken.toml"), text).unwrap();
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(["-c", "user.name=ken", "-c", "user.email=ken@example.invalid"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "project"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_launches_leave_nothing() {
    let Some(provider) = ken::core::testkit::require_docker_or_skip("failing_launches_leave_nothing", DockerProvider::connect().await)
    else {
        return;
    };
    let provider: Arc<dyn SandboxProvider> = Arc::new(provider);
    let run = std::process::id();
    let dirs: Vec<tempfile::TempDir> = cases().iter().map(|_| tempfile::tempdir().unwrap()).collect();

    let launches = cases().into_iter().zip(&dirs).map(|(case, dir)| {
        let provider = provider.clone();
        async move {
            write_project(dir.path(), &case);
            let manifest = Manifest::load(dir.path().join("ken.toml")).unwrap();
            let builder = Orchestrator::builder(provider.clone()).owner("ken-tests");
            let orchestrator = match case.wiring {
                Wiring::Plain => builder.build(),
                Wiring::Harness => builder.harness(Arc::new(BrokenHarness)).build(),
                Wiring::Network => builder
                    .network(Arc::new(RefusingNetwork(LocalNetwork::new().with_provider_isolation(true))))
                    .build(),
            };
            let name = SandboxName::new(format!("fail-{}-{run}", case.label)).unwrap();
            let outcome = orchestrator.launch(&manifest, LaunchOptions::default().name(name.clone())).await;
            (case, name, outcome)
        }
    });
    let outcomes = join_all(launches).await;

    let mut problems = Vec::new();
    for (case, name, outcome) in outcomes {
        match outcome {
            Ok(_) => {
                problems.push(format!("{}: the launch succeeded", case.label));
                provider.destroy(&name).await.unwrap();
            }
            Err(error) => {
                let message = format!("{error}");
                if error.phase() != Some(case.phase) {
                    problems.push(format!("{}: expected phase {}, got {:?}: {message}", case.label, case.phase, error.phase()));
                }
                if !message.contains(case.expect) {
                    problems.push(format!("{}: error does not mention {:?}: {message}", case.label, case.expect));
                }
            }
        }
        let left = provider.resources(&sandbox_selector(&name)).await.unwrap();
        if !left.is_empty() {
            problems.push(format!("{}: resources left behind: {left:?}", case.label));
        }
        match provider.get(&name).await {
            Err(e) if e.is_not_found() => {}
            other => problems.push(format!("{}: sandbox still there: {other:?}", case.label)),
        }
    }
    assert!(problems.is_empty(), "failing launches:\n{}", problems.join("\n"));
}
