//! Generators for ids, keys and timestamps in Tailscale's formats.

use rand::distributions::Alphanumeric;
use rand::Rng;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Returns `n` random ASCII letters and digits.
pub(crate) fn random_alnum(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// Returns a stable id like `nJ1rjuLf5r11CNTRL` (nodes start with `n`, keys with `k`).
pub(crate) fn stable_id(prefix: char) -> String {
    format!("{prefix}{}CNTRL", random_alnum(12))
}

/// Returns a legacy numeric device id.
pub(crate) fn numeric_id() -> String {
    let n: u64 = rand::thread_rng().gen_range(1_000_000_000_000_000..9_000_000_000_000_000);
    n.to_string()
}

/// Formats `t` as RFC 3339 in UTC with whole seconds, as the API does.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}
