//! A Tailscale API v2 and control-plane test server on 127.0.0.1 for Ken's tests.
//!
//! [`TestServer`] implements the API subset Ken uses (OAuth token endpoint, auth keys,
//! devices, policy file with ETags and a `tests` evaluator) with the real paths, status
//! codes and JSON shapes. It checks every request: the credential and its scopes, the
//! content type and a strict JSON body. Requests a correct client never sends are
//! recorded as [`Violation`]s for [`TestServer::assert_no_violations`].
//!
//! A second listener serves a small control plane for the stand-in `tailscale` and
//! `tailscaled` scripts in [`standin`], which a sandbox image can install in place of
//! the real binaries. Its protocol is this crate's own, not Tailscale's.
//!
//! # Tests on real Docker
//!
//! Sandboxes reach the host at the gateway of Ken's Docker network, so the control
//! listener binds there while the API stays on 127.0.0.1:
//!
//! ```no_run
//! # async fn demo() -> ken_core::Result<()> {
//! use std::net::SocketAddr;
//! use ken_testserver_tailscale::{docker, standin, TestServer, TestServerConfig};
//!
//! let gateway = docker::network_gateway(docker::SANDBOX_NETWORK).await?;
//! let config = TestServerConfig::default().with_control_bind(Some(SocketAddr::new(gateway, 0)));
//! let server = TestServer::start(config).await;
//! let login_server = server.control_url(); // pass to `tailscale up --login-server=`
//! let image_lines = standin::standin_dockerfile_lines(); // installs the stand-ins
//! # Ok(())
//! # }
//! ```
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() {
//! use ken_testserver_tailscale::{TestServer, TestServerConfig};
//!
//! let server = TestServer::start(TestServerConfig::default()).await;
//! let url = server.api_url(); // http://127.0.0.1:PORT
//! let token = server.api_token().to_owned();
//! // ... run the client against `url` with `token` ...
//! server.assert_no_violations();
//! # }
//! ```

// Handlers return `Result<_, Response>` to exit early with an API error; a boxed
// response would only add noise to a test server.
#![allow(clippy::result_large_err)]

mod api;
mod config;
mod control;
pub mod docker;
mod faults;
mod form;
mod ids;
mod model;
mod policy;
mod server;
pub mod standin;
mod state;

pub use config::{ApiToken, OAuthClient, TestServerConfig, KNOWN_SCOPES};
pub use faults::{RegistrationMode, CONCURRENT_EDIT_COMMENT, CONCURRENT_EDIT_RULE};
pub use model::{
    AuthKey, AuthKind, ControlRequest, Device, KeyCreateCapabilities, RecordedRequest, Route, ServeConfig,
    Violation,
};
pub use policy::{DEFAULT_POLICY, DEFAULT_POLICY_ETAG};
pub use server::TestServer;
pub use state::DeviceSpec;
