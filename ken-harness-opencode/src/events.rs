//! Mapping OpenCode's event feed and messages to Ken's [`AgentEvent`]s.

use std::collections::{HashMap, HashSet};

use ken_core::harness::{AgentEvent, ToolStatus};
use serde_json::Value;

/// The meaning of one OpenCode event for a turn.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Mapped {
    /// An event to pass on.
    Event(AgentEvent),
    /// The session became idle (`session.idle`): re-read the messages to learn how
    /// the turn ended, with [`turn_outcome`].
    Idle,
}

/// Maps the events of one session to [`AgentEvent`]s.
///
/// Feed it every event of the feed with [`push`](Self::push); events of other
/// sessions and unknown event types are ignored. Tool calls are reported each time
/// their status changes, and each edited file once per mapper.
#[derive(Debug)]
pub struct EventMapper {
    session: String,
    project_dir: String,
    assistant_messages: HashSet<String>,
    part_kinds: HashMap<String, String>,
    text_sent: HashMap<String, usize>,
    tool_status: HashMap<String, ToolStatus>,
    edited: HashSet<String>,
    active: bool,
}

impl EventMapper {
    /// Creates a mapper for `session`; edited paths are made relative to
    /// `project_dir` when they are inside it.
    pub fn new(session: impl Into<String>, project_dir: impl Into<String>) -> Self {
        EventMapper {
            session: session.into(),
            project_dir: project_dir.into(),
            assistant_messages: HashSet::new(),
            part_kinds: HashMap::new(),
            text_sent: HashMap::new(),
            tool_status: HashMap::new(),
            edited: HashSet::new(),
            active: false,
        }
    }

    /// Returns true once an event showed the session at work (anything but
    /// `session.idle`). An idle before that belongs to an earlier turn.
    pub fn saw_activity(&self) -> bool {
        self.active
    }

    /// Maps one event `{type, properties}` of the feed.
    pub fn push(&mut self, event: &Value) -> Vec<Mapped> {
        let kind = event["type"].as_str().unwrap_or_default();
        let properties = &event["properties"];
        if event_session(properties) != Some(self.session.as_str()) {
            return Vec::new();
        }
        if kind != "session.idle" {
            self.active = true;
        }
        match kind {
            "message.updated" => {
                let info = &properties["info"];
                if info["role"] == "assistant" {
                    if let Some(id) = info["id"].as_str() {
                        self.assistant_messages.insert(id.to_owned());
                    }
                }
                Vec::new()
            }
            "message.part.delta" => self.delta(properties),
            "message.part.updated" => self.part(&properties["part"]),
            "session.status" => {
                let status = &properties["status"];
                if status["type"] == "retry" {
                    let message = status["message"].as_str().unwrap_or("the model provider failed");
                    let attempt = status["attempt"].as_u64().unwrap_or(0);
                    vec![Mapped::Event(AgentEvent::Error {
                        message: format!("{message} (retry {attempt})"),
                    })]
                } else {
                    Vec::new()
                }
            }
            "session.idle" => vec![Mapped::Idle],
            "permission.asked" => {
                let id = properties["id"].as_str().unwrap_or_default().to_owned();
                let permission = properties["permission"]
                    .as_str()
                    .or_else(|| properties["type"].as_str())
                    .unwrap_or("unknown")
                    .to_owned();
                vec![Mapped::Event(AgentEvent::PermissionRequested { id, permission })]
            }
            _ => Vec::new(),
        }
    }

    fn delta(&mut self, properties: &Value) -> Vec<Mapped> {
        let part_id = properties["partID"].as_str().unwrap_or_default();
        let delta = properties["delta"].as_str().unwrap_or_default();
        let is_text = properties["field"] == "text"
            && self.part_kinds.get(part_id).map(String::as_str) == Some("text")
            && properties["messageID"].as_str().is_some_and(|id| self.assistant_messages.contains(id));
        if !is_text || delta.is_empty() {
            return Vec::new();
        }
        *self.text_sent.entry(part_id.to_owned()).or_default() += delta.len();
        vec![Mapped::Event(AgentEvent::Text { delta: delta.to_owned() })]
    }

    fn part(&mut self, part: &Value) -> Vec<Mapped> {
        let id = part["id"].as_str().unwrap_or_default().to_owned();
        let kind = part["type"].as_str().unwrap_or_default().to_owned();
        self.part_kinds.insert(id.clone(), kind.clone());
        match kind.as_str() {
            "text" => self.text_part(&id, part),
            "tool" => self.tool_part(&id, part),
            "patch" => {
                let files = part["files"].as_array().cloned().unwrap_or_default();
                files.iter().filter_map(Value::as_str).filter_map(|file| self.edited_file(file)).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Sends the text of a text part that did not arrive as deltas.
    fn text_part(&mut self, id: &str, part: &Value) -> Vec<Mapped> {
        let from_assistant = part["messageID"].as_str().is_some_and(|m| self.assistant_messages.contains(m));
        let text = part["text"].as_str().unwrap_or_default();
        if !from_assistant || part["synthetic"] == true {
            return Vec::new();
        }
        let sent = self.text_sent.entry(id.to_owned()).or_default();
        if text.len() <= *sent || !text.is_char_boundary(*sent) {
            return Vec::new();
        }
        let rest = text[*sent..].to_owned();
        *sent = text.len();
        vec![Mapped::Event(AgentEvent::Text { delta: rest })]
    }

    fn tool_part(&mut self, id: &str, part: &Value) -> Vec<Mapped> {
        let state = &part["state"];
        let status = match state["status"].as_str() {
            Some("pending") => ToolStatus::Pending,
            Some("running") => ToolStatus::Running,
            Some("completed") => ToolStatus::Completed,
            Some("error") => ToolStatus::Failed,
            _ => return Vec::new(),
        };
        if self.tool_status.get(id) == Some(&status) {
            return Vec::new();
        }
        self.tool_status.insert(id.to_owned(), status);
        let tool = part["tool"].as_str().unwrap_or("unknown").to_owned();
        let call_id = part["callID"].as_str().unwrap_or(id).to_owned();
        let input = &state["input"];
        let title = state["title"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .or_else(|| tool_summary(input));
        let mut mapped = vec![Mapped::Event(AgentEvent::ToolCall {
            id: call_id,
            tool: tool.clone(),
            status,
            title,
        })];
        if status == ToolStatus::Completed && matches!(tool.as_str(), "edit" | "write" | "multiedit") {
            if let Some(file) = input["filePath"].as_str() {
                mapped.extend(self.edited_file(file));
            }
        }
        mapped
    }

    fn edited_file(&mut self, file: &str) -> Option<Mapped> {
        let path = relative_to(file, &self.project_dir);
        self.edited
            .insert(path.clone())
            .then_some(Mapped::Event(AgentEvent::FileEdited { path }))
    }
}

/// Returns the session an event belongs to, wherever the event type keeps it.
fn event_session(properties: &Value) -> Option<&str> {
    properties["sessionID"]
        .as_str()
        .or_else(|| properties["part"]["sessionID"].as_str())
        .or_else(|| properties["info"]["sessionID"].as_str())
}

/// Returns a one-line summary of a tool's input: its command, file or pattern.
fn tool_summary(input: &Value) -> Option<String> {
    ["command", "filePath", "pattern", "url", "description"]
        .iter()
        .find_map(|key| input[*key].as_str())
        .map(|text| text.lines().next().unwrap_or_default().to_owned())
}

fn relative_to(path: &str, dir: &str) -> String {
    let dir = dir.trim_end_matches('/');
    match path.strip_prefix(dir).and_then(|rest| rest.strip_prefix('/')) {
        Some(rest) if !dir.is_empty() && !rest.is_empty() => rest.to_owned(),
        _ => path.to_owned(),
    }
}

/// The outcome of a turn, read from the session's messages after `session.idle`.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnOutcome {
    /// The turn is over; the event is [`AgentEvent::Finished`],
    /// [`AgentEvent::Failed`] or [`AgentEvent::Aborted`].
    Ended(AgentEvent),
    /// The last reply is not complete yet. After an abort, OpenCode 1.18.33 sends
    /// the final message updates after a first `session.idle`, so wait for the next.
    Pending,
}

/// Reads the outcome of the latest turn from `messages` (`GET /session/{id}/message`).
///
/// The last assistant message after the last user message decides. An `error` named
/// `MessageAbortedError` is an abort. Any other `error` is a failure with the
/// provider's message, because OpenCode reports provider failures inside HTTP 200
/// responses. A `time.completed` is a finished turn with the message's text.
pub fn turn_outcome(messages: &[Value]) -> TurnOutcome {
    let last_user = messages.iter().rposition(|m| m["info"]["role"] == "user");
    let replies = &messages[last_user.map_or(0, |i| i + 1)..];
    let Some(last) = replies.iter().rev().find(|m| m["info"]["role"] == "assistant") else {
        return TurnOutcome::Pending;
    };
    let info = &last["info"];
    if let Some(error) = info.get("error").filter(|e| !e.is_null()) {
        if error["name"] == "MessageAbortedError" {
            return TurnOutcome::Ended(AgentEvent::Aborted);
        }
        return TurnOutcome::Ended(AgentEvent::Failed { message: error_message(error) });
    }
    if info["time"]["completed"].is_null() {
        return TurnOutcome::Pending;
    }
    let text: String = last["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter(|p| p["type"] == "text" && p["synthetic"] != true)
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default();
    TurnOutcome::Ended(AgentEvent::Finished {
        text: (!text.is_empty()).then_some(text),
    })
}

/// Returns the message of an OpenCode error `{name, data: {message}}`.
pub fn error_message(error: &Value) -> String {
    let name = error["name"].as_str().unwrap_or("UnknownError");
    match error["data"]["message"].as_str() {
        Some(message) if !message.is_empty() => format!("{name}: {message}"),
        _ => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn other_sessions_are_ignored() {
        let mut mapper = EventMapper::new("ses_a", "/p");
        let event = json!({"type": "session.idle", "properties": {"sessionID": "ses_b"}});
        assert!(mapper.push(&event).is_empty());
        let event = json!({"type": "no.such.type", "properties": {"sessionID": "ses_a"}});
        assert!(mapper.push(&event).is_empty());
    }

    #[test]
    fn outcome_of_aborted_and_failed_messages() {
        let aborted = vec![
            json!({"info": {"role": "user"}, "parts": []}),
            json!({"info": {"role": "assistant", "error": {"name": "MessageAbortedError", "data": {}}, "time": {}}, "parts": []}),
        ];
        assert_eq!(turn_outcome(&aborted), TurnOutcome::Ended(AgentEvent::Aborted));
        let failed = vec![
            json!({"info": {"role": "user"}, "parts": []}),
            json!({"info": {"role": "assistant", "error": {"name": "APIError", "data": {"message": "overloaded"}}, "time": {"completed": 2}}, "parts": []}),
        ];
        assert_eq!(
            turn_outcome(&failed),
            TurnOutcome::Ended(AgentEvent::Failed { message: "APIError: overloaded".into() })
        );
        let running = vec![
            json!({"info": {"role": "user"}, "parts": []}),
            json!({"info": {"role": "assistant", "time": {"created": 1}}, "parts": []}),
        ];
        assert_eq!(turn_outcome(&running), TurnOutcome::Pending);
    }
}
