//! Mounts through the new mount API (Linux 5.2): a detached read-only mount of the image made
//! on the host, a detached tmpfs, and the session's private copy of the target's mount
//! namespace.
//!
//! The image is mounted by `fsopen`/`fsconfig`/`fsmount` while crashcart is still in the host's
//! mount namespace, so the block device is looked up on the host and no device node ever exists
//! in the container; the detached mount is later attached with `move_mount` from inside.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, mount_change,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountPropagationFlags,
};

use crate::step;

/// Why a mount step failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The kernel has no `fsopen`.
    #[error("the new mount API (fsopen) is missing: crashcart needs Linux 5.2 or later")]
    NoMountApi,
    /// Mounting the image failed.
    #[error("cannot mount {} read-only as ext4{}", device.display(), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Image {
        /// The loop device.
        device: std::path::PathBuf,
        /// Why.
        source: Errno,
        /// The kernel's own message from the filesystem context, when it gave one.
        detail: Option<String>,
    },
    /// Making a tmpfs failed.
    #[error("cannot create a tmpfs")]
    Tmpfs(#[source] Errno),
    /// `unshare(CLONE_NEWNS)` or making the copy a slave failed.
    #[error("cannot make a private copy of the mount namespace")]
    PrivateCopy(#[source] Errno),
}

/// Mounts the ext2/3/4 filesystem on `device` read-only, `nodev`, `nosuid`, detached: the
/// returned descriptor is the mount, attachable anywhere with `move_mount`.
pub fn mount_image_detached(device: &Path) -> Result<OwnedFd, MountError> {
    let fs = fsopen("ext4", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| match e {
        Errno::NOSYS => MountError::NoMountApi,
        source => MountError::Image {
            device: device.to_path_buf(),
            source,
            detail: None,
        },
    })?;
    let failed = |source| MountError::Image {
        device: device.to_path_buf(),
        source,
        detail: fs_context_message(fs.as_fd()),
    };
    fsconfig_set_string(fs.as_fd(), "source", device).map_err(failed)?;
    fsconfig_set_flag(fs.as_fd(), "ro").map_err(failed)?;
    fsconfig_create(fs.as_fd()).map_err(failed)?;
    let mnt = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )
    .map_err(failed)?;
    step!(
        "mounted {} read-only, nodev, nosuid (detached)",
        device.display()
    );
    Ok(mnt)
}

/// A detached, empty tmpfs with these `fsconfig` string options and mount attributes, attached
/// nowhere until the caller moves it.
fn tmpfs(options: &[(&str, &str)], attributes: MountAttrFlags) -> Result<OwnedFd, MountError> {
    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(MountError::Tmpfs)?;
    for &(key, value) in options {
        fsconfig_set_string(fs.as_fd(), key, value).map_err(MountError::Tmpfs)?;
    }
    fsconfig_create(fs.as_fd()).map_err(MountError::Tmpfs)?;
    fsmount(fs.as_fd(), FsMountFlags::FSMOUNT_CLOEXEC, attributes).map_err(MountError::Tmpfs)
}

/// A detached, empty tmpfs (mode 0755) for the session's `/dev`.
pub fn tmpfs_detached() -> Result<OwnedFd, MountError> {
    // Only directories, symlinks and empty mount points live here.
    tmpfs(
        &[("mode", "0755"), ("size", "1m")],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
}

/// The size limit of the session's `HOME` (what a session writes there is charged to the
/// container's memory cgroup, like any tmpfs page it touches).
pub const HOME_SIZE: &str = "256m";

/// A detached, empty tmpfs for the session's `HOME`: mode 0700, owned by the command's user
/// (`uid`, `gid` as the host sees them), no devices, no set-user-ID; [`HOME_SIZE`] at most.
pub fn home_tmpfs_detached(uid: u32, gid: u32) -> Result<OwnedFd, MountError> {
    tmpfs(
        &[
            ("mode", "0700"),
            ("uid", &uid.to_string()),
            ("gid", &gid.to_string()),
            ("size", HOME_SIZE),
        ],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
}

/// A detached, empty tmpfs that allows device nodes (no `nodev`), never attached anywhere:
/// [`crate::loopdev`] makes a loop device's node here when crashcart's `/dev` lacks it.
pub fn device_scratch() -> Result<OwnedFd, MountError> {
    tmpfs(
        &[("mode", "0700"), ("size", "4k")],
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
}

/// A detached mount of a whole cgroup hierarchy (as the calling process's cgroup namespace
/// shows it): cgroup2 when `controllers` is empty, else the v1 hierarchy with exactly these
/// controllers (`name=X` for a named one). The kernel hands back the existing hierarchy; the
/// mount is attached nowhere and goes with its last descriptor.
pub fn cgroup_detached(controllers: &[String]) -> Result<OwnedFd, Errno> {
    let fs = if controllers.is_empty() {
        fsopen("cgroup2", FsOpenFlags::FSOPEN_CLOEXEC)?
    } else {
        let fs = fsopen("cgroup", FsOpenFlags::FSOPEN_CLOEXEC)?;
        for controller in controllers {
            match controller.strip_prefix("name=") {
                Some(name) => fsconfig_set_string(fs.as_fd(), "name", name)?,
                None => fsconfig_set_flag(fs.as_fd(), controller.as_str())?,
            }
        }
        fs
    };
    fsconfig_create(fs.as_fd())?;
    fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOEXEC,
    )
}

/// Moves the calling process into a private copy of its current mount namespace whose mounts
/// receive but never send propagation.
///
/// The copy's mounts are in the same peer groups as the originals: without making them slaves
/// first, anything mounted in the session would propagate back into the container.
pub fn enter_private_copy() -> Result<(), MountError> {
    crate::sys::unshare_mount_namespace().map_err(MountError::PrivateCopy)?;
    mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )
    .map_err(MountError::PrivateCopy)?;
    Ok(())
}

/// The first message the kernel queued on a filesystem context (why `fsconfig` failed).
fn fs_context_message(fs: std::os::fd::BorrowedFd<'_>) -> Option<String> {
    let mut buf = [0u8; 512];
    let n = rustix::io::read(fs, &mut buf).ok()?;
    let msg = String::from_utf8_lossy(&buf[..n]).trim().to_string();
    // Messages are "e ext4: ...", "w ...", "i ...".
    Some(msg.get(2..).unwrap_or(&msg).to_string()).filter(|m| !m.is_empty())
}
