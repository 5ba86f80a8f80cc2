//! Building images on Modal and waiting for the build, with its log streamed to
//! the launch's progress.

use ken_core::{Error, EventSink, ImageRef, ImageSpec, Phase, PhaseLog, Result};

use crate::dockerfile::modal_commands;
use crate::error::is_retryable;
use crate::proto::modal_client::{
    generic_result::GenericStatus, GenericResult, Image, ImageGetOrCreateRequest, ImageGetOrCreateResponse,
    ImageJoinStreamingRequest, ImageJoinStreamingResponse,
};
use crate::proto::paths;
use crate::retry::BUILD_LOGS;
use crate::sandbox::describe_result;
use crate::ModalProvider;

/// Seconds the server keeps one build log stream open.
const JOIN_TIMEOUT_SECS: f32 = 55.0;
impl ModalProvider {
    pub(crate) async fn prepare_image_impl(&self, spec: &ImageSpec, events: &EventSink) -> Result<ImageRef> {
        let commands = modal_commands(&spec.dockerfile)?;
        let app_id = self.app_id().await?;
        tracing::info!(provider = "modal", phase = "image", base = %commands[0], lines = commands.len(), "preparing image on Modal");

        let response: ImageGetOrCreateResponse = self
            .control
            .unary(
                paths::IMAGE_GET_OR_CREATE,
                ImageGetOrCreateRequest {
                    image: Some(Image {
                        dockerfile_commands: commands,
                        ..Image::default()
                    }),
                    app_id,
                    force_build: false,
                    builder_version: self.config().builder_version.clone(),
                },
            )
            .await
            .map_err(|e| e.into_ken("asking Modal for the image"))?;

        let image_id = response.image_id;
        if image_id.is_empty() {
            return Err(Error::backend(crate::error::SERVICE, "ImageGetOrCreate returned no image id"));
        }

        if let Some(result) = response.result.filter(|r| r.status != GenericStatus::Unspecified as i32) {
            check_build(&image_id, &result, "")?;
            tracing::info!(provider = "modal", phase = "image", image = %image_id, "image cache hit; nothing to build");
            return Ok(ImageRef {
                reference: image_id,
                cached: true,
            });
        }

        tracing::info!(provider = "modal", phase = "image", image = %image_id, "Modal is building the image");
        let mut log = PhaseLog::new(events, Phase::Image);
        let result = self.join_build(&image_id, &mut log).await;
        log.finish();
        let result = result?;
        check_build(&image_id, &result, &log.tail())?;
        tracing::info!(provider = "modal", phase = "image", image = %image_id, "image built");

        Ok(ImageRef {
            reference: image_id,
            cached: false,
        })
    }

    /// Streams the build log until the build has a result, reopening the stream
    /// after the last entry it delivered when it ends or fails.
    async fn join_build(&self, image_id: &str, log: &mut PhaseLog<'_>) -> Result<GenericResult> {
        let mut last_entry_id = String::new();
        let mut failures: u32 = 0;
        loop {
            let request = ImageJoinStreamingRequest {
                image_id: image_id.to_owned(),
                timeout: JOIN_TIMEOUT_SECS,
                last_entry_id: last_entry_id.clone(),
                include_logs_for_finished: true,
            };
            let mut received = false;
            let outcome = match self
                .control
                .server_stream::<_, ImageJoinStreamingResponse>(paths::IMAGE_JOIN_STREAMING, request)
                .await
            {
                Ok(mut stream) => loop {
                    match stream.message().await {
                        Ok(Some(item)) => {
                            received = true;
                            failures = 0;
                            if !item.entry_id.is_empty() {
                                last_entry_id = item.entry_id.clone();
                            }
                            for entry in &item.task_logs {
                                log.push(&String::from_utf8_lossy(&entry.data));
                            }
                            if let Some(result) = item.result.filter(|r| r.status != GenericStatus::Unspecified as i32) {
                                return Ok(result);
                            }
                        }
                        Ok(None) => break Ok(()),
                        Err(status) => break Err(status),
                    }
                },
                Err(e) => Err(e.status),
            };
            match outcome {
                // A clean end without a result: the server's time for one stream
                // passed. An end that delivered nothing counts as a failure, so a
                // server that keeps doing that is not called in a tight loop.
                Ok(()) if received => {
                    tracing::debug!(provider = "modal", phase = "image", image = %image_id, last_entry_id = %last_entry_id, "build log stream ended; reopening");
                    continue;
                }
                Ok(()) => {}
                Err(status) if is_retryable(status.code()) => {
                    tracing::warn!(provider = "modal", phase = "image", image = %image_id, code = ?status.code(), message = status.message(), "build log stream failed; reopening");
                }
                Err(status) => {
                    return Err(crate::error::RpcError::new(paths::IMAGE_JOIN_STREAMING, status)
                        .into_ken(format!("following the build of image {image_id}")))
                }
            }
            if failures >= BUILD_LOGS.retries {
                return Err(Error::Backend {
                    service: crate::error::SERVICE.to_owned(),
                    message: format!(
                        "the build log of image {image_id} kept failing {} times in a row without progress",
                        failures + 1
                    ),
                    source: None,
                    retryable: true,
                });
            }
            tokio::time::sleep(BUILD_LOGS.delay(failures)).await;
            failures += 1;
        }
    }
}

/// Fails unless the build `result` is a success.
fn check_build(image_id: &str, result: &GenericResult, log_tail: &str) -> Result<()> {
    if result.status == GenericStatus::Success as i32 {
        return Ok(());
    }
    tracing::warn!(provider = "modal", phase = "image", image = %image_id, result = %describe_result(result), "image build failed");
    Err(Error::StepFailed {
        step: format!("image build of {image_id} on Modal"),
        status: describe_result(result),
        log_tail: log_tail.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use ken_core::LaunchEvent;

    use super::*;

    #[test]
    fn build_log_lines_and_tail() {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let lines = lines.clone();
            EventSink::new(move |event| {
                if let LaunchEvent::Output { line, phase } = event {
                    assert_eq!(phase, Phase::Image);
                    lines.lock().unwrap().push(line);
                }
            })
        };
        let mut log = PhaseLog::new(&sink, Phase::Image);
        log.push("Step 1\r\nSte");
        log.push("p 2\n");
        log.push("");
        log.push("last");
        log.finish();
        assert_eq!(*lines.lock().unwrap(), ["Step 1", "Step 2", "last"]);
        assert_eq!(log.tail(), "Step 1\nStep 2\nlast");
    }

    #[test]
    fn failed_build_keeps_exception_and_tail() {
        let result = GenericResult {
            status: GenericStatus::Failure as i32,
            exception: "RUN exited with 2".into(),
            exitcode: 2,
        };
        let error = check_build("im-1", &result, "E: package not found").unwrap_err();
        let text = error.to_string();
        assert!(text.contains("RUN exited with 2"), "{text}");
        assert!(text.contains("package not found"), "{text}");
    }
}
