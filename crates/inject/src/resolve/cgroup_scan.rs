//! Finding containers by the IDs the kernel shows in `/proc/PID/cgroup`.
//!
//! Every runtime puts a container's processes in a cgroup whose path carries the container
//! ID, so the kernel alone can answer "which processes belong to container X" even when the
//! runtime keeps its state somewhere we do not know. The path formats, v1 and v2 alike:
//!
//! | runtime | cgroupfs driver | systemd driver |
//! | --- | --- | --- |
//! | Docker | `/docker/<id>` | `/system.slice/docker-<id>.scope` |
//! | containerd (CRI) | `/kubepods/.../pod<uid>/<id>` | `/kubepods.slice/.../cri-containerd-<id>.scope` |
//! | containerd (`ctr run`) | `/<namespace>/<id>` | |
//! | CRI-O | `/kubepods/.../crio-<id>` | `/kubepods.slice/.../crio-<id>.scope` |
//! | Podman | `/libpod_parent/libpod-<id>` | `/machine.slice/libpod-<id>.scope` |
//!
//! CRI-O and Podman also put each container's monitor in `crio-conmon-<id>.scope` /
//! `libpod-conmon-<id>.scope`; those are not the container and must not match.

use std::collections::HashMap;
use std::path::Path;

use super::procfs;
use super::Runtime;
use crate::cgroupfs::parse_membership;

/// Length of a full container ID: 32 bytes, hex-encoded.
pub(crate) const FULL_ID_LEN: usize = 64;

/// A container seen through the cgroup of one of its processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupContainer {
    /// Full container ID from the cgroup path.
    pub id: String,
    /// Runtime implied by the path's naming scheme.
    pub runtime: Runtime,
}

/// True for a full, lower-case, 64-digit hex ID.
pub(crate) fn is_full_id(s: &str) -> bool {
    s.len() == FULL_ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container a process belongs to, from the text of its `/proc/PID/cgroup`.
///
/// The unified (`0::`) line is preferred; on a v1-only host the first hierarchy that names a
/// container decides. Within a path the innermost ID wins: a process of a container nested
/// in another (Docker in Docker) belongs to the inner one.
pub(crate) fn container_of(cgroup_file: &str) -> Option<CgroupContainer> {
    container_and_cgroup_of(cgroup_file).map(|(container, _)| container)
}

/// [`container_of`] with the container's cgroup: the path up to the component naming it.
///
/// Two cgroups may carry one ID: a container that can make cgroups (its own cgroup
/// namespace, a delegated subtree) can name one of its own as another container, and, nested
/// innermost, it wins for the processes it moves there. The cgroup tells them apart.
pub(crate) fn container_and_cgroup_of(cgroup_file: &str) -> Option<(CgroupContainer, String)> {
    let mut v1_answer = None;
    for line in parse_membership(cgroup_file) {
        let found = container_in_path(line.path);
        if line.hierarchy == "0" && found.is_some() {
            return found;
        }
        if v1_answer.is_none() {
            v1_answer = found;
        }
    }
    v1_answer
}

/// The innermost container named by a cgroup path, with the path up to its component.
fn container_in_path(path: &str) -> Option<(CgroupContainer, String)> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    components
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, component)| {
            container_in_component(component, &components[..i])
                .map(|c| (c, format!("/{}", components[..=i].join("/"))))
        })
}

/// Recognizes one path component as a container's cgroup; `ancestors` are the components
/// above it, used to place a bare ID.
fn container_in_component(component: &str, ancestors: &[&str]) -> Option<CgroupContainer> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    let prefixed = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", kubernetes_containerd()),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ];
    for (prefix, runtime) in prefixed {
        if let Some(id) = name.strip_prefix(prefix) {
            return is_full_id(id).then(|| CgroupContainer {
                id: id.to_string(),
                runtime,
            });
        }
    }
    if !is_full_id(name) {
        return None;
    }
    // A bare ID: runc's default (`/<id>`), a kubelet's cgroupfs layout (the CRI runtime is containerd unless it says
    // crio-), Docker's cgroupfs layout (`/docker/<id>`), or containerd's own default,
    // `/<namespace>/<id>` (what `ctr run` makes).
    let runtime = match ancestors {
        // runc's own default, `/<id>`: no manager to name.
        [] => Runtime::Pid,
        [.., "docker"] => Runtime::Docker,
        _ if ancestors.iter().any(|a| a.starts_with("kubepods")) => kubernetes_containerd(),
        [namespace] => Runtime::Containerd {
            namespace: namespace.to_string(),
        },
        _ => Runtime::Docker,
    };
    Some(CgroupContainer {
        id: name.to_string(),
        runtime,
    })
}

/// containerd's CRI plugin keeps Kubernetes containers in the `k8s.io` namespace.
fn kubernetes_containerd() -> Runtime {
    Runtime::Containerd {
        namespace: "k8s.io".to_string(),
    }
}

/// A container found by scanning `/proc`, with the PID chosen as its init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScannedContainer {
    /// The container.
    pub container: CgroupContainer,
    /// Its init: see [`scan`].
    pub init_pid: u32,
    /// The cgroup naming it (see [`container_and_cgroup_of`]). One ID found in two cgroups
    /// is two entries: a container named as another by a cgroup it made, and that other.
    pub cgroup: String,
}

/// Scans every process under `proc_root` and returns the containers whose ID satisfies
/// `wanted`, each with its init process.
///
/// The init is a process in the container whose parent is not (the runtime's shim spawned
/// it). `docker exec`'d processes look the same, so among those the earliest started wins,
/// lowest PID on a tie. Exiting processes are skipped. Processes that vanish during the scan
/// or cannot be read are ignored: the scan is a snapshot.
pub(crate) fn scan(
    proc_root: &Path,
    wanted: impl Fn(&str) -> bool,
) -> std::io::Result<Vec<ScannedContainer>> {
    struct Member {
        container: CgroupContainer,
        cgroup: String,
        stat: procfs::ProcStat,
    }
    // A container is its ID in one cgroup.
    let mut container_by_pid: HashMap<u32, Option<(String, String)>> = HashMap::new();
    let mut members: Vec<(u32, Member)> = Vec::new();
    for pid in procfs::all_pids(proc_root)? {
        let Ok(text) = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))
        else {
            continue;
        };
        let found = container_and_cgroup_of(&text);
        container_by_pid.insert(
            pid,
            found
                .as_ref()
                .map(|(c, cgroup)| (c.id.clone(), cgroup.clone())),
        );
        let Some((container, cgroup)) = found.filter(|(c, _)| wanted(&c.id)) else {
            continue;
        };
        let Ok(stat) = procfs::read_stat(proc_root, pid) else {
            continue;
        };
        if !stat.is_exiting() {
            members.push((
                pid,
                Member {
                    container,
                    cgroup,
                    stat,
                },
            ));
        }
    }

    let mut inits: HashMap<(String, String), (u32, Member)> = HashMap::new();
    for (pid, member) in members {
        let this = (member.container.id.clone(), member.cgroup.clone());
        let parent_container = container_by_pid.get(&member.stat.ppid).cloned().flatten();
        if parent_container.as_ref() == Some(&this) {
            continue;
        }
        let key = (member.stat.start_time, pid);
        match inits.get(&this) {
            Some((best_pid, best)) if (best.stat.start_time, *best_pid) <= key => {}
            _ => {
                inits.insert(this, (pid, member));
            }
        }
    }
    let mut found: Vec<ScannedContainer> = inits
        .into_values()
        .map(|(init_pid, member)| ScannedContainer {
            container: member.container,
            init_pid,
            cgroup: member.cgroup,
        })
        .collect();
    found.sort_by(|a, b| (&a.container.id, &a.cgroup).cmp(&(&b.container.id, &b.cgroup)));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ecadcc32bf3d8b30d06fab1e25e34b686ac4aabbf318b73855f29840ea8c9c49";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn found(id: &str, runtime: Runtime) -> Option<CgroupContainer> {
        Some(CgroupContainer {
            id: id.to_string(),
            runtime,
        })
    }

    #[test]
    fn docker_cgroupfs_v1() {
        let text =
            format!("9:name=systemd:/docker/{ID}\n4:memory:/docker/{ID}\n1:cpu:/docker/{ID}\n");
        assert_eq!(container_of(&text), found(ID, Runtime::Docker));
    }

    #[test]
    fn docker_systemd_v2() {
        let text = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(container_of(&text), found(ID, Runtime::Docker));
    }

    #[test]
    fn unified_line_wins_over_v1() {
        let text = format!("4:memory:/docker/{ID2}\n0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(container_of(&text), found(ID, Runtime::Docker));
    }

    #[test]
    fn v1_answers_when_unified_line_is_root() {
        let text = format!("4:memory:/docker/{ID}\n0::/\n");
        assert_eq!(container_of(&text), found(ID, Runtime::Docker));
    }

    #[test]
    fn kubernetes_layouts() {
        let containerd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(
            container_of(&containerd),
            found(ID, kubernetes_containerd())
        );
        let cgroupfs =
            format!("0::/kubepods/besteffort/pod5f0e8a2c-1111-2222-3333-444455556666/{ID}\n");
        assert_eq!(container_of(&cgroupfs), found(ID, kubernetes_containerd()));
        let crio = format!("0::/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope\n");
        assert_eq!(container_of(&crio), found(ID, Runtime::CriO));
        let crio_cgroupfs = format!("3:cpu:/kubepods/burstable/pod1/crio-{ID}\n");
        assert_eq!(container_of(&crio_cgroupfs), found(ID, Runtime::CriO));
    }

    #[test]
    fn containerd_default_layout() {
        let text = format!("0::/default/{ID}\n");
        let default = Runtime::Containerd {
            namespace: "default".into(),
        };
        assert_eq!(container_of(&text), found(ID, default));
        // Deeper custom parents are Docker's --cgroup-parent.
        let custom = format!("0::/apps/web/{ID}\n");
        assert_eq!(container_of(&custom), found(ID, Runtime::Docker));
    }

    #[test]
    fn podman_layouts() {
        let systemd = format!("0::/machine.slice/libpod-{ID}.scope/container\n");
        assert_eq!(container_of(&systemd), found(ID, Runtime::Podman));
        let cgroupfs = format!("0::/libpod_parent/libpod-{ID}\n");
        assert_eq!(container_of(&cgroupfs), found(ID, Runtime::Podman));
    }

    #[test]
    fn monitors_are_not_containers() {
        assert_eq!(
            container_of(&format!("0::/machine.slice/libpod-conmon-{ID}.scope\n")),
            None
        );
        assert_eq!(
            container_of(&format!("0::/system.slice/crio-conmon-{ID}.scope\n")),
            None
        );
    }

    #[test]
    fn innermost_container_wins() {
        let text = format!("0::/docker/{ID}/docker/{ID2}\n");
        assert_eq!(container_of(&text), found(ID2, Runtime::Docker));
    }

    #[test]
    fn not_a_container() {
        assert_eq!(
            container_of("0::/user.slice/user-1000.slice/session-2.scope\n"),
            None
        );
        assert_eq!(container_of("0::/\n"), None);
        // Too short, upper case, or not hex: not an ID.
        assert_eq!(container_of(&format!("0::/docker/{}\n", &ID[1..])), None);
        assert_eq!(
            container_of(&format!("0::/docker/{}\n", ID.to_uppercase())),
            None
        );
        assert_eq!(container_of("0::/docker-zz.scope\n"), None);
        assert_eq!(container_of("garbage\n\n"), None);
    }

    /// Writes a fake `/proc/<pid>/{cgroup,stat}`.
    fn fake_process(proc_root: &Path, pid: u32, ppid: u32, start: u64, state: char, cgroup: &str) {
        let dir = proc_root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup"), cgroup).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("{pid} (p) {state} {ppid} 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0\n"),
        )
        .unwrap();
    }

    #[test]
    fn scan_picks_the_init() {
        let proc = tempfile::tempdir().unwrap();
        let root = proc.path();
        let in_container = format!("0::/docker/{ID}\n");
        fake_process(root, 1, 0, 1, 'S', "0::/\n");
        fake_process(root, 50, 1, 10, 'S', "0::/\n"); // the shim
        fake_process(root, 300, 50, 100, 'S', &in_container); // init, PID > its child's
        fake_process(root, 120, 300, 150, 'S', &in_container); // init's child (PID reused)
        fake_process(root, 400, 50, 900, 'S', &in_container); // docker exec, later
        fake_process(root, 60, 50, 20, 'Z', &in_container); // an exiting process
        fake_process(root, 70, 50, 30, 'S', &format!("0::/docker/{ID2}\n")); // another one
        let all = scan(root, |_| true).unwrap();
        assert_eq!(
            all,
            vec![
                ScannedContainer {
                    container: CgroupContainer {
                        id: ID2.into(),
                        runtime: Runtime::Docker
                    },
                    init_pid: 70,
                    cgroup: format!("/docker/{ID2}"),
                },
                ScannedContainer {
                    container: CgroupContainer {
                        id: ID.into(),
                        runtime: Runtime::Docker
                    },
                    init_pid: 300,
                    cgroup: format!("/docker/{ID}"),
                },
            ]
        );
        let only = scan(root, |id| id.starts_with("eca")).unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].init_pid, 300);
    }

    #[test]
    fn one_id_in_two_cgroups_is_two_containers() {
        let proc = tempfile::tempdir().unwrap();
        let root = proc.path();
        fake_process(root, 50, 1, 10, 'S', "0::/\n"); // the shim
                                                      // Container ID2's init, started first, moved itself into a cgroup it named ID.
        fake_process(root, 100, 50, 20, 'S', &format!("0::/docker/{ID2}/{ID}\n"));
        fake_process(root, 101, 100, 21, 'S', &format!("0::/docker/{ID2}/{ID}\n"));
        fake_process(root, 300, 50, 30, 'S', &format!("0::/docker/{ID}\n"));
        let found = scan(root, |id| id == ID).unwrap();
        let seen: Vec<(u32, &str)> = found
            .iter()
            .map(|f| (f.init_pid, f.cgroup.as_str()))
            .collect();
        let nested = format!("/docker/{ID2}/{ID}");
        let own = format!("/docker/{ID}");
        assert_eq!(seen, [(100, nested.as_str()), (300, own.as_str())]);
    }

    #[test]
    fn scan_ignores_unreadable_entries() {
        let proc = tempfile::tempdir().unwrap();
        let root = proc.path();
        std::fs::create_dir(root.join("77")).unwrap(); // vanished: no files
        std::fs::write(root.join("self"), "").unwrap();
        fake_process(root, 5, 1, 3, 'S', &format!("0::/docker/{ID}\n"));
        let all = scan(root, |_| true).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].init_pid, 5);
    }
}
