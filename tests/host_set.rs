//! End-to-end tests for `crashcart-imgbuild --host-package` and `--host-set debug`: whole host
//! packages bundled from the machine's own dpkg database, and the tools an SRE needs working
//! without flags in a distroless (`FROM scratch` + busybox) container: a pipeline of
//! coreutils, `ps aux | grep`, tcpdump without `-Z`, vim with its runtime, any terminal of
//! the host's terminfo, `man`, and a host script (gdb's `gcore`) that calls other bundled
//! programs.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crashcart_tests::{bin, docker_ready, have, run, run_ok, skip, Container};

/// The packages `--host-set debug` takes on Debian, as tests/setup.sh installs them.
const DEBUG_SET_PACKAGES: &[&str] = &[
    "bash",
    "coreutils",
    "procps",
    "iproute2",
    "util-linux",
    "findutils",
    "grep",
    "sed",
    "gawk",
    "less",
    "curl",
    "bind9-dnsutils",
    "tcpdump",
    "strace",
    "gdb",
    "lsof",
    "htop",
    "vim",
    "jq",
    "netcat-openbsd",
    "psmisc",
    "ncurses-bin",
    "man-db",
    "groff-base",
    "bsdextrautils",
];

/// Runs `crashcart-imgbuild ARGS... -o OUT` with `env` added.
fn imgbuild(args: &[&OsStr], out: &Path, env: &[(&str, &OsStr)]) -> Output {
    let mut cmd = Command::new(bin("crashcart-imgbuild"));
    cmd.args(args).arg("-o").arg(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// Whether this host is a dpkg host with every package of the debug set and patchelf.
fn debug_set_installed() -> bool {
    if !have("dpkg-query") || !have("patchelf") {
        skip("needs dpkg-query and patchelf (a Debian host, tests/setup.sh)");
        return false;
    }
    let out = run(Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}${binary:Package}\n"])
        .args(DEBUG_SET_PACKAGES));
    let listed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&&str> = DEBUG_SET_PACKAGES
        .iter()
        .filter(|p| {
            !listed
                .lines()
                .any(|l| l.starts_with("ii") && l[3..].split(':').next() == Some(**p))
        })
        .collect();
    if !missing.is_empty() {
        skip(&format!(
            "packages not installed (tests/setup.sh): {missing:?}"
        ));
        return false;
    }
    true
}

/// The `--host-set debug` image, built once for the tests of this file, with the
/// builder's stderr.
struct DebugImage {
    _dir: tempfile::TempDir,
    path: PathBuf,
    stderr: String,
}

fn debug_image() -> &'static DebugImage {
    static IMAGE: OnceLock<DebugImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("debug.img");
        let out = imgbuild(&[OsStr::new("--host-set"), OsStr::new("debug")], &path, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "--host-set debug failed: {stderr}");
        DebugImage {
            _dir: dir,
            path,
            stderr,
        }
    })
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

/// The type and target of `path` in the image, as debugfs `stat` says it.
fn stat_in_image(image: &Path, path: &str) -> String {
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("stat {path}"))
            .arg(image)
            .stderr(Stdio::null()),
    )
}

fn manifest(image: &Path) -> serde_json::Value {
    serde_json::from_str(&read_from_image(image, "/.crashcart/manifest.json"))
        .expect("manifest is JSON")
}

/// `crashcart -i IMAGE TARGET COMMAND...`.
fn crashcart(image: &Path, target: &str, command: &[&str]) -> Command {
    let mut cmd = Command::new(bin("crashcart"));
    cmd.arg("-i").arg(image).arg(target).args(command);
    cmd
}

/// Runs a command through crashcart with stdin closed, asserting success; returns stdout and
/// stderr.
fn session_ok(image: &Path, target: &str, command: &[&str]) -> (String, String) {
    let out = run(crashcart(image, target, command).stdin(Stdio::null()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "crashcart {command:?} failed with {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    (stdout, stderr)
}

#[test]
fn debug_set_is_an_image_an_sre_can_live_in() {
    if !docker_ready() || !debug_set_installed() {
        return;
    }
    let image = debug_image();
    // Every member is installed here: nothing skipped, nothing said.
    assert!(
        !image.stderr.contains("skipped"),
        "nothing is missing on this host: {}",
        image.stderr
    );
    let fsck = run(Command::new("e2fsck").arg("-fn").arg(&image.path));
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let manifest = manifest(&image.path);
    let env = &manifest["env"];
    assert_eq!(
        env["VIMRUNTIME"]
            .as_str()
            .map(|v| v.starts_with("/dev/crashcart/share/vim/vim")),
        Some(true),
        "{env}"
    );
    assert_eq!(env["MANPATH"], "/dev/crashcart/share/man", "{env}");
    assert_eq!(
        env["TERMINFO_DIRS"], "/dev/crashcart/share/terminfo:",
        "{env}"
    );
    let programs = manifest["programs"].as_array().expect("programs");
    for name in [
        "bash", "ls", "sort", "head", "ps", "pgrep", "ip", "ss", "findmnt", "find", "grep", "sed",
        "awk", "less", "curl", "dig", "tcpdump", "strace", "gdb", "gcore", "lsof", "htop", "vim",
        "vi", "jq", "nc", "killall", "tput", "man", "col",
    ] {
        assert!(
            programs.iter().any(|p| p["name"] == name),
            "{name} missing from the debug set's programs"
        );
    }
    // vi is the alternatives system's name for vim: a symlink in the image, not a copy.
    assert!(
        stat_in_image(&image.path, "/bin/vi").contains("Type: symlink"),
        "bin/vi is a symlink"
    );

    let container = Container::start(&[], &[]);
    let target = container.id.as_str();

    // A pipeline of coreutils in a container that has nothing but /busybox.
    let (out, _) = session_ok(
        &image.path,
        target,
        &["bash", "-c", "ls / | sort | head -n 2"],
    );
    assert_eq!(out, "busybox\ndev\n");
    // ps aux sees the container's init; grep picks it out.
    let (out, _) = session_ok(
        &image.path,
        target,
        &["bash", "-c", "ps aux | grep '[b]usybox sleep'"],
    );
    assert!(
        out.lines().count() == 1 && out.split_whitespace().nth(1) == Some("1"),
        "ps aux | grep: {out}"
    );
    // Any terminal of the host's terminfo (xterm-kitty is in kitty-terminfo, not ncurses).
    let (out, _) = session_ok(&image.path, target, &["tput", "-T", "xterm-kitty", "cols"]);
    assert_eq!(out.trim(), "80");
    // vim finds defaults.vim, syntax files and filetype plugins.
    let (out, err) = session_ok(
        &image.path,
        target,
        &[
            "vim",
            "-Es",
            "-u",
            "DEFAULTS",
            "-i",
            "NONE",
            "-c",
            "syntax on",
            "-c",
            "set ft=python",
            "-c",
            "put =[exists('g:syntax_on'), exists('b:did_ftplugin'), get(b:, 'current_syntax', 'none'), v:errmsg]",
            "-c",
            "%print",
            "-c",
            "qa!",
        ],
    );
    assert_eq!(
        out.lines().map(str::trim).collect::<Vec<_>>(),
        ["", "1", "1", "python", ""],
        "vim: {out}\n{err}"
    );
    assert!(!err.contains("E1187") && !err.contains("E484"), "{err}");
    // man formats a bundled tool's page.
    let (out, err) = session_ok(&image.path, target, &["man", "-P", "cat", "strace"]);
    assert!(
        out.contains("strace - trace system calls and signals"),
        "man strace:\n{out}\n{err}"
    );
    // gcore, a bash script, finds dirname and gdb in the image and writes a core of PID 1.
    let (out, err) = session_ok(
        &image.path,
        target,
        &["gcore", "-o", "/dev/shm/cc-core", "1"],
    );
    assert!(
        !err.contains("command not found") && out.contains("Saved corefile /dev/shm/cc-core.1"),
        "gcore:\n{out}\n{err}"
    );
    let (out, _) = session_ok(
        &image.path,
        target,
        &["bash", "-c", "head -c 4 /dev/shm/cc-core.1 | od -An -c"],
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["177", "E", "L", "F"]
    );

    // tcpdump captures without -Z in a container that has no tcpdump user (no /etc at all).
    let mut tcpdump = crashcart(
        &image.path,
        target,
        &["tcpdump", "-n", "-c", "1", "-i", "lo", "icmp"],
    )
    .stdin(Stdio::null())
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("127.0.0.1 > 127.0.0.1: ICMP echo"),
        "tcpdump without -Z captured nothing ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("Couldn't find user"), "{stderr}");
}

/// Control for the tcpdump patch: the host's own tcpdump, bundled unpatched by copying it
/// with `--dir`, stops at the user it was built to switch to. So the capture above working
/// is the image's doing.
#[test]
fn unpatched_tcpdump_stops_at_its_user() {
    if !docker_ready() || !debug_set_installed() {
        return;
    }
    let image = debug_image();
    let container = Container::start(&[], &[]);
    let host = ["/usr/bin/tcpdump", "/usr/sbin/tcpdump"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("tcpdump installed");
    copy_unpatched(&container, Path::new(host), "/tcpdump-unpatched");
    let out = run(crashcart(
        &image.path,
        &container.id,
        &["/tcpdump-unpatched", "-n", "-c", "1", "-i", "lo"],
    )
    .stdin(Stdio::null()));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Couldn't find user 'tcpdump'"),
        "control: the host's tcpdump should stop at its user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies the host program `host` into the container at `at` as the host built it, only
/// pointed at the image's loader and libraries (what the builder does to every program,
/// without the rewrites the tests check): the control for what the image's copy changes.
fn copy_unpatched(container: &Container, host: &Path, at: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("program");
    std::fs::copy(host, &copy).expect("copy the host program");
    run_ok(
        Command::new("patchelf")
            .args([
                "--set-interpreter",
                "/dev/crashcart/lib/ld-linux-x86-64.so.2",
            ])
            .args(["--set-rpath", "/dev/crashcart/lib", "--force-rpath"])
            .arg(&copy),
    );
    run_ok(
        Command::new("docker")
            .arg("cp")
            .arg(&copy)
            .arg(format!("{}:{at}", container.id)),
    );
}

/// A copy of the host's dpkg database without `drop` (its status stanza removed), for
/// `DPKG_ADMINDIR`: the real dpkg-query then answers as on a host where `drop` is not
/// installed.
fn dpkg_admindir_without(dir: &Path, drop: &str) -> PathBuf {
    let admindir = dir.join("dpkg");
    std::fs::create_dir_all(admindir.join("updates")).expect("mkdir");
    let status = std::fs::read_to_string("/var/lib/dpkg/status").expect("dpkg status");
    let kept: Vec<&str> = status
        .split("\n\n")
        .filter(|stanza| !stanza.lines().any(|l| l == format!("Package: {drop}")))
        .collect();
    assert!(
        kept.len() < status.split("\n\n").count(),
        "{drop} in dpkg status"
    );
    std::fs::write(admindir.join("status"), kept.join("\n\n")).expect("write status");
    for name in ["diversions", "statoverride"] {
        let _ = std::fs::copy(Path::new("/var/lib/dpkg").join(name), admindir.join(name));
    }
    std::os::unix::fs::symlink("/var/lib/dpkg/info", admindir.join("info")).expect("link info");
    admindir
}

#[test]
fn debug_set_names_what_the_host_lacks_on_one_line() {
    if !debug_set_installed() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let admindir = dpkg_admindir_without(dir.path(), "htop");
    let out_path = dir.path().join("debug.img");
    let out = imgbuild(
        &[OsStr::new("--host-set"), OsStr::new("debug")],
        &out_path,
        &[("DPKG_ADMINDIR", admindir.as_os_str())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let skipped: Vec<&str> = stderr.lines().filter(|l| l.contains("skipped")).collect();
    assert_eq!(
        skipped,
        ["crashcart-imgbuild: --host-set debug: not installed on this host, skipped: htop"],
        "{stderr}"
    );
    let programs = manifest(&out_path)["programs"].clone();
    let programs = programs.as_array().expect("programs");
    assert!(!programs.iter().any(|p| p["name"] == "htop"));
    assert!(programs.iter().any(|p| p["name"] == "strace"));
    // -q: no summary and no notes.
    let out = imgbuild(
        &[
            OsStr::new("--host-set"),
            OsStr::new("debug"),
            OsStr::new("-q"),
        ],
        &dir.path().join("quiet.img"),
        &[("DPKG_ADMINDIR", admindir.as_os_str())],
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn a_package_brings_its_programs_alternatives_and_pages() {
    if !have("dpkg-query") || !have("patchelf") {
        skip("needs dpkg-query and patchelf (a Debian host, tests/setup.sh)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("procps.img");
    let out = imgbuild(
        &[
            OsStr::new("--host-package"),
            OsStr::new("procps"),
            OsStr::new("--host-package"),
            OsStr::new("gawk"),
        ],
        &image,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = manifest(&image);
    let programs = manifest["programs"].as_array().expect("programs");
    let listed = run_ok(Command::new("dpkg-query").args(["-L", "procps"]));
    for path in listed.lines().filter(|l| l.contains("bin/")) {
        let name = Path::new(path).file_name().unwrap().to_string_lossy();
        let program = programs
            .iter()
            .find(|p| p["name"] == *name)
            .unwrap_or_else(|| panic!("{path} of procps not bundled"));
        assert_eq!(program["package"], "procps", "{program}");
    }
    // awk is the alternatives system's name for gawk.
    let awk = programs.iter().find(|p| p["name"] == "awk").expect("awk");
    assert!(awk["host_path"]
        .as_str()
        .is_some_and(|p| p.ends_with("/gawk")));
    // procps's manual pages, under MANPATH.
    assert_eq!(manifest["env"]["MANPATH"], "/dev/crashcart/share/man");
    assert!(stat_in_image(&image, "/share/man/man1/ps.1.gz").contains("Type: regular"));
}

#[test]
fn an_unknown_package_is_bad_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out.img");
    let out = imgbuild(
        &[
            OsStr::new("--host-package"),
            OsStr::new("crashcart-no-such-package"),
        ],
        &out_path,
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(
        stderr,
        "crashcart-imgbuild: --host: package crashcart-no-such-package is not installed on this \
         host (asked dpkg-query, then rpm)\n"
    );
    assert!(!out_path.exists());
    // A package named as a program: the error says which flag bundles it.
    if have("dpkg-query") {
        let out = imgbuild(
            &[OsStr::new("--host"), OsStr::new("coreutils")],
            &out_path,
            &[],
        );
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "crashcart-imgbuild: --host: program coreutils not found on PATH; coreutils is a \
             package: --host-package coreutils bundles its programs\n"
        );
        assert!(!out_path.exists());
    } else {
        skip("dpkg-query not installed: the package hint is not checked");
    }
    // A program that is not there is the same class of error, with the same code.
    let out = imgbuild(
        &[OsStr::new("--host"), OsStr::new("crashcart-no-such-tool")],
        &out_path,
        &[],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(!out_path.exists());
    // And --help documents that code for them.
    let help = run_ok(Command::new(bin("crashcart-imgbuild")).arg("--help"));
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains(
            "3 bad input (among it a --host program or --host-package package this host does not have)"
        ),
        "{help}"
    );
}

/// The container is the attacker: a system vimrc and a man-db configuration planted in its
/// `/etc` run commands when read (vim's Ex commands, man-db's `DEFINE tbl`). The image's
/// vim never reads the container's `/etc/vim/vimrc`, and its man reads the image's own
/// configuration; each payload is shown to work when the tool is pointed at it explicitly
/// (vim) or when the host's man reads its compiled-in path.
#[test]
fn planted_vimrc_and_man_config_never_run() {
    if !docker_ready() || !debug_set_installed() {
        return;
    }
    let image = debug_image();
    let ignores = manifest(&image.path)["ignores"].clone();
    for path in [
        "/etc/vim/vimrc",
        "/etc/manpath.config",
        "/usr/libexec/man-db/zsoelim",
    ] {
        assert!(
            ignores
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p == path)),
            "{path} in {ignores}"
        );
    }
    let container = Container::start(&[], &[]);
    let planted = container.exec(&[
        "sh",
        "-c",
        "mkdir -p /etc/vim && \
         echo \"call writefile(['x'], '/pwned-vimrc')\" > /etc/vim/vimrc && \
         printf 'MANDATORY_MANPATH /dev/crashcart/share/man\\nDEFINE tbl /busybox touch /pwned-man\\n' \
           > /etc/manpath.config",
    ]);
    assert!(planted.status.success(), "cannot plant the payloads");
    let markers = || {
        let out = container.exec(&["sh", "-c", "ls /pwned-vimrc /pwned-man 2>/dev/null"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    session_ok(&image.path, &container.id, &["vim", "-Es", "-c", "qa!"]);
    session_ok(&image.path, &container.id, &["man", "-P", "cat", "strace"]);
    assert_eq!(markers(), "", "a planted file ran in the session");
    // Controls: named explicitly, each payload runs.
    session_ok(
        &image.path,
        &container.id,
        &["vim", "-Es", "-u", "/etc/vim/vimrc", "-c", "qa!"],
    );
    copy_unpatched(&container, Path::new("/usr/bin/man"), "/man-unpatched");
    run(crashcart(
        &image.path,
        &container.id,
        &["/man-unpatched", "-P", "cat", "strace"],
    )
    .stdin(Stdio::null()));
    assert_eq!(markers(), "/pwned-man\n/pwned-vimrc", "controls");
}

/// On an rpm host (no dpkg), packages come from rpm's database. Here: a real rpm database in
/// a temporary directory (`%_dbpath` in `$HOME/.rpmmacros`), holding a package built with
/// rpmbuild that owns the host's `/usr/bin/true`, and a `PATH` without dpkg-query.
#[test]
fn rpm_database_when_there_is_no_dpkg() {
    if !have("rpm") || !have("rpmbuild") || !have("patchelf") {
        skip("needs rpm, rpmbuild and patchelf (tests/setup.sh)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let home = root.join("home");
    std::fs::create_dir_all(&home).expect("mkdir home");
    std::fs::write(
        home.join(".rpmmacros"),
        format!("%_dbpath {0}/db\n%_topdir {0}/top\n", root.display()),
    )
    .expect("write .rpmmacros");
    let spec = root.join("test.spec");
    std::fs::write(
        &spec,
        "Name: crashcart-rpm-test\nVersion: 1\nRelease: 2\nSummary: test\nLicense: MIT\n\
         %description\ntest\n%install\nmkdir -p %{buildroot}/usr/bin\n\
         cp /usr/bin/true %{buildroot}/usr/bin/true\n%files\n/usr/bin/true\n",
    )
    .expect("write spec");
    let rpm = |args: &[&OsStr]| {
        run_ok(
            Command::new("rpm")
                .args(args)
                .env("HOME", &home)
                .stderr(Stdio::null()),
        )
    };
    run_ok(
        Command::new("rpmbuild")
            .arg("-bb")
            .arg(&spec)
            .env("HOME", &home)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let built = walk_for_rpm(&root.join("top/RPMS")).expect("rpmbuild made a package");
    rpm(&[OsStr::new("--initdb")]);
    rpm(&[
        OsStr::new("-i"),
        OsStr::new("--justdb"),
        OsStr::new("--nodeps"),
        built.as_os_str(),
    ]);
    // A PATH with rpm and patchelf, and no dpkg-query.
    let bin_dir = root.join("bin");
    std::fs::create_dir(&bin_dir).expect("mkdir bin");
    for tool in ["rpm", "patchelf"] {
        let path = run_ok(Command::new("sh").args(["-c", &format!("command -v {tool}")]));
        std::os::unix::fs::symlink(path, bin_dir.join(tool)).expect("symlink");
    }
    let env = [("PATH", bin_dir.as_os_str()), ("HOME", home.as_os_str())];
    let image = root.join("rpm.img");
    let out = imgbuild(
        &[
            OsStr::new("--host-package"),
            OsStr::new("crashcart-rpm-test"),
        ],
        &image,
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let programs = manifest(&image)["programs"].clone();
    let truth = programs
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "true").cloned())
        .unwrap_or_else(|| panic!("true not bundled: {programs}"));
    assert_eq!(truth["package"], "crashcart-rpm-test", "{truth}");
    assert_eq!(truth["version"], "1-2", "{truth}");
    // Not in rpm's database: the same error as on dpkg hosts.
    let out = imgbuild(
        &[
            OsStr::new("--host-package"),
            OsStr::new("crashcart-no-such-package"),
        ],
        &root.join("none.img"),
        &env,
    );
    assert_eq!(out.status.code(), Some(3));
}

fn walk_for_rpm(dir: &Path) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = walk_for_rpm(&path) {
                return Some(found);
            }
        } else if path.extension().is_some_and(|e| e == "rpm") {
            return Some(path);
        }
    }
    None
}
