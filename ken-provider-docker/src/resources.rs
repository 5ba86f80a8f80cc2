//! Listing and removing everything the provider made, for garbage collection.

use std::collections::HashMap;

use bollard::query_parameters::{
    InspectNetworkOptions, ListImagesOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveImageOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use ken_core::labels::Labels;
use ken_core::sandbox::{Resource, ResourceKind};
use ken_core::{Error, LabelSelector, Result};

use crate::container::label_filters;
use crate::error;
use crate::DockerProvider;

impl DockerProvider {
    /// Lists sandboxes, then volumes, networks and images, so that removing them
    /// in order frees each resource before the ones it depends on.
    pub(crate) async fn resources_impl(&self, selector: &LabelSelector) -> Result<Vec<Resource>> {
        let labels = label_filters(selector);
        let filters = HashMap::from([("label", labels.clone())]);
        let mut resources = Vec::new();

        for container in self.managed_containers(selector).await? {
            resources.push(Resource {
                kind: ResourceKind::Sandbox,
                id: container.id.unwrap_or_default(),
                labels: to_labels(container.labels.unwrap_or_default()),
            });
        }

        let options = ListVolumesOptionsBuilder::default().filters(&filters).build();
        let volumes = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| error::backend("failed to list volumes", e))?;
        for volume in volumes.volumes.unwrap_or_default() {
            resources.push(Resource {
                kind: ResourceKind::Volume,
                id: volume.name,
                labels: to_labels(volume.labels),
            });
        }

        let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| error::backend("failed to list networks", e))?;
        for network in networks {
            resources.push(Resource {
                kind: ResourceKind::Network,
                id: network.id.unwrap_or_default(),
                labels: to_labels(network.labels.unwrap_or_default()),
            });
        }

        let options = ListImagesOptionsBuilder::default().filters(&filters).build();
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|e| error::backend("failed to list images", e))?;
        for image in images {
            resources.push(Resource {
                kind: ResourceKind::Image,
                id: image.id,
                labels: to_labels(image.labels),
            });
        }

        // The engine's filters already match; this guards against an engine that
        // ignores a filter it does not know.
        resources.retain(|resource| resource.labels.matches(selector) && resource.labels.is_managed());
        Ok(resources)
    }

    pub(crate) async fn remove_resource_impl(&self, resource: &Resource) -> Result<()> {
        let id = resource.id.as_str();
        if !resource.labels.is_managed() {
            return Err(Error::invalid(
                "resource",
                format!("{} {id}", resource.kind),
                "it is not labelled ken.managed-by=ken, so Ken does not remove it",
            ));
        }
        tracing::info!(provider = "docker", resource.kind = %resource.kind, resource.id = %id, sandbox.name = resource.labels.sandbox().unwrap_or(""), "removing resource");
        let result = match resource.kind {
            ResourceKind::Sandbox => self.remove_container(id).await,
            ResourceKind::Volume => {
                let options = RemoveVolumeOptionsBuilder::default().force(false).build();
                self.docker.remove_volume(id, Some(options)).await
            }
            ResourceKind::Network => return self.remove_network(id).await,
            ResourceKind::Image => {
                // `force` also removes the other tags of the same image, which
                // only Ken's own labelled images can have here.
                let options = RemoveImageOptionsBuilder::default().force(true).build();
                self.docker.remove_image(id, Some(options), None).await.map(|_| ())
            }
            other => {
                return Err(Error::invalid(
                    "resource kind",
                    other.to_string(),
                    "the docker provider makes no resources of this kind",
                ));
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if error::is_not_found(&e) => Ok(()),
            Err(e) if error::is_conflict(&e) => Err(error::backend(
                format!("{} {id} is still in use; remove the sandboxes that use it first", resource.kind),
                e,
            )),
            Err(e) => Err(error::backend(format!("failed to remove {} {id}", resource.kind), e)),
        }
    }

    /// Removes a network unless a container is attached to it.
    async fn remove_network(&self, id: &str) -> Result<()> {
        let inspect = match self.docker.inspect_network(id, None::<InspectNetworkOptions>).await {
            Ok(inspect) => inspect,
            Err(e) if error::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(error::backend(format!("failed to inspect network {id}"), e)),
        };
        let users = inspect.containers.map_or(0, |containers| containers.len());
        if users > 0 {
            return Err(Error::Backend {
                service: error::SERVICE.to_owned(),
                message: format!(
                    "network {id} is still used by {users} container(s); it can be removed once they are gone"
                ),
                source: None,
                retryable: true,
            });
        }
        {
            let mut cached = self.state.network_id.lock().await;
            if cached.is_some() && cached.as_deref() == inspect.id.as_deref() {
                *cached = None;
            }
        }
        match self.docker.remove_network(id).await {
            Ok(()) => Ok(()),
            Err(e) if error::is_not_found(&e) => Ok(()),
            Err(e) => Err(error::backend(format!("failed to remove network {id}"), e)),
        }
    }
}

fn to_labels(labels: HashMap<String, String>) -> Labels {
    labels.into_iter().collect()
}
