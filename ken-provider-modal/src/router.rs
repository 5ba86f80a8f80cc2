//! The task command router: a second gRPC service, on a URL of its own per task,
//! that runs commands inside the task.
//!
//! Access comes from `TaskGetCommandRouterAccess` (a JWT and a URL). Calls to the
//! router carry only `authorization: Bearer <jwt>`. When the router returns
//! UNAUTHENTICATED (the JWT expired), access is fetched again and the call is
//! retried once.

use std::sync::Arc;
use std::time::Duration;

use ken_core::{Error, Result, Secret};
use tokio::sync::Mutex;
use tonic::client::Grpc;
use tonic::codec::{ProstCodec, Streaming};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use url::Url;

use crate::client::{grpc, insert_secret, ControlClient, Incoming, Outgoing};
use crate::error::{is_retryable, short_method, RpcError, SERVICE};
use crate::proto::headers;
use crate::proto::modal_client::{TaskGetCommandRouterAccessRequest, TaskGetCommandRouterAccessResponse};
use crate::proto::paths;
use crate::retry::UNARY;
use crate::transport;

/// The router of one task. Shared by every exec in the task.
pub(crate) struct Router {
    control: ControlClient,
    task_id: String,
    access: Mutex<Option<Access>>,
}

/// A channel to the router and the token it accepts.
#[derive(Clone)]
struct Access {
    grpc: Grpc<Channel>,
    jwt: Secret,
}

impl Router {
    /// Creates the router client of `task_id`; access is fetched on first use.
    pub(crate) fn new(control: ControlClient, task_id: String) -> Self {
        Router {
            control,
            task_id,
            access: Mutex::new(None),
        }
    }

    /// Returns the task id.
    pub(crate) fn task_id(&self) -> &str {
        &self.task_id
    }

    /// Returns the cached access, or fetches it.
    async fn access(&self) -> Result<Access> {
        let mut cached = self.access.lock().await;
        if let Some(access) = cached.as_ref() {
            return Ok(access.clone());
        }
        let response: TaskGetCommandRouterAccessResponse = self
            .control
            .unary(
                paths::TASK_GET_COMMAND_ROUTER_ACCESS,
                TaskGetCommandRouterAccessRequest {
                    task_id: self.task_id.clone(),
                },
            )
            .await
            .map_err(|e| e.into_ken(format!("getting command router access for task {}", self.task_id)))?;
        let url = Url::parse(&response.url).map_err(|e| {
            Error::backend(
                SERVICE,
                format!(
                    "Modal returned an invalid command router URL {:?} for task {}: {e}",
                    response.url, self.task_id
                ),
            )
        })?;
        let channel = transport::channel(&url, "command router")?;
        tracing::debug!(provider = "modal", task.id = %self.task_id, router = %url, "connected to the task's command router");
        let access = Access {
            grpc: grpc(channel),
            jwt: Secret::new(response.jwt),
        };
        *cached = Some(access.clone());
        Ok(access)
    }

    /// Clears the cached access, so that the next call fetches a new JWT.
    async fn forget_access(&self) {
        *self.access.lock().await = None;
    }

    /// Builds a request with the bearer token.
    fn request<Req>(message: Req, access: &Access, timeout: Option<Duration>) -> std::result::Result<Request<Req>, Status> {
        let mut request = Request::new(message);
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        let bearer = Secret::new(format!("Bearer {}", access.jwt.expose()));
        insert_secret(request.metadata_mut(), headers::AUTHORIZATION, &bearer)?;
        Ok(request)
    }

    /// Calls a unary router method: retries on the retryable codes, and once with
    /// new access on UNAUTHENTICATED.
    pub(crate) async fn unary<Req: Outgoing, Resp: Incoming>(
        &self,
        path: &'static str,
        message: Req,
        deadline: Duration,
    ) -> std::result::Result<Resp, RpcError> {
        let mut attempt = 0;
        let mut reauthorized = false;
        loop {
            let access = self
                .access()
                .await
                .map_err(|e| RpcError::new(path, Status::unavailable(e.to_string())))?;
            let request = Self::request(message.clone(), &access, Some(deadline)).map_err(|s| RpcError::new(path, s))?;
            let mut grpc = access.grpc.clone();
            let call = async {
                grpc.ready()
                    .await
                    .map_err(|e| Status::unavailable(format!("the connection to the command router failed: {e}")))?;
                grpc.unary(request, PathAndQuery::from_static(path), ProstCodec::<Req, Resp>::default())
                    .await
            };
            let result = match tokio::time::timeout(deadline + Duration::from_secs(5), call).await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded("the command router did not answer in time")),
            };
            match result {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == Code::Unauthenticated && !reauthorized => {
                    tracing::info!(provider = "modal", task.id = %self.task_id, method = short_method(path), "command router rejected the token; fetching access again");
                    reauthorized = true;
                    self.forget_access().await;
                }
                Err(status) if is_retryable(status.code()) && attempt < UNARY.retries => {
                    let wait = UNARY.delay(attempt);
                    tracing::warn!(provider = "modal", task.id = %self.task_id, method = short_method(path), code = ?status.code(), message = status.message(), attempt, retry_in = ?wait, "command router call failed; retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(status) => return Err(RpcError::new(path, status)),
            }
        }
    }

    /// Opens a server stream on the router, once more with new access on
    /// UNAUTHENTICATED. Reopening after other errors is the caller's job.
    pub(crate) async fn server_stream<Req: Outgoing, Resp: Incoming>(
        &self,
        path: &'static str,
        message: Req,
    ) -> std::result::Result<Streaming<Resp>, RpcError> {
        let mut reauthorized = false;
        loop {
            let access = self
                .access()
                .await
                .map_err(|e| RpcError::new(path, Status::unavailable(e.to_string())))?;
            let request = Self::request(message.clone(), &access, None).map_err(|s| RpcError::new(path, s))?;
            let mut grpc = access.grpc.clone();
            grpc.ready().await.map_err(|e| {
                RpcError::new(
                    path,
                    Status::unavailable(format!("the connection to the command router failed: {e}")),
                )
            })?;
            match grpc
                .server_streaming(request, PathAndQuery::from_static(path), ProstCodec::<Req, Resp>::default())
                .await
            {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == Code::Unauthenticated && !reauthorized => {
                    reauthorized = true;
                    self.forget_access().await;
                }
                Err(status) => return Err(RpcError::new(path, status)),
            }
        }
    }
}

/// Routers by task id, so that every exec in a task shares one channel.
#[derive(Default)]
pub(crate) struct RouterCache {
    routers: std::sync::Mutex<std::collections::HashMap<String, Arc<Router>>>,
}

impl RouterCache {
    /// Returns the router of `task_id`, creating its client on first use.
    pub(crate) fn get(&self, control: &ControlClient, task_id: &str) -> Arc<Router> {
        let mut routers = self.routers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        routers
            .entry(task_id.to_owned())
            .or_insert_with(|| Arc::new(Router::new(control.clone(), task_id.to_owned())))
            .clone()
    }

    /// Drops the routers of tasks of a destroyed sandbox.
    pub(crate) fn remove(&self, task_id: &str) {
        let mut routers = self.routers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        routers.remove(task_id);
    }
}
