//! Attach, expose, detach and reap through a scripted sandbox provider and the
//! Tailscale test server: ordering, key file handling, cleanup on failure.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake::{Behaviour, Event, FakeProvider};
use common::{oauth_config, server_with_policy, ADMIN_POLICY};
use ken_core::sandbox::{PortSpec, SandboxInfo};
use ken_core::{Error, NetworkProvider};
use ken_network_tailscale::network::AttachState;
use ken_network_tailscale::{TailscaleConfig, TailscaleNetwork, IMAGE_LINES};
use ken_testserver_tailscale::{DeviceSpec, TestServer};

const KEY_FILE: &str = "/run/ken/tailscale/authkey";
const STATE_FILE: &str = "/run/ken/tailscale/state.json";

async fn setup(behaviour: Behaviour) -> (Arc<TestServer>, Arc<FakeProvider>) {
    let server = Arc::new(server_with_policy(ADMIN_POLICY).await);
    let provider = FakeProvider::new(server.clone(), behaviour);
    (server, provider)
}

fn network(server: &TestServer, edit: impl FnOnce(&mut TailscaleConfig)) -> TailscaleNetwork {
    let mut config = oauth_config(server);
    edit(&mut config);
    TailscaleNetwork::with_client(common::client(config))
}

fn exec_commands(provider: &FakeProvider) -> Vec<String> {
    provider
        .events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Exec(command, _) => Some(command),
            Event::Upload(..) => None,
        })
        .collect()
}

fn port(number: u16) -> PortSpec {
    PortSpec {
        name: "web".to_owned(),
        port: number,
        scheme: "http".to_owned(),
    }
}

#[tokio::test]
async fn attach_joins_with_key_file_only() {
    let (server, provider) = setup(Behaviour::Joins).await;
    let network = network(&server, |_| {});
    let sandbox = provider.sandbox("demo");

    let attachment = network.attach(&sandbox).await.unwrap();

    let device = server.devices().into_iter().next().expect("a device joined");
    assert_eq!(attachment.network, "tailscale");
    assert_eq!(attachment.device_id.as_deref(), Some(device.node_id.as_str()));
    assert_eq!(attachment.hostname.as_deref(), Some(device.name.as_str()));
    assert!(!device.name.ends_with('.'));
    assert_eq!(attachment.addresses.len(), 2);
    assert!(device.hostname.starts_with("ken-demo-"), "{}", device.hostname);
    // ken-demo-SCOPE-RANDOM: 4 hex digits of scope, 6 random ones.
    let suffix = &device.hostname["ken-demo-".len()..];
    assert_eq!(suffix.len(), 4 + 1 + 6, "{}", device.hostname);
    assert!(suffix.chars().all(|c| c.is_ascii_hexdigit() || c == '-'), "{}", device.hostname);
    assert_eq!(device.tags, vec!["tag:ken-sandbox".to_owned()]);

    // The key was minted for this sandbox, read once from its file, then deleted.
    let keys = server.keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].description, "ken sandbox demo");
    assert_eq!(provider.keys_read(), vec![keys[0].key.clone()]);
    assert!(provider.file(KEY_FILE).is_none(), "the key file is still there");
    let uploads: Vec<Event> = provider.events().into_iter().filter(|e| matches!(e, Event::Upload(..))).collect();
    assert!(uploads.contains(&Event::Upload(KEY_FILE.to_owned(), 0o600)), "{uploads:?}");

    // No command line or environment carries the key.
    for event in provider.events() {
        if let Event::Exec(command, env) = event {
            assert!(!command.contains("tskey-"), "{command}");
            assert!(env.iter().all(|(_, value)| !value.contains("tskey-")), "{env:?}");
        }
    }

    // Order: binaries checked and tailscaled started before `up`; the key file is
    // removed after it.
    let commands = exec_commands(&provider);
    let position = |needle: &str| commands.iter().position(|c| c.contains(needle)).unwrap_or_else(|| panic!("no {needle:?} in {commands:#?}"));
    assert!(position("command -v tailscale") < position("setsid tailscaled"));
    assert!(position("setsid tailscaled --tun=userspace-networking --state=mem:") < position(" up --auth-key=file:/run/ken/tailscale/authkey"));
    let removal = commands.iter().rposition(|c| *c == format!("rm -f {KEY_FILE}")).expect("a separate removal of the key file");
    assert!(position(" up --auth-key=file:") < removal);
    assert!(commands[position(" up --auth-key=file:")].contains(&format!("rm -f {KEY_FILE}")));
    let up = &commands[position(" up --auth-key=file:")];
    for flag in ["--advertise-tags=tag:ken-sandbox", "--accept-dns=false", "--timeout=120s", &format!("--hostname={}", device.hostname)] {
        assert!(up.contains(flag), "{flag} missing in {up}");
    }
    assert!(!up.contains("--login-server"), "{up}");

    // The state file has the ids and no secret.
    let state: AttachState = serde_json::from_slice(&provider.file(STATE_FILE).expect("a state file")).unwrap();
    assert_eq!(state.node_id.as_deref(), Some(device.node_id.as_str()));
    assert_eq!(state.key_id.as_deref(), Some(keys[0].id.as_str()));
    assert!(!String::from_utf8(provider.file(STATE_FILE).unwrap()).unwrap().contains("tskey-"));
    server.assert_no_violations();
}

#[tokio::test]
async fn attach_passes_login_server() {
    let (server, provider) = setup(Behaviour::Joins).await;
    let network = network(&server, |config| config.control_url = Some(url::Url::parse("https://hs.example.com").unwrap()));
    network.attach(&provider.sandbox("demo")).await.unwrap();
    let commands = exec_commands(&provider);
    let up = commands.iter().find(|c| c.contains(" up --auth-key")).unwrap();
    assert!(up.contains("--login-server=https://hs.example.com/"), "{up}");
}

#[tokio::test]
async fn expose_gives_tailnet_urls() {
    let (server, provider) = setup(Behaviour::Joins).await;
    let sandbox = provider.sandbox("demo");
    let plain = network(&server, |_| {});
    let attachment = plain.attach(&sandbox).await.unwrap();
    let name = attachment.hostname.unwrap();

    let endpoint = plain.expose(&sandbox, &port(8080)).await.unwrap();
    assert_eq!(endpoint.url.as_str(), format!("http://{name}:8080/"));
    assert!(!exec_commands(&provider).iter().any(|c| c.contains(" serve ")));

    // Another process with HTTPS on reads the state file and runs tailscale serve.
    let https = network(&server, |config| config.https = true);
    let endpoint = https.expose(&sandbox, &port(8080)).await.unwrap();
    assert_eq!(endpoint.url.as_str(), format!("https://{name}:8080/"));
    assert!(exec_commands(&provider).iter().any(|c| c.contains("serve --bg --https=8080 http://127.0.0.1:8080")));
}

#[tokio::test]
async fn expose_before_attach_is_an_error() {
    let (server, provider) = setup(Behaviour::Joins).await;
    let error = network(&server, |_| {}).expose(&provider.sandbox("demo"), &port(80)).await.unwrap_err();
    assert!(error.to_string().contains("not attached"), "{error}");
}

#[tokio::test]
async fn detach_from_fresh_process_uses_state_file() {
    let (server, provider) = setup(Behaviour::Joins).await;
    let sandbox = provider.sandbox("demo");
    network(&server, |_| {}).attach(&sandbox).await.unwrap();
    assert_eq!(server.devices().len(), 1);

    let other = network(&server, |_| {});
    other.detach(&sandbox).await.unwrap();

    assert!(server.devices().is_empty());
    assert!(server.valid_keys().is_empty());
    assert!(exec_commands(&provider).iter().any(|c| c.contains("logout")));

    // Twice in a row is fine.
    other.detach(&sandbox).await.unwrap();
    server.assert_no_violations();
}

#[tokio::test]
async fn detach_of_dead_sandbox_finds_device_by_hostname() {
    let (server, provider) = setup(Behaviour::Joins).await;
    let sandbox = provider.sandbox("demo");
    network(&server, |_| {}).attach(&sandbox).await.unwrap();
    let scope = own_scope(&server);
    let unrelated = server.add_device(DeviceSpec::new(format!("ken-demo-2-{scope}-abc123"), &["tag:ken-sandbox"]));
    let teammate = server.add_device(DeviceSpec::new(format!("ken-demo-{}-abc123", other_scope(&scope)), &["tag:ken-sandbox"]));
    provider.set_behaviour(Behaviour::Dead);

    network(&server, |_| {}).detach(&sandbox).await.unwrap();

    let mut left: Vec<String> = server.devices().into_iter().map(|d| d.node_id).collect();
    left.sort();
    let mut expected = vec![unrelated.node_id, teammate.node_id];
    expected.sort();
    assert_eq!(left, expected, "only the sandbox's own device goes; a same-named one of another scope stays");
}

#[tokio::test]
async fn detach_of_never_attached_sandbox_succeeds() {
    let (server, provider) = setup(Behaviour::Dead).await;
    network(&server, |_| {}).detach(&provider.sandbox("demo")).await.unwrap();
}

#[tokio::test]
async fn refused_key_cleans_up() {
    let (server, provider) = setup(Behaviour::NeedsLogin).await;
    let error = network(&server, |_| {}).attach(&provider.sandbox("demo")).await.unwrap_err();

    assert!(matches!(error, Error::Unauthenticated { .. }), "{error}");
    assert!(error.to_string().contains("NeedsLogin"), "{error}");
    assert!(provider.file(KEY_FILE).is_none());
    assert!(server.valid_keys().is_empty(), "the minted key was not revoked");
    assert!(server.devices().is_empty());
}

#[tokio::test]
async fn device_missing_from_api_fails_attach() {
    let (server, provider) = setup(Behaviour::Invisible).await;
    let network = network(&server, |config| config.join_timeout = Duration::from_secs(5));
    let error = network.attach(&provider.sandbox("demo")).await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert!(error.to_string().contains("does not list it"), "{error}");
    assert!(server.valid_keys().is_empty());
}

#[tokio::test]
async fn missing_binaries_name_dockerfile_lines() {
    let (server, provider) = setup(Behaviour::NoBinaries).await;
    let message = network(&server, |_| {}).attach(&provider.sandbox("demo")).await.unwrap_err().to_string();
    for line in IMAGE_LINES {
        assert!(message.contains(line), "{line} missing in {message}");
    }
    assert!(message.contains("install = true"), "{message}");
    assert!(server.keys().is_empty(), "a key was minted for an image without tailscale");
}

#[tokio::test]
async fn image_lines_follow_install_setting() {
    let server = common::server().await;
    assert!(network(&server, |_| {}).image_lines().is_empty());
    let lines = network(&server, |config| config.install = true).image_lines();
    let expected: Vec<String> = IMAGE_LINES.iter().map(|line| (*line).to_owned()).collect();
    assert_eq!(lines, expected);
}

#[tokio::test]
async fn key_tag_error_names_both_sets() {
    let oauth = ken_testserver_tailscale::OAuthClient::generate(&["auth_keys", "devices:core", "policy_file"], &["tag:ci"]);
    let server = Arc::new(
        TestServer::start(
            ken_testserver_tailscale::TestServerConfig::default()
                .with_control_bind(None)
                .with_oauth_client(oauth.clone()),
        )
        .await,
    );
    let provider = FakeProvider::new(server.clone(), Behaviour::Joins);
    let config = TailscaleConfig::builder()
        .oauth_client(oauth.id.clone(), oauth.secret.clone())
        .oauth_tags(oauth.tags.clone())
        .base_url(url::Url::parse(&server.api_url()).unwrap())
        .build()
        .unwrap();
    let network = TailscaleNetwork::with_client(common::client(config));
    let message = network.attach(&provider.sandbox("demo")).await.unwrap_err().to_string();
    assert!(message.contains("[tag:ken-sandbox]"), "{message}");
    assert!(message.contains("[tag:ci]"), "{message}");
}

/// Returns the scope in the host name of the one device Ken attached so far.
fn own_scope(server: &TestServer) -> String {
    let device = server.devices().into_iter().find(|d| d.hostname.starts_with("ken-demo-")).expect("an attached device");
    let hostname = device.hostname;
    hostname[hostname.len() - 11..hostname.len() - 7].to_owned()
}

/// Returns a scope that differs from `scope`.
fn other_scope(scope: &str) -> String {
    if scope == "0000" { "0001" } else { "0000" }.to_owned()
}

fn live(provider: &Arc<FakeProvider>, name: &str) -> SandboxInfo {
    provider.sandbox(name).info().clone()
}

#[tokio::test]
async fn reap_removes_only_leftovers() {
    let (server, provider) = setup(Behaviour::Joins).await;
    let network = network(&server, |_| {});
    network.attach(&provider.sandbox("demo")).await.unwrap();
    let live_device = server.devices()[0].node_id.clone();
    let scope = own_scope(&server);
    let orphan = server.add_device(DeviceSpec::new(format!("ken-gone-{scope}-abc123"), &["tag:ken-sandbox"]));
    let mut offline_spec = DeviceSpec::new("stray-host", &["tag:ken-sandbox"]);
    offline_spec.online = false;
    let offline = server.add_device(offline_spec);
    let foreign = server.add_device(DeviceSpec::new("stray-online", &["tag:ken-sandbox"]));
    let laptop = server.add_device(DeviceSpec::new(format!("ken-laptop-{scope}-abc123"), &[]));
    let client = network.client();
    let leftover = client
        .create_auth_key(&ken_network_tailscale::client::AuthKeyRequest::single_use("tag:ken-sandbox", Duration::from_secs(600), "ken sandbox gone"))
        .await
        .unwrap();
    let live_key = client
        .create_auth_key(&ken_network_tailscale::client::AuthKeyRequest::single_use("tag:ken-sandbox", Duration::from_secs(600), "ken sandbox demo"))
        .await
        .unwrap();
    let live = vec![live(&provider, "demo")];

    let dry = network.reap(&live, true).await.unwrap();
    assert_eq!(dry.removed.len(), 3, "{:?}", dry.removed);
    assert_eq!(server.devices().len(), 5);
    assert_eq!(server.valid_keys().len(), 3);

    let report = network.reap(&live, false).await.unwrap();
    assert_eq!(report.removed, dry.removed);
    let left: Vec<String> = server.devices().into_iter().map(|d| d.node_id).collect();
    assert!(left.contains(&live_device), "{left:?}");
    assert!(left.contains(&foreign.node_id), "{left:?}");
    assert!(left.contains(&laptop.node_id), "{left:?}");
    assert!(!left.contains(&orphan.node_id), "{left:?}");
    assert!(!left.contains(&offline.node_id), "{left:?}");
    assert!(server.key(&leftover.id).unwrap().is_revoked());
    assert!(!server.key(&live_key.id).unwrap().is_revoked());
    assert!(report.removed.iter().any(|line| line.contains(&format!("ken-gone-{scope}-abc123"))), "{:?}", report.removed);

    // Nothing is left to reap.
    assert!(network.reap(&live, false).await.unwrap().removed.is_empty());
    server.assert_no_violations();
}

#[tokio::test]
async fn reap_spares_other_scopes_online() {
    let (server, provider) = setup(Behaviour::Joins).await;
    let network = network(&server, |_| {});
    network.attach(&provider.sandbox("demo")).await.unwrap();
    let scope = own_scope(&server);
    let other = other_scope(&scope);
    let own_orphan = server.add_device(DeviceSpec::new(format!("ken-gone-{scope}-abc123"), &["tag:ken-sandbox"]));
    let teammate = server.add_device(DeviceSpec::new(format!("ken-gone-{other}-abc123"), &["tag:ken-sandbox"]));
    let mut stale = DeviceSpec::new(format!("ken-old-{other}-abc123"), &["tag:ken-sandbox"]);
    stale.online = false;
    let stale = server.add_device(stale);
    let live = vec![live(&provider, "demo")];

    let report = network.reap(&live, false).await.unwrap();

    let left: Vec<String> = server.devices().into_iter().map(|d| d.node_id).collect();
    assert!(left.contains(&teammate.node_id), "an online device of another scope was deleted: {:?}", report.removed);
    assert!(!left.contains(&own_orphan.node_id), "the own-scope orphan survived: {:?}", report.removed);
    assert!(!left.contains(&stale.node_id), "the offline device of another scope survived: {:?}", report.removed);
    assert_eq!(report.removed.len(), 2, "{:?}", report.removed);
}

#[tokio::test]
async fn reap_scope_follows_owner() {
    let (server, provider) = setup(Behaviour::Joins).await;
    network(&server, |_| {}).attach(&provider.sandbox("demo")).await.unwrap();
    let scope = own_scope(&server);
    let orphan = server.add_device(DeviceSpec::new(format!("ken-gone-{scope}-abc123"), &["tag:ken-sandbox"]));
    let live = vec![live(&provider, "demo")];

    // Another owner on this machine has another scope, so the orphan stays online.
    let other_owner = network(&server, |_| {}).with_owner("someone-else-entirely");
    other_owner.reap(&live, false).await.unwrap();
    assert!(server.device(&orphan.node_id).is_some(), "another owner's gc deleted the device");

    network(&server, |_| {}).reap(&live, false).await.unwrap();
    assert!(server.device(&orphan.node_id).is_none(), "the owner's gc kept its orphan");
}

/// Starts a server with `policy` whose only OAuth client carries `tag:ci`, and a
/// network configured with the client's tags.
async fn ci_client_network(policy: &str, apply_policy: bool) -> (TestServer, TailscaleNetwork) {
    let oauth = ken_testserver_tailscale::OAuthClient::generate(&["auth_keys", "devices:core", "policy_file"], &["tag:ci"]);
    let server = TestServer::start(
        ken_testserver_tailscale::TestServerConfig::default()
            .with_control_bind(None)
            .with_oauth_client(oauth.clone())
            .with_policy(policy),
    )
    .await;
    let config = TailscaleConfig::builder()
        .oauth_client(oauth.id.clone(), oauth.secret.clone())
        .oauth_tags(oauth.tags.clone())
        .policy_test_user("admin@example.com")
        .apply_policy(apply_policy)
        .base_url(url::Url::parse(&server.api_url()).unwrap())
        .build()
        .unwrap();
    let network = TailscaleNetwork::with_client(common::client(config));
    (server, network)
}

#[tokio::test]
async fn ensure_policy_rejects_foreign_client_tags() {
    let (server, network) = ci_client_network(ADMIN_POLICY, true).await;

    let error = network.ensure_policy(&ken_core::AccessPolicy::standard()).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::InvalidInput { .. }), "{message}");
    assert!(message.contains("\"tag:ken-sandbox\""), "the error does not name the requested tag: {message}");
    assert!(message.contains("[tag:ci]"), "the error does not name the client's tags: {message}");
    assert!(message.contains("[autogroup:admin]"), "the error does not name the tag's owners: {message}");
    assert!(server.keys().is_empty(), "{:?}", server.keys());
    assert_eq!(server.policy_writes(), 0, "the failed preflight wrote the policy");
}

#[tokio::test]
async fn ensure_policy_accepts_tag_owned_by_client_tag() {
    let policy = ADMIN_POLICY.replace(r#""tag:ken-sandbox": ["autogroup:admin"],"#, r#""tag:ken-sandbox": ["tag:ci"],"#);
    assert_ne!(policy, ADMIN_POLICY);
    let (server, network) = ci_client_network(&policy, true).await;

    network.ensure_policy(&ken_core::AccessPolicy::standard()).await.unwrap();
    assert_eq!(server.policy_writes(), 1);
    server.assert_no_violations();
}
