//! A launch: preflight checks, then the phases image, create, repository, plan, seed,
//! harness, network and ready, with teardown of everything made when any of them
//! fails or the launch is cancelled.

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::Instrument;

use super::{launcher, marker, ports_label, Orchestrator, PORTS_LABEL};
use crate::error::{Error, Result, Secret};
use crate::harness::HarnessContext;
use crate::labels::{self, Labels};
use crate::manifest::Manifest;
use crate::network::NetworkProviderExt;
use crate::phase::{LaunchEvent, Phase};
use crate::repo::{self, PreparedRepository};
use crate::sandbox::{Endpoint, ImageRef, PortSpec, Sandbox, SandboxName, SandboxSpec};
use crate::seed::{self, Seeder};

/// How long a launch may take before garbage collection treats an unfinished sandbox
/// as abandoned, even when its launcher cannot be checked.
pub const LAUNCH_DEADLINE: Duration = Duration::from_secs(2 * 3600);

/// Options of one launch.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// The sandbox's name; `<project>-<random>` when `None`.
    pub name: Option<SandboxName>,
}

impl LaunchOptions {
    /// Sets the sandbox's name.
    pub fn name(mut self, name: SandboxName) -> Self {
        self.name = Some(name);
        self
    }
}

/// The time one phase took.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTiming {
    /// The phase.
    pub phase: Phase,
    /// How long it took; zero when skipped.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
    /// A one-line summary, for example `cache hit`.
    pub detail: Option<String>,
    /// True when nothing in the manifest asked for the phase.
    pub skipped: bool,
}

/// Per-phase timings of a launch.
#[derive(Debug, Clone, Serialize)]
pub struct BootReport {
    /// Every phase, in launch order.
    pub phases: Vec<PhaseTiming>,
    /// Time from the start of the launch to ready.
    #[serde(rename = "total_ms", serialize_with = "millis")]
    pub total: Duration,
    /// The image the sandbox runs.
    pub image: ImageRef,
    /// Fingerprint of the seed inputs, when the sandbox was seeded.
    pub seed_fingerprint: Option<String>,
}

impl BootReport {
    /// Returns the timing of `phase`.
    pub fn phase(&self, phase: Phase) -> Option<&PhaseTiming> {
        self.phases.iter().find(|p| p.phase == phase)
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// A sandbox that finished launching.
#[derive(Debug, Clone)]
pub struct Launched {
    /// The sandbox.
    pub sandbox: Sandbox,
    /// Its endpoints: exposed ports, then the harness's.
    pub endpoints: Vec<Endpoint>,
    /// Timings per phase.
    pub report: BootReport,
}

/// Everything checked and prepared on the host before any resource exists.
struct Preflight {
    name: SandboxName,
    /// The manifest with host-side facts filled in (the repository's subdir).
    manifest: Manifest,
    repository: Option<PreparedRepository>,
    seeder: Option<Arc<dyn Seeder>>,
    secrets: BTreeMap<String, Secret>,
}

/// Undoes a launch. Armed while the launch runs; dropping it armed (the launch
/// future was dropped) spawns the teardown onto the runtime.
struct Teardown {
    orchestrator: Orchestrator,
    name: SandboxName,
    sandbox_made: bool,
    attached: Option<Sandbox>,
    armed: bool,
}

impl Teardown {
    async fn run(mut self) {
        self.armed = false;
        let work = teardown(self.orchestrator.clone(), self.name.clone(), self.sandbox_made, self.attached.take());
        work.await;
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if !self.armed || !(self.sandbox_made || self.attached.is_some()) {
            return;
        }
        let work = teardown(self.orchestrator.clone(), self.name.clone(), self.sandbox_made, self.attached.take());
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                tracing::warn!(sandbox.name = %self.name, "launch cancelled; tearing down what it made");
                self.orchestrator.teardowns.spawn_on(work, &handle);
            }
            Err(_) => tracing::error!(
                sandbox.name = %self.name,
                "launch dropped outside a Tokio runtime; run `ken gc` to remove what it made"
            ),
        }
    }
}

async fn teardown(orchestrator: Orchestrator, name: SandboxName, sandbox_made: bool, attached: Option<Sandbox>) {
    let started = Instant::now();
    orchestrator.events.emit(LaunchEvent::TeardownStarted);
    let provider = orchestrator.provider.name().to_owned();
    tracing::info!(sandbox.name = %name, provider = %provider, "teardown started");
    if let Some(sandbox) = attached {
        if let Err(error) = orchestrator.network.detach(&sandbox).await {
            tracing::error!(sandbox.name = %name, provider = %provider, phase = "network", %error, "teardown failed to detach the sandbox; `ken gc` will retry");
        }
    }
    if sandbox_made {
        if let Err(error) = orchestrator.provider.destroy(&name).await {
            tracing::error!(sandbox.name = %name, provider = %provider, phase = "create", %error, "teardown failed to destroy the sandbox; `ken gc` will retry");
        }
    }
    tracing::info!(sandbox.name = %name, provider = %provider, elapsed = ?started.elapsed(), "teardown finished");
    orchestrator.events.emit(LaunchEvent::TeardownFinished {
        duration: started.elapsed(),
    });
}

impl Orchestrator {
    /// Launches a sandbox from `manifest` and returns once it is ready.
    ///
    /// Everything is validated before the first resource is made. When a phase fails,
    /// or the returned future is dropped, everything made so far is removed in
    /// reverse order. The error names the phase and, for startup steps, the step and
    /// the tail of its log. After dropping the future, call
    /// [`wait_for_teardowns`](Orchestrator::wait_for_teardowns) before exiting.
    pub async fn launch(&self, manifest: &Manifest, options: LaunchOptions) -> Result<Launched> {
        let preflight = self.preflight(manifest, options).await?;
        let name = preflight.name.clone();
        let span = tracing::info_span!("launch", sandbox.name = %name, provider = self.provider.name());
        self.launch_phases(preflight).instrument(span).await
    }

    async fn preflight(&self, manifest: &Manifest, options: LaunchOptions) -> Result<Preflight> {
        let name = match options.name {
            Some(name) => name,
            None => generated_name(&manifest.name)?,
        };
        if manifest.network.kind != self.network.name() {
            return Err(Error::invalid(
                "network kind",
                manifest.network.kind.clone(),
                format!(
                    "the manifest asks for network {:?} but this launch uses network {:?}; remove [network] or set kind = {:?}",
                    manifest.network.kind,
                    self.network.name(),
                    self.network.name()
                ),
            ));
        }
        match (&manifest.harness, &self.harness) {
            (Some(config), None) => {
                return Err(Error::invalid(
                    "harness kind",
                    config.kind.clone(),
                    "the manifest asks for this agent harness but the program launching it did not set one up; \
                     with the ken CLI, use a kind it knows (opencode, claude-code, codex)",
                ));
            }
            (Some(config), Some(harness)) if config.kind != harness.name() => {
                return Err(Error::invalid(
                    "harness kind",
                    config.kind.clone(),
                    format!("the configured harness is {:?}", harness.name()),
                ));
            }
            _ => {}
        }
        let mut secrets = BTreeMap::new();
        for key in &manifest.secrets {
            match std::env::var(key) {
                Ok(value) if !value.is_empty() => {
                    secrets.insert(key.clone(), Secret::new(value));
                }
                _ => {
                    return Err(Error::invalid(
                        "secret",
                        key.clone(),
                        format!("the manifest lists secret {key} but it is not set in this environment; export {key}=... and retry"),
                    ));
                }
            }
        }
        let mut manifest = manifest.clone();
        let repository = match manifest.repository.clone() {
            Some(config) => {
                let for_git = manifest.clone();
                let prepared = tokio::task::spawn_blocking(move || repo::prepare(&config, &for_git))
                    .await
                    .map_err(|e| Error::backend("git", format!("repository preparation panicked: {e}")))??;
                prepared.apply_to(&mut manifest);
                Some(prepared)
            }
            None => None,
        };
        let seeder = seed::seeder_for(&manifest)?;
        match self.provider.get(&name).await {
            Ok(_) => {
                return Err(Error::AlreadyExists {
                    kind: "sandbox",
                    name: name.to_string(),
                })
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        // Checked before anything is created: a network that cannot keep the policy
        // must not get as far as minting keys or starting a sandbox.
        self.network.ensure_policy(&self.policy).await?;
        Ok(Preflight {
            name,
            manifest,
            repository,
            seeder,
            secrets,
        })
    }

    async fn launch_phases(&self, preflight: Preflight) -> Result<Launched> {
        let started = Instant::now();
        let name = preflight.name.clone();
        self.events.emit(LaunchEvent::Started {
            sandbox: name.to_string(),
        });
        let mut timings = Vec::new();
        let mut guard = Teardown {
            orchestrator: self.clone(),
            name: name.clone(),
            sandbox_made: false,
            attached: None,
            armed: true,
        };
        let result = self.run_phases(&preflight, &mut guard, &mut timings, started).await;
        match result {
            Ok(launched) => {
                guard.armed = false;
                tracing::info!(sandbox.name = %name, provider = self.provider.name(), total = ?launched.report.total, "sandbox ready");
                Ok(launched)
            }
            Err(error) => {
                tracing::error!(sandbox.name = %name, provider = self.provider.name(), phase = ?error.phase(), %error, "launch failed");
                guard.run().await;
                Err(error)
            }
        }
    }

    async fn run_phases(
        &self,
        preflight: &Preflight,
        guard: &mut Teardown,
        timings: &mut Vec<PhaseTiming>,
        started: Instant,
    ) -> Result<Launched> {
        let name = preflight.name.clone();
        let manifest = &preflight.manifest;

        let mut image_spec = manifest.image_spec()?;
        append_image_lines(&mut image_spec.dockerfile, &self.network.image_lines());
        let image = self
            .phase(Phase::Image, &name, &preflight.secrets, timings, async {
                let image = self.provider.prepare_image(&image_spec, &self.events).await?;
                let detail = if image.cached { "cache hit" } else { "built" };
                Ok((image.clone(), Some(format!("{} ({detail})", image.reference))))
            })
            .await?;

        let mut labels = Labels::for_sandbox(name.as_str(), &self.owner, manifest.ttl);
        labels.insert(labels::MANIFEST_HASH, &manifest.hash[..16]);
        labels.insert(labels::LAUNCHER, launcher::current());
        labels.insert(labels::NETWORK, self.network.name());
        labels.insert(labels::LAUNCH_DEADLINE, (labels::unix_now() + LAUNCH_DEADLINE.as_secs()).to_string());
        if !manifest.ports.is_empty() {
            labels.insert(PORTS_LABEL, ports_label(&manifest.ports));
        }
        let spec = SandboxSpec {
            name: name.clone(),
            image: image.clone(),
            resources: manifest.resources,
            labels,
            env: manifest.env.clone(),
            secret_env: preflight.secrets.clone(),
            ports: manifest.ports.clone(),
            workdir: Some(manifest.project_dir()),
            ttl: manifest.ttl,
        };
        guard.sandbox_made = true;
        let created = self
            .phase(Phase::Create, &name, &preflight.secrets, timings, async {
                let info = self.provider.create(&spec).await?;
                Ok((info, None))
            })
            .await;
        let info = match created {
            Ok(info) => info,
            Err(error) => {
                if error.is_already_exists() {
                    // A sandbox of that name belongs to another launch, so leave it alone.
                    guard.sandbox_made = false;
                }
                return Err(error);
            }
        };
        let sandbox = Sandbox::new(self.provider.clone(), info);

        match &preflight.repository {
            Some(repository) => {
                self.phase(Phase::Repository, &name, &preflight.secrets, timings, async {
                    repository.install(&sandbox).await?;
                    Ok(((), Some(repository.describe())))
                })
                .await?
            }
            None => self.skip(Phase::Repository, timings),
        }

        if manifest.tasks.is_empty() {
            self.skip(Phase::Plan, timings);
        } else {
            self.phase(Phase::Plan, &name, &preflight.secrets, timings, async {
                let report = crate::plan::run_plan(&sandbox, manifest, &self.events).await?;
                Ok(((), Some(format!("{} tasks", report.tasks.len()))))
            })
            .await?;
        }

        let seed_fingerprint = match &preflight.seeder {
            Some(seeder) => Some(
                self.phase(Phase::Seed, &name, &preflight.secrets, timings, async {
                    let fingerprint = seeder.fingerprint(&sandbox).await?;
                    seeder.seed(&sandbox).await?;
                    let detail = format!("{} (inputs {})", seeder.describe(), &fingerprint[..12.min(fingerprint.len())]);
                    Ok((fingerprint, Some(detail)))
                })
                .await?,
            ),
            None => {
                self.skip(Phase::Seed, timings);
                None
            }
        };

        let mut harness_endpoints = Vec::new();
        match &self.harness {
            Some(harness) => {
                let context = HarnessContext {
                    project_dir: manifest.project_dir(),
                    secrets: preflight.secrets.clone(),
                };
                harness_endpoints = self
                    .phase(Phase::Harness, &name, &preflight.secrets, timings, async {
                        let endpoints = harness.start(&sandbox, &context).await?;
                        Ok((endpoints, Some(harness.name().to_owned())))
                    })
                    .await?;
            }
            None => self.skip(Phase::Harness, timings),
        }

        let endpoints = self
            .phase(Phase::Network, &name, &preflight.secrets, timings, async {
                guard.attached = Some(sandbox.clone());
                let attachment = self.network.attach(&sandbox).await?;
                let mut endpoints = self.network.expose_all(&sandbox, &manifest.ports).await?;
                // Users reach the harness's ports through the network too. Only the
                // harness has their credentials, so they are copied onto the endpoints.
                for harness_endpoint in &harness_endpoints {
                    let credentials = harness_endpoint.credentials.clone();
                    match endpoints.iter_mut().find(|e| e.name == harness_endpoint.name) {
                        Some(endpoint) => endpoint.credentials = credentials,
                        None => {
                            let port = PortSpec {
                                name: harness_endpoint.name.clone(),
                                port: harness_endpoint.port,
                                scheme: harness_endpoint.url.scheme().to_owned(),
                            };
                            let mut endpoint = self.network.expose(&sandbox, &port).await?;
                            endpoint.credentials = credentials;
                            endpoints.push(endpoint);
                        }
                    }
                }
                let detail = format!("{} via {}", endpoints.len(), attachment.network);
                Ok((endpoints, Some(detail)))
            })
            .await?;

        let phases_so_far: Vec<(String, u64)> = timings
            .iter()
            .map(|t| (t.phase.to_string(), t.duration.as_millis() as u64))
            .collect();
        let fingerprint = seed_fingerprint.clone();
        self.phase(Phase::Ready, &name, &preflight.secrets, timings, async {
            // Services are checked where the provider publishes them: a network's
            // own address (a tailnet name) need not resolve on this host.
            for endpoint in &endpoints {
                let port = PortSpec {
                    name: endpoint.name.clone(),
                    port: endpoint.port,
                    scheme: endpoint.url.scheme().to_owned(),
                };
                let local = self.provider.endpoint(&name, &port).await?;
                wait_for_endpoint(&local, Duration::from_secs(20)).await?;
            }
            let marker = marker::ReadyMarker {
                ready_at: labels::unix_now(),
                phases: phases_so_far,
                seed_fingerprint: fingerprint,
            };
            marker::write(&sandbox, &marker).await?;
            let detail = match endpoints.len() {
                1 => "1 endpoint responds".to_owned(),
                count => format!("{count} endpoints respond"),
            };
            Ok(((), Some(detail)))
        })
        .await?;

        Ok(Launched {
            sandbox,
            endpoints,
            report: BootReport {
                phases: timings.clone(),
                total: started.elapsed(),
                image,
                seed_fingerprint,
            },
        })
    }

    async fn phase<T, F>(
        &self,
        phase: Phase,
        name: &SandboxName,
        secrets: &BTreeMap<String, Secret>,
        timings: &mut Vec<PhaseTiming>,
        work: F,
    ) -> Result<T>
    where
        F: Future<Output = Result<(T, Option<String>)>>,
    {
        let span = tracing::info_span!("phase", phase = %phase, sandbox.name = %name, provider = self.provider.name());
        self.events.emit(LaunchEvent::PhaseStarted { phase });
        let started = Instant::now();
        tracing::info!(parent: &span, "phase started");
        match work.instrument(span.clone()).await {
            Ok((value, detail)) => {
                let duration = started.elapsed();
                tracing::info!(parent: &span, ?duration, detail = detail.as_deref().unwrap_or(""), "phase finished");
                self.events.emit(LaunchEvent::PhaseFinished {
                    phase,
                    duration,
                    detail: detail.clone(),
                });
                timings.push(PhaseTiming {
                    phase,
                    duration,
                    detail,
                    skipped: false,
                });
                Ok(value)
            }
            Err(error) => {
                let error = redact(error, secrets);
                let duration = started.elapsed();
                tracing::error!(parent: &span, ?duration, %error, "phase failed");
                self.events.emit(LaunchEvent::PhaseFailed {
                    phase,
                    duration,
                    error: error.to_string(),
                });
                Err(Error::Launch {
                    sandbox: name.to_string(),
                    phase,
                    source: Box::new(error),
                })
            }
        }
    }

    fn skip(&self, phase: Phase, timings: &mut Vec<PhaseTiming>) {
        self.events.emit(LaunchEvent::PhaseSkipped { phase });
        timings.push(PhaseTiming {
            phase,
            duration: Duration::ZERO,
            detail: None,
            skipped: true,
        });
    }
}

/// Waits until the endpoint responds to the host: an HTTP status line for `http`
/// endpoints, an accepted connection for the others.
///
/// A TCP connection alone proves little for HTTP: Docker's port proxy accepts
/// connections on a published port even when nothing listens inside the sandbox.
async fn wait_for_endpoint(endpoint: &Endpoint, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last_error = match tokio::time::timeout(Duration::from_secs(3), probe_endpoint(endpoint)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no response within 3s".to_owned(),
        };
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(endpoint = %endpoint.url, error = %last_error, "endpoint did not respond");
            return Err(Error::Timeout {
                operation: format!(
                    "waiting for endpoint {} ({}) to respond (last error: {last_error}); check that a \
                     service listens on 0.0.0.0:{} inside the sandbox, not only on 127.0.0.1",
                    endpoint.name, endpoint.url, endpoint.port
                ),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn probe_endpoint(endpoint: &Endpoint) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let host = endpoint.url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = endpoint.url.port_or_known_default().unwrap_or(80);
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    if endpoint.url.scheme() != "http" {
        return Ok(());
    }
    let request = format!("GET / HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await?;
    if &head == b"HTTP/" {
        Ok(())
    } else {
        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the response is not HTTP"))
    }
}

/// Appends `lines` (the network's, see
/// [`NetworkProvider::image_lines`](crate::NetworkProvider::image_lines)) to the end of
/// `dockerfile`, each on its own line.
pub(super) fn append_image_lines(dockerfile: &mut String, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    if !dockerfile.is_empty() && !dockerfile.ends_with('\n') {
        dockerfile.push('\n');
    }
    for line in lines {
        dockerfile.push_str(line.trim_end_matches('\n'));
        dockerfile.push('\n');
    }
}

/// Replaces the values of `secrets` in the text of `error` with `[redacted]`: a step
/// that prints a secret must not carry it into the error, the log or the terminal.
fn redact(error: Error, secrets: &BTreeMap<String, Secret>) -> Error {
    let values: Vec<&str> = secrets.values().map(Secret::expose).filter(|v| !v.is_empty()).collect();
    if values.is_empty() {
        return error;
    }
    let clean = |text: String| values.iter().fold(text, |text, value| text.replace(value, "[redacted]"));
    match error {
        Error::StepFailed { step, status, log_tail } => Error::StepFailed {
            step: clean(step),
            status: clean(status),
            log_tail: clean(log_tail),
        },
        Error::Backend { service, message, source, retryable } => Error::Backend {
            service,
            message: clean(message),
            source,
            retryable,
        },
        other => other,
    }
}

/// Returns `<prefix>-<6 hex digits>`, shortening the prefix to fit the name limit.
fn generated_name(prefix: &str) -> Result<SandboxName> {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.write_u32(std::process::id());
    let suffix = format!("{:06x}", hasher.finish() & 0xff_ffff);
    let max_prefix = SandboxName::MAX_LEN - suffix.len() - 1;
    let prefix: String = prefix.chars().take(max_prefix).collect();
    SandboxName::new(format!("{}-{suffix}", prefix.trim_end_matches('-')))
}
