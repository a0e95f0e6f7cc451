//! The target's cgroups (v1, every hierarchy, and v2): `cgroup.procs` of each is opened on the
//! host before anything is entered, and the command's host PID is written to each, so the
//! command is accounted (and limited, and frozen, and killed) with the container.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use crate::cgroupfs::{parse_membership, parse_mountinfo, HierarchyMount};
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
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
        let mounts = parse_mountinfo(&mountinfo);
        let mut files = Vec::new();
        for path in procs_paths(&membership, &mounts) {
            let file =
                File::options()
                    .write(true)
                    .open(&path)
                    .map_err(|source| CgroupError::Open {
                        path: path.clone(),
                        source,
                    })?;
            files.push((path, file));
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

/// `cgroup.procs` paths for `/proc/PID/cgroup` content, given the cgroup mounts. Hierarchies
/// not mounted here, or whose cgroup lies outside the mounted part, are skipped.
fn procs_paths(membership: &str, mounts: &[HierarchyMount]) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for line in parse_membership(membership) {
        let Some(mount) = mounts.iter().find(|m| m.serves(&line)) else {
            step!(
                "cgroup hierarchy {:?} is not mounted here; skipped",
                line.controllers.join(",")
            );
            continue;
        };
        let Some(dir) = mount.dir_of(line.path) else {
            step!(
                "cgroup {} is outside the mounted {}; skipped",
                line.path,
                mount.root
            );
            continue;
        };
        paths.push(dir.join("cgroup.procs"));
    }
    paths
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
        let paths = procs_paths(
            "9:name=systemd:/docker/abc\n1:cpu:/docker/abc\n4:memory:/sub/x\n5:pids:/y\n0::/docker/abc\n",
            &mounts,
        );
        assert_eq!(
            paths,
            [
                "/sys/fs/cgroup/systemd/docker/abc/cgroup.procs",
                "/sys/fs/cgroup/cpu/docker/abc/cgroup.procs",
                "/mnt/cg v1/x/cgroup.procs",
                "/sys/fs/cgroup/unified/docker/abc/cgroup.procs",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn cgroups_outside_the_mount_are_skipped() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert!(procs_paths("4:memory:/other\n4:memory:/subway\n", &mounts).is_empty());
    }
}
