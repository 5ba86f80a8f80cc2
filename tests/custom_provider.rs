//! Runs every check of Ken's conformance kit against the `LocalProcessProvider` of
//! the `custom_provider` example, one test per check.

#[allow(dead_code)]
#[path = "../examples/custom_provider.rs"]
mod custom_provider;

use custom_provider::LocalProcessProvider;
use ken_core::testkit::KitConfig;

/// Creates a provider and a kit configuration for one check.
async fn kit_setup(_test: &str) -> Option<(LocalProcessProvider, KitConfig)> {
    let provider = LocalProcessProvider::new().expect("failed to create the local process provider");
    let config = KitConfig::new(LocalProcessProvider::host_image());
    Some((provider, config))
}

ken_core::conformance_tests!(kit_setup);
