//! Test doubles shared by the tests of the plan executor, the seeders and the
//! repository clone: a mockall mock of [`SandboxProvider`], canned processes, an
//! exec that runs commands on the host, and manifests built in code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, Notify};

use crate::error::{Error, Result};
use crate::exec::{ExecProcess, ExecRequest, OutputChunk, OutputStream, ProcessKiller, Stdin};
use crate::labels::{LabelSelector, Labels};
use crate::manifest::{
    ExtensionConfig, ImageConfig, Manifest, Readiness, RepositoryConfig, RepositorySource, Task,
    TaskKind, DEFAULT_STEP_TIMEOUT, DEFAULT_TTL,
};
use crate::phase::EventSink;
use crate::plan::Probe;
use crate::sandbox::{
    Capabilities, Endpoint, ImageRef, ImageSpec, PortSpec, Resource, Resources, Sandbox,
    SandboxInfo, SandboxName, SandboxProvider, SandboxSpec, SandboxState,
};

mockall::mock! {
    #[derive(Debug)]
    pub(crate) Provider {}

    #[async_trait]
    impl SandboxProvider for Provider {
        fn name(&self) -> &str;
        fn capabilities(&self) -> Capabilities;
        async fn prepare_image(&self, spec: &ImageSpec, events: &EventSink) -> Result<ImageRef>;
        async fn create(&self, spec: &SandboxSpec) -> Result<SandboxInfo>;
        async fn get(&self, name: &SandboxName) -> Result<SandboxInfo>;
        async fn list(&self, selector: &LabelSelector) -> Result<Vec<SandboxInfo>>;
        async fn exec(&self, sandbox: &SandboxName, request: ExecRequest) -> Result<ExecProcess>;
        async fn upload(&self, sandbox: &SandboxName, dest: &str, archive: Bytes) -> Result<()>;
        async fn download(&self, sandbox: &SandboxName, path: &str) -> Result<Bytes>;
        async fn endpoint(&self, sandbox: &SandboxName, port: &PortSpec) -> Result<Endpoint>;
        async fn snapshot(&self, sandbox: &SandboxName, reference: &str) -> Result<ImageRef>;
        async fn destroy(&self, sandbox: &SandboxName) -> Result<()>;
        async fn resources(&self, selector: &LabelSelector) -> Result<Vec<Resource>>;
        async fn remove_resource(&self, resource: &Resource) -> Result<()>;
    }
}

/// Returns a mock with a name and `capabilities`. Tests add the `exec` and `upload`
/// expectations they need.
pub(crate) fn mock_provider(capabilities: Capabilities) -> MockProvider {
    let mut provider = MockProvider::new();
    provider.expect_name().return_const("mock".to_owned());
    provider.expect_capabilities().return_const(capabilities);
    provider
}

/// Wraps `provider` into a running sandbox named `test-1`.
pub(crate) fn sandbox(provider: MockProvider) -> Sandbox {
    let info = SandboxInfo {
        id: "id-1".to_owned(),
        name: SandboxName::new("test-1").unwrap(),
        provider: "mock".to_owned(),
        state: SandboxState::Running,
        labels: Labels::default(),
        created_at: None,
        image: "ken-image:test".to_owned(),
    };
    Sandbox::new(Arc::new(provider), info)
}

struct NotifyKiller(Arc<Notify>);

#[async_trait]
impl ProcessKiller for NotifyKiller {
    async fn kill(&self) -> Result<()> {
        self.0.notify_one();
        Ok(())
    }
}

fn chunks(stdout: &[u8], stderr: &[u8]) -> Vec<Result<OutputChunk>> {
    let mut chunks = Vec::new();
    if !stdout.is_empty() {
        chunks.push(Ok(OutputChunk {
            stream: OutputStream::Stdout,
            bytes: Bytes::copy_from_slice(stdout),
        }));
    }
    if !stderr.is_empty() {
        chunks.push(Ok(OutputChunk {
            stream: OutputStream::Stderr,
            bytes: Bytes::copy_from_slice(stderr),
        }));
    }
    chunks
}

/// Builds a process that prints `stdout` and `stderr` at once and then exits with
/// the code `run` resolves to. Killing it (or its timeout) ends it with no code.
pub(crate) fn fake_process(
    stdout: &str,
    stderr: &str,
    timeout: Option<Duration>,
    run: BoxFuture<'static, Option<i64>>,
) -> ExecProcess {
    let kill = Arc::new(Notify::new());
    let killed = kill.clone();
    let exit = async move {
        tokio::select! {
            code = run => Ok(code),
            _ = killed.notified() => Ok(None),
        }
    }
    .boxed();
    let output = futures::stream::iter(chunks(stdout.as_bytes(), stderr.as_bytes())).boxed();
    ExecProcess::new(output, exit, Arc::new(NotifyKiller(kill)), timeout)
}

/// Builds a process that prints `stdout` and `stderr` and exits with `code` at once.
pub(crate) fn finished_process(stdout: &str, stderr: &str, code: i64) -> ExecProcess {
    fake_process(stdout, stderr, None, async move { Some(code) }.boxed())
}

struct PidKiller(Option<u32>);

#[async_trait]
impl ProcessKiller for PidKiller {
    async fn kill(&self) -> Result<()> {
        if let Some(pid) = self.0 {
            let _ = tokio::process::Command::new("kill")
                .args(["-KILL", "--", &pid.to_string()])
                .status()
                .await;
        }
        Ok(())
    }
}

/// Runs `request` as a process on the host, for tests of the shell scripts Ken
/// sends. `home` becomes `HOME`, git reads its global configuration from
/// `home/.gitconfig` and no system configuration. A request for another user panics,
/// because the host cannot switch users.
pub(crate) fn host_exec(request: ExecRequest, home: &Path) -> Result<ExecProcess> {
    assert!(
        request.user.is_none(),
        "host exec cannot switch users: {request:?}"
    );

    let mut command = tokio::process::Command::new(&request.command[0]);
    command
        .args(&request.command[1..])
        .envs(&request.env)
        .env("HOME", home)
        .env("GIT_CONFIG_GLOBAL", home.join(".gitconfig"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &request.workdir {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(|e| {
        Error::io(
            format!("failed to start {:?} on the host", request.command),
            e,
        )
    })?;

    let input = match request.stdin {
        Some(Stdin::Bytes(bytes)) => bytes,
        Some(Stdin::Reader(_)) => panic!("host exec takes stdin as bytes only"),
        None => Bytes::new(),
    };
    let killer = PidKiller(child.id());

    // The output and the exit code arrive together once the process has ended.
    let (output_tx, output_rx) = oneshot::channel();
    let (code_tx, code_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let write = async move {
            let _ = stdin.write_all(&input).await;
        };
        let (output, ()) = tokio::join!(child.wait_with_output(), write);
        let output = output.expect("wait for a host process");
        let _ = output_tx.send(chunks(&output.stdout, &output.stderr));
        let _ = code_tx.send(output.status.code().map(i64::from));
    });

    let output = futures::stream::once(async move { output_rx.await.unwrap_or_default() })
        .flat_map(futures::stream::iter)
        .boxed();
    let exit = async move { Ok(code_rx.await.unwrap_or(None)) }.boxed();
    Ok(ExecProcess::new(
        output,
        exit,
        Arc::new(killer),
        request.timeout,
    ))
}

/// Unpacks a tar archive into the host folder `dest`, as a provider's upload does
/// inside a sandbox.
pub(crate) fn host_upload(dest: &str, archive: &[u8]) -> Result<()> {
    tar::Archive::new(archive)
        .unpack(dest)
        .map_err(|e| Error::io(format!("failed to unpack into {dest}"), e))
}

/// Returns a mock that runs every exec and upload on the host (see [`host_exec`]).
pub(crate) fn host_provider(home: PathBuf) -> MockProvider {
    let mut provider = mock_provider(Capabilities::none().with_stdin(true));
    provider
        .expect_exec()
        .returning(move |_, request| host_exec(request, &home));
    provider
        .expect_upload()
        .returning(|_, dest, archive| host_upload(dest, &archive));
    provider
}

/// Builds a manifest in code with a path repository cloned to `/workspace/repo`
/// and `tasks` as its startup plan.
pub(crate) fn manifest(tasks: Vec<Task>) -> Manifest {
    Manifest {
        path: PathBuf::from("/project/ken.toml"),
        dir: PathBuf::from("/project"),
        name: "demo".to_owned(),
        ttl: DEFAULT_TTL,
        image: ImageConfig {
            dockerfile: PathBuf::from("/project/Dockerfile"),
            context: PathBuf::from("/project"),
            host_ca: None,
        },
        resources: Resources::default(),
        repository: Some(RepositoryConfig {
            source: RepositorySource::Path(PathBuf::from("/project")),
            branch: None,
            workdir: "/workspace/repo".to_owned(),
            subdir: None,
            credential_env: None,
        }),
        env: BTreeMap::new(),
        secrets: Vec::new(),
        tasks,
        ports: Vec::new(),
        seed: None,
        network: ExtensionConfig {
            kind: "local".to_owned(),
            settings: toml::Table::new(),
        },
        harness: None,
        hash: String::new(),
    }
}

/// Builds a step named `name` that runs `run` after `depends_on`.
pub(crate) fn step(name: &str, run: &str, depends_on: &[&str]) -> Task {
    Task {
        name: name.to_owned(),
        kind: TaskKind::Step,
        run: run.to_owned(),
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        workdir: None,
        user: None,
        env: BTreeMap::new(),
        timeout: DEFAULT_STEP_TIMEOUT,
        ready: None,
    }
}

/// Builds a service named `name` that runs `run`, ready when the shell command
/// `probe` passes within `timeout`.
pub(crate) fn service(
    name: &str,
    run: &str,
    depends_on: &[&str],
    probe: &str,
    timeout: Duration,
) -> Task {
    Task {
        kind: TaskKind::Service,
        ready: Some(Readiness {
            probe: Probe::Command {
                command: probe.to_owned(),
            },
            timeout,
        }),
        ..step(name, run, depends_on)
    }
}
