//! Hostile inputs: containers built to attack the session (see `THREAT-MODEL.md`), one test
//! per vector.
//!
//! Every container here is `FROM scratch` with busybox and a set of payloads
//! (`tests/fixtures/hostile-inputs`): scripts, readline init files, startup files and shared
//! libraries whose constructors run. Whatever payload runs, it proves it by leaving
//! `/vol/ran-<vector>`, and `/vol` is a host directory: the tests assert that no marker ever
//! appears, and, where it is cheap, run the same payload deliberately first so that a marker
//! *can* appear (a test that cannot fail proves nothing).
//!
//! The session tools are the host's own bash, ls, id, ... bundled with
//! `crashcart-imgbuild --host`: busybox `sh` ignores most of bash's hooks.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crashcart_tests::{
    assert_crashcart_error, bin, busybox_tree, docker_build, docker_ready, have, loop_devices_for,
    mke2fs_image, run, run_ok, skip, unique_name, wait_until, workspace_root, Container, Terminal,
};

/// Tag of the hostile container image built from `tests/fixtures/hostile-inputs`.
const HOSTILE_IMAGE: &str = "crashcart-test-hostile:latest";

/// The host programs bundled into the session image.
const HOST_TOOLS: &[&str] = &["bash", "ls", "id", "cat", "env", "sleep", "tty"];

/// Debian's multiarch library directory on the x86-64 machines these tests run on.
const LIBDIR: &str = "/lib/x86_64-linux-gnu";

fn fixture(name: &str) -> PathBuf {
    workspace_root()
        .join("tests/fixtures/hostile-inputs")
        .join(name)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Root, Docker, x86-64, and the programs that build and drive the payloads.
fn ready() -> bool {
    if !docker_ready() {
        return false;
    }
    if std::env::consts::ARCH != "x86_64" {
        skip("the hostile fixtures use x86-64 library paths");
        return false;
    }
    for program in ["gcc", "patchelf", "script", "mke2fs"] {
        if !have(program) {
            skip(&format!("{program} not installed (run tests/setup.sh)"));
            return false;
        }
    }
    if !Path::new("/usr/lib/x86_64-linux-gnu/libc.a").exists() {
        skip("no static libc (libc6-dev) for gcc -static");
        return false;
    }
    true
}

/// `gcc ARGS... -o OUT SOURCE`, asserting success.
fn gcc(source: &Path, out: &Path, args: &[&str]) {
    run_ok(
        Command::new("gcc")
            .args(args)
            .arg("-o")
            .arg(out)
            .arg(source),
    );
}

/// Compiles `evil.c` into a shared library whose constructor leaves `/vol/ran-MARK`.
fn evil_library(out: &Path, mark: &str) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    gcc(
        &fixture("evil.c"),
        out,
        &["-shared", "-fPIC", &format!("-DMARK=\"{mark}\"")],
    );
}

/// Compiles the TIOCSTI payload as a static program (the container has no C library).
fn tiocsti_program(out: &Path) {
    gcc(&fixture("tiocsti.c"), out, &["-static", "-O1"]);
}

/// Builds [`HOSTILE_IMAGE`] once per test process. Its files, besides the committed
/// `root/` tree:
///
/// - `/busybox`; `/tiocsti` (static);
/// - `/evil.so` (marker `preload`), named by the planted `/etc/ld.so.preload`;
/// - `/evil/libc.so.6`, `/evil/libtinfo.so.6` and `/evil/libselinux.so.1`: the host's real
///   libraries, each with an extra `DT_NEEDED` on `/evil/libevil-ctor.so` (marker
///   `ld_library_path`), so bash and ls would run normally with them, for
///   `LD_LIBRARY_PATH=/evil`;
/// - NSS modules for `nsswitch.conf`: `/libnss_../` + `/evil.so.2` (`nss_dotdot`),
///   `/lib/x86_64-linux-gnu/libnss_evilmod.so.2` (`nss_libdir`),
///   `/evil/libnss_evilmod.so.2` (`nss_ld_library_path`);
/// - `/control/{ld.so,libc.so.6,true}`: the host's loader, libc and `true`, with which the
///   controls load each evil library deliberately (`ld.so --preload`).
fn hostile_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let ctx = tempfile::tempdir().expect("tempdir");
        let root = ctx.path().join("root");
        run_ok(Command::new("cp").arg("-a").arg(fixture("root")).arg(&root));
        std::fs::copy(fixture("Dockerfile"), ctx.path().join("Dockerfile")).unwrap();
        std::fs::copy("/bin/busybox", root.join("busybox")).expect("copy /bin/busybox");
        tiocsti_program(&root.join("tiocsti"));
        evil_library(&root.join("evil.so"), "preload");
        evil_library(&root.join("evil.so.2"), "nss_dotdot");
        std::fs::create_dir_all(root.join("libnss_..")).unwrap();
        let libdir = root.join(LIBDIR.trim_start_matches('/'));
        evil_library(&libdir.join("libnss_evilmod.so.2"), "nss_libdir");
        let evil = root.join("evil");
        evil_library(&evil.join("libnss_evilmod.so.2"), "nss_ld_library_path");
        evil_library(&evil.join("libevil-ctor.so"), "ld_library_path");
        for lib in ["libc.so.6", "libtinfo.so.6", "libselinux.so.1"] {
            let Ok(real) = std::fs::canonicalize(Path::new(LIBDIR).join(lib)) else {
                continue;
            };
            let copy = evil.join(lib);
            std::fs::copy(real, &copy).unwrap();
            run_ok(
                Command::new("patchelf")
                    .args(["--add-needed", "libevil-ctor.so"])
                    .arg(&copy),
            );
        }
        let control = root.join("control");
        std::fs::create_dir_all(&control).unwrap();
        for (host, name) in [
            ("/lib64/ld-linux-x86-64.so.2", "ld.so"),
            ("/lib/x86_64-linux-gnu/libc.so.6", "libc.so.6"),
            ("/bin/true", "true"),
        ] {
            let real = std::fs::canonicalize(host).unwrap_or_else(|e| panic!("{host}: {e}"));
            std::fs::copy(real, control.join(name)).unwrap();
        }
        docker_build(ctx.path(), HOSTILE_IMAGE);
    });
    HOSTILE_IMAGE
}

/// A running hostile container with a host directory at `/vol` for the payloads' markers.
/// Removed (with the directory) on drop.
struct Hostile {
    c: Container,
    vol: tempfile::TempDir,
}

impl Hostile {
    /// `docker run -d -v VOL:/vol DOCKER_ARGS... hostile CMD...` (`cmd` are arguments to
    /// `/busybox`; empty means `sleep`).
    fn start(docker_args: &[&str], cmd: &[&str]) -> Hostile {
        let image = hostile_image();
        let vol = tempfile::tempdir().expect("tempdir");
        let name = unique_name("cc-hostile");
        let id = run_ok(
            Command::new("docker")
                .args(["run", "-d", "--name", &name])
                .arg("-v")
                .arg(format!("{}:/vol", vol.path().display()))
                .args(docker_args)
                .arg(image)
                .args(cmd),
        );
        Hostile {
            c: Container { id, name },
            vol,
        }
    }

    fn id(&self) -> &str {
        &self.c.id
    }

    /// Runs `busybox sh -c SCRIPT` in the container, asserting success.
    fn sh(&self, script: &str) {
        let out = self.c.exec(&["sh", "-c", script]);
        assert!(out.status.success(), "{script}: {}", stderr(&out));
    }

    /// The markers payloads have left so far (`ran-*` in the volume).
    fn markers(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.vol.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("ran-"))
            .collect();
        names.sort();
        names
    }

    fn assert_no_marker(&self, what: &str) {
        let markers = self.markers();
        assert!(
            markers.is_empty(),
            "{what}: the container's code ran in the session, markers: {markers:?}"
        );
    }

    /// Control: waits for `ran-MARK` (a payload run on purpose), then removes it.
    fn expect_marker(&self, mark: &str, what: &str) {
        let path = self.vol.path().join(format!("ran-{mark}"));
        assert!(
            wait_until(Duration::from_secs(5), || path.exists()),
            "control: {what} left no marker ran-{mark}, so the test could not fail: {:?}",
            self.markers()
        );
        std::fs::remove_file(&path).unwrap();
    }

    /// Control: the container's own loader-free busybox runs the script payload.
    fn control_script_payload(&self) {
        let out = run(Command::new("docker").args(["exec", self.id(), "/payload.sh", "control"]));
        assert!(out.status.success(), "{}", stderr(&out));
        self.expect_marker("control", "/payload.sh run with docker exec");
    }

    /// Control: the evil library at `library` (in the container) writes `ran-MARK` when a
    /// program loads it.
    fn control_library(&self, library: &str, mark: &str) {
        let out = run(Command::new("docker").args([
            "exec",
            "-w",
            "/",
            self.id(),
            "/control/ld.so",
            "--library-path",
            "/control:/evil",
            "--preload",
            library,
            "/control/true",
        ]));
        assert!(out.status.success(), "{library}: {}", stderr(&out));
        self.expect_marker(mark, library);
    }

    /// Control: a program run with the library directory `dir` first loads the evil C
    /// library there, which writes `ran-MARK`.
    fn control_library_path(&self, dir: &str, mark: &str) {
        let out = run(Command::new("docker").args([
            "exec",
            self.id(),
            "/control/ld.so",
            "--library-path",
            dir,
            "/control/true",
        ]));
        assert!(out.status.success(), "{dir}: {}", stderr(&out));
        self.expect_marker(mark, &format!("{dir}/libc.so.6"));
    }

    /// The container's `ps` listing (busybox), for assertions about its processes.
    fn ps(&self) -> String {
        stdout(&self.c.exec(&["ps", "-o", "pid,stat,args"]))
    }
}

/// A session image file in its own temp dir.
struct ToolImage {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ToolImage {
    /// [`HOST_TOOLS`] bundled by `crashcart-imgbuild --host`.
    fn host_tools() -> ToolImage {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(format!("{}.img", unique_name("hostile")));
        let mut cmd = Command::new(bin("crashcart-imgbuild"));
        for tool in HOST_TOOLS {
            cmd.args(["--host", tool]);
        }
        run_ok(cmd.arg("-o").arg(&path));
        ToolImage { _dir: dir, path }
    }

    /// busybox and its applets (`sh`, `sleep`, `setsid`, ...); `customize` may add files.
    fn busybox(customize: impl FnOnce(&Path)) -> ToolImage {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        busybox_tree(&tree);
        customize(&tree);
        let path = dir.path().join(format!("{}.img", unique_name("hostile")));
        mke2fs_image(&tree, &path, 16);
        ToolImage { _dir: dir, path }
    }

    /// `crashcart -i IMAGE ARGS...`, with the caller's environment free of `CRASHCART_IMAGE`.
    fn crashcart(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("crashcart"));
        cmd.arg("-i")
            .arg(&self.path)
            .args(args)
            .env_remove("CRASHCART_IMAGE");
        cmd
    }

    /// The shell command line `crashcart -i IMAGE ARGS...` for [`Terminal::start`].
    fn command_line(&self, args: &str) -> String {
        format!(
            "{} -i {} {args}",
            bin("crashcart").display(),
            self.path.display()
        )
    }

    fn loop_devices(&self) -> Vec<String> {
        loop_devices_for(&self.path)
    }

    fn assert_detached(&self) {
        assert!(
            wait_until(Duration::from_secs(10), || self.loop_devices().is_empty()),
            "loop device left: {:?}",
            self.loop_devices()
        );
    }
}

/// Runs `cmd` to completion with stdin from /dev/null, killing it after `limit`.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut status = None;
    let finished = wait_until(limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} still running after {limit:?}");
    }
    Output {
        status: status.unwrap(),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Spawns `cmd` with stdout piped and waits for the first line it prints; returns the session,
/// the rest of its stdout and that line.
fn spawn_until_first_line(cmd: &mut Command) -> (Child, BufReader<ChildStdout>, String) {
    let mut session = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(session.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (session, out, line.trim().to_string())
}

/// Waits at most `limit` for `child` to exit; kills it and panics otherwise.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let mut status = None;
    if !wait_until(limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    }) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what}: still running after {limit:?}");
    }
    status.unwrap()
}

/// Runs the default command (the image's interactive bash, else its sh) on a pty, types
/// `line`, waits for `shows`, then types `exit`; returns what the terminal showed.
fn interactive_session(image: &ToolImage, target: &str, line: &str, shows: &str) -> String {
    let mut term = Terminal::start(&image.command_line(target));
    // Type once the shell prompts (crashcart may flush input typed before it sets up the
    // terminal); a hostile PS1 may print no prompt at all, hence the time limit.
    wait_until(Duration::from_secs(3), || {
        let shown = term.output();
        shown.contains("# ") || shown.contains("$ ")
    });
    term.type_in(line);
    term.shows(shows);
    term.type_in("exit\n");
    term.finish().1
}

/// The container's variables that would make bash (or a program it starts) run the
/// container's code, as `docker run -e` arguments.
const HOSTILE_ENV: &[&str] = &[
    "PROMPT_COMMAND=/payload.sh prompt_command",
    "PS1=$(/payload.sh ps1)",
    "PS4=$(/payload.sh ps4)",
    "SHELLOPTS=xtrace",
    "BASH_FUNC_ls%%=() { /payload.sh bash_func; }",
    "BASH_ENV=/hostile/bash-env.sh",
    "ENV=/hostile/env.sh",
    "INPUTRC=/hostile/inputrc",
    "LD_LIBRARY_PATH=/evil",
    "GCONV_PATH=/evil",
    "PAGER=/payload.sh pager",
    "HOME=/evilhome",
];

#[test]
fn container_environment_does_not_reach_the_images_bash() {
    if !ready() {
        return;
    }
    let image = ToolImage::host_tools();
    let mut all = vec!["-e", "APP_MODE=prod"];
    for var in HOSTILE_ENV {
        all.extend(["-e", var]);
    }
    // HOME alone too: with INPUTRC set, readline would not read $HOME/.inputrc.
    for (what, docker_args) in [
        ("every hostile variable", all),
        (
            "HOME=/evilhome alone",
            vec!["-e", "APP_MODE=prod", "-e", "HOME=/evilhome"],
        ),
    ] {
        let c = Hostile::start(&docker_args, &[]);
        c.control_script_payload();
        c.control_library("/evil/libtinfo.so.6", "ld_library_path");
        c.control_library_path("/evil", "ld_library_path");

        let shown = interactive_session(&image, c.id(), "ls; echo done-$((1+1))\n", "done-2");
        c.assert_no_marker(&format!("{what}: interactive bash on a pty: {shown:?}"));

        let out = run_bounded(
            &mut image.crashcart(&[c.id(), "bash", "-c", "ls; true"]),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        c.assert_no_marker(&format!("{what}: bash -c"));

        let out = run_bounded(
            &mut image.crashcart(&[c.id(), "env"]),
            Duration::from_secs(30),
        );
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        let env = stdout(&out);
        let value = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_string)
        };
        assert_eq!(
            value("HOME").as_deref(),
            Some("/dev/crashcart-home"),
            "{what}:\n{env}"
        );
        assert_eq!(value("APP_MODE").as_deref(), Some("prod"), "{what}:\n{env}");
        for var in HOSTILE_ENV {
            let name = var.split_once('=').unwrap().0;
            // crashcart may set some of these itself (INPUTRC, ENV, GCONV_PATH from the
            // manifest), always to the image's own files; HOME is the session's own.
            if let Some(v) = value(name) {
                assert!(
                    v == "/dev/crashcart-home" || v.starts_with("/dev/crashcart/"),
                    "{what}: the container's {name} reached the command as {v:?}:\n{env}"
                );
            }
        }
        c.assert_no_marker(&format!("{what}: env"));
    }
}

/// Without bash in the image the default command is its `sh`: busybox ash, which sources
/// `$ENV` when interactive.
#[test]
fn container_environment_does_not_reach_the_images_sh() {
    if !ready() {
        return;
    }
    let image = ToolImage::busybox(|_| {});
    let c = Hostile::start(&["-e", "ENV=/hostile/env.sh", "-e", "HOME=/evilhome"], &[]);
    c.sh("/busybox sh -c '. /hostile/env.sh'");
    c.expect_marker("posix_env", "sourcing /hostile/env.sh");
    let shown = interactive_session(&image, c.id(), "echo done-$((1+1))\n", "done-2");
    c.assert_no_marker(&format!("interactive sh on a pty: {shown:?}"));
    image.assert_detached();
}

#[test]
fn container_bash_startup_files_do_not_run_in_the_default_shell() {
    if !ready() {
        return;
    }
    let image = ToolImage::host_tools();
    let c = Hostile::start(&[], &[]);
    c.sh(
        "mkdir -p /etc && cp /hostile/etc/bash.bashrc /hostile/etc/bashrc \
          /hostile/etc/inputrc /hostile/etc/profile /etc/",
    );
    // Control: the planted file runs the payload when a shell reads it.
    c.sh("/busybox sh /etc/bash.bashrc");
    c.expect_marker("etc_bash_bashrc", "sourcing /etc/bash.bashrc");

    let shown = interactive_session(
        &image,
        c.id(),
        "echo \"cart=$CART first=${PATH%%:*}\"; echo done-$((1+1))\n",
        "done-2",
    );
    c.assert_no_marker(&format!("interactive bash on a pty: {shown:?}"));
    // The image's own rc file ran (it sets CART and puts the image first on PATH).
    assert!(
        shown.contains("cart=/dev/crashcart first=/dev/crashcart/"),
        "the image's .crashcartrc did not run: {shown:?}"
    );
}

#[test]
fn container_ld_so_preload_is_never_loaded() {
    if !ready() {
        return;
    }
    let image = ToolImage::host_tools();
    let c = Hostile::start(&[], &[]);
    c.control_library("/evil.so", "preload");
    for (what, plant) in [
        (
            "a regular file naming /evil.so",
            "cp /hostile/ld.so.preload /etc/ld.so.preload",
        ),
        (
            "a symlink through the magic link /proc/self/root to a list naming /evil.so",
            "ln -s /proc/self/root/hostile/ld.so.preload /etc/ld.so.preload",
        ),
        (
            "a symlink to the magic link /proc/self/root/evil.so",
            "ln -s /proc/self/root/evil.so /etc/ld.so.preload",
        ),
    ] {
        c.sh(&format!(
            "mkdir -p /etc && rm -f /etc/ld.so.preload && {plant}"
        ));
        let out = run_bounded(
            &mut image.crashcart(&[c.id(), "bash", "-c", "ls / >/dev/null; id -u; echo ok"]),
            Duration::from_secs(30),
        );
        c.assert_no_marker(what);
        // Either refused as crashcart's own error, or run without the library.
        if out.status.code() == Some(125) {
            assert_crashcart_error(&out, "");
        } else {
            assert!(out.status.success(), "{what}: {}", stderr(&out));
            assert_eq!(stdout(&out), "0\nok\n", "{what}: {}", stderr(&out));
        }
    }
    image.assert_detached();
}

#[test]
fn ld_so_preload_recreated_mid_session_is_not_loaded() {
    if !ready() {
        return;
    }
    let image = ToolImage::host_tools();
    let c = Hostile::start(&[], &[]);
    c.control_library("/evil.so", "preload");
    for (what, before) in [
        (
            "an empty file unlinked and recreated",
            "touch /etc/ld.so.preload",
        ),
        ("a file created mid-session", "true"),
    ] {
        c.sh(&format!(
            "mkdir -p /etc && rm -f /etc/ld.so.preload && {before}"
        ));
        let (mut session, mut rest, line) = spawn_until_first_line(
            image
                .crashcart(&[c.id(), "bash", "-c", "echo started; sleep 2; ls /"])
                .stdin(Stdio::null()),
        );
        assert_eq!(line, "started", "{what}");
        c.sh("rm -f /etc/ld.so.preload && echo /evil.so > /etc/ld.so.preload");
        let status = wait_bounded(&mut session, Duration::from_secs(30), what);
        let mut listing = String::new();
        rest.read_to_string(&mut listing).unwrap();
        c.assert_no_marker(what);
        assert!(status.success(), "{what}: {status}");
        assert!(listing.lines().any(|l| l == "busybox"), "{what}: {listing}");
    }
    image.assert_detached();
}

#[test]
fn container_nss_modules_are_never_loaded() {
    if !ready() {
        return;
    }
    let image = ToolImage::host_tools();
    let c = Hostile::start(&["-e", "LD_LIBRARY_PATH=/evil"], &[]);
    c.sh("mkdir -p /etc && cp /hostile/nsswitch.conf /hostile/passwd /hostile/group /etc/");
    // Controls: each module's constructor runs when the container's loader is asked to load
    // it by the name glibc would build from nsswitch.conf.
    c.control_library("libnss_../../../evil.so.2", "nss_dotdot");
    c.control_library("/lib/x86_64-linux-gnu/libnss_evilmod.so.2", "nss_libdir");
    c.control_library("/evil/libnss_evilmod.so.2", "nss_ld_library_path");

    let out = run_bounded(
        &mut image.crashcart(&[c.id(), "id", "root"]),
        Duration::from_secs(30),
    );
    c.assert_no_marker(&format!("id root: {}", stderr(&out)));
    let out = run_bounded(
        &mut image.crashcart(&[c.id(), "ls", "-l", "/"]),
        Duration::from_secs(30),
    );
    c.assert_no_marker("ls -l /");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(" busybox\n"), "{}", stdout(&out));
    image.assert_detached();
}

#[test]
fn tiocsti_cannot_type_into_the_callers_terminal() {
    if !ready() || !have("bash") {
        return;
    }
    let image = ToolImage::host_tools();
    let c = Hostile::start(&[], &[]);
    // Markers on the host, in a directory the container cannot see.
    let host = tempfile::tempdir().unwrap();
    let host_tiocsti = host.path().join("tiocsti");
    tiocsti_program(&host_tiocsti);
    let control_marker = host.path().join("typed-on-the-host");
    let marker = host.path().join("typed-by-the-container");

    let mut term = Terminal::start("bash --norc --noprofile -i");
    term.type_in("PS1='READY''> '\n");
    term.shows("READY> ");
    // Control: run on this terminal directly, the payload does type a command into it.
    term.type_in(&format!(
        "{} {}\necho control-$((1+2))\n",
        host_tiocsti.display(),
        control_marker.display()
    ));
    term.shows("control-3");
    let typed = wait_until(Duration::from_secs(5), || control_marker.exists());
    assert!(
        typed,
        "control: TIOCSTI typed nothing here, so the test could not fail:\n{:?}",
        term.output()
    );

    term.type_in(&format!(
        "{} /tiocsti {}; echo crashcart-exited-$((6+1))\n",
        image.command_line(c.id()),
        marker.display()
    ));
    term.shows("tiocsti pushed");
    // Typed only once crashcart is gone: while it runs, input goes to the command.
    term.shows("crashcart-exited-7");
    // Whatever it pushed into the caller's terminal would be read before this line.
    term.type_in("true; echo after-$((2+3))\n");
    term.shows("after-5");
    std::thread::sleep(Duration::from_secs(1));
    // The shell reads its input in order: by `exit`, any line pushed before it has run.
    term.type_in("exit\n");
    let (_, shown) = term.finish();
    assert!(
        !marker.exists(),
        "a container process typed a command into the caller's terminal and the host ran it:\n\
         {shown:?}"
    );
    image.assert_detached();
}

#[test]
fn the_command_gets_its_own_terminal_or_pipes() {
    if !ready() {
        return;
    }
    let image = ToolImage::host_tools();
    let c = Hostile::start(&[], &[]);
    // On a terminal: a pty of the container's own devpts.
    let mut term =
        Terminal::start(&image.command_line(&format!("{} bash -c 'tty; read x'", c.id())));
    // `tty`'s whole line: /dev/pts/N and the end of the line.
    let pts_number = |shown: &str| -> Option<String> {
        let rest = &shown[shown.find("/dev/pts/")? + "/dev/pts/".len()..];
        let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let ended = rest[n.len()..].starts_with(['\r', '\n']);
        (!n.is_empty() && ended).then_some(n)
    };
    let mut n = None;
    let printed = wait_until(Duration::from_secs(20), || {
        n = pts_number(&term.output());
        n.is_some()
    });
    assert!(printed, "tty printed no /dev/pts/N: {:?}", term.output());
    let n = n.unwrap();
    let pts = stdout(&c.c.exec(&["ls", "/dev/pts"]));
    assert!(
        pts.split_whitespace().any(|p| p == n),
        "the command's tty /dev/pts/{n} is not one of the container's: {pts}"
    );
    term.type_in("\n");
    let (code, shown) = term.finish();
    assert_eq!(code, Some(0), "{shown:?}");

    // Without a terminal: pipes, even when the caller's stdin is /dev/null.
    let out = run_bounded(
        &mut image.crashcart(&[c.id(), "tty"]),
        Duration::from_secs(30),
    );
    assert_eq!(stdout(&out).trim(), "not a tty", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(1));
    let out = run_bounded(
        &mut image.crashcart(&[c.id(), "ls", "-l", "/proc/self/fd/"]),
        Duration::from_secs(30),
    );
    let listing = stdout(&out);
    for fd in ["0", "1", "2"] {
        let line = listing
            .lines()
            .find(|l| l.contains(&format!(" {fd} -> ")))
            .unwrap_or_else(|| panic!("no fd {fd} in:\n{listing}"));
        assert!(line.contains("pipe:["), "fd {fd} is not a pipe: {line}");
    }
    image.assert_detached();
}

#[test]
fn sigkill_of_crashcart_kills_every_process_of_the_session() {
    if !ready() {
        return;
    }
    let image = ToolImage::busybox(|_| {});
    let c = Hostile::start(&[], &[]);
    let (mut session, _, line) = spawn_until_first_line(&mut image.crashcart(&[
        c.id(),
        "sh",
        "-c",
        "sleep 1111 & setsid sleep 2222 & echo started; wait",
    ]));
    assert_eq!(line, "started");
    // Both jobs have been forked; wait until they run sleep.
    let running = wait_until(Duration::from_secs(5), || {
        let ps = c.ps();
        ps.contains("sleep 1111") && ps.contains("sleep 2222")
    });
    assert!(running, "{}", c.ps());
    session.kill().unwrap(); // SIGKILL
    session.wait().unwrap();
    let gone = wait_until(Duration::from_secs(10), || {
        let ps = c.ps();
        !ps.contains("sleep 1111") && !ps.contains("sleep 2222")
    });
    assert!(gone, "session processes outlived crashcart:\n{}", c.ps());
    image.assert_detached();

    // A command that exits normally leaves no background job behind either.
    let out = run_bounded(
        &mut image.crashcart(&[c.id(), "sh", "-c", "sleep 3333 >/dev/null 2>&1 & echo bye"]),
        Duration::from_secs(30),
    );
    assert_eq!(stdout(&out).trim(), "bye", "{}", stderr(&out));
    let gone = wait_until(Duration::from_secs(2), || !c.ps().contains("sleep 3333"));
    assert!(gone, "a background job outlived the session:\n{}", c.ps());
    image.assert_detached();
}

#[test]
fn target_stopping_mid_session_is_reported() {
    if !ready() {
        return;
    }
    let image = ToolImage::busybox(|_| {});
    let c = Hostile::start(&[], &[]);
    let pid = c.c.pid();
    let (mut session, _, line) = spawn_until_first_line(
        image
            .crashcart(&[c.id(), "sh", "-c", "echo started; sleep 600"])
            .stderr(Stdio::piped()),
    );
    assert_eq!(line, "started");
    run_ok(Command::new("docker").args(["kill", c.id()]));
    wait_bounded(
        &mut session,
        Duration::from_secs(10),
        "crashcart after docker kill",
    );
    let mut err = String::new();
    session
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains(&format!("target pid {pid} exited")),
        "stderr does not say the target exited: {err:?}"
    );
    image.assert_detached();
}

#[test]
fn unmount_leaves_a_volume_at_dev_crashcart_alone() {
    if !ready() {
        return;
    }
    // A tmpfs of the container's own.
    let c = Hostile::start(&["--tmpfs", "/dev/crashcart"], &[]);
    c.sh("echo keep > /dev/crashcart/keep");
    let out = run_bounded(
        Command::new(bin("crashcart")).args(["-u", c.id()]),
        Duration::from_secs(30),
    );
    assert_crashcart_error(&out, "not crashcart's mount");
    let kept = c.c.exec(&["cat", "/dev/crashcart/keep"]);
    assert_eq!(
        stdout(&kept),
        "keep\n",
        "the container's tmpfs is gone: {}",
        stderr(&kept)
    );

    // A host directory as a volume.
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("keep"), "host data\n").unwrap();
    let volume = format!("{}:/dev/crashcart", host.path().display());
    let c = Hostile::start(&["-v", &volume], &[]);
    let out = run_bounded(
        Command::new(bin("crashcart")).args(["-u", c.id()]),
        Duration::from_secs(30),
    );
    assert_crashcart_error(&out, "not crashcart's mount");
    let kept = c.c.exec(&["cat", "/dev/crashcart/keep"]);
    assert_eq!(
        stdout(&kept),
        "host data\n",
        "the volume is gone: {}",
        stderr(&kept)
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("keep")).unwrap(),
        "host data\n"
    );
}

#[test]
fn a_planted_store_alias_is_refused() {
    if !ready() {
        return;
    }
    let image = ToolImage::busybox(|tree| {
        std::fs::create_dir_all(tree.join(".crashcart")).unwrap();
        std::fs::write(
            tree.join(".crashcart/manifest.json"),
            r#"{"format":1,"store_alias":"/dev/.cart"}"#,
        )
        .unwrap();
        std::fs::create_dir_all(tree.join("store/abc-tool")).unwrap();
        std::fs::write(tree.join("store/abc-tool/marker"), "stored\n").unwrap();
    });
    for (what, plant) in [
        ("a symlink to /evil", "ln -s /evil /dev/.cart"),
        (
            "a directory",
            "mkdir /dev/.cart && echo keep > /dev/.cart/keep",
        ),
    ] {
        let c = Hostile::start(&[], &["sh", "-c", &format!("{plant} && exec sleep 1000")]);
        let planted = format!("/proc/{}/root/dev/.cart", c.c.pid());
        assert!(
            wait_until(Duration::from_secs(10), || std::fs::symlink_metadata(
                &planted
            )
            .is_ok()),
            "{what}: not planted"
        );
        let evil_before = stdout(&c.c.exec(&["ls", "-A", "/evil"]));
        let out = run_bounded(
            &mut image.crashcart(&["-m", c.id()]),
            Duration::from_secs(30),
        );
        assert_crashcart_error(&out, "/dev/.cart");
        let dev = stdout(&c.c.exec(&["ls", "-a", "/dev"]));
        assert!(
            !dev.contains("crashcart"),
            "{what}: /dev/crashcart left: {dev}"
        );
        let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", c.c.pid())).unwrap();
        assert!(!mountinfo.contains("/dev/loop"), "{what}: {mountinfo}");
        if what.starts_with("a symlink") {
            let link = stdout(&c.c.exec(&["readlink", "/dev/.cart"]));
            assert_eq!(link.trim(), "/evil", "{what}");
            let evil = stdout(&c.c.exec(&["ls", "-A", "/evil"]));
            assert_eq!(evil, evil_before, "{what}: /evil changed");
        } else {
            let listing = stdout(&c.c.exec(&["ls", "-A", "/dev/.cart"]));
            assert_eq!(listing, "keep\n", "{what}");
        }
        image.assert_detached();
    }
}

#[test]
fn an_implicit_image_must_belong_to_root() {
    if !ready() {
        return;
    }
    // Its bin/bash (the default command) proves it ran.
    let image = ToolImage::busybox(|tree| {
        let bash = tree.join("bin/bash");
        std::fs::write(
            &bash,
            "#!/dev/crashcart/bin/sh\n/dev/crashcart/bin/touch /vol/ran-implicit_image\n",
        )
        .unwrap();
        std::fs::set_permissions(&bash, std::fs::Permissions::from_mode(0o755)).unwrap();
    });
    let c = Hostile::start(&[], &[]);
    // Planted directories under the build tree (root-owned 0755 all the way), not under /tmp.
    let parent = bin("crashcart").parent().unwrap().to_path_buf();
    let cases: [(&str, u32, u32, u32, u32, bool); 6] = [
        // (what, dir owner, dir mode, file owner, file mode, used)
        ("a directory writable by others", 0, 0o777, 0, 0o644, false),
        ("a group-writable directory", 0, 0o775, 0, 0o644, false),
        (
            "a directory owned by uid 1000",
            1000,
            0o755,
            0,
            0o644,
            false,
        ),
        ("a file owned by uid 1000", 0, 0o755, 1000, 0o644, false),
        ("a file writable by others", 0, 0o755, 0, 0o666, false),
        (
            "root's file in root's directory (control)",
            0,
            0o755,
            0,
            0o644,
            true,
        ),
    ];
    for (what, dir_uid, dir_mode, file_uid, file_mode, used) in cases {
        let dir = tempfile::tempdir_in(&parent).unwrap();
        let planted = dir.path().join("crashcart.img");
        std::fs::copy(&image.path, &planted).unwrap();
        std::os::unix::fs::chown(&planted, Some(file_uid), Some(0)).unwrap();
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(file_mode)).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(dir_uid), Some(0)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(dir_mode)).unwrap();
        let out = run_bounded(
            Command::new(bin("crashcart"))
                .env_remove("CRASHCART_IMAGE")
                .current_dir(dir.path())
                .arg(c.id()),
            Duration::from_secs(30),
        );
        if used {
            assert!(out.status.success(), "{what}: {}", stderr(&out));
            c.expect_marker("implicit_image", what);
        } else {
            c.assert_no_marker(what);
            assert_crashcart_error(&out, "-i");
        }
        assert!(
            wait_until(Duration::from_secs(10), || loop_devices_for(&planted)
                .is_empty()),
            "{what}: loop device left"
        );
    }
    // Symlinks: either directory on the way (the one the symlink is in, the one it leads into)
    // writable by others lets the file be swapped between the check and the open. The first
    // case (a container-writable directory holding a link to root's own image) is the one a
    // check of the final file alone would let through.
    for (what, link_dir_mode, target_dir_mode) in [
        (
            "a symlink in a shared directory to root's image",
            0o777,
            0o755,
        ),
        ("a symlink into a shared directory", 0o755, 0o777),
    ] {
        let link_dir = tempfile::tempdir_in(&parent).unwrap();
        let target_dir = tempfile::tempdir_in(&parent).unwrap();
        let real = target_dir.path().join("real.img");
        std::fs::copy(&image.path, &real).unwrap();
        std::os::unix::fs::symlink(&real, link_dir.path().join("crashcart.img")).unwrap();
        for (dir, mode) in [(&link_dir, link_dir_mode), (&target_dir, target_dir_mode)] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let out = run_bounded(
            Command::new(bin("crashcart"))
                .env_remove("CRASHCART_IMAGE")
                .current_dir(link_dir.path())
                .arg(c.id()),
            Duration::from_secs(30),
        );
        c.assert_no_marker(what);
        assert_crashcart_error(&out, "-i");
    }
}

/// crashcart opens the pty's multiplexer in the container's `/dev/pts`, which a container can
/// replace (here: a tmpfs it owns). A FIFO, a symlink (through the magic link `/proc/self/root`
/// to a file of the volume) or a regular file in place of `ptmx` is never opened as the
/// session's terminal: crashcart neither hangs nor writes there, and falls back to pipes.
#[test]
fn a_planted_dev_pts_ptmx_is_never_used_as_the_terminal() {
    if !ready() {
        return;
    }
    let image = ToolImage::busybox(|_| {});
    let c = Hostile::start(&["--tmpfs", "/dev/pts"], &[]);
    std::fs::write(c.vol.path().join("bait"), "untouched\n").unwrap();
    for (what, plant) in [
        ("a FIFO", "mkfifo /dev/pts/ptmx"),
        (
            "a symlink through /proc/self/root",
            "ln -s /proc/self/root/vol/bait /dev/pts/ptmx",
        ),
        ("a regular file", "echo planted > /dev/pts/ptmx"),
    ] {
        c.sh(&format!("rm -f /dev/pts/ptmx && {plant}"));
        let mut term = Terminal::start(&image.command_line(&format!(
            "{} sh -c 'tty; echo fd0=$(readlink /proc/self/fd/0)'",
            c.id()
        )));
        term.shows("fd0=");
        let (code, shown) = term.finish();
        assert!(shown.contains("not a tty"), "{what}: {shown:?}");
        assert!(shown.contains("fd0=pipe:"), "{what}: {shown:?}");
        assert_eq!(code, Some(0), "{what}: {shown:?}");
    }
    assert_eq!(
        std::fs::read_to_string(c.vol.path().join("bait")).unwrap(),
        "untouched\n"
    );
    image.assert_detached();
}

/// The `Uid:`, `Gid:` and `Groups:` lines of a `/proc/PID/status`, each on one line.
fn credential_lines(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:") || l.starts_with("Groups:"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn user_names_are_read_from_the_containers_files_as_data() {
    if !ready() {
        return;
    }
    let image = ToolImage::busybox(|_| {});
    let c = Hostile::start(&["-e", "LD_LIBRARY_PATH=/evil"], &[]);
    // The NSS modules of container_nss_modules_are_never_loaded, and a user of the container.
    c.sh(
        "mkdir -p /etc && cp /hostile/nsswitch.conf /hostile/passwd /hostile/group /etc/ && \
         echo 'app:x:4242:4243::/evilhome:/payload.sh' >> /etc/passwd && \
         echo 'apps:x:4244:nobody,app' >> /etc/group",
    );
    c.control_library("libnss_../../../evil.so.2", "nss_dotdot");
    c.control_library("/lib/x86_64-linux-gnu/libnss_evilmod.so.2", "nss_libdir");
    c.control_library("/evil/libnss_evilmod.so.2", "nss_ld_library_path");
    let out = run_bounded(
        &mut image.crashcart(&["--user", "app", c.id(), "cat", "/proc/self/status"]),
        Duration::from_secs(30),
    );
    c.assert_no_marker("--user app");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        credential_lines(&stdout(&out)),
        [
            "Uid: 4242 4242 4242 4242",
            "Gid: 4243 4243 4243 4243",
            "Groups: 4243 4244"
        ]
    );
    // A name only NSS could answer is unknown, not looked up through the modules.
    let out = run_bounded(
        &mut image.crashcart(&["--user", "root", c.id(), "true"]),
        Duration::from_secs(30),
    );
    assert_crashcart_error(&out, "no user \"root\" in the container's /etc/passwd");
    c.assert_no_marker("--user root");

    // A file on the host that the container names: never read.
    let host = tempfile::tempdir().unwrap();
    std::fs::set_permissions(host.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let host_passwd = host.path().join("passwd");
    std::fs::write(&host_passwd, "hostonly:x:4321:4321::/:/bin/sh\n").unwrap();
    let host_passwd = host_passwd.display().to_string();
    let pid = c.c.pid();
    // Set up from the host, through the container's root: `docker exec` itself (runc) reads
    // the container's /etc/passwd and would hang on the FIFO.
    let etc = format!("/proc/{pid}/root/etc");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("ln -s {host_passwd} passwd"),
            "hostonly",
            "no user \"hostonly\"",
        ),
        (
            format!("ln -s ../../../../../../../..{host_passwd} passwd"),
            "hostonly",
            "no user \"hostonly\"",
        ),
        (
            format!("ln -s /proc/self/root{host_passwd} passwd"),
            "hostonly",
            "/etc/passwd",
        ),
        (
            "mkfifo passwd".into(),
            "app",
            "/etc/passwd is not a regular file",
        ),
        (
            "mknod passwd c 1 5".into(),
            "app",
            "/etc/passwd is not a regular file",
        ),
        (
            "mkdir passwd".into(),
            "app",
            "/etc/passwd is not a regular file",
        ),
        (
            "truncate -s 17M passwd".into(),
            "app",
            "/etc/passwd is larger than",
        ),
        (
            "printf 'big:x:99999999999:0::/:/x\\nneg:x:-1:0::/:/x\\n+app:x:1:1::/:/x\\n' \
             > passwd"
                .into(),
            "big",
            "no user \"big\"",
        ),
        (
            "printf 'big:x:99999999999:0::/:/x\\nneg:x:-1:0::/:/x\\n' > passwd".into(),
            "neg",
            "no user \"neg\"",
        ),
        (
            "echo 'app:x:4242:4243::/:/x' > passwd && rm -f group && mkfifo group".into(),
            "app",
            "/etc/group is not a regular file",
        ),
    ];
    for (setup, user, needle) in &cases {
        run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!("rm -rf passwd && {setup}"))
                .current_dir(&etc),
        );
        if setup.starts_with(&format!("ln -s {host_passwd}")) {
            // Control: followed from the host, the link does lead to the host's file.
            let naive = std::fs::read_to_string(format!("{etc}/passwd"));
            assert!(
                naive.is_ok_and(|t| t.contains("hostonly")),
                "control: {setup} does not reach the host file"
            );
        }
        let out = run_bounded(
            &mut image.crashcart(&["--user", user, c.id(), "true"]),
            Duration::from_secs(30),
        );
        assert_crashcart_error(&out, needle);
        c.assert_no_marker(setup);
    }
    // Leave files docker can live with.
    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("rm -rf passwd group")
            .current_dir(&etc),
    );
    image.assert_detached();
}
