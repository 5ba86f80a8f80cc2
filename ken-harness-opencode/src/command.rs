//! [`CommandHarness`]: a one-shot agent CLI run inside the sandbox for each prompt,
//! its JSON lines parsed into [`AgentEvent`]s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::SinkExt;
use ken_core::exec::{KillHandle, OutputStream};
use ken_core::harness::{AgentEvent, AgentHarness, AgentTurn, HarnessContext, PromptRequest, ToolStatus};
use ken_core::plan::tail_lines;
use ken_core::sandbox::{Endpoint, Sandbox};
use ken_core::{Error, ExecRequest, Result};
use serde_json::Value;

/// The JSON-lines output format of an agent CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineFormat {
    /// Claude Code's `claude -p --output-format stream-json --verbose`.
    ClaudeCode,
    /// Codex's `codex exec --json`.
    Codex,
}

/// Parses an agent CLI's output, one JSON line at a time.
#[derive(Debug)]
pub struct LineParser {
    format: LineFormat,
    session: Option<String>,
    /// Tool name and input by call id, to report the file a finished edit changed.
    tools: HashMap<String, (String, Value)>,
    last_text: Option<String>,
}

impl LineParser {
    /// Creates a parser for `format`.
    pub fn new(format: LineFormat) -> Self {
        LineParser {
            format,
            session: None,
            tools: HashMap::new(),
            last_text: None,
        }
    }

    /// Returns the session (Claude Code) or thread (Codex) id, once a line named it.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// Parses one line. Lines that are not JSON objects, and unknown types, give no
    /// events.
    pub fn parse(&mut self, line: &str) -> Vec<AgentEvent> {
        let Ok(value) = serde_json::from_str::<Value>(line.trim()) else {
            return Vec::new();
        };
        if !value.is_object() {
            return Vec::new();
        }
        match self.format {
            LineFormat::ClaudeCode => self.claude_code(&value),
            LineFormat::Codex => self.codex(&value),
        }
    }

    fn claude_code(&mut self, line: &Value) -> Vec<AgentEvent> {
        if let Some(session) = line["session_id"].as_str() {
            self.session.get_or_insert_with(|| session.to_owned());
        }
        let content = line["message"]["content"].as_array().cloned().unwrap_or_default();
        match line["type"].as_str() {
            Some("assistant") => content
                .iter()
                .filter_map(|block| match block["type"].as_str() {
                    Some("text") => {
                        let text = block["text"].as_str().unwrap_or_default().to_owned();
                        (!text.is_empty()).then(|| {
                            self.last_text = Some(text.clone());
                            AgentEvent::Text { delta: text }
                        })
                    }
                    Some("tool_use") => {
                        let id = block["id"].as_str().unwrap_or_default().to_owned();
                        let tool = block["name"].as_str().unwrap_or("unknown").to_owned();
                        let input = block["input"].clone();
                        self.tools.insert(id.clone(), (tool.clone(), input.clone()));
                        Some(AgentEvent::ToolCall {
                            id,
                            tool,
                            status: ToolStatus::Running,
                            title: summary(&input, &["command", "file_path", "notebook_path", "pattern", "url", "description"]),
                        })
                    }
                    _ => None,
                })
                .collect(),
            Some("user") => {
                let mut events = Vec::new();
                for block in content.iter().filter(|b| b["type"] == "tool_result") {
                    let id = block["tool_use_id"].as_str().unwrap_or_default().to_owned();
                    let failed = block["is_error"] == true;
                    let (tool, input) = self.tools.get(&id).cloned().unwrap_or_else(|| ("unknown".to_owned(), Value::Null));
                    let status = if failed { ToolStatus::Failed } else { ToolStatus::Completed };
                    let title = summary(&input, &["command", "file_path", "notebook_path", "pattern", "url", "description"]);
                    events.push(AgentEvent::ToolCall { id, tool: tool.clone(), status, title });
                    if !failed && matches!(tool.as_str(), "Edit" | "MultiEdit" | "Write" | "NotebookEdit") {
                        if let Some(path) = input["file_path"].as_str().or_else(|| input["notebook_path"].as_str()) {
                            events.push(AgentEvent::FileEdited { path: path.to_owned() });
                        }
                    }
                }
                events
            }
            Some("result") => {
                let result = line["result"].as_str().map(str::to_owned);
                if line["is_error"] == true || line["subtype"].as_str().is_some_and(|s| s.starts_with("error")) {
                    let message = result
                        .filter(|r| !r.is_empty())
                        .or_else(|| line["errors"].as_array().map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; ")))
                        .filter(|m| !m.is_empty())
                        .unwrap_or_else(|| line["subtype"].as_str().unwrap_or("error").to_owned());
                    vec![AgentEvent::Failed { message }]
                } else {
                    vec![AgentEvent::Finished { text: result.or_else(|| self.last_text.clone()) }]
                }
            }
            _ => Vec::new(),
        }
    }

    fn codex(&mut self, line: &Value) -> Vec<AgentEvent> {
        match line["type"].as_str() {
            Some("thread.started") => {
                if let Some(thread) = line["thread_id"].as_str() {
                    self.session.get_or_insert_with(|| thread.to_owned());
                }
                Vec::new()
            }
            Some(kind @ ("item.started" | "item.updated" | "item.completed")) => self.codex_item(kind, &line["item"]),
            Some("turn.completed") => vec![AgentEvent::Finished { text: self.last_text.clone() }],
            Some("turn.failed") => vec![AgentEvent::Failed {
                message: line["error"]["message"].as_str().unwrap_or("the turn failed").to_owned(),
            }],
            Some("error") => vec![AgentEvent::Error {
                message: line["message"].as_str().unwrap_or("unknown error").to_owned(),
            }],
            _ => Vec::new(),
        }
    }

    fn codex_item(&mut self, kind: &str, item: &Value) -> Vec<AgentEvent> {
        let id = item["id"].as_str().unwrap_or_default().to_owned();
        let completed = kind == "item.completed";
        let status = match item["status"].as_str() {
            Some("failed" | "declined") => ToolStatus::Failed,
            Some("completed") => ToolStatus::Completed,
            _ if completed => ToolStatus::Completed,
            _ => ToolStatus::Running,
        };
        match item["type"].as_str() {
            Some("agent_message") if completed => {
                let text = item["text"].as_str().unwrap_or_default().to_owned();
                self.last_text = Some(text.clone());
                vec![AgentEvent::Text { delta: text }]
            }
            Some("command_execution") => {
                let failed_exit = item["exit_code"].as_i64().is_some_and(|code| code != 0);
                let status = if completed && failed_exit { ToolStatus::Failed } else { status };
                vec![AgentEvent::ToolCall {
                    id,
                    tool: "command".to_owned(),
                    status,
                    title: item["command"].as_str().map(str::to_owned),
                }]
            }
            Some("file_change") => {
                let paths: Vec<String> = item["changes"]
                    .as_array()
                    .map(|changes| changes.iter().filter_map(|c| c["path"].as_str()).map(str::to_owned).collect())
                    .unwrap_or_default();
                let mut events = vec![AgentEvent::ToolCall {
                    id,
                    tool: "file_change".to_owned(),
                    status,
                    title: paths.first().cloned(),
                }];
                if completed && status == ToolStatus::Completed {
                    events.extend(paths.into_iter().map(|path| AgentEvent::FileEdited { path }));
                }
                events
            }
            Some("mcp_tool_call") => vec![AgentEvent::ToolCall {
                id,
                tool: format!("{}.{}", item["server"].as_str().unwrap_or("mcp"), item["tool"].as_str().unwrap_or("tool")),
                status,
                title: None,
            }],
            Some("web_search") => vec![AgentEvent::ToolCall {
                id,
                tool: "web_search".to_owned(),
                status,
                title: item["query"].as_str().map(str::to_owned),
            }],
            Some("error") => vec![AgentEvent::Error {
                message: item["message"].as_str().unwrap_or("unknown error").to_owned(),
            }],
            _ => Vec::new(),
        }
    }
}

fn summary(input: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|key| input[*key].as_str())
        .map(|text| text.lines().next().unwrap_or_default().to_owned())
}

/// An [`AgentHarness`] that runs an agent CLI inside the sandbox for each prompt and
/// parses its JSON lines.
///
/// The command runs in the sandbox's default working directory (the project) with
/// the sandbox's environment, which contains the manifest's secrets. A turn ends with the
/// CLI's own result line, or else with the process: exit code 0 is
/// [`AgentEvent::Finished`], any other [`AgentEvent::Failed`] with the tail of its
/// standard error, and a process killed by [`abort`](AgentHarness::abort)
/// [`AgentEvent::Aborted`].
#[derive(Debug)]
pub struct CommandHarness {
    name: String,
    format: LineFormat,
    new_command: Vec<String>,
    resume_command: Vec<String>,
    image_lines: Vec<String>,
    running: Arc<Mutex<HashMap<String, KillHandle>>>,
}

impl CommandHarness {
    /// Creates a harness named `name` that runs `new_command` for a new session and
    /// `resume_command` to continue one. In both, an argument `{prompt}` is replaced
    /// by the prompt text and `{session}` by the session id.
    pub fn new(name: impl Into<String>, format: LineFormat, new_command: Vec<String>, resume_command: Vec<String>) -> Self {
        CommandHarness {
            name: name.into(),
            format,
            new_command,
            resume_command,
            image_lines: Vec::new(),
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Sets the Dockerfile lines that install the CLI.
    pub fn with_image_lines(mut self, lines: Vec<String>) -> Self {
        self.image_lines = lines;
        self
    }

    /// Returns a harness for Claude Code with every permission allowed. Set
    /// `ANTHROPIC_API_KEY` through the manifest's secrets.
    pub fn claude_code() -> Self {
        let common = ["--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions"];
        let new_command = ["claude", "-p", "{prompt}"].into_iter().chain(common).map(str::to_owned).collect();
        let resume_command = ["claude", "-p", "{prompt}", "--resume", "{session}"]
            .into_iter()
            .chain(common)
            .map(str::to_owned)
            .collect();
        CommandHarness::new("claude-code", LineFormat::ClaudeCode, new_command, resume_command).with_image_lines(vec![
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm \\".to_owned(),
            "    && npm install -g @anthropic-ai/claude-code && apt-get clean && rm -rf /var/lib/apt/lists/*".to_owned(),
        ])
    }

    /// Returns a harness for Codex with approvals and Codex's own sandbox off (the Ken
    /// sandbox is the boundary). Set `OPENAI_API_KEY` through the manifest's secrets.
    // NOTE: the Codex flags and `exec resume` come from Codex's documentation; no test
    // runs the real CLI.
    pub fn codex() -> Self {
        let flags = ["--json", "--dangerously-bypass-approvals-and-sandbox", "--skip-git-repo-check"];
        let new_command = ["codex", "exec"].into_iter().chain(flags).chain(["{prompt}"]).map(str::to_owned).collect();
        let resume_command = ["codex", "exec"]
            .into_iter()
            .chain(flags)
            .chain(["resume", "{session}", "{prompt}"])
            .map(str::to_owned)
            .collect();
        CommandHarness::new("codex", LineFormat::Codex, new_command, resume_command).with_image_lines(vec![
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm \\".to_owned(),
            "    && npm install -g @openai/codex && apt-get clean && rm -rf /var/lib/apt/lists/*".to_owned(),
        ])
    }

    fn command_for(&self, request: &PromptRequest) -> Vec<String> {
        let template = if request.session.is_some() { &self.resume_command } else { &self.new_command };
        template
            .iter()
            .map(|arg| match arg.as_str() {
                "{prompt}" => request.text.clone(),
                "{session}" => request.session.clone().unwrap_or_default(),
                _ => arg.clone(),
            })
            .collect()
    }
}

#[async_trait]
impl AgentHarness for CommandHarness {
    fn name(&self) -> &str {
        &self.name
    }

    fn image_lines(&self) -> Vec<String> {
        self.image_lines.clone()
    }

    async fn start(&self, sandbox: &Sandbox, _context: &HarnessContext) -> Result<Vec<Endpoint>> {
        let program = self.new_command.first().cloned().unwrap_or_default();
        let output = sandbox
            .exec_output(ExecRequest::new(["sh", "-c", "command -v \"$1\"", "sh", &program]).timeout(Duration::from_secs(30)))
            .await?;
        if !output.status.success() {
            return Err(Error::invalid(
                "sandbox image",
                sandbox.info().image.clone(),
                format!(
                    "it has no `{program}` on PATH; add these lines to the project's Dockerfile:\n{}",
                    self.image_lines.join("\n")
                ),
            ));
        }
        Ok(Vec::new())
    }

    async fn prompt(&self, sandbox: &Sandbox, request: PromptRequest) -> Result<AgentTurn> {
        let command = self.command_for(&request);
        let mut process = sandbox.exec(ExecRequest::new(command)).await?;
        let kill = process.kill_handle();
        tracing::info!(sandbox.name = %sandbox.name(), phase = "harness", provider = sandbox.provider().name(), harness = %self.name, "agent command started");

        let (mut sender, receiver) = futures::channel::mpsc::channel::<Result<AgentEvent>>(64);
        let (session_sender, session_receiver) = tokio::sync::oneshot::channel::<Option<String>>();
        let running = self.running.clone();
        let known_session = request.session.clone();
        let mut parser = LineParser::new(self.format);
        let name = self.name.clone();
        tokio::spawn(async move {
            let mut session_sender = Some(session_sender);
            let mut session = known_session;
            let mut pending = Vec::new();
            let mut stderr = String::new();
            let mut ended = false;
            while let Some(chunk) = process.next_chunk().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                };
                if chunk.stream == OutputStream::Stderr {
                    stderr.push_str(&String::from_utf8_lossy(&chunk.bytes));
                    continue;
                }
                pending.extend_from_slice(&chunk.bytes);
                while let Some(newline) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=newline).collect();
                    for event in parser.parse(&String::from_utf8_lossy(&line)) {
                        ended |= event.is_terminal();
                        if sender.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    if session.is_none() {
                        session = parser.session().map(str::to_owned);
                    }
                    if let Some(id) = &session {
                        if let Some(notify) = session_sender.take() {
                            running.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), kill.clone());
                            let _ = notify.send(Some(id.clone()));
                        }
                    }
                }
            }
            if let Some(notify) = session_sender.take() {
                let _ = notify.send(session.clone());
            }
            let status = process.finish().await;
            if let Some(id) = &session {
                running.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
            }
            if ended {
                return;
            }
            let event = match status {
                Ok(status) if status.killed => Ok(AgentEvent::Aborted),
                Ok(status) if status.success() => Ok(AgentEvent::Finished { text: parser.last_text.clone() }),
                Ok(status) => Ok(AgentEvent::Failed {
                    message: format!("{name} exited with {status}: {}", tail_lines(&stderr, 10)),
                }),
                Err(error) => Err(error),
            };
            let _ = sender.send(event).await;
        });

        let session = session_receiver.await.ok().flatten().or(request.session).unwrap_or_default();
        Ok(AgentTurn {
            session,
            events: Box::pin(receiver),
        })
    }

    async fn abort(&self, sandbox: &Sandbox, session: &str) -> Result<()> {
        let kill = self.running.lock().unwrap_or_else(|e| e.into_inner()).get(session).cloned();
        match kill {
            Some(kill) => {
                tracing::info!(sandbox.name = %sandbox.name(), phase = "harness", session = %session, "killing the agent command");
                kill.kill().await
            }
            None => Err(Error::NotFound {
                kind: "running agent command for session",
                name: session.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(format: LineFormat, text: &str) -> (Vec<AgentEvent>, Option<String>) {
        let mut parser = LineParser::new(format);
        let events = text.lines().flat_map(|line| parser.parse(line)).collect();
        (events, parser.session().map(str::to_owned))
    }

    #[test]
    fn claude_code_stream_json() {
        let text = include_str!("../tests/fixtures/claude-code-stream.jsonl");
        let (events, session) = parse_all(LineFormat::ClaudeCode, text);
        assert_eq!(session.as_deref(), Some("8f0d3c51-4a0e-4f5e-9b7c-2d2f4b1e6a11"));
        let expected = vec![
            AgentEvent::Text { delta: "I'll update the theme color in the stylesheet.".into() },
            AgentEvent::ToolCall {
                id: "toolu_01".into(),
                tool: "Read".into(),
                status: ToolStatus::Running,
                title: Some("/workspace/repo/examples/demo-app/static/style.css".into()),
            },
            AgentEvent::ToolCall {
                id: "toolu_01".into(),
                tool: "Read".into(),
                status: ToolStatus::Completed,
                title: Some("/workspace/repo/examples/demo-app/static/style.css".into()),
            },
            AgentEvent::ToolCall {
                id: "toolu_02".into(),
                tool: "Edit".into(),
                status: ToolStatus::Running,
                title: Some("/workspace/repo/examples/demo-app/static/style.css".into()),
            },
            AgentEvent::ToolCall {
                id: "toolu_02".into(),
                tool: "Edit".into(),
                status: ToolStatus::Completed,
                title: Some("/workspace/repo/examples/demo-app/static/style.css".into()),
            },
            AgentEvent::FileEdited { path: "/workspace/repo/examples/demo-app/static/style.css".into() },
            AgentEvent::Text { delta: "The theme color is now pink.".into() },
            AgentEvent::Finished { text: Some("The theme color is now pink.".into()) },
        ];
        assert_eq!(events, expected);
    }

    #[test]
    fn claude_code_error_result_fails() {
        let line = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"result":"API Error: 401 invalid x-api-key","session_id":"s1","num_turns":1}"#;
        let (events, _) = parse_all(LineFormat::ClaudeCode, line);
        assert_eq!(events, vec![AgentEvent::Failed { message: "API Error: 401 invalid x-api-key".into() }]);
    }

    #[test]
    fn codex_exec_json() {
        let text = include_str!("../tests/fixtures/codex-exec.jsonl");
        let (events, session) = parse_all(LineFormat::Codex, text);
        assert_eq!(session.as_deref(), Some("0199a213-81c0-7800-8aa1-bbab2a035a53"));
        let expected = vec![
            AgentEvent::ToolCall {
                id: "item_1".into(),
                tool: "command".into(),
                status: ToolStatus::Running,
                title: Some("bash -lc 'grep -n theme-color static/style.css'".into()),
            },
            AgentEvent::ToolCall {
                id: "item_1".into(),
                tool: "command".into(),
                status: ToolStatus::Completed,
                title: Some("bash -lc 'grep -n theme-color static/style.css'".into()),
            },
            AgentEvent::ToolCall {
                id: "item_2".into(),
                tool: "file_change".into(),
                status: ToolStatus::Completed,
                title: Some("/workspace/repo/examples/demo-app/static/style.css".into()),
            },
            AgentEvent::FileEdited { path: "/workspace/repo/examples/demo-app/static/style.css".into() },
            AgentEvent::Text { delta: "Changed --theme-color to pink.".into() },
            AgentEvent::Finished { text: Some("Changed --theme-color to pink.".into()) },
        ];
        assert_eq!(events, expected);
    }

    #[test]
    fn codex_turn_failed() {
        let text = "{\"type\":\"thread.started\",\"thread_id\":\"t1\"}\n{\"type\":\"error\",\"message\":\"stream disconnected, retrying 1/5\"}\n{\"type\":\"turn.failed\",\"error\":{\"message\":\"unexpected status 401 Unauthorized\"}}";
        let (events, _) = parse_all(LineFormat::Codex, text);
        assert_eq!(
            events,
            vec![
                AgentEvent::Error { message: "stream disconnected, retrying 1/5".into() },
                AgentEvent::Failed { message: "unexpected status 401 Unauthorized".into() },
            ]
        );
    }

    #[test]
    fn command_substitutes_prompt_and_session() {
        let harness = CommandHarness::claude_code();
        let command = harness.command_for(&PromptRequest {
            text: "make it pink".into(),
            session: Some("s1".into()),
            title: None,
        });
        assert_eq!(&command[..5], ["claude", "-p", "make it pink", "--resume", "s1"]);
    }
}
