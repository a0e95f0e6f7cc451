//! The tool image: which file to use, whether it is an ext2/3/4 filesystem, and what its
//! manifest asks for (see "The image contract" in ARCHITECTURE.md).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crashcart_layout::{SessionManifest, MANIFEST_PATH};

use crate::packed::{self, Cache, PackedError};
use rustix::fs::{fcntl_getfl, fcntl_setfl, openat2, Mode, OFlags, ResolveFlags};

/// Byte offset of `s_magic` in an ext2/3/4 image (superblock at 1024, magic at +56).
const EXT_MAGIC_OFFSET: u64 = 1024 + 56;
/// `EXT2_SUPER_MAGIC`, little-endian on disk.
const EXT_MAGIC: u16 = 0xEF53;
/// Refuse manifests larger than this: the image may come from anywhere.
const MANIFEST_MAX_BYTES: u64 = 16 << 20;

/// Why the image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No `-i`, no `$CRASHCART_IMAGE`, and none of the default places has one.
    #[error("no image: pass -i PATH or set CRASHCART_IMAGE (looked for {})", .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound(Vec<PathBuf>),
    /// The image cannot be opened.
    #[error("cannot open image {}", path.display())]
    Open {
        /// The image path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An image found implicitly that the caller does not control.
    #[error("found {} but will not use it: {why}; pass -i PATH to use it anyway", path.display())]
    Untrusted {
        /// The image path.
        path: PathBuf,
        /// Who else could have written it.
        why: String,
    },
    /// The path is not a regular file.
    #[error("image {} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// No ext2/3/4 superblock.
    #[error("image {} is not an ext2/3/4 filesystem (no superblock magic at byte 1080)", .0.display())]
    NotExt(PathBuf),
    /// A compressed image that cannot be unpacked or whose cached copy cannot be used.
    #[error(transparent)]
    Packed(#[from] PackedError),
    /// The manifest exists but cannot be used.
    #[error("image {} has a bad manifest ({MANIFEST_PATH}): {why}", path.display())]
    BadManifest {
        /// The image path.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// An opened, checked image file.
#[derive(Debug)]
pub struct Image {
    /// Where it was found.
    pub path: PathBuf,
    /// Opened read-only, close-on-exec: the image itself, or, for a compressed image, its
    /// unpacked copy in the cache.
    pub file: File,
}

/// Picks the image: `-i`, then `$CRASHCART_IMAGE` (both named by the caller), then
/// `./crashcart.img` or `./crashcart.img.zst`, then `<exe dir>/../share/crashcart/crashcart.img`
/// or `.img.zst` (`exe`: where crashcart was started from). An image found in one of those two places was not named by the caller,
/// and the current directory may be a volume a container writes: it is used only if root owns
/// it and its directory and no one else can write either.
pub fn choose(explicit: Option<&Path>, exe: Option<&Path>) -> Result<PathBuf, ImageError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("CRASHCART_IMAGE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    // Each place's raw image first, then its compressed one (as releases publish it).
    let mut looked = vec![
        PathBuf::from("./crashcart.img"),
        PathBuf::from("./crashcart.img.zst"),
    ];
    if let Some(dir) = exe.and_then(Path::parent) {
        let share = dir.join("../share/crashcart");
        looked.push(normalize(&share.join("crashcart.img")));
        looked.push(normalize(&share.join("crashcart.img.zst")));
    }
    let found = looked
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or(ImageError::NotFound(looked))?;
    check_trusted(&found)?;
    Ok(found)
}

/// `a/b/../c` → `a/c`, textually (for messages and the lookup beside the binary).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Refuses an implicitly found image that anyone but root could have put or changed there.
fn check_trusted(path: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::MetadataExt;
    let untrusted = |why: String| ImageError::Untrusted {
        path: path.to_path_buf(),
        why,
    };
    // The directory the path names it in, and, when that entry is a symlink, the directory
    // of the file it leads to: no one but root may be able to swap either entry before
    // crashcart opens it.
    let given_dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let canonical = path
        .canonicalize()
        .map_err(|e| untrusted(format!("cannot resolve it: {e}")))?;
    let canonical_dir = canonical.parent().unwrap_or(Path::new("/")).to_path_buf();
    let meta = |p: &Path| std::fs::metadata(p).map_err(|e| untrusted(e.to_string()));
    let checks = [
        ("it", meta(&canonical)?),
        ("its directory", meta(&given_dir)?),
        ("the directory it links into", meta(&canonical_dir)?),
    ];
    for (what, meta) in &checks {
        if meta.uid() != 0 {
            return Err(untrusted(format!("{what} is owned by uid {}", meta.uid())));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(untrusted(format!(
                "{what} is writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            )));
        }
    }
    Ok(())
}

impl Image {
    /// Opens `path` read-only and checks for an ext2/3/4 superblock. A zstd-compressed image
    /// (`crashcart.img.zst`, known by its magic) is unpacked into the cache first, or taken
    /// from there ([`packed`]).
    pub fn open(path: &Path) -> Result<Image, ImageError> {
        let open_err = |source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        };
        // O_NONBLOCK: a FIFO passed as the image must not hang us in open(); it is cleared
        // once the file is known to be regular (where it would mean nothing anyway).
        let file = File::options()
            .read(true)
            .custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(ImageError::NotAFile(path.to_path_buf()));
        }
        fcntl_setfl(
            &file,
            fcntl_getfl(&file).map_err(|e| open_err(e.into()))? - OFlags::NONBLOCK,
        )
        .map_err(|e| open_err(e.into()))?;
        let file = if packed::is_zstd(&file).map_err(open_err)? {
            let cache = Cache::from_env()?;
            let (unpacked, entry) = cache.unpacked(&file, path, packed::MAX_UNPACKED)?;
            crate::step!("image {} is {}", path.display(), entry.display());
            unpacked
        } else {
            file
        };
        let mut magic = [0u8; 2];
        match file.read_exact_at(&mut magic, EXT_MAGIC_OFFSET) {
            Ok(()) if u16::from_le_bytes(magic) == EXT_MAGIC => {}
            Ok(()) => return Err(ImageError::NotExt(path.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(ImageError::NotExt(path.to_path_buf()))
            }
            Err(e) => return Err(open_err(e)),
        }
        Ok(Image {
            path: path.to_path_buf(),
            file,
        })
    }
}

/// The manifest of a mounted image: what a session takes from it
/// ([`SessionManifest`], parsed and checked by the contract crate), read through the mount.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Manifest(pub SessionManifest);

impl std::ops::Deref for Manifest {
    type Target = SessionManifest;

    fn deref(&self) -> &SessionManifest {
        &self.0
    }
}

impl Manifest {
    /// Reads the manifest from the root of a mounted image; an image without one (made by
    /// `mke2fs -d`) has the empty manifest.
    pub fn read(image_root: BorrowedFd<'_>, image_path: &Path) -> Result<Manifest, ImageError> {
        let bad = |why: String| ImageError::BadManifest {
            path: image_path.to_path_buf(),
            why,
        };
        // RESOLVE_IN_ROOT: symlinks in the image cannot lead out of it.
        let fd = match openat2(
            image_root,
            MANIFEST_PATH,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(Manifest::default()),
            Err(e) => return Err(bad(e.to_string())),
        };
        let mut text = String::new();
        File::from(fd)
            .take(MANIFEST_MAX_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| bad(e.to_string()))?;
        SessionManifest::parse(&text).map(Manifest).map_err(bad)
    }
}

impl AsFd for Image {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
