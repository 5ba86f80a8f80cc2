//! The OpenCode harness end to end on a real Docker engine: the demo project with
//! OpenCode in its image, launched through the orchestrator, prompted against a
//! scripted OpenAI-compatible model that runs inside the sandbox. The last steps
//! restart the server and prompt it before it listens, then destroy the sandbox in
//! the middle of a turn.
//!
//! Set `KEN_RECORD_EVENTS=DIR` to save the raw `/event` feed and the final messages of
//! the pink, provider-error and abort turns into DIR, as `tests/fixtures/events-*`
//! used by the `recorded_events` tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ken_core::harness::{AgentEvent, AgentHarness, AgentHarnessExt, PromptRequest, ToolStatus};
use ken_core::orchestrator::{sandbox_selector, LaunchOptions};
use ken_core::sandbox::{Credentials, PortSpec, Sandbox};
use ken_core::{archive, ExecRequest, Manifest, Orchestrator, SandboxName, SandboxProvider, Secret};
use ken_harness_opencode::{OpenCodeClient, OpenCodeHarness};
use ken_provider_docker::DockerProvider;

const MODEL_PORT: u16 = 4010;
const KEY_ENV: &str = "KEN_TEST_MODEL_KEY";

/// Returns the model key for this run. It is built at run time so that the test's
/// own source, which is in the clone, does not contain it.
fn model_key() -> String {
    format!("scripted-key-{}", std::process::id())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn harness_settings() -> toml::Table {
    format!(
        r#"model = "scripted/scripted-model"
[provider]
id = "scripted"
name = "Scripted model"
base_url = "http://127.0.0.1:{MODEL_PORT}/v1"
api_key_env = "{KEY_ENV}"
context_limit = 32000
output_limit = 4096"#
    )
    .parse()
    .unwrap()
}

/// Loads the demo manifest and adds the agent port, the model key and the harness.
fn demo_manifest(harness: &OpenCodeHarness) -> Manifest {
    let mut manifest = Manifest::load(repo_root().join("examples/demo-app/ken.toml")).unwrap();
    let demo = std::fs::read_to_string(&manifest.image.dockerfile).unwrap();
    for line in harness.image_lines().iter().filter(|line| !line.starts_with('#')) {
        assert!(demo.contains(line.as_str()), "the demo Dockerfile lacks the harness line {line:?}");
    }
    manifest.ports.push(PortSpec {
        name: "agent".into(),
        port: harness.settings().port,
        scheme: "http".into(),
    });
    manifest.secrets.push(KEY_ENV.into());
    manifest.harness = Some(ken_core::manifest::ExtensionConfig {
        kind: "opencode".into(),
        settings: harness_settings(),
    });
    manifest
}

async fn start_scripted_model(sandbox: &Sandbox) {
    let script = include_bytes!("../../examples/demo-app/agent/scripted_model.py");
    sandbox
        .provider()
        .upload(sandbox.name(), "/opt", archive::single_file("scripted_model.py", script, 0o755).unwrap())
        .await
        .unwrap();
    let start = format!(
        "setsid python3 /opt/scripted_model.py --port {MODEL_PORT} --root /workspace/repo \
         --log /var/log/ken/scripted-model.log --key-env {KEY_ENV} </dev/null >>/var/log/ken/scripted-model.out 2>&1 &"
    );
    let output = sandbox.exec_output(ExecRequest::shell(start)).await.unwrap();
    assert!(output.status.success(), "starting the scripted model failed: {}", output.stderr_text());
    let probe = ken_core::plan::Probe::Tcp { port: MODEL_PORT };
    ken_core::plan::wait_for_probe(sandbox.provider().as_ref(), sandbox.name(), &probe, Duration::from_secs(20), "scripted model")
        .await
        .unwrap();
}

/// The time limit that turns a hang of the product into a test failure. It is far
/// above every limit of the harness, so it never decides a passing run.
const HANG_GUARD: Duration = Duration::from_secs(300);

/// Stops the OpenCode server by its pid file and starts it again with the command
/// line, environment and working folder read from `/proc` before the stop, so the
/// new server has the same password, configuration and model key.
///
/// The new process sleeps two seconds before it execs `opencode serve`, so the server
/// is certainly not listening when this returns. Returns how many "listening" lines
/// the server log contained at that point.
async fn restart_server_late(sandbox: &Sandbox) -> usize {
    let script = r#"set -e
dir=/run/ken/opencode
log=/var/log/ken/opencode.log
pid=$(cat "$dir/serve.pid")
cp "/proc/$pid/environ" "$dir/restart.environ"
cp "/proc/$pid/cmdline" "$dir/restart.cmdline"
cd "$(readlink "/proc/$pid/cwd")"
kill "$pid"
for _ in $(seq 100); do
  if [ ! -d "/proc/$pid" ] || grep -qs '^State:[[:space:]]*Z' "/proc/$pid/status"; then break; fi
  sleep 0.1
done
if [ -d "/proc/$pid" ] && ! grep -qs '^State:[[:space:]]*Z' "/proc/$pid/status"; then
  echo "opencode serve (pid $pid) is still running 10 s after SIGTERM" >&2
  exit 1
fi
setsid bash -c 'sleep 2
readarray -d "" vars <"$0/restart.environ"
readarray -d "" argv <"$0/restart.cmdline"
exec env -i "${vars[@]}" "${argv[@]}"' "$dir" </dev/null >>"$log" 2>&1 &
echo "$!" >"$dir/serve.pid"
grep -cF 'opencode server listening on' "$log""#;
    let output = sandbox
        .exec_output(ExecRequest::new(["bash", "-c", script]))
        .await
        .unwrap();
    assert!(output.status.success(), "restarting opencode serve failed: {}", output.stderr_text());
    output.stdout_text().trim().parse().unwrap()
}

async fn listening_lines(sandbox: &Sandbox) -> usize {
    let count = exec_text(sandbox, "grep -cF 'opencode server listening on' /var/log/ken/opencode.log").await;
    count.trim().parse().unwrap()
}

async fn http_status(url: &url::Url, credentials: Option<&Credentials>) -> u16 {
    let client = reqwest::Client::new();
    let mut request = client.get(url.clone()).timeout(Duration::from_secs(10));
    if let Some(credentials) = credentials {
        request = request.basic_auth(&credentials.username, Some(credentials.password.expose()));
    }
    request.send().await.unwrap().status().as_u16()
}

async fn exec_text(sandbox: &Sandbox, script: &str) -> String {
    let output = sandbox.exec_output(ExecRequest::shell(script)).await.unwrap();
    format!("{}{}", output.stdout_text(), output.stderr_text())
}

/// Records the raw event feed of one turn and the session's messages after it, when
/// `KEN_RECORD_EVENTS` names a folder.
struct Recorder {
    task: Option<(OpenCodeClient, PathBuf, tokio::task::JoinHandle<()>)>,
}

impl Recorder {
    async fn start(harness: &OpenCodeHarness, sandbox: &Sandbox, name: &str) -> Recorder {
        let Some(dir) = std::env::var_os("KEN_RECORD_EVENTS").map(PathBuf::from) else {
            return Recorder { task: None };
        };
        let client = harness.client(sandbox).await.unwrap();
        let base = dir.join(format!("events-{name}"));
        let task = record_events(client.clone(), base.with_extension("jsonl")).await;
        Recorder { task: Some((client, base, task)) }
    }

    async fn finish(self, session: &str) {
        let Some((client, base, task)) = self.task else {
            return;
        };
        task.await.unwrap();
        let messages = client.messages(session).await.unwrap();
        let text = serde_json::to_string_pretty(&messages).unwrap();
        std::fs::write(base.with_extension("messages.json"), text + "\n").unwrap();
    }
}

/// Records the raw event feed until a session was busy and then idle.
async fn record_events(client: OpenCodeClient, path: PathBuf) -> tokio::task::JoinHandle<()> {
    let mut events = client.events().await.unwrap();
    tokio::spawn(async move {
        let mut lines = Vec::new();
        let mut busy_sessions = 0usize;
        while let Ok(Some(Ok(event))) = tokio::time::timeout(Duration::from_secs(120), events.next()).await {
            lines.push(event.to_string());
            if event["type"] == "session.status" && event["properties"]["status"]["type"] == "busy" {
                busy_sessions += 1;
            }
            if event["type"] == "session.idle" && busy_sessions > 0 {
                // The final message updates can follow the first idle.
                tokio::time::sleep(Duration::from_secs(1)).await;
                while let Ok(Some(Ok(event))) = tokio::time::timeout(Duration::from_millis(300), events.next()).await {
                    lines.push(event.to_string());
                }
                break;
            }
        }
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opencode_edits_demo_and_serves_ui() {
    let Some(provider) = ken_core::testkit::require_docker_or_skip("OpenCode end to end", DockerProvider::connect().await) else {
        return;
    };
    let provider: Arc<dyn SandboxProvider> = Arc::new(provider);
    // The launch's preflight reads the secret from the environment; this is the only
    // test in this binary, so nothing else reads the environment concurrently.
    std::env::set_var(KEY_ENV, model_key());
    let harness = Arc::new(OpenCodeHarness::from_settings(&harness_settings()).unwrap());
    let manifest = demo_manifest(&harness);
    let orchestrator = Orchestrator::builder(provider.clone())
        .owner("ken-tests")
        .harness(harness.clone())
        .build();
    let name = SandboxName::new(format!("opencode-e2e-{}", std::process::id())).unwrap();

    let launched = orchestrator.launch(&manifest, LaunchOptions::default().name(name.clone())).await;
    let result = match launched {
        Ok(launched) => {
            futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(exercise(&harness, launched))).await
        }
        Err(error) => Ok(Err(error)),
    };

    orchestrator.destroy(&name).await.unwrap();
    let left = provider.resources(&sandbox_selector(&name)).await.unwrap();
    assert!(left.is_empty(), "left behind: {left:?}");
    match result {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("the launch or a step after it failed: {error}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn exercise(harness: &OpenCodeHarness, launched: ken_core::orchestrator::Launched) -> ken_core::Result<()> {
    let sandbox = launched.sandbox.clone();
    let agent_endpoints = launched.endpoints.iter().filter(|e| e.name == "agent").count();
    assert_eq!(agent_endpoints, 1, "the agent endpoint is listed once");
    let agent = launched
        .endpoints
        .iter()
        .find(|e| e.name == "agent" && e.credentials.is_some())
        .expect("the harness endpoint with credentials")
        .clone();
    let credentials = agent.credentials.clone().unwrap();
    assert_eq!(agent.url.host_str(), Some("127.0.0.1"));
    start_scripted_model(&sandbox).await;

    // The web UI responds only to requests with the password.
    assert_eq!(http_status(&agent.url, None).await, 401);
    assert_eq!(http_status(&agent.url, Some(&credentials)).await, 200);
    let wrong = Credentials {
        username: credentials.username.clone(),
        password: Secret::new("not-the-password"),
    };
    assert_eq!(http_status(&agent.url, Some(&wrong)).await, 401);
    let wrong_client = OpenCodeClient::new(agent.url.clone(), wrong).unwrap();
    let error = wrong_client.create_session("wrong password").await.unwrap_err();
    assert!(matches!(error, ken_core::Error::Unauthenticated { .. }), "{error}");

    // The model key reached the server's environment but not the repository.
    let config = exec_text(&sandbox, "cat /run/ken/opencode/opencode.json").await;
    assert!(config.contains("{env:KEN_TEST_MODEL_KEY}"), "{config}");
    assert!(!config.contains(&model_key()));
    let grep = exec_text(&sandbox, &format!("grep -rl {} /workspace/repo || echo none", model_key())).await;
    assert_eq!(grep.trim(), "none");

    // The first turn: the scripted model reads and edits the stylesheet.
    let recorder = Recorder::start(harness, &sandbox, "theme-pink").await;
    let transcript = harness
        .prompt_to_end(&sandbox, PromptRequest { text: "change the theme color to pink".into(), ..Default::default() })
        .await?;
    recorder.finish(&transcript.session).await;
    let events = &transcript.events;
    let model_log = exec_text(&sandbox, "cat /var/log/ken/scripted-model.log").await;
    assert!(
        matches!(transcript.outcome(), Some(AgentEvent::Finished { text: Some(text) }) if text.contains("pink")),
        "events: {events:#?}\nmodel log: {model_log}\nopencode log: {}",
        exec_text(&sandbox, "tail -n 40 /var/log/ken/opencode.log").await
    );
    assert!(
        events.iter().any(|e| matches!(e, AgentEvent::ToolCall { tool, status: ToolStatus::Completed, .. } if tool == "edit")),
        "{events:#?}"
    );
    assert!(
        events.contains(&AgentEvent::FileEdited { path: "static/style.css".into() }),
        "{events:#?}"
    );
    assert!(events.iter().any(|e| matches!(e, AgentEvent::Text { .. })), "{events:#?}");
    for line in model_log.lines() {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(entry["stream"], true, "{line}");
        assert_eq!(entry["authorized"], true, "{line}");
    }
    assert!(model_log.contains("\"edit\""), "the agent requests carried no tools: {model_log}");

    let diff = exec_text(&sandbox, "git -C /workspace/repo diff").await;
    assert!(diff.contains("+  --theme-color: pink;"), "{diff}");
    let web = launched.endpoints.iter().find(|e| e.name == "web").expect("web endpoint");
    let css = reqwest::get(web.url.join("static/style.css").unwrap()).await.unwrap().text().await.unwrap();
    assert!(css.contains("--theme-color: pink;"), "{css}");

    // A follow-up prompt continues the same session.
    let follow_up = harness
        .prompt_to_end(
            &sandbox,
            PromptRequest { text: "say hello".into(), session: Some(transcript.session.clone()), title: None },
        )
        .await?;
    assert_eq!(follow_up.session, transcript.session);
    assert_eq!(
        follow_up.outcome(),
        Some(&AgentEvent::Finished { text: Some("hello from the scripted model".into()) })
    );

    // A provider error inside HTTP 200 is a failed turn with the provider's message.
    let recorder = Recorder::start(harness, &sandbox, "provider-error").await;
    let failed = harness
        .prompt_to_end(&sandbox, PromptRequest { text: "answer with a provider error".into(), ..Default::default() })
        .await?;
    recorder.finish(&failed.session).await;
    assert!(
        matches!(failed.outcome(), Some(AgentEvent::Failed { message }) if message.contains("scripted failure")),
        "{:#?}",
        failed.events
    );

    // An abort in the middle of a slow turn.
    let recorder = Recorder::start(harness, &sandbox, "abort").await;
    let mut turn = harness
        .prompt(&sandbox, PromptRequest { text: "reply slowly".into(), ..Default::default() })
        .await?;
    let mut seen = Vec::new();
    while let Some(event) = turn.events.next().await {
        let event = event?;
        let is_text = matches!(event, AgentEvent::Text { .. });
        seen.push(event);
        if is_text {
            break;
        }
    }
    harness.abort(&sandbox, &turn.session).await?;
    while let Some(event) = turn.events.next().await {
        let event = event?;
        let terminal = event.is_terminal();
        seen.push(event);
        if terminal {
            break;
        }
    }
    recorder.finish(&turn.session).await;
    assert_eq!(seen.last(), Some(&AgentEvent::Aborted), "{seen:#?}");

    // A prompt sent while the server is starting waits until it responds. Requests
    // that reach OpenCode just before it listens can hang forever, so an unprotected
    // first request would fail or hang here.
    let listening_before = restart_server_late(&sandbox).await;
    let early = tokio::time::timeout(
        HANG_GUARD,
        harness.prompt_to_end(&sandbox, PromptRequest { text: "say hello".into(), ..Default::default() }),
    )
    .await
    .expect("a prompt to a starting server hung")?;
    assert_eq!(
        early.outcome(),
        Some(&AgentEvent::Finished { text: Some("hello from the scripted model".into()) }),
        "{:#?}\nopencode log: {}",
        early.events,
        exec_text(&sandbox, "tail -n 40 /var/log/ken/opencode.log").await
    );
    assert_eq!(listening_lines(&sandbox).await, listening_before + 1, "the server did not restart once");

    // Last, because it ends the sandbox: destroying the sandbox in the middle of a
    // turn ends the turn's events with an error instead of leaving them open.
    let mut turn = harness
        .prompt(&sandbox, PromptRequest { text: "reply slowly".into(), ..Default::default() })
        .await?;
    loop {
        let next = tokio::time::timeout(HANG_GUARD, turn.events.next()).await.expect("no text of the slow turn arrived");
        match next {
            Some(Ok(AgentEvent::Text { .. })) => break,
            Some(Ok(event)) => assert!(!event.is_terminal(), "the slow turn ended early: {event:?}"),
            other => panic!("the slow turn's events ended before any text: {other:?}"),
        }
    }
    sandbox.provider().destroy(sandbox.name()).await?;
    let end = tokio::time::timeout(HANG_GUARD, async {
        while let Some(next) = turn.events.next().await {
            match next {
                Ok(event) if !event.is_terminal() => continue,
                end => return Some(end),
            }
        }
        None
    })
    .await
    .expect("the turn's events stayed open after the sandbox was destroyed");
    match end {
        Some(Err(error)) => eprintln!("the turn ended after the sandbox was destroyed: {error}"),
        Some(Ok(event)) => assert!(
            !matches!(event, AgentEvent::Finished { .. }),
            "a turn whose sandbox was destroyed finished: {event:?}"
        ),
        None => panic!("the turn's events ended without an error or a terminal event"),
    }
    Ok(())
}
