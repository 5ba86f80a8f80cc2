//! `SandboxGetTaskId` and `TaskGetCommandRouterAccess`.

use std::sync::Arc;

use tonic::Status;

use super::invalid;
use crate::checks::Call;
use crate::ids::issue_jwt;
use crate::sandbox::SandboxStatus;
use crate::state::State;
use ken_provider_modal::proto::modal_client::{
    SandboxGetTaskIdRequest, SandboxGetTaskIdResponse, TaskGetCommandRouterAccessRequest,
    TaskGetCommandRouterAccessResponse,
};

pub(super) async fn sandbox_get_task_id(
    state: Arc<State>,
    call: Call,
    request: SandboxGetTaskIdRequest,
) -> Result<SandboxGetTaskIdResponse, Status> {
    if request.sandbox_id.is_empty() {
        return Err(invalid(&state, &call.method, "sandbox_id is required"));
    }
    let sandbox = state.sandbox(&request.sandbox_id)?;
    let status = sandbox.status.borrow().clone();
    Ok(match status {
        SandboxStatus::Pending => SandboxGetTaskIdResponse {
            task_id: None,
            task_result: None,
        },
        SandboxStatus::Running { task_id } => SandboxGetTaskIdResponse {
            task_id: Some(task_id),
            task_result: None,
        },
        SandboxStatus::Finished { task_id, result } => SandboxGetTaskIdResponse {
            task_id,
            task_result: Some(result),
        },
    })
}

pub(super) async fn task_get_command_router_access(
    state: Arc<State>,
    call: Call,
    request: TaskGetCommandRouterAccessRequest,
) -> Result<TaskGetCommandRouterAccessResponse, Status> {
    if request.task_id.is_empty() {
        return Err(invalid(&state, &call.method, "task_id is required"));
    }
    let sandbox = state.sandbox_of_task(&request.task_id)?;
    if sandbox.is_finished() {
        return Err(Status::failed_precondition(format!(
            "Task {} has finished",
            request.task_id
        )));
    }
    let jwt = {
        let mut inner = state.lock();
        let jwt = issue_jwt(&state.jwt_key, &request.task_id, inner.router_jwt_ttl);
        inner.issued_jwts.push(jwt.clone());
        jwt
    };
    Ok(TaskGetCommandRouterAccessResponse {
        jwt,
        url: state.router_url.clone(),
    })
}
