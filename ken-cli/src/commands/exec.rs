//! `ken exec`: runs a command inside a sandbox and exits with its exit code.

use std::io::IsTerminal;
use std::time::Duration;

use ken_core::exec::Stdin;
use ken_core::orchestrator::Orchestrator;
use ken_core::{ExecRequest, ExitStatus, Sandbox, SandboxName};

use crate::stream::{self, CopyEnd};
use crate::{exit, output, signal, GlobalArgs};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  ken exec demo -- ls -la
  ken exec demo -w /tmp -e DEBUG=1 -- sh -c 'make test'
  git diff | ken exec demo -- git apply

Local standard input is forwarded to the command when it is not a terminal.")]
pub(crate) struct Args {
    /// Name of the sandbox.
    #[arg(value_parser = super::sandbox_name)]
    name: SandboxName,

    /// Run at once instead of waiting until the sandbox's launch has finished.
    #[arg(long)]
    no_wait: bool,

    /// Kill the command after this long, for example `30s` or `5m`; exit status 124.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    timeout: Option<Duration>,

    /// How long to wait for the sandbox to become ready, for example `90s`.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_positive_duration)]
    wait_timeout: Duration,

    /// Working directory inside the sandbox [default: the project directory].
    #[arg(short, long)]
    workdir: Option<String>,

    /// User name or uid to run as [default: the image's user].
    #[arg(short, long)]
    user: Option<String>,

    /// Set an environment variable; `-e KEY` alone passes the local value of KEY.
    // Parsed in `run` rather than by clap, because clap's errors repeat the whole
    // argument, value included, and the value may be a secret.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub(crate) fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        Ok(_) => Err("the duration must be longer than zero".to_owned()),
        Err(error) => Err(format!("{error}; write it like `30s`, `5m` or `1h`")),
    }
}

/// Parses `KEY=VALUE`, or `KEY` alone to pass the local value. Error messages name the
/// key but never a value, which may be a secret.
fn parse_env(value: &str) -> Result<(String, String), ken_core::Error> {
    let (key, value) = match value.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (value, None),
    };
    let valid_key = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_key {
        return Err(ken_core::Error::invalid(
            "environment variable name",
            key,
            "use letters, digits and '_', not starting with a digit, as in `-e DEBUG=1`",
        ));
    }
    let value = match value {
        Some(value) => value.to_owned(),
        None => std::env::var(key).map_err(|_| {
            ken_core::Error::invalid(
                "environment variable",
                key,
                format!("-e {key} passes the local value of {key}, which is not set; write -e {key}=VALUE"),
            )
        })?,
    };
    Ok((key.to_owned(), value))
}

pub(crate) async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<u8> {
    let env = args
        .env
        .iter()
        .map(|pair| parse_env(pair))
        .collect::<Result<Vec<_>, _>>()?;
    let orchestrator = crate::context::orchestrator(global, ken_core::EventSink::none()).await?;
    let find = async {
        if args.no_wait {
            Ok(orchestrator.sandbox(&args.name).await?)
        } else {
            wait_until_ready(&orchestrator, &args.name, args.wait_timeout).await
        }
    };
    let sandbox = tokio::select! {
        sandbox = find => sandbox?,
        interrupt = signal::interrupted() => return Ok(interrupt.exit_code()),
    };

    let mut request = ExecRequest::new(args.command.iter().cloned());
    request.env.extend(env);
    request.workdir = args.workdir;
    request.user = args.user;
    request.timeout = args.timeout;
    if !std::io::stdin().is_terminal() && sandbox.provider().capabilities().stdin {
        request.stdin = Some(Stdin::Reader(Box::pin(tokio::io::stdin())));
    }
    tracing::info!(sandbox.name = %args.name, command = ?args.command, "running command");

    let mut process = sandbox.exec(request).await?;
    let killer = process.kill_handle();
    let interrupt = tokio::select! {
        copied = stream::copy_output(&mut process) => {
            if copied? == CopyEnd::BrokenPipe {
                stream::kill(&killer).await;
                return Ok(exit::BROKEN_PIPE);
            }
            let status = process.finish().await?;
            return Ok(exit_code(&status, args.timeout));
        }
        interrupt = signal::interrupted() => interrupt,
    };
    tokio::select! {
        () = stream::kill(&killer) => {}
        _ = signal::interrupted() => {}
    }
    Ok(interrupt.exit_code())
}

/// How long `ken exec` and `ken prompt --name` wait for a sandbox that does not exist
/// to be created by a launch in progress.
const ABSENT_WAIT: Duration = Duration::from_secs(60);

/// Polls until a sandbox named `name` exists, for at most `limit`.
async fn wait_until_exists(orchestrator: &Orchestrator, name: &SandboxName, limit: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match orchestrator.provider().get(name).await {
            Ok(_) => return Ok(()),
            Err(error) if error.is_not_found() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Waits until the sandbox's launch has finished, telling the user why nothing
/// happens yet. A sandbox that never appears is reported as not found.
pub(crate) async fn wait_until_ready(
    orchestrator: &Orchestrator,
    name: &SandboxName,
    timeout: Duration,
) -> anyhow::Result<Sandbox> {
    let limit = humantime::format_duration(timeout);
    match orchestrator.get(name).await {
        Ok(summary) if summary.ready => return Ok(Sandbox::new(orchestrator.provider().clone(), summary.info)),
        Ok(_) => output::note(&format!("waiting up to {limit} for sandbox {name} to become ready")),
        Err(error) if error.is_not_found() => {
            // A mistyped name should not hang for the whole timeout, so a sandbox that
            // does not exist gets a shorter wait for a launch to create it.
            let appear = timeout.min(ABSENT_WAIT);
            output::note(&format!(
                "sandbox {name} does not exist yet; waiting up to {} for a launch to create it",
                humantime::format_duration(appear)
            ));
            wait_until_exists(orchestrator, name, appear).await?;
            output::note(&format!("waiting up to {limit} for sandbox {name} to become ready"));
        }
        Err(error) => return Err(error.into()),
    }
    match orchestrator.wait_ready(name, timeout).await {
        Ok(sandbox) => Ok(sandbox),
        Err(error @ ken_core::Error::Timeout { .. }) => match orchestrator.sandbox(name).await {
            Err(missing) if missing.is_not_found() => Err(missing.into()),
            _ => Err(error.into()),
        },
        Err(error) => Err(error.into()),
    }
}

/// Maps the command's status to `ken exec`'s exit status: its own code (modulo 256,
/// as a shell reports it), 124 after `--timeout`, 137 when it was killed.
fn exit_code(status: &ExitStatus, timeout: Option<Duration>) -> u8 {
    if status.timed_out {
        if let Some(timeout) = timeout {
            output::note(&format!(
                "the command timed out after {} and was killed",
                humantime::format_duration(timeout)
            ));
        }
        return exit::TIMED_OUT;
    }
    if status.killed {
        return exit::KILLED;
    }
    match status.code {
        Some(code) => (code & 0xff) as u8,
        None => {
            output::note("the command ended without an exit code (the engine did not report one)");
            exit::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pair_keeps_equals_in_value() {
        assert_eq!(
            parse_env("A=b=c").unwrap(),
            ("A".to_owned(), "b=c".to_owned())
        );
        assert_eq!(
            parse_env("EMPTY=").unwrap(),
            ("EMPTY".to_owned(), String::new())
        );
    }

    #[test]
    fn env_key_is_validated() {
        assert!(parse_env("1A=x").is_err());
        assert!(parse_env("=x").is_err());
        assert!(parse_env("A-B=x").is_err());
    }

    #[test]
    fn exit_code_passes_through() {
        let status = |code, timed_out, killed| ExitStatus {
            code,
            timed_out,
            killed,
        };
        assert_eq!(exit_code(&status(Some(3), false, false), None), 3);
        assert_eq!(exit_code(&status(Some(256 + 7), false, false), None), 7);
        assert_eq!(
            exit_code(
                &status(Some(143), true, false),
                Some(Duration::from_secs(1))
            ),
            exit::TIMED_OUT
        );
        assert_eq!(exit_code(&status(None, false, true), None), exit::KILLED);
    }
}
