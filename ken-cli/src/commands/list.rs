//! `ken list`: a table of Ken's sandboxes.

use ken_core::labels;

use crate::{exit, output, GlobalArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print a JSON array with every field the provider reports, labels included.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<u8> {
    let orchestrator = crate::context::orchestrator(global, ken_core::EventSink::none()).await?;
    let sandboxes = orchestrator.list().await?;
    if args.json {
        output::print_json(&sandboxes)?;
        return Ok(exit::SUCCESS);
    }
    if sandboxes.is_empty() {
        output::note("no sandboxes; create one with `ken new`");
        return Ok(exit::SUCCESS);
    }

    let now = labels::unix_now();
    let rows: Vec<Vec<String>> = sandboxes
        .iter()
        .map(|summary| {
            let info = &summary.info;
            let urls: Vec<String> = summary
                .endpoints
                .iter()
                .map(|e| e.url.to_string())
                .collect();
            vec![
                info.name.to_string(),
                info.state.to_string(),
                if summary.ready { "yes" } else { "no" }.to_owned(),
                output::age(info.created_at, now),
                info.labels.get(labels::OWNER).unwrap_or("-").to_owned(),
                if urls.is_empty() {
                    "-".to_owned()
                } else {
                    urls.join(",")
                },
            ]
        })
        .collect();
    output::print_table(&["NAME", "STATE", "READY", "AGE", "OWNER", "URLS"], &rows)?;
    Ok(exit::SUCCESS)
}
