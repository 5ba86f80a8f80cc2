//! The host side of sandboxes: root file systems, network namespaces, the init
//! process and exec processes, and cleanup that also runs from `Drop`.
//!
//! Every sandbox gets an overlay mount of its image's exported file system and a
//! network namespace with a veth pair to the host on its own /30. Its init
//! process is `tini` (shipped with Docker as `docker-init`), which runs in new
//! mount, PID, UTS and IPC namespaces, chrooted into the overlay. Execs join those namespaces with
//! `nsenter`. Killing the init process kills every process of the sandbox.

mod command;
mod host;
mod init;
mod netns;
mod rootfs;

pub(crate) use command::run;
pub(crate) use host::Host;
pub(crate) use init::{first_child, spawn_exec, start_init, ExecSpawn, RunningInit};
pub(crate) use netns::SandboxNetwork;
pub(crate) use rootfs::{copy_layer, export_image, mount_overlay, EXPORT_VERSION};
