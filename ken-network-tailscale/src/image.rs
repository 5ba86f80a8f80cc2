//! The Dockerfile lines that install Tailscale in a sandbox image, and the check
//! that a sandbox has its binaries.

use std::time::Duration;

use ken_core::{Error, ExecRequest, Result, Sandbox};

/// Dockerfile lines that install `tailscale` and `tailscaled` on Debian bookworm
/// (and images based on it) from Tailscale's stable apt repository, as
/// pkgs.tailscale.com documents for bookworm.
pub const IMAGE_LINES: [&str; 6] = [
    "RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \\",
    " && curl -fsSL https://pkgs.tailscale.com/stable/debian/bookworm.noarmor.gpg \\",
    "      -o /usr/share/keyrings/tailscale-archive-keyring.gpg \\",
    " && curl -fsSL https://pkgs.tailscale.com/stable/debian/bookworm.tailscale-keyring.list \\",
    "      -o /etc/apt/sources.list.d/tailscale.list \\",
    " && apt-get update && apt-get install -y tailscale && rm -rf /var/lib/apt/lists/*",
];

/// Returns [`IMAGE_LINES`] as owned strings, for a manifest's image.
pub fn image_lines() -> Vec<String> {
    IMAGE_LINES.iter().map(|line| (*line).to_owned()).collect()
}

/// Fails with an error listing [`IMAGE_LINES`] unless `tailscale` and
/// `tailscaled` are on the sandbox's `PATH`.
pub async fn check_binaries(sandbox: &Sandbox) -> Result<()> {
    let request = ExecRequest::shell("command -v tailscale >/dev/null && command -v tailscaled >/dev/null")
        .timeout(Duration::from_secs(30));
    let output = sandbox.exec_output(request).await?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::invalid(
        "sandbox image",
        sandbox.info().image.clone(),
        format!(
            "it has no `tailscale` and `tailscaled` on PATH, which the tailscale network needs; \
             set install = true in the manifest's [network] table so that Ken adds the install lines \
             to the image, or add these lines to the project's Dockerfile yourself:\n{}",
            IMAGE_LINES.join("\n")
        ),
    ))
}
