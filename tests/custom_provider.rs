//! Runs every check of Ken's conformance kit against the `LocalProcessProvider` of
//! the `custom_provider` example, one test per check.

#[allow(dead_code)]
#[path = "../examples/custom_provider.rs"]
mod custom_provider;

use custom_provider::LocalProcessProvider;
use ken_core::testkit::{self, KitConfig};

macro_rules! kit_tests {
    ($($check:ident),* $(,)?) => {
        const TESTED: &[&str] = &[$(stringify!($check)),*];

        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let provider = LocalProcessProvider::new().expect("failed to create the local process provider");
                let config = KitConfig::new(LocalProcessProvider::host_image());
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
