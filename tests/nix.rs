//! End-to-end tests of `crashcart-imgbuild --packages`: an unprivileged user builds the
//! offline nixpkgs-like fixture (`tests/fixtures/nixpkgs`) with the host's nix, in both store
//! modes. The image must pass `e2fsck`, and the fixture's `cart-check`, run by crashcart in a
//! distroless container, must reach every store path it references: its shebang's shell, a
//! data file, a symlink into another path, and an ELF whose interpreter and RUNPATH name the
//! store. Same packages, same fixture: same image digest. Bad input fails with a clear error
//! and leaves no image behind.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crashcart_tests::{
    bin, docker_ready, have, is_root, loop_devices_for, run, run_ok, skip, workspace_root,
    Container,
};

/// The unprivileged account tests/setup.sh creates for rootless builds.
const BUILDER: &str = "crashcart-builder";

/// `NIX_CONFIG` of offline builds: nothing may be fetched from the public binary cache.
const OFFLINE: &str = "substituters =";

/// The `PATH` builds run with.
const BUILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

/// tests/support/deny.rs, built by cargo for these tests.
const DENY: &str = env!("CARGO_BIN_EXE_crashcart-test-deny");

/// Host files the fixture brings into the store (Debian's busybox-static, coreutils,
/// patchelf, glibc).
const FIXTURE_HOST_FILES: &[&str] = &[
    "/usr/bin/busybox",
    "/usr/bin/echo",
    "/usr/bin/patchelf",
    "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
];

/// Tag of the nix container image the `--nix-container` test builds from the host's nix.
const NIX_CONTAINER_IMAGE: &str = "crashcart-test-nix:latest";

/// What `cart-check` prints when every reference resolved, line by line.
const CART_CHECK_LINES: &[&str] = &[
    "cart-data: read through the data store path",
    "cart-link: cart-data: read through the data store path",
    "cart-echo: interpreter and RUNPATH found",
    "cart-check: all store references resolved",
];

/// A scratch directory owned by the account that builds: a copy of crashcart-imgbuild and of
/// the fixture (so nothing of the checkout needs to be readable by that account), packages
/// files, nix stores and images. Under root the builds run as [`BUILDER`]; otherwise as the
/// current (already unprivileged) user.
struct Workspace {
    dir: tempfile::TempDir,
    builder: Option<&'static str>,
}

impl Workspace {
    /// Prepares a workspace, or reports what is missing and returns `None`.
    fn new() -> Option<Workspace> {
        if !have("nix-build") {
            skip("nix-build not installed (apt-get install nix-bin)");
            return None;
        }
        if let Some(missing) = FIXTURE_HOST_FILES.iter().find(|f| !Path::new(f).exists()) {
            skip(&format!(
                "{missing} missing: the nix fixture is built from it (tests/setup.sh installs it)"
            ));
            return None;
        }
        let builder = if is_root() {
            let exists = Command::new("id")
                .arg(BUILDER)
                .output()
                .is_ok_and(|o| o.status.success());
            if !exists {
                skip(&format!(
                    "no `{BUILDER}` account (tests/setup.sh creates it)"
                ));
                return None;
            }
            Some(BUILDER)
        } else {
            None
        };

        let dir = tempfile::Builder::new()
            .prefix("crashcart-nix-test-")
            .tempdir()
            .expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("nixpkgs")).expect("mkdir nixpkgs");
        std::fs::create_dir_all(root.join("home")).expect("mkdir home");
        std::fs::copy(
            workspace_root().join("tests/fixtures/nixpkgs/default.nix"),
            root.join("nixpkgs/default.nix"),
        )
        .expect("copy fixture");
        std::fs::copy(bin("crashcart-imgbuild"), root.join("crashcart-imgbuild"))
            .expect("copy crashcart-imgbuild");
        if let Some(user) = builder {
            run_ok(Command::new("chown").args(["-R", user]).arg(root));
        }
        Some(Workspace { dir, builder })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a packages file readable by the builder.
    fn packages(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write packages file");
        path
    }

    /// A command running `program` as the builder, under `restriction` (a
    /// `crashcart-test-deny` filter, which the builder cannot lift), with `HOME` in the
    /// workspace, `PATH` and `NIX_CONFIG` as given.
    fn as_builder(
        &self,
        restriction: Option<&str>,
        path: &str,
        nix_config: &str,
        program: &Path,
    ) -> Command {
        let mut words: Vec<std::ffi::OsString> = Vec::new();
        if let Some(what) = restriction {
            words.push(DENY.into());
            words.push(what.into());
        }
        if let Some(user) = self.builder {
            words.extend(["runuser", "-u", user, "--"].map(Into::into));
        }
        words.push("env".into());
        words.push(format!("HOME={}", self.path("home").display()).into());
        words.push(format!("PATH={path}").into());
        words.push(format!("NIX_CONFIG={nix_config}").into());
        words.push(program.into());
        let mut cmd = Command::new(&words[0]);
        cmd.args(&words[1..]);
        cmd
    }

    /// Runs crashcart-imgbuild as the builder, offline, with `PATH` set to `path`.
    fn imgbuild_with_path<I, S>(&self, path: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        // Offline: nothing may be fetched from the public binary cache.
        let program = self.path("crashcart-imgbuild");
        run(self.as_builder(None, path, OFFLINE, &program).args(args))
    }

    /// Runs crashcart-imgbuild as the calling user (root, for the docker engine), offline.
    fn imgbuild_as_caller<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run(Command::new(self.path("crashcart-imgbuild"))
            .env("NIX_CONFIG", "substituters =")
            .args(args))
    }

    fn imgbuild<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.imgbuild_with_path(BUILD_PATH, args)
    }

    /// The arguments of a build of `packages` from the fixture into the nix store `store`
    /// of this workspace, writing `image`.
    fn build_args(
        &self,
        packages: &[&str],
        mode: Option<&str>,
        store: &str,
        image: &str,
    ) -> Vec<std::ffi::OsString> {
        let list = self.packages(&format!("{image}.packages"), &packages.join("\n"));
        let mut args: Vec<std::ffi::OsString> = vec!["--packages".into(), list.into()];
        args.extend(["--nixpkgs".into(), self.path("nixpkgs").into()]);
        args.extend(["--nix-store".into(), self.path(store).into()]);
        if let Some(mode) = mode {
            args.extend(["--store-mode".into(), mode.into()]);
        }
        args.extend(["-o".into(), self.path(image).into()]);
        args
    }

    /// Builds an image of `packages` from the fixture into a nix store `store` of this
    /// workspace; `mode` is `--store-mode` (None: the default). Asserts success.
    fn build(&self, packages: &[&str], mode: Option<&str>, store: &str, image: &str) -> PathBuf {
        self.build_with(packages, mode, store, image, &[])
    }

    /// As [`Workspace::build`], with `extra` arguments; with `--nix-container` among them the
    /// build runs as the caller, who can reach the container engine.
    fn build_with(
        &self,
        packages: &[&str],
        mode: Option<&str>,
        store: &str,
        image: &str,
        extra: &[&str],
    ) -> PathBuf {
        let list = self.packages(&format!("{image}.packages"), &packages.join("\n"));
        let out = self.path(image);
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--packages"),
            list.as_os_str(),
            OsStr::new("--nixpkgs"),
        ];
        let nixpkgs = self.path("nixpkgs");
        let nix_store = self.path(store);
        args.extend([nixpkgs.as_os_str(), OsStr::new("--nix-store")]);
        args.push(nix_store.as_os_str());
        if let Some(mode) = mode {
            args.extend([OsStr::new("--store-mode"), OsStr::new(mode)]);
        }
        args.extend([OsStr::new("-o"), out.as_os_str()]);
        args.extend(extra.iter().map(OsStr::new));
        let output = if extra.contains(&"--nix-container") {
            self.imgbuild_as_caller(&args)
        } else {
            self.imgbuild(&args)
        };
        assert!(
            output.status.success(),
            "crashcart-imgbuild {args:?} failed with {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        out
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // nix leaves its store read-only; an unprivileged run could not remove it otherwise.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(self.dir.path())
            .status();
    }
}

/// `e2fsck -fn` finds nothing to fix.
fn assert_fsck_clean(image: &Path) {
    let out = run(Command::new("e2fsck").arg("-fn").arg(image));
    assert!(
        out.status.success(),
        "e2fsck -fn {} found problems:\n{}{}",
        image.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The contents of `path` inside the image, read with debugfs (no mount needed).
fn image_file(image: &Path, path: &str) -> String {
    let out = run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(image));
    assert!(out.status.success(), "debugfs cat {path} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn manifest(image: &Path) -> serde_json::Value {
    serde_json::from_str(&image_file(image, "/.crashcart/manifest.json"))
        .expect("manifest.json is JSON")
}

/// The image path (`/store/<hash>-<name>`) of the store path whose name is `name`.
fn store_path_in_image(manifest: &serde_json::Value, name: &str) -> String {
    let paths = manifest["store_paths"].as_array().expect("store_paths");
    let path = paths
        .iter()
        .filter_map(|p| p.as_str())
        .find(|p| p.ends_with(&format!("-{name}")))
        .unwrap_or_else(|| panic!("no store path {name} in {paths:?}"));
    let base = Path::new(path).file_name().expect("store path name");
    format!("/store/{}", base.to_string_lossy())
}

/// `cart-check` from `image` runs in a distroless container both ways crashcart offers: in a
/// session (`crashcart -i IMAGE ID cart-check`) and from `docker exec` after `-m`; every line
/// it prints proves a store reference resolved there. `-u` then leaves no trace.
fn assert_cart_check_runs(image: &Path) {
    if !docker_ready() {
        return;
    }
    let container = Container::start(&[], &[]);
    let crashcart = || {
        let mut cmd = Command::new(bin("crashcart"));
        cmd.arg("-i").arg(image);
        cmd
    };
    let assert_all_lines = |how: &str, out: &str| {
        for line in CART_CHECK_LINES {
            assert!(
                out.lines().any(|l| l == *line),
                "{how}: cart-check did not print {line:?}:\n{out}"
            );
        }
    };

    let session = run_ok(crashcart().arg(&container.id).arg("cart-check"));
    assert_all_lines("session", &session);

    run_ok(crashcart().arg("-m").arg(&container.id));
    let exec = container_exec(&container, "/dev/crashcart/bin/cart-check");
    assert_all_lines("-m and docker exec", &exec);
    run_ok(Command::new(bin("crashcart")).arg("-u").arg(&container.id));
    let dev = String::from_utf8_lossy(&container.exec(&["ls", "-a", "/dev"]).stdout).into_owned();
    assert!(
        !dev.lines().any(|l| l == "crashcart" || l == ".cart"),
        "-u left the mount or the store alias in /dev:\n{dev}"
    );
    assert!(
        loop_devices_for(image).is_empty(),
        "loop device of {} left attached",
        image.display()
    );
}

/// The closure's glibc (the fixture's copy of the host's) names no container configuration
/// any more: its loader's preload list and cache, libc's `nsswitch.conf`. Its gconv directory
/// is left alone: a nix glibc's is a store path, relocated into the image.
fn assert_config_paths_cut(image: &Path, manifest: &serde_json::Value) {
    let glibc = store_path_in_image(manifest, "fixture-glibc");
    for (file, path) in [
        ("ld-linux-x86-64.so.2", "/etc/ld.so.preload"),
        ("ld-linux-x86-64.so.2", "/etc/ld.so.cache"),
        ("libc.so.6", "/etc/nsswitch.conf"),
    ] {
        let bytes = image_file(image, &format!("{glibc}/{file}"));
        assert!(bytes.starts_with("\u{7f}ELF"), "{file} read from the image");
        assert!(
            !bytes.contains(&format!("\0{path}\0")),
            "{file} in the closure still names {path}"
        );
        assert!(
            bytes.contains(&format!("\0\0{}\0", &path[1..])),
            "{file} in the closure: {path} not emptied in place"
        );
    }
    let ignores = manifest["ignores"].as_array().expect("ignores");
    assert!(
        ignores.iter().any(|p| p == "/etc/ld-nix.so.preload"),
        "{ignores:?}"
    );
}

/// Runs `program` (not busybox) in the container with `docker exec`; returns its stdout.
fn container_exec(container: &Container, program: &str) -> String {
    run_ok(Command::new("docker").args(["exec", &container.id, program]))
}

#[test]
fn relocated_image_runs_the_fixture_in_a_distroless_container() {
    let Some(ws) = Workspace::new() else { return };
    let image = ws.build(
        &["cart-check", "busybox"],
        Some("relocated"),
        "store",
        "relocated.img",
    );
    assert_fsck_clean(&image);

    let manifest = manifest(&image);
    assert_eq!(manifest["store_alias"], "/dev/.cart");
    assert_eq!(manifest["relocation"]["from"], "/nix/store");
    assert_eq!(manifest["relocation"]["to"], "/dev/.cart");
    // cart-check's script and cart-echo's ELF name the store; busybox and the data do not.
    let rewritten = manifest["relocated_files"]
        .as_u64()
        .expect("relocated_files");
    assert!((2..=4).contains(&rewritten), "relocated_files: {rewritten}");
    let script = image_file(
        &image,
        &format!(
            "{}/bin/cart-check",
            store_path_in_image(&manifest, "cart-check-1.0")
        ),
    );
    assert!(
        script.starts_with("#!/dev/.cart/") && !script.contains("/nix/store"),
        "cart-check was not relocated:\n{script}"
    );
    assert_config_paths_cut(&image, &manifest);

    assert_cart_check_runs(&image);
}

#[test]
fn native_image_runs_the_fixture_in_a_distroless_container() {
    let Some(ws) = Workspace::new() else { return };
    let image = ws.build(&["cart-check"], Some("native"), "store", "native.img");
    assert_fsck_clean(&image);

    let manifest = manifest(&image);
    assert!(
        manifest.get("relocation").is_none_or(|r| r.is_null()),
        "native image has a relocation: {manifest}"
    );
    let script = image_file(
        &image,
        &format!(
            "{}/bin/cart-check",
            store_path_in_image(&manifest, "cart-check-1.0")
        ),
    );
    assert!(
        script.starts_with("#!/dev/crashcart/store/"),
        "cart-check does not name the native store:\n{script}"
    );

    assert_cart_check_runs(&image);
}

#[test]
fn two_builds_from_fresh_stores_have_one_digest() {
    let Some(ws) = Workspace::new() else { return };
    let packages = ["busybox", "cart-check"];
    let first = ws.build(&packages, None, "store-a", "a.img");
    let second = ws.build(&packages, None, "store-b", "b.img");
    let digest = |image: &Path| run_ok(Command::new("sha256sum").arg(image))[..64].to_string();
    assert_eq!(digest(&first), digest(&second));
}

/// crashcart-imgbuild's exit status for bad input (its `--help` lists them).
const EXIT_BAD_INPUT: i32 = 3;
/// ... and for a `--packages` build that failed (nix missing, nix failing).
const EXIT_NIX_FAILED: i32 = 6;

#[test]
fn bad_input_fails_naming_what_failed_and_leaves_no_image() {
    let Some(ws) = Workspace::new() else { return };
    let store = ws.path("store");
    let image = ws.path("bad.img");
    let args = |packages: &Path, nixpkgs: &Path, extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec!["--packages".into(), packages.into()];
        args.extend(["--nixpkgs".into(), nixpkgs.into()]);
        args.extend(["--nix-store".into(), store.clone().into()]);
        args.extend(["-o".into(), image.clone().into()]);
        args.extend(extra.iter().map(Into::into));
        args
    };
    let fixture = ws.path("nixpkgs");
    let common = |packages: &Path| args(packages, &fixture, &[]);
    let check = |case: &str, out: Output, code: i32, expected: &[&str]| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{case}: exit status; stderr:\n{stderr}"
        );
        for text in expected {
            assert!(stderr.contains(text), "{case}: no {text:?} in:\n{stderr}");
        }
        assert!(!image.exists(), "{case}: left {} behind", image.display());
    };

    let unknown = ws.packages("unknown", "cart-check\nno-such-tool # typo\n");
    check(
        "unknown package",
        ws.imgbuild(common(&unknown)),
        EXIT_BAD_INPUT,
        &["unknown package: no-such-tool"],
    );

    let two_on_a_line = ws.packages("two-on-a-line", "cart-check busybox\n");
    check(
        "two names on a line",
        ws.imgbuild(common(&two_on_a_line)),
        EXIT_BAD_INPUT,
        &["two-on-a-line:1: `cart-check busybox` is not a nixpkgs attribute name"],
    );

    let empty = ws.packages("empty", "# nothing yet\n\n");
    check(
        "empty packages file",
        ws.imgbuild(common(&empty)),
        EXIT_BAD_INPUT,
        &["names no packages", "empty"],
    );

    let missing = ws.path("no-such-packages-file");
    check(
        "unreadable packages file",
        ws.imgbuild(common(&missing)),
        EXIT_BAD_INPUT,
        &["cannot read packages file", "no-such-packages-file"],
    );

    let fine = ws.packages("fine", "cart-check\n");
    check(
        "missing --nixpkgs",
        ws.imgbuild(args(&fine, &ws.path("no-such-nixpkgs"), &[])),
        EXIT_BAD_INPUT,
        &["--nixpkgs", "no-such-nixpkgs"],
    );

    let broken = ws.packages("broken", "cart-broken\n");
    let out = ws.imgbuild(common(&broken));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    check(
        "failed build",
        out,
        EXIT_NIX_FAILED,
        &[
            "nix build failed",
            "cart-broken: this build fails on purpose",
        ],
    );
    // nix's log as nix printed it: the builder's line on a line of its own, nothing squashed
    // into one line with literal `\n`, no control bytes.
    assert!(
        stderr
            .lines()
            .any(|l| l.ends_with("cart-broken: this build fails on purpose")
                && !l.starts_with("crashcart-imgbuild:")),
        "the log tail is not line by line:\n{stderr}"
    );
    assert!(!stderr.contains("\\n"), "literal \\n in:\n{stderr}");
    assert!(
        !stderr.chars().any(|c| c.is_control() && c != '\n'),
        "control bytes in:\n{stderr:?}"
    );

    let no_engine = [
        "--nix-container",
        "nixos/nix",
        "--container-engine",
        "no-such-engine",
    ];
    check(
        "container engine missing",
        ws.imgbuild(args(&fine, &fixture, &no_engine)),
        EXIT_NIX_FAILED,
        &["container engine no-such-engine not found"],
    );

    let no_nix_dir = ws.path("home");
    check(
        "nix not installed",
        ws.imgbuild_with_path(&no_nix_dir.to_string_lossy(), common(&fine)),
        EXIT_NIX_FAILED,
        &["nix is not installed", "--nix-container"],
    );
}

/// Builds (once per test process) a container image holding the host's nix 2.8, its
/// libraries and the fixture's host files: a stand-in for `nixos/nix`, which cannot be
/// pulled offline.
fn nix_container_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let ctx = tempfile::tempdir().expect("tempdir");
        let root = ctx.path().join("root");
        // A host file at its real path; a symlink to it kept as on the host (same target
        // text), so the fixture hashes the same files in the container as on the host.
        let put = |host: &Path| {
            let real = host.canonicalize().expect("canonicalize");
            let dest = root.join(real.strip_prefix("/").expect("absolute"));
            std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
            std::fs::copy(&real, &dest).expect("copy into the nix image");
            let dir = host
                .parent()
                .expect("parent")
                .canonicalize()
                .expect("canonicalize");
            let link = root
                .join(dir.strip_prefix("/").expect("absolute"))
                .join(host.file_name().expect("file name"));
            if link != dest && std::fs::symlink_metadata(&link).is_err() {
                std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
                let target = std::fs::read_link(host).expect("host symlink");
                std::os::unix::fs::symlink(target, &link).expect("symlink");
            }
        };
        for dir in ["usr/libexec/nix", "etc/nix", "root", "tmp"] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        run_ok(Command::new("chmod").arg("1777").arg(root.join("tmp")));
        // Merged /usr: /bin, /lib, /lib64 are symlinks into /usr on the host and here.
        for top in ["bin", "lib", "lib64"] {
            if let Ok(target) = std::fs::read_link(Path::new("/").join(top)) {
                std::os::unix::fs::symlink(target, root.join(top)).expect("symlink");
            }
        }

        let programs = ["/usr/bin/nix", "/usr/bin/patchelf", "/usr/bin/echo"];
        let ldd = run_ok(Command::new("ldd").args(programs));
        let libraries = ldd
            .lines()
            .filter_map(|l| l.split("=> ").nth(1))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|l| l.starts_with('/'));
        for file in programs
            .iter()
            .chain(FIXTURE_HOST_FILES)
            .copied()
            .chain(libraries)
        {
            put(Path::new(file));
        }
        put(Path::new("/lib64/ld-linux-x86-64.so.2"));
        std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
        for (link, target) in [
            ("usr/bin/nix-build", "nix"),
            ("usr/bin/nix-store", "nix"),
            ("usr/bin/nix-instantiate", "nix"),
            ("usr/libexec/nix/build-remote", "/usr/bin/nix"),
            ("usr/bin/sh", "busybox"),
            ("usr/bin/chown", "busybox"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).expect("symlink");
        }
        for (file, text) in [
            // Like the nixos/nix image: root builds without build users or a sandbox.
            ("etc/nix/nix.conf", "build-users-group =\nsandbox = false\n"),
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("etc/group", "root:x:0:\n"),
        ] {
            std::fs::write(root.join(file), text).expect("write");
        }
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nCOPY root/ /\nENV HOME=/root\n",
        )
        .expect("write Dockerfile");
        crashcart_tests::docker_build(ctx.path(), NIX_CONTAINER_IMAGE);
    });
    NIX_CONTAINER_IMAGE
}

#[test]
fn nix_container_build_equals_the_host_build() {
    let Some(ws) = Workspace::new() else { return };
    if !docker_ready() || !have("ldd") {
        return;
    }
    let image = nix_container_image();
    let packages = ["cart-check", "busybox"];
    for mode in ["relocated", "native"] {
        let host = ws.build(
            &packages,
            Some(mode),
            "store-host",
            &format!("host-{mode}.img"),
        );
        let contained = ws.build_with(
            &packages,
            Some(mode),
            "store-container",
            &format!("container-{mode}.img"),
            &["--nix-container", image, "--container-engine", "docker"],
        );
        assert_fsck_clean(&contained);
        let digest = |image: &Path| run_ok(Command::new("sha256sum").arg(image))[..64].to_string();
        assert_eq!(
            digest(&host),
            digest(&contained),
            "{mode}: the image built in the nix container differs from the host's"
        );
    }
}

/// A signed `file://` binary cache in the workspace holding the closure of an image built
/// into the nix store `store` (one mode's store), as a CI runner's cache would hold it.
struct BinaryCache {
    /// `NIX_CONFIG` for builds substituting from it (and from nothing else).
    nix_config: String,
}

impl BinaryCache {
    fn fill(ws: &Workspace, store: &str, mode: &str, image: &Path, name: &str) -> BinaryCache {
        let secret = ws.path(&format!("{name}.sec"));
        let public = ws.path(&format!("{name}.pub"));
        let cache = ws.path(name);
        let as_builder =
            |program: &str| ws.as_builder(None, BUILD_PATH, OFFLINE, Path::new(program));
        let root = ws.path(store).join(mode);
        run_ok(
            as_builder("nix-store")
                // Any store will do, as long as it is not the system's.
                .arg("--store")
                .arg(format!("local?root={}", root.display()))
                .args(["--generate-binary-cache-key", "crashcart-test-1"])
                .args([&secret, &public]),
        );
        let (from, store_dir) = if mode == "native" {
            (
                format!(
                    "local?root={0}&store=/dev/crashcart/store&real={0}/dev/crashcart/store",
                    root.display()
                ),
                "&store=/dev/crashcart/store",
            )
        } else {
            (format!("local?root={}", root.display()), "")
        };
        let paths: Vec<String> = manifest(image)["store_paths"]
            .as_array()
            .expect("store_paths")
            .iter()
            .map(|p| p.as_str().expect("a path").to_string())
            .collect();
        run_ok(
            as_builder("nix")
                .args(["--extra-experimental-features", "nix-command", "copy"])
                .args(["--from", &from, "--to"])
                .arg(format!(
                    "file://{}?secret-key={}{store_dir}",
                    cache.display(),
                    secret.display()
                ))
                .args(&paths),
        );
        let key = std::fs::read_to_string(&public).expect("public key");
        BinaryCache {
            nix_config: format!(
                "substituters = file://{}{}\ntrusted-public-keys = {}",
                cache.display(),
                store_dir.replacen('&', "?", 1),
                key.trim()
            ),
        }
    }
}

/// The restrictions of stock CI runners, as `crashcart-test-deny` models them.
const RUNNER_RESTRICTIONS: &[&str] = &["mount", "userns"];

#[test]
fn restricted_builds_substitute_from_a_binary_cache_and_write_the_same_image() {
    let Some(ws) = Workspace::new() else { return };
    let packages = ["cart-check", "busybox"];
    for mode in ["relocated", "native"] {
        let warm = ws.build(&packages, Some(mode), "warm", &format!("warm-{mode}.img"));
        let cache = BinaryCache::fill(&ws, "warm", mode, &warm, &format!("cache-{mode}"));
        let digest = |image: &Path| run_ok(Command::new("sha256sum").arg(image))[..64].to_string();
        for restriction in RUNNER_RESTRICTIONS {
            let case = format!("{mode}, {restriction} denied");
            let image_name = format!("{mode}-{restriction}.img");
            let args = ws.build_args(
                &packages,
                Some(mode),
                &format!("store-{mode}-{restriction}"),
                &image_name,
            );
            let out = run(ws
                .as_builder(
                    Some(restriction),
                    BUILD_PATH,
                    &cache.nix_config,
                    &ws.path("crashcart-imgbuild"),
                )
                .args(&args));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{case}: build failed:\n{stderr}");
            assert!(
                stderr.contains("copying path") && !stderr.contains("building '"),
                "{case}: the outputs were not all substituted:\n{stderr}"
            );
            let image = ws.path(&image_name);
            assert_fsck_clean(&image);
            assert_eq!(
                digest(&image),
                digest(&warm),
                "{case}: the image differs from the unrestricted build's"
            );
            assert_cart_check_runs(&image);

            // A package the cache lacks must be built, which nix cannot do here.
            let missing = ws.build_args(
                &["cart-check", "cart-uncached"],
                Some(mode),
                &format!("store-{mode}-{restriction}"),
                "missing.img",
            );
            let out = run(ws
                .as_builder(
                    Some(restriction),
                    BUILD_PATH,
                    &cache.nix_config,
                    &ws.path("crashcart-imgbuild"),
                )
                .args(&missing));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(EXIT_NIX_FAILED), "{case}: {stderr}");
            let message = stderr
                .lines()
                .find(|l| l.starts_with("crashcart-imgbuild: "))
                .unwrap_or_else(|| panic!("{case}: no error line in:\n{stderr}"));
            for needle in [
                "1 derivation (cart-uncached-1.0) not in the binary cache",
                "nix cannot build here",
                "--nix-container",
            ] {
                assert!(
                    message.contains(needle),
                    "{case}: no {needle:?} in {message:?}"
                );
            }
            assert!(
                !ws.path("missing.img").exists(),
                "{case}: left an image behind"
            );
        }
    }
}

#[test]
fn host_attributes_of_store_files_do_not_reach_the_image() {
    let Some(ws) = Workspace::new() else { return };
    if !have("setfattr") {
        skip("setfattr not installed (apt-get install attr)");
        return;
    }
    let packages = ["cart-check", "busybox"];
    let before = ws.build(&packages, None, "store", "before.img");
    let manifest = manifest(&before);
    let script = format!(
        "{}/bin/cart-check",
        store_path_in_image(&manifest, "cart-check-1.0")
    );
    let real = ws
        .path("store/relocated/nix")
        .join(script.trim_start_matches('/'));
    // What a host may put on store files: its own xattrs, an SELinux label (Fedora, RHEL
    // label every file), a mode changed by hand.
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.crashcart-host", "-v", "host"])
            .arg(&real),
    );
    let labelled = run(Command::new("setfattr")
        .args([
            "-n",
            "security.selinux",
            "-v",
            "unconfined_u:object_r:user_home_t:s0",
        ])
        .arg(&real))
    .status
    .success();
    run_ok(Command::new("chmod").arg("u+w").arg(&real));
    let listed = run_ok(Command::new("getfattr").args(["-d", "-m", "-"]).arg(&real));
    assert!(listed.contains("user.crashcart-host"), "{listed}");
    assert_eq!(labelled, listed.contains("security.selinux"), "{listed}");

    let after = ws.build(&packages, None, "store", "after.img");
    let digest = |image: &Path| run_ok(Command::new("sha256sum").arg(image))[..64].to_string();
    assert_eq!(
        digest(&before),
        digest(&after),
        "the host's attributes of a store file changed the image"
    );
    let attrs = run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("ea_list {script}"))
        .arg(&after));
    let attrs = String::from_utf8_lossy(&attrs.stdout);
    assert!(
        !attrs.contains("crashcart-host") && !attrs.contains("selinux"),
        "{attrs}"
    );
}

#[test]
fn the_profile_installs_what_nix_env_would_and_the_session_sees_its_data() {
    let Some(ws) = Workspace::new() else { return };
    let packages = [
        "cart-multi",
        "cart-multi-dev",
        "cacert",
        "cart-docs",
        "busybox",
    ];
    let args = ws.build_args(&packages, None, "store", "profile.img");
    let out = ws.imgbuild(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build failed:\n{stderr}");
    let image = ws.path("profile.img");
    assert_fsck_clean(&image);
    let manifest = manifest(&image);

    // The summary lists what each package costs.
    for name in packages {
        assert!(
            stderr
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(name) && l.contains("store path")),
            "no cost line for {name}:\n{stderr}"
        );
    }
    // The gzipped page naming busybox's store path cannot be relocated: the build says so.
    let warning = stderr
        .lines()
        .find(|l| l.contains("warning: 1 compressed file"))
        .unwrap_or_else(|| panic!("no warning about the compressed page:\n{stderr}"));
    assert!(
        warning.contains("cart-docs-shell.1.gz") && warning.contains("/nix/store"),
        "{warning}"
    );

    // Outputs: meta.outputsToInstall for the package, the selected output alone for `.dev`.
    let packages = manifest["packages"].as_array().expect("packages");
    let outputs = |name: &str| -> Vec<String> {
        let package = packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {packages:?}"));
        package["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .map(|o| {
                o.as_str()
                    .expect("a path")
                    .rsplit('-')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(outputs("cart-multi"), ["bin", "man"]);
    assert_eq!(outputs("cart-multi-dev"), ["dev"]);
    // Closure sizes: cart-multi's bin needs its out and busybox; cacert needs nothing.
    let cost = |name: &str| {
        let p = packages
            .iter()
            .find(|p| p["name"] == name)
            .expect("package");
        (
            p["closure_paths"].as_u64().unwrap(),
            p["closure_bytes"].as_u64().unwrap(),
        )
    };
    assert_eq!(cost("cart-multi").0, 4, "{packages:?}");
    assert_eq!(cost("cacert").0, 1, "{packages:?}");
    assert!(cost("cart-multi").1 > cost("busybox").1, "{packages:?}");

    let listing = |dir: &str| {
        let out = run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("ls -p {dir}"))
            .arg(&image));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split('/').nth(5).map(str::to_string))
            .filter(|n| !n.is_empty() && n != "." && n != "..")
            .collect::<Vec<String>>()
    };
    let profile = listing("/profile");
    for present in ["bin", "etc", "include", "share"] {
        assert!(
            profile.iter().any(|n| n == present),
            "profile/ lacks {present}: {profile:?}"
        );
    }
    // cart-multi's `out` (lib/) is in the closure, not installed.
    assert!(!profile.iter().any(|n| n == "lib"), "{profile:?}");
    let root = listing("/");
    assert!(
        root.iter().any(|n| n == "share"),
        "no share beside bin: {root:?}"
    );

    let env = &manifest["env"];
    let bundle = "/dev/crashcart/profile/etc/ssl/certs/ca-bundle.crt";
    assert_eq!(env["NIX_SSL_CERT_FILE"], bundle);
    assert_eq!(env["SSL_CERT_FILE"], bundle);
    assert_eq!(env["MANPATH"], "/dev/crashcart/profile/share/man:");
    assert_eq!(
        env["TERMINFO_DIRS"],
        "/dev/crashcart/profile/share/terminfo:"
    );

    if !docker_ready() {
        return;
    }
    let container = Container::start(&[], &[]);
    let session = run_ok(
        Command::new(bin("crashcart"))
            .arg("-i")
            .arg(&image)
            .arg(&container.id)
            .args([
                "sh",
                "-c",
                "cat \"$NIX_SSL_CERT_FILE\" \"$SSL_CERT_FILE\"; \
                 cat \"${MANPATH%:}/man1/cart-docs.1\" /dev/crashcart/share/man/man1/cart-multi.1; \
                 cat \"${TERMINFO_DIRS%:}/c/cart-terminal\"; cart-multi; cart-docs",
            ]),
    );
    for line in [
        "-----BEGIN CERTIFICATE----- cart-ca: the fixture's CA bundle",
        "cart-docs: the manual page",
        "cart-multi: page",
        "cart-terminal: a terminfo entry",
        "cart-multi: library",
        "cart-docs: see man cart-docs",
    ] {
        assert!(
            session.lines().any(|l| l == line),
            "session did not print {line:?}:\n{session}"
        );
    }
    assert_eq!(
        session.lines().filter(|l| l.contains("cart-ca")).count(),
        2,
        "both CA variables resolve:\n{session}"
    );
}

/// nix's own `builtin:buildenv` over the outputs of a plan: the profile `nix-env -i` would
/// make of them, to check crashcart-imgbuild's merge against.
const BUILDENV_NIX: &str = r#"{ planJSON }:
let
  plan = builtins.fromJSON planJSON;
  entry = i:
    let p = builtins.elemAt plan i;
    in [ "true" (toString (i + 1)) (toString (builtins.length p.outputs)) ]
      ++ map builtins.storePath p.outputs;
in
derivation {
  name = "buildenv-profile";
  system = builtins.currentSystem;
  builder = "builtin:buildenv";
  derivations = builtins.concatLists (builtins.genList entry (builtins.length plan));
  manifest = builtins.toFile "manifest" "[]";
}
"#;

/// Every entry under `dir`, relative, with `dir` for a directory or `-> target` for a link,
/// `/dev/.cart` read as `/nix/store`.
fn profile_listing(dir: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read profile dir") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap().display().to_string();
                out.insert(format!(
                    "{rel} -> {}",
                    target.replace("/dev/.cart/", "/nix/store/")
                ));
            } else if meta.is_dir() {
                out.insert(format!("{rel} dir"));
                todo.push(path);
            } else {
                out.insert(format!("{rel} file"));
            }
        }
    }
    out
}

#[test]
fn the_profile_is_the_one_nix_buildenv_makes() {
    let Some(ws) = Workspace::new() else { return };
    // Overlapping trees: bin/ and share/ from several packages, share/man from two;
    // cart-shadow's bin/sh and bin/cart-check lose to those listed before it, win over
    // cart-check's listed after; its propagated cart-data comes last.
    let packages = [
        "cart-docs",
        "cart-multi",
        "cart-multi-dev",
        "busybox",
        "cart-shadow",
        "cacert",
        "cart-check",
    ];
    let image = ws.build(&packages, None, "store", "merge.img");
    let plan: Vec<serde_json::Value> = manifest(&image)["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| serde_json::json!({ "outputs": p["outputs"] }))
        .collect();

    // nix's profile of the same outputs, built in the same store (this machine lets nix
    // build in its sandbox).
    let expr = ws.path("buildenv");
    std::fs::create_dir_all(&expr).unwrap();
    std::fs::write(expr.join("default.nix"), BUILDENV_NIX).unwrap();
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&expr));
    let store_root = ws.path("store/relocated");
    let nix_profile = run_ok(
        ws.as_builder(None, BUILD_PATH, OFFLINE, Path::new("nix-build"))
            .arg(&expr)
            .args(["--argstr", "planJSON"])
            .arg(serde_json::Value::Array(plan).to_string())
            .arg("--store")
            .arg(format!("local?root={}", store_root.display()))
            .args(["--option", "build-users-group", "", "--no-out-link"]),
    );
    let nix_profile = store_root.join(nix_profile.trim().trim_start_matches('/'));
    let mut theirs = profile_listing(&nix_profile);
    theirs.retain(|e| !e.starts_with("manifest.nix"));

    // Ours, copied out of the image.
    let dump = ws.path("dump");
    std::fs::create_dir_all(&dump).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /profile {}", dump.display()))
            .arg(&image),
    );
    let ours = profile_listing(&dump.join("profile"));
    assert!(ours.len() > 10, "{ours:?}");
    let shadow = |name: &str| {
        ours.iter()
            .any(|e| e.starts_with(&format!("bin/{name} -> ")) && e.contains("-cart-shadow-1.0/"))
    };
    assert!(!shadow("sh") && shadow("cart-check"), "{ours:?}");
    assert!(
        ours.iter()
            .any(|e| e.starts_with("share/cart -> ") && e.contains("-cart-data-1.0/")),
        "{ours:?}"
    );
    assert_eq!(
        ours.symmetric_difference(&theirs).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "crashcart-imgbuild's profile differs from nix's buildenv"
    );
}
