//! Check of saving a sandbox as an image and starting a new sandbox from it.

use super::support::{assert_unsupported, chain, sandbox_selector, unique_suffix, Scope};
use super::KitConfig;
use crate::sandbox::{ResourceKind, SandboxProvider};

/// Checks snapshots: a file written in sandbox A is in a new sandbox created from
/// A's snapshot, and the snapshot image is listed by `resources` under A's sandbox
/// label, so garbage collection can find it. Without the `snapshot` capability,
/// `snapshot` is unsupported.
pub async fn snapshot(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "snapshot");
    scope.run(snapshot_body(&scope)).await;
}

async fn snapshot_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let source = scope.create_plain("snap").await;
    let reference = format!("{}-snapshot:{}", scope.config.name_prefix, unique_suffix());

    if !provider.capabilities().snapshot {
        let result = scope
            .within("snapshot", provider.snapshot(&source, &reference))
            .await;
        assert_unsupported(provider, result, "snapshot", "snapshot", "snapshot");
        return;
    }

    let scratch = scope.scratch_dir(&source).await;
    let contents = format!("written in {source} before the snapshot");
    scope
        .sh(
            &source,
            &format!("printf '%s' '{contents}' > {scratch}/before"),
        )
        .await;

    let image = scope
        .within("snapshot", provider.snapshot(&source, &reference))
        .await;
    let image = image.unwrap_or_else(|error| {
        panic!(
            "snapshot of {source} as {reference} failed: {}",
            chain(&error)
        )
    });
    let resources = scope
        .within("resources", provider.resources(&sandbox_selector(&source)))
        .await;
    let resources =
        resources.unwrap_or_else(|error| panic!("resources of {source} failed: {}", chain(&error)));
    let images: Vec<_> = resources
        .into_iter()
        .filter(|resource| resource.kind == ResourceKind::Image)
        .collect();
    for image in &images {
        scope.remove_later(image.clone());
    }
    assert!(
        !images.is_empty(),
        "the snapshot {} of {source} is not listed by resources under the sandbox's label; \
         garbage collection could not find it",
        image.reference
    );

    let copy = scope.name("snap-copy");
    let mut spec = scope.spec(&copy);
    spec.image = image.clone();
    scope.create(&spec).await;
    let seen = scope.sh(&copy, &format!("cat {scratch}/before")).await;
    assert_eq!(
        seen, contents,
        "the file written before the snapshot, read in {copy} created from {}",
        image.reference
    );
}
