//! `/dev/crashcart` inside the container: the session's private `/dev`, and the persistent
//! mount of `-m`/`-u`.
//!
//! Everything here runs inside the target's mount namespace and treats the container's `/dev`
//! as hostile: `/dev` is opened without following any symlink, and every entry is handled
//! relative to that descriptor, one component at a time, never following a symlink.
//!
//! A session must leave nothing behind even if crashcart is SIGKILLed, and the container's
//! `/dev` is a tmpfs shared with the container: a `crashcart` directory created there would
//! outlive the session. So the session's private mount namespace gets a fresh tmpfs over `/dev`
//! that replicates the container's: symlinks are recreated, every other entry gets an empty
//! placeholder with a recursive bind of the original on it (so `/dev/pts`, `/dev/shm`, device
//! nodes and bind-mounted files keep working), and `crashcart` holds the image. All of it lives
//! only in the session's mount namespace and dies with it.
//!
//! The session's `HOME` lives there too: [`SESSION_HOME`], a small tmpfs of its own owned by
//! the command's user, mode 0700. Tools that want a writable home (gdb's history and cache,
//! vim's viminfo, bash's history) get one that no container process can see or has written:
//! a home directory of the container's would hand them its `.gdbinit`, `.vimrc` or `.bashrc`,
//! which are code.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{
    mkdirat, openat, openat2, readlinkat, statat, statx, symlinkat, unlinkat, AtFlags, Dir,
    FileType, Mode, OFlags, ResolveFlags, StatxAttributes, StatxFlags, CWD,
};
use rustix::io::Errno;
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

use crate::mount::{self, MountError};
use crate::step;

/// Where a store alias points: the image's store in the container.
pub use crashcart_layout::IMAGE_STORE as STORE_ALIAS_TARGET;
pub use crashcart_layout::MOUNT_NAME;

/// The name of the session's `HOME` under `/dev`.
pub const HOME_NAME: &str = "crashcart-home";
/// The session's `HOME` in the container (see the module docs).
pub const SESSION_HOME: &str = "/dev/crashcart-home";

/// Who owns the session's `HOME`: the command's user and group as the host sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HomeOwner {
    /// Host user ID.
    pub uid: u32,
    /// Host group ID.
    pub gid: u32,
}

/// Why `/dev/crashcart` could not be set up or removed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// `/dev` is a symlink (or goes through one).
    #[error("the container's /dev is a symlink; refusing to follow it")]
    DevIsSymlink,
    /// `/dev` cannot be opened.
    #[error("cannot open the container's /dev")]
    OpenDev(#[source] Errno),
    /// `/dev/crashcart` is a symlink the container planted.
    #[error("/dev/crashcart in the container is a symlink; refusing to mount through it")]
    PlantedSymlink,
    /// `/dev/crashcart` exists and is not a directory.
    #[error("/dev/crashcart in the container exists and is not a directory")]
    NotADirectory,
    /// Something else is already mounted at `/dev/crashcart`.
    #[error(
        "something else is already mounted at /dev/crashcart in the container (remove it with -u)"
    )]
    AlreadyMounted,
    /// The store alias exists and is not crashcart's symlink.
    #[error(
        "/dev/{0} in the container exists and is not crashcart's store link; refusing to use it"
    )]
    PlantedAlias(String),
    /// `-u` found a mount at `/dev/crashcart` that crashcart did not make.
    #[error("what is mounted at /dev/crashcart in the container is not crashcart's mount; left as it is")]
    NotOurs,
    /// `-u` found nothing to remove.
    #[error("nothing is mounted at /dev/crashcart in the container")]
    NotMounted,
    /// A step on an entry failed.
    #[error("cannot {what} /dev/{name} in the container")]
    Entry {
        /// The step.
        what: &'static str,
        /// The entry under `/dev`.
        name: String,
        /// Why.
        source: Errno,
    },
    /// A mount-API step failed.
    #[error(transparent)]
    Mount(#[from] MountError),
}

fn entry_err<'a>(what: &'static str, name: &'a str) -> impl FnOnce(Errno) -> DevError + 'a {
    move |source| DevError::Entry {
        what,
        name: name.to_string(),
        source,
    }
}

/// Opens the current mount namespace's `/dev` for reading, refusing symlinks anywhere on the
/// way (`/dev -> /tmp/x` would otherwise redirect our mounts).
pub fn open_dev() -> Result<OwnedFd, DevError> {
    openat2(
        CWD,
        "/dev",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        Errno::LOOP => DevError::DevIsSymlink,
        e => DevError::OpenDev(e),
    })
}

/// What an entry of the container's `/dev` becomes in the session's `/dev`.
enum Replica {
    Symlink(CString),
    Directory(Mode),
    File(Mode),
}

/// Covers `/dev` of the (private) mount namespace with a tmpfs replicating the container's
/// `/dev`, with the image mounted at `/dev/crashcart`, the store alias, if any, pointing
/// into it, and the session's `HOME` owned by `home`. `dev` is [`open_dev`] of the same
/// namespace; `image` is the detached image mount.
pub fn build_session_dev(
    dev: BorrowedFd<'_>,
    image: OwnedFd,
    store_alias: Option<&str>,
    home: HomeOwner,
) -> Result<(), DevError> {
    // Read the originals before the tmpfs covers them (`dev` keeps reaching them afterwards:
    // lookups relative to it start below the new mount).
    let mut entries = Vec::new();
    for entry in Dir::read_from(dev).map_err(DevError::OpenDev)? {
        let entry = entry.map_err(DevError::OpenDev)?;
        let name = entry.file_name().to_owned();
        let bytes = name.as_bytes();
        if [
            b".".as_slice(),
            b"..",
            MOUNT_NAME.as_bytes(),
            HOME_NAME.as_bytes(),
        ]
        .contains(&bytes)
        {
            continue;
        }
        if store_alias.is_some_and(|a| a.as_bytes() == bytes) {
            continue;
        }
        let display = String::from_utf8_lossy(bytes).into_owned();
        let Ok(st) = statat(dev, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue; // vanished meanwhile
        };
        let mode = Mode::from_raw_mode(st.st_mode) & Mode::from_raw_mode(0o7777);
        let replica = match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => match readlinkat(dev, name.as_c_str(), Vec::new()) {
                Ok(target) => Replica::Symlink(target),
                Err(_) => continue,
            },
            FileType::Directory => Replica::Directory(mode),
            _ => Replica::File(mode),
        };
        entries.push((name, display, replica));
    }

    let tmpfs = mount::tmpfs_detached()?;
    move_mount(
        tmpfs.as_fd(),
        "",
        dev,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(entry_err("cover", ""))?;
    let new_dev = tmpfs.as_fd();

    for (name, display, replica) in &entries {
        if let Err(e) = replicate(dev, new_dev, name, replica) {
            // A device the session cannot mirror is not worth failing the session for.
            step!("session /dev: skipping /dev/{display}: {e}");
        }
    }

    mkdirat(new_dev, MOUNT_NAME, Mode::from_raw_mode(0o755))
        .map_err(entry_err("create", MOUNT_NAME))?;
    move_mount(
        image.as_fd(),
        "",
        new_dev,
        MOUNT_NAME,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(entry_err("mount the image on", MOUNT_NAME))?;
    if let Some(alias) = store_alias {
        symlinkat(STORE_ALIAS_TARGET, new_dev, alias).map_err(entry_err("create", alias))?;
    }
    mkdirat(new_dev, HOME_NAME, Mode::from_raw_mode(0o700))
        .map_err(entry_err("create", HOME_NAME))?;
    let home_fs = mount::home_tmpfs_detached(home.uid, home.gid)?;
    move_mount(
        home_fs.as_fd(),
        "",
        new_dev,
        HOME_NAME,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(entry_err("mount the session's home on", HOME_NAME))?;
    step!(
        "session /dev: {} entries mirrored, image at /dev/crashcart, HOME {SESSION_HOME}{}",
        entries.len(),
        store_alias
            .map(|a| format!(", /dev/{a} -> {STORE_ALIAS_TARGET}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Recreates one entry of the old `/dev` in the new one.
fn replicate(
    old_dev: BorrowedFd<'_>,
    new_dev: BorrowedFd<'_>,
    name: &CStr,
    replica: &Replica,
) -> Result<(), Errno> {
    match replica {
        Replica::Symlink(target) => return symlinkat(target.as_c_str(), new_dev, name),
        Replica::Directory(mode) => mkdirat(new_dev, name, *mode)?,
        Replica::File(mode) => {
            openat(
                new_dev,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                *mode,
            )?;
        }
    }
    // A recursive clone of the original keeps submounts (pts, shm, mqueue) and the original's
    // mount flags; NOFOLLOW: an entry swapped for a symlink meanwhile is not followed.
    let clone = open_tree(
        old_dev,
        name,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::AT_RECURSIVE
            | OpenTreeFlags::AT_SYMLINK_NOFOLLOW
            | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    move_mount(
        clone.as_fd(),
        "",
        new_dev,
        name,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
}

/// `-m`: mounts the image at `/dev/crashcart` in the container's own mount namespace, and the
/// store alias beside it. `dev` is [`open_dev`] of that namespace.
pub fn mount_persistent(
    dev: BorrowedFd<'_>,
    image: OwnedFd,
    store_alias: Option<&str>,
) -> Result<(), DevError> {
    // The alias first: one the container planted (a symlink to anywhere, or any other file)
    // is refused before anything is mounted.
    let alias_created = match store_alias {
        Some(alias) => match symlinkat(STORE_ALIAS_TARGET, dev, alias) {
            Ok(()) => {
                step!("created /dev/{alias} -> {STORE_ALIAS_TARGET}");
                true
            }
            Err(Errno::EXIST) if is_store_alias(dev, OsStr::new(alias)) => false,
            Err(Errno::EXIST) => return Err(DevError::PlantedAlias(alias.to_string())),
            Err(e) => return Err(entry_err("create", alias)(e)),
        },
        None => false,
    };
    let undo_alias = || {
        if let (true, Some(alias)) = (alias_created, store_alias) {
            let _ = unlinkat(dev, alias, AtFlags::empty());
        }
    };
    let created = match mkdirat(dev, MOUNT_NAME, Mode::from_raw_mode(0o755)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => {
            undo_alias();
            return Err(entry_err("create", MOUNT_NAME)(e));
        }
    };
    let dir = match open_mount_point(dev) {
        Ok(dir) => Some(dir),
        // Mounted already: fine if it is this image (same superblock, so same loop device),
        // which makes -m and -e repeatable.
        Err(DevError::AlreadyMounted) if mounts_same_filesystem(dev, image.as_fd()) => None,
        Err(e) => {
            if created {
                let _ = unlinkat(dev, MOUNT_NAME, AtFlags::REMOVEDIR);
            }
            undo_alias();
            return Err(e);
        }
    };
    if let Some(dir) = dir {
        if let Err(e) = attach_image(dev, dir, image, created) {
            undo_alias();
            return Err(e);
        }
    } else {
        step!("the image is already mounted at /dev/crashcart in the container");
    }
    Ok(())
}

/// Whether `/dev/crashcart` (looked up without following symlinks) is the root of a mount of
/// the filesystem `image` is a mount of.
fn mounts_same_filesystem(dev: BorrowedFd<'_>, image: BorrowedFd<'_>) -> bool {
    let mounted = openat2(
        dev,
        MOUNT_NAME,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    );
    let (Ok(mounted), Ok(ours)) = (mounted, rustix::fs::fstat(image)) else {
        return false;
    };
    rustix::fs::fstat(mounted).is_ok_and(|st| st.st_dev == ours.st_dev && st.st_ino == ours.st_ino)
}

/// Moves the detached image mount onto the opened, empty `/dev/crashcart`; on failure removes
/// the directory if this run created it.
fn attach_image(
    dev: BorrowedFd<'_>,
    dir: OwnedFd,
    image: OwnedFd,
    created: bool,
) -> Result<(), DevError> {
    if let Err(e) = move_mount(
        image.as_fd(),
        "",
        dir.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    ) {
        drop(dir);
        if created {
            let _ = unlinkat(dev, MOUNT_NAME, AtFlags::REMOVEDIR);
        }
        return Err(entry_err("mount the image on", MOUNT_NAME)(e));
    }
    step!("mounted the image at /dev/crashcart in the container");
    Ok(())
}

/// Opens the existing `/dev/crashcart` directory as a mount target: not a symlink, and nothing
/// mounted on it yet (`RESOLVE_NO_XDEV` fails when the lookup would cross into a mount).
fn open_mount_point(dev: BorrowedFd<'_>) -> Result<OwnedFd, DevError> {
    openat2(
        dev,
        MOUNT_NAME,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )
    .map_err(|e| match e {
        Errno::LOOP => DevError::PlantedSymlink,
        Errno::NOTDIR => DevError::NotADirectory,
        Errno::XDEV => DevError::AlreadyMounted,
        e => entry_err("open", MOUNT_NAME)(e),
    })
}

/// `-u`: detaches the image mounted at `/dev/crashcart`, removes the directory and every
/// `/dev` symlink pointing at `/dev/crashcart/store` — only when the mount is crashcart's own: a
/// filesystem on one of `ours` (read-only autoclear loop devices, see
/// [`crate::loopdev::crashcart_devices`]). Anything else there is the container's and stays.
pub fn unmount_persistent(dev: BorrowedFd<'_>, ours: &[u64]) -> Result<(), DevError> {
    let st = statat(dev, MOUNT_NAME, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| match e {
        Errno::NOENT => DevError::NotMounted,
        e => entry_err("inspect", MOUNT_NAME)(e),
    })?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {}
        FileType::Symlink => return Err(DevError::PlantedSymlink),
        _ => return Err(DevError::NotADirectory),
    }
    let mounted = openat2(
        dev,
        MOUNT_NAME,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        Errno::LOOP => DevError::PlantedSymlink,
        e => entry_err("open", MOUNT_NAME)(e),
    })?;
    let root = statx(
        mounted.as_fd(),
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::BASIC_STATS,
    )
    .map_err(entry_err("inspect", MOUNT_NAME))?;
    let is_mount = root
        .stx_attributes_mask
        .contains(StatxAttributes::MOUNT_ROOT)
        && root.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
    if !is_mount {
        return Err(DevError::NotMounted);
    }
    let device = rustix::fs::makedev(root.stx_dev_major, root.stx_dev_minor);
    if !ours.contains(&device) {
        return Err(DevError::NotOurs);
    }
    // umount2 takes only a path: make the mount our working directory so "." names exactly
    // the mount we opened, with no path lookup the container could redirect.
    rustix::process::fchdir(mounted.as_fd()).map_err(entry_err("enter", MOUNT_NAME))?;
    let res = rustix::mount::unmount(".", rustix::mount::UnmountFlags::DETACH);
    let _ = rustix::process::fchdir(dev);
    res.map_err(entry_err("unmount", MOUNT_NAME))?;
    step!("unmounted /dev/crashcart in the container");
    drop(mounted);
    match unlinkat(dev, MOUNT_NAME, AtFlags::REMOVEDIR) {
        Ok(()) => step!("removed /dev/crashcart"),
        Err(e) => crate::log::say(format_args!(
            "warning: cannot remove /dev/crashcart in the container: {e}"
        )),
    }
    remove_store_aliases(dev);
    Ok(())
}

/// Removes `/dev` symlinks that point at [`STORE_ALIAS_TARGET`] (left by `-m`).
fn remove_store_aliases(dev: BorrowedFd<'_>) {
    let Ok(dir) = Dir::read_from(dev) else { return };
    for entry in dir.flatten() {
        if entry.file_type() != FileType::Symlink {
            continue;
        }
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if is_store_alias(dev, name) && unlinkat(dev, name, AtFlags::empty()).is_ok() {
            step!("removed /dev/{}", name.to_string_lossy());
        }
    }
}

fn is_store_alias(dev: BorrowedFd<'_>, name: &OsStr) -> bool {
    readlinkat(dev, name, Vec::new()).is_ok_and(|t| t.as_bytes() == STORE_ALIAS_TARGET.as_bytes())
}
