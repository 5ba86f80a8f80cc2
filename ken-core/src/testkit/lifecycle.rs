//! Checks of creating, finding, labelling and destroying sandboxes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;

use super::support::{
    assert_labels_contain, assert_not_found, assert_unsupported, chain, describe_resources, Scope,
};
use super::{kit_image_spec, KitConfig};
use crate::error::Error;
use crate::exec::ExecRequest;
use crate::labels::{self, LabelSelector};
use crate::phase::EventSink;
use crate::sandbox::{
    PortSpec, ResourceKind, Resources, SandboxName, SandboxProvider, SandboxState,
};

/// Label key the kit sets to check that custom labels round-trip.
const CUSTOM_LABEL: &str = "ken.kit-label";

/// Checks that preparing the kit image twice returns the same reference, and that
/// the second call is a cache hit. Without `build_images`, `prepare_image` must
/// be unsupported.
pub async fn image_cache(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "image_cache");
    scope.run(image_cache_body(&scope)).await;
}

async fn image_cache_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let spec = kit_image_spec();
    let events = EventSink::none();

    if !provider.capabilities().build_images {
        let result = scope
            .within("prepare_image", provider.prepare_image(&spec, &events))
            .await;
        assert_unsupported(provider, result, "prepare_image", "build_images", "image");
        return;
    }

    let first = scope
        .within("prepare_image", provider.prepare_image(&spec, &events))
        .await;
    let first = first
        .unwrap_or_else(|error| panic!("prepare_image of the kit image failed: {}", chain(&error)));
    let second = scope
        .within("prepare_image", provider.prepare_image(&spec, &events))
        .await;
    let second = second.unwrap_or_else(|error| {
        panic!(
            "second prepare_image of the kit image failed: {}",
            chain(&error)
        )
    });
    assert!(
        second.cached,
        "preparing the same image spec twice built it twice; the second call must be a cache hit"
    );
    assert_eq!(
        second.reference, first.reference,
        "preparing the same image spec twice gave two references"
    );
}

/// Checks create, get, list by labels, exec in the running sandbox, and that after
/// destroy the sandbox is gone from get, list, exec and resources.
pub async fn lifecycle(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "lifecycle");
    scope.run(lifecycle_body(&scope)).await;
}

async fn lifecycle_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let name = scope.name("life");
    let spec = scope.spec(&name);

    let created = scope.create(&spec).await;
    assert_eq!(
        created.name, name,
        "create of {name} returned the info of another sandbox"
    );
    assert_eq!(
        created.provider,
        provider.name(),
        "create of {name} returned the wrong provider name"
    );
    assert_eq!(
        created.state,
        SandboxState::Running,
        "create of {name} returned before the sandbox was running"
    );
    assert!(
        !created.id.is_empty(),
        "create of {name} returned an empty id"
    );
    assert_labels_contain(&created.labels, &spec.labels, &format!("create of {name}"));

    let found = scope.get(&name).await;
    assert_eq!(
        found.id, created.id,
        "get of {name} returned another id than create"
    );
    assert_eq!(
        found.state,
        SandboxState::Running,
        "get of {name} after create"
    );
    assert_labels_contain(&found.labels, &spec.labels, &format!("get of {name}"));

    let selector = LabelSelector::managed().with(labels::SANDBOX, name.as_str());
    let listed = scope.within("list", provider.list(&selector)).await;
    let listed = listed
        .unwrap_or_else(|error| panic!("list by the labels of {name} failed: {}", chain(&error)));
    let listed_names: Vec<&SandboxName> = listed.iter().map(|info| &info.name).collect();
    assert_eq!(listed_names, [&name], "list by the sandbox label of {name}");
    assert_eq!(
        listed[0].id, created.id,
        "list returned another id for {name} than create"
    );

    let hello = scope.sh(&name, "echo hello").await;
    assert_eq!(hello, "hello\n", "exec in {name}");

    scope.destroy(&name).await;

    let found = scope.within("get", provider.get(&name)).await;
    assert_not_found(found, &format!("get of {name} after destroy"));
    let listed = scope.within("list", provider.list(&selector)).await;
    let listed = listed
        .unwrap_or_else(|error| panic!("list after destroying {name} failed: {}", chain(&error)));
    assert!(
        listed.is_empty(),
        "list still returns {name} after destroy: {listed:?}"
    );
    let exec = scope
        .within("exec", provider.exec(&name, ExecRequest::shell("true")))
        .await;
    assert_not_found(exec, &format!("exec in {name} after destroy"));
    let left = scope.resources_of(&name).await;
    assert!(
        left.is_empty(),
        "destroy of {name} left resources behind: {}",
        describe_resources(&left)
    );
}

/// Checks that creating a sandbox under a taken name fails with
/// [`Error::AlreadyExists`] naming it, and leaves the first sandbox untouched.
pub async fn create_duplicate_name(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "create_duplicate_name");
    scope.run(create_duplicate_name_body(&scope)).await;
}

async fn create_duplicate_name_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let name = scope.name("dup");
    let first = scope.create(&scope.spec(&name)).await;
    let scratch = scope.scratch_dir(&name).await;
    scope
        .sh(&name, &format!("echo first > {scratch}/marker"))
        .await;

    let mut second_spec = scope.spec(&name);
    second_spec.labels.insert(CUSTOM_LABEL, "second-attempt");
    let second = scope.within("create", provider.create(&second_spec)).await;
    match second {
        Err(Error::AlreadyExists { name: reported, .. }) => {
            assert_eq!(
                reported,
                name.as_str(),
                "AlreadyExists names another sandbox than {name}"
            );
        }
        Err(other) => panic!(
            "a second create of {name} failed with `{}` instead of Error::AlreadyExists",
            chain(&other)
        ),
        Ok(info) => panic!(
            "a second create of {name} succeeded ({info:?}); it must fail with AlreadyExists"
        ),
    }

    let after = scope.get(&name).await;
    assert_eq!(
        after.id, first.id,
        "the failed second create replaced sandbox {name}"
    );
    assert_eq!(
        after.state,
        SandboxState::Running,
        "{name} after the failed second create"
    );
    assert_eq!(
        after.labels.get(CUSTOM_LABEL),
        None,
        "the failed second create changed the labels of {name}"
    );
    let marker = scope.sh(&name, &format!("cat {scratch}/marker")).await;
    assert_eq!(
        marker, "first\n",
        "a file in {name} changed after the failed second create"
    );
}

/// Checks that a custom label comes back from get, list and resources, and that
/// list filters on its value.
pub async fn labels_round_trip(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "labels_round_trip");
    scope.run(labels_round_trip_body(&scope)).await;
}

async fn labels_round_trip_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let target = scope.name("label");
    let other = scope.name("label");
    let target_value = format!("value-{target}");
    let other_value = format!("value-{other}");

    let mut target_spec = scope.spec(&target);
    target_spec.labels.insert(CUSTOM_LABEL, &target_value);
    let mut other_spec = scope.spec(&other);
    other_spec.labels.insert(CUSTOM_LABEL, &other_value);
    scope.create(&target_spec).await;
    scope.create(&other_spec).await;

    let found = scope.get(&target).await;
    assert_eq!(
        found.labels.get(CUSTOM_LABEL),
        Some(target_value.as_str()),
        "get of {target} lost the custom label; labels: {:?}",
        found.labels
    );

    let selector = LabelSelector::managed().with(CUSTOM_LABEL, &target_value);
    let listed = scope.within("list", provider.list(&selector)).await;
    let listed =
        listed.unwrap_or_else(|error| panic!("list by a custom label failed: {}", chain(&error)));
    let listed_names: Vec<&SandboxName> = listed.iter().map(|info| &info.name).collect();
    assert_eq!(
        listed_names,
        [&target],
        "list by {CUSTOM_LABEL}={target_value}"
    );
    assert_eq!(
        listed[0].labels.get(CUSTOM_LABEL),
        Some(target_value.as_str()),
        "list returned {target} without its custom label"
    );

    let owned = LabelSelector::managed()
        .with(labels::OWNER, &scope.config.owner)
        .with(CUSTOM_LABEL, &other_value);
    let listed = scope.within("list", provider.list(&owned)).await;
    let listed =
        listed.unwrap_or_else(|error| panic!("list by owner and label failed: {}", chain(&error)));
    let listed_names: Vec<&SandboxName> = listed.iter().map(|info| &info.name).collect();
    assert_eq!(
        listed_names,
        [&other],
        "list by owner and {CUSTOM_LABEL}={other_value}"
    );

    let resources = scope
        .within("resources", provider.resources(&selector))
        .await;
    let resources = resources
        .unwrap_or_else(|error| panic!("resources by a custom label failed: {}", chain(&error)));
    assert!(
        resources
            .iter()
            .any(|resource| resource.kind == ResourceKind::Sandbox),
        "resources by {CUSTOM_LABEL}={target_value} did not list the sandbox: {}",
        describe_resources(&resources)
    );
    for resource in &resources {
        assert_eq!(
            resource.labels.sandbox(),
            Some(target.as_str()),
            "resources by the label of {target} returned {} {} of another sandbox",
            resource.kind,
            resource.id
        );
    }
}

/// Checks that every resource of a sandbox carries Ken's labels, and that removing
/// them one by one with `remove_resource` removes the sandbox and can be repeated.
pub async fn remove_resources(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "remove_resources");
    scope.run(remove_resources_body(&scope)).await;
}

async fn remove_resources_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let name = scope.create_plain("gc").await;

    let mut resources = scope.resources_of(&name).await;
    assert!(
        resources
            .iter()
            .any(|resource| resource.kind == ResourceKind::Sandbox),
        "resources of {name} do not include the sandbox itself: {}",
        describe_resources(&resources)
    );
    for resource in &resources {
        assert!(
            resource.labels.is_managed(),
            "{} {} lacks the managed-by label",
            resource.kind,
            resource.id
        );
    }

    // The sandbox goes first, because a network or volume may be in use until then.
    resources.sort_by_key(|resource| resource.kind != ResourceKind::Sandbox);
    for round in ["first", "second"] {
        for resource in &resources {
            let result = scope
                .within("remove_resource", provider.remove_resource(resource))
                .await;
            result.unwrap_or_else(|error| {
                panic!(
                    "{round} remove_resource of {} {} failed: {}",
                    resource.kind,
                    resource.id,
                    chain(&error)
                )
            });
        }
    }

    let left = scope.resources_of(&name).await;
    assert!(
        left.is_empty(),
        "remove_resource left resources of {name}: {}",
        describe_resources(&left)
    );
    let found = scope.within("get", provider.get(&name)).await;
    assert_not_found(
        found,
        &format!("get of {name} after removing its resources"),
    );
}

/// Checks that destroy is idempotent: twice in a row, for a name never created, and
/// while create is still running, each destroy succeeds and nothing is left.
pub async fn destroy_idempotent(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "destroy_idempotent");
    scope.run(destroy_idempotent_body(&scope)).await;
}

async fn destroy_idempotent_body(scope: &Scope<'_>) {
    let provider = scope.provider;

    let twice = scope.create_plain("twice").await;
    scope.destroy(&twice).await;
    scope.destroy(&twice).await;
    let left = scope.resources_of(&twice).await;
    assert!(
        left.is_empty(),
        "destroying {twice} twice left {}",
        describe_resources(&left)
    );

    let never = scope.name("never");
    scope.destroy(&never).await;

    // The delays move the destroy to different points of the create, from before it
    // reaches the backend to after it returned.
    for delay_ms in [0, 50, 250, 1000] {
        let name = scope.name("race");
        let spec = scope.spec(&name);
        let destroy_later = async {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            provider.destroy(&name).await
        };
        let race = futures::future::join(provider.create(&spec), destroy_later);
        let (created, destroyed) = scope
            .within(format!("create and destroy of {name}"), race)
            .await;
        if let Err(error) = destroyed {
            panic!(
                "destroy of {name} {delay_ms} ms after its create started failed: {}",
                chain(&error)
            );
        }
        if let Err(error) = &created {
            eprintln!(
                "kit: create of {name} failed while destroy ran, which is allowed: {}",
                chain(error)
            );
        }

        scope.destroy(&name).await;
        scope.destroy(&name).await;
        let found = scope.within("get", provider.get(&name)).await;
        assert_not_found(found, &format!("get of {name} after destroy during create"));
        let left = scope.resources_of(&name).await;
        assert!(
            left.is_empty(),
            "destroy during the create of {name} ({delay_ms} ms in) left {}",
            describe_resources(&left)
        );
    }
}

/// Checks resource limits: with `resource_limits`, a sandbox with limits starts and
/// its cgroup shows the memory limit; without, create with limits is unsupported.
pub async fn resource_limits(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "resource_limits");
    scope.run(resource_limits_body(&scope)).await;
}

async fn resource_limits_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let memory_bytes: u64 = 256 * 1024 * 1024;
    let name = scope.name("limits");
    let mut spec = scope.spec(&name);
    spec.resources = Resources {
        cpus: Some(0.5),
        memory_bytes: Some(memory_bytes),
        pids: Some(512),
    };

    if !provider.capabilities().resource_limits {
        let result = scope.within("create", provider.create(&spec)).await;
        assert_unsupported(
            provider,
            result,
            "create with resource limits",
            "resource_limits",
            "limit",
        );
        return;
    }

    scope.create(&spec).await;
    // NOTE: only the memory limit is read back, from cgroup v2 or v1; a sandbox that
    // shows neither file passes on starting alone.
    let script =
        "for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do \
                  if [ -r \"$f\" ]; then cat \"$f\"; exit 0; fi; done";
    let limit = scope.sh(&name, script).await;
    if !limit.trim().is_empty() {
        assert_eq!(
            limit.trim(),
            memory_bytes.to_string(),
            "the memory limit seen inside {name}"
        );
    }
}

/// Checks [`KitConfig::many_sandboxes`] sandboxes created at once.
///
/// With `endpoints`, each sandbox exposes 2 ports. No two endpoints may share a host
/// port, and every endpoint must return its own page. Without `endpoints`, an exec
/// in each sandbox must run in that sandbox.
pub async fn many_sandboxes(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "many_sandboxes");
    scope.run(many_sandboxes_body(&scope)).await;
}

async fn many_sandboxes_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let with_endpoints = provider.capabilities().endpoints;
    let ports = [
        PortSpec {
            name: "web".to_owned(),
            port: 8080,
            scheme: "http".to_owned(),
        },
        PortSpec {
            name: "api".to_owned(),
            port: 8081,
            scheme: "http".to_owned(),
        },
    ];

    let specs: Vec<_> = (0..scope.config.many_sandboxes)
        .map(|index| {
            let name = scope.name(&format!("many{index}"));
            let mut spec = scope.spec(&name);
            spec.env.insert("KEN_KIT_NAME".to_owned(), name.to_string());
            if with_endpoints {
                spec.ports = ports.to_vec();
            }
            spec
        })
        .collect();
    let created = join_all(specs.iter().map(|spec| provider.create(spec)));
    let created = scope
        .within(
            format!("creating {} sandboxes at once", specs.len()),
            created,
        )
        .await;
    for (spec, result) in specs.iter().zip(created) {
        if let Err(error) = result {
            panic!(
                "create of {} among {} at once failed: {}",
                spec.name,
                specs.len(),
                chain(&error)
            );
        }
    }

    let names: Vec<&SandboxName> = specs.iter().map(|spec| &spec.name).collect();
    let seen = join_all(
        names
            .iter()
            .map(|name| scope.exec(name, ExecRequest::new(["printenv", "KEN_KIT_NAME"]))),
    );
    for (name, output) in names.iter().zip(seen.await) {
        assert_eq!(
            output.stdout_text(),
            format!("{name}\n"),
            "exec in {name} ran in another sandbox"
        );
    }
    if !with_endpoints {
        return;
    }

    let servers = names.iter().flat_map(|name| {
        ports
            .iter()
            .map(move |port| scope.start_http_server(name, port.port, page_body(name, port.port)))
    });
    join_all(servers).await;

    let mut host_ports: BTreeMap<(String, u16), String> = BTreeMap::new();
    for name in &names {
        for port in &ports {
            let endpoint = scope.endpoint(name, port).await;
            let address = (
                endpoint.url.host_str().unwrap_or_default().to_owned(),
                endpoint.url.port_or_known_default().unwrap_or_default(),
            );
            let owner = format!("{name} port {}", port.port);
            if let Some(previous) = host_ports.insert(address.clone(), owner.clone()) {
                panic!(
                    "{previous} and {owner} share the endpoint address {}:{}",
                    address.0, address.1
                );
            }
            scope
                .fetch_until(&endpoint, &page_body(name, port.port))
                .await;
        }
    }
}

/// Returns the page the kit's HTTP server in `name` serves on `port`.
pub(crate) fn page_body(name: &SandboxName, port: u16) -> String {
    format!("ken-kit page of {name} port {port}")
}
