//! The `[harness]` settings of `kind = "opencode"` in `ken.toml`.

use std::time::Duration;

use ken_core::{Error, Result};

/// The OpenCode release the harness is built and tested against. Its HTTP API
/// changes between releases, so the image installs exactly this one by default.
pub const OPENCODE_VERSION: &str = "1.18.33";

/// The port `opencode serve` listens on inside the sandbox unless `port` is set.
pub const DEFAULT_PORT: u16 = 4096;

/// The user name of the server's HTTP Basic auth.
pub const DEFAULT_USERNAME: &str = "opencode";

/// How long the server may take to print its "listening" line unless
/// `startup_timeout` is set.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// An OpenAI-compatible model server, declared in `[harness.provider]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSettings {
    /// The provider id, the part before `/` in `model`.
    pub id: String,
    /// A display name.
    pub name: String,
    /// The API's base URL, ending in `/v1` for most servers.
    pub base_url: String,
    /// The host environment variable that contains the API key. It must be listed in the
    /// manifest's `secrets`, so it reaches the sandbox as a secret.
    pub api_key_env: Option<String>,
    /// The context window of the model, in tokens.
    pub context_limit: u64,
    /// The maximum output of the model, in tokens.
    pub output_limit: u64,
}

/// The validated `[harness]` settings of the OpenCode harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCodeSettings {
    /// The model as `provider/model`, for example `anthropic/claude-sonnet-4-5`.
    pub model: String,
    /// An OpenAI-compatible provider to add to OpenCode's built-in ones.
    pub provider: Option<ProviderSettings>,
    /// The port the server listens on inside the sandbox.
    pub port: u16,
    /// The `opencode-ai` npm version that [`image_lines`](crate::image_lines)
    /// installs.
    pub version: String,
    /// How long the server may take to start.
    pub startup_timeout: Duration,
    /// Whether OpenCode may download model metadata from models.dev at start.
    pub models_fetch: bool,
}

impl Default for OpenCodeSettings {
    fn default() -> Self {
        OpenCodeSettings {
            model: String::new(),
            provider: None,
            port: DEFAULT_PORT,
            version: OPENCODE_VERSION.to_owned(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            models_fetch: false,
        }
    }
}

const KEYS: [&str; 6] = ["model", "provider", "port", "version", "startup_timeout", "models_fetch"];
const PROVIDER_KEYS: [&str; 6] = ["id", "name", "base_url", "api_key_env", "context_limit", "output_limit"];

impl OpenCodeSettings {
    /// Validates the keys of a `[harness]` table (without `kind`).
    ///
    /// Errors name the key as `harness.KEY` and describe a valid value.
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        reject_unknown(table, &KEYS, "harness")?;
        let mut settings = OpenCodeSettings {
            model: required_string(table, "model", "harness")?,
            ..OpenCodeSettings::default()
        };
        let Some((model_provider, model_name)) = settings.model.split_once('/') else {
            return Err(invalid(
                "harness.model",
                &settings.model,
                "write it as provider/model, for example \"anthropic/claude-sonnet-4-5\"",
            ));
        };
        if model_provider.is_empty() || model_name.is_empty() {
            return Err(invalid(
                "harness.model",
                &settings.model,
                "both the provider and the model must be non-empty, as in \"anthropic/claude-sonnet-4-5\"",
            ));
        }
        if let Some(value) = table.get("port") {
            settings.port = match value.as_integer() {
                Some(port) if (1..=65535).contains(&port) => port as u16,
                _ => return Err(invalid("harness.port", &value.to_string(), "use a port number from 1 to 65535")),
            };
        }
        if let Some(version) = optional_string(table, "version", "harness")? {
            if version.is_empty() || !version.chars().all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c)) {
                return Err(invalid("harness.version", &version, "use an npm version of opencode-ai such as \"1.18.33\""));
            }
            settings.version = version;
        }
        if let Some(timeout) = optional_string(table, "startup_timeout", "harness")? {
            settings.startup_timeout = match humantime::parse_duration(&timeout) {
                Ok(duration) if !duration.is_zero() => duration,
                _ => return Err(invalid("harness.startup_timeout", &timeout, "write a duration such as \"90s\" or \"3m\"")),
            };
        }
        if let Some(value) = table.get("models_fetch") {
            settings.models_fetch = value
                .as_bool()
                .ok_or_else(|| invalid("harness.models_fetch", &value.to_string(), "use true or false"))?;
        }
        if let Some(value) = table.get("provider") {
            let provider_table = value.as_table().ok_or_else(|| {
                invalid("harness.provider", &value.to_string(), "use a table: [harness.provider] with id, base_url and api_key_env")
            })?;
            let provider = provider_settings(provider_table)?;
            if provider.id != model_provider {
                return Err(invalid(
                    "harness.model",
                    &settings.model,
                    format!(
                        "harness.provider declares provider {:?}, so the model must be \"{}/MODEL\"",
                        provider.id, provider.id
                    ),
                ));
            }
            settings.provider = Some(provider);
        }
        Ok(settings)
    }

    /// Returns the model's provider id, the part of `model` before `/`.
    pub fn provider_id(&self) -> &str {
        self.model.split_once('/').map_or(self.model.as_str(), |(provider, _)| provider)
    }

    /// Returns the model id within its provider, the part of `model` after `/`.
    pub fn model_id(&self) -> &str {
        self.model.split_once('/').map_or("", |(_, model)| model)
    }
}

fn provider_settings(table: &toml::Table) -> Result<ProviderSettings> {
    reject_unknown(table, &PROVIDER_KEYS, "harness.provider")?;
    let id = required_string(table, "id", "harness.provider")?;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(invalid("harness.provider.id", &id, "use letters, digits, '-', '_' and '.' only"));
    }
    let base_url = required_string(table, "base_url", "harness.provider")?;
    let parsed = url::Url::parse(&base_url)
        .map_err(|e| invalid("harness.provider.base_url", &base_url, format!("{e}; write a URL such as \"https://api.example.com/v1\"")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("harness.provider.base_url", &base_url, "use an http:// or https:// URL"));
    }
    let api_key_env = optional_string(table, "api_key_env", "harness.provider")?;
    if let Some(name) = &api_key_env {
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(invalid(
                "harness.provider.api_key_env",
                name,
                "use the name of an environment variable, such as \"MODEL_API_KEY\"",
            ));
        }
    }
    Ok(ProviderSettings {
        name: optional_string(table, "name", "harness.provider")?.unwrap_or_else(|| id.clone()),
        id,
        base_url,
        api_key_env,
        context_limit: token_limit(table, "context_limit", 128_000)?,
        output_limit: token_limit(table, "output_limit", 8_192)?,
    })
}

fn token_limit(table: &toml::Table, key: &str, default: u64) -> Result<u64> {
    match table.get(key) {
        None => Ok(default),
        Some(value) => match value.as_integer() {
            Some(limit) if limit > 0 => Ok(limit as u64),
            _ => Err(invalid(&format!("harness.provider.{key}"), &value.to_string(), "use a positive number of tokens")),
        },
    }
}

fn reject_unknown(table: &toml::Table, known: &[&str], prefix: &str) -> Result<()> {
    for key in table.keys() {
        if key != "kind" && !known.contains(&key.as_str()) {
            return Err(invalid(
                &format!("{prefix}.{key}"),
                key,
                format!("unknown key; the known keys are {}", known.join(", ")),
            ));
        }
    }
    Ok(())
}

fn required_string(table: &toml::Table, key: &str, prefix: &str) -> Result<String> {
    optional_string(table, key, prefix)?
        .ok_or_else(|| invalid(&format!("{prefix}.{key}"), "", "missing; it is required"))
}

fn optional_string(table: &toml::Table, key: &str, prefix: &str) -> Result<Option<String>> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(value)) => Ok(Some(value.clone())),
        Some(other) => Err(invalid(&format!("{prefix}.{key}"), &other.to_string(), "use a string")),
    }
}

fn invalid(what: &str, value: &str, reason: impl Into<String>) -> Error {
    Error::invalid(what, value, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn minimal_settings_use_defaults() {
        let settings = OpenCodeSettings::from_table(&table(r#"kind = "opencode"
model = "anthropic/claude-sonnet-4-5""#))
        .unwrap();
        assert_eq!(settings.provider_id(), "anthropic");
        assert_eq!(settings.model_id(), "claude-sonnet-4-5");
        assert_eq!(settings.port, DEFAULT_PORT);
        assert_eq!(settings.version, OPENCODE_VERSION);
        assert!(settings.provider.is_none());
    }

    #[test]
    fn provider_block_is_parsed() {
        let settings = OpenCodeSettings::from_table(&table(
            r#"model = "local/qwen"
port = 4100
[provider]
id = "local"
base_url = "http://127.0.0.1:8000/v1"
api_key_env = "LOCAL_KEY""#,
        ))
        .unwrap();
        let provider = settings.provider.unwrap();
        assert_eq!(provider.name, "local");
        assert_eq!(provider.api_key_env.as_deref(), Some("LOCAL_KEY"));
        assert_eq!(settings.port, 4100);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("", "harness.model"),
            (r#"model = "no-slash""#, "harness.model"),
            ("model = \"a/b\"\nport = 70000", "harness.port"),
            ("model = \"a/b\"\ncolour = 1", "harness.colour"),
            ("model = \"a/b\"\n[provider]\nid = \"c\"\nbase_url = \"http://x/v1\"", "harness.model"),
            ("model = \"a/b\"\n[provider]\nid = \"a\"\nbase_url = \"ftp://x\"", "harness.provider.base_url"),
            ("model = \"a/b\"\n[provider]\nid = \"a\"\nbase_url = \"http://x\"\napi_key_env = \"A-B\"", "harness.provider.api_key_env"),
            ("model = \"a/b\"\nstartup_timeout = \"soon\"", "harness.startup_timeout"),
        ];
        for (text, key) in cases {
            let error = OpenCodeSettings::from_table(&table(text)).unwrap_err().to_string();
            assert!(error.contains(key), "{text:?} gave {error:?}, expected it to name {key}");
        }
    }
}
