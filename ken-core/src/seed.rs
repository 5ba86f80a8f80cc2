//! The seeder trait and the built-in seeders.

use std::fmt;

use async_trait::async_trait;

use crate::error::Result;
use crate::sandbox::Sandbox;

/// Loads data into a sandbox once its services are up.
#[async_trait]
pub trait Seeder: Send + Sync + fmt::Debug {
    /// Returns a short description, for example `sql: 2 files into demo`.
    fn describe(&self) -> String;

    /// Returns a hex digest of everything the seed depends on, so that a seeded state
    /// can be cached and reused while the inputs stay the same.
    async fn fingerprint(&self, sandbox: &Sandbox) -> Result<String>;

    /// Loads the data. A failure leaves the data source as it was, where the data
    /// source allows it (SQL runs in one transaction).
    async fn seed(&self, sandbox: &Sandbox) -> Result<()>;
}
