//! No credential or auth key reaches a log line, an error or `Debug` output.
//!
//! This binary installs one global subscriber that writes this crate's log lines
//! (every level) into a shared buffer. A global one, unlike a per-thread default,
//! receives events from every callsite, whichever thread registered it first. The tests only look
//! for lines they caused and for secrets that must appear nowhere, so running them
//! in parallel is fine.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::fake::{Behaviour, FakeProvider};
use common::{client, oauth_config, server, server_with_policy, ADMIN_POLICY};
use ken_core::NetworkProvider;
use ken_network_tailscale::client::{AuthKeyRequest, DeviceFilter};
use ken_network_tailscale::TailscaleNetwork;
use ken_testserver_tailscale::Route;

#[derive(Clone)]
struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Returns everything logged so far, installing the subscriber on first use.
fn logs() -> String {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buffer = BUFFER.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = BufferWriter(buffer.clone());
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone());
        let filter = tracing_subscriber::filter::Targets::new().with_target("ken_network_tailscale", tracing::Level::TRACE);
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer).with(filter)).unwrap();
        buffer
    });
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

#[tokio::test]
async fn client_logs_and_errors_have_no_secret() {
    logs();
    let server = server().await;
    let oauth = server.oauth_client().clone();
    let client = client(oauth_config(&server));

    let request = AuthKeyRequest::single_use("tag:ken-sandbox", Duration::from_secs(600), "ken sandbox secrets");
    let created = client.create_auth_key(&request).await.unwrap();
    server.fail_next(Route::ListDevices, 1, 503, None);
    client.list_devices(&DeviceFilter::default()).await.unwrap();
    server.expire_oauth_tokens();
    client.revoke_key(&created.id).await.unwrap();
    let error = client.get_device("nMissing").await.unwrap_err();

    let debug = format!("{client:?} {created:?} {error:?} {error}");
    let text = logs();
    assert!(text.contains(&format!("key.id={}", created.id)), "the capture saw no log line of this test:\n{text}");
    assert!(text.contains("sending the request again"), "{text}");
    for secret in [oauth.secret.as_str(), created.key.expose()] {
        assert!(!text.contains(secret), "a secret is in the logs:\n{text}");
        assert!(!debug.contains(secret), "a secret is in Debug or error output: {debug}");
    }
    assert!(!text.contains("tskey-api-"), "an access token is in the logs:\n{text}");
    assert!(!debug.contains("tskey-api-"), "an access token is in Debug output: {debug}");
}

#[tokio::test]
async fn attach_logs_have_no_key() {
    logs();
    let server = Arc::new(server_with_policy(ADMIN_POLICY).await);
    let provider = FakeProvider::new(server.clone(), Behaviour::Joins);
    let network = TailscaleNetwork::with_client(client(oauth_config(&server)));
    let sandbox = provider.sandbox("logged");

    network.attach(&sandbox).await.unwrap();
    network.detach(&sandbox).await.unwrap();

    let text = logs();
    assert!(text.contains("the sandbox joined the tailnet sandbox.name=logged"), "{text}");
    assert!(text.contains("detached the sandbox from the tailnet sandbox.name=logged"), "{text}");
    for key in server.keys() {
        assert!(!text.contains(&key.key), "an auth key is in the logs:\n{text}");
    }
    assert!(!text.contains(&server.oauth_client().secret), "the OAuth secret is in the logs:\n{text}");
    assert!(!text.contains("tskey-"), "a key or token is in the logs:\n{text}");
    assert!(!format!("{network:?}").contains("tskey-"));
}
