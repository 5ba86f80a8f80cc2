//! Files in and out of a sandbox, and the endpoints of its published ports.

use bollard::query_parameters::{DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use ken_core::{Endpoint, Error, PortSpec, Result, SandboxName};
use url::Url;

use crate::error;
use crate::{sandbox_not_found, DockerProvider};

impl DockerProvider {
    pub(crate) async fn upload_impl(&self, sandbox: &SandboxName, dest: &str, archive: Bytes) -> Result<()> {
        let container = Self::container_name(sandbox);
        let options = UploadToContainerOptionsBuilder::default().path(dest).build();
        self.docker
            .upload_to_container(&container, Some(options), bollard::body_full(archive))
            .await
            .map_err(|e| archive_error(sandbox, dest, "upload to", e))
    }

    pub(crate) async fn download_impl(&self, sandbox: &SandboxName, path: &str) -> Result<Bytes> {
        let container = Self::container_name(sandbox);
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let mut stream = self.docker.download_from_container(&container, Some(options));
        let mut archive = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| archive_error(sandbox, path, "download", e))?;
            archive.extend_from_slice(&chunk);
        }
        Ok(archive.freeze())
    }

    pub(crate) async fn endpoint_impl(&self, sandbox: &SandboxName, port: &PortSpec) -> Result<Endpoint> {
        let container = Self::container_name(sandbox);
        let inspect = self.docker.inspect_container(&container, None).await.map_err(|e| {
            error::not_found_or_backend("sandbox", sandbox.as_str(), format!("failed to inspect sandbox \"{sandbox}\""), e)
        })?;
        let key = format!("{}/tcp", port.port);
        let host_port = inspect
            .network_settings
            .and_then(|settings| settings.ports)
            .and_then(|mut ports| ports.remove(&key).flatten())
            .unwrap_or_default()
            .into_iter()
            .filter(|binding| binding.host_ip.as_deref() == Some("127.0.0.1"))
            .find_map(|binding| binding.host_port.and_then(|text| text.parse::<u16>().ok()))
            .filter(|port| *port != 0);
        let Some(host_port) = host_port else {
            return Err(Error::invalid(
                "port",
                format!("{} ({})", port.name, port.port),
                format!(
                    "sandbox \"{sandbox}\" does not publish port {}; list it in the sandbox's ports when \
                     creating it, and check that the sandbox is running",
                    port.port
                ),
            ));
        };
        let text = format!("{}://127.0.0.1:{host_port}/", port.scheme);
        let url = Url::parse(&text).map_err(|e| {
            Error::invalid("port scheme", port.scheme.clone(), format!("{text} is not a valid URL: {e}"))
        })?;
        Ok(Endpoint {
            name: port.name.clone(),
            port: port.port,
            url,
            credentials: None,
        })
    }
}

/// Maps an archive-endpoint error: a missing container is a missing sandbox, and
/// any other 404 is a missing path inside it.
fn archive_error(sandbox: &SandboxName, path: &str, action: &str, e: bollard::errors::Error) -> Error {
    if error::is_not_found(&e) {
        if error::engine_message(&e).contains("No such container") {
            return sandbox_not_found(sandbox);
        }
        return Error::NotFound {
            kind: "path",
            name: format!("{sandbox}:{path}"),
        };
    }
    error::backend(format!("failed to {action} {path:?} in sandbox \"{sandbox}\""), e)
}
