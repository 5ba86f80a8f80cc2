//! Ken's conformance kit against `DockerProvider`, one test per check.
//!
//! The kit image (`debian:bookworm-slim` with procps and python3) is built once per
//! test binary and reused from the provider's content-hash cache after that. Each
//! test skips with a message when no Docker engine responds, and fails instead when
//! `KEN_REQUIRE_DOCKER=1`. Every sandbox a check creates is destroyed when it ends;
//! the shared sandbox network and the cached kit image stay.

use ken_core::testkit::{self, KitConfig};
use ken_core::{EventSink, ImageRef, SandboxProvider};
use ken_provider_docker::DockerProvider;
use tokio::sync::OnceCell;

/// Number of sandboxes `many_sandboxes` creates at once.
const MANY_SANDBOXES: usize = 20;

/// The kit image, built by the first test that needs it.
static KIT_IMAGE: OnceCell<ImageRef> = OnceCell::const_new();

/// Connects to the engine and prepares the kit image, or returns `None` when the
/// test is skipped; see [`testkit::require_docker_or_skip`].
async fn kit_setup(test: &str) -> Option<(DockerProvider, KitConfig)> {
    let provider = testkit::require_docker_or_skip(test, DockerProvider::connect().await)?;
    let image = KIT_IMAGE
        .get_or_init(|| async {
            provider
                .prepare_image(&testkit::kit_image_spec(), &EventSink::none())
                .await
                .unwrap_or_else(|error| panic!("building the kit image failed: {error}"))
        })
        .await
        .clone();
    let config = KitConfig::new(image).with_many_sandboxes(MANY_SANDBOXES);
    Some((provider, config))
}

macro_rules! kit_tests {
    ($($check:ident),* $(,)?) => {
        const TESTED: &[&str] = &[$(stringify!($check)),*];

        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some((provider, config)) = kit_setup(stringify!($check)).await else {
                    return;
                };
                testkit::$check(&provider, &config).await;
            }
        )*
    };
}

kit_tests!(
    image_cache,
    lifecycle,
    create_duplicate_name,
    labels_round_trip,
    remove_resources,
    destroy_idempotent,
    resource_limits,
    exec_large_output,
    exec_unread_output,
    exec_timeout,
    exec_kill_group,
    exec_without_stdin,
    exec_binary_output,
    exec_env_unchanged,
    exec_stdin,
    exec_workdir,
    exec_user,
    exec_exit_codes,
    files_round_trip,
    endpoints,
    isolation,
    snapshot,
    many_sandboxes,
);

#[test]
fn every_kit_check_has_a_test() {
    let checks: Vec<&str> = testkit::CHECKS.iter().map(|check| check.name).collect();
    assert_eq!(TESTED, checks.as_slice());
}
