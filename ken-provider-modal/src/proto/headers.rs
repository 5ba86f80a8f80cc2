//! Metadata (HTTP/2 header) names and fixed values of the protocol.

/// Client type of the caller. Python sends "1", JS "8", Go "9"; Ken sends the Go
/// value because it follows the Go SDK's protocol behaviour.
pub const CLIENT_TYPE: &str = "x-modal-client-type";
/// Value Ken sends in [`CLIENT_TYPE`] (the Go SDK's value).
pub const CLIENT_TYPE_VALUE: &str = "9";
/// Client version of the caller.
pub const CLIENT_VERSION: &str = "x-modal-client-version";
/// Value Ken sends in [`CLIENT_VERSION`].
pub const CLIENT_VERSION_VALUE: &str = "1.0.0";
/// The token id, on every control-plane call.
pub const TOKEN_ID: &str = "x-modal-token-id";
/// The token secret, on every control-plane call.
pub const TOKEN_SECRET: &str = "x-modal-token-secret";
/// The JWT from `AuthTokenGet`, on every control-plane call except `AuthTokenGet`.
pub const AUTH_TOKEN: &str = "x-modal-auth-token";
/// UUIDv4, the same on every attempt of one logical unary call.
pub const IDEMPOTENCY_KEY: &str = "x-idempotency-key";
/// Attempt number of a unary call: 0, 1, ...
pub const RETRY_ATTEMPT: &str = "x-retry-attempt";
/// Seconds since the first attempt of a unary call.
pub const RETRY_DELAY: &str = "x-retry-delay";
/// The only header sent to the task command router: `Bearer <jwt>`.
pub const AUTHORIZATION: &str = "authorization";
/// Type URL of an [`RpcRetryPolicy`](super::modal_client::RpcRetryPolicy) status detail.
pub const RPC_RETRY_POLICY_TYPE_URL: &str = "type.googleapis.com/modal.client.RPCRetryPolicy";
