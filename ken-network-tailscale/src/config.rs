//! [`TailscaleConfig`]: credentials, tailnet and sandbox settings, read from the
//! environment, the manifest's `[network]` table or a builder.

use std::fmt;
use std::time::Duration;

use ken_core::{Error, Result, Secret};
use url::Url;

/// The API base URL unless `TAILSCALE_BASE_URL` is set.
pub const DEFAULT_BASE_URL: &str = "https://api.tailscale.com";

/// The tag every sandbox device carries unless `KEN_TAILSCALE_TAG` or `tag` is set.
pub const DEFAULT_TAG: &str = "tag:ken-sandbox";

/// The owner of the sandbox tag in the policy file unless `tag_owner` is set.
pub const DEFAULT_TAG_OWNER: &str = "autogroup:admin";

/// The lifetime of each auth key unless `KEN_TAILSCALE_KEY_EXPIRY` or `key_expiry`
/// is set. A key is used within seconds of being minted, so a short life limits
/// what a leaked key is worth.
pub const DEFAULT_KEY_EXPIRY: Duration = Duration::from_secs(10 * 60);

/// The shortest accepted key expiry.
pub const MIN_KEY_EXPIRY: Duration = Duration::from_secs(60);

/// The longest accepted key expiry.
pub const MAX_KEY_EXPIRY: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a sandbox may take to join the tailnet unless `join_timeout` is set.
/// Joining usually takes seconds, but 60 to 90 s has been reported.
pub const DEFAULT_JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The shortest accepted join timeout.
pub const MIN_JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest accepted join timeout.
pub const MAX_JOIN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The start of every sandbox's tailnet host name unless `hostname_prefix` is set.
pub const DEFAULT_HOSTNAME_PREFIX: &str = "ken-";

/// The longest accepted host name prefix. With a 40-character sandbox name and the
/// 12-character `-SCOPE-RANDOM` suffix the host name stays within a 63-character DNS
/// label.
pub const MAX_HOSTNAME_PREFIX_LEN: usize = 11;

/// Environment variable names read by [`TailscaleConfig::from_env`].
pub mod env {
    /// An API access token (`tskey-api-...`).
    pub const API_KEY: &str = "TAILSCALE_API_KEY";
    /// The id of an OAuth client, used with [`OAUTH_CLIENT_SECRET`].
    pub const OAUTH_CLIENT_ID: &str = "TAILSCALE_OAUTH_CLIENT_ID";
    /// The secret of an OAuth client (`tskey-client-...`).
    pub const OAUTH_CLIENT_SECRET: &str = "TAILSCALE_OAUTH_CLIENT_SECRET";
    /// The tailnet name; `-` means the credential's own tailnet.
    pub const TAILNET: &str = "TAILSCALE_TAILNET";
    /// The API base URL, for example `https://api.tailscale.com`; a trailing
    /// `/api/v2` is accepted and dropped.
    pub const BASE_URL: &str = "TAILSCALE_BASE_URL";
    /// The tag sandbox devices carry.
    pub const TAG: &str = "KEN_TAILSCALE_TAG";
    /// The auth key lifetime, as a duration such as `10m`.
    pub const KEY_EXPIRY: &str = "KEN_TAILSCALE_KEY_EXPIRY";
    /// The control server for `tailscale up --login-server`, for headscale-style
    /// servers.
    pub const CONTROL_URL: &str = "KEN_TAILSCALE_CONTROL_URL";
    /// The tags of the OAuth client, space- or comma-separated, named in errors about
    /// tags it may not mint.
    pub const OAUTH_TAGS: &str = "KEN_TAILSCALE_OAUTH_TAGS";
    /// A member's login name used as the source of the policy file's tests.
    pub const POLICY_TEST_USER: &str = "KEN_TAILSCALE_POLICY_TEST_USER";
}

/// The keys a `[network]` table of `kind = "tailscale"` accepts.
pub const SETTINGS_KEYS: [&str; 11] = [
    "tag",
    "tag_owner",
    "key_expiry",
    "control_url",
    "https",
    "hostname_prefix",
    "join_timeout",
    "tailnet",
    "policy_test_user",
    "apply_policy",
    "install",
];

/// The credential Ken uses for the Tailscale API.
#[derive(Clone, PartialEq, Eq)]
pub enum ApiCredentials {
    /// An API access token, sent as a bearer token.
    ApiKey(Secret),
    /// An OAuth client; Ken exchanges it for short-lived access tokens.
    OAuth {
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: Secret,
    },
}

impl fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiCredentials::ApiKey(key) => f.debug_tuple("ApiKey").field(key).finish(),
            ApiCredentials::OAuth { client_id, client_secret } => f
                .debug_struct("OAuth")
                .field("client_id", client_id)
                .field("client_secret", client_secret)
                .finish(),
        }
    }
}

/// Everything the Tailscale network provider needs: API credentials, tailnet, the
/// sandbox tag and how sandboxes join.
///
/// Build it with [`TailscaleConfig::from_env`], [`TailscaleConfig::from_settings`]
/// (the manifest's `[network]` table plus the environment's credentials) or
/// [`TailscaleConfig::builder`]. Secrets are kept as [`Secret`], so `Debug` output
/// shows `[redacted]` in their place.
#[derive(Debug, Clone)]
pub struct TailscaleConfig {
    /// The API credential.
    pub credentials: ApiCredentials,
    /// The API base URL, without `/api/v2`.
    pub base_url: Url,
    /// The tailnet, `-` for the credential's own.
    pub tailnet: String,
    /// The tag sandbox devices carry, for example `tag:ken-sandbox`.
    pub tag: String,
    /// The owners of the tag written to the policy file's `tagOwners`.
    pub tag_owners: Vec<String>,
    /// The tags the OAuth client may mint, when known from configuration.
    pub oauth_tags: Vec<String>,
    /// The lifetime of each auth key.
    pub key_expiry: Duration,
    /// The control server passed as `--login-server`, for headscale-style servers.
    pub control_url: Option<Url>,
    /// Whether [`expose`](ken_core::NetworkProvider::expose) adds HTTPS through
    /// `tailscale serve`.
    pub https: bool,
    /// The start of each sandbox's tailnet host name.
    pub hostname_prefix: String,
    /// How long a sandbox may take to join the tailnet.
    pub join_timeout: Duration,
    /// A member's login name used as the source of the policy file's tests.
    pub policy_test_user: Option<String>,
    /// Whether `ensure_policy` applies Ken's policy section when it is missing,
    /// instead of failing.
    pub apply_policy: bool,
    /// Whether launches add [`IMAGE_LINES`](crate::IMAGE_LINES) to the sandbox image
    /// (through [`NetworkProvider::image_lines`](ken_core::NetworkProvider::image_lines)).
    pub install: bool,
}

impl TailscaleConfig {
    /// Starts a builder with every default set and no credentials.
    pub fn builder() -> TailscaleConfigBuilder {
        TailscaleConfigBuilder::default()
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_env_with(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from `lookup`, which returns the value of an
    /// environment variable.
    pub fn from_env_with(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Self::from_settings(&toml::Table::new(), lookup)
    }

    /// Reads the manifest's `[network]` table (its settings, `kind` is ignored) and
    /// the credentials from `lookup`.
    ///
    /// Credentials come only from the environment. For a setting given both ways
    /// the environment variable wins, as Cargo's `CARGO_*` variables win over its
    /// configuration files.
    pub fn from_settings(table: &toml::Table, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let lookup = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        for key in table.keys() {
            if key != "kind" && !SETTINGS_KEYS.contains(&key.as_str()) {
                return Err(unknown_key(key));
            }
        }

        let mut builder = TailscaleConfig::builder().credentials(credentials_from_env(&lookup)?);
        if let Some(url) = lookup(env::BASE_URL) {
            builder = builder.base_url(strip_api_path(parse_url(env::BASE_URL, &url)?));
        }

        if let Some(tailnet) = string_setting(table, "tailnet")? {
            builder = builder.tailnet(tailnet);
        }
        if let Some(tailnet) = lookup(env::TAILNET) {
            builder = builder.tailnet(tailnet);
        }

        if let Some(tag) = string_setting(table, "tag")? {
            check_tag(&tag, "network.tag")?;
            builder = builder.tag(tag);
        }
        if let Some(tag) = lookup(env::TAG) {
            check_tag(&tag, env::TAG)?;
            builder = builder.tag(tag);
        }

        if let Some(value) = table.get("tag_owner") {
            builder = builder.tag_owners(string_list(value, "network.tag_owner")?);
        }
        if let Some(tags) = lookup(env::OAUTH_TAGS) {
            builder = builder.oauth_tags(tags.split([' ', ',']).filter(|t| !t.is_empty()).map(str::to_owned).collect());
        }

        if let Some(expiry) = string_setting(table, "key_expiry")? {
            builder = builder.key_expiry(parse_key_expiry("network.key_expiry", &expiry)?);
        }
        if let Some(expiry) = lookup(env::KEY_EXPIRY) {
            builder = builder.key_expiry(parse_key_expiry(env::KEY_EXPIRY, &expiry)?);
        }

        if let Some(url) = string_setting(table, "control_url")? {
            builder = builder.control_url(parse_control_url("network.control_url", &url)?);
        }
        if let Some(url) = lookup(env::CONTROL_URL) {
            builder = builder.control_url(parse_control_url(env::CONTROL_URL, &url)?);
        }

        if let Some(https) = bool_setting(table, "https")? {
            builder = builder.https(https);
        }
        if let Some(apply) = bool_setting(table, "apply_policy")? {
            builder = builder.apply_policy(apply);
        }
        if let Some(install) = bool_setting(table, "install")? {
            builder = builder.install(install);
        }
        if let Some(prefix) = string_setting(table, "hostname_prefix")? {
            builder = builder.hostname_prefix(prefix);
        }
        if let Some(timeout) = string_setting(table, "join_timeout")? {
            let parsed = parse_duration("network.join_timeout", &timeout)?;
            if !(MIN_JOIN_TIMEOUT..=MAX_JOIN_TIMEOUT).contains(&parsed) {
                return Err(Error::invalid("network.join_timeout", timeout, "use a duration from 5s to 15m"));
            }
            builder = builder.join_timeout(parsed);
        }

        if let Some(user) = string_setting(table, "policy_test_user")? {
            builder = builder.policy_test_user(user);
        }
        if let Some(user) = lookup(env::POLICY_TEST_USER) {
            builder = builder.policy_test_user(user);
        }
        builder.build()
    }

    /// Returns the URL of `path` under the API's `/api/v2/`.
    pub(crate) fn api_url(&self, path: &str) -> Result<Url> {
        let base = self.base_url.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/api/v2/{path}"))
            .map_err(|e| Error::invalid(env::BASE_URL, self.base_url.to_string(), format!("{e}; cannot build the API URL for {path}")))
    }
}

fn credentials_from_env(lookup: &impl Fn(&str) -> Option<String>) -> Result<ApiCredentials> {
    let api_key = lookup(env::API_KEY);
    let client_id = lookup(env::OAUTH_CLIENT_ID);
    let client_secret = lookup(env::OAUTH_CLIENT_SECRET);
    match (api_key, client_id, client_secret) {
        (_, Some(client_id), Some(client_secret)) => Ok(ApiCredentials::OAuth {
            client_id,
            client_secret: Secret::new(client_secret),
        }),
        (_, Some(_), None) => Err(Error::invalid(
            env::OAUTH_CLIENT_SECRET,
            "(not set)",
            format!("{} is set, so export the OAuth client's secret too", env::OAUTH_CLIENT_ID),
        )),
        (_, None, Some(_)) => Err(Error::invalid(
            env::OAUTH_CLIENT_ID,
            "(not set)",
            format!("{} is set, so export the OAuth client's id too", env::OAUTH_CLIENT_SECRET),
        )),
        (Some(key), None, None) => Ok(ApiCredentials::ApiKey(Secret::new(key))),
        (None, None, None) => Err(Error::invalid(
            env::API_KEY,
            "(not set)",
            format!(
                "the Tailscale network needs API credentials: export {} and {} (an OAuth client with the \
                 auth_keys, devices:core and policy_file scopes), or {} (an API access token)",
                env::OAUTH_CLIENT_ID,
                env::OAUTH_CLIENT_SECRET,
                env::API_KEY
            ),
        )),
    }
}

/// A builder for [`TailscaleConfig`]; [`build`](Self::build) validates every value.
#[derive(Debug, Clone)]
pub struct TailscaleConfigBuilder {
    credentials: Option<ApiCredentials>,
    base_url: Option<Url>,
    tailnet: String,
    tag: String,
    tag_owners: Vec<String>,
    oauth_tags: Vec<String>,
    key_expiry: Duration,
    control_url: Option<Url>,
    https: bool,
    hostname_prefix: String,
    join_timeout: Duration,
    policy_test_user: Option<String>,
    apply_policy: bool,
    install: bool,
}

impl Default for TailscaleConfigBuilder {
    fn default() -> Self {
        TailscaleConfigBuilder {
            credentials: None,
            base_url: None,
            tailnet: "-".to_owned(),
            tag: DEFAULT_TAG.to_owned(),
            tag_owners: vec![DEFAULT_TAG_OWNER.to_owned()],
            oauth_tags: Vec::new(),
            key_expiry: DEFAULT_KEY_EXPIRY,
            control_url: None,
            https: false,
            hostname_prefix: DEFAULT_HOSTNAME_PREFIX.to_owned(),
            join_timeout: DEFAULT_JOIN_TIMEOUT,
            policy_test_user: None,
            apply_policy: false,
            install: false,
        }
    }
}

impl TailscaleConfigBuilder {
    /// Sets the API credential.
    pub fn credentials(mut self, credentials: ApiCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Uses an API access token.
    pub fn api_key(self, key: impl Into<Secret>) -> Self {
        self.credentials(ApiCredentials::ApiKey(key.into()))
    }

    /// Uses an OAuth client.
    pub fn oauth_client(self, client_id: impl Into<String>, client_secret: impl Into<Secret>) -> Self {
        self.credentials(ApiCredentials::OAuth {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        })
    }

    /// Sets the API base URL (default [`DEFAULT_BASE_URL`]). A trailing `/api/v2`,
    /// as Tailscale's documentation writes the API's base, is dropped.
    pub fn base_url(mut self, url: Url) -> Self {
        self.base_url = Some(strip_api_path(url));
        self
    }

    /// Sets the tailnet (default `-`).
    pub fn tailnet(mut self, tailnet: impl Into<String>) -> Self {
        self.tailnet = tailnet.into();
        self
    }

    /// Sets the sandbox tag (default [`DEFAULT_TAG`]).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = tag.into();
        self
    }

    /// Sets the owners of the sandbox tag (default [`DEFAULT_TAG_OWNER`]).
    pub fn tag_owners(mut self, owners: Vec<String>) -> Self {
        self.tag_owners = owners;
        self
    }

    /// Sets the tags the OAuth client may mint, named in tag errors.
    pub fn oauth_tags(mut self, tags: Vec<String>) -> Self {
        self.oauth_tags = tags;
        self
    }

    /// Sets the auth key lifetime (default [`DEFAULT_KEY_EXPIRY`]).
    pub fn key_expiry(mut self, expiry: Duration) -> Self {
        self.key_expiry = expiry;
        self
    }

    /// Sets the control server passed as `--login-server`.
    pub fn control_url(mut self, url: Url) -> Self {
        self.control_url = Some(url);
        self
    }

    /// Turns HTTPS endpoints through `tailscale serve` on or off (default off).
    pub fn https(mut self, https: bool) -> Self {
        self.https = https;
        self
    }

    /// Sets the host name prefix (default [`DEFAULT_HOSTNAME_PREFIX`]).
    pub fn hostname_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.hostname_prefix = prefix.into();
        self
    }

    /// Sets the join timeout (default [`DEFAULT_JOIN_TIMEOUT`]).
    pub fn join_timeout(mut self, timeout: Duration) -> Self {
        self.join_timeout = timeout;
        self
    }

    /// Sets the member login used as the source of the policy file's tests.
    pub fn policy_test_user(mut self, user: impl Into<String>) -> Self {
        self.policy_test_user = Some(user.into());
        self
    }

    /// Lets `ensure_policy` apply Ken's policy section when it is missing.
    pub fn apply_policy(mut self, apply: bool) -> Self {
        self.apply_policy = apply;
        self
    }

    /// Makes launches add the Tailscale install lines to the sandbox image (default
    /// off).
    pub fn install(mut self, install: bool) -> Self {
        self.install = install;
        self
    }

    /// Validates the values and returns the configuration.
    pub fn build(self) -> Result<TailscaleConfig> {
        let credentials = self.credentials.ok_or_else(|| {
            Error::invalid(
                env::API_KEY,
                "(not set)",
                format!(
                    "no Tailscale API credentials were given; set {} and {}, or {}",
                    env::OAUTH_CLIENT_ID,
                    env::OAUTH_CLIENT_SECRET,
                    env::API_KEY
                ),
            )
        })?;
        check_credentials(&credentials)?;

        let base_url = match self.base_url {
            Some(url) => url,
            None => parse_url(env::BASE_URL, DEFAULT_BASE_URL)?,
        };
        if self.tailnet.trim().is_empty() || self.tailnet.contains(['/', '?', '#', ' ']) {
            return Err(Error::invalid(
                env::TAILNET,
                self.tailnet,
                "use the tailnet's name (for example example.com) or `-` for the credential's own tailnet",
            ));
        }
        check_tag(&self.tag, "KEN_TAILSCALE_TAG or network.tag")?;
        for tag in &self.oauth_tags {
            check_tag(tag, env::OAUTH_TAGS)?;
        }
        if self.tag_owners.is_empty() {
            return Err(Error::invalid(
                "network.tag_owner",
                "[]",
                "give at least one owner, for example \"autogroup:admin\" or the OAuth client's tag",
            ));
        }
        if !(MIN_KEY_EXPIRY..=MAX_KEY_EXPIRY).contains(&self.key_expiry) {
            return Err(Error::invalid(
                "KEN_TAILSCALE_KEY_EXPIRY or network.key_expiry",
                humantime::format_duration(self.key_expiry).to_string(),
                "use a duration from 1m to 24h; the key is used within seconds of being minted",
            ));
        }
        if !(MIN_JOIN_TIMEOUT..=MAX_JOIN_TIMEOUT).contains(&self.join_timeout) {
            return Err(Error::invalid(
                "network.join_timeout",
                humantime::format_duration(self.join_timeout).to_string(),
                "use a duration from 5s to 15m",
            ));
        }
        check_hostname_prefix(&self.hostname_prefix)?;
        if let Some(url) = &self.control_url {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::invalid(env::CONTROL_URL, url.to_string(), "use an http:// or https:// URL"));
            }
        }
        if let Some(user) = &self.policy_test_user {
            if user.is_empty() || user.contains(char::is_whitespace) {
                return Err(Error::invalid(
                    env::POLICY_TEST_USER,
                    user.clone(),
                    "use a member's login name, for example alice@example.com",
                ));
            }
        }

        Ok(TailscaleConfig {
            credentials,
            base_url,
            tailnet: self.tailnet,
            tag: self.tag,
            tag_owners: self.tag_owners,
            oauth_tags: self.oauth_tags,
            key_expiry: self.key_expiry,
            control_url: self.control_url,
            https: self.https,
            hostname_prefix: self.hostname_prefix,
            join_timeout: self.join_timeout,
            policy_test_user: self.policy_test_user,
            apply_policy: self.apply_policy,
            install: self.install,
        })
    }
}

fn check_credentials(credentials: &ApiCredentials) -> Result<()> {
    let printable = |value: &str| !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic());
    match credentials {
        ApiCredentials::ApiKey(key) if !printable(key.expose()) => Err(Error::invalid(
            env::API_KEY,
            "(redacted)",
            "the token is empty or contains spaces or control characters; paste the whole tskey-api-... token",
        )),
        ApiCredentials::OAuth { client_id, .. } if !printable(client_id) => Err(Error::invalid(
            env::OAUTH_CLIENT_ID,
            client_id.clone(),
            "the id is empty or contains spaces or control characters; copy it from the OAuth client's page",
        )),
        ApiCredentials::OAuth { client_secret, .. } if !printable(client_secret.expose()) => Err(Error::invalid(
            env::OAUTH_CLIENT_SECRET,
            "(redacted)",
            "the secret is empty or contains spaces or control characters; paste the whole tskey-client-... secret",
        )),
        _ => Ok(()),
    }
}

/// Checks a tag as Tailscale accepts it: `tag:` then a letter, then letters, digits
/// and `-`.
pub(crate) fn check_tag(tag: &str, what: &str) -> Result<()> {
    let name = tag.strip_prefix("tag:").unwrap_or("");
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            tag,
            "write a tag as tag:NAME, where NAME starts with a letter and contains letters, digits and '-', for example tag:ken-sandbox",
        ))
    }
}

fn check_hostname_prefix(prefix: &str) -> Result<()> {
    let valid = prefix.len() <= MAX_HOSTNAME_PREFIX_LEN
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "network.hostname_prefix",
            prefix,
            "use up to 11 lowercase letters, digits and '-', starting with a letter, for example \"ken-\"",
        ))
    }
}

/// Drops a trailing `/api/v2` (or `/api/v2/`) from an API base URL, since Ken adds
/// it to every request path.
fn strip_api_path(mut url: Url) -> Url {
    let path = url.path().trim_end_matches('/');
    if let Some(base) = path.strip_suffix("/api/v2") {
        let base = base.to_owned();
        tracing::debug!(provider = "tailscale", url = %url, "dropping the trailing /api/v2 of the API base URL; Ken adds it to each request");
        url.set_path(if base.is_empty() { "/" } else { &base });
    }
    url
}

/// Builds the error for an unknown key of the `[network]` table, with the closest
/// known key as a suggestion.
fn unknown_key(key: &str) -> Error {
    let closest = SETTINGS_KEYS
        .iter()
        .map(|known| (edit_distance(key, known), *known))
        .min()
        .filter(|(distance, known)| *distance <= known.len() / 3 + 1);
    let suggestion = match closest {
        Some((_, known)) => format!("did you mean \"{known}\"? "),
        None => String::new(),
    };
    Error::invalid(
        "[network] key",
        key,
        format!(
            "unknown key for kind = \"tailscale\"; {suggestion}The known keys are {}",
            SETTINGS_KEYS.join(", ")
        ),
    )
}

/// Returns the Levenshtein distance between `a` and `b`: the fewest single-character
/// insertions, deletions and substitutions that turn one into the other.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// Parses a key expiry and checks its range, naming `what` and the value as written.
fn parse_key_expiry(what: &str, value: &str) -> Result<Duration> {
    let expiry = parse_duration(what, value)?;
    if !(MIN_KEY_EXPIRY..=MAX_KEY_EXPIRY).contains(&expiry) {
        return Err(Error::invalid(
            what,
            value,
            "use a duration from 1m to 24h; the key is used within seconds of being minted",
        ));
    }
    Ok(expiry)
}

/// Parses the control server's URL, with a control-server example in the error.
fn parse_control_url(what: &str, value: &str) -> Result<Url> {
    parse_url_like(what, value, "https://headscale.example.com")
}

fn parse_url(what: &str, value: &str) -> Result<Url> {
    parse_url_like(what, value, "https://api.tailscale.com")
}

fn parse_url_like(what: &str, value: &str, example: &str) -> Result<Url> {
    let url = Url::parse(value).map_err(|e| Error::invalid(what, value, format!("{e}; write a URL such as {example}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Error::invalid(what, value, "use an http:// or https:// URL with a host"));
    }
    Ok(url)
}

fn parse_duration(what: &str, value: &str) -> Result<Duration> {
    humantime::parse_duration(value.trim())
        .map_err(|e| Error::invalid(what, value, format!("{e}; write a duration such as \"10m\" or \"90s\"")))
}

fn string_setting(table: &toml::Table, key: &str) -> Result<Option<String>> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(value)) => Ok(Some(value.clone())),
        Some(other) => Err(Error::invalid(format!("network.{key}"), value_text(other), "use a string in quotes")),
    }
}

fn bool_setting(table: &toml::Table, key: &str) -> Result<Option<bool>> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::Boolean(value)) => Ok(Some(*value)),
        Some(other) => Err(Error::invalid(format!("network.{key}"), value_text(other), "use true or false, without quotes")),
    }
}

/// Returns a TOML value as the user wrote it: a string's text without quotes and
/// escapes, any other value in TOML syntax.
fn value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn string_list(value: &toml::Value, what: &str) -> Result<Vec<String>> {
    match value {
        toml::Value::String(one) => Ok(vec![one.clone()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Error::invalid(what, item.to_string(), "use a string or an array of strings"))
            })
            .collect(),
        other => Err(Error::invalid(what, other.to_string(), "use a string or an array of strings")),
    }
}

#[cfg(test)]
mod tests;
