//! The server's shared state: every object it created, the request log, the
//! violations it recorded and the fault knobs.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use ken_core::Secret;
use tokio_util::sync::CancellationToken;

use crate::config::{ModalTestServerConfig, StreamBehavior};
use crate::image::ImageEntry;
use crate::inspect::{AppRecord, RequestRecord, Violation};
use crate::runtime::Host;
use crate::sandbox::SandboxEntry;

/// Point at which an injected `UNAVAILABLE` fails a request: before or after the
/// server acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Fail before the server acts on the request, as when it never arrived.
    BeforeHandling,
    /// Act on the request, then fail, as when the response was lost on the way
    /// back. A retry with the same idempotency key must not act twice.
    AfterHandling,
}

/// The mutable part of the state, behind one lock.
#[derive(Default)]
pub(crate) struct Inner {
    pub(crate) apps: BTreeMap<String, AppRecord>,
    pub(crate) images: BTreeMap<String, Arc<ImageEntry>>,
    pub(crate) secrets: BTreeMap<String, BTreeMap<String, Secret>>,
    pub(crate) sandboxes: BTreeMap<String, Arc<SandboxEntry>>,
    /// Task id to sandbox id.
    pub(crate) tasks: HashMap<String, String>,
    /// Idempotency key of a `SandboxCreate` to the sandbox it created.
    pub(crate) create_keys: HashMap<String, String>,
    /// Number of sandboxes created per idempotency key (more than 1 is a bug).
    pub(crate) creates_per_key: HashMap<String, usize>,
    /// Method and last attempt seen per idempotency key.
    pub(crate) keys: HashMap<String, KeyUse>,
    /// Methods armed to fail once with `UNAVAILABLE`.
    pub(crate) armed: HashMap<String, FailMode>,
    /// Method and key pairs that already failed once.
    pub(crate) failed_once: HashSet<(String, String)>,
    pub(crate) requests: Vec<RequestRecord>,
    pub(crate) violations: Vec<Violation>,
    /// Methods called with a wrong token id or secret, in order. These are client
    /// errors that the server rejects with `UNAUTHENTICATED`, not protocol violations.
    pub(crate) rejected_credentials: Vec<String>,
    /// Times of recent sandbox creations, for the rate limit.
    pub(crate) recent_creations: VecDeque<Instant>,
    pub(crate) rate_limit: Option<u32>,
    pub(crate) streams: StreamBehavior,
    pub(crate) task_delay: Duration,
    pub(crate) auth_token_ttl: Duration,
    pub(crate) router_jwt_ttl: Duration,
    /// Router JWTs issued so far.
    pub(crate) issued_jwts: Vec<String>,
    /// Router JWTs revoked by a knob, as if they had expired.
    pub(crate) revoked_jwts: HashSet<String>,
    /// `created_at` of the newest sandbox, so that every sandbox gets a distinct one.
    pub(crate) last_created_at: f64,
}

/// One idempotency key's use so far.
#[derive(Debug, Clone)]
pub(crate) struct KeyUse {
    pub(crate) method: String,
    pub(crate) attempt: u32,
    pub(crate) delay: f64,
}

/// Everything the handlers share.
pub(crate) struct State {
    pub(crate) config: ModalTestServerConfig,
    /// Key that signs the auth tokens and router JWTs.
    pub(crate) jwt_key: Vec<u8>,
    /// The router's URL, `http://127.0.0.1:PORT`.
    pub(crate) router_url: String,
    pub(crate) host: Arc<Host>,
    /// Cancelled at shutdown; background tasks stop on it.
    pub(crate) shutdown: CancellationToken,
    inner: Mutex<Inner>,
}

impl State {
    pub(crate) fn new(
        config: ModalTestServerConfig,
        router_url: String,
        host: Arc<Host>,
    ) -> Self {
        let inner = Inner {
            rate_limit: config.sandbox_rate_limit,
            streams: config.streams.clone(),
            task_delay: config.task_delay,
            auth_token_ttl: config.auth_token_ttl,
            router_jwt_ttl: config.router_jwt_ttl,
            ..Inner::default()
        };
        State {
            config,
            jwt_key: crate::ids::random_base62(32).into_bytes(),
            router_url,
            host,
            shutdown: CancellationToken::new(),
            inner: Mutex::new(inner),
        }
    }

    /// Locks the mutable state. A poisoned lock is taken over, because a panic in
    /// one handler must not take the whole server down.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a protocol violation and logs it.
    pub(crate) fn violation(&self, method: &str, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!(method, %message, "protocol violation");
        self.lock().violations.push(Violation {
            method: method.to_owned(),
            message,
        });
    }

    /// Records a call with a wrong token id or secret and logs it.
    pub(crate) fn reject_credentials(&self, method: &str) {
        tracing::info!(method, "rejected a call with a wrong token id or token secret");
        self.lock().rejected_credentials.push(method.to_owned());
    }

    /// Returns the sandbox with `id`, or `NOT_FOUND`.
    pub(crate) fn sandbox(&self, id: &str) -> Result<Arc<SandboxEntry>, tonic::Status> {
        self.lock()
            .sandboxes
            .get(id)
            .cloned()
            .ok_or_else(|| tonic::Status::not_found(format!("Sandbox {id} not found")))
    }

    /// Returns the sandbox that runs task `task_id`, or `NOT_FOUND`.
    pub(crate) fn sandbox_of_task(&self, task_id: &str) -> Result<Arc<SandboxEntry>, tonic::Status> {
        let inner = self.lock();
        inner
            .tasks
            .get(task_id)
            .and_then(|id| inner.sandboxes.get(id))
            .cloned()
            .ok_or_else(|| tonic::Status::not_found(format!("Task {task_id} not found")))
    }

    /// Returns the environment a request names, or `NOT_FOUND` for an unknown one.
    pub(crate) fn environment(&self, requested: &str) -> Result<String, tonic::Status> {
        if requested.is_empty() || requested == self.config.environment {
            Ok(self.config.environment.clone())
        } else {
            Err(tonic::Status::not_found(format!(
                "Environment '{requested}' not found"
            )))
        }
    }
}
