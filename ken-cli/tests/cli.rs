//! Command-line handling and error paths of `ken` that need no Docker engine.

mod common;

use common::{code, describe, run_ken, stderr, stdout, Project};

#[test]
fn help_documents_exit_statuses() {
    let output = run_ken(["--help"]);
    assert_eq!(code(&output), 0, "{}", describe(&output));
    let help = stdout(&output);
    assert!(help.contains("Exit status"), "{help}");
    for line in [
        "2    invalid input",
        "3    not found",
        "4    already exists",
        "130  interrupted",
    ] {
        assert!(help.contains(line), "missing {line:?} in:\n{help}");
    }
}

#[test]
fn invalid_manifest_value_exits_2_with_line() {
    let project = Project::new("name = \"demo\"\nttl = \"soon\"\n");
    let output = run_ken(["new", "--manifest", project.manifest().to_str().unwrap()]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let message = stderr(&output);
    let location = format!("{}:2:", project.manifest().display());
    assert!(
        message.contains(&location),
        "expected {location:?} in:\n{message}"
    );
    assert!(message.contains("ttl"), "{message}");
    assert!(message.starts_with("error: "), "{message}");
}

#[test]
fn manifest_syntax_error_exits_2_with_line() {
    let project = Project::new("name = \"demo\"\n\n[image\ndockerfile = \"Dockerfile\"\n");
    let output = run_ken(["new", "--manifest", project.manifest().to_str().unwrap()]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let location = format!("{}:3:", project.manifest().display());
    assert!(stderr(&output).contains(&location), "{}", describe(&output));
}

#[test]
fn missing_manifest_exits_2_naming_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let output = run_ken(["new", "--manifest", path.to_str().unwrap()]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(
        stderr(&output).contains("absent.toml"),
        "{}",
        describe(&output)
    );
    assert!(
        stderr(&output).contains("--manifest"),
        "{}",
        describe(&output)
    );
}

#[test]
fn unknown_provider_lists_known_ones() {
    let output = run_ken(["--provider", "kubernetes", "list"]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let message = stderr(&output);
    assert!(message.contains("kubernetes"), "{message}");
    assert!(message.contains("docker"), "{message}");
    assert!(message.contains("modal"), "{message}");
}

#[test]
fn modal_without_credentials_names_the_setting() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ken"))
        .args(["--provider", "modal", "list"])
        .env_remove("MODAL_TOKEN_ID")
        .env_remove("MODAL_TOKEN_SECRET")
        .env_remove("MODAL_PROFILE")
        .env("MODAL_CONFIG_PATH", "/nonexistent/ken-test/.modal.toml")
        .output()
        .expect("ken runs");
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let message = stderr(&output);
    assert!(message.contains("MODAL_TOKEN_ID"), "{message}");
}

#[test]
fn invalid_sandbox_name_exits_2_naming_it() {
    let cases: [&[&str]; 4] = [
        &["new", "--name", "Bad_Name"],
        &["rm", "ok-name", "Bad_Name"],
        &["exec", "Bad_Name", "--", "true"],
        &["urls", "Bad_Name"],
    ];
    for args in cases {
        let output = run_ken(args);
        assert_eq!(code(&output), 2, "ken {args:?}: {}", describe(&output));
        assert!(
            stderr(&output).contains("Bad_Name"),
            "ken {args:?}: {}",
            describe(&output)
        );
        assert!(
            stderr(&output).contains("invalid sandbox name"),
            "ken {args:?}: {}",
            describe(&output)
        );
    }
}

#[test]
fn exec_without_separator_is_usage_error() {
    let output = run_ken(["exec", "demo", "ls", "-la"]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(stderr(&output).contains("'ls'"), "{}", describe(&output));
    assert!(
        stderr(&output).contains("goes after `--`"),
        "{}",
        describe(&output)
    );
}

#[test]
fn exec_without_command_is_usage_error() {
    let output = run_ken(["exec", "demo"]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(stderr(&output).contains("COMMAND"), "{}", describe(&output));
}

#[test]
fn exec_invalid_timeout_is_usage_error() {
    let output = run_ken(["exec", "demo", "--timeout", "soon", "--", "true"]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(stderr(&output).contains("soon"), "{}", describe(&output));
}

#[test]
fn exec_invalid_env_name_is_usage_error() {
    let output = run_ken(["exec", "demo", "-e", "1X=secret-value", "--", "true"]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(stderr(&output).contains("1X"), "{}", describe(&output));
    assert!(
        !stderr(&output).contains("secret-value"),
        "{}",
        describe(&output)
    );
}

#[test]
fn rm_needs_names_or_all() {
    let output = run_ken(["rm"]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    let both = run_ken(["rm", "--all", "demo"]);
    assert_eq!(code(&both), 2, "{}", describe(&both));
}

#[test]
fn unreachable_engine_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}", dir.path().join("docker.sock").display());
    let output = common::ken()
        .env("DOCKER_HOST", &socket)
        .args(["list"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 1, "{}", describe(&output));
    let message = stderr(&output);
    assert!(message.contains(&socket), "{message}");
    assert!(message.contains("scripts/docker-up.sh"), "{message}");
}

#[test]
fn unreachable_engine_error_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix://{}", dir.path().join("docker.sock").display());
    let output = common::ken()
        .env("DOCKER_HOST", &socket)
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 1, "{}", describe(&output));
    let value: serde_json::Value =
        serde_json::from_str(stderr(&output).trim()).expect("stderr is one JSON object");
    assert_eq!(value["error"]["exit_code"], 1);
    assert!(
        value["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Docker engine"),
        "{value}"
    );
}

#[test]
fn help_documents_turn_exit_statuses() {
    let output = run_ken(["--help"]);
    let help = stdout(&output);
    for line in ["5    `ken prompt`", "6    `ken prompt`"] {
        assert!(help.contains(line), "missing {line:?} in:\n{help}");
    }
}

#[test]
fn prompt_without_text_is_usage_error() {
    let output = run_ken(["prompt"]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(stderr(&output).contains("TEXT"), "{}", describe(&output));
}

#[test]
fn prompt_with_empty_text_exits_2() {
    let output = run_ken(["prompt", "--name", "demo", "  "]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(
        stderr(&output).contains("the prompt is empty"),
        "{}",
        describe(&output)
    );
}

#[test]
fn prompt_session_needs_name() {
    let output = run_ken(["prompt", "--session", "ses_1", "fix it"]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(stderr(&output).contains("--name"), "{}", describe(&output));
}

#[test]
fn unknown_harness_kind_exits_2_naming_it() {
    let project = Project::new("name = \"demo\"\n\n[harness]\nkind = \"aider\"\n");
    let manifest = project.manifest();
    for command in ["prompt", "new"] {
        let mut args = vec![command, "--manifest", manifest.to_str().unwrap()];
        if command == "prompt" {
            args.push("fix it");
        }
        let output = run_ken(&args);
        assert_eq!(code(&output), 2, "ken {command}: {}", describe(&output));
        let message = stderr(&output);
        assert!(message.contains("\"aider\""), "ken {command}: {message}");
        assert!(
            message.contains("\"opencode\""),
            "ken {command} does not list the known kinds: {message}"
        );
    }
}

#[test]
fn prompt_manifest_without_harness_exits_2() {
    let project = Project::new("name = \"demo\"\n");
    let output = run_ken([
        "prompt",
        "--manifest",
        project.manifest().to_str().unwrap(),
        "fix it",
    ]);
    assert_eq!(code(&output), 2, "{}", describe(&output));
    assert!(
        stderr(&output).contains("[harness]"),
        "{}",
        describe(&output)
    );
}
