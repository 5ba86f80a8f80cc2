//! `ken policy`: shows, checks and applies Ken's section of the tailnet's policy file.

use std::path::PathBuf;

use ken_core::policy::AccessPolicy;
use ken_network_tailscale::TailscaleNetwork;

use crate::{exit, output};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Action,

    /// Read the Tailscale settings from this manifest's `[network]` table as well as
    /// from the environment (the manifest's kind must be "tailscale").
    #[arg(long, global = true)]
    manifest: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Print the policy section Ken needs: tag owners, one grant from members to the
    /// sandbox tag, and tests proving that sandboxes cannot reach each other.
    Show,
    /// Report whether the tailnet's policy file holds Ken's section and no rule that
    /// lets sandboxes open connections. Exits 1 when it does not.
    Check,
    /// Merge Ken's section into the tailnet's policy file, keeping every other rule
    /// and comment; refuses when an existing rule would let sandboxes reach each other.
    Apply,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<u8> {
    let network = network(args.manifest.as_deref())?;
    let policy = AccessPolicy::standard();
    match args.action {
        Action::Show => {
            let section = network.policy_section(&policy).await?;
            output::print_stdout(&section.to_hujson())?;
            Ok(exit::SUCCESS)
        }
        Action::Check => {
            let status = network.check_policy(&policy).await?;
            let mut text = String::new();
            text.push_str(if status.section_present {
                "Ken's section is present\n"
            } else {
                "Ken's section is missing; run `ken policy apply`\n"
            });
            for conflict in &status.conflicts {
                text.push_str(&format!(
                    "conflict at line {} in {}: {} ({}): {}\n",
                    conflict.line, conflict.section, conflict.source, conflict.reason, conflict.rule
                ));
            }
            output::print_stdout(&text)?;
            Ok(if status.is_in_force() {
                exit::SUCCESS
            } else {
                exit::FAILURE
            })
        }
        Action::Apply => {
            let outcome = network.apply_policy(&policy).await?;
            let text = if outcome.changed {
                format!(
                    "policy file updated (attempt {} of at most {})\n",
                    outcome.attempts,
                    ken_network_tailscale::policy::MAX_APPLY_ATTEMPTS
                )
            } else {
                "policy file already holds Ken's section; nothing written\n".to_owned()
            };
            output::print_stdout(&text)?;
            Ok(exit::SUCCESS)
        }
    }
}

fn network(manifest: Option<&std::path::Path>) -> anyhow::Result<TailscaleNetwork> {
    let Some(path) = manifest else {
        return Ok(TailscaleNetwork::from_env()?);
    };
    let manifest = super::new::load_manifest(path)?;
    if manifest.network.kind != "tailscale" {
        return Err(ken_core::Error::invalid(
            "network.kind",
            manifest.network.kind.clone(),
            format!(
                "`ken policy` manages a tailnet's policy, but {} does not use kind = \"tailscale\" in [network]",
                path.display()
            ),
        )
        .into());
    }
    Ok(TailscaleNetwork::from_settings(&manifest.network.settings)?)
}
