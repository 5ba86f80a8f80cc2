//! [`OpenCodeHarness`]: an OpenCode server inside the sandbox, driven over HTTP.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use ken_core::archive;
use ken_core::exec::shell_quote;
use ken_core::harness::{AgentEvent, AgentHarness, AgentTurn, HarnessContext, PromptRequest};
use ken_core::orchestrator::ports_from_labels;
use ken_core::plan::{tail_lines, LOG_DIR, RUN_DIR};
use ken_core::sandbox::{Credentials, Endpoint, PortSpec, Sandbox};
use ken_core::{Error, ExecRequest, Result, Secret};
use serde_json::Value;

use crate::client::OpenCodeClient;
use crate::config::opencode_config;
use crate::events::{turn_outcome, EventMapper, Mapped, TurnOutcome};
use crate::settings::{OpenCodeSettings, DEFAULT_USERNAME};

/// Returns the folder inside the sandbox with the server's configuration, password
/// and pid, readable only by the image's default user (root in the demo image).
pub fn state_dir() -> String {
    format!("{RUN_DIR}/opencode")
}

/// Returns the path of the server's log file inside the sandbox.
pub fn log_path() -> String {
    format!("{LOG_DIR}/opencode.log")
}

/// The line `opencode serve` prints once it accepts requests.
const LISTENING_LINE: &str = "opencode server listening on";

/// The time limit of each `/global/health` probe while the server may be starting.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the event stream may take to send `server.connected`, which OpenCode
/// sends as soon as the stream opens.
const FIRST_EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// An [`AgentHarness`] that runs `opencode serve` inside the sandbox.
///
/// The image needs OpenCode: add [`image_lines`](Self::image_lines) to the Dockerfile.
/// The manifest must publish the server's port, for example
///
/// ```toml
/// [harness]
/// kind = "opencode"
/// model = "anthropic/claude-sonnet-4-5"
///
/// [[ports]]
/// name = "agent"
/// port = 4096
/// ```
///
/// [`start`](AgentHarness::start) returns that port's endpoint with the server's
/// credentials: the web UI and the API respond there to HTTP Basic auth only.
/// [`prompt`](AgentHarness::prompt) and [`abort`](AgentHarness::abort) work from
/// any process: they find the endpoint through the sandbox provider and read the
/// password back from the sandbox.
#[derive(Debug)]
pub struct OpenCodeHarness {
    settings: OpenCodeSettings,
    /// Clients by sandbox id, so a second prompt needs no exec to read the password.
    clients: Mutex<HashMap<String, OpenCodeClient>>,
}

impl OpenCodeHarness {
    /// Creates a harness with validated settings.
    pub fn new(settings: OpenCodeSettings) -> Self {
        OpenCodeHarness {
            settings,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Creates a harness from the manifest's `[harness]` table (its `settings`).
    pub fn from_settings(table: &toml::Table) -> Result<Self> {
        Ok(OpenCodeHarness::new(OpenCodeSettings::from_table(table)?))
    }

    /// Returns the settings.
    pub fn settings(&self) -> &OpenCodeSettings {
        &self.settings
    }

    /// Returns a client for the server in `sandbox`, authenticated with the password
    /// stored there by [`start`](AgentHarness::start).
    pub async fn client(&self, sandbox: &Sandbox) -> Result<OpenCodeClient> {
        let key = sandbox.info().id.clone();
        if let Some(client) = self.clients.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(client.clone());
        }
        let endpoint = self.endpoint(sandbox).await?;
        let password = read_password(sandbox).await?;
        let client = OpenCodeClient::new(endpoint.url, credentials(password))?;
        self.remember(sandbox, &client);
        Ok(client)
    }

    fn remember(&self, sandbox: &Sandbox, client: &OpenCodeClient) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sandbox.info().id.clone(), client.clone());
    }

    /// Returns the endpoint of the server's port, which the manifest must publish.
    async fn endpoint(&self, sandbox: &Sandbox) -> Result<Endpoint> {
        let port = self.settings.port;
        let published = ports_from_labels(sandbox.info());
        let Some(spec) = published.iter().find(|p| p.port == port) else {
            let listed = published.iter().map(|p| format!("{}:{}", p.name, p.port)).collect::<Vec<_>>();
            return Err(Error::invalid(
                "ports",
                format!("[{}]", listed.join(", ")),
                format!(
                    "sandbox {} does not publish the OpenCode port {port}; add to ken.toml:\n[[ports]]\nname = \"agent\"\nport = {port}",
                    sandbox.name()
                ),
            ));
        };
        let spec = PortSpec {
            scheme: "http".to_owned(),
            ..spec.clone()
        };
        sandbox.provider().endpoint(sandbox.name(), &spec).await
    }

    async fn check_binary(&self, sandbox: &Sandbox) -> Result<()> {
        let output = sandbox
            .exec_output(ExecRequest::shell("command -v opencode >/dev/null && opencode --version").timeout(Duration::from_secs(60)))
            .await?;
        if !output.status.success() {
            return Err(Error::invalid(
                "sandbox image",
                sandbox.info().image.clone(),
                format!(
                    "it has no working `opencode` on PATH; add these lines to the project's Dockerfile:\n{}",
                    self.image_lines().join("\n")
                ),
            ));
        }
        let version = output.stdout_text().trim().to_owned();
        if version != self.settings.version {
            tracing::warn!(
                sandbox.name = %sandbox.name(),
                phase = "harness",
                installed = %version,
                expected = %self.settings.version,
                "the image has another OpenCode version than the harness expects; its HTTP API may differ"
            );
        }
        Ok(())
    }

    /// Uploads the configuration and the password into [`state_dir`] with mode 0600.
    async fn write_state(&self, sandbox: &Sandbox, password: &Secret) -> Result<()> {
        let dir = state_dir();
        let prepare = format!(
            "mkdir -p {dir} {LOG_DIR} && chmod 700 {dir}",
            dir = shell_quote(&dir)
        );
        run_checked(sandbox, "preparing the OpenCode state folder", ExecRequest::shell(prepare)).await?;
        let config = serde_json::to_vec_pretty(&opencode_config(&self.settings))
            .map_err(|e| Error::backend_with("opencode", "failed to encode the OpenCode configuration", e))?;
        sandbox
            .provider()
            .upload(sandbox.name(), &dir, archive::single_file("opencode.json", &config, 0o600)?)
            .await?;
        sandbox
            .provider()
            .upload(sandbox.name(), &dir, archive::single_file("password", password.expose().as_bytes(), 0o600)?)
            .await
    }

    /// Starts `opencode serve` in its own session, detached from the exec.
    async fn launch_server(&self, sandbox: &Sandbox, context: &HarnessContext) -> Result<()> {
        let dir = state_dir();
        // The password goes from its file into the server's environment, so it is
        // never on a command line.
        let script = format!(
            r#"cd {project} || exit 1
export OPENCODE_SERVER_PASSWORD="$(cat {dir}/password)" OPENCODE_SERVER_USERNAME={user}
export OPENCODE_CONFIG={dir}/opencode.json OPENCODE_DISABLE_AUTOUPDATE=1 OPENCODE_DISABLE_SHARE=1
export OPENCODE_DISABLE_LSP_DOWNLOAD=1 OPENCODE_DISABLE_DEFAULT_PLUGINS=1 {models}
: >>{log} || exit 1
setsid opencode serve --hostname 0.0.0.0 --port {port} </dev/null >>{log} 2>&1 &
echo "$!" >{dir}/serve.pid"#,
            project = shell_quote(&context.project_dir),
            dir = shell_quote(&dir),
            user = DEFAULT_USERNAME,
            models = if self.settings.models_fetch { "" } else { "OPENCODE_DISABLE_MODELS_FETCH=1" },
            log = shell_quote(&log_path()),
            port = self.settings.port,
        );
        let mut request = ExecRequest::shell(script).timeout(Duration::from_secs(30));
        for (name, value) in &context.secrets {
            request = request.env(name.clone(), value.expose());
        }
        run_checked(sandbox, "starting opencode serve", request).await
    }

    /// Waits for the "listening" line in the log while the server process is alive.
    async fn wait_listening(&self, sandbox: &Sandbox) -> Result<()> {
        let timeout = self.settings.startup_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let check = format!(
            "grep -qF {line} {log} && exit 0\n{alive} && exit 1\nexit 2",
            line = shell_quote(LISTENING_LINE),
            log = shell_quote(&log_path()),
            alive = server_alive_test(),
        );
        let mut interval = Duration::from_millis(100);
        loop {
            let output = sandbox
                .exec_output(ExecRequest::shell(check.clone()).timeout(Duration::from_secs(10)))
                .await?;
            let status = match output.status.code {
                Some(0) => return Ok(()),
                Some(2) => "exited before it was listening".to_owned(),
                _ if tokio::time::Instant::now() + interval > deadline => {
                    format!("not listening after {}", humantime::format_duration(timeout))
                }
                _ => {
                    tokio::time::sleep(interval).await;
                    interval = (interval * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            return Err(Error::StepFailed {
                step: "opencode serve".to_owned(),
                status,
                log_tail: self.log_tail(sandbox).await,
            });
        }
    }

    /// Polls `/global/health` until the server responds, and returns the response.
    ///
    /// Each probe gets [`HEALTH_PROBE_TIMEOUT`], because OpenCode 1.18.33 can accept a
    /// request in the fraction of a second before it listens and never respond to it. While
    /// the server does not respond, its process must stay alive, and the probes stop
    /// after the startup timeout. A server that is up costs one request.
    async fn wait_ready(&self, sandbox: &Sandbox, client: &OpenCodeClient) -> Result<Value> {
        let limit = self.settings.startup_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let mut interval = Duration::from_millis(100);
        let mut logged = false;
        loop {
            let problem = match client.health(HEALTH_PROBE_TIMEOUT).await {
                Ok(health) if health["healthy"] == true => return Ok(health),
                Err(error @ Error::Unauthenticated { .. }) => return Err(error),
                Ok(health) => format!("it reports it is not healthy: {health}"),
                Err(error) => error.to_string(),
            };
            if !self.server_alive(sandbox).await? {
                return Err(Error::StepFailed {
                    step: "opencode serve".to_owned(),
                    status: format!("not running, so {} does not respond ({problem})", client.base_url()),
                    log_tail: self.log_tail(sandbox).await,
                });
            }
            if tokio::time::Instant::now() + interval > deadline {
                return Err(Error::Timeout {
                    operation: format!("waiting for OpenCode at {} to respond ({problem})", client.base_url()),
                    after: limit,
                });
            }
            if !logged {
                tracing::info!(sandbox.name = %sandbox.name(), phase = "harness", url = %client.base_url(), %problem, "opencode does not respond yet; waiting for it to start");
                logged = true;
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 2).min(Duration::from_secs(1));
        }
    }

    /// Returns whether the process in the server's pid file is alive and not a zombie.
    async fn server_alive(&self, sandbox: &Sandbox) -> Result<bool> {
        let request = ExecRequest::shell(server_alive_test()).timeout(Duration::from_secs(10));
        Ok(sandbox.exec_output(request).await?.status.success())
    }

    async fn log_tail(&self, sandbox: &Sandbox) -> String {
        let request = ExecRequest::new(["tail", "-n", "30", "--", &log_path()]).timeout(Duration::from_secs(10));
        match sandbox.exec_output(request).await {
            Ok(output) => tail_lines(&output.stdout_text(), 30),
            Err(error) => format!("(failed to read {}: {error})", log_path()),
        }
    }
}

#[async_trait]
impl AgentHarness for OpenCodeHarness {
    fn name(&self) -> &str {
        "opencode"
    }

    fn image_lines(&self) -> Vec<String> {
        image_lines(&self.settings.version)
    }

    async fn start(&self, sandbox: &Sandbox, context: &HarnessContext) -> Result<Vec<Endpoint>> {
        if let Some(provider) = &self.settings.provider {
            if let Some(name) = &provider.api_key_env {
                if !context.secrets.contains_key(name) {
                    return Err(Error::invalid(
                        "harness.provider.api_key_env",
                        name.clone(),
                        format!("add \"{name}\" to the manifest's secrets so the key reaches the sandbox, and export {name} on the host"),
                    ));
                }
            }
        }
        let mut endpoint = self.endpoint(sandbox).await?;
        self.check_binary(sandbox).await?;

        let password = random_password()?;
        self.write_state(sandbox, &password).await?;
        self.launch_server(sandbox, context).await?;
        tracing::info!(sandbox.name = %sandbox.name(), phase = "harness", provider = sandbox.provider().name(), port = self.settings.port, "opencode serve started; waiting for it to listen");
        self.wait_listening(sandbox).await?;

        let credentials = credentials(password);
        let client = OpenCodeClient::new(endpoint.url.clone(), credentials.clone())?;
        let health = self.wait_ready(sandbox, &client).await?;
        tracing::info!(
            sandbox.name = %sandbox.name(),
            phase = "harness",
            provider = sandbox.provider().name(),
            url = %endpoint.url,
            version = health["version"].as_str().unwrap_or("unknown"),
            "opencode is ready"
        );
        self.remember(sandbox, &client);
        endpoint.credentials = Some(credentials);
        Ok(vec![endpoint])
    }

    async fn prompt(&self, sandbox: &Sandbox, request: PromptRequest) -> Result<AgentTurn> {
        let client = self.client(sandbox).await?;
        // The server may still be starting, for example right after a restart.
        self.wait_ready(sandbox, &client).await?;
        let info = match &request.session {
            Some(session) => client.session(session).await?,
            None => {
                let title = request.title.clone().unwrap_or_else(|| title_from(&request.text));
                client.create_session(&title).await?
            }
        };
        let session = info["id"].as_str().unwrap_or_default().to_owned();
        let project_dir = info["directory"].as_str().unwrap_or_default().to_owned();
        // Subscribe first, so no event of the turn can be missed.
        let mut events = client.events().await?;
        let first = tokio::time::timeout(FIRST_EVENT_TIMEOUT, events.next()).await.map_err(|_| Error::Timeout {
            operation: format!("waiting for the first event from {}", client.base_url()),
            after: FIRST_EVENT_TIMEOUT,
        })?;
        match first {
            Some(Ok(first)) if first["type"] == "server.connected" => {}
            Some(Ok(first)) => tracing::debug!(event = %first["type"], "the event stream did not start with server.connected"),
            Some(Err(error)) => return Err(error),
            None => return Err(Error::backend("opencode", "the event stream closed at once")),
        }
        client.prompt_async(&session, &request.text).await?;
        tracing::info!(sandbox.name = %sandbox.name(), phase = "harness", provider = sandbox.provider().name(), session = %session, "prompt sent");

        Ok(AgentTurn {
            session: session.clone(),
            events: follow_turn(client, session, project_dir, events),
        })
    }

    async fn abort(&self, sandbox: &Sandbox, session: &str) -> Result<()> {
        let client = self.client(sandbox).await?;
        tracing::info!(sandbox.name = %sandbox.name(), phase = "harness", provider = sandbox.provider().name(), session = %session, "aborting the turn");
        client.abort(session).await
    }
}

type EventSender = futures::channel::mpsc::Sender<Result<AgentEvent>>;

/// Maps the raw `/event` feed `events` to the [`AgentEvent`]s of one turn of
/// `session`, ending after its terminal event.
///
/// [`OpenCodeHarness::prompt`] uses it for the turns it starts; `ken attach` uses it to
/// follow a turn started elsewhere. The turn ends at `session.idle`, after a re-read
/// of the session's messages, and a feed that ends first yields an error.
pub fn follow_turn(
    client: OpenCodeClient,
    session: String,
    project_dir: String,
    events: futures::stream::BoxStream<'static, Result<Value>>,
) -> futures::stream::BoxStream<'static, Result<AgentEvent>> {
    let mapper = EventMapper::new(session.clone(), project_dir);
    let (sender, receiver) = futures::channel::mpsc::channel(64);
    tokio::spawn(drive_turn(client, session, events, mapper, sender));
    Box::pin(receiver)
}

/// Passes mapped events on until the turn ends, then sends its outcome.
async fn drive_turn(
    client: OpenCodeClient,
    session: String,
    mut events: futures::stream::BoxStream<'static, Result<Value>>,
    mut mapper: EventMapper,
    mut sender: EventSender,
) {
    // The client's stream ends with an error when the connection breaks or stays
    // silent, so this loop always ends.
    loop {
        let next = match events.next().await {
            Some(next) => next,
            None => Err(Error::backend("opencode", "the event stream ended before the turn finished")),
        };
        let event = match next {
            Ok(event) => event,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        for mapped in mapper.push(&event) {
            let outcome = match mapped {
                Mapped::Event(event) => {
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                    continue;
                }
                Mapped::Idle if !mapper.saw_activity() => continue,
                Mapped::Idle => match client.messages(&session).await {
                    Ok(messages) => turn_outcome(&messages),
                    Err(error) => {
                        let _ = sender.send(Err(error)).await;
                        return;
                    }
                },
            };
            if let TurnOutcome::Ended(event) = outcome {
                tracing::info!(session = %session, phase = "harness", outcome = ?event_kind(&event), "turn ended");
                let _ = sender.send(Ok(event)).await;
                return;
            }
        }
    }
}

fn event_kind(event: &AgentEvent) -> &'static str {
    match event {
        AgentEvent::Finished { .. } => "finished",
        AgentEvent::Failed { .. } => "failed",
        AgentEvent::Aborted => "aborted",
        _ => "other",
    }
}

/// Returns the Dockerfile lines that install Node and npm from Debian and
/// `opencode-ai@VERSION` from npm. They need a Debian-based image. Behind a
/// TLS-inspecting proxy, npm reaches its registry only because Ken adds the host's CA
/// bundle to every image it builds by default.
pub fn image_lines(version: &str) -> Vec<String> {
    [
        "# OpenCode, the agent server of ken-harness-opencode: Node and npm from Debian, then a",
        "# pinned opencode-ai release, because its HTTP API changes between releases.",
        "RUN apt-get update \\",
        "    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates nodejs npm \\",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        format!("    && npm install -g opencode-ai@{version} \\"),
        "    && npm cache clean --force \\".to_owned(),
        "    && apt-get clean \\".to_owned(),
        "    && rm -rf /var/lib/apt/lists/*".to_owned(),
    ])
    .collect()
}

/// Returns a shell test that succeeds when the process in the server's pid file is
/// alive and not a zombie.
fn server_alive_test() -> String {
    format!(
        "pid=$(cat {dir}/serve.pid) && [ -n \"$pid\" ] && [ -d /proc/$pid ] && ! grep -qs '^State:[[:space:]]*Z' /proc/$pid/status",
        dir = shell_quote(&state_dir()),
    )
}

fn credentials(password: Secret) -> Credentials {
    Credentials {
        username: DEFAULT_USERNAME.to_owned(),
        password,
    }
}

/// Returns 32 random hex digits from the host's `/dev/urandom`.
fn random_password() -> Result<Secret> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .map_err(|e| Error::io("failed to read /dev/urandom for the OpenCode server password", e))?;
    Ok(Secret::new(hex::encode(bytes)))
}

async fn read_password(sandbox: &Sandbox) -> Result<Secret> {
    let path = format!("{}/password", state_dir());
    let output = sandbox
        .exec_output(ExecRequest::new(["cat", "--", &path]).timeout(Duration::from_secs(10)))
        .await?;
    let password = output.stdout_text();
    if !output.status.success() || password.trim().is_empty() {
        return Err(Error::NotFound {
            kind: "OpenCode password file (was the harness started in this sandbox?)",
            name: format!("{}:{path}", sandbox.name()),
        });
    }
    Ok(Secret::new(password.trim().to_owned()))
}

async fn run_checked(sandbox: &Sandbox, what: &str, request: ExecRequest) -> Result<()> {
    let output = sandbox.exec_output(request).await?;
    if output.status.success() {
        return Ok(());
    }
    let mut log = output.stdout_text();
    log.push_str(&output.stderr_text());
    Err(Error::StepFailed {
        step: what.to_owned(),
        status: output.status.to_string(),
        log_tail: tail_lines(&log, 20),
    })
}

/// Returns the first line of `text`, cut to 60 characters, as a session title.
fn title_from(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("Ken prompt").trim();
    let mut title: String = line.chars().take(60).collect();
    if line.chars().count() > 60 {
        title.push_str("...");
    }
    title
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_lines_pin_the_version() {
        let lines = image_lines("1.18.33");
        assert!(lines.iter().any(|l| l.contains("npm install -g opencode-ai@1.18.33")));
        assert!(lines.iter().any(|l| l.contains("nodejs npm")));
    }

    #[test]
    fn title_is_the_first_line() {
        assert_eq!(title_from("\n fix it \nmore"), "fix it");
        assert_eq!(title_from(&"x".repeat(70)).chars().count(), 63);
    }
}
