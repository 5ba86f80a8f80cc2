//! `ken prompt`: sends a prompt to the agent of a sandbox, launching the sandbox
//! first when no name is given, and shows the agent's progress until the turn ends.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ken_core::harness::{AgentEvent, AgentHarness, PromptRequest};
use ken_core::orchestrator::{ports_from_labels, Orchestrator};
use ken_core::sandbox::Sandbox;
use ken_core::{Manifest, SandboxName};
use ken_harness_opencode::{OpenCodeHarness, OpenCodeSettings, DEFAULT_PORT, DEFAULT_USERNAME};

use crate::context::Harness;
use crate::progress::{Progress, Style};
use crate::signal::{self, Interrupt};
use crate::turn::{self, FollowEnd, TurnEvents, TurnHeader, TurnView};
use crate::{exit, output, GlobalArgs};

/// How long Ctrl-C waits for the agent to confirm the abort.
const ABORT_WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  ken prompt --manifest examples/demo-app/ken-agent.toml \"change the theme color to pink\"
  ken prompt --name agent-1a2b3c \"now make the header bold\"
  ken prompt --name agent-1a2b3c --session ses_123 --detach \"add a test\"

Without --name, a new sandbox is launched from the manifest, whose [harness] table
chooses the agent. With --name, the manifest is optional: without one, the sandbox
is assumed to run OpenCode on the port its labels publish.
Ctrl-C aborts the turn and leaves the sandbox running (exit status 130).
Exit status: 0 finished, 5 failed, 6 aborted, 1 the sandbox or the connection failed.")]
pub(crate) struct Args {
    /// The prompt text.
    #[arg(value_name = "TEXT")]
    text: String,

    /// Prompt the agent of this existing sandbox instead of launching a new one.
    #[arg(long, value_parser = super::sandbox_name)]
    name: Option<SandboxName>,

    /// Path of the manifest [default: ken.toml when launching a new sandbox].
    #[arg(long, env = "KEN_MANIFEST")]
    manifest: Option<PathBuf>,

    /// Continue this session of the agent instead of starting a new one.
    #[arg(long, value_name = "ID", requires = "name")]
    session: Option<String>,

    /// Send the prompt and exit at once, after printing the session. Follow it with
    /// `ken attach`.
    #[arg(long)]
    detach: bool,

    /// Print the session and every agent event as JSON lines on stdout.
    #[arg(long)]
    pub(crate) json: bool,

    /// How long to wait for an existing sandbox to become ready, for example `90s`.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = super::exec::parse_positive_duration)]
    wait_timeout: Duration,
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<u8> {
    if args.text.trim().is_empty() {
        return Err(ken_core::Error::invalid(
            "prompt text",
            &args.text,
            "the prompt is empty; write what the agent should do, as in `ken prompt \"fix the failing test\"`",
        )
        .into());
    }
    let manifest = match (&args.manifest, &args.name) {
        (Some(path), _) => Some(super::new::load_manifest(path)?),
        (None, None) => Some(super::new::load_manifest(&PathBuf::from("ken.toml"))?),
        (None, Some(_)) => None,
    };
    let harness = match &manifest {
        Some(manifest) => Some(harness_of(manifest)?),
        None => None,
    };

    let (sandbox, agent_url, harness) = match &args.name {
        None => {
            let manifest = manifest
                .as_ref()
                .expect("a manifest is loaded when no name is given");
            let harness = harness.expect("the harness is built when a manifest is loaded");
            match launch(global, manifest, &harness, args.json).await? {
                Ok((sandbox, agent_url)) => (sandbox, agent_url, harness),
                Err(code) => return Ok(code),
            }
        }
        Some(name) => {
            let orchestrator =
                crate::context::orchestrator(global, ken_core::EventSink::none()).await?;
            let wait = super::exec::wait_until_ready(&orchestrator, name, args.wait_timeout);
            let sandbox = tokio::select! {
                sandbox = wait => sandbox?,
                interrupt = signal::interrupted() => return Ok(interrupt.exit_code()),
            };
            let harness =
                harness.unwrap_or_else(|| Harness::OpenCode(Arc::new(running_opencode(&sandbox))));
            let agent_url = agent_url_of(&orchestrator, &sandbox, &harness).await;
            (sandbox, agent_url, harness)
        }
    };

    let request = PromptRequest {
        text: args.text.clone(),
        session: args.session.clone(),
        title: None,
    };
    let agent = harness.as_dyn();
    tracing::info!(sandbox.name = %sandbox.name(), phase = "prompt", harness = agent.name(), "sending the prompt");
    let mut turn = tokio::select! {
        turn = agent.prompt(&sandbox, request) => turn?,
        interrupt = signal::interrupted() => return Ok(interrupt.exit_code()),
    };
    tracing::info!(sandbox.name = %sandbox.name(), phase = "prompt", session = %turn.session, "prompt sent");

    let mut view = TurnView::new(args.json);
    let has_login = agent_url.is_some() && matches!(harness, Harness::OpenCode(_));
    view.header(&TurnHeader {
        sandbox: sandbox.name().to_string(),
        session: turn.session.clone(),
        agent_url,
        username: has_login.then(|| DEFAULT_USERNAME.to_owned()),
    })?;
    if args.detach {
        output::note(&format!(
            "the agent is working; follow it with `ken attach {} --session {}`",
            sandbox.name(),
            turn.session
        ));
        return Ok(exit::SUCCESS);
    }

    match turn::follow(&mut turn.events, &mut view).await {
        FollowEnd::Ended(code) => Ok(code),
        FollowEnd::Broken(error) => {
            exit::report(&error, args.json);
            Ok(exit::FAILURE)
        }
        FollowEnd::Interrupted(interrupt) => {
            abort(
                agent.as_ref(),
                &sandbox,
                &turn.session,
                &mut turn.events,
                &mut view,
                interrupt,
            )
            .await
        }
    }
}

/// Returns the harness of the manifest's `[harness]` table, which `ken prompt` needs.
fn harness_of(manifest: &Manifest) -> anyhow::Result<Harness> {
    let Some(config) = &manifest.harness else {
        return Err(ken_core::Error::invalid(
            "manifest",
            &manifest.name,
            "it has no [harness] table, so no agent runs in its sandboxes; add one, for example\n\
             [harness]\nkind = \"opencode\"\nmodel = \"anthropic/claude-sonnet-4-5\"",
        )
        .into());
    };
    Harness::from_config(config)
}

/// Launches a new sandbox with the agent, showing progress as `ken new` does.
/// Returns the sandbox and the agent's URL, or the exit status after Ctrl-C.
async fn launch(
    global: &GlobalArgs,
    manifest: &Manifest,
    harness: &Harness,
    json: bool,
) -> anyhow::Result<Result<(Sandbox, Option<String>), u8>> {
    let progress = Progress::new(Style::detect(json, global.logs_to_stderr()));
    let orchestrator =
        crate::context::orchestrator_with(
        global,
        progress.sink(),
        Some(harness),
        Some(&manifest.network),
    )
    .await?;
    let launched = match super::new::launch(&orchestrator, &progress, manifest, None).await? {
        Ok(launched) => launched,
        Err(code) => return Ok(Err(code)),
    };
    let agent_url = launched
        .endpoints
        .iter()
        .find(|endpoint| endpoint.credentials.is_some())
        .map(|endpoint| endpoint.url.to_string());
    if !json {
        let lines =
            super::new::endpoint_lines(launched.sandbox.name().as_str(), &launched.endpoints);
        progress.note(&format!(
            "sandbox {} is ready\n{}",
            launched.sandbox.name(),
            lines.trim_end()
        ));
    }
    Ok(Ok((launched.sandbox, agent_url)))
}

/// Returns an OpenCode harness for a sandbox launched elsewhere: the default
/// settings, on the port its labels publish as 4096 or else as `agent`.
///
/// The model settings stay empty because `prompt` and `abort` only need the port,
/// and the server in the sandbox has its own configuration.
pub(crate) fn running_opencode(sandbox: &Sandbox) -> OpenCodeHarness {
    let ports = ports_from_labels(sandbox.info());
    let port = if ports.iter().any(|spec| spec.port == DEFAULT_PORT) {
        DEFAULT_PORT
    } else {
        ports
            .iter()
            .find(|spec| spec.name == "agent")
            .map_or(DEFAULT_PORT, |spec| spec.port)
    };
    OpenCodeHarness::new(OpenCodeSettings {
        port,
        ..OpenCodeSettings::default()
    })
}

/// Returns the URL of the OpenCode server's published port, if any.
pub(crate) async fn agent_url_of(
    orchestrator: &Orchestrator,
    sandbox: &Sandbox,
    harness: &Harness,
) -> Option<String> {
    let Harness::OpenCode(opencode) = harness else {
        return None;
    };
    let port = opencode.settings().port;
    match orchestrator.endpoints(sandbox.name()).await {
        Ok(endpoints) => endpoints
            .into_iter()
            .find(|endpoint| endpoint.port == port)
            .map(|endpoint| endpoint.url.to_string()),
        Err(error) => {
            tracing::warn!(sandbox.name = %sandbox.name(), phase = "prompt", %error, "failed to look up the agent's URL");
            None
        }
    }
}

/// Aborts the turn after Ctrl-C and waits briefly for the agent to confirm it. A
/// second signal exits at once. The sandbox keeps running either way.
async fn abort(
    agent: &dyn AgentHarness,
    sandbox: &Sandbox,
    session: &str,
    events: &mut TurnEvents,
    view: &mut TurnView,
    interrupt: Interrupt,
) -> anyhow::Result<u8> {
    output::note(&format!(
        "aborting the turn of session {session} (press Ctrl-C again to exit at once); sandbox {} keeps running",
        sandbox.name()
    ));
    tracing::info!(sandbox.name = %sandbox.name(), phase = "prompt", session = %session, "aborting the turn after a signal");
    let confirm = async {
        agent.abort(sandbox, session).await?;
        wait_for_abort(events, view).await
    };
    let confirmed = tokio::select! {
        result = tokio::time::timeout(ABORT_WAIT, confirm) => result,
        _ = signal::interrupted() => return Ok(interrupt.exit_code()),
    };
    match confirmed {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(sandbox.name = %sandbox.name(), phase = "prompt", session = %session, %error, "failed to abort the turn");
            output::note(&format!("failed to abort the turn: {error}"));
        }
        Err(_) => output::note(&format!(
            "the agent did not confirm the abort within {}; it may still be working",
            humantime::format_duration(ABORT_WAIT)
        )),
    }
    Ok(interrupt.exit_code())
}

/// Shows the remaining events until the turn ends.
async fn wait_for_abort(events: &mut TurnEvents, view: &mut TurnView) -> ken_core::Result<()> {
    use futures::StreamExt;

    while let Some(event) = events.next().await {
        let event = event?;
        // Output errors cannot change the exit status any more, so they are ignored.
        let _ = view.show(&event);
        if event.is_terminal() {
            if !matches!(event, AgentEvent::Aborted) {
                output::note("the turn ended before the abort reached it");
            }
            return Ok(());
        }
    }
    Ok(())
}
