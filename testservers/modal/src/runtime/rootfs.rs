//! Image file systems: exported once per Docker image, then shared read-only by
//! every sandbox through an overlay mount with the sandbox's own upper dir.

use std::path::{Path, PathBuf};

use super::command::run;

/// Version of the export layout, part of each export's directory name, so that a
/// cache filled by an older server with other export options is not reused.
pub(crate) const EXPORT_VERSION: &str = "v2";

/// Exports the file system of Docker image `docker_ref` into `dest`, unless `dest`
/// exists already. The export goes to a temporary sibling first and is renamed, so
/// a half-written export is never used.
pub(crate) async fn export_image(docker_ref: &str, dest: &Path) -> Result<(), String> {
    if dest.is_dir() {
        return Ok(());
    }
    let docker_ref = docker_ref.to_owned();
    let dest = dest.to_owned();
    tokio::task::spawn_blocking(move || export_blocking(&docker_ref, &dest))
        .await
        .map_err(|error| format!("the export task failed: {error}"))?
}

fn export_blocking(docker_ref: &str, dest: &Path) -> Result<(), String> {
    let partial = dest.with_extension(format!("partial-{}", crate::ids::random_base62(8)));
    std::fs::create_dir_all(&partial)
        .map_err(|error| format!("creating {}: {error}", partial.display()))?;
    let container = run(
        "docker",
        &["create", "--label", "ken-testserver-modal=1", docker_ref, "/bin/true"],
    )?
    .trim()
    .to_owned();
    let exported = run(
        "sh",
        &[
            "-c",
            // Numeric owners: mapping names through the host's users would give
            // files of the image's `postgres` to the host's `postgres` uid.
            "docker export \"$1\" | tar --numeric-owner -x -C \"$2\"",
            "export",
            &container,
            &partial.to_string_lossy(),
        ],
    );
    if let Err(error) = run("docker", &["rm", "-f", &container]) {
        tracing::warn!(container, %error, "failed to remove the container used for an export");
    }
    if let Err(error) = exported {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(error);
    }
    if let Err(error) = std::fs::rename(&partial, dest) {
        let _ = std::fs::remove_dir_all(&partial);
        if !dest.is_dir() {
            return Err(format!("renaming {} to {}: {error}", partial.display(), dest.display()));
        }
    }
    Ok(())
}

/// Mounts an overlay of `layers` (topmost first) at `dir/root`, with `dir/upper`
/// as the sandbox's writable layer, and returns the mount point.
pub(crate) fn mount_overlay(layers: &[PathBuf], dir: &Path) -> Result<PathBuf, String> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    let root = dir.join("root");
    for path in [&upper, &work, &root] {
        std::fs::create_dir_all(path)
            .map_err(|error| format!("creating {}: {error}", path.display()))?;
    }
    let lower: Vec<String> = layers
        .iter()
        .map(|layer| layer.to_string_lossy().into_owned())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    run(
        "mount",
        &["-t", "overlay", "overlay", "-o", &options, &root.to_string_lossy()],
    )?;
    Ok(root)
}

/// Copies a sandbox's upper dir into `dest`, keeping owners, modes, extended
/// attributes and the overlay's whiteouts, so it can be a lower layer later.
pub(crate) fn copy_layer(upper: &Path, dest: &Path) -> Result<(), String> {
    run(
        "cp",
        &["-a", "--", &upper.to_string_lossy(), &dest.to_string_lossy()],
    )
    .map(|_| ())
}
