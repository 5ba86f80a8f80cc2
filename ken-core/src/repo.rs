//! A fresh clone of the project's repository inside the sandbox.
//!
//! [`prepare`] does every check and all the work on the host before any resource
//! exists, so a mistake in `[repository]` fails a launch before anything is created.
//! [`PreparedRepository::install`] then clones inside the sandbox: from a git bundle
//! of the committed history of a local repository, or from a URL with an optional
//! token.

use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::time::Instant;
use url::Url;

use crate::archive;
use crate::error::{Error, Result, Secret};
use crate::exec::ExecRequest;
use crate::manifest::{Manifest, RepositoryConfig, RepositorySource};
use crate::plan::{exec_combined, tail_lines};
use crate::sandbox::Sandbox;

/// Number of lines of git's output shown when a clone fails.
const TAIL_LINES: usize = 30;

/// File name of the bundle inside its temporary folder, on the host and in the
/// sandbox.
const BUNDLE_NAME: &str = "repository.bundle";

/// Removes `$KEN_WORKDIR` when it holds only empty folders. The sandbox's working
/// directory can lie inside the clone, and the engine creates it empty before the
/// clone exists, which would make `git clone` refuse the destination.
const CLEAR_EMPTY_WORKDIR: &str = r#"cd /
if [ -d "$KEN_WORKDIR" ] && [ -z "$(find "$KEN_WORKDIR" -mindepth 1 ! -type d -print -quit)" ]; then rm -rf -- "$KEN_WORKDIR"; fi
command -v git >/dev/null || { echo "git is not installed in the image; add it to the Dockerfile (for Debian: RUN apt-get update && apt-get install -y git)" >&2; exit 127; }
"#;

/// Clones the bundle in `$KEN_BUNDLE_DIR` into `$KEN_WORKDIR`, checking out
/// `$KEN_BRANCH` (or the bundle's detached `HEAD` when it is empty). It then removes
/// the `origin` remote, which points at the bundle, and the bundle's folder.
const CLONE_BUNDLE: &str = r#"trap 'rm -rf -- "$KEN_BUNDLE_DIR"' EXIT
set --
if [ -n "$KEN_BRANCH" ]; then set -- --branch "$KEN_BRANCH"; fi
git -c advice.detachedHead=false clone --quiet "$@" -- "$KEN_BUNDLE_DIR/repository.bundle" "$KEN_WORKDIR" &&
git -C "$KEN_WORKDIR" remote remove origin"#;

/// Clones `$KEN_REPOSITORY_URL` into `$KEN_WORKDIR` with the configured credential
/// helpers.
const CLONE_URL: &str = r#"set --
if [ -n "$KEN_BRANCH" ]; then set -- --branch "$KEN_BRANCH"; fi
exec git clone --quiet "$@" -- "$KEN_REPOSITORY_URL" "$KEN_WORKDIR""#;

/// Clones `$KEN_REPOSITORY_URL` with the token in `$KEN_GIT_TOKEN`.
///
/// The empty `credential.helper` clears the helpers configured in the image, so that
/// none of them (such as `store`) saves the token. The second one responds to git's
/// `get` request from the environment. Both are `git -c` options of this run only,
/// so neither the token nor the helper is written to `.git/config`, and the token
/// never appears in an argument vector.
const CLONE_URL_WITH_TOKEN: &str = r#"set --
if [ -n "$KEN_BRANCH" ]; then set -- --branch "$KEN_BRANCH"; fi
exec git -c credential.helper= \
  -c 'credential.helper=!f() { test "$1" = get || exit 0; echo "username=$KEN_GIT_USERNAME"; echo "password=$KEN_GIT_TOKEN"; }; f' \
  clone --quiet "$@" -- "$KEN_REPOSITORY_URL" "$KEN_WORKDIR""#;

/// A repository ready to be cloned into a sandbox: the output of [`prepare`].
///
/// Its `Debug` output never shows the token.
#[derive(Debug)]
pub struct PreparedRepository {
    source: PreparedSource,
    workdir: String,
    subdir: Option<String>,
}

#[derive(Debug)]
enum PreparedSource {
    /// The committed history of a local repository, as a bundle in a temporary
    /// folder that is removed when this value is dropped.
    Bundle {
        repository: PathBuf,
        /// The branch to check out, or `None` for a detached `HEAD`.
        branch: Option<String>,
        commit: String,
        folder: tempfile::TempDir,
    },
    /// A URL cloned inside the sandbox.
    Url {
        url: Url,
        branch: Option<String>,
        /// The token and the name of the host variable it came from.
        token: Option<(Secret, String)>,
    },
}

/// Checks `config` and does the host-side work of putting the repository into a
/// sandbox, before any resource exists.
///
/// For a local path it finds the repository's top level, resolves the branch (the
/// configured one, else the current branch, else the detached `HEAD`) and writes a
/// git bundle of that branch's committed history to a temporary file. Uncommitted
/// changes are not part of it. When `subdir` is not set, the project folder inside
/// the clone defaults to the manifest's folder relative to the repository's top
/// level. For a URL it reads the token from the host variable named by
/// `credential_env`.
///
/// NOTE: a bundle contains git objects only, so the clone has no submodules checked
/// out and no Git LFS contents.
///
/// This runs `git` on the host and blocks while the bundle is written; call it
/// from `tokio::task::spawn_blocking` for a large repository.
///
/// # Errors
/// [`Error::InvalidInput`] when the path is not a git repository, has no commits,
/// lacks the configured branch or the project folder in its committed history, or
/// when the token variable is not set. [`Error::Io`] when `git` cannot be run.
pub fn prepare(config: &RepositoryConfig, manifest: &Manifest) -> Result<PreparedRepository> {
    prepare_with_env(config, manifest, &|name| std::env::var(name).ok())
}

/// [`prepare`] with the host environment read through `lookup`, so tests need not
/// change the process's environment.
fn prepare_with_env(
    config: &RepositoryConfig,
    manifest: &Manifest,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PreparedRepository> {
    let (source, subdir) = match &config.source {
        RepositorySource::Path(path) => prepare_bundle(config, manifest, path)?,
        RepositorySource::Url(url) => (prepare_url(config, url, lookup)?, config.subdir.clone()),
    };
    let prepared = PreparedRepository {
        source,
        workdir: config.workdir.trim_end_matches('/').to_owned(),
        subdir,
    };
    tracing::info!(phase = "repository", step = "prepare", repository = %prepared.describe(), "repository prepared on the host");
    Ok(prepared)
}

fn prepare_bundle(
    config: &RepositoryConfig,
    manifest: &Manifest,
    path: &Path,
) -> Result<(PreparedSource, Option<String>)> {
    let toplevel = git(path, &["rev-parse", "--show-toplevel"]).map_err(|output| {
        Error::invalid(
            "repository.path",
            path.display().to_string(),
            format!(
                "it is not a git repository ({}); run `git init` and commit, or point repository.path at a repository",
                output.trim()
            ),
        )
    })?;
    let toplevel = PathBuf::from(toplevel.trim());

    if git(
        &toplevel,
        &["rev-parse", "--verify", "--quiet", "HEAD^{commit}"],
    )
    .is_err()
    {
        return Err(Error::invalid(
            "repository.path",
            toplevel.display().to_string(),
            "the repository has no commits; commit your work first: Ken clones committed history, not the working tree",
        ));
    }

    let branch = match &config.branch {
        Some(branch) => Some(branch.clone()),
        None => git(&toplevel, &["symbolic-ref", "--quiet", "--short", "HEAD"])
            .ok()
            .map(|b| b.trim().to_owned()),
    };
    let reference = match &branch {
        Some(branch) => format!("refs/heads/{branch}"),
        None => "HEAD".to_owned(),
    };
    let commit = git(&toplevel, &["rev-parse", "--verify", "--quiet", &format!("{reference}^{{commit}}")])
        .map_err(|_| {
            Error::invalid(
                "repository.branch",
                branch.clone().unwrap_or_default(),
                format!(
                    "no such branch in {}; create it, or set repository.branch to one of `git branch --list`",
                    toplevel.display()
                ),
            )
        })?
        .trim()
        .to_owned();

    let subdir = match &config.subdir {
        Some(subdir) => normalize_subdir(subdir),
        None => default_subdir(&manifest.dir, &toplevel),
    };
    if let Some(subdir) = &subdir {
        if git(
            &toplevel,
            &["cat-file", "-e", &format!("{commit}:{subdir}")],
        )
        .is_err()
        {
            let revision = branch
                .as_deref()
                .map_or("the detached HEAD".to_owned(), |b| format!("branch {b}"));
            return Err(Error::invalid(
                "repository.subdir",
                subdir.clone(),
                format!(
                    "the folder is not in the committed history of {revision} in {}; commit it, or set repository.subdir",
                    toplevel.display()
                ),
            ));
        }
    }

    let folder = tempfile::Builder::new()
        .prefix("ken-bundle-")
        .tempdir()
        .map_err(|e| Error::io("failed to create a temporary folder for the git bundle", e))?;
    let bundle = folder.path().join(BUNDLE_NAME);
    let bundle_arg = bundle.display().to_string();
    git(
        &toplevel,
        &["bundle", "create", "--quiet", &bundle_arg, &reference],
    )
    .map_err(|output| {
        Error::invalid(
            "repository.path",
            toplevel.display().to_string(),
            format!(
                "`git bundle create` of {reference} failed: {}",
                output.trim()
            ),
        )
    })?;

    let source = PreparedSource::Bundle {
        repository: toplevel,
        branch,
        commit,
        folder,
    };
    Ok((source, subdir))
}

fn prepare_url(
    config: &RepositoryConfig,
    url: &Url,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<PreparedSource> {
    if url.password().is_some() {
        return Err(Error::invalid(
            "repository.url",
            redacted_url(url),
            "it contains a password; remove it and set credential_env to the name of a host variable holding the token",
        ));
    }
    let token = match &config.credential_env {
        Some(name) => {
            if !matches!(url.scheme(), "https" | "http") {
                return Err(Error::invalid(
                    "repository.credential_env",
                    name.clone(),
                    format!("a token works only with http:// and https:// URLs, and {url} is not one; remove credential_env"),
                ));
            }
            let value = lookup(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                Error::invalid(
                    "repository.credential_env",
                    name.clone(),
                    format!("the host environment variable {name} is not set; export it with a token that can read {url}"),
                )
            })?;
            Some((Secret::new(value), name.clone()))
        }
        None => None,
    };
    Ok(PreparedSource::Url {
        url: url.clone(),
        branch: config.branch.clone(),
        token,
    })
}

impl PreparedRepository {
    /// Clones the repository into its workdir inside `sandbox`.
    ///
    /// A bundle is uploaded to a temporary folder, cloned, and removed together with
    /// the clone's `origin` remote, which would point at it. A URL is cloned with
    /// `origin` kept. A token reaches git only through the environment of the clone
    /// (see the module's scripts), never through its arguments or `.git/config`.
    /// The clone runs as the image's default user. Git's terminal prompt is off,
    /// so a clone that needs credentials fails at once.
    ///
    /// # Errors
    /// [`Error::StepFailed`] with the last lines of git's output, token redacted.
    pub async fn install(&self, sandbox: &Sandbox) -> Result<()> {
        let started = Instant::now();
        let description = self.describe();
        tracing::info!(sandbox.name = %sandbox.name(), phase = "repository", step = "clone", repository = %description, "clone started");
        let result = match &self.source {
            PreparedSource::Bundle { branch, folder, .. } => {
                self.install_bundle(sandbox, branch.as_deref(), &folder.path().join(BUNDLE_NAME))
                    .await
            }
            PreparedSource::Url { url, branch, token } => {
                self.install_url(
                    sandbox,
                    url,
                    branch.as_deref(),
                    token.as_ref().map(|(t, _)| t),
                )
                .await
            }
        };
        match &result {
            Ok(()) => {
                let duration_ms = started.elapsed().as_millis() as u64;
                tracing::info!(sandbox.name = %sandbox.name(), phase = "repository", step = "clone", duration_ms, "clone finished");
            }
            Err(Error::StepFailed { status, .. }) => {
                tracing::warn!(sandbox.name = %sandbox.name(), phase = "repository", step = "clone", %status, "clone failed");
            }
            Err(error) => {
                tracing::warn!(sandbox.name = %sandbox.name(), phase = "repository", step = "clone", %error, "clone failed");
            }
        }
        result
    }

    async fn install_bundle(
        &self,
        sandbox: &Sandbox,
        branch: Option<&str>,
        bundle: &Path,
    ) -> Result<()> {
        let contents = tokio::fs::read(bundle).await.map_err(|e| {
            Error::io(
                format!("failed to read the git bundle {}", bundle.display()),
                e,
            )
        })?;
        let upload = archive::single_file(BUNDLE_NAME, &contents, 0o644)?;

        let mktemp = exec_combined(sandbox, ExecRequest::new(["mktemp", "-d"])).await?;
        if !mktemp.status.success() {
            return Err(self.clone_failed(&mktemp.status.to_string(), &mktemp.text, None));
        }
        let folder = mktemp.text.trim().to_owned();
        sandbox
            .provider()
            .upload(sandbox.name(), &folder, upload)
            .await?;

        let request = ExecRequest::shell(format!("{CLEAR_EMPTY_WORKDIR}{CLONE_BUNDLE}"))
            .env("KEN_BUNDLE_DIR", folder)
            .env("KEN_BRANCH", branch.unwrap_or_default())
            .env("KEN_WORKDIR", &self.workdir)
            .env("GIT_TERMINAL_PROMPT", "0");
        let output = exec_combined(sandbox, request).await?;
        if !output.status.success() {
            return Err(self.clone_failed(&output.status.to_string(), &output.text, None));
        }
        Ok(())
    }

    async fn install_url(
        &self,
        sandbox: &Sandbox,
        url: &Url,
        branch: Option<&str>,
        token: Option<&Secret>,
    ) -> Result<()> {
        let script = if token.is_some() {
            CLONE_URL_WITH_TOKEN
        } else {
            CLONE_URL
        };
        let mut request = ExecRequest::shell(format!("{CLEAR_EMPTY_WORKDIR}{script}"))
            .env("KEN_REPOSITORY_URL", url.as_str())
            .env("KEN_BRANCH", branch.unwrap_or_default())
            .env("KEN_WORKDIR", &self.workdir)
            .env("GIT_TERMINAL_PROMPT", "0");
        if let Some(token) = token {
            let username = if url.username().is_empty() {
                "x-access-token"
            } else {
                url.username()
            };
            request = request
                .env("KEN_GIT_USERNAME", username)
                .env("KEN_GIT_TOKEN", token.expose());
        }
        let output = exec_combined(sandbox, request).await?;
        if !output.status.success() {
            return Err(self.clone_failed(&output.status.to_string(), &output.text, token));
        }
        Ok(())
    }

    fn clone_failed(&self, status: &str, output: &str, token: Option<&Secret>) -> Error {
        let output = match token {
            Some(token) if !token.expose().is_empty() => {
                output.replace(token.expose(), "[redacted]")
            }
            _ => output.to_owned(),
        };
        Error::StepFailed {
            step: format!("cloning {} into {}", self.describe(), self.workdir),
            status: status.to_owned(),
            log_tail: tail_lines(&output, TAIL_LINES),
        }
    }

    /// Returns a one-line description for progress output, for example
    /// `branch main of /home/me/app (commit 1a2b3c4d5e6f)`. It never contains the
    /// token.
    pub fn describe(&self) -> String {
        match &self.source {
            PreparedSource::Bundle {
                repository,
                branch,
                commit,
                ..
            } => {
                let short = &commit[..12.min(commit.len())];
                match branch {
                    Some(branch) => format!(
                        "branch {branch} of {} (commit {short})",
                        repository.display()
                    ),
                    None => format!("detached HEAD of {} (commit {short})", repository.display()),
                }
            }
            PreparedSource::Url { url, branch, token } => {
                let branch = branch
                    .as_deref()
                    .map_or("default branch".to_owned(), |b| format!("branch {b}"));
                match token {
                    Some((_, variable)) => {
                        format!("{branch} of {} (token from ${variable})", redacted_url(url))
                    }
                    None => format!("{branch} of {}", redacted_url(url)),
                }
            }
        }
    }

    /// Returns the clone's destination inside the sandbox.
    pub fn workdir(&self) -> &str {
        &self.workdir
    }

    /// Returns the project folder relative to the clone, or `None` for the clone's
    /// top level. For a local path without a configured `subdir` this is the
    /// manifest's folder relative to the repository's top level.
    pub fn subdir(&self) -> Option<&str> {
        self.subdir.as_deref()
    }

    /// Writes the resolved [`subdir`](Self::subdir) into `manifest.repository`, so
    /// that [`Manifest::project_dir`] (where steps, services and seeds run) points
    /// at the project folder inside the clone.
    pub fn apply_to(&self, manifest: &mut Manifest) {
        if let Some(repository) = &mut manifest.repository {
            repository.subdir = self.subdir.clone();
        }
    }
}

/// Runs `git -C dir ARGS` on the host and returns its stdout, or its stderr as the
/// error. A git that cannot be started is reported in the error text.
fn git(dir: &Path, args: &[&str]) -> std::result::Result<String, String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| format!("failed to run git on the host: {e}; install git"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Returns the folder of the manifest relative to the repository's top level, or
/// `None` when the manifest is at the top level or outside the repository. Both
/// paths are canonicalized first, because git reports the top level with symlinks
/// resolved.
fn default_subdir(manifest_dir: &Path, toplevel: &Path) -> Option<String> {
    let manifest_dir = manifest_dir.canonicalize().ok()?;
    let toplevel = toplevel.canonicalize().ok()?;
    let relative = manifest_dir.strip_prefix(&toplevel).ok()?;
    let relative = relative.to_str()?;
    normalize_subdir(relative)
}

/// Trims slashes and maps `""` and `"."` to `None`.
fn normalize_subdir(subdir: &str) -> Option<String> {
    let trimmed = subdir.trim_matches('/');
    (!trimmed.is_empty() && trimmed != ".").then(|| trimmed.to_owned())
}

/// Returns `url` as text with any password replaced.
fn redacted_url(url: &Url) -> String {
    let mut redacted = url.clone();
    if redacted.password().is_some() {
        let _ = redacted.set_password(Some("[redacted]"));
    }
    redacted.to_string()
}

#[cfg(test)]
mod tests;
