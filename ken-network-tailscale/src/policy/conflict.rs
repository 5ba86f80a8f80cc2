//! The local check that no existing rule lets sandboxes open connections.
//!
//! Tailscale rules only allow, so Ken's grant cannot override an admin's rule: a
//! rule whose source covers the sandboxes reopens sandbox-to-sandbox traffic
//! whatever Ken writes. Sources that cover sandboxes are `*`,
//! `autogroup:danger-all`, `autogroup:tagged`, the sandbox tag, and any address or
//! range overlapping the tailnet ranges 100.64.0.0/10 and fd7a:115c:a1e0::/48,
//! written directly or through a `hosts` alias.

use std::fmt;
use std::net::IpAddr;

use ken_core::{Error, Result};

use super::hujson::{self, Kind, Node};

/// An existing rule that lets sandboxes open connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `acls` or `grants`.
    pub section: String,
    /// The rule's 1-based line in the policy file.
    pub line: usize,
    /// The rule's text, exactly as the file has it.
    pub rule: String,
    /// The source entry that covers sandboxes.
    pub source: String,
    /// The reason that source covers sandboxes.
    pub reason: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rule on line {} has source {:?}, which {}:\n{}",
            self.section, self.line, self.source, self.reason, self.rule
        )
    }
}

/// Returns the rules of `acls` and `grants` in `root` (parsed from `text`) whose
/// source covers sandboxes tagged `tag`.
pub(crate) fn find_conflicts(text: &str, root: &Node, tag: &str) -> Vec<Conflict> {
    let hosts = root.member("hosts").map(|hosts| &hosts.value.value);
    let mut conflicts = Vec::new();
    for section in ["acls", "grants"] {
        let Some(member) = root.member(section) else {
            continue;
        };
        let Kind::Array(rules) = &member.value.value.kind else {
            continue;
        };
        for item in &rules.items {
            let rule = &item.value;
            let Some(sources) = rule.member("src") else {
                continue;
            };
            for source in sources.value.value.strings() {
                if let Some(reason) = covers_sandboxes(source, tag, hosts) {
                    let (line, _) = hujson::line_column(text, rule.span.start);
                    conflicts.push(Conflict {
                        section: section.to_owned(),
                        line,
                        rule: text[rule.span.clone()].to_owned(),
                        source: source.to_owned(),
                        reason,
                    });
                    break;
                }
            }
        }
    }
    conflicts
}

/// Returns why `source` covers sandboxes tagged `tag`, or `None` when it does not.
fn covers_sandboxes(source: &str, tag: &str, hosts: Option<&Node>) -> Option<String> {
    match source {
        "*" => return Some("matches every device, sandboxes included".to_owned()),
        "autogroup:danger-all" => return Some("matches every device, sandboxes included".to_owned()),
        "autogroup:tagged" => return Some("matches every tagged device, sandboxes included".to_owned()),
        _ if source == tag => return Some("is the sandbox tag itself".to_owned()),
        _ => {}
    }
    if let Some(reason) = range_reason(source) {
        return Some(reason);
    }
    let alias = hosts.and_then(|hosts| hosts.member(source))?;
    let Kind::String(address) = &alias.value.value.kind else {
        return None;
    };
    range_reason(address).map(|reason| format!("is the host alias for {address}, which {reason}"))
}

fn range_reason(source: &str) -> Option<String> {
    let (address, prefix) = parse_range(source)?;
    let overlaps = match address {
        IpAddr::V4(v4) => overlaps(u32::from(v4) as u128, prefix, 32, u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0)) as u128, 10),
        IpAddr::V6(v6) => {
            let tailnet: std::net::Ipv6Addr = "fd7a:115c:a1e0::".parse().ok()?;
            overlaps(u128::from(v6), prefix, 128, u128::from(tailnet), 48)
        }
    };
    overlaps.then(|| "overlaps the tailnet address range that sandboxes get addresses from".to_owned())
}

/// Parses `ADDRESS` or `ADDRESS/PREFIX`.
fn parse_range(source: &str) -> Option<(IpAddr, u32)> {
    let (address, prefix) = match source.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix.parse::<u32>().ok()?)),
        None => (source, None),
    };
    let address: IpAddr = address.parse().ok()?;
    let bits = if address.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(bits);
    (prefix <= bits).then_some((address, prefix))
}

/// Returns whether the ranges `a/a_prefix` and `b/b_prefix` of a `bits`-bit address
/// space overlap: they do when they agree on the shorter prefix.
fn overlaps(a: u128, a_prefix: u32, bits: u32, b: u128, b_prefix: u32) -> bool {
    let common = a_prefix.min(b_prefix);
    if common == 0 {
        return true;
    }
    let shift = bits - common;
    (a >> shift) == (b >> shift)
}

/// Fails with an error quoting each conflicting rule, and saying what to do.
pub(crate) fn reject(conflicts: &[Conflict], tag: &str) -> Result<()> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = conflicts.iter().map(Conflict::to_string).collect();
    Err(Error::invalid(
        "policy file",
        format!("{} conflicting rule(s)", conflicts.len()),
        format!(
            "these rules let sandboxes ({tag}) open connections, so sandboxes could reach each other whatever Ken writes:\n{}\n\
             Narrow their sources (for example to autogroup:member or a group) in the admin console, then run `ken policy apply` again",
            listed.join("\n")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflicts(text: &str) -> Vec<Conflict> {
        let root = hujson::parse(text).unwrap();
        find_conflicts(text, &root, "tag:ken-sandbox")
    }

    #[test]
    fn each_covering_source_is_found_and_quoted() {
        let rules = [
            (r#"{"action": "accept", "src": ["*"], "dst": ["*:*"]}"#, "*"),
            (r#"{"src": ["autogroup:tagged"], "dst": ["tag:db"], "ip": ["5432"]}"#, "autogroup:tagged"),
            (r#"{"src": ["autogroup:danger-all"], "dst": ["tag:web"], "ip": ["*"]}"#, "autogroup:danger-all"),
            (r#"{"src": ["group:dev", "tag:ken-sandbox"], "dst": ["tag:web"], "ip": ["443"]}"#, "tag:ken-sandbox"),
            (r#"{"src": ["100.64.0.0/10"], "dst": ["*"], "ip": ["*"]}"#, "100.64.0.0/10"),
            (r#"{"src": ["100.100.1.7"], "dst": ["*"], "ip": ["*"]}"#, "100.100.1.7"),
            (r#"{"src": ["0.0.0.0/0"], "dst": ["*"], "ip": ["*"]}"#, "0.0.0.0/0"),
            (r#"{"src": ["fd7a:115c:a1e0::/48"], "dst": ["*"], "ip": ["*"]}"#, "fd7a:115c:a1e0::/48"),
            (r#"{"src": ["runners"], "dst": ["*"], "ip": ["*"]}"#, "runners"),
        ];
        for (rule, source) in rules {
            let section = if rule.contains("action") { "acls" } else { "grants" };
            let text = format!("{{\n  \"hosts\": {{\"runners\": \"100.80.0.0/16\"}},\n  // keep\n  \"{section}\": [\n    {rule},\n  ],\n}}");
            let found = conflicts(&text);
            assert_eq!(found.len(), 1, "{rule}");
            assert_eq!(found[0].rule, rule);
            assert_eq!(found[0].source, source);
            assert_eq!(found[0].line, 5);
            let message = reject(&found, "tag:ken-sandbox").unwrap_err().to_string();
            assert!(message.contains(rule), "{message}");
        }
    }

    #[test]
    fn narrow_sources_pass() {
        let text = r#"{
  "hosts": {"office": "192.168.1.0/24"},
  "acls": [{"action": "accept", "src": ["group:dev"], "dst": ["*:*"]}],
  "grants": [
    {"src": ["autogroup:member"], "dst": ["tag:ken-sandbox"], "ip": ["*"]},
    {"src": ["10.0.0.0/8", "office", "100.128.0.1"], "dst": ["tag:web"], "ip": ["443"]},
    {"src": ["tag:ci"], "dst": ["tag:ken-sandbox"], "ip": ["22"]},
  ],
}"#;
        assert_eq!(conflicts(text), Vec::new());
    }
}
