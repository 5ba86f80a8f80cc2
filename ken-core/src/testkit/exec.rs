//! Checks of running commands inside a sandbox.

use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::support::{assert_not_found, assert_unsupported, chain, new_marker, Scope, MARKER_VAR};
use super::KitConfig;
use crate::error::Secret;
use crate::exec::{ExecRequest, Stdin};
use crate::sandbox::SandboxProvider;

/// Length of `head -c 10000000 /dev/urandom | base64`: 13,333,336 base64 characters
/// in lines of 76, each line ending with a newline.
const LARGE_OUTPUT_LEN: usize = 13_508_775;

/// Checks that `head -c 10000000 /dev/urandom | base64; exit 3` delivers every
/// byte of stdout (length and SHA-256 match what the sandbox wrote) and exit code 3.
pub async fn exec_large_output(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "exec_large_output");
    scope.run(large_output(&scope, "big", Duration::ZERO)).await;
}

/// Checks that the command of [`exec_large_output`], when its output is not read
/// for the first 10 s, neither deadlocks nor loses output.
pub async fn exec_unread_output(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "exec_unread_output");
    scope
        .run(large_output(&scope, "unread", Duration::from_secs(10)))
        .await;
}

async fn large_output(scope: &Scope<'_>, tag: &str, read_delay: Duration) {
    let name = scope.create_plain(tag).await;
    let scratch = scope.scratch_dir(&name).await;
    let copy = format!("{scratch}/stdout");

    // `tee` keeps a copy of exactly what the command wrote, so the sandbox can hash it.
    let script = format!("head -c 10000000 /dev/urandom | base64 | tee {copy}; exit 3");
    let started = scope
        .within(
            "exec",
            scope.provider.exec(&name, ExecRequest::shell(script)),
        )
        .await;
    let process =
        started.unwrap_or_else(|error| panic!("exec in {name} failed to start: {}", chain(&error)));
    tokio::time::sleep(read_delay).await;
    let output = scope
        .within(
            format!("reading 13 MB of output from {name}"),
            process.output(),
        )
        .await;
    let output = output.unwrap_or_else(|error| {
        panic!(
            "reading the output of the exec in {name} failed: {}",
            chain(&error)
        )
    });

    assert_eq!(
        output.status.code,
        Some(3),
        "exit code of the large-output exec in {name}"
    );
    let stats = scope
        .sh(&name, &format!("wc -c < {copy}; sha256sum < {copy}"))
        .await;
    let mut lines = stats.lines();
    let written: usize = lines
        .next()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("`wc -c` in {name} printed {stats:?}"));
    let written_hash = lines
        .next()
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("`sha256sum` in {name} printed {stats:?}"));

    assert_eq!(
        written, LARGE_OUTPUT_LEN,
        "bytes the command wrote in {name}"
    );
    assert_eq!(
        output.stdout.len(),
        written,
        "bytes of stdout received from {name} (read after {read_delay:?})"
    );
    assert_eq!(
        hex::encode(Sha256::digest(&output.stdout)),
        written_hash,
        "SHA-256 of the stdout received from {name} differs from what the command wrote"
    );
    assert!(
        output.stderr.is_empty(),
        "unexpected stderr from {name}: {}",
        output.stderr_text()
    );
}

/// Checks that `for i in 1 2 3; do echo $i; sleep 1; done; sleep 100` with a 5 s
/// timeout returns stdout `1\n2\n3\n`, is flagged as timed out, and leaves no
/// process behind.
pub async fn exec_timeout(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "exec_timeout");
    scope.run(exec_timeout_body(&scope)).await;
}

async fn exec_timeout_body(scope: &Scope<'_>) {
    let name = scope.create_plain("timeout").await;
    let marker = new_marker();
    let request = ExecRequest::shell("for i in 1 2 3; do echo $i; sleep 1; done; sleep 100")
        .env(MARKER_VAR, &marker)
        .timeout(Duration::from_secs(5));
    let output = scope.exec(&name, request).await;

    assert_eq!(
        output.stdout_text(),
        "1\n2\n3\n",
        "stdout of the timed-out exec in {name}"
    );
    assert!(
        output.status.timed_out,
        "the exec in {name} ended with {} instead of timing out",
        output.status
    );
    let left = scope.marked_processes(&name, &marker).await;
    assert!(
        left.is_empty(),
        "processes of the timed-out exec (`sleep 100`) are still running in {name}: {left:#?}"
    );
}

/// Checks killing `sh -c 'trap "" TERM; sleep 600' & wait` from another task
/// through a [`KillHandle`](crate::exec::KillHandle). The group ignores TERM, so
/// only the KILL that follows ends it. `kill` must return, the output must end, and
/// no process of the exec may be left.
pub async fn exec_kill_group(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "exec_kill_group");
    scope.run(exec_kill_group_body(&scope)).await;
}

async fn exec_kill_group_body(scope: &Scope<'_>) {
    let name = scope.create_plain("kill").await;
    let marker = new_marker();
    let request =
        ExecRequest::shell(r#"sh -c 'trap "" TERM; sleep 600' & wait"#).env(MARKER_VAR, &marker);
    let started = scope
        .within("exec", scope.provider.exec(&name, request))
        .await;
    let process =
        started.unwrap_or_else(|error| panic!("exec in {name} failed to start: {}", chain(&error)));

    // Once `sleep 600` runs, the inner shell has set its trap, so TERM alone cannot
    // end the group.
    scope
        .wait_for_marked_process(&name, &marker, "sleep 600")
        .await;
    let handle = process.kill_handle();
    let killer = tokio::spawn(async move { handle.kill().await });
    match scope
        .within(format!("kill of the exec in {name}"), killer)
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("kill of the exec in {name} failed: {}", chain(&error)),
        Err(error) => panic!("the task that killed the exec in {name} failed: {error}"),
    }

    let output = scope
        .within(
            format!("the output of the killed exec in {name} to end"),
            process.output(),
        )
        .await;
    let output = output.unwrap_or_else(|error| {
        panic!(
            "reading the output of the killed exec in {name} failed: {}",
            chain(&error)
        )
    });
    assert!(
        output.status.killed,
        "the killed exec in {name} ended with {}",
        output.status
    );
    let left = scope.marked_processes(&name, &marker).await;
    assert!(
        left.is_empty(),
        "processes of the killed exec are still running in {name}: {left:#?}"
    );
}

/// Checks that `cat` with no standard input given reads end-of-file at once and
/// exits 0 with empty output.
pub async fn exec_without_stdin(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "exec_without_stdin");
    scope.run(exec_without_stdin_body(&scope)).await;
}

async fn exec_without_stdin_body(scope: &Scope<'_>) {
    let name = scope.create_plain("cat").await;
    // The timeout only turns a hang into a failure with a clear message.
    let request = ExecRequest::new(["cat"]).timeout(Duration::from_secs(60));
    let output = scope.exec(&name, request).await;

    assert!(
        !output.status.timed_out,
        "`cat` without stdin in {name} waited for input until its timeout"
    );
    assert_eq!(
        output.status.code,
        Some(0),
        "exit code of `cat` without stdin in {name}"
    );
    assert_eq!(
        output.stdout_text(),
        "",
        "stdout of `cat` without stdin in {name}"
    );
    assert_eq!(
        output.stderr_text(),
        "",
        "stderr of `cat` without stdin in {name}"
    );
}

/// Checks that `printf '\x00\xff\xfe'` returns exactly those three bytes, so
/// output is handled as bytes, not text.
pub async fn exec_binary_output(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "exec_binary_output");
    scope.run(exec_binary_output_body(&scope)).await;
}

async fn exec_binary_output_body(scope: &Scope<'_>) {
    let name = scope.create_plain("bytes").await;
    // coreutils' printf, run without a shell: dash's builtin printf has no `\x`.
    let output = scope
        .exec(&name, ExecRequest::new(["printf", r"\x00\xff\xfe"]))
        .await;

    assert_eq!(output.status.code, Some(0), "exit code of printf in {name}");
    assert_eq!(
        output.stdout.as_ref(),
        b"\x00\xff\xfe",
        "stdout of printf in {name}"
    );
}

/// Checks that an environment value with a newline, quotes, `$HOME` and a backslash
/// reaches the process unchanged. The value is set in the exec request, in
/// [`SandboxSpec::env`](crate::SandboxSpec) and in its `secret_env`, and the
/// request's value must win over the sandbox's.
pub async fn exec_env_unchanged(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "exec_env_unchanged");
    scope.run(exec_env_unchanged_body(&scope)).await;
}

async fn exec_env_unchanged_body(scope: &Scope<'_>) {
    let value =
        "first line\nsecond \"double\" and 'single' quotes, $HOME, a back\\slash and `ticks`";
    let secret = "secret value with $PATH\nand \\n";
    let name = scope.name("env");
    let mut spec = scope.spec(&name);
    spec.env
        .insert("KEN_KIT_SPEC_VALUE".to_owned(), value.to_owned());
    spec.env.insert(
        "KEN_KIT_OVERRIDDEN".to_owned(),
        "from the sandbox".to_owned(),
    );
    spec.secret_env
        .insert("KEN_KIT_SECRET".to_owned(), Secret::new(secret));
    scope.create(&spec).await;

    let printenv = |variable: &str| ExecRequest::new(["printenv".to_owned(), variable.to_owned()]);
    let cases = [
        (
            "exec request",
            printenv("KEN_KIT_VALUE").env("KEN_KIT_VALUE", value),
            value,
        ),
        ("sandbox env", printenv("KEN_KIT_SPEC_VALUE"), value),
        ("sandbox secret env", printenv("KEN_KIT_SECRET"), secret),
        (
            "exec request over sandbox env",
            printenv("KEN_KIT_OVERRIDDEN").env("KEN_KIT_OVERRIDDEN", "from the request"),
            "from the request",
        ),
    ];
    for (source, request, expected) in cases {
        let output = scope.exec(&name, request).await;
        assert_eq!(
            output.status.code,
            Some(0),
            "printenv of the value from the {source} in {name}"
        );
        assert_eq!(
            output.stdout_text(),
            format!("{expected}\n"),
            "the value from the {source} changed on its way into {name}"
        );
    }
}

/// Checks standard input: fixed bytes and a reader arrive unchanged, and empty input
/// is end-of-file. Without the `stdin` capability, exec with stdin is unsupported.
pub async fn exec_stdin(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "exec_stdin");
    scope.run(exec_stdin_body(&scope)).await;
}

async fn exec_stdin_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let name = scope.create_plain("stdin").await;
    let data: Bytes = (0..300_000u32)
        .map(|i| (i.wrapping_mul(31) % 256) as u8)
        .collect();

    if !provider.capabilities().stdin {
        let request = ExecRequest::new(["cat"]).stdin(data);
        let result = scope.within("exec", provider.exec(&name, request)).await;
        assert_unsupported(
            provider,
            result.map(|_| ()),
            "exec with stdin",
            "stdin",
            "stdin",
        );
        return;
    }

    let output = scope
        .exec(&name, ExecRequest::new(["cat"]).stdin(data.clone()))
        .await;
    assert_eq!(
        output.status.code,
        Some(0),
        "exit code of `cat` with stdin bytes in {name}"
    );
    assert_eq!(
        output.stdout.len(),
        data.len(),
        "bytes `cat` echoed from stdin in {name}"
    );
    assert!(
        output.stdout == data,
        "`cat` in {name} echoed other bytes than it was given"
    );

    let reader = std::io::Cursor::new(vec![7u8; 1 << 20]);
    let request = ExecRequest::new(["wc", "-c"]).stdin(Stdin::Reader(Box::pin(reader)));
    let output = scope.exec(&name, request).await;
    assert_eq!(
        output.status.code,
        Some(0),
        "exit code of `wc -c` with a stdin reader in {name}"
    );
    assert_eq!(
        output.stdout_text().trim(),
        "1048576",
        "bytes `wc -c` counted from a stdin reader in {name}"
    );

    let output = scope
        .exec(&name, ExecRequest::new(["cat"]).stdin(Bytes::new()))
        .await;
    assert_eq!(
        output.status.code,
        Some(0),
        "exit code of `cat` with empty stdin in {name}"
    );
    assert!(
        output.stdout.is_empty(),
        "`cat` with empty stdin in {name} printed {:?}",
        output.stdout
    );
}

/// Checks working directories: the sandbox's default from the spec, and the
/// request's, which wins over it.
pub async fn exec_workdir(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "exec_workdir");
    scope.run(exec_workdir_body(&scope)).await;
}

async fn exec_workdir_body(scope: &Scope<'_>) {
    let name = scope.name("workdir");
    let mut spec = scope.spec(&name);
    spec.workdir = Some("/tmp".to_owned());
    scope.create(&spec).await;

    let default_dir = scope.exec(&name, ExecRequest::new(["pwd"])).await;
    assert_eq!(
        default_dir.stdout_text(),
        "/tmp\n",
        "working directory of an exec in {name} without one"
    );

    let scratch = scope.scratch_dir(&name).await;
    let in_scratch = scope
        .exec(&name, ExecRequest::new(["pwd"]).workdir(&scratch))
        .await;
    assert_eq!(
        in_scratch.stdout_text(),
        format!("{scratch}\n"),
        "working directory requested in {name}"
    );

    let write = scope
        .exec(
            &name,
            ExecRequest::shell("echo here > note").workdir(&scratch),
        )
        .await;
    assert!(
        write.status.success(),
        "writing a relative path in {name} ended with {}",
        write.status
    );
    let note = scope.sh(&name, &format!("cat {scratch}/note")).await;
    assert_eq!(
        note, "here\n",
        "a file written at a relative path in {name} is not in the working directory"
    );
}

/// Checks exec as another user, by name and by uid. Without the `exec_user`
/// capability, exec with a user is unsupported.
pub async fn exec_user(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "exec_user");
    scope.run(exec_user_body(&scope)).await;
}

async fn exec_user_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let name = scope.create_plain("user").await;

    if !provider.capabilities().exec_user {
        let request = ExecRequest::new(["id", "-un"]).user("nobody");
        let result = scope.within("exec", provider.exec(&name, request)).await;
        assert_unsupported(
            provider,
            result.map(|_| ()),
            "exec as user nobody",
            "exec_user",
            "user",
        );
        return;
    }

    let by_name = scope
        .exec(&name, ExecRequest::new(["id", "-un"]).user("nobody"))
        .await;
    assert_eq!(
        by_name.stdout_text(),
        "nobody\n",
        "`id -un` run as user nobody in {name}"
    );
    let by_uid = scope
        .exec(&name, ExecRequest::new(["id", "-u"]).user("65534"))
        .await;
    assert_eq!(
        by_uid.stdout_text(),
        "65534\n",
        "`id -u` run as uid 65534 in {name}"
    );
}

/// Checks exit codes, that stdout and stderr stay apart, and that exec in a sandbox
/// that does not exist fails with not found.
pub async fn exec_exit_codes(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "exec_exit_codes");
    scope.run(exec_exit_codes_body(&scope)).await;
}

async fn exec_exit_codes_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let name = scope.create_plain("codes").await;

    for code in [0, 1, 3, 42, 255] {
        let output = scope
            .exec(&name, ExecRequest::shell(format!("exit {code}")))
            .await;
        assert_eq!(
            output.status.code,
            Some(code),
            "exit code of `exit {code}` in {name}"
        );
        assert_eq!(
            output.status.success(),
            code == 0,
            "success() of `exit {code}` in {name}"
        );
    }

    let output = scope
        .exec(
            &name,
            ExecRequest::shell("printf out; printf err >&2; exit 7"),
        )
        .await;
    assert_eq!(
        output.stdout_text(),
        "out",
        "stdout of an exec writing to both streams in {name}"
    );
    assert_eq!(
        output.stderr_text(),
        "err",
        "stderr of an exec writing to both streams in {name}"
    );
    assert_eq!(
        output.status.code,
        Some(7),
        "exit code of an exec writing to both streams in {name}"
    );

    let missing = scope.name("missing");
    let result = scope
        .within("exec", provider.exec(&missing, ExecRequest::shell("true")))
        .await;
    assert_not_found(
        result.map(|_| ()),
        &format!("exec in {missing}, which was never created"),
    );
}
