//! `ken new`: launches a sandbox from a manifest and shows each phase as it runs.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use ken_core::orchestrator::{LaunchOptions, Launched, Orchestrator};
use ken_core::sandbox::Endpoint;
use ken_core::{Manifest, SandboxName};

use crate::context::Harness;
use crate::output;
use crate::progress::{Progress, Style};
use crate::signal::{self, Interrupt};
use crate::{exit, GlobalArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Name of the new sandbox [default: the manifest's project name and 6 random hex digits].
    #[arg(long, value_parser = super::sandbox_name)]
    name: Option<SandboxName>,

    /// Path of the manifest.
    #[arg(long, default_value = "ken.toml", env = "KEN_MANIFEST")]
    manifest: PathBuf,

    /// Print the result as one JSON object on stdout, and progress as JSON lines on stderr.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Reads and validates the manifest. Every failure here is invalid input (exit 2) and
/// happens before anything is created.
pub(crate) fn load_manifest(path: &Path) -> anyhow::Result<Manifest> {
    match Manifest::load(path) {
        Ok(manifest) => Ok(manifest),
        Err(ken_core::Error::Io { source, .. }) => Err(ken_core::Error::invalid(
            "manifest path",
            path.display().to_string(),
            format!("{source}; run ken in the folder of your ken.toml or pass --manifest PATH"),
        )
        .into()),
        Err(error) => Err(error.into()),
    }
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<u8> {
    let manifest = load_manifest(&args.manifest)?;
    let harness = manifest
        .harness
        .as_ref()
        .map(Harness::from_config)
        .transpose()?;
    let progress = Progress::new(Style::detect(args.json, global.logs_to_stderr()));
    let orchestrator =
        crate::context::orchestrator_with(
        global,
        progress.sink(),
        harness.as_ref(),
        Some(&manifest.network),
    )
    .await?;

    match launch(&orchestrator, &progress, &manifest, args.name).await? {
        Ok(launched) => {
            print_result(&launched, args.json)?;
            Ok(exit::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

/// Launches a sandbox from `manifest`, showing progress. On Ctrl-C it drops the
/// launch, waits for the teardown of what it made and returns the exit status as
/// the error variant of the inner result.
pub(crate) async fn launch(
    orchestrator: &Orchestrator,
    progress: &Arc<Progress>,
    manifest: &Manifest,
    name: Option<SandboxName>,
) -> anyhow::Result<Result<Launched, u8>> {
    let mut options = LaunchOptions::default();
    if let Some(name) = name {
        options = options.name(name);
    }

    // The launch future is boxed so that it can be dropped on Ctrl-C: dropping it is
    // what starts the teardown of everything it made.
    let mut launch = Box::pin(orchestrator.launch(manifest, options));
    let interrupt = tokio::select! {
        result = &mut launch => return Ok(Ok(result?)),
        interrupt = signal::interrupted() => interrupt,
    };
    progress.interrupt();
    progress.note("cancelled; removing what was made (press Ctrl-C again to exit at once)");
    tracing::info!(signal = ?interrupt, "launch cancelled; waiting for its teardown");
    drop(launch);
    wait_for_teardown(orchestrator, progress, interrupt)
        .await
        .map(Err)
}

/// Waits for the teardown of a dropped launch; a second signal exits at once.
async fn wait_for_teardown(
    orchestrator: &Orchestrator,
    progress: &Progress,
    interrupt: Interrupt,
) -> anyhow::Result<u8> {
    tokio::select! {
        () = orchestrator.wait_for_teardowns() => {}
        _ = signal::interrupted() => {
            progress.note("exiting without waiting; run `ken gc` to remove what the launch left behind");
        }
    }
    Ok(interrupt.exit_code())
}

fn print_result(launched: &Launched, json: bool) -> anyhow::Result<()> {
    let name = launched.sandbox.name();
    if json {
        let value = serde_json::json!({
            "name": name,
            "endpoints": launched.endpoints,
            "report": launched.report,
        });
        return output::print_json(&value);
    }
    let mut text = format!("{name}\n");
    text.push_str(&endpoint_lines(name.as_str(), &launched.endpoints));
    text.push_str(&format!(
        "ready in {}\n",
        output::duration(launched.report.total)
    ));
    output::print_stdout(&text)
}

/// Returns one `name  url` line per endpoint of sandbox `sandbox`. An endpoint with
/// credentials also shows its user name and how to read the password, never the
/// password itself.
pub(crate) fn endpoint_lines(sandbox: &str, endpoints: &[Endpoint]) -> String {
    let width = output::name_width(endpoints.iter().map(|e| e.name.as_str()));
    let mut text = String::new();
    for endpoint in endpoints {
        match &endpoint.credentials {
            Some(credentials) => text.push_str(&format!(
                "{:<width$}  {}  (user {}, password: {})\n",
                endpoint.name,
                endpoint.url,
                credentials.username,
                password_command(sandbox)
            )),
            None => text.push_str(&format!("{:<width$}  {}\n", endpoint.name, endpoint.url)),
        }
    }
    text
}

/// Returns the command that prints the OpenCode server's password, which
/// `OpenCodeHarness::start` stores in the sandbox. Only the OpenCode harness returns
/// endpoints with credentials.
pub(crate) fn password_command(sandbox: &str) -> String {
    format!(
        "`ken exec {sandbox} -- cat {}/password`",
        ken_harness_opencode::state_dir()
    )
}
