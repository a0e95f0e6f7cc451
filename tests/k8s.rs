//! Kubernetes pods as targets, against real pods: a containerd of the test's own with the
//! CRI plugin, pods created over CRI as the kubelet creates them ([`node`]), resolved with
//! the library and entered with the real `crashcart` binary.

#[path = "k8s/cri.rs"]
mod cri;
#[path = "k8s/node.rs"]
mod node;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crashcart::resolve::{list, render, ContainerState, ResolveError, Resolver, Runtime, Target};
use crashcart_tests::{bin, busybox_tree, mke2fs_image, run, run_ok, wait_until};

use node::{sleep_seconds, Node, Pod, PodSpec};

/// One node at a time: each test's containerd, shims and pods are a real load on a small
/// machine, and a serial run keeps the timings meaningful.
static ONE_NODE: Mutex<()> = Mutex::new(());

fn node() -> Option<(std::sync::MutexGuard<'static, ()>, Node)> {
    let guard = ONE_NODE.lock().unwrap_or_else(|e| e.into_inner());
    Node::start().map(|node| (guard, node))
}

/// A busybox tool image for `crashcart -i`.
struct ToolImage {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ToolImage {
    fn new() -> ToolImage {
        let dir = tempfile::tempdir().unwrap();
        busybox_tree(&dir.path().join("tree"));
        let path = dir.path().join("tools.img");
        mke2fs_image(&dir.path().join("tree"), &path, 16);
        ToolImage { _dir: dir, path }
    }

    /// `crashcart -i IMAGE TARGET COMMAND...` reading `node`'s runtime state.
    fn crashcart(&self, node: &Node, target: &str, command: &[&str]) -> Output {
        run(Command::new(bin("crashcart"))
            .arg("-i")
            .arg(&self.path)
            .arg(target)
            .args(command)
            .env("CRASHCART_RUN", &node.run_root)
            .env_remove("CRASHCART_IMAGE")
            .stdin(Stdio::null()))
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The target the library must find for `container` of `pod`, as the CRI reports it.
fn expected(node: &mut Node, pod: &Pod, ns_pod: &str, container: &str) -> Target {
    let id = pod.containers[container].clone();
    Target {
        pid: node.pid(&id),
        runtime: Runtime::Containerd {
            namespace: "k8s.io".into(),
        },
        id: Some(id),
        name: Some(format!("{ns_pod}/{container}")),
    }
}

/// `/proc/1/cmdline` of the container `crashcart` entered, spaces for NULs.
fn init_cmdline(image: &ToolImage, node: &Node, target: &str) -> String {
    let out = image.crashcart(node, target, &["cat", "/proc/1/cmdline"]);
    assert!(
        out.status.success(),
        "crashcart {target}: {}\n{}",
        out.status,
        stderr(&out)
    );
    stdout(&out).replace('\0', " ").trim().to_string()
}

#[test]
fn one_container_pod() {
    let Some((_guard, mut node)) = node() else {
        return;
    };
    let pod = node.run_pod(&PodSpec::simple("shop", "web-0"));
    let want = expected(&mut node, &pod, "shop/web-0", "main");
    let resolver = node.resolver();
    for spec in [
        "k8s://shop/web-0",
        "k8s://shop/web-0/main",
        "shop/web-0",
        "shop/web-0/main",
    ] {
        assert_eq!(resolver.resolve(spec).unwrap(), want, "{spec}");
    }
    // The sandbox is never the answer, even by ID.
    assert_ne!(want.id.as_deref(), Some(pod.sandbox_id.as_str()));

    let image = ToolImage::new();
    let sleep = format!("/busybox sleep {}", sleep_seconds("main"));
    assert_eq!(init_cmdline(&image, &node, "k8s://shop/web-0"), sleep);
    assert_eq!(init_cmdline(&image, &node, "shop/web-0/main"), sleep);
    // The exit status is the command's, as for any target.
    let out = image.crashcart(&node, "k8s://shop/web-0/main", &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
}

#[test]
fn two_containers_pick_each_and_the_bare_pod_is_ambiguous() {
    let Some((_guard, mut node)) = node() else {
        return;
    };
    let pod = node.run_pod(&PodSpec {
        containers: &["app", "sidecar"],
        ..PodSpec::simple("shop", "cart")
    });
    let resolver = node.resolver();
    for name in ["app", "sidecar"] {
        let want = expected(&mut node, &pod, "shop/cart", name);
        assert_eq!(
            resolver
                .resolve(&format!("k8s://shop/cart/{name}"))
                .unwrap(),
            want
        );
    }
    match resolver.resolve("k8s://shop/cart") {
        Err(ResolveError::PodAmbiguous { pod, choices }) => {
            assert_eq!(pod, "shop/cart");
            assert_eq!(choices, ["k8s://shop/cart/app", "k8s://shop/cart/sidecar"]);
        }
        other => panic!("{other:?}"),
    }
    match resolver.resolve("k8s://shop/cart/db") {
        Err(ResolveError::NoSuchContainer { choices, .. }) => {
            assert_eq!(choices, ["app", "sidecar"]);
        }
        other => panic!("{other:?}"),
    }

    let image = ToolImage::new();
    for name in ["app", "sidecar"] {
        assert_eq!(
            init_cmdline(&image, &node, &format!("k8s://shop/cart/{name}")),
            format!("/busybox sleep {}", sleep_seconds(name))
        );
    }
    let out = image.crashcart(&node, "k8s://shop/cart", &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("k8s://shop/cart/app, k8s://shop/cart/sidecar"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn shared_pid_namespace_pod_shows_the_whole_pod() {
    let Some((_guard, mut node)) = node() else {
        return;
    };
    let pod = node.run_pod(&PodSpec {
        containers: &["app", "sidecar"],
        share_pid: true,
        ..PodSpec::simple("shop", "shared")
    });
    let want = expected(&mut node, &pod, "shop/shared", "sidecar");
    assert_eq!(
        node.resolver()
            .resolve("k8s://shop/shared/sidecar")
            .unwrap(),
        want
    );
    let image = ToolImage::new();
    let out = image.crashcart(
        &node,
        "k8s://shop/shared/sidecar",
        &["ps", "-o", "pid,args"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ps = stdout(&out);
    // The sandbox's process is PID 1; both containers' processes are there.
    for needle in [
        format!("sleep {}", sleep_seconds("app")),
        format!("sleep {}", sleep_seconds("sidecar")),
        "sleep 2147483647".to_string(),
    ] {
        assert!(ps.contains(&needle), "{needle} not in\n{ps}");
    }
}

#[test]
fn host_network_pod() {
    let Some((_guard, mut node)) = node() else {
        return;
    };
    let pod = node.run_pod(&PodSpec {
        host_network: true,
        ..PodSpec::simple("kube-system", "agent")
    });
    let want = expected(&mut node, &pod, "kube-system/agent", "main");
    assert_eq!(
        node.resolver().resolve("k8s://kube-system/agent").unwrap(),
        want
    );
    let image = ToolImage::new();
    let out = image.crashcart(
        &node,
        "k8s://kube-system/agent",
        &["readlink", "/proc/self/ns/net"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(stdout(&out).trim(), host_net.to_str().unwrap());
    // And not the host's mount namespace: the container's root has no /usr.
    let out = image.crashcart(&node, "k8s://kube-system/agent", &["ls", "/"]);
    assert!(!stdout(&out).contains("usr"), "{}", stdout(&out));
}

#[test]
fn restarted_container_resolves_to_the_running_instance() {
    let Some((_guard, mut node)) = node() else {
        return;
    };
    let mut pod = node.run_pod(&PodSpec::simple("shop", "flaky"));
    let first = pod.containers["main"].clone();
    // The container dies; the kubelet starts a new one (new ID, same name, attempt 1).
    node.cri.stop_container(&first, 0).unwrap();
    let second = node.start_container(&mut pod, "main");
    assert_ne!(first, second);
    let want = expected(&mut node, &pod, "shop/flaky", "main");
    assert_eq!(want.id.as_deref(), Some(second.as_str()));
    assert_eq!(node.resolver().resolve("k8s://shop/flaky").unwrap(), want);
    let image = ToolImage::new();
    let out = image.crashcart(&node, "k8s://shop/flaky/main", &["true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Stopped and not restarted: a clear error.
    node.cri.stop_container(&second, 0).unwrap();
    assert!(matches!(
        node.resolver().resolve("k8s://shop/flaky"),
        Err(ResolveError::PodNotRunning(p)) if p == "shop/flaky"
    ));
}

#[test]
fn same_pod_name_in_two_namespaces() {
    let Some((_guard, mut node)) = node() else {
        return;
    };
    let staging = node.run_pod(&PodSpec::simple("staging", "api"));
    let production = node.run_pod(&PodSpec::simple("production", "api"));
    let resolver = node.resolver();
    for (ns, pod) in [("staging", &staging), ("production", &production)] {
        let want = expected(&mut node, pod, &format!("{ns}/api"), "main");
        assert_eq!(resolver.resolve(&format!("k8s://{ns}/api")).unwrap(), want);
    }
    let image = ToolImage::new();
    let out = image.crashcart(&node, "k8s://production/api", &["hostname"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "api");
}

#[test]
fn deleted_pod_is_a_clear_error() {
    let Some((_guard, mut node)) = node() else {
        return;
    };
    let pod = node.run_pod(&PodSpec::simple("shop", "gone"));
    assert!(node.resolver().resolve("k8s://shop/gone").is_ok());
    node.delete_pod(&pod);
    let err = node.resolver().resolve("k8s://shop/gone").unwrap_err();
    assert!(
        matches!(&err, ResolveError::PodNotFound { pod, .. } if pod == "shop/gone"),
        "{err:?}"
    );
    let image = ToolImage::new();
    let out = image.crashcart(&node, "k8s://shop/gone", &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("no pod shop/gone on this node"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn list_shows_app_containers_not_sandboxes() {
    let Some((_guard, mut node)) = node() else {
        return;
    };
    let pod = node.run_pod(&PodSpec {
        containers: &["app", "sidecar"],
        ..PodSpec::simple("shop", "cart")
    });
    let listings = list(&node.resolver()).unwrap();
    let names: Vec<&str> = listings.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["k8s://shop/cart/app", "k8s://shop/cart/sidecar"]);
    for listing in &listings {
        let name = listing.name.rsplit('/').next().unwrap();
        assert_eq!(listing.id, pod.containers[name]);
        assert_eq!(listing.pid, node.pid(&listing.id));
        assert_eq!(listing.state, ContainerState::Running);
        assert_eq!(listing.image.as_deref(), Some(node::IMAGE));
    }
    let table = render(&listings, true);
    assert!(table.starts_with("NAME"), "{table}");
    assert_eq!(render(&listings, false).lines().count(), 2);
}

/// A resolver that cannot see `node`'s runtime state (an empty `/run`, as when the state
/// directories are unreadable or kept elsewhere) and asks `endpoint`.
fn socket_only_resolver(node: &Node, empty_run: &Path, endpoint: Option<String>) -> Resolver {
    Resolver {
        run_root: empty_run.to_path_buf(),
        cri_endpoint: endpoint,
        ..node.resolver()
    }
}

/// `crashcart ARGS...` with `CRASHCART_RUN` at `run_root`.
fn crashcart_with(run_root: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(bin("crashcart"));
    command
        .args(args)
        .env("CRASHCART_RUN", run_root)
        .env_remove("CRASHCART_IMAGE")
        .env_remove("CONTAINER_RUNTIME_ENDPOINT")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    run(&mut command)
}

/// With the bundles out of sight, pods resolve over the CRI socket by the same rules: the
/// only container, each of two, the ambiguous pod, a wrong name, a restarted container, a
/// deleted pod; through
/// `--cri-endpoint`, `CONTAINER_RUNTIME_ENDPOINT` and the usual socket under `/run`; and
/// `crashcart` enters what the socket named.
#[test]
fn pods_resolve_over_the_cri_socket_when_the_state_is_out_of_sight() {
    let Some((_guard, mut node)) = node() else {
        return;
    };
    let web = node.run_pod(&PodSpec::simple("shop", "web-0"));
    let cart = node.run_pod(&PodSpec {
        containers: &["app", "sidecar"],
        ..PodSpec::simple("shop", "cart")
    });
    let empty = tempfile::tempdir().unwrap();
    let endpoint = format!("unix://{}", node.socket.display());
    let resolver = socket_only_resolver(&node, empty.path(), Some(endpoint.clone()));
    // The bundle route alone knows nothing here.
    assert!(matches!(
        socket_only_resolver(&node, empty.path(), None).resolve("k8s://shop/web-0"),
        Err(ResolveError::PodNotFound { cri_sockets, .. }) if cri_sockets.is_empty()
    ));

    let want = expected(&mut node, &web, "shop/web-0", "main");
    for spec in ["k8s://shop/web-0", "k8s://shop/web-0/main", "shop/web-0"] {
        assert_eq!(resolver.resolve(spec).unwrap(), want, "{spec}");
    }
    for name in ["app", "sidecar"] {
        assert_eq!(
            resolver
                .resolve(&format!("k8s://shop/cart/{name}"))
                .unwrap(),
            expected(&mut node, &cart, "shop/cart", name)
        );
    }
    match resolver.resolve("k8s://shop/cart") {
        Err(ResolveError::PodAmbiguous { choices, .. }) => {
            assert_eq!(choices, ["k8s://shop/cart/app", "k8s://shop/cart/sidecar"]);
        }
        other => panic!("{other:?}"),
    }
    match resolver.resolve("k8s://shop/cart/db") {
        Err(ResolveError::NoSuchContainer { choices, .. }) => {
            assert_eq!(choices, ["app", "sidecar"]);
        }
        other => panic!("{other:?}"),
    }

    // The usual socket under the host's /run (here a link to this node's socket).
    let usual = tempfile::tempdir().unwrap();
    std::fs::create_dir(usual.path().join("containerd")).unwrap();
    std::os::unix::fs::symlink(
        &node.socket,
        usual.path().join("containerd/containerd.sock"),
    )
    .unwrap();
    assert_eq!(
        socket_only_resolver(&node, usual.path(), None)
            .resolve("k8s://shop/web-0")
            .unwrap(),
        want
    );

    // The real binary, each way of naming the socket.
    let image = ToolImage::new();
    let image_path = image.path.to_str().unwrap();
    let sleep = |name: &str| format!("/busybox sleep {}", sleep_seconds(name));
    let cmdline = |out: Output| {
        assert!(out.status.success(), "{}\n{}", out.status, stderr(&out));
        stdout(&out).replace('\0', " ").trim().to_string()
    };
    let cat = ["cat", "/proc/1/cmdline"];
    let with_flag = |target: &str| {
        let mut args = vec!["-i", image_path, "--cri-endpoint", &endpoint, target];
        args.extend(cat);
        crashcart_with(empty.path(), &[], &args)
    };
    assert_eq!(cmdline(with_flag("k8s://shop/web-0")), sleep("main"));
    assert_eq!(cmdline(with_flag("shop/cart/sidecar")), sleep("sidecar"));
    let socket_path = node.socket.to_str().unwrap();
    let out = crashcart_with(
        empty.path(),
        &[("CONTAINER_RUNTIME_ENDPOINT", socket_path)],
        &[
            "-i",
            image_path,
            "k8s://shop/cart/app",
            "cat",
            "/proc/1/cmdline",
        ],
    );
    assert_eq!(cmdline(out), sleep("app"));
    let out = crashcart_with(
        usual.path(),
        &[],
        &["-i", image_path, "k8s://shop/web-0", "sh", "-c", "exit 7"],
    );
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let out = with_flag("k8s://shop/cart");
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("k8s://shop/cart/app, k8s://shop/cart/sidecar"),
        "{}",
        stderr(&out)
    );

    // `--list` over the socket: the three app containers, no sandbox.
    let listings = list(&resolver).unwrap();
    let names: Vec<&str> = listings.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "k8s://shop/cart/app",
            "k8s://shop/cart/sidecar",
            "k8s://shop/web-0/main"
        ]
    );
    for listing in &listings {
        assert_eq!(listing.pid, node.pid(&listing.id));
        assert_eq!(listing.state, ContainerState::Running);
        assert_eq!(listing.image.as_deref(), Some(node::IMAGE));
    }
    let out = crashcart_with(empty.path(), &[], &["--list", "--cri-endpoint", &endpoint]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.contains(&format!(
            "k8s://shop/web-0/main\tcontainerd:k8s.io\t{}",
            want.id.as_deref().unwrap()
        )),
        "{text}"
    );

    // A restarted container: the runtime lists the exited instance beside the running one.
    let mut cart = cart;
    let first = cart.containers["app"].clone();
    node.cri.stop_container(&first, 0).unwrap();
    let second = node.start_container(&mut cart, "app");
    let want_app = expected(&mut node, &cart, "shop/cart", "app");
    assert_eq!(want_app.id.as_deref(), Some(second.as_str()));
    assert_eq!(resolver.resolve("k8s://shop/cart/app").unwrap(), want_app);

    // A deleted pod: the socket answered, without it.
    node.delete_pod(&web);
    match resolver.resolve("k8s://shop/web-0") {
        Err(ResolveError::PodNotFound {
            pod, cri_sockets, ..
        }) => {
            assert_eq!(pod, "shop/web-0");
            assert_eq!(cri_sockets, [node.socket.clone()]);
        }
        other => panic!("{other:?}"),
    }
    let out = with_flag("k8s://shop/web-0");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no pod shop/web-0 on this node")
            && err.contains(&format!(
                "nor known to the CRI runtime at {}",
                node.socket.display()
            )),
        "{err}"
    );
}

/// A CRI endpoint that cannot answer is a one-line error naming it, exit status 125: no
/// socket, a scheme other than unix, a socket that speaks no HTTP/2 (a silent one times out:
/// `resolve::grpc` unit tests).
#[test]
fn bad_cri_endpoints_are_clear_errors() {
    if !crashcart_tests::is_root() {
        crashcart_tests::skip("needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    // Reads the request, answers like an HTTP/1.1 server.
    let http1 = dir.path().join("http1.sock");
    let listener = std::os::unix::net::UnixListener::bind(&http1).unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0; 64];
            let _ = stream.read_exact(&mut request);
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            // Held open until crashcart hangs up.
            let _ = stream.read_to_end(&mut Vec::new());
        }
    });
    let cases = [
        (
            format!("unix://{}", missing.display()),
            format!(
                "cannot find pod shop/web-0 over the CRI socket {}: cannot connect: No such file or directory",
                missing.display()
            ),
        ),
        (
            "tcp://127.0.0.1:10010".to_string(),
            "CRI endpoint \"tcp://127.0.0.1:10010\" is not supported".to_string(),
        ),
        (
            http1.display().to_string(),
            format!(
                "cannot find pod shop/web-0 over the CRI socket {}: not a gRPC answer",
                http1.display()
            ),
        ),
    ];
    for (endpoint, message) in &cases {
        let out = crashcart_with(
            dir.path(),
            &[],
            &["--cri-endpoint", endpoint, "k8s://shop/web-0", "true"],
        );
        assert_eq!(out.status.code(), Some(125), "{endpoint}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("crashcart: "), "{err}");
        assert!(err.contains(message.as_str()), "{endpoint}: {err}");
    }
    // `--list` with a named endpoint that cannot answer fails the same way; without one, a
    // missing usual socket is no error.
    let out = crashcart_with(
        dir.path(),
        &[],
        &["--list", "--cri-endpoint", missing.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("cannot find pods over the CRI socket"),
        "{}",
        stderr(&out)
    );
    let out = crashcart_with(dir.path(), &[], &["--list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

/// Median of `runs` timings of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// `crashcart --list` as a user runs it (a new process each time), from the bundles and over
/// the CRI socket: hyperfine's mean and `/usr/bin/time`'s peak RSS, as a markdown table.
fn list_binary_figures(node: &Node, empty_run: &Path, pods: usize) -> String {
    if !crashcart_tests::have("hyperfine") || !Path::new("/usr/bin/time").exists() {
        crashcart_tests::skip("hyperfine or /usr/bin/time not installed (tests/setup.sh)");
        return String::new();
    }
    let crashcart = bin("crashcart");
    let endpoint = format!("unix://{}", node.socket.display());
    let bundles = [
        format!("CRASHCART_RUN={}", node.run_root.display()),
        crashcart.display().to_string(),
        "--list".into(),
    ];
    let socket = [
        format!("CRASHCART_RUN={}", empty_run.display()),
        crashcart.display().to_string(),
        "--list".into(),
        "--cri-endpoint".into(),
        endpoint,
    ];
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("list.json");
    run_ok(
        Command::new("hyperfine")
            .args(["-N", "--warmup", "3", "--runs", "30", "--export-json"])
            .arg(&json)
            .args(["-n", "bundles", &format!("env {}", bundles.join(" "))])
            .args(["-n", "socket", &format!("env {}", socket.join(" "))]),
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let mean = |i: usize| results["results"][i]["mean"].as_f64().unwrap() * 1e3;
    let peak_rss = |args: &[String]| {
        let out = run(Command::new("/usr/bin/time")
            .args(["-f", "%M", "env"])
            .args(args)
            .stdout(Stdio::null()));
        let text = stderr(&out);
        text.lines().last().unwrap_or("?").trim().to_string()
    };
    format!(
        "`crashcart --list` as a process ({pods} containers; hyperfine `-N`, 3 warmup + 30 runs, \
         mean; peak RSS from `/usr/bin/time -f %M`):\n\n\
         | route | time | peak RSS |\n| --- | --- | --- |\n\
         | OCI bundles under `/run` | {:.1} ms | {} KiB |\n\
         | CRI socket (`--cri-endpoint`, `/run` empty) | {:.1} ms | {} KiB |",
        mean(0),
        peak_rss(&bundles),
        mean(1),
        peak_rss(&socket),
    )
}

/// The figure for BENCHMARKS.md (bench/k8s.sh): resolving one pod's container among 50 pods,
/// from the bundles vs over the CRI socket. Writes the section to `$CRASHCART_BENCH_OUT`.
#[test]
#[ignore = "benchmark: run by bench/k8s.sh"]
fn bench_resolution_with_50_pods() {
    let Some((_guard, mut node)) = node() else {
        return;
    };
    const PODS: usize = 50;
    let started = Instant::now();
    let pods: Vec<Pod> = (0..PODS)
        .map(|i| node.run_pod(&PodSpec::simple("bench", &format!("pod-{i}"))))
        .collect();
    let setup = started.elapsed();
    let target = format!("k8s://bench/pod-{}/main", PODS / 2);
    let resolver = node.resolver();
    let want = resolver.resolve(&target).unwrap();
    assert_eq!(
        want.pid,
        node.cri
            .resolve("bench", &format!("pod-{}", PODS / 2), "main")
            .unwrap()
    );
    const RUNS: usize = 201;
    let library = median(RUNS, || {
        resolver.resolve(&target).unwrap();
    });
    let socket = node.socket.clone();
    // A client per lookup, as a fresh crashcart process would need (connect included).
    let cri_fresh = median(RUNS, || {
        let mut client = cri::Client::connect(&socket).unwrap();
        client
            .resolve("bench", &format!("pod-{}", PODS / 2), "main")
            .unwrap();
    });
    let cri_warm = median(RUNS, || {
        node.cri
            .resolve("bench", &format!("pod-{}", PODS / 2), "main")
            .unwrap();
    });
    // crashcart's own route over the socket (its blocking HTTP/2 client; a new connection per
    // lookup, as each crashcart run makes), with the bundles out of sight.
    let empty = tempfile::tempdir().unwrap();
    let over_socket = socket_only_resolver(
        &node,
        empty.path(),
        Some(format!("unix://{}", node.socket.display())),
    );
    assert_eq!(over_socket.resolve(&target).unwrap(), want);
    let blocking = median(RUNS, || {
        over_socket.resolve(&target).unwrap();
    });
    let listing = median(21, || {
        assert_eq!(list(&resolver).unwrap().len(), PODS);
    });
    let listing_over_socket = median(21, || {
        assert_eq!(list(&over_socket).unwrap().len(), PODS);
    });
    let binary = list_binary_figures(&node, empty.path(), PODS);
    drop(pods);
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let section = format!(
        "Resolving `{target}` on a node with {PODS} pods (containerd 1.6 CRI, {PODS} sandboxes \
         + {PODS} app containers; median of {RUNS}, in one process, page cache warm; \
         `tests/k8s.rs`, `bench/k8s.sh`):\n\n\
         | route | time |\n| --- | --- |\n\
         | OCI bundles under `/run` (`resolve::resolve`, no daemon) | {} |\n\
         | CRI socket fallback: `resolve::resolve` with the bundles out of sight (crashcart's blocking HTTP/2 client, new connection: Version, ListPodSandbox, ListContainers, verbose ContainerStatus, then the PID checks) | {} |\n\
         | CRI socket, tonic client, new connection (ListPodSandbox, ListContainers, verbose ContainerStatus: what `crictl inspect` does) | {} |\n\
         | CRI socket, tonic client, connection reused | {} |\n\
         | `resolve::list` of all {PODS} containers, from the bundles | {} |\n\
         | `resolve::list` of all {PODS} containers, over the CRI socket | {} |\n\n\
         The socket fallback takes {:.1}x the time of the bare tonic calls: it also asks \
         `Version` (which runtime answers) and then checks the PID as the bundle route does \
         (`/proc/PID/stat`, `/proc/PID/cgroup`, the freezer through `/proc/self/mountinfo`, \
         which on a node with {PODS} pods is long); it takes {:.1}x the bundle route's time. \
         `--list` over the socket makes one verbose `ContainerStatus` per container and takes \
         {:.1}x the time of the listing from the bundles.\n\n\
         {binary}\n\n\
         Creating the {PODS} pods over CRI took {:.1} s.",
        ms(library),
        ms(blocking),
        ms(cri_fresh),
        ms(cri_warm),
        ms(listing),
        ms(listing_over_socket),
        ratio(blocking, cri_fresh),
        ratio(blocking, library),
        ratio(listing_over_socket, listing),
        setup.as_secs_f64()
    );
    println!("{section}");
    if let Some(out) = std::env::var_os("CRASHCART_BENCH_OUT") {
        std::fs::write(Path::new(&out), section).unwrap();
    }
}

/// A `hostPath` volume of the debugging pod.
fn host_path(container_path: &str, host_path: &Path, readonly: bool) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        host_path: host_path.display().to_string(),
        readonly,
    }
}

/// The loader and shared libraries `binary` needs (from `ldd`), each mounted at its own path:
/// the debugging pod's image (busybox) has none of them. Empty for a static binary.
fn library_mounts(binary: &Path) -> Vec<cri::Mount> {
    let out = run(Command::new("ldd").arg(binary));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/')
                .then(|| host_path(path, Path::new(path), true))
        })
        .collect()
}

/// `cmd` run in the debugging container as `kubectl exec` runs it (CRI `ExecSync`, no terminal),
/// at most 60 s.
fn exec(node: &mut Node, container: &str, cmd: &[&str]) -> cri::ExecSyncResponse {
    node.cri
        .exec_sync(container, cmd, 60)
        .unwrap_or_else(|e| panic!("exec {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Loop devices backed by the file at `image` (by inode: the debugging pod attached it under
/// another path).
fn loop_devices_backed_by(image: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(image).unwrap();
    let (major, minor) = (libc_major(meta.dev()), libc_minor(meta.dev()));
    let out =
        run_ok(Command::new("losetup").args(["-l", "-n", "-O", "NAME,BACK-INO,BACK-MAJ:MIN"]));
    out.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 3 && f[1] == meta.ino().to_string() && f[2] == format!("{major}:{minor}")
        })
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

/// Sets the freezer of `pid`'s cgroup (v1 `freezer.state`, else v2 `cgroup.freeze`), as
/// `crictl`/`docker pause` do.
fn freeze(pid: u32, frozen: bool) {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = cgroups
        .lines()
        .find_map(|l| l.split_once(":freezer:").map(|(_, p)| p.to_string()));
    match v1 {
        Some(path) if Path::new("/sys/fs/cgroup/freezer").exists() => std::fs::write(
            format!("/sys/fs/cgroup/freezer{path}/freezer.state"),
            if frozen { "FROZEN" } else { "THAWED" },
        )
        .unwrap(),
        _ => {
            let path = cgroups.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            std::fs::write(
                format!("/sys/fs/cgroup{path}/cgroup.freeze"),
                if frozen { "1" } else { "0" },
            )
            .unwrap()
        }
    }
}

/// crashcart as a `kubectl crashcart` plugin (or `kubectl debug node/...`) would run it: from a
/// short-lived privileged pod on the node (hostPID, hostNetwork, privileged; the host's `/run`,
/// the CRI socket and the image as `hostPath` volumes; the binary and its libraries mounted
/// in), created over CRI like any pod and driven with `ExecSync` like `kubectl exec`.
///
/// From there it resolves the target pod from the bundles (`CRASHCART_RUN`) and over the CRI
/// socket (`--cri-endpoint`, `CONTAINER_RUNTIME_ENDPOINT`), the command runs in the target
/// container (its init, hostname and cgroups), the exit status passes through, a paused target
/// is refused rather than hung on, `--list` works, and nothing is left behind: no loop device,
/// no mount on the host, in the target or in the debugging pod, no node in the pod's `/dev`.
#[test]
fn from_a_privileged_pod() {
    let Some((_guard, mut node)) = node() else {
        return;
    };
    let pod = node.run_pod(&PodSpec::simple("shop", "web-0"));
    let target_pid = node.pid(&pod.containers["main"]);
    let image = ToolImage::new();
    let empty_run = tempfile::tempdir().unwrap();
    let crashcart = bin("crashcart");
    let mut mounts = vec![
        host_path("/host/run", &node.run_root, true),
        host_path("/host/empty-run", empty_run.path(), true),
        host_path("/host/cri.sock", &node.socket, false),
        host_path("/host/images", image.path.parent().unwrap(), true),
        host_path("/crashcart", &crashcart, true),
    ];
    mounts.extend(library_mounts(&crashcart));
    let debugger = node.run_pod(&PodSpec {
        host_pid: true,
        host_network: true,
        privileged: true,
        mounts: &mounts,
        envs: &[
            ("CRASHCART_RUN", "/host/run"),
            ("CRASHCART_IMAGE", "/host/images/tools.img"),
        ],
        ..PodSpec::simple("kube-system", "crashcart-debug")
    });
    let dbg = debugger.containers["main"].clone();
    let img = "/host/images/tools.img";

    // The pod's /dev is a copy of the host's made when it started: loop devices made since have
    // no node there. Take them all away, so crashcart must do without.
    let out = exec(
        &mut node,
        &dbg,
        &["/busybox", "sh", "-c", "rm -f /dev/loop[0-9]*; ls /dev"],
    );
    let dev = text(&out.stdout);
    assert!(dev.contains("loop-control"), "{dev}");
    assert!(!dev.contains("loop0"), "{dev}");

    // The bundle route: CRASHCART_RUN is the host's /run as mounted in the pod, and
    // CRASHCART_IMAGE the image (the pod's environment, as in the README's pod).
    let want_cmdline = format!("/busybox sleep {}", sleep_seconds("main"));
    let want_cgroups = std::fs::read_to_string(format!("/proc/{target_pid}/cgroup")).unwrap();
    let out = exec(
        &mut node,
        &dbg,
        &[
            "/crashcart",
            "k8s://shop/web-0/main",
            "--",
            "sh",
            "-c",
            "cat /proc/1/cmdline; echo; hostname; cat /proc/self/cgroup; exit 7",
        ],
    );
    let got = text(&out.stdout).replace('\0', " ");
    assert_eq!(out.exit_code, 7, "{got}\n{}", text(&out.stderr));
    let mut lines = got.lines();
    assert_eq!(lines.next().map(str::trim), Some(want_cmdline.as_str()));
    assert_eq!(lines.next(), Some("web-0"));
    // The command joined the target's cgroups, not the debugging pod's.
    let cgroups: Vec<&str> = lines.collect();
    assert_eq!(cgroups, want_cgroups.lines().collect::<Vec<_>>());

    // The CRI socket route, with the bundles out of sight (an empty directory as /run):
    // through --cri-endpoint, then CONTAINER_RUNTIME_ENDPOINT.
    let hidden = ["/busybox", "env", "CRASHCART_RUN=/host/empty-run"];
    let endpoint = "unix:///host/cri.sock";
    let by_flag = [
        &hidden[..],
        &["/crashcart", "-i", img, "--cri-endpoint", endpoint],
    ]
    .concat();
    let by_env = [
        &hidden[..],
        &[
            "CONTAINER_RUNTIME_ENDPOINT=unix:///host/cri.sock",
            "/crashcart",
            "-i",
            img,
        ],
    ]
    .concat();
    for prefix in [by_flag, by_env] {
        let cmd = [&prefix[..], &["k8s://shop/web-0", "cat", "/proc/1/cmdline"]].concat();
        let out = exec(&mut node, &dbg, &cmd);
        assert_eq!(out.exit_code, 0, "{cmd:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).replace('\0', " ").trim(), want_cmdline);
    }
    // Without the socket, the empty /run knows no pod: the route above was the socket's.
    let cmd = [
        &hidden[..],
        &["/crashcart", "-i", img, "k8s://shop/web-0", "true"],
    ]
    .concat();
    let out = exec(&mut node, &dbg, &cmd);
    assert_eq!(out.exit_code, 125);
    assert!(
        text(&out.stderr).contains("no pod shop/web-0 on this node"),
        "{}",
        text(&out.stderr)
    );

    // `--list` from the pod: the target, and the debugging pod itself.
    let out = exec(&mut node, &dbg, &["/crashcart", "--list"]);
    assert_eq!(out.exit_code, 0, "{}", text(&out.stderr));
    let list = text(&out.stdout);
    for name in [
        "k8s://shop/web-0/main",
        "k8s://kube-system/crashcart-debug/main",
    ] {
        assert!(list.contains(name), "{name} not in\n{list}");
    }

    // A paused target: refused (the freezer is read through the whole hierarchy, since the
    // pod's cgroup mounts show only its own cgroups), not hung on.
    freeze(target_pid, true);
    let out = node.cri.exec_sync(
        &dbg,
        &["/crashcart", "-i", img, "k8s://shop/web-0", "true"],
        20,
    );
    freeze(target_pid, false);
    let out = out.unwrap();
    assert_eq!(out.exit_code, 125, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("paused"),
        "{}",
        text(&out.stderr)
    );

    // Nothing left behind.
    assert!(
        wait_until(Duration::from_secs(5), || loop_devices_backed_by(
            &image.path
        )
        .is_empty()),
        "loop devices left: {:?}",
        loop_devices_backed_by(&image.path)
    );
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = std::fs::read_to_string(format!("/proc/{target_pid}/mountinfo")).unwrap();
    let out = exec(
        &mut node,
        &dbg,
        &["/busybox", "cat", "/proc/self/mountinfo"],
    );
    let pod_mounts = text(&out.stdout);
    for (what, mountinfo) in [("host", &host), ("target", &target), ("pod", &pod_mounts)] {
        assert!(
            !mountinfo.contains(" /dev/crashcart ") && !mountinfo.contains("/proc/self/fd/"),
            "{what}: {mountinfo}"
        );
    }
    let out = exec(&mut node, &dbg, &["/busybox", "ls", "/dev"]);
    assert!(
        !text(&out.stdout).contains("loop0"),
        "{}",
        text(&out.stdout)
    );

    // The same pod without hostPID sees none of the runtime's PIDs: the error says why.
    let no_host_pid = node.run_pod(&PodSpec {
        host_network: true,
        privileged: true,
        mounts: &mounts,
        envs: &[
            ("CRASHCART_RUN", "/host/run"),
            ("CRASHCART_IMAGE", "/host/images/tools.img"),
        ],
        ..PodSpec::simple("kube-system", "crashcart-no-hostpid")
    });
    let out = exec(
        &mut node,
        &no_host_pid.containers["main"],
        &["/crashcart", "k8s://shop/web-0", "true"],
    );
    let err = text(&out.stderr);
    assert_eq!(out.exit_code, 125, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("(from a pod: hostPID: true)"), "{err}");
}

/// What every pod gets on a cgroup v2 node, here with Docker: a container with a cgroup
/// namespace of its own (and the capabilities, devices and host PID namespace a debugging pod
/// has; `--privileged` itself needs every capability in the bounding set). From there the
/// target's cgroups read as `/../...`: crashcart joins them from the target's cgroup
/// namespace and sees the target's freezer the same way.
#[test]
fn from_a_container_with_its_own_cgroup_namespace() {
    if !crashcart_tests::docker_ready() {
        return;
    }
    let target = crashcart_tests::Container::start(&[], &[]);
    let pid = target.pid().to_string();
    let image = ToolImage::new();
    let crashcart = bin("crashcart");
    let mut volumes = vec![
        format!("{}:/crashcart:ro", crashcart.display()),
        format!("{}:/host/images:ro", image.path.parent().unwrap().display()),
    ];
    for lib in library_mounts(&crashcart) {
        volumes.push(format!("{0}:{0}:ro", lib.host_path));
    }
    let mut args = vec![
        "--cgroupns=private",
        "--pid=host",
        "--cap-add=ALL",
        "--cap-drop=SYS_RESOURCE",
        "--security-opt=seccomp=unconfined",
        "--security-opt=apparmor=unconfined",
        "--device=/dev/loop-control",
        "--device-cgroup-rule=b 7:* rwm",
    ];
    for volume in &volumes {
        args.extend(["-v", volume]);
    }
    let debugger = crashcart_tests::Container::start(&args, &[]);
    let docker_exec = |cmd: &[&str]| {
        run(Command::new("docker")
            .arg("exec")
            .arg(&debugger.id)
            .args(cmd))
    };
    // The precondition: from the debugger, the target's cgroups are outside its namespace.
    let seen = docker_exec(&["/busybox", "cat", &format!("/proc/{pid}/cgroup")]);
    assert!(stdout(&seen).contains(":/.."), "{}", stdout(&seen));

    let crashcart_in = |command: &[&str]| {
        // A session on a frozen target would hang (SIGTERM is passed on to a command that
        // cannot run): busybox's timeout kills it.
        let mut cmd = vec![
            "/busybox",
            "timeout",
            "-s",
            "KILL",
            "20",
            "/crashcart",
            "-i",
            "/host/images/tools.img",
            &pid,
        ];
        cmd.extend(command);
        docker_exec(&cmd)
    };
    let out = crashcart_in(&["sh", "-c", "cat /proc/self/cgroup; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let want = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(stdout(&out), want);

    run_ok(Command::new("docker").args(["pause", &target.id]));
    let out = crashcart_in(&["true"]);
    run_ok(Command::new("docker").args(["unpause", &target.id]));
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("is frozen"), "{}", stderr(&out));

    assert!(
        wait_until(Duration::from_secs(5), || loop_devices_backed_by(
            &image.path
        )
        .is_empty()),
        "loop devices left: {:?}",
        loop_devices_backed_by(&image.path)
    );
    let mounts = docker_exec(&["/busybox", "cat", "/proc/self/mountinfo"]);
    assert!(
        !stdout(&mounts).contains(" /dev/crashcart "),
        "{}",
        stdout(&mounts)
    );
}
