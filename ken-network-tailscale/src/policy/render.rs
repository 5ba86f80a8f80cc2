//! Rendering of Ken's [`AccessPolicy`] as a section of a Tailscale policy file.

use ken_core::policy::{Action, Principal};
use ken_core::{AccessPolicy, Error, Result};
use serde_json::{json, Value};

/// The member group every user-owned device belongs to; tagged devices never do.
pub const MEMBER_GROUP: &str = "autogroup:member";

/// The ports the policy tests probe.
pub const TEST_PORTS: [u16; 3] = [22, 443, 8080];

/// Ken's part of a tailnet policy file: the sandbox tag's owners, the grants that
/// let users reach sandboxes, and tests proving both directions.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySection {
    /// The sandbox tag.
    pub tag: String,
    /// Its owners, written to `tagOwners`.
    pub tag_owners: Vec<String>,
    /// Entries for `grants`.
    pub grants: Vec<Value>,
    /// Entries for `tests`.
    pub tests: Vec<Value>,
}

/// The inputs of [`render`] besides the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// The sandbox tag.
    pub tag: String,
    /// The owners of the tag.
    pub tag_owners: Vec<String>,
    /// A member's login used as the source and target of the tests. Without one,
    /// only the sandbox-to-sandbox test is written.
    pub test_user: Option<String>,
}

/// Renders `policy` as Ken's section of a Tailscale policy file.
///
/// Tailscale denies by default and its rules only allow, so each allow rule
/// becomes a grant and each deny is proven by a test. A policy that needs a deny to
/// take precedence over a broader allow, lets sandboxes open connections, or
/// names one sandbox cannot be written as tags and fails with
/// [`Error::InvalidInput`].
pub fn render(policy: &AccessPolicy, options: &RenderOptions) -> Result<PolicySection> {
    let tag = options.tag.as_str();
    let mut grants = Vec::new();
    for (index, rule) in policy.rules.iter().enumerate() {
        if rule.action != Action::Allow {
            continue;
        }
        for earlier in &policy.rules[..index] {
            if earlier.action == Action::Deny
                && rule.source.covers(&earlier.source)
                && rule.destination.covers(&earlier.destination)
            {
                return Err(unsupported(format!(
                    "the deny rule {:?} -> {:?} narrows a later allow rule, and Tailscale rules can only allow",
                    earlier.source, earlier.destination
                )));
            }
        }
        let source = match &rule.source {
            Principal::AnyUser => MEMBER_GROUP.to_owned(),
            Principal::User(login) => login.clone(),
            other => {
                return Err(unsupported(format!(
                    "the allow rule from {other:?} would let sandboxes open connections, which the sandbox tag cannot express safely"
                )))
            }
        };
        match &rule.destination {
            Principal::AnySandbox => {}
            other => {
                return Err(unsupported(format!(
                    "the allow rule to {other:?} names something other than all sandboxes; the tailnet policy addresses sandboxes only by their tag"
                )))
            }
        }
        grants.push(json!({"src": [source], "dst": [tag], "ip": ["*"]}));
    }

    let mut tests = Vec::new();
    let sandbox_ports = ports(tag);
    if let Some(user) = &options.test_user {
        let test_user = Principal::User(user.clone());
        let user_to_sandbox = policy.allows(&test_user, &Principal::AnySandbox);
        tests.push(test(user, user_to_sandbox, &sandbox_ports));
    }
    let sandbox_to_sandbox = policy.allows(&Principal::AnySandbox, &Principal::AnySandbox);
    tests.push(test(tag, sandbox_to_sandbox, &sandbox_ports));
    if let Some(user) = &options.test_user {
        let sandbox_to_user = policy.allows(&Principal::AnySandbox, &Principal::User(user.clone()));
        tests.push(test(tag, sandbox_to_user, &ports(user)));
    }

    Ok(PolicySection {
        tag: options.tag.clone(),
        tag_owners: options.tag_owners.clone(),
        grants,
        tests,
    })
}

fn ports(host: &str) -> Vec<String> {
    TEST_PORTS.iter().map(|port| format!("{host}:{port}")).collect()
}

fn test(source: &str, accept: bool, destinations: &[String]) -> Value {
    if accept {
        json!({"src": source, "accept": destinations})
    } else {
        json!({"src": source, "deny": destinations})
    }
}

fn unsupported(reason: String) -> Error {
    Error::invalid(
        "access policy",
        "(for the tailscale network)",
        format!("{reason}; use AccessPolicy::standard()"),
    )
}

/// Writes `value` as one line of JSON with `, ` and `: ` separators, object keys in
/// the order a policy file usually has them.
pub(crate) fn inline(value: &Value) -> String {
    const ORDER: [&str; 7] = ["action", "src", "proto", "dst", "ip", "accept", "deny"];
    match value {
        Value::Array(items) => format!("[{}]", items.iter().map(inline).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|key| (ORDER.iter().position(|k| k == key).unwrap_or(ORDER.len()), key.as_str()));
            let members: Vec<String> = keys
                .into_iter()
                .map(|key| format!("{}: {}", Value::String(key.clone()), inline(&map[key])))
                .collect();
            format!("{{{}}}", members.join(", "))
        }
        other => other.to_string(),
    }
}

impl PolicySection {
    /// Returns the section as a HuJSON snippet, the form `ken policy show` prints.
    pub fn to_hujson(&self) -> String {
        let mut out = String::from("{\n");
        out.push_str(&format!(
            "\t\"tagOwners\": {{\n\t\t{}: {},\n\t}},\n",
            Value::String(self.tag.clone()),
            inline(&json!(self.tag_owners))
        ));
        out.push_str("\t\"grants\": [\n");
        for grant in &self.grants {
            out.push_str(&format!("\t\t{},\n", inline(grant)));
        }
        out.push_str("\t],\n\t\"tests\": [\n");
        for test in &self.tests {
            out.push_str(&format!("\t\t{},\n", inline(test)));
        }
        out.push_str("\t],\n}\n");
        out
    }

    /// Returns the `tagOwners` value Ken writes for the tag.
    pub(crate) fn owners_json(&self) -> Value {
        json!(self.tag_owners)
    }
}

#[cfg(test)]
mod tests {
    use ken_core::policy::Rule;

    use super::*;

    fn options(user: Option<&str>) -> RenderOptions {
        RenderOptions {
            tag: "tag:ken-sandbox".to_owned(),
            tag_owners: vec!["autogroup:admin".to_owned()],
            test_user: user.map(str::to_owned),
        }
    }

    #[test]
    fn standard_policy_renders_one_grant_and_tests() {
        let section = render(&AccessPolicy::standard(), &options(Some("alice@example.com"))).unwrap();
        assert_eq!(section.grants, vec![json!({"src": ["autogroup:member"], "dst": ["tag:ken-sandbox"], "ip": ["*"]})]);
        assert_eq!(
            section.tests,
            vec![
                json!({"src": "alice@example.com", "accept": ["tag:ken-sandbox:22", "tag:ken-sandbox:443", "tag:ken-sandbox:8080"]}),
                json!({"src": "tag:ken-sandbox", "deny": ["tag:ken-sandbox:22", "tag:ken-sandbox:443", "tag:ken-sandbox:8080"]}),
                json!({"src": "tag:ken-sandbox", "deny": ["alice@example.com:22", "alice@example.com:443", "alice@example.com:8080"]}),
            ]
        );
        assert_eq!(section.tag_owners, vec!["autogroup:admin".to_owned()]);
    }

    #[test]
    fn no_grant_has_sandbox_tag_as_source() {
        let section = render(&AccessPolicy::standard(), &options(None)).unwrap();
        for grant in &section.grants {
            assert!(!grant["src"].as_array().unwrap().contains(&json!("tag:ken-sandbox")), "{grant}");
        }
        assert_eq!(section.tests.len(), 1);
    }

    #[test]
    fn sandbox_source_allow_is_rejected() {
        let policy = AccessPolicy {
            rules: vec![Rule {
                source: Principal::AnySandbox,
                destination: Principal::AnySandbox,
                action: Action::Allow,
            }],
        };
        let error = render(&policy, &options(None)).unwrap_err().to_string();
        assert!(error.contains("AnySandbox"), "{error}");
    }

    #[test]
    fn deny_narrowing_allow_is_rejected() {
        let policy = AccessPolicy {
            rules: vec![
                Rule {
                    source: Principal::User("bob@example.com".into()),
                    destination: Principal::AnySandbox,
                    action: Action::Deny,
                },
                Rule {
                    source: Principal::AnyUser,
                    destination: Principal::AnySandbox,
                    action: Action::Allow,
                },
            ],
        };
        let error = render(&policy, &options(None)).unwrap_err().to_string();
        assert!(error.contains("bob@example.com"), "{error}");
    }

    #[test]
    fn show_output_is_valid_hujson() {
        let section = render(&AccessPolicy::standard(), &options(Some("alice@example.com"))).unwrap();
        let text = section.to_hujson();
        let parsed = super::super::hujson::parse(&text).unwrap().to_json();
        assert_eq!(parsed["grants"], json!(section.grants));
        assert_eq!(parsed["tests"], json!(section.tests));
        assert_eq!(parsed["tagOwners"]["tag:ken-sandbox"], json!(["autogroup:admin"]));
        assert!(text.contains(r#"{"src": ["autogroup:member"], "dst": ["tag:ken-sandbox"], "ip": ["*"]}"#), "{text}");
    }
}
