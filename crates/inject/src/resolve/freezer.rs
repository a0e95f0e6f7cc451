//! Whether a process is frozen by its cgroup freezer (`docker pause`, `podman pause`,
//! `crictl`... all freeze the container's cgroup).
//!
//! A frozen container cannot run anything: a session entering it would hang until someone
//! thaws it. The state files say nothing about pausing, so the kernel is asked: cgroup v2's
//! `cgroup.events` (`frozen 1`, also set when an ancestor is frozen) and cgroup v1's
//! `freezer.state` (`FROZEN`, or `FREEZING` on the way there).

use std::path::{Path, PathBuf};

/// A mounted cgroup hierarchy that can tell about freezing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hierarchy {
    /// The unified hierarchy.
    V2 { root: String, mount_point: PathBuf },
    /// The v1 hierarchy that carries the `freezer` controller.
    V1Freezer { root: String, mount_point: PathBuf },
}

/// True when `pid`'s cgroup is frozen. Anything unreadable (no such process, hierarchy not
/// mounted, a fake proc tree) counts as not frozen: this check only turns a hang into an
/// error, it never decides whether a target exists.
pub(crate) fn is_frozen(proc_root: &Path, pid: u32) -> bool {
    let Ok(cgroups) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))
    else {
        return false;
    };
    let Ok(mountinfo) = std::fs::read_to_string(proc_root.join("self/mountinfo")) else {
        return false;
    };
    let (v2_path, v1_path) = freezer_paths(&cgroups);
    cgroup_hierarchies(&mountinfo)
        .into_iter()
        .any(|hierarchy| match hierarchy {
            Hierarchy::V2 { root, mount_point } => v2_path
                .as_deref()
                .and_then(|path| cgroup_dir(&mount_point, &root, path))
                .and_then(|dir| std::fs::read_to_string(dir.join("cgroup.events")).ok())
                .is_some_and(|events| events.lines().any(|l| l.trim() == "frozen 1")),
            Hierarchy::V1Freezer { root, mount_point } => v1_path
                .as_deref()
                .and_then(|path| cgroup_dir(&mount_point, &root, path))
                .and_then(|dir| std::fs::read_to_string(dir.join("freezer.state")).ok())
                .is_some_and(|state| matches!(state.trim(), "FROZEN" | "FREEZING")),
        })
}

/// The process's unified cgroup path and its v1 freezer cgroup path, from
/// `/proc/PID/cgroup`.
fn freezer_paths(cgroups: &str) -> (Option<String>, Option<String>) {
    let (mut v2, mut v1) = (None, None);
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if hierarchy == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "freezer") {
            v1 = Some(path.to_string());
        }
    }
    (v2, v1)
}

/// The cgroup2 and v1-freezer mounts listed in `/proc/self/mountinfo`.
///
/// A line reads `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE
/// SUPER_OPTIONS`; the optional fields end at the lone `-`.
fn cgroup_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let mut mount = mount.split(' ');
            let root = mount.nth(3)?.to_string();
            let mount_point = PathBuf::from(mount.next()?);
            let mut fs = fs.split(' ');
            match (fs.next()?, fs.nth(1)) {
                ("cgroup2", _) => Some(Hierarchy::V2 { root, mount_point }),
                ("cgroup", Some(options)) if options.split(',').any(|o| o == "freezer") => {
                    Some(Hierarchy::V1Freezer { root, mount_point })
                }
                _ => None,
            }
        })
        .collect()
}

/// Directory of cgroup `path` in a hierarchy mounted at `mount_point` whose mount shows the
/// cgroup `root`; `None` when the cgroup lies outside what the mount shows.
fn cgroup_dir(mount_point: &Path, root: &str, path: &str) -> Option<PathBuf> {
    let relative = if root == "/" {
        path
    } else {
        path.strip_prefix(root)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))?
    };
    let relative = relative.trim_start_matches('/');
    // The kernel wrote this path, but keep it inside the mount regardless.
    if relative.split('/').any(|c| c == "..") {
        return None;
    }
    Some(mount_point.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime shared:9 - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
55 23 0:38 /nested /mnt/sub rw,relatime - cgroup2 none rw
";

    #[test]
    fn finds_the_hierarchies() {
        assert_eq!(
            cgroup_hierarchies(MOUNTINFO),
            vec![
                Hierarchy::V1Freezer {
                    root: "/".into(),
                    mount_point: "/sys/fs/cgroup/freezer".into()
                },
                Hierarchy::V2 {
                    root: "/".into(),
                    mount_point: "/sys/fs/cgroup/unified".into()
                },
                Hierarchy::V2 {
                    root: "/nested".into(),
                    mount_point: "/mnt/sub".into()
                },
            ]
        );
    }

    #[test]
    fn reads_the_paths() {
        let text = "9:name=systemd:/docker/x\n6:freezer:/docker/x\n1:cpu,cpuacct:/docker/x\n0::/docker/x\n";
        assert_eq!(
            freezer_paths(text),
            (Some("/docker/x".into()), Some("/docker/x".into()))
        );
        assert_eq!(freezer_paths("0::/a\n"), (Some("/a".into()), None));
    }

    #[test]
    fn maps_paths_into_mounts() {
        let mnt = Path::new("/m");
        assert_eq!(cgroup_dir(mnt, "/", "/a/b"), Some("/m/a/b".into()));
        assert_eq!(cgroup_dir(mnt, "/", "/"), Some("/m/".into()));
        assert_eq!(cgroup_dir(mnt, "/nested", "/nested/c"), Some("/m/c".into()));
        assert_eq!(cgroup_dir(mnt, "/nested", "/nestedX/c"), None);
        assert_eq!(cgroup_dir(mnt, "/nested", "/other"), None);
        assert_eq!(cgroup_dir(mnt, "/", "/a/../../etc"), None);
    }

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
