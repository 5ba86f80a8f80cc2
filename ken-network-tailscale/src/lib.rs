//! Ken network provider that joins sandboxes to a Tailscale tailnet.
