//! Host names and key descriptions that tie tailnet objects to sandbox names.

use rand::Rng;
use sha2::{Digest, Sha256};

/// The length of a scope: hex digits of a hash of the launching machine and owner.
pub(crate) const SCOPE_LEN: usize = 4;

/// The length of the random part of a host name.
const RANDOM_LEN: usize = 6;

/// The length of everything after the sandbox name: `-SCOPE-RANDOM`.
const SUFFIX_LEN: usize = 1 + SCOPE_LEN + 1 + RANDOM_LEN;

/// Returns the scope of sandboxes launched on machine `host` by `owner`: the first
/// [`SCOPE_LEN`] hex digits of the SHA-256 of `HOST/OWNER`.
///
/// Reaping on a shared tailnet deletes online devices only in its own scope, so one
/// user's `ken gc` leaves teammates' sandboxes alone.
pub(crate) fn scope(host: &str, owner: &str) -> String {
    let digest = Sha256::digest(format!("{host}/{owner}").as_bytes());
    let mut text = hex::encode(digest);
    text.truncate(SCOPE_LEN);
    text
}

/// Returns the host name of this machine, as the `ken.launcher` label records it.
pub(crate) fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Returns a new host name for sandbox `name` in `scope`: `PREFIX NAME - SCOPE -
/// 6 random hex digits`.
///
/// The random part makes every attach a new name, because HTTPS certificates are
/// rate limited per name. The prefix is at most 11 and the name at most 40
/// characters, so the result fits a 63-character DNS label.
pub(crate) fn new_hostname(prefix: &str, name: &str, scope: &str) -> String {
    let random: u32 = rand::thread_rng().gen_range(0..=0xff_ffff);
    format!("{prefix}{name}-{scope}-{random:06x}")
}

/// The parts of a host name made by [`new_hostname`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostnameParts<'h> {
    /// The sandbox name.
    pub(crate) sandbox: &'h str,
    /// The scope of the machine and owner that launched it.
    pub(crate) scope: &'h str,
}

/// Splits a host name made by [`new_hostname`]; `None` for any other name.
pub(crate) fn parse_hostname<'h>(prefix: &str, hostname: &'h str) -> Option<HostnameParts<'h>> {
    let rest = hostname.strip_prefix(prefix)?;
    if rest.len() <= SUFFIX_LEN || !rest.is_ascii() {
        return None;
    }
    let (sandbox, suffix) = rest.split_at(rest.len() - SUFFIX_LEN);
    let suffix = suffix.strip_prefix('-')?;
    let (scope, random) = suffix.split_at(SCOPE_LEN);
    let random = random.strip_prefix('-')?;
    let hex = |text: &str| text.chars().all(|c| c.is_ascii_hexdigit());
    (hex(scope) && hex(random)).then_some(HostnameParts { sandbox, scope })
}

const DESCRIPTION_PREFIX: &str = "ken sandbox ";
const SHORT_DESCRIPTION_PREFIX: &str = "ken ";

/// Returns the auth key description for sandbox `name`: `ken sandbox NAME`, or
/// `ken NAME` when that would pass the API's 50-character limit.
pub(crate) fn key_description(name: &str) -> String {
    let long = format!("{DESCRIPTION_PREFIX}{name}");
    if long.len() <= crate::client::keys::MAX_DESCRIPTION_LEN {
        long
    } else {
        format!("{SHORT_DESCRIPTION_PREFIX}{name}")
    }
}

/// Returns the sandbox name in a description made by [`key_description`].
pub(crate) fn sandbox_of_description(description: &str) -> Option<&str> {
    let name = description
        .strip_prefix(DESCRIPTION_PREFIX)
        .or_else(|| description.strip_prefix(SHORT_DESCRIPTION_PREFIX))?;
    ken_core::SandboxName::new(name).ok().map(|_| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_round_trips() {
        let name = "a".repeat(40);
        let scope = scope("build-host", "alice");
        let hostname = new_hostname("k".repeat(11).as_str(), &name, &scope);
        assert!(hostname.len() <= 63, "{hostname}");
        let parts = parse_hostname(&"k".repeat(11), &hostname).expect("parses");
        assert_eq!(parts.sandbox, name);
        assert_eq!(parts.scope, scope);
        let sandbox_of = |hostname: &str| parse_hostname("ken-", hostname).map(|parts| parts.sandbox.to_owned());
        assert_eq!(sandbox_of(&new_hostname("ken-", "demo-1", "beef")).as_deref(), Some("demo-1"));
        assert_eq!(sandbox_of("laptop"), None);
        assert_eq!(sandbox_of("ken-demo-beef-zzzzzz"), None);
        assert_eq!(sandbox_of("ken-demo-abc123"), None, "no scope");
    }

    #[test]
    fn scope_depends_on_host_and_owner() {
        let mine = scope("build-host", "alice");
        assert_eq!(mine.len(), SCOPE_LEN);
        assert!(mine.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(mine, scope("build-host", "alice"));
        assert_ne!(mine, scope("build-host", "bob"));
        assert_ne!(mine, scope("other-host", "alice"));
    }

    #[test]
    fn description_round_trips() {
        for name in ["demo", &"b".repeat(38), &"c".repeat(40)] {
            let description = key_description(name);
            assert!(description.len() <= 50, "{description}");
            assert_eq!(sandbox_of_description(&description), Some(name));
        }
        assert_eq!(sandbox_of_description("ci runner key"), None);
        assert_eq!(sandbox_of_description("ken sandbox Bad Name"), None);
    }
}
