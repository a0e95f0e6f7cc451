//! End-to-end tests of target resolution against the real kernel, a real Docker engine and
//! real containerd: every form a user can type, and every way it can be wrong.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crashcart::resolve::{resolve, ResolveError, Resolver, Runtime, Target};
use crashcart_tests::{docker_ready, is_root, run, run_ok, skip, unique_name, Container};

fn docker_target(container: &Container, name: Option<&str>) -> Target {
    Target {
        pid: container.pid(),
        runtime: Runtime::Docker,
        id: Some(container.id.clone()),
        name: name.map(str::to_string),
    }
}

/// The shortest prefix of `id`, at least 12 long, that is not all digits: all digits are
/// read as a PID.
fn short(id: &str) -> &str {
    let first_letter = id.bytes().position(|b| !b.is_ascii_digit());
    &id[..first_letter.map_or(id.len(), |i| (i + 1).max(12))]
}

/// The default resolver, with Docker's socket somewhere nothing listens.
fn resolver_without_docker(dir: &Path) -> Resolver {
    Resolver {
        docker_host: Some(format!("unix://{}", dir.join("no-docker.sock").display())),
        ..Resolver::default()
    }
}

#[test]
fn docker_id_prefix_and_scheme_resolve_without_the_daemon() {
    if !docker_ready() {
        return;
    }
    let c = Container::start(&[], &[]);
    let expected = docker_target(&c, None);
    // Docker is made unreachable: the answer must come from the state files.
    let tmp = tempfile::tempdir().unwrap();
    let r = resolver_without_docker(tmp.path());
    for spec in [
        c.id.clone(),
        short(&c.id).to_string(),
        short(&c.id).to_uppercase(),
        format!("docker://{}", c.id),
        format!("containerd://{}", &c.id[..16]),
    ] {
        assert_eq!(r.resolve(&spec).unwrap(), expected, "{spec}");
    }
    // And the same through the public entry point.
    assert_eq!(resolve(short(&c.id)).unwrap(), expected);
    // Another runtime's scheme does not find a Docker container.
    let spec = format!("podman://{}", c.id);
    assert!(
        matches!(r.resolve(&spec), Err(ResolveError::NotFound(s)) if s == spec),
        "{spec}"
    );
}

/// Resolution that can see only one of the runtimes' real state directories, a `/proc`
/// that shows nothing but the init's `stat`, and no Docker: the named source alone answers.
fn resolve_from_one_source(source: &str, container: &Container) -> Result<Target, ResolveError> {
    let tmp = tempfile::tempdir().unwrap();
    let run_root = tmp.path().join("run");
    let link = run_root.join(source);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(Path::new("/run").join(source), &link).unwrap();
    let pid = container.pid();
    let proc_root = tmp.path().join("proc");
    std::fs::create_dir_all(proc_root.join(pid.to_string())).unwrap();
    std::fs::copy(
        format!("/proc/{pid}/stat"),
        proc_root.join(pid.to_string()).join("stat"),
    )
    .unwrap();
    Resolver {
        proc_root,
        run_root,
        ..resolver_without_docker(tmp.path())
    }
    .resolve(short(&container.id))
}

#[test]
fn each_docker_state_file_alone_is_enough() {
    if !docker_ready() {
        return;
    }
    let v2 = Container::start(&[], &[]);
    let mut cases = vec![
        (
            "docker/containerd/daemon/io.containerd.runtime.v2.task",
            &v2,
        ),
        ("docker/runtime-runc", &v2),
    ];
    // The deprecated containerd shim v1, which Docker 20.10 still offers.
    const SHIM_V1: &str = "io.containerd.runtime.v1.linux";
    let runtimes = run_ok(Command::new("docker").args(["info", "-f", "{{json .Runtimes}}"]));
    let v1 = runtimes
        .contains(SHIM_V1)
        .then(|| Container::start(&["--runtime", SHIM_V1], &[]));
    match &v1 {
        Some(v1) => cases.extend([
            (
                "docker/containerd/daemon/io.containerd.runtime.v1.linux",
                v1,
            ),
            ("docker/runtime-runc", v1),
        ]),
        None => skip("this Docker has no containerd shim v1 runtime"),
    }
    for (source, c) in cases {
        if !Path::new("/run").join(source).exists() {
            skip(&format!("/run/{source} does not exist with this Docker"));
            continue;
        }
        assert_eq!(
            resolve_from_one_source(source, c).unwrap(),
            docker_target(c, None),
            "{source}"
        );
    }
    // With no state at all, nothing else in that setup could have answered.
    let err = resolve_from_one_source("nothing-here", &v2).unwrap_err();
    assert!(
        matches!(err, ResolveError::DockerUnreachable { .. }),
        "{err:?}"
    );
}

#[test]
fn docker_name_resolves_through_the_engine_api() {
    if !docker_ready() {
        return;
    }
    let c = Container::start(&[], &[]);
    let expected = docker_target(&c, Some(&c.name));
    assert_eq!(resolve(&c.name).unwrap(), expected);
    assert_eq!(resolve(&format!("/{}", c.name)).unwrap(), expected);
    assert_eq!(resolve(&format!("docker://{}", c.name)).unwrap(), expected);
    // The same request over an explicit DOCKER_HOST.
    let r = Resolver {
        docker_host: Some("unix:///var/run/docker.sock".into()),
        ..Resolver::default()
    };
    assert_eq!(r.resolve(&c.name).unwrap(), expected);
}

#[test]
fn name_without_docker_says_docker_is_unreachable() {
    if !docker_ready() {
        return;
    }
    let c = Container::start(&[], &[]);
    let tmp = tempfile::tempdir().unwrap();
    let err = resolver_without_docker(tmp.path())
        .resolve(&c.name)
        .unwrap_err();
    assert!(
        matches!(&err, ResolveError::DockerUnreachable { spec, .. } if *spec == c.name),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("Docker is not reachable at"), "{message}");
    assert!(!message.contains('\n'), "{message}");
}

#[test]
fn short_hex_name_beats_an_id_prefix() {
    if !docker_ready() {
        return;
    }
    // A container whose ID starts with a short prefix holding a letter (all digits would be
    // a PID)...
    let (a, prefix) = loop {
        let c = Container::start(&[], &[]);
        match c.id.bytes().position(|b| !b.is_ascii_digit()) {
            Some(letter) if letter < 8 => {
                let prefix = c.id[..(letter + 1).max(4)].to_string();
                break (c, prefix);
            }
            _ => continue,
        }
    };
    // ...and another container *named* that prefix, as `docker run --name db` would be.
    let b = Container {
        id: run_ok(Command::new("docker").args([
            "run",
            "-d",
            "--name",
            &prefix,
            crashcart_tests::distroless_image(),
        ])),
        name: prefix.clone(),
    };
    let expected_b = docker_target(&b, Some(&prefix));
    assert_eq!(resolve(&prefix).unwrap(), expected_b);
    assert_eq!(resolve(&format!("docker://{prefix}")).unwrap(), expected_b);
    // Twelve digits and more are an ID, whatever the names.
    assert_eq!(resolve(short(&a.id)).unwrap(), docker_target(&a, None));
    // Without Docker, the prefix is all there is.
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(
        resolver_without_docker(tmp.path())
            .resolve(&prefix)
            .unwrap(),
        docker_target(&a, None)
    );
}

#[test]
fn missing_name_is_not_found() {
    if !docker_ready() {
        return;
    }
    let name = unique_name("cc-missing");
    let err = resolve(&name).unwrap_err();
    assert!(
        matches!(&err, ResolveError::NotFound(s) if *s == name),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("no container or process matches {name:?}")
    );
}

#[test]
fn stopped_container_is_not_running() {
    if !docker_ready() {
        return;
    }
    // Created, never started.
    let name = unique_name("cc-created");
    let id = run_ok(Command::new("docker").args([
        "create",
        "--name",
        &name,
        crashcart_tests::distroless_image(),
    ]));
    let created = Container {
        id: id.clone(),
        name: name.clone(),
    };
    for spec in [
        name.as_str(),
        id.as_str(),
        short(&id),
        &format!("docker://{id}"),
    ] {
        let err = resolve(spec).unwrap_err();
        assert!(
            matches!(&err, ResolveError::NotRunning(shown) if *shown == name),
            "{spec}: {err:?}"
        );
        assert_eq!(err.to_string(), format!("container {name} is not running"));
    }
    drop(created);

    // Started, then stopped: its state files are gone, Docker still knows it.
    let c = Container::start(&[], &[]);
    let pid = c.pid();
    run_ok(Command::new("docker").args(["stop", "-t", "0", &c.id]));
    for spec in [&c.name, &c.id] {
        let err = resolve(spec).unwrap_err();
        assert!(
            matches!(&err, ResolveError::NotRunning(_)),
            "{spec}: {err:?}"
        );
    }
    // Its old PID is gone too (unless recycled, which resolution would then rightly accept).
    if !Path::new(&format!("/proc/{pid}")).exists() {
        assert!(matches!(
            resolve(&pid.to_string()),
            Err(ResolveError::NoSuchPid(p)) if p == pid
        ));
    }
}

#[test]
fn paused_container_is_refused() {
    if !docker_ready() {
        return;
    }
    let c = Container::start(&[], &[]);
    let pid = c.pid();
    run_ok(Command::new("docker").args(["pause", &c.id]));
    // By name Docker says so; by ID and PID the kernel's freezer does.
    let by_name = resolve(&c.name);
    let by_id: Vec<_> = [
        c.id.clone(),
        short(&c.id).to_string(),
        format!("docker://{}", c.id),
    ]
    .iter()
    .map(|spec| (spec.clone(), resolve(spec)))
    .collect();
    let by_pid = resolve(&pid.to_string());
    run_ok(Command::new("docker").args(["unpause", &c.id]));

    assert!(
        matches!(&by_name, Err(ResolveError::Paused(shown)) if *shown == c.name),
        "{by_name:?}"
    );
    for (spec, result) in by_id {
        assert!(
            matches!(&result, Err(ResolveError::Paused(shown)) if *shown == c.id),
            "{spec}: {result:?}"
        );
    }
    let err = by_pid.unwrap_err();
    assert!(
        matches!(err, ResolveError::Frozen(p) if p == pid),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("process {pid} is frozen (its container is paused); unpause it first")
    );
    // Thawed, it resolves again.
    assert_eq!(resolve(&c.id).unwrap(), docker_target(&c, None));
}

#[test]
fn ambiguous_prefix_lists_the_candidates() {
    if !docker_ready() {
        return;
    }
    // Sixteen possible first digits: among seventeen containers two must share one.
    let mut containers: Vec<Container> = Vec::new();
    let (a, b) = loop {
        let c = Container::start(&[], &[]);
        if let Some(i) = containers.iter().position(|o| o.id[..1] == c.id[..1]) {
            break (containers.swap_remove(i), c);
        }
        assert!(containers.len() < 16, "seventeen distinct first hex digits");
        containers.push(c);
    };
    let prefix = &a.id[..1];
    let mut specs = vec![format!("docker://{prefix}")];
    // All digits would be a PID; the scheme makes it an ID prefix.
    if !prefix.bytes().all(|b| b.is_ascii_digit()) {
        specs.push(prefix.to_string());
    }
    for spec in specs {
        let err = resolve(&spec).unwrap_err();
        let ResolveError::Ambiguous {
            spec: shown,
            candidates,
        } = &err
        else {
            panic!("{spec}: {err:?}");
        };
        assert_eq!(*shown, spec);
        // Other tests' containers may share the prefix too; ours must be listed, by the name
        // and image a user recognizes.
        for c in [&a, &b] {
            let listed = format!(
                "{} (docker {}, image {})",
                c.name,
                &c.id[..12],
                crashcart_tests::DISTROLESS_IMAGE
            );
            assert!(
                candidates.contains(&listed),
                "{listed} not in {candidates:?}"
            );
        }
        let message = err.to_string();
        assert!(
            message.starts_with(&format!("{spec:?} is ambiguous; it matches ")),
            "{message}"
        );
    }
    // One more digit tells them apart, unless they share that one too.
    let longest_common =
        a.id.bytes()
            .zip(b.id.bytes())
            .take_while(|(x, y)| x == y)
            .count();
    let unique_a = &a.id[..longest_common + 1];
    if containers.iter().all(|o| !o.id.starts_with(unique_a)) {
        let spec = format!("docker://{unique_a}");
        assert_eq!(resolve(&spec).unwrap(), docker_target(&a, None));
    }
}

#[test]
fn pids() {
    if !docker_ready() {
        return;
    }
    let c = Container::start(&[], &[]);
    let pid = c.pid();
    assert_eq!(
        resolve(&pid.to_string()).unwrap(),
        Target {
            pid,
            runtime: Runtime::Pid,
            id: None,
            name: None
        }
    );
    // pid_max is one past the largest PID the kernel hands out.
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let err = resolve(&pid_max.to_string()).unwrap_err();
    assert!(
        matches!(err, ResolveError::NoSuchPid(p) if p == pid_max),
        "{err:?}"
    );
    assert_eq!(err.to_string(), format!("no process with PID {pid_max}"));
}

#[test]
fn zombie_pid_is_exiting() {
    // A child that exited and was not reaped yet is a zombie.
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .contains(") Z ")
    {
        assert!(
            Instant::now() < deadline,
            "child {pid} never became a zombie"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = resolve(&pid.to_string()).unwrap_err();
    child.wait().unwrap();
    assert!(
        matches!(err, ResolveError::PidExiting(p) if p == pid),
        "{err:?}"
    );
    assert_eq!(err.to_string(), format!("process {pid} is exiting"));
}

#[test]
fn cgroup_v1_path_finds_the_init_not_an_exec() {
    if !docker_ready() {
        return;
    }
    let c = Container::start(&[], &[]);
    // A `docker exec`'d process: in the container's cgroup, parent outside it, started later.
    run_ok(Command::new("docker").args(["exec", "-d", &c.id, "/busybox", "sleep", "1000"]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while run_ok(Command::new("docker").args(["top", &c.id, "-o", "pid"]))
        .lines()
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "docker exec did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // No state files and no Docker: only the kernel's cgroup paths can answer.
    let tmp = tempfile::tempdir().unwrap();
    let r = Resolver {
        run_root: tmp.path().to_path_buf(),
        ..resolver_without_docker(tmp.path())
    };
    let expected = docker_target(&c, None);
    assert_eq!(r.resolve(&c.id).unwrap(), expected);
    assert_eq!(r.resolve(short(&c.id)).unwrap(), expected);
    assert_eq!(r.resolve(&format!("docker://{}", c.id)).unwrap(), expected);
}

#[test]
fn the_binary_reports_bad_targets_in_one_line_with_status_125() {
    if !docker_ready() {
        return;
    }
    let name = unique_name("cc-created");
    let created = Container {
        id: run_ok(Command::new("docker").args([
            "create",
            "--name",
            &name,
            crashcart_tests::distroless_image(),
        ])),
        name,
    };
    let missing = unique_name("cc-missing");
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .to_string();
    for (spec, message) in [
        (
            missing.clone(),
            format!("no container or process matches {missing:?}"),
        ),
        (pid_max.clone(), format!("no process with PID {pid_max}")),
        (
            created.name.clone(),
            format!("container {} is not running", created.name),
        ),
        (
            "rkt://x".to_string(),
            "unknown runtime in \"rkt://x\"; use docker://, containerd://, cri-o://, podman:// or k8s://NAMESPACE/POD[/CONTAINER]"
                .to_string(),
        ),
    ] {
        let out = run(Command::new(crashcart_tests::bin("crashcart")).args([&spec, "true"]));
        assert_eq!(out.status.code(), Some(125), "{spec}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("crashcart: {message}\n"),
            "{spec}"
        );
        assert!(out.stdout.is_empty(), "{spec}");
    }
}

// ---- containerd, driven by its own CLI in a namespace of our own ----

/// containerd's socket: the system's, or the one dockerd runs privately.
fn containerd_socket() -> Option<&'static str> {
    [
        "/run/containerd/containerd.sock",
        "/run/docker/containerd/containerd.sock",
    ]
    .into_iter()
    .find(|s| Path::new(s).exists())
}

/// A containerd namespace holding one image, removed (tasks, containers, image, namespace)
/// on drop.
struct ContainerdNamespace {
    socket: &'static str,
    namespace: String,
    containers: Vec<String>,
}

impl ContainerdNamespace {
    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.args(["--address", self.socket, "--namespace", &self.namespace]);
        cmd
    }
}

impl Drop for ContainerdNamespace {
    fn drop(&mut self) {
        let quiet = |mut cmd: Command| {
            let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        for id in &self.containers {
            let mut kill = self.ctr();
            kill.args(["tasks", "kill", "--signal", "SIGKILL", id]);
            quiet(kill);
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut rm = self.ctr();
                rm.args(["tasks", "rm", id]);
                let out = rm.output();
                let gone = out.is_ok_and(|o| {
                    o.status.success() || String::from_utf8_lossy(&o.stderr).contains("not found")
                });
                if gone || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let mut rm = self.ctr();
            rm.args(["containers", "rm", id]);
            quiet(rm);
        }
        let mut images = self.ctr();
        images.args([
            "images",
            "rm",
            "--sync",
            "docker.io/library/crashcart-test-distroless:latest",
        ]);
        quiet(images);
        // containerd collects the image's content in the background; the namespace can
        // only go once it is empty.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Command::new("ctr")
            .args([
                "--address",
                self.socket,
                "namespaces",
                "rm",
                &self.namespace,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        // containerd put the tasks in cgroups /<namespace>/<id> and leaves the (now empty)
        // /<namespace> behind in every hierarchy.
        for hierarchy in cgroup_mount_points() {
            let _ = std::fs::remove_dir(hierarchy.join(&self.namespace));
        }
    }
}

/// Mount points of the cgroup v1 and v2 hierarchies, from `/proc/self/mountinfo`.
fn cgroup_mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let fstype = fs.split(' ').next()?;
            let mount_point = mount.split(' ').nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

#[test]
fn containerd_task_in_its_own_namespace() {
    if !docker_ready() {
        return;
    }
    if !crashcart_tests::have("ctr") {
        skip("ctr (containerd's CLI) not installed");
        return;
    }
    let Some(socket) = containerd_socket() else {
        skip("no containerd socket");
        return;
    };
    let mut ns = ContainerdNamespace {
        socket,
        namespace: unique_name("crashcart-test"),
        containers: Vec::new(),
    };
    // Offline: the distroless image goes from Docker to containerd as a tarball.
    let image = crashcart_tests::distroless_image();
    let mut save = Command::new("docker")
        .args(["save", image])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let import = run(ns
        .ctr()
        .args(["images", "import", "-"])
        .stdin(save.stdout.take().unwrap()));
    assert!(save.wait().unwrap().success());
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    // A task ID that is a name, as `ctr run` allows, and one that looks like Docker's.
    let name_id = unique_name("task");
    let hex_id = random_id();
    for id in [&name_id, &hex_id] {
        ns.containers.push(id.clone());
        run_ok(ns.ctr().args([
            "run",
            "-d",
            "docker.io/library/crashcart-test-distroless:latest",
            id,
        ]));
    }
    let runtime = Runtime::Containerd {
        namespace: ns.namespace.clone(),
    };
    for id in [&name_id, &hex_id] {
        let listed = run_ok(ns.ctr().args(["tasks", "ls"]));
        let pid: u32 = listed
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(id.as_str())).then(|| f.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("{id} not in {listed}"));
        let expected = Target {
            pid,
            runtime: runtime.clone(),
            id: Some(id.clone()),
            name: None,
        };
        assert_eq!(resolve(id).unwrap(), expected);
        assert_eq!(resolve(&format!("containerd://{id}")).unwrap(), expected);
        let docker_scheme = format!("docker://{id}");
        assert!(
            matches!(resolve(&docker_scheme), Err(ResolveError::NotFound(_))),
            "{docker_scheme}"
        );
    }
    assert_eq!(
        resolve(short(&hex_id)).unwrap().id.as_deref(),
        Some(hex_id.as_str())
    );
}

// ---- cgroup v2 paths, made by hand the way each runtime names them ----

/// 64 random hex digits, like a container ID.
fn random_id() -> String {
    let uuid = || {
        std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .replace('-', "")
    };
    format!("{}{}", uuid(), uuid())
}

/// A cgroup2 hierarchy mounted at a temp dir with one parent cgroup of our own; kills the
/// processes it holds, removes the cgroups and unmounts on drop.
struct Cgroup2 {
    mount: tempfile::TempDir,
    parent: PathBuf,
    scopes: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Cgroup2 {
    fn mount() -> Option<Cgroup2> {
        let mount = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "cgroup2", "none"])
            .arg(mount.path())
            .status()
            .unwrap();
        if !status.success() {
            return None;
        }
        let parent = mount.path().join(unique_name("crashcart-test"));
        std::fs::create_dir(&parent).unwrap();
        Some(Cgroup2 {
            mount,
            parent,
            scopes: Vec::new(),
            children: Vec::new(),
        })
    }

    /// Creates `<parent>/<scope>` and returns its path.
    fn scope(&mut self, scope: &str) -> PathBuf {
        let path = self.parent.join(scope);
        std::fs::create_dir(&path).unwrap();
        self.scopes.push(path.clone());
        path
    }

    /// Moves `pid` into the cgroup at `path`; the kernel then shows that path in
    /// `/proc/PID/cgroup`.
    fn enter(path: &Path, pid: u32) {
        std::fs::write(path.join("cgroup.procs"), pid.to_string()).unwrap();
    }

    fn spawn(&mut self, cmd: &mut Command) -> u32 {
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Grandchildren (the shell's background sleep) are killed through the cgroup.
        for scope in self.scopes.iter().rev() {
            let _ = std::fs::write(scope.join("cgroup.kill"), "1");
        }
        // A cgroup can be removed once its last process is reaped, and its parent once the
        // kernel has released the child: both take a moment.
        for cgroup in self.scopes.iter().chain([&self.parent]) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::fs::remove_dir(cgroup).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = Command::new("umount").arg(self.mount.path()).status();
    }
}

#[test]
fn cgroup_v2_paths_of_each_runtime() {
    if !is_root() {
        skip("needs root to mount cgroup2 and move processes");
        return;
    }
    let Some(mut cgroups) = Cgroup2::mount() else {
        skip("cannot mount a cgroup2 hierarchy");
        return;
    };
    let (containerd_id, crio_id, podman_id) = (random_id(), random_id(), random_id());

    // A containerd (CRI) container whose init is a shell with a child of its own, plus a
    // later process whose parent is outside (what an exec looks like).
    let scope = cgroups.scope(&format!("cri-containerd-{containerd_id}.scope"));
    let init = cgroups.spawn(Command::new("sh").arg("-s").stdin(Stdio::piped()));
    Cgroup2::enter(&scope, init);
    let stdin = cgroups.children.last_mut().unwrap().stdin.as_mut().unwrap();
    stdin.write_all(b"sleep 1000 & wait\n").unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(scope.join("cgroup.procs"))
        .unwrap()
        .lines()
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the shell did not fork its sleep"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Start times are in clock ticks (10 ms): make the "exec" visibly later.
    std::thread::sleep(Duration::from_millis(50));
    let exec = cgroups.spawn(Command::new("sleep").arg("1000"));
    Cgroup2::enter(&scope, exec);

    // CRI-O and Podman, with their monitors in separate scopes that must not match.
    let crio_scope = cgroups.scope(&format!("crio-{crio_id}.scope"));
    let crio_conmon = cgroups.scope(&format!("crio-conmon-{crio_id}.scope"));
    let podman_scope = cgroups.scope(&format!("libpod-{podman_id}.scope"));
    let podman_conmon = cgroups.scope(&format!("libpod-conmon-{podman_id}.scope"));
    let mut pids = Vec::new();
    for scope in [&crio_conmon, &crio_scope, &podman_conmon, &podman_scope] {
        let pid = cgroups.spawn(Command::new("sleep").arg("1000"));
        Cgroup2::enter(scope, pid);
        pids.push(pid);
    }
    let (crio_init, podman_init) = (pids[1], pids[3]);

    let kubernetes = Runtime::Containerd {
        namespace: "k8s.io".into(),
    };
    let cases = [
        (containerd_id.clone(), init, kubernetes),
        (crio_id.clone(), crio_init, Runtime::CriO),
        (podman_id.clone(), podman_init, Runtime::Podman),
    ];
    let scheme_of = |runtime: &Runtime| match runtime {
        Runtime::CriO => "cri-o",
        Runtime::Podman => "podman",
        _ => "containerd",
    };
    for (id, pid, runtime) in &cases {
        let expected = Target {
            pid: *pid,
            runtime: runtime.clone(),
            id: Some(id.clone()),
            name: None,
        };
        let scheme = scheme_of(runtime);
        assert_eq!(resolve(id).unwrap(), expected, "{id}");
        assert_eq!(resolve(short(id)).unwrap(), expected, "{id}");
        assert_eq!(
            resolve(&format!("{scheme}://{id}")).unwrap(),
            expected,
            "{scheme}"
        );
        // Each is invisible to the other schemes.
        for other in ["cri-o", "podman"].into_iter().filter(|s| *s != scheme) {
            let spec = format!("{other}://{id}");
            assert!(
                matches!(resolve(&spec), Err(ResolveError::NotFound(s)) if s == spec),
                "{spec}"
            );
        }
    }
}

// ---- Podman: state in containers/storage, cgroups named libpod-<id> ----

/// A Podman container of the distroless image, removed (with the image) on drop.
struct PodmanContainer {
    name: String,
    id: String,
}

/// `podman` set up to need neither systemd nor a network: cgroupfs, events in a file.
fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.args(["--cgroup-manager=cgroupfs", "--events-backend=file"]);
    cmd
}

const PODMAN_IMAGE: &str = "localhost/crashcart-test-distroless:latest";

impl PodmanContainer {
    fn start() -> PodmanContainer {
        // Offline: the image goes from Docker to Podman as a tarball.
        let mut save = Command::new("docker")
            .args(["save", crashcart_tests::distroless_image()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        run_ok(podman().arg("load").stdin(save.stdout.take().unwrap()));
        assert!(save.wait().unwrap().success());
        let mut container = PodmanContainer {
            name: unique_name("cc-podman"),
            id: String::new(),
        };
        // Podman raises RLIMIT_NOFILE and RLIMIT_NPROC to values a root without
        // CAP_SYS_RESOURCE may not set; ask for modest ones.
        container.id = run_ok(podman().args([
            "run",
            "-d",
            "--network=none",
            "--ulimit=nofile=1024:1024",
            "--ulimit=nproc=1024:1024",
            "--name",
            &container.name,
            PODMAN_IMAGE,
        ]));
        container
    }

    fn pid(&self) -> u32 {
        run_ok(podman().args(["inspect", "-f", "{{.State.Pid}}", &self.id]))
            .parse()
            .unwrap()
    }
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        for args in [
            &["rm", "-f", "-t", "0", &self.name][..],
            &["rmi", PODMAN_IMAGE],
        ] {
            let _ = podman()
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[test]
fn podman_container_by_id_prefix_and_scheme() {
    if !docker_ready() {
        return;
    }
    if !crashcart_tests::have("podman") {
        skip("podman not installed");
        return;
    }
    let c = PodmanContainer::start();
    let expected = Target {
        pid: c.pid(),
        runtime: Runtime::Podman,
        id: Some(c.id.clone()),
        name: None,
    };
    for spec in [
        c.id.clone(),
        short(&c.id).to_string(),
        format!("podman://{}", c.id),
    ] {
        assert_eq!(resolve(&spec).unwrap(), expected, "{spec}");
    }
    for spec in [format!("cri-o://{}", c.id), format!("docker://{}", c.id)] {
        assert!(
            matches!(resolve(&spec), Err(ResolveError::NotFound(s)) if s == spec),
            "{spec}"
        );
    }
    // Without the state files, the kernel's cgroup path (libpod_parent/libpod-<id> under
    // cgroupfs) still names it.
    let tmp = tempfile::tempdir().unwrap();
    let r = Resolver {
        run_root: tmp.path().to_path_buf(),
        ..resolver_without_docker(tmp.path())
    };
    assert_eq!(
        r.resolve(&format!("podman://{}", &c.id[..12])).unwrap(),
        expected
    );
}
