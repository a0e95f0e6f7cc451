//! Attaching the image to a loop device: read-only, autoclear, one device per image.
//!
//! Concurrent crashcart runs serialize on an exclusive `flock` of the image file itself (no lock
//! file on the host), find a device already backed by the same file (same `st_dev`/`st_ino`,
//! read-only, autoclear, whole file) or configure a free one with `LOOP_CONFIGURE` (Linux 5.8).
//! Autoclear makes the kernel detach the device when its last user goes: our open descriptor
//! until the image is mounted, then the mounts. Nothing needs cleaning up, even after SIGKILL.
//!
//! Devices are opened through their `/dev/loopN` node when there is one. In a privileged
//! container (a debugging pod with the host's devices) `/dev` is a copy made when the
//! container started, so a loop device the kernel creates later has no node there; crashcart
//! then makes one for the moment in a detached tmpfs of its own, from the device number sysfs
//! gives, opens it and unlinks it: nothing is left in any `/dev`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, open, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::image::Image;
use crate::step;
use crate::sys;

/// How often to retry when another program takes the free device we were handed.
const CONFIGURE_ATTEMPTS: usize = 16;

/// Why the image could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// `flock` on the image failed.
    #[error("cannot lock image {}", path.display())]
    Lock {
        /// The image.
        path: PathBuf,
        /// Why.
        source: Errno,
    },
    /// The image cannot be stat'ed.
    #[error("cannot stat image {}", path.display())]
    Stat {
        /// The image.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `/dev/loop-control` is missing or refused.
    #[error("cannot get a free loop device from /dev/loop-control")]
    Control(#[source] Errno),
    /// Opening a loop device failed.
    #[error("cannot open {}", path.display())]
    Open {
        /// The device.
        path: PathBuf,
        /// Why.
        source: Errno,
    },
    /// `LOOP_CONFIGURE` is unknown to this kernel.
    #[error("cannot attach image to {}: LOOP_CONFIGURE needs Linux 5.8 or later", .0.display())]
    NoConfigure(PathBuf),
    /// `LOOP_CONFIGURE` failed.
    #[error("cannot attach image {} to {}", image.display(), device.display())]
    Configure {
        /// The image.
        image: PathBuf,
        /// The device.
        device: PathBuf,
        /// Why.
        source: Errno,
    },
    /// Every free device was taken by someone else before we could configure it.
    #[error("cannot attach image {}: loop devices kept being taken by other programs", .0.display())]
    Contended(PathBuf),
}

/// An exclusive `flock` on the image, released on drop.
pub struct ImageLock<'a>(BorrowedFd<'a>);

impl Drop for ImageLock<'_> {
    fn drop(&mut self) {
        let _ = flock(self.0, FlockOperation::Unlock);
    }
}

/// Takes the per-image lock that makes "find or attach" atomic across crashcart runs.
pub fn lock(image: &Image) -> Result<ImageLock<'_>, LoopError> {
    flock(image.as_fd(), FlockOperation::LockExclusive).map_err(|source| LoopError::Lock {
        path: image.path.clone(),
        source,
    })?;
    Ok(ImageLock(image.as_fd()))
}

/// An open loop device backed by the image. While this is open the device cannot autoclear.
#[derive(Debug)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    fd: OwnedFd,
    /// Whether `path` exists in crashcart's `/dev` (else the device was opened through a
    /// node of crashcart's own, see the module docs).
    in_dev: bool,
}

impl LoopDevice {
    /// What to give a filesystem as its `source`: `/dev/loopN`, or, when crashcart's `/dev`
    /// has no such node, the open descriptor's `/proc/self/fd/N` (the kernel follows it to the
    /// block device).
    pub fn mount_source(&self) -> PathBuf {
        if self.in_dev {
            self.path.clone()
        } else {
            PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
        }
    }
}

/// Opens loop devices by name, making a node of crashcart's own for one `/dev` lacks.
#[derive(Default)]
struct Opener {
    /// A detached tmpfs (without `nodev`) for those nodes, made on first need.
    scratch: Option<OwnedFd>,
}

impl Opener {
    /// Opens `loopN` with `flags`: `/dev/loopN`, else a node made from
    /// `/sys/block/loopN/dev` in the scratch tmpfs (unlinked again once open). Returns the
    /// descriptor and whether `/dev` had the node.
    fn open(&mut self, name: &str, flags: OFlags) -> Result<(OwnedFd, bool), Errno> {
        let flags = flags | OFlags::CLOEXEC;
        match open(Path::new("/dev").join(name), flags, Mode::empty()) {
            Err(Errno::NOENT) => {}
            other => return other.map(|fd| (fd, true)),
        }
        let number = std::fs::read_to_string(Path::new("/sys/block").join(name).join("dev"))
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::NOENT))?;
        let (major, minor) = number.trim().split_once(':').ok_or(Errno::NOENT)?;
        let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
            return Err(Errno::NOENT);
        };
        if self.scratch.is_none() {
            self.scratch = Some(crate::mount::device_scratch().map_err(|e| match e {
                crate::mount::MountError::Tmpfs(errno) => errno,
                _ => Errno::NODEV,
            })?);
        }
        let scratch = self.scratch.as_ref().expect("made above");
        rustix::fs::mknodat(
            scratch,
            name,
            FileType::BlockDevice,
            Mode::RUSR | Mode::WUSR,
            rustix::fs::makedev(major, minor),
        )?;
        let opened = rustix::fs::openat(scratch, name, flags | OFlags::NOFOLLOW, Mode::empty());
        let _ = rustix::fs::unlinkat(scratch, name, rustix::fs::AtFlags::empty());
        step!("{name} has no node in /dev: opened through a node of crashcart's own");
        opened.map(|fd| (fd, false))
    }
}

impl AsFd for LoopDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Finds the loop device already backing `image`, or attaches it to a free one.
/// Call with the [`lock`] held.
pub fn attach_read_only(image: &Image, _lock: &ImageLock<'_>) -> Result<LoopDevice, LoopError> {
    let meta = image.file.metadata().map_err(|source| LoopError::Stat {
        path: image.path.clone(),
        source,
    })?;
    let mut opener = Opener::default();
    if let Some(dev) = find_existing(&mut opener, meta.dev(), meta.ino()) {
        step!("reusing loop device {}", dev.path.display());
        return Ok(dev);
    }
    let control = open(
        "/dev/loop-control",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(LoopError::Control)?;
    for _ in 0..CONFIGURE_ATTEMPTS {
        let n = sys::loop_get_free(control.as_fd()).map_err(LoopError::Control)?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let (fd, in_dev) = opener
            .open(&format!("loop{n}"), OFlags::RDWR)
            .map_err(|source| LoopError::Open {
                path: path.clone(),
                source,
            })?;
        match sys::loop_configure(
            fd.as_fd(),
            image.as_fd(),
            sys::LO_FLAGS_READ_ONLY | sys::LO_FLAGS_AUTOCLEAR,
        ) {
            Ok(()) => {
                step!(
                    "attached {} to {} (read-only, autoclear)",
                    image.path.display(),
                    path.display()
                );
                return Ok(LoopDevice { path, fd, in_dev });
            }
            // Another program configured it between GET_FREE and now: ask again.
            Err(Errno::BUSY) => continue,
            Err(Errno::INVAL | Errno::NOTTY) => return Err(LoopError::NoConfigure(path)),
            Err(source) => {
                return Err(LoopError::Configure {
                    image: image.path.clone(),
                    device: path,
                    source,
                })
            }
        }
    }
    Err(LoopError::Contended(image.path.clone()))
}

/// Looks through attached loop devices for one backed read-only, with autoclear, by the file
/// `(dev, ino)` as a whole. The check is made on the opened device, so it still holds after.
fn find_existing(opener: &mut Opener, dev: u64, ino: u64) -> Option<LoopDevice> {
    let entries = std::fs::read_dir("/sys/block").ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        // Only attached devices have a backing_file.
        if !Path::new("/sys/block")
            .join(name)
            .join("loop/backing_file")
            .exists()
        {
            continue;
        }
        let path = PathBuf::from("/dev").join(name);
        let Ok((fd, in_dev)) = opener.open(name, OFlags::RDONLY) else {
            continue;
        };
        let Ok(info) = sys::loop_get_status(fd.as_fd()) else {
            continue;
        };
        let wanted = sys::LO_FLAGS_READ_ONLY | sys::LO_FLAGS_AUTOCLEAR;
        if info.lo_device == dev
            && info.lo_inode == ino
            && info.lo_flags & wanted == wanted
            && info.lo_offset == 0
            && info.lo_sizelimit == 0
        {
            return Some(LoopDevice { path, fd, in_dev });
        }
    }
    None
}

/// Device numbers (`st_dev` of a filesystem mounted from them) of every attached loop device
/// set up the way crashcart sets them up: read-only and autoclear. `-u` removes a mount only if
/// its filesystem lives on one of these; a container cannot attach loop devices, so whatever
/// it mounted itself at `/dev/crashcart` is never among them.
pub fn crashcart_devices() -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let wanted = sys::LO_FLAGS_READ_ONLY | sys::LO_FLAGS_AUTOCLEAR;
    let mut devices = Vec::new();
    let mut opener = Opener::default();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| n.starts_with("loop")) else {
            continue;
        };
        // Only attached devices have a backing_file (opening a free one through a node of
        // our own would be wasted work).
        if !entry.path().join("loop/backing_file").exists() {
            continue;
        }
        let Ok((fd, _)) = opener.open(name, OFlags::RDONLY) else {
            continue;
        };
        let (Ok(info), Ok(st)) = (sys::loop_get_status(fd.as_fd()), rustix::fs::fstat(&fd)) else {
            continue;
        };
        if info.lo_flags & wanted == wanted {
            devices.push(st.st_rdev);
        }
    }
    devices
}
