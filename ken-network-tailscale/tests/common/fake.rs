//! A scripted sandbox provider: it keeps uploaded files in memory, responds to
//! the provider's tailscale commands the way the real CLI would, and registers the
//! device with the test server when `tailscale up` runs with a valid key.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::FutureExt;
use futures::stream::StreamExt;
use ken_core::exec::{ExecProcess, ExecRequest, OutputChunk, OutputStream, ProcessKiller};
use ken_core::labels::{LabelSelector, Labels};
use ken_core::phase::EventSink;
use ken_core::sandbox::{
    Capabilities, Endpoint, ImageRef, ImageSpec, PortSpec, Resource, Sandbox, SandboxInfo, SandboxName,
    SandboxProvider, SandboxSpec, SandboxState,
};
use ken_core::{Error, Result};
use ken_testserver_tailscale::{DeviceSpec, TestServer};
use serde_json::json;

/// How the fake's `tailscale` behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// `up` registers the device and `status` reports it running.
    Joins,
    /// Like `Joins`, but the device never appears in the API.
    Invisible,
    /// `up` fails and `status` reports `NeedsLogin`, as with a refused key.
    NeedsLogin,
    /// The image lacks the binaries.
    NoBinaries,
    /// Every exec fails, as in a sandbox that is gone.
    Dead,
}

/// Something the provider was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An exec, as its argument vector joined with spaces, and its env names and values.
    Exec(String, Vec<(String, String)>),
    /// An upload of file `path` with `mode`.
    Upload(String, u32),
}

#[derive(Debug)]
pub struct FakeProvider {
    server: Arc<TestServer>,
    behaviour: Mutex<Behaviour>,
    files: Mutex<HashMap<String, Vec<u8>>>,
    events: Mutex<Vec<Event>>,
    /// Contents of the auth key file each time `up` read it.
    keys_read: Mutex<Vec<String>>,
    node: Mutex<Option<(String, String, Vec<String>)>>,
}

impl FakeProvider {
    pub fn new(server: Arc<TestServer>, behaviour: Behaviour) -> Arc<FakeProvider> {
        Arc::new(FakeProvider {
            server,
            behaviour: Mutex::new(behaviour),
            files: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            keys_read: Mutex::new(Vec::new()),
            node: Mutex::new(None),
        })
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.files.lock().unwrap().get(path).cloned()
    }

    pub fn keys_read(&self) -> Vec<String> {
        self.keys_read.lock().unwrap().clone()
    }

    pub fn sandbox(self: &Arc<Self>, name: &str) -> Sandbox {
        let info = SandboxInfo {
            id: format!("id-{name}"),
            name: SandboxName::new(name).unwrap(),
            provider: "fake".to_owned(),
            state: SandboxState::Running,
            labels: Labels::default(),
            created_at: None,
            image: "ken-image:test".to_owned(),
        };
        Sandbox::new(self.clone(), info)
    }

    fn run(&self, command: &str) -> (i64, String, String) {
        let behaviour = *self.behaviour.lock().unwrap();
        if behaviour == Behaviour::Dead {
            return (125, String::new(), "sandbox is not running".to_owned());
        }
        if command.contains("command -v tailscale") {
            return if behaviour == Behaviour::NoBinaries { (1, String::new(), String::new()) } else { (0, String::new(), String::new()) };
        }
        if command.contains(" up --auth-key=file:") {
            return self.up(command, behaviour);
        }
        if command.contains("status --json") {
            return (0, self.status(behaviour), String::new());
        }
        if command.starts_with("rm -f ") {
            let path = command.trim_start_matches("rm -f ").trim();
            self.files.lock().unwrap().remove(path);
        }
        (0, String::new(), String::new())
    }

    fn up(&self, command: &str, behaviour: Behaviour) -> (i64, String, String) {
        let path = "/run/ken/tailscale/authkey";
        let key = self.files.lock().unwrap().remove(path);
        let Some(key) = key else {
            return (1, String::new(), "no auth key file".to_owned());
        };

        let key = String::from_utf8(key).unwrap();
        self.keys_read.lock().unwrap().push(key.clone());
        if behaviour == Behaviour::NeedsLogin {
            return (1, String::new(), "backend error: invalid key: unable to validate API key".to_owned());
        }

        let hostname = command
            .split_whitespace()
            .find_map(|word| word.strip_prefix("--hostname="))
            .unwrap()
            .to_owned();
        let tag = command
            .split_whitespace()
            .find_map(|word| word.strip_prefix("--advertise-tags="))
            .unwrap()
            .to_owned();
        let Some(auth_key) = self.server.keys().into_iter().find(|k| k.key == key) else {
            return (1, String::new(), "invalid key".to_owned());
        };

        let mut spec = DeviceSpec::new(hostname, &[tag.as_str()]);
        spec.ephemeral = true;
        spec.auth_key_id = Some(auth_key.id.clone());
        spec.hidden = behaviour == Behaviour::Invisible;
        let device = self.server.add_device(spec);

        *self.node.lock().unwrap() = Some((
            device.node_id.clone(),
            format!("{}.", device.name),
            vec![device.ipv4.to_string(), device.ipv6.to_string()],
        ));
        (0, String::new(), String::new())
    }

    fn status(&self, behaviour: Behaviour) -> String {
        if behaviour == Behaviour::NeedsLogin {
            return json!({"BackendState": "NeedsLogin", "AuthURL": "", "Self": {"ID": "", "TailscaleIPs": null}}).to_string();
        }
        match self.node.lock().unwrap().clone() {
            Some((id, dns, ips)) => json!({"BackendState": "Running", "Self": {"ID": id, "DNSName": dns, "TailscaleIPs": ips}}).to_string(),
            None => json!({"BackendState": "NoState"}).to_string(),
        }
    }
}

struct NoKill;

#[async_trait]
impl ProcessKiller for NoKill {
    async fn kill(&self) -> Result<()> {
        Ok(())
    }
}

fn process(code: i64, stdout: String, stderr: String) -> ExecProcess {
    let chunks = vec![
        Ok(OutputChunk {
            stream: OutputStream::Stdout,
            bytes: Bytes::from(stdout),
        }),
        Ok(OutputChunk {
            stream: OutputStream::Stderr,
            bytes: Bytes::from(stderr),
        }),
    ];
    ExecProcess::new(
        futures::stream::iter(chunks).boxed(),
        futures::future::ready(Ok(Some(code))).boxed(),
        Arc::new(NoKill),
        None,
    )
}

#[async_trait]
impl SandboxProvider for FakeProvider {
    fn name(&self) -> &str {
        "fake"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::none()
    }

    async fn prepare_image(&self, _spec: &ImageSpec, _events: &EventSink) -> Result<ImageRef> {
        Err(Error::unsupported("prepare_image", "fake"))
    }

    async fn create(&self, _spec: &SandboxSpec) -> Result<SandboxInfo> {
        Err(Error::unsupported("create", "fake"))
    }

    async fn get(&self, _name: &SandboxName) -> Result<SandboxInfo> {
        Err(Error::unsupported("get", "fake"))
    }

    async fn list(&self, _selector: &LabelSelector) -> Result<Vec<SandboxInfo>> {
        Ok(Vec::new())
    }

    async fn exec(&self, _sandbox: &SandboxName, request: ExecRequest) -> Result<ExecProcess> {
        let command = request.command.join(" ");
        let env = request.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.events.lock().unwrap().push(Event::Exec(command.clone(), env));
        let (code, stdout, stderr) = self.run(&command);
        Ok(process(code, stdout, stderr))
    }

    async fn upload(&self, sandbox: &SandboxName, dest: &str, archive: Bytes) -> Result<()> {
        if *self.behaviour.lock().unwrap() == Behaviour::Dead {
            return Err(Error::NotFound {
                kind: "sandbox",
                name: sandbox.to_string(),
            });
        }
        let mut reader = tar::Archive::new(archive.as_ref());
        for entry in reader.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = format!("{dest}/{}", entry.path().unwrap().display());
            let mode = entry.header().mode().unwrap();
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).unwrap();
            self.events.lock().unwrap().push(Event::Upload(path.clone(), mode));
            self.files.lock().unwrap().insert(path, contents);
        }
        Ok(())
    }

    async fn download(&self, sandbox: &SandboxName, path: &str) -> Result<Bytes> {
        if *self.behaviour.lock().unwrap() == Behaviour::Dead {
            return Err(Error::NotFound {
                kind: "sandbox",
                name: sandbox.to_string(),
            });
        }
        match self.file(path) {
            Some(contents) => ken_core::archive::single_file(path.rsplit('/').next().unwrap(), &contents, 0o600),
            None => Err(Error::NotFound {
                kind: "path",
                name: path.to_owned(),
            }),
        }
    }

    async fn endpoint(&self, _sandbox: &SandboxName, _port: &PortSpec) -> Result<Endpoint> {
        Err(Error::unsupported("endpoint", "fake"))
    }

    async fn snapshot(&self, _sandbox: &SandboxName, _reference: &str) -> Result<ImageRef> {
        Err(Error::unsupported("snapshot", "fake"))
    }

    async fn destroy(&self, _sandbox: &SandboxName) -> Result<()> {
        Ok(())
    }

    async fn resources(&self, _selector: &LabelSelector) -> Result<Vec<Resource>> {
        Ok(Vec::new())
    }

    async fn remove_resource(&self, _resource: &Resource) -> Result<()> {
        Ok(())
    }
}
