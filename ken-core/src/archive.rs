//! Small helpers for the tar archives that carry files into and out of sandboxes.

use std::io::Read;

use bytes::Bytes;

use crate::error::{Error, Result};

/// Builds a tar archive holding one file `name` with `contents` and `mode`.
pub fn single_file(name: &str, contents: &[u8], mode: u32) -> Result<Bytes> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, name, contents)
        .map_err(|e| Error::io(format!("failed to add {name} to a tar archive"), e))?;
    let data = builder
        .into_inner()
        .map_err(|e| Error::io("failed to finish a tar archive", e))?;
    Ok(Bytes::from(data))
}

/// Returns the contents of the first regular file in a tar archive.
pub fn first_file(archive: &[u8]) -> Result<Vec<u8>> {
    let mut reader = tar::Archive::new(archive);
    let entries = reader
        .entries()
        .map_err(|e| Error::io("failed to read a tar archive", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::io("failed to read a tar entry", e))?;
        if entry.header().entry_type().is_file() {
            let mut contents = Vec::new();
            entry
                .read_to_end(&mut contents)
                .map_err(|e| Error::io("failed to read a file from a tar archive", e))?;
            return Ok(contents);
        }
    }
    Err(Error::backend("archive", "the tar archive contains no regular file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_file_round_trips() {
        let archive = single_file("hello.txt", b"\x00\xffhi", 0o644).unwrap();
        assert_eq!(first_file(&archive).unwrap(), b"\x00\xffhi");
    }
}
