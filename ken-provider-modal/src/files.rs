//! Files in and out of a sandbox (tar through exec), endpoints from tunnels, and
//! snapshots.

use std::time::Duration;

use bytes::Bytes;
use ken_core::exec::shell_quote;
use ken_core::{Endpoint, Error, ImageRef, PortSpec, Result, SandboxName};
use tonic::Code;
use url::Url;

use crate::error::SERVICE;
use crate::proto::modal_client::{
    generic_result::GenericStatus, SandboxGetTunnelsRequest, SandboxGetTunnelsResponse, SandboxSnapshotFsRequest,
    SandboxSnapshotFsResponse, TunnelData,
};
use crate::proto::paths;
use crate::sandbox::{describe_result, not_found, SNAPSHOT_TAG_PREFIX};
use crate::ModalProvider;

/// Seconds the server may wait for tunnels in one call.
const TUNNEL_CALL_WAIT: Duration = Duration::from_secs(10);
/// Maximum wait for the tunnels of a sandbox to come up.
const TUNNEL_LIMIT: Duration = Duration::from_secs(120);
/// Seconds the server may take for a snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(55);

impl ModalProvider {
    pub(crate) async fn upload_impl(&self, sandbox: &SandboxName, dest: &str, archive: Bytes) -> Result<()> {
        let dest_q = shell_quote(dest);
        let script = format!("mkdir -p -- {dest_q} && tar -x -f - -C {dest_q}");
        let command = vec!["sh".to_owned(), "-c".to_owned(), script];
        let (code, _, stderr) = self.run_collect(sandbox, command, Some(archive)).await?;
        if code != Some(0) {
            return Err(Error::backend(
                SERVICE,
                format!(
                    "unpacking an archive into {dest:?} in sandbox \"{sandbox}\" failed ({}): {}; the image needs `tar`",
                    describe_code(code),
                    String::from_utf8_lossy(&stderr).trim()
                ),
            ));
        }
        Ok(())
    }

    pub(crate) async fn download_impl(&self, sandbox: &SandboxName, path: &str) -> Result<Bytes> {
        let trimmed = path.trim_end_matches('/');
        let (parent, base) = match trimmed.rsplit_once('/') {
            Some(("", base)) => ("/", base),
            Some((parent, base)) => (parent, base),
            None => (".", trimmed),
        };
        let (parent, base) = if trimmed.is_empty() { ("/", ".") } else { (parent, base) };
        let script = format!(
            "if [ ! -e {full} ]; then echo missing >&2; exit 44; fi; tar -c -f - -C {parent} -- {base}",
            full = shell_quote(path),
            parent = shell_quote(parent),
            base = shell_quote(base)
        );
        let command = vec!["sh".to_owned(), "-c".to_owned(), script];
        let (code, stdout, stderr) = self.run_collect(sandbox, command, None).await?;
        match code {
            Some(0) => Ok(stdout),
            Some(44) => Err(Error::NotFound {
                kind: "path",
                name: format!("{sandbox}:{path}"),
            }),
            other => Err(Error::backend(
                SERVICE,
                format!(
                    "packing {path:?} in sandbox \"{sandbox}\" failed ({}): {}; the image needs `tar`",
                    describe_code(other),
                    String::from_utf8_lossy(&stderr).trim()
                ),
            )),
        }
    }

    pub(crate) async fn endpoint_impl(&self, sandbox: &SandboxName, port: &PortSpec) -> Result<Endpoint> {
        let id = self.sandbox_id(sandbox).await?;
        let started = tokio::time::Instant::now();
        let tunnels = loop {
            let response: SandboxGetTunnelsResponse = self
                .control
                .unary_with(
                    paths::SANDBOX_GET_TUNNELS,
                    SandboxGetTunnelsRequest {
                        sandbox_id: id.clone(),
                        timeout: TUNNEL_CALL_WAIT.as_secs_f32(),
                    },
                    TUNNEL_CALL_WAIT + crate::client::DEFAULT_DEADLINE,
                )
                .await
                .map_err(|e| {
                    if e.code() == Code::NotFound {
                        not_found(sandbox)
                    } else {
                        e.into_ken(format!("reading the tunnels of sandbox \"{sandbox}\""))
                    }
                })?;
            match response.result.map(|r| (r.status, r)) {
                Some((status, _)) if status == GenericStatus::Timeout as i32 => {
                    if started.elapsed() >= TUNNEL_LIMIT {
                        return Err(Error::Timeout {
                            operation: format!("waiting for the tunnels of sandbox \"{sandbox}\""),
                            after: TUNNEL_LIMIT,
                        });
                    }
                    tracing::debug!(provider = "modal", sandbox.name = %sandbox, "tunnels are not ready yet; asking again");
                }
                Some((status, result)) if status != GenericStatus::Success as i32 && status != 0 => {
                    return Err(Error::backend(
                        SERVICE,
                        format!("Modal could not open the tunnels of sandbox \"{sandbox}\": {}", describe_result(&result)),
                    ));
                }
                _ => break response.tunnels,
            }
        };
        let Some(tunnel) = tunnels.iter().find(|t| t.container_port == u32::from(port.port)) else {
            return Err(Error::invalid(
                "port",
                format!("{} ({})", port.name, port.port),
                format!(
                    "sandbox \"{sandbox}\" does not expose port {}; list it in the sandbox's ports when creating it",
                    port.port
                ),
            ));
        };
        let url = tunnel_url(tunnel, &port.scheme, self.config().plain_ports)?;
        Ok(Endpoint {
            name: port.name.clone(),
            port: port.port,
            url,
            credentials: None,
        })
    }

    pub(crate) async fn snapshot_impl(&self, sandbox: &SandboxName, reference: &str) -> Result<ImageRef> {
        let id = self.sandbox_id(sandbox).await?;
        tracing::info!(provider = "modal", sandbox.name = %sandbox, image = %reference, "saving a snapshot of the sandbox");

        let response: SandboxSnapshotFsResponse = self
            .control
            .unary_with(
                paths::SANDBOX_SNAPSHOT_FS,
                SandboxSnapshotFsRequest {
                    sandbox_id: id.clone(),
                    timeout: SNAPSHOT_WAIT.as_secs_f32(),
                },
                SNAPSHOT_WAIT + crate::client::DEFAULT_DEADLINE,
            )
            .await
            .map_err(|e| {
                if e.code() == Code::NotFound {
                    not_found(sandbox)
                } else {
                    e.into_ken(format!("saving a snapshot of sandbox \"{sandbox}\""))
                }
            })?;

        let success = response
            .result
            .as_ref()
            .is_some_and(|r| r.status == GenericStatus::Success as i32);
        if !success || response.image_id.is_empty() {
            let why = response
                .result
                .as_ref()
                .map_or_else(|| "no result".to_owned(), describe_result);
            return Err(Error::backend(
                SERVICE,
                format!("the snapshot of sandbox \"{sandbox}\" failed: {why}"),
            ));
        }

        // Modal names images by id only. The reference is kept as the tag's value,
        // and the tag on the sandbox lets `resources` find the image.
        let mut labels = self.tags(&id).await?;
        labels.insert(format!("{SNAPSHOT_TAG_PREFIX}{}", response.image_id), reference);
        self.set_tags(&id, &labels).await?;
        tracing::info!(provider = "modal", sandbox.name = %sandbox, image = %response.image_id, "snapshot saved");

        Ok(ImageRef {
            reference: response.image_id,
            cached: false,
        })
    }
}

/// Builds the URL of a tunnel: `https://host` (with `:port` unless 443) for a TLS
/// tunnel, `<scheme>://host:port` for a plain one.
pub(crate) fn tunnel_url(tunnel: &TunnelData, scheme: &str, plain: bool) -> Result<Url> {
    let text = if plain {
        let host = tunnel.unencrypted_host.as_deref().unwrap_or_default();
        let port = tunnel.unencrypted_port.unwrap_or_default();
        if host.is_empty() || port == 0 {
            return Err(Error::backend(
                SERVICE,
                format!("Modal returned no plain TCP address for port {}", tunnel.container_port),
            ));
        }
        let scheme = if scheme.is_empty() { "http" } else { scheme };
        format!("{scheme}://{host}:{port}/")
    } else if tunnel.port == 443 || tunnel.port == 0 {
        format!("https://{}/", tunnel.host)
    } else {
        format!("https://{}:{}/", tunnel.host, tunnel.port)
    };
    Url::parse(&text)
        .map_err(|e| Error::backend(SERVICE, format!("Modal returned a tunnel that is not a valid URL ({text}): {e}")))
}

fn describe_code(code: Option<i64>) -> String {
    code.map_or_else(|| "unknown exit code".to_owned(), |c| format!("exit code {c}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(port: u32) -> TunnelData {
        TunnelData {
            host: "abc.modal.host".into(),
            port,
            unencrypted_host: Some("r1.modal.host".into()),
            unencrypted_port: Some(40001),
            container_port: 8080,
        }
    }

    #[test]
    fn tls_url_omits_443() {
        assert_eq!(tunnel_url(&tunnel(443), "http", false).unwrap().as_str(), "https://abc.modal.host/");
        assert_eq!(tunnel_url(&tunnel(8443), "http", false).unwrap().as_str(), "https://abc.modal.host:8443/");
    }

    #[test]
    fn plain_url_uses_the_tcp_address() {
        assert_eq!(tunnel_url(&tunnel(443), "http", true).unwrap().as_str(), "http://r1.modal.host:40001/");
        let mut missing = tunnel(443);
        missing.unencrypted_port = None;
        assert!(tunnel_url(&missing, "http", true).is_err());
    }
}
