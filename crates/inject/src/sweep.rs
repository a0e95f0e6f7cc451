//! Ending every process of a session, however it ends.
//!
//! Every process a session starts lives in the session's private mount namespace (the helper
//! unshared it; children inherit it, and the debug profile's seccomp filter denies `unshare`
//! and `setns`), and container processes cannot enter it (that takes `CAP_SYS_ADMIN` over the
//! host's user namespace). So "the session's processes" are exactly the processes in that mount
//! namespace, and the helper, which lives in it too, can find them all, background jobs and
//! `setsid` daemons included, without tracking forks.
//!
//! The scan uses a procfs instance of its own, mounted detached for the host's PID namespace:
//! the container's `/proc`, which the session sees, is the container's to tamper with, and the
//! helper holds no host descriptor while the command's process is created.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{openat, readlinkat, Dir, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{fsconfig_create, fsmount, fsopen, FsMountFlags, FsOpenFlags, MountAttrFlags};
use rustix::process::{getpid, pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use crate::step;

/// How many scans a sweep makes at most (each kills what it finds; a process forking during a
/// scan is found by the next).
const MAX_SCANS: usize = 200;

/// Kills, with SIGKILL, every process except the caller that is in the caller's mount
/// namespace, until a scan finds none. Returns how many were killed.
pub fn kill_mount_namespace_peers() -> Result<usize, Errno> {
    let proc = host_procfs()?;
    let ours = readlinkat(&proc, "self/ns/mnt", Vec::new())?;
    let me = getpid();
    let mut killed = 0;
    for _ in 0..MAX_SCANS {
        let found = kill_once(proc.as_fd(), ours.as_bytes(), me)?;
        if found == 0 {
            break;
        }
        killed += found;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    if killed > 0 {
        step!("ended {killed} remaining process(es) of the session");
    }
    Ok(killed)
}

/// One scan: SIGKILL to every process in the namespace `ours` names.
fn kill_once(proc: BorrowedFd<'_>, ours: &[u8], me: Pid) -> Result<usize, Errno> {
    let mut found = 0;
    for entry in Dir::read_from(proc)? {
        let entry = entry?;
        let Some(pid) = std::str::from_utf8(entry.file_name().to_bytes())
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        if pid == me || !in_namespace(proc, pid, ours) {
            continue;
        }
        // Pin the process, then check again: a PID reused between the scan and the signal must
        // not be hit.
        let Ok(pidfd) = pidfd_open(pid, PidfdFlags::empty()) else {
            continue;
        };
        if in_namespace(proc, pid, ours) && pidfd_send_signal(&pidfd, Signal::KILL).is_ok() {
            found += 1;
        }
    }
    Ok(found)
}

fn in_namespace(proc: BorrowedFd<'_>, pid: Pid, ours: &[u8]) -> bool {
    let link = format!("{}/ns/mnt", pid.as_raw_nonzero());
    readlinkat(proc, link.as_str(), Vec::new()).is_ok_and(|l| l.as_bytes() == ours)
}

/// The root directory of a detached procfs showing the caller's PID namespace (the host's, for
/// the helper), opened for reading (a mount descriptor is `O_PATH`, which cannot be listed).
fn host_procfs() -> Result<OwnedFd, Errno> {
    let fs = fsopen("proc", FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_create(fs.as_fd())?;
    let mount = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NOEXEC
            | MountAttrFlags::MOUNT_ATTR_NODEV,
    )?;
    openat(
        &mount,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}
