//! Whether a process is frozen by its cgroup freezer (`docker pause`, `podman pause`,
//! `crictl`... all freeze the container's cgroup).
//!
//! A frozen container cannot run anything: a session entering it would hang until someone
//! thaws it. The state files say nothing about pausing, so the kernel is asked: cgroup v2's
//! `cgroup.events` (`frozen 1`, also set when an ancestor is frozen) and cgroup v1's
//! `freezer.state` (`FROZEN`, or `FREEZING` on the way there).

use std::path::Path;

use std::io::Read;
use std::os::fd::AsFd;

use crate::cgroupfs::{
    in_cgroup_namespace, outside_our_namespace, parse_membership, parse_mountinfo, CgroupDir,
    HierarchyMount,
};

/// True when `pid`'s cgroup is frozen. Anything unreadable (no such process, hierarchy not
/// mounted, a fake proc tree) counts as not frozen: this check only turns a hang into an
/// error, it never decides whether a target exists.
pub(crate) fn is_frozen(proc_root: &Path, pid: u32) -> bool {
    let Ok(mountinfo) = std::fs::read_to_string(proc_root.join("self/mountinfo")) else {
        return false;
    };
    is_frozen_in(proc_root, pid, &parse_mountinfo(&mountinfo))
}

/// [`is_frozen`] for the one target of a session: when its cgroups lie outside crashcart's
/// cgroup namespace (crashcart in a pod of a cgroup v2 node), they are read from the target's
/// own cgroup namespace.
pub(crate) fn target_is_frozen(proc_root: &Path, pid: u32) -> bool {
    let dir = proc_root.join(pid.to_string());
    let outside = std::fs::read_to_string(dir.join("cgroup"))
        .is_ok_and(|membership| outside_our_namespace(&membership));
    if !outside {
        return is_frozen(proc_root, pid);
    }
    let Ok(ns) = std::fs::File::open(dir.join("ns/cgroup")) else {
        return false;
    };
    in_cgroup_namespace(ns.as_fd(), || is_frozen(proc_root, pid)).unwrap_or(false)
}

/// [`is_frozen`] with the cgroup mounts already read (for callers that ask about many
/// processes).
pub(crate) fn is_frozen_in(proc_root: &Path, pid: u32, mounts: &[HierarchyMount]) -> bool {
    let Ok(cgroups) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))
    else {
        return false;
    };
    parse_membership(&cgroups).iter().any(|line| {
        let (file, frozen): (&str, fn(&str) -> bool) = if line.is_unified() {
            ("cgroup.events", |events| {
                events.lines().any(|l| l.trim() == "frozen 1")
            })
        } else if line.controllers.contains(&"freezer") {
            ("freezer.state", |state| {
                matches!(state.trim(), "FROZEN" | "FREEZING")
            })
        } else {
            return false;
        };
        // A cgroup no mount shows (crashcart in a container) is read through its hierarchy.
        CgroupDir::locate(line, mounts)
            .and_then(|dir| dir.open(file, false).ok())
            .and_then(|mut f| {
                let mut text = String::new();
                f.read_to_string(&mut text).ok().map(|_| text)
            })
            .is_some_and(|text| frozen(&text))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A fake proc tree whose mountinfo points at fake cgroup mounts in the same temp dir.
    fn fake(v1_state: &str, v2_events: &str) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let proc = tmp.path().join("proc");
        let v1 = tmp.path().join("freezer");
        let v2 = tmp.path().join("unified");
        std::fs::create_dir_all(proc.join("7")).unwrap();
        std::fs::create_dir_all(proc.join("self")).unwrap();
        std::fs::create_dir_all(v1.join("docker/x")).unwrap();
        std::fs::create_dir_all(v2.join("docker/x")).unwrap();
        std::fs::write(
            proc.join("self/mountinfo"),
            format!(
                "37 31 0:34 / {} rw - cgroup cgroup rw,freezer\n41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
                v1.display(),
                v2.display()
            ),
        )
        .unwrap();
        std::fs::write(proc.join("7/cgroup"), "6:freezer:/docker/x\n0::/docker/x\n").unwrap();
        std::fs::write(v1.join("docker/x/freezer.state"), v1_state).unwrap();
        std::fs::write(v2.join("docker/x/cgroup.events"), v2_events).unwrap();
        (tmp, proc)
    }

    #[test]
    fn frozen_in_either_hierarchy() {
        let (_tmp, proc) = fake("THAWED\n", "populated 1\nfrozen 0\n");
        assert!(!is_frozen(&proc, 7));
        let (_tmp, proc) = fake("FROZEN\n", "populated 1\nfrozen 0\n");
        assert!(is_frozen(&proc, 7));
        let (_tmp, proc) = fake("FREEZING\n", "populated 1\nfrozen 0\n");
        assert!(is_frozen(&proc, 7));
        let (_tmp, proc) = fake("THAWED\n", "populated 1\nfrozen 1\n");
        assert!(is_frozen(&proc, 7));
        // Unknown process: not frozen, not an error.
        assert!(!is_frozen(&proc, 8));
    }
}
