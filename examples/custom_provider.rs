//! A sandbox provider written outside Ken, checked with Ken's conformance kit.
//!
//! `LocalProcessProvider` runs each sandbox as a directory under a temporary
//! directory on the host, and each exec as a host process in its own process group.
//! It isolates nothing: processes see the host's file system, network and other
//! processes, so it declares no `isolation`, and it has no images, endpoints,
//! snapshots, resource limits or exec users. The kit checks that those calls fail
//! with `Error::Unsupported`.
//!
//! Sandbox paths for upload and download are host paths inside the sandbox's
//! directory. Every exec gets `HOME` and `TMPDIR` inside it, so `mktemp -d` in the
//! sandbox returns such a path.
//!
//! Run it with `cargo run --example custom_provider`; it prints one line per check
//! and a summary, and exits with 1 when a check failed.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt, TryStreamExt};
use ken_core::error::{Error, Result};
use ken_core::exec::{ExecProcess, ExecRequest, OutputChunk, OutputStream, ProcessKiller, Stdin};
use ken_core::labels::{unix_now, LabelSelector};
use ken_core::sandbox::{
    Capabilities, Endpoint, ImageRef, ImageSpec, PortSpec, Resource, ResourceKind, Resources,
    SandboxInfo, SandboxName, SandboxProvider, SandboxSpec, SandboxState,
};
use ken_core::testkit::{self, KitConfig};
use ken_core::EventSink;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

/// The provider's name, in errors and [`SandboxInfo::provider`].
const PROVIDER: &str = "local-process";

/// Environment variable set on every process of a sandbox, to the sandbox's
/// directory. Destroy and kill find the sandbox's processes by it.
const SANDBOX_VAR: &str = "KEN_LOCAL_SANDBOX";

/// Time between TERM and KILL when an exec is killed.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Runs sandboxes as directories and processes on the host.
#[derive(Debug)]
pub(crate) struct LocalProcessProvider {
    root: tempfile::TempDir,
    sandboxes: Mutex<BTreeMap<SandboxName, LocalSandbox>>,
}

#[derive(Debug, Clone)]
struct LocalSandbox {
    info: SandboxInfo,
    dir: PathBuf,
    env: BTreeMap<String, String>,
    workdir: PathBuf,
}

impl LocalSandbox {
    /// Returns the `NAME=value` entry that marks this sandbox's processes.
    fn marker(&self) -> String {
        marker_for(&self.dir)
    }
}

fn marker_for(dir: &Path) -> String {
    format!("{SANDBOX_VAR}={}", dir.display())
}

impl LocalProcessProvider {
    /// Creates a provider whose sandboxes live in a new temporary directory, which
    /// is removed when the provider is dropped.
    pub(crate) fn new() -> Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("ken-local-process-")
            .tempdir()
            .map_err(|error| {
                Error::io("failed to create the directory for local sandboxes", error)
            })?;
        Ok(LocalProcessProvider {
            root,
            sandboxes: Mutex::new(BTreeMap::new()),
        })
    }

    /// Returns the image reference to create sandboxes with: this provider has no
    /// images, so every sandbox runs on the host as it is.
    pub(crate) fn host_image() -> ImageRef {
        ImageRef {
            reference: "host".to_owned(),
            cached: true,
        }
    }

    fn sandbox(&self, name: &SandboxName) -> Result<LocalSandbox> {
        let sandboxes = self.sandboxes.lock().unwrap();
        sandboxes.get(name).cloned().ok_or_else(|| Error::NotFound {
            kind: "sandbox",
            name: name.to_string(),
        })
    }

    /// Checks that `path` is an absolute path inside the sandbox's directory.
    fn resolve(&self, sandbox: &LocalSandbox, path: &str) -> Result<PathBuf> {
        let path = PathBuf::from(path);
        let inside = path.is_absolute()
            && !path.components().any(|part| part == Component::ParentDir)
            && path.starts_with(&sandbox.dir);
        if !inside {
            return Err(Error::invalid(
                "sandbox path",
                path.display().to_string(),
                format!("use an absolute path inside {}", sandbox.dir.display()),
            ));
        }
        Ok(path)
    }
}

#[async_trait]
impl SandboxProvider for LocalProcessProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none().with_stdin(true)
    }

    async fn prepare_image(&self, _spec: &ImageSpec, _events: &EventSink) -> Result<ImageRef> {
        Err(Error::unsupported("prepare_image", PROVIDER))
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxInfo> {
        if !spec.ports.is_empty() {
            return Err(Error::unsupported("endpoints", PROVIDER));
        }
        if spec.resources != Resources::default() {
            return Err(Error::unsupported("resource limits", PROVIDER));
        }

        let mut sandboxes = self.sandboxes.lock().unwrap();
        if sandboxes.contains_key(&spec.name) {
            return Err(Error::AlreadyExists {
                kind: "sandbox",
                name: spec.name.to_string(),
            });
        }

        let dir = self.root.path().join(spec.name.as_str());
        for sub in ["home", "tmp"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|error| {
                Error::io(format!("failed to create {}", path.display()), error)
            })?;
        }

        let mut env = spec.env.clone();
        for (key, value) in &spec.secret_env {
            env.insert(key.clone(), value.expose().to_owned());
        }
        env.insert("HOME".to_owned(), dir.join("home").display().to_string());
        env.insert("TMPDIR".to_owned(), dir.join("tmp").display().to_string());
        env.insert(SANDBOX_VAR.to_owned(), dir.display().to_string());

        let info = SandboxInfo {
            id: format!("local-{}", spec.name),
            name: spec.name.clone(),
            provider: PROVIDER.to_owned(),
            state: SandboxState::Running,
            labels: spec.labels.clone(),
            created_at: Some(unix_now()),
            image: spec.image.reference.clone(),
        };
        let workdir = spec
            .workdir
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.clone());
        sandboxes.insert(
            spec.name.clone(),
            LocalSandbox {
                info: info.clone(),
                dir,
                env,
                workdir,
            },
        );
        tracing::info!(sandbox = %spec.name, "created local sandbox");
        Ok(info)
    }

    async fn get(&self, name: &SandboxName) -> Result<SandboxInfo> {
        Ok(self.sandbox(name)?.info)
    }

    async fn list(&self, selector: &LabelSelector) -> Result<Vec<SandboxInfo>> {
        let sandboxes = self.sandboxes.lock().unwrap();
        Ok(sandboxes
            .values()
            .filter(|sandbox| sandbox.info.labels.matches(selector))
            .map(|sandbox| sandbox.info.clone())
            .collect())
    }

    async fn exec(&self, name: &SandboxName, request: ExecRequest) -> Result<ExecProcess> {
        let sandbox = self.sandbox(name)?;
        if request.user.is_some() {
            return Err(Error::unsupported("exec as another user", PROVIDER));
        }
        let (program, args) = request.command.split_first().ok_or_else(|| {
            Error::invalid("exec command", "[]", "give at least the program to run")
        })?;

        let workdir = match &request.workdir {
            Some(dir) => PathBuf::from(dir),
            None => sandbox.workdir.clone(),
        };
        // Without input the process must read end-of-file at once, not wait on a pipe.
        let stdin = match request.stdin {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        };

        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .envs(&sandbox.env)
            .envs(&request.env)
            .current_dir(workdir)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().map_err(|error| {
            Error::io(
                format!("failed to start `{program}` in sandbox {name}"),
                error,
            )
        })?;
        let pgid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| {
                Error::backend(
                    PROVIDER,
                    format!("`{program}` in sandbox {name} exited before it got a pid"),
                )
            })?;

        if let (Some(input), Some(mut pipe)) = (request.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let written = match input {
                    Stdin::Bytes(bytes) => pipe.write_all(&bytes).await,
                    Stdin::Reader(mut reader) => {
                        tokio::io::copy(&mut reader, &mut pipe).await.map(drop)
                    }
                };
                // A process may exit without reading all of its input; that is its choice.
                if let Err(error) = written {
                    tracing::debug!(%error, "stopped writing stdin of a local exec");
                }
            });
        }

        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let output = futures::stream::select(
            chunks(stdout, OutputStream::Stdout),
            chunks(stderr, OutputStream::Stderr),
        )
        .boxed();
        let exit = async move {
            let status = child
                .wait()
                .await
                .map_err(|error| Error::io("failed to wait for a local exec", error))?;
            // A process killed by a signal has no exit code.
            Ok(status.code().map(i64::from))
        }
        .boxed();
        let killer = Arc::new(GroupKiller {
            pgid,
            marker: sandbox.marker(),
        });
        Ok(ExecProcess::new(output, exit, killer, request.timeout))
    }

    async fn upload(&self, name: &SandboxName, dest: &str, archive: Bytes) -> Result<()> {
        let sandbox = self.sandbox(name)?;
        let dest = self.resolve(&sandbox, dest)?;
        if !dest.is_dir() {
            return Err(Error::NotFound {
                kind: "directory",
                name: dest.display().to_string(),
            });
        }
        let unpacked = tokio::task::spawn_blocking(move || {
            tar::Archive::new(archive.as_ref())
                .unpack(&dest)
                .map_err(|error| {
                    Error::io(
                        format!("failed to unpack an archive into {}", dest.display()),
                        error,
                    )
                })
        });
        unpacked
            .await
            .map_err(|error| Error::backend_with(PROVIDER, "the upload task failed", error))?
    }

    async fn download(&self, name: &SandboxName, path: &str) -> Result<Bytes> {
        let sandbox = self.sandbox(name)?;
        let path = self.resolve(&sandbox, path)?;
        if !path.exists() {
            return Err(Error::NotFound {
                kind: "path",
                name: path.display().to_string(),
            });
        }
        let packed = tokio::task::spawn_blocking(move || pack(&path));
        packed
            .await
            .map_err(|error| Error::backend_with(PROVIDER, "the download task failed", error))?
    }

    async fn endpoint(&self, _name: &SandboxName, _port: &PortSpec) -> Result<Endpoint> {
        Err(Error::unsupported("endpoint", PROVIDER))
    }

    async fn snapshot(&self, _name: &SandboxName, _reference: &str) -> Result<ImageRef> {
        Err(Error::unsupported("snapshot", PROVIDER))
    }

    async fn destroy(&self, name: &SandboxName) -> Result<()> {
        let removed = self.sandboxes.lock().unwrap().remove(name);
        let dir = removed
            .as_ref()
            .map(|sandbox| sandbox.dir.clone())
            .unwrap_or_else(|| self.root.path().join(name.as_str()));

        // Background processes outlive their exec, so every process marked with the
        // sandbox's directory is killed, whichever process group it is in.
        for pid in live_processes(marker_for(&dir), None).await {
            match signal::kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(error) => {
                    return Err(Error::backend_with(
                        PROVIDER,
                        format!("failed to kill process {pid} of sandbox {name}"),
                        error,
                    ))
                }
            }
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(Error::io(
                    format!("failed to remove {}", dir.display()),
                    error,
                ))
            }
        }
        if removed.is_some() {
            tracing::info!(sandbox = %name, "destroyed local sandbox");
        }
        Ok(())
    }

    async fn resources(&self, selector: &LabelSelector) -> Result<Vec<Resource>> {
        let sandboxes = self.list(selector).await?;
        Ok(sandboxes
            .into_iter()
            .map(|info| Resource {
                kind: ResourceKind::Sandbox,
                id: info.name.to_string(),
                labels: info.labels,
            })
            .collect())
    }

    async fn remove_resource(&self, resource: &Resource) -> Result<()> {
        match resource.kind {
            ResourceKind::Sandbox => self.destroy(&SandboxName::new(resource.id.as_str())?).await,
            // This provider makes no other kind of resource.
            _ => Ok(()),
        }
    }
}

/// Turns a pipe of the child into a stream of output chunks. The pipe is read only
/// as fast as the stream is polled, so a process whose output is not read blocks
/// on a full pipe instead of filling memory.
fn chunks(
    pipe: impl tokio::io::AsyncRead + Send + 'static,
    stream: OutputStream,
) -> futures::stream::BoxStream<'static, Result<OutputChunk>> {
    ReaderStream::new(pipe)
        .map_ok(move |bytes| OutputChunk { stream, bytes })
        .map_err(|error| Error::io("failed to read the output of a local exec", error))
        .boxed()
}

/// Packs the file or directory at `path` into a tar archive whose entries start
/// with the path's last component.
fn pack(path: &Path) -> Result<Bytes> {
    let name = path.file_name().ok_or_else(|| {
        Error::invalid(
            "sandbox path",
            path.display().to_string(),
            "name a file or directory",
        )
    })?;
    let mut builder = tar::Builder::new(Vec::new());
    let added = if path.is_dir() {
        builder.append_dir_all(name, path)
    } else {
        builder.append_path_with_name(path, name)
    };
    added.map_err(|error| Error::io(format!("failed to pack {}", path.display()), error))?;
    let data = builder
        .into_inner()
        .map_err(|error| Error::io(format!("failed to pack {}", path.display()), error))?;
    Ok(Bytes::from(data))
}

/// Kills one exec's process group: TERM, then KILL after [`KILL_GRACE`].
///
/// Only processes that carry the sandbox's marker count as members, so a process
/// group id reused by an unrelated process after the exec ended is never signalled.
struct GroupKiller {
    pgid: i32,
    marker: String,
}

impl GroupKiller {
    async fn members(&self) -> Vec<i32> {
        live_processes(self.marker.clone(), Some(self.pgid)).await
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        match signal::killpg(Pid::from_raw(self.pgid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(error) => Err(Error::backend_with(
                PROVIDER,
                format!("failed to send {signal} to process group {}", self.pgid),
                error,
            )),
        }
    }

    /// Waits until the group has no live member or `limit` passes; returns whether
    /// it is empty.
    async fn wait_empty(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.members().await.is_empty() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait]
impl ProcessKiller for GroupKiller {
    async fn kill(&self) -> Result<()> {
        if self.members().await.is_empty() {
            return Ok(());
        }
        self.signal(Signal::SIGTERM)?;
        if self.wait_empty(KILL_GRACE).await {
            return Ok(());
        }
        tracing::debug!(
            pgid = self.pgid,
            "process group outlived TERM; sending KILL"
        );
        self.signal(Signal::SIGKILL)?;
        if self.wait_empty(Duration::from_secs(5)).await {
            Ok(())
        } else {
            Err(Error::backend(
                PROVIDER,
                format!("process group {} is still alive after KILL", self.pgid),
            ))
        }
    }
}

/// Returns the pids of live processes whose environment contains `marker`, only
/// those in process group `pgid` when it is given. Zombies are left out: they have
/// exited and wait only to be reaped.
async fn live_processes(marker: String, pgid: Option<i32>) -> Vec<i32> {
    let scan = tokio::task::spawn_blocking(move || scan_proc(&marker, pgid));
    scan.await.unwrap_or_default()
}

fn scan_proc(marker: &str, pgid: Option<i32>) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        // Processes can exit during the scan; their files are then gone, and skipped.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the parenthesised command are: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("Z");
        let group = fields.nth(1).and_then(|field| field.parse::<i32>().ok());
        if state == "Z" || pgid.is_some_and(|wanted| group != Some(wanted)) {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|byte| *byte == 0)
            .any(|entry| entry == marker.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::main]
async fn main() -> ExitCode {
    let provider = match LocalProcessProvider::new() {
        Ok(provider) => provider,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let config = KitConfig::new(LocalProcessProvider::host_image());
    let report = testkit::run_report(&provider, &config).await;

    for name in &report.passed {
        println!("ok      {name}");
    }
    for (name, message) in &report.failed {
        println!("FAILED  {name}: {message}");
    }
    println!(
        "{} passed, {} failed",
        report.passed.len(),
        report.failed.len()
    );
    if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
