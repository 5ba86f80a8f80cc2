//! The access policy, as data: who may open a connection to whom.
//!
//! Ken's policy is "any user may reach any sandbox; no sandbox may reach another
//! sandbox". Network providers render it into their own format (a tailnet policy
//! file, firewall rules) or check that their backend enforces it.

use serde::Serialize;

/// A party in the access policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
#[non_exhaustive]
pub enum Principal {
    /// Any member of the team.
    AnyUser,
    /// One user, by login name.
    User(String),
    /// Any sandbox.
    AnySandbox,
    /// One sandbox, by name.
    Sandbox(String),
}

impl Principal {
    /// Returns true when `self` (as written in a rule) covers `other`.
    pub fn covers(&self, other: &Principal) -> bool {
        match (self, other) {
            (a, b) if a == b => true,
            (Principal::AnyUser, Principal::User(_)) => true,
            (Principal::AnySandbox, Principal::Sandbox(_)) => true,
            _ => false,
        }
    }
}

/// Whether a rule lets traffic through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Traffic is allowed.
    Allow,
    /// Traffic is refused.
    Deny,
}

/// One rule: traffic from `source` to `destination` is allowed or denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// The party that opens the connection.
    pub source: Principal,
    /// The party that receives it.
    pub destination: Principal,
    /// Whether it is allowed.
    pub action: Action,
}

/// An ordered list of rules; the first rule that matches decides, and traffic that
/// no rule matches is denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessPolicy {
    /// The rules, in order.
    pub rules: Vec<Rule>,
}

impl AccessPolicy {
    /// Returns the policy every Ken network keeps: any user to any sandbox, no
    /// sandbox to sandbox.
    pub fn standard() -> Self {
        AccessPolicy {
            rules: vec![
                Rule {
                    source: Principal::AnySandbox,
                    destination: Principal::AnySandbox,
                    action: Action::Deny,
                },
                Rule {
                    source: Principal::AnyUser,
                    destination: Principal::AnySandbox,
                    action: Action::Allow,
                },
            ],
        }
    }

    /// Returns true when traffic from `source` to `destination` is allowed.
    pub fn allows(&self, source: &Principal, destination: &Principal) -> bool {
        self.rules
            .iter()
            .find(|rule| rule.source.covers(source) && rule.destination.covers(destination))
            .is_some_and(|rule| rule.action == Action::Allow)
    }
}

impl Default for AccessPolicy {
    fn default() -> Self {
        AccessPolicy::standard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_policy_lets_users_in() {
        let policy = AccessPolicy::standard();
        let alice = Principal::User("alice".into());
        let box_a = Principal::Sandbox("a".into());
        assert!(policy.allows(&alice, &box_a));
        assert!(policy.allows(&Principal::AnyUser, &Principal::AnySandbox));
    }

    #[test]
    fn standard_policy_keeps_sandboxes_apart() {
        let policy = AccessPolicy::standard();
        let box_a = Principal::Sandbox("a".into());
        let box_b = Principal::Sandbox("b".into());
        assert!(!policy.allows(&box_a, &box_b));
        assert!(!policy.allows(&Principal::AnySandbox, &Principal::AnySandbox));
    }

    #[test]
    fn unmatched_traffic_is_denied() {
        let policy = AccessPolicy::standard();
        let box_a = Principal::Sandbox("a".into());
        let alice = Principal::User("alice".into());
        assert!(!policy.allows(&box_a, &alice));
    }
}
