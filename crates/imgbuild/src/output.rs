//! The output file: written under a temporary name next to `-o` and renamed into place only
//! when complete, so a failed build leaves nothing at `-o` and never damages an existing image.

use std::fs::File;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Errors creating or publishing the output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output's directory does not accept a new file.
    #[error("cannot create the image in {}", dir.display())]
    Create {
        /// The directory of `-o`.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Sizing the new image file failed (e.g. the size exceeds the filesystem's limit).
    #[error("cannot size {} to {size} bytes", path.display())]
    Size {
        /// The temporary file.
        path: PathBuf,
        /// Requested size.
        size: u64,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The rename into place failed.
    #[error("cannot move the finished image to {}", path.display())]
    Publish {
        /// `-o`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// An image file being written; deleted on drop unless [`PendingImage::publish`]ed.
pub struct PendingImage {
    temp: NamedTempFile,
    target: PathBuf,
}

fn dir_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl PendingImage {
    /// Creates an empty (sparse, all-zero) file of `size` bytes next to `target`.
    pub fn create(target: &Path, size: u64) -> Result<PendingImage, OutputError> {
        let dir = dir_of(target);
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image".into());
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(&dir)
            .map_err(|source| OutputError::Create { dir, source })?;
        temp.as_file()
            .set_len(size)
            .map_err(|source| OutputError::Size {
                path: temp.path().to_path_buf(),
                size,
                source,
            })?;
        Ok(PendingImage {
            temp,
            target: target.to_path_buf(),
        })
    }

    /// Path of the temporary file (what libext2fs opens).
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// A second handle to the file, for the writer's own `pwrite`s.
    pub fn file(&self) -> Result<File, OutputError> {
        self.temp
            .as_file()
            .try_clone()
            .map_err(|source| OutputError::Create {
                dir: dir_of(&self.target),
                source,
            })
    }

    /// Moves the complete image to its name, replacing what was there.
    pub fn publish(self) -> Result<(), OutputError> {
        use std::os::unix::fs::PermissionsExt;
        let target = self.target.clone();
        // Temporary files are created 0600; an image is as readable as any file mke2fs makes.
        self.temp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|source| OutputError::Publish {
                path: target.clone(),
                source,
            })?;
        self.temp
            .persist(&target)
            .map(drop)
            .map_err(|e| OutputError::Publish {
                path: target,
                source: e.error,
            })
    }
}

/// Unnamed scratch space next to the output (for spooling a tar from stdin).
pub fn scratch_file(target: &Path) -> Result<File, OutputError> {
    let dir = dir_of(target);
    tempfile::tempfile_in(&dir).map_err(|source| OutputError::Create { dir, source })
}
