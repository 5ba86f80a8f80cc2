//! `ImageGetOrCreate` and `ImageJoinStreaming`.

use std::sync::Arc;

use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{invalid, wait_limit};
use crate::checks::Call;
use crate::image::ImageEntry;
use crate::pacing::Pacer;
use crate::rpc::ResponseStream;
use crate::state::State;
use ken_provider_modal::proto::modal_client::{
    FileDescriptor, ImageGetOrCreateRequest, ImageGetOrCreateResponse, ImageJoinStreamingRequest,
    ImageJoinStreamingResponse, TaskLogs,
};

pub(super) async fn image_get_or_create(
    state: Arc<State>,
    call: Call,
    request: ImageGetOrCreateRequest,
) -> Result<ImageGetOrCreateResponse, Status> {
    if request.app_id.is_empty() {
        return Err(invalid(&state, &call.method, "app_id is required"));
    }
    if !state.lock().apps.contains_key(&request.app_id) {
        return Err(Status::not_found(format!("App {} not found", request.app_id)));
    }
    let Some(image) = request.image else {
        return Err(invalid(&state, &call.method, "image is required"));
    };
    if image.dockerfile_commands.is_empty() {
        return Err(invalid(
            &state,
            &call.method,
            "image.dockerfile_commands is empty; the first command must be FROM",
        ));
    }
    if request.builder_version.is_empty() {
        return Err(invalid(&state, &call.method, "builder_version is required"));
    }
    for base in &image.base_images {
        if base.image_id.is_empty() || base.docker_tag.is_empty() {
            return Err(invalid(
                &state,
                &call.method,
                "every base image needs image_id and docker_tag",
            ));
        }
        if !state.lock().images.contains_key(&base.image_id) {
            return Err(Status::not_found(format!("Image {} not found", base.image_id)));
        }
    }

    let mut key = image.encode_to_vec();
    key.extend_from_slice(request.builder_version.as_bytes());
    let id = crate::ids::content_id("im", &key);
    let entry = state
        .lock()
        .images
        .entry(id.clone())
        .or_insert_with(|| Arc::new(ImageEntry::new(id.clone(), image, None)))
        .clone();
    entry.start_build(&state, request.force_build);
    let result = entry.progress().result.clone();
    Ok(ImageGetOrCreateResponse {
        image_id: id,
        result,
    })
}

/// Parses an entry id of the form `N-0` into the number of entries before it.
fn entries_before(last_entry_id: &str) -> Option<usize> {
    if last_entry_id.is_empty() {
        return Some(0);
    }
    last_entry_id.strip_suffix("-0")?.parse().ok()
}

pub(super) async fn image_join_streaming(
    state: Arc<State>,
    call: Call,
    request: ImageJoinStreamingRequest,
) -> Result<ResponseStream<ImageJoinStreamingResponse>, Status> {
    let image = state
        .lock()
        .images
        .get(&request.image_id)
        .cloned()
        .ok_or_else(|| Status::not_found(format!("Image {} not found", request.image_id)))?;
    let Some(mut position) = entries_before(&request.last_entry_id) else {
        return Err(invalid(
            &state,
            &call.method,
            format!("last_entry_id {:?} is not an entry id this server sent", request.last_entry_id),
        ));
    };
    let behavior = state.lock().streams.clone();
    let client_limit = wait_limit(request.timeout);
    let mut pacer = Pacer::new(&behavior, (client_limit > std::time::Duration::ZERO).then_some(client_limit));
    {
        let progress = image.progress();
        if progress.result.is_some() && !request.include_logs_for_finished && request.last_entry_id.is_empty() {
            position = progress.logs.len();
        }
    }

    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let mut changed = image.changed.subscribe();
    tokio::spawn(async move {
        if behavior.empty_batches && sender.send(Ok(ImageJoinStreamingResponse::default())).await.is_err() {
            return;
        }
        loop {
            changed.borrow_and_update();
            let (next, result) = {
                let progress = image.progress();
                (progress.logs.get(position).cloned(), progress.result.clone())
            };
            if let Some(data) = next {
                if pacer.end_before_item() {
                    break;
                }
                position += 1;
                let item = ImageJoinStreamingResponse {
                    result: None,
                    task_logs: vec![TaskLogs {
                        data: data.to_vec(),
                        file_descriptor: FileDescriptor::Stdout as i32,
                    }],
                    entry_id: format!("{position}-0"),
                    eof: false,
                };
                if sender.send(Ok(item)).await.is_err() {
                    return;
                }
                continue;
            }
            if let Some(result) = result {
                let item = ImageJoinStreamingResponse {
                    result: Some(result),
                    task_logs: Vec::new(),
                    entry_id: String::new(),
                    eof: true,
                };
                let _ = sender.send(Ok(item)).await;
                return;
            }
            tokio::select! {
                changed = changed.changed() => if changed.is_err() { return },
                () = pacer.until_deadline() => break,
            }
        }
        if behavior.end_with_unavailable {
            let _ = sender
                .send(Err(Status::unavailable("image log stream interrupted; resume from the last entry id")))
                .await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}
