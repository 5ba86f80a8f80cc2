//! Settings of a test server: credentials, timing and stream behaviour.

use std::path::PathBuf;
use std::time::Duration;

use ken_core::Secret;

/// When the server ends a server stream (`ImageJoinStreaming`, `TaskExecStdioRead`)
/// before it is complete, so that clients must resume it.
///
/// The real service ends streams about every 55 s; the test server ends them much
/// sooner so that every test exercises the resume path.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamBehavior {
    /// End a stream after it has been open this long. `None` never ends it by time.
    pub end_after: Option<Duration>,
    /// End a stream after this many items. `None` never ends it by count.
    pub end_after_items: Option<usize>,
    /// Send an item with no data at the start of every stream, as the real service
    /// does from time to time.
    pub empty_batches: bool,
    /// End an image log stream early with `UNAVAILABLE` instead of a clean end.
    /// Exec output streams always end early with `UNAVAILABLE`, because a clean
    /// end of `TaskExecStdioRead` means EOF.
    pub end_with_unavailable: bool,
}

impl StreamBehavior {
    /// Streams that end only when they are complete, with no empty items.
    pub fn complete() -> Self {
        StreamBehavior {
            end_after: None,
            end_after_items: None,
            empty_batches: false,
            end_with_unavailable: false,
        }
    }
}

impl StreamBehavior {
    /// Sets the time after which a stream ends early.
    pub fn with_end_after(mut self, after: Option<Duration>) -> Self {
        self.end_after = after;
        self
    }

    /// Sets the number of items after which a stream ends early.
    pub fn with_end_after_items(mut self, items: Option<usize>) -> Self {
        self.end_after_items = items;
        self
    }

    /// Sets whether every stream starts with an empty item.
    pub fn with_empty_batches(mut self, empty_batches: bool) -> Self {
        self.empty_batches = empty_batches;
        self
    }

    /// Sets whether image log streams end early with `UNAVAILABLE` instead of a
    /// clean end.
    pub fn with_end_with_unavailable(mut self, unavailable: bool) -> Self {
        self.end_with_unavailable = unavailable;
        self
    }
}

impl Default for StreamBehavior {
    /// Streams that end cleanly after 2 s or 64 items, whichever comes first, and
    /// start with an empty item.
    fn default() -> Self {
        StreamBehavior {
            end_after: Some(Duration::from_secs(2)),
            end_after_items: Some(64),
            empty_batches: true,
            end_with_unavailable: false,
        }
    }
}

/// Settings of a [`ModalTestServer`](crate::ModalTestServer).
///
/// Build it with [`ModalTestServerConfig::new`] and change fields or use the
/// `with_*` methods. Most settings can also be changed while the server runs,
/// through the handle's knobs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ModalTestServerConfig {
    /// The token id clients must send in `x-modal-token-id`.
    pub token_id: String,
    /// The token secret clients must send in `x-modal-token-secret`.
    pub token_secret: Secret,
    /// Name of the only environment the server has. An empty `environment_name`
    /// in a request means this one.
    pub environment: String,
    /// Time from `SandboxCreate` until the sandbox's task id appears.
    pub task_delay: Duration,
    /// Lifetime of the auth tokens that `AuthTokenGet` issues (their `exp` claim).
    pub auth_token_ttl: Duration,
    /// Lifetime of the JWTs that `TaskGetCommandRouterAccess` issues.
    pub router_jwt_ttl: Duration,
    /// When server streams end before they are complete.
    pub streams: StreamBehavior,
    /// Maximum sandbox creations per second, or `None` for no limit.
    pub sandbox_rate_limit: Option<u32>,
    /// Number of sandboxes in one `SandboxList` page.
    pub list_page_size: usize,
    /// Directory that keeps the exported root file systems of built images across
    /// servers, keyed by the Docker image id. `None` exports them into the server's
    /// own temporary directory, which is removed at shutdown.
    pub rootfs_cache: Option<PathBuf>,
}

impl ModalTestServerConfig {
    /// Creates a configuration with a random token, a 500 ms task delay, 1 h token
    /// lifetimes, the default [`StreamBehavior`] and no rate limit.
    pub fn new() -> Self {
        ModalTestServerConfig {
            token_id: format!("ak-{}", crate::ids::random_base62(22)),
            token_secret: Secret::new(format!("as-{}", crate::ids::random_base62(22))),
            environment: "main".to_owned(),
            task_delay: Duration::from_millis(500),
            auth_token_ttl: Duration::from_secs(3600),
            router_jwt_ttl: Duration::from_secs(3600),
            streams: StreamBehavior::default(),
            sandbox_rate_limit: None,
            list_page_size: 10,
            rootfs_cache: None,
        }
    }

    /// Sets the token id and secret clients must send.
    pub fn with_token(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.token_id = id.into();
        self.token_secret = Secret::new(secret.into());
        self
    }

    /// Sets the time from `SandboxCreate` until the task id appears.
    pub fn with_task_delay(mut self, delay: Duration) -> Self {
        self.task_delay = delay;
        self
    }

    /// Sets when server streams end before they are complete.
    pub fn with_streams(mut self, streams: StreamBehavior) -> Self {
        self.streams = streams;
        self
    }

    /// Sets the lifetime of router JWTs.
    pub fn with_router_jwt_ttl(mut self, ttl: Duration) -> Self {
        self.router_jwt_ttl = ttl;
        self
    }

    /// Sets the lifetime of auth tokens.
    pub fn with_auth_token_ttl(mut self, ttl: Duration) -> Self {
        self.auth_token_ttl = ttl;
        self
    }

    /// Limits sandbox creations to `per_second`.
    pub fn with_sandbox_rate_limit(mut self, per_second: u32) -> Self {
        self.sandbox_rate_limit = Some(per_second);
        self
    }

    /// Keeps exported image file systems in `dir` across servers.
    pub fn with_rootfs_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.rootfs_cache = Some(dir.into());
        self
    }
}

impl Default for ModalTestServerConfig {
    fn default() -> Self {
        Self::new()
    }
}
