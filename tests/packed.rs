//! End-to-end tests of compressed images (`crashcart -i crashcart.img.zst`): unpacked once into
//! the cache (`$CRASHCART_CACHE`), reused from there, and refused, with nothing run and nothing
//! left in the cache, when the cache, an entry in it or the compressed file is not what
//! crashcart wrote or expects. Real Docker containers, loop devices and `zstd`, as root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crashcart_tests::{
    assert_crashcart_error, bin, busybox_tree, docker_ready, have, loop_devices_for, mke2fs_image,
    run, run_ok, skip, unique_name, wait_until, Container,
};

/// The marker a planted image's `sh` leaves in the container's `/vol`.
const PLANTED_MARKER: &str = "ran-planted";

fn ready() -> bool {
    if !docker_ready() {
        return false;
    }
    if !have("zstd") {
        skip("zstd not installed (apt-get install zstd)");
        return false;
    }
    true
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A busybox image, compressed as the release compresses it, and a cache directory of its own,
/// all under one root-owned temp dir.
struct Packed {
    dir: tempfile::TempDir,
    raw: PathBuf,
    zst: PathBuf,
    cache: PathBuf,
}

impl Packed {
    fn new() -> Packed {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        busybox_tree(&tree);
        let raw = dir.path().join(format!("{}.img", unique_name("packed")));
        mke2fs_image(&tree, &raw, 16);
        let zst = raw.with_extension("img.zst");
        zstd(&raw, &zst);
        let cache = dir.path().join("cache");
        Packed {
            dir,
            raw,
            zst,
            cache,
        }
    }

    /// `crashcart -i IMAGE ARGS...` with this cache.
    fn crashcart(&self, image: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("crashcart"));
        cmd.arg("-i").arg(image).args(args);
        cmd.env_remove("CRASHCART_IMAGE")
            .env("CRASHCART_CACHE", &self.cache);
        cmd
    }

    /// The entry the compressed image is cached under.
    fn entry(&self) -> PathBuf {
        self.cache.join(format!("{}.img", sha256sum(&self.zst)))
    }

    /// Every name in the cache directory.
    fn cache_listing(&self) -> Vec<String> {
        let mut names: Vec<String> = match std::fs::read_dir(&self.cache) {
            Ok(dir) => dir
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }
}

/// `zstd -19 --long=27` (what the release workflow runs), `src` to `dst`.
fn zstd(src: &Path, dst: &Path) {
    run_ok(
        Command::new("zstd")
            .args(["-q", "-f", "-19", "--long=27"])
            .arg(src)
            .arg("-o")
            .arg(dst),
    );
}

fn sha256sum(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    out.split_whitespace().next().unwrap().to_string()
}

/// What a hostile-cache case is called, how it plants, what the error must say.
type PlantCase<'a> = (&'static str, Box<dyn Fn() + 'a>, &'static str);

/// A busybox image whose `sh` is a payload leaving [`PLANTED_MARKER`] in `/vol`.
fn planted_image(dir: &Path) -> PathBuf {
    let tree = dir.join("planted-tree");
    busybox_tree(&tree);
    let sh = tree.join("bin/sh");
    std::fs::remove_file(&sh).unwrap();
    std::fs::write(
        &sh,
        format!("#!/dev/crashcart/bin/busybox sh\n/dev/crashcart/bin/busybox touch /vol/{PLANTED_MARKER}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&sh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = dir.join("planted.img");
    mke2fs_image(&tree, &image, 16);
    image
}

fn inode_and_mtime(path: &Path) -> (u64, i64, i64) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}

fn assert_no_loop_device(path: &Path) {
    assert!(
        wait_until(Duration::from_secs(10), || loop_devices_for(path)
            .is_empty()),
        "loop device left for {}",
        path.display()
    );
}

#[test]
fn a_compressed_image_is_unpacked_once_then_reused() {
    if !ready() {
        return;
    }
    let p = Packed::new();
    let c = Container::start(&[], &[]);
    let hostname = |image: &Path| {
        let out = run(&mut p.crashcart(image, &[&c.id, "cat", "/proc/sys/kernel/hostname"]));
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), &c.id[..12]);
    };

    // First run: unpacked into the cache, under the SHA-256 of the compressed file.
    hostname(&p.zst);
    let entry = p.entry();
    assert_eq!(
        p.cache_listing(),
        [entry.file_name().unwrap().to_string_lossy()]
    );
    let meta = std::fs::metadata(&entry).unwrap();
    assert_eq!(meta.uid(), 0);
    assert_eq!(meta.mode() & 0o7777, 0o444);
    let cache_meta = std::fs::metadata(&p.cache).unwrap();
    assert_eq!(cache_meta.mode() & 0o022, 0, "cache created writable");
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        std::fs::read(&p.raw).unwrap(),
        "the entry is not the raw image"
    );
    let first = inode_and_mtime(&entry);

    // Second run: the same file, not written again.
    std::thread::sleep(Duration::from_millis(20));
    hostname(&p.zst);
    assert_eq!(inode_and_mtime(&entry), first, "unpacked again");

    // Known by its magic, not its name: the same bytes as `tools.img` find the same entry.
    let renamed = p.dir.path().join("tools.img");
    std::fs::copy(&p.zst, &renamed).unwrap();
    hostname(&renamed);
    assert_eq!(inode_and_mtime(&entry), first, "unpacked again");
    assert_eq!(p.cache_listing().len(), 1, "{:?}", p.cache_listing());
    assert_no_loop_device(&entry);

    // -v says where the image came from.
    let out = run(&mut p.crashcart(&p.zst, &["-v", &c.id, "true"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("using {} (unpacked before)", entry.display())),
        "{}",
        stderr(&out)
    );
    assert_no_loop_device(&entry);
}

/// A cache directory someone else could write, and entries crashcart did not write (planted by
/// a user, a symlink, a FIFO, a second link, a truncated copy): refused with the reason, the
/// planted image never runs, nothing is replaced.
#[test]
fn a_cache_or_entry_not_written_by_root_is_refused() {
    if !ready() {
        return;
    }
    let p = Packed::new();
    let vol = tempfile::tempdir().unwrap();
    let c = Container::start(&["-v", &format!("{}:/vol", vol.path().display())], &[]);
    let planted = planted_image(p.dir.path());
    let entry = p.entry();
    let session = |what: &str| -> Output {
        let out = run(&mut p.crashcart(&p.zst, &[&c.id, "sh", "-c", "echo real"]));
        assert!(
            !vol.path().join(PLANTED_MARKER).exists(),
            "{what}: the planted image ran"
        );
        out
    };
    let reset = || {
        let _ = std::fs::remove_dir_all(&p.cache);
        std::fs::create_dir(&p.cache).unwrap();
        std::fs::set_permissions(&p.cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    };

    // The directory itself.
    for (what, prepare, needle) in [
        (
            "a cache writable by others",
            Box::new(|| std::fs::set_permissions(&p.cache, PermissionsExt::from_mode(0o1777)))
                as Box<dyn Fn() -> std::io::Result<()>>,
            "writable by group or others",
        ),
        (
            "a cache owned by uid 65534",
            Box::new(|| std::os::unix::fs::chown(&p.cache, Some(65534), Some(65534))),
            "owned by uid 65534",
        ),
        (
            "a cache that is a symlink",
            Box::new(|| {
                let real = p.dir.path().join("elsewhere");
                std::fs::create_dir_all(&real)?;
                std::fs::remove_dir(&p.cache)?;
                std::os::unix::fs::symlink(&real, &p.cache)
            }),
            "not a directory",
        ),
    ] {
        reset();
        prepare().unwrap();
        let out = session(what);
        assert_crashcart_error(&out, needle);
        assert_crashcart_error(&out, "image cache");
        let listing = std::fs::read_dir(&p.cache).map(|d| d.count()).unwrap_or(0);
        assert_eq!(listing, 0, "{what}: something was written");
        if std::fs::symlink_metadata(&p.cache).unwrap().is_symlink() {
            std::fs::remove_file(&p.cache).unwrap();
        }
    }

    // Entries.
    let copy_planted = |uid: u32, mode: u32| {
        std::fs::copy(&planted, &entry).unwrap();
        std::os::unix::fs::chown(&entry, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let cases: Vec<PlantCase> = vec![
        (
            "an entry planted by uid 65534",
            Box::new(|| copy_planted(65534, 0o444)),
            "owned by uid 65534",
        ),
        (
            "an entry writable by others",
            Box::new(|| copy_planted(0, 0o666)),
            "writable by group or others",
        ),
        (
            "an entry that is a symlink to root's image",
            Box::new(|| {
                let target = p.dir.path().join("target.img");
                std::fs::copy(&planted, &target).unwrap();
                std::os::unix::fs::symlink(&target, &entry).unwrap();
            }),
            "symlink",
        ),
        (
            "an entry with a second link",
            Box::new(|| {
                copy_planted(0, 0o444);
                std::fs::hard_link(&entry, p.dir.path().join("second-link.img")).unwrap();
            }),
            "2 links",
        ),
        (
            "a FIFO in place of the entry",
            Box::new(|| run_ok(Command::new("mkfifo").arg(&entry)).truncate(0)),
            "not a regular file",
        ),
        (
            "a truncated entry",
            Box::new(|| {
                let bytes = std::fs::read(&p.raw).unwrap();
                std::fs::write(&entry, &bytes[..bytes.len() / 2]).unwrap();
                std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o444)).unwrap();
            }),
            "bytes",
        ),
    ];
    for (what, plant, needle) in cases {
        reset();
        let _ = std::fs::remove_file(p.dir.path().join("second-link.img"));
        plant();
        let before = std::fs::symlink_metadata(&entry).unwrap();
        let out = session(what);
        assert_crashcart_error(&out, needle);
        assert_crashcart_error(&out, &entry.display().to_string());
        let after = std::fs::symlink_metadata(&entry).unwrap();
        assert_eq!(
            (before.ino(), before.len()),
            (after.ino(), after.len()),
            "{what}: the entry was replaced"
        );
        assert_eq!(
            p.cache_listing().len(),
            1,
            "{what}: {:?}",
            p.cache_listing()
        );
        assert_no_loop_device(&entry);
    }

    // Control: with the planted entry removed, the real image is unpacked and runs.
    reset();
    let out = session("control");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "real\n");
}

/// A truncated, padded, lying or oversized `.zst`, or one that is no filesystem: one clear
/// error, nothing in the cache (no entry, no partial file), no loop device.
#[test]
fn a_damaged_compressed_image_is_refused_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let p = Packed::new();
    let c = Container::start(&[], &[]);
    let packed = std::fs::read(&p.zst).unwrap();
    let not_ext = p.dir.path().join("random.bin");
    std::fs::write(&not_ext, vec![0x5au8; 1 << 20]).unwrap();
    let not_ext_zst = p.dir.path().join("random.bin.zst");
    zstd(&not_ext, &not_ext_zst);

    let no_check = p.dir.path().join("no-check.img.zst");
    run_ok(
        Command::new("zstd")
            .args(["-q", "-f", "-3", "--no-check"])
            .arg(&p.raw)
            .arg("-o")
            .arg(&no_check),
    );

    let mut trailing = packed.clone();
    trailing.extend_from_slice(b"trailing bytes");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a truncated .zst",
            packed[..packed.len() / 2].to_vec(),
            "not a complete zstd image",
        ),
        (
            "a .zst cut inside its header",
            packed[..6].to_vec(),
            "not a complete zstd image",
        ),
        (
            "bytes after the frame",
            trailing,
            "data after the zstd frame",
        ),
        (
            "a frame declaring 1 TiB",
            raw_frame(Some(1 << 40), &[0u8; 4096]),
            "unpacks to more than",
        ),
        (
            "a frame declaring less than it holds",
            with_declared_size(&packed, 4096),
            "not a complete zstd image",
        ),
        (
            "a frame without zstd's checksum (--no-check)",
            std::fs::read(&no_check).unwrap(),
            "no content checksum",
        ),
        (
            "content that is not a filesystem",
            std::fs::read(&not_ext_zst).unwrap(),
            "does not unpack to an ext2/3/4 image",
        ),
    ];
    for (what, bytes, needle) in cases {
        let bad = p.dir.path().join("bad.img.zst");
        std::fs::write(&bad, &bytes).unwrap();
        let out = run(&mut p.crashcart(&bad, &[&c.id, "true"]));
        assert_crashcart_error(&out, needle);
        assert_crashcart_error(&out, &bad.display().to_string());
        assert!(
            p.cache_listing().is_empty(),
            "{what}: left in the cache: {:?}",
            p.cache_listing()
        );
        assert!(loop_devices_for(&bad).is_empty(), "{what}");
    }
}

/// `frame` (as the zstd command writes it) with its content size field set to `size`.
fn with_declared_size(frame: &[u8], size: u64) -> Vec<u8> {
    let descriptor = frame[4];
    let single_segment = descriptor & 0x20 != 0;
    let dict_id_len = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let field_len = match descriptor >> 6 {
        0 if single_segment => 1,
        0 => panic!("the frame declares no size"),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let at = 5 + usize::from(!single_segment) + dict_id_len;
    // A 2-byte field holds size - 256.
    let stored = if field_len == 2 { size - 256 } else { size };
    let mut frame = frame.to_vec();
    frame[at..at + field_len].copy_from_slice(&stored.to_le_bytes()[..field_len]);
    frame
}

/// A zstd frame holding `content` in one raw block, declaring `size` (8-byte field) when given.
fn raw_frame(size: Option<u64>, content: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD];
    // Frame header descriptor: content size field of 8 bytes (or none), a window descriptor.
    frame.push(if size.is_some() { 0xC0 } else { 0x00 });
    frame.push(0x58); // window 2^21
    if let Some(size) = size {
        frame.extend_from_slice(&size.to_le_bytes());
    }
    let header = ((content.len() as u32) << 3) | 1; // raw, last block
    frame.extend_from_slice(&header.to_le_bytes()[..3]);
    frame.extend_from_slice(content);
    frame
}

/// An image found implicitly (`./crashcart.img.zst`) is checked like a raw one before it is
/// unpacked: one owned by a user is refused and nothing reaches the cache; root's is used.
#[test]
fn an_implicit_compressed_image_must_belong_to_root() {
    if !ready() {
        return;
    }
    let p = Packed::new();
    let c = Container::start(&[], &[]);
    // Under the build tree: root-owned 0755 all the way, unlike /tmp.
    let parent = bin("crashcart").parent().unwrap().to_path_buf();
    for (uid, used) in [(1000, false), (0, true)] {
        let _ = std::fs::remove_dir_all(&p.cache);
        let dir = tempfile::tempdir_in(&parent).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = dir.path().join("crashcart.img.zst");
        std::fs::copy(&p.zst, &found).unwrap();
        std::os::unix::fs::chown(&found, Some(uid), Some(0)).unwrap();
        let out = run(Command::new(bin("crashcart"))
            .env_remove("CRASHCART_IMAGE")
            .env("CRASHCART_CACHE", &p.cache)
            .current_dir(dir.path())
            .args([&c.id, "cat", "/proc/sys/kernel/hostname"]));
        if used {
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(stdout(&out).trim(), &c.id[..12]);
            assert_eq!(p.cache_listing().len(), 1);
        } else {
            assert_crashcart_error(&out, "owned by uid 1000");
            assert!(p.cache_listing().is_empty(), "{:?}", p.cache_listing());
        }
    }
}

/// xorshift64*: a deterministic stream of mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutated `.zst` files (bytes flipped, cut, spliced, with and without zstd's checksum) against
/// `zstd -d`, an independent reader: whatever crashcart unpacks, `zstd -d` unpacks to the same
/// bytes; whatever it refuses leaves nothing in the cache; it never panics. (Without the
/// checksum, which crashcart therefore requires, a damaged frame can decode without an error,
/// and libzstd 1.5.4 and 1.5.7 then disagree on the bytes: this test found that.)
#[test]
fn mutated_compressed_images_agree_with_zstd() {
    if !crashcart_tests::is_root() {
        skip("needs root (the cache must be root's)");
        return;
    }
    if !have("zstd") {
        skip("zstd not installed (apt-get install zstd)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    busybox_tree(&tree);
    let raw = dir.path().join("seed.img");
    mke2fs_image(&tree, &raw, 4);
    let mut seeds = Vec::new();
    // The command's default checksum, and none (whose mutations must all be refused).
    for flags in [
        &["-19", "--long=27"][..],
        &["-3"][..],
        &["-3", "--no-check"][..],
    ] {
        let out = dir.path().join("seed.img.zst");
        run_ok(
            Command::new("zstd")
                .args(["-q", "-f"])
                .args(flags)
                .arg(&raw)
                .arg("-o")
                .arg(&out),
        );
        seeds.push(std::fs::read(&out).unwrap());
    }
    let cache_dir = dir.path().join("cache");
    let cache = crashcart::packed::Cache::open(&cache_dir).unwrap();
    let input = dir.path().join("input.zst");
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..150 {
        let mut bytes = seeds[round % seeds.len()].clone();
        // One round in eight is a valid frame, compressed afresh at another level: accepted,
        // and compared byte for byte with zstd's reading of it.
        let mutations = if round % 8 == 7 {
            let level = format!("-{}", 1 + rng.below(9));
            bytes = run_ok_bytes(Command::new("zstd").args(["-q", "-c", &level]).arg(&raw));
            0
        } else {
            1 + rng.below(3)
        };
        for _ in 0..mutations {
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes.truncate(at.max(1)),
                1 => {
                    let at = at.min(bytes.len() - 1);
                    bytes[at] ^= 1 << rng.below(8);
                }
                2 => {
                    let end = (at + rng.below(32)).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ => {
                    let junk: Vec<u8> = (0..rng.below(16)).map(|_| rng.next() as u8).collect();
                    bytes.splice(at..at, junk);
                }
            }
        }
        std::fs::write(&input, &bytes).unwrap();
        let file = std::fs::File::open(&input).unwrap();
        let ours = cache.unpacked(&file, &input, 64 << 20);
        let theirs = run(Command::new("zstd")
            .args(["-dq", "--long=27", "-c"])
            .arg(&input));
        let listing: Vec<_> = std::fs::read_dir(&cache_dir).unwrap().collect();
        match ours {
            Ok((unpacked, entry)) => {
                accepted += 1;
                assert!(
                    theirs.status.success(),
                    "round {round}: zstd -d refuses what we took"
                );
                let mut ours = Vec::new();
                std::io::Read::read_to_end(&mut &unpacked, &mut ours).unwrap();
                assert!(ours == theirs.stdout, "round {round}: the bytes differ");
                std::fs::remove_file(entry).unwrap();
            }
            Err(e) => {
                refused += 1;
                assert!(listing.is_empty(), "round {round}: {e} left {listing:?}");
            }
        }
    }
    // Both outcomes were exercised.
    assert!(refused > 0, "nothing refused");
    assert!(accepted > 0, "nothing accepted");
    eprintln!("{accepted} accepted, {refused} refused");
}

/// Runs `cmd`, asserting success; its stdout as bytes.
fn run_ok_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    out.stdout
}
