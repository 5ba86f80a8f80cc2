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
