//! End-to-end tests for `crashcart-imgbuild --host PROG`: bundle the test machine's own
//! bash, strace, ps, ip, tcpdump and gdb (and a `#!` script), inject the image with crashcart
//! into containers that have no C library, or a broken one, and make each tool do real work.
//! Bad input must fail with a clear message and leave nothing at `-o`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crashcart_tests::{bin, docker_ready, have, run, run_ok, skip, unique_name, Container};

/// The tools the issue asks for.
const TOOLS: &[&str] = &["bash", "strace", "ps", "ip", "tcpdump", "gdb"];

/// An image built by `crashcart-imgbuild`, in a temp dir removed on drop.
struct HostImage {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

/// Runs `crashcart-imgbuild ARGS... -o OUT`.
fn imgbuild(args: &[&OsStr], out: &Path) -> Output {
    run(Command::new(bin("crashcart-imgbuild"))
        .args(args)
        .arg("-o")
        .arg(out))
}

/// Builds an image of the six tools plus `extra` host programs.
fn build_tools_image(extra: &[&Path]) -> HostImage {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("host.img");
    let mut args: Vec<&OsStr> = Vec::new();
    for tool in TOOLS {
        args.extend([OsStr::new("--host"), OsStr::new(tool)]);
    }
    for program in extra {
        args.extend([OsStr::new("--host"), program.as_os_str()]);
    }
    let out = imgbuild(&args, &path);
    assert!(
        out.status.success(),
        "crashcart-imgbuild failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    HostImage { _dir: dir, path }
}

/// `crashcart -i IMAGE TARGET COMMAND...`, as a `Command` to run or spawn.
fn crashcart(image: &Path, target: &str, command: &[&str]) -> Command {
    let mut cmd = Command::new(bin("crashcart"));
    cmd.arg("-i").arg(image).arg(target).args(command);
    cmd
}

/// Runs a command through crashcart, asserting success; returns stdout and stderr.
fn session_ok(image: &Path, target: &str, command: &[&str]) -> (String, String) {
    let out = run(&mut crashcart(image, target, command));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "crashcart {command:?} failed with {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Whether this machine has everything the tool tests bundle.
fn tools_present() -> bool {
    if !have("patchelf") {
        skip("patchelf not installed");
        return false;
    }
    for tool in TOOLS {
        if !have(tool) && !Path::new("/usr/sbin").join(tool).exists() {
            skip(&format!("{tool} not installed on this host"));
            return false;
        }
    }
    true
}

/// A `/etc/passwd` like distroless base images ship, bind-mounted into the container so
/// `ps` can show names through the bundled NSS `files` module and tcpdump can drop
/// privileges to a user the container knows.
fn passwd_file(dir: &Path) -> PathBuf {
    let path = dir.join("passwd");
    std::fs::write(
        &path,
        "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
    )
    .expect("write passwd");
    path
}

/// A `#!/bin/sh` script using only shell builtins, to check that scripts bring their
/// interpreter and have their `#!` line rewritten.
fn shell_script(dir: &Path) -> PathBuf {
    let path = dir.join("cc-greet");
    std::fs::write(
        &path,
        "#!/bin/sh\nset -- one two three\nprintf 'script-%s-%s\\n' \"$#\" \"$3\"\n",
    )
    .expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Reads a file out of an ext2/3 image with debugfs (no mount needed).
fn read_from_image(image: &Path, path: &str) -> String {
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(image)
            .stderr(Stdio::null()),
    )
}

#[test]
fn host_tools_do_real_work_in_a_distroless_container() {
    if !docker_ready() || !tools_present() {
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let script = shell_script(scratch.path());
    let image = build_tools_image(&[&script]);

    // The manifest lists each program with its host path and the package dpkg names.
    let manifest: serde_json::Value =
        serde_json::from_str(&read_from_image(&image.path, "/.crashcart/manifest.json"))
            .expect("manifest is JSON");
    let programs = manifest["programs"].as_array().expect("programs array");
    let bash = programs
        .iter()
        .find(|p| p["name"] == "bash")
        .expect("bash in manifest");
    assert!(bash["host_path"]
        .as_str()
        .is_some_and(|p| p.ends_with("/bash")));
    if have("dpkg-query") {
        let version = run_ok(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "bash"]));
        assert_eq!(bash["package"], "bash");
        assert_eq!(bash["version"], version.as_str());
    }
    for tool in TOOLS {
        assert!(
            programs.iter().any(|p| p["name"] == *tool),
            "{tool} missing from manifest programs: {programs:?}"
        );
    }
    assert!(
        manifest["env"]["TERMINFO_DIRS"]
            .as_str()
            .is_some_and(|v| v.starts_with("/dev/crashcart/share/terminfo")),
        "manifest env: {}",
        manifest["env"]
    );

    let passwd = passwd_file(scratch.path());
    let passwd_mount = format!("{}:/etc/passwd:ro", passwd.display());
    let container = Container::start(&["-v", &passwd_mount], &[]);
    let target = container.id.as_str();

    // bash with a pipeline: two bundled programs and a pipe inside the container.
    let (out, _) = session_ok(
        &image.path,
        target,
        &[
            "bash",
            "-c",
            "echo crashcart host bundle | while read a b c; do echo \"$c-$b\"; done | { read l; echo \"got:$l\"; }",
        ],
    );
    assert_eq!(out.trim(), "got:bundle-host", "bash pipeline output");

    // The session gets the manifest's TERMINFO_DIRS, and it holds the common terminals.
    let (out, _) = session_ok(
        &image.path,
        target,
        &[
            "bash",
            "-c",
            "echo \"$TERMINFO_DIRS\"; for t in x/xterm x/xterm-256color l/linux s/screen v/vt100; do \
             [ -s \"${TERMINFO_DIRS%%:*}/$t\" ] && echo \"$t\"; done",
        ],
    );
    assert_eq!(
        out,
        "/dev/crashcart/share/terminfo:\nx/xterm\nx/xterm-256color\nl/linux\ns/screen\nv/vt100\n"
    );

    // The script runs through the image's copy of its interpreter.
    let (out, _) = session_ok(&image.path, target, &["cc-greet"]);
    assert_eq!(out.trim(), "script-3-three");

    // strace -f follows a child it starts.
    let (_, err) = session_ok(
        &image.path,
        target,
        &[
            "strace",
            "-f",
            "-e",
            "trace=execve",
            "bash",
            "-c",
            "/busybox true; /busybox true",
        ],
    );
    assert!(
        err.contains("[pid ") && err.contains("execve(\"/busybox\", [\"/busybox\", \"true\"]"),
        "strace -f did not show the child's execve:\n{err}"
    );

    // ps sees the container's PID 1 (by user name, through NSS files) and nothing of the host.
    let (out, _) = session_ok(&image.path, target, &["ps", "-eo", "pid,user,args"]);
    let pid1 = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_else(|| panic!("no PID 1 in ps output:\n{out}"));
    assert!(
        pid1.contains("root") && pid1.contains("/busybox sleep"),
        "PID 1 is the container's init, shown as root: {pid1}"
    );
    assert!(
        out.lines().count() < 10 && !out.contains("dockerd"),
        "ps shows host processes:\n{out}"
    );

    // ip addr shows the container's interfaces: its eth0 address is the one Docker gave it.
    let address = run_ok(Command::new("docker").args([
        "inspect",
        "-f",
        "{{.NetworkSettings.IPAddress}}",
        target,
    ]));
    let (out, _) = session_ok(&image.path, target, &["ip", "addr"]);
    assert!(
        out.contains("127.0.0.1/8"),
        "no loopback in ip addr:\n{out}"
    );
    if !address.is_empty() {
        assert!(
            out.contains(&format!("{address}/")),
            "no {address} in:\n{out}"
        );
    }

    // tcpdump captures a packet on the container's loopback while busybox pings it.
    let mut tcpdump = crashcart(
        &image.path,
        target,
        &["tcpdump", "-Z", "root", "-n", "-c", "1", "-i", "lo", "icmp"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn crashcart tcpdump");
    let started = Instant::now();
    while tcpdump.try_wait().expect("wait tcpdump").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = tcpdump.kill();
            break;
        }
        let _ = container.exec(&["ping", "-c", "1", "-W", "1", "127.0.0.1"]);
    }
    let out = tcpdump.wait_with_output().expect("tcpdump output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("127.0.0.1 > 127.0.0.1: ICMP echo"),
        "tcpdump captured nothing ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // gdb (with its embedded Python) attaches to PID 1 and prints a backtrace.
    let (out, err) = session_ok(
        &image.path,
        target,
        &["gdb", "-batch", "-p", "1", "-ex", "bt"],
    );
    assert!(
        out.lines().any(|l| l.starts_with("#0 ")),
        "gdb printed no backtrace:\n{out}\n{err}"
    );
    assert!(
        !err.contains("Python not initialized") && !err.contains("Fatal Python error"),
        "gdb's Python did not start:\n{err}"
    );
    let (out, _) = session_ok(
        &image.path,
        target,
        &[
            "gdb",
            "-batch",
            "-ex",
            "python print(__import__('sys').prefix)",
        ],
    );
    assert_eq!(out.trim(), "/dev/crashcart");
}

#[test]
fn python_and_file_bring_their_data() {
    if !docker_ready() || !tools_present() {
        return;
    }
    // /usr/bin/python3, not PATH's python3: that may be a version manager's shim script.
    let python = Path::new("/usr/bin/python3");
    if !python.exists() || !have("file") {
        skip("python3 or file not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("py.img");
    let out = imgbuild(
        &[
            OsStr::new("--host"),
            python.as_os_str(),
            OsStr::new("--host"),
            OsStr::new("file"),
        ],
        &image,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Bundling is reproducible: a second build is byte-identical.
    let again = dir.path().join("py-again.img");
    let out = imgbuild(
        &[
            OsStr::new("--host"),
            python.as_os_str(),
            OsStr::new("--host"),
            OsStr::new("file"),
        ],
        &again,
    );
    assert!(out.status.success());
    assert!(
        std::fs::read(&image).expect("read image") == std::fs::read(&again).expect("read image"),
        "two --host builds of the same programs differ"
    );

    let container = Container::start(&[], &[]);
    // Python finds the bundled standard library under /dev/crashcart by itself.
    let (out, _) = session_ok(
        &image,
        &container.id,
        &[
            "python3",
            "-c",
            "import sys, json; print(sys.prefix, json.dumps(sorted({'b': 1, 'a': 2})))",
        ],
    );
    assert_eq!(out.trim(), r#"/dev/crashcart ["a", "b"]"#);
    // file reads the bundled magic database (MAGIC from the manifest).
    let (out, _) = session_ok(&image, &container.id, &["file", "/busybox"]);
    assert!(
        out.contains("ELF 64-bit") || out.contains("ELF 32-bit"),
        "file: {out}"
    );
}

/// Builds a `FROM scratch` image whose C library is broken on purpose: a decoy
/// `libc.so.6`, `libtinfo.so.6` and loader, `LD_LIBRARY_PATH` pointing at them, and an
/// unpatched copy of the host's bash that must fail there — so the bundled tools working
/// proves nothing is taken from the container.
fn decoy_libc_image() -> String {
    let tag = "crashcart-test-host-decoy:latest";
    let ctx = tempfile::tempdir().expect("tempdir");
    let multiarch = format!("{}-linux-gnu", std::env::consts::ARCH);
    let libdir = ctx.path().join("lib").join(&multiarch);
    std::fs::create_dir_all(&libdir).expect("mkdir lib");
    std::fs::create_dir_all(ctx.path().join("lib64")).expect("mkdir lib64");
    for decoy in [
        libdir.join("libc.so.6"),
        libdir.join("libtinfo.so.6"),
        libdir.join("libnss_files.so.2"),
        ctx.path().join("lib64/ld-linux-x86-64.so.2"),
    ] {
        std::fs::write(decoy, "not a library\n").expect("write decoy");
    }
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).expect("copy busybox");
    std::fs::copy(
        std::fs::canonicalize("/bin/bash").expect("host bash"),
        ctx.path().join("hostbash"),
    )
    .expect("copy bash");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /busybox\nCOPY hostbash /bin/bash\nCOPY lib /lib\n\
             COPY lib64 /lib64\nENV LD_LIBRARY_PATH=/lib/{multiarch}\n\
             ENTRYPOINT [\"/busybox\"]\nCMD [\"sleep\", \"2147483647\"]\n"
        ),
    )
    .expect("write Dockerfile");
    crashcart_tests::docker_build(ctx.path(), tag);
    tag.to_string()
}

#[test]
fn bundle_ignores_a_containers_broken_libc() {
    if !docker_ready() || !tools_present() {
        return;
    }
    let image = build_tools_image(&[]);
    let tag = decoy_libc_image();
    let name = unique_name("cc-host-decoy");
    let id = run_ok(Command::new("docker").args(["run", "-d", "--name", &name, &tag]));
    let container = DockerContainer(id);

    // The container's own dynamic programs cannot run: its libc is the decoy.
    let own = run(Command::new("docker").args(["exec", &container.0, "/bin/bash", "-c", "true"]));
    assert!(
        !own.status.success(),
        "the decoy libc did not break the container's bash"
    );

    let (out, _) = session_ok(
        &image.path,
        &container.0,
        &[
            "bash",
            "-c",
            "echo \"[$LD_LIBRARY_PATH]\" | while read d; do echo \"saw $d\"; done",
        ],
    );
    // The pipeline runs on the image's libc, and the container's LD_LIBRARY_PATH (which names
    // the decoy) is not handed to the session's tools at all.
    assert_eq!(out.trim(), "saw []", "bash pipeline in decoy container");
    let (out, _) = session_ok(&image.path, &container.0, &["ps", "-o", "pid,args"]);
    assert!(
        out.contains("/busybox sleep"),
        "ps in decoy container: {out}"
    );
    let (out, _) = session_ok(
        &image.path,
        &container.0,
        &["gdb", "-batch", "-p", "1", "-ex", "bt"],
    );
    assert!(
        out.lines().any(|l| l.starts_with("#0 ")),
        "gdb in decoy container: {out}"
    );
}

/// Builds a `FROM scratch` image whose only C library is musl (as on Alpine): PID 1 is a
/// musl-linked program compiled here with musl-gcc, which prints `musl-ok` and waits.
fn musl_image() -> String {
    let tag = "crashcart-test-host-musl:latest";
    let ctx = tempfile::tempdir().expect("tempdir");
    let source = ctx.path().join("waiter.c");
    std::fs::write(
        &source,
        "#include <stdio.h>\n#include <unistd.h>\n\
         int main(void) { puts(\"musl-ok\"); fflush(stdout); for (;;) pause(); }\n",
    )
    .expect("write waiter.c");
    run_ok(
        Command::new("musl-gcc")
            .arg("-o")
            .arg(ctx.path().join("waiter"))
            .arg(&source),
    );
    let loader = format!("ld-musl-{}.so.1", std::env::consts::ARCH);
    std::fs::copy(
        std::fs::canonicalize(Path::new("/lib").join(&loader)).expect("musl loader"),
        ctx.path().join("libc.so"),
    )
    .expect("copy musl");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY libc.so /lib/{loader}\nCOPY waiter /waiter\n\
             ENTRYPOINT [\"/waiter\"]\n"
        ),
    )
    .expect("write Dockerfile");
    crashcart_tests::docker_build(ctx.path(), tag);
    tag.to_string()
}

#[test]
fn bundle_runs_beside_a_musl_libc() {
    if !docker_ready() || !tools_present() {
        return;
    }
    if !have("musl-gcc") {
        skip("musl-gcc not installed (apt-get install musl-tools)");
        return;
    }
    let image = build_tools_image(&[]);
    let tag = musl_image();
    let name = unique_name("cc-host-musl");
    let id = run_ok(Command::new("docker").args(["run", "-d", "--name", &name, &tag]));
    let container = DockerContainer(id);
    // The container's own musl program runs: it is a working musl root.
    let started = Instant::now();
    loop {
        let logs = run(Command::new("docker").args(["logs", &container.0]));
        if String::from_utf8_lossy(&logs.stdout).contains("musl-ok") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the musl container's PID 1 did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (out, _) = session_ok(
        &image.path,
        &container.0,
        &[
            "bash",
            "-c",
            "printf '%s\\n' b a | while read x; do echo \"<$x>\"; done",
        ],
    );
    assert_eq!(out, "<b>\n<a>\n");
    let (out, _) = session_ok(&image.path, &container.0, &["ps", "-o", "pid,args"]);
    assert!(out.contains("/waiter"), "ps in the musl container: {out}");
    // gdb attaches to the musl-linked PID 1 and reads the container's musl for symbols. The
    // session's mount namespace is a private copy of the container's, and gdb's default
    // "target:" sysroot would setns() into the target's to read its files, which the debug
    // profile forbids: the image's rc file (what the default shell reads) runs gdb with
    // sysroot "/", where the session sees the same files.
    let (out, err) = session_ok(
        &image.path,
        &container.0,
        &[
            "bash",
            "-c",
            ". /dev/crashcart/.crashcartrc && gdb -batch -p 1 -ex bt",
        ],
    );
    assert!(
        out.lines().any(|l| l.starts_with("#0 ")) && out.contains("ld-musl"),
        "gdb backtrace of the musl PID 1:\n{out}\n{err}"
    );
}

/// A container started with plain `docker run`, force-removed on drop.
struct DockerContainer(String);

impl Drop for DockerContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs `crashcart-imgbuild --host PROG -o OUT` and checks it fails, says `expected` (all of
/// them, case-insensitively), and leaves nothing at `OUT`.
fn assert_rejected(program: &OsStr, expected: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out.img");
    let out = imgbuild(&[OsStr::new("--host"), program], &out_path);
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success(), "--host {program:?} was accepted");
    assert!(
        out.status.code().is_some_and(|c| c != 0 && c < 128),
        "--host {program:?}: exit {:?}, expected an error code",
        out.status
    );
    for needle in expected {
        assert!(
            stderr.contains(&needle.to_lowercase()),
            "--host {program:?}: error does not mention {needle:?}: {stderr}"
        );
    }
    assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");
    assert!(
        !out_path.exists(),
        "--host {program:?} left {}",
        out_path.display()
    );
}

#[test]
fn program_not_found_is_an_error() {
    assert_rejected(
        OsStr::new("crashcart-no-such-tool"),
        &["crashcart-no-such-tool", "not found"],
    );
    assert_rejected(
        OsStr::new("/nonexistent/dir/tool"),
        &["/nonexistent/dir/tool", "not found"],
    );
}

#[test]
fn non_elf_without_interpreter_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = dir.path().join("notes");
    std::fs::write(&text, "just some text\n").expect("write");
    std::fs::set_permissions(&text, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_rejected(
        text.as_os_str(),
        &[&text.display().to_string(), "interpreter"],
    );

    let script = dir.path().join("orphan");
    std::fs::write(&script, "#!/nonexistent/interp -x\necho\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_rejected(script.as_os_str(), &["/nonexistent/interp", "not found"]);
}

#[test]
fn foreign_architecture_is_an_error() {
    // A minimal ELF64 header for an aarch64 (or, on aarch64 hosts, x86-64) executable.
    let foreign: u16 = if std::env::consts::ARCH == "aarch64" {
        62
    } else {
        183
    };
    let mut header = vec![0u8; 64];
    header[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    header[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    header[18..20].copy_from_slice(&foreign.to_le_bytes());
    header[20..24].copy_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    header[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("arm-tool");
    std::fs::write(&path, &header).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let machine = if foreign == 183 { "aarch64" } else { "x86_64" };
    assert_rejected(path.as_os_str(), &[&path.display().to_string(), machine]);
}

#[test]
fn missing_library_is_named_with_its_program() {
    if !have("patchelf") {
        skip("patchelf not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = dir.path().join("needy");
    std::fs::copy(
        std::fs::canonicalize("/bin/true").expect("host true"),
        &tool,
    )
    .expect("copy");
    run_ok(
        Command::new("patchelf")
            .args(["--add-needed", "libdoesnotexist.so.7"])
            .arg(&tool),
    );
    assert_rejected(
        tool.as_os_str(),
        &[
            "libdoesnotexist.so.7",
            &tool.display().to_string(),
            "not found",
        ],
    );
}

/// A hostile container's loader hooks (`/etc/ld.so.preload`, `LD_PRELOAD`, `LD_AUDIT`) must not
/// run its code inside the image's tools during a session. `docker exec` of the same tool
/// after `-m` (which crashcart does not guard) shows that the hook is real: there the
/// container's `LD_PRELOAD` reaches the loader (its preload file no longer does, see
/// `container_config_never_reaches_image_tools_by_construction`).
#[test]
fn container_loader_hooks_do_not_reach_session_tools() {
    if !docker_ready() || !tools_present() {
        return;
    }
    if !have("gcc") {
        skip("gcc not installed (builds the hijacking library)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("hijack.c");
    std::fs::write(
        &source,
        "#include <unistd.h>\n\
         __attribute__((constructor)) static void hijack(void) {\n\
         write(2, \"HIJACKED\\n\", 9);\n}\n",
    )
    .expect("write hijack.c");
    let library = dir.path().join("hijack.so");
    run_ok(
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&library)
            .arg(&source),
    );
    let image = dir.path().join("bash.img");
    let out = imgbuild(&[OsStr::new("--host"), OsStr::new("bash")], &image);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let container = Container::start(
        &["-e", "LD_PRELOAD=/hijack.so", "-e", "LD_AUDIT=/hijack.so"],
        &[],
    );
    run_ok(
        Command::new("docker")
            .arg("cp")
            .arg(&library)
            .arg(format!("{}:/hijack.so", container.id)),
    );
    let planted = container.exec(&[
        "sh",
        "-c",
        "mkdir -p /etc && echo /hijack.so > /etc/ld.so.preload",
    ]);
    assert!(planted.status.success(), "cannot plant /etc/ld.so.preload");

    let out = run(&mut crashcart(
        &image,
        &container.id,
        &["bash", "-c", "echo clean; echo \"[$LD_PRELOAD]\""],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "session failed: {stderr}");
    assert_eq!(stdout.trim(), "clean\n[]", "stdout: {stdout}");
    assert!(
        !stderr.contains("HIJACKED"),
        "the container's preload ran in the session: {stderr}"
    );

    // The container itself is untouched.
    let own = container.exec(&["cat", "/etc/ld.so.preload"]);
    assert_eq!(String::from_utf8_lossy(&own.stdout).trim(), "/hijack.so");

    // Control: the same bash started by docker exec after -m, with the container's
    // environment, is hijacked through LD_PRELOAD.
    run_ok(
        Command::new(bin("crashcart"))
            .arg("-i")
            .arg(&image)
            .args(["-m", &container.id]),
    );
    let exec = run(Command::new("docker").args([
        "exec",
        &container.id,
        "/dev/crashcart/bin/bash",
        "-c",
        "echo via-exec",
    ]));
    run_ok(
        Command::new(bin("crashcart"))
            .arg("-i")
            .arg(&image)
            .args(["-u", &container.id]),
    );
    assert!(
        String::from_utf8_lossy(&exec.stderr).contains("HIJACKED"),
        "control: the planted preload did not run under docker exec, so the test proves nothing: {}",
        String::from_utf8_lossy(&exec.stderr)
    );
}

/// Debian's compiled-in gconv directory, which the container may fill.
const HOST_GCONV_DIR: &str = "/usr/lib/x86_64-linux-gnu/gconv";

/// Markers the hostile container's payloads leave when any of them runs.
const PWNED_MARKERS: &str = "/pwned-bashrc /pwned-gconv /pwned-inputrc /pwned-nss /pwned-preload";

/// Compiles a library whose constructor creates `marker` (in the process's root).
fn marker_library(dir: &Path, name: &str, marker: &str) -> PathBuf {
    let source = dir.join(format!("{name}.c"));
    std::fs::write(
        &source,
        format!(
            "#include <fcntl.h>\n#include <unistd.h>\n\
             __attribute__((constructor)) static void pwn(void) {{\n\
             close(open(\"{marker}\", O_WRONLY | O_CREAT, 0644));\n}}\n"
        ),
    )
    .expect("write library source");
    let library = dir.join(format!("{name}.so"));
    run_ok(
        Command::new("gcc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&library)
            .arg(&source),
    );
    library
}

/// Runs `cmd` with `input` on its stdin.
fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// The markers present in the container (empty when none).
fn markers_in(container: &Container) -> String {
    let out = container.exec(&["sh", "-c", &format!("ls {PWNED_MARKERS} 2>/dev/null")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker exec [-i] [DOCKER_ARGS] CONTAINER COMMAND...` with `input` on stdin.
fn docker_exec(
    container: &Container,
    docker_args: &[&str],
    command: &[&str],
    input: &str,
) -> Output {
    run_with_stdin(
        Command::new("docker")
            .args(["exec", "-i"])
            .args(docker_args)
            .arg(&container.id)
            .args(command),
        input,
    )
}

/// The image's programs ignore the container's `/etc/ld.so.preload` (a file, or a symlink
/// through `/proc/self/root`), `/etc/nsswitch.conf`, `/etc/bash.bashrc` and `/etc/inputrc` by
/// construction: not only in crashcart sessions but also when the container's own processes
/// run them after `crashcart -m` with `docker exec`, where nothing covers those files. Each
/// payload is shown to work when it is named explicitly (the controls at the end).
#[test]
fn container_config_never_reaches_image_tools_by_construction() {
    if !docker_ready() || !have("patchelf") {
        if !have("patchelf") {
            skip("patchelf not installed");
        }
        return;
    }
    if !have("gcc") {
        skip("gcc not installed (builds the payload libraries)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let preload = marker_library(dir.path(), "preload", "/pwned-preload");
    let nss = marker_library(dir.path(), "nss", "/pwned-nss");
    let gconv = marker_library(dir.path(), "gconv", "/pwned-gconv");
    let image = dir.path().join("confined.img");
    let out = imgbuild(
        &[
            OsStr::new("--host"),
            OsStr::new("bash"),
            OsStr::new("--host"),
            OsStr::new("ls"),
            OsStr::new("--host"),
            OsStr::new("iconv"),
        ],
        &image,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fsck = run(Command::new("e2fsck").arg("-fn").arg(&image));
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    // The names are gone from the bundled loader, libc and bash, and the manifest says so.
    let scratch = dir.path().join("dumped");
    std::fs::create_dir(&scratch).expect("mkdir");
    for (file, gone) in [
        ("lib/ld-linux-x86-64.so.2", "/etc/ld.so.preload"),
        ("lib/ld-linux-x86-64.so.2", "\0/etc/ld.so.cache\0"),
        ("lib/libc.so.6", "/etc/nsswitch.conf"),
        ("lib/libc.so.6", "\0/usr/lib/x86_64-linux-gnu/gconv\0"),
        ("bin/bash", "/etc/bash.bashrc"),
        ("bin/bash", "/etc/inputrc"),
    ] {
        let dumped = scratch.join(Path::new(file).file_name().unwrap());
        run_ok(
            Command::new("debugfs")
                .arg("-R")
                .arg(format!("dump {file} {}", dumped.display()))
                .arg(&image)
                .stderr(Stdio::null()),
        );
        let bytes = std::fs::read(&dumped).expect("dumped file");
        assert!(bytes.starts_with(b"\x7fELF"), "{file} dumped");
        assert!(
            !bytes.windows(gone.len()).any(|w| w == gone.as_bytes()),
            "{file} still names {gone:?}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&read_from_image(&image, "/.crashcart/manifest.json"))
            .expect("manifest is JSON");
    let ignores = manifest["ignores"].as_array().expect("ignores array");
    for path in [
        "/etc/ld.so.preload",
        "/etc/ld.so.cache",
        "/etc/bash.bashrc",
        "/etc/inputrc",
        "/etc/nsswitch.conf",
        HOST_GCONV_DIR,
    ] {
        assert!(ignores.iter().any(|p| p == path), "{path} in {ignores:?}");
    }
    assert!(
        manifest["env"].get("GCONV_PATH").is_none(),
        "libc finds the image's gconv modules without GCONV_PATH: {}",
        manifest["env"]
    );

    // The hostile container: a preload list, an NSS "module" that is a path (glibc dlopens
    // `libnss_/../../evil.so.2` from the working directory `/`), a bashrc, an inputrc, and a
    // gconv module for a charset of its own in glibc's default gconv directory.
    let container = Container::start(&[], &[]);
    for (from, to) in [
        (&preload, "/evil-preload.so"),
        (&nss, "/evil.so.2"),
        (&gconv, "/evil-gconv.so"),
    ] {
        run_ok(
            Command::new("docker")
                .arg("cp")
                .arg(from)
                .arg(format!("{}:{to}", container.id)),
        );
    }
    let planted = container.exec(&[
        "sh",
        "-c",
        "mkdir -p /etc /libnss_ && \
         echo /evil-preload.so > /etc/ld.so.preload && \
         printf 'passwd: /../../evil\\ngroup: /../../evil\\n' > /etc/nsswitch.conf && \
         echo 'echo bashrc > /pwned-bashrc' > /etc/bash.bashrc && \
         cp /etc/bash.bashrc /etc/bashrc && \
         printf '\"Z\": \"echo inputrc > /pwned-inputrc\\\\n\"\\n' > /etc/inputrc && \
         mkdir -p /usr/lib/x86_64-linux-gnu/gconv && \
         printf 'module EVIL// INTERNAL /evil-gconv 1\\nmodule INTERNAL EVIL// /evil-gconv 1\\n' \
           > /usr/lib/x86_64-linux-gnu/gconv/gconv-modules",
    ]);
    assert!(
        planted.status.success(),
        "cannot plant the payloads: {}",
        String::from_utf8_lossy(&planted.stderr)
    );
    let interactive = [
        "/dev/crashcart/bin/bash",
        "-i",
        "-c",
        "/dev/crashcart/bin/ls -ln / >/dev/null",
    ];
    let readline = ["/dev/crashcart/bin/bash", "-i"];
    let typed = "Z\nexit 0\n";
    let evil_charset = ["/dev/crashcart/bin/iconv", "-f", "EVIL", "-t", "UTF-8"];
    let latin9 = [
        "/dev/crashcart/bin/iconv",
        "-f",
        "UTF-8",
        "-t",
        "ISO-8859-15",
    ];
    let converted = |round: &str, how: &str, out: &Output| {
        assert_eq!(
            out.stdout,
            [0xa4],
            "{round}: {how}: the image's ISO-8859-15 module converts the euro sign: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };

    let check_sessions = |round: &str| {
        let out = run(&mut crashcart(&image, &container.id, &interactive));
        assert!(
            out.status.success(),
            "{round}: session failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(&mut crashcart(&image, &container.id, &["ls", "-l", "/"]));
        assert!(out.status.success(), "{round}: ls failed");
        let out = run_with_stdin(&mut crashcart(&image, &container.id, &readline), typed);
        assert!(out.status.success(), "{round}: bash -i failed");
        run_with_stdin(&mut crashcart(&image, &container.id, &evil_charset), "x");
        let out = run_with_stdin(&mut crashcart(&image, &container.id, &latin9), "\u{20ac}");
        converted(round, "session", &out);
        assert_eq!(markers_in(&container), "", "{round}: crashcart session");
    };
    let check_exec = |round: &str| {
        run_ok(
            Command::new(bin("crashcart"))
                .arg("-i")
                .arg(&image)
                .args(["-m", &container.id]),
        );
        let runs = [
            docker_exec(&container, &[], &interactive, ""),
            docker_exec(&container, &[], &["/dev/crashcart/bin/ls", "-l", "/"], ""),
            docker_exec(&container, &[], &readline, typed),
        ];
        docker_exec(&container, &[], &evil_charset, "x");
        converted(
            round,
            "docker exec",
            &docker_exec(&container, &[], &latin9, "\u{20ac}"),
        );
        run_ok(
            Command::new(bin("crashcart"))
                .arg("-i")
                .arg(&image)
                .args(["-u", &container.id]),
        );
        for out in &runs {
            assert!(
                out.status.success(),
                "{round}: docker exec failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(markers_in(&container), "", "{round}: docker exec after -m");
    };
    check_sessions("plain files");
    check_exec("plain files");

    // The preload list as a symlink through the magic link /proc/self/root.
    let relinked = container.exec(&[
        "sh",
        "-c",
        "mv /etc/ld.so.preload /etc/preload.list && \
         ln -s /proc/self/root/etc/preload.list /etc/ld.so.preload",
    ]);
    assert!(relinked.status.success(), "cannot relink the preload list");
    check_sessions("magic link");
    check_exec("magic link");

    // Controls: each payload runs when the tool is pointed at it explicitly, so the absent
    // markers above mean "not read", not "broken payload".
    run_ok(
        Command::new(bin("crashcart"))
            .arg("-i")
            .arg(&image)
            .args(["-m", &container.id]),
    );
    let controls = [
        docker_exec(
            &container,
            &["-e", "LD_PRELOAD=/evil-preload.so"],
            &["/dev/crashcart/bin/bash", "-c", "true"],
            "",
        ),
        docker_exec(
            &container,
            &[],
            &[
                "/dev/crashcart/bin/bash",
                "--rcfile",
                "/etc/bash.bashrc",
                "-i",
                "-c",
                "true",
            ],
            "",
        ),
        docker_exec(
            &container,
            &["-e", "INPUTRC=/etc/inputrc"],
            &readline,
            typed,
        ),
        docker_exec(
            &container,
            &["-e", "LD_PRELOAD=/evil.so.2", "-e", "LD_LIBRARY_PATH="],
            &["/dev/crashcart/bin/ls", "/"],
            "",
        ),
    ];
    // Fails (the module has no conversion functions) after its constructor ran.
    docker_exec(
        &container,
        &["-e", &format!("GCONV_PATH={HOST_GCONV_DIR}")],
        &evil_charset,
        "x",
    );
    run_ok(
        Command::new(bin("crashcart"))
            .arg("-i")
            .arg(&image)
            .args(["-u", &container.id]),
    );
    for out in &controls {
        assert!(
            out.status.success(),
            "control failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        markers_in(&container),
        PWNED_MARKERS.replace(' ', "\n"),
        "controls: every payload runs when named explicitly"
    );
}
