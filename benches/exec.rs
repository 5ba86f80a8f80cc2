#![allow(missing_docs)] // criterion_group! generates an undocumented public function.
//! Exec round trip: `true` run through the Docker provider against `docker exec` of
//! the same command in the same container, in the same run.
//!
//! Needs a Docker engine (`scripts/docker-up.sh`). Results go to BENCHMARKS.md.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ken::docker::DockerProvider;
use ken::{EventSink, ExecRequest, ImageSpec, Labels, SandboxName, SandboxProvider, SandboxSpec};

fn exec_round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let provider = Arc::new(runtime.block_on(DockerProvider::connect()).expect("Docker engine; run scripts/docker-up.sh"));
    let name = SandboxName::new(format!("bench-exec-{}", std::process::id())).unwrap();
    let container = runtime.block_on(create_sandbox(provider.as_ref(), &name));

    let mut group = c.benchmark_group("exec_true");
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("ken_docker_provider", |b| {
        b.to_async(&runtime).iter(|| async {
            let output = provider
                .exec(&name, ExecRequest::new(["true"]))
                .await
                .expect("exec")
                .output()
                .await
                .expect("exec output");
            assert!(output.status.success());
        })
    });
    group.bench_function("docker_cli_exec", |b| {
        b.iter(|| {
            let status = std::process::Command::new("docker")
                .args(["exec", container.as_str(), "true"])
                .status()
                .expect("docker CLI");
            assert!(status.success());
        })
    });
    group.finish();

    runtime.block_on(provider.destroy(&name)).expect("destroy bench sandbox");
}

/// Creates a sandbox from a plain `debian:bookworm-slim` image and returns its
/// container id.
async fn create_sandbox(provider: &DockerProvider, name: &SandboxName) -> String {
    let context = tempfile::tempdir().expect("temp dir");
    let spec = ImageSpec {
        dockerfile: "FROM debian:bookworm-slim\n".to_owned(),
        context: context.path().to_path_buf(),
        extra_files: Default::default(),
        labels: Labels::new(),
    };
    let image = provider.prepare_image(&spec, &EventSink::none()).await.expect("image");
    let spec = SandboxSpec {
        name: name.clone(),
        image,
        resources: Default::default(),
        labels: Labels::for_sandbox(name.as_str(), "bench", Duration::from_secs(3600)),
        env: Default::default(),
        secret_env: Default::default(),
        ports: Vec::new(),
        workdir: None,
        ttl: Duration::from_secs(3600),
    };
    provider.create(&spec).await.expect("create").id
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = exec_round_trip
}
criterion_main!(benches);
