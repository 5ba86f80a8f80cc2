//! `ken attach`: follows the events of an OpenCode session running in a sandbox,
//! until its turn ends or Ctrl-C.

use futures::stream::BoxStream;
use futures::StreamExt;
use ken_core::SandboxName;
use ken_harness_opencode::{OpenCodeClient, DEFAULT_USERNAME};
use serde_json::Value;

use crate::context::Harness;
use crate::turn::{self, FollowEnd, TurnHeader, TurnView};
use crate::{exit, output, GlobalArgs};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Without --session, follows the first session that shows activity after attaching.
Ctrl-C stops following and leaves the turn running (exit status 130).
Exit status: 0 finished, 5 failed, 6 aborted, 1 the sandbox or the connection failed.")]
pub(crate) struct Args {
    /// Name of the sandbox.
    #[arg(value_parser = super::sandbox_name)]
    name: SandboxName,

    /// The session to follow, as `ken prompt` prints it.
    #[arg(long, value_name = "ID")]
    session: Option<String>,

    /// Print every agent event as a JSON line on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<u8> {
    let orchestrator = crate::context::orchestrator(global, ken_core::EventSink::none()).await?;
    let sandbox = orchestrator.sandbox(&args.name).await?;
    let opencode = std::sync::Arc::new(super::prompt::running_opencode(&sandbox));
    let client = opencode.client(&sandbox).await?;
    let harness = Harness::OpenCode(opencode);
    let agent_url = super::prompt::agent_url_of(&orchestrator, &sandbox, &harness).await;

    // NOTE: opencode-ai 1.18.33 returns HTTP 500 for an unknown session id, not
    // 404, so a mistyped --session exits with status 1 rather than 3.
    let known = match &args.session {
        Some(id) => Some(client.session(id).await?),
        None => None,
    };
    let mut feed = client.events().await?;
    if known.is_none() {
        output::note(&format!(
            "attached to sandbox {}; waiting for a session to show activity (Ctrl-C to stop)",
            args.name
        ));
    }
    let (session, directory, first) = match known {
        Some(info) => (
            info["id"].as_str().unwrap_or_default().to_owned(),
            info["directory"].as_str().unwrap_or_default().to_owned(),
            None,
        ),
        None => {
            let found = tokio::select! {
                found = first_active_session(&mut feed) => found?,
                interrupt = crate::signal::interrupted() => return Ok(interrupt.exit_code()),
            };
            let info = client.session(&found.0).await?;
            let directory = info["directory"].as_str().unwrap_or_default().to_owned();
            (found.0, directory, Some(found.1))
        }
    };
    tracing::info!(sandbox.name = %args.name, phase = "attach", session = %session, "following the session");

    let mut view = TurnView::new(args.json);
    view.header(&TurnHeader {
        sandbox: args.name.to_string(),
        session: session.clone(),
        username: agent_url.as_ref().map(|_| DEFAULT_USERNAME.to_owned()),
        agent_url,
    })?;
    let mut events = turn_events(client, session, directory, first, feed);
    match turn::follow(&mut events, &mut view).await {
        FollowEnd::Ended(code) => Ok(code),
        FollowEnd::Broken(error) => {
            exit::report(&error, args.json);
            Ok(exit::FAILURE)
        }
        FollowEnd::Interrupted(interrupt) => {
            output::note("stopped following; the turn keeps running");
            Ok(interrupt.exit_code())
        }
    }
}

/// Reads the feed until an event of some session shows it at work, and returns that
/// session's id and the event.
async fn first_active_session(
    feed: &mut BoxStream<'static, ken_core::Result<Value>>,
) -> anyhow::Result<(String, Value)> {
    while let Some(event) = feed.next().await {
        let event = event?;
        let kind = event["type"].as_str().unwrap_or_default();
        let busy = kind == "session.status" && event["properties"]["status"]["type"] != "idle";
        if !(busy || kind.starts_with("message.")) {
            continue;
        }
        let properties = &event["properties"];
        let session = properties["sessionID"]
            .as_str()
            .or_else(|| properties["part"]["sessionID"].as_str())
            .or_else(|| properties["info"]["sessionID"].as_str());
        if let Some(session) = session {
            return Ok((session.to_owned(), event.clone()));
        }
    }
    Err(anyhow::anyhow!(
        "the agent's event stream ended before any session showed activity"
    ))
}

/// Follows one session's turn from the raw feed, starting with `first` when the
/// search for an active session already read it from the feed.
fn turn_events(
    client: OpenCodeClient,
    session: String,
    directory: String,
    first: Option<Value>,
    feed: BoxStream<'static, ken_core::Result<Value>>,
) -> turn::TurnEvents {
    let feed = futures::stream::iter(first.map(Ok)).chain(feed).boxed();
    ken_harness_opencode::follow_turn(client, session, directory, feed)
}
