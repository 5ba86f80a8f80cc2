//! `ken new` and `ken prompt` with the OpenCode harness on a real Docker engine: the
//! demo project's agent manifest, whose scripted model service edits the stylesheet
//! through OpenCode's tools. The last step removes the sandbox in the middle of a
//! turn.
//!
//! The test skips itself when the engine is unreachable, unless KEN_REQUIRE_DOCKER=1
//! is set, in which case it fails. The sandbox is removed by a guard, also when the
//! test fails. The demo manifest clones the committed history of this repository, so
//! the test runs the demo's committed files.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    code, describe, docker_available, ken, run_ken, stderr, stdout, unique_name, SandboxGuard,
};

/// The time limit that turns a hang of `ken` into a test failure. It is far above
/// every limit of the harness, so it never decides a passing run.
const HANG_GUARD: Duration = Duration::from_secs(300);

fn agent_manifest() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    repo.join("examples/demo-app/ken-agent.toml")
}

/// Sends `GET path` to an `http://127.0.0.1:PORT/` URL and returns the status code
/// and the body.
fn http_get(base: &str, path: &str) -> (u16, String) {
    let address = base
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("expected an http:// URL, got {base:?}"));
    let mut stream = TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("failed to connect to {address}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn endpoint_url(urls: &Output, name: &str) -> String {
    let endpoints: serde_json::Value = serde_json::from_slice(&urls.stdout).unwrap();
    endpoints
        .as_array()
        .unwrap()
        .iter()
        .find(|endpoint| endpoint["name"] == name)
        .and_then(|endpoint| endpoint["url"].as_str())
        .unwrap_or_else(|| panic!("no endpoint {name:?} in {endpoints}"))
        .to_owned()
}

/// Waits for `child` to exit, killing it and failing the test after [`HANG_GUARD`].
fn wait_or_kill(child: &mut Child, command: &str) -> ExitStatus {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command} was still running after {HANG_GUARD:?}; it was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `ken prompt --json "reply slowly"` in the sandbox, waits for the first text
/// of the reply, removes the sandbox with `ken rm`, and returns how `ken prompt`
/// exited and what it printed on stderr.
fn prompt_while_removing(name: &str, manifest: &str) -> (ExitStatus, String) {
    let mut child = ken()
        .args([
            "prompt",
            "--name",
            name,
            "--manifest",
            manifest,
            "--json",
            "reply slowly",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start ken prompt");
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let deadline = Instant::now() + HANG_GUARD;
    let mut shown = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = received.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ken prompt showed no reply text; it printed:\n{}",
                shown.join("\n")
            );
        };
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        shown.push(line);
        if event["type"] == "text" {
            break;
        }
    }

    let removed = run_ken(["rm", name]);
    assert_eq!(
        code(&removed),
        0,
        "ken rm during a turn: {}",
        describe(&removed)
    );
    let status = wait_or_kill(&mut child, "ken prompt in a removed sandbox");
    (status, stderr.join().unwrap())
}

#[test]
fn prompt_turns_demo_pink() {
    if !docker_available("prompt_turns_demo_pink") {
        return;
    }
    let name = unique_name("agent");
    let guard = SandboxGuard::new(&name);
    let manifest = agent_manifest();
    let manifest = manifest.to_str().unwrap();

    let new = run_ken(["new", "--name", name.as_str(), "--manifest", manifest]);
    assert_eq!(code(&new), 0, "ken new: {}", describe(&new));
    let listed = stdout(&new);
    assert!(
        listed.contains("user opencode"),
        "ken new does not show the agent's user:\n{listed}"
    );

    let prompt = run_ken([
        "-v",
        "prompt",
        "--name",
        name.as_str(),
        "--manifest",
        manifest,
        "change the theme color to pink",
    ]);
    assert_eq!(code(&prompt), 0, "ken prompt: {}", describe(&prompt));
    let shown = stdout(&prompt);
    assert!(shown.contains("edit"), "no edit tool call in:\n{shown}");
    assert!(
        shown.contains("static/style.css"),
        "no static/style.css in:\n{shown}"
    );
    assert!(
        shown.contains(&format!("sandbox  {name}")),
        "no sandbox name in:\n{shown}"
    );
    assert!(shown.contains("session  "), "no session id in:\n{shown}");

    let password = run_ken([
        "exec",
        name.as_str(),
        "--",
        "cat",
        "/run/ken/opencode/password",
    ]);
    assert_eq!(
        code(&password),
        0,
        "reading the password: {}",
        describe(&password)
    );
    let password = stdout(&password).trim().to_owned();
    assert!(
        password.len() >= 16,
        "the password file is too short to be the password"
    );
    for (command, output) in [("ken new", &new), ("ken prompt -v", &prompt)] {
        assert!(
            !stdout(output).contains(&password),
            "{command} printed the password on stdout"
        );
        assert!(
            !stderr(output).contains(&password),
            "{command} printed the password on stderr"
        );
    }

    let diff = run_ken(["exec", name.as_str(), "--", "git", "diff"]);
    assert_eq!(code(&diff), 0, "git diff: {}", describe(&diff));
    assert!(
        stdout(&diff).contains("pink"),
        "git diff shows no pink:\n{}",
        stdout(&diff)
    );

    let urls = run_ken(["urls", name.as_str(), "--json"]);
    assert_eq!(code(&urls), 0, "ken urls: {}", describe(&urls));
    let (status, css) = http_get(&endpoint_url(&urls, "web"), "/static/style.css");
    assert_eq!(status, 200, "GET /static/style.css:\n{css}");
    assert!(
        css.contains("pink"),
        "the served stylesheet has no pink:\n{css}"
    );
    let (status, _) = http_get(&endpoint_url(&urls, "agent"), "/");
    assert_eq!(
        status, 401,
        "the agent's web UI answers without the password"
    );

    // Last, because it removes the sandbox: `ken prompt` exits with status 1 when the
    // sandbox goes away in the middle of the turn.
    let (status, errors) = prompt_while_removing(&name, manifest);
    assert_eq!(
        status.code(),
        Some(1),
        "ken prompt in a removed sandbox: {status}\n--- stderr ---\n{errors}"
    );
    let reported = errors
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|value| value["error"]["message"].is_string());
    assert!(
        reported.is_some(),
        "ken prompt --json reported no error after the sandbox was removed:\n{errors}"
    );

    drop(guard);
    let gone = run_ken(["urls", name.as_str()]);
    assert_eq!(
        code(&gone),
        3,
        "the sandbox is still there after ken rm: {}",
        describe(&gone)
    );
}
