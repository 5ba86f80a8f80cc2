//! Sandboxes: their record, and the lifecycle task that starts the task after the
//! configured delay, runs it until it ends, times out or is terminated, and then
//! removes everything it made on the host.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::exec::ExecEntry;
use crate::image::{BuiltImage, ImageEntry};
use crate::inspect::SandboxRecord;
use crate::runtime::{mount_overlay, start_init, RunningInit, SandboxNetwork};
use crate::state::State;
use ken_provider_modal::proto::modal_client::{generic_result::GenericStatus, GenericResult, Sandbox, TunnelData};

/// Default sandbox lifetime (a `timeout_secs` of 0 means 300 s) and its maximum,
/// 24 h, as Modal's protocol defines them.
pub(crate) const DEFAULT_TIMEOUT_SECS: u32 = 300;
pub(crate) const MAX_TIMEOUT_SECS: u32 = 24 * 60 * 60;

/// Lifecycle state of a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SandboxStatus {
    /// Created; the task does not exist yet.
    Pending,
    /// The task runs.
    Running { task_id: String },
    /// Ended, and everything on the host is removed.
    Finished {
        task_id: Option<String>,
        result: GenericResult,
    },
}

/// Runtime details of a running sandbox, for execs, tunnels and snapshots.
#[derive(Debug, Clone)]
pub(crate) struct RunningSandbox {
    /// Host PID of the sandbox's PID 1; `None` when the entrypoint ended at once.
    pub(crate) init_pid: Option<u32>,
    pub(crate) upper_dir: PathBuf,
    pub(crate) address: Ipv4Addr,
    pub(crate) netns: String,
    pub(crate) tunnels: Vec<TunnelData>,
}

/// One sandbox.
#[derive(Debug)]
pub(crate) struct SandboxEntry {
    pub(crate) id: String,
    pub(crate) app_id: String,
    pub(crate) definition: Sandbox,
    pub(crate) created_at: f64,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) image: Arc<ImageEntry>,
    /// Variables of the sandbox's secrets, applied to the entrypoint and every exec.
    pub(crate) secret_env: Vec<(String, String)>,
    pub(crate) status: watch::Sender<SandboxStatus>,
    pub(crate) tags: Mutex<BTreeMap<String, String>>,
    /// Cancelled by `SandboxTerminate`.
    pub(crate) terminate: CancellationToken,
    /// Cancelled once the sandbox stops; tunnels and execs end on it.
    pub(crate) stopped: CancellationToken,
    pub(crate) running: Mutex<Option<RunningSandbox>>,
    pub(crate) execs: Mutex<HashMap<String, Arc<ExecEntry>>>,
    /// Last exec activity, for the idle timeout.
    pub(crate) last_activity: Mutex<Instant>,
}

impl SandboxEntry {
    pub(crate) fn new(
        id: String,
        app_id: String,
        definition: Sandbox,
        created_at: f64,
        idempotency_key: Option<String>,
        image: Arc<ImageEntry>,
        secret_env: Vec<(String, String)>,
    ) -> Self {
        SandboxEntry {
            id,
            app_id,
            definition,
            created_at,
            idempotency_key,
            image,
            secret_env,
            status: watch::channel(SandboxStatus::Pending).0,
            tags: Mutex::new(BTreeMap::new()),
            terminate: CancellationToken::new(),
            stopped: CancellationToken::new(),
            running: Mutex::new(None),
            execs: Mutex::new(HashMap::new()),
            last_activity: Mutex::new(Instant::now()),
        }
    }

    pub(crate) fn running(&self) -> MutexGuard<'_, Option<RunningSandbox>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn execs(&self) -> MutexGuard<'_, HashMap<String, Arc<ExecEntry>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn tags(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.tags.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn touch(&self) {
        *self.last_activity.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub(crate) fn is_finished(&self) -> bool {
        matches!(*self.status.borrow(), SandboxStatus::Finished { .. })
    }

    /// Returns the sandbox's working directory: its definition's, else its image's.
    pub(crate) fn workdir(&self, built: &BuiltImage) -> String {
        self.definition
            .workdir
            .clone()
            .unwrap_or_else(|| built.workdir.clone())
    }

    /// The environment of the entrypoint and of execs before exec-specific values.
    pub(crate) fn base_env(&self, built: &BuiltImage) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert(
            "PATH".to_owned(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        );
        env.insert("HOME".to_owned(), "/root".to_owned());
        env.insert("MODAL_SANDBOX_ID".to_owned(), self.id.clone());
        env.extend(built.env.iter().cloned());
        env.extend(self.secret_env.iter().cloned());
        env.into_iter().collect()
    }

    pub(crate) fn record(&self) -> SandboxRecord {
        let (task_id, result) = match &*self.status.borrow() {
            SandboxStatus::Pending => (None, None),
            SandboxStatus::Running { task_id } => (Some(task_id.clone()), None),
            SandboxStatus::Finished { task_id, result } => (task_id.clone(), Some(result.clone())),
        };
        let network = self
            .running()
            .as_ref()
            .map(|running| (running.address, running.netns.clone()));
        SandboxRecord {
            id: self.id.clone(),
            app_id: self.app_id.clone(),
            definition: self.definition.clone(),
            idempotency_key: self.idempotency_key.clone(),
            tags: self.tags().clone(),
            task_id,
            result,
            address: network.as_ref().map(|(address, _)| *address),
            network_namespace: network.map(|(_, netns)| netns),
        }
    }
}

fn result(status: GenericStatus, exitcode: i32, exception: impl Into<String>) -> GenericResult {
    GenericResult {
        status: status as i32,
        exception: exception.into(),
        exitcode,
    }
}

/// Runs a sandbox from creation to its end. Spawned by `SandboxCreate`.
pub(crate) async fn run_lifecycle(state: Arc<State>, sandbox: Arc<SandboxEntry>) {
    let delay = state.lock().task_delay;
    let id = sandbox.id.clone();
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = sandbox.terminate.cancelled() => {
            finish(&state, &sandbox, None, result(GenericStatus::Terminated, 137, "Sandbox terminated")).await;
            return;
        }
        () = state.shutdown.cancelled() => {
            finish(&state, &sandbox, None, result(GenericStatus::Terminated, 137, "Sandbox terminated")).await;
            return;
        }
    }

    let task_id = crate::ids::new_id("ta");
    let mut init = match start(&state, &sandbox).await {
        Ok(init) => init,
        Err(message) => {
            tracing::warn!(sandbox.id = %id, %message, "sandbox failed to start");
            finish(&state, &sandbox, None, result(GenericStatus::InitFailure, 1, message)).await;
            return;
        }
    };
    state.lock().tasks.insert(task_id.clone(), id.clone());
    sandbox.touch();
    sandbox.status.send_replace(SandboxStatus::Running {
        task_id: task_id.clone(),
    });
    tracing::info!(sandbox.id = %id, task.id = %task_id, "sandbox task started");

    let timeout_secs = match sandbox.definition.timeout_secs {
        0 => DEFAULT_TIMEOUT_SECS,
        secs => secs,
    };
    let idle_limit = sandbox
        .definition
        .idle_timeout_secs
        .map(|secs| Duration::from_secs(u64::from(secs)));
    let ended = tokio::select! {
        status = init.child.wait() => match status {
            Ok(status) if status.success() => result(GenericStatus::Success, 0, ""),
            Ok(status) => {
                let code = status.code().unwrap_or(137);
                result(GenericStatus::Failure, code, format!("the entrypoint exited with status {code}"))
            }
            Err(error) => result(GenericStatus::InternalFailure, 1, format!("waiting for the entrypoint failed: {error}")),
        },
        () = tokio::time::sleep(Duration::from_secs(u64::from(timeout_secs))) => {
            result(GenericStatus::Timeout, 124, format!("Sandbox timed out after {timeout_secs} s"))
        }
        () = idle(&sandbox, idle_limit) => result(GenericStatus::IdleTimeout, 124, "Sandbox was idle too long"),
        () = sandbox.terminate.cancelled() => result(GenericStatus::Terminated, 137, "Sandbox terminated"),
        () = state.shutdown.cancelled() => result(GenericStatus::Terminated, 137, "Sandbox terminated"),
    };
    tracing::info!(sandbox.id = %id, task.id = %task_id, status = ended.status, "sandbox task ended");
    finish(&state, &sandbox, Some(task_id), ended).await;
    let _ = init.child.start_kill();
    let _ = init.child.wait().await;
}

/// Waits until no exec has run for `limit`; forever without a limit.
async fn idle(sandbox: &SandboxEntry, limit: Option<Duration>) {
    let Some(limit) = limit else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let busy = sandbox
            .execs()
            .values()
            .any(|exec| exec.exit.borrow().is_none());
        if busy {
            sandbox.touch();
            continue;
        }
        let last = *sandbox.last_activity.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= limit {
            return;
        }
    }
}

/// Stops everything of the sandbox and publishes its result.
async fn finish(state: &Arc<State>, sandbox: &Arc<SandboxEntry>, task_id: Option<String>, ended: GenericResult) {
    sandbox.stopped.cancel();
    let host = state.host.clone();
    let id = sandbox.id.clone();
    let _ = tokio::task::spawn_blocking(move || host.teardown(&id)).await;
    sandbox.running().take();
    sandbox.status.send_replace(SandboxStatus::Finished {
        task_id,
        result: ended,
    });
}

/// Makes the sandbox's file system, network and init process, and opens its
/// tunnels. What it made is registered with the host first, so that a failure at
/// any step is cleaned up by the teardown.
async fn start(state: &Arc<State>, sandbox: &Arc<SandboxEntry>) -> Result<RunningInit, String> {
    let host = state.host.clone();
    let id = sandbox.id.clone();
    let built = sandbox
        .image
        .progress()
        .built
        .clone()
        .ok_or_else(|| format!("image {} is not built", sandbox.image.id))?;

    let dir = host.work_dir.join("sandboxes").join(&id);
    host.update(&id, |resources| resources.dir = Some(dir.clone()));
    std::fs::create_dir_all(&dir).map_err(|error| format!("creating {}: {error}", dir.display()))?;

    let tag = crate::ids::random_base62(10).to_lowercase();
    let network = {
        let host = host.clone();
        let tag = tag.clone();
        tokio::task::spawn_blocking(move || SandboxNetwork::create(&host, &tag))
            .await
            .map_err(|error| format!("network setup task failed: {error}"))??
    };
    host.update(&id, |resources| resources.network = Some(network.clone()));

    let root = {
        let layers = built.layers.clone();
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || mount_overlay(&layers, &dir))
            .await
            .map_err(|error| format!("mount task failed: {error}"))??
    };
    host.update(&id, |resources| resources.root = Some(root.clone()));

    let hostname = format!("modal-{tag}");
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{hostname}\n",
        network.sandbox_ip
    );
    let _ = std::fs::create_dir_all(root.join("etc"));
    std::fs::write(root.join("etc/hosts"), hosts).map_err(|error| format!("writing /etc/hosts: {error}"))?;
    std::fs::write(root.join("etc/hostname"), format!("{hostname}\n"))
        .map_err(|error| format!("writing /etc/hostname: {error}"))?;
    let workdir = sandbox.workdir(&built);
    std::fs::create_dir_all(root.join(workdir.trim_start_matches('/')))
        .map_err(|error| format!("creating the working directory {workdir}: {error}"))?;

    let mut entrypoint: Vec<String> = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        r#"cd -- "$1" || exit 126; shift; exec "$@""#.to_owned(),
        "ken-entrypoint".to_owned(),
        workdir,
    ];
    if sandbox.definition.entrypoint_args.is_empty() {
        entrypoint.extend(["sleep".to_owned(), "infinity".to_owned()]);
    } else {
        entrypoint.extend(sandbox.definition.entrypoint_args.iter().cloned());
    }
    let env = sandbox.base_env(&built);
    let init = start_init(&host, &root, &network, &hostname, &entrypoint, &env, &dir.join("entrypoint.log")).await?;
    host.update(&id, |resources| {
        resources.unshare_pid = Some(init.unshare_pid);
        resources.init_pid = init.init_pid;
    });

    let mut tunnels = Vec::new();
    for port in sandbox
        .definition
        .open_ports
        .as_ref()
        .map(|ports| ports.ports.as_slice())
        .unwrap_or_default()
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|error| format!("binding a tunnel for port {}: {error}", port.port))?;
        let local = listener
            .local_addr()
            .map_err(|error| format!("reading a tunnel's address: {error}"))?;
        let container_port = port.port as u16;
        tokio::spawn(forward(listener, network.sandbox_ip, container_port, sandbox.stopped.clone()));
        tunnels.push(TunnelData {
            host: local.ip().to_string(),
            port: u32::from(local.port()),
            unencrypted_host: port.unencrypted.then(|| local.ip().to_string()),
            unencrypted_port: port.unencrypted.then_some(u32::from(local.port())),
            container_port: port.port,
        });
    }

    *sandbox.running() = Some(RunningSandbox {
        init_pid: init.init_pid,
        upper_dir: dir.join("upper"),
        address: network.sandbox_ip,
        netns: network.netns.clone(),
        tunnels,
    });
    Ok(init)
}

/// Accepts connections on a tunnel and forwards each to the sandbox's port until
/// the sandbox stops.
async fn forward(listener: TcpListener, address: Ipv4Addr, port: u16, stopped: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped.cancelled() => return,
        };
        let Ok((mut inbound, _)) = accepted else { continue };
        let stopped = stopped.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect((address, port)).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                () = stopped.cancelled() => {}
            }
        });
    }
}
