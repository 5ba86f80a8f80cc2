//! The OpenCode configuration file the harness writes into the sandbox.

use serde_json::{json, Value};

use crate::settings::OpenCodeSettings;

/// Returns the OpenCode configuration for `settings`.
///
/// Every permission is allowed except the `question` tool, which would wait for a
/// human; autoupdate and sharing are off. An API key is never written into the file:
/// the provider entry refers to the environment variable with OpenCode's
/// `{env:NAME}` substitution, and the variable reaches the server's environment only.
pub fn opencode_config(settings: &OpenCodeSettings) -> Value {
    let mut config = json!({
        "$schema": "https://opencode.ai/config.json",
        "permission": { "*": "allow", "question": "deny" },
        "autoupdate": false,
        "share": "disabled",
        "model": settings.model,
        "small_model": settings.model,
    });
    if let Some(provider) = &settings.provider {
        let mut options = json!({ "baseURL": provider.base_url });
        if let Some(name) = &provider.api_key_env {
            options["apiKey"] = Value::String(format!("{{env:{name}}}"));
        }
        let model_id = settings.model_id();
        config["provider"] = json!({
            provider.id.clone(): {
                "npm": "@ai-sdk/openai-compatible",
                "name": provider.name,
                "options": options,
                "models": {
                    model_id: {
                        "name": model_id,
                        "limit": { "context": provider.context_limit, "output": provider.output_limit },
                    }
                },
            }
        });
        config["enabled_providers"] = json!([provider.id]);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_allows_everything_but_questions() {
        let settings = OpenCodeSettings {
            model: "anthropic/claude-sonnet-4-5".into(),
            ..OpenCodeSettings::default()
        };
        let config = opencode_config(&settings);
        assert_eq!(config["permission"], json!({"*": "allow", "question": "deny"}));
        assert_eq!(config["autoupdate"], json!(false));
        assert_eq!(config["share"], json!("disabled"));
        assert_eq!(config["model"], json!("anthropic/claude-sonnet-4-5"));
        assert!(config.get("provider").is_none());
    }

    #[test]
    fn provider_key_is_an_env_reference() {
        let table: toml::Table = r#"model = "scripted/m1"
[provider]
id = "scripted"
base_url = "http://127.0.0.1:4010/v1"
api_key_env = "SCRIPTED_KEY""#
            .parse()
            .unwrap();
        let config = opencode_config(&OpenCodeSettings::from_table(&table).unwrap());
        let provider = &config["provider"]["scripted"];
        assert_eq!(provider["npm"], json!("@ai-sdk/openai-compatible"));
        assert_eq!(provider["options"]["apiKey"], json!("{env:SCRIPTED_KEY}"));
        assert_eq!(provider["options"]["baseURL"], json!("http://127.0.0.1:4010/v1"));
        assert!(provider["models"]["m1"]["limit"]["context"].is_u64());
        assert_eq!(config["enabled_providers"], json!(["scripted"]));
    }
}
