//! Exit statuses and the reporting of errors on stderr.

use std::io::Write;

use ken_core::Error;

/// The command succeeded.
pub(crate) const SUCCESS: u8 = 0;
/// A runtime failure: a launch failed, the engine is unreachable.
pub(crate) const FAILURE: u8 = 1;
/// Invalid input: a manifest, a name, the command line.
pub(crate) const INVALID_INPUT: u8 = 2;
/// A sandbox or service log does not exist.
pub(crate) const NOT_FOUND: u8 = 3;
/// A sandbox of that name exists already.
pub(crate) const ALREADY_EXISTS: u8 = 4;
/// `ken prompt`, `ken attach`: the turn failed (the agent or the model reported an error).
pub(crate) const TURN_FAILED: u8 = 5;
/// `ken prompt`, `ken attach`: the turn was aborted, for example from the web UI.
pub(crate) const TURN_ABORTED: u8 = 6;
/// `ken exec`: the command's `--timeout` passed, as with coreutils `timeout`.
pub(crate) const TIMED_OUT: u8 = 124;
/// `ken exec`: the command was killed (128 + SIGKILL).
pub(crate) const KILLED: u8 = 137;
/// Writing to stdout failed because the reader went away (128 + SIGPIPE).
pub(crate) const BROKEN_PIPE: u8 = 141;

/// Returns the exit status for `error`, from the first Ken error in its chain.
pub(crate) fn code_for(error: &anyhow::Error) -> u8 {
    error
        .chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .map_or(FAILURE, code_for_ken)
}

fn code_for_ken(error: &Error) -> u8 {
    if error.is_already_exists() {
        return ALREADY_EXISTS;
    }
    if error.is_not_found() {
        return NOT_FOUND;
    }
    match error.root() {
        Error::InvalidInput { .. } | Error::Manifest { .. } => INVALID_INPUT,
        Error::Cancelled { .. } => crate::signal::Interrupt::Int.exit_code(),
        _ => FAILURE,
    }
}

/// Prints `error` on stderr: `error: <message>`, then one `caused by:` line per
/// cause, then a hint when the Docker engine could not be reached. With `json`, prints
/// one JSON object instead.
pub(crate) fn report(error: &anyhow::Error, json: bool) {
    let messages = own_messages(error);
    let hint = engine_unreachable(error).then_some(
        "start the Docker engine, for example with `scripts/docker-up.sh` from the Ken repository",
    );
    let mut stderr = std::io::stderr().lock();
    // Nothing useful can be done when stderr itself is gone, so write errors are ignored.
    if json {
        let phase = error
            .chain()
            .find_map(|cause| cause.downcast_ref::<Error>())
            .and_then(Error::phase)
            .map(|phase| phase.as_str());
        let value = serde_json::json!({
            "error": {
                "message": messages.first(),
                "causes": messages.get(1..).unwrap_or_default(),
                "phase": phase,
                "hint": hint,
                "exit_code": code_for(error),
            }
        });
        let _ = writeln!(stderr, "{value}");
        return;
    }
    for (index, message) in messages.iter().enumerate() {
        let label = if index == 0 { "error" } else { "caused by" };
        let _ = writeln!(stderr, "{label}: {}", indent_continuation(message));
    }
    if let Some(hint) = hint {
        let _ = writeln!(stderr, "hint: {hint}");
    }
}

/// Returns each error's message without the text of its cause.
///
/// Many errors print as `<context>: <cause>` and also return the cause from
/// `source()`. Printing both would repeat the cause, so that suffix is cut off. A
/// message that contains its cause elsewhere is kept whole and the cause is skipped.
fn own_messages(error: &anyhow::Error) -> Vec<String> {
    let full: Vec<String> = error.chain().map(ToString::to_string).collect();
    let mut messages = Vec::new();
    let mut index = 0;
    while index < full.len() {
        let message = &full[index];
        let Some(cause) = full.get(index + 1) else {
            messages.push(message.clone());
            break;
        };
        if let Some(own) = message.strip_suffix(cause.as_str()) {
            let own = own.trim_end_matches([':', ';', ' ']);
            messages.push(own.to_owned());
            index += 1;
        } else if message.contains(cause.as_str()) {
            messages.push(message.clone());
            index += 2;
        } else {
            messages.push(message.clone());
            index += 1;
        }
    }
    messages.retain(|m| !m.is_empty());
    messages
}

/// Indents the lines after the first, so that a log tail stays visibly part of the
/// error it belongs to.
fn indent_continuation(message: &str) -> String {
    message.trim_end().replace('\n', "\n    ")
}

/// Returns true when the error shows that the Docker engine did not respond at all.
///
/// NOTE: this matches the messages of the engine client (a missing socket, a refused
/// connection); a provider error that words it differently gets no hint.
fn engine_unreachable(error: &anyhow::Error) -> bool {
    let from_docker = error.chain().any(|cause| {
        matches!(cause.downcast_ref::<Error>(), Some(Error::Backend { service, .. }) if service == "docker")
    });
    if !from_docker {
        return false;
    }
    error.chain().any(|cause| {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            return matches!(
                io.kind(),
                ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::PermissionDenied
            );
        }
        let text = cause.to_string().to_ascii_lowercase();
        text.contains("connection refused")
            || text.contains("docker.sock")
            || text.contains("socket not found")
            || text.contains("error trying to connect")
            || text.contains("cannot connect to the docker daemon")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_suffix_is_not_repeated() {
        let inner = Error::StepFailed {
            step: "migrate".to_owned(),
            status: "exit code 1".to_owned(),
            log_tail: "boom".to_owned(),
        };
        let launch = Error::Launch {
            sandbox: "demo".to_owned(),
            phase: ken_core::Phase::Plan,
            source: Box::new(inner),
        };
        let messages = own_messages(&anyhow::Error::new(launch));
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[0],
            "launch of sandbox \"demo\" failed in phase plan"
        );
        assert!(messages[1].starts_with("migrate failed (exit code 1)"));
    }

    #[test]
    fn exit_codes_follow_error_kind() {
        let manifest = Error::Manifest {
            path: "ken.toml".to_owned(),
            line: 3,
            column: 1,
            message: "bad".to_owned(),
        };
        assert_eq!(code_for(&anyhow::Error::new(manifest)), INVALID_INPUT);
        let exists = Error::AlreadyExists {
            kind: "sandbox",
            name: "demo".to_owned(),
        };
        assert_eq!(code_for(&anyhow::Error::new(exists)), ALREADY_EXISTS);
        let missing = Error::NotFound {
            kind: "sandbox",
            name: "demo".to_owned(),
        };
        let wrapped = anyhow::Error::new(missing).context("failed to look up the sandbox");
        assert_eq!(code_for(&wrapped), NOT_FOUND);
        assert_eq!(code_for(&anyhow::anyhow!("plain failure")), FAILURE);
    }
}
