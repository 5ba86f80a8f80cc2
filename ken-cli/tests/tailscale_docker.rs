//! End-to-end tests of `ken` with the Tailscale network, on the real Docker engine.
//!
//! The Tailscale test server runs in the test process: its API on 127.0.0.1, its
//! control plane on the gateway of Ken's Docker network `ken-sandboxes`, where
//! sandboxes reach the host. The sandbox image installs the stand-in `tailscale` and
//! `tailscaled` scripts, which register devices with that control plane. Everything
//! else is the real `ken` binary, the real orchestrator and the real Docker provider.
//!
//! The Docker tests skip themselves (printing why) when the engine is unreachable,
//! unless KEN_REQUIRE_DOCKER=1 is set, in which case they fail.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{code, containers_of, describe, docker_available, stderr, stdout, unique_name, Project};
use ken_core::labels::Labels;
use ken_core::sandbox::{Resources, SandboxName, SandboxSpec};
use ken_core::{EventSink, SandboxProvider};
use ken_provider_docker::DockerProvider;
use ken_testserver_tailscale::standin::standin_dockerfile_lines;
use ken_testserver_tailscale::{docker, DeviceSpec, KeyCreateCapabilities, TestServer, TestServerConfig};

/// Returns the sandbox image's Dockerfile: Python for the web service, git for the
/// repository phase, and the stand-in Tailscale binaries.
fn dockerfile() -> String {
    format!(
        "FROM debian:bookworm-slim\n\
         RUN apt-get update && apt-get install -y --no-install-recommends procps python3 && rm -rf /var/lib/apt/lists/*\n\
         RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends git >/dev/null && rm -rf /var/lib/apt/lists/*\n\
         {}",
        standin_dockerfile_lines()
    )
}

/// The admins' policy: their own group, tag, rule and test, with comments, and no
/// rule that lets sandboxes reach each other.
const TEAM_POLICY: &str = r#"// Example Corp tailnet policy.
{
	"groups": {
		"group:dev": ["admin@example.com", "bob@example.com"],
	},
	"tagOwners": {
		"tag:web": ["group:dev"], // web servers
	},
	/* developers reach the web servers */
	"acls": [
		{"action": "accept", "src": ["group:dev"], "dst": ["tag:web:443"]},
	],
	"tests": [
		{"src": "bob@example.com", "accept": ["tag:web:443"]},
	],
}
"#;

/// Lines of [`TEAM_POLICY`] that every write must keep.
const TEAM_LINES: [&str; 6] = [
    "// Example Corp tailnet policy.",
    r#""group:dev": ["admin@example.com", "bob@example.com"],"#,
    r#""tag:web": ["group:dev"], // web servers"#,
    "/* developers reach the web servers */",
    r#"{"action": "accept", "src": ["group:dev"], "dst": ["tag:web:443"]},"#,
    r#"{"src": "bob@example.com", "accept": ["tag:web:443"]},"#,
];

/// A rule that lets every tagged device, sandboxes included, open connections.
const CONFLICTING_RULE: &str = r#"{"action": "accept", "src": ["autogroup:tagged"], "dst": ["*:*"]}"#;

/// Makes sure `ken-sandboxes` exists, by launching (and removing) one sandbox through
/// the Docker provider, which creates the network the way `ken new` does.
async fn ensure_sandbox_network() {
    static DONE: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);
    let mut done = DONE.lock().await;
    if *done {
        return;
    }
    let provider = DockerProvider::connect().await.expect("connect to Docker");
    let image = provider
        .prepare_image(&ken_core::testkit::kit_image_spec(), &EventSink::none())
        .await
        .expect("prepare the kit image");
    let name = SandboxName::new(unique_name("net")).unwrap();
    let spec = SandboxSpec {
        name: name.clone(),
        image,
        resources: Resources::default(),
        labels: Labels::for_sandbox(name.as_str(), "ken-test", Duration::from_secs(600)),
        env: BTreeMap::new(),
        secret_env: BTreeMap::new(),
        ports: Vec::new(),
        workdir: None,
        ttl: Duration::from_secs(600),
    };
    let created = provider.create(&spec).await;
    provider.destroy(&name).await.expect("remove the network probe sandbox");
    created.expect("create the network probe sandbox");
    *done = true;
}

/// A test server reachable from sandboxes, and the environment `ken` needs for it.
struct Tailnet {
    server: TestServer,
    control_url: String,
}

impl Tailnet {
    /// Starts the server with `policy`, its control plane on the sandbox network's
    /// gateway when `docker` is set, else nowhere.
    async fn start(policy: &str, docker: bool) -> Tailnet {
        let control_bind = if docker {
            ensure_sandbox_network().await;
            let gateway = docker::network_gateway(docker::SANDBOX_NETWORK).await.expect("gateway of ken-sandboxes");
            Some(SocketAddr::new(gateway, 0))
        } else {
            None
        };
        let config = TestServerConfig::default().with_control_bind(control_bind).with_policy(policy);
        let server = TestServer::start(config).await;
        let control_url = server.control_url().unwrap_or_default();
        Tailnet { server, control_url }
    }

    /// The secrets that must stay on the host: the API token and the OAuth secret.
    fn secrets(&self) -> [String; 2] {
        [self.server.api_token().to_owned(), self.server.oauth_client().secret.clone()]
    }

    /// Returns a `ken` command with the tailnet's credentials in its environment:
    /// both the OAuth client (which Ken uses) and an API token.
    fn ken(&self) -> Command {
        let mut command = common::ken();
        for name in [
            "TAILSCALE_TAILNET",
            "KEN_TAILSCALE_TAG",
            "KEN_TAILSCALE_KEY_EXPIRY",
            "KEN_TAILSCALE_CONTROL_URL",
            "KEN_TAILSCALE_OAUTH_TAGS",
        ] {
            command.env_remove(name);
        }
        let oauth = self.server.oauth_client();
        command
            .env("TAILSCALE_BASE_URL", self.server.api_url())
            .env("TAILSCALE_OAUTH_CLIENT_ID", &oauth.id)
            .env("TAILSCALE_OAUTH_CLIENT_SECRET", &oauth.secret)
            .env("TAILSCALE_API_KEY", self.server.api_token())
            .env("KEN_TAILSCALE_POLICY_TEST_USER", "admin@example.com");
        command
    }

    /// Runs `ken ARGS` and checks that its output contains no secret.
    fn run(&self, args: &[&str]) -> Output {
        let output = self.ken().args(args).output().expect("failed to run the ken binary");
        self.assert_no_secret(&output, args);
        output
    }

    fn assert_no_secret(&self, output: &Output, args: &[&str]) {
        for secret in self.secrets() {
            assert!(!stdout(output).contains(&secret), "ken {args:?} printed a secret:\n{}", describe(output));
            assert!(!stderr(output).contains(&secret), "ken {args:?} logged a secret:\n{}", describe(output));
        }
    }

    /// Writes a project whose `[network]` is this tailnet, with `extra` manifest text.
    fn project(&self, extra: &str) -> Project {
        let manifest = format!(
            r#"name = "kentest"
ttl = "1h"

[image]
dockerfile = "image/Dockerfile"
context = "image"

[repository]
path = "{{repo}}"
{extra}
[network]
kind = "tailscale"
control_url = "{control}"
apply_policy = true
policy_test_user = "admin@example.com"
"#,
            control = self.control_url
        );
        let project = Project::new(&manifest);
        // The image has its own context, without ken.toml (which names this test's
        // ports), so every run hits the same cached image.
        let image = project.path().join("image");
        std::fs::create_dir(&image).unwrap();
        std::fs::write(image.join("Dockerfile"), dockerfile()).unwrap();
        project
    }

    /// Returns the devices whose host name Ken made for sandbox `name`.
    fn devices_of(&self, name: &str) -> Vec<ken_testserver_tailscale::Device> {
        let prefix = format!("ken-{name}-");
        self.server.devices().into_iter().filter(|d| d.hostname.starts_with(&prefix)).collect()
    }
}

/// Runs `ken rm NAME` with the tailnet's credentials when dropped.
struct Cleanup<'t> {
    tailnet: &'t Tailnet,
    name: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let output = self.tailnet.ken().args(["rm", &self.name]).output();
        match output {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!("cleanup of sandbox {} failed:\n{}", self.name, describe(&output)),
            Err(error) => eprintln!("cleanup of sandbox {} failed: {error}", self.name),
        }
    }
}

const WEB_SERVICE: &str = r#"
[[services]]
name = "web"
run = "python3 -m http.server 8080 --bind 0.0.0.0"
ready = { tcp = 8080, timeout = "30s" }

[[ports]]
name = "web"
port = 8080
"#;

/// Runs `script` in the sandbox through `ken exec`, with `stdin` as its input.
fn exec_with_stdin(tailnet: &Tailnet, name: &str, script: &str, stdin: &str) -> Output {
    let mut child = tailnet
        .ken()
        .args(["exec", name, "--", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to run the ken binary");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailnet_sandbox_lifecycle() {
    if !docker_available("tailnet_sandbox_lifecycle") {
        return;
    }
    let tailnet = Tailnet::start(TEAM_POLICY, true).await;
    let project = tailnet.project(WEB_SERVICE);
    let manifest = project.manifest();
    let name = unique_name("tsnet");
    let cleanup = Cleanup {
        tailnet: &tailnet,
        name: name.clone(),
    };

    // `ken new` applies the policy, attaches, and prints the tailnet URL.
    let new = tailnet.run(&["new", "--name", &name, "--manifest", manifest.to_str().unwrap()]);
    assert_eq!(code(&new), 0, "{}", describe(&new));
    let devices = tailnet.devices_of(&name);
    assert_eq!(devices.len(), 1, "{devices:?}");
    let device = &devices[0];
    assert_eq!(device.tags, vec!["tag:ken-sandbox".to_owned()]);
    assert!(device.connected_to_control);
    let dns_name = device.name.trim_end_matches('.').to_owned();
    assert!(dns_name.ends_with(".tail1234.ts.net"), "{dns_name}");
    let url = format!("http://{dns_name}:8080/");
    assert!(stdout(&new).contains(&url), "no {url} in:\n{}", describe(&new));
    assert!(stderr(&new).contains("phase network finished"), "{}", describe(&new));

    let policy = tailnet.server.policy_text();
    for line in TEAM_LINES {
        assert!(policy.contains(line), "apply_policy lost {line:?}:\n{policy}");
    }
    assert!(policy.contains(r#""dst": ["tag:ken-sandbox"]"#), "{policy}");

    // A fresh process finds the same URL from the sandbox's label and state file.
    let urls = tailnet.run(&["urls", &name]);
    assert_eq!(code(&urls), 0, "{}", describe(&urls));
    assert!(stdout(&urls).contains(&url), "no {url} in:\n{}", describe(&urls));
    let list = tailnet.run(&["list"]);
    assert_eq!(code(&list), 0, "{}", describe(&list));
    let row = stdout(&list).lines().find(|line| line.starts_with(&name)).map(str::to_owned);
    assert!(row.as_deref().is_some_and(|row| row.contains(&url)), "no {url} for {name} in:\n{}", describe(&list));

    // Only the single-use key reached the control plane, and it is used up.
    let keys = tailnet.server.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(tailnet.server.received_auth_keys(), vec![keys[0].key.clone()]);
    assert!(!keys[0].capabilities.reusable, "{keys:?}");
    assert!(keys[0].capabilities.ephemeral, "{keys:?}");
    assert!(keys[0].capabilities.preauthorized, "{keys:?}");
    assert!(tailnet.server.valid_keys().is_empty(), "the auth key is still usable");
    for request in tailnet.server.control_requests() {
        for (field, value) in &request.fields {
            for secret in tailnet.secrets() {
                assert!(!value.contains(&secret), "{} sent a secret in {field}", request.path);
            }
        }
    }

    // No API credential is in the sandbox: not in any process's environment or
    // command line, not in the container's configuration, not in any file. The key
    // file is gone too. The file search reads its patterns from stdin, so they are
    // only in grep's memory, never in an argument, a variable or a file.
    let procs = tailnet.run(&[
        "exec",
        &name,
        "--",
        "sh",
        "-c",
        "for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do cat \"$f\" 2>/dev/null; echo; done",
    ]);
    assert_eq!(code(&procs), 0, "{}", describe(&procs));
    assert!(stdout(&procs).contains("python3"), "the process listing looks empty:\n{}", stdout(&procs));
    assert!(stdout(&procs).contains("tailscaled"), "tailscaled is not running:\n{}", stdout(&procs));
    for secret in tailnet.secrets() {
        assert!(!stdout(&procs).contains(&secret), "a process in the sandbox holds an API credential");
    }
    assert!(!stdout(&procs).contains(&keys[0].key), "a process in the sandbox holds the auth key");
    let container = containers_of(&name).pop().expect("the sandbox's container");
    let inspect = Command::new("docker").args(["inspect", &container]).output().unwrap();
    assert!(inspect.status.success(), "{}", describe(&inspect));
    for secret in tailnet.secrets() {
        assert!(!stdout(&inspect).contains(&secret), "the container's configuration holds an API credential");
    }
    // A planted marker shows that the search finds what is there.
    let marker = format!("ken-probe-marker-{}", std::process::id());
    let plant = tailnet.run(&["exec", &name, "--", "sh", "-c", &format!("echo {marker} > /tmp/ken-probe")]);
    assert_eq!(code(&plant), 0, "{}", describe(&plant));
    let patterns = format!("{}\n{}\n{}\n{marker}\n", tailnet.secrets()[0], tailnet.secrets()[1], keys[0].key);
    let search = exec_with_stdin(
        &tailnet,
        &name,
        "grep -rlF -f /dev/stdin --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev /",
        &patterns,
    );
    assert_eq!(code(&search), 0, "{}", describe(&search));
    let listing = stdout(&search);
    let found: Vec<&str> = listing.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    assert_eq!(found, vec!["/tmp/ken-probe"], "a file in the sandbox holds a credential:\n{}", describe(&search));
    // An agent's plain `tailscale status`, without --socket, reaches Ken's daemon.
    let status = tailnet.run(&["exec", &name, "--", "tailscale", "status"]);
    assert_eq!(code(&status), 0, "{}", describe(&status));
    assert!(stdout(&status).contains(&device.hostname), "{}", describe(&status));

    let key_file = tailnet.run(&["exec", &name, "--", "sh", "-c", "ls /run/ken/tailscale"]);
    assert!(!stdout(&key_file).contains("authkey"), "{}", describe(&key_file));
    assert!(stdout(&key_file).contains("state.json"), "{}", describe(&key_file));

    // `ken rm` logs out, deletes the device and leaves no usable key.
    drop(cleanup);
    assert!(containers_of(&name).is_empty(), "ken rm left the container");
    assert!(tailnet.devices_of(&name).is_empty(), "ken rm left the device: {:?}", tailnet.devices_of(&name));
    assert!(tailnet.server.valid_keys().is_empty(), "{:?}", tailnet.server.valid_keys());
    tailnet.server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_failing_after_attach_detaches() {
    if !docker_available("launch_failing_after_attach_detaches") {
        return;
    }
    let tailnet = Tailnet::start(TEAM_POLICY, true).await;
    // Nothing listens on the port, so the ready phase, which follows the network
    // phase, fails.
    let project = tailnet.project("\n[[ports]]\nname = \"web\"\nport = 8081\n");
    let manifest = project.manifest();
    let name = unique_name("tsfail");
    let _cleanup = Cleanup {
        tailnet: &tailnet,
        name: name.clone(),
    };

    let new = tailnet.run(&["new", "--name", &name, "--manifest", manifest.to_str().unwrap()]);
    assert_ne!(code(&new), 0, "{}", describe(&new));
    assert!(stderr(&new).contains("phase ready"), "{}", describe(&new));
    assert!(stderr(&new).contains("phase network finished"), "the launch failed before attaching:\n{}", describe(&new));

    // The sandbox joined (its key was used) and then everything was undone.
    let keys = tailnet.server.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(tailnet.server.received_auth_keys(), vec![keys[0].key.clone()]);
    assert!(tailnet.server.devices().is_empty(), "{:?}", tailnet.server.devices());
    assert!(tailnet.server.valid_keys().is_empty(), "{:?}", tailnet.server.valid_keys());
    assert!(containers_of(&name).is_empty(), "the failed launch left its container");
    tailnet.server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_reaps_tailnet_leftovers() {
    if !docker_available("gc_reaps_tailnet_leftovers") {
        return;
    }
    let tailnet = Tailnet::start(TEAM_POLICY, true).await;
    let project = tailnet.project("");
    let name = unique_name("tsgc");
    let _cleanup = Cleanup {
        tailnet: &tailnet,
        name: name.clone(),
    };
    let new = tailnet.run(&["new", "--name", &name, "--manifest", project.manifest().to_str().unwrap()]);
    assert_eq!(code(&new), 0, "{}", describe(&new));

    // The container disappears behind Ken's back; its device stays online.
    let container = containers_of(&name).pop().expect("the sandbox's container");
    let removed = Command::new("docker").args(["rm", "-f", &container]).output().unwrap();
    assert!(removed.status.success(), "{}", describe(&removed));
    let orphan = tailnet.devices_of(&name).pop().expect("the sandbox's device");
    assert!(orphan.connected_to_control);
    // ken-NAME-SCOPE-RANDOM: this machine's and this user's scope.
    let scope = orphan.hostname[orphan.hostname.len() - 11..orphan.hostname.len() - 7].to_owned();
    let other_scope = if scope == "0000" { "0001" } else { "0000" };

    // A teammate's sandbox of the same name, online in another scope.
    let teammate = tailnet
        .server
        .add_device(DeviceSpec::new(format!("ken-{name}-{other_scope}-a1b2c3"), &["tag:ken-sandbox"]));

    // Another owner's gc on this machine leaves our online device alone: its scope
    // is not theirs.
    let foreign_gc = tailnet.run(&["--owner", "someone-else", "gc"]);
    assert_eq!(code(&foreign_gc), 0, "{}", describe(&foreign_gc));
    assert!(tailnet.server.device(&orphan.node_id).is_some(), "another owner's gc deleted our device:\n{}", describe(&foreign_gc));
    assert!(tailnet.server.device(&teammate.node_id).is_some(), "gc deleted a teammate's online device:\n{}", describe(&foreign_gc));

    // A stale offline device of another scope, and a key left by an interrupted launch.
    let mut stale = DeviceSpec::new(format!("ken-old-{other_scope}-d4e5f6"), &["tag:ken-sandbox"]);
    stale.online = false;
    let stale = tailnet.server.add_device(stale);
    let capabilities = KeyCreateCapabilities {
        ephemeral: true,
        preauthorized: true,
        tags: vec!["tag:ken-sandbox".to_owned()],
        ..KeyCreateCapabilities::default()
    };
    let leftover = tailnet
        .server
        .mint_key_with_description(capabilities, Duration::from_secs(600), "ken sandbox gone-1");

    let gc = tailnet.run(&["gc"]);
    assert_eq!(code(&gc), 0, "{}", describe(&gc));
    assert!(tailnet.server.device(&orphan.node_id).is_none(), "gc kept the orphaned device:\n{}", describe(&gc));
    assert!(tailnet.server.device(&stale.node_id).is_none(), "gc kept the offline device:\n{}", describe(&gc));
    assert!(tailnet.server.device(&teammate.node_id).is_some(), "gc deleted a teammate's online device:\n{}", describe(&gc));
    assert!(tailnet.server.key(&leftover.id).unwrap().is_revoked(), "gc kept the leftover key:\n{}", describe(&gc));
    let reported = stdout(&gc);
    assert!(reported.contains(&orphan.hostname), "{reported}");
    assert!(reported.contains("ken-old-"), "{reported}");
    assert!(reported.contains(&leftover.id), "{reported}");
    tailnet.server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_show_and_apply_through_cli() {
    let tailnet = Tailnet::start(TEAM_POLICY, false).await;

    let show = tailnet.run(&["policy", "show"]);
    assert_eq!(code(&show), 0, "{}", describe(&show));
    let section = stdout(&show);
    assert!(section.contains(r#""tag:ken-sandbox": ["autogroup:admin"]"#), "{section}");
    assert!(section.contains(r#""src": ["autogroup:member"], "dst": ["tag:ken-sandbox"]"#), "{section}");
    assert!(section.contains(r#""src": "tag:ken-sandbox""#), "no test from the sandbox tag:\n{section}");
    assert!(section.contains(r#""deny""#), "{section}");
    assert_eq!(tailnet.server.policy_writes(), 0, "show wrote the policy");
    eprintln!("ken policy show printed:\n{section}");

    let check = tailnet.run(&["policy", "check"]);
    assert_eq!(code(&check), 1, "{}", describe(&check));
    assert!(stdout(&check).contains("missing"), "{}", describe(&check));

    let apply = tailnet.run(&["policy", "apply"]);
    assert_eq!(code(&apply), 0, "{}", describe(&apply));
    assert_eq!(tailnet.server.policy_writes(), 1);
    let policy = tailnet.server.policy_text();
    for line in TEAM_LINES {
        assert!(policy.contains(line), "apply lost {line:?}:\n{policy}");
    }
    assert!(policy.contains(r#""dst": ["tag:ken-sandbox"]"#), "{policy}");
    // The server ran the file's tests on the write; check they also pass on their own.
    let check = tailnet.run(&["policy", "check"]);
    assert_eq!(code(&check), 0, "{}", describe(&check));
    tailnet.server.assert_no_violations();

    // A section for another tag, through the base URL as Tailscale's docs write it,
    // keeps the first tag's section; applying it again writes nothing.
    let api_v2 = format!("{}/api/v2", tailnet.server.api_url());
    for writes in [2, 2] {
        let other = tailnet
            .ken()
            .env("KEN_TAILSCALE_TAG", "tag:other")
            .env("TAILSCALE_BASE_URL", &api_v2)
            .args(["policy", "apply"])
            .output()
            .unwrap();
        assert_eq!(code(&other), 0, "{}", describe(&other));
        assert_eq!(tailnet.server.policy_writes(), writes, "{}", describe(&other));
    }
    let policy = tailnet.server.policy_text();
    assert!(policy.contains(r#""dst": ["tag:other"]"#), "{policy}");
    assert!(policy.contains(r#""dst": ["tag:ken-sandbox"]"#), "applying tag:other removed tag:ken-sandbox's grant:\n{policy}");
    let check = tailnet.run(&["policy", "check"]);
    assert_eq!(code(&check), 0, "{}", describe(&check));
    tailnet.server.assert_no_violations();

    // A rule that opens sandbox-to-sandbox traffic is refused and quoted.
    let conflicting = TEAM_POLICY.replace(
        r#"		{"action": "accept", "src": ["group:dev"], "dst": ["tag:web:443"]},"#,
        &format!("\t\t{{\"action\": \"accept\", \"src\": [\"group:dev\"], \"dst\": [\"tag:web:443\"]}},\n\t\t{CONFLICTING_RULE},"),
    );
    assert!(conflicting.contains(CONFLICTING_RULE));
    let refused = Tailnet::start(&conflicting, false).await;
    let apply = refused.run(&["policy", "apply"]);
    assert_ne!(code(&apply), 0, "{}", describe(&apply));
    assert!(stderr(&apply).contains(CONFLICTING_RULE), "the error does not quote the rule:\n{}", describe(&apply));
    assert_eq!(refused.server.policy_writes(), 0, "a refused apply wrote the policy");
    assert_eq!(refused.server.policy_text(), conflicting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_without_credentials_warns_and_logs_out() {
    if !docker_available("rm_without_credentials_warns_and_logs_out") {
        return;
    }
    let tailnet = Tailnet::start(TEAM_POLICY, true).await;
    let project = tailnet.project("");
    let name = unique_name("tsrm");
    let _cleanup = Cleanup {
        tailnet: &tailnet,
        name: name.clone(),
    };
    let new = tailnet.run(&["new", "--name", &name, "--manifest", project.manifest().to_str().unwrap()]);
    assert_eq!(code(&new), 0, "{}", describe(&new));
    assert_eq!(tailnet.devices_of(&name).len(), 1, "{:?}", tailnet.devices_of(&name));

    // `ken rm` without any Tailscale credential in the environment.
    let mut command = tailnet.ken();
    for variable in ["TAILSCALE_OAUTH_CLIENT_ID", "TAILSCALE_OAUTH_CLIENT_SECRET", "TAILSCALE_API_KEY"] {
        command.env_remove(variable);
    }
    let rm = command.args(["rm", &name]).output().expect("failed to run the ken binary");
    assert_eq!(code(&rm), 0, "{}", describe(&rm));
    assert!(containers_of(&name).is_empty(), "ken rm left the container");
    let warning = stderr(&rm);
    let line = warning.lines().find(|line| line.contains("warning")).unwrap_or_default();
    assert!(line.contains(&format!("sandbox {name}")), "the warning does not name the sandbox:\n{}", describe(&rm));
    assert!(line.contains("tailnet device and auth key were not removed"), "{}", describe(&rm));
    assert!(line.contains("TAILSCALE_API_KEY"), "the warning does not name the missing variable:\n{}", describe(&rm));
    assert!(line.contains("ken gc"), "the warning does not point to ken gc:\n{}", describe(&rm));
    assert!(!warning.contains("SandboxName("), "{}", describe(&rm));
    // The node logged out inside the sandbox, so the control plane dropped its
    // ephemeral device.
    assert!(tailnet.devices_of(&name).is_empty(), "the node was not logged out: {:?}", tailnet.devices_of(&name));
    tailnet.server.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_control_url_is_explained() {
    if !docker_available("loopback_control_url_is_explained") {
        return;
    }
    let tailnet = Tailnet::start(TEAM_POLICY, true).await;
    let project = tailnet.project("");
    let manifest = project.manifest();
    let text = std::fs::read_to_string(&manifest).unwrap();
    let loopback = text.replace(&tailnet.control_url, "http://127.0.0.1:9");
    assert_ne!(loopback, text);
    std::fs::write(&manifest, loopback).unwrap();
    let name = unique_name("tsloop");
    let _cleanup = Cleanup {
        tailnet: &tailnet,
        name: name.clone(),
    };

    let new = tailnet.run(&["new", "--name", &name, "--manifest", manifest.to_str().unwrap()]);
    assert_ne!(code(&new), 0, "{}", describe(&new));
    let error = stderr(&new);
    let up_output = error.find("tailscale up printed: backend error: cannot reach control server http://127.0.0.1:9");
    assert!(up_output.is_some(), "the error does not lead with tailscale up's output:\n{}", describe(&new));
    assert!(error.contains("127.0.0.1 is the sandbox itself"), "{}", describe(&new));
    assert!(containers_of(&name).is_empty(), "the failed launch left its container");
    assert!(tailnet.server.valid_keys().is_empty(), "{:?}", tailnet.server.valid_keys());
}
