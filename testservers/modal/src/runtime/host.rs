//! Host checks at startup, address allocation, and the registry of everything the
//! server made on the host, so that shutdown can remove it.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use rand::Rng;

use super::command::run;
use super::netns::SandboxNetwork;

/// Tools the runtime calls; all are in Debian's util-linux, iproute2, coreutils
/// and docker.io packages.
const TOOLS: [&str; 8] = ["nsenter", "unshare", "setpriv", "ip", "mount", "umount", "chroot", "tar"];

/// First address of the range sandbox links are taken from: 10.200.0.0/14, split
/// into /30 networks.
const LINK_RANGE_START: u32 = u32::from_be_bytes([10, 200, 0, 0]);
const LINK_RANGE_NETWORKS: u32 = 1 << 16;

/// Host resources the server made for one sandbox.
#[derive(Debug, Default, Clone)]
pub(crate) struct SandboxResources {
    /// The sandbox's directory: upper and work dirs of the overlay, and its root.
    pub(crate) dir: Option<PathBuf>,
    /// The overlay mount point, while mounted.
    pub(crate) root: Option<PathBuf>,
    pub(crate) network: Option<SandboxNetwork>,
    /// PID of `unshare`, the parent of the init process.
    pub(crate) unshare_pid: Option<u32>,
    /// Host PID of the init process (PID 1 in the sandbox).
    pub(crate) init_pid: Option<u32>,
    /// Process groups of running execs.
    pub(crate) exec_groups: HashSet<u32>,
}

/// The host the sandboxes run on.
#[derive(Debug)]
pub(crate) struct Host {
    /// The server's temporary directory, removed at shutdown.
    pub(crate) work_dir: PathBuf,
    /// Directory of exported image file systems.
    pub(crate) rootfs_dir: PathBuf,
    /// Path of the static `tini` binary that becomes each sandbox's PID 1.
    pub(crate) init_binary: PathBuf,
    used_links: Mutex<HashSet<u32>>,
    resources: Mutex<HashMap<String, SandboxResources>>,
}

impl Host {
    /// Checks that the server runs as root with the tools it needs, and creates its
    /// temporary directory.
    pub(crate) fn new(rootfs_cache: Option<&Path>) -> Result<Host, ken_core::Error> {
        if !nix::unistd::geteuid().is_root() {
            return Err(ken_core::Error::backend(
                "modal test server",
                "the Modal test server runs sandboxes in namespaces and must run as root; \
                 run the tests as root (for example in the development container)",
            ));
        }
        for tool in TOOLS {
            find_in_path(tool).ok_or_else(|| {
                ken_core::Error::backend(
                    "modal test server",
                    format!("the Modal test server needs `{tool}` in PATH; install util-linux, iproute2 and coreutils"),
                )
            })?;
        }
        let init_binary = ["docker-init", "tini-static", "tini"]
            .iter()
            .find_map(|name| find_in_path(name))
            .ok_or_else(|| {
                ken_core::Error::backend(
                    "modal test server",
                    "the Modal test server needs a static tini (`docker-init` from the docker.io package, \
                     or `tini-static`) as the init process of its sandboxes",
                )
            })?;

        let work_dir = tempfile::Builder::new()
            .prefix("ken-testserver-modal-")
            .tempdir()
            .map_err(|error| ken_core::Error::io("creating the test server's directory", error))?
            .keep();
        let rootfs_dir = match rootfs_cache {
            Some(dir) => dir.to_owned(),
            None => work_dir.join("images"),
        };
        std::fs::create_dir_all(&rootfs_dir).map_err(|error| {
            ken_core::Error::io(format!("creating {}", rootfs_dir.display()), error)
        })?;
        Ok(Host {
            work_dir,
            rootfs_dir,
            init_binary,
            used_links: Mutex::new(HashSet::new()),
            resources: Mutex::new(HashMap::new()),
        })
    }

    /// Picks a free /30 for a sandbox link and returns its index. The range is
    /// shared with other servers on the host, so a candidate whose host address is
    /// already assigned to an interface is skipped.
    pub(crate) fn allocate_link(&self) -> Result<(u32, Ipv4Addr, Ipv4Addr), String> {
        let assigned = run("ip", &["-o", "-4", "addr", "show"])?;
        let mut used = self.used_links.lock().unwrap_or_else(|p| p.into_inner());
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let index = rng.gen_range(0..LINK_RANGE_NETWORKS);
            let base = LINK_RANGE_START + index * 4;
            let host_ip = Ipv4Addr::from(base + 1);
            let sandbox_ip = Ipv4Addr::from(base + 2);
            if used.contains(&index) || assigned.contains(&format!(" {host_ip}/")) {
                continue;
            }
            used.insert(index);
            return Ok((index, host_ip, sandbox_ip));
        }
        Err("no free /30 left in 10.200.0.0/14 for a sandbox link".to_owned())
    }

    /// Returns a link index to the pool.
    pub(crate) fn release_link(&self, index: u32) {
        self.used_links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&index);
    }

    /// Changes the registered resources of `sandbox_id`.
    pub(crate) fn update(&self, sandbox_id: &str, change: impl FnOnce(&mut SandboxResources)) {
        let mut resources = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        change(resources.entry(sandbox_id.to_owned()).or_default());
    }

    /// Number of sandboxes with registered resources.
    pub(crate) fn active_count(&self) -> usize {
        self.resources.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Kills every process of `sandbox_id` and removes its mount, network namespace
    /// and directory. Blocking; safe to call more than once.
    pub(crate) fn teardown(&self, sandbox_id: &str) {
        let taken = self
            .resources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sandbox_id);
        if let Some(resources) = taken {
            self.teardown_resources(sandbox_id, resources);
        }
    }

    /// Tears down every sandbox and removes the server's directory. Blocking.
    pub(crate) fn teardown_all(&self) {
        let all: Vec<(String, SandboxResources)> = self
            .resources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (sandbox_id, resources) in all {
            self.teardown_resources(&sandbox_id, resources);
        }
        if let Err(error) = std::fs::remove_dir_all(&self.work_dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.work_dir.display(), %error, "failed to remove the test server's directory");
            }
        }
    }

    fn teardown_resources(&self, sandbox_id: &str, resources: SandboxResources) {
        // PID 0 would mean this process's own group, so it is never signalled.
        for group in resources.exec_groups.iter().filter(|group| **group != 0) {
            let _ = killpg(Pid::from_raw(*group as i32), Signal::SIGKILL);
        }
        let pids = [resources.init_pid, resources.unshare_pid];
        for pid in pids.into_iter().flatten().filter(|pid| *pid != 0) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if let Some(pid) = resources.init_pid {
            wait_until_gone(pid, Duration::from_secs(5));
        }

        if let Some(root) = &resources.root {
            let root = root.to_string_lossy();
            if let Err(error) = run("umount", &[&root]) {
                tracing::warn!(sandbox.id = sandbox_id, %error, "unmount failed, detaching the mount instead");
                if let Err(error) = run("umount", &["--lazy", &root]) {
                    tracing::error!(sandbox.id = sandbox_id, %error, "failed to detach the sandbox's root");
                }
            }
        }
        if let Some(network) = &resources.network {
            network.remove();
            self.release_link(network.link_index);
        }
        if let Some(dir) = &resources.dir {
            if let Err(error) = std::fs::remove_dir_all(dir) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(sandbox.id = sandbox_id, dir = %dir.display(), %error, "failed to remove the sandbox's directory");
                }
            }
        }
        tracing::debug!(sandbox.id = sandbox_id, "removed the sandbox's host resources");
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.teardown_all();
    }
}

/// Waits until process `pid` is gone or a zombie, up to `limit`.
fn wait_until_gone(pid: u32, limit: Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return,
            Ok(stat) if stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')) => return,
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Returns the full path of `program` from `PATH`, or `None`.
fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
