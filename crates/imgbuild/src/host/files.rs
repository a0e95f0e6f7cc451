//! Writing into the staging tree: every file gets a fixed mode (the host's may be read-only,
//! which patchelf could not rewrite, and fixed modes keep images reproducible), and its
//! directory is made on the way.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::HostError;

/// Copies a host file to `to` with `mode`.
pub fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<(), HostError> {
    place(to, mode, || {
        std::fs::copy(from, to)
            .map(drop)
            .map_err(|source| HostError::Read {
                path: from.to_path_buf(),
                source,
            })
    })
}

/// Writes `content` to `to` with `mode`.
pub fn write_file(to: &Path, content: &[u8], mode: u32) -> Result<(), HostError> {
    place(to, mode, || {
        std::fs::write(to, content).map_err(|source| write_error(to, source))
    })
}

/// Makes `to`'s directory, runs `make` to create `to`, then sets its mode.
fn place(
    to: &Path,
    mode: u32,
    make: impl FnOnce() -> Result<(), HostError>,
) -> Result<(), HostError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|source| write_error(to, source))?;
    }
    make()?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
        .map_err(|source| write_error(to, source))
}

/// Makes `to` a symlink to `target` (its directory made on the way).
pub fn symlink(target: &str, to: &Path) -> Result<(), HostError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|source| write_error(to, source))?;
    }
    std::os::unix::fs::symlink(target, to).map_err(|source| write_error(to, source))
}

fn write_error(path: &Path, source: std::io::Error) -> HostError {
    HostError::Write {
        path: path.to_path_buf(),
        source,
    }
}
