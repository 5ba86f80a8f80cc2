//! Ken network provider that joins sandboxes to a Tailscale tailnet.
//!
//! [`TailscaleNetwork`] implements [`ken_core::NetworkProvider`]: each sandbox runs
//! `tailscaled` in userspace-networking mode, joins with a single-use, ephemeral,
//! pre-authorized auth key tagged `tag:ken-sandbox`, and is reachable as
//! `http://<magicdns-name>:<port>` by every member of the tailnet. The tailnet's
//! policy file keeps "any user to any sandbox, no sandbox to sandbox" in force:
//! [`policy`] renders Ken's section, merges it into the admins' HuJSON without
//! touching their rules, and refuses rules that would let sandboxes reach each
//! other.
//!
//! API credentials (an OAuth client or an API access token) stay on the host; see
//! [`config::env`] for the variables.
//!
//! ```no_run
//! # async fn example(sandbox: ken_core::Sandbox) -> ken_core::Result<()> {
//! use ken_core::{AccessPolicy, NetworkProvider};
//! use ken_network_tailscale::TailscaleNetwork;
//!
//! // Reads TAILSCALE_OAUTH_CLIENT_ID / TAILSCALE_OAUTH_CLIENT_SECRET (or
//! // TAILSCALE_API_KEY) and the KEN_TAILSCALE_* settings.
//! let network = TailscaleNetwork::from_env()?;
//! network.apply_policy(&AccessPolicy::standard()).await?;
//! let attachment = network.attach(&sandbox).await?;
//! println!("joined as {:?}", attachment.hostname);
//! network.detach(&sandbox).await?;
//! # Ok(())
//! # }
//! ```

mod auth;
pub mod client;
pub mod config;
pub mod image;
pub mod network;
pub mod policy;
pub mod retry;

pub use client::TailscaleClient;
pub use config::{ApiCredentials, TailscaleConfig, TailscaleConfigBuilder};
pub use image::{image_lines, IMAGE_LINES};
pub use network::TailscaleNetwork;
pub use retry::RetryPolicy;
