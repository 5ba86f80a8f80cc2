//! Images: built with a real `docker build` of the client's Dockerfile lines,
//! exported once into a root file system, and streamed as build logs.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

use crate::inspect::ImageRecord;
use crate::runtime::{export_image, run};
use crate::state::State;
use ken_provider_modal::proto::modal_client::{generic_result::GenericStatus, GenericResult, Image};

/// Label on every Docker image and container the server makes.
pub(crate) const DOCKER_LABEL: &str = "ken-testserver-modal=1";

/// A built image: its layers (topmost first) and its configuration.
#[derive(Debug, Clone)]
pub(crate) struct BuiltImage {
    pub(crate) layers: Vec<PathBuf>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) workdir: String,
    /// The Docker image, for a built image; `None` for a snapshot.
    pub(crate) docker_ref: Option<String>,
}

/// Logs, result and output of an image.
#[derive(Debug, Default)]
pub(crate) struct ImageProgress {
    /// Log entries; entry `i` has the entry id `format!("{}-0", i + 1)`.
    pub(crate) logs: Vec<Bytes>,
    pub(crate) result: Option<GenericResult>,
    pub(crate) built: Option<BuiltImage>,
    pub(crate) builds: usize,
}

/// One image.
#[derive(Debug)]
pub(crate) struct ImageEntry {
    pub(crate) id: String,
    pub(crate) definition: Image,
    pub(crate) snapshot_of: Option<String>,
    progress: Mutex<ImageProgress>,
    /// Bumped on every change of `progress`, so that streams can wait for one.
    pub(crate) changed: watch::Sender<u64>,
}

impl ImageEntry {
    pub(crate) fn new(id: String, definition: Image, snapshot_of: Option<String>) -> Self {
        ImageEntry {
            id,
            definition,
            snapshot_of,
            progress: Mutex::new(ImageProgress::default()),
            changed: watch::channel(0).0,
        }
    }

    pub(crate) fn progress(&self) -> MutexGuard<'_, ImageProgress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, line: impl Into<Bytes>) {
        self.progress().logs.push(line.into());
        self.changed.send_modify(|version| *version += 1);
    }

    fn finish(&self, result: GenericResult, built: Option<BuiltImage>) {
        {
            let mut progress = self.progress();
            progress.result = Some(result);
            progress.built = built;
        }
        self.changed.send_modify(|version| *version += 1);
    }

    /// Marks the image as finished with `built`, for snapshots.
    pub(crate) fn finish_built(&self, built: BuiltImage) {
        self.finish(success(), Some(built));
    }

    pub(crate) fn record(&self) -> ImageRecord {
        let progress = self.progress();
        ImageRecord {
            id: self.id.clone(),
            dockerfile_commands: self.definition.dockerfile_commands.clone(),
            base_image_ids: self
                .definition
                .base_images
                .iter()
                .map(|base| base.image_id.clone())
                .collect(),
            result: progress.result.clone(),
            builds: progress.builds,
            snapshot_of: self.snapshot_of.clone(),
        }
    }

    /// Starts a build unless one runs; a finished image is built again only when
    /// `force` is set.
    pub(crate) fn start_build(self: &Arc<Self>, state: &Arc<State>, force: bool) {
        {
            let mut progress = self.progress();
            let running = progress.builds > 0 && progress.result.is_none();
            if running || (progress.result.is_some() && !force) {
                return;
            }
            progress.builds += 1;
            progress.result = None;
            progress.logs.clear();
        }
        self.changed.send_modify(|version| *version += 1);
        let image = self.clone();
        let state = state.clone();
        tokio::spawn(async move {
            tracing::info!(image.id = %image.id, "image build started");
            let outcome = tokio::select! {
                outcome = build(&state, &image) => outcome,
                () = state.shutdown.cancelled() => Err("the server shut down during the build".to_owned()),
            };
            match outcome {
                Ok(built) => {
                    tracing::info!(image.id = %image.id, "image build finished");
                    image.finish(success(), Some(built));
                }
                Err(message) => {
                    tracing::info!(image.id = %image.id, %message, "image build failed");
                    image.log(format!("{message}\n"));
                    image.finish(
                        GenericResult {
                            status: GenericStatus::Failure as i32,
                            exception: message,
                            exitcode: 1,
                        },
                        None,
                    );
                }
            }
        });
    }
}

pub(crate) fn success() -> GenericResult {
    GenericResult {
        status: GenericStatus::Success as i32,
        exception: String::new(),
        exitcode: 0,
    }
}

/// Runs `docker build` for the image's Dockerfile lines, streaming its output as
/// log entries, then exports the result.
async fn build(state: &Arc<State>, image: &Arc<ImageEntry>) -> Result<BuiltImage, String> {
    let mut dockerfile = dockerfile_text(state, image)?;
    let build_dir = state.host.work_dir.join("builds").join(&image.id);
    let _ = std::fs::remove_dir_all(&build_dir);
    std::fs::create_dir_all(&build_dir)
        .map_err(|error| format!("creating {}: {error}", build_dir.display()))?;
    std::fs::write(build_dir.join("Dockerfile"), &dockerfile)
        .map_err(|error| format!("writing the Dockerfile: {error}"))?;
    for file in &image.definition.context_files {
        let relative = file.filename.trim_start_matches('/');
        if relative.split('/').any(|part| part == "..") {
            return Err(format!("context file {:?} leaves the build context", file.filename));
        }
        let path = build_dir.join("context").join(relative);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&path, &file.data)
            .map_err(|error| format!("writing context file {:?}: {error}", file.filename))?;
    }
    let context_dir = build_dir.join("context");
    std::fs::create_dir_all(&context_dir)
        .map_err(|error| format!("creating {}: {error}", context_dir.display()))?;
    // Modal's builder fetches packages straight from the internet. This stand-in
    // builds on the host, which may sit behind a TLS-inspecting proxy, so it trusts
    // the host's CA bundle the way Ken's Docker provider does.
    if let Some(bundle) = ken_core::image::host_ca_bundle() {
        let bytes = std::fs::read(&bundle)
            .map_err(|error| format!("reading the host CA bundle {}: {error}", bundle.display()))?;
        std::fs::write(context_dir.join(ken_core::image::HOST_CA_CONTEXT_NAME), bytes)
            .map_err(|error| format!("writing the host CA bundle into the build context: {error}"))?;
        dockerfile = ken_core::image::inject_host_ca(&dockerfile);
        std::fs::write(build_dir.join("Dockerfile"), &dockerfile)
            .map_err(|error| format!("writing the Dockerfile: {error}"))?;
    }

    let tag = format!(
        "ken-testserver-modal:{}",
        crate::ids::content_id("im", dockerfile.as_bytes())
            .trim_start_matches("im-")
            .to_lowercase()
    );
    let mut child = Command::new("docker")
        // `--force-rm` removes the intermediate container of a failed step too.
        .args(["build", "--force-rm", "--label", DOCKER_LABEL, "-t", &tag, "-f"])
        .arg(build_dir.join("Dockerfile"))
        .arg(&context_dir)
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("failed to run docker build: {error}"))?;
    let tail = Arc::new(Mutex::new(Vec::<String>::new()));
    let out = forward_lines(child.stdout.take(), image.clone(), tail.clone());
    let err = forward_lines(child.stderr.take(), image.clone(), tail.clone());
    let status = child
        .wait()
        .await
        .map_err(|error| format!("waiting for docker build failed: {error}"))?;
    let _ = tokio::join!(out, err);
    let _ = std::fs::remove_dir_all(&build_dir);
    if !status.success() {
        let tail = tail.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
        return Err(format!("Image build for {} failed: {tail}", image.id));
    }

    let (docker_id, env, workdir) = inspect(&tag).await?;
    image.log("Exporting the image's file system\n");
    let rootfs = state.host.rootfs_dir.join(format!(
        "{}-{}",
        crate::runtime::EXPORT_VERSION,
        docker_id.trim_start_matches("sha256:")
    ));
    export_image(&tag, &rootfs).await?;
    Ok(BuiltImage {
        layers: vec![rootfs],
        env,
        workdir,
        docker_ref: Some(tag),
    })
}

/// Returns the Dockerfile for the image, with `FROM base` replaced by the Docker
/// image of the base it names.
fn dockerfile_text(state: &State, image: &ImageEntry) -> Result<String, String> {
    let commands = &image.definition.dockerfile_commands;
    let Some(first) = commands.first() else {
        return Err("the image has no Dockerfile commands; the first must be FROM".to_owned());
    };
    let Some(from) = first.trim().strip_prefix("FROM ") else {
        return Err(format!("the first Dockerfile command must be FROM, not {first:?}"));
    };
    let from = from.trim();
    let mut lines = Vec::with_capacity(commands.len());
    match image
        .definition
        .base_images
        .iter()
        .find(|base| base.docker_tag == from)
    {
        Some(base) => {
            let base_entry = state
                .lock()
                .images
                .get(&base.image_id)
                .cloned()
                .ok_or_else(|| format!("base image {} not found", base.image_id))?;
            let progress = base_entry.progress();
            let docker_ref = progress
                .built
                .as_ref()
                .and_then(|built| built.docker_ref.clone())
                .ok_or_else(|| {
                    format!(
                        "base image {} is not built, or is a file system snapshot, which the test server cannot build on",
                        base.image_id
                    )
                })?;
            lines.push(format!("FROM {docker_ref}"));
        }
        None => lines.push(first.clone()),
    }
    lines.extend(commands.iter().skip(1).cloned());
    Ok(lines.join("\n") + "\n")
}

/// Returns the Docker image id, environment and working directory of `tag`.
async fn inspect(tag: &str) -> Result<(String, Vec<(String, String)>, String), String> {
    let tag = tag.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        run("docker", &["image", "inspect", "--format", "{{json .}}", &tag])
    })
    .await
    .map_err(|error| format!("inspecting the built image failed: {error}"))??;
    let value: serde_json::Value = serde_json::from_str(output.trim())
        .map_err(|error| format!("docker image inspect returned invalid JSON: {error}"))?;
    let id = value["Id"].as_str().unwrap_or_default().to_owned();
    let env = value["Config"]["Env"]
        .as_array()
        .map(|vars| {
            vars.iter()
                .filter_map(|var| var.as_str()?.split_once('='))
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let workdir = value["Config"]["WorkingDir"]
        .as_str()
        .filter(|dir| !dir.is_empty())
        .unwrap_or("/")
        .to_owned();
    Ok((id, env, workdir))
}

/// Appends every line of `pipe` to the image's log, keeping the last 20 for the
/// failure message.
fn forward_lines<R>(
    pipe: Option<R>,
    image: Arc<ImageEntry>,
    tail: Arc<Mutex<Vec<String>>>,
) -> tokio::task::JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let Some(pipe) = pipe else { return };
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            {
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                tail.push(line.clone());
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
            image.log(format!("{line}\n"));
        }
    })
}
