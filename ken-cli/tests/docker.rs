//! End-to-end tests of `ken` against the real Docker engine.
//!
//! Each test skips itself (printing why) when the engine is unreachable, unless
//! KEN_REQUIRE_DOCKER=1 is set, in which case it fails. Every sandbox a test makes is
//! removed by a guard, also when the test fails.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    code, containers_of, describe, docker_available, ken, run_ken, stderr, stdout, unique_name,
    Project, SandboxGuard,
};

/// A manifest with nothing to start: the launch only builds, creates and clones.
const QUICK_MANIFEST: &str = r#"
name = "kentest"
ttl = "1h"

[repository]
path = "{repo}"
"#;

/// Waits for `child` to exit, killing it and failing the test after `limit`.
fn wait_for_exit(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("failed to wait for ken") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends each line the child writes to stderr through the returned channel.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stream = child.stderr.take().expect("stderr is piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Reads lines until one contains `needle`, failing after `limit`; returns the lines.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!(
                "no line containing {needle:?} within {limit:?}; lines so far:\n{}",
                seen.join("\n")
            ),
        }
    }
}

#[test]
fn sandbox_lifecycle_through_cli() {
    if !docker_available("sandbox_lifecycle_through_cli") {
        return;
    }
    let project = Project::new(QUICK_MANIFEST);
    let manifest = project.manifest();
    let manifest = manifest.to_str().unwrap();
    let name = unique_name("life");
    let guard = SandboxGuard::new(&name);

    let first = run_ken(["new", "--name", &name, "--manifest", manifest]);
    assert_eq!(code(&first), 0, "{}", describe(&first));
    assert_eq!(
        stdout(&first).lines().next(),
        Some(name.as_str()),
        "{}",
        describe(&first)
    );
    assert!(stdout(&first).contains("ready in"), "{}", describe(&first));
    assert!(
        stderr(&first).contains("phase image finished"),
        "{}",
        describe(&first)
    );
    let containers = containers_of(&name);
    assert_eq!(containers.len(), 1, "{containers:?}");

    // A second launch with the same name fails and leaves the first sandbox alone.
    let second = run_ken(["new", "--name", &name, "--manifest", manifest]);
    assert_eq!(code(&second), 4, "{}", describe(&second));
    assert!(
        stderr(&second).contains("already exists"),
        "{}",
        describe(&second)
    );
    assert!(stderr(&second).contains(&name), "{}", describe(&second));
    assert_eq!(
        containers_of(&name),
        containers,
        "the first sandbox's container changed"
    );
    let readme = run_ken(["exec", &name, "--", "cat", "/workspace/repo/README.md"]);
    assert_eq!(code(&readme), 0, "{}", describe(&readme));
    assert_eq!(stdout(&readme), "# test repository\n");

    let list = run_ken(["list", "--json"]);
    assert_eq!(code(&list), 0, "{}", describe(&list));
    let sandboxes: serde_json::Value =
        serde_json::from_slice(&list.stdout).expect("list --json prints JSON");
    let entry = sandboxes
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} missing from {sandboxes}"));
    assert_eq!(entry["ready"], true, "{entry}");
    let table = run_ken(["list"]);
    assert!(stdout(&table).starts_with("NAME"), "{}", describe(&table));
    assert!(stdout(&table).contains(&name), "{}", describe(&table));

    // The command's exit code, timeouts, stdin and raw bytes pass through.
    let failing = run_ken([
        "exec",
        &name,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(code(&failing), 3, "{}", describe(&failing));
    assert_eq!(stdout(&failing), "out\n");
    assert_eq!(stderr(&failing), "err\n");
    let timed_out = run_ken(["exec", &name, "--timeout", "1s", "--", "sleep", "60"]);
    assert_eq!(code(&timed_out), 124, "{}", describe(&timed_out));
    let bytes = run_ken(["exec", &name, "--", "printf", "\\000\\377\\376"]);
    assert_eq!(code(&bytes), 0, "{}", describe(&bytes));
    assert_eq!(bytes.stdout, vec![0x00, 0xff, 0xfe]);
    let mut cat = ken()
        .args(["exec", &name, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cat.stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let cat = cat.wait_with_output().unwrap();
    assert_eq!(code(&cat), 0, "{}", describe(&cat));
    assert_eq!(stdout(&cat), "through stdin\n");

    let removed = run_ken(["rm", &name]);
    assert_eq!(code(&removed), 0, "{}", describe(&removed));
    assert_eq!(stdout(&removed), format!("removed {name}\n"));
    assert!(
        containers_of(&name).is_empty(),
        "a container of {name} is left"
    );
    let again = run_ken(["rm", &name]);
    assert_eq!(code(&again), 0, "{}", describe(&again));
    assert!(stderr(&again).contains("not found"), "{}", describe(&again));
    let missing = run_ken(["exec", &name, "--no-wait", "--", "true"]);
    assert_eq!(code(&missing), 3, "{}", describe(&missing));
    drop(guard);
}

#[test]
fn gc_removes_sandbox_of_killed_launch() {
    if !docker_available("gc_removes_sandbox_of_killed_launch") {
        return;
    }
    let project = Project::new(
        r#"
name = "kentest"
ttl = "1h"

[[steps]]
name = "slow"
run = "sleep 300"
"#,
    );
    let name = unique_name("killed");
    let _guard = SandboxGuard::new(&name);

    let mut launch = ken()
        .args([
            "new",
            "--name",
            &name,
            "--manifest",
            project.manifest().to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut launch);
    wait_for_line(&lines, "step slow started", Duration::from_secs(300));
    // SIGKILL gives ken no chance to clean up; waiting reaps it, so its PID is gone.
    launch.kill().unwrap();
    launch.wait().unwrap();
    assert_eq!(
        containers_of(&name).len(),
        1,
        "the killed launch should have left its container"
    );

    let dry_run = run_ken(["gc", "--dry-run"]);
    assert_eq!(code(&dry_run), 0, "{}", describe(&dry_run));
    assert!(
        stdout(&dry_run).contains(&format!("would remove sandbox {name}")),
        "{}",
        describe(&dry_run)
    );
    assert_eq!(
        containers_of(&name).len(),
        1,
        "a dry run removed the container"
    );

    let gc = run_ken(["gc"]);
    assert_eq!(code(&gc), 0, "{}", describe(&gc));
    assert!(
        stdout(&gc).contains(&format!("removed sandbox {name}")),
        "{}",
        describe(&gc)
    );
    assert!(
        stdout(&gc).contains("launch never finished"),
        "{}",
        describe(&gc)
    );
    assert!(
        containers_of(&name).is_empty(),
        "gc left a container of {name}"
    );
}

#[test]
fn interrupt_mid_launch_removes_sandbox() {
    if !docker_available("interrupt_mid_launch_removes_sandbox") {
        return;
    }
    let project = Project::new(
        r#"
name = "kentest"
ttl = "1h"

[[steps]]
name = "slow"
run = "sleep 300"
"#,
    );
    let name = unique_name("interrupted");
    let _guard = SandboxGuard::new(&name);

    let mut launch = ken()
        .args([
            "new",
            "--name",
            &name,
            "--manifest",
            project.manifest().to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut launch);
    wait_for_line(&lines, "step slow started", Duration::from_secs(300));
    assert_eq!(
        containers_of(&name).len(),
        1,
        "the launch should have made its container"
    );

    // Ctrl-C: the launch is dropped and ken waits until its teardown has finished.
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &launch.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupt.success());
    let status = wait_for_exit(&mut launch, Duration::from_secs(120), "interrupted ken new");
    assert_eq!(status.code(), Some(130));
    let rest = wait_for_line(
        &lines,
        "removed what the launch made",
        Duration::from_secs(10),
    );
    assert!(
        rest.iter()
            .any(|l| l.contains("cancelled; removing what was made")),
        "{}",
        rest.join("\n")
    );
    assert!(
        containers_of(&name).is_empty(),
        "the interrupted launch left a container of {name}"
    );
}

#[test]
fn exec_waits_for_slow_startup() {
    if !docker_available("exec_waits_for_slow_startup") {
        return;
    }
    let project = Project::new(
        r#"
name = "kentest"
ttl = "1h"

[repository]
path = "{repo}"

[[steps]]
name = "slow"
run = "sleep 20 && touch /workspace/repo/step-done"
"#,
    );
    let name = unique_name("slow");
    let _guard = SandboxGuard::new(&name);

    let mut launch = ken()
        .args([
            "new",
            "--name",
            &name,
            "--manifest",
            project.manifest().to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Sent while the launch runs: it must wait for the launch instead of failing or
    // running against a sandbox without its repository.
    let listing = run_ken([
        "exec",
        &name,
        "--wait-timeout",
        "10m",
        "--",
        "ls",
        "/workspace/repo",
    ]);
    assert_eq!(code(&listing), 0, "{}", describe(&listing));
    let files: Vec<&str> = listing
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .collect();
    assert!(files.contains(&"README.md"), "{}", describe(&listing));
    assert!(
        files.contains(&"step-done"),
        "exec ran before the startup step finished:\n{}",
        describe(&listing)
    );

    let status = wait_for_exit(&mut launch, Duration::from_secs(300), "ken new");
    let mut launch_stderr = String::new();
    if let Some(mut stream) = launch.stderr.take() {
        std::io::Read::read_to_string(&mut stream, &mut launch_stderr).unwrap();
    }
    assert!(
        status.success(),
        "ken new failed: {status:?}\n{launch_stderr}"
    );
}
