//! Configuration of a [`TestServer`](crate::TestServer): tailnet, credentials, listeners.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The scopes an OAuth client or access token can hold, as Tailscale names them.
///
/// A write scope (`auth_keys`) implies its read scope (`auth_keys:read`), and `all`
/// implies every scope.
pub const KNOWN_SCOPES: &[&str] = &[
    "all",
    "all:read",
    "auth_keys",
    "auth_keys:read",
    "devices:core",
    "devices:core:read",
    "policy_file",
    "policy_file:read",
];

/// An OAuth client the server accepts at `POST /api/v2/oauth/token`.
///
/// Its `Debug` output leaves out the secret.
#[derive(Clone)]
pub struct OAuthClient {
    /// The client id, sent as `client_id`.
    pub id: String,
    /// The client secret, sent as `client_secret`.
    pub secret: String,
    /// Scopes the client may request, for example `auth_keys`.
    pub scopes: Vec<String>,
    /// Tags the client owns, for example `tag:ken-sandbox`; keys it mints must carry these
    /// or tags they own in the policy's `tagOwners`.
    pub tags: Vec<String>,
}

impl OAuthClient {
    /// Builds a client with a fresh `k...CNTRL` id and `tskey-client-...` secret.
    pub fn generate(scopes: &[&str], tags: &[&str]) -> Self {
        let id = crate::ids::stable_id('k');
        let secret = format!("tskey-client-{id}-{}", crate::ids::random_alnum(32));
        OAuthClient {
            id,
            secret,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            tags: tags.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// An API access token (`tskey-api-...`) owned by a tailnet admin, with every scope.
///
/// Its `Debug` output leaves out the token.
#[derive(Clone)]
pub struct ApiToken {
    /// The token value, sent as `Authorization: Bearer <token>`.
    pub token: String,
}

impl ApiToken {
    /// Builds a token with a fresh `tskey-api-...` value.
    pub fn generate() -> Self {
        let id = crate::ids::stable_id('k');
        ApiToken {
            token: format!("tskey-api-{id}-{}", crate::ids::random_alnum(32)),
        }
    }
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("tags", &self.tags)
            .finish()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken").field("token", &"<redacted>").finish()
    }
}

/// Settings for [`TestServer::start`](crate::TestServer::start).
///
/// The default has one API access token and one OAuth client with the scopes Ken needs
/// (`auth_keys`, `devices:core`, `policy_file`) and the tag `tag:ken-sandbox`, the
/// tailnet `example.com` and the untouched default policy.
#[derive(Clone, Debug)]
pub struct TestServerConfig {
    /// The tailnet name that `{tailnet}` in a path may name besides `-`.
    pub tailnet: String,
    /// The MagicDNS suffix of device names, for example `tail1234.ts.net`.
    pub magic_dns_suffix: String,
    /// The login name shown as the owner of user-owned devices.
    pub admin_user: String,
    /// API access tokens the server accepts.
    pub api_tokens: Vec<ApiToken>,
    /// OAuth clients the server accepts.
    pub oauth_clients: Vec<OAuthClient>,
    /// Lifetime of access tokens issued to OAuth clients (`expires_in`).
    pub oauth_token_lifetime: Duration,
    /// The initial policy file as HuJSON text; `None` keeps the default policy of a new
    /// tailnet, which matches `If-Match: "ts-default"` until it is first written.
    pub initial_policy: Option<String>,
    /// Address of the control-plane listener used by the stand-in scripts. Tests on real
    /// Docker bind it to the gateway of the sandbox network; `None` starts no listener.
    pub control_bind: Option<SocketAddr>,
}

impl Default for TestServerConfig {
    fn default() -> Self {
        TestServerConfig {
            tailnet: "example.com".to_owned(),
            magic_dns_suffix: "tail1234.ts.net".to_owned(),
            admin_user: "admin@example.com".to_owned(),
            api_tokens: vec![ApiToken::generate()],
            oauth_clients: vec![OAuthClient::generate(
                &["auth_keys", "devices:core", "policy_file"],
                &["tag:ken-sandbox"],
            )],
            oauth_token_lifetime: Duration::from_secs(3600),
            initial_policy: None,
            control_bind: Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)),
        }
    }
}

impl TestServerConfig {
    /// Replaces the OAuth clients with `client`.
    pub fn with_oauth_client(mut self, client: OAuthClient) -> Self {
        self.oauth_clients = vec![client];
        self
    }

    /// Sets the lifetime of OAuth access tokens, so a test can watch a refresh.
    pub fn with_oauth_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.oauth_token_lifetime = lifetime;
        self
    }

    /// Sets the initial policy file (HuJSON text).
    pub fn with_policy(mut self, hujson: impl Into<String>) -> Self {
        self.initial_policy = Some(hujson.into());
        self
    }

    /// Sets the control-plane bind address (`None`: no control listener).
    pub fn with_control_bind(mut self, addr: Option<SocketAddr>) -> Self {
        self.control_bind = addr;
        self
    }
}
