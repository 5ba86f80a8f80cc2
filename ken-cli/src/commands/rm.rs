//! `ken rm`: removes sandboxes and everything made for them.

use futures::future::join_all;
use ken_core::orchestrator::Orchestrator;
use ken_core::{labels, SandboxName};
use serde::Serialize;

use crate::{exit, output, GlobalArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Names of the sandboxes to remove.
    #[arg(value_parser = super::sandbox_name, required_unless_present = "all", conflicts_with = "all")]
    names: Vec<SandboxName>,

    /// Remove every sandbox of the owner (--owner, default the current user).
    #[arg(long)]
    all: bool,

    /// Print a JSON object listing removed, not found and failed sandboxes.
    #[arg(long)]
    pub(crate) json: bool,
}

/// The outcome for each requested sandbox, as `--json` prints it.
#[derive(Debug, Default, Serialize)]
struct RemoveReport {
    removed: Vec<String>,
    not_found: Vec<String>,
    failed: Vec<Failure>,
}

#[derive(Debug, Serialize)]
struct Failure {
    name: String,
    error: String,
}

enum Outcome {
    Removed,
    NotFound,
    Failed(ken_core::Error),
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<u8> {
    let orchestrator = crate::context::orchestrator(global, ken_core::EventSink::none()).await?;
    let mut names = if args.all {
        owned_sandboxes(&orchestrator).await?
    } else {
        args.names
    };
    names.sort();
    names.dedup();
    if args.all && names.is_empty() && !args.json {
        output::note(&format!(
            "no sandboxes of owner {} to remove",
            orchestrator.owner()
        ));
    }

    let outcomes = join_all(names.iter().map(|name| remove(&orchestrator, name))).await;
    let mut report = RemoveReport::default();
    for (name, outcome) in names.iter().zip(outcomes) {
        match outcome {
            Outcome::Removed => report.removed.push(name.to_string()),
            Outcome::NotFound => report.not_found.push(name.to_string()),
            Outcome::Failed(error) => report.failed.push(Failure {
                name: name.to_string(),
                error: error.to_string(),
            }),
        }
    }

    if args.json {
        output::print_json(&report)?;
    } else {
        let text: String = report
            .removed
            .iter()
            .map(|name| format!("removed {name}\n"))
            .collect();
        output::print_stdout(&text)?;
        for name in &report.not_found {
            output::note(&format!("sandbox {name} not found; nothing to remove"));
        }
    }
    match report.failed.as_slice() {
        [] => Ok(exit::SUCCESS),
        failed => {
            let details: Vec<String> = failed
                .iter()
                .map(|f| format!("{}: {}", f.name, f.error))
                .collect();
            anyhow::bail!(
                "failed to remove {} of {} sandboxes; retry `ken rm`, or run `ken gc` later\n{}",
                failed.len(),
                names.len(),
                details.join("\n")
            )
        }
    }
}

/// Returns the names of the sandboxes whose owner label is this orchestrator's owner.
async fn owned_sandboxes(orchestrator: &Orchestrator) -> anyhow::Result<Vec<SandboxName>> {
    let sandboxes = orchestrator.list().await?;
    Ok(sandboxes
        .into_iter()
        .filter(|summary| summary.info.labels.get(labels::OWNER) == Some(orchestrator.owner()))
        .map(|summary| summary.info.name)
        .collect())
}

async fn remove(orchestrator: &Orchestrator, name: &SandboxName) -> Outcome {
    match orchestrator.sandbox(name).await {
        Ok(_) => {}
        Err(error) if error.is_not_found() => return Outcome::NotFound,
        Err(error) => return Outcome::Failed(error),
    }
    match orchestrator.destroy(name).await {
        Ok(()) => Outcome::Removed,
        Err(error) => {
            tracing::error!(sandbox.name = %name, %error, "failed to remove sandbox");
            Outcome::Failed(error)
        }
    }
}
