//! Joining a sandbox to the tailnet.

use std::time::Duration;

use bytes::Bytes;
use ken_core::network::Attachment;
use ken_core::plan::tail_lines;
use url::Url;
use ken_core::{archive, Error, ExecOutput, ExecRequest, Result, Sandbox};

use super::commands::{self, TAILSCALE_DIR};
use super::names::{key_description, new_hostname};
use super::state::{AttachState, Status};
use super::TailscaleNetwork;
use crate::client::AuthKeyRequest;
use crate::image::check_binaries;

/// How long the API may take to list a node that `tailscaled` reports as joined,
/// unless the join timeout is shorter.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(30);

/// Joins `sandbox` and returns its attachment. On failure, removes what it made
/// (device, key, key file) before returning the error.
pub(super) async fn attach(network: &TailscaleNetwork, sandbox: &Sandbox) -> Result<Attachment> {
    let config = network.config();
    let hostname = new_hostname(&config.hostname_prefix, sandbox.name().as_str(), &network.sandbox_scope(sandbox));
    tracing::info!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", %hostname, tag = %config.tag, "joining the sandbox to the tailnet");

    check_binaries(sandbox).await?;
    run(sandbox, "preparing /run/ken/tailscale", commands::prepare()).await?;
    run(sandbox, "starting tailscaled", commands::start_daemon()).await?;

    let mut state = AttachState {
        hostname,
        ..AttachState::default()
    };
    match join(network, sandbox, &mut state).await {
        Ok(attachment) => {
            network.remember(sandbox, &state);
            Ok(attachment)
        }
        Err(error) => {
            tracing::warn!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", %error, "joining the tailnet failed; removing what the attach made");
            network.remember(sandbox, &state);
            if let Err(cleanup) = super::detach::detach(network, sandbox).await {
                tracing::error!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", error = %cleanup, "failed to clean up after the failed attach; `ken gc` will retry");
            }
            Err(error)
        }
    }
}

/// Mints the key, runs `tailscale up`, waits for the node to run and confirms it
/// through the API. Records each id in `state` (and the state file) as soon as it
/// exists, so a failure can be undone.
async fn join(network: &TailscaleNetwork, sandbox: &Sandbox, state: &mut AttachState) -> Result<Attachment> {
    let config = network.config();
    let client = network.client();
    let request = AuthKeyRequest::single_use(&config.tag, config.key_expiry, key_description(sandbox.name().as_str()));
    let key = client.create_auth_key(&request).await?;
    state.key_id = Some(key.id.clone());
    network.remember(sandbox, state);
    state.save(sandbox).await?;

    let file = archive::single_file("authkey", key.key.expose().as_bytes(), 0o600)?;
    drop(key);
    let uploaded = sandbox.provider().upload(sandbox.name(), TAILSCALE_DIR, file).await;
    let up = match uploaded {
        Ok(()) => {
            let request = commands::up(&state.hostname, &config.tag, config.join_timeout, config.control_url.as_ref());
            Some(sandbox.exec_output(request).await)
        }
        Err(error) => {
            remove_key_file(sandbox).await;
            return Err(error);
        }
    };
    // `up` deletes the file itself; this covers an exec that failed or was killed.
    remove_key_file(sandbox).await;
    let up = up.transpose()?;

    let node = wait_running(network, sandbox, up.as_ref()).await?;
    state.node_id = Some(node.id.clone());
    state.dns_name = Some(node.dns_name.trim_end_matches('.').to_owned());
    state.addresses = node.tailscale_ips.clone().unwrap_or_default();
    network.remember(sandbox, state);
    state.save(sandbox).await?;

    let device = client.wait_for_device(&node.id, DEVICE_TIMEOUT.min(config.join_timeout)).await?;
    let hostname = if device.name.is_empty() {
        state.dns_name.clone().unwrap_or_default()
    } else {
        device.name.trim_end_matches('.').to_owned()
    };
    state.dns_name = Some(hostname.clone());
    network.remember(sandbox, state);
    state.save(sandbox).await?;
    tracing::info!(
        sandbox.name = %sandbox.name(),
        provider = "tailscale",
        phase = "network",
        node.id = %node.id,
        %hostname,
        addresses = ?state.addresses,
        "the sandbox joined the tailnet"
    );
    Ok(Attachment {
        network: "tailscale".to_owned(),
        hostname: Some(hostname),
        addresses: state.addresses.clone(),
        device_id: Some(node.id),
    })
}

/// Polls `tailscale status --json` until the node runs with addresses, the join
/// timeout passes, or the status shows the key was refused.
async fn wait_running(network: &TailscaleNetwork, sandbox: &Sandbox, up: Option<&ExecOutput>) -> Result<super::state::SelfNode> {
    let timeout = network.config().join_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut interval = Duration::from_millis(200);
    if up.is_some_and(control_unreachable) {
        let last = "the control server was not reached";
        return Err(join_failure(sandbox, up, last, timeout, network.config().control_url.as_ref()).await);
    }
    loop {
        let output = sandbox.exec_output(commands::status()).await?;
        let last = match serde_json::from_slice::<Status>(&output.stdout) {
            Ok(status) => {
                if let Some(node) = status.joined() {
                    return Ok(node.clone());
                }
                if status.backend_state == "NeedsLogin" || !status.auth_url.is_empty() {
                    return Err(Error::Unauthenticated {
                        service: "tailscale".to_owned(),
                        message: format!(
                            "sandbox {} could not join the tailnet: tailscaled needs a login (BackendState {}), so the auth key \
                             was refused (used, revoked or expired), or the control server is another one than the key's{}",
                            sandbox.name(),
                            status.backend_state,
                            up_detail(up)
                        ),
                    });
                }
                if status.backend_state == "NeedsMachineAuth" {
                    return Err(Error::invalid(
                        "auth key",
                        "(redacted)",
                        format!(
                            "sandbox {} joined but waits for approval (NeedsMachineAuth): the key was not pre-authorized, \
                             or device approval is on for the tailnet and the tag cannot skip it",
                            sandbox.name()
                        ),
                    ));
                }
                format!("BackendState {}", status.backend_state)
            }
            Err(_) => format!("status printed no JSON ({})", tail_lines(&output.stderr_text(), 3).trim()),
        };
        if up.is_some_and(|up| !up.status.success()) || tokio::time::Instant::now() + interval > deadline {
            return Err(join_failure(sandbox, up, &last, timeout, network.config().control_url.as_ref()).await);
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_secs(2));
    }
}

/// Builds the error of a join that failed: `tailscale up`'s own output first, when
/// it failed, then the last status, and the daemon's log as the log tail.
async fn join_failure(sandbox: &Sandbox, up: Option<&ExecOutput>, last: &str, timeout: Duration, login_server: Option<&Url>) -> Error {
    let log = match sandbox.exec_output(commands::log_tail()).await {
        Ok(output) => output.stdout_text(),
        Err(error) => format!("(failed to read {}: {error})", commands::log_path()),
    };
    let status = match up {
        Some(up) if !up.status.success() => {
            let printed = tail_lines(&format!("{}{}", up.stdout_text(), up.stderr_text()), 5);
            let printed = printed.trim();
            let printed = if printed.is_empty() { "nothing".to_owned() } else { printed.to_owned() };
            format!("tailscale up printed: {printed} ({}; last state: {last}){}", up.status, loopback_hint(login_server))
        }
        _ => format!("not running after {} ({last})", humantime::format_duration(timeout)),
    };
    Error::StepFailed {
        step: format!("joining sandbox {} to the tailnet", sandbox.name()),
        status,
        log_tail: tail_lines(&log, 20),
    }
}

/// Returns whether a failed `tailscale up` printed that it could not connect to the
/// control server. The node's NeedsLogin state then shows nothing about the key.
fn control_unreachable(up: &ExecOutput) -> bool {
    if up.status.success() {
        return false;
    }
    let printed = format!("{}{}", up.stdout_text(), up.stderr_text()).to_lowercase();
    ["cannot reach control server", "connection refused", "dial tcp", "no route to host", "i/o timeout"]
        .iter()
        .any(|sign| printed.contains(sign))
}

/// Explains, when the control server's URL is a loopback address, that inside the
/// sandbox that address is the sandbox itself.
fn loopback_hint(login_server: Option<&Url>) -> String {
    let loopback = login_server.and_then(Url::host).is_some_and(|host| match host {
        url::Host::Domain(name) => name == "localhost",
        url::Host::Ipv4(address) => address.is_loopback(),
        url::Host::Ipv6(address) => address.is_loopback(),
    });
    match login_server {
        Some(url) if loopback => format!(
            "; the control URL {url} is a loopback address, and inside a sandbox 127.0.0.1 is the sandbox itself: \
             use an address the sandbox can reach, such as the host's address on the sandbox network"
        ),
        _ => String::new(),
    }
}

fn up_detail(up: Option<&ExecOutput>) -> String {
    match up {
        Some(up) => {
            let text = format!("{}{}", up.stdout_text(), up.stderr_text());
            let text = tail_lines(&text, 5);
            if text.trim().is_empty() {
                String::new()
            } else {
                format!("; tailscale up printed: {}", text.trim())
            }
        }
        None => String::new(),
    }
}

async fn remove_key_file(sandbox: &Sandbox) {
    match sandbox.exec_output(commands::remove_auth_key()).await {
        Ok(output) if output.status.success() => {}
        Ok(output) => tracing::warn!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", status = %output.status, "failed to delete the auth key file"),
        Err(error) => tracing::warn!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", %error, "failed to delete the auth key file"),
    }
}

/// Turns on HTTPS for `port` through `tailscale serve`.
pub(super) async fn serve_https(sandbox: &Sandbox, port: u16) -> Result<()> {
    run(sandbox, &format!("tailscale serve for port {port}"), commands::serve_https(port)).await?;
    Ok(())
}

/// Runs `request` and fails with [`Error::StepFailed`] unless it exits with 0.
pub(super) async fn run(sandbox: &Sandbox, step: &str, request: ExecRequest) -> Result<Bytes> {
    let output = sandbox.exec_output(request).await?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let mut log = output.stdout_text();
    log.push_str(&output.stderr_text());
    tracing::warn!(sandbox.name = %sandbox.name(), provider = "tailscale", phase = "network", step, status = %output.status, "a tailscale command failed");
    Err(Error::StepFailed {
        step: step.to_owned(),
        status: output.status.to_string(),
        log_tail: tail_lines(&log, 20),
    })
}
