//! The agent harness trait: an agent server (or CLI) running inside a sandbox.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;

use crate::error::{Result, Secret};
use crate::sandbox::{Endpoint, Sandbox};

/// The settings a harness starts with inside a sandbox.
#[derive(Debug, Clone, Default)]
pub struct HarnessContext {
    /// The project directory inside the sandbox (the clone, or a folder of it).
    pub project_dir: String,
    /// Secrets from the host's environment, such as model API keys, by name.
    pub secrets: BTreeMap<String, Secret>,
}

/// A prompt for the agent.
#[derive(Debug, Clone, Default)]
pub struct PromptRequest {
    /// The prompt text.
    pub text: String,
    /// The session to continue; a new session when `None`.
    pub session: Option<String>,
    /// A title for a new session.
    pub title: Option<String>,
}

/// The status of a tool call made by the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolStatus {
    /// Announced, not started.
    Pending,
    /// Running.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed,
}

/// Something the agent did during a turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentEvent {
    /// A piece of the agent's reply text.
    Text {
        /// The new text.
        delta: String,
    },
    /// A tool call started or changed status.
    ToolCall {
        /// The call's id.
        id: String,
        /// The tool's name, for example `bash` or `edit`.
        tool: String,
        /// The call's status.
        status: ToolStatus,
        /// A one-line summary of the call, for example the command or the file.
        title: Option<String>,
    },
    /// The agent changed a file.
    FileEdited {
        /// Path of the file, relative to the project when possible.
        path: String,
    },
    /// The agent requests a permission.
    PermissionRequested {
        /// The request's id.
        id: String,
        /// The permission requested.
        permission: String,
    },
    /// A non-fatal error reported by the agent.
    Error {
        /// The message.
        message: String,
    },
    /// The turn finished.
    Finished {
        /// The final reply text, when the harness has it.
        text: Option<String>,
    },
    /// The turn failed.
    Failed {
        /// Why, in the agent's or provider's words.
        message: String,
    },
    /// The turn was aborted.
    Aborted,
}

impl AgentEvent {
    /// Returns true for the events that end a turn.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            AgentEvent::Finished { .. } | AgentEvent::Failed { .. } | AgentEvent::Aborted
        )
    }
}

/// A running turn: its session and its stream of events, which ends after a terminal
/// event.
pub struct AgentTurn {
    /// The session the turn belongs to.
    pub session: String,
    /// The turn's events.
    pub events: BoxStream<'static, Result<AgentEvent>>,
}

impl fmt::Debug for AgentTurn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentTurn")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

/// An agent that runs inside a sandbox: a server (OpenCode) or a one-shot CLI.
#[async_trait]
pub trait AgentHarness: Send + Sync + fmt::Debug {
    /// Returns the harness's short name, for example `opencode`.
    fn name(&self) -> &str;

    /// Returns the Dockerfile lines that install the agent in an image.
    fn image_lines(&self) -> Vec<String>;

    /// Starts the agent inside the sandbox and waits until it responds. Returns the
    /// endpoints it offers (a web UI, an API), with their credentials.
    async fn start(&self, sandbox: &Sandbox, context: &HarnessContext) -> Result<Vec<Endpoint>>;

    /// Sends a prompt and returns the turn's event stream.
    async fn prompt(&self, sandbox: &Sandbox, request: PromptRequest) -> Result<AgentTurn>;

    /// Aborts the running turn of `session`.
    async fn abort(&self, sandbox: &Sandbox, session: &str) -> Result<()>;
}

/// A finished turn: its session and every event it produced, the terminal one last.
#[derive(Debug, Clone)]
pub struct TurnTranscript {
    /// The session the turn belongs to.
    pub session: String,
    /// The turn's events in order.
    pub events: Vec<AgentEvent>,
}

impl TurnTranscript {
    /// Returns the event that ended the turn, if the stream ended with one.
    pub fn outcome(&self) -> Option<&AgentEvent> {
        self.events.last().filter(|event| event.is_terminal())
    }
}

/// Conveniences available on every [`AgentHarness`].
#[async_trait]
pub trait AgentHarnessExt: AgentHarness {
    /// Sends a prompt and collects the turn's events until a terminal event or the
    /// end of the stream.
    async fn prompt_to_end(&self, sandbox: &Sandbox, request: PromptRequest) -> Result<TurnTranscript> {
        use futures::StreamExt;

        let mut turn = self.prompt(sandbox, request).await?;
        let mut events = Vec::new();
        while let Some(event) = turn.events.next().await {
            let event = event?;
            let terminal = event.is_terminal();
            events.push(event);
            if terminal {
                break;
            }
        }
        Ok(TurnTranscript {
            session: turn.session,
            events,
        })
    }
}

impl<T: AgentHarness + ?Sized> AgentHarnessExt for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::{mock_provider, sandbox};
    use crate::sandbox::Capabilities;

    /// A harness that replays fixed events for every prompt.
    #[derive(Debug)]
    struct Replay(Vec<AgentEvent>);

    #[async_trait]
    impl AgentHarness for Replay {
        fn name(&self) -> &str {
            "replay"
        }

        fn image_lines(&self) -> Vec<String> {
            Vec::new()
        }

        async fn start(&self, _sandbox: &Sandbox, _context: &HarnessContext) -> Result<Vec<Endpoint>> {
            Ok(Vec::new())
        }

        async fn prompt(&self, _sandbox: &Sandbox, _request: PromptRequest) -> Result<AgentTurn> {
            let events: Vec<Result<AgentEvent>> = self.0.iter().cloned().map(Ok).collect();
            Ok(AgentTurn {
                session: "ses_1".into(),
                events: Box::pin(futures::stream::iter(events)),
            })
        }

        async fn abort(&self, _sandbox: &Sandbox, _session: &str) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn prompt_to_end_stops_at_terminal() {
        let harness = Replay(vec![
            AgentEvent::Text { delta: "hi".into() },
            AgentEvent::Finished { text: None },
            AgentEvent::Text { delta: "late".into() },
        ]);
        let sandbox = sandbox(mock_provider(Capabilities::none()));

        let transcript = harness.prompt_to_end(&sandbox, PromptRequest::default()).await.unwrap();
        assert_eq!(transcript.session, "ses_1");
        assert_eq!(transcript.events.len(), 2);
        assert_eq!(transcript.outcome(), Some(&AgentEvent::Finished { text: None }));
    }

    #[tokio::test]
    async fn prompt_to_end_without_terminal_has_no_outcome() {
        let harness = Replay(vec![AgentEvent::Text { delta: "cut off".into() }]);
        let sandbox = sandbox(mock_provider(Capabilities::none()));

        let transcript = harness.prompt_to_end(&sandbox, PromptRequest::default()).await.unwrap();
        assert_eq!(transcript.events.len(), 1);
        assert_eq!(transcript.outcome(), None);
    }
}
