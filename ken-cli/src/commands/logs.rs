//! `ken logs`: prints the logs of a sandbox's startup steps and services.

use ken_core::SandboxName;

use crate::stream::{self, CopyEnd};
use crate::{exit, signal, GlobalArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Name of the sandbox.
    #[arg(value_parser = super::sandbox_name)]
    name: SandboxName,

    /// A step or service from ken.toml [default: the last 50 lines of every log].
    service: Option<String>,

    /// Keep printing new lines until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<u8> {
    let orchestrator = crate::context::orchestrator(global, ken_core::EventSink::none()).await?;
    let mut process = orchestrator
        .logs(&args.name, args.service.as_deref(), args.follow)
        .await?;
    let killer = process.kill_handle();

    // Ctrl-C is the normal way to end `--follow`, so it ends the command quietly
    // with status 0, and so does a reader that went away (`| head`).
    let copied = tokio::select! {
        copied = stream::copy_output(&mut process) => copied?,
        _ = signal::interrupted() => CopyEnd::BrokenPipe,
    };
    if copied == CopyEnd::BrokenPipe {
        stream::kill(&killer).await;
        return Ok(exit::SUCCESS);
    }

    let status = process.finish().await?;
    if !status.success() {
        let target = match &args.service {
            Some(service) => format!("the log of {service} in sandbox {}", args.name),
            None => format!("the logs of sandbox {}", args.name),
        };
        anyhow::bail!("reading {target} failed ({status}); its error output is above");
    }
    Ok(exit::SUCCESS)
}
