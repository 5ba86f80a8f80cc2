//! The `ken.toml` manifest: what to build, clone, start, seed and expose.
//!
//! [`Manifest::load`] parses and validates the whole file before anything is created.
//! Every error names the offending value and its line.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;
use url::Url;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::labels::{self, Labels};
use crate::plan::Probe;
use crate::sandbox::{ImageSpec, PortSpec, Resources, SandboxName};

/// Default time to live of a sandbox.
pub const DEFAULT_TTL: Duration = Duration::from_secs(8 * 3600);
/// Default timeout of a startup step.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// Default time a service gets to pass its readiness probe.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Default clone destination inside the sandbox.
pub const DEFAULT_WORKDIR: &str = "/workspace/repo";

/// A parsed and validated `ken.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Path of the manifest file.
    pub path: PathBuf,
    /// Directory of the manifest file; relative paths are resolved against it.
    pub dir: PathBuf,
    /// Project name, used as the prefix of generated sandbox names.
    pub name: String,
    /// Time after which the sandbox may be garbage-collected.
    pub ttl: Duration,
    /// How to build the image.
    pub image: ImageConfig,
    /// Resource limits.
    pub resources: Resources,
    /// The repository to clone, if any.
    pub repository: Option<RepositoryConfig>,
    /// Environment for every step, service and seed.
    pub env: BTreeMap<String, String>,
    /// Names of host environment variables passed into the sandbox as secrets.
    pub secrets: Vec<String>,
    /// Steps and services of the startup plan, in file order.
    pub tasks: Vec<Task>,
    /// Ports to expose.
    pub ports: Vec<PortSpec>,
    /// The seed, if any.
    pub seed: Option<SeedConfig>,
    /// The network to join; `local` when absent.
    pub network: ExtensionConfig,
    /// The agent harness, if any.
    pub harness: Option<ExtensionConfig>,
    /// Hex sha256 of the manifest text.
    pub hash: String,
}

/// The `[image]` table.
#[derive(Debug, Clone)]
pub struct ImageConfig {
    /// Absolute path of the Dockerfile.
    pub dockerfile: PathBuf,
    /// Absolute path of the build context.
    pub context: PathBuf,
    /// Whether to carry the host's CA bundle into the image: `None` means "when the
    /// host has one".
    pub host_ca: Option<bool>,
}

/// The source of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositorySource {
    /// A local git repository: its committed history is sent as a bundle.
    Path(PathBuf),
    /// A remote URL cloned inside the sandbox.
    Url(Url),
}

/// The `[repository]` table.
#[derive(Debug, Clone)]
pub struct RepositoryConfig {
    /// The source to clone from.
    pub source: RepositorySource,
    /// Branch to check out; the current branch (path) or the remote's default (URL)
    /// when `None`.
    pub branch: Option<String>,
    /// Clone destination inside the sandbox.
    pub workdir: String,
    /// Folder inside the clone where steps run. For a path source it defaults to the
    /// manifest's folder relative to the repository root.
    pub subdir: Option<String>,
    /// Name of a host environment variable holding a token for the URL.
    pub credential_env: Option<String>,
}

/// Whether a task runs to completion or keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Runs to completion; a non-zero exit fails the launch.
    Step,
    /// Keeps running in the background; ready when its probe passes.
    Service,
}

/// A readiness probe with its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The probe.
    pub probe: Probe,
    /// How long the probe may take to pass.
    pub timeout: Duration,
}

/// One step or service of the startup plan.
#[derive(Debug, Clone)]
pub struct Task {
    /// Unique name among steps and services.
    pub name: String,
    /// Step or service.
    pub kind: TaskKind,
    /// Shell command, run with `sh -c`.
    pub run: String,
    /// Names of the tasks that must be finished (steps) or ready (services) first.
    pub depends_on: Vec<String>,
    /// Working directory; the project directory when `None`.
    pub workdir: Option<String>,
    /// User to run as.
    pub user: Option<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Time limit of a step.
    pub timeout: Duration,
    /// Readiness probe of a service.
    pub ready: Option<Readiness>,
}

/// The `[seed]` table.
#[derive(Debug, Clone)]
pub enum SeedConfig {
    /// SQL files piped to `psql` in one transaction.
    Sql {
        /// Absolute paths of the files on the host, in order.
        files: Vec<PathBuf>,
        /// Database name.
        database: String,
        /// OS user that runs `psql` inside the sandbox.
        user: Option<String>,
    },
    /// A project command run in the project directory.
    Command {
        /// The command, run with `sh -c`.
        command: String,
        /// Files (relative to the project directory) whose contents the fingerprint
        /// covers.
        inputs: Vec<String>,
        /// OS user to run as.
        user: Option<String>,
    },
}

/// A `[network]` or `[harness]` table: a `kind` and the settings its backend reads.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtensionConfig {
    /// The backend's name, for example `local`, `tailscale` or `opencode`.
    pub kind: String,
    /// The remaining keys, validated by the backend.
    pub settings: toml::Table,
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::io(
                format!("failed to read manifest {}; pass --manifest PATH to a ken.toml", path.display()),
                e,
            )
        })?;
        Manifest::parse(path, &text)
    }

    /// Parses and validates manifest `text`, resolving relative paths against the
    /// folder of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let path = std::path::absolute(path)
            .map_err(|e| Error::io(format!("failed to resolve {}", path.display()), e))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        let checker = Checker { path: &path, text };
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            checker.error(span, e.message().to_owned())
        })?;
        checker.build(raw, dir)
    }

    /// Returns the project directory inside the sandbox: where steps run.
    pub fn project_dir(&self) -> String {
        match &self.repository {
            Some(repo) => match &repo.subdir {
                Some(sub) if !sub.is_empty() && sub != "." => {
                    format!("{}/{}", repo.workdir.trim_end_matches('/'), sub.trim_matches('/'))
                }
                _ => repo.workdir.clone(),
            },
            None => "/".to_owned(),
        }
    }

    /// Returns the steps and services.
    pub fn tasks(&self) -> &[Task] {
        &self.tasks
    }

    /// Returns the image definition: the Dockerfile (with the host's CA bundle added
    /// when `host_ca` is true or, by default, when the host has one) and its
    /// context, labelled as a cached Ken image.
    pub fn image_spec(&self) -> Result<ImageSpec> {
        let dockerfile = std::fs::read_to_string(&self.image.dockerfile).map_err(|e| {
            Error::io(format!("failed to read Dockerfile {}", self.image.dockerfile.display()), e)
        })?;
        let ca_bundle = match self.image.host_ca {
            Some(false) => None,
            Some(true) => {
                let path = crate::image::host_ca_bundle().ok_or_else(|| {
                    Error::invalid(
                        "image.host_ca",
                        "true",
                        "no CA bundle was found on this host; set SSL_CERT_FILE to one or set host_ca = false",
                    )
                })?;
                Some(read_bundle(&path)?)
            }
            None => match crate::image::host_ca_bundle() {
                Some(path) => Some(read_bundle(&path)?),
                None => None,
            },
        };
        let mut labels = Labels::new();
        labels.insert(labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
        labels.insert(labels::CACHE, "true");
        labels.insert("ken.project", self.name.clone());
        Ok(crate::image::image_spec(&dockerfile, self.image.context.clone(), ca_bundle, labels))
    }
}

fn read_bundle(path: &Path) -> Result<Bytes> {
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| Error::io(format!("failed to read CA bundle {}", path.display()), e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Option<Spanned<String>>,
    ttl: Option<Spanned<String>>,
    image: Option<RawImage>,
    resources: Option<RawResources>,
    repository: Option<Spanned<RawRepository>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    secrets: Vec<Spanned<String>>,
    #[serde(default)]
    steps: Vec<Spanned<RawTask>>,
    #[serde(default)]
    services: Vec<Spanned<RawTask>>,
    #[serde(default)]
    ports: Vec<Spanned<RawPort>>,
    seed: Option<Spanned<RawSeed>>,
    network: Option<Spanned<toml::Table>>,
    harness: Option<Spanned<toml::Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    dockerfile: Option<Spanned<String>>,
    context: Option<Spanned<String>>,
    host_ca: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpus: Option<Spanned<f64>>,
    memory: Option<Spanned<String>>,
    pids: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    path: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    branch: Option<Spanned<String>>,
    workdir: Option<Spanned<String>>,
    subdir: Option<Spanned<String>>,
    credential_env: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: Spanned<String>,
    run: Spanned<String>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    workdir: Option<String>,
    user: Option<String>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    timeout: Option<Spanned<String>>,
    ready: Option<Spanned<RawReady>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReady {
    tcp: Option<Spanned<i64>>,
    http: Option<Spanned<String>>,
    command: Option<String>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Spanned<String>,
    port: Spanned<i64>,
    scheme: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeed {
    sql: Option<Vec<Spanned<String>>>,
    database: Option<String>,
    command: Option<String>,
    #[serde(default)]
    inputs: Vec<String>,
    user: Option<String>,
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> Error {
        let offset = span.start.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = offset - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        Error::Manifest {
            path: self.path.display().to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn duration(&self, value: &Spanned<String>, what: &str) -> Result<Duration> {
        match humantime::parse_duration(value.get_ref()) {
            Ok(d) if !d.is_zero() => Ok(d),
            Ok(_) => Err(self.error(value.span(), format!("{what} {:?} must be longer than zero", value.get_ref()))),
            Err(e) => Err(self.error(
                value.span(),
                format!("invalid {what} {:?}: {e}; write it like \"30s\", \"5m\" or \"8h\"", value.get_ref()),
            )),
        }
    }

    fn existing_path(&self, dir: &Path, value: &Spanned<String>, what: &str, want_dir: bool) -> Result<PathBuf> {
        let resolved = dir.join(value.get_ref());
        let ok = if want_dir { resolved.is_dir() } else { resolved.is_file() };
        if !ok {
            let kind = if want_dir { "directory" } else { "file" };
            return Err(self.error(
                value.span(),
                format!(
                    "{what} {:?} is not an existing {kind} (resolved to {}); paths are relative to the manifest's folder",
                    value.get_ref(),
                    resolved.display()
                ),
            ));
        }
        Ok(resolved)
    }

    fn env_name(&self, name: &Spanned<String>, what: &str) -> Result<()> {
        let value = name.get_ref();
        let valid = !value.is_empty()
            && !value.starts_with(|c: char| c.is_ascii_digit())
            && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if valid {
            Ok(())
        } else {
            Err(self.error(
                name.span(),
                format!("invalid {what} {value:?}: use letters, digits and '_', not starting with a digit"),
            ))
        }
    }

    fn build(&self, raw: RawManifest, dir: PathBuf) -> Result<Manifest> {
        let name = match &raw.name {
            Some(name) => {
                SandboxName::new(name.get_ref().clone())
                    .map_err(|e| self.error(name.span(), format!("invalid project name: {}", e.root())))?;
                name.get_ref().clone()
            }
            None => dir
                .file_name()
                .map(|n| n.to_string_lossy().to_ascii_lowercase())
                .filter(|n| SandboxName::new(n.clone()).is_ok())
                .unwrap_or_else(|| "sandbox".to_owned()),
        };
        let ttl = match &raw.ttl {
            Some(ttl) => self.duration(ttl, "ttl")?,
            None => DEFAULT_TTL,
        };

        let image = self.image(raw.image, &dir)?;
        let resources = self.resources(raw.resources)?;
        let repository = match raw.repository {
            Some(repo) => Some(self.repository(repo, &dir)?),
            None => None,
        };

        let mut env = BTreeMap::new();
        for (key, value) in raw.env {
            self.env_name(&key, "environment variable name")?;
            env.insert(key.into_inner(), value);
        }
        let mut secrets = Vec::new();
        for secret in raw.secrets {
            self.env_name(&secret, "secret name")?;
            secrets.push(secret.into_inner());
        }

        let tasks = self.tasks(raw.steps, raw.services)?;
        let ports = self.ports(raw.ports)?;
        let seed = match raw.seed {
            Some(seed) => Some(self.seed(seed, &dir)?),
            None => None,
        };
        let network = match raw.network {
            Some(table) => self.extension(table, "network")?,
            None => ExtensionConfig {
                kind: "local".to_owned(),
                settings: toml::Table::new(),
            },
        };
        let harness = match raw.harness {
            Some(table) => Some(self.extension(table, "harness")?),
            None => None,
        };

        Ok(Manifest {
            path: self.path.to_path_buf(),
            dir,
            name,
            ttl,
            image,
            resources,
            repository,
            env,
            secrets,
            tasks,
            ports,
            seed,
            network,
            harness,
            hash: hex::encode(Sha256::digest(self.text.as_bytes())),
        })
    }

    fn image(&self, raw: Option<RawImage>, dir: &Path) -> Result<ImageConfig> {
        let raw = raw.unwrap_or(RawImage {
            dockerfile: None,
            context: None,
            host_ca: None,
        });
        let dockerfile = match &raw.dockerfile {
            Some(value) => self.existing_path(dir, value, "image.dockerfile", false)?,
            None => {
                let default = dir.join("Dockerfile");
                if !default.is_file() {
                    return Err(self.error(
                        0..0,
                        format!(
                            "no [image] dockerfile given and {} does not exist; add `[image] dockerfile = \"PATH\"`",
                            default.display()
                        ),
                    ));
                }
                default
            }
        };
        let context = match &raw.context {
            Some(value) => self.existing_path(dir, value, "image.context", true)?,
            None => dockerfile.parent().map(Path::to_path_buf).unwrap_or_else(|| dir.to_path_buf()),
        };
        Ok(ImageConfig {
            dockerfile,
            context,
            host_ca: raw.host_ca,
        })
    }

    fn resources(&self, raw: Option<RawResources>) -> Result<Resources> {
        let Some(raw) = raw else {
            return Ok(Resources::default());
        };
        let mut resources = Resources::default();
        if let Some(cpus) = raw.cpus {
            let value = *cpus.get_ref();
            if !(value > 0.0 && value <= 1024.0) {
                return Err(self.error(cpus.span(), format!("invalid resources.cpus {value}: give a number of cores above 0, such as 2 or 0.5")));
            }
            resources.cpus = Some(value);
        }
        if let Some(memory) = raw.memory {
            let bytes = parse_memory(memory.get_ref()).ok_or_else(|| {
                self.error(
                    memory.span(),
                    format!("invalid resources.memory {:?}: write a size such as \"512MiB\" or \"2GiB\"", memory.get_ref()),
                )
            })?;
            resources.memory_bytes = Some(bytes);
        }
        if let Some(pids) = raw.pids {
            let value = *pids.get_ref();
            if value < 16 {
                return Err(self.error(pids.span(), format!("invalid resources.pids {value}: allow at least 16 processes")));
            }
            resources.pids = Some(value as u64);
        }
        Ok(resources)
    }

    fn repository(&self, raw: Spanned<RawRepository>, dir: &Path) -> Result<RepositoryConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let source = match (&raw.path, &raw.url) {
            (Some(path), None) => {
                let resolved = self.existing_path(dir, path, "repository.path", true)?;
                RepositorySource::Path(resolved)
            }
            (None, Some(url)) => {
                let parsed = Url::parse(url.get_ref()).map_err(|e| {
                    self.error(url.span(), format!("invalid repository.url {:?}: {e}", url.get_ref()))
                })?;
                if !matches!(parsed.scheme(), "https" | "http" | "ssh" | "git" | "file") {
                    return Err(self.error(
                        url.span(),
                        format!("unsupported scheme in repository.url {:?}: use https, http, ssh, git or file", url.get_ref()),
                    ));
                }
                if parsed.password().is_some() {
                    return Err(self.error(
                        url.span(),
                        "repository.url contains a password; remove it and set credential_env to the name of a host variable holding the token",
                    ));
                }
                RepositorySource::Url(parsed)
            }
            (Some(path), Some(_)) => {
                return Err(self.error(path.span(), "give either repository.path or repository.url, not both"));
            }
            (None, None) => {
                return Err(self.error(span, "[repository] needs `path = \"...\"` (a local git repository) or `url = \"...\"`"));
            }
        };
        let workdir = match &raw.workdir {
            Some(value) => {
                if !value.get_ref().starts_with('/') {
                    return Err(self.error(value.span(), format!("repository.workdir {:?} must be an absolute path inside the sandbox", value.get_ref())));
                }
                value.get_ref().trim_end_matches('/').to_owned()
            }
            None => DEFAULT_WORKDIR.to_owned(),
        };
        if let Some(branch) = &raw.branch {
            let b = branch.get_ref();
            if b.is_empty() || b.starts_with('-') || b.contains("..") || b.chars().any(|c| c.is_whitespace() || "~^:?*[\\".contains(c)) {
                return Err(self.error(branch.span(), format!("invalid repository.branch {b:?}: not a valid git branch name")));
            }
        }
        if let Some(name) = &raw.credential_env {
            self.env_name(name, "repository.credential_env")?;
        }
        if let Some(subdir) = &raw.subdir {
            if subdir.get_ref().starts_with('/') || subdir.get_ref().split('/').any(|p| p == "..") {
                return Err(self.error(subdir.span(), format!("repository.subdir {:?} must be a relative path inside the clone", subdir.get_ref())));
            }
        }
        Ok(RepositoryConfig {
            source,
            branch: raw.branch.map(Spanned::into_inner),
            workdir,
            subdir: raw.subdir.map(Spanned::into_inner),
            credential_env: raw.credential_env.map(Spanned::into_inner),
        })
    }

    fn tasks(&self, steps: Vec<Spanned<RawTask>>, services: Vec<Spanned<RawTask>>) -> Result<Vec<Task>> {
        let mut tasks = Vec::new();
        let mut spans: HashMap<String, Range<usize>> = HashMap::new();
        let mut dependency_spans: HashMap<String, Vec<Spanned<String>>> = HashMap::new();
        let all = steps
            .into_iter()
            .map(|t| (TaskKind::Step, t))
            .chain(services.into_iter().map(|t| (TaskKind::Service, t)));
        for (kind, raw) in all {
            let raw = raw.into_inner();
            let name = raw.name.get_ref().clone();
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_name {
                return Err(self.error(raw.name.span(), format!("invalid step name {name:?}: use letters, digits, '-' and '_'")));
            }
            if let Some(first) = spans.get(&name) {
                let first_line = self.error(first.clone(), "").to_line();
                return Err(self.error(
                    raw.name.span(),
                    format!("duplicate name {name:?}: a step or service on line {first_line} has it already; names must be unique"),
                ));
            }
            spans.insert(name.clone(), raw.name.span());
            if raw.run.get_ref().trim().is_empty() {
                return Err(self.error(raw.run.span(), format!("`run` of {name:?} is empty")));
            }
            let timeout = match (&raw.timeout, kind) {
                (Some(t), TaskKind::Step) => self.duration(t, "timeout")?,
                (Some(t), TaskKind::Service) => {
                    return Err(self.error(
                        t.span(),
                        format!("service {name:?} runs until the sandbox is removed, so it takes no `timeout`; set `ready = {{ ..., timeout = \"...\" }}` instead"),
                    ));
                }
                (None, _) => DEFAULT_STEP_TIMEOUT,
            };
            let ready = match raw.ready {
                Some(ready) if kind == TaskKind::Step => {
                    return Err(self.error(ready.span(), format!("step {name:?} runs to completion, so it takes no `ready` probe; make it a [[services]] entry")));
                }
                Some(ready) => Some(self.ready(ready)?),
                None => None,
            };
            let mut env = BTreeMap::new();
            for (key, value) in raw.env {
                self.env_name(&key, "environment variable name")?;
                env.insert(key.into_inner(), value);
            }
            let depends_on: Vec<String> = raw.depends_on.iter().map(|d| d.get_ref().clone()).collect();
            dependency_spans.insert(name.clone(), raw.depends_on);
            tasks.push(Task {
                name,
                kind,
                run: raw.run.into_inner(),
                depends_on,
                workdir: raw.workdir,
                user: raw.user,
                env,
                timeout,
                ready,
            });
        }

        for task in &tasks {
            for dependency in &dependency_spans[&task.name] {
                if !spans.contains_key(dependency.get_ref()) {
                    return Err(self.error(
                        dependency.span(),
                        format!("{:?} depends on {:?}, which is not a step or service in this manifest", task.name, dependency.get_ref()),
                    ));
                }
                if dependency.get_ref() == &task.name {
                    return Err(self.error(dependency.span(), format!("{:?} depends on itself", task.name)));
                }
            }
        }
        if let Some(cycle) = find_cycle(&tasks) {
            let span = spans[&cycle[0]].clone();
            return Err(self.error(span, format!("dependency cycle: {}", cycle.join(" -> "))));
        }
        Ok(tasks)
    }

    fn ready(&self, raw: Spanned<RawReady>) -> Result<Readiness> {
        let span = raw.span();
        let raw = raw.into_inner();
        let timeout = match &raw.timeout {
            Some(t) => self.duration(t, "ready.timeout")?,
            None => DEFAULT_READY_TIMEOUT,
        };
        let probe = match (raw.tcp, raw.http, raw.command) {
            (Some(port), None, None) => Probe::Tcp {
                port: self.port_number(&port)?,
            },
            (None, Some(url), None) => {
                let parsed = Url::parse(url.get_ref()).map_err(|e| self.error(url.span(), format!("invalid ready.http {:?}: {e}", url.get_ref())))?;
                let local = matches!(parsed.host_str(), Some("127.0.0.1") | Some("localhost"));
                if parsed.scheme() != "http" || !local {
                    return Err(self.error(
                        url.span(),
                        format!("ready.http {:?} must be an http://127.0.0.1:PORT/... URL: probes run inside the sandbox", url.get_ref()),
                    ));
                }
                let mut path = parsed.path().to_owned();
                if let Some(query) = parsed.query() {
                    path.push('?');
                    path.push_str(query);
                }
                Probe::Http {
                    port: parsed.port_or_known_default().unwrap_or(80),
                    path,
                }
            }
            (None, None, Some(command)) => Probe::Command { command },
            _ => {
                return Err(self.error(span, "`ready` needs exactly one of `tcp = PORT`, `http = \"URL\"` or `command = \"...\"`"));
            }
        };
        Ok(Readiness { probe, timeout })
    }

    fn port_number(&self, value: &Spanned<i64>) -> Result<u16> {
        match u16::try_from(*value.get_ref()) {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(self.error(value.span(), format!("invalid port {}: use a number from 1 to 65535", value.get_ref()))),
        }
    }

    fn ports(&self, raw: Vec<Spanned<RawPort>>) -> Result<Vec<PortSpec>> {
        let mut ports: Vec<PortSpec> = Vec::new();
        for entry in raw {
            let entry = entry.into_inner();
            let port = self.port_number(&entry.port)?;
            let name = entry.name.get_ref().clone();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(self.error(entry.name.span(), format!("invalid port name {name:?}: use letters, digits, '-' and '_'")));
            }
            if ports.iter().any(|p| p.name == name) {
                return Err(self.error(entry.name.span(), format!("duplicate port name {name:?}")));
            }
            if ports.iter().any(|p| p.port == port) {
                return Err(self.error(entry.port.span(), format!("port {port} is listed twice")));
            }
            let scheme = entry.scheme.unwrap_or_else(|| "http".to_owned());
            if !matches!(scheme.as_str(), "http" | "https" | "tcp") {
                return Err(self.error(entry.name.span(), format!("invalid scheme {scheme:?} for port {name:?}: use http, https or tcp")));
            }
            ports.push(PortSpec { name, port, scheme });
        }
        Ok(ports)
    }

    fn seed(&self, raw: Spanned<RawSeed>, dir: &Path) -> Result<SeedConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        match (raw.sql, raw.command) {
            (Some(files), None) => {
                if files.is_empty() {
                    return Err(self.error(span, "seed.sql lists no files"));
                }
                let database = raw.database.ok_or_else(|| self.error(span.clone(), "seed.sql needs `database = \"NAME\"`"))?;
                let mut resolved = Vec::new();
                for file in &files {
                    resolved.push(self.existing_path(dir, file, "seed file", false)?);
                }
                Ok(SeedConfig::Sql {
                    files: resolved,
                    database,
                    user: raw.user,
                })
            }
            (None, Some(command)) => Ok(SeedConfig::Command {
                command,
                inputs: raw.inputs,
                user: raw.user,
            }),
            _ => Err(self.error(span, "[seed] needs exactly one of `sql = [\"FILE\", ...]` or `command = \"...\"`")),
        }
    }

    fn extension(&self, table: Spanned<toml::Table>, what: &str) -> Result<ExtensionConfig> {
        let span = table.span();
        let mut settings = table.into_inner();
        let kind = match settings.remove("kind") {
            Some(toml::Value::String(kind)) => kind,
            _ => return Err(self.error(span, format!("[{what}] needs `kind = \"...\"`"))),
        };
        if what == "network" && kind == "local" && !settings.is_empty() {
            let key = settings.keys().next().cloned().unwrap_or_default();
            return Err(self.error(span, format!("unknown key {key:?} in [network] of kind \"local\", which takes no settings")));
        }
        Ok(ExtensionConfig { kind, settings })
    }
}

impl Error {
    fn to_line(&self) -> usize {
        match self {
            Error::Manifest { line, .. } => *line,
            _ => 0,
        }
    }
}

/// Returns the names on a dependency cycle, first name repeated at the end.
fn find_cycle(tasks: &[Task]) -> Option<Vec<String>> {
    let edges: HashMap<&str, &[String]> = tasks.iter().map(|t| (t.name.as_str(), t.depends_on.as_slice())).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for task in tasks {
        let mut path: Vec<&str> = Vec::new();
        if let Some(cycle) = visit(task.name.as_str(), &edges, &mut done, &mut path) {
            return Some(cycle);
        }
    }
    None
}

fn visit<'a>(
    node: &'a str,
    edges: &HashMap<&'a str, &'a [String]>,
    done: &mut BTreeSet<&'a str>,
    path: &mut Vec<&'a str>,
) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|n| *n == node) {
        let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
        cycle.push(node.to_owned());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node);
    for next in edges.get(node).copied().unwrap_or(&[]) {
        if let Some(cycle) = visit(next.as_str(), edges, done, path) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(node);
    None
}

/// Parses a memory size such as `512MiB`, `2GiB`, `1G` or `1048576` into bytes.
pub fn parse_memory(value: &str) -> Option<u64> {
    let value = value.trim();
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = number * multiplier as f64;
    (bytes >= 4.0 * (1 << 20) as f64 && bytes.is_finite()).then_some(bytes as u64)
}

#[cfg(test)]
mod tests;
