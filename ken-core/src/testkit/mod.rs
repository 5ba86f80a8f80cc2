//! A conformance kit that every [`SandboxProvider`] runs.
//!
//! Each check is a public async function that takes a `&dyn SandboxProvider` and a
//! [`KitConfig`], creates its own sandboxes with unique names, and panics with a
//! message saying what went wrong. Every sandbox a check creates is destroyed when
//! the check ends, also when an assertion failed, and the check then verifies that
//! [`SandboxProvider::resources`] lists nothing left of it.
//!
//! A provider crate calls each check from its own `#[tokio::test]` (with the
//! multi-thread runtime), or [`run_all`] from one test:
//!
//! ```no_run
//! # async fn example(provider: &dyn ken_core::SandboxProvider) {
//! use ken_core::testkit::{self, KitConfig};
//! use ken_core::EventSink;
//!
//! let image = provider
//!     .prepare_image(&testkit::kit_image_spec(), &EventSink::none())
//!     .await
//!     .expect("failed to build the kit image");
//! testkit::run_all(provider, &KitConfig::new(image)).await;
//! # }
//! ```
//!
//! # Capabilities
//! Checks never skip silently. Where the provider's [`Capabilities`] lack a feature,
//! the check calls it anyway and asserts that the call fails with
//! [`Error::Unsupported`] whose `provider` is [`SandboxProvider::name`] and whose
//! `operation` contains a keyword for the feature:
//!
//! | capability | calls checked | keyword |
//! |---|---|---|
//! | `build_images` | `prepare_image` | `image` |
//! | `stdin` | `exec` with [`ExecRequest::stdin`] | `stdin` |
//! | `exec_user` | `exec` with [`ExecRequest::user`] | `user` |
//! | `endpoints` | `create` with ports, `endpoint` | `endpoint` |
//! | `resource_limits` | `create` with [`Resources`] set | `limit` |
//! | `snapshot` | `snapshot` | `snapshot` |
//!
//! A provider without `isolation` is checked for the consequence instead:
//! [`LocalNetwork`] must refuse the standard access policy for it.
//!
//! # What the sandbox image needs
//! - `sh`, `bash` and coreutils (`mktemp`, `timeout`, `printf`) in every check;
//! - `ps` from procps in the exec checks that look for leftover processes;
//! - `python3` in the endpoint, isolation and many-sandbox checks;
//! - `hostname` in the isolation check.
//!
//! [`kit_image_spec`] builds such an image from `debian:bookworm-slim`.
//!
//! Paths inside the sandbox come from `mktemp -d` run in the sandbox, so a provider
//! whose sandboxes share the host's file system can point `TMPDIR` at the sandbox's
//! own directory.
//!
//! [`Capabilities`]: crate::sandbox::Capabilities
//! [`Error::Unsupported`]: crate::Error::Unsupported
//! [`ExecRequest::stdin`]: crate::ExecRequest::stdin
//! [`ExecRequest::user`]: crate::ExecRequest::user
//! [`Resources`]: crate::sandbox::Resources
//! [`LocalNetwork`]: crate::LocalNetwork

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use sha2::{Digest, Sha256};

use crate::labels::{self, Labels};
use crate::sandbox::{ImageRef, ImageSpec, SandboxProvider};

mod exec;
mod files;
mod lifecycle;
mod network;
mod snapshot;
mod support;

pub use exec::{
    exec_binary_output, exec_env_unchanged, exec_exit_codes, exec_kill_group, exec_large_output,
    exec_stdin, exec_timeout, exec_unread_output, exec_user, exec_without_stdin, exec_workdir,
};
pub use files::files_round_trip;
pub use lifecycle::{
    create_duplicate_name, destroy_idempotent, image_cache, labels_round_trip, lifecycle,
    many_sandboxes, remove_resources, resource_limits,
};
pub use network::{endpoints, isolation};
pub use snapshot::snapshot;

/// The Dockerfile of the image the kit's checks need; see [`kit_image_spec`].
pub const KIT_DOCKERFILE: &str = "FROM debian:bookworm-slim\n\
RUN apt-get update && apt-get install -y --no-install-recommends procps python3 && rm -rf /var/lib/apt/lists/*\n";

/// Environment variable that turns an unreachable Docker engine from a skipped test
/// into a failed one when set to `1` or `true`; see [`require_docker_or_skip`].
pub const REQUIRE_DOCKER_VAR: &str = "KEN_REQUIRE_DOCKER";

/// Settings for a kit run.
///
/// Build it with [`KitConfig::new`] and change fields or use the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KitConfig {
    /// The image every kit sandbox starts from; see the module documentation for
    /// what it must contain.
    pub image: ImageRef,
    /// Start of every sandbox name the kit creates. A check appends a short tag and a
    /// random suffix, so the prefix should stay under 20 characters.
    pub name_prefix: String,
    /// Value of the owner label on the kit's sandboxes.
    pub owner: String,
    /// Time to live given to the kit's sandboxes, and their expiry label.
    pub ttl: Duration,
    /// Number of sandboxes [`many_sandboxes`] creates at once.
    pub many_sandboxes: usize,
    /// The host every endpoint URL must name, for example `127.0.0.1` for a local
    /// provider; `None` accepts any host.
    pub endpoint_host: Option<String>,
    /// Maximum time one provider call, or one wait for output, may take before the
    /// check fails as hung. It is a guard against deadlocks, not a performance limit.
    pub hang_limit: Duration,
}

impl KitConfig {
    /// Creates a configuration for sandboxes started from `image`, with endpoints
    /// expected on `127.0.0.1` and 20 sandboxes in [`many_sandboxes`].
    pub fn new(image: ImageRef) -> Self {
        KitConfig {
            image,
            name_prefix: "ken-kit".to_owned(),
            owner: "ken-kit".to_owned(),
            ttl: Duration::from_secs(3600),
            many_sandboxes: 20,
            endpoint_host: Some("127.0.0.1".to_owned()),
            hang_limit: Duration::from_secs(180),
        }
    }

    /// Sets [`KitConfig::name_prefix`].
    pub fn with_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Sets [`KitConfig::many_sandboxes`].
    pub fn with_many_sandboxes(mut self, count: usize) -> Self {
        self.many_sandboxes = count;
        self
    }

    /// Sets [`KitConfig::endpoint_host`].
    pub fn with_endpoint_host(mut self, host: Option<String>) -> Self {
        self.endpoint_host = host;
        self
    }

    /// Sets [`KitConfig::hang_limit`].
    pub fn with_hang_limit(mut self, limit: Duration) -> Self {
        self.hang_limit = limit;
        self
    }
}

/// Returns the definition of the image the kit needs: [`KIT_DOCKERFILE`] with an
/// empty build context.
///
/// The context is a directory under [`std::env::temp_dir`] named by a hash of the
/// Dockerfile. It is created here and left in place, so it stays valid for the build
/// and for later calls.
///
/// # Panics
/// When the context directory cannot be created.
pub fn kit_image_spec() -> ImageSpec {
    let digest = hex::encode(Sha256::digest(KIT_DOCKERFILE.as_bytes()));
    let context: PathBuf = std::env::temp_dir().join(format!("ken-kit-context-{}", &digest[..16]));
    std::fs::create_dir_all(&context).unwrap_or_else(|error| {
        panic!(
            "failed to create the kit's build context {}: {error}",
            context.display()
        )
    });

    let mut labels = Labels::new();
    labels.insert(labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    labels.insert(labels::CACHE, "true");

    ImageSpec {
        dockerfile: KIT_DOCKERFILE.to_owned(),
        context,
        extra_files: Default::default(),
        labels,
    }
}

/// The signature of every check: a provider and the configuration, returning a
/// future that panics when the provider fails the check.
pub type CheckFn = for<'a> fn(&'a dyn SandboxProvider, &'a KitConfig) -> BoxFuture<'a, ()>;

/// One check of the kit, with its name.
#[derive(Clone, Copy)]
pub struct Check {
    /// The name of the check's public function, for example `lifecycle`.
    pub name: &'static str,
    /// The check itself.
    pub run: CheckFn,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ken_kit_checks {
    ($mode:ident $($args:tt)*) => {
        $crate::__ken_kit_expand! {
            $mode [$($args)*]
            image_cache,
            lifecycle,
            create_duplicate_name,
            labels_round_trip,
            remove_resources,
            destroy_idempotent,
            resource_limits,
            exec_large_output,
            exec_unread_output,
            exec_timeout,
            exec_kill_group,
            exec_without_stdin,
            exec_binary_output,
            exec_env_unchanged,
            exec_stdin,
            exec_workdir,
            exec_user,
            exec_exit_codes,
            files_round_trip,
            endpoints,
            isolation,
            snapshot,
            many_sandboxes
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __ken_kit_expand {
    (list [] $($check:ident),*) => {
        /// Every check of the kit, in the order [`run_all`] runs them.
        pub const CHECKS: &[Check] = &[
            $(Check { name: stringify!($check), run: |provider, config| Box::pin($check(provider, config)) },)*
        ];
    };
    (tests [$setup:path] $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some((provider, config)) = $setup(stringify!($check)).await else {
                    return;
                };
                $crate::testkit::$check(&provider, &config).await;
            }
        )*
    };
}

/// Generates one `#[tokio::test]` per kit check, so that each check passes or fails
/// on its own in `cargo test`.
///
/// `$setup` is an async function taking the test's name and returning
/// `Option<(provider, KitConfig)>`; `None` skips the test (see
/// [`require_docker_or_skip`]). The calling crate needs `tokio` with the `macros` and
/// `rt-multi-thread` features.
///
/// ```ignore
/// async fn setup(test: &str) -> Option<(MyProvider, KitConfig)> { ... }
/// ken_core::conformance_tests!(setup);
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::__ken_kit_checks!(tests $setup);
    };
}

__ken_kit_checks!(list);

/// The outcome of [`run_report`]: which checks passed and which failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KitReport {
    /// Names of the checks that passed.
    pub passed: Vec<&'static str>,
    /// Names of the checks that failed, each with its panic message.
    pub failed: Vec<(&'static str, String)>,
}

impl KitReport {
    /// Returns true when no check failed.
    pub fn is_success(&self) -> bool {
        self.failed.is_empty()
    }
}

impl fmt::Display for KitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, message) in &self.failed {
            writeln!(f, "FAILED {name}: {message}")?;
        }
        write!(
            f,
            "{} passed, {} failed",
            self.passed.len(),
            self.failed.len()
        )
    }
}

/// Runs every check in [`CHECKS`], one after the other, and returns which passed.
///
/// A failing check does not stop the run: each check removes its own sandboxes, so
/// the next one starts clean. Progress goes to standard error.
pub async fn run_report(provider: &dyn SandboxProvider, config: &KitConfig) -> KitReport {
    let mut report = KitReport::default();
    for check in CHECKS {
        eprintln!(
            "kit: {} on the {} provider started",
            check.name,
            provider.name()
        );
        match AssertUnwindSafe((check.run)(provider, config))
            .catch_unwind()
            .await
        {
            Ok(()) => {
                eprintln!("kit: {} passed", check.name);
                report.passed.push(check.name);
            }
            Err(panic) => {
                let message = support::panic_message(panic.as_ref());
                eprintln!("kit: {} FAILED: {message}", check.name);
                report.failed.push((check.name, message));
            }
        }
    }
    report
}

/// Runs every check in [`CHECKS`] and panics at the end if any failed.
///
/// # Panics
/// When at least one check failed; the message lists each failure.
pub async fn run_all(provider: &dyn SandboxProvider, config: &KitConfig) {
    let report = run_report(provider, config).await;
    eprintln!("kit: {report}");
    if !report.is_success() {
        panic!(
            "{} of {} kit checks failed on the {} provider:\n{report}",
            report.failed.len(),
            CHECKS.len(),
            provider.name()
        );
    }
}

/// Decides whether a test that needs a Docker engine runs, from the outcome of a
/// probe such as a ping of the engine.
///
/// Returns the probe's value when it succeeded. When it failed, the test must not
/// pass unnoticed in CI: with [`REQUIRE_DOCKER_VAR`] set to `1` or `true` this
/// panics, and otherwise it prints a line saying that `test` was skipped and why,
/// and returns `None`.
///
/// ```no_run
/// # async fn ping() -> Result<(), String> { Ok(()) }
/// # async fn lifecycle_test() {
/// let Some(()) = ken_core::testkit::require_docker_or_skip("lifecycle", ping().await) else {
///     return;
/// };
/// # }
/// ```
pub fn require_docker_or_skip<T, E: fmt::Display>(test: &str, probe: Result<T, E>) -> Option<T> {
    let required = std::env::var(REQUIRE_DOCKER_VAR)
        .map(|value| is_true(&value))
        .unwrap_or(false);
    decide_docker(test, probe, required)
}

fn is_true(value: &str) -> bool {
    value == "1" || value.eq_ignore_ascii_case("true")
}

fn decide_docker<T, E: fmt::Display>(test: &str, probe: Result<T, E>, required: bool) -> Option<T> {
    match probe {
        Ok(value) => Some(value),
        Err(error) if required => panic!(
            "{test} needs a Docker engine, and {REQUIRE_DOCKER_VAR} is set, but the engine is unreachable: {error}"
        ),
        Err(error) => {
            eprintln!(
                "skipped {test}: the Docker engine is unreachable ({error}); \
                 set {REQUIRE_DOCKER_VAR}=1 to make this a failure"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_probe_success_runs_the_test() {
        assert_eq!(decide_docker::<_, String>("t", Ok(7), false), Some(7));
        assert_eq!(decide_docker::<_, String>("t", Ok(7), true), Some(7));
    }

    #[test]
    fn docker_probe_failure_skips_when_not_required() {
        assert_eq!(
            decide_docker::<(), _>("t", Err("connection refused"), false),
            None
        );
    }

    #[test]
    #[should_panic(expected = "the engine is unreachable: connection refused")]
    fn docker_probe_failure_panics_when_required() {
        decide_docker::<(), _>("t", Err("connection refused"), true);
    }

    #[test]
    fn require_docker_values() {
        assert!(is_true("1"));
        assert!(is_true("TRUE"));
        assert!(!is_true("0"));
        assert!(!is_true(""));
    }

    #[test]
    fn kit_image_spec_context_exists() {
        let spec = kit_image_spec();
        assert!(spec.context.is_dir());
        assert!(spec.dockerfile.starts_with("FROM debian:bookworm-slim\n"));
        assert!(spec.labels.is_managed());
    }

    #[test]
    fn check_names_are_unique() {
        let mut names: Vec<&str> = CHECKS.iter().map(|check| check.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CHECKS.len());
    }
}
