//! HTTP/2 channels to Modal: TLS with the webpki roots for `https` URLs, plaintext
//! only for an explicit `http` URL.

use std::time::Duration;

use ken_core::{Error, Result};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use url::Url;

use crate::error::SERVICE;

/// Maximum size of a message sent or received: 100 MiB.
pub(crate) const MAX_MESSAGE_BYTES: usize = 100 * 1024 * 1024;
/// HTTP/2 stream and connection windows: 64 MiB.
const WINDOW_BYTES: u32 = 64 * 1024 * 1024;
/// Keepalive ping interval.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Keepalive ping timeout.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to open the TCP and TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns a channel to `url` that connects on first use.
pub(crate) fn channel(url: &Url, what: &str) -> Result<Channel> {
    let text = url.as_str().trim_end_matches('/').to_owned();
    let mut endpoint = Endpoint::from_shared(text.clone())
        .map_err(|e| Error::invalid(format!("{what} URL"), text.clone(), e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(WINDOW_BYTES))
        .initial_connection_window_size(Some(WINDOW_BYTES));
    match url.scheme() {
        "https" => {
            let host = url.host_str().unwrap_or_default().to_owned();
            let tls = ClientTlsConfig::new().with_webpki_roots().domain_name(host);
            endpoint = endpoint.tls_config(tls).map_err(|e| {
                Error::backend_with(SERVICE, format!("failed to set up TLS for the {what} at {text}"), e)
            })?;
        }
        "http" => {}
        other => {
            return Err(Error::invalid(
                format!("{what} URL"),
                text,
                format!("the scheme {other:?} is not supported; use https (or http for a local server)"),
            ))
        }
    }
    Ok(endpoint.connect_lazy())
}
