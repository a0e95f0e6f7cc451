//! What the kernel says about cgroups, read one way for every caller: a process's membership
//! (`/proc/PID/cgroup`) and where each hierarchy is mounted (the `cgroup`/`cgroup2` lines of
//! `/proc/self/mountinfo`).
//!
//! Joining the target's cgroups ([`crate::cgroup`]), telling a frozen container
//! (`resolve/freezer`) and finding a container by the ID in its cgroup path
//! (`resolve/cgroup_scan`) all need the same two parsers and the same mapping of a cgroup path
//! into a mount; this module is a leaf they share, so the three cannot drift (mountinfo
//! escapes `\040`-style octal in paths, for instance, and every caller must undo that).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// One line of `/proc/PID/cgroup`: `hierarchy-ID:controller-list:cgroup-path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Membership<'a> {
    /// Hierarchy ID; `0` for the unified (v2) hierarchy.
    pub hierarchy: &'a str,
    /// v1 controllers (`cpu`, `name=systemd`, ...); empty for the unified hierarchy.
    pub controllers: Vec<&'a str>,
    /// The cgroup, relative to the hierarchy's root (it may contain `:`).
    pub path: &'a str,
}

/// The longest cgroup path `/proc/PID/cgroup` shows in full. The kernel writes a longer one
/// cut to this many bytes, silently (a container that can make cgroups can nest them that
/// deep): the cut path names another cgroup, or none.
pub(crate) const LONGEST_SHOWN_PATH: usize = 4094;

impl Membership<'_> {
    /// True for the unified (cgroup v2) hierarchy's line, `0::PATH`.
    pub fn is_unified(&self) -> bool {
        self.hierarchy == "0" && self.controllers.is_empty()
    }

    /// True when the kernel may have cut this line's path (see [`LONGEST_SHOWN_PATH`]).
    pub fn may_be_truncated(&self) -> bool {
        self.path.len() > LONGEST_SHOWN_PATH
    }
}

/// The lines of a `/proc/PID/cgroup` text, malformed ones skipped.
pub(crate) fn parse_membership(text: &str) -> Vec<Membership<'_>> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (hierarchy, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some(Membership {
                hierarchy,
                controllers: controllers.split(',').filter(|c| !c.is_empty()).collect(),
                path,
            })
        })
        .collect()
}

/// One cgroup hierarchy as mountinfo shows its mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HierarchyMount {
    /// Controllers (v1 super options, e.g. `cpu`, `name=systemd`); empty for cgroup2.
    pub controllers: Vec<String>,
    /// The cgroup mounted at the mount point (the `root` field), unescaped.
    pub root: String,
    /// Where it is mounted, unescaped.
    pub mount_point: PathBuf,
}

impl HierarchyMount {
    /// True when this mount shows the hierarchy of `membership` (the unified one for a `0::`
    /// line; for a v1 line, a v1 mount carrying all of its controllers).
    pub fn serves(&self, membership: &Membership<'_>) -> bool {
        if membership.controllers.is_empty() {
            self.controllers.is_empty()
        } else {
            !self.controllers.is_empty()
                && membership
                    .controllers
                    .iter()
                    .all(|w| self.controllers.iter().any(|c| c == w))
        }
    }

    /// Directory of cgroup `path` under this mount; `None` when the cgroup lies outside what
    /// the mount shows (or the path would climb out of it).
    pub fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let relative = if self.root == "/" {
            path
        } else {
            path.strip_prefix(self.root.as_str())
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))?
        };
        let relative = relative.trim_start_matches('/');
        // The kernel wrote this path, but keep it inside the mount regardless.
        if relative.split('/').any(|c| c == "..") {
            return None;
        }
        Some(self.mount_point.join(relative))
    }
}

/// True when a cgroup path of `/proc/PID/cgroup` climbs out of the reader's cgroup namespace
/// (`/../x`): the process's cgroups are not below ours, so no mount we make can show them.
pub(crate) fn outside_our_namespace(membership: &str) -> bool {
    parse_membership(membership)
        .iter()
        .any(|l| l.path.split('/').any(|c| c == ".."))
}

/// Runs `f` in the cgroup namespace `ns` (a `/proc/PID/ns/cgroup`), then returns to the
/// caller's. What `f` reads of `/proc/*/cgroup` and mountinfo, and the cgroup mounts it makes,
/// are then relative to that namespace's root.
pub(crate) fn in_cgroup_namespace<T>(
    ns: std::os::fd::BorrowedFd<'_>,
    f: impl FnOnce() -> T,
) -> std::io::Result<T> {
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    let ours = File::open("/proc/thread-self/ns/cgroup")?;
    move_into_link_name_space(ns, Some(LinkNameSpaceType::ControlGroup))?;
    let result = f();
    move_into_link_name_space(ours.as_fd(), Some(LinkNameSpaceType::ControlGroup))?;
    Ok(result)
}

/// Where the files of one of a process's cgroups are reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CgroupDir {
    /// A directory under one of the cgroup mounts crashcart sees.
    Mounted(PathBuf),
    /// No mount crashcart sees shows this cgroup (the hierarchy is not mounted, or only a
    /// subtree of it is: in a container, `/sys/fs/cgroup/*` are the container's own cgroups);
    /// it is reached through a detached mount of the whole hierarchy, made for the moment.
    Hierarchy {
        /// The hierarchy's v1 controllers (`name=systemd` included); empty for cgroup2.
        controllers: Vec<String>,
        /// The cgroup, relative to the hierarchy's root.
        path: String,
    },
}

impl CgroupDir {
    /// Where `line`'s cgroup is: under a mount that shows it, else in its hierarchy; `None`
    /// for a path that climbs out of crashcart's cgroup namespace (`/../..`), which no mount
    /// made from that namespace can show.
    pub fn locate(line: &Membership<'_>, mounts: &[HierarchyMount]) -> Option<CgroupDir> {
        if let Some(dir) = mounts
            .iter()
            .filter(|m| m.serves(line))
            .find_map(|m| m.dir_of(line.path))
        {
            return Some(CgroupDir::Mounted(dir));
        }
        if line.path.split('/').any(|c| c == "..") {
            return None;
        }
        Some(CgroupDir::Hierarchy {
            controllers: line.controllers.iter().map(|c| c.to_string()).collect(),
            path: line.path.to_string(),
        })
    }

    /// Opens `file` of this cgroup, for writing when `write`. A hierarchy's detached mount
    /// lives only as long as the returned file: nothing is left mounted.
    pub fn open(&self, file: &str, write: bool) -> std::io::Result<File> {
        let flags = if write {
            OFlags::WRONLY
        } else {
            OFlags::RDONLY
        } | OFlags::CLOEXEC
            | OFlags::NOFOLLOW;
        match self {
            CgroupDir::Mounted(dir) => Ok(File::from(rustix::fs::open(
                dir.join(file),
                flags,
                Mode::empty(),
            )?)),
            CgroupDir::Hierarchy { controllers, path } => {
                let root = crate::mount::cgroup_detached(controllers)?;
                let relative = path.trim_start_matches('/');
                let relative = if relative.is_empty() {
                    file.to_string()
                } else {
                    format!("{relative}/{file}")
                };
                Ok(File::from(rustix::fs::openat2(
                    root.as_fd(),
                    relative,
                    flags,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
                )?))
            }
        }
    }
}

impl std::fmt::Display for CgroupDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CgroupDir::Mounted(dir) => write!(f, "{}", dir.display()),
            CgroupDir::Hierarchy { controllers, path } if controllers.is_empty() => {
                write!(f, "cgroup2:{path}")
            }
            CgroupDir::Hierarchy { controllers, path } => {
                write!(f, "cgroup {}:{path}", controllers.join(","))
            }
        }
    }
}

/// The cgroup and cgroup2 mounts in mountinfo text, in mount order.
///
/// A line reads `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE
/// SUPER_OPTIONS`; the optional fields end at the lone `-`.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<HierarchyMount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let fs: Vec<&str> = right.split(' ').collect();
            if fields.len() < 5 || fs.len() < 3 {
                return None;
            }
            let controllers = match fs[0] {
                "cgroup2" => Vec::new(),
                "cgroup" => fs[2]
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                    .map(str::to_string)
                    .collect(),
                _ => return None,
            };
            Some(HierarchyMount {
                controllers,
                root: unescape(fields[3]),
                mount_point: PathBuf::from(unescape(fields[4])),
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(v) = field
                .get(i + 1..i + 4)
                .and_then(|s| u8::from_str_radix(s, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime shared:9 - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
55 23 0:38 /nested /mnt/sub\\040dir rw,relatime - cgroup2 none rw
34 25 254:0 / / rw - ext4 /dev/vda rw";

    #[test]
    fn mounts_with_escapes() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[0].controllers, ["cpu"]);
        assert_eq!(mounts[1].controllers, ["freezer"]);
        assert!(mounts[2].controllers.is_empty());
        assert_eq!(mounts[3].root, "/nested");
        assert_eq!(mounts[3].mount_point, PathBuf::from("/mnt/sub dir"));
    }

    #[test]
    fn membership_lines() {
        let lines = parse_membership("9:name=systemd:/a:b\n1:cpu,cpuacct:/x\n0::/u\ngarbage\n");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].path, "/a:b");
        assert_eq!(lines[1].controllers, ["cpu", "cpuacct"]);
        assert!(lines[2].is_unified());
        assert!(!lines[1].is_unified());
        let mounts = parse_mountinfo(MOUNTINFO);
        assert!(!mounts[0].serves(&lines[1])); // cpuacct missing on that mount
        assert!(mounts[2].serves(&lines[2]));
    }

    #[test]
    fn locates_cgroups_outside_the_mounts_in_their_hierarchy() {
        // A container's view: each hierarchy mounted at the container's own cgroup.
        let mounts = parse_mountinfo(
            "201 200 0:29 /docker/me /sys/fs/cgroup/cpu ro - cgroup cgroup rw,cpu\n\
             224 200 0:37 /docker/me /sys/fs/cgroup/systemd ro - cgroup cgroup rw,name=systemd\n",
        );
        let lines = parse_membership(
            "1:cpu:/docker/me/sub\n1:cpu:/docker/it\n9:name=systemd:/x\n0::/y\n0::/../z\n",
        );
        let located: Vec<Option<CgroupDir>> = lines
            .iter()
            .map(|l| CgroupDir::locate(l, &mounts))
            .collect();
        assert_eq!(
            located,
            [
                Some(CgroupDir::Mounted("/sys/fs/cgroup/cpu/sub".into())),
                Some(CgroupDir::Hierarchy {
                    controllers: vec!["cpu".into()],
                    path: "/docker/it".into()
                }),
                Some(CgroupDir::Hierarchy {
                    controllers: vec!["name=systemd".into()],
                    path: "/x".into()
                }),
                Some(CgroupDir::Hierarchy {
                    controllers: vec![],
                    path: "/y".into()
                }),
                None,
            ]
        );
        assert_eq!(
            located[1].as_ref().unwrap().to_string(),
            "cgroup cpu:/docker/it"
        );
        assert_eq!(located[3].as_ref().unwrap().to_string(), "cgroup2:/y");
    }

    #[test]
    fn maps_paths_into_mounts() {
        let mount = |root: &str| HierarchyMount {
            controllers: Vec::new(),
            root: root.into(),
            mount_point: "/m".into(),
        };
        assert_eq!(mount("/").dir_of("/a/b"), Some("/m/a/b".into()));
        assert_eq!(mount("/").dir_of("/"), Some("/m/".into()));
        assert_eq!(mount("/nested").dir_of("/nested/c"), Some("/m/c".into()));
        assert_eq!(mount("/nested").dir_of("/nestedX/c"), None);
        assert_eq!(mount("/nested").dir_of("/other"), None);
        assert_eq!(mount("/").dir_of("/a/../../etc"), None);
    }
}
