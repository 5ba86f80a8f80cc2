use ken_core::AccessPolicy;
use serde_json::json;

use super::*;
use crate::policy::render::{render, RenderOptions};

/// A policy as admins write it: comments of both kinds, trailing commas, rules of
/// their own in acls, grants, tests and tagOwners.
const ADMIN_POLICY: &str = r#"// Example Corp tailnet policy.
// Reviewed by the infra team.
{
	"groups": {
		"group:dev": ["alice@example.com", "bob@example.com"],
	},
	/* Servers */
	"tagOwners": {
		"tag:web": ["group:dev"], // web servers
	},
	"acls": [
		// developers reach the web servers
		{"action": "accept", "src": ["group:dev"], "dst": ["tag:web:443"]},
	],
	"grants": [
		{"src": ["group:dev"], "dst": ["tag:web"], "ip": ["22"]} // ssh for devs
	],
	"tests": [
		{"src": "alice@example.com", "accept": ["tag:web:443"]},
	],
}
"#;

fn section() -> PolicySection {
    render(
        &AccessPolicy::standard(),
        &RenderOptions {
            tag: "tag:ken-sandbox".to_owned(),
            tag_owners: vec!["autogroup:admin".to_owned()],
            test_user: Some("alice@example.com".to_owned()),
        },
    )
    .unwrap()
}

/// Removes every line that contains the marker or one of Ken's entries, and the
/// commas Ken added, which must give back the admin's text.
fn strip_ken_lines(merged: &str) -> String {
    merged
        .lines()
        .filter(|line| !line.contains(MARKER) && !line.contains("ken-sandbox"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn merge_keeps_admin_text_and_order() {
    let merged = merge(ADMIN_POLICY, &section()).unwrap();

    let parsed = hujson::parse(&merged).unwrap().to_json();
    assert_eq!(parsed["tagOwners"]["tag:web"], json!(["group:dev"]));
    assert_eq!(parsed["tagOwners"]["tag:ken-sandbox"], json!(["autogroup:admin"]));
    assert_eq!(parsed["acls"].as_array().unwrap().len(), 1);
    assert_eq!(parsed["grants"][0], json!({"src": ["group:dev"], "dst": ["tag:web"], "ip": ["22"]}));
    assert_eq!(parsed["grants"][1], json!({"src": ["autogroup:member"], "dst": ["tag:ken-sandbox"], "ip": ["*"]}));
    assert_eq!(parsed["tests"][0], json!({"src": "alice@example.com", "accept": ["tag:web:443"]}));
    assert_eq!(parsed["tests"].as_array().unwrap().len(), 4);

    for comment in ["// Example Corp tailnet policy.", "/* Servers */", "// web servers", "// developers reach the web servers", "// ssh for devs"] {
        assert!(merged.contains(comment), "lost {comment:?}:\n{merged}");
    }
    let admin_only = strip_ken_lines(&merged);
    let expected = ADMIN_POLICY
        .trim_end()
        .replace(r#""ip": ["22"]} // ssh for devs"#, r#""ip": ["22"]}, // ssh for devs"#);
    assert_eq!(admin_only, expected, "merged:\n{merged}");
}

#[test]
fn merge_twice_changes_nothing() {
    let once = merge(ADMIN_POLICY, &section()).unwrap();
    let twice = merge(&once, &section()).unwrap();
    assert_eq!(once, twice);
    assert_eq!(once.matches(MARKER).count(), 5, "{once}");
}

#[test]
fn merge_replaces_changed_ken_entries() {
    let once = merge(ADMIN_POLICY, &section()).unwrap();
    let mut other = section();
    other.tag_owners = vec!["tag:ci".to_owned()];
    other.tests.truncate(1);
    let changed = merge(&once, &other).unwrap();
    let parsed = hujson::parse(&changed).unwrap().to_json();
    assert_eq!(parsed["tagOwners"]["tag:ken-sandbox"], json!(["tag:ci"]));
    assert_eq!(parsed["tests"].as_array().unwrap().len(), 2, "{changed}");
    assert_eq!(parsed["tests"][0], json!({"src": "alice@example.com", "accept": ["tag:web:443"]}));
    assert_eq!(changed.matches(MARKER).count(), 3, "{changed}");
    assert_eq!(strip_ken_lines(&changed), strip_ken_lines(&once));
}

fn section_for(tag: &str) -> PolicySection {
    render(
        &AccessPolicy::standard(),
        &RenderOptions {
            tag: tag.to_owned(),
            tag_owners: vec!["autogroup:admin".to_owned()],
            test_user: Some("alice@example.com".to_owned()),
        },
    )
    .unwrap()
}

#[test]
fn merge_for_second_tag_keeps_first() {
    let first = merge(ADMIN_POLICY, &section()).unwrap();
    let both = merge(&first, &section_for("tag:other")).unwrap();
    let parsed = hujson::parse(&both).unwrap().to_json();
    let grants = parsed["grants"].as_array().unwrap();
    assert!(grants.contains(&json!({"src": ["autogroup:member"], "dst": ["tag:ken-sandbox"], "ip": ["*"]})), "{both}");
    assert!(grants.contains(&json!({"src": ["autogroup:member"], "dst": ["tag:other"], "ip": ["*"]})), "{both}");
    assert_eq!(parsed["tests"].as_array().unwrap().len(), 7, "{both}");
    assert_eq!(parsed["tagOwners"]["tag:ken-sandbox"], json!(["autogroup:admin"]));
    assert_eq!(parsed["tagOwners"]["tag:other"], json!(["autogroup:admin"]));
    assert!(contains_section(&hujson::parse(&both).unwrap(), &section()), "{both}");

    // Applying either tag again changes nothing.
    assert_eq!(merge(&both, &section_for("tag:other")).unwrap(), both);
    assert_eq!(merge(&both, &section()).unwrap(), both);
    assert!(both.contains("// ken:managed tag:other - "), "{both}");
    assert!(both.contains("// ken:managed tag:ken-sandbox - "), "{both}");
}

#[test]
fn old_marker_without_tag_belongs_to_named_tag() {
    let old = merge(ADMIN_POLICY, &section()).unwrap().replace("ken:managed tag:ken-sandbox -", "ken:managed -");
    assert!(!old.contains("ken:managed tag:"), "{old}");

    // The same tag again: the old entries count as present, nothing changes.
    assert_eq!(merge(&old, &section()).unwrap(), old);

    // Another tag leaves the old entries, which name tag:ken-sandbox, alone.
    let other = merge(&old, &section_for("tag:other")).unwrap();
    assert!(contains_section(&hujson::parse(&other).unwrap(), &section()), "{other}");
    assert_eq!(hujson::parse(&other).unwrap().to_json()["tests"].as_array().unwrap().len(), 7, "{other}");

    // A changed section for the old tag replaces its old entries.
    let mut fewer = section();
    fewer.tests.truncate(1);
    let changed = merge(&old, &fewer).unwrap();
    assert_eq!(hujson::parse(&changed).unwrap().to_json()["tests"].as_array().unwrap().len(), 2, "{changed}");
}

#[test]
fn merge_into_empty_policy() {
    let merged = merge("{}", &section()).unwrap();
    let parsed = hujson::parse(&merged).unwrap().to_json();
    assert_eq!(parsed["tagOwners"]["tag:ken-sandbox"], json!(["autogroup:admin"]));
    assert_eq!(parsed["grants"].as_array().unwrap().len(), 1);
    assert_eq!(parsed["tests"].as_array().unwrap().len(), 3);
    assert_eq!(merge(&merged, &section()).unwrap(), merged);
}

#[test]
fn merge_into_compact_json() {
    let text = r#"{"acls":[{"action":"accept","src":["group:dev"],"dst":["tag:web:*"]}],"grants":[]}"#;
    let merged = merge(text, &section()).unwrap();
    let parsed = hujson::parse(&merged).unwrap().to_json();
    assert_eq!(parsed["acls"][0]["src"], json!(["group:dev"]));
    assert_eq!(parsed["grants"].as_array().unwrap().len(), 1);
    assert_eq!(merge(&merged, &section()).unwrap(), merged);
}

#[test]
fn hand_written_copy_is_not_duplicated() {
    let text = r#"{
  "tagOwners": {"tag:ken-sandbox": ["group:dev"]},
  "grants": [{"src": ["autogroup:member"], "dst": ["tag:ken-sandbox"], "ip": ["*"]}],
}"#;
    let merged = merge(text, &section()).unwrap();
    let parsed = hujson::parse(&merged).unwrap().to_json();
    assert_eq!(parsed["grants"].as_array().unwrap().len(), 1);
    assert_eq!(parsed["tagOwners"]["tag:ken-sandbox"], json!(["group:dev"]));
    assert!(merged.starts_with(text.trim_end_matches("\n}").trim_end_matches('}')), "{merged}");
}

#[test]
fn wrong_shapes_are_rejected() {
    let error = merge(r#"{"grants": {}}"#, &section()).unwrap_err().to_string();
    assert!(error.contains("grants"), "{error}");
    let error = merge(r#"["not an object"]"#, &section()).unwrap_err().to_string();
    assert!(error.contains("object"), "{error}");
}

#[test]
fn section_detection() {
    let merged = merge(ADMIN_POLICY, &section()).unwrap();
    assert!(contains_section(&hujson::parse(&merged).unwrap(), &section()));
    assert!(!contains_section(&hujson::parse(ADMIN_POLICY).unwrap(), &section()));
    let legacy = r#"{"tagOwners": {"tag:ken-sandbox": []}, "acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:ken-sandbox:*"]}]}"#;
    assert!(contains_section(&hujson::parse(legacy).unwrap(), &section()));
}

