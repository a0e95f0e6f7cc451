//! The output file: written where no one can see it and given its name only when complete, so a
//! failed or killed build leaves nothing at `-o` and never damages an existing image.
//!
//! The image is an unnamed file (`O_TMPFILE`) in `-o`'s directory: if the build dies, even by
//! SIGKILL, the kernel frees it and nothing is left behind. libext2fs opens it through
//! `/proc/self/fd/N`. When it is complete it is linked under a temporary name and renamed over
//! `-o`. Where the filesystem has no `O_TMPFILE`, a named temporary file is the fallback (left
//! behind only by SIGKILL).

use std::fs::File;
use std::os::fd::AsRawFd;
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

/// An image file being written; gone on drop unless [`PendingImage::publish`]ed.
pub struct PendingImage {
    kind: Pending,
    target: PathBuf,
}

/// How the file being written exists until it is published.
enum Pending {
    /// Unnamed (`O_TMPFILE`), with its directory and the path libext2fs opens it by.
    Unnamed {
        file: File,
        dir: File,
        proc_path: PathBuf,
    },
    /// A named temporary file (filesystems without `O_TMPFILE`).
    Named(NamedTempFile),
}

fn dir_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `-o`'s file name, for the temporary names.
fn name_of(target: &Path) -> String {
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into())
}

impl PendingImage {
    /// Creates an empty (sparse, all-zero) file of `size` bytes in `target`'s directory.
    pub fn create(target: &Path, size: u64) -> Result<PendingImage, OutputError> {
        let dir = dir_of(target);
        let create_err = |source| OutputError::Create {
            dir: dir.clone(),
            source,
        };
        let dir_file = File::open(&dir).map_err(create_err)?;
        let kind = match rustix::fs::openat(
            &dir_file,
            ".",
            rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o644),
        ) {
            Ok(fd) => {
                let file = File::from(fd);
                let proc_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
                Pending::Unnamed {
                    file,
                    dir: dir_file,
                    proc_path,
                }
            }
            // No O_TMPFILE on this filesystem (or kernel).
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL,
            ) => {
                let temp = tempfile::Builder::new()
                    .prefix(&format!(".{}.", name_of(target)))
                    .suffix(".partial")
                    .tempfile_in(&dir)
                    .map_err(create_err)?;
                Pending::Named(temp)
            }
            Err(e) => return Err(create_err(e.into())),
        };
        let pending = PendingImage {
            kind,
            target: target.to_path_buf(),
        };
        pending
            .handle()
            .set_len(size)
            .map_err(|source| OutputError::Size {
                path: pending.path().to_path_buf(),
                size,
                source,
            })?;
        Ok(pending)
    }

    fn handle(&self) -> &File {
        match &self.kind {
            Pending::Unnamed { file, .. } => file,
            Pending::Named(temp) => temp.as_file(),
        }
    }

    /// A path that opens the file being written (what libext2fs opens).
    pub fn path(&self) -> &Path {
        match &self.kind {
            Pending::Unnamed { proc_path, .. } => proc_path,
            Pending::Named(temp) => temp.path(),
        }
    }

    /// A second handle to the file, for the writer's own `pwrite`s.
    pub fn file(&self) -> Result<File, OutputError> {
        self.handle()
            .try_clone()
            .map_err(|source| OutputError::Create {
                dir: dir_of(&self.target),
                source,
            })
    }

    /// Gives the complete image its name, replacing what was there.
    pub fn publish(self) -> Result<(), OutputError> {
        use std::os::unix::fs::PermissionsExt;
        let target = self.target.clone();
        let publish_err = |source| OutputError::Publish {
            path: target.clone(),
            source,
        };
        // An image is as readable as any file mke2fs makes (temporary files are 0600).
        self.handle()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(publish_err)?;
        match self.kind {
            Pending::Named(temp) => temp
                .persist(&target)
                .map(drop)
                .map_err(|e| publish_err(e.error)),
            Pending::Unnamed {
                file,
                dir,
                proc_path,
            } => {
                // link() cannot replace a file: link under a fresh name, then rename over -o.
                let name = name_of(&target);
                for attempt in 0u32.. {
                    let temp = format!(".{name}.{}.{attempt}.partial", std::process::id());
                    match rustix::fs::linkat(
                        rustix::fs::CWD,
                        &proc_path,
                        &dir,
                        temp.as_str(),
                        rustix::fs::AtFlags::SYMLINK_FOLLOW,
                    ) {
                        Ok(()) => {}
                        Err(rustix::io::Errno::EXIST) if attempt < 100 => continue,
                        Err(e) => return Err(publish_err(e.into())),
                    }
                    let final_name = target.file_name().unwrap_or(target.as_os_str());
                    return match rustix::fs::renameat(&dir, temp.as_str(), &dir, final_name) {
                        Ok(()) => {
                            drop(file);
                            Ok(())
                        }
                        Err(e) => {
                            let _ = rustix::fs::unlinkat(
                                &dir,
                                temp.as_str(),
                                rustix::fs::AtFlags::empty(),
                            );
                            Err(publish_err(e.into()))
                        }
                    };
                }
                unreachable!("the loop returns")
            }
        }
    }
}

/// Unnamed scratch space next to the output (for spooling a tar from stdin).
pub fn scratch_file(target: &Path) -> Result<File, OutputError> {
    let dir = dir_of(target);
    tempfile::tempfile_in(&dir).map_err(|source| OutputError::Create { dir, source })
}
