//! The control-plane client: headers, the auth token, and unary retries with one
//! idempotency key per logical call.

use std::sync::Arc;
use std::time::Duration;

use ken_core::{Result, Secret};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tonic::client::Grpc;
use tonic::codec::{ProstCodec, Streaming};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::auth::CachedToken;
use crate::config::ModalConfig;
use crate::error::{is_retryable, short_method, RpcError};
use crate::proto::headers;
use crate::proto::modal_client::{AuthTokenGetRequest, AuthTokenGetResponse};
use crate::proto::paths;
use crate::retry::{RetryPolicy, UNARY};
use crate::transport::{self, MAX_MESSAGE_BYTES};

/// Deadline of an ordinary unary call.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// A message type that can be sent.
pub(crate) trait Outgoing: prost::Message + Clone + Send + Sync + 'static {}
impl<T: prost::Message + Clone + Send + Sync + 'static> Outgoing for T {}

/// A message type that can be received.
pub(crate) trait Incoming: prost::Message + Default + Send + Sync + 'static {}
impl<T: prost::Message + Default + Send + Sync + 'static> Incoming for T {}

/// A client of `modal.client.ModalClient`. Cloning is cheap.
#[derive(Clone)]
pub(crate) struct ControlClient {
    inner: Arc<Inner>,
}

struct Inner {
    grpc: Grpc<Channel>,
    config: ModalConfig,
    policy: RetryPolicy,
    /// The auth token; the lock is held while a new one is fetched, so concurrent
    /// callers wait for one fetch.
    token: Mutex<Option<CachedToken>>,
}

impl ControlClient {
    /// Creates a client for the server in `config`; nothing connects until the
    /// first call.
    pub(crate) fn new(config: ModalConfig) -> Result<Self> {
        let channel = transport::channel(&config.server_url, "Modal server")?;
        Ok(Self::with_channel(channel, config, UNARY))
    }

    /// Creates a client over an existing channel.
    pub(crate) fn with_channel(channel: Channel, config: ModalConfig, policy: RetryPolicy) -> Self {
        ControlClient {
            inner: Arc::new(Inner {
                grpc: grpc(channel),
                config,
                policy,
                token: Mutex::new(None),
            }),
        }
    }

    /// Returns the configuration.
    pub(crate) fn config(&self) -> &ModalConfig {
        &self.inner.config
    }

    /// Calls a unary method with the default deadline; see [`Self::unary_with`].
    pub(crate) async fn unary<Req: Outgoing, Resp: Incoming>(
        &self,
        path: &'static str,
        message: Req,
    ) -> std::result::Result<Resp, RpcError> {
        self.unary_with(path, message, DEFAULT_DEADLINE).await
    }

    /// Calls a unary method, retrying on the retryable codes with the same
    /// `x-idempotency-key` on every attempt.
    pub(crate) async fn unary_with<Req: Outgoing, Resp: Incoming>(
        &self,
        path: &'static str,
        message: Req,
        deadline: Duration,
    ) -> std::result::Result<Resp, RpcError> {
        let key = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let policy = self.inner.policy;
        let mut attempt: u32 = 0;
        loop {
            let mut request = Request::new(message.clone());
            request.set_timeout(deadline);
            let token = if path == paths::AUTH_TOKEN_GET {
                None
            } else {
                Some(self.auth_token().await?)
            };
            self.add_headers(request.metadata_mut(), token.as_ref())
                .map_err(|status| RpcError::new(path, status))?;
            let metadata = request.metadata_mut();
            insert(metadata, headers::IDEMPOTENCY_KEY, &key).map_err(|s| RpcError::new(path, s))?;
            insert(metadata, headers::RETRY_ATTEMPT, &attempt.to_string()).map_err(|s| RpcError::new(path, s))?;
            let delay = format!("{:.3}", started.elapsed().as_secs_f64());
            insert(metadata, headers::RETRY_DELAY, &delay).map_err(|s| RpcError::new(path, s))?;

            let mut grpc = self.inner.grpc.clone();
            let call = async {
                grpc.ready().await.map_err(|e| self.connection_failed(&e))?;
                grpc.unary(request, PathAndQuery::from_static(path), ProstCodec::<Req, Resp>::default())
                    .await
            };
            let result = match tokio::time::timeout(deadline + Duration::from_secs(5), call).await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {}s",
                    deadline.as_secs()
                ))),
            };
            match result {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if is_retryable(status.code()) && attempt < policy.retries => {
                    let wait = policy.delay(attempt);
                    tracing::warn!(
                        provider = "modal",
                        method = short_method(path),
                        code = ?status.code(),
                        message = status.message(),
                        attempt,
                        retry_in = ?wait,
                        "Modal call failed; retrying with the same idempotency key"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(status) => {
                    if status.code() == Code::Unauthenticated && token.is_some() {
                        // The next call fetches a new token.
                        *self.inner.token.lock().await = None;
                    }
                    tracing::debug!(
                        provider = "modal",
                        method = short_method(path),
                        code = ?status.code(),
                        message = status.message(),
                        attempt,
                        "Modal call failed"
                    );
                    return Err(RpcError::new(path, self.explain(status)));
                }
            }
        }
    }

    /// Opens a server stream. Reopening after an error is the caller's job, because
    /// only the caller tracks where to resume.
    pub(crate) async fn server_stream<Req: Outgoing, Resp: Incoming>(
        &self,
        path: &'static str,
        message: Req,
    ) -> std::result::Result<Streaming<Resp>, RpcError> {
        let token = self.auth_token().await?;
        let mut request = Request::new(message);
        self.add_headers(request.metadata_mut(), Some(&token))
            .map_err(|status| RpcError::new(path, status))?;
        let mut grpc = self.inner.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| RpcError::new(path, self.connection_failed(&e)))?;
        let response = grpc
            .server_streaming(request, PathAndQuery::from_static(path), ProstCodec::<Req, Resp>::default())
            .await
            .map_err(|status| RpcError::new(path, self.explain(status)))?;
        Ok(response.into_inner())
    }

    /// Fetches an auth token, which checks the credentials and the connection.
    pub(crate) async fn check_credentials(&self) -> Result<()> {
        self.auth_token()
            .await
            .map(|_| ())
            .map_err(|e| e.into_ken("signing in to Modal"))
    }

    /// Returns a valid auth token, fetching one when there is none or it is due
    /// for refresh.
    async fn auth_token(&self) -> std::result::Result<Secret, RpcError> {
        let mut cached = self.inner.token.lock().await;
        let now = Instant::now();
        if let Some(token) = cached.as_ref().filter(|t| t.is_fresh(now)) {
            return Ok(token.token.clone());
        }
        tracing::debug!(provider = "modal", phase = "auth", "fetching a Modal auth token");
        let response: AuthTokenGetResponse = Box::pin(self.unary(paths::AUTH_TOKEN_GET, AuthTokenGetRequest {})).await?;
        if response.token.is_empty() {
            return Err(RpcError::new(
                paths::AUTH_TOKEN_GET,
                Status::internal("AuthTokenGet returned an empty token"),
            ));
        }
        let token = CachedToken::new(response.token, now);
        let secret = token.token.clone();
        *cached = Some(token);
        Ok(secret)
    }

    /// Adds to a final error status what the user can check. A rejected token gets
    /// its id and the source of the credentials, and a failed connection gets the
    /// source of the server URL.
    fn explain(&self, status: Status) -> Status {
        let config = &self.inner.config;
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => {
                let mut message = format!(
                    "{} (token id {} from {})",
                    status.message(),
                    config.token_id,
                    config.token_origin
                );
                if !status.message().contains("check") {
                    message.push_str(&format!(
                        "; check the token in {}, or create a new one with `modal token new`",
                        config.token_origin
                    ));
                }
                Status::new(status.code(), message)
            }
            // A transport error that surfaces from the call itself, not from `ready`.
            Code::Unavailable if std::error::Error::source(&status).is_some() => self.connection_failed_with(status.message(), &status),
            _ => status,
        }
    }

    /// Returns the status for a connection to the server that could not be made.
    fn connection_failed(&self, error: &(dyn std::error::Error + 'static)) -> Status {
        self.connection_failed_with("", error)
    }

    fn connection_failed_with(&self, first: &str, error: &(dyn std::error::Error + 'static)) -> Status {
        // The transport wraps the cause in several layers; each layer's text is kept
        // once, because some layers repeat the text of the one below.
        let mut causes: Vec<String> = Vec::new();
        if !first.is_empty() {
            causes.push(first.to_owned());
        }
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(cause) = next {
            // A status layer prints its code, details and metadata, but only its
            // message is useful. The bare text "transport error" adds nothing.
            let text = match cause.downcast_ref::<Status>() {
                Some(status) => status.message().to_owned(),
                None => cause.to_string(),
            };
            if text != "transport error" && !causes.iter().any(|known| known.contains(&text)) {
                causes.push(text);
            }
            next = cause.source();
        }
        let config = &self.inner.config;
        Status::unavailable(format!(
            "cannot connect to the Modal server {} (set by {}): {}; check that the URL is right \
             and the server is reachable from this host",
            config.server_url,
            config.server_url_origin,
            causes.join(": ")
        ))
    }

    /// Adds the headers every control-plane call carries.
    fn add_headers(&self, metadata: &mut MetadataMap, token: Option<&Secret>) -> std::result::Result<(), Status> {
        let config = &self.inner.config;
        insert(metadata, headers::CLIENT_TYPE, headers::CLIENT_TYPE_VALUE)?;
        insert(metadata, headers::CLIENT_VERSION, headers::CLIENT_VERSION_VALUE)?;
        insert(metadata, headers::TOKEN_ID, &config.token_id)?;
        insert_secret(metadata, headers::TOKEN_SECRET, &config.token_secret)?;
        if let Some(token) = token {
            insert_secret(metadata, headers::AUTH_TOKEN, token)?;
        }
        Ok(())
    }
}

/// Wraps a channel in a gRPC client with Modal's message limits.
pub(crate) fn grpc(channel: Channel) -> Grpc<Channel> {
    Grpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Inserts a header whose value may be shown in errors.
pub(crate) fn insert(metadata: &mut MetadataMap, name: &'static str, value: &str) -> std::result::Result<(), Status> {
    let value = MetadataValue::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("the value of header {name} ({value:?}) is not valid in a header")))?;
    metadata.insert(name, value);
    Ok(())
}

/// Inserts a header whose value is a secret. Errors never show the value.
pub(crate) fn insert_secret(
    metadata: &mut MetadataMap,
    name: &'static str,
    value: &Secret,
) -> std::result::Result<(), Status> {
    let mut value = MetadataValue::try_from(value.expose())
        .map_err(|_| Status::invalid_argument(format!("the value of header {name} has characters not allowed in a header")))?;
    value.set_sensitive(true);
    metadata.insert(name, value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex as StdMutex;
    use std::task::{Context, Poll};

    use tonic::body::BoxBody;
    use tonic::codegen::{http, BoxFuture, Service};
    use tonic::server::{NamedService, UnaryService};
    use tonic::Response;

    use super::*;
    use crate::proto::modal_client::{SandboxCreateRequest, SandboxCreateResponse};

    const TOKEN_SECRET: &str = "as-mock-token-secret-value";
    const AUTH_TOKEN: &str = "mock-auth-jwt-value";

    /// Record of one call received by the mock: method, idempotency key, attempt and auth token.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        key: Option<String>,
        attempt: Option<String>,
        auth: Option<String>,
        secret_ok: bool,
        client_type: Option<String>,
    }

    /// A `ModalClient` that fails the first `fail` SandboxCreate calls with
    /// UNAVAILABLE, then creates one sandbox per idempotency key.
    #[derive(Clone)]
    struct Mock {
        seen: Arc<StdMutex<Vec<Seen>>>,
        fail: Arc<AtomicU32>,
        code: Code,
    }

    impl NamedService for Mock {
        const NAME: &'static str = "modal.client.ModalClient";
    }

    struct Handler<F>(F);

    impl<F, Req, Resp> UnaryService<Req> for Handler<F>
    where
        F: FnMut(Request<Req>) -> std::result::Result<Response<Resp>, Status>,
    {
        type Response = Resp;
        type Future = std::future::Ready<std::result::Result<Response<Resp>, Status>>;
        fn call(&mut self, request: Request<Req>) -> Self::Future {
            std::future::ready((self.0)(request))
        }
    }

    fn header(request: &MetadataMap, name: &str) -> Option<String> {
        request.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    impl Service<http::Request<BoxBody>> for Mock {
        type Response = http::Response<BoxBody>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<BoxBody>) -> Self::Future {
            let this = self.clone();
            let path = request.uri().path().to_owned();
            Box::pin(async move {
                let record = move |path: &str, metadata: &MetadataMap| {
                    this.seen.lock().unwrap().push(Seen {
                        method: path.to_owned(),
                        key: header(metadata, headers::IDEMPOTENCY_KEY),
                        attempt: header(metadata, headers::RETRY_ATTEMPT),
                        auth: header(metadata, headers::AUTH_TOKEN),
                        secret_ok: header(metadata, headers::TOKEN_SECRET).as_deref() == Some(TOKEN_SECRET),
                        client_type: header(metadata, headers::CLIENT_TYPE),
                    });
                };
                let response = if path == paths::AUTH_TOKEN_GET {
                    let mut grpc = tonic::server::Grpc::new(ProstCodec::<AuthTokenGetResponse, AuthTokenGetRequest>::default());
                    grpc.unary(
                        Handler(move |request: Request<AuthTokenGetRequest>| {
                            record(paths::AUTH_TOKEN_GET, request.metadata());
                            Ok(Response::new(AuthTokenGetResponse { token: AUTH_TOKEN.into() }))
                        }),
                        request,
                    )
                    .await
                } else {
                    let fail = this.fail.clone();
                    let code = this.code;
                    let mut grpc = tonic::server::Grpc::new(ProstCodec::<SandboxCreateResponse, SandboxCreateRequest>::default());
                    grpc.unary(
                        Handler(move |request: Request<SandboxCreateRequest>| {
                            record(paths::SANDBOX_CREATE, request.metadata());
                            if fail.load(Ordering::SeqCst) > 0 {
                                fail.fetch_sub(1, Ordering::SeqCst);
                                return Err(Status::new(code, "try again"));
                            }
                            let key = header(request.metadata(), headers::IDEMPOTENCY_KEY).unwrap_or_default();
                            Ok(Response::new(SandboxCreateResponse { sandbox_id: format!("sb-{key}") }))
                        }),
                        request,
                    )
                    .await
                };
                Ok(response)
            })
        }
    }

    async fn start_mock(fail: u32, code: Code) -> (ControlClient, Arc<StdMutex<Vec<Seen>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let mock = Mock {
            seen: seen.clone(),
            fail: Arc::new(AtomicU32::new(fail)),
            code,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(mock)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let config = ModalConfig::new("ak-mock", TOKEN_SECRET)
            .with_server_url(&format!("http://{address}"))
            .unwrap();
        let policy = RetryPolicy {
            retries: 3,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(4),
        };
        let channel = transport::channel(&config.server_url, "Modal server").unwrap();
        (ControlClient::with_channel(channel, config, policy), seen)
    }

    #[tokio::test]
    async fn rejected_token_names_its_id_and_origin() {
        let (client, _) = start_mock(10, Code::Unauthenticated).await;
        let error = client
            .unary::<_, SandboxCreateResponse>(paths::SANDBOX_CREATE, create_request())
            .await
            .unwrap_err()
            .into_ken("creating sandbox demo");
        let text = error.to_string();
        assert!(text.contains("token id ak-mock from the explicit settings"), "{text}");
        assert_eq!(text.matches("check").count(), 1, "{text}");
        assert!(!text.contains(".modal.toml"), "{text}");
        assert!(!text.contains(TOKEN_SECRET), "{text}");
    }

    #[tokio::test]
    async fn unreachable_server_names_the_url_and_its_origin() {
        // A port that was just free: nothing listens there.
        let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let config = ModalConfig::resolve(
            &[
                (crate::config::TOKEN_ID_VAR, "ak-1"),
                (crate::config::TOKEN_SECRET_VAR, "as-1"),
                (crate::config::SERVER_URL_VAR, &format!("http://{address}")),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
            None,
        )
        .unwrap();
        let channel = transport::channel(&config.server_url, "Modal server").unwrap();
        let policy = RetryPolicy {
            retries: 0,
            initial: Duration::from_millis(1),
            max: Duration::from_millis(1),
        };
        let client = ControlClient::with_channel(channel, config, policy);
        let error = client.check_credentials().await.unwrap_err();
        let text = error.to_string();
        assert!(text.contains(&format!("http://{address}/ (set by MODAL_SERVER_URL)")), "{text}");
        assert!(text.contains("check that the URL is right"), "{text}");
        assert!(std::error::Error::source(&error).is_none(), "{error:?}");
    }

    fn create_request() -> SandboxCreateRequest {
        SandboxCreateRequest {
            app_id: "ap-1".into(),
            definition: None,
        }
    }

    #[tokio::test]
    async fn retries_keep_one_idempotency_key_and_count_attempts() {
        let (client, seen) = start_mock(2, Code::Unavailable).await;
        let created: SandboxCreateResponse = client.unary(paths::SANDBOX_CREATE, create_request()).await.unwrap();
        let seen = seen.lock().unwrap().clone();

        let auth: Vec<&Seen> = seen.iter().filter(|s| s.method == paths::AUTH_TOKEN_GET).collect();
        assert_eq!(auth.len(), 1, "one token fetch: {seen:?}");
        assert_eq!(auth[0].auth, None, "AuthTokenGet must not carry x-modal-auth-token");
        let creates: Vec<&Seen> = seen.iter().filter(|s| s.method == paths::SANDBOX_CREATE).collect();
        assert_eq!(creates.len(), 3, "{seen:?}");
        let key = creates[0].key.clone().unwrap();
        assert!(uuid::Uuid::parse_str(&key).is_ok(), "{key}");
        assert!(creates.iter().all(|s| s.key.as_deref() == Some(key.as_str())));
        let attempts: Vec<_> = creates.iter().map(|s| s.attempt.clone().unwrap()).collect();
        assert_eq!(attempts, ["0", "1", "2"]);
        assert!(creates.iter().all(|s| s.auth.as_deref() == Some(AUTH_TOKEN)));
        assert!(creates.iter().all(|s| s.secret_ok));
        assert!(seen.iter().all(|s| s.client_type.as_deref() == Some("9")));
        assert_eq!(created.sandbox_id, format!("sb-{key}"));
    }

    #[tokio::test]
    async fn two_logical_calls_use_two_keys() {
        let (client, seen) = start_mock(0, Code::Unavailable).await;
        let first: SandboxCreateResponse = client.unary(paths::SANDBOX_CREATE, create_request()).await.unwrap();
        let second: SandboxCreateResponse = client.unary(paths::SANDBOX_CREATE, create_request()).await.unwrap();
        assert_ne!(first.sandbox_id, second.sandbox_id);
        let auth_fetches = seen.lock().unwrap().iter().filter(|s| s.method == paths::AUTH_TOKEN_GET).count();
        assert_eq!(auth_fetches, 1, "the token is cached between calls");
    }

    #[tokio::test]
    async fn retries_stop_after_three() {
        let (client, seen) = start_mock(10, Code::Internal).await;
        let error = client
            .unary::<_, SandboxCreateResponse>(paths::SANDBOX_CREATE, create_request())
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Internal);
        let creates = seen.lock().unwrap().iter().filter(|s| s.method == paths::SANDBOX_CREATE).count();
        assert_eq!(creates, 4, "one attempt and three retries");
    }

    #[tokio::test]
    async fn rate_limit_is_not_retried() {
        let (client, seen) = start_mock(1, Code::ResourceExhausted).await;
        let error = client
            .unary::<_, SandboxCreateResponse>(paths::SANDBOX_CREATE, create_request())
            .await
            .unwrap_err()
            .into_ken("creating sandbox demo");
        assert!(matches!(error, ken_core::Error::RateLimited { .. }), "{error:?}");
        assert!(error.is_retryable());
        let creates = seen.lock().unwrap().iter().filter(|s| s.method == paths::SANDBOX_CREATE).count();
        assert_eq!(creates, 1);
    }

    /// A writer that keeps everything the tracing subscriber prints.
    #[derive(Clone, Default)]
    struct Captured(Arc<StdMutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn secrets_stay_out_of_logs_errors_and_debug() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        // Other tests of this binary run without a subscriber; without this their
        // cached "not interested" would hide the events here.
        tracing::callsite::rebuild_interest_cache();

        let (client, _) = start_mock(2, Code::Unavailable).await;
        let _: SandboxCreateResponse = client.unary(paths::SANDBOX_CREATE, create_request()).await.unwrap();
        let (failing, _) = start_mock(10, Code::Unauthenticated).await;
        let error = failing
            .unary::<_, SandboxCreateResponse>(paths::SANDBOX_CREATE, create_request())
            .await
            .unwrap_err()
            .into_ken("creating sandbox demo");
        let provider = crate::ModalProvider::new(client.config().clone()).unwrap();

        let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
        assert!(logs.contains("fetching a Modal auth token"), "nothing was captured: {logs}");
        let printed = format!("{logs}\n{error}\n{error:?}\n{provider:?}\n{:?}", client.config());
        for secret in [TOKEN_SECRET, AUTH_TOKEN] {
            assert!(!printed.contains(secret), "{secret} leaked into: {printed}");
        }
    }
}
