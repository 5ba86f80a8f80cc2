//! Helpers shared by the `ken` binary's integration tests: running the binary,
//! writing small projects into temporary folders, and removing sandboxes afterwards.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Returns a command for the built `ken` binary, with no stdin and none of the
/// environment variables that would change its defaults.
pub fn ken() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ken"));
    for name in [
        "RUST_LOG",
        "KEN_PROVIDER",
        "KEN_OWNER",
        "KEN_MANIFEST",
        "NO_COLOR",
    ] {
        command.env_remove(name);
    }
    command.stdin(Stdio::null());
    command
}

/// Runs `ken` with `args` and returns its output.
pub fn run_ken<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    ken()
        .args(args)
        .output()
        .expect("failed to run the ken binary")
}

/// Returns the exit code, treating death by a signal as -1.
pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Formats an output for an assertion message.
pub fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    )
}

/// The test image: the local Debian base plus git, which the repository phase runs
/// inside the sandbox to clone the project. Every test uses the same text, so the
/// image is built once and then found in Ken's image cache.
pub const DOCKERFILE: &str = "FROM debian:bookworm-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends git >/dev/null && rm -rf /var/lib/apt/lists/*
";

/// A temporary folder holding a manifest, its Dockerfile and a git repository.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// Writes `ken.toml` with `manifest` (where `{repo}` is replaced by the path of
    /// the project's git repository), [`DOCKERFILE`], and a git repository with one
    /// commit containing README.md.
    pub fn new(manifest: &str) -> Project {
        let dir = tempfile::tempdir().expect("failed to create a temporary folder");
        let project = Project { dir };
        std::fs::write(project.path().join("Dockerfile"), DOCKERFILE).unwrap();
        let repo = project.repo();
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::write(repo.join("README.md"), "# test repository\n").unwrap();
        for args in [
            &["init", "-q", "-b", "main"][..],
            &["add", "README.md"][..],
            &[
                "-c",
                "user.name=ken-test",
                "-c",
                "user.email=ken-test@example.invalid",
                "commit",
                "-q",
                "-m",
                "first",
            ][..],
        ] {
            let status = Command::new("git")
                .args(args)
                .current_dir(&repo)
                .status()
                .expect("failed to run git");
            assert!(status.success(), "git {args:?} failed");
        }
        let text = manifest.replace("{repo}", repo.to_str().unwrap());
        std::fs::write(project.manifest(), text).unwrap();
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn manifest(&self) -> PathBuf {
        self.path().join("ken.toml")
    }

    pub fn repo(&self) -> PathBuf {
        self.path().join("repo")
    }
}

/// Removes the sandbox with `ken rm` when dropped, so a failing test leaves nothing.
pub struct SandboxGuard {
    pub name: String,
}

impl SandboxGuard {
    pub fn new(name: &str) -> SandboxGuard {
        SandboxGuard {
            name: name.to_owned(),
        }
    }
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        let output = run_ken(["rm", self.name.as_str()]);
        if !output.status.success() {
            eprintln!(
                "cleanup of sandbox {} failed:\n{}",
                self.name,
                describe(&output)
            );
        }
    }
}

/// Returns a sandbox name unique to this test process.
pub fn unique_name(label: &str) -> String {
    format!("kt{}-{label}", std::process::id())
}

/// Returns true when `ken list` reaches the Docker engine. When it does not, the
/// test fails if KEN_REQUIRE_DOCKER=1 is set and is skipped otherwise. Any other
/// failure of `ken list` fails the test.
pub fn docker_available(test: &str) -> bool {
    let output = run_ken(["list", "--json"]);
    if output.status.success() {
        return true;
    }
    let unreachable = stderr(&output).contains("start the Docker engine");
    assert!(
        unreachable,
        "`ken list` failed for a reason other than an unreachable engine:\n{}",
        describe(&output)
    );
    if std::env::var("KEN_REQUIRE_DOCKER").is_ok_and(|v| v == "1") {
        panic!(
            "KEN_REQUIRE_DOCKER=1 but the Docker engine is unreachable:\n{}",
            describe(&output)
        );
    }
    eprintln!("skipping {test}: the Docker engine is unreachable (set KEN_REQUIRE_DOCKER=1 to fail instead)");
    false
}

/// Returns the ids of all containers, running or not, labelled with sandbox `name`.
pub fn containers_of(name: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter"])
        .arg(format!("label=ken.sandbox={name}"))
        .output()
        .expect("failed to run the docker CLI");
    assert!(
        output.status.success(),
        "docker ps failed:\n{}",
        describe(&output)
    );
    stdout(&output)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
