//! Sources of Modal's credentials and settings for the provider.
//!
//! Like Modal's own SDKs, settings come from environment variables first and from a
//! profile of the TOML file `~/.modal.toml` (or `MODAL_CONFIG_PATH`) second. The
//! profile is the one named by `MODAL_PROFILE`, else the table with `active = true`.
//! Ken's own option `KEN_MODAL_PLAIN_PORTS=1` opens ports as plain TCP tunnels.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ken_core::{Error, Result, Secret};
use url::Url;

/// Environment variable with the token id (`ak-...`).
pub const TOKEN_ID_VAR: &str = "MODAL_TOKEN_ID";
/// Environment variable with the token secret (`as-...`).
pub const TOKEN_SECRET_VAR: &str = "MODAL_TOKEN_SECRET";
/// Environment variable with the API server URL.
pub const SERVER_URL_VAR: &str = "MODAL_SERVER_URL";
/// Environment variable with the Modal environment name.
pub const ENVIRONMENT_VAR: &str = "MODAL_ENVIRONMENT";
/// Environment variable naming the profile of the config file to use.
pub const PROFILE_VAR: &str = "MODAL_PROFILE";
/// Environment variable with the path of the config file.
pub const CONFIG_PATH_VAR: &str = "MODAL_CONFIG_PATH";
/// Ken's own environment variable that opens ports as plain TCP tunnels when
/// `1` or `true` (see [`ModalConfig::plain_ports`]).
pub const PLAIN_PORTS_VAR: &str = "KEN_MODAL_PLAIN_PORTS";

/// The API server used when neither `MODAL_SERVER_URL` nor the profile sets one.
pub const DEFAULT_SERVER_URL: &str = "https://api.modal.com:443";
/// Name of the Modal app every Ken sandbox belongs to.
pub const DEFAULT_APP_NAME: &str = "ken";
/// Image builder version sent with every image build.
pub const DEFAULT_BUILDER_VERSION: &str = "2024.10";

/// Settings of a [`ModalProvider`](crate::ModalProvider).
///
/// Build one with [`ModalConfig::from_env`], or with [`ModalConfig::new`] for
/// explicit credentials. The token secret is a [`Secret`] and never printed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ModalConfig {
    /// The token id, sent as `x-modal-token-id`.
    pub token_id: String,
    /// The token secret, sent as `x-modal-token-secret`.
    pub token_secret: Secret,
    /// The API server; `https` uses TLS, `http` is plaintext (local testing only).
    pub server_url: Url,
    /// The Modal environment; `None` is the workspace's default environment.
    pub environment: Option<String>,
    /// The Modal app sandboxes are created in (default [`DEFAULT_APP_NAME`]).
    pub app_name: String,
    /// The image builder version (default [`DEFAULT_BUILDER_VERSION`]).
    pub builder_version: String,
    /// Stop a sandbox after this long without activity; `None` keeps it until its
    /// time to live passes.
    pub idle_timeout: Option<Duration>,
    /// Open ports as plain TCP tunnels (`http://host:port`) instead of TLS tunnels
    /// (`https://host`). Plain tunnels are reachable by anyone who learns the port.
    pub plain_ports: bool,
    /// Source of the settings, for error messages. It never contains a secret.
    pub source: String,
    /// Source of the token id and secret, for error messages.
    pub(crate) token_origin: String,
    /// Source of [`server_url`](Self::server_url), for error messages.
    pub(crate) server_url_origin: String,
    /// Source of [`environment`](Self::environment), for error messages.
    pub(crate) environment_origin: String,
}

impl ModalConfig {
    /// Creates a configuration for the default server and environment.
    pub fn new(token_id: impl Into<String>, token_secret: impl Into<Secret>) -> Self {
        ModalConfig {
            token_id: token_id.into(),
            token_secret: token_secret.into(),
            server_url: default_server_url(),
            environment: None,
            app_name: DEFAULT_APP_NAME.to_owned(),
            builder_version: DEFAULT_BUILDER_VERSION.to_owned(),
            idle_timeout: None,
            plain_ports: false,
            source: "explicit settings".to_owned(),
            token_origin: "the explicit settings".to_owned(),
            server_url_origin: "the default server URL".to_owned(),
            environment_origin: "the explicit settings".to_owned(),
        }
    }

    /// Reads the settings from the environment and the config file; see the
    /// module documentation for the order.
    ///
    /// Fails when the token id or secret is missing, naming the setting and the
    /// places it was looked for, or when the file or a URL is invalid.
    pub fn from_env() -> Result<Self> {
        let env: HashMap<String, String> = [
            TOKEN_ID_VAR,
            TOKEN_SECRET_VAR,
            SERVER_URL_VAR,
            ENVIRONMENT_VAR,
            PROFILE_VAR,
            CONFIG_PATH_VAR,
            PLAIN_PORTS_VAR,
        ]
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| ((*name).to_owned(), value)))
        .collect();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::resolve(&env, home.as_deref())
    }

    /// Resolves the settings from `env` (variable name to value) and the config
    /// file under `home`. [`from_env`](Self::from_env) calls it with the process's
    /// environment.
    pub fn resolve(env: &HashMap<String, String>, home: Option<&Path>) -> Result<Self> {
        let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let path = match get(CONFIG_PATH_VAR) {
            Some(path) => Some(PathBuf::from(path)),
            None => home.map(|home| home.join(".modal.toml")),
        };
        let file = match &path {
            Some(path) => ConfigFile::read(path)?,
            None => None,
        };
        let profile = match &file {
            Some(file) => file.profile(get(PROFILE_VAR))?,
            None => match get(PROFILE_VAR) {
                Some(name) => {
                    return Err(Error::invalid(
                        "Modal profile",
                        name,
                        format!(
                            "{PROFILE_VAR} names a profile, but the config file {} does not exist; \
                             create it with `modal token set` or unset {PROFILE_VAR}",
                            describe_path(path.as_deref())
                        ),
                    ))
                }
                None => None,
            },
        };
        let from_profile = |key: &str| profile.as_ref().and_then(|p| p.values.get(key).cloned());
        let looked_in = match (&path, &file, &profile) {
            (Some(path), _, Some(profile)) => format!("profile [{}] of {}", profile.name, path.display()),
            (Some(path), Some(_), None) => format!("{} (no profile has active = true)", path.display()),
            (Some(path), None, None) => format!("{} (file not found)", path.display()),
            (None, _, _) => "no config file (HOME is unset)".to_owned(),
        };
        let missing = |var: &str, key: &str| {
            let reason = match (&path, &file) {
                (Some(path), None) => format!(
                    "{var} is not set and the config file {} was not found{}; set {TOKEN_ID_VAR} and \
                     {TOKEN_SECRET_VAR}, or create the file with `modal token new`",
                    path.display(),
                    if get(CONFIG_PATH_VAR).is_some() { format!(" (it is named by {CONFIG_PATH_VAR})") } else { String::new() },
                ),
                _ => format!(
                    "it is not set; set {var} or `{key}` in the active profile of the config file \
                     (looked in the environment and in {looked_in}); create a token with `modal token new`"
                ),
            };
            Error::invalid("Modal setting", key, reason)
        };
        // Describes where a value came from: the variable, or the key of the profile.
        let origin = |var: &str, key: &str| match (get(var), &profile, &path) {
            (Some(_), _, _) => var.to_owned(),
            (None, Some(profile), Some(path)) => {
                format!("`{key}` of profile [{}] in {}", profile.name, path.display())
            }
            _ => var.to_owned(),
        };

        let token_id = get(TOKEN_ID_VAR)
            .map(str::to_owned)
            .or_else(|| from_profile("token_id"))
            .ok_or_else(|| missing(TOKEN_ID_VAR, "token_id"))?;
        let token_secret = get(TOKEN_SECRET_VAR)
            .map(str::to_owned)
            .or_else(|| from_profile("token_secret"))
            .ok_or_else(|| missing(TOKEN_SECRET_VAR, "token_secret"))?;
        let token_origin = match (get(TOKEN_ID_VAR), get(TOKEN_SECRET_VAR), &profile, &path) {
            (Some(_), Some(_), _, _) => format!("{TOKEN_ID_VAR} and {TOKEN_SECRET_VAR}"),
            (None, None, Some(profile), Some(path)) => {
                format!("profile [{}] of {}", profile.name, path.display())
            }
            _ => format!(
                "{} and {}",
                origin(TOKEN_ID_VAR, "token_id"),
                origin(TOKEN_SECRET_VAR, "token_secret")
            ),
        };
        let server_url_text = get(SERVER_URL_VAR).map(str::to_owned).or_else(|| from_profile("server_url"));
        let (server_url, server_url_origin) = match server_url_text {
            Some(text) => (parse_server_url(&text)?, origin(SERVER_URL_VAR, "server_url")),
            None => (default_server_url(), "the default server URL".to_owned()),
        };
        let environment = get(ENVIRONMENT_VAR)
            .map(str::to_owned)
            .or_else(|| from_profile("environment"))
            .filter(|e| !e.is_empty());
        let environment_origin = origin(ENVIRONMENT_VAR, "environment");

        let plain_ports = match get(PLAIN_PORTS_VAR).map(str::to_ascii_lowercase).as_deref() {
            None | Some("0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(_) => {
                return Err(Error::invalid(
                    PLAIN_PORTS_VAR,
                    get(PLAIN_PORTS_VAR).unwrap_or_default(),
                    "use 1 (plain TCP tunnels) or 0 (TLS tunnels, the default)",
                ))
            }
        };

        let mut config = ModalConfig::new(token_id, token_secret);
        config.server_url = server_url;
        config.environment = environment;
        config.plain_ports = plain_ports;
        config.source = format!("the environment and {looked_in}");
        config.token_origin = token_origin;
        config.server_url_origin = server_url_origin;
        config.environment_origin = environment_origin;
        Ok(config)
    }

    /// Sets [`ModalConfig::server_url`]; fails unless it is an `http` or `https` URL.
    pub fn with_server_url(mut self, url: &str) -> Result<Self> {
        self.server_url = parse_server_url(url)?;
        self.server_url_origin = "the explicit settings".to_owned();
        Ok(self)
    }

    /// Sets [`ModalConfig::environment`].
    pub fn with_environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self.environment_origin = "the explicit settings".to_owned();
        self
    }

    /// Sets [`ModalConfig::app_name`].
    pub fn with_app_name(mut self, name: impl Into<String>) -> Self {
        self.app_name = name.into();
        self
    }

    /// Sets [`ModalConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`ModalConfig::plain_ports`].
    pub fn with_plain_ports(mut self, plain: bool) -> Self {
        self.plain_ports = plain;
        self
    }

    /// Returns the environment name as sent on the wire: empty for the default.
    pub(crate) fn environment_name(&self) -> String {
        self.environment.clone().unwrap_or_default()
    }
}

fn default_server_url() -> Url {
    // DEFAULT_SERVER_URL is a valid URL literal, so this cannot panic.
    Url::parse(DEFAULT_SERVER_URL).expect("DEFAULT_SERVER_URL is a valid URL")
}

/// Parses a server URL, accepting only `http` and `https`.
fn parse_server_url(text: &str) -> Result<Url> {
    let url = Url::parse(text).map_err(|e| {
        Error::invalid(
            "Modal server URL",
            text,
            format!("{e}; use a URL such as {DEFAULT_SERVER_URL}"),
        )
    })?;
    match url.scheme() {
        "https" | "http" if url.host_str().is_some() => Ok(url),
        _ => Err(Error::invalid(
            "Modal server URL",
            text,
            format!("use an https:// URL such as {DEFAULT_SERVER_URL} (http:// only for a local test server)"),
        )),
    }
}

fn describe_path(path: Option<&Path>) -> String {
    path.map_or_else(|| "(HOME is unset)".to_owned(), |p| p.display().to_string())
}

/// The profile keys whose values must be strings.
const STRING_KEYS: [&str; 4] = ["token_id", "token_secret", "server_url", "environment"];

/// One table of the config file.
struct Profile {
    name: String,
    values: HashMap<String, String>,
}

/// The parsed config file: one table per profile.
struct ConfigFile {
    path: PathBuf,
    profiles: Vec<(String, toml::Table)>,
}

impl ConfigFile {
    /// Reads the file; a missing file is `None`.
    fn read(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("failed to read the Modal config file {}", path.display()), e)),
        };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // The parser's message quotes the offending line, which may contain a
            // token secret, so only its position is kept.
            let position = e
                .span()
                .map(|span| format!(" at byte {}", span.start))
                .unwrap_or_default();
            Error::invalid(
                "Modal config file",
                path.display().to_string(),
                format!("it is not valid TOML{position}; fix it or point {CONFIG_PATH_VAR} at another file"),
            )
        })?;
        let profiles = table
            .into_iter()
            .filter_map(|(name, value)| match value {
                toml::Value::Table(table) => Some((name, table)),
                _ => None,
            })
            .collect();
        Ok(Some(ConfigFile {
            path: path.to_owned(),
            profiles,
        }))
    }

    /// Returns the profile named `requested`, else the active one.
    fn profile(&self, requested: Option<&str>) -> Result<Option<Profile>> {
        let chosen = match requested {
            Some(name) => match self.profiles.iter().find(|(n, _)| n == name) {
                Some(found) => Some(found),
                None => {
                    let names: Vec<&str> = self.profiles.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(Error::invalid(
                        "Modal profile",
                        name,
                        format!(
                            "{PROFILE_VAR} names it, but {} has only the profiles {names:?}",
                            self.path.display()
                        ),
                    ));
                }
            },
            None => {
                let active: Vec<&(String, toml::Table)> = self
                    .profiles
                    .iter()
                    .filter(|(_, table)| table.get("active").and_then(toml::Value::as_bool) == Some(true))
                    .collect();
                if active.len() > 1 {
                    let names: Vec<String> = active.iter().map(|(n, _)| format!("[{n}]")).collect();
                    return Err(Error::invalid(
                        "Modal config file",
                        self.path.display().to_string(),
                        format!(
                            "the profiles {} all have active = true; keep it on one of them, \
                             or choose one with {PROFILE_VAR}",
                            names.join(", ")
                        ),
                    ));
                }
                active.first().copied()
            }
        };
        let Some((name, table)) = chosen else {
            return Ok(None);
        };
        let mut values = HashMap::new();
        for (key, value) in table {
            match value {
                toml::Value::String(text) => {
                    values.insert(key.clone(), text.clone());
                }
                // Only the string keys are read; a wrong type is reported without the
                // value, which may be a secret.
                _ if STRING_KEYS.contains(&key.as_str()) => {
                    return Err(Error::invalid(
                        "Modal config file",
                        self.path.display().to_string(),
                        format!(
                            "`{key}` of profile [{name}] must be a string, but its TOML type is {}; \
                             quote it, as in {key} = \"...\"",
                            value.type_str()
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(Some(Profile {
            name: name.clone(),
            values,
        }))
    }
}

impl fmt::Display for ModalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Modal at {} (environment {}, app {})",
            self.server_url,
            self.environment.as_deref().unwrap_or("default"),
            self.app_name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn home_with(file: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".modal.toml"), file).unwrap();
        dir
    }

    const FILE: &str = r#"
[work]
token_id = "ak-work"
token_secret = "as-work-secret"
environment = "staging"

[personal]
token_id = "ak-personal"
token_secret = "as-personal-secret"
server_url = "http://127.0.0.1:9"
active = true
"#;

    #[test]
    fn env_only() {
        let config = ModalConfig::resolve(
            &env(&[(TOKEN_ID_VAR, "ak-1"), (TOKEN_SECRET_VAR, "as-1"), (ENVIRONMENT_VAR, "dev")]),
            None,
        )
        .unwrap();
        assert_eq!(config.token_id, "ak-1");
        assert_eq!(config.token_secret.expose(), "as-1");
        assert_eq!(config.server_url.as_str(), "https://api.modal.com/");
        assert_eq!(config.environment.as_deref(), Some("dev"));
        assert_eq!(config.app_name, DEFAULT_APP_NAME);
    }

    #[test]
    fn plain_ports_option() {
        let base = [(TOKEN_ID_VAR, "ak-1"), (TOKEN_SECRET_VAR, "as-1")];
        let resolve = |value: &str| {
            let mut pairs = base.to_vec();
            pairs.push((PLAIN_PORTS_VAR, value));
            ModalConfig::resolve(&env(&pairs), None)
        };
        assert!(!ModalConfig::resolve(&env(&base), None).unwrap().plain_ports);
        assert!(resolve("1").unwrap().plain_ports);
        assert!(resolve("TRUE").unwrap().plain_ports);
        assert!(!resolve("0").unwrap().plain_ports);
        let error = resolve("maybe").unwrap_err().to_string();
        assert!(error.contains(PLAIN_PORTS_VAR), "{error}");
        assert!(error.contains("maybe"), "{error}");
    }

    #[test]
    fn active_profile_is_used() {
        let home = home_with(FILE);
        let config = ModalConfig::resolve(&env(&[]), Some(home.path())).unwrap();
        assert_eq!(config.token_id, "ak-personal");
        assert_eq!(config.server_url.as_str(), "http://127.0.0.1:9/");
        assert!(config.source.contains("[personal]"));
    }

    #[test]
    fn profile_variable_wins_over_active() {
        let home = home_with(FILE);
        let config = ModalConfig::resolve(&env(&[(PROFILE_VAR, "work")]), Some(home.path())).unwrap();
        assert_eq!(config.token_id, "ak-work");
        assert_eq!(config.environment.as_deref(), Some("staging"));
    }

    #[test]
    fn env_wins_over_file() {
        let home = home_with(FILE);
        let config = ModalConfig::resolve(
            &env(&[(TOKEN_ID_VAR, "ak-env"), (SERVER_URL_VAR, "https://modal.example:8443")]),
            Some(home.path()),
        )
        .unwrap();
        assert_eq!(config.token_id, "ak-env");
        assert_eq!(config.token_secret.expose(), "as-personal-secret");
        assert_eq!(config.server_url.as_str(), "https://modal.example:8443/");
    }

    #[test]
    fn config_path_variable_points_elsewhere() {
        let dir = home_with(FILE);
        let path = dir.path().join(".modal.toml");
        let config = ModalConfig::resolve(
            &env(&[(CONFIG_PATH_VAR, path.to_str().unwrap()), (PROFILE_VAR, "work")]),
            None,
        )
        .unwrap();
        assert_eq!(config.token_id, "ak-work");
    }

    #[test]
    fn missing_secret_names_setting_and_places() {
        let home = tempfile::tempdir().unwrap();
        let error = ModalConfig::resolve(&env(&[(TOKEN_ID_VAR, "ak-1")]), Some(home.path())).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(TOKEN_SECRET_VAR), "{text}");
        assert!(text.contains("token_secret"), "{text}");
        assert!(text.contains(".modal.toml"), "{text}");
    }

    #[test]
    fn unknown_profile_lists_the_others() {
        let home = home_with(FILE);
        let error = ModalConfig::resolve(&env(&[(PROFILE_VAR, "nope")]), Some(home.path())).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("nope"), "{text}");
        assert!(text.contains("work"), "{text}");
        assert!(text.contains("personal"), "{text}");
    }

    #[test]
    fn bad_scheme_is_rejected() {
        let error = ModalConfig::resolve(
            &env(&[(TOKEN_ID_VAR, "a"), (TOKEN_SECRET_VAR, "b"), (SERVER_URL_VAR, "ftp://x")]),
            None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("ftp://x"));
    }

    #[test]
    fn invalid_file_error_hides_its_contents() {
        let home = home_with("[p]\ntoken_secret = \"as-hidden\nbroken");
        let error = ModalConfig::resolve(&env(&[]), Some(home.path())).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("not valid TOML"), "{text}");
        assert!(!text.contains("as-hidden"), "{text}");
    }

    #[test]
    fn missing_file_is_named_as_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nowhere.toml");
        let error = ModalConfig::resolve(&env(&[(CONFIG_PATH_VAR, path.to_str().unwrap())]), None).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("nowhere.toml"), "{text}");
        assert!(text.contains("was not found"), "{text}");
        assert!(text.contains(CONFIG_PATH_VAR), "{text}");
        assert!(text.contains(TOKEN_SECRET_VAR), "{text}");
        assert!(!text.contains("no active profile"), "{text}");
        let home = tempfile::tempdir().unwrap();
        let text = ModalConfig::resolve(&env(&[]), Some(home.path())).unwrap_err().to_string();
        assert!(text.contains(".modal.toml was not found"), "{text}");
    }

    #[test]
    fn number_token_id_must_be_a_string() {
        let home = home_with("[p]\ntoken_id = 5\ntoken_secret = \"as-x\"\nactive = true\n");
        let text = ModalConfig::resolve(&env(&[]), Some(home.path())).unwrap_err().to_string();
        assert!(text.contains("`token_id` of profile [p]"), "{text}");
        assert!(text.contains("must be a string"), "{text}");
    }

    #[test]
    fn two_active_profiles_are_rejected() {
        let home = home_with("[a]\ntoken_id = \"ak-a\"\nactive = true\n[b]\ntoken_id = \"ak-b\"\nactive = true\n");
        let text = ModalConfig::resolve(&env(&[]), Some(home.path())).unwrap_err().to_string();
        assert!(text.contains("[a]"), "{text}");
        assert!(text.contains("[b]"), "{text}");
        assert!(text.contains("active = true"), "{text}");
    }

    #[test]
    fn origins_name_the_variable_or_the_profile() {
        let home = home_with(FILE);
        let config = ModalConfig::resolve(&env(&[(ENVIRONMENT_VAR, "dev")]), Some(home.path())).unwrap();
        assert!(config.token_origin.starts_with("profile [personal] of "), "{}", config.token_origin);
        assert!(config.server_url_origin.starts_with("`server_url` of profile [personal]"));
        assert_eq!(config.environment_origin, ENVIRONMENT_VAR);
        let config = ModalConfig::resolve(&env(&[(TOKEN_ID_VAR, "a"), (TOKEN_SECRET_VAR, "b")]), None).unwrap();
        assert_eq!(config.token_origin, "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET");
        assert_eq!(config.server_url_origin, "the default server URL");
    }

    #[test]
    fn debug_hides_the_secret() {
        let config = ModalConfig::new("ak-1", "as-very-secret");
        let printed = format!("{config:?} {config}");
        assert!(!printed.contains("as-very-secret"), "{printed}");
    }
}
