//! A network namespace per sandbox, linked to the host by a veth pair on its own
//! /30. The sandbox gets no default route, so it reaches only its own link and
//! never another sandbox.

use std::net::Ipv4Addr;

use super::command::run;
use super::host::Host;

/// A sandbox's network namespace and its link to the host.
#[derive(Debug, Clone)]
pub(crate) struct SandboxNetwork {
    /// Name under `/run/netns`.
    pub(crate) netns: String,
    /// The host end of the veth pair.
    pub(crate) host_veth: String,
    pub(crate) host_ip: Ipv4Addr,
    /// The sandbox's address, on `eth0` inside the namespace.
    pub(crate) sandbox_ip: Ipv4Addr,
    pub(crate) link_index: u32,
}

impl SandboxNetwork {
    /// Creates the namespace and the link. On failure everything made so far is
    /// removed again.
    pub(crate) fn create(host: &Host, tag: &str) -> Result<SandboxNetwork, String> {
        let (link_index, host_ip, sandbox_ip) = host.allocate_link()?;
        let network = SandboxNetwork {
            netns: format!("ken-modal-{tag}"),
            host_veth: format!("kmh{tag}"),
            host_ip,
            sandbox_ip,
            link_index,
        };
        if let Err(error) = network.configure(tag) {
            network.remove();
            host.release_link(link_index);
            return Err(error);
        }
        Ok(network)
    }

    fn configure(&self, tag: &str) -> Result<(), String> {
        let peer = format!("kms{tag}");
        let netns = self.netns.as_str();
        run("ip", &["netns", "add", netns])?;
        run(
            "ip",
            &["link", "add", &self.host_veth, "type", "veth", "peer", "name", &peer, "netns", netns],
        )?;
        run("ip", &["addr", "add", &format!("{}/30", self.host_ip), "dev", &self.host_veth])?;
        run("ip", &["link", "set", &self.host_veth, "up"])?;
        run("ip", &["-n", netns, "link", "set", &peer, "name", "eth0"])?;
        run("ip", &["-n", netns, "addr", "add", &format!("{}/30", self.sandbox_ip), "dev", "eth0"])?;
        run("ip", &["-n", netns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", netns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Deletes the namespace (which deletes the veth pair) and the host end in
    /// case the pair outlived it. Errors are logged, not returned.
    pub(crate) fn remove(&self) {
        if let Err(error) = run("ip", &["netns", "delete", &self.netns]) {
            if !error.contains("No such file") {
                tracing::warn!(netns = %self.netns, %error, "failed to delete a sandbox's network namespace");
            }
        }
        let _ = run("ip", &["link", "delete", &self.host_veth]);
    }
}
