//! The paths and shell commands the provider runs inside a sandbox.
//!
//! `tailscaled` runs in userspace-networking mode (no TUN device needed) with its
//! state in memory, so the node registers as ephemeral. Every file lives under
//! [`TAILSCALE_DIR`], readable only by the sandbox's default user.

use std::time::Duration;

use ken_core::exec::shell_quote;
use ken_core::plan::{LOG_DIR, RUN_DIR};
use ken_core::ExecRequest;
use url::Url;

/// The folder with the daemon's socket, pid, the transient auth key file and the
/// provider's state file.
pub const TAILSCALE_DIR: &str = "/run/ken/tailscale";

/// The folder of the socket `tailscale` uses without `--socket`. Attach links
/// `tailscaled.sock` there to Ken's socket, so a plain `tailscale status` in the
/// sandbox works; when the folder is not writable the link is skipped.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/tailscale";

/// How long `tailscaled` may take to open its socket.
const DAEMON_START_SECONDS: u32 = 15;

pub(crate) fn socket_path() -> String {
    format!("{TAILSCALE_DIR}/tailscaled.sock")
}

pub(crate) fn auth_key_path() -> String {
    format!("{TAILSCALE_DIR}/authkey")
}

pub(crate) fn state_file_path() -> String {
    format!("{TAILSCALE_DIR}/state.json")
}

pub(crate) fn log_path() -> String {
    format!("{LOG_DIR}/tailscaled.log")
}

fn pid_path() -> String {
    format!("{TAILSCALE_DIR}/tailscaled.pid")
}

/// Creates the folders; the provider's folder gets mode 0700.
pub(crate) fn prepare() -> ExecRequest {
    let script = format!(
        "mkdir -p {dir}/state {log_dir} && chmod 700 {dir}",
        dir = TAILSCALE_DIR,
        log_dir = LOG_DIR
    );
    debug_assert!(TAILSCALE_DIR.starts_with(RUN_DIR));
    ExecRequest::shell(script).timeout(Duration::from_secs(30))
}

/// Starts `tailscaled` in its own session, detached from the exec, unless it runs
/// already, and waits until its socket path exists (`-e`, not `-S`, so a daemon
/// that marks its address with a plain file also works). Exits 3 when the socket never
/// appears and 4 when the daemon exits first. Then links the default socket path to
/// Ken's socket (see [`DEFAULT_SOCKET_DIR`]).
pub(crate) fn start_daemon() -> ExecRequest {
    let script = format!(
        r#"if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then exit 0; fi
setsid tailscaled --tun=userspace-networking --state=mem: --statedir={dir}/state --socket={socket} </dev/null >>{log} 2>&1 &
echo "$!" >{pid}
i=0
while [ ! -e {socket} ]; do
  kill -0 "$(cat {pid})" 2>/dev/null || exit 4
  i=$((i + 1))
  [ "$i" -gt {limit} ] && exit 3
  sleep 0.1
done
{{ mkdir -p {default_dir} && ln -sfn {socket} {default_dir}/tailscaled.sock; }} 2>/dev/null || true"#,
        default_dir = DEFAULT_SOCKET_DIR,
        pid = pid_path(),
        dir = TAILSCALE_DIR,
        socket = socket_path(),
        log = log_path(),
        limit = DAEMON_START_SECONDS * 10,
    );
    ExecRequest::shell(script).timeout(Duration::from_secs(u64::from(DAEMON_START_SECONDS) + 15))
}

/// Runs `tailscale up` with the auth key read from its file, then deletes the file
/// whatever `up` returned. The key is never on the command line.
pub(crate) fn up(hostname: &str, tag: &str, timeout: Duration, login_server: Option<&Url>) -> ExecRequest {
    let mut command = format!(
        "tailscale --socket={socket} up --auth-key=file:{key} --hostname={hostname} --advertise-tags={tag} --accept-dns=false --timeout={seconds}s",
        socket = socket_path(),
        key = auth_key_path(),
        hostname = shell_quote(hostname),
        tag = shell_quote(tag),
        seconds = timeout.as_secs(),
    );
    if let Some(url) = login_server {
        command.push_str(&format!(" --login-server={}", shell_quote(url.as_str())));
    }
    let script = format!("{command}\nstatus=$?\nrm -f {key}\nexit $status", key = auth_key_path());
    ExecRequest::shell(script).timeout(timeout + Duration::from_secs(15))
}

/// Deletes the auth key file.
pub(crate) fn remove_auth_key() -> ExecRequest {
    ExecRequest::new(["rm", "-f", &auth_key_path()]).timeout(Duration::from_secs(15))
}

/// Prints `tailscale status --json`.
pub(crate) fn status() -> ExecRequest {
    ExecRequest::new(["tailscale".to_owned(), format!("--socket={}", socket_path()), "status".to_owned(), "--json".to_owned()])
        .timeout(Duration::from_secs(15))
}

/// Logs the node out, then stops `tailscaled`. Exits with `logout`'s status.
pub(crate) fn logout() -> ExecRequest {
    let script = format!(
        r#"tailscale --socket={socket} logout
status=$?
if [ -f {pid} ]; then kill "$(cat {pid})" 2>/dev/null; rm -f {pid}; fi
exit $status"#,
        socket = socket_path(),
        pid = pid_path(),
    );
    ExecRequest::shell(script).timeout(Duration::from_secs(20))
}

/// Serves HTTPS on tailnet port `port`, proxied to `http://127.0.0.1:port`.
pub(crate) fn serve_https(port: u16) -> ExecRequest {
    ExecRequest::new([
        "tailscale".to_owned(),
        format!("--socket={}", socket_path()),
        "serve".to_owned(),
        "--bg".to_owned(),
        format!("--https={port}"),
        format!("http://127.0.0.1:{port}"),
    ])
    .timeout(Duration::from_secs(60))
}

/// Prints the last lines of the daemon's log.
pub(crate) fn log_tail() -> ExecRequest {
    ExecRequest::new(["tail", "-n", "30", "--", &log_path()]).timeout(Duration::from_secs(10))
}
