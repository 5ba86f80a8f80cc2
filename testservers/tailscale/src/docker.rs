//! Finding the address the control-plane listener binds to for tests on real Docker.

use std::net::IpAddr;

use ken_core::{Error, Result};

/// The Docker network Ken attaches sandboxes to.
pub const SANDBOX_NETWORK: &str = "ken-sandboxes";

/// Returns the IPv4 gateway of a Docker network, read with `docker network inspect`.
///
/// Containers on that network reach the host at this address, so the control-plane
/// listener binds there for tests on real Docker (see
/// [`TestServerConfig::control_bind`](crate::TestServerConfig::control_bind)).
pub async fn network_gateway(network: &str) -> Result<IpAddr> {
    let output = tokio::process::Command::new("docker")
        .args([
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
            network,
        ])
        .output()
        .await
        .map_err(|source| Error::Io {
            context: format!("running `docker network inspect {network}`"),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::backend(
            "docker",
            format!(
                "`docker network inspect {network}` failed ({}): {}; create the network first (a Docker sandbox launch does)",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
        .ok_or_else(|| {
            Error::backend(
                "docker",
                format!("network {network} has no IPv4 gateway (inspect printed {:?})", text.trim()),
            )
        })
}
