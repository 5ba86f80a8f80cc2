//! Parsing of the policy subset the server understands, and its `tests` evaluator.
//!
//! Supported: `acls` (`action: accept`, `src`, `dst` with ports, `proto`), `grants`
//! (`src`, `dst`, `ip`), `groups`, `tagOwners`, `hosts` and `tests`. Selectors: `*`,
//! `autogroup:member`, `autogroup:tagged`, `autogroup:self` (destinations only),
//! `tag:x`, `group:x`, user logins, host aliases, IP addresses and prefixes. Anything
//! else in a rule is an error rather than a guess. Other top-level sections (`ssh`,
//! `nodeAttrs`, ...) are accepted and not evaluated.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{json, Map, Value};

use super::net::IpNet;

/// Top-level policy sections the server accepts.
const KNOWN_SECTIONS: &[&str] = &[
    "acls",
    "grants",
    "groups",
    "tagOwners",
    "hosts",
    "tests",
    "ssh",
    "sshTests",
    "nodeAttrs",
    "autoApprovers",
    "derpMap",
    "disableIPv4",
    "randomizeClientPort",
    "OneCGNATRoute",
];

/// A rule selector for sources or destinations.
#[derive(Clone, Debug)]
enum Selector {
    Any,
    Member,
    Tagged,
    SelfDevice,
    Tag(String),
    Group(String),
    User(String),
    Net(IpNet),
}

/// A port range, inclusive.
#[derive(Clone, Copy, Debug)]
struct Ports {
    first: u16,
    last: u16,
}

/// One destination of a rule with the ports and protocol it opens.
#[derive(Clone, Debug)]
struct Destination {
    selector: Selector,
    ports: Vec<Ports>,
    /// IANA protocol number; `None` is TCP, UDP and ICMP.
    proto: Option<u8>,
}

/// An accept rule from `acls` or `grants`.
#[derive(Clone, Debug)]
struct Rule {
    src: Vec<Selector>,
    dst: Vec<Destination>,
}

/// A party of a policy test: a user's device, a tagged device or an address.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Party {
    User(String),
    Tagged(String),
    Ip(IpAddr),
}

/// One entry of `tests`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyTest {
    src: String,
    #[serde(default)]
    proto: Option<String>,
    #[serde(default)]
    accept: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

/// A parsed policy file.
#[derive(Clone, Debug, Default)]
pub(crate) struct Policy {
    groups: HashMap<String, Vec<String>>,
    tag_owners: HashMap<String, Vec<String>>,
    hosts: HashMap<String, IpNet>,
    rules: Vec<Rule>,
    pub(crate) tests: Vec<PolicyTest>,
}

fn strings(value: &Value, what: &str) -> Result<Vec<String>, String> {
    let Some(items) = value.as_array() else {
        return Err(format!("{what}: expected an array of strings"));
    };
    items
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| format!("{what}: expected a string, got {v}")))
        .collect()
}

fn check_fields(object: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    for key in object.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(format!("{what}: unknown or unsupported field {key:?}"));
        }
    }
    Ok(())
}

fn parse_proto(text: &str) -> Result<u8, String> {
    match text {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "sctp" => Ok(132),
        other => other.parse::<u8>().map_err(|_| format!("unsupported proto {other:?}")),
    }
}

fn parse_ports(text: &str) -> Result<Vec<Ports>, String> {
    if text == "*" {
        return Ok(vec![Ports { first: 0, last: u16::MAX }]);
    }
    text.split(',')
        .map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let first = a.parse::<u16>().map_err(|_| format!("invalid port {part:?}"))?;
            let last = b.parse::<u16>().map_err(|_| format!("invalid port {part:?}"))?;
            if first > last {
                return Err(format!("invalid port range {part:?}"));
            }
            Ok(Ports { first, last })
        })
        .collect()
}

impl Policy {
    /// Parses and checks a policy object.
    pub(crate) fn parse(value: &Value) -> Result<Policy, String> {
        let Some(object) = value.as_object() else {
            return Err("policy file: expected a JSON object".to_owned());
        };
        for key in object.keys() {
            if !KNOWN_SECTIONS.contains(&key.as_str()) {
                return Err(format!("policy file: unknown or unsupported section {key:?}"));
            }
        }

        let mut policy = Policy::default();
        if let Some(groups) = object.get("groups") {
            let groups = groups.as_object().ok_or("groups: expected an object")?;
            for (name, members) in groups {
                if !name.starts_with("group:") {
                    return Err(format!("groups: group name {name:?} must start with \"group:\""));
                }
                let members = strings(members, name)?;
                if let Some(bad) = members.iter().find(|m| !m.contains('@')) {
                    return Err(format!("groups: member {bad:?} of {name} is not a user login"));
                }
                policy.groups.insert(name.clone(), members);
            }
        }
        if let Some(owners) = object.get("tagOwners") {
            let owners = owners.as_object().ok_or("tagOwners: expected an object")?;
            for (tag, list) in owners {
                if !tag.starts_with("tag:") {
                    return Err(format!("tagOwners: {tag:?} must start with \"tag:\""));
                }
                policy.tag_owners.insert(tag.clone(), strings(list, tag)?);
            }
        }
        if let Some(hosts) = object.get("hosts") {
            let hosts = hosts.as_object().ok_or("hosts: expected an object")?;
            for (name, addr) in hosts {
                let text = addr.as_str().ok_or_else(|| format!("hosts: {name}: expected a string"))?;
                let net = IpNet::parse(text).ok_or_else(|| format!("hosts: {name}: invalid address {text:?}"))?;
                policy.hosts.insert(name.clone(), net);
            }
        }
        if let Some(acls) = object.get("acls") {
            let acls = acls.as_array().ok_or("acls: expected an array")?;
            for acl in acls {
                let rule = policy.parse_acl(acl)?;
                policy.rules.push(rule);
            }
        }
        if let Some(grants) = object.get("grants") {
            let grants = grants.as_array().ok_or("grants: expected an array")?;
            for grant in grants {
                let rule = policy.parse_grant(grant)?;
                policy.rules.push(rule);
            }
        }
        if let Some(tests) = object.get("tests") {
            policy.tests = parse_tests(tests)?;
        }
        Ok(policy)
    }

    fn parse_acl(&self, acl: &Value) -> Result<Rule, String> {
        let object = acl.as_object().ok_or("acls: expected objects")?;
        check_fields(object, &["action", "src", "dst", "proto"], "acls")?;
        match object.get("action").and_then(Value::as_str) {
            Some("accept") => {}
            other => return Err(format!("acls: action must be \"accept\", got {other:?}")),
        }
        let proto = match object.get("proto") {
            None => None,
            Some(p) => Some(parse_proto(p.as_str().ok_or("acls: proto must be a string")?)?),
        };
        let src = strings(object.get("src").ok_or("acls: missing src")?, "acls src")?;
        let dst = strings(object.get("dst").ok_or("acls: missing dst")?, "acls dst")?;
        let src = src.iter().map(|s| self.parse_selector(s, false)).collect::<Result<_, _>>()?;
        let mut destinations = Vec::new();
        for entry in &dst {
            let (host, ports) = entry
                .rsplit_once(':')
                .ok_or_else(|| format!("acls dst {entry:?}: expected host:ports"))?;
            destinations.push(Destination {
                selector: self.parse_selector(host, true)?,
                ports: parse_ports(ports)?,
                proto,
            });
        }
        Ok(Rule { src, dst: destinations })
    }

    fn parse_grant(&self, grant: &Value) -> Result<Rule, String> {
        let object = grant.as_object().ok_or("grants: expected objects")?;
        check_fields(object, &["src", "dst", "ip", "app"], "grants")?;
        let src = strings(object.get("src").ok_or("grants: missing src")?, "grants src")?;
        let dst = strings(object.get("dst").ok_or("grants: missing dst")?, "grants dst")?;
        let ip = match object.get("ip") {
            Some(ip) => strings(ip, "grants ip")?,
            None if object.contains_key("app") => Vec::new(),
            None => return Err("grants: a grant needs ip or app".to_owned()),
        };
        let mut caps = Vec::new();
        for entry in &ip {
            let (proto, ports) = match entry.split_once(':') {
                Some((p, ports)) => (Some(parse_proto(p)?), ports),
                None => (None, entry.as_str()),
            };
            caps.push((proto, parse_ports(ports)?));
        }
        let src = src.iter().map(|s| self.parse_selector(s, false)).collect::<Result<_, _>>()?;
        let mut destinations = Vec::new();
        for host in &dst {
            let selector = self.parse_selector(host, true)?;
            for (proto, ports) in &caps {
                destinations.push(Destination {
                    selector: selector.clone(),
                    ports: ports.clone(),
                    proto: *proto,
                });
            }
        }
        Ok(Rule { src, dst: destinations })
    }

    fn parse_selector(&self, text: &str, is_dst: bool) -> Result<Selector, String> {
        let selector = match text {
            "*" => Selector::Any,
            "autogroup:member" => Selector::Member,
            "autogroup:tagged" => Selector::Tagged,
            "autogroup:self" if is_dst => Selector::SelfDevice,
            "autogroup:self" => return Err("autogroup:self is only valid as a destination".to_owned()),
            t if t.starts_with("tag:") => {
                if !self.tag_owners.contains_key(t) {
                    return Err(format!("tag {t:?} is not defined in tagOwners"));
                }
                Selector::Tag(t.to_owned())
            }
            g if g.starts_with("group:") => {
                if !self.groups.contains_key(g) {
                    return Err(format!("group {g:?} is not defined in groups"));
                }
                Selector::Group(g.to_owned())
            }
            u if u.contains('@') => Selector::User(u.to_owned()),
            other => {
                if let Some(net) = self.hosts.get(other) {
                    Selector::Net(*net)
                } else if let Some(net) = IpNet::parse(other) {
                    Selector::Net(net)
                } else {
                    return Err(format!("selector {other:?} is not supported by this test server"));
                }
            }
        };
        Ok(selector)
    }

    /// Returns whether `tag` is owned, per `tagOwners`, by one of `owner_tags`.
    pub(crate) fn tag_owned_by_any(&self, tag: &str, owner_tags: &[String]) -> bool {
        self.tag_owners
            .get(tag)
            .is_some_and(|owners| owners.iter().any(|o| owner_tags.contains(o)))
    }

    /// Returns whether `tag` is defined in `tagOwners`.
    pub(crate) fn tag_defined(&self, tag: &str) -> bool {
        self.tag_owners.contains_key(tag)
    }

    fn parse_party(&self, text: &str) -> Result<Party, String> {
        if text.starts_with("tag:") {
            if !self.tag_defined(text) {
                return Err(format!("test names tag {text:?}, which is not defined in tagOwners"));
            }
            return Ok(Party::Tagged(text.to_owned()));
        }
        if text.contains('@') {
            return Ok(Party::User(text.to_owned()));
        }
        let host = self.hosts.get(text).copied().or_else(|| IpNet::parse(text));
        match host {
            Some(net) if net.is_single() => Ok(Party::Ip(net.addr())),
            _ => Err(format!("test party {text:?} is not supported by this test server")),
        }
    }

    /// Returns whether a source selector covers `party`.
    fn src_matches(&self, selector: &Selector, party: &Party) -> Result<bool, String> {
        self.selector_matches(selector, party, None)
    }

    fn selector_matches(&self, selector: &Selector, party: &Party, src: Option<&Party>) -> Result<bool, String> {
        let matched = match (selector, party) {
            (Selector::Any, _) => true,
            (Selector::Net(net), Party::Ip(ip)) => net.contains(*ip),
            (Selector::Net(net), p) => {
                if net.covers_tailnet() {
                    true
                } else if !net.overlaps_tailnet() {
                    false
                } else {
                    return Err(format!(
                        "cannot tell whether {net} contains the address of {}",
                        party_name(p)
                    ));
                }
            }
            (_, Party::Ip(ip)) => {
                let single = IpNet::single(*ip);
                if single.overlaps_tailnet() {
                    return Err(format!("cannot tell which device has the tailnet address {ip}"));
                }
                false
            }
            (Selector::Member, Party::User(_)) => true,
            (Selector::Tagged, Party::Tagged(_)) => true,
            (Selector::Tag(t), Party::Tagged(p)) => t == p,
            (Selector::Group(g), Party::User(u)) => self.groups.get(g).is_some_and(|m| m.contains(u)),
            (Selector::User(a), Party::User(b)) => a == b,
            (Selector::SelfDevice, Party::User(u)) => matches!(src, Some(Party::User(s)) if s == u),
            _ => false,
        };
        Ok(matched)
    }

    /// Returns whether any rule lets `src` reach `dst` on `port` with protocol `proto`.
    fn allows(&self, src: &Party, dst: &Party, port: u16, proto: u8) -> Result<bool, String> {
        for rule in &self.rules {
            let mut src_hit = false;
            for selector in &rule.src {
                if self.src_matches(selector, src)? {
                    src_hit = true;
                    break;
                }
            }
            if !src_hit {
                continue;
            }
            for destination in &rule.dst {
                let proto_hit = match destination.proto {
                    None => matches!(proto, 1 | 6 | 17),
                    Some(p) => p == proto,
                };
                let port_hit = destination.ports.iter().any(|r| r.first <= port && port <= r.last);
                if proto_hit && port_hit && self.selector_matches(&destination.selector, dst, Some(src))? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Runs `tests` against this policy. Returns the failures in the API's
    /// `[{"user": src, "errors": [...]}]` shape, or an error when a test cannot be evaluated.
    pub(crate) fn run_tests(&self, tests: &[PolicyTest]) -> Result<Vec<Value>, String> {
        let mut failures = Vec::new();
        for test in tests {
            let sources = if test.src.starts_with("group:") {
                let members = self
                    .groups
                    .get(&test.src)
                    .ok_or_else(|| format!("test src group {:?} is not defined", test.src))?;
                if members.is_empty() {
                    return Err(format!("test src group {:?} has no members", test.src));
                }
                members.iter().map(|m| Party::User(m.clone())).collect()
            } else {
                vec![self.parse_party(&test.src)?]
            };
            let proto = match &test.proto {
                Some(p) => parse_proto(p)?,
                None => 6,
            };

            let mut errors = Vec::new();
            for (targets, expect) in [(&test.accept, true), (&test.deny, false)] {
                for target in targets {
                    let (host, port) = split_host_port(target)?;
                    let dst = self.parse_party(host)?;
                    for src in &sources {
                        let allowed = self.allows(src, &dst, port, proto)?;
                        if allowed != expect {
                            let (want, got) = if expect { ("accept", "deny") } else { ("deny", "accept") };
                            errors.push(format!(
                                "{target}: expected {want} from {}, got {got}",
                                party_name(src)
                            ));
                        }
                    }
                }
            }
            if !errors.is_empty() {
                failures.push(json!({"user": test.src, "errors": errors}));
            }
        }
        Ok(failures)
    }
}

fn party_name(party: &Party) -> String {
    match party {
        Party::User(u) => u.clone(),
        Party::Tagged(t) => t.clone(),
        Party::Ip(ip) => ip.to_string(),
    }
}

fn split_host_port(target: &str) -> Result<(&str, u16), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("test target {target:?}: expected host:port"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("test target {target:?}: expected a single port number"))?;
    Ok((host.trim_start_matches('[').trim_end_matches(']'), port))
}

/// Parses a `tests` array.
pub(crate) fn parse_tests(value: &Value) -> Result<Vec<PolicyTest>, String> {
    serde_json::from_value(value.clone()).map_err(|e| format!("tests: {e}"))
}
