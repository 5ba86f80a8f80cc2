//! Ken's conformance kit against `ModalProvider`, talking to the Modal test server
//! on 127.0.0.1; one test per check, each with a server of its own.
//!
//! The server builds images with the local Docker engine, so each test skips with
//! a message when no engine answers, and fails instead when `KEN_REQUIRE_DOCKER=1`.

mod support;

use std::sync::Arc;

use ken_core::testkit::KitConfig;
use ken_testserver_modal::ModalTestServerConfig;
use support::ServedProvider;

async fn kit_setup(test: &str) -> Option<(ServedProvider, KitConfig)> {
    let server = support::server(test, ModalTestServerConfig::new()).await?;
    let provider = support::provider(&server);
    let image = support::kit_image(&provider).await;
    let config = KitConfig::new(image).with_name_prefix("kmod");
    Some((
        ServedProvider {
            provider,
            server: Arc::new(server),
        },
        config,
    ))
}

ken_core::conformance_tests!(kit_setup);
