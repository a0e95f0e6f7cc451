//! End-to-end tests of `crashcart-imgbuild`: images are built by the unprivileged account
//! `crashcart-builder` (created by tests/setup.sh), checked with the real `e2fsck -fn`,
//! mounted read-only on a loop device and compared with their sources.
//!
//! The tests mount (as root); the builder never does.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use crashcart_tests::{bin, have, is_root, run, run_ok, skip};

const BUILDER: &str = "crashcart-builder";

/// Runs the image builder as the unprivileged account, from a copy of the binary it can read.
struct Builder {
    exe: PathBuf,
    _dir: tempfile::TempDir,
    /// uid/gid of the account when we switch to it (running as root), None when we already are
    /// an ordinary user.
    account: Option<(u32, u32)>,
}

impl Builder {
    /// None (after `skip`) when the tests cannot run here.
    fn new() -> Option<Builder> {
        for tool in ["e2fsck", "debugfs", "getfattr", "setfattr", "setcap"] {
            if !have(tool) {
                skip(&format!(
                    "{tool} not installed (tests/setup.sh installs it)"
                ));
                return None;
            }
        }
        let account = if is_root() {
            let id = |flag: &str| {
                let out = run(Command::new("id").args([flag, BUILDER]));
                out.status
                    .success()
                    .then(|| {
                        String::from_utf8_lossy(&out.stdout)
                            .trim()
                            .parse::<u32>()
                            .ok()
                    })
                    .flatten()
            };
            match (id("-u"), id("-g")) {
                (Some(u), Some(g)) => Some((u, g)),
                _ => {
                    skip("account crashcart-builder missing (tests/setup.sh creates it)");
                    return None;
                }
            }
        } else {
            None
        };
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.path().join("crashcart-imgbuild");
        fs::copy(bin("crashcart-imgbuild"), &exe).expect("copy crashcart-imgbuild");
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        Some(Builder {
            exe,
            _dir: dir,
            account,
        })
    }

    /// The builder command with `env` set, run from `cwd`, as the account.
    fn command(&self, env: &[(&str, &str)], cwd: &Path) -> Command {
        let mut cmd = if self.account.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", BUILDER, "--", "env", "-u", "SOURCE_DATE_EPOCH"]);
            for (k, v) in env {
                c.arg(format!("{k}={v}"));
            }
            c.arg(&self.exe);
            c
        } else {
            let mut c = Command::new(&self.exe);
            c.env_remove("SOURCE_DATE_EPOCH");
            c.envs(env.iter().copied());
            c
        };
        cmd.current_dir(cwd);
        cmd
    }

    /// Runs the builder with `args`.
    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.run_env(&[], Path::new("/"), args)
    }

    fn run_env<S: AsRef<OsStr>>(&self, env: &[(&str, &str)], cwd: &Path, args: &[S]) -> Output {
        run(self.command(env, cwd).arg("-q").args(args))
    }

    /// Runs the builder and expects success.
    fn build<S: AsRef<OsStr>>(&self, args: &[S]) {
        let out = self.run(args);
        assert_success(&out, "crashcart-imgbuild");
    }

    /// Builds `image` from the one tree `dir` and expects success.
    fn build_dir(&self, dir: &Path, image: &Path) {
        self.build(&[
            OsStr::new("--dir"),
            dir.as_os_str(),
            OsStr::new("-o"),
            image.as_os_str(),
        ]);
    }

    /// Makes `path` belong to the account (so it can write there).
    fn own(&self, path: &Path) {
        if let Some((u, g)) = self.account {
            std::os::unix::fs::chown(path, Some(u), Some(g)).expect("chown to the builder");
        }
    }
}

/// Runs one debugfs request against an image (no mount needed) and returns its output.
fn debugfs(image: &Path, request: &str) -> String {
    run_ok(Command::new("debugfs").args(["-R", request]).arg(image))
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch directory everyone can read, with `out/` writable by the builder.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(builder: &Builder) -> Scratch {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        builder.own(&out);
        Scratch { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn out(&self, name: &str) -> PathBuf {
        self.path("out").join(name)
    }
}

/// A read-only loop mount of an image, unmounted on drop.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn new(image: &Path) -> Mounted {
        let dir = tempfile::tempdir().expect("tempdir");
        run_ok(
            Command::new("mount")
                .args(["-o", "loop,ro"])
                .arg(image)
                .arg(dir.path()),
        );
        Mounted { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// `e2fsck -fn` must find nothing to fix.
fn assert_fsck_clean(image: &Path) {
    let out = run(Command::new("e2fsck").arg("-fn").arg(image));
    assert!(
        out.status.code() == Some(0),
        "e2fsck -fn {} exit {:?}\n{}{}",
        image.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256(path: &Path) -> String {
    run_ok(Command::new("sha256sum").arg(path))
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, bytes).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Deterministic pseudo-random bytes (content that neither compresses nor contains zero blocks).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The tree of the fidelity matrix: every kind of entry the issue lists.
fn fidelity_tree(root: &Path) {
    fs::create_dir_all(root).unwrap();
    chmod(root, 0o755);
    let bin = root.join("bin");
    write(&bin.join("suid"), &noise(70_000, 1));
    chmod(&bin.join("suid"), 0o4755);
    write(&bin.join("sgid"), b"#!/bin/sh\necho sgid\n");
    chmod(&bin.join("sgid"), 0o2755);
    write(&bin.join("ping"), &noise(20_000, 2));
    chmod(&bin.join("ping"), 0o755);
    run_ok(
        Command::new("setcap")
            .arg("cap_net_raw+ep")
            .arg(bin.join("ping")),
    );
    fs::create_dir(root.join("tmp")).unwrap();
    chmod(&root.join("tmp"), 0o1777);
    // 5 MiB: direct, indirect and double-indirect blocks.
    write(&root.join("data/big"), &noise(5 << 20, 3));
    write(&root.join("data/empty"), b"");
    write(&root.join("data/small"), b"small\n");
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.note", "-v", "hello"])
            .arg(root.join("data/small")),
    );
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.dir", "-v", "on a directory"])
            .arg(root.join("data")),
    );
    // A value too big for the inode: it goes to an attribute block.
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.big", "-v"])
            .arg("x".repeat(2000))
            .arg(root.join("data/empty")),
    );
    // Sparse: 64 MiB with three islands of data.
    let sparse = fs::File::create(root.join("data/sparse")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    {
        use std::os::unix::fs::FileExt;
        sparse.write_all_at(&noise(8192, 4), 0).unwrap();
        sparse.write_all_at(b"middle", 10 << 20).unwrap();
        sparse.write_all_at(b"end", (64 << 20) - 3).unwrap();
    }
    // Hard links across directories.
    write(&root.join("links/a"), b"three names\n");
    fs::create_dir_all(root.join("links/sub")).unwrap();
    fs::hard_link(root.join("links/a"), root.join("links/b")).unwrap();
    fs::hard_link(root.join("links/a"), root.join("links/sub/c")).unwrap();
    // Symlinks: fast (in the inode), slow (a block), dangling absolute.
    symlink("../data/small", root.join("links/fast")).unwrap();
    let long: String = std::iter::repeat_n("long-target/", 20).collect();
    symlink(&long, root.join("links/slow")).unwrap();
    symlink("/nonexistent/path", root.join("links/dangling")).unwrap();
    // Names: 255 bytes, not UTF-8.
    write(&root.join("names").join("n".repeat(255)), b"longest name\n");
    write(
        &root.join("names").join(OsStr::from_bytes(b"caf\xe9")),
        b"latin-1\n",
    );
    fs::create_dir_all(root.join("names").join(OsStr::from_bytes(b"dir\xff\xfe"))).unwrap();
    // A deep tree.
    let mut deep = root.join("deep");
    for i in 0..120 {
        deep.push(format!("d{i}"));
    }
    write(&deep.join("bottom"), b"deep\n");
    // Owners that are not root.
    write(&root.join("owned/file"), b"owned\n");
    std::os::unix::fs::chown(root.join("owned/file"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(root.join("owned"), Some(42), Some(43)).unwrap();
    // Devices and a FIFO (kept apart: diff cannot compare them).
    let dev = root.join("dev");
    fs::create_dir(&dev).unwrap();
    run_ok(
        Command::new("mknod")
            .arg(dev.join("null"))
            .args(["c", "1", "3"]),
    );
    run_ok(
        Command::new("mknod")
            .arg(dev.join("sda"))
            .args(["b", "8", "0"]),
    );
    run_ok(
        Command::new("mknod")
            .arg(dev.join("wide"))
            .args(["c", "300", "70000"]),
    );
    run_ok(Command::new("mkfifo").arg(dev.join("fifo")));
    chmod(&dev.join("fifo"), 0o620);
}

/// What the tests compare about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: u32,
    perm: u32,
    nlink: u64,
    size: Option<u64>,
    rdev: u64,
    owner: (u32, u32),
    target: Option<PathBuf>,
}

/// Walks `root` (not following symlinks), leaving out what the builder adds.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            if dir == root
                && ["lost+found", ".crashcart", ".crashcartrc"]
                    .iter()
                    .any(|n| rel == Path::new(n))
            {
                continue;
            }
            let m = fs::symlink_metadata(&path).unwrap();
            let is_dir = m.is_dir();
            out.insert(
                rel,
                Entry {
                    kind: m.mode() & 0o170000,
                    perm: m.mode() & 0o7777,
                    nlink: if is_dir { 0 } else { m.nlink() },
                    size: (!is_dir).then_some(m.len()),
                    rdev: m.rdev(),
                    owner: (m.uid(), m.gid()),
                    target: m
                        .file_type()
                        .is_symlink()
                        .then(|| fs::read_link(&path).unwrap()),
                },
            );
            if is_dir {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `getfattr` output per path (relative), every namespace we can read.
fn xattrs(root: &Path) -> BTreeMap<String, String> {
    let out = run_ok(
        Command::new("getfattr")
            .args(["-R", "-h", "-d", "-m", "-", "-e", "hex"])
            .arg(".")
            .current_dir(root),
    );
    out.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .filter_map(|block| {
            let mut lines = block.lines();
            let file = lines.next()?.trim_start_matches("# file: ").to_string();
            if file.starts_with("./lost+found") {
                return None;
            }
            Some((file, lines.collect::<Vec<_>>().join("\n")))
        })
        .collect()
}

/// Builds the fidelity tree with `extra` flags, checks the image and compares it mounted.
fn check_fidelity(fs_kind: &str) {
    let Some(b) = Builder::new() else { return };
    if !is_root() {
        skip("fidelity needs root to make devices and to mount");
        return;
    }
    let s = Scratch::new(&b);
    let src = s.path("src");
    fidelity_tree(&src);
    let img = s.out("fidelity.img");
    b.build(&[
        OsStr::new("--fs"),
        OsStr::new(fs_kind),
        OsStr::new("--dir"),
        src.as_os_str(),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert_fsck_clean(&img);
    let m = Mounted::new(&img);
    let diff = run(Command::new("diff")
        .args([
            "-r",
            "--no-dereference",
            "-x",
            "lost+found",
            "-x",
            ".crashcart",
            "-x",
            ".crashcartrc",
            "-x",
            "dev",
        ])
        .arg(&src)
        .arg(m.path()));
    assert_success(&diff, "diff -r source image");

    let want = snapshot(&src);
    let got = snapshot(m.path());
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "same paths"
    );
    for (path, w) in &want {
        let g = &got[path];
        let w_rooted = Entry {
            owner: (0, 0),
            ..w.clone()
        };
        assert_eq!(&w_rooted, g, "{} (owners default to 0:0)", path.display());
    }
    assert_eq!(got[Path::new("links/a")].nlink, 3);
    assert_eq!(got[Path::new("bin/suid")].perm, 0o4755);
    assert_eq!(got[Path::new("tmp")].perm, 0o1777);
    assert_eq!(xattrs(&src), xattrs(m.path()), "extended attributes");
    let caps = run_ok(Command::new("getcap").arg(m.path().join("bin/ping")));
    assert!(caps.contains("cap_net_raw=ep"), "getcap: {caps}");

    // Sparse stays sparse: the image holds the data blocks plus at most three map blocks.
    let sb = fs::metadata(src.join("data/sparse")).unwrap().blocks();
    let ib = fs::metadata(m.path().join("data/sparse")).unwrap().blocks();
    assert!(
        ib <= sb + 3 * 8,
        "sparse file takes {ib} sectors in the image, {sb} in the source"
    );
    drop(m);

    // --keep-owner keeps them.
    let kept = s.out("kept.img");
    b.build(&[
        OsStr::new("--fs"),
        OsStr::new(fs_kind),
        OsStr::new("--keep-owner"),
        OsStr::new("--dir"),
        src.as_os_str(),
        OsStr::new("-o"),
        kept.as_os_str(),
    ]);
    assert_fsck_clean(&kept);
    let m = Mounted::new(&kept);
    let got = snapshot(m.path());
    for (path, w) in &want {
        assert_eq!(
            w.owner,
            got[path].owner,
            "{} keeps its owner",
            path.display()
        );
    }
}

#[test]
fn ext3_image_matches_its_source_entry_for_entry() {
    check_fidelity("ext3");
}

#[test]
fn ext4_image_matches_its_source_entry_for_entry() {
    check_fidelity("ext4");
}

#[test]
fn fifty_thousand_names_are_indexed_and_not_quadratic() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let build_dir_of = |n: usize| {
        let src = s.path(&format!("src{n}"));
        let big = src.join("big");
        fs::create_dir_all(&big).unwrap();
        for i in 0..n {
            fs::File::create(big.join(format!("entry-{i:06}"))).unwrap();
        }
        for d in [&src, &big] {
            chmod(d, 0o755);
        }
        let img = s.out(&format!("big{n}.img"));
        let t = Instant::now();
        b.build_dir(&src, &img);
        (img, t.elapsed().as_secs_f64())
    };
    let (_, small) = build_dir_of(5_000);
    let (img, large) = build_dir_of(50_000);
    assert_fsck_clean(&img);
    let stat = debugfs(&img, "stat /big");
    assert!(
        stat.contains("Flags: 0x1000"),
        "/big is htree-indexed: {stat}"
    );
    let htree = debugfs(&img, "htree /big");
    assert!(htree.contains("Indirect levels: 0") || htree.contains("Indirect levels: 1"));
    // Ten times the names must not cost a hundred times the time (linear: about ten, less
    // with the fixed start-up cost; the margin absorbs a loaded CI machine).
    assert!(
        large < small * 40.0,
        "5k names: {small:.2}s, 50k names: {large:.2}s"
    );
    if is_root() {
        let m = Mounted::new(&img);
        let names = fs::read_dir(m.path().join("big")).unwrap().count();
        assert_eq!(names, 50_000);
        assert!(m.path().join("big/entry-049999").exists());
        assert!(m.path().join("big/entry-000000").exists());
    }
}

#[test]
fn same_inputs_give_the_same_image_bytes() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let src = s.path("src");
    write(&src.join("bin/tool"), &noise(300_000, 7));
    chmod(&src.join("bin/tool"), 0o755);
    write(&src.join("share/doc"), b"doc\n");
    symlink("../bin/tool", src.join("share/link")).unwrap();
    for i in 0..300 {
        write(&src.join(format!("many/f{i}")), format!("{i}\n").as_bytes());
    }
    for d in ["", "bin", "share", "many"] {
        chmod(&src.join(d), 0o755);
    }
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let args = |img: &Path| {
        vec![
            OsStr::new("--dir").to_owned(),
            src.clone().into_os_string(),
            "-o".into(),
            img.as_os_str().to_owned(),
        ]
    };
    let first = s.out("first.img");
    assert_success(
        &b.run_env(&epoch, Path::new("/"), &args(&first)),
        "first build",
    );
    // Touch everything and build from another directory.
    run_ok(
        Command::new("find")
            .arg(&src)
            .args(["-exec", "touch", "-h", "{}", "+"]),
    );
    let second = s.out("second.img");
    assert_success(
        &b.run_env(&epoch, &s.path("out"), &args(&second)),
        "second build",
    );
    assert_eq!(sha256(&first), sha256(&second), "byte-identical images");
    // The epoch is what the timestamps are: another epoch, another image.
    let third = s.out("third.img");
    assert_success(
        &b.run_env(
            &[("SOURCE_DATE_EPOCH", "1800000000")],
            Path::new("/"),
            &args(&third),
        ),
        "third build",
    );
    assert_ne!(sha256(&first), sha256(&third));
    let stat = debugfs(&first, "stat /bin/tool");
    assert!(
        stat.contains("mtime: 0x6553f100"),
        "mtime is SOURCE_DATE_EPOCH: {stat}"
    );
    let super_block = run_ok(Command::new("dumpe2fs").arg("-h").arg(&first));
    assert!(
        super_block.contains("Tue Nov 14 22:13:20 2023"),
        "{super_block}"
    );
    // Without SOURCE_DATE_EPOCH every timestamp is 0, and still reproducible.
    let zero_a = s.out("zero-a.img");
    let zero_b = s.out("zero-b.img");
    assert_success(&b.run_env(&[], Path::new("/"), &args(&zero_a)), "epoch 0");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_success(
        &b.run_env(&[], Path::new("/tmp"), &args(&zero_b)),
        "epoch 0 again",
    );
    assert_eq!(sha256(&zero_a), sha256(&zero_b));
}

/// Container configuration paths as whole C strings, and as parts of longer ones.
const CONFIG_STRINGS: &[u8] =
    b"\0/etc/ld-nix.so.preload\0/etc/inputrc\0x/etc/bashrc\0/etc/nsswitch.conf.d\0";
/// [`CONFIG_STRINGS`] as the image holds them in an ELF file.
const CONFIG_STRINGS_CUT: &[u8] =
    b"\0\0etc/ld-nix.so.preload\0\0etc/inputrc\0x/etc/bashrc\0/etc/nsswitch.conf.d\0";
/// Offset of `/etc/ld.so.preload` in [`fake_loader`]: across the writer's 1 MiB chunks.
const PRELOAD_AT: usize = (1 << 20) - 7;

/// An ELF-looking file of 2 MiB: noise, `/etc/ld.so.preload` across the first chunk boundary,
/// then [`CONFIG_STRINGS`] right after a store path of `tool`.
fn fake_loader(tool: &str) -> Vec<u8> {
    let mut elf = noise(2 << 20, 11);
    elf[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\0");
    let preload = b"\0/etc/ld.so.preload\0";
    elf[PRELOAD_AT - 1..PRELOAD_AT - 1 + preload.len()].copy_from_slice(preload);
    let tail = [b"\0", tool.as_bytes(), CONFIG_STRINGS].concat();
    let at = 3 << 19;
    elf[at..at + tail.len()].copy_from_slice(&tail);
    elf
}

/// A fake nix store at `root/nix/store` with two store paths; returns their paths.
fn fake_store(root: &Path) -> (String, String) {
    let tool = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12";
    let env = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-env";
    let t = root.join(&tool[1..]);
    let e = root.join(&env[1..]);
    write(
        &t.join("bin/hello"),
        format!("#!{tool}/bin/sh\nexec {tool}/libexec/hello-real \"$@\"\n").as_bytes(),
    );
    chmod(&t.join("bin/hello"), 0o555);
    // A store reference straddling the writer's 1 MiB read chunks.
    let mut blob = noise(3 << 20, 9);
    let at = (1 << 20) - 5;
    blob[at..at + tool.len()].copy_from_slice(tool.as_bytes());
    write(&t.join("libexec/hello-real"), &blob);
    chmod(&t.join("libexec/hello-real"), 0o555);
    // A loader-like ELF file naming container configuration, once across the 1 MiB chunk
    // boundary and once right after a store path, and a data file naming the same.
    write(&t.join("lib/ld-fake.so"), &fake_loader(tool));
    write(&t.join("share/doc/paths"), CONFIG_STRINGS);
    fs::hard_link(t.join("libexec/hello-real"), t.join("libexec/hello-alias")).unwrap();
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.origin", "-v", "fake-store"])
            .arg(t.join("bin/hello")),
    );
    // More entries than the builder's fixed inode allowance: a streamed tar with --size must
    // still find inodes for all of them.
    for i in 0..100 {
        write(
            &t.join(format!("share/doc/note-{i}")),
            format!("{i}\n").as_bytes(),
        );
    }
    fs::create_dir_all(e.join("bin")).unwrap();
    symlink(format!("{tool}/bin/hello"), e.join("bin/hello")).unwrap();
    fs::create_dir_all(e.join("sbin")).unwrap();
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(root));
    (tool.to_string(), env.to_string())
}

#[test]
fn tar_plain_gzip_and_stdin_equal_closure() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let store_root = s.path("chroot");
    let (tool, env) = fake_store(&store_root);
    let list = s.path("closure.txt");
    write(&list, format!("{env}\n{tool}\n").as_bytes());
    let common = [
        "--profile",
        env.as_str(),
        "--relocate",
        "/nix/store=/dev/.cart",
    ];

    let closure_img = s.out("closure.img");
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("--closure"),
        list.as_os_str(),
        OsStr::new("--store-root"),
        store_root.as_os_str(),
    ];
    args.extend(common.iter().map(OsStr::new));
    args.extend([OsStr::new("-o"), closure_img.as_os_str()]);
    b.build(&args);
    assert_fsck_clean(&closure_img);

    // The same paths as a plain tar file, sorted like the walk, with xattrs in PAX headers.
    let tar = s.path("closure.tar");
    run_ok(
        Command::new("tar")
            .args(["--sort=name", "--xattrs", "--xattrs-include=user.*", "-cf"])
            .arg(&tar)
            .args([&tool[1..], &env[1..]])
            .current_dir(&store_root),
    );
    chmod(&tar, 0o644);
    let tar_img = s.out("tar.img");
    let mut args: Vec<&OsStr> = vec![OsStr::new("--tar"), tar.as_os_str()];
    args.extend(common.iter().map(OsStr::new));
    args.extend([OsStr::new("-o"), tar_img.as_os_str()]);
    b.build(&args);

    // Gzip on stdin.
    let gz = run(Command::new("gzip").arg("-c").arg(&tar)).stdout;
    let stdin_img = s.out("stdin.img");
    let mut child = b
        .command(&[], Path::new("/"))
        .args(["-q", "--tar", "-"])
        .args(common)
        .arg("-o")
        .arg(&stdin_img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn builder");
    {
        use std::io::Write;
        // A builder that fails early closes the pipe; its status says why.
        let _ = child.stdin.take().unwrap().write_all(&gz);
    }
    let out = child.wait_with_output().unwrap();
    assert_success(&out, "--tar - (gzip)");

    let want = sha256(&closure_img);
    assert_eq!(sha256(&tar_img), want, "--tar FILE equals --closure");
    assert_eq!(sha256(&stdin_img), want, "--tar - (gzip) equals --closure");

    // With --size the stream is written as it arrives, never kept: same content, same digest.
    let sized_img = s.out("sized.img");
    let mut child = b
        .command(&[], Path::new("/"))
        .args(["-q", "--size", "64M", "--tar", "-"])
        .args(common)
        .arg("-o")
        .arg(&sized_img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn builder");
    {
        use std::io::Write;
        let plain = fs::read(&tar).unwrap();
        let _ = child.stdin.take().unwrap().write_all(&plain);
    }
    assert_success(&child.wait_with_output().unwrap(), "--size 64M --tar -");
    assert_fsck_clean(&sized_img);
    assert_eq!(fs::metadata(&sized_img).unwrap().len(), 64 << 20);
    assert_eq!(
        manifest_of(&sized_img)["digest"],
        manifest_of(&closure_img)["digest"],
        "same content digest"
    );

    if !is_root() {
        return;
    }
    let m = Mounted::new(&closure_img);
    let root = m.path();
    let name = |p: &str| Path::new(p).file_name().unwrap().to_owned();
    let store = root.join("store");
    assert_eq!(
        fs::read_link(root.join("profile")).unwrap(),
        Path::new("store").join(name(&env))
    );
    assert_eq!(
        fs::read_link(root.join("bin")).unwrap(),
        Path::new("profile/bin")
    );
    assert_eq!(
        fs::read_link(root.join("sbin")).unwrap(),
        Path::new("profile/sbin")
    );
    let alias = tool.replace("/nix/store", "/dev/.cart");
    assert_eq!(
        fs::read_link(store.join(name(&env)).join("bin/hello")).unwrap(),
        Path::new(&format!("{alias}/bin/hello")),
        "symlink target relocated"
    );
    let script = fs::read_to_string(store.join(name(&tool)).join("bin/hello")).unwrap();
    assert_eq!(
        script,
        format!("#!{alias}/bin/sh\nexec {alias}/libexec/hello-real \"$@\"\n")
    );
    let blob = fs::read(store.join(name(&tool)).join("libexec/hello-real")).unwrap();
    let at = (1 << 20) - 5;
    assert_eq!(
        &blob[at..at + alias.len()],
        alias.as_bytes(),
        "match across chunks relocated"
    );
    assert_eq!(blob.len(), 3 << 20, "relocation keeps lengths");
    let elf = fs::read(store.join(name(&tool)).join("lib/ld-fake.so")).unwrap();
    assert_eq!(
        &elf[PRELOAD_AT - 1..PRELOAD_AT + 19],
        b"\0\0etc/ld.so.preload\0",
        "a whole string across chunks is emptied"
    );
    let tail = [b"\0", alias.as_bytes(), CONFIG_STRINGS_CUT].concat();
    let at = 3 << 19;
    assert_eq!(
        &elf[at..at + tail.len()],
        tail.as_slice(),
        "store path relocated, whole strings emptied, longer ones kept"
    );
    let mut source = fake_loader(&tool);
    let ours = [PRELOAD_AT - 1..PRELOAD_AT + 19, at..at + tail.len()];
    for range in ours.clone() {
        source[range.clone()].copy_from_slice(&elf[range]);
    }
    assert!(source == elf, "nothing else in the ELF file changed");
    assert_eq!(
        fs::read(store.join(name(&tool)).join("share/doc/paths")).unwrap(),
        CONFIG_STRINGS,
        "a file that is not ELF is left as it is"
    );
    assert!(manifest_of(&closure_img)["ignores"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "/etc/ld-nix.so.preload"));
    let meta = fs::metadata(store.join(name(&tool)).join("libexec/hello-alias")).unwrap();
    assert_eq!(meta.nlink(), 2, "hard link kept");
    // Store files carry only what nix gives them: the host's `user.origin` is dropped, and
    // modes are nix's (0444, 0555 when executable) whatever the host's copy has.
    let attrs = run(Command::new("getfattr")
        .args(["-d", "-m", "-"])
        .arg(store.join(name(&tool)).join("bin/hello")));
    assert!(
        !String::from_utf8_lossy(&attrs.stdout).contains("user.origin"),
        "a host xattr of a store file reached the image"
    );
    let mode = |rel: &str| {
        fs::metadata(store.join(name(&tool)).join(rel))
            .unwrap()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("bin/hello"), 0o555);
    assert_eq!(mode("share/doc/paths"), 0o444);
    assert_eq!(mode("share/doc"), 0o555);
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join(".crashcart/manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], 1);
    assert_eq!(manifest["fs"], "ext3");
    assert_eq!(manifest["store_alias"], "/dev/.cart");
    assert_eq!(manifest["relocation"]["from"], "/nix/store");
    assert_eq!(manifest["relocation"]["to"], "/dev/.cart");
    assert_eq!(manifest["store_paths"], serde_json::json!([tool, env]));
    assert!(manifest["files"].as_u64().unwrap() >= 5);
    assert!(manifest["bytes"].as_u64().unwrap() >= 3 << 20);
    assert!(manifest["digest"].as_str().unwrap().starts_with("blake3:"));
    assert!(manifest["builder"]
        .as_str()
        .unwrap()
        .starts_with("crashcart-imgbuild "));
    let rc = fs::read_to_string(root.join(".crashcartrc")).unwrap();
    assert!(rc.contains("CART=/dev/crashcart"), "{rc}");
    assert!(rc.contains("PATH=\"$CART/sbin:$CART/bin"), "{rc}");
}

#[test]
fn generated_rc_file_gives_way_to_one_from_a_dir() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let src = s.path("src");
    write(
        &src.join(".crashcartrc"),
        b"# mine\nPATH=/dev/crashcart/bin:$PATH\n",
    );
    write(&src.join("bin/x"), b"x\n");
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&src));
    let img = s.out("rc.img");
    b.build_dir(&src, &img);
    let rc = debugfs(&img, "cat /.crashcartrc");
    assert!(rc.starts_with("# mine"), "{rc}");
}

/// The manifest of an image, read with debugfs (no mount).
fn manifest_of(image: &Path) -> serde_json::Value {
    let json = debugfs(image, "cat /.crashcart/manifest.json");
    serde_json::from_str(&json).expect("manifest is JSON")
}

/// Runs the builder expecting failure with `code`, a one-line message containing every
/// `needle`, and nothing left in the output directory but `keep`.
fn assert_fails(out: &Output, code: i32, needles: &[&str], out_dir: &Path, keep: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status; stderr: {stderr}"
    );
    assert!(stderr.starts_with("crashcart-imgbuild: "), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} missing from: {stderr}");
    }
    let mut left: Vec<String> = fs::read_dir(out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, keep, "files left in {}", out_dir.display());
}

#[test]
fn bad_input_fails_cleanly_and_keeps_an_existing_image() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let out_dir = s.path("out");
    let src = s.path("src");
    write(&src.join("bin/tool"), &noise(5 << 20, 11));
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&src));
    // An image from an earlier build must survive every failed one.
    let img = s.out("tools.img");
    b.build_dir(&src, &img);
    let before = sha256(&img);
    let keep = ["tools.img"];
    let o = img.as_os_str();

    // A missing input.
    let missing = s.path("nope");
    let out = b.run(&[
        OsStr::new("--dir"),
        missing.as_os_str(),
        OsStr::new("-o"),
        o,
    ]);
    assert_fails(&out, 3, &[&missing.display().to_string()], &out_dir, &keep);

    // The same file from two directories.
    let other = s.path("other");
    write(&other.join("bin/tool"), b"other\n");
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&other));
    let out = b.run(&[
        OsStr::new("--dir"),
        src.as_os_str(),
        OsStr::new("--dir"),
        other.as_os_str(),
        OsStr::new("-o"),
        o,
    ]);
    assert_fails(
        &out,
        3,
        &[
            "/bin/tool",
            &src.display().to_string(),
            &other.display().to_string(),
        ],
        &out_dir,
        &keep,
    );

    // A store path that is not there.
    let list = s.path("closure.txt");
    write(&list, b"/nix/store/00000000000000000000000000000000-gone\n");
    chmod(&list, 0o644);
    let out = b.run(&[
        OsStr::new("--closure"),
        list.as_os_str(),
        OsStr::new("--store-root"),
        src.as_os_str(),
        OsStr::new("-o"),
        o,
    ]);
    assert_fails(
        &out,
        3,
        &["00000000000000000000000000000000-gone"],
        &out_dir,
        &keep,
    );

    // --size too small.
    let out = b.run(&[
        OsStr::new("--size"),
        OsStr::new("1M"),
        OsStr::new("--dir"),
        src.as_os_str(),
        OsStr::new("-o"),
        o,
    ]);
    assert_fails(&out, 4, &["too small"], &out_dir, &keep);
    // ... and too small for the files, found while writing them.
    let out = b.run(&[
        OsStr::new("--size"),
        OsStr::new("8M"),
        OsStr::new("--dir"),
        src.as_os_str(),
        OsStr::new("-o"),
        o,
    ]);
    assert_fails(
        &out,
        4,
        &["/bin/tool", "too small", "--size"],
        &out_dir,
        &keep,
    );

    // Unequal relocation lengths are a usage error.
    let out = b.run(&[
        OsStr::new("--relocate"),
        OsStr::new("/nix/store=/x"),
        OsStr::new("--dir"),
        src.as_os_str(),
        OsStr::new("-o"),
        o,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("same length"));

    // An input the builder may not read (root reads everything: only as the builder).
    if b.account.is_some() || !is_root() {
        let secret = s.path("secret");
        write(&secret.join("key"), b"k\n");
        chmod(&secret, 0o755);
        chmod(&secret.join("key"), 0o000);
        let out = b.run(&[OsStr::new("--dir"), secret.as_os_str(), OsStr::new("-o"), o]);
        assert_fails(
            &out,
            3,
            &[&secret.join("key").display().to_string()],
            &out_dir,
            &keep,
        );
    }
    assert_eq!(sha256(&img), before, "the earlier image is intact");

    // An output directory the builder cannot write to.
    if b.account.is_some() {
        let locked = s.path("locked");
        fs::create_dir(&locked).unwrap();
        chmod(&locked, 0o755);
        let target = locked.join("x.img");
        let out = b.run(&[
            OsStr::new("--dir"),
            src.as_os_str(),
            OsStr::new("-o"),
            target.as_os_str(),
        ]);
        assert_fails(&out, 5, &[&locked.display().to_string()], &locked, &[]);
    }
}

#[test]
fn full_disk_leaves_nothing_behind() {
    let Some(b) = Builder::new() else { return };
    if !is_root() {
        skip("needs root to mount a small tmpfs");
        return;
    }
    let s = Scratch::new(&b);
    let src = s.path("src");
    write(&src.join("bin/tool"), &noise(8 << 20, 12));
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&src));
    let small = s.path("small");
    fs::create_dir(&small).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs"])
            .arg(&small),
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    b.own(&small);
    let img = small.join("tools.img");
    let out = b.run(&[
        OsStr::new("--size"),
        OsStr::new("64M"),
        OsStr::new("--dir"),
        src.as_os_str(),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert_fails(&out, 4, &["No space left on device"], &small, &[]);
}

#[test]
fn a_dir_named_through_a_symlink_is_followed_and_a_symlink_store_path_is_kept() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let real = s.path("real");
    write(&real.join("bin/x"), b"x\n");
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&real));
    let link = s.path("link");
    symlink(&real, &link).unwrap();
    let img = s.out("via-link.img");
    b.build_dir(&link, &img);
    assert_fsck_clean(&img);
    let stat = debugfs(&img, "stat /bin/x");
    assert!(stat.contains("Type: regular"), "{stat}");

    // A store path may itself be a symlink: it stays one.
    let store = s.path("chroot");
    let target = "/nix/store/cccccccccccccccccccccccccccccccc-real";
    let alias = "/nix/store/dddddddddddddddddddddddddddddddd-alias";
    write(&store.join(&target[1..]).join("bin/x"), b"x\n");
    symlink(target, store.join(&alias[1..])).unwrap();
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&store));
    let list = s.path("closure.txt");
    write(&list, format!("{target}\n{alias}\n").as_bytes());
    chmod(&list, 0o644);
    let img = s.out("store-link.img");
    b.build(&[
        OsStr::new("--closure"),
        list.as_os_str(),
        OsStr::new("--store-root"),
        store.as_os_str(),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert_fsck_clean(&img);
    let name = Path::new(alias).file_name().unwrap().to_string_lossy();
    let stat = debugfs(&img, &format!("stat /store/{name}"));
    assert!(stat.contains("Type: symlink"), "{stat}");
    assert!(stat.contains(target), "{stat}");
}

#[test]
fn attributes_too_big_for_the_inode_are_counted_in_the_computed_size() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let src = s.path("src");
    fs::create_dir(&src).unwrap();
    // Every file needs a block for its data and one for its 600-byte attribute.
    let mut dump = String::new();
    let value = "v".repeat(600);
    for i in 0..8000 {
        let name = format!("f{i:05}");
        fs::write(src.join(&name), b"x").unwrap();
        dump.push_str(&format!("# file: {name}\nuser.big=\"{value}\"\n\n"));
    }
    let dump_file = s.path("attrs.dump");
    fs::write(&dump_file, dump).unwrap();
    run_ok(
        Command::new("setfattr")
            .arg(format!("--restore={}", dump_file.display()))
            .current_dir(&src),
    );
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&src));
    let img = s.out("attrs.img");
    b.build_dir(&src, &img);
    assert_fsck_clean(&img);
    let attr = debugfs(&img, "ea_get /f07999 user.big");
    assert!(attr.contains(&value[..100]), "{attr}");
}

#[test]
fn an_image_written_inside_its_input_does_not_contain_itself() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let src = s.path("out/tree");
    write(&src.join("bin/x"), &noise(100_000, 5));
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&src));
    b.own(&src);
    let img = src.join("self.img");
    b.build_dir(&src, &img);
    assert_fsck_clean(&img);
    let root = debugfs(&img, "ls /");
    assert!(!root.contains("partial"), "{root}");
    assert!(root.contains("bin"), "{root}");
}

/// Issue 10, item 1: an inode-heavy image has groups of fewer than 32,768 blocks, so a block at
/// 32,768·g can be file data. Every other file is empty (inodes without blocks); the others
/// carry the superblock magic at offset 56 and non-zero bytes where `s_wtime` would be, so a
/// write-time stamp at a wrong place shows (here one lands on block 32,768, inside group 1).
#[test]
fn inode_heavy_images_keep_every_file_and_stamp_only_real_superblocks() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let src = s.path("src");
    let content = |i: usize| {
        if i % 2 == 1 {
            return Vec::new();
        }
        let mut c = noise(64, i as u64 + 1);
        c[..8].copy_from_slice(&(i as u64).to_le_bytes());
        c[48..52].copy_from_slice(&[0xA5; 4]);
        c[56..58].copy_from_slice(&0xEF53u16.to_le_bytes());
        c
    };
    for d in 0..80 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            let i = d * 1000 + f;
            fs::write(dir.join(format!("f{f:03}")), content(i)).unwrap();
        }
    }
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&src));
    let first = s.out("first.img");
    let second = s.out("second.img");
    b.build_dir(&src, &first);
    // Without SOURCE_DATE_EPOCH the library would stamp the clock: a second later it differs.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    b.build_dir(&src, &second);
    assert_fsck_clean(&first);
    // Every file intact, as the kernel reads it.
    if is_root() {
        let m = Mounted::new(&first);
        for d in 0..80 {
            for f in 0..1000 {
                let i = d * 1000 + f;
                let path = m.path().join(format!("d{d:02}/f{f:03}"));
                assert_eq!(fs::read(&path).unwrap(), content(i), "{}", path.display());
            }
        }
    }
    let super_block = run_ok(Command::new("dumpe2fs").arg("-h").arg(&first));
    let per_group: u64 = super_block
        .lines()
        .find_map(|l| l.strip_prefix("Blocks per group:"))
        .expect("Blocks per group")
        .trim()
        .parse()
        .unwrap();
    assert!(per_group < 32768, "inode-heavy geometry: {per_group}");
    // Every backup superblock (as dumpe2fs finds them) carries the epoch, not the clock.
    let groups = run_ok(Command::new("dumpe2fs").arg(&first));
    let backups: Vec<u64> = groups
        .lines()
        .filter_map(|l| l.split("Backup superblock at ").nth(1))
        .map(|r| r.split(',').next().unwrap().trim().parse().unwrap())
        .collect();
    assert!(!backups.is_empty(), "{groups}");
    for at in backups {
        let backup = run_ok(
            Command::new("dumpe2fs")
                .args([
                    "-h",
                    "-o",
                    &format!("superblock={at}"),
                    "-o",
                    "blocksize=4096",
                ])
                .arg(&first),
        );
        assert!(
            backup.contains("Last write time:          Thu Jan  1 00:00:00 1970"),
            "backup at {at}: {backup}"
        );
    }
    assert_eq!(sha256(&first), sha256(&second), "byte-identical images");
}

/// One tar member as [`pax_tar`] writes it: PAX records (an `x` header when not empty), then a
/// ustar header named `name` of type `kind` with `link` and `data`.
struct TarMember<'a> {
    pax: &'a [(&'a str, &'a [u8])],
    name: &'a str,
    kind: u8,
    link: &'a str,
    data: &'a [u8],
}

/// A POSIX tar written byte by byte, so that it can hold what GNU tar and the tar crate
/// would not write themselves (names past 255 bytes, NUL bytes in PAX values).
fn pax_tar(members: &[TarMember<'_>]) -> Vec<u8> {
    fn header(name: &str, kind: u8, size: usize, link: &str) -> [u8; 512] {
        let mut h = [0u8; 512];
        let field = |h: &mut [u8; 512], at: usize, v: &[u8]| h[at..at + v.len()].copy_from_slice(v);
        field(&mut h, 0, name.as_bytes());
        field(&mut h, 100, b"0000644\0");
        field(&mut h, 108, b"0000000\0");
        field(&mut h, 116, b"0000000\0");
        field(&mut h, 124, format!("{size:011o}\0").as_bytes());
        field(&mut h, 136, b"00000000000\0");
        field(&mut h, 148, b"        ");
        h[156] = kind;
        field(&mut h, 157, link.as_bytes());
        field(&mut h, 257, b"ustar\0");
        field(&mut h, 263, b"00");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        field(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
        h
    }
    fn padded(out: &mut Vec<u8>, data: &[u8]) {
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    let mut out = Vec::new();
    for m in members {
        if !m.pax.is_empty() {
            let mut records = Vec::new();
            for (key, value) in m.pax {
                // "LEN key=value\n", LEN counting its own digits.
                let rest = key.len() + value.len() + 3;
                let mut len = rest + 1;
                while len != rest + len.to_string().len() {
                    len = rest + len.to_string().len();
                }
                records.extend_from_slice(format!("{len} {key}=").as_bytes());
                records.extend_from_slice(value);
                records.push(b'\n');
            }
            out.extend_from_slice(&header("PaxHeaders/x", b'x', records.len(), ""));
            padded(&mut out, &records);
        }
        out.extend_from_slice(&header(m.name, m.kind, m.data.len(), m.link));
        padded(&mut out, m.data);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Builds from a tar with `members`, expecting exit 3 naming `needles` and nothing at `-o`.
fn assert_tar_refused(
    b: &Builder,
    s: &Scratch,
    tag: &str,
    members: &[TarMember<'_>],
    needles: &[&str],
) {
    let tar = s.path(&format!("{tag}.tar"));
    write(&tar, &pax_tar(members));
    chmod(&tar, 0o644);
    let img = s.out(&format!("{tag}.img"));
    let out = b.run(&[
        OsStr::new("--tar"),
        tar.as_os_str(),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert_fails(&out, 3, needles, &s.path("out"), &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "{tag}: one line"
    );
}

/// Issue 10, item 2: a name ext cannot hold is refused, never cut; 255 bytes still fit.
#[test]
fn names_longer_than_255_bytes_are_refused_not_truncated() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let file = |pax: &'static [(&'static str, &'static [u8])]| TarMember {
        pax,
        name: "placeholder",
        kind: b'0',
        link: "",
        data: b"data\n",
    };
    let name_255 = format!("d/{}", "n".repeat(255));
    let xattr_255 = format!("SCHILY.xattr.user.{}", "x".repeat(250));
    let fits: Vec<(&str, &[u8])> = vec![("path", name_255.as_bytes()), (&xattr_255, b"v")];
    let fits = [TarMember {
        pax: &fits,
        ..file(&[])
    }];
    // GNU tar reads the whole names back: the input is a valid archive.
    let tar = s.path("fits.tar");
    write(&tar, &pax_tar(&fits));
    chmod(&tar, 0o644);
    let listed = run_ok(Command::new("tar").arg("-tf").arg(&tar));
    assert!(listed.lines().any(|l| l == name_255), "{listed}");
    let img = s.out("fits.img");
    b.build(&[
        OsStr::new("--tar"),
        tar.as_os_str(),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert_fsck_clean(&img);
    if is_root() {
        let m = Mounted::new(&img);
        let path = m.path().join(&name_255);
        assert_eq!(fs::read(&path).unwrap(), b"data\n");
        let attr = run_ok(
            Command::new("getfattr")
                .args(["--only-values", "-n", &xattr_255["SCHILY.xattr.".len()..]])
                .arg(&path),
        );
        assert_eq!(attr, "v");
    }
    fs::remove_file(&img).unwrap();

    for len in [256, 300] {
        let long = format!("d/{}", "n".repeat(len));
        let pax: Vec<(&str, &[u8])> = vec![("path", long.as_bytes())];
        assert_tar_refused(
            &b,
            &s,
            &format!("name{len}"),
            &[TarMember {
                pax: &pax,
                ..file(&[])
            }],
            &["longer than 255 bytes", &"n".repeat(len)],
        );
    }
    let long_xattr = format!("SCHILY.xattr.user.{}", "x".repeat(300));
    let pax: Vec<(&str, &[u8])> = vec![("path", b"f"), (&long_xattr, b"v")];
    assert_tar_refused(
        &b,
        &s,
        "xattr300",
        &[TarMember {
            pax: &pax,
            ..file(&[])
        }],
        &["/f", "extended attribute", "longer than 255 bytes"],
    );
}

/// Issue 10, item 3: members e2fsck would reject in the image are refused as bad input.
#[test]
fn empty_symlinks_and_nul_bytes_in_pax_names_are_refused() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let symlink_to =
        |pax: &'static [(&'static str, &'static [u8])], link: &'static str| TarMember {
            pax,
            name: "lnk",
            kind: b'2',
            link,
            data: b"",
        };
    assert_tar_refused(
        &b,
        &s,
        "empty-target",
        &[symlink_to(&[], "")],
        &["/lnk", "symlink target is empty"],
    );
    assert_tar_refused(
        &b,
        &s,
        "nul-linkpath",
        &[symlink_to(&[("linkpath", b"t\0u")], "t")],
        &["/lnk", "symlink target contains a NUL byte"],
    );
    assert_tar_refused(
        &b,
        &s,
        "nul-path",
        &[TarMember {
            pax: &[("path", b"dir/a\0b")],
            name: "placeholder",
            kind: b'0',
            link: "",
            data: b"data\n",
        }],
        &["dir/a\\0b", "a name with a NUL byte"],
    );
    assert_tar_refused(
        &b,
        &s,
        "nul-xattr",
        &[TarMember {
            pax: &[("SCHILY.xattr.user.a\0b", b"v")],
            name: "f",
            kind: b'0',
            link: "",
            data: b"data\n",
        }],
        &["/f", "extended attribute", "a name with a NUL byte"],
    );
    // A symlink with a target still reads back through the kernel.
    let tar = s.path("ok.tar");
    write(&tar, &pax_tar(&[symlink_to(&[], "target")]));
    chmod(&tar, 0o644);
    let img = s.out("ok.img");
    b.build(&[
        OsStr::new("--tar"),
        tar.as_os_str(),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert_fsck_clean(&img);
    if is_root() {
        let m = Mounted::new(&img);
        assert_eq!(
            fs::read_link(m.path().join("lnk")).unwrap(),
            Path::new("target")
        );
    }
}

/// Issue 10, item 7: `tar cf x.tar d*/f` has no directory members; the image is sized for the
/// directories the writer makes anyway.
#[test]
fn a_tar_without_directory_members_is_sized_for_its_directories() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let src = s.path("src");
    let mut members = Vec::new();
    for i in 0..300 {
        write(&src.join(format!("d{i:03}/f")), format!("{i}\n").as_bytes());
        members.push(format!("d{i:03}/f"));
    }
    let tar = s.path("files-only.tar");
    run_ok(
        Command::new("tar")
            .arg("-cf")
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .args(&members),
    );
    chmod(&tar, 0o644);
    let listed = run_ok(Command::new("tar").arg("-tf").arg(&tar));
    assert!(
        listed.lines().all(|l| l.ends_with("/f")),
        "no directory members: {listed}"
    );
    let img = s.out("files-only.img");
    b.build(&[
        OsStr::new("--tar"),
        tar.as_os_str(),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert_fsck_clean(&img);
    if is_root() {
        let m = Mounted::new(&img);
        for i in 0..300 {
            let f = m.path().join(format!("d{i:03}/f"));
            assert_eq!(fs::read_to_string(&f).unwrap(), format!("{i}\n"));
        }
    }
}

/// Issue 10, item 9: ext4 keeps times past 2038 (the inode's epoch bits) and past 2106 (the
/// superblock's high bytes); ext3 cannot hold them and refuses rather than wrapping.
#[test]
fn timestamps_past_2038_read_back_on_ext4_and_are_refused_on_ext3() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let src = s.path("src");
    write(&src.join("bin/tool"), b"tool\n");
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&src));
    let args = |fs: &str, img: &Path| {
        vec![
            OsStr::new("--fs").to_owned(),
            fs.into(),
            "--dir".into(),
            src.clone().into_os_string(),
            "-o".into(),
            img.as_os_str().to_owned(),
        ]
    };
    // 2100-01-01 (past the signed 32 bits) and 2110-01-01 (past the unsigned 32 bits).
    for (epoch, date) in [
        (4_102_444_800u64, "Fri Jan  1 00:00:00 2100"),
        (4_417_977_600, "Wed Jan  1 00:00:00 2110"),
    ] {
        let img = s.out(&format!("t{epoch}.img"));
        let env = epoch.to_string();
        assert_success(
            &b.run_env(
                &[("SOURCE_DATE_EPOCH", &env)],
                Path::new("/"),
                &args("ext4", &img),
            ),
            "ext4 build",
        );
        assert_fsck_clean(&img);
        // e2fsprogs 1.47.0 reads the superblock's high bytes of times only from 1.47.1 on, and
        // dumpe2fs shows 2110 as 1973: compare the superblock where it fits in 32 bits.
        if epoch < 1 << 32 {
            let super_block = run_ok(Command::new("dumpe2fs").arg("-h").arg(&img));
            assert!(
                super_block.contains(&format!("Filesystem created:       {date}")),
                "{super_block}"
            );
        }
        let stat = debugfs(&img, "stat /bin/tool");
        assert!(
            stat.contains(&format!("mtime: 0x{:08x}:00000001 -- {date}", epoch as u32)),
            "{stat}"
        );
        if is_root() {
            let m = Mounted::new(&img);
            for p in ["", "bin", "bin/tool"] {
                let meta = fs::symlink_metadata(m.path().join(p)).unwrap();
                assert_eq!(meta.mtime() as u64, epoch, "mtime of /{p}");
                assert_eq!(meta.ctime() as u64, epoch, "ctime of /{p}");
                assert_eq!(meta.atime() as u64, epoch, "atime of /{p}");
            }
        }
    }
    let out_dir = s.path("out");
    let keep: Vec<String> = {
        let mut k: Vec<String> = fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        k.sort();
        k
    };
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    let img = s.out("ext3-2100.img");
    let out = b.run_env(
        &[("SOURCE_DATE_EPOCH", "2147483648")],
        Path::new("/"),
        &args("ext3", &img),
    );
    assert_fails(
        &out,
        2,
        &["SOURCE_DATE_EPOCH=2147483648", "ext3", "2038"],
        &out_dir,
        &keep,
    );
    let out = b.run_env(
        &[("SOURCE_DATE_EPOCH", "15032385536")],
        Path::new("/"),
        &args("ext4", &img),
    );
    assert_fails(
        &out,
        2,
        &["SOURCE_DATE_EPOCH=15032385536", "ext4", "2446"],
        &out_dir,
        &keep,
    );
    // The last second ext3 holds still reads back exactly.
    let img = s.out("ext3-2038.img");
    assert_success(
        &b.run_env(
            &[("SOURCE_DATE_EPOCH", "2147483647")],
            Path::new("/"),
            &args("ext3", &img),
        ),
        "ext3 build",
    );
    assert_fsck_clean(&img);
    if is_root() {
        let m = Mounted::new(&img);
        let meta = fs::symlink_metadata(m.path().join("bin/tool")).unwrap();
        assert_eq!(meta.mtime(), 2_147_483_647);
    }
}

/// Issue 10, item 5: past 65,000 links a directory's count is 1 under ext4's `dir_nlink`; ext3
/// cannot count that many subdirectories and refuses.
#[test]
fn sixty_five_thousand_subdirectories_use_dir_nlink_on_ext4_and_are_refused_on_ext3() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let src = s.path("src");
    let wide = src.join("wide");
    fs::create_dir_all(&wide).unwrap();
    const SUBDIRS: usize = 65_000;
    for i in 0..SUBDIRS {
        fs::create_dir(wide.join(format!("{i:05}"))).unwrap();
    }
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&src));
    let args = |fs: &str, img: &Path| {
        vec![
            OsStr::new("--fs").to_owned(),
            fs.into(),
            "--dir".into(),
            src.clone().into_os_string(),
            "-o".into(),
            img.as_os_str().to_owned(),
        ]
    };
    let img = s.out("wide4.img");
    b.build(&args("ext4", &img));
    assert_fsck_clean(&img);
    let stat = debugfs(&img, "stat /wide");
    assert!(stat.contains("Links: 1 "), "{stat}");
    if is_root() {
        let m = Mounted::new(&img);
        let names = fs::read_dir(m.path().join("wide")).unwrap().count();
        assert_eq!(names, SUBDIRS);
        assert!(m.path().join("wide/64999").is_dir());
    }
    let out = b.run(&args("ext3", &s.out("wide3.img")));
    assert_fails(
        &out,
        3,
        &["/wide", "65000 subdirectories", "--fs ext4"],
        &s.path("out"),
        &["wide4.img"],
    );
}

/// Issue 10, item 6: an ext4 file of more extents than four leaf blocks hold (1,360) gets an
/// index level instead of failing the build.
#[test]
fn a_file_of_1536_extents_gets_an_extent_index_on_ext4() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let src = s.path("src");
    // 12 MiB alternating a 4 KiB block of data and a 4 KiB hole: 1,536 separate data runs.
    let block = 4096;
    let mut content = vec![0u8; 12 << 20];
    for (i, chunk) in content.chunks_mut(2 * block).enumerate() {
        chunk[..block].copy_from_slice(&noise(block, i as u64 + 1));
    }
    write(&src.join("striped"), &content);
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&src));
    let img = s.out("striped.img");
    b.build(&[
        OsStr::new("--fs"),
        OsStr::new("ext4"),
        OsStr::new("--dir"),
        src.as_os_str(),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert_fsck_clean(&img);
    // debugfs walks the tree itself: the inode's root, one index block over five leaves, and
    // the 1,536 extents in them ("level/depth" opens each line).
    let extents = debugfs(&img, "ex /striped");
    let at_level = |level: &str| {
        extents
            .lines()
            .filter(|l| l.trim_start().starts_with(level))
            .count()
    };
    assert_eq!(
        (at_level("0/ 2"), at_level("1/ 2"), at_level("2/ 2")),
        (1, 5, 1536),
        "{extents}"
    );
    if is_root() {
        let m = Mounted::new(&img);
        let path = m.path().join("striped");
        assert!(fs::read(&path).unwrap() == content, "content read back");
        // 1,536 data blocks, five leaves and one index block; the holes hold nothing.
        let sectors = fs::metadata(&path).unwrap().blocks();
        assert_eq!(sectors, (1536 + 6) * 8);
    }
}

/// Issue 10, item 8: PAX records are read by their length, so values holding a newline (a
/// binary xattr value, a long file name, a symlink target) come through as GNU tar wrote them.
#[test]
fn pax_values_with_newlines_from_gnu_tar_are_kept() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let src = s.path("src");
    fs::create_dir(&src).unwrap();
    // Past 100 bytes GNU tar writes `path` and `linkpath` records; a newline inside both.
    let long = format!("{}\nx", "a".repeat(120));
    let target = format!("/target/{}\ny", "b".repeat(120));
    write(&src.join(&long), b"long\n");
    write(&src.join("f"), b"x\n");
    symlink(&target, src.join("link")).unwrap();
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.bin", "-v", "0x610a620063"])
            .arg(src.join("f")),
    );
    let tar = s.path("newlines.tar");
    run_ok(
        Command::new("tar")
            .args(["--format=posix", "--xattrs", "-C"])
            .arg(&src)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    chmod(&tar, 0o644);
    let img = s.out("newlines.img");
    b.build(&[
        OsStr::new("--tar"),
        tar.as_os_str(),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert_fsck_clean(&img);
    if is_root() {
        let m = Mounted::new(&img);
        assert_eq!(fs::read(m.path().join(&long)).unwrap(), b"long\n");
        assert_eq!(
            fs::read_link(m.path().join("link")).unwrap(),
            Path::new(&target)
        );
        let attr = run_ok(
            Command::new("getfattr")
                .args(["-e", "hex", "-n", "user.bin"])
                .arg(m.path().join("f")),
        );
        assert!(attr.contains("user.bin=0x610a620063"), "{attr}");
    }
}

/// Issue 10, item 4: GNU tar's PAX sparse formats (0.0, 0.1, 1.0) give the file back at its
/// real name and size, holes and all.
#[test]
fn gnu_pax_sparse_members_keep_their_name_size_and_holes() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let src = s.path("src");
    fs::create_dir_all(src.join("d")).unwrap();
    // 40 chunks off block boundaries, then a hole to the end.
    let size = 40 * 65_536 + 5_000;
    let mut content = vec![0u8; size];
    for i in 0..40 {
        let at = i * 65_536 + 100;
        content[at..at + 6000].copy_from_slice(&noise(6000, i as u64 + 1));
    }
    let file = fs::File::create(src.join("d/holes")).unwrap();
    file.set_len(size as u64).unwrap();
    for i in 0..40 {
        let at = i * 65_536 + 100;
        std::os::unix::fs::FileExt::write_all_at(&file, &content[at..at + 6000], at as u64)
            .unwrap();
    }
    drop(file);
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&src));
    for version in ["0.0", "0.1", "1.0"] {
        let tar = s.path(&format!("sparse{version}.tar"));
        run_ok(
            Command::new("tar")
                .args(["--format=posix", "--sparse"])
                .arg(format!("--sparse-version={version}"))
                .arg("-C")
                .arg(&src)
                .arg("-cf")
                .arg(&tar)
                .arg("d"),
        );
        chmod(&tar, 0o644);
        let img = s.out(&format!("sparse{version}.img"));
        b.build(&[
            OsStr::new("--tar"),
            tar.as_os_str(),
            OsStr::new("-o"),
            img.as_os_str(),
        ]);
        assert_fsck_clean(&img);
        if is_root() {
            let m = Mounted::new(&img);
            let names: Vec<_> = fs::read_dir(m.path().join("d"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["holes"], "{version}");
            let path = m.path().join("d/holes");
            assert!(fs::read(&path).unwrap() == content, "{version}: content");
            // Each 6,000-byte chunk touches two or three blocks; the holes hold none.
            let sectors = fs::metadata(&path).unwrap().blocks();
            assert!(sectors <= 40 * 3 * 8 + 8, "{version}: {sectors} sectors");
        }
        fs::remove_file(&img).unwrap();
    }
    // A map reaching past the real size is refused, naming the file, not written cut.
    let tar = s.path("sparse0.1.tar");
    let bytes = fs::read(&tar).unwrap();
    let (good, bad) = (b"GNU.sparse.size=2626440", b"GNU.sparse.size=0002626");
    let at = bytes
        .windows(good.len())
        .position(|w| w == good)
        .expect("size record");
    let mut bytes = bytes;
    bytes[at..at + bad.len()].copy_from_slice(bad);
    let tar = s.path("bad-sparse.tar");
    write(&tar, &bytes);
    chmod(&tar, 0o644);
    let out = b.run(&[
        OsStr::new("--tar"),
        tar.as_os_str(),
        OsStr::new("-o"),
        s.out("bad.img").as_os_str(),
    ]);
    assert_fails(
        &out,
        3,
        &["/d/holes", "GNU sparse", "past the size"],
        &s.path("out"),
        &[],
    );
}

/// Writes `pieces` (offset, bytes) into a new file of `size` bytes, the rest left as holes.
fn sparse_file(path: &Path, size: u64, pieces: &[(u64, &[u8])]) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    let file = fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    for (at, bytes) in pieces {
        std::os::unix::fs::FileExt::write_all_at(&file, bytes, *at).unwrap();
    }
}

#[test]
fn sparse_files_hash_their_data_not_their_size() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let digest = |img: &Path| manifest_of(img)["digest"].as_str().unwrap().to_string();

    // 64 MiB with a 62 MiB hole, as a sparse file and with the zeros written out: one image.
    let mib = 1u64 << 20;
    let (head, tail) = (noise(mib as usize + 100, 21), noise(mib as usize - 5, 22));
    let mid_size = 64 * mib;
    let mut dense = vec![0u8; mid_size as usize];
    dense[..head.len()].copy_from_slice(&head);
    dense[(63 * mib) as usize..(64 * mib - 5) as usize].copy_from_slice(&tail);
    sparse_file(
        &s.path("sparse/mid"),
        mid_size,
        &[(0, &head), (63 * mib, &tail)],
    );
    write(&s.path("dense/mid"), &dense);
    run_ok(
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(s.path("sparse")),
    );
    run_ok(
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(s.path("dense")),
    );
    let allocated = |p: &Path| fs::metadata(p).unwrap().blocks() * 512;
    assert!(
        allocated(&s.path("sparse/mid")) < 8 * mib,
        "the input has its hole"
    );
    assert!(
        allocated(&s.path("dense/mid")) >= mid_size,
        "the input is dense"
    );
    let (sparse_img, dense_img) = (s.out("sparse.img"), s.out("dense.img"));
    b.build_dir(&s.path("sparse"), &sparse_img);
    b.build_dir(&s.path("dense"), &dense_img);
    assert_eq!(digest(&sparse_img), digest(&dense_img));
    // Sized alike (the computed size counts the input's allocated blocks), the same bytes.
    for (dir, img) in [("sparse", &sparse_img), ("dense", &dense_img)] {
        b.build(&[
            OsStr::new("--size"),
            OsStr::new("128M"),
            OsStr::new("--dir"),
            s.path(dir).as_os_str(),
            OsStr::new("-o"),
            img.as_os_str(),
        ]);
    }
    assert_eq!(
        sha256(&sparse_img),
        sha256(&dense_img),
        "the same image, whatever the input made sparse"
    );
    assert_eq!(
        manifest_of(&sparse_img)["digest_scheme"],
        "blake3-nonzero-4k-v2"
    );
    // The zeros are part of the content: the same data without the hole differs.
    let mut packed = head.clone();
    packed.extend_from_slice(&tail);
    write(&s.path("packed/mid"), &packed);
    run_ok(
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(s.path("packed")),
    );
    let packed_img = s.out("packed.img");
    b.build_dir(&s.path("packed"), &packed_img);
    assert_ne!(digest(&packed_img), digest(&dense_img));

    // 1 TiB holding 160 KiB: data at the start, off block boundaries in 30 places (more than
    // an old GNU tar header's map holds), at the end.
    let tib = 1u64 << 40;
    let mut pieces: Vec<(u64, Vec<u8>)> = vec![(0, noise(3 * 4096 + 100, 23))];
    for i in 1..=30u64 {
        pieces.push((i * (1 << 35) + 12_345, noise(5_000, 24 + i)));
    }
    pieces.push((tib - 777, noise(777, 25)));
    let borrowed: Vec<(u64, &[u8])> = pieces.iter().map(|(a, d)| (*a, d.as_slice())).collect();
    sparse_file(&s.path("huge/d/big"), tib, &borrowed);
    run_ok(
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(s.path("huge")),
    );
    let huge_img = s.out("huge.img");
    let started = Instant::now();
    b.build_dir(&s.path("huge"), &huge_img);
    // Measured, not asserted (the bench reports it): hashing every byte took minutes.
    eprintln!("1 TiB sparse file: image built in {:?}", started.elapsed());
    assert_fsck_clean(&huge_img);
    // GNU tar's sparse members of the same tree, PAX 1.0 and the old GNU format (`tar -S`,
    // its map continued in extension blocks): the same digest, their holes never read either.
    let mut images = vec![huge_img.clone()];
    for (name, format) in [("pax", "--format=posix"), ("gnu", "--format=gnu")] {
        let tar = s.path(&format!("huge-{name}.tar"));
        run_ok(
            Command::new("tar")
                .args([format, "--sparse", "-C"])
                .arg(s.path("huge"))
                .arg("-cf")
                .arg(&tar)
                .arg("d"),
        );
        chmod(&tar, 0o644);
        let tar_img = s.out(&format!("huge-{name}.img"));
        let started = Instant::now();
        b.build(&[
            OsStr::new("--tar"),
            tar.as_os_str(),
            OsStr::new("-o"),
            tar_img.as_os_str(),
        ]);
        eprintln!(
            "1 TiB sparse member ({format}): image built in {:?}",
            started.elapsed()
        );
        assert_fsck_clean(&tar_img);
        assert_eq!(digest(&tar_img), digest(&huge_img), "{format}");
        images.push(tar_img);
    }
    if is_root() {
        for img in &images {
            let m = Mounted::new(img);
            let path = m.path().join("d/big");
            let meta = fs::metadata(&path).unwrap();
            assert_eq!(meta.len(), tib);
            // Data blocks (about 100) plus the block map (ext3: indirect blocks for each
            // piece): everything else is a hole, which reads as zeros.
            assert!(
                meta.blocks() * 512 < 1 << 20,
                "{} bytes",
                meta.blocks() * 512
            );
            let f = fs::File::open(&path).unwrap();
            for (at, data) in &pieces {
                // The piece with 4 KiB on either side (zeros there).
                let from = at.saturating_sub(4096);
                let to = (at + data.len() as u64 + 4096).min(tib);
                let mut got = vec![0u8; (to - from) as usize];
                std::os::unix::fs::FileExt::read_exact_at(&f, &mut got, from).unwrap();
                let mut want = vec![0u8; got.len()];
                let o = (at - from) as usize;
                want[o..o + data.len()].copy_from_slice(data);
                assert!(got == want, "{} at {at}", img.display());
            }
        }
    }
}

#[test]
fn a_killed_build_leaves_nothing_next_to_the_output() {
    let Some(builder) = Builder::new() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir(&tree).unwrap();
    // 512 MiB of data that is not zeros (zeros become holes): long enough to kill mid-write.
    {
        use std::io::Write;
        let chunk = noise(1 << 20, 7);
        let mut big = fs::File::create(tree.join("big")).unwrap();
        for _ in 0..512 {
            big.write_all(&chunk).unwrap();
        }
    }
    let out_dir = work.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let image = out_dir.join("tools.img");
    fs::write(&image, b"the previous image\n").unwrap();
    for signal in ["KILL", "TERM", "INT"] {
        let mut child = Command::new(&builder.exe)
            .arg("-q")
            .arg("--dir")
            .arg(&tree)
            .arg("-o")
            .arg(&image)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before SIG{signal}: the test shows nothing"
        );
        run_ok(Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]));
        let status = child.wait().unwrap();
        assert!(!status.success(), "SIG{signal}: {status}");
        let left: Vec<String> = fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["tools.img"], "SIG{signal} left files behind");
        assert_eq!(
            fs::read(&image).unwrap(),
            b"the previous image\n",
            "SIG{signal} damaged the existing image"
        );
    }
}

#[test]
fn a_gzip_stream_with_a_bad_checksum_or_trailing_garbage_is_refused() {
    let Some(builder) = Builder::new() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    fs::create_dir_all(tree.join("d")).unwrap();
    write(&tree.join("d/f"), b"hello\n");
    let good = work.path().join("good.tgz");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&tree)
            .arg("-czf")
            .arg(&good)
            .arg("d"),
    );
    let mut bad_crc = fs::read(&good).unwrap();
    let crc_at = bad_crc.len() - 8;
    bad_crc[crc_at] ^= 0xff;
    let mut trailing = fs::read(&good).unwrap();
    trailing.extend_from_slice(b"trailing garbage\n");
    for (name, bytes) in [("bad-crc.tgz", bad_crc), ("trailing.tgz", trailing)] {
        let archive = work.path().join(name);
        fs::write(&archive, bytes).unwrap();
        builder.own(work.path());
        // GNU tar, the independent reader, refuses it too.
        let gnu = run(Command::new("tar").arg("-tzf").arg(&archive));
        assert!(!gnu.status.success(), "GNU tar accepted {name}");
        let image = work.path().join(format!("{name}.img"));
        let out = builder.run(&[
            OsStr::new("--tar"),
            archive.as_os_str(),
            OsStr::new("-o"),
            image.as_os_str(),
        ]);
        assert_eq!(out.status.code(), Some(3), "{name}: {out:?}");
        assert!(!image.exists(), "{name}: an image was left at -o");
    }
    let image = work.path().join("good.img");
    builder.build(&[
        OsStr::new("--tar"),
        good.as_os_str(),
        OsStr::new("-o"),
        image.as_os_str(),
    ]);
    assert_fsck_clean(&image);
}

/// Sets bytes `at..` of the header of the member named `name` in a tar from [`pax_tar`], and
/// its checksum: header fields [`pax_tar`] leaves at 0 (owners, device numbers), in octal or
/// GNU base-256.
fn patch_header(tar: &mut [u8], name: &str, at: usize, bytes: &[u8]) {
    let block = tar
        .chunks_exact(512)
        .position(|h| {
            &h[257..263] == b"ustar\0"
                && h[..100].split(|&b| b == 0).next() == Some(name.as_bytes())
        })
        .unwrap_or_else(|| panic!("no member {name}"));
    let h = &mut tar[block * 512..block * 512 + 512];
    h[at..at + bytes.len()].copy_from_slice(bytes);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// Offsets of the ustar header's uid, gid, device major and device minor fields.
const UID_FIELD: usize = 108;
const GID_FIELD: usize = 116;
const DEVMAJOR_FIELD: usize = 329;
const DEVMINOR_FIELD: usize = 337;

/// An 8-byte numeric field in GNU tar's base-256 form.
fn base256(n: u64) -> [u8; 8] {
    let mut f = n.to_be_bytes();
    f[0] |= 0x80;
    f
}

/// A POSIX ACL as `getxattr` gives it: version 2, then (tag, perm, id) entries.
fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// The word after `label` in debugfs output.
fn stat_field<'a>(stat: &'a str, label: &str) -> &'a str {
    let mut words = stat.split_whitespace();
    words.find(|w| *w == label);
    words.next().unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds from the tar `bytes` with `args`, expecting exit 3, a one-line message with every
/// `needle`, and nothing at `-o`.
fn assert_tar_bytes_refused(
    b: &Builder,
    s: &Scratch,
    tag: &str,
    bytes: &[u8],
    args: &[&str],
    needles: &[&str],
) {
    let tar = s.path(&format!("{tag}.tar"));
    write(&tar, bytes);
    chmod(&tar, 0o644);
    let img = s.out(&format!("{tag}.img"));
    let mut all: Vec<&OsStr> = vec![OsStr::new("--tar"), tar.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    all.extend([OsStr::new("-o"), img.as_os_str()]);
    let out = b.run(&all);
    assert_fails(&out, 3, needles, &s.path("out"), &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "{tag}: one line"
    );
}

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// Issue 10, item 12: device numbers, owners and extended attributes ext cannot hold are
/// refused with exit 3 naming the entry, never stored altered (major 5000 was 904:257, uid
/// 2³²+5 was 5, a 5,000-byte xattr "image too small" even at --size 1G, a bad ACL exit 1).
#[test]
fn values_ext_cannot_hold_are_refused_not_altered() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let member =
        |pax: &'static [(&'static str, &'static [u8])], name: &'static str, kind: u8| TarMember {
            pax,
            name,
            kind,
            link: "",
            data: b"",
        };
    let keep = ["--keep-owner"];
    // Device numbers: ustar octal fields, GNU base-256, libarchive's SCHILY records.
    let mut t = pax_tar(&[member(&[], "dev5000", b'3')]);
    patch_header(&mut t, "dev5000", DEVMAJOR_FIELD, b"0011610\0");
    patch_header(&mut t, "dev5000", DEVMINOR_FIELD, b"0000001\0");
    assert_tar_bytes_refused(
        &b,
        &s,
        "major",
        &t,
        &[],
        &["/dev5000", "device major 5000", "12 bits"],
    );
    let mut t = pax_tar(&[member(&[], "minor", b'4')]);
    patch_header(&mut t, "minor", DEVMAJOR_FIELD, b"0000010\0");
    patch_header(&mut t, "minor", DEVMINOR_FIELD, b"4000000\0");
    assert_tar_bytes_refused(
        &b,
        &s,
        "minor",
        &t,
        &[],
        &["/minor", "device minor 1048576", "20 bits"],
    );
    let mut t = pax_tar(&[member(&[], "big", b'3')]);
    patch_header(&mut t, "big", DEVMAJOR_FIELD, &base256((1 << 32) + 1));
    patch_header(&mut t, "big", DEVMINOR_FIELD, b"0000001\0");
    assert_tar_bytes_refused(
        &b,
        &s,
        "base256",
        &t,
        &[],
        &["/big", "device major 4294967297"],
    );
    let t = pax_tar(&[member(&[("SCHILY.devmajor", b"4096")], "schily", b'3')]);
    assert_tar_bytes_refused(&b, &s, "schily", &t, &[], &["/schily", "device major 4096"]);
    // Owners, kept: PAX values past 32 bits, (uid_t)-1, a base-256 header field, garbage.
    let t = pax_tar(&[TarMember {
        data: b"x",
        ..member(&[("uid", b"4294967301")], "u", b'0')
    }]);
    assert_tar_bytes_refused(
        &b,
        &s,
        "uid",
        &t,
        &keep,
        &["/u", "uid 4294967301", "32 bits"],
    );
    let t = pax_tar(&[member(&[("uid", b"4294967295")], "u", b'0')]);
    assert_tar_bytes_refused(&b, &s, "uid-1", &t, &keep, &["/u", "(uid_t)-1"]);
    let mut t = pax_tar(&[member(&[], "g", b'0')]);
    patch_header(&mut t, "g", UID_FIELD, b"0000007\0");
    patch_header(&mut t, "g", GID_FIELD, &base256((1 << 32) + 5));
    assert_tar_bytes_refused(&b, &s, "gid", &t, &keep, &["/g", "gid 4294967301"]);
    let t = pax_tar(&[member(&[("uid", b"12x")], "u", b'0')]);
    assert_tar_bytes_refused(
        &b,
        &s,
        "uid-garbage",
        &t,
        &keep,
        &["/u", "uid=\"12x\"", "not a number"],
    );
    // Extended attributes: one larger than the xattr block (whatever --size), more than the
    // inode and one block together, a name Linux would not list, ACLs ext cannot store as given.
    let big = vec![b'v'; 5000];
    let pax: Vec<(&str, &[u8])> = vec![("SCHILY.xattr.user.big", &big)];
    let t = pax_tar(&[TarMember {
        pax: &pax,
        ..member(&[], "f", b'0')
    }]);
    assert_tar_bytes_refused(
        &b,
        &s,
        "xattr5000",
        &t,
        &["--size", "1G"],
        &["/f", "\"user.big\"", "more than ext's xattr block holds"],
    );
    let half = vec![b'v'; 2040];
    let pax: Vec<(&str, &[u8])> = vec![
        ("SCHILY.xattr.user.a", &half),
        ("SCHILY.xattr.user.b", &half),
    ];
    let t = pax_tar(&[TarMember {
        pax: &pax,
        ..member(&[], "f", b'0')
    }]);
    assert_tar_bytes_refused(
        &b,
        &s,
        "xattrs2x2040",
        &t,
        &[],
        &["/f", "4120 bytes", "more than the inode"],
    );
    let t = pax_tar(&[member(&[("SCHILY.xattr.foo.bar", b"v")], "f", b'0')]);
    assert_tar_bytes_refused(
        &b,
        &s,
        "namespace",
        &t,
        &[],
        &["/f", "\"foo.bar\"", "not in a namespace"],
    );
    let mut bad_version = acl_xattr(&[(ACL_USER_OBJ, 6, ACL_UNDEFINED_ID)]);
    bad_version[0] = 1;
    let with_id = acl_xattr(&[
        (ACL_USER_OBJ, 6, 0),
        (ACL_GROUP_OBJ, 4, ACL_UNDEFINED_ID),
        (ACL_OTHER, 4, ACL_UNDEFINED_ID),
    ]);
    for (tag, value, needle) in [
        ("acl-version", &bad_version, "not version 2"),
        ("acl-id", &with_id, "with an id"),
        ("acl-cut", &bad_version[..6].to_vec(), "not version 2"),
    ] {
        let pax: Vec<(&str, &[u8])> = vec![("SCHILY.xattr.system.posix_acl_access", value)];
        let t = pax_tar(&[TarMember {
            pax: &pax,
            ..member(&[], "f", b'0')
        }]);
        assert_tar_bytes_refused(
            &b,
            &s,
            tag,
            &t,
            &[],
            &[
                "/f",
                "\"system.posix_acl_access\"",
                "not a POSIX ACL ext can store",
                needle,
            ],
        );
    }

    // Files larger than the kernel reads back (reads would end early): a GNU sparse member
    // of no data, refused before any byte is read. The limits are checked against the kernel
    // in the unit tests of limits.rs.
    for (fs_kind, size, needle) in [
        ("ext3", "2196873666561", "--fs ext4 holds up to"),
        (
            "ext4",
            "17592186040321",
            "more than an ext4 file holds (17592186040320 bytes)",
        ),
    ] {
        let pax: Vec<(&str, &[u8])> = vec![
            ("GNU.sparse.major", b"0"),
            ("GNU.sparse.minor", b"1"),
            ("GNU.sparse.name", b"huge"),
            ("GNU.sparse.realsize", size.as_bytes()),
            ("GNU.sparse.map", b"0,0"),
        ];
        let t = pax_tar(&[TarMember {
            pax: &pax,
            ..member(&[], "GNUSparseFile.0/huge", b'0')
        }]);
        assert_tar_bytes_refused(
            &b,
            &s,
            &format!("huge-{fs_kind}"),
            &t,
            &["--fs", fs_kind],
            &[
                "/huge",
                &format!("{size} bytes is more than an {fs_kind} file holds"),
                needle,
            ],
        );
    }

    // Owners that are not kept are not refused: everything is root's.
    let t = pax_tar(&[TarMember {
        data: b"x",
        ..member(&[("uid", b"4294967301")], "u", b'0')
    }]);
    let tar = s.path("dropped.tar");
    write(&tar, &t);
    chmod(&tar, 0o644);
    let img = s.out("dropped.img");
    b.build(&[
        OsStr::new("--tar"),
        tar.as_os_str(),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert!(
        debugfs(&img, "stat /u").contains("User:     0"),
        "{}",
        debugfs(&img, "stat /u")
    );
    fs::remove_file(&img).unwrap();

    // --dir: an xattr larger than ext's block, from a filesystem that holds one (tmpfs).
    if is_root() {
        let src = tempfile::tempdir_in("/dev/shm").expect("tempdir on tmpfs");
        chmod(src.path(), 0o755);
        let f = src.path().join("big");
        write(&f, b"x");
        chmod(&f, 0o644);
        let value = "v".repeat(5000);
        run_ok(
            Command::new("setfattr")
                .args(["-n", "user.big", "-v", &value])
                .arg(&f),
        );
        let img = s.out("dir.img");
        let out = b.run(&[
            OsStr::new("--dir"),
            src.path().as_os_str(),
            OsStr::new("-o"),
            img.as_os_str(),
        ]);
        assert_fails(
            &out,
            3,
            &[
                "/big",
                "\"user.big\"",
                "5020 bytes",
                "more than ext's xattr block holds",
            ],
            &s.path("out"),
            &[],
        );
    }
}

/// Issue 10, item 12, the other side: the largest values ext holds come back exactly, read by
/// the kernel through a read-only mount and by debugfs.
#[test]
fn values_at_ext_limits_come_back_exactly() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let file = |pax: &'static [(&'static str, &'static [u8])], name: &'static str| TarMember {
        pax,
        name,
        kind: b'0',
        link: "",
        data: b"data\n",
    };
    let block_max = vec![b'b'; 4040]; // 4060 bytes of block less a 20-byte entry for "a"
    let inode_max = vec![b'i'; 68]; // 88 bytes in the inode less the entry
    let acl = acl_xattr(&[
        (ACL_USER_OBJ, 6, ACL_UNDEFINED_ID),
        (ACL_USER, 4, 1000),
        (ACL_GROUP_OBJ, 4, ACL_UNDEFINED_ID),
        (ACL_MASK, 4, ACL_UNDEFINED_ID),
        (ACL_OTHER, 0, ACL_UNDEFINED_ID),
    ]);
    let block_pax: Vec<(&str, &[u8])> = vec![("SCHILY.xattr.user.a", &block_max)];
    let both_pax: Vec<(&str, &[u8])> = vec![
        ("SCHILY.xattr.user.a", &inode_max),
        ("SCHILY.xattr.user.b", &block_max),
    ];
    let acl_pax: Vec<(&str, &[u8])> = vec![("SCHILY.xattr.system.posix_acl_access", &acl)];
    let members = [
        TarMember {
            kind: b'3',
            data: b"",
            ..file(&[], "c4095")
        },
        TarMember {
            kind: b'4',
            data: b"",
            ..file(
                &[
                    ("SCHILY.devmajor", b"4095"),
                    ("SCHILY.devminor", b"1048575"),
                ],
                "b4095",
            )
        },
        TarMember {
            kind: b'3',
            data: b"",
            ..file(&[], "c1_3")
        },
        file(&[("uid", b"4294967294"), ("gid", b"4294967294")], "owner"),
        TarMember {
            pax: &block_pax,
            ..file(&[], "xblock")
        },
        TarMember {
            pax: &both_pax,
            ..file(&[], "xboth")
        },
        TarMember {
            pax: &acl_pax,
            ..file(&[], "acl")
        },
    ];
    let mut t = pax_tar(&members);
    patch_header(&mut t, "c4095", DEVMAJOR_FIELD, b"0007777\0");
    patch_header(&mut t, "c4095", DEVMINOR_FIELD, &base256(1_048_575));
    patch_header(&mut t, "c1_3", DEVMAJOR_FIELD, b"0000001\0");
    patch_header(&mut t, "c1_3", DEVMINOR_FIELD, b"0000003\0");
    // A global header: its owner applies to every later member.
    t.truncate(t.len() - 1024);
    let global = pax_tar(&[TarMember {
        kind: b'g',
        ..file(&[], "global")
    }]);
    let records = b"16 uid=70000000\n16 gid=70000001\n";
    let mut g = global[..512].to_vec();
    g[124..136].copy_from_slice(format!("{:011o}\0", records.len()).as_bytes());
    g.extend_from_slice(records);
    g.resize(1024, 0);
    t.extend_from_slice(&g);
    patch_header(
        &mut t,
        "global",
        124,
        format!("{:011o}\0", records.len()).as_bytes(),
    );
    t.extend_from_slice(&pax_tar(&[file(&[], "after-global")]));
    let tar = s.path("limits.tar");
    write(&tar, &t);
    chmod(&tar, 0o644);
    // GNU tar reads the same archive the same way.
    let listed = run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "-tvf"])
            .arg(&tar),
    );
    assert!(listed.contains("4095,1048575"), "{listed}");
    assert!(listed.contains("4294967294/4294967294"), "{listed}");
    assert!(listed.contains("70000000/70000001"), "{listed}");
    let img = s.out("limits.img");
    b.build(&[
        OsStr::new("--tar"),
        tar.as_os_str(),
        OsStr::new("--keep-owner"),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert_fsck_clean(&img);
    let stat = debugfs(&img, "stat /c4095");
    assert!(
        stat.contains("Device major/minor number: 4095:1048575"),
        "{stat}"
    );
    // debugfs prints owners as signed numbers: 4294967294 is -2.
    let stat = debugfs(&img, "stat /owner");
    assert_eq!(stat_field(&stat, "User:"), "-2", "{stat}");
    assert_eq!(stat_field(&stat, "Group:"), "-2", "{stat}");
    if !is_root() {
        return;
    }
    let m = Mounted::new(&img);
    let rdev = |name: &str| {
        let r = fs::symlink_metadata(m.path().join(name)).unwrap().rdev();
        (
            ((r >> 32) & !0xfff) | ((r >> 8) & 0xfff),
            ((r >> 12) & !0xff) | (r & 0xff),
        )
    };
    assert_eq!(rdev("c4095"), (4095, 1_048_575));
    assert_eq!(rdev("b4095"), (4095, 1_048_575));
    assert_eq!(rdev("c1_3"), (1, 3));
    let meta = fs::metadata(m.path().join("owner")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4_294_967_294, 4_294_967_294));
    let meta = fs::metadata(m.path().join("after-global")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (70_000_000, 70_000_001));
    let xattr = |name: &str, attr: &str| {
        let out = run_ok(
            Command::new("getfattr")
                .args(["--absolute-names", "-e", "hex", "-n", attr])
                .arg(m.path().join(name)),
        );
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{attr}=0x")))
            .unwrap_or_else(|| panic!("{attr} of {name}: {out}"))
            .to_string()
    };
    assert_eq!(xattr("xblock", "user.a"), hex(&block_max));
    assert_eq!(xattr("xboth", "user.a"), hex(&inode_max));
    assert_eq!(xattr("xboth", "user.b"), hex(&block_max));
    assert_eq!(xattr("acl", "system.posix_acl_access"), hex(&acl));

    // --dir: the kernel's own largest device number, made with mknod, comes back the same.
    let src = s.path("devdir");
    fs::create_dir(&src).unwrap();
    run_ok(
        Command::new("mknod")
            .arg(src.join("dev"))
            .args(["c", "4095", "1048575"]),
    );
    let img = s.out("devdir.img");
    b.build_dir(&src, &img);
    assert_fsck_clean(&img);
    let m = Mounted::new(&img);
    assert_eq!(
        fs::symlink_metadata(m.path().join("dev")).unwrap().rdev(),
        fs::symlink_metadata(src.join("dev")).unwrap().rdev()
    );
}

/// A `dumpe2fs -h` field as a number.
fn superblock_field(image: &Path, field: &str) -> u64 {
    let out = run_ok(Command::new("dumpe2fs").arg("-h").arg(image));
    out.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in dumpe2fs output"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{field} is not a number"))
}

/// Issue 10, sizing: the computed size follows the layout libext2fs really makes. With many
/// inodes and little data it makes groups smaller than 32,768 blocks (more bitmaps and
/// backups); many tiny directories take a block each, not two. Both build without `--size`
/// and leave less than 10% of the image free (before: 19% and 49%).
#[test]
fn inode_heavy_trees_are_sized_by_the_real_layout() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let files = s.path("files");
    for d in 0..100 {
        let dir = files.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            fs::File::create(dir.join(format!("f{f:03}"))).unwrap();
        }
    }
    let dirs = s.path("dirs");
    for d in 0..200 {
        for e in 0..200 {
            fs::create_dir_all(dirs.join(format!("a{d:03}/b{e:03}"))).unwrap();
        }
    }
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(s.path(".")));
    for (name, src, fs_kind) in [
        ("files", &files, "ext3"),
        ("files4", &files, "ext4"),
        ("dirs", &dirs, "ext3"),
    ] {
        let img = s.out(&format!("{name}.img"));
        b.build(&[
            OsStr::new("--dir"),
            src.as_os_str(),
            OsStr::new("--fs"),
            OsStr::new(fs_kind),
            OsStr::new("-o"),
            img.as_os_str(),
        ]);
        assert_fsck_clean(&img);
        let blocks = superblock_field(&img, "Block count");
        let free = superblock_field(&img, "Free blocks");
        let per_group = superblock_field(&img, "Blocks per group");
        if src == &files {
            assert!(per_group < 32768, "{name}: {per_group} blocks per group");
        }
        let overshoot = free as f64 / blocks as f64;
        eprintln!(
            "{name}: {blocks} blocks, {free} free ({:.1}%), {per_group} per group",
            overshoot * 100.0
        );
        assert!(overshoot < 0.10, "{name}: {free} of {blocks} blocks free");
        fs::remove_file(&img).unwrap();
    }
}

/// The content digest in an image's manifest.
fn digest_of(image: &Path) -> String {
    manifest_of(image)["digest"]
        .as_str()
        .expect("digest in the manifest")
        .to_string()
}

/// Every entry of a mounted image: path, type, mode, owner, size, contents or link target.
fn listing(root: &Path) -> Vec<String> {
    let out = run_ok(
        Command::new("find")
            .arg(".")
            .args(["-printf", "%p %y %m %U:%G %s %l\\n"])
            .current_dir(root),
    );
    let mut lines: Vec<String> = out
        .lines()
        .map(|l| {
            let path = l.split(' ').next().unwrap_or_default();
            let file = root.join(path);
            let sum = if file.is_file() && !file.is_symlink() {
                sha256(&file)
            } else {
                String::new()
            };
            format!("{l} {sum}")
        })
        .collect();
    lines.sort();
    lines
}

/// README, "Building an image": inputs merge the same in any order (same entries,
/// same digest) except that a directory two inputs provide takes the attributes of the first;
/// the same inputs in the same order give the same bytes; and `--tar` of a tree made with
/// `tar --sort=name --format=posix --xattrs` gives the same bytes as `--dir` of it.
#[test]
fn input_order_and_dir_versus_tar_are_as_documented() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let a = s.path("a");
    let bb = s.path("b");
    write(&a.join("bin/tool"), &noise(70_000, 3));
    write(&a.join("share/a.txt"), b"a\n");
    write(&bb.join("lib/lib.so"), &noise(9_000, 4));
    write(&bb.join("share/b.txt"), b"b\n");
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&a).arg(&bb));
    let build = |name: &str, inputs: &[&Path]| {
        let img = s.out(name);
        let mut args: Vec<&OsStr> = Vec::new();
        for i in inputs {
            args.extend([OsStr::new("--dir"), i.as_os_str()]);
        }
        args.extend([OsStr::new("-o"), img.as_os_str()]);
        b.build(&args);
        assert_fsck_clean(&img);
        img
    };
    let ab = build("ab.img", &[&a, &bb]);
    let ab_again = build("ab-again.img", &[&a, &bb]);
    let ba = build("ba.img", &[&bb, &a]);
    assert_eq!(sha256(&ab), sha256(&ab_again), "same order, same bytes");
    assert_eq!(digest_of(&ab), digest_of(&ba), "any order, same digest");
    if is_root() {
        let (m1, m2) = (Mounted::new(&ab), Mounted::new(&ba));
        assert_eq!(
            listing(m1.path()),
            listing(m2.path()),
            "any order, same entries"
        );
    }
    // A directory both provide, with different modes: the first input's.
    chmod(&bb.join("share"), 0o775);
    let ab = build("ab2.img", &[&a, &bb]);
    let ba = build("ba2.img", &[&bb, &a]);
    assert!(debugfs(&ab, "stat /share").contains("Mode:  0755"));
    assert!(debugfs(&ba, "stat /share").contains("Mode:  0775"));
    assert_ne!(digest_of(&ab), digest_of(&ba));

    // --dir and --tar of one tree: files, an empty one, a sparse one, a hard link, a symlink,
    // an xattr, a directory with its own mode.
    let t = s.path("tree");
    write(&t.join("bin/tool"), &noise(200_000, 5));
    write(&t.join("etc/empty"), b"");
    let sparse = t.join("var/sparse");
    write(&sparse, b"");
    let f = fs::OpenOptions::new().write(true).open(&sparse).unwrap();
    f.set_len(1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"end", (1 << 20) - 3).unwrap();
    fs::hard_link(t.join("bin/tool"), t.join("bin/tool-again")).unwrap();
    symlink("../bin/tool", t.join("etc/link")).unwrap();
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.note", "-v", "kept"])
            .arg(t.join("etc/empty")),
    );
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(&t));
    chmod(&t.join("var"), 0o1755);
    let from_dir = build("from-dir.img", &[&t]);
    let tar = s.path("tree.tar");
    run_ok(
        Command::new("tar")
            .args(["--sort=name", "--format=posix", "--xattrs", "-C"])
            .arg(&t)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    chmod(&tar, 0o644);
    let from_tar = s.out("from-tar.img");
    b.build(&[
        OsStr::new("--tar"),
        tar.as_os_str(),
        OsStr::new("-o"),
        from_tar.as_os_str(),
    ]);
    assert_eq!(
        sha256(&from_dir),
        sha256(&from_tar),
        "--dir and --tar, same bytes"
    );
}

/// Random tar streams through the PAX reader (`crates/imgbuild/src/pax.rs`), checked against
/// GNU tar: what GNU tar extracts and what the image holds (read through a read-only mount)
/// must be equal, entry by entry, and a stream is refused (exit 3) exactly when GNU tar
/// refuses it (exit 2).
///
/// Intended differences, kept out of the generator and pinned by the fixed corpus in
/// tests/fixtures/pax-hostile instead: a NUL byte in a PAX `path` (GNU tar cuts the name there;
/// the builder refuses), `uid`/`gid` of `(uid_t)-1` (GNU tar leaves the owner as it is; the
/// builder refuses), global `path`/`size` records (refused), records the builder does not
/// use (`mtime`, `uname`, ...: GNU tar checks their syntax, the builder ignores them), and
/// anything ext cannot hold (item 12).
mod pax_fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    #[derive(Debug, Clone)]
    enum Kind {
        File(Vec<u8>),
        Dir,
        Symlink(Vec<u8>),
    }

    /// How a member's name is stored.
    #[derive(Debug, Clone, Copy)]
    enum NameIn {
        Ustar,
        Pax,
        GnuLongName,
    }

    #[derive(Debug, Clone)]
    struct Member {
        name: Vec<u8>,
        name_in: NameIn,
        kind: Kind,
        mode: u32,
        owner: Option<(u64, u64)>,
        xattrs: Vec<(Vec<u8>, Vec<u8>)>,
        /// Records nobody acts on: `comment` and an unknown keyword.
        extra: Vec<(Vec<u8>, Vec<u8>)>,
    }

    #[derive(Debug, Clone)]
    enum Corruption {
        LengthPlusOne,
        LengthMinusOne,
        LengthNotANumber,
        NoNewline,
        NoEquals,
    }

    #[derive(Debug, Clone)]
    struct Archive {
        global: Vec<(Vec<u8>, Vec<u8>)>,
        members: Vec<Member>,
        corruption: Option<(usize, Corruption)>,
    }

    /// Bytes a value may hold: text, newlines, NULs, UTF-8, anything.
    fn value_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"abcxyz019 =.-_".to_vec()),
                1 => Just(b'\n'),
                1 => Just(0u8),
                1 => any::<u8>(),
            ],
            0..max,
        )
    }

    /// A name component: never `.`/`..`, no `/` or NUL, sometimes a newline, UTF-8 or
    /// bytes that are not UTF-8.
    fn component(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                8 => prop::sample::select(b"abcdefghijklmnopqrstuvwxyz0123456789_-".to_vec()),
                1 => Just(b'\n'),
                1 => Just(b' '),
                1 => 0x80u8..=0xff,
            ],
            1..max,
        )
        .prop_map(|mut c| {
            c.insert(0, b'n'); // never "." or ".."
            c
        })
    }

    fn member() -> impl Strategy<Value = Member> {
        let kind = prop_oneof![
            4 => value_bytes(3000).prop_map(Kind::File),
            1 => Just(Kind::Dir),
            1 => component(200).prop_map(Kind::Symlink),
        ];
        let owner = prop_oneof![
            3 => Just(None),
            2 => (0u64..4_294_967_295, 0u64..4_294_967_295).prop_map(Some),
            1 => (4_294_967_296u64..1 << 40, 0u64..10).prop_map(Some),
        ];
        let xattr = (
            prop::collection::vec(prop::sample::select(b"abcdefgh".to_vec()), 1..12),
            value_bytes(60),
        )
            .prop_map(|(name, value)| ([b"user.".as_slice(), &name].concat(), value));
        let extra = (
            prop::sample::select(vec![
                b"comment".to_vec(),
                b"crashcart.fuzz.unknown".to_vec(),
            ]),
            value_bytes(80),
        );
        (
            component(200),
            prop::sample::select(vec![NameIn::Ustar, NameIn::Pax, NameIn::GnuLongName]),
            kind,
            prop::sample::select(vec![0o644u32, 0o755, 0o600, 0o4755, 0o1777]),
            owner,
            prop::collection::vec(xattr, 0..3),
            prop::collection::vec(extra, 0..2),
        )
            .prop_map(|(name, name_in, kind, mode, owner, mut xattrs, extra)| {
                if matches!(kind, Kind::Symlink(_)) {
                    xattrs.clear(); // never read back from a symlink: refused (corpus)
                }
                Member {
                    name,
                    name_in,
                    kind,
                    mode,
                    owner,
                    xattrs,
                    extra,
                }
            })
    }

    fn archive() -> impl Strategy<Value = Archive> {
        let global = prop_oneof![
            3 => Just(Vec::new()),
            1 => (value_bytes(40), 0u64..100_000).prop_map(|(v, uid)| vec![
                (b"comment".to_vec(), v),
                (b"uid".to_vec(), uid.to_string().into_bytes()),
            ]),
        ];
        let corruption = prop_oneof![
            4 => Just(None),
            1 => (
                0usize..8,
                prop::sample::select(vec![
                    Corruption::LengthPlusOne,
                    Corruption::LengthMinusOne,
                    Corruption::LengthNotANumber,
                    Corruption::NoNewline,
                    Corruption::NoEquals,
                ]),
            )
                .prop_map(Some),
        ];
        (global, prop::collection::vec(member(), 1..5), corruption).prop_map(
            |(global, members, corruption)| Archive {
                global,
                members,
                corruption,
            },
        )
    }

    /// One record, `LEN` counting its own digits.
    fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
        let rest = key.len() + value.len() + 3;
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        let mut out = format!("{len} ").into_bytes();
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
        out
    }

    fn header(name: &[u8], kind: u8, size: usize, link: &[u8], mode: u32, gnu: bool) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[148..156].copy_from_slice(b"        ");
        h[156] = kind;
        h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        if gnu {
            h[257..265].copy_from_slice(b"ustar  \0");
        } else {
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
        }
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn padded(out: &mut Vec<u8>, data: &[u8]) {
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(512), 0);
    }

    /// Damages the first record of `records` as `how` says.
    fn corrupt(records: &mut [u8], how: &Corruption) {
        let space = records.iter().position(|&b| b == b' ').expect("a record");
        let len: usize = std::str::from_utf8(&records[..space])
            .unwrap()
            .parse()
            .unwrap();
        match how {
            Corruption::LengthPlusOne | Corruption::LengthMinusOne => {
                let new = if matches!(how, Corruption::LengthPlusOne) {
                    len + 1
                } else {
                    len - 1
                };
                let digits = new.to_string();
                if digits.len() == space {
                    records[..space].copy_from_slice(digits.as_bytes());
                } else {
                    records[0] = b'x';
                }
            }
            Corruption::LengthNotANumber => records[0] = b'x',
            Corruption::NoNewline => records[len - 1] = b'.',
            Corruption::NoEquals => {
                let eq = records[..len].iter().position(|&b| b == b'=').unwrap();
                records[eq] = b':';
            }
        }
    }

    impl Archive {
        /// The member's image path (members are numbered so that names never clash).
        fn path(i: usize, m: &Member) -> Vec<u8> {
            let mut p = format!("m{i}-").into_bytes();
            p.extend_from_slice(&m.name);
            if matches!(m.name_in, NameIn::GnuLongName) && p.len() <= 100 {
                p.resize(101, b'l');
            }
            p
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            let mut corruption = self.corruption.clone();
            if !self.global.is_empty() {
                let records: Vec<u8> = self.global.iter().flat_map(|(k, v)| record(k, v)).collect();
                out.extend_from_slice(&header(b"global", b'g', records.len(), b"", 0o644, false));
                padded(&mut out, &records);
            }
            for (i, m) in self.members.iter().enumerate() {
                let path = Self::path(i, m);
                let (kind, data, link): (u8, &[u8], &[u8]) = match &m.kind {
                    Kind::File(d) => (b'0', d, b""),
                    Kind::Dir => (b'5', b"", b""),
                    Kind::Symlink(t) => (b'2', b"", t),
                };
                let mut records = Vec::new();
                if matches!(m.name_in, NameIn::Pax)
                    || (matches!(m.name_in, NameIn::Ustar) && path.len() > 99)
                {
                    records.extend(record(b"path", &path));
                }
                let gnu = matches!(m.name_in, NameIn::GnuLongName);
                // A long link target: GNU's `K` member next to a GNU long name, else PAX.
                let long_link = link.len() > 99;
                if (long_link && !gnu) || link.contains(&b'\n') {
                    records.extend(record(b"linkpath", link));
                }
                if let Some((uid, gid)) = m.owner {
                    records.extend(record(b"uid", uid.to_string().as_bytes()));
                    records.extend(record(b"gid", gid.to_string().as_bytes()));
                }
                for (k, v) in &m.xattrs {
                    records.extend(record(&[b"SCHILY.xattr.".as_slice(), k].concat(), v));
                }
                for (k, v) in &m.extra {
                    records.extend(record(k, v));
                }
                if !records.is_empty() {
                    if let Some((_, how)) = corruption.take_if(|(at, _)| *at <= i) {
                        corrupt(&mut records, &how);
                    }
                    out.extend_from_slice(&header(
                        b"PaxHeaders/x",
                        b'x',
                        records.len(),
                        b"",
                        0o644,
                        false,
                    ));
                    padded(&mut out, &records);
                }
                if gnu && long_link && !link.contains(&b'\n') {
                    let mut target = link.to_vec();
                    target.push(0);
                    out.extend_from_slice(&header(
                        b"././@LongLink",
                        b'K',
                        target.len(),
                        b"",
                        0o644,
                        true,
                    ));
                    padded(&mut out, &target);
                }
                if gnu {
                    let mut name = path.clone();
                    name.push(0);
                    out.extend_from_slice(&header(
                        b"././@LongLink",
                        b'L',
                        name.len(),
                        b"",
                        0o644,
                        true,
                    ));
                    padded(&mut out, &name);
                }
                out.extend_from_slice(&header(&path, kind, data.len(), link, m.mode, gnu));
                padded(&mut out, data);
            }
            out.resize(out.len() + 1024, 0);
            out
        }
    }

    /// Everything compared about an entry: type, permission bits, owner, contents or target,
    /// `user.` xattrs.
    type Tree = BTreeMap<Vec<u8>, (char, u32, u32, u32, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

    fn user_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut names = vec![0u8; 65536];
        let n = rustix::fs::llistxattr(path, &mut names).unwrap_or(0);
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = names[..n]
            .split(|&b| b == 0)
            .filter(|n| n.starts_with(b"user."))
            .map(|n| {
                let mut v = vec![0u8; 65536];
                let len = rustix::fs::lgetxattr(path, n, &mut v).expect("lgetxattr");
                v.truncate(len);
                (n.to_vec(), v)
            })
            .collect();
        out.sort();
        out
    }

    fn tree(root: &Path, skip: &[&[u8]]) -> Tree {
        let mut out = Tree::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            for e in fs::read_dir(root.join(&rel)).unwrap() {
                let e = e.unwrap();
                let name = e.file_name();
                if rel.as_os_str().is_empty() && skip.contains(&name.as_bytes()) {
                    continue;
                }
                let rel = rel.join(&name);
                let path = root.join(&rel);
                let meta = fs::symlink_metadata(&path).unwrap();
                let (kind, body) = if meta.is_dir() {
                    stack.push(rel.clone());
                    ('d', Vec::new())
                } else if meta.file_type().is_symlink() {
                    (
                        'l',
                        fs::read_link(&path).unwrap().into_os_string().into_vec(),
                    )
                } else {
                    ('f', fs::read(&path).unwrap())
                };
                let perm = if kind == 'd' { 0 } else { meta.mode() & 0o7777 };
                out.insert(
                    rel.into_os_string().into_vec(),
                    (kind, perm, meta.uid(), meta.gid(), body, user_xattrs(&path)),
                );
            }
        }
        out
    }

    use std::os::unix::ffi::OsStringExt;

    /// One case: GNU tar's verdict and tree against the builder's.
    /// Returns whether both accepted the stream.
    fn check(b: &Builder, s: &Scratch, n: usize, archive: &[u8]) -> Result<bool, TestCaseError> {
        let tar = s.path(&format!("fuzz{n}.tar"));
        write(&tar, archive);
        chmod(&tar, 0o644);
        let extracted = tempfile::tempdir().unwrap();
        let gnu = run(Command::new("tar")
            .env("LC_ALL", "C")
            .args([
                "--xattrs",
                "--xattrs-include=user.*",
                "--numeric-owner",
                "--same-owner",
            ])
            .args(["--same-permissions", "-xf"])
            .arg(&tar)
            .arg("-C")
            .arg(extracted.path()));
        let img = s.out(&format!("fuzz{n}.img"));
        let ours = b.run(&[
            OsStr::new("--tar"),
            tar.as_os_str(),
            OsStr::new("--keep-owner"),
            OsStr::new("-o"),
            img.as_os_str(),
        ]);
        let gnu_err = String::from_utf8_lossy(&gnu.stderr).into_owned();
        let our_err = String::from_utf8_lossy(&ours.stderr).into_owned();
        match (gnu.status.code(), ours.status.code()) {
            (Some(0), Some(0)) => {}
            (Some(2), Some(3)) => {
                prop_assert_eq!(our_err.lines().count(), 1, "one line: {}", our_err);
                prop_assert!(!img.exists(), "nothing at -o");
                return Ok(false);
            }
            (g, o) => {
                return Err(TestCaseError::fail(format!(
                    "GNU tar exit {g:?} ({gnu_err}), crashcart-imgbuild exit {o:?} ({our_err})"
                )))
            }
        }
        assert_fsck_clean(&img);
        let m = Mounted::new(&img);
        let image = tree(m.path(), &[b"lost+found", b".crashcart", b".crashcartrc"]);
        let expected = tree(extracted.path(), &[]);
        drop(m);
        fs::remove_file(&img).unwrap();
        for (path, entry) in &expected {
            prop_assert_eq!(
                image.get(path),
                Some(entry),
                "{:?} differs from GNU tar's",
                String::from_utf8_lossy(path)
            );
        }
        prop_assert_eq!(image.len(), expected.len(), "entries");
        Ok(true)
    }

    /// 80 cases, 7-25 s on a shared 2-core machine: each is a GNU tar extraction, a build,
    /// e2fsck and a mount.
    #[test]
    fn random_pax_streams_read_as_gnu_tar_reads_them() {
        let Some(b) = Builder::new() else { return };
        if !is_root() {
            skip("the comparison mounts images and extracts owners (needs root)");
            return;
        }
        let s = Scratch::new(&b);
        let mut runner = TestRunner::new(Config {
            cases: 80,
            max_shrink_iters: 200,
            failure_persistence: None,
            ..Config::default()
        });
        let n = std::cell::Cell::new(0);
        let accepted = std::cell::Cell::new(0);
        let result = runner.run(&archive(), |a| {
            n.set(n.get() + 1);
            let bytes = a.bytes();
            if check(&b, &s, n.get(), &bytes)? {
                accepted.set(accepted.get() + 1);
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        let (n, accepted) = (n.get(), accepted.get());
        eprintln!(
            "{n} random tar streams: {accepted} read alike, {} refused by both",
            n - accepted
        );
        assert!(accepted >= n / 4 && accepted < n, "both outcomes exercised");
    }
}

/// The corpus in tests/fixtures/pax-hostile: each member is read or refused as expected.tsv
/// records, by the builder and by GNU tar, and what is read comes back right.
#[test]
fn hostile_tar_members_are_read_or_refused_as_recorded() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let corpus = crashcart_tests::workspace_root().join("tests/fixtures/pax-hostile");
    let table = fs::read_to_string(corpus.join("expected.tsv")).unwrap();
    let mut cases = 0;
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let [file, ours, needle, gnu, _why] = cols[..] else {
            panic!("bad line in expected.tsv: {line}");
        };
        let tar = s.path(file);
        fs::copy(corpus.join(file), &tar).unwrap();
        chmod(&tar, 0o644);
        let img = s.out("corpus.img");
        let out = b.run(&[
            OsStr::new("--keep-owner"),
            OsStr::new("--tar"),
            tar.as_os_str(),
            OsStr::new("-o"),
            img.as_os_str(),
        ]);
        let ours: i32 = ours.parse().unwrap();
        if ours == 0 {
            assert_success(&out, file);
            assert_fsck_clean(&img);
            fs::remove_file(&img).unwrap();
        } else {
            assert_fails(&out, ours, &[needle], &s.path("out"), &[]);
            assert_eq!(
                String::from_utf8_lossy(&out.stderr).lines().count(),
                1,
                "{file}"
            );
        }
        if is_root() {
            let dir = tempfile::tempdir().unwrap();
            let gnu_tar = run(Command::new("tar")
                .args([
                    "--xattrs",
                    "--xattrs-include=*",
                    "--numeric-owner",
                    "--same-owner",
                    "-xf",
                ])
                .arg(&tar)
                .arg("-C")
                .arg(dir.path()));
            assert_eq!(
                gnu_tar.status.code(),
                Some(gnu.parse().unwrap()),
                "GNU tar on {file}"
            );
        }
        cases += 1;
    }
    assert!(cases >= 19, "{cases} cases");
    // What the two accepted cases hold, read back by the kernel.
    if is_root() {
        for (file, check) in [
            ("newline-in-xattr-then-size.tar", "xattr"),
            ("global-uid.tar", "uid"),
        ] {
            let tar = s.path(file);
            let img = s.out("read.img");
            b.build(&[
                OsStr::new("--keep-owner"),
                OsStr::new("--tar"),
                tar.as_os_str(),
                OsStr::new("-o"),
                img.as_os_str(),
            ]);
            let m = Mounted::new(&img);
            let f = m.path().join("f");
            assert_eq!(fs::read(&f).unwrap(), b"data\n", "{file}");
            match check {
                "xattr" => {
                    let mut v = [0u8; 16];
                    let n = rustix::fs::lgetxattr(&f, "user.bin", &mut v).unwrap();
                    assert_eq!(&v[..n], b"a\nb\0c");
                }
                _ => assert_eq!(fs::metadata(&f).unwrap().uid(), 1234),
            }
            drop(m);
            fs::remove_file(&img).unwrap();
        }
    }
}

/// A file with more names than an inode's 16-bit link count: refused as bad input (exit 3;
/// it was exit 1, an internal error); 65,535 names still fit.
#[test]
fn more_hard_links_than_an_inode_counts_are_refused() {
    let Some(b) = Builder::new() else { return };
    let s = Scratch::new(&b);
    let names: Vec<String> = (1..65536).map(|i| format!("l/{i:05}")).collect();
    let mut members = vec![TarMember {
        pax: &[],
        name: "f",
        kind: b'0',
        link: "",
        data: b"x\n",
    }];
    members.extend(names.iter().map(|n| TarMember {
        pax: &[],
        name: n,
        kind: b'1',
        link: "f",
        data: b"",
    }));
    assert_tar_bytes_refused(
        &b,
        &s,
        "links65536",
        &pax_tar(&members),
        &[],
        &["/l/65535", "more names than an ext inode counts (65535)"],
    );
    members.pop();
    let tar = s.path("links65535.tar");
    write(&tar, &pax_tar(&members));
    chmod(&tar, 0o644);
    let img = s.out("links.img");
    b.build(&[
        OsStr::new("--tar"),
        tar.as_os_str(),
        OsStr::new("-o"),
        img.as_os_str(),
    ]);
    assert_fsck_clean(&img);
    let stat = debugfs(&img, "stat /f");
    assert_eq!(stat_field(&stat, "Links:"), "65535", "{stat}");
}
