//! Keeps the container's dynamic-loader hooks out of the session's tools.
//!
//! The image's programs run with the image's own loader, but glibc's loader still reads
//! `/etc/ld.so.preload` of the root it runs in, and honours `LD_PRELOAD` and `LD_AUDIT` from
//! the environment. A hostile container could use either to run its code inside our debug
//! tools, with our privileges. The variables are dropped from the command's environment (see
//! [`crate::environment`]); the file is covered, in the session's private mount namespace only,
//! by an empty read-only file, so the container itself sees no change.

use std::os::fd::AsFd;

use rustix::fs::{fstat, openat, openat2, FileType, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

use crate::mount::{self, MountError};
use crate::step;

/// The file glibc's loader reads before running any program.
const PRELOAD_FILE: &str = "/etc/ld.so.preload";

/// Why the container's preload file could not be covered.
#[derive(Debug, thiserror::Error)]
pub enum PreloadError {
    /// Resolving or covering the file failed.
    #[error("cannot cover the container's {PRELOAD_FILE} for the session: {0}")]
    Cover(Errno),
    /// The empty file could not be made.
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// Covers the current root's `/etc/ld.so.preload` with an empty, read-only file, when there
/// is one. Call only inside the session's private mount namespace.
///
/// The path is resolved the way the loader would see it from inside the container (symlinks
/// stay within its root), so a preload file reached through a symlink is covered too.
pub fn cover_preload_file() -> Result<(), PreloadError> {
    let target = match openat2(
        CWD,
        PRELOAD_FILE,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => return Ok(()),
        Err(e) => return Err(PreloadError::Cover(e)),
    };
    let st = fstat(&target).map_err(PreloadError::Cover)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        // The loader reads nothing from a directory, and a device cannot hold a list.
        return Ok(());
    }
    // An empty file of our own, not the container's /dev/null, which it may have replaced.
    let tmpfs = mount::tmpfs_detached()?;
    drop(
        openat(
            &tmpfs,
            "empty",
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o444),
        )
        .map_err(PreloadError::Cover)?,
    );
    let empty = open_tree(
        &tmpfs,
        "empty",
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(PreloadError::Cover)?;
    move_mount(
        empty.as_fd(),
        "",
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(PreloadError::Cover)?;
    step!("covered the container's {PRELOAD_FILE} for the session");
    Ok(())
}
