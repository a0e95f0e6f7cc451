//! Hostile cgroup names: a container that can make cgroups (its own cgroup namespace and
//! `CAP_SYS_ADMIN` to mount its hierarchies writable, as a privileged or delegated container
//! can) names them as it likes, and the kernel prints those names, unescaped, in the
//! `/proc/PID/cgroup` crashcart reads to join the target's cgroups. Each test moves the
//! container's init (the session's target) into cgroups named to confuse that parsing, then
//! checks which cgroups the session command really joined, from the kernel's view.
//!
//! The container is the tests' `FROM scratch` busybox image; `docker run --privileged` fails
//! on machines whose bounding set lacks `CAP_SYS_RESOURCE`, so the capability is given alone.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crashcart_tests::{
    assert_crashcart_error, bin, busybox_tree, docker_ready, loop_devices_for, mke2fs_image, run,
    wait_until, Container,
};

/// What every container here runs with: its own cgroup namespace, the power to mount its
/// cgroup hierarchies (only its own subtree shows, writable).
const CGROUP_WRITER: &[&str] = &[
    "--cgroupns=private",
    "--cap-add=SYS_ADMIN",
    "--security-opt=seccomp=unconfined",
    "--security-opt=apparmor=unconfined",
];

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A busybox tool image.
struct ToolImage {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl ToolImage {
    fn new() -> ToolImage {
        let dir = tempfile::tempdir().unwrap();
        busybox_tree(&dir.path().join("tree"));
        let path = dir.path().join("tools.img");
        mke2fs_image(&dir.path().join("tree"), &path, 16);
        ToolImage { _dir: dir, path }
    }

    /// `crashcart -i IMAGE TARGET COMMAND...`, killed (and the test failed) after 30 s.
    fn crashcart(&self, target: &str, command: &[&str]) -> Output {
        let out = run(Command::new("timeout")
            .args(["-s", "KILL", "30"])
            .arg(bin("crashcart"))
            .arg("-i")
            .arg(&self.path)
            .arg(target)
            .args(command)
            .env_remove("CRASHCART_IMAGE")
            .stdin(Stdio::null()));
        assert_ne!(out.status.code(), None, "crashcart hung: {}", stderr(&out));
        out
    }

    /// Nothing of a session is left: no loop device on the image, no `/dev/crashcart` mount
    /// in the container.
    fn assert_nothing_left(&self, container: &Container) {
        assert!(
            wait_until(Duration::from_secs(5), || loop_devices_for(&self.path)
                .is_empty()),
            "loop devices left: {:?}",
            loop_devices_for(&self.path)
        );
        let mounts = container.exec(&["cat", "/proc/1/mountinfo"]);
        assert!(
            !stdout(&mounts).contains("/dev/crashcart"),
            "{}",
            stdout(&mounts)
        );
    }
}

/// Starts a container whose init runs `script` (busybox sh), then `sleep`s as PID 1; waits
/// until the script has written `/ready`.
fn start(script: &str) -> Container {
    let full = format!("{script}\necho ready > /ready\nexec /busybox sleep 2147483647\n");
    let container = Container::start(CGROUP_WRITER, &["sh", "-c", &full]);
    let ready = wait_until(Duration::from_secs(20), || {
        container.exec(&["cat", "/ready"]).status.success()
    });
    let logs = run(Command::new("docker").args(["logs", &container.id]));
    assert!(ready, "the container's setup failed: {}", stderr(&logs));
    container
}

/// The init of [`crafted_cgroup_names_do_not_move_the_session`]: it tries names with a newline
/// (a forged `4:memory:/` or `0::/` line after it), keeping what the kernel said in
/// `/newline-mkdir` and `/newline-rename`, then moves itself into cgroups whose names look like
/// lines, hierarchy fields and `..`.
const CRAFTED: &str = r#"set -e
B=/busybox
$B mkdir -p /m /p /c
$B mount -t cgroup -o memory none /m
$B mount -t cgroup -o pids none /p
$B mount -t cgroup -o cpu none /c
nl='
'
if $B mkdir "/m/a${nl}4:memory:/" 2>/newline-mkdir; then echo CREATED >> /newline-mkdir; fi
$B mkdir /m/plain
if $B mv /m/plain "/m/b${nl}0::/" 2>/newline-rename; then echo RENAMED >> /newline-rename; fi
$B mkdir "/m/x:4:memory:"
$B mkdir -p "/p/.../ ../.. ."
$B mkdir "/c/1:cpu:"
echo 1 > "/m/x:4:memory:/cgroup.procs"
echo 1 > "/p/.../ ../.. ./cgroup.procs"
echo 1 > "/c/1:cpu:/cgroup.procs""#;

/// The cgroup path of hierarchy `controller` in `/proc/PID/cgroup` text.
fn path_of<'a>(cgroup: &'a str, controller: &str) -> &'a str {
    cgroup
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then_some(path)
        })
        .unwrap_or_else(|| panic!("no {controller} line in {cgroup}"))
}

#[test]
fn crafted_cgroup_names_do_not_move_the_session() {
    if !docker_ready() {
        return;
    }
    let image = ToolImage::new();
    let container = start(CRAFTED);
    // This kernel refuses a newline in a cgroup name, made or renamed: no line of
    // /proc/PID/cgroup can be forged. (A kernel that took one would fail here, and would
    // need crashcart to cross-check the lines.)
    for (file, what) in [("/newline-mkdir", "mkdir"), ("/newline-rename", "rename")] {
        let said = stdout(&container.exec(&["cat", file]));
        assert!(
            said.contains("Invalid argument"),
            "the kernel took a cgroup name with a newline ({what}): {said:?}"
        );
    }

    let pid = container.pid();
    let host_view = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory = path_of(&host_view, "memory");
    assert!(memory.ends_with("/x:4:memory:"), "{host_view}");
    assert!(path_of(&host_view, "pids").ends_with("/.../ ../.. ."));
    assert!(path_of(&host_view, "cpu").ends_with("/1:cpu:"));
    // The control: a parser that takes the last `:` field as the path reads the memory line
    // as the hierarchy's root, the host's own cgroup.
    let naive = host_view
        .lines()
        .find(|l| l.contains("memory"))
        .and_then(|l| l.rsplit(':').next())
        .unwrap();
    assert_eq!(naive, "", "the crafted name no longer fools a naive parser");

    // The target's view of its own cgroups (its cgroup namespace): the session command must
    // see exactly this, and a cgroup outside the container would show as `/..`.
    let own_view = stdout(&container.exec(&["cat", "/proc/1/cgroup"]));
    for target in [pid.to_string(), container.id.clone()] {
        let out = image.crashcart(&target, &["cat", "/proc/self/cgroup"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let session = stdout(&out);
        assert_eq!(
            session, own_view,
            "the session's cgroups are not the target's"
        );
        assert!(
            session.lines().all(|l| !l
                .splitn(3, ':')
                .nth(2)
                .unwrap()
                .split('/')
                .any(|c| c == "..")),
            "{session}"
        );
        assert_eq!(path_of(&session, "memory"), "/x:4:memory:");
    }
    image.assert_nothing_left(&container);
}

#[test]
fn a_cgroup_path_the_kernel_cuts_short_is_refused() {
    if !docker_ready() {
        return;
    }
    let image = ToolImage::new();
    // 22 nested cgroups of 200-byte names: deeper than /proc/PID/cgroup prints (4095 bytes).
    // Made with short names, the init moved in, then renamed bottom-up (every path the
    // renames use stays short). The cut path names another cgroup, or none.
    let container = start(
        r#"set -e
B=/busybox
$B mkdir /p
$B mount -t cgroup -o pids none /p
cd /p
p=d; i=1
while [ $i -lt 22 ]; do p=$p/d; i=$((i+1)); done
$B mkdir -p $p
echo 1 > $p/cgroup.procs
n=$($B printf "%0200d" 0)
while [ "$p" != d ]; do $B mv $p ${p%/d}/$n; p=${p%/d}; done
$B mv d $n"#,
    );
    let pid = container.pid();
    let host_view = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let shown = path_of(&host_view, "pids");
    assert_eq!(shown.len(), 4095, "the kernel no longer cuts the path");

    let out = image.crashcart(&pid.to_string(), &["true"]);
    assert_crashcart_error(&out, "cut it short");
    image.assert_nothing_left(&container);
    // The container is untouched: its init still runs, in its deep cgroup.
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap(),
        host_view
    );
}

#[test]
fn a_cgroup_named_as_another_container_does_not_capture_its_sessions() {
    if !docker_ready() {
        return;
    }
    let image = ToolImage::new();
    // The attacker starts first, so its init is the earlier "init" of the victim's ID.
    let attacker = start("");
    let victim = Container::start(&[], &[]);
    let out = attacker.exec(&[
        "sh",
        "-c",
        &format!(
            "set -e; /busybox mkdir /u; /busybox mount -t cgroup2 none /u; \
             /busybox mkdir /u/{0}; echo 1 > /u/{0}/cgroup.procs",
            victim.id
        ),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let forged = std::fs::read_to_string(format!("/proc/{}/cgroup", attacker.pid())).unwrap();
    assert!(
        forged
            .lines()
            .any(|l| l.starts_with("0::/") && l.ends_with(&format!("/{}", victim.id))),
        "{forged}"
    );
    let hostname = |c: &Container| {
        run(Command::new("docker").args(["inspect", "-f", "{{.Config.Hostname}}", &c.id]))
    };
    let victim_name = stdout(&hostname(&victim)).trim().to_string();
    let attacker_name = stdout(&hostname(&attacker)).trim().to_string();
    assert_ne!(victim_name, attacker_name);

    // Runtime state crashcart reads knows the victim: its ID is authoritative there.
    let out = image.crashcart(&victim.id, &["hostname"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), victim_name);

    // A runtime whose state crashcart does not read: the ID is looked up in the cgroup paths,
    // where two cgroups carry it. crashcart used to pick the earlier init, the attacker's.
    let no_state = tempfile::tempdir().unwrap();
    for spec in [victim.id.clone(), victim.id[..12].to_string()] {
        let out = run(Command::new("timeout")
            .args(["-s", "KILL", "30"])
            .arg(bin("crashcart"))
            .arg("-i")
            .arg(&image.path)
            .arg(&spec)
            .arg("hostname")
            .env("CRASHCART_RUN", no_state.path())
            .env_remove("CRASHCART_IMAGE")
            .stdin(Stdio::null()));
        assert_ne!(stdout(&out).trim(), attacker_name, "entered the attacker");
        assert_crashcart_error(&out, "is ambiguous");
        assert!(
            stderr(&out).contains(&format!("cgroup /docker/{}/{}", attacker.id, victim.id)),
            "{}",
            stderr(&out)
        );
    }
    image.assert_nothing_left(&attacker);
    image.assert_nothing_left(&victim);
}

/// The loader and libraries `binary` needs (`ldd`), as `docker run -v` read-only mounts at
/// their own paths.
fn library_volumes(binary: &std::path::Path) -> Vec<String> {
    let out = run(Command::new("ldd").arg(binary));
    stdout(&out)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| format!("{path}:{path}:ro"))
        })
        .collect()
}

/// Loop devices backed by the file at `image`, by inode (the debugger names it by another
/// path).
fn loop_devices_backed_by(image: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(image).unwrap().ino().to_string();
    let out = run(Command::new("losetup").args(["-l", "-n", "-O", "NAME,BACK-INO"]));
    stdout(&out)
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(ino.as_str()))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn crafted_cgroup_names_seen_from_a_debugger_with_its_own_cgroup_namespace() {
    if !docker_ready() {
        return;
    }
    // crashcart in a container of its own cgroup namespace (a debugging pod): the target's
    // cgroups climb out of it (`/..`), so crashcart reads and mounts them from the target's
    // cgroup namespace, the one the target made its crafted cgroups in.
    let image = ToolImage::new();
    let target = start(CRAFTED);
    let pid = target.pid().to_string();
    let crashcart = bin("crashcart");
    let mut volumes = vec![
        format!("{}:/crashcart:ro", crashcart.display()),
        format!("{}:/host/images:ro", image.path.parent().unwrap().display()),
    ];
    volumes.extend(library_volumes(&crashcart));
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
    let debugger = Container::start(&args, &[]);
    let seen = debugger.exec(&["cat", &format!("/proc/{pid}/cgroup")]);
    assert!(stdout(&seen).contains(":/.."), "{}", stdout(&seen));

    let out = debugger.exec(&[
        "timeout",
        "-s",
        "KILL",
        "30",
        "/crashcart",
        "-i",
        "/host/images/tools.img",
        &pid,
        "cat",
        "/proc/self/cgroup",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let own_view = stdout(&target.exec(&["cat", "/proc/1/cgroup"]));
    assert_eq!(stdout(&out), own_view);
    assert_eq!(path_of(&own_view, "memory"), "/x:4:memory:");
    assert_eq!(path_of(&own_view, "pids"), "/.../ ../.. .");

    assert!(
        wait_until(Duration::from_secs(5), || loop_devices_backed_by(
            &image.path
        )
        .is_empty()),
        "loop devices left: {:?}",
        loop_devices_backed_by(&image.path)
    );
    for container in [&debugger, &target] {
        let mounts = container.exec(&["cat", "/proc/1/mountinfo"]);
        assert!(
            !stdout(&mounts).contains("/dev/crashcart"),
            "{}",
            stdout(&mounts)
        );
    }
}
