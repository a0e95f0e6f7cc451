//! Finding containers in the state files their runtimes keep under `/run`, without asking
//! any daemon.
//!
//! Each runtime writes its running containers' init PID to a file named after the
//! container ID:
//!
//! | file | written by |
//! | --- | --- |
//! | `containerd/io.containerd.runtime.v2.task/<ns>/<id>/init.pid` | containerd shim v2 |
//! | `containerd/io.containerd.runtime.v1.linux/<ns>/<id>/init.pid` | containerd shim v1 |
//! | `docker/containerd/daemon/...` (same two layouts) | the containerd that dockerd starts itself |
//! | `containerd/runc/<ns>/<id>/state.json` | runc under containerd |
//! | `docker/runtime-runc/<ns>/<id>/state.json` | runc under Docker's containerd |
//! | `containers/storage/<driver>-containers/<id>/userdata/pidfile` | Podman and CRI-O (conmon) |
//! | `runc/<id>/state.json`, `crun/<id>/status` | runc/crun invoked by Podman, CRI-O or by hand |
//!
//! containerd's `moby` namespace holds Docker's containers. runc's and crun's state also record
//! the init's start time, which tells a live init from a recycled PID after a crash.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cgroup_scan;
use super::{Candidate, Runtime};

/// Every container under `run_root` whose ID satisfies `wanted`, one entry per ID (the first
/// file found wins; a later one only contributes a start time for the same PID).
///
/// `proc_root` is used to tell which runtime drives a bare runc/crun container.
pub(crate) fn find(
    run_root: &Path,
    proc_root: &Path,
    wanted: impl Fn(&str) -> bool,
) -> Vec<Candidate> {
    let mut found: Vec<Candidate> = Vec::new();
    let mut add = |entry: Candidate| match found.iter_mut().find(|e| e.id == entry.id) {
        Some(existing) => {
            if existing.start_time.is_none() && existing.pid == entry.pid {
                existing.start_time = entry.start_time;
            }
        }
        None => found.push(entry),
    };

    for containerd_state in [
        run_root.join("containerd"),
        run_root.join("docker/containerd/daemon"),
    ] {
        for shim in [
            "io.containerd.runtime.v2.task",
            "io.containerd.runtime.v1.linux",
        ] {
            for (namespace, id, dir) in namespaced_dirs(&containerd_state.join(shim), &wanted) {
                let file = dir.join("init.pid");
                if let Some(pid) = read_pid_file(&file) {
                    add(Candidate {
                        runtime: containerd_runtime(&namespace),
                        id,
                        pid,
                        start_time: None,
                    });
                }
            }
        }
    }

    for runc_root in [
        run_root.join("containerd/runc"),
        run_root.join("docker/runtime-runc"),
    ] {
        for (namespace, id, dir) in namespaced_dirs(&runc_root, &wanted) {
            let file = dir.join("state.json");
            if let Some((pid, start_time)) = read_runc_state(&file) {
                add(Candidate {
                    runtime: containerd_runtime(&namespace),
                    id,
                    pid,
                    start_time: Some(start_time),
                });
            }
        }
    }

    for (id, userdata) in containers_storage_dirs(&run_root.join("containers/storage"), &wanted) {
        let file = userdata.join("pidfile");
        if let Some(pid) = read_pid_file(&file) {
            add(Candidate {
                runtime: podman_or_crio(proc_root, pid, &userdata),
                id,
                pid,
                start_time: None,
            });
        }
    }

    for (runtime_root, state_name) in [("runc", "state.json"), ("crun", "status")] {
        for (id, dir) in subdirs(&run_root.join(runtime_root), &wanted) {
            let file = dir.join(state_name);
            let state = if state_name == "status" {
                read_crun_status(&file)
            } else {
                read_runc_state(&file)
            };
            if let Some((pid, start_time)) = state {
                add(Candidate {
                    runtime: runtime_from_cgroup(proc_root, pid),
                    id,
                    pid,
                    start_time: Some(start_time),
                });
            }
        }
    }
    found
}

/// Docker's containers are containerd's `moby` namespace.
fn containerd_runtime(namespace: &str) -> Runtime {
    if namespace == "moby" {
        Runtime::Docker
    } else {
        Runtime::Containerd {
            namespace: namespace.to_string(),
        }
    }
}

/// `(name, path)` of each subdirectory of `dir` whose name satisfies `wanted`; nothing when
/// `dir` does not exist or cannot be read (that runtime is not in use here).
fn subdirs(dir: &Path, wanted: &impl Fn(&str) -> bool) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            (wanted(&name) && entry.file_type().ok()?.is_dir()).then(|| (name, entry.path()))
        })
        .collect()
}

/// `(namespace, id, path)` for `<root>/<namespace>/<id>/` directories.
pub(super) fn namespaced_dirs(
    root: &Path,
    wanted: &impl Fn(&str) -> bool,
) -> Vec<(String, String, PathBuf)> {
    subdirs(root, &|_: &str| true)
        .into_iter()
        .flat_map(|(namespace, dir)| {
            subdirs(&dir, wanted)
                .into_iter()
                .map(move |(id, path)| (namespace.clone(), id, path))
        })
        .collect()
}

/// `(id, userdata dir)` for `<storage>/<driver>-containers/<id>/userdata`.
pub(super) fn containers_storage_dirs(
    storage: &Path,
    wanted: &impl Fn(&str) -> bool,
) -> Vec<(String, PathBuf)> {
    subdirs(storage, &|name: &str| name.ends_with("-containers"))
        .into_iter()
        .flat_map(|(_, driver_dir)| subdirs(&driver_dir, wanted))
        .map(|(id, dir)| (id, dir.join("userdata")))
        .collect()
}

/// A file holding a decimal PID (trailing newline allowed). PID 0 is no process.
pub(super) fn read_pid_file(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|&pid| pid > 0)
}

/// `(init_process_pid, init_process_start)` from runc's `state.json`.
fn read_runc_state(path: &Path) -> Option<(u32, u64)> {
    #[derive(Deserialize)]
    struct RuncState {
        init_process_pid: u32,
        init_process_start: u64,
    }
    let state: RuncState = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (state.init_process_pid > 0).then_some((state.init_process_pid, state.init_process_start))
}

/// `(pid, process-start-time)` from crun's `status` file.
fn read_crun_status(path: &Path) -> Option<(u32, u64)> {
    #[derive(Deserialize)]
    struct CrunStatus {
        pid: u32,
        #[serde(rename = "process-start-time")]
        process_start_time: u64,
    }
    let status: CrunStatus = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (status.pid > 0).then_some((status.pid, status.process_start_time))
}

/// Podman and CRI-O share containers/storage. Their cgroup names tell them apart (`libpod-`,
/// `crio-`); failing that (a custom cgroup parent), CRI-O's `io.kubernetes.cri-o.*`
/// annotations in an OCI config kept beside the pidfile; otherwise it is Podman's.
fn podman_or_crio(proc_root: &Path, pid: u32, userdata: &Path) -> Runtime {
    if let runtime @ (Runtime::Podman | Runtime::CriO) = runtime_from_cgroup(proc_root, pid) {
        return runtime;
    }
    #[derive(Deserialize)]
    struct OciConfig {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    let is_crio = std::fs::read(userdata.join("config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<OciConfig>(&bytes).ok())
        .is_some_and(|config| {
            config
                .annotations
                .keys()
                .any(|k| k.starts_with("io.kubernetes.cri-o."))
        });
    if is_crio {
        Runtime::CriO
    } else {
        Runtime::Podman
    }
}

/// Which manager started a container that runc/crun keep in their own root: the cgroup path
/// of its init says. [`Runtime::Pid`] when no manager's naming scheme matches.
fn runtime_from_cgroup(proc_root: &Path, pid: u32) -> Runtime {
    std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))
        .ok()
        .and_then(|text| cgroup_scan::container_of(&text))
        .map_or(Runtime::Pid, |container| container.runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "ecadcc32bf3d8b30d06fab1e25e34b686ac4aabbf318b73855f29840ea8c9c49";
    const ID2: &str = "ec00000000000000000000000000000000000000000000000000000000000002";

    fn write(path: &Path, contents: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    fn entry(id: &str, runtime: Runtime, pid: u32, start: Option<u64>) -> Candidate {
        Candidate {
            id: id.into(),
            runtime,
            pid,
            start_time: start,
        }
    }

    #[test]
    fn docker_task_and_runc_state_merge() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        let task = run.join(format!(
            "docker/containerd/daemon/io.containerd.runtime.v2.task/moby/{ID}/init.pid"
        ));
        write(&task, "6969");
        write(
            &run.join(format!("docker/runtime-runc/moby/{ID}/state.json")),
            r#"{"id":"x","init_process_pid":6969,"init_process_start":47901,"config":{}}"#,
        );
        let found = find(run, Path::new("/nonexistent"), |id| id.starts_with("eca"));
        assert_eq!(found, vec![entry(ID, Runtime::Docker, 6969, Some(47901))]);
    }

    #[test]
    fn containerd_namespaces_and_shim_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        let v2 = run.join("containerd/io.containerd.runtime.v2.task/k8s.io/web/init.pid");
        let v1 = run.join(format!(
            "containerd/io.containerd.runtime.v1.linux/default/{ID2}/init.pid"
        ));
        write(&v2, "100\n");
        write(&v1, "200\n");
        let mut found = find(run, Path::new("/nonexistent"), |_| true);
        found.sort_by(|a, b| a.id.cmp(&b.id));
        let k8s = Runtime::Containerd {
            namespace: "k8s.io".into(),
        };
        let default = Runtime::Containerd {
            namespace: "default".into(),
        };
        assert_eq!(
            found,
            vec![entry(ID2, default, 200, None), entry("web", k8s, 100, None)]
        );
    }

    #[test]
    fn podman_and_crio_in_containers_storage() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        let storage = run.join("containers/storage/overlay-containers");
        let podman = storage.join(format!("{ID}/userdata/pidfile"));
        write(&podman, "300");
        write(
            &storage.join(format!("{ID}/userdata/config.json")),
            r#"{"annotations":{"io.podman.annotations.autoremove":"FALSE"}}"#,
        );
        let crio = storage.join(format!("{ID2}/userdata/pidfile"));
        write(&crio, "400");
        write(
            &storage.join(format!("{ID2}/userdata/config.json")),
            r#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri-o.ContainerID":"x"}}"#,
        );
        let mut found = find(run, Path::new("/nonexistent"), |_| true);
        found.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            found,
            vec![
                entry(ID2, Runtime::CriO, 400, None),
                entry(ID, Runtime::Podman, 300, None)
            ]
        );
        // Without the config, the init's cgroup says CRI-O.
        std::fs::remove_file(storage.join(format!("{ID2}/userdata/config.json"))).unwrap();
        let proc = tmp.path().join("proc");
        write(
            &proc.join("400/cgroup"),
            &format!("0::/kubepods/pod1/crio-{ID2}\n"),
        );
        let found = find(run, &proc, |id| id == ID2);
        assert_eq!(found, vec![entry(ID2, Runtime::CriO, 400, None)]);
    }

    #[test]
    fn bare_runc_and_crun_take_runtime_from_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let proc = tmp.path().join("proc");
        let runc = run.join(format!("runc/{ID}/state.json"));
        write(&runc, r#"{"init_process_pid":500,"init_process_start":7}"#);
        write(
            &proc.join("500/cgroup"),
            &format!("0::/kubepods.slice/crio-{ID}.scope\n"),
        );
        let crun = run.join("crun/handmade/status");
        write(&crun, r#"{"pid":600,"process-start-time":8,"bundle":"/b"}"#);
        let mut found = find(&run, &proc, |_| true);
        found.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            found,
            vec![
                entry(ID, Runtime::CriO, 500, Some(7)),
                entry("handmade", Runtime::Pid, 600, Some(8))
            ]
        );
    }

    #[test]
    fn unwanted_broken_and_empty_entries_are_skipped() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path();
        let tasks = run.join("containerd/io.containerd.runtime.v2.task/default");
        write(&tasks.join("other/init.pid"), "5");
        write(&tasks.join("garbage/init.pid"), "not a pid");
        write(&tasks.join("zero/init.pid"), "0");
        std::fs::create_dir_all(tasks.join("creating")).unwrap(); // no init.pid yet
        write(&run.join("runc/broken/state.json"), "{");
        let found = find(run, Path::new("/nonexistent"), |id| id != "other");
        assert_eq!(found, vec![]);
    }

    #[test]
    fn missing_run_root_finds_nothing() {
        assert_eq!(
            find(Path::new("/nonexistent/run"), Path::new("/proc"), |_| true),
            vec![]
        );
    }
}
