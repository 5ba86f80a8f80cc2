//! `ken gc`: removes what Ken left behind, found from labels alone.

use ken_core::orchestrator::{GcItem, GcReason};

use crate::{exit, output, GlobalArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// List what would be removed, and remove nothing.
    #[arg(long)]
    dry_run: bool,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<u8> {
    let orchestrator = crate::context::orchestrator(global, ken_core::EventSink::none()).await?;
    let report = orchestrator.gc(args.dry_run).await?;
    let failed: Vec<&GcItem> = report
        .items
        .iter()
        .filter(|item| item.error.is_some())
        .collect();

    if args.json {
        output::print_json(&report)?;
    } else {
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut text = String::new();
        for item in report.items.iter().filter(|item| item.error.is_none()) {
            text.push_str(&format!(
                "{verb} {} {}: {}\n",
                item.kind,
                item.id,
                reason_text(item)
            ));
        }
        for removed in &report.network.removed {
            text.push_str(&format!("{verb} {removed}\n"));
        }
        if report.items.is_empty() && report.network.removed.is_empty() {
            text.push_str("nothing to remove\n");
        }
        output::print_stdout(&text)?;
    }

    if failed.is_empty() {
        return Ok(exit::SUCCESS);
    }
    let details: Vec<String> = failed
        .iter()
        .map(|item| {
            format!(
                "{} {}: {}",
                item.kind,
                item.id,
                item.error.as_deref().unwrap_or_default()
            )
        })
        .collect();
    anyhow::bail!(
        "failed to remove {} of {} resources; run `ken gc` again\n{}",
        failed.len(),
        report.items.len(),
        details.join("\n")
    )
}

/// Says why garbage collection removes `item`.
fn reason_text(item: &GcItem) -> String {
    match item.reason {
        GcReason::Expired => "its time to live has passed".to_owned(),
        GcReason::Abandoned => {
            "its launch never finished and the process that launched it is gone (or its launch deadline passed)"
                .to_owned()
        }
        GcReason::Orphaned => match &item.sandbox {
            Some(sandbox) => format!("its sandbox {sandbox} no longer exists"),
            None => "the sandbox it belongs to no longer exists".to_owned(),
        },
    }
}
