//! Resolution order and errors, against fake `/proc` and `/run` trees.

use std::path::Path;

use super::*;

const ID_A: &str = "abc0000000000000000000000000000000000000000000000000000000000001";
const ID_B: &str = "abd0000000000000000000000000000000000000000000000000000000000002";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let fixture = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(fixture.proc()).unwrap();
        std::fs::create_dir_all(fixture.run()).unwrap();
        fixture
    }
    fn proc(&self) -> PathBuf {
        self.dir.path().join("proc")
    }
    fn run(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    fn resolver(&self) -> Resolver {
        Resolver {
            proc_root: self.proc(),
            run_root: self.run(),
            // Nothing listens here: any test that reaches Docker sees it unreachable.
            docker_host: Some(format!(
                "unix://{}",
                self.dir.path().join("docker.sock").display()
            )),
            cri_endpoint: None,
        }
    }
    fn process(&self, pid: u32, ppid: u32, state: char, start: u64, cgroup: &str) {
        let dir = self.proc().join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("{pid} (x) {state} {ppid} 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0\n"),
        )
        .unwrap();
        std::fs::write(dir.join("cgroup"), cgroup).unwrap();
    }
    fn file(&self, relative: &str, contents: &str) {
        let path = self.run().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    fn docker_task(&self, id: &str, pid: u32) {
        self.file(
            &format!("containerd/io.containerd.runtime.v2.task/moby/{id}/init.pid"),
            &pid.to_string(),
        );
    }
}

fn container(pid: u32, runtime: Runtime, id: &str) -> Target {
    Target {
        pid,
        runtime,
        id: Some(id.to_string()),
        name: None,
    }
}

#[test]
fn pids() {
    let f = Fixture::new();
    f.process(42, 1, 'S', 5, "0::/\n");
    f.process(43, 1, 'Z', 6, "0::/\n");
    let r = f.resolver();
    assert_eq!(
        r.resolve("42").unwrap(),
        Target {
            pid: 42,
            runtime: Runtime::Pid,
            id: None,
            name: None
        }
    );
    assert!(matches!(r.resolve("43"), Err(ResolveError::PidExiting(43))));
    assert!(matches!(r.resolve("44"), Err(ResolveError::NoSuchPid(44))));
    assert!(matches!(r.resolve("0"), Err(ResolveError::NoSuchPid(0))));
}

#[test]
fn digits_too_large_for_a_pid_are_not_a_pid() {
    let f = Fixture::new();
    let digits = "1".repeat(64);
    f.process(9, 1, 'S', 5, "0::/\n");
    f.docker_task(&digits, 9);
    assert_eq!(
        f.resolver().resolve(&digits).unwrap(),
        container(9, Runtime::Docker, &digits)
    );
}

#[test]
fn full_id_and_unique_prefix_from_state_files() {
    let f = Fixture::new();
    f.process(100, 1, 'S', 5, "0::/\n");
    f.process(200, 1, 'S', 6, "0::/\n");
    f.docker_task(ID_A, 100);
    f.docker_task(ID_B, 200);
    let r = f.resolver();
    assert_eq!(
        r.resolve(ID_A).unwrap(),
        container(100, Runtime::Docker, ID_A)
    );
    assert_eq!(
        r.resolve("abc").unwrap(),
        container(100, Runtime::Docker, ID_A)
    );
    assert_eq!(
        r.resolve("ABD").unwrap(),
        container(200, Runtime::Docker, ID_B)
    );
    assert_eq!(
        r.resolve(&format!("docker://{}", &ID_B[..12])).unwrap(),
        container(200, Runtime::Docker, ID_B)
    );
}

#[test]
fn ambiguous_prefix_lists_candidates() {
    let f = Fixture::new();
    f.process(100, 1, 'S', 5, "0::/\n");
    f.process(200, 1, 'S', 6, "0::/\n");
    f.docker_task(ID_A, 100);
    f.file(
        &format!("containerd/io.containerd.runtime.v2.task/k8s.io/{ID_B}/init.pid"),
        "200",
    );
    let err = f.resolver().resolve("ab").unwrap_err();
    let ResolveError::Ambiguous { spec, candidates } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(spec, "ab");
    assert_eq!(
        candidates,
        &[
            format!("{ID_A} (docker)"),
            format!("{ID_B} (containerd namespace k8s.io)")
        ]
    );
    assert_eq!(
        err.to_string(),
        format!(
            "\"ab\" is ambiguous; it matches {ID_A} (docker), {ID_B} (containerd namespace k8s.io)"
        )
    );
    // A scheme narrows it down.
    assert_eq!(
        f.resolver().resolve("docker://ab").unwrap(),
        container(100, Runtime::Docker, ID_A)
    );
}

#[test]
fn containerd_task_names_match_exactly_and_beat_prefixes() {
    let f = Fixture::new();
    f.process(100, 1, 'S', 5, "0::/\n");
    f.process(300, 1, 'S', 7, "0::/\n");
    f.docker_task(ID_A, 100);
    f.file(
        "containerd/io.containerd.runtime.v2.task/default/abc/init.pid",
        "300",
    );
    f.file(
        "containerd/io.containerd.runtime.v2.task/default/web/init.pid",
        "300",
    );
    let default = Runtime::Containerd {
        namespace: "default".into(),
    };
    let r = f.resolver();
    assert_eq!(
        r.resolve("abc").unwrap(),
        container(300, default.clone(), "abc")
    );
    assert_eq!(
        r.resolve("containerd://web").unwrap(),
        container(300, default, "web")
    );
    // Non-hex names are not prefixes.
    assert!(matches!(
        r.resolve("we"),
        Err(ResolveError::DockerUnreachable { .. })
    ));
}

#[test]
fn stale_or_dead_init_is_not_running() {
    let f = Fixture::new();
    f.process(100, 1, 'S', 5, "0::/\n");
    f.process(101, 1, 'Z', 5, "0::/\n");
    // Recorded start time 4, but PID 100 started at 5: a recycled PID.
    f.file(
        &format!("docker/runtime-runc/moby/{ID_A}/state.json"),
        r#"{"init_process_pid":100,"init_process_start":4}"#,
    );
    f.docker_task(ID_B, 101);
    f.file(
        "containerd/io.containerd.runtime.v2.task/default/gone/init.pid",
        "999",
    );
    let r = f.resolver();
    for spec in [ID_A, ID_B, "gone"] {
        match r.resolve(spec) {
            Err(ResolveError::NotRunning(id)) => assert_eq!(id, spec),
            other => panic!("{spec}: {other:?}"),
        }
    }
}

#[test]
fn cgroup_scan_when_no_state_file_knows() {
    let f = Fixture::new();
    f.process(1, 0, 'S', 1, "0::/\n");
    f.process(10, 1, 'S', 2, "0::/system.slice/containerd.service\n");
    f.process(
        500,
        10,
        'S',
        3,
        &format!("0::/kubepods.slice/crio-{ID_A}.scope\n"),
    );
    f.process(
        501,
        500,
        'S',
        4,
        &format!("0::/kubepods.slice/crio-{ID_A}.scope\n"),
    );
    f.process(
        600,
        10,
        'S',
        3,
        &format!("0::/machine.slice/libpod-{ID_B}.scope\n"),
    );
    let r = f.resolver();
    assert_eq!(
        r.resolve("abc").unwrap(),
        container(500, Runtime::CriO, ID_A)
    );
    assert_eq!(
        r.resolve("cri-o://abc").unwrap(),
        container(500, Runtime::CriO, ID_A)
    );
    assert_eq!(
        r.resolve("podman://abd").unwrap(),
        container(600, Runtime::Podman, ID_B)
    );
    assert!(matches!(
        r.resolve("ab"),
        Err(ResolveError::Ambiguous { .. })
    ));
    // The wrong runtime finds nothing, and does not ask Docker.
    assert!(
        matches!(r.resolve("podman://abc"), Err(ResolveError::NotFound(s)) if s == "podman://abc")
    );
}

#[test]
fn a_state_file_beats_the_cgroup_guess() {
    let f = Fixture::new();
    // `ctr run` in namespace "team": cgroup /team/<id> alone would not say which runtime.
    f.process(100, 1, 'S', 5, &format!("0::/team/{ID_A}\n"));
    f.file(
        &format!("containerd/io.containerd.runtime.v2.task/team/{ID_A}/init.pid"),
        "100",
    );
    let team = Runtime::Containerd {
        namespace: "team".into(),
    };
    let r = f.resolver();
    assert_eq!(r.resolve("abc").unwrap(), container(100, team, ID_A));
    // Not a Docker container, so docker:// asks Docker (unreachable here) and finds nothing
    // locally.
    assert!(matches!(
        r.resolve("docker://abc"),
        Err(ResolveError::DockerUnreachable { .. })
    ));
}

#[test]
fn names_go_to_docker() {
    let f = Fixture::new();
    let r = f.resolver();
    let err = r.resolve("web-1").unwrap_err();
    assert!(
        matches!(&err, ResolveError::DockerUnreachable { spec, socket, .. }
            if spec == "web-1" && socket == &f.dir.path().join("docker.sock")),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with("no container or process matches \"web-1\" (and Docker is not reachable at "));
    // An unknown hex ID also ends up asking Docker (it may be a stopped container).
    assert!(matches!(
        r.resolve("docker://abc"),
        Err(ResolveError::DockerUnreachable { .. })
    ));
}

#[test]
fn unusable_docker_host() {
    let f = Fixture::new();
    let r = Resolver {
        docker_host: Some("tcp://127.0.0.1:2375".into()),
        ..f.resolver()
    };
    assert!(matches!(
        r.resolve("web-1"),
        Err(ResolveError::Docker(DockerError::UnsupportedHost(_)))
    ));
}

#[test]
fn bad_specs() {
    let f = Fixture::new();
    let r = f.resolver();
    assert!(matches!(r.resolve(""), Err(ResolveError::Empty)));
    assert!(matches!(
        r.resolve("docker://"),
        Err(ResolveError::NotFound(_))
    ));
    assert!(
        matches!(r.resolve("rkt://abc"), Err(ResolveError::UnknownScheme(s)) if s == "rkt://abc")
    );
    // Never sent to Docker: it could not be a container name.
    for spec in ["../../etc", "a/b", "web 1", "-1", "+5"] {
        assert!(
            matches!(r.resolve(spec), Err(ResolveError::NotFound(s)) if s == spec),
            "{spec}"
        );
    }
}

#[test]
fn from_env_defaults() {
    // Only the defaults are checked: setting variables would race with other tests.
    let defaults = Resolver::default();
    assert_eq!(defaults.proc_root, Path::new("/proc"));
    assert_eq!(defaults.run_root, Path::new("/run"));
    assert_eq!(defaults.docker_host, None);
}

/// A CRI container of containerd's k8s.io namespace: bundle annotations and `init.pid`.
fn cri_task(f: &Fixture, id: &str, pid: u32, sandbox: bool, pod: (&str, &str), name: &str) {
    let dir = format!("containerd/io.containerd.runtime.v2.task/k8s.io/{id}");
    let kind = if sandbox { "sandbox" } else { "container" };
    f.file(
        &format!("{dir}/config.json"),
        &serde_json::json!({"ociVersion": "1.0.2", "annotations": {
            "io.kubernetes.cri.container-type": kind,
            "io.kubernetes.cri.sandbox-namespace": pod.0,
            "io.kubernetes.cri.sandbox-name": pod.1,
            "io.kubernetes.cri.container-name": name,
            "io.kubernetes.cri.image-name": "busybox",
        }})
        .to_string(),
    );
    f.file(&format!("{dir}/init.pid"), &pid.to_string());
    f.process(
        pid,
        1,
        'S',
        u64::from(pid),
        &format!("0::/kubepods/pod1/{id}\n"),
    );
}

fn k8s(pid: u32, id: &str, name: &str) -> Target {
    Target {
        pid,
        runtime: Runtime::Containerd {
            namespace: "k8s.io".into(),
        },
        id: Some(id.to_string()),
        name: Some(name.to_string()),
    }
}

#[test]
fn pods_resolve_to_their_app_containers() {
    let id = |n: u8| format!("{:064x}", n);
    let f = Fixture::new();
    cri_task(&f, &id(1), 100, true, ("prod", "one"), "");
    cri_task(&f, &id(2), 101, false, ("prod", "one"), "web");
    cri_task(&f, &id(3), 200, true, ("prod", "two"), "");
    cri_task(&f, &id(4), 201, false, ("prod", "two"), "web");
    cri_task(&f, &id(5), 202, false, ("prod", "two"), "log");
    // The same pod name in another namespace.
    cri_task(&f, &id(6), 300, true, ("dev", "one"), "");
    cri_task(&f, &id(7), 301, false, ("dev", "one"), "web");
    let r = f.resolver();
    assert_eq!(
        r.resolve("k8s://prod/one").unwrap(),
        k8s(101, &id(2), "prod/one/web")
    );
    assert_eq!(
        r.resolve("prod/one/web").unwrap(),
        k8s(101, &id(2), "prod/one/web")
    );
    assert_eq!(
        r.resolve("k8s://dev/one").unwrap(),
        k8s(301, &id(7), "dev/one/web")
    );
    assert_eq!(
        r.resolve("k8s://prod/two/log").unwrap(),
        k8s(202, &id(5), "prod/two/log")
    );
    match r.resolve("k8s://prod/two") {
        Err(ResolveError::PodAmbiguous { pod, choices }) => {
            assert_eq!(pod, "prod/two");
            assert_eq!(choices, ["k8s://prod/two/log", "k8s://prod/two/web"]);
        }
        other => panic!("{other:?}"),
    }
    match r.resolve("k8s://prod/two/db") {
        Err(ResolveError::NoSuchContainer { choices, .. }) => assert_eq!(choices, ["log", "web"]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        r.resolve("k8s://prod/gone"),
        Err(ResolveError::PodNotFound { pod, .. }) if pod == "prod/gone"
    ));
    assert!(matches!(
        r.resolve("prod/gone"),
        Err(ResolveError::NotFound(_))
    ));
    assert!(matches!(
        r.resolve("k8s://Prod/x"),
        Err(ResolveError::BadPodReference(_))
    ));
}

#[test]
fn restarted_and_stopped_pod_containers() {
    let id = |n: u8| format!("{:064x}", n);
    let f = Fixture::new();
    cri_task(&f, &id(1), 100, true, ("prod", "one"), "");
    // The first instance exited; its PID now belongs to some other process.
    cri_task(&f, &id(2), 101, false, ("prod", "one"), "web");
    f.process(101, 1, 'S', 101, "0::/system.slice/other.service\n");
    cri_task(&f, &id(3), 102, false, ("prod", "one"), "web");
    let r = f.resolver();
    assert_eq!(
        r.resolve("k8s://prod/one").unwrap(),
        k8s(102, &id(3), "prod/one/web")
    );
    // The running instance exits too: a zombie.
    f.process(102, 1, 'Z', 102, &format!("0::/kubepods/pod1/{}\n", id(3)));
    assert!(matches!(
        r.resolve("k8s://prod/one"),
        Err(ResolveError::PodNotRunning(p)) if p == "prod/one"
    ));
    assert!(matches!(
        r.resolve("k8s://prod/one/web"),
        Err(ResolveError::NotRunning(p)) if p == "prod/one/web"
    ));
    // Only the sandbox: never a target.
    let f = Fixture::new();
    cri_task(&f, &id(1), 100, true, ("prod", "one"), "");
    assert!(matches!(
        f.resolver().resolve("k8s://prod/one"),
        Err(ResolveError::PodNotRunning(_))
    ));
}

#[test]
fn listing_names_pods_and_skips_sandboxes() {
    let id = |n: u8| format!("{:064x}", n);
    let f = Fixture::new();
    cri_task(&f, &id(1), 100, true, ("prod", "one"), "");
    cri_task(&f, &id(2), 101, false, ("prod", "one"), "web");
    f.file(
        &format!("containerd/io.containerd.runtime.v2.task/default/{ID_A}/init.pid"),
        "55",
    );
    let listings = list(&f.resolver()).unwrap();
    assert_eq!(listings.len(), 2, "{listings:?}");
    assert_eq!(listings[0].name, "");
    assert_eq!(listings[0].state, ContainerState::Exited);
    assert_eq!(listings[1].name, "k8s://prod/one/web");
    assert_eq!(listings[1].pid, 101);
    assert_eq!(listings[1].image.as_deref(), Some("busybox"));
    assert_eq!(listings[1].state, ContainerState::Running);
}

#[test]
fn crio_pods_from_containers_storage() {
    let f = Fixture::new();
    let labels = serde_json::json!({
        "io.kubernetes.container.name": "api",
        "io.kubernetes.pod.name": "api-1",
        "io.kubernetes.pod.namespace": "dev",
    });
    for (id, kind, pid) in [(ID_A, "sandbox", 400), (ID_B, "container", 401)] {
        let dir = format!("containers/storage/overlay-containers/{id}/userdata");
        // Only the Labels JSON names the pod: the escaped form must still be found.
        f.file(
            &format!("{dir}/config.json"),
            &serde_json::json!({"annotations": {
                "io.kubernetes.cri-o.ContainerType": kind,
                "io.kubernetes.cri-o.Labels": labels.to_string(),
            }})
            .to_string(),
        );
        f.file(&format!("{dir}/pidfile"), &pid.to_string());
        f.process(
            pid,
            1,
            'S',
            9,
            &format!("0::/kubepods.slice/crio-{id}.scope\n"),
        );
    }
    assert_eq!(
        f.resolver().resolve("k8s://dev/api-1").unwrap(),
        Target {
            pid: 401,
            runtime: Runtime::CriO,
            id: Some(ID_B.to_string()),
            name: Some("dev/api-1/api".to_string()),
        }
    );
}

/// What a CRI runtime answers about pod `prod/one` with one running container `web` (ID_A)
/// whose init it says is `pid`: Version, ListPodSandbox, ListContainers, ContainerStatus.
fn cri_answers(pid: u32) -> Vec<Vec<u8>> {
    use crashcart_cri_api as api;
    use prost::Message;
    let sandbox = api::PodSandbox {
        id: ID_B.into(),
        metadata: Some(api::PodSandboxMetadata {
            name: "one".into(),
            uid: "u1".into(),
            namespace: "prod".into(),
            attempt: 0,
        }),
        ..Default::default()
    };
    let container = api::Container {
        id: ID_A.into(),
        pod_sandbox_id: ID_B.into(),
        metadata: Some(api::ContainerMetadata {
            name: "web".into(),
            attempt: 0,
        }),
        state: api::CONTAINER_RUNNING,
        ..Default::default()
    };
    vec![
        api::VersionResponse {
            runtime_name: "containerd".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        api::ListPodSandboxResponse {
            items: vec![sandbox],
        }
        .encode_to_vec(),
        api::ListContainersResponse {
            containers: vec![container],
        }
        .encode_to_vec(),
        api::ContainerStatusResponse {
            status: None,
            info: std::collections::HashMap::from([(
                "info".to_string(),
                format!(r#"{{"sandboxID":"{ID_B}","pid":{pid}}}"#),
            )]),
        }
        .encode_to_vec(),
    ]
}

/// A PID the CRI runtime gives is checked as a bundle's is: taken while its process lives in
/// the container's own cgroup, refused when the process there is another container's (a
/// recycled PID, or a runtime that lies).
#[test]
fn a_pid_from_the_cri_socket_is_checked_like_a_bundles() {
    let f = Fixture::new();
    f.process(300, 1, 'S', 5, &format!("0::/kubepods/pod-u1/{ID_A}\n"));
    f.process(
        301,
        1,
        'S',
        5,
        &format!("0::/system.slice/docker-{ID_B}.scope\n"),
    );
    let socket = f.dir.path().join("cri.sock");
    super::grpc::tests::serve_canned(&socket, cri_answers(300));
    let r = Resolver {
        cri_endpoint: Some(format!("unix://{}", socket.display())),
        ..f.resolver()
    };
    assert_eq!(
        r.resolve("k8s://prod/one").unwrap(),
        Target {
            pid: 300,
            runtime: Runtime::Containerd {
                namespace: "k8s.io".into()
            },
            id: Some(ID_A.into()),
            name: Some("prod/one/web".into()),
        }
    );

    let lying = f.dir.path().join("lying.sock");
    super::grpc::tests::serve_canned(&lying, cri_answers(301));
    let r = Resolver {
        cri_endpoint: Some(lying.display().to_string()),
        ..f.resolver()
    };
    assert!(
        matches!(
            r.resolve("k8s://prod/one/web"),
            Err(ResolveError::NotRunning(name)) if name == "prod/one/web"
        ),
        "a PID in another container's cgroup is not this container's"
    );
}
