#![allow(missing_docs)] // criterion_group! generates an undocumented public function.
//! Launch to ready of the demo project with a cached image: Ken's orchestrator
//! against `benches/baseline/launch-demo.sh`, which does the same steps one by one
//! with the docker CLI, in the same run.
//!
//! Needs a Docker engine (`scripts/docker-up.sh`). The first run builds the demo
//! image; every measured launch is a cache hit. Results go to BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use ken::docker::DockerProvider;
use ken::orchestrator::LaunchOptions;
use ken::{EventSink, Manifest, Orchestrator, SandboxName, SandboxProvider};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn launch_to_ready(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let provider = Arc::new(runtime.block_on(DockerProvider::connect()).expect("Docker engine; run scripts/docker-up.sh"));
    let manifest = Manifest::load(Path::new(ROOT).join("examples/demo-app/ken.toml")).expect("demo manifest");
    let orchestrator = Orchestrator::builder(provider.clone()).owner("bench").build();

    // Build (or find) the image once, so both sides start from a cached image.
    let spec = manifest.image_spec().expect("image spec");
    let image = runtime
        .block_on(provider.prepare_image(&spec, &EventSink::none()))
        .expect("demo image");
    let network = provider.network_name().to_owned();

    let mut group = c.benchmark_group("launch_demo_cached_image");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(120));
    let mut counter = 0u32;
    group.bench_function("ken_orchestrator", |b| {
        b.to_async(&runtime).iter(|| {
            counter += 1;
            let name = SandboxName::new(format!("bench-launch-{}-{counter}", std::process::id())).unwrap();
            let orchestrator = orchestrator.clone();
            let manifest = manifest.clone();
            async move {
                let launched = orchestrator
                    .launch(&manifest, LaunchOptions::default().name(name.clone()))
                    .await
                    .expect("launch");
                assert!(!launched.endpoints.is_empty());
                orchestrator.destroy(&name).await.expect("destroy");
            }
        })
    });
    group.bench_function("docker_cli_script", |b| {
        b.iter(|| {
            let status = std::process::Command::new(Path::new(ROOT).join("benches/baseline/launch-demo.sh"))
                .args([image.reference.as_str(), network.as_str(), ROOT])
                .status()
                .expect("baseline script");
            assert!(status.success(), "baseline script failed");
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = launch_to_ready
}
criterion_main!(benches);
