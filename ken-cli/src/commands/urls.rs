//! `ken urls`: prints the URLs of a sandbox's exposed ports.

use ken_core::SandboxName;

use crate::{exit, output, GlobalArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Name of the sandbox.
    #[arg(value_parser = super::sandbox_name)]
    name: SandboxName,

    /// Print a JSON array of endpoints (name, port, url).
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<u8> {
    let orchestrator = crate::context::orchestrator(global, ken_core::EventSink::none()).await?;
    let endpoints = orchestrator.endpoints(&args.name).await?;
    if args.json {
        output::print_json(&endpoints)?;
        return Ok(exit::SUCCESS);
    }
    if endpoints.is_empty() {
        output::note(&format!(
            "sandbox {} exposes no ports; list them under [[ports]] in ken.toml",
            args.name
        ));
        return Ok(exit::SUCCESS);
    }
    let width = output::name_width(endpoints.iter().map(|e| e.name.as_str()));
    let text: String = endpoints
        .iter()
        .map(|endpoint| format!("{:<width$}  {}\n", endpoint.name, endpoint.url))
        .collect();
    output::print_stdout(&text)?;
    Ok(exit::SUCCESS)
}
