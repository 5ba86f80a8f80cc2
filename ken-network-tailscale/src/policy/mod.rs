//! Ken's section of the tailnet policy file: rendering, merging into the admins'
//! HuJSON, the conflict check, and the apply loop with ETags.

use ken_core::{Error, Result};

use crate::client::{is_precondition_failed, TailscaleClient};

pub mod conflict;
pub(crate) mod hujson;
pub mod merge;
pub mod render;

pub use conflict::Conflict;
pub use merge::{merge, MARKER};
pub use render::{render, PolicySection, RenderOptions};

/// How many times [`apply`] reads, merges and writes before giving up when the
/// policy file keeps changing under it (HTTP 412).
pub const MAX_APPLY_ATTEMPTS: u32 = 5;

/// The result of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Whether the policy file was written; `false` when Ken's section was there.
    pub changed: bool,
    /// How many read-merge-write rounds it took.
    pub attempts: u32,
    /// The policy file's text after the apply.
    pub text: String,
}

/// The result of [`check`] on the tailnet's policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    /// Whether the sandbox tag has owners and Ken's grant is present.
    pub section_present: bool,
    /// Rules that let sandboxes open connections.
    pub conflicts: Vec<Conflict>,
    /// The owners of the sandbox tag in the file's `tagOwners`, empty when the tag
    /// has none.
    pub tag_owners: Vec<String>,
}

impl PolicyStatus {
    /// Returns whether the policy keeps sandboxes apart and lets users in.
    pub fn is_in_force(&self) -> bool {
        self.section_present && self.conflicts.is_empty()
    }
}

/// Merges `section` into the tailnet's policy file.
///
/// Each round reads the file with its ETag, checks it for conflicting rules
/// (refusing with the rules quoted), merges Ken's entries, validates the result
/// with the API (which runs the file's tests), and writes it with `If-Match`. When
/// the file changed between the read and the write (HTTP 412), the round starts
/// over from a fresh read, at most [`MAX_APPLY_ATTEMPTS`] times, so no rule written
/// meanwhile is lost.
pub async fn apply(client: &TailscaleClient, section: &PolicySection) -> Result<ApplyOutcome> {
    for attempt in 1..=MAX_APPLY_ATTEMPTS {
        let current = client.get_policy().await?;
        let root = hujson::parse(&current.text)?;
        conflict::reject(&conflict::find_conflicts(&current.text, &root, &section.tag), &section.tag)?;

        let merged = merge(&current.text, section)?;
        if merged == current.text {
            tracing::info!(provider = "tailscale", phase = "policy", etag = %current.etag, "the policy file already contains Ken's section");
            return Ok(ApplyOutcome {
                changed: false,
                attempts: attempt,
                text: merged,
            });
        }
        client.validate_policy(&merged).await?;

        match client.set_policy(&merged, &current.etag).await {
            Ok(etag) => {
                tracing::info!(provider = "tailscale", phase = "policy", attempt, old_etag = %current.etag, new_etag = %etag, "wrote Ken's section into the policy file");
                return Ok(ApplyOutcome {
                    changed: true,
                    attempts: attempt,
                    text: merged,
                });
            }
            Err(error) if is_precondition_failed(&error) => {
                tracing::warn!(provider = "tailscale", phase = "policy", attempt, etag = %current.etag, "the policy file changed since it was read; reading it again");
            }
            Err(error) => return Err(error),
        }
    }
    Err(Error::Backend {
        service: "tailscale".to_owned(),
        message: format!(
            "the policy file changed between each read and write {MAX_APPLY_ATTEMPTS} times in a row; \
             run `ken policy apply` again once other edits have settled"
        ),
        source: None,
        retryable: true,
    })
}

/// Reads the tailnet's policy file and reports whether `section` is in force,
/// without writing anything.
pub async fn check(client: &TailscaleClient, section: &PolicySection) -> Result<PolicyStatus> {
    let current = client.get_policy().await?;
    let root = hujson::parse(&current.text)?;
    Ok(PolicyStatus {
        section_present: merge::contains_section(&root, section),
        conflicts: conflict::find_conflicts(&current.text, &root, &section.tag),
        tag_owners: merge::tag_owners(&root, &section.tag),
    })
}

/// Turns a [`PolicyStatus`] that is not in force into the error `ensure_policy`
/// returns.
pub(crate) fn status_error(status: &PolicyStatus, tag: &str) -> Result<()> {
    conflict::reject(&status.conflicts, tag)?;
    if !status.section_present {
        return Err(Error::invalid(
            "policy file",
            "(the tailnet's current policy)",
            format!(
                "it does not let members reach sandboxes tagged {tag}, or {tag} has no owner in tagOwners; \
                 run `ken policy apply` to add Ken's section (`ken policy show` prints it), \
                 or set apply_policy = true in the manifest's [network] table to apply it automatically"
            ),
        ));
    }
    Ok(())
}
