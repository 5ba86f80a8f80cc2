//! The ready marker: a file written inside the sandbox when its launch finished.
//!
//! Labels cannot change after a container is created, so readiness lives in the
//! sandbox itself. Garbage collection reads it to tell a finished launch from an
//! abandoned one.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::exec::ExecRequest;
use crate::plan::RUN_DIR;
use crate::sandbox::{Sandbox, SandboxProviderExt};

/// Contents of the ready marker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReadyMarker {
    /// Unix seconds when the launch finished.
    pub ready_at: u64,
    /// Milliseconds per phase, in launch order.
    pub phases: Vec<(String, u64)>,
    /// Fingerprint of the seed inputs, when the sandbox was seeded.
    pub seed_fingerprint: Option<String>,
}

/// Path of the marker inside the sandbox.
pub(super) fn path() -> String {
    format!("{RUN_DIR}/ready.json")
}

pub(super) async fn write(sandbox: &Sandbox, marker: &ReadyMarker) -> Result<()> {
    let json = serde_json::to_vec_pretty(marker).expect("marker serializes");
    sandbox
        .provider()
        .write_file(sandbox.name(), &path(), Bytes::from(json), 0o644)
        .await
}

/// Reads the marker; `None` when it is missing or the sandbox cannot be reached.
pub(super) async fn read(sandbox: &Sandbox) -> Option<ReadyMarker> {
    let request = ExecRequest::new(["cat", path().as_str()]).timeout(Duration::from_secs(10));
    let output = sandbox.exec_output(request).await.ok()?;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}
