//! Showing an agent's turn: tool calls with their status, edited files and the reply
//! text on stdout, or one JSON object per `AgentEvent` with `--json`. Shared by
//! `ken prompt` and `ken attach`.

use std::collections::HashMap;
use std::io::IsTerminal;

use futures::stream::BoxStream;
use futures::StreamExt;
use ken_core::harness::{AgentEvent, ToolStatus};

use crate::signal::{self, Interrupt};
use crate::{exit, output};

/// The events of one turn, as `AgentHarness::prompt` returns them.
pub(crate) type TurnEvents = BoxStream<'static, ken_core::Result<AgentEvent>>;

/// The way following a turn ended.
#[derive(Debug)]
pub(crate) enum FollowEnd {
    /// The turn ended; the exit status (0, 5 or 6) gives its outcome.
    Ended(u8),
    /// The user pressed Ctrl-C (or sent SIGTERM) before the turn ended.
    Interrupted(Interrupt),
    /// The event stream failed or ended before the turn did.
    Broken(anyhow::Error),
}

/// Reads `events` and shows each one until the turn ends, the stream fails or a
/// signal arrives.
pub(crate) async fn follow(events: &mut TurnEvents, view: &mut TurnView) -> FollowEnd {
    loop {
        let next = tokio::select! {
            next = events.next() => next,
            interrupt = signal::interrupted() => return FollowEnd::Interrupted(interrupt),
        };
        match next {
            Some(Ok(event)) => {
                if let Err(error) = view.show(&event) {
                    return FollowEnd::Broken(error);
                }
                if let Some(code) = exit_code(&event) {
                    return FollowEnd::Ended(code);
                }
            }
            Some(Err(error)) => {
                let error = anyhow::Error::new(error).context("failed to read the agent's events");
                return FollowEnd::Broken(error);
            }
            None => {
                return FollowEnd::Broken(anyhow::anyhow!(
                    "the agent's event stream ended before the turn did"
                ))
            }
        }
    }
}

/// Returns the exit status for a terminal event, and `None` for the others.
pub(crate) fn exit_code(event: &AgentEvent) -> Option<u8> {
    match event {
        AgentEvent::Finished { .. } => Some(exit::SUCCESS),
        AgentEvent::Failed { .. } => Some(exit::TURN_FAILED),
        AgentEvent::Aborted => Some(exit::TURN_ABORTED),
        _ => None,
    }
}

/// A tool call as last shown.
struct ToolLine {
    tool: String,
    title: Option<String>,
    status: ToolStatus,
}

/// Shows the events of a turn on stdout, and notes (errors, permission requests) on
/// stderr.
///
/// On a terminal, a tool call gets one line when it starts, which is rewritten in
/// place when the call completes or fails, as long as nothing was printed below it.
/// Elsewhere a call gets one line once it completes or fails, so logs stay
/// append-only.
pub(crate) struct TurnView {
    json: bool,
    terminal: bool,
    /// True when the cursor is at the start of a line on stdout.
    at_line_start: bool,
    /// The call whose line was the last one printed, on a terminal.
    last_line: Option<String>,
    tools: HashMap<String, ToolLine>,
    /// Call ids in the order they first appeared.
    order: Vec<String>,
    saw_text: bool,
}

impl TurnView {
    /// Creates a view: JSON lines with `json`, else text, redrawn in place when
    /// stdout is a terminal.
    pub(crate) fn new(json: bool) -> TurnView {
        let dumb = std::env::var("TERM").is_ok_and(|term| term == "dumb");
        TurnView {
            json,
            terminal: !json && !dumb && std::io::stdout().is_terminal(),
            at_line_start: true,
            last_line: None,
            tools: HashMap::new(),
            order: Vec::new(),
            saw_text: false,
        }
    }

    /// Prints the turn's header: the sandbox, the session and the agent's URL.
    pub(crate) fn header(&mut self, header: &TurnHeader) -> anyhow::Result<()> {
        if self.json {
            let value = serde_json::json!({
                "type": "session",
                "sandbox": header.sandbox,
                "session": header.session,
                "agent_url": header.agent_url,
                "username": header.username,
            });
            return output::print_stdout(&format!("{value}\n"));
        }
        let mut text = format!("sandbox  {}\nsession  {}\n", header.sandbox, header.session);
        if let Some(url) = &header.agent_url {
            text.push_str(&format!("agent    {url}\n"));
            if let Some(username) = &header.username {
                text.push_str(&format!(
                    "         user {username}, password: {}\n",
                    crate::commands::new::password_command(&header.sandbox)
                ));
            }
        }
        self.print(&text)
    }

    /// Shows one event.
    pub(crate) fn show(&mut self, event: &AgentEvent) -> anyhow::Result<()> {
        if self.json {
            let line = serde_json::to_string(event)?;
            return output::print_stdout(&format!("{line}\n"));
        }
        match event {
            AgentEvent::Text { delta } => {
                self.saw_text = true;
                self.last_line = None;
                self.at_line_start = delta.ends_with('\n');
                output::print_stdout(delta)
            }
            AgentEvent::ToolCall {
                id,
                tool,
                status,
                title,
            } => self.tool_call(id, tool, *status, title.clone()),
            AgentEvent::FileEdited { path } => self.line(&format!("edited {path}")),
            AgentEvent::PermissionRequested { id, permission } => {
                self.end_line()?;
                output::note(&format!(
                    "the agent requests the permission {permission:?} (request {id}); answer it in the agent's web UI"
                ));
                Ok(())
            }
            AgentEvent::Error { message } => {
                self.end_line()?;
                output::note(&format!("the agent reported an error: {message}"));
                Ok(())
            }
            AgentEvent::Finished { text } => {
                if let (false, Some(text)) = (self.saw_text, text) {
                    self.line(text.trim_end())?;
                }
                self.end_line()?;
                self.unfinished_calls()?;
                output::note("the turn finished");
                Ok(())
            }
            AgentEvent::Failed { message } => {
                self.end_line()?;
                self.unfinished_calls()?;
                output::note(&format!("the turn failed: {message}"));
                Ok(())
            }
            AgentEvent::Aborted => {
                self.end_line()?;
                self.unfinished_calls()?;
                output::note("the turn was aborted");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn tool_call(
        &mut self,
        id: &str,
        tool: &str,
        status: ToolStatus,
        title: Option<String>,
    ) -> anyhow::Result<()> {
        let previous = self.tools.insert(
            id.to_owned(),
            ToolLine {
                tool: tool.to_owned(),
                title,
                status,
            },
        );
        if previous.is_none() {
            self.order.push(id.to_owned());
        }
        let done = matches!(status, ToolStatus::Completed | ToolStatus::Failed);
        if !self.terminal {
            return if done {
                self.line(&self.tool_text(id))
            } else {
                Ok(())
            };
        }
        let shown = previous.is_some();
        if shown && !done {
            return Ok(());
        }
        let text = self.tool_text(id);
        if shown && self.last_line.as_deref() == Some(id) && self.at_line_start {
            // Move up one line and clear it, then print the call's new status there.
            output::print_stdout("\x1b[1A\r\x1b[2K")?;
        }
        self.line(&text)?;
        self.last_line = Some(id.to_owned());
        Ok(())
    }

    fn tool_text(&self, id: &str) -> String {
        let Some(call) = self.tools.get(id) else {
            return String::new();
        };
        let mark = match call.status {
            ToolStatus::Completed => "done   ",
            ToolStatus::Failed => "failed ",
            _ => "running",
        };
        match &call.title {
            Some(title) => format!("[{mark}] {} {title}", call.tool),
            None => format!("[{mark}] {}", call.tool),
        }
    }

    /// Lists the calls that never completed or failed, in plain output where their
    /// start was not shown.
    fn unfinished_calls(&mut self) -> anyhow::Result<()> {
        if self.terminal {
            return Ok(());
        }
        let unfinished: Vec<String> = self
            .order
            .iter()
            .filter(|id| {
                self.tools.get(*id).is_some_and(|call| {
                    !matches!(call.status, ToolStatus::Completed | ToolStatus::Failed)
                })
            })
            .map(|id| self.tool_text(id))
            .collect();
        for text in unfinished {
            self.line(&text)?;
        }
        Ok(())
    }

    /// Prints `text` as a line of its own.
    fn line(&mut self, text: &str) -> anyhow::Result<()> {
        self.end_line()?;
        self.last_line = None;
        self.print(&format!("{text}\n"))
    }

    /// Ends the reply text's current line, if any.
    fn end_line(&mut self) -> anyhow::Result<()> {
        if self.at_line_start {
            return Ok(());
        }
        self.print("\n")
    }

    fn print(&mut self, text: &str) -> anyhow::Result<()> {
        self.at_line_start = text.is_empty() && self.at_line_start || text.ends_with('\n');
        output::print_stdout(text)
    }
}

/// The header `ken prompt` and `ken attach` print before the events.
#[derive(Debug)]
pub(crate) struct TurnHeader {
    /// The sandbox's name.
    pub(crate) sandbox: String,
    /// The agent's session id.
    pub(crate) session: String,
    /// The agent's web UI, when the harness has one.
    pub(crate) agent_url: Option<String>,
    /// The user name of the web UI's login.
    pub(crate) username: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_events_map_to_exit_codes() {
        assert_eq!(exit_code(&AgentEvent::Finished { text: None }), Some(exit::SUCCESS));
        assert_eq!(
            exit_code(&AgentEvent::Failed { message: "model error".into() }),
            Some(exit::TURN_FAILED)
        );
        assert_eq!(exit_code(&AgentEvent::Aborted), Some(exit::TURN_ABORTED));
    }

    #[test]
    fn progress_events_have_no_exit_code() {
        assert_eq!(exit_code(&AgentEvent::Text { delta: "hi".into() }), None);
    }
}
