//! The server's shared state behind one mutex.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use time::{Duration as TimeDuration, OffsetDateTime};

use crate::config::TestServerConfig;
use crate::faults::{InjectedFailure, RateLimit, RegistrationMode};
use crate::ids;
use crate::model::{AuthKey, ControlRequest, Device, RecordedRequest, Route, ServeConfig, Violation};
use crate::policy::{PolicyFile, DEFAULT_POLICY};

/// An access token issued at the OAuth token endpoint.
#[derive(Clone, Debug)]
pub(crate) struct IssuedToken {
    pub(crate) client_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) expires_at: Instant,
}

/// A policy edit waiting for the next `GET` of the policy file.
#[derive(Clone, Debug)]
pub(crate) struct PendingEdit {
    pub(crate) comment: String,
    pub(crate) rule: String,
}

/// Everything the server stores.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) keys: Vec<AuthKey>,
    pub(crate) devices: Vec<Device>,
    pub(crate) policy: PolicyFile,
    pub(crate) policy_writes: u32,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) violations: Vec<Violation>,
    pub(crate) tokens: HashMap<String, IssuedToken>,
    pub(crate) tokens_issued: u32,
    pub(crate) failures: Vec<InjectedFailure>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) edit_after_get: Option<PendingEdit>,
    pub(crate) registration: RegistrationMode,
    pub(crate) control_requests: Vec<ControlRequest>,
    pub(crate) serve: Vec<ServeConfig>,
    pub(crate) https_enabled: bool,
    next_address: u32,
}

/// The configuration and the state, shared by the listeners and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: TestServerConfig,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(config: TestServerConfig) -> Shared {
        let policy = match &config.initial_policy {
            Some(text) => PolicyFile {
                text: text.clone(),
                untouched_default: false,
            },
            None => PolicyFile {
                text: DEFAULT_POLICY.to_owned(),
                untouched_default: true,
            },
        };
        let state = State {
            keys: Vec::new(),
            devices: Vec::new(),
            policy,
            policy_writes: 0,
            requests: Vec::new(),
            violations: Vec::new(),
            tokens: HashMap::new(),
            tokens_issued: 0,
            failures: Vec::new(),
            rate_limit: None,
            edit_after_get: None,
            registration: RegistrationMode::Normal,
            control_requests: Vec::new(),
            serve: Vec::new(),
            https_enabled: true,
            next_address: 1,
        };
        Shared {
            config,
            state: Mutex::new(state),
        }
    }

    /// Locks the state; a panic in another holder does not poison it for tests.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    pub(crate) fn violation(&mut self, route: Route, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!(?route, %message, "test server recorded a client violation");
        self.violations.push(Violation { route, message });
    }

    /// Finds a device by legacy id or node id.
    pub(crate) fn device_index(&self, id: &str) -> Option<usize> {
        self.devices
            .iter()
            .position(|d| !d.hidden && (d.id == id || d.node_id == id))
    }

    /// Adds a device with fresh ids and addresses and a unique MagicDNS name.
    pub(crate) fn add_device(&mut self, spec: DeviceSpec, suffix: &str, admin: &str) -> Device {
        let n = self.next_address;
        self.next_address += 1;
        let ipv4 = Ipv4Addr::new(100, 64 + ((n >> 16) & 0x3f) as u8, ((n >> 8) & 0xff) as u8, (n & 0xff) as u8);
        let ipv6 = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, (n >> 16) as u16, (n & 0xffff) as u16);

        let mut label = spec.hostname.to_lowercase();
        let mut suffix_n = 1;
        while self
            .devices
            .iter()
            .any(|d| d.name.split('.').next() == Some(label.as_str()))
        {
            label = format!("{}-{suffix_n}", spec.hostname.to_lowercase());
            suffix_n += 1;
        }

        let now = OffsetDateTime::now_utc();
        let device = Device {
            id: ids::numeric_id(),
            node_id: ids::stable_id('n'),
            name: format!("{label}.{suffix}"),
            hostname: spec.hostname,
            ipv4,
            ipv6,
            user: if spec.tags.is_empty() {
                admin.to_owned()
            } else {
                "tagged-devices".to_owned()
            },
            tags: spec.tags,
            authorized: spec.authorized,
            is_ephemeral: spec.ephemeral,
            connected_to_control: spec.online,
            last_seen: now - spec.last_seen_ago,
            created: now - spec.last_seen_ago,
            expires: now + TimeDuration::days(180),
            auth_key_id: spec.auth_key_id,
            hidden: spec.hidden,
        };
        self.devices.push(device.clone());
        device
    }
}

/// The properties of a new device, for [`crate::TestServer::add_device`].
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    /// Host name the device reports.
    pub hostname: String,
    /// Tags of the device (empty for a user-owned device).
    pub tags: Vec<String>,
    /// Whether the device is ephemeral.
    pub ephemeral: bool,
    /// Whether the device is approved.
    pub authorized: bool,
    /// Whether the device is connected to the control plane.
    pub online: bool,
    /// How long ago the device was last seen (and registered).
    pub last_seen_ago: TimeDuration,
    /// The auth key the device registered with.
    pub auth_key_id: Option<String>,
    /// Whether the device is missing from the API.
    pub hidden: bool,
}

impl DeviceSpec {
    /// Builds an online, authorized, non-ephemeral device with `tags`, seen just now.
    pub fn new(hostname: impl Into<String>, tags: &[&str]) -> Self {
        DeviceSpec {
            hostname: hostname.into(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            ephemeral: false,
            authorized: true,
            online: true,
            last_seen_ago: TimeDuration::ZERO,
            auth_key_id: None,
            hidden: false,
        }
    }

    /// Makes the device offline, last seen `ago`.
    pub fn offline_since(mut self, ago: TimeDuration) -> Self {
        self.online = false;
        self.last_seen_ago = ago;
        self
    }

    /// Makes the device ephemeral.
    pub fn ephemeral(mut self) -> Self {
        self.ephemeral = true;
        self
    }
}
