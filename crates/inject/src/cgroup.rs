//! The target's cgroups (v1, every hierarchy, and v2): `cgroup.procs` of each is opened on the
//! host before anything is entered, and the command's host PID is written to each, so the
//! command is accounted (and limited, and frozen, and killed) with the container.
//!
//! From a container (a privileged debugging pod) the cgroup mounts crashcart sees show only
//! its own cgroups, and with a cgroup namespace of its own the target's cgroups read as
//! `/../..` paths: a cgroup no mount shows is reached through a detached mount of its whole
//! hierarchy (see [`crate::cgroupfs::CgroupDir`]), looked up and made from the target's own
//! cgroup namespace when the paths climb out of crashcart's.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::PathBuf;

use crate::cgroupfs::{
    in_cgroup_namespace, outside_our_namespace, parse_membership, parse_mountinfo, CgroupDir,
    HierarchyMount,
};
use crate::process::{ProcessError, TargetProcess};
use crate::step;

/// Why the command could not join the target's cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `/proc/PID/cgroup` cannot be read.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// `/proc/self/mountinfo` cannot be read.
    #[error("cannot read /proc/self/mountinfo")]
    Mountinfo(#[source] std::io::Error),
    /// Opening a `cgroup.procs` failed.
    #[error("cannot open {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Entering the target's cgroup namespace (or coming back) failed.
    #[error("cannot enter the target's cgroup namespace to reach its cgroups")]
    Namespace(#[source] std::io::Error),
    /// A cgroup path as long as the kernel shows: it may be cut, and name another cgroup.
    #[error(
        "the target's cgroup path in hierarchy {hierarchy} is {len} bytes long, the most /proc/PID/cgroup shows: the kernel may have cut it short; refusing to guess the cgroup"
    )]
    TooLong {
        /// The hierarchy ID of the line.
        hierarchy: String,
        /// The length shown.
        len: usize,
    },
    /// Writing the PID failed.
    #[error("cannot move pid {pid} into {}", path.display())]
    Join {
        /// The process.
        pid: i32,
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The opened `cgroup.procs` of each of the target's cgroups.
#[derive(Debug)]
pub struct CgroupProcs {
    files: Vec<(PathBuf, File)>,
}

impl CgroupProcs {
    /// Opens, for every hierarchy the target belongs to and the host has mounted, the target
    /// cgroup's `cgroup.procs` for writing.
    pub fn open(target: &TargetProcess) -> Result<CgroupProcs, CgroupError> {
        let membership = String::from_utf8_lossy(&target.read("cgroup")?).into_owned();
        if !outside_our_namespace(&membership) {
            return Self::open_here(target);
        }
        // The target's cgroups lie outside crashcart's cgroup namespace: look (and mount)
        // from the target's own, which holds them, then come back.
        step!("the target's cgroups are outside our cgroup namespace: looking from its own");
        let theirs = target.open_file("ns/cgroup")?;
        in_cgroup_namespace(theirs.as_fd(), || Self::open_here(target))
            .map_err(CgroupError::Namespace)?
    }

    /// [`CgroupProcs::open`] as the current cgroup namespace shows the cgroups.
    fn open_here(target: &TargetProcess) -> Result<CgroupProcs, CgroupError> {
        let membership = String::from_utf8_lossy(&target.read("cgroup")?).into_owned();
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
        let mounts = parse_mountinfo(&mountinfo);
        if let Some(line) = parse_membership(&membership)
            .into_iter()
            .find(|l| l.may_be_truncated())
        {
            return Err(CgroupError::TooLong {
                hierarchy: line.hierarchy.to_string(),
                len: line.path.len(),
            });
        }
        let mut files = Vec::new();
        for dir in procs_dirs(&membership, &mounts) {
            let file = dir
                .open("cgroup.procs", true)
                .map_err(|source| CgroupError::Open {
                    path: PathBuf::from(format!("{dir}/cgroup.procs")),
                    source,
                })?;
            files.push((PathBuf::from(format!("{dir}/cgroup.procs")), file));
        }
        step!("cgroups to join: {}", files.len());
        Ok(CgroupProcs { files })
    }

    /// The descriptors held (for a forked process that closes every other one).
    pub fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.files.iter().map(|(_, f)| f.as_raw_fd()).collect()
    }

    /// Moves `pid` (in crashcart's PID namespace) into every one of the cgroups.
    pub fn join(&self, pid: i32) -> Result<(), CgroupError> {
        for (path, file) in &self.files {
            let mut file = file;
            file.write_all(pid.to_string().as_bytes())
                .map_err(|source| CgroupError::Join {
                    pid,
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// The directories of the cgroups in `/proc/PID/cgroup` content, given the cgroup mounts: under
/// a mount that shows them, else in their whole hierarchy. A path that climbs out of the
/// current cgroup namespace is skipped.
fn procs_dirs(membership: &str, mounts: &[HierarchyMount]) -> Vec<CgroupDir> {
    let mut dirs = Vec::new();
    for line in parse_membership(membership) {
        match CgroupDir::locate(&line, mounts) {
            Some(dir) => dirs.push(dir),
            None => step!(
                "cgroup {} is outside our cgroup namespace; skipped",
                line.path
            ),
        }
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
32 25 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
33 25 0:29 /sub /mnt/cg\\040v1 rw - cgroup cgroup rw,memory
34 25 254:0 / / rw - ext4 /dev/vda rw";

    #[test]
    fn v1_and_v2_paths() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[3].mount_point, PathBuf::from("/mnt/cg v1"));
        let dirs = procs_dirs(
            "9:name=systemd:/docker/abc\n1:cpu:/docker/abc\n4:memory:/sub/x\n5:pids:/y\n0::/docker/abc\n",
            &mounts,
        );
        assert_eq!(
            dirs,
            [
                CgroupDir::Mounted("/sys/fs/cgroup/systemd/docker/abc".into()),
                CgroupDir::Mounted("/sys/fs/cgroup/cpu/docker/abc".into()),
                CgroupDir::Mounted("/mnt/cg v1/x".into()),
                // pids is not mounted here: its hierarchy is mounted for the moment.
                CgroupDir::Hierarchy {
                    controllers: vec!["pids".into()],
                    path: "/y".into()
                },
                CgroupDir::Mounted("/sys/fs/cgroup/unified/docker/abc".into()),
            ]
        );
    }

    #[test]
    fn paths_the_kernel_may_have_cut_are_noticed() {
        let cut = format!(
            "4:memory:/{}\n",
            "a".repeat(crate::cgroupfs::LONGEST_SHOWN_PATH)
        );
        let whole = format!(
            "4:memory:/{}\n",
            "a".repeat(crate::cgroupfs::LONGEST_SHOWN_PATH - 1)
        );
        assert!(parse_membership(&cut)[0].may_be_truncated());
        assert!(!parse_membership(&whole)[0].may_be_truncated());
    }

    #[test]
    fn cgroups_outside_the_mount_are_reached_through_their_hierarchy() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(
            procs_dirs("4:memory:/other\n4:memory:/subway\n0::/../x\n", &mounts),
            [
                CgroupDir::Hierarchy {
                    controllers: vec!["memory".into()],
                    path: "/other".into()
                },
                CgroupDir::Hierarchy {
                    controllers: vec!["memory".into()],
                    path: "/subway".into()
                },
            ]
        );
    }
}
