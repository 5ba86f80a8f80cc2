//! The stand-in `tailscale` and `tailscaled` scripts and the Dockerfile lines that
//! install them.
//!
//! The scripts are test stand-ins written in bash for `debian:bookworm-slim` (no curl,
//! no python). They speak this crate's control-plane protocol over `/dev/tcp` and
//! accept the real CLI flags Ken uses. `tailscale up` needs `--login-server`: they have
//! no default control server, so they never reach the internet.

use std::path::PathBuf;

use base64::Engine;

/// The stand-in `tailscale` CLI (install as `/usr/bin/tailscale`).
pub const TAILSCALE_SCRIPT: &str = include_str!("../standin/tailscale");

/// The stand-in `tailscaled` daemon (install as `/usr/sbin/tailscaled`).
pub const TAILSCALED_SCRIPT: &str = include_str!("../standin/tailscaled");

/// Returns the directory containing the two scripts in this crate's source tree.
pub fn standin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("standin")
}

/// Dockerfile lines that install both scripts with no build context: each script is
/// written from base64 text with `base64 -d` (coreutils).
pub fn standin_dockerfile_lines() -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let tailscale = engine.encode(TAILSCALE_SCRIPT);
    let tailscaled = engine.encode(TAILSCALED_SCRIPT);
    format!(
        "RUN echo '{tailscale}' | base64 -d > /usr/bin/tailscale && chmod 0755 /usr/bin/tailscale\n\
         RUN echo '{tailscaled}' | base64 -d > /usr/sbin/tailscaled && chmod 0755 /usr/sbin/tailscaled\n"
    )
}

/// Dockerfile lines that `COPY` the scripts from `context_dir`, a directory of the
/// build context containing copies of [`standin_dir`]'s files.
pub fn standin_dockerfile_copy_lines(context_dir: &str) -> String {
    let dir = context_dir.trim_end_matches('/');
    format!(
        "COPY --chmod=0755 {dir}/tailscale /usr/bin/tailscale\n\
         COPY --chmod=0755 {dir}/tailscaled /usr/sbin/tailscaled\n"
    )
}
