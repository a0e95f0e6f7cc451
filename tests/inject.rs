//! End-to-end tests of `crashcart TARGET [COMMAND...]` against real Docker containers, the real
//! kernel's loop devices and mount API, as root.
//!
//! Each test makes its own image file (so "no loop device left" is asserted about that file
//! only) and its own containers (removed on drop).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use crashcart_tests::{
    assert_crashcart_error, bin, busybox_tree, docker_ready, is_root, loop_devices_for,
    mke2fs_image, run, run_ok, skip, unique_name, wait_until, Container, Terminal,
};

/// A busybox tool image in its own temp dir.
struct TestImage {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TestImage {
    /// busybox + applets; `customize` may add files to the tree before `mke2fs -d`.
    fn new(customize: impl FnOnce(&Path)) -> TestImage {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        busybox_tree(&tree);
        customize(&tree);
        let path = dir.path().join(format!("{}.img", unique_name("inject")));
        mke2fs_image(&tree, &path, 16);
        TestImage { _dir: dir, path }
    }

    fn busybox() -> TestImage {
        TestImage::new(|_| {})
    }

    /// `crashcart -i IMAGE ARGS...`
    fn crashcart(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("crashcart"));
        cmd.arg("-i").arg(&self.path).args(args);
        cmd.env_remove("CRASHCART_IMAGE");
        cmd
    }

    fn loop_devices(&self) -> Vec<String> {
        loop_devices_for(&self.path)
    }
}

/// Spawns `cmd` (a session) with stdout piped and waits for the first line the command
/// prints, its sign that it runs; returns the session, the rest of its stdout and that line.
fn spawn_until_first_line(cmd: &mut Command) -> (Child, BufReader<ChildStdout>, String) {
    let mut session = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(session.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (session, out, line.trim().to_string())
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Nothing of crashcart remains: no loop device for the image, no crashcart mount in the
/// container's mount namespace, no `/dev/crashcart` there. Polls briefly: the kernel detaches
/// an autoclear loop device when the session's mount namespace is torn down.
fn assert_no_trace(image: &TestImage, container_pid: u32) {
    let gone = wait_until(Duration::from_secs(10), || image.loop_devices().is_empty());
    assert!(gone, "loop device left: {:?}", image.loop_devices());
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{container_pid}/mountinfo")).expect("mountinfo");
    assert!(
        !mountinfo.contains("crashcart") && !mountinfo.contains("/dev/loop"),
        "mount left in the container:\n{mountinfo}"
    );
    let dev = PathBuf::from(format!("/proc/{container_pid}/root/dev/crashcart"));
    assert!(
        std::fs::symlink_metadata(&dev).is_err(),
        "{} left behind",
        dev.display()
    );
}

fn ready() -> bool {
    docker_ready()
}

#[test]
fn runs_in_the_container_by_pid_id_prefix_name_and_docker_url() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let pid = c.pid().to_string();
    let docker_url = format!("docker://{}", c.id);
    for target in [&pid, &c.id, &c.id[..12], &c.name, &docker_url] {
        let out = run(&mut image.crashcart(&[target, "cat", "/proc/sys/kernel/hostname"]));
        assert!(out.status.success(), "{target}: {}", stderr(&out));
        assert_eq!(
            stdout(&out).trim(),
            &c.id[..12],
            "{target}: not in the container's uts ns"
        );
    }
    // The command's PID 1 is the container's.
    let out = run_ok(&mut image.crashcart(&[&c.name, "cat", "/proc/1/cmdline"]));
    assert!(out.starts_with("/busybox"), "{out:?}");
    assert_no_trace(&image, c.pid());
}

#[test]
fn exit_status_is_the_commands() {
    if !ready() {
        return;
    }
    let image = TestImage::new(|tree| {
        std::fs::write(tree.join("not-executable"), "echo hi\n").unwrap();
        let script = tree.join("no-loader");
        std::fs::write(&script, "#!/no/such/interpreter\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    });
    let c = Container::start(&[], &[]);
    let code = |args: &[&str]| {
        let out = run(&mut image.crashcart(&[&[c.id.as_str()], args].concat()));
        (out.status.code(), stderr(&out))
    };
    assert_eq!(code(&["true"]).0, Some(0));
    assert_eq!(code(&["false"]).0, Some(1));
    assert_eq!(code(&["sh", "-c", "exit 42"]).0, Some(42));
    assert_eq!(code(&["sh", "-c", "kill -TERM $$"]).0, Some(128 + 15));
    assert_eq!(code(&["sh", "-c", "kill -KILL $$"]).0, Some(128 + 9));
    let (status, err) = code(&["no-such-command"]);
    assert_eq!(status, Some(127), "{err}");
    assert_eq!(
        err,
        "crashcart: `no-such-command` is neither in the image nor on the container's PATH\n"
    );
    let (status, err) = code(&["/no/such/program"]);
    assert_eq!(status, Some(127), "{err}");
    assert_eq!(
        err,
        "crashcart: cannot run /no/such/program: no such file in the container\n"
    );
    // There, but its loader is not: not "not found".
    let (status, err) = code(&["/dev/crashcart/no-loader"]);
    assert_eq!(status, Some(127), "{err}");
    assert!(
        err.contains("/dev/crashcart/no-loader: its interpreter or loader is missing"),
        "{err}"
    );
    let (status, err) = code(&["/dev/crashcart/not-executable"]);
    assert_eq!(status, Some(126), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    let (status, _) = code(&["/dev/crashcart/bin"]);
    assert_eq!(status, Some(126));
    // Flags after TARGET are the command's, `--` works too.
    let out = run_ok(&mut image.crashcart(&[&c.id, "ls", "-d", "/dev/crashcart"]));
    assert_eq!(out, "/dev/crashcart");
    let out = run_ok(&mut image.crashcart(&["--", &c.id, "echo", "-v", "--help"]));
    assert_eq!(out, "-v --help");
    assert_no_trace(&image, c.pid());
}

#[test]
fn bad_input_exits_125_with_one_line_and_changes_nothing() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let tmp = tempfile::tempdir().unwrap();

    let out = run(&mut image.crashcart(&[&unique_name("no-such-container"), "true"]));
    assert_crashcart_error(&out, "no-such-container");

    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let dead = (2..pid_max)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let out = run(&mut image.crashcart(&[&dead.to_string(), "true"]));
    assert_crashcart_error(&out, &dead.to_string());

    let missing = tmp.path().join("missing.img");
    let out = run(Command::new(bin("crashcart"))
        .arg("-i")
        .arg(&missing)
        .args([&c.id, "true"]));
    assert_crashcart_error(&out, "missing.img");

    let zeros = tmp.path().join("zeros.img");
    std::fs::write(&zeros, vec![0u8; 1 << 20]).unwrap();
    let out = run(Command::new(bin("crashcart"))
        .arg("-i")
        .arg(&zeros)
        .args([&c.id, "true"]));
    assert_crashcart_error(&out, "not an ext2/3/4 filesystem");
    assert!(loop_devices_for(&zeros).is_empty());

    let out = run(Command::new(bin("crashcart"))
        .arg("-i")
        .arg(tmp.path())
        .args([&c.id, "true"]));
    assert_crashcart_error(&out, "not a regular file");

    // A FIFO must not hang crashcart.
    let fifo = tmp.path().join("fifo.img");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let out = run(Command::new(bin("crashcart"))
        .arg("-i")
        .arg(&fifo)
        .args([&c.id, "true"]));
    assert_crashcart_error(&out, "not a regular file");

    // No -i, no $CRASHCART_IMAGE, nothing in the working directory.
    let out = run(Command::new(bin("crashcart"))
        .env_remove("CRASHCART_IMAGE")
        .current_dir(tmp.path())
        .args([&c.id, "true"]));
    assert_crashcart_error(&out, "no image");

    let out = run(&mut image.crashcart(&["-m", "-u", &c.id]));
    assert_crashcart_error(&out, "cannot be used together");

    let out = run(&mut image.crashcart(&["-e", &c.pid().to_string(), "true"]));
    assert_crashcart_error(&out, "not a Docker container");

    // The distroless container has no /etc/passwd: a name is unknown, a number works.
    let out = run(&mut image.crashcart(&["--user", "bob", &c.id, "true"]));
    assert_crashcart_error(&out, "no user \"bob\" in the container's /etc/passwd");
    let out = run(&mut image.crashcart(&["--user", "0:staff", &c.id, "true"]));
    assert_crashcart_error(&out, "no group \"staff\" in the container's /etc/group");
    let out = run(&mut image.crashcart(&["--user", "99999999999", &c.id, "true"]));
    assert_crashcart_error(&out, "out of range");

    // A name close to a running container's gets a suggestion.
    let typo = c.name.replacen('-', "", 1);
    let out = run(&mut image.crashcart(&[&typo, "true"]));
    assert_crashcart_error(&out, &format!("did you mean `{}`?", c.name));

    let out = run(&mut image.crashcart(&["--no-such-flag", &c.id]));
    assert_crashcart_error(&out, "--no-such-flag");

    // A stopped container.
    let stopped = Container::start(&[], &[]);
    run_ok(Command::new("docker").args(["stop", "-t", "0", &stopped.id]));
    let out = run(&mut image.crashcart(&[&stopped.id, "true"]));
    assert_crashcart_error(&out, "not running");

    // Not root. A copy of the binary in a world-readable place: the build tree may be under a
    // home directory that nobody cannot enter.
    if !have_setpriv() {
        skip("setpriv (util-linux) not installed: the not-root case is not checked");
    } else {
        use std::os::unix::fs::PermissionsExt;
        let public = tmp.path().join("public");
        std::fs::create_dir(&public).unwrap();
        for dir in [tmp.path(), public.as_path()] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::copy(bin("crashcart"), public.join("crashcart")).unwrap();
        let out = run(Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(public.join("crashcart"))
            .arg("-i")
            .arg(&image.path)
            .args([&c.id, "true"]));
        assert_crashcart_error(&out, "must run as root");
    }

    assert!(image.loop_devices().is_empty());
    assert_no_trace(&image, c.pid());
}

fn have_setpriv() -> bool {
    Command::new("setpriv")
        .arg("--help")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_session_is_invisible_to_the_container_and_leaves_no_trace() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let (mut session, _, line) = spawn_until_first_line(
        image
            .crashcart(&[
                &c.id,
                "sh",
                "-c",
                "ls /dev/crashcart/bin/busybox; read x; true",
            ])
            .stdin(Stdio::piped()),
    );
    assert_eq!(line, "/dev/crashcart/bin/busybox");
    // Mid-session: the container's own processes see no /dev/crashcart, no mount.
    assert_eq!(image.loop_devices().len(), 1);
    let ls = c.exec(&["ls", "-a", "/dev"]);
    assert!(!stdout(&ls).contains("crashcart"), "{}", stdout(&ls));
    let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", c.pid())).unwrap();
    assert!(!mountinfo.contains("/dev/loop"), "{mountinfo}");
    // The container's own /dev keeps working inside the session.
    drop(session.stdin.take());
    assert!(session.wait().unwrap().success());
    let out = run_ok(&mut image.crashcart(&[
        &c.id,
        "sh",
        "-c",
        "echo x > /dev/null && ls /dev/pts /dev/shm >/dev/null && readlink /dev/fd",
    ]));
    assert_eq!(out, "/proc/self/fd");
    assert_no_trace(&image, c.pid());
}

#[test]
fn sigkill_of_crashcart_leaves_no_trace() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let (mut session, _, line) = spawn_until_first_line(&mut image.crashcart(&[
        &c.id,
        "sh",
        "-c",
        "echo started; exec sleep 1234",
    ]));
    assert_eq!(line, "started");
    session.kill().unwrap(); // SIGKILL
    session.wait().unwrap();
    // The command dies with it (no process, no zombie left in the container).
    let gone = wait_until(Duration::from_secs(10), || {
        !stdout(&c.exec(&["ps", "-o", "pid,stat,args"])).contains("sleep 1234")
    });
    assert!(gone, "{}", stdout(&c.exec(&["ps", "-o", "pid,stat,args"])));
    assert_no_trace(&image, c.pid());
}

#[test]
fn ten_concurrent_sessions_share_one_loop_device() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let a = Container::start(&[], &[]);
    let b = Container::start(&[], &[]);
    let sessions: Vec<Child> = (0..10)
        .map(|i| {
            let target = if i % 2 == 0 { &a.id } else { &b.id };
            image
                .crashcart(&[target, "sh", "-c", "read x; ls /dev/crashcart/bin/sh"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // All ten attached (each holds the device open through its mount) before any ends.
    let all_in = wait_until(Duration::from_secs(30), || {
        let pids = [a.pid(), b.pid()];
        let count = sessions
            .iter()
            .filter(|s| session_command_started(s.id(), &pids))
            .count();
        count == 10
    });
    assert!(all_in, "not all sessions started");
    assert_eq!(image.loop_devices().len(), 1, "{:?}", image.loop_devices());
    for mut s in sessions {
        drop(s.stdin.take());
        let out = s.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "/dev/crashcart/bin/sh");
    }
    assert_no_trace(&image, a.pid());
    assert_no_trace(&image, b.pid());
}

/// Whether crashcart `pid` has a grandchild (the command) in one of the given containers'
/// PID namespaces.
fn session_command_started(pid: u32, container_pids: &[u32]) -> bool {
    let children = |p: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect()
    };
    let ns = |p: u32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    children(pid).into_iter().flat_map(children).any(|g| {
        let theirs = ns(g);
        theirs.is_some() && container_pids.iter().any(|&c| ns(c) == theirs)
    })
}

#[test]
fn enters_every_namespace_and_the_cgroups_of_the_target() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let script = "for n in mnt uts ipc net pid cgroup; do readlink /proc/self/ns/$n; done; \
                  cat /proc/self/cgroup; echo --; cat /proc/1/cgroup";
    let out = run_ok(&mut image.crashcart(&[&c.id, "sh", "-c", script]));
    let mut lines = out.lines();
    for n in ["mnt", "uts", "ipc", "net", "pid", "cgroup"] {
        let inside = lines.next().unwrap();
        let theirs = std::fs::read_link(format!("/proc/{}/ns/{n}", c.pid())).unwrap();
        if n == "mnt" {
            // The session's mount namespace is a private copy of the container's.
            assert_ne!(Path::new(inside), theirs);
            continue;
        }
        assert_eq!(Path::new(inside), theirs, "{n} namespace");
    }
    let rest: Vec<&str> = lines.collect();
    let sep = rest.iter().position(|l| *l == "--").unwrap();
    assert_eq!(
        rest[..sep],
        rest[sep + 1..],
        "cgroups differ from the container's PID 1"
    );
    assert!(rest[..sep].iter().any(|l| l.contains(&c.id)), "{rest:?}");
    assert_no_trace(&image, c.pid());
}

#[test]
fn only_stdin_stdout_stderr_reach_the_command() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    // ls opens one directory itself (fd 3).
    let out = run_ok(&mut image.crashcart(&[&c.id, "ls", "/proc/self/fd"]));
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"]
    );
    assert_no_trace(&image, c.pid());
}

#[test]
fn environment_user_and_working_directory_come_from_the_container() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(
        &["-e", "CRASHCART_TEST_VAR=from-container", "-w", "/work-dir"],
        &[],
    );
    let out = run_ok(image.crashcart(&[&c.id, "env"]).env("TERM", "xterm-test"));
    assert!(
        out.lines()
            .any(|l| l == "CRASHCART_TEST_VAR=from-container"),
        "{out}"
    );
    assert!(out.lines().any(|l| l == "TERM=xterm-test"), "{out}");
    let path = out.lines().find_map(|l| l.strip_prefix("PATH=")).unwrap();
    assert!(
        path.starts_with("/dev/crashcart/bin:/dev/crashcart/sbin:"),
        "{path}"
    );
    assert_eq!(run_ok(&mut image.crashcart(&[&c.id, "pwd"])), "/work-dir");
    assert_eq!(run_ok(&mut image.crashcart(&[&c.id, "id"])), "uid=0 gid=0");
    assert_eq!(
        run_ok(&mut image.crashcart(&["--user", "1000:1001", &c.id, "id"])),
        "uid=1000 gid=1001 groups=1001"
    );
    assert_no_trace(&image, c.pid());
}

#[test]
fn read_only_container() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&["--read-only"], &[]);
    let out = run_ok(&mut image.crashcart(&[
        &c.id,
        "sh",
        "-c",
        "touch /x 2>&1; ls /dev/crashcart/bin/sh",
    ]));
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.ends_with("/dev/crashcart/bin/sh"), "{out}");
    assert_no_trace(&image, c.pid());
}

#[test]
fn target_in_a_user_namespace() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let image = TestImage::busybox();
    let mut target = Command::new("unshare")
        .args(["-U", "-m", "-p", "-f", "--map-root-user", "--mount-proc"])
        .args(["/bin/busybox", "sleep", "600"])
        .spawn()
        .expect("unshare");
    // unshare forks: the sleep is its child, PID 1 of the new PID namespace.
    let mut pid = 0;
    assert!(wait_until(Duration::from_secs(5), || {
        pid = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", target.id()))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0);
        pid != 0
    }));
    let out = run(&mut image.crashcart(&[
        &pid.to_string(),
        "sh",
        "-c",
        "readlink /proc/self/ns/user; readlink /proc/self/ns/pid; id -u; cat /proc/1/cmdline",
    ]));
    let user_ns = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap_or_default();
    // The sleep is PID 1 of its namespace: killing it ends unshare too (nothing is left).
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let _ = target.kill();
    let _ = target.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(Path::new(lines[0]), user_ns);
    assert_ne!(
        user_ns,
        std::fs::read_link("/proc/self/ns/user").unwrap(),
        "the target should be in its own user namespace"
    );
    assert_eq!(lines[2], "0");
    assert!(lines[3].contains("sleep"), "{text}");
    assert!(wait_until(Duration::from_secs(10), || image
        .loop_devices()
        .is_empty()));
}

#[test]
fn target_exiting_mid_session_ends_it_cleanly() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let pid = c.pid();
    let (mut session, _, line) = spawn_until_first_line(&mut image.crashcart(&[
        &c.id,
        "sh",
        "-c",
        "echo started; sleep 600",
    ]));
    assert_eq!(line, "started");
    run_ok(Command::new("docker").args(["kill", &c.id]));
    // The container's PID namespace dies: the kernel kills the command.
    let mut status = None;
    assert!(wait_until(Duration::from_secs(10), || {
        status = session.try_wait().unwrap();
        status.is_some()
    }));
    assert_eq!(status.unwrap().code(), Some(128 + 9));
    assert!(wait_until(Duration::from_secs(10), || image
        .loop_devices()
        .is_empty()));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn a_planted_symlink_at_dev_crashcart_is_never_followed() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let planted = c.exec(&["ln", "-s", "/etc", "/dev/crashcart"]);
    assert!(planted.status.success(), "{}", stderr(&planted));
    // The session shadows it with its own /dev/crashcart.
    let out = run_ok(&mut image.crashcart(&[&c.id, "ls", "/dev/crashcart/bin/busybox"]));
    assert_eq!(out, "/dev/crashcart/bin/busybox");
    // -m refuses to mount through it.
    let out = run(&mut image.crashcart(&["-m", &c.id]));
    assert_crashcart_error(&out, "symlink");
    // The symlink and its target are untouched.
    let link = std::fs::read_link(format!("/proc/{}/root/dev/crashcart", c.pid())).unwrap();
    assert_eq!(link, Path::new("/etc"));
    let etc = stdout(&c.exec(&["ls", "/etc"]));
    assert!(!etc.contains("bin"), "{etc}");
    let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", c.pid())).unwrap();
    assert!(!mountinfo.contains("/dev/loop"), "{mountinfo}");
    assert!(wait_until(Duration::from_secs(10), || image
        .loop_devices()
        .is_empty()));
}

#[test]
fn mount_then_docker_exec_then_unmount() {
    if !ready() {
        return;
    }
    let image = TestImage::new(|tree| {
        std::fs::create_dir_all(tree.join(".crashcart")).unwrap();
        std::fs::write(
            tree.join(".crashcart/manifest.json"),
            r#"{"format":1,"store_alias":"/dev/.cart","env":{"CART_ENV":"from-manifest"}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(tree.join("store/abc-tool")).unwrap();
        std::fs::write(tree.join("store/abc-tool/marker"), "stored\n").unwrap();
    });
    let c = Container::start(&[], &[]);
    run_ok(&mut image.crashcart(&["-m", &c.id]));
    assert_eq!(image.loop_devices().len(), 1);
    let out = run(Command::new("docker").args([
        "exec",
        &c.id,
        "/dev/crashcart/bin/cat",
        "/dev/.cart/abc-tool/marker",
    ]));
    assert_eq!(stdout(&out).trim(), "stored", "{}", stderr(&out));
    // -m again with the same image is a no-op; another image is refused. Sessions still work
    // beside the mount and share its device.
    run_ok(&mut image.crashcart(&["-m", &c.id]));
    let other = TestImage::busybox();
    assert_crashcart_error(
        &run(&mut other.crashcart(&["-m", &c.id])),
        "already mounted",
    );
    assert!(wait_until(Duration::from_secs(10), || other
        .loop_devices()
        .is_empty()));
    let out = run_ok(&mut image.crashcart(&[
        &c.id,
        "sh",
        "-c",
        "echo $CART_ENV; cat /dev/.cart/abc-tool/marker",
    ]));
    assert_eq!(out, "from-manifest\nstored");
    assert_eq!(image.loop_devices().len(), 1);
    run_ok(Command::new(bin("crashcart")).args(["-u", &c.id]));
    let ls = stdout(&c.exec(&["ls", "-a", "/dev"]));
    assert!(!ls.contains("crashcart") && !ls.contains(".cart"), "{ls}");
    assert_crashcart_error(
        &run(Command::new(bin("crashcart")).args(["-u", &c.id])),
        "nothing is mounted",
    );
    assert_no_trace(&image, c.pid());
}

#[test]
fn exec_flag_runs_the_command_with_docker_exec() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let out = run(&mut image.crashcart(&["-e", &c.name, "sh", "-c", "echo $PATH; exit 3"]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("/dev/crashcart/bin:"),
        "{}",
        stdout(&out)
    );
    // -e again (the same image is mounted already) works; --user reaches docker exec.
    let out = run_ok(&mut image.crashcart(&["-e", "--user", "1000:1001", &c.name, "id"]));
    assert!(out.starts_with("uid=1000 gid=1001"), "{out}");
    assert_eq!(image.loop_devices().len(), 1);
    // -e leaves the mount like -m does.
    assert!(c.exec(&["ls", "/dev/crashcart/bin/sh"]).status.success());
    run_ok(Command::new(bin("crashcart")).args(["-u", &c.id]));
    assert_no_trace(&image, c.pid());
}

#[test]
fn signals_are_forwarded_to_the_command() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    for (signal, name, code) in [
        (15, "TERM", 3),
        (10, "USR1", 4),
        (1, "HUP", 5),
        (2, "INT", 6),
    ] {
        let script = format!(
            "trap 'echo got-{name}; exit {code}' {name}; echo ready; while :; do sleep 0.05; done"
        );
        let (mut session, mut out, line) =
            spawn_until_first_line(&mut image.crashcart(&[&c.id, "sh", "-c", &script]));
        assert_eq!(line, "ready");
        run_ok(Command::new("kill").args([&format!("-{signal}"), &session.id().to_string()]));
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let status = session.wait().unwrap();
        assert_eq!(rest.trim(), format!("got-{name}"));
        assert_eq!(status.code(), Some(code), "SIG{name}");
    }
    assert_no_trace(&image, c.pid());
}

fn have_script() -> bool {
    if crashcart_tests::have("script") {
        return true;
    }
    skip("script (util-linux) not installed");
    false
}

#[test]
fn ctrl_c_at_an_interactive_shell_does_not_end_the_session() {
    if !ready() || !have_script() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let mut term = Terminal::start(&format!(
        "{} -i {} {} sh -i",
        bin("crashcart").display(),
        image.path.display(),
        c.id
    ));
    term.shows("# ");
    term.type_in("echo sleeping; sleep 30\n");
    term.shows("sleeping\r\n");
    std::thread::sleep(Duration::from_millis(300));
    // Ctrl-C: the terminal sends SIGINT to the foreground job (sleep), not to crashcart; the
    // shell abandons the line and prompts again, as any interactive shell does.
    term.type_in("\x03");
    term.shows("^C");
    term.type_in("echo alive-$((40+2))\n");
    term.shows("alive-42");
    term.type_in("exit 7\n");
    let (code, output) = term.finish();
    assert_eq!(code, Some(7), "{output:?}");
    assert_no_trace(&image, c.pid());
}

#[test]
fn ctrl_z_stops_the_session_and_fg_resumes_it() {
    if !ready() || !have_script() || !crashcart_tests::have("bash") {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    // A job-control shell on the host starts crashcart, as a user's would.
    let mut term = Terminal::start("bash --norc --noprofile -i");
    term.type_in("PS1='READY> '\n");
    term.shows_n("READY> ", 1);
    term.type_in(&format!(
        "{} -i {} {} sh -c 'echo started; sleep 30; echo finished'\n",
        bin("crashcart").display(),
        image.path.display(),
        c.id
    ));
    term.shows("started\r\n");
    std::thread::sleep(Duration::from_millis(300));
    term.type_in("\x1a"); // Ctrl-Z
    term.shows("Stopped");
    term.shows_n("READY> ", 2);
    term.type_in("fg\n");
    std::thread::sleep(Duration::from_millis(500));
    // The prompt typed above already shows "READY> " more than once: wait for one more. Input
    // typed before crashcart exits goes to the command's terminal (crashcart relays it), so
    // nothing is typed until the host shell prompts again.
    let prompts = term.output().matches("READY> ").count();
    term.type_in("\x03"); // the command dies of SIGINT: crashcart exits 130
    term.shows_n("READY> ", prompts + 1);
    term.type_in("echo rc=$?\n");
    term.shows("rc=130");
    term.type_in("exit\n");
    let (_, output) = term.finish();
    assert!(!output.contains("\r\nfinished\r\n"), "{output:?}");
    assert_no_trace(&image, c.pid());
}

#[test]
fn default_command_is_bash_from_the_image_else_sh() {
    if !ready() {
        return;
    }
    let c = Container::start(&[], &[]);
    // sh only: the default is the image's sh, reading commands from stdin.
    let image = TestImage::busybox();
    let mut child = image
        .crashcart(&[&c.id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo sh-$((2+3)); exit 9\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(stdout(&out).trim(), "sh-5");
    assert_eq!(out.status.code(), Some(9));
    // With bin/bash present, bash is preferred and gets the image's rc file.
    let with_bash = TestImage::new(|tree| {
        let bash = tree.join("bin/bash");
        std::fs::write(
            &bash,
            "#!/dev/crashcart/bin/sh\necho bash-ran \"$*\" BASH_ENV=$BASH_ENV ENV=$ENV\n",
        )
        .unwrap();
        let executable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&bash, executable).unwrap();
    });
    // Commands piped in: bash without -i (no prompts, no job-control warnings), reading the
    // rc file through BASH_ENV; on a terminal, `--posix -i` with ENV.
    let out = run_ok(&mut with_bash.crashcart(&[&c.id]));
    assert_eq!(out, "bash-ran  BASH_ENV=/dev/crashcart/.crashcartrc ENV=");
    let mut terminal = Terminal::start(&format!(
        "{} -i {} {}",
        bin("crashcart").display(),
        with_bash.path.display(),
        c.id
    ));
    terminal.shows("bash-ran --posix -i BASH_ENV= ENV=/dev/crashcart/.crashcartrc");
    let (code, _) = terminal.finish();
    assert_eq!(code, Some(0));
    // Neither: a clear error.
    let bare = tempfile::tempdir().unwrap();
    std::fs::create_dir(bare.path().join("tree")).unwrap();
    std::fs::write(bare.path().join("tree/readme"), "no tools\n").unwrap();
    let bare_img = bare.path().join("bare.img");
    mke2fs_image(&bare.path().join("tree"), &bare_img, 4);
    let out = run(Command::new(bin("crashcart"))
        .arg("-i")
        .arg(&bare_img)
        .arg(&c.id));
    assert_crashcart_error(&out, "neither bin/bash nor bin/sh");
    assert!(wait_until(Duration::from_secs(10), || loop_devices_for(
        &bare_img
    )
    .is_empty()));
    assert_no_trace(&image, c.pid());
    assert_no_trace(&with_bash, c.pid());
}

#[test]
fn verbose_logs_each_step() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let out = run(&mut image.crashcart(&["-v", &c.name, "true"]));
    assert!(out.status.success());
    let log = stderr(&out);
    for step in [
        "is pid",
        "/dev/loop",
        "mounted",
        "namespaces to enter",
        "cgroups to join",
        "session /dev",
    ] {
        assert!(log.contains(step), "no {step:?} in:\n{log}");
    }
    assert!(log.lines().all(|l| l.starts_with("crashcart: ")), "{log}");
    assert_no_trace(&image, c.pid());
}

/// A process started by `unshare -m -p -f` (its own mount and PID namespaces), running `script`
/// with busybox `sh`; returns the unshare child and the target's host PID once it runs.
fn unshare_target(script: &str) -> (Child, u32) {
    crashcart_tests::spawn_wrapped_target(
        Command::new("unshare").args(["-m", "-p", "-f", "/bin/busybox", "sh", "-c", script]),
        "unshare target",
    )
}

#[test]
fn a_dev_that_is_a_symlink_is_refused() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let image = TestImage::busybox();
    // A root whose /dev is a symlink to /tmp, entered with pivot_root.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["bin", "tmp", "old"] {
        std::fs::create_dir(r.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("/tmp", r.join("dev")).unwrap();
    let script = format!(
        "mount --bind {0} {0} && cd {0} && pivot_root . old && \
         exec /bin/busybox sh -c 'umount -l /old; exec /bin/busybox sleep 600'",
        r.display()
    );
    let (mut unshared, pid) = unshare_target(&script);
    let session = run(&mut image.crashcart(&[&pid.to_string(), "true"]));
    let mount = run(&mut image.crashcart(&["-m", &pid.to_string()]));
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let _ = unshared.kill();
    let _ = unshared.wait();
    assert_crashcart_error(&session, "/dev is a symlink");
    assert_crashcart_error(&mount, "/dev is a symlink");
    assert_eq!(std::fs::read_dir(r.join("tmp")).unwrap().count(), 0);
    assert!(wait_until(Duration::from_secs(10), || image
        .loop_devices()
        .is_empty()));
}

#[test]
fn a_target_exiting_while_crashcart_attaches_is_a_clean_error() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let image = TestImage::busybox();
    // The target is PID 1 of its own PID namespace and exits almost at once: crashcart either
    // gets in first (the command then dies with the namespace) or reports that it exited.
    for _ in 0..5 {
        let (mut unshared, pid) = unshare_target("exec /bin/busybox sleep 0.05");
        let out = run(&mut image.crashcart(&[&pid.to_string(), "true"]));
        let _ = unshared.wait();
        match out.status.code() {
            Some(0) | Some(137) => {}
            _ => assert_crashcart_error(&out, &pid.to_string()),
        }
    }
    assert!(wait_until(Duration::from_secs(10), || image
        .loop_devices()
        .is_empty()));
}

/// The mount point of a cgroup2 hierarchy whose root is the hierarchy's root, if mounted.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        (right.starts_with("cgroup2 ") && fields.get(3) == Some(&"/"))
            .then(|| PathBuf::from(fields[4]))
    })
}

#[test]
fn joins_a_cgroup_v2_group_of_the_target() {
    if !is_root() {
        skip("needs root");
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        skip("no cgroup2 hierarchy mounted");
        return;
    };
    let image = TestImage::busybox();
    let group = unique_name("crashcart-test");
    let dir = mount.join(&group);
    std::fs::create_dir(&dir).unwrap();
    let (mut unshared, pid) = unshare_target("exec /bin/busybox sleep 600");
    std::fs::write(dir.join("cgroup.procs"), pid.to_string()).unwrap();
    let out = run(&mut image.crashcart(&[&pid.to_string(), "cat", "/proc/self/cgroup"]));
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let _ = unshared.wait();
    wait_until(Duration::from_secs(5), || std::fs::remove_dir(&dir).is_ok());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l == format!("0::/{group}")),
        "the command is not in the target's v2 group /{group}:\n{text}"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(wait_until(Duration::from_secs(10), || image
        .loop_devices()
        .is_empty()));
}

#[test]
fn list_shows_running_containers_one_line_each_when_piped() {
    if !ready() {
        return;
    }
    let c = Container::start(&[], &[]);
    let out = run_ok(Command::new(bin("crashcart")).arg("--list"));
    let line = out
        .lines()
        .find(|l| l.split('\t').next() == Some(c.name.as_str()))
        .unwrap_or_else(|| panic!("{} not listed:\n{out}", c.name));
    let fields: Vec<&str> = line.split('\t').collect();
    assert_eq!(fields.len(), 6, "{line:?}");
    assert_eq!(fields[1], "docker", "{line:?}");
    assert_eq!(fields[2], c.id, "{line:?}");
    assert_eq!(fields[3], c.pid().to_string(), "{line:?}");
    assert_eq!(fields[5], "running", "{line:?}");
    let out = run(Command::new(bin("crashcart")).args(["--list", &c.id]));
    assert_crashcart_error(&out, "--list");
}

/// Tag of the image of [`users_image`].
const USERS_IMAGE: &str = "crashcart-test-users:latest";

/// A FROM-scratch image with busybox, a passwd and a group file: `nginx` (101, also in `adm`
/// and `www`), `app` (1000, whose group 1000 has no line), `root`.
fn users_image() -> &'static str {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let ctx = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(ctx.path().join("etc")).unwrap();
        std::fs::write(
            ctx.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n\
             nginx:x:101:101:nginx:/nonexistent:/sbin/nologin\n\
             app:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            ctx.path().join("etc/group"),
            "root:x:0:\nadm:x:4:nginx\nwww:x:33:nginx,app\nnginx:x:101:\n",
        )
        .unwrap();
        std::fs::copy("/bin/busybox", ctx.path().join("busybox")).unwrap();
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /busybox\nCOPY etc /etc\n\
             ENTRYPOINT [\"/busybox\"]\nCMD [\"sleep\", \"2147483647\"]\n",
        )
        .unwrap();
        crashcart_tests::docker_build(ctx.path(), USERS_IMAGE);
    });
    USERS_IMAGE
}

/// The `Uid:`, `Gid:` and `Groups:` lines of a `/proc/PID/status`.
fn credential_lines(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:") || l.starts_with("Groups:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn user_names_resolve_as_docker_exec_resolves_them() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start_image(users_image(), &[], &[]);
    for spec in [
        "nginx",
        "101",
        "nginx:www",
        "101:33",
        "nginx:7",
        "4242",
        "4242:www",
        "app",
        "app:adm",
        "root",
        "0",
    ] {
        // docker exec (runc) is the reference: what the same --user gives there.
        let docker = run_ok(Command::new("docker").args([
            "exec",
            "-u",
            spec,
            &c.id,
            "/busybox",
            "cat",
            "/proc/self/status",
        ]));
        let expected = credential_lines(&docker);
        assert_eq!(expected.len(), 3, "{docker}");
        for profile in ["debug", "target", "sysadmin"] {
            let ours = run_ok(&mut image.crashcart(&[
                "--profile",
                profile,
                "--user",
                spec,
                &c.id,
                "cat",
                "/proc/self/status",
            ]));
            assert_eq!(
                credential_lines(&ours),
                expected,
                "--user {spec} --profile {profile}"
            );
        }
    }
    // -e hands the name to docker exec as it was typed.
    let out = run_ok(&mut image.crashcart(&["-e", "--user", "nginx", &c.id, "id", "-u"]));
    assert_eq!(out, "101");
    run_ok(Command::new(bin("crashcart")).args(["-u", &c.id]));
    let out = run(&mut image.crashcart(&["--user", "nobody", &c.id, "true"]));
    assert_crashcart_error(&out, "no user \"nobody\" in the container's /etc/passwd");
    let out = run(&mut image.crashcart(&["--user", "nginx:staff", &c.id, "true"]));
    assert_crashcart_error(&out, "no group \"staff\" in the container's /etc/group");
    assert_no_trace(&image, c.pid());
}

#[test]
fn home_is_the_sessions_own_writable_directory_and_goes_with_it() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    // Read-only: nothing of the container's is writable, the session's HOME still is.
    let c = Container::start_image(users_image(), &["--read-only", "-e", "HOME=/root"], &[]);
    for (user, owner) in [(None, "0 0"), (Some("nginx"), "101 101")] {
        let mut args = vec![];
        if let Some(user) = user {
            args.extend(["--user", user]);
        }
        args.extend([
            c.id.as_str(),
            "sh",
            "-c",
            "echo $HOME; touch $HOME/x && stat -c '%a %u %g' $HOME $HOME/x",
        ]);
        let out = run_ok(&mut image.crashcart(&args));
        assert_eq!(
            out,
            format!("/dev/crashcart-home\n700 {owner}\n644 {owner}"),
            "{user:?}"
        );
    }
    // Mid-session: the container's processes see no such directory, nor the file in it.
    let (mut session, _, line) = spawn_until_first_line(
        image
            .crashcart(&[
                &c.id,
                "sh",
                "-c",
                "touch $HOME/marker && echo ready; read x; true",
            ])
            .stdin(Stdio::piped()),
    );
    assert_eq!(line, "ready");
    let ls = stdout(&c.exec(&["ls", "-a", "/dev"]));
    assert!(!ls.contains("crashcart"), "{ls}");
    let found = stdout(&c.exec(&["find", "/", "-name", "marker"]));
    assert!(found.trim().is_empty(), "{found}");
    drop(session.stdin.take());
    assert!(session.wait().unwrap().success());
    // Every session starts with an empty one.
    let out = run_ok(&mut image.crashcart(&[&c.id, "ls", "-A", "/dev/crashcart-home"]));
    assert_eq!(out, "");
    assert_no_trace(&image, c.pid());
    let ls = stdout(&c.exec(&["ls", "-a", "/dev"]));
    assert!(!ls.contains("crashcart"), "{ls}");
}

#[test]
fn mount_prints_how_to_use_it_unless_quiet() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let out = run(&mut image.crashcart(&["-m", &c.name]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let hint = stderr(&out);
    let exec_line = format!("docker exec -it {} /dev/crashcart/bin/sh", c.name);
    assert_eq!(
        hint,
        format!(
            "crashcart: the image is mounted at /dev/crashcart in {0}; use it with\n  \
             {exec_line}\nand remove it with\n  crashcart -u {0}\n",
            c.name
        )
    );
    // The line works (without -t: no terminal here).
    let out = run_ok(Command::new("docker").args([
        "exec",
        &c.name,
        "/dev/crashcart/bin/sh",
        "-c",
        "echo works",
    ]));
    assert_eq!(out, "works");
    run_ok(Command::new(bin("crashcart")).args(["-u", &c.name]));
    // A PID has no docker exec: the hint is an nsenter line, and it works too.
    let pid = c.pid().to_string();
    let out = run(&mut image.crashcart(&["-m", &pid]));
    let nsenter = format!("nsenter -t {pid} -m -u -i -n -p /dev/crashcart/bin/sh");
    assert!(
        stderr(&out).contains(&format!("  {nsenter}\n")),
        "{}",
        stderr(&out)
    );
    let mut words: Vec<&str> = nsenter.split(' ').collect();
    words.extend(["-c", "echo works"]);
    assert_eq!(run_ok(Command::new(words[0]).args(&words[1..])), "works");
    run_ok(Command::new(bin("crashcart")).args(["-u", &pid]));
    // -q: nothing.
    let out = run(&mut image.crashcart(&["-m", "-q", &c.id]));
    assert!(out.status.success());
    assert_eq!(stderr(&out), "");
    run_ok(Command::new(bin("crashcart")).args(["-u", "-q", &c.id]));
    assert_no_trace(&image, c.pid());
}

#[test]
fn commands_piped_into_the_default_bash_print_no_job_control_noise() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("bash.img");
    run_ok(
        Command::new(bin("crashcart-imgbuild"))
            .args(["-q", "--host", "bash", "-o"])
            .arg(&img),
    );
    let c = Container::start(&[], &[]);
    let mut child = Command::new(bin("crashcart"))
        .arg("-i")
        .arg(&img)
        .arg(&c.id)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The rc file ran (CART is set, gdb is its function), and nothing but the output shows.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo one $CART; type -t gdb\necho two\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one /dev/crashcart\nfunction\ntwo\n");
    assert_eq!(stderr(&out), "");
    assert!(wait_until(Duration::from_secs(10), || loop_devices_for(
        &img
    )
    .is_empty()));
}

#[test]
fn a_closed_stdout_never_panics() {
    if !ready() {
        return;
    }
    let image = TestImage::busybox();
    let c = Container::start(&[], &[]);
    let crashcart = bin("crashcart");
    let session = format!("-i {} {} seq 1 100000", image.path.display(), c.id);
    for args in [
        "--generate completions-bash",
        "--generate completions-zsh",
        "--generate completions-fish",
        "--generate man",
        "--list",
        "--help",
        "-h",
        "--version",
        session.as_str(),
    ] {
        // The reader is gone before crashcart writes: every write fails with EPIPE.
        let out = run(Command::new("bash").arg("-c").arg(format!(
            "{{ sleep 0.5; {} {args}; echo \"status $?\" >&2; }} | true",
            crashcart.display()
        )));
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args}: {err}");
        assert!(err.ends_with("status 0\n"), "{args}: {err}");
    }
    assert_no_trace(&image, c.pid());
}

#[test]
fn help_and_man_page_read_cleanly() {
    if !is_root() {
        skip("needs root (the test binaries are root's)");
        return;
    }
    let help = run_ok(Command::new(bin("crashcart")).arg("--help"));
    assert!(
        help.lines()
            .any(|l| l == "Usage: crashcart [OPTIONS] TARGET [--] [COMMAND [ARG...]]"),
        "{help}"
    );
    assert!(!help.contains("]..."), "{help}");
    assert!(help.contains("--generate <WHAT>"), "{help}");
    // Examples: one line each, descriptions in one column.
    let examples: Vec<&str> = help
        .lines()
        .skip_while(|l| *l != "Examples:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(examples.len() >= 4, "{help}");
    // Where the description starts: past the command and the spaces after it.
    let columns: Vec<usize> = examples
        .iter()
        .map(|l| {
            let command = l.trim_start();
            let gap = command.find("  ").unwrap_or_else(|| panic!("{l:?}"));
            let description = command[gap..].trim_start();
            l.len() - description.len()
        })
        .collect();
    assert!(columns.windows(2).all(|w| w[0] == w[1]), "{examples:#?}");

    if !crashcart_tests::have("man") {
        skip("man (man-db) not installed: the man page is not checked rendered");
        return;
    }
    let roff = run(Command::new(bin("crashcart")).args(["--generate", "man"])).stdout;
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("crashcart.1");
    std::fs::write(&page, roff).unwrap();
    let rendered = run(Command::new("man")
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "")
        .args(["--warnings", "-l"])
        .arg(&page));
    let text = stdout(&rendered);
    assert!(rendered.status.success(), "{}", stderr(&rendered));
    assert_eq!(stderr(&rendered), "", "groff warnings");
    for section in [
        "NAME",
        "SYNOPSIS",
        "ARGUMENTS",
        "OPTIONS",
        "EXAMPLES",
        "EXIT STATUS",
    ] {
        assert!(text.lines().any(|l| l == section), "no {section}:\n{text}");
    }
    assert!(!text.contains("EXTRA"), "{text}");
    // Each example reads whole on its own line, never wrapped into its description.
    for example in examples {
        let command = example.trim_start().split("  ").next().unwrap();
        assert!(
            text.lines().any(|l| l.trim() == command),
            "{command:?} not on a line of its own:\n{text}"
        );
    }
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
}

#[test]
fn runtime_data_variables_come_from_the_image_manifest_not_the_container() {
    if !ready() {
        return;
    }
    let image = TestImage::new(|tree| {
        std::fs::create_dir_all(tree.join(".crashcart")).unwrap();
        std::fs::write(
            tree.join(".crashcart/manifest.json"),
            r#"{"format":1,"env":{"TERMINFO_DIRS":"/dev/crashcart/share/terminfo",
                "VIMRUNTIME":"/dev/crashcart/share/vim","MANPATH":"/dev/crashcart/share/man"}}"#,
        )
        .unwrap();
    });
    let c = Container::start(
        &[
            "-e",
            "TERMINFO=/evil",
            "-e",
            "TERMINFO_DIRS=/evil",
            "-e",
            "VIMRUNTIME=/evil",
            "-e",
            "MANPATH=/evil",
            "-e",
            "MANROFFOPT=-U",
        ],
        &[],
    );
    let env = run_ok(&mut image.crashcart(&[&c.id, "env"]));
    let mut vars: Vec<&str> = env
        .lines()
        .filter(|l| {
            ["TERMINFO", "VIMRUNTIME", "MAN"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    vars.sort_unstable();
    assert_eq!(
        vars,
        [
            "MANPATH=/dev/crashcart/share/man",
            "TERMINFO_DIRS=/dev/crashcart/share/terminfo",
            "VIMRUNTIME=/dev/crashcart/share/vim",
        ]
    );
    // Without them in the manifest, the container's are not passed on either.
    let plain = TestImage::busybox();
    let env = run_ok(&mut plain.crashcart(&[&c.id, "env"]));
    assert!(
        !env.contains("/evil") && !env.contains("MANROFFOPT"),
        "{env}"
    );
    assert_no_trace(&image, c.pid());
    assert_no_trace(&plain, c.pid());
}
