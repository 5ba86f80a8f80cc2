//! Helpers shared by the checks: a scope that destroys the sandboxes a check made,
//! exec shortcuts that panic with context, process listings and an HTTP fetch.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use sha2::{Digest, Sha256};

use super::KitConfig;
use crate::error::{Error, Result};
use crate::exec::{shell_quote, ExecOutput, ExecRequest};
use crate::labels::{self, LabelSelector, Labels};
use crate::sandbox::{
    Endpoint, PortSpec, Resource, Resources, SandboxInfo, SandboxName, SandboxProvider,
    SandboxProviderExt, SandboxSpec,
};

/// Environment variable that marks every process of one exec, so that `ps e` can
/// find them among unrelated processes.
pub(crate) const MARKER_VAR: &str = "KEN_KIT_MARKER";

/// The sandboxes and images one check made, destroyed when the check ends.
pub(crate) struct Scope<'a> {
    pub(crate) provider: &'a dyn SandboxProvider,
    pub(crate) config: &'a KitConfig,
    check: &'static str,
    sandboxes: Mutex<Vec<SandboxName>>,
    images: Mutex<Vec<Resource>>,
}

impl<'a> Scope<'a> {
    pub(crate) fn new(
        provider: &'a dyn SandboxProvider,
        config: &'a KitConfig,
        check: &'static str,
    ) -> Self {
        Scope {
            provider,
            config,
            check,
            sandboxes: Mutex::new(Vec::new()),
            images: Mutex::new(Vec::new()),
        }
    }

    /// Runs the check's body, then destroys every sandbox of the scope and checks
    /// that nothing of them is left. A panic of the body is resumed after cleanup.
    pub(crate) async fn run(&self, body: impl Future<Output = ()>) {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        let problems = self.cleanup().await;
        match outcome {
            Err(panic) => {
                for problem in &problems {
                    eprintln!(
                        "kit {}: cleanup after the failure also failed: {problem}",
                        self.check
                    );
                }
                std::panic::resume_unwind(panic);
            }
            Ok(()) if !problems.is_empty() => {
                panic!(
                    "kit {}: cleanup failed:\n{}",
                    self.check,
                    problems.join("\n")
                );
            }
            Ok(()) => {}
        }
    }

    /// Destroys the sandboxes, then removes the images (a snapshot may be in use by
    /// a sandbox until then), then checks that no resource of a sandbox is left.
    async fn cleanup(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let names = std::mem::take(&mut *self.sandboxes.lock().unwrap());
        for name in &names {
            if let Err(error) = self.bounded(self.provider.destroy(name)).await {
                problems.push(format!(
                    "destroy of sandbox {name} failed: {}",
                    chain(&error)
                ));
            }
        }

        let images = std::mem::take(&mut *self.images.lock().unwrap());
        for image in images {
            if let Err(error) = self.bounded(self.provider.remove_resource(&image)).await {
                problems.push(format!(
                    "removing image {} failed: {}",
                    image.id,
                    chain(&error)
                ));
            }
        }

        for name in &names {
            match self
                .bounded(self.provider.resources(&sandbox_selector(name)))
                .await
            {
                Ok(left) if left.is_empty() => {}
                Ok(left) => problems.push(format!(
                    "destroy of sandbox {name} left resources behind: {}",
                    describe_resources(&left)
                )),
                Err(error) => problems.push(format!(
                    "listing the resources of sandbox {name} failed: {}",
                    chain(&error)
                )),
            }
        }
        problems
    }

    /// Awaits `future` for at most the hang limit, turning a hang into an error.
    async fn bounded<T>(&self, future: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.config.hang_limit, future).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: "a provider call during cleanup".to_owned(),
                after: self.config.hang_limit,
            }),
        }
    }

    /// Awaits `future`, panicking when it takes longer than the hang limit.
    pub(crate) async fn within<T>(
        &self,
        operation: impl fmt::Display,
        future: impl Future<Output = T>,
    ) -> T {
        match tokio::time::timeout(self.config.hang_limit, future).await {
            Ok(value) => value,
            Err(_) => panic!(
                "{operation} did not finish within {} on the {} provider; it looks hung",
                humantime::format_duration(self.config.hang_limit),
                self.provider.name()
            ),
        }
    }

    /// Returns a new unique sandbox name with `tag` in it, registered for cleanup.
    pub(crate) fn name(&self, tag: &str) -> SandboxName {
        let raw = format!("{}-{tag}-{}", self.config.name_prefix, unique_suffix());
        let name = SandboxName::new(&raw).unwrap_or_else(|error| {
            panic!(
                "the kit's name prefix {:?} gives an invalid sandbox name: {error}",
                self.config.name_prefix
            )
        });
        self.sandboxes.lock().unwrap().push(name.clone());
        name
    }

    /// Registers an image (a snapshot) for removal when the check ends.
    pub(crate) fn remove_later(&self, image: Resource) {
        self.images.lock().unwrap().push(image);
    }

    /// Returns the spec of a plain sandbox named `name`: the kit's image and labels,
    /// no ports, no limits.
    pub(crate) fn spec(&self, name: &SandboxName) -> SandboxSpec {
        SandboxSpec {
            name: name.clone(),
            image: self.config.image.clone(),
            resources: Resources::default(),
            labels: Labels::for_sandbox(name.as_str(), &self.config.owner, self.config.ttl),
            env: Default::default(),
            secret_env: Default::default(),
            ports: Vec::new(),
            workdir: None,
            ttl: self.config.ttl,
        }
    }

    /// Creates the sandbox, panicking when that fails.
    pub(crate) async fn create(&self, spec: &SandboxSpec) -> SandboxInfo {
        let result = self
            .within(
                format!("create of {}", spec.name),
                self.provider.create(spec),
            )
            .await;
        result.unwrap_or_else(|error| {
            panic!("create of sandbox {} failed: {}", spec.name, chain(&error))
        })
    }

    /// Creates a plain sandbox with `tag` in its name and returns the name.
    pub(crate) async fn create_plain(&self, tag: &str) -> SandboxName {
        let name = self.name(tag);
        self.create(&self.spec(&name)).await;
        name
    }

    /// Looks the sandbox up, panicking when that fails.
    pub(crate) async fn get(&self, name: &SandboxName) -> SandboxInfo {
        let result = self
            .within(format!("get of {name}"), self.provider.get(name))
            .await;
        result.unwrap_or_else(|error| panic!("get of sandbox {name} failed: {}", chain(&error)))
    }

    /// Destroys the sandbox, panicking when that fails.
    pub(crate) async fn destroy(&self, name: &SandboxName) {
        let result = self
            .within(format!("destroy of {name}"), self.provider.destroy(name))
            .await;
        result.unwrap_or_else(|error| panic!("destroy of sandbox {name} failed: {}", chain(&error)))
    }

    /// Lists the resources labelled with the sandbox's name, panicking on failure.
    pub(crate) async fn resources_of(&self, name: &SandboxName) -> Vec<Resource> {
        let selector = sandbox_selector(name);
        let result = self
            .within(
                format!("resources of {name}"),
                self.provider.resources(&selector),
            )
            .await;
        result.unwrap_or_else(|error| {
            panic!(
                "listing the resources of sandbox {name} failed: {}",
                chain(&error)
            )
        })
    }

    /// Runs `request` to completion, panicking when it cannot start or its output
    /// cannot be read. The exit status is left to the caller.
    pub(crate) async fn exec(&self, name: &SandboxName, request: ExecRequest) -> ExecOutput {
        let command = describe_command(&request.command);
        let started = self
            .within(
                format!("exec of `{command}` in {name}"),
                self.provider.exec(name, request),
            )
            .await;
        let process = started.unwrap_or_else(|error| {
            panic!(
                "exec of `{command}` in sandbox {name} failed to start: {}",
                chain(&error)
            )
        });
        let output = self
            .within(
                format!("reading the output of `{command}` in {name}"),
                process.output(),
            )
            .await;
        output.unwrap_or_else(|error| {
            panic!(
                "reading the output of `{command}` in sandbox {name} failed: {}",
                chain(&error)
            )
        })
    }

    /// Runs `script` with `sh -c` and returns its standard output, panicking unless
    /// it exits with 0.
    pub(crate) async fn sh(&self, name: &SandboxName, script: &str) -> String {
        let output = self.exec(name, ExecRequest::shell(script)).await;
        assert!(
            output.status.success(),
            "`{script}` in sandbox {name} ended with {}; stderr: {}",
            output.status,
            output.stderr_text().trim_end()
        );
        output.stdout_text()
    }

    /// Creates a new empty directory inside the sandbox with `mktemp -d` and returns
    /// its absolute path.
    pub(crate) async fn scratch_dir(&self, name: &SandboxName) -> String {
        let path = self.sh(name, "mktemp -d").await.trim().to_owned();
        assert!(
            path.starts_with('/'),
            "`mktemp -d` in sandbox {name} printed {path:?}, not an absolute path"
        );
        path
    }

    /// Lists the live processes in the sandbox whose environment has
    /// `KEN_KIT_MARKER=marker`, as `ps` lines cut to 160 characters. Zombies are
    /// left out: they have exited and only wait to be reaped.
    pub(crate) async fn marked_processes(&self, name: &SandboxName, marker: &str) -> Vec<String> {
        let ps = ExecRequest::new(["ps", "-e", "-ww", "-o", "pid=,stat=,args=", "e"]);
        let output = self.exec(name, ps).await;
        assert!(
            output.status.success(),
            "`ps` in sandbox {name} ended with {}; the kit image needs procps. stderr: {}",
            output.status,
            output.stderr_text().trim_end()
        );

        let expected = format!("{MARKER_VAR}={marker}");
        output
            .stdout_text()
            .lines()
            .filter(|line| {
                let mut fields = line.split_whitespace();
                let _pid = fields.next();
                let is_zombie = fields.next().is_some_and(|stat| stat.starts_with('Z'));
                !is_zombie && fields.any(|field| field == expected)
            })
            .map(|line| line.trim().chars().take(160).collect())
            .collect()
    }

    /// Waits until a process in the sandbox carries `marker` and has `needle` in
    /// its `ps` line.
    pub(crate) async fn wait_for_marked_process(
        &self,
        name: &SandboxName,
        marker: &str,
        needle: &str,
    ) {
        let wait = async {
            loop {
                let found = self.marked_processes(name, marker).await;
                if found.iter().any(|line| line.contains(needle)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        self.within(format!("waiting for `{needle}` to start in {name}"), wait)
            .await;
    }

    /// Starts `python3 -m http.server` on `port` inside the sandbox, serving `body`
    /// as its index page, and waits until the port accepts connections.
    pub(crate) async fn start_http_server(&self, name: &SandboxName, port: u16, body: String) {
        let script = format!(
            "dir=$(mktemp -d) && printf '%s' {body} > \"$dir/index.html\" && \
             (nohup python3 -m http.server {port} --bind 0.0.0.0 --directory \"$dir\" >/dev/null 2>&1 &)",
            body = shell_quote(&body)
        );
        self.sh(name, &script).await;
        let ready = self
            .provider
            .wait_for_port(name, port, self.config.hang_limit);
        let result = self
            .within(format!("waiting for port {port} in {name}"), ready)
            .await;
        result.unwrap_or_else(|error| {
            panic!(
                "the HTTP server on port {port} in sandbox {name} never accepted connections: {}",
                chain(&error)
            )
        });
    }

    /// Returns the endpoint of `port`, checking its fields and host.
    pub(crate) async fn endpoint(&self, name: &SandboxName, port: &PortSpec) -> Endpoint {
        let result = self
            .within(
                format!("endpoint of {name} port {}", port.port),
                self.provider.endpoint(name, port),
            )
            .await;
        let endpoint = result.unwrap_or_else(|error| {
            panic!(
                "endpoint of sandbox {name} port {} failed: {}",
                port.port,
                chain(&error)
            )
        });
        assert_eq!(
            endpoint.name, port.name,
            "endpoint of {name} port {} has the wrong name",
            port.port
        );
        assert_eq!(
            endpoint.port, port.port,
            "endpoint of {name} port {} names another port",
            port.port
        );
        if let Some(host) = &self.config.endpoint_host {
            assert_eq!(
                endpoint.url.host_str(),
                Some(host.as_str()),
                "endpoint {} of sandbox {name} is not on {host}",
                endpoint.url
            );
        }
        endpoint
    }

    /// Fetches the endpoint from the host until it returns 200 with `body`, retrying
    /// connection failures while the provider's forwarding comes up.
    pub(crate) async fn fetch_until(&self, endpoint: &Endpoint, body: &str) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("failed to build an HTTP client");
        let mut last = String::from("no attempt finished");
        let fetch = async {
            loop {
                match fetch_once(&client, endpoint).await {
                    Ok((200, text)) if text.contains(body) => return,
                    Ok((status, text)) => {
                        last = format!("status {status}, body {:?}", truncate(&text, 200))
                    }
                    Err(error) => last = error,
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        if tokio::time::timeout(self.config.hang_limit, fetch)
            .await
            .is_err()
        {
            panic!(
                "endpoint {} ({}) never returned 200 with {body:?} within {}; last attempt: {last}",
                endpoint.url,
                endpoint.name,
                humantime::format_duration(self.config.hang_limit)
            );
        }
    }
}

async fn fetch_once(
    client: &reqwest::Client,
    endpoint: &Endpoint,
) -> std::result::Result<(u16, String), String> {
    let mut request = client.get(endpoint.url.clone());
    if let Some(credentials) = &endpoint.credentials {
        request = request.basic_auth(&credentials.username, Some(credentials.password.expose()));
    }
    let response = request.send().await.map_err(|error| chain(&error))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|error| chain(&error))?;
    Ok((status, text))
}

/// Returns the selector of everything labelled as belonging to `name`.
pub(crate) fn sandbox_selector(name: &SandboxName) -> LabelSelector {
    LabelSelector::managed().with(labels::SANDBOX, name.as_str())
}

/// Returns a new marker value for [`MARKER_VAR`].
pub(crate) fn new_marker() -> String {
    format!("ken-kit-{}", unique_suffix())
}

/// Returns 8 hex characters that differ between calls, processes and runs.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    let mut hasher = Sha256::new();
    hasher.update(std::process::id().to_le_bytes());
    hasher.update(nanos.to_le_bytes());
    hasher.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hex::encode(&hasher.finalize()[..4])
}

/// Formats an error with its whole `source` chain.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Returns the message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}

pub(crate) fn describe_resources(resources: &[Resource]) -> String {
    resources
        .iter()
        .map(|resource| format!("{} {}", resource.kind, resource.id))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_command(command: &[String]) -> String {
    truncate(&command.join(" "), 100)
}

pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max_chars).collect();
    cut.push_str("...");
    cut
}

/// Asserts that `result` is [`Error::Unsupported`] from this provider, with
/// `keyword` in the operation. `call` describes the call for the message.
pub(crate) fn assert_unsupported<T: fmt::Debug>(
    provider: &dyn SandboxProvider,
    result: Result<T>,
    call: &str,
    capability: &str,
    keyword: &str,
) {
    let name = provider.name();
    match result {
        Err(Error::Unsupported {
            operation,
            provider,
        }) => {
            assert_eq!(
                provider, name,
                "{call} failed with Unsupported naming the {provider} provider instead of {name}"
            );
            assert!(
                operation.contains(keyword),
                "{call} failed with Unsupported for operation {operation:?}, which does not contain {keyword:?}"
            );
        }
        Err(other) => panic!(
            "{call} on the {name} provider, which lacks the {capability} capability, \
             failed with `{}` instead of Error::Unsupported",
            chain(&other)
        ),
        Ok(value) => panic!(
            "{call} on the {name} provider, which lacks the {capability} capability, \
             succeeded ({value:?}); it must fail with Error::Unsupported"
        ),
    }
}

/// Asserts that `result` is a not-found error.
pub(crate) fn assert_not_found<T: fmt::Debug>(result: Result<T>, call: &str) {
    match result {
        Err(error) if error.is_not_found() => {}
        Err(error) => panic!(
            "{call} failed with `{}` instead of a not-found error",
            chain(&error)
        ),
        Ok(value) => {
            panic!("{call} succeeded ({value:?}) instead of failing with a not-found error")
        }
    }
}

/// Asserts that every label of `expected` is present in `actual`.
pub(crate) fn assert_labels_contain(actual: &Labels, expected: &Labels, context: &str) {
    for (key, value) in expected.iter() {
        assert_eq!(
            actual.get(key),
            Some(value),
            "{context}: label {key} should be {value:?}; the labels are {actual:?}"
        );
    }
}
