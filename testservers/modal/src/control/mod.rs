//! Handlers of `modal.client.ModalClient`, the control plane.

mod account;
mod image;
mod sandbox;
mod task;

use std::sync::Arc;

use tonic::body::BoxBody;

use crate::inspect::ServiceKind;
use crate::rpc::{server_streaming, unary, unimplemented};
use crate::state::State;
use ken_provider_modal::proto::paths;

/// Routes a control-plane request by its path.
pub(crate) async fn route(state: Arc<State>, request: http::Request<BoxBody>) -> http::Response<BoxBody> {
    let kind = ServiceKind::Control;
    let path = request.uri().path().to_owned();
    match path.as_str() {
        paths::AUTH_TOKEN_GET => unary(state, kind, request, account::auth_token_get).await,
        paths::APP_GET_OR_CREATE => unary(state, kind, request, account::app_get_or_create).await,
        paths::SECRET_GET_OR_CREATE => unary(state, kind, request, account::secret_get_or_create).await,
        paths::IMAGE_GET_OR_CREATE => unary(state, kind, request, image::image_get_or_create).await,
        paths::IMAGE_JOIN_STREAMING => server_streaming(state, kind, request, image::image_join_streaming).await,
        paths::SANDBOX_CREATE => unary(state, kind, request, sandbox::sandbox_create).await,
        paths::SANDBOX_GET_FROM_NAME => unary(state, kind, request, sandbox::sandbox_get_from_name).await,
        paths::SANDBOX_LIST => unary(state, kind, request, sandbox::sandbox_list).await,
        paths::SANDBOX_TAGS_SET => unary(state, kind, request, sandbox::sandbox_tags_set).await,
        paths::SANDBOX_TAGS_GET => unary(state, kind, request, sandbox::sandbox_tags_get).await,
        paths::SANDBOX_WAIT => unary(state, kind, request, sandbox::sandbox_wait).await,
        paths::SANDBOX_TERMINATE => unary(state, kind, request, sandbox::sandbox_terminate).await,
        paths::SANDBOX_GET_TUNNELS => unary(state, kind, request, sandbox::sandbox_get_tunnels).await,
        paths::SANDBOX_SNAPSHOT_FS => unary(state, kind, request, sandbox::sandbox_snapshot_fs).await,
        paths::SANDBOX_GET_TASK_ID => unary(state, kind, request, task::sandbox_get_task_id).await,
        paths::TASK_GET_COMMAND_ROUTER_ACCESS => {
            unary(state, kind, request, task::task_get_command_router_access).await
        }
        _ => unimplemented(&state, kind, &path),
    }
}

/// Records a violation for a missing or invalid field and returns the
/// `INVALID_ARGUMENT` status a real server would.
pub(crate) fn invalid(state: &State, method: &str, message: impl Into<String>) -> tonic::Status {
    let message = message.into();
    state.violation(method, message.clone());
    tonic::Status::invalid_argument(message)
}

/// Caps a client's wait (`timeout` field, in seconds) at 55 s, the longest a real
/// server keeps a call open. A negative or missing value means no wait.
pub(crate) fn wait_limit(timeout: f32) -> std::time::Duration {
    if timeout.is_finite() && timeout > 0.0 {
        std::time::Duration::from_secs_f32(timeout.min(55.0))
    } else {
        std::time::Duration::ZERO
    }
}
