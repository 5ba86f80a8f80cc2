//! The shared bridge network every sandbox joins.
//!
//! One user-defined bridge network with inter-container traffic disabled keeps
//! sandboxes from reaching each other, and scales past the few dozen networks the
//! engine's default address pools allow for one network per sandbox.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, Network, NetworkCreateRequest};
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListNetworksOptionsBuilder};
use ken_core::labels::{MANAGED_BY, MANAGED_BY_VALUE};
use ken_core::{Error, Result};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error;
use crate::DockerProvider;

/// Bridge driver option that blocks traffic between containers on the network.
pub(crate) const ICC_OPTION: &str = "com.docker.network.bridge.enable_icc";

/// Label on the lock container, naming the network it guards.
const LOCK_LABEL: &str = "ken.network-lock";

/// Age after which a lock container counts as left behind by a crashed process.
const STALE_LOCK_AGE: Duration = Duration::from_secs(30);

/// Maximum time to wait for another process to create the network.
const LOCK_WAIT: Duration = Duration::from_secs(60);

impl DockerProvider {
    /// Returns the id of the shared network, creating the network when it is
    /// missing. `image` is a local image, used for the lock container that makes
    /// creation safe across processes.
    pub(crate) async fn network_id(&self, image: &str) -> Result<String> {
        let mut cached = self.state.network_id.lock().await;
        if let Some(id) = cached.as_ref() {
            return Ok(id.clone());
        }
        let id = self.ensure_network(image).await?;
        *cached = Some(id.clone());
        Ok(id)
    }

    /// Forgets the cached network id, after the engine reported it missing.
    pub(crate) async fn forget_network(&self) {
        *self.state.network_id.lock().await = None;
    }

    /// Finds or creates the shared network and returns its id.
    ///
    /// Engines before API 1.44 accept two networks with the same name, and then
    /// refuse to start containers on either ("network is ambiguous"). So creators
    /// first take a lock that the engine makes atomic: a container with a fixed
    /// name, created but never started. The process that creates it also creates
    /// the network and then removes it. The others wait until the network exists.
    async fn ensure_network(&self, image: &str) -> Result<String> {
        let name = &self.network_name;
        let lock_name = format!("{name}.create-lock");
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            if let Some(existing) = self.find_network().await? {
                return self.checked_network(existing);
            }
            if self.try_lock(&lock_name, image).await? {
                break;
            }
            self.remove_stale_lock(&lock_name).await;
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    operation: format!(
                        "waiting for another process to create the network {name:?} (lock container {lock_name})"
                    ),
                    after: LOCK_WAIT,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let result = self.create_network_locked().await;
        if let Err(e) = self.remove_container(&lock_name).await {
            tracing::warn!(provider = "docker", network = %name, lock = %lock_name, error = %e, "failed to remove the network lock container; it expires after 30 s");
        }
        result
    }

    /// Creates the network unless it appeared meanwhile. The caller holds the lock.
    async fn create_network_locked(&self) -> Result<String> {
        let name = &self.network_name;
        if let Some(existing) = self.find_network().await? {
            return self.checked_network(existing);
        }
        tracing::info!(provider = "docker", network = %name, "creating the shared sandbox network");
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".to_owned()),
            options: Some(HashMap::from([(ICC_OPTION.to_owned(), "false".to_owned())])),
            labels: Some(HashMap::from([(MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned())])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(response) => Ok(response.id),
            // Engines from API 1.44 on reject a duplicate name themselves.
            Err(e) if error::is_conflict(&e) => match self.find_network().await? {
                Some(existing) => self.checked_network(existing),
                None => Err(error::backend(format!("failed to create the network {name:?}"), e)),
            },
            Err(e) => Err(error::backend(format!("failed to create the network {name:?}"), e)),
        }
    }

    /// Creates the lock container `lock_name`. Returns false when another process
    /// holds the lock.
    async fn try_lock(&self, lock_name: &str, image: &str) -> Result<bool> {
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec!["true".to_owned()]),
            cmd: Some(Vec::new()),
            labels: Some(HashMap::from([
                (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
                (LOCK_LABEL.to_owned(), self.network_name.clone()),
            ])),
            network_disabled: Some(true),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(lock_name).build();
        match self.docker.create_container(Some(options), body).await {
            Ok(_) => Ok(true),
            Err(e) if error::is_conflict(&e) => Ok(false),
            Err(e) => Err(error::backend(
                format!("failed to create the lock container {lock_name} for the network {:?}", self.network_name),
                e,
            )),
        }
    }

    /// Removes the lock container when it is older than [`STALE_LOCK_AGE`].
    async fn remove_stale_lock(&self, lock_name: &str) {
        let Ok(inspect) = self.docker.inspect_container(lock_name, None).await else {
            return;
        };
        let created = inspect
            .created
            .as_deref()
            .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok());
        let stale = created.is_some_and(|created| OffsetDateTime::now_utc() - created > STALE_LOCK_AGE);
        if stale {
            tracing::warn!(provider = "docker", lock = %lock_name, "removing a network lock container left by another process");
            if let Err(e) = self.remove_container(lock_name).await {
                tracing::warn!(provider = "docker", lock = %lock_name, error = %e, "failed to remove a stale network lock container");
            }
        }
    }

    /// Returns the network named [`DockerProvider::network_name`], or `None`.
    /// Fails when several networks have that name.
    async fn find_network(&self) -> Result<Option<Network>> {
        let name = &self.network_name;
        let filters = HashMap::from([("name", vec![name.as_str()])]);
        let options = ListNetworksOptionsBuilder::default().filters(&filters).build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| error::backend(format!("failed to list networks named {name:?}"), e))?;
        // The name filter matches substrings, so compare exactly.
        let mut matching: Vec<Network> = networks
            .into_iter()
            .filter(|network| network.name.as_deref() == Some(name.as_str()))
            .collect();
        if matching.len() > 1 {
            let ids: Vec<&str> = matching.iter().filter_map(|network| network.id.as_deref()).collect();
            return Err(Error::backend(
                error::SERVICE,
                format!(
                    "{} networks are named {name:?} ({}), so the engine cannot start containers on it; \
                     remove the extra ones with `docker network rm ID`",
                    matching.len(),
                    ids.join(", ")
                ),
            ));
        }
        Ok(matching.pop())
    }

    /// Checks that `network` was made by Ken and isolates its containers, and
    /// returns its id.
    fn checked_network(&self, network: Network) -> Result<String> {
        let name = &self.network_name;
        let managed = network
            .labels
            .as_ref()
            .and_then(|labels| labels.get(MANAGED_BY))
            .is_some_and(|value| value == MANAGED_BY_VALUE);
        let isolates = network
            .options
            .as_ref()
            .and_then(|options| options.get(ICC_OPTION))
            .is_some_and(|value| value == "false");
        if !managed || !isolates {
            return Err(Error::invalid(
                "network",
                name.clone(),
                format!(
                    "it exists but was not made by Ken with {ICC_OPTION}=false, so sandboxes on it could reach \
                     each other; remove it with `docker network rm {name}` or choose another name with \
                     DockerProvider::with_network_name"
                ),
            ));
        }
        network.id.ok_or_else(|| {
            Error::backend(error::SERVICE, format!("the engine listed the network {name:?} without an id"))
        })
    }
}
