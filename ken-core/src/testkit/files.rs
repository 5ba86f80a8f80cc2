//! Checks of copying files into and out of a sandbox.

use std::io::Read;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::support::{assert_not_found, chain, Scope};
use super::KitConfig;
use crate::exec::ExecRequest;
use crate::sandbox::SandboxProvider;

/// Checks upload and download: a tar with a binary file and a nested directory
/// arrives with its bytes and mode, downloads of the file and the directory return
/// the same contents, and a missing path is not found.
pub async fn files_round_trip(provider: &dyn SandboxProvider, config: &KitConfig) {
    let scope = Scope::new(provider, config, "files_round_trip");
    scope.run(files_round_trip_body(&scope)).await;
}

async fn files_round_trip_body(scope: &Scope<'_>) {
    let provider = scope.provider;
    let name = scope.create_plain("files").await;
    let scratch = scope.scratch_dir(&name).await;
    let data: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 8)) as u8)
        .collect();
    let archive = build_archive(&[
        ("data.bin", &data, 0o640),
        ("nested/inner.txt", b"inner\n", 0o644),
    ]);

    let uploaded = scope
        .within("upload", provider.upload(&name, &scratch, archive))
        .await;
    uploaded.unwrap_or_else(|error| {
        panic!("upload into {scratch} in {name} failed: {}", chain(&error))
    });

    let inside = scope
        .exec(
            &name,
            ExecRequest::new([
                "sh",
                "-c",
                "sha256sum data.bin; stat -c %a data.bin; cat nested/inner.txt",
            ])
            .workdir(&scratch),
        )
        .await;
    assert!(
        inside.status.success(),
        "reading the uploaded files in {name} ended with {}: {}",
        inside.status,
        inside.stderr_text()
    );
    let text = inside.stdout_text();
    let mut lines = text.lines();
    let hash = lines
        .next()
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_default();
    assert_eq!(
        hash,
        hex::encode(Sha256::digest(&data)),
        "SHA-256 of data.bin after upload into {name}"
    );
    assert_eq!(
        lines.next(),
        Some("640"),
        "mode of data.bin after upload into {name}"
    );
    assert_eq!(
        lines.next(),
        Some("inner"),
        "contents of nested/inner.txt after upload into {name}"
    );

    let file_path = format!("{scratch}/data.bin");
    let downloaded = scope
        .within("download", provider.download(&name, &file_path))
        .await;
    let downloaded = downloaded.unwrap_or_else(|error| {
        panic!(
            "download of {file_path} from {name} failed: {}",
            chain(&error)
        )
    });
    let files = read_archive(&downloaded);
    assert_eq!(
        files.len(),
        1,
        "download of the file {file_path} returned {} files",
        files.len()
    );
    assert!(
        files[0].0.ends_with("data.bin"),
        "download of {file_path} returned {:?}",
        files[0].0
    );
    assert!(
        files[0].1 == data,
        "download of {file_path} from {name} returned other bytes than were uploaded"
    );

    let dir_path = format!("{scratch}/nested");
    let downloaded = scope
        .within("download", provider.download(&name, &dir_path))
        .await;
    let downloaded = downloaded.unwrap_or_else(|error| {
        panic!(
            "download of {dir_path} from {name} failed: {}",
            chain(&error)
        )
    });
    let files = read_archive(&downloaded);
    let inner = files.iter().find(|(path, _)| path.ends_with("inner.txt"));
    let names: Vec<&String> = files.iter().map(|(path, _)| path).collect();
    let inner = inner.unwrap_or_else(|| {
        panic!("download of the directory {dir_path} lacks inner.txt: {names:?}")
    });
    assert_eq!(
        inner.1, b"inner\n",
        "contents of inner.txt downloaded from {name}"
    );

    let missing = format!("{scratch}/missing");
    let result = scope
        .within("download", provider.download(&name, &missing))
        .await;
    assert_not_found(result, &format!("download of {missing} from {name}"));
}

fn build_archive(files: &[(&str, &[u8], u32)]) -> Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, *contents)
            .unwrap_or_else(|error| panic!("failed to add {path} to a tar archive: {error}"));
    }
    let data = builder
        .into_inner()
        .unwrap_or_else(|error| panic!("failed to finish a tar archive: {error}"));
    Bytes::from(data)
}

/// Returns the path and contents of every regular file in a tar archive.
fn read_archive(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut reader = tar::Archive::new(archive);
    let entries = reader
        .entries()
        .unwrap_or_else(|error| panic!("a downloaded tar archive is invalid: {error}"));
    let mut files = Vec::new();
    for entry in entries {
        let mut entry =
            entry.unwrap_or_else(|error| panic!("a downloaded tar entry is invalid: {error}"));
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map(|path| path.display().to_string())
            .unwrap_or_default();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).unwrap_or_else(|error| {
            panic!("reading {path} from a downloaded tar archive failed: {error}")
        });
        files.push((path, contents));
    }
    files
}
