//! The init process of a sandbox, and exec processes that join its namespaces.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::host::Host;
use super::netns::SandboxNetwork;

/// Shell script that runs as PID 1 of the sandbox's new namespaces, with host
/// paths still visible. It mounts /proc and a minimal /dev under the sandbox root
/// and sets the hostname. Then it chroots into the root and execs tini, which runs
/// the entrypoint and reaps orphans. Arguments: root, tini binary, hostname,
/// chroot binary, a marker file it creates once setup succeeded, then the
/// entrypoint.
const INIT_SCRIPT: &str = r#"set -e
image_path=$PATH
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
root=$1 init=$2 name=$3 chroot_bin=$4 marker=$5
shift 5
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o nosuid,mode=755,size=65536k tmpfs "$root/dev"
for node in null zero full random urandom tty; do
  : > "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o nosuid,nodev tmpfs "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
: > "$root/dev/init"
mount --bind "$init" "$root/dev/init"
printf %s "$name" > /proc/sys/kernel/hostname
: > "$marker"
PATH=$image_path
export PATH
exec "$chroot_bin" "$root" /dev/init -- "$@"
"#;

/// Changes into the requested working directory inside the sandbox, then runs the
/// command in a new session, so that it leads its own process group inside the
/// sandbox too (the group `nsenter` leads is invisible there). `setsid` (from
/// util-linux) does not fork here because the shell is no group leader, so the
/// exit status is the command's. Arguments: workdir, then the command.
const EXEC_SCRIPT: &str = r#"cd -- "$1" || exit 126; shift
if command -v setsid >/dev/null 2>&1; then exec setsid "$@"; else exec "$@"; fi"#;
/// [`EXEC_SCRIPT`] with standard error sent to standard output.
const EXEC_SCRIPT_MERGED: &str = r#"cd -- "$1" || exit 126; shift
if command -v setsid >/dev/null 2>&1; then exec setsid "$@" 2>&1; else exec "$@" 2>&1; fi"#;

/// A started init process.
#[derive(Debug)]
pub(crate) struct RunningInit {
    /// `unshare`, which waits for the init process and exits with its status.
    pub(crate) child: Child,
    pub(crate) unshare_pid: u32,
    /// Host PID of the init process, or `None` when the entrypoint already ended
    /// during startup.
    pub(crate) init_pid: Option<u32>,
}

/// Starts the sandbox's init process and waits until it has chrooted into `root`.
pub(crate) async fn start_init(
    host: &Host,
    root: &Path,
    network: &SandboxNetwork,
    hostname: &str,
    entrypoint: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<RunningInit, String> {
    for dir in ["proc", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(dir))
            .map_err(|error| format!("creating /{dir} in the sandbox: {error}"))?;
    }
    let log_file = std::fs::File::create(log)
        .map_err(|error| format!("creating {}: {error}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|error| format!("opening {}: {error}", log.display()))?;
    let chroot_bin = which("chroot")?;
    let marker = log.with_file_name("init-started");

    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{}", network.netns))
        // setpriv makes the kernel kill the sandbox when the server process dies
        // without running its cleanup (SIGKILL, a killed test binary).
        .args(["--", "setpriv", "--pdeathsig", "KILL", "--"])
        .args(["unshare", "--mount", "--pid", "--uts", "--ipc", "--fork"])
        .args(["--kill-child", "--propagation", "private", "--"])
        .args(["/bin/sh", "-c", INIT_SCRIPT, "ken-init"])
        .arg(root)
        .arg(&host.init_binary)
        .arg(hostname)
        .arg(chroot_bin)
        .arg(&marker)
        .args(entrypoint)
        .env_clear()
        .envs(env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(log_err))
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|error| format!("failed to start the sandbox's init process: {error}"))?;
    let unshare_pid = child
        .id()
        .ok_or_else(|| "the sandbox's init process exited at once".to_owned())?;

    let started = Instant::now();
    let limit = Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            if marker.exists() {
                // Setup succeeded and the entrypoint has ended already; the
                // caller reads its status from `child`.
                return Ok(RunningInit {
                    child,
                    unshare_pid,
                    init_pid: None,
                });
            }
            let output = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!(
                "the sandbox's init process exited during startup ({status}): {}",
                output.trim()
            ));
        }
        if let Some(init_pid) = first_child(unshare_pid) {
            let chrooted = std::fs::read_link(format!("/proc/{init_pid}/root"))
                .map(|link| link != Path::new("/"))
                .unwrap_or(false);
            if chrooted {
                return Ok(RunningInit {
                    child,
                    unshare_pid,
                    init_pid: Some(init_pid),
                });
            }
        }
        if started.elapsed() > limit {
            let _ = child.start_kill();
            return Err(format!(
                "the sandbox's init process did not start within {} s",
                limit.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Command, environment and output routing of one exec.
pub(crate) struct ExecSpawn<'a> {
    pub(crate) init_pid: u32,
    pub(crate) args: &'a [String],
    pub(crate) workdir: &'a str,
    pub(crate) env: &'a [(String, String)],
    pub(crate) stdout: bool,
    /// `None` discards standard error, `Some(false)` pipes it, `Some(true)` sends it
    /// to standard output.
    pub(crate) stderr: Option<bool>,
}

/// Starts an exec in the namespaces and root of the sandbox whose init process is
/// `init_pid`, in its own process group, with piped standard input.
pub(crate) fn spawn_exec(spec: &ExecSpawn<'_>) -> Result<Child, String> {
    let merged = spec.stderr == Some(true);
    let script = if merged { EXEC_SCRIPT_MERGED } else { EXEC_SCRIPT };
    let mut command = Command::new("nsenter");
    command
        .args(["-t", &spec.init_pid.to_string()])
        .args(["-m", "-p", "-u", "-i", "-n", "-r", "-w", "--"])
        .args(["/bin/sh", "-c", script, "ken-exec", spec.workdir])
        .args(spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(key, value)| (key, value)))
        .stdin(Stdio::piped())
        .stdout(if spec.stdout || merged { Stdio::piped() } else { Stdio::null() })
        .stderr(match spec.stderr {
            Some(false) => Stdio::piped(),
            _ => Stdio::null(),
        })
        .process_group(0)
        .kill_on_drop(true);
    command
        .spawn()
        .map_err(|error| format!("failed to start the exec: {error}"))
}

/// Returns the first child of `pid`, from `/proc/PID/task/PID/children`.
pub(crate) fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn which(program: &str) -> Result<String, String> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let candidate = Path::new(dir).join(program);
        if candidate.is_file() {
            return Ok(candidate.to_string_lossy().into_owned());
        }
    }
    Err(format!("`{program}` not found on the host"))
}
