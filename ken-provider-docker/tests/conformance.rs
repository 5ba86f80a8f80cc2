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

ken_core::conformance_tests!(kit_setup);
