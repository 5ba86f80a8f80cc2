//! Building images from a Dockerfile and saving sandboxes as images.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bollard::models::ContainerConfig;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CommitContainerOptionsBuilder, RemoveImageOptions, TagImageOptionsBuilder,
};
use futures::StreamExt;
use ken_core::image::{pack_context, BuildContext, DOCKERFILE_NAME};
use ken_core::labels::{CACHE, MANAGED_BY, MANAGED_BY_VALUE};
use ken_core::{Error, EventSink, ImageRef, ImageSpec, Phase, PhaseLog, Result, SandboxName};

use crate::error;
use crate::{DockerProvider, IMAGE_REPOSITORY};

/// Number of hex digits of the content hash used in image tags (64 bits).
const TAG_HASH_DIGITS: usize = 16;


/// Label naming the sandbox a snapshot image was taken from.
pub(crate) const SNAPSHOT_OF: &str = "ken.snapshot-of";

impl DockerProvider {
    pub(crate) async fn prepare_image_impl(&self, spec: &ImageSpec, events: &EventSink) -> Result<ImageRef> {
        let packing = spec.clone();
        let context = tokio::task::spawn_blocking(move || pack_context(&packing))
            .await
            .map_err(|e| Error::backend_with(error::SERVICE, "the task packing the build context failed", e))??;
        let tag = format!("{IMAGE_REPOSITORY}:{}", &context.content_hash[..TAG_HASH_DIGITS]);

        // Two launches of the same definition in this process build it once.
        let _guard = self.state.image_locks.lock(&tag).await;
        if self.image_exists(&tag).await? {
            tracing::info!(provider = "docker", phase = "image", image = %tag, "image cache hit; nothing to build");
            return Ok(ImageRef {
                reference: tag,
                cached: true,
            });
        }

        tracing::info!(
            provider = "docker",
            phase = "image",
            image = %tag,
            context = %spec.context.display(),
            context_bytes = context.archive.len(),
            "building image"
        );
        let started = Instant::now();
        // The build gets a tag of its own, so that two processes building the same
        // definition at once do not leave an untagged duplicate behind: the first
        // to finish moves its image to `tag`, and the other removes its own.
        let build_tag = format!("{tag}-build-{}", build_suffix());
        if let Err(e) = self.build(spec, context, &build_tag, events).await {
            tracing::warn!(provider = "docker", phase = "image", image = %tag, error = %e, "image build failed");
            self.remove_tag(&build_tag).await;
            return Err(e);
        }
        if !self.image_exists(&tag).await? {
            let options = TagImageOptionsBuilder::default()
                .repo(IMAGE_REPOSITORY)
                .tag(&tag[IMAGE_REPOSITORY.len() + 1..])
                .build();
            if let Err(e) = self.docker.tag_image(&build_tag, Some(options)).await {
                self.remove_tag(&build_tag).await;
                return Err(error::backend(format!("failed to tag the built image as {tag}"), e));
            }
        }
        self.remove_tag(&build_tag).await;
        tracing::info!(provider = "docker", phase = "image", image = %tag, elapsed = ?started.elapsed(), "image built");
        Ok(ImageRef {
            reference: tag,
            cached: false,
        })
    }

    /// Removes the tag `reference`, and the image when no other tag is left on
    /// it. Failures are logged, because the image stays findable by its labels.
    async fn remove_tag(&self, reference: &str) {
        match self.docker.remove_image(reference, None::<RemoveImageOptions>, None).await {
            Ok(_) => {}
            Err(e) if error::is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(provider = "docker", phase = "image", image = %reference, error = %e, "failed to remove a build tag");
            }
        }
    }

    async fn image_exists(&self, reference: &str) -> Result<bool> {
        match self.docker.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(e) if error::is_not_found(&e) => Ok(false),
            Err(e) => Err(error::backend(format!("failed to inspect the image {reference}"), e)),
        }
    }

    /// Sends the build to the engine and streams its output to `events`.
    async fn build(&self, spec: &ImageSpec, context: BuildContext, tag: &str, events: &EventSink) -> Result<()> {
        let mut labels: HashMap<String, String> = spec.labels.to_map().into_iter().collect();
        labels.insert(MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned());
        labels.insert(CACHE.to_owned(), "true".to_owned());
        // `rm` and `forcerm` remove the intermediate containers, also after a
        // failed step.
        // NOTE: the images of the steps that succeeded stay as the engine's build
        // cache. They carry no Ken labels, so `resources` does not list them.
        let options = BuildImageOptionsBuilder::default()
            .dockerfile(DOCKERFILE_NAME)
            .t(tag)
            .rm(true)
            .forcerm(true)
            .labels(&labels)
            .build();

        let mut log = PhaseLog::new(events, Phase::Image);
        let mut stream = self
            .docker
            .build_image(options, None, Some(bollard::body_full(context.archive)));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream.as_deref() {
                        log.push(text);
                    }
                    if let Some(status) = info.status.as_deref() {
                        log.push(status);
                        log.push("\n");
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    log.finish();
                    return Err(Error::StepFailed {
                        step: format!("image build of {tag} from {}", spec.context.display()),
                        status: error.trim().to_owned(),
                        log_tail: log.tail(),
                    });
                }
                Err(e) => {
                    log.finish();
                    let context = format!(
                        "failed to build image {tag} from {}; last lines of the build log:\n{}",
                        spec.context.display(),
                        log.tail()
                    );
                    return Err(error::backend(context, e));
                }
            }
        }
        log.finish();
        Ok(())
    }

    pub(crate) async fn snapshot_impl(&self, sandbox: &SandboxName, reference: &str) -> Result<ImageRef> {
        let (repository, tag) = split_reference(reference)?;
        let container = Self::container_name(sandbox);
        tracing::info!(provider = "docker", sandbox.name = %sandbox, image = %reference, "saving a snapshot of the sandbox");

        // The engine merges the container's labels (the sandbox's) into these.
        let labels = HashMap::from([
            (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
            (CACHE.to_owned(), "true".to_owned()),
            (SNAPSHOT_OF.to_owned(), sandbox.to_string()),
        ]);
        let config = ContainerConfig {
            labels: Some(labels),
            ..Default::default()
        };
        let mut options = CommitContainerOptionsBuilder::default()
            .container(&container)
            .repo(repository)
            .pause(true);
        if let Some(tag) = tag {
            options = options.tag(tag);
        }
        self.docker
            .commit_container(options.build(), config)
            .await
            .map_err(|e| {
                let context = format!("failed to save sandbox \"{sandbox}\" as image {reference:?}");
                error::not_found_or_backend("sandbox", sandbox.as_str(), context, e)
            })?;
        Ok(ImageRef {
            reference: reference.to_owned(),
            cached: false,
        })
    }
}

/// Returns a suffix that makes a build tag unique among concurrent builds.
fn build_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{:x}-{nanos:x}-{count}", std::process::id())
}

/// Splits `name:tag` into its repository and tag. A `:` before the last `/` is a
/// registry port, not a tag.
fn split_reference(reference: &str) -> Result<(&str, Option<&str>)> {
    let invalid = |reason: &str| Error::invalid("image reference", reference, reason);
    if reference.is_empty() || reference.contains(char::is_whitespace) {
        return Err(invalid("use a name such as `ken-snapshot:demo`"));
    }
    if reference.contains('@') {
        return Err(invalid("a digest cannot be the target of a snapshot; use `name:tag`"));
    }
    let last_slash = reference.rfind('/').map_or(0, |index| index + 1);
    match reference[last_slash..].rfind(':') {
        Some(colon) => {
            let colon = last_slash + colon;
            let (repository, tag) = (&reference[..colon], &reference[colon + 1..]);
            if repository.is_empty() || tag.is_empty() {
                return Err(invalid("use a name such as `ken-snapshot:demo`"));
            }
            Ok((repository, Some(tag)))
        }
        None => Ok((reference, None)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ken_core::LaunchEvent;

    use super::*;

    #[test]
    fn split_reference_cases() {
        assert_eq!(split_reference("snap:demo").unwrap(), ("snap", Some("demo")));
        assert_eq!(split_reference("snap").unwrap(), ("snap", None));
        assert_eq!(
            split_reference("localhost:5000/team/snap:v1").unwrap(),
            ("localhost:5000/team/snap", Some("v1"))
        );
        assert_eq!(split_reference("localhost:5000/snap").unwrap(), ("localhost:5000/snap", None));
        assert!(split_reference("").is_err());
        assert!(split_reference("snap:").is_err());
        assert!(split_reference("snap@sha256:abc").is_err());
    }

    #[test]
    fn build_log_splits_lines_and_keeps_tail() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let lines = lines.clone();
            EventSink::new(move |event| {
                if let LaunchEvent::Output { line, .. } = event {
                    lines.lock().unwrap().push(line);
                }
            })
        };
        let mut log = PhaseLog::new(&sink, Phase::Image);
        log.push("Step 1/2 : FROM x\n ---> ab");
        log.push("c\r\nStep 2/2");
        for i in 0..PhaseLog::TAIL_LINES {
            log.push(&format!("\nline {i}"));
        }
        log.finish();

        let lines = lines.lock().unwrap();
        assert_eq!(lines[0], "Step 1/2 : FROM x");
        assert_eq!(lines[1], " ---> abc");
        assert_eq!(lines[2], "Step 2/2");
        assert_eq!(lines.last().unwrap(), &format!("line {}", PhaseLog::TAIL_LINES - 1));
        let tail = log.tail();
        assert_eq!(tail.lines().count(), PhaseLog::TAIL_LINES);
        assert!(!tail.contains("Step 2/2"));
    }
}
