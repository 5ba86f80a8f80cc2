//! The tailnet policy file: storage, ETags, parsing and the `tests` evaluator.

pub(crate) mod eval;
pub(crate) mod hujson;
pub(crate) mod net;
mod routes;

pub(crate) use routes::{get_policy, set_policy, validate_policy};

use sha2::{Digest, Sha256};

/// The policy a new tailnet starts with: an allow-all rule and commented examples.
pub const DEFAULT_POLICY: &str = r#"// Access policy of a new tailnet, as the test server starts it.
{
	// Groups of users, referenced in rules as group:<name>.
	// "groups": {
	//	"group:example": ["alice@example.com", "bob@example.com"],
	// },

	// Who may apply each tag to devices.
	// "tagOwners": {
	//	"tag:example": ["autogroup:admin"],
	// },

	// Every device may reach every other device on every port.
	"acls": [
		{"action": "accept", "src": ["*"], "dst": ["*:*"]},
	],

	// SSH rules are kept but not evaluated by the test server.
	"ssh": [
		{
			"action": "check",
			"src":    ["autogroup:member"],
			"dst":    ["autogroup:self"],
			"users":  ["autogroup:nonroot", "root"],
		},
	],
}
"#;

/// The `If-Match` value that matches only the untouched default policy.
pub const DEFAULT_POLICY_ETAG: &str = "ts-default";

/// Returns the ETag of a policy text: the hex SHA-256 of its bytes, without quotes.
pub(crate) fn etag_of(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The stored policy file.
#[derive(Clone, Debug)]
pub(crate) struct PolicyFile {
    /// The HuJSON text exactly as last written.
    pub(crate) text: String,
    /// Whether this is still the default policy of a new tailnet, never written.
    pub(crate) untouched_default: bool,
}

impl PolicyFile {
    /// Returns the ETag without quotes.
    pub(crate) fn etag(&self) -> String {
        etag_of(&self.text)
    }

    /// Returns whether an unquoted `If-Match` value names this version.
    pub(crate) fn matches(&self, tag: &str) -> bool {
        tag == self.etag() || (self.untouched_default && tag == DEFAULT_POLICY_ETAG)
    }
}
