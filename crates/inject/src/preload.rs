//! Keeps the container's dynamic-loader preload lists out of the session's tools.
//!
//! glibc's loader reads `/etc/ld.so.preload` (nixpkgs' glibc: `/etc/ld-nix.so.preload`) of the
//! root it runs in and loads every library named there. A hostile container could use that to
//! run its code inside our debug tools. Images built by crashcart-imgbuild carry loaders that
//! never read these files (their manifest lists them under `ignores`): that is the protection,
//! by construction. For other images the files are covered, in the session's private mount
//! namespace only, by an empty read-only file; a file that cannot be covered (reached through
//! a magic link such as `/proc/self/root/...`) fails the session closed. A cover is not a
//! guarantee (the container can unlink and recreate the file, which detaches it): build the
//! image with crashcart-imgbuild.

use std::os::fd::AsFd;

use rustix::fs::{fstat, openat, openat2, FileType, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

use crate::mount::{self, MountError};
use crate::step;

/// The files glibc's loaders read before running any program.
pub use crashcart_layout::PRELOAD_FILES;

/// Why the container's preload file could not be covered.
#[derive(Debug, thiserror::Error)]
pub enum PreloadError {
    /// Resolving or covering the file failed.
    #[error("cannot cover the container's {0} for the session ({1}), and the image's loader may read it; rebuild the image with crashcart-imgbuild")]
    Cover(&'static str, Errno),
    /// The empty file could not be made.
    #[error(transparent)]
    Mount(#[from] MountError),
}

/// Covers the current root's preload files with an empty, read-only file, where there is one
/// and the image's loader has not been built to ignore it (`ignored`, from the manifest). Call
/// only inside the session's private mount namespace.
///
/// The path is resolved the way the loader would see it from inside the container (symlinks
/// stay within its root), so a preload file reached through a symlink is covered too.
pub fn cover_preload_files(ignored: &[String]) -> Result<(), PreloadError> {
    for file in PRELOAD_FILES {
        if ignored.iter().any(|i| i == file) {
            continue;
        }
        cover(file)?;
    }
    Ok(())
}

fn cover(file: &'static str) -> Result<(), PreloadError> {
    let target = match openat2(
        CWD,
        file,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(()),
        Err(e) => return Err(PreloadError::Cover(file, e)),
    };
    let st = fstat(&target).map_err(|e| PreloadError::Cover(file, e))?;
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        // The loader reads nothing from a directory.
        return Ok(());
    }
    // An empty file of our own, not the container's /dev/null, which it may have replaced.
    let tmpfs = mount::tmpfs_detached()?;
    let cover_err = |e| PreloadError::Cover(file, e);
    drop(
        openat(
            &tmpfs,
            "empty",
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o444),
        )
        .map_err(cover_err)?,
    );
    let empty = open_tree(
        &tmpfs,
        "empty",
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(cover_err)?;
    move_mount(
        empty.as_fd(),
        "",
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(cover_err)?;
    step!("covered the container's {file} for the session");
    Ok(())
}
