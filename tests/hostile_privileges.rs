//! Hostile containers against a session's privileges: each test runs a FROM-scratch container
//! whose payload (a static C program from `tests/fixtures/hostile/`, compiled at test time)
//! tries one escape of the threat model and writes what it reached into a volume the test
//! reads. The escape target is a host directory SECRET that is never mounted into the
//! container: a file `SECRET/pwned` is the proof of an escape.
//!
//! The profiles are those of the issue 8 plan: `debug` (default: no CAP_SYS_ADMIN or
//! CAP_DAC_READ_SEARCH, `NoNewPrivs: 1`, a seccomp deny list with `open_by_handle_at`),
//! `target` (the target's own credentials), `sysadmin` (host root power, with a warning). The
//! `sysadmin` control shows that the payloads do escape when the session has the power to.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crashcart_tests::{
    bin, busybox_tree, docker_build, docker_ready, have, mke2fs_image, run, run_ok, skip,
    wait_until, workspace_root, Container,
};

/// Tag of the hostile image built from `tests/fixtures/hostile/Dockerfile`.
const HOSTILE_IMAGE: &str = "crashcart-test-hostile-privileges:latest";

/// The payloads copied into the hostile image (static, from `tests/fixtures/hostile/*.c`).
const PAYLOADS: &[&str] = &["shocker", "ptracer", "exegrab", "fdscan"];

/// CAP_DAC_READ_SEARCH and CAP_SYS_ADMIN: either one reaches the host from the initial user
/// namespace (open_by_handle_at, mount, ...).
const ESCAPE_CAPS: &[(u32, &str)] = &[(2, "CAP_DAC_READ_SEARCH"), (21, "CAP_SYS_ADMIN")];

fn fixtures() -> PathBuf {
    workspace_root().join("tests/fixtures/hostile")
}

/// Compiles `tests/fixtures/hostile/NAME.c` statically to `out`.
fn compile(name: &str, out: &Path) {
    let src = fixtures().join(format!("{name}.c"));
    run_ok(
        Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(out)
            .arg(&src),
    );
}

/// Whether gcc can build static programs here (glibc's static libc is needed).
fn compiler_ready() -> bool {
    if !have("gcc") {
        skip("gcc not installed");
        return false;
    }
    true
}

/// Builds the hostile image once per test process.
fn hostile_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let ctx = tempfile::tempdir().expect("tempdir");
        std::fs::copy(fixtures().join("Dockerfile"), ctx.path().join("Dockerfile"))
            .expect("copy Dockerfile");
        std::fs::copy("/bin/busybox", ctx.path().join("busybox")).expect("copy busybox");
        for payload in PAYLOADS {
            compile(payload, &ctx.path().join(payload));
        }
        docker_build(ctx.path(), HOSTILE_IMAGE);
    });
    HOSTILE_IMAGE
}

/// Starts the hostile image (PID 1 `busybox sleep`, or `cmd`) with `docker_args`.
fn start_hostile(docker_args: &[&str], cmd: &[&str]) -> Container {
    Container::start_image(hostile_image(), docker_args, cmd)
}

/// The host side of one attack: VOL (mounted into the container at /vol) and SECRET (never
/// mounted) on the same filesystem, with SECRET's file handle in `VOL/handle`. Both are
/// world-writable so that an opened SECRET is always writable: `SECRET/pwned` then shows the
/// escape whatever uid the payload runs as.
struct Scene {
    dir: tempfile::TempDir,
    vol: PathBuf,
    secret: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        // Traversable by the unmapped root of a user namespace (see shocker_in_a_user_namespace).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let vol = dir.path().join("vol");
        let secret = dir.path().join("secret");
        for d in [&vol, &secret] {
            std::fs::create_dir(d).unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let mkhandle = dir.path().join("mkhandle");
        compile("mkhandle", &mkhandle);
        let handle = run_ok(Command::new(&mkhandle).arg(&secret));
        std::fs::write(vol.join("handle"), format!("{handle}\n")).unwrap();
        Scene { dir, vol, secret }
    }

    /// `-v VOL:/vol`, for `docker run`.
    fn volume(&self) -> String {
        format!("{}:/vol", self.vol.display())
    }

    fn pwned(&self) -> bool {
        self.secret.join("pwned").exists()
    }

    /// `VOL/name`, or "" when the payload did not write it.
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.vol.join(name)).unwrap_or_default()
    }

    /// Waits until `VOL/name` has a line `done` (the payload finished).
    fn wait_done(&self, name: &str, timeout: Duration) -> String {
        wait_until(timeout, || self.read(name).lines().any(|l| l == "done"));
        self.read(name)
    }
}

/// A busybox tool image (made with `mke2fs -d`), in its own temp dir.
struct ToolImage {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ToolImage {
    fn busybox() -> ToolImage {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        busybox_tree(&tree);
        let path = dir.path().join("busybox.img");
        mke2fs_image(&tree, &path, 16);
        ToolImage { _dir: dir, path }
    }
}

/// `crashcart -i IMAGE [--profile PROFILE] ARGS...` with the binary at `crashcart`.
fn crashcart_at(crashcart: &Path, image: &Path, profile: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(crashcart);
    cmd.arg("-i").arg(image);
    if let Some(profile) = profile {
        cmd.args(["--profile", profile]);
    }
    cmd.args(args).env_remove("CRASHCART_IMAGE");
    cmd
}

fn crashcart(image: &Path, profile: Option<&str>, args: &[&str]) -> Command {
    crashcart_at(&bin("crashcart"), image, profile, args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// What the shocker payload reported, with the verdict: `Err` describes an escape or a run
/// that proves nothing.
fn judge_shocker(scene: &Scene, result: &str, out: &Output) -> Result<(), String> {
    let log = scene.read(result);
    if scene.pwned() {
        return Err(format!("SECRET/pwned was created\n{log}"));
    }
    if log.lines().any(|l| l == "open_by_handle_at: ok") {
        return Err(format!("open_by_handle_at opened SECRET\n{log}"));
    }
    if !out.status.success() || !log.lines().any(|l| l.starts_with("ran ")) {
        return Err(format!("the payload did not run: {}\n{log}", describe(out)));
    }
    if !log
        .lines()
        .any(|l| l.starts_with("open_by_handle_at: errno"))
    {
        return Err(format!("the payload did not try open_by_handle_at\n{log}"));
    }
    Ok(())
}

/// The Docker variants of threat vector 1 (shocker) and what they add or take away.
const SHOCKER_VARIANTS: &[(&str, &[&str])] = &[
    ("docker defaults", &[]),
    ("--cap-add SYS_PTRACE", &["--cap-add", "SYS_PTRACE"]),
    (
        "--cap-drop ALL --user 1000",
        &["--cap-drop", "ALL", "--user", "1000"],
    ),
    ("--read-only", &["--read-only"]),
];

/// Shocker (open_by_handle_at) run as the session's command, under every Docker variant and
/// both the default and the `target` profile: SECRET stays out of reach.
#[test]
fn shocker_cannot_open_a_host_directory_from_a_session() {
    if !docker_ready() || !compiler_ready() {
        return;
    }
    let image = ToolImage::busybox();
    let mut failures = Vec::new();
    for (variant, docker_args) in SHOCKER_VARIANTS {
        for profile in [None, Some("target")] {
            let scene = Scene::new();
            let volume = scene.volume();
            let c = start_hostile(&[&["-v", &volume], *docker_args].concat(), &[]);
            let out = run(&mut crashcart(
                &image.path,
                profile,
                &[&c.id, "/shocker", "/vol", "result"],
            ));
            if let Err(why) = judge_shocker(&scene, "result", &out) {
                failures.push(format!(
                    "[{variant}, profile {}] {why}",
                    profile.unwrap_or("debug (default)")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Whether an unprivileged user may create a user namespace here (setpriv + unshare).
fn user_namespaces_ready() -> bool {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if !have("setpriv") || max.trim() == "0" || max.is_empty() {
        skip("setpriv missing or user namespaces disabled");
        return false;
    }
    true
}

/// A target in its own user, mount and PID namespaces whose root is `rootfs` (pivot_root) with
/// VOL bind-mounted at /vol; uid 0 inside is host uid 100000. Returns the unshare process and
/// the target's host PID (busybox sleep, PID 1 of its namespace).
fn user_namespaced_target(scene: &Scene) -> (Child, u32) {
    let rootfs = scene.dir.path().join("rootfs");
    for d in ["dev", "proc", "vol", "old", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("busybox")).unwrap();
    compile("shocker", &rootfs.join("shocker"));
    let script = format!(
        "mount --bind {root} {root} && mount --bind {vol} {root}/vol && \
         mount -t tmpfs tmpfs {root}/dev && mount -t proc proc {root}/proc && \
         cd {root} && pivot_root . old && \
         exec /busybox sh -c 'umount -l /old; exec /busybox sleep 600'",
        root = rootfs.display(),
        vol = scene.vol.display()
    );
    // An unprivileged user maps itself to root of the new namespace without newuidmap.
    crashcart_tests::spawn_wrapped_target(
        Command::new("setpriv")
            .args(["--reuid", "100000", "--regid", "100000", "--clear-groups"])
            .args(["unshare", "-U", "-m", "-p", "-f", "--map-root-user"])
            .args(["/bin/busybox", "sh", "-c", &script]),
        "user-namespaced target",
    )
}

/// Shocker against a target in its own user namespace (no Docker): the session must not be
/// more powerful than the namespace's root.
#[test]
fn shocker_in_a_user_namespaced_target() {
    if !docker_ready() || !compiler_ready() || !user_namespaces_ready() {
        return;
    }
    let image = ToolImage::busybox();
    let mut failures = Vec::new();
    for profile in [None, Some("target")] {
        let scene = Scene::new();
        let (mut unshared, pid) = user_namespaced_target(&scene);
        let out = run(&mut crashcart(
            &image.path,
            profile,
            &[&pid.to_string(), "/shocker", "/vol", "result"],
        ));
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let _ = unshared.kill();
        let _ = unshared.wait();
        if let Err(why) = judge_shocker(&scene, "result", &out) {
            failures.push(format!(
                "[user namespace, profile {}] {why}",
                profile.unwrap_or("debug (default)")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The control: with `--profile sysadmin` (host root power, documented as such) the same
/// payload does escape. Without this, a shocker test that always passes would prove nothing.
#[test]
fn control_shocker_escapes_under_the_sysadmin_profile() {
    if !docker_ready() || !compiler_ready() {
        return;
    }
    let image = ToolImage::busybox();
    let scene = Scene::new();
    let volume = scene.volume();
    let c = start_hostile(&["-v", &volume], &[]);
    let out = run(&mut crashcart(
        &image.path,
        Some("sysadmin"),
        &[&c.id, "/shocker", "/vol", "result"],
    ));
    let log = scene.read("result");
    assert!(out.status.success(), "{}\n{log}", describe(&out));
    assert!(
        log.lines().any(|l| l == "open_by_handle_at: ok") && scene.pwned(),
        "the control did not escape: the test setup cannot show an escape\n{log}"
    );
}

/// The value of `Field:` in lines `<prefix> Field:\tvalue` of a payload's log.
fn status_field<'a>(log: &'a str, prefix: &str, field: &str) -> Option<&'a str> {
    let key = format!("{prefix} {field}:");
    log.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .map(str::trim)
}

/// Vector 6: a `--user 1000` session that executes a setuid-root binary of the container stays
/// uid 1000 with no capabilities (`NoNewPrivs: 1`).
#[test]
fn setuid_root_binary_gives_a_non_root_session_nothing() {
    if !docker_ready() || !compiler_ready() {
        return;
    }
    let image = ToolImage::busybox();
    let scene = Scene::new();
    let volume = scene.volume();
    let c = start_hostile(&["-v", &volume], &[]);
    let out = run(&mut crashcart(
        &image.path,
        None,
        &["--user", "1000", &c.id, "/shocker-suid", "/vol", "result"],
    ));
    let log = scene.read("result");
    judge_shocker(&scene, "result", &out).unwrap_or_else(|why| panic!("{why}"));
    assert!(
        log.lines().any(|l| l == "ran uid=1000 euid=1000"),
        "the setuid bit took effect:\n{log}"
    );
    assert_eq!(
        status_field(&log, "self", "CapEff"),
        Some("0000000000000000"),
        "{log}"
    );
    assert_eq!(status_field(&log, "self", "NoNewPrivs"), Some("1"), "{log}");
}

/// Parses a 64-bit capability mask as /proc/PID/status prints it.
fn caps(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("not a capability mask: {hex:?}"))
}

/// Vector 8: with CAP_SYS_PTRACE the container attaches to the session's shell and injects
/// open_by_handle_at into it. The session must have nothing to lend: no escape, and every
/// session process it sees has neither CAP_SYS_ADMIN nor CAP_DAC_READ_SEARCH, has
/// `NoNewPrivs: 1` and `Seccomp: 2`.
#[test]
fn ptrace_from_the_container_cannot_borrow_the_sessions_privileges() {
    if !docker_ready() || !compiler_ready() {
        return;
    }
    if !cfg!(target_arch = "x86_64") {
        skip("the syscall injection of ptracer.c is x86_64 only");
        return;
    }
    let image = ToolImage::busybox();
    let scene = Scene::new();
    let volume = scene.volume();
    let c = start_hostile(&["--cap-add", "SYS_PTRACE", "-v", &volume], &[]);
    let token = format!("cc-token-{}", std::process::id());
    run_ok(Command::new("docker").args(["exec", "-d", &c.id, "/ptracer", "/vol", &token, "30"]));
    assert!(
        wait_until(Duration::from_secs(10), || scene
            .read("ptrace.log")
            .contains("waiting")),
        "ptracer did not start: {}",
        scene.read("ptrace.log")
    );
    let script = format!("sleep 25; echo {token}");
    let mut session = crashcart(&image.path, None, &[&c.id, "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crashcart");
    let log = scene.wait_done("ptrace.log", Duration::from_secs(40));
    let _ = session.kill();
    let _ = session.wait();

    assert!(
        log.contains("found pid"),
        "ptracer never saw the session:\n{log}"
    );
    assert!(
        !scene.pwned(),
        "SECRET/pwned created through the session:\n{log}"
    );
    for line in log.lines() {
        if let Some(fd) = line.strip_prefix("inject open_by_handle_at = ") {
            assert!(
                fd.parse::<i64>().is_ok_and(|fd| fd < 0),
                "the session opened SECRET for the container:\n{log}"
            );
        }
    }
    // Every session process the container can see.
    let pids: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("pid ")?.split_once(" Name:").map(|p| p.0))
        .collect();
    assert!(!pids.is_empty(), "no session process seen:\n{log}");
    for pid in pids {
        let prefix = format!("pid {pid}");
        for field in ["CapEff", "CapPrm", "CapBnd"] {
            let mask = caps(status_field(&log, &prefix, field).unwrap_or("?"));
            for (bit, name) in ESCAPE_CAPS {
                assert_eq!(
                    mask & (1 << bit),
                    0,
                    "{prefix} has {name} in {field}:\n{log}"
                );
            }
        }
        assert_eq!(
            status_field(&log, &prefix, "NoNewPrivs"),
            Some("1"),
            "{log}"
        );
        assert_eq!(status_field(&log, &prefix, "Seccomp"), Some("2"), "{log}");
    }
}

/// Runs `payload ARGS...` in the container with `docker exec -d` and waits for `VOL/ready`.
fn start_scanner(c: &Container, scene: &Scene, payload: &[&str]) {
    run_ok(
        Command::new("docker")
            .args(["exec", "-d", &c.id])
            .args(payload),
    );
    assert!(
        wait_until(Duration::from_secs(10), || scene.vol.join("ready").exists()),
        "{} did not start",
        payload[0]
    );
}

/// Tells a scanner to finish and returns its log once it did.
fn stop_scanner(scene: &Scene, log: &str) -> String {
    std::fs::write(scene.vol.join("stop"), "").unwrap();
    let text = scene.wait_done(log, Duration::from_secs(30));
    assert!(
        text.lines().any(|l| l == "done"),
        "{log} did not finish:\n{text}"
    );
    text
}

/// Vector 9 (CVE-2019-5736): the container grabs /proc/PID/exe of every process entering its
/// PID namespace and writes to it after the session. A copy of crashcart must come out
/// byte-identical and never be among what was grabbed.
#[test]
fn the_container_cannot_overwrite_crashcart_through_proc_pid_exe() {
    if !docker_ready() || !compiler_ready() {
        return;
    }
    let image = ToolImage::busybox();
    let scene = Scene::new();
    // A copy of crashcart with a name the log would show.
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("crashcart-vector9-copy");
    std::fs::copy(bin("crashcart"), &copy).unwrap();
    let original = std::fs::read(&copy).unwrap();
    let volume = scene.volume();
    let c = start_hostile(&["--cap-add", "SYS_PTRACE", "-v", &volume], &[]);
    start_scanner(&c, &scene, &["/exegrab", "/vol", "60"]);
    for _ in 0..20 {
        let out = run(&mut crashcart_at(
            &copy,
            &image.path,
            None,
            &[&c.id, "sleep", "0.1"],
        ));
        assert!(out.status.success(), "{}", describe(&out));
    }
    let log = stop_scanner(&scene, "exegrab.log");

    assert!(
        std::fs::read(&copy).unwrap() == original,
        "the crashcart binary was modified:\n{log}"
    );
    assert!(
        !log.contains("crashcart-vector9-copy"),
        "the container got hold of the crashcart binary:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.starts_with("grab ")),
        "the scanner saw no session process, the test shows nothing:\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("write ") && l.ends_with(": ok")),
        "the container overwrote a file it grabbed:\n{log}"
    );
}

/// Vector 9 with crashcart installed immutable (`chattr +i`): crashcart then runs from the file
/// itself (no sealed copy: nothing can write it anyway), so the container can grab it, but
/// every write through what it grabbed fails and the binary stays as it was.
#[test]
fn an_immutable_crashcart_binary_is_run_in_place_and_cannot_be_written() {
    if !docker_ready() || !compiler_ready() {
        return;
    }
    if !crashcart_tests::have("chattr") {
        skip("chattr (e2fsprogs) not installed");
        return;
    }
    let image = ToolImage::busybox();
    let scene = Scene::new();
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("crashcart-immutable-copy");
    std::fs::copy(bin("crashcart"), &copy).unwrap();
    let original = std::fs::read(&copy).unwrap();
    let chattr = |flag: &str| run(Command::new("chattr").arg(flag).arg(&copy));
    if !chattr("+i").status.success() {
        skip("the temp directory's filesystem has no immutable attribute");
        return;
    }
    let volume = scene.volume();
    let c = start_hostile(&["--cap-add", "SYS_PTRACE", "-v", &volume], &[]);
    start_scanner(&c, &scene, &["/exegrab", "/vol", "60"]);
    let mut outputs = Vec::new();
    for _ in 0..20 {
        outputs.push(run(&mut crashcart_at(
            &copy,
            &image.path,
            None,
            &[&c.id, "sleep", "0.1"],
        )));
    }
    let log = stop_scanner(&scene, "exegrab.log");
    chattr("-i");
    for out in &outputs {
        assert!(out.status.success(), "{}", describe(out));
    }
    assert!(
        log.contains("crashcart-immutable-copy"),
        "crashcart did not run from the immutable file itself (sealed copy instead?):\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("write ") && l.ends_with(": ok")),
        "the container wrote through a grabbed immutable binary:\n{log}"
    );
    assert!(
        std::fs::read(&copy).unwrap() == original,
        "the crashcart binary was modified:\n{log}"
    );
}

/// Vector 10 (Leaky Vessels): the container inspects fd/*, cwd and root of every session
/// process over 30 sessions whose caller has a host working directory and a host file on
/// stdin, and walks `..` out of every directory it finds: no host file, no escape.
#[test]
fn no_host_fd_or_directory_reaches_a_process_the_container_sees() {
    if !docker_ready() || !compiler_ready() {
        return;
    }
    let image = ToolImage::busybox();
    let scene = Scene::new();
    // The caller's working directory and stdin are host files: Leaky Vessels leaked the cwd.
    let caller_dir = scene.dir.path().join("caller");
    std::fs::create_dir(&caller_dir).unwrap();
    std::fs::write(caller_dir.join("stdin"), "host file\n").unwrap();
    let volume = scene.volume();
    let c = start_hostile(&["--cap-add", "SYS_PTRACE", "-v", &volume], &[]);
    let secret = scene.secret.display().to_string();
    start_scanner(&c, &scene, &["/fdscan", "/vol", &secret, "120"]);
    for i in 0..30 {
        let command: &[&str] = if i % 2 == 0 {
            &["true"]
        } else {
            &["sleep", "0.2"]
        };
        let stdin = std::fs::File::open(caller_dir.join("stdin")).unwrap();
        let out = run(
            crashcart(&image.path, None, &[&[c.id.as_str()], command].concat())
                .current_dir(&caller_dir)
                .stdin(stdin),
        );
        assert!(out.status.success(), "{}", describe(&out));
    }
    let log = stop_scanner(&scene, "fdscan.log");

    assert!(!scene.pwned(), "escaped through a leaked fd:\n{log}");
    let outside: Vec<&str> = log.lines().filter(|l| l.ends_with(" OUTSIDE")).collect();
    assert!(
        outside.is_empty(),
        "host files in processes the container sees:\n{}\n\nfull log:\n{log}",
        outside.join("\n")
    );
    assert!(
        log.lines().any(|l| l.starts_with("fd ")),
        "the scanner saw no session process, the test shows nothing:\n{log}"
    );
}

/// The `Field:` values of a /proc/PID/status text.
fn status_map(status: &str) -> BTreeMap<String, String> {
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

/// `--profile target`: the command's capability sets, uid/gid, NoNewPrivs and seccomp state
/// are the target's, for Docker's defaults and for a locked-down container.
#[test]
fn target_profile_has_exactly_the_targets_credentials() {
    if !docker_ready() || !compiler_ready() {
        return;
    }
    let image = ToolImage::busybox();
    let variants: &[(&str, &[&str])] = &[
        ("docker defaults", &[]),
        (
            "--cap-drop ALL --user 1000 --security-opt no-new-privileges",
            &[
                "--cap-drop",
                "ALL",
                "--user",
                "1000",
                "--security-opt",
                "no-new-privileges",
            ],
        ),
    ];
    for (variant, docker_args) in variants {
        let c = start_hostile(docker_args, &[]);
        // PID 1 was started by execve, as the session's command is: the sets compare directly.
        let theirs =
            status_map(&std::fs::read_to_string(format!("/proc/{}/status", c.pid())).unwrap());
        let out = run(&mut crashcart(
            &image.path,
            Some("target"),
            &[&c.id, "/busybox", "cat", "/proc/self/status"],
        ));
        assert!(out.status.success(), "[{variant}] {}", describe(&out));
        let ours = status_map(&text(&out.stdout));
        let mut fields = vec![
            "Uid",
            "Gid",
            "Groups",
            "CapInh",
            "CapPrm",
            "CapEff",
            "CapBnd",
            "CapAmb",
            "NoNewPrivs",
            "Seccomp",
        ];
        if theirs.contains_key("Seccomp_filters") {
            fields.push("Seccomp_filters");
        }
        for field in fields {
            assert_eq!(
                ours.get(field),
                theirs.get(field),
                "[{variant}] {field} of the command differs from the target's PID 1"
            );
        }
    }
}

/// `--profile sysadmin` says once, on stderr, what it gives away.
#[test]
fn sysadmin_profile_warns_once() {
    if !docker_ready() || !compiler_ready() {
        return;
    }
    let image = ToolImage::busybox();
    let c = start_hostile(&[], &[]);
    let out = run(&mut crashcart(
        &image.path,
        Some("sysadmin"),
        &[&c.id, "true"],
    ));
    assert!(out.status.success(), "{}", describe(&out));
    let err = text(&out.stderr);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("crashcart: warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning expected:\n{err}");
    assert!(warnings[0].contains("sysadmin"), "{err}");
    assert_eq!(err.lines().count(), 1, "nothing else on stderr:\n{err}");
}

/// Host programs for the debugging test; `lsof` comes from tests/setup.sh.
const DEBUG_TOOLS: &[&str] = &[
    "bash", "strace", "gdb", "tcpdump", "ss", "lsof", "ps", "cat", "kill", "timeout",
];

/// An image of the host's debugging tools built by `crashcart-imgbuild --host`.
fn debug_tools_image(dir: &Path) -> Option<PathBuf> {
    if !have("patchelf") {
        skip("patchelf not installed");
        return None;
    }
    let path = dir.join("tools.img");
    let mut cmd = Command::new(bin("crashcart-imgbuild"));
    for tool in DEBUG_TOOLS {
        if !have(tool) {
            skip(&format!(
                "{tool} not installed on this host (tests/setup.sh)"
            ));
            return None;
        }
        cmd.args(["--host", tool]);
    }
    run_ok(cmd.arg("-o").arg(&path));
    Some(path)
}

/// Runs a tool through crashcart (default profile); returns stdout and stderr, asserting
/// success.
fn debug_session(image: &Path, target: &str, command: &[&str]) -> (String, String) {
    let out = run(&mut crashcart(image, None, &[&[target], command].concat()));
    assert!(out.status.success(), "{command:?}: {}", describe(&out));
    (text(&out.stdout), text(&out.stderr))
}

/// Field 3 (state) of /proc/PID/stat on the host.
fn process_state(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .unwrap_or("?")
        .to_string()
}

/// The host PID of the container process whose cmdline contains `needle`.
fn host_pid_of(c: &Container, needle: &str) -> Option<u32> {
    let ns = std::fs::read_link(format!("/proc/{}/ns/pid", c.pid())).ok()?;
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()? == ns
            && text(&cmdline).replace('\0', " ").contains(needle))
        .then_some(pid)
    })
}

/// The default `debug` profile keeps the tools a debugging session exists for: strace, gdb,
/// tcpdump, ss, lsof, ps, reading a file of another uid, stopping and resuming a process.
#[test]
fn debugging_still_works_under_the_default_profile() {
    if !docker_ready() || !compiler_ready() {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let Some(image) = debug_tools_image(scratch.path()) else {
        return;
    };
    let passwd = scratch.path().join("passwd");
    std::fs::write(&passwd, "root:x:0:0:root:/root:/sbin/nologin\n").unwrap();
    let passwd_mount = format!("{}:/etc/passwd:ro", passwd.display());
    // PID 1 forks a sleep every second: strace -f has something to show.
    let c = start_hostile(
        &["-v", &passwd_mount],
        &["sh", "-c", "while :; do /busybox sleep 1; done"],
    );
    let id = c.id.as_str();
    run_ok(
        Command::new("docker").args(["exec", "-d", id, "/busybox", "httpd", "-f", "-p", "8080"]),
    );
    run_ok(Command::new("docker").args([
        "exec",
        id,
        "/busybox",
        "sh",
        "-c",
        "echo only-for-1234 > /tmp/private && chown 1234:1234 /tmp/private && \
         chmod 0600 /tmp/private",
    ]));
    assert!(wait_until(Duration::from_secs(5), || host_pid_of(
        &c, "httpd"
    )
    .is_some()));

    // timeout ends strace (exit 124); what it printed until then is the evidence.
    let out = run(&mut crashcart(
        &image,
        None,
        &[id, "timeout", "-s", "INT", "3", "strace", "-f", "-p", "1"],
    ));
    let err = text(&out.stderr);
    assert!(
        err.contains("wait4") || err.contains("execve") || err.contains("clone"),
        "strace -f -p 1 saw no syscall:\n{err}"
    );

    let (out, err) = debug_session(&image, id, &["gdb", "-batch", "-p", "1", "-ex", "bt"]);
    assert!(
        out.lines().any(|l| l.starts_with("#0 ")),
        "gdb printed no backtrace:\n{out}\n{err}"
    );

    let (out, _) = debug_session(&image, id, &["ss", "-ltnp"]);
    assert!(
        out.lines()
            .any(|l| l.contains(":8080") && l.contains("users:((\"busybox\",pid=")),
        "ss -ltnp does not show httpd:\n{out}"
    );

    let (out, _) = debug_session(&image, id, &["lsof", "-p", "1"]);
    assert!(
        out.lines().any(|l| l.contains(" cwd ")) && out.lines().any(|l| l.contains(" txt ")),
        "lsof -p 1 listed nothing:\n{out}"
    );

    let (out, _) = debug_session(&image, id, &["ps", "-e", "-o", "pid,args"]);
    assert!(out.contains("httpd"), "ps -e:\n{out}");

    let (out, _) = debug_session(&image, id, &["cat", "/tmp/private"]);
    assert_eq!(out.trim(), "only-for-1234");

    // PID 1 of a PID namespace ignores SIGSTOP sent from inside it, whatever the sender's
    // privileges: stop and continue httpd instead.
    let httpd = host_pid_of(&c, "httpd").unwrap();
    let (ps, _) = debug_session(&image, id, &["ps", "-e", "-o", "pid=,args="]);
    let inner = ps
        .lines()
        .find(|l| l.contains("httpd"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("httpd not in ps:\n{ps}"))
        .to_string();
    debug_session(&image, id, &["kill", "-STOP", &inner]);
    assert!(
        wait_until(Duration::from_secs(5), || process_state(httpd) == "T"),
        "kill -STOP did not stop httpd: {}",
        process_state(httpd)
    );
    debug_session(&image, id, &["kill", "-CONT", &inner]);
    assert!(
        wait_until(Duration::from_secs(5), || process_state(httpd) == "S"),
        "kill -CONT did not resume httpd: {}",
        process_state(httpd)
    );

    // tcpdump captures a UDP packet the host sends to the container.
    let address = run_ok(Command::new("docker").args([
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        id,
    ]));
    let mut tcpdump = crashcart(
        &image,
        None,
        &[
            id, "tcpdump", "-Z", "root", "-n", "-c", "1", "-i", "eth0", "udp", "port", "9999",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn tcpdump");
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let started = Instant::now();
    while tcpdump.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(30) {
        let _ = socket.send_to(b"crashcart", format!("{address}:9999"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = tcpdump.kill();
    let mut out = String::new();
    tcpdump
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = tcpdump.wait().unwrap();
    assert!(
        status.success() && out.contains(&format!("> {address}.9999: UDP")),
        "tcpdump captured nothing ({status}):\n{out}"
    );
}
