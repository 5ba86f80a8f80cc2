//! gRPC plumbing: the two tower services, routing by path, and the wrapper that
//! checks, logs and injects faults around every handler.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::stream::BoxStream;
use tonic::body::BoxBody;
use tonic::codec::ProstCodec;
use tonic::server::{Grpc, NamedService};
use tonic::{Code, Status};

use crate::checks::{admit, Call};
use crate::inspect::{RequestRecord, ServiceKind};
use crate::state::{FailMode, State};
use ken_provider_modal::proto::paths;

/// A boxed response future, as tonic's generated servers use.
type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<BoxBody>, Infallible>> + Send>>;

/// Largest message either side may send: 100 MiB, as the real service allows.
const MAX_MESSAGE_BYTES: usize = 100 * 1024 * 1024;

/// A stream of response messages.
pub(crate) type ResponseStream<T> = BoxStream<'static, Result<T, Status>>;

/// `modal.client.ModalClient`.
#[derive(Clone)]
pub(crate) struct ControlService(pub(crate) Arc<State>);

/// `modal.task_command_router.TaskCommandRouter`.
#[derive(Clone)]
pub(crate) struct RouterService(pub(crate) Arc<State>);

impl NamedService for ControlService {
    const NAME: &'static str = paths::MODAL_CLIENT_SERVICE;
}

impl NamedService for RouterService {
    const NAME: &'static str = paths::TASK_COMMAND_ROUTER_SERVICE;
}

impl tower::Service<http::Request<BoxBody>> for ControlService {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<BoxBody>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move { Ok(crate::control::route(state, request).await) })
    }
}

impl tower::Service<http::Request<BoxBody>> for RouterService {
    type Response = http::Response<BoxBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<BoxBody>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move { Ok(crate::router::route(state, request).await) })
    }
}

/// Returns the method name of a path: `/pkg.Service/Method` gives `Method`.
pub(crate) fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Returns the `UNIMPLEMENTED` response for a method the server does not know.
pub(crate) fn unimplemented(state: &State, service: ServiceKind, path: &str) -> http::Response<BoxBody> {
    let method = method_name(path).to_owned();
    tracing::warn!(method, "request for a method the test server does not implement");
    state.lock().requests.push(RequestRecord {
        service,
        method: method.clone(),
        idempotency_key: None,
        retry_attempt: None,
        code: Code::Unimplemented,
        message: format!("method {method} is not implemented"),
        injected: false,
    });
    Status::unimplemented(format!("method {path} is not implemented by the Modal test server"))
        .into_http()
}

/// Serves one unary call: decodes the request, runs the header checks and fault
/// knobs, calls `handler`, records the outcome and encodes the response.
pub(crate) async fn unary<Req, Resp, H, Fut>(
    state: Arc<State>,
    service: ServiceKind,
    request: http::Request<BoxBody>,
    handler: H,
) -> http::Response<BoxBody>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    H: FnOnce(Arc<State>, Call, Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
{
    let method = method_name(request.uri().path()).to_owned();
    let mut handler = Some(handler);
    let grpc_service = tower::service_fn(move |request: tonic::Request<Req>| {
        let handler = handler.take();
        let state = state.clone();
        let method = method.clone();
        async move {
            let handler = handler.ok_or_else(|| Status::internal("handler called twice"))?;
            let outcome = serve_unary(&state, service, &method, request, handler).await;
            outcome.map(tonic::Response::new)
        }
    });
    let mut grpc = Grpc::new(ProstCodec::<Resp, Req>::default())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    grpc.unary(grpc_service, request).await
}

async fn serve_unary<Req, Resp, H, Fut>(
    state: &Arc<State>,
    service: ServiceKind,
    method: &str,
    request: tonic::Request<Req>,
    handler: H,
) -> Result<Resp, Status>
where
    H: FnOnce(Arc<State>, Call, Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let call = match admit(state, service, method, request.metadata(), true) {
        Ok(call) => call,
        Err(status) => {
            record(state, service, method, None, &Err::<(), _>(status.clone()), false);
            return Err(status);
        }
    };

    let fault = injected_fault(state, &call);
    if fault == Some(FailMode::BeforeHandling) {
        let status = injected_unavailable(method);
        record(state, service, method, Some(&call), &Err::<(), _>(status.clone()), true);
        return Err(status);
    }

    let result = handler(state.clone(), call.clone(), request.into_inner()).await;
    if fault == Some(FailMode::AfterHandling) {
        let status = injected_unavailable(method);
        record(state, service, method, Some(&call), &Err::<(), _>(status.clone()), true);
        return Err(status);
    }
    record(state, service, method, Some(&call), &result, false);
    result
}

/// Serves one server-streaming call; the checks and fault knobs apply to opening
/// the stream.
pub(crate) async fn server_streaming<Req, Resp, H, Fut>(
    state: Arc<State>,
    service: ServiceKind,
    request: http::Request<BoxBody>,
    handler: H,
) -> http::Response<BoxBody>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    H: FnOnce(Arc<State>, Call, Req) -> Fut + Send + 'static,
    Fut: Future<Output = Result<ResponseStream<Resp>, Status>> + Send + 'static,
{
    let method = method_name(request.uri().path()).to_owned();
    let mut handler = Some(handler);
    let grpc_service = tower::service_fn(move |request: tonic::Request<Req>| {
        let handler = handler.take();
        let state = state.clone();
        let method = method.clone();
        async move {
            let handler = handler.ok_or_else(|| Status::internal("handler called twice"))?;
            let call = match admit(&state, service, &method, request.metadata(), false) {
                Ok(call) => call,
                Err(status) => {
                    record(&state, service, &method, None, &Err::<(), _>(status.clone()), false);
                    return Err(status);
                }
            };
            if injected_fault(&state, &call).is_some() {
                let status = injected_unavailable(&method);
                record(&state, service, &method, Some(&call), &Err::<(), _>(status.clone()), true);
                return Err(status);
            }
            let result = handler(state.clone(), call.clone(), request.into_inner()).await;
            record(&state, service, &method, Some(&call), &result, false);
            result.map(tonic::Response::new)
        }
    });
    let mut grpc = Grpc::new(ProstCodec::<Resp, Req>::default())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    grpc.server_streaming(grpc_service, request).await
}

/// Decides whether this call fails once with `UNAVAILABLE`: its method is armed and
/// its idempotency key has not failed yet. A call without a key fails when the
/// method is armed, and disarms it.
fn injected_fault(state: &State, call: &Call) -> Option<FailMode> {
    let mut inner = state.lock();
    let mode = *inner.armed.get(&call.method)?;
    match &call.idempotency_key {
        Some(key) => {
            let first = inner
                .failed_once
                .insert((call.method.clone(), key.clone()));
            first.then_some(mode)
        }
        None => {
            inner.armed.remove(&call.method);
            Some(mode)
        }
    }
}

fn injected_unavailable(method: &str) -> Status {
    tracing::info!(method, "injecting UNAVAILABLE once");
    Status::unavailable(format!("{method}: the server is temporarily unavailable, retry"))
}

fn record<T>(
    state: &State,
    service: ServiceKind,
    method: &str,
    call: Option<&Call>,
    result: &Result<T, Status>,
    injected: bool,
) {
    let (code, message) = match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), status.message().to_owned()),
    };
    if code != Code::Ok && !injected {
        tracing::info!(method, ?code, %message, "request failed");
    }
    state.lock().requests.push(RequestRecord {
        service,
        method: method.to_owned(),
        idempotency_key: call.and_then(|call| call.idempotency_key.clone()),
        retry_attempt: call.and_then(|call| call.retry_attempt),
        code,
        message,
        injected,
    });
}
