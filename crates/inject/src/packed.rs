//! zstd-compressed images (`crashcart.img.zst`): unpacked once into a root-owned cache and
//! reused from there.
//!
//! A compressed image is recognised by the zstd frame magic, not by its name. Its cache key is
//! the SHA-256 of the compressed file (the digest published beside it as
//! `crashcart.img.zst.sha256`): it is known before anything is unpacked, so a later run finds
//! its entry after reading the small compressed file once, never the large unpacked one.
//!
//! The cache directory (`$CRASHCART_CACHE`, default `/var/cache/crashcart`) must be root's and
//! writable by no one else; everything in it is reached through one descriptor of that
//! directory, so renaming or replacing the path later does not matter. An entry is written as
//! an unnamed file (`O_TMPFILE`) in the directory, checked to be an ext2/3/4 filesystem of the
//! size its superblock claims, fsynced, and only then linked and renamed to `SHA256.img`: an
//! interrupted or failed unpack (a truncated or corrupt `.zst`, a full disk, more output than
//! allowed) leaves nothing. Before an entry is used, the opened file itself is checked: a
//! regular file (a symlink is not followed), owned by root, writable by no one else, one link,
//! and as large as the size the compressed frame declares and its superblock claims. An entry
//! that fails is refused with the reason, not used and not silently replaced.
//!
//! The frame must carry zstd's content checksum (the `zstd` command's default), so that a
//! damaged file is an error, never different bytes. Decompression streams (1 MiB at a time,
//! window at most 128 MiB, as `zstd --long` writes by default) and stops at [`MAX_UNPACKED`]
//! bytes, or at the frame's declared size when smaller.

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{linkat, openat, renameat, unlinkat, AtFlags, Mode, OFlags, CWD};
use sha2::{Digest, Sha256};

/// The zstd frame magic number, as it is stored (little-endian `0xFD2FB528`).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
/// Where unpacked images are kept unless `$CRASHCART_CACHE` says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/crashcart";
/// The variable naming another cache directory.
pub const CACHE_ENV: &str = "CRASHCART_CACHE";
/// No compressed image unpacks to more than this: far more than any tool image, far less than
/// what a small hostile frame could otherwise make crashcart write.
pub const MAX_UNPACKED: u64 = 16 << 30;
/// The largest back-reference window accepted: 2^27 bytes, the default of `zstd --long`. A
/// hostile frame cannot make crashcart allocate more.
const WINDOW_LOG_MAX: u32 = 27;
/// Bytes read or written at a time.
const CHUNK: usize = 1 << 20;

/// Why a compressed image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PackedError {
    /// The cache directory cannot be created or opened.
    #[error("cannot open the image cache {}", path.display())]
    CacheOpen {
        /// The cache directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The cache directory could be written by someone other than root.
    #[error("will not use the image cache {}: {why} (it must be root's and writable by no one else; set {CACHE_ENV} to use another)", path.display())]
    CacheUntrusted {
        /// The cache directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// An entry in the cache is not one crashcart wrote.
    #[error("will not use the cached image {}: {why}; remove it to unpack again", path.display())]
    EntryUntrusted {
        /// The entry.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Reading the compressed image failed.
    #[error("cannot read {}", path.display())]
    Read {
        /// The compressed image.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The compressed data is damaged or incomplete.
    #[error("{} is not a complete zstd image: {why}", path.display())]
    Corrupt {
        /// The compressed image.
        path: PathBuf,
        /// What the decoder found.
        why: String,
    },
    /// The image unpacks to more than is allowed.
    #[error("{} unpacks to more than {limit} bytes ({what})", path.display())]
    TooLarge {
        /// The compressed image.
        path: PathBuf,
        /// The limit that was hit.
        limit: u64,
        /// Which limit.
        what: &'static str,
    },
    /// The unpacked content is not an ext2/3/4 filesystem of the size it claims.
    #[error("{} does not unpack to an ext2/3/4 image: {why}", path.display())]
    NotExt {
        /// The compressed image.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The compressed file changed while it was read.
    #[error("{} changed while it was unpacked", .0.display())]
    Changed(PathBuf),
    /// Writing the unpacked image into the cache failed.
    #[error("cannot write the unpacked image into {}", dir.display())]
    Write {
        /// The cache directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether `file` starts with the zstd frame magic.
pub fn is_zstd(file: &File) -> std::io::Result<bool> {
    let mut magic = [0u8; 4];
    match file.read_exact_at(&mut magic, 0) {
        Ok(()) => Ok(magic == ZSTD_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The cache of unpacked images: an open, checked, root-owned directory.
#[derive(Debug)]
pub struct Cache {
    dir: File,
    path: PathBuf,
}

impl Cache {
    /// The cache `$CRASHCART_CACHE` names, else [`DEFAULT_CACHE_DIR`].
    pub fn from_env() -> Result<Cache, PackedError> {
        let path = std::env::var_os(CACHE_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR));
        Cache::open(&path)
    }

    /// Opens the cache directory at `path` (creating it, mode 0755, when missing) and checks
    /// that only root can change what is in it.
    pub fn open(path: &Path) -> Result<Cache, PackedError> {
        let open_err = |source| PackedError::CacheOpen {
            path: path.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(open_err)?;
        // The last component is not followed: a symlink planted there is refused, and every
        // later step goes through this descriptor, never through the path again.
        let dir = openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => PackedError::CacheUntrusted {
                path: path.to_path_buf(),
                why: "it is not a directory (a symlink?)".into(),
            },
            e => open_err(e.into()),
        })?;
        let dir = File::from(dir);
        let meta = dir.metadata().map_err(open_err)?;
        if let Some(why) = not_roots(&meta) {
            return Err(PackedError::CacheUntrusted {
                path: path.to_path_buf(),
                why,
            });
        }
        Ok(Cache {
            dir,
            path: path.to_path_buf(),
        })
    }

    /// The cache directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The unpacked image of the compressed image `packed` (read from `packed_path`), from the
    /// cache, unpacked into it first when missing; at most `max` bytes. Returns the entry,
    /// opened read-only, and its path.
    pub fn unpacked(
        &self,
        packed: &File,
        packed_path: &Path,
        max: u64,
    ) -> Result<(File, PathBuf), PackedError> {
        let read_err = |source| PackedError::Read {
            path: packed_path.to_path_buf(),
            source,
        };
        let digest = sha256_of(packed).map_err(read_err)?;
        let name = format!("{digest}.img");
        let entry_path = self.path.join(&name);
        let header = frame_header(packed, packed_path)?;
        let declared = header.declared;
        if declared.is_some_and(|size| size > max) {
            return Err(PackedError::TooLarge {
                path: packed_path.to_path_buf(),
                limit: max,
                what: "its frame declares so",
            });
        }
        // Without zstd's checksum a damaged frame can decode to other bytes without an error
        // (and decoder versions disagree on what). The zstd command writes one by default.
        if !header.checksum {
            return Err(PackedError::Corrupt {
                path: packed_path.to_path_buf(),
                why: "its frame has no content checksum (made with --no-check?)".into(),
            });
        }
        match self.open_entry(&name, &entry_path, declared)? {
            Some(file) => {
                crate::step!("using {} (unpacked before)", entry_path.display());
                return Ok((file, entry_path));
            }
            None => crate::step!(
                "unpacking {} into {}",
                packed_path.display(),
                entry_path.display()
            ),
        }
        self.unpack(packed, packed_path, &digest, &name, declared, max)?;
        let file = self
            .open_entry(&name, &entry_path, declared)?
            .ok_or_else(|| PackedError::Write {
                dir: self.path.clone(),
                source: std::io::Error::other("the new entry vanished"),
            })?;
        Ok((file, entry_path))
    }

    /// Opens the entry `name` and checks it; `None` when there is none.
    fn open_entry(
        &self,
        name: &str,
        path: &Path,
        declared: Option<u64>,
    ) -> Result<Option<File>, PackedError> {
        let untrusted = |why: String| PackedError::EntryUntrusted {
            path: path.to_path_buf(),
            why,
        };
        // O_NONBLOCK: a FIFO planted under the name must not hang the open.
        let fd = match openat(
            &self.dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => return Err(untrusted("it is a symlink".into())),
            Err(e) => {
                return Err(PackedError::CacheOpen {
                    path: path.to_path_buf(),
                    source: e.into(),
                })
            }
        };
        let file = File::from(fd);
        let meta = file.metadata().map_err(|source| PackedError::CacheOpen {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(untrusted("it is not a regular file".into()));
        }
        if let Some(why) = not_roots(&meta) {
            return Err(untrusted(why));
        }
        if meta.nlink() != 1 {
            return Err(untrusted(format!("it has {} links", meta.nlink())));
        }
        if let Some(size) = declared.filter(|&size| size != meta.len()) {
            return Err(untrusted(format!(
                "it has {} bytes, the image unpacks to {size}",
                meta.len()
            )));
        }
        if let Err(why) = check_ext(&file, meta.len()) {
            return Err(untrusted(why));
        }
        rustix::fs::fcntl_setfl(&file, OFlags::empty()).map_err(|e| PackedError::CacheOpen {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Some(file))
    }

    /// Unpacks `packed` into an unnamed file in the cache, checks it, and names it `name`.
    fn unpack(
        &self,
        packed: &File,
        packed_path: &Path,
        digest: &str,
        name: &str,
        declared: Option<u64>,
        max: u64,
    ) -> Result<(), PackedError> {
        let write_err = |source: std::io::Error| PackedError::Write {
            dir: self.path.clone(),
            source,
        };
        let corrupt = |e: std::io::Error| PackedError::Corrupt {
            path: packed_path.to_path_buf(),
            why: e.to_string(),
        };
        let out = openat(
            &self.dir,
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o444),
        )
        .map_err(|e| match e {
            rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL => {
                write_err(std::io::Error::other(format!(
                    "its filesystem has no O_TMPFILE; set {CACHE_ENV} to a directory on ext4, \
                     xfs, btrfs or tmpfs"
                )))
            }
            e => write_err(e.into()),
        })?;
        let mut out = File::from(out);
        let limit = declared.unwrap_or(max).min(max);

        let source = HashingReader {
            file: packed,
            offset: 0,
            hasher: Sha256::new(),
        };
        let mut decoder = zstd::stream::read::Decoder::new(source)
            .map_err(write_err)?
            .single_frame();
        decoder.window_log_max(WINDOW_LOG_MAX).map_err(write_err)?;
        let mut buf = vec![0u8; CHUNK];
        let mut written: u64 = 0;
        loop {
            let n = match decoder.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(decode_error(e, packed_path)),
            };
            written += n as u64;
            if written > limit {
                return Err(PackedError::TooLarge {
                    path: packed_path.to_path_buf(),
                    limit,
                    what: if declared.is_some_and(|d| d <= max) {
                        "its frame declares less"
                    } else {
                        "the maximum"
                    },
                });
            }
            out.write_all(&buf[..n]).map_err(write_err)?;
        }
        // One frame, then the end of the file: anything after it is not part of the image.
        let mut rest = decoder.finish();
        let trailing = rest.fill_buf().map_err(corrupt)?.len();
        if trailing != 0 {
            return Err(PackedError::Corrupt {
                path: packed_path.to_path_buf(),
                why: "data after the zstd frame".into(),
            });
        }
        // An empty buffer after fill_buf: the file was read to its end, every byte hashed.
        if format!("{:x}", rest.into_inner().hasher.finalize()) != digest {
            return Err(PackedError::Changed(packed_path.to_path_buf()));
        }
        if let Some(size) = declared.filter(|&size| size != written) {
            return Err(PackedError::Corrupt {
                path: packed_path.to_path_buf(),
                why: format!("the frame declares {size} bytes, it holds {written}"),
            });
        }
        check_ext(&out, written).map_err(|why| PackedError::NotExt {
            path: packed_path.to_path_buf(),
            why,
        })?;
        out.sync_all().map_err(write_err)?;

        // Named only now, complete and on disk: a temporary name first (linkat cannot replace),
        // then renamed over the entry's.
        let temp = format!(".{digest}.{}.partial", std::process::id());
        linkat(
            CWD,
            format!("/proc/self/fd/{}", out.as_raw_fd()).as_str(),
            &self.dir,
            temp.as_str(),
            AtFlags::SYMLINK_FOLLOW,
        )
        .map_err(|e| write_err(e.into()))?;
        if let Err(e) = renameat(&self.dir, temp.as_str(), &self.dir, name) {
            let _ = unlinkat(&self.dir, temp.as_str(), AtFlags::empty());
            return Err(write_err(e.into()));
        }
        self.dir.sync_all().map_err(write_err)?;
        Ok(())
    }
}

/// A decoder error as a one-line reason: an early end of the file means a truncated image.
fn decode_error(e: std::io::Error, path: &Path) -> PackedError {
    let why = match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "the file ends inside the frame (truncated?)".into(),
        _ => e.to_string(),
    };
    PackedError::Corrupt {
        path: path.to_path_buf(),
        why,
    }
}

/// Why the file or directory `meta` describes could be changed by someone other than root.
fn not_roots(meta: &std::fs::Metadata) -> Option<String> {
    if meta.uid() != 0 {
        Some(format!("it is owned by uid {}", meta.uid()))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "it is writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    }
}

/// The frame header of a compressed image: the content size it declares, and whether the
/// frame ends with a checksum of the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    declared: Option<u64>,
    checksum: bool,
}

/// Reads the frame header at the start of `packed`.
fn frame_header(packed: &File, path: &Path) -> Result<FrameHeader, PackedError> {
    // A frame header is at most 18 bytes.
    let mut header = [0u8; 18];
    let mut got = 0;
    while got < header.len() {
        match packed.read_at(&mut header[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(PackedError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    let bad = || PackedError::Corrupt {
        path: path.to_path_buf(),
        why: "no valid zstd frame header".into(),
    };
    let declared = zstd::zstd_safe::get_frame_content_size(&header[..got]).map_err(|_| bad())?;
    // Frame_Header_Descriptor, right after the magic: bit 2 is Content_Checksum_flag.
    let descriptor = *header.get(4).ok_or_else(bad)?;
    Ok(FrameHeader {
        declared,
        checksum: descriptor & 0x04 != 0,
    })
}

/// SHA-256 of the whole file, lowercase hex, read 1 MiB at a time (`io::copy`'s 8 KiB would
/// be thousands of reads for a release image).
fn sha256_of(file: &File) -> std::io::Result<String> {
    let mut reader = HashingReader {
        file,
        offset: 0,
        hasher: Sha256::new(),
    };
    let mut buf = vec![0u8; CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(format!("{:x}", reader.hasher.finalize()))
}

/// Reads a file from the start by offset (its shared position is left alone), hashing every
/// byte it hands out.
struct HashingReader<'a> {
    file: &'a File,
    offset: u64,
    hasher: Sha256,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = buf.len().min(CHUNK);
        let n = self.file.read_at(&mut buf[..len], self.offset)?;
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }
}

/// Checks that `file` (of `len` bytes) is an ext2/3/4 filesystem no larger than the file: a
/// truncated image has fewer bytes than its superblock counts blocks.
fn check_ext(file: &File, len: u64) -> Result<(), String> {
    let mut sb = [0u8; 1024];
    file.read_exact_at(&mut sb, 1024)
        .map_err(|_| format!("{len} bytes, too short for a superblock"))?;
    let le32 = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes"));
    if u16::from_le_bytes([sb[56], sb[57]]) != 0xEF53 {
        return Err("no ext2/3/4 superblock magic at byte 1080".into());
    }
    let log_block_size = le32(24);
    if log_block_size > 6 {
        return Err(format!("block size 1024 << {log_block_size} is not valid"));
    }
    let block_size = 1024u64 << log_block_size;
    // INCOMPAT_64BIT: the block count has a high half.
    let high = if le32(0x60) & 0x80 != 0 {
        u64::from(le32(0x150))
    } else {
        0
    };
    let blocks = (high << 32) | u64::from(le32(4));
    let needed = blocks.saturating_mul(block_size);
    if needed > len {
        return Err(format!(
            "{len} bytes, its superblock counts {blocks} blocks of {block_size} ({needed} bytes): truncated"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal "filesystem": a superblock with the magic, counting `blocks` 1 KiB blocks.
    fn ext_bytes(blocks: u32, len: usize) -> Vec<u8> {
        let mut image = vec![0u8; len];
        image[1024 + 4..1024 + 8].copy_from_slice(&blocks.to_le_bytes());
        image[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        image
    }

    /// `bytes` compressed as the `zstd` command does (content size declared, checksum).
    fn compress(bytes: &[u8], level: i32) -> Vec<u8> {
        let mut encoder = zstd::Encoder::new(Vec::new(), level).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder
            .set_pledged_src_size(Some(bytes.len() as u64))
            .unwrap();
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, bytes).unwrap();
        let file = File::open(&path).unwrap();
        (dir, file, path)
    }

    #[test]
    fn magic_is_recognised_whatever_the_name() {
        let packed = compress(&ext_bytes(8, 8192), 3);
        let (_d, file, _) = file_with(&packed);
        assert!(is_zstd(&file).unwrap());
        let (_d, file, _) = file_with(&ext_bytes(8, 8192));
        assert!(!is_zstd(&file).unwrap());
        let (_d, file, _) = file_with(b"ab");
        assert!(!is_zstd(&file).unwrap());
    }

    #[test]
    fn ext_check_finds_truncation() {
        let (_d, file, _) = file_with(&ext_bytes(8, 8192));
        assert_eq!(check_ext(&file, 8192), Ok(()));
        let (_d, file, _) = file_with(&ext_bytes(8, 6000));
        assert!(check_ext(&file, 6000).unwrap_err().contains("truncated"));
        let (_d, file, _) = file_with(&vec![0u8; 8192]);
        assert!(check_ext(&file, 8192).unwrap_err().contains("magic"));
        let (_d, file, _) = file_with(&[0u8; 100]);
        assert!(check_ext(&file, 100).unwrap_err().contains("too short"));
    }

    /// A private cache under a temp dir (tests run as root, so the directory is root's).
    fn cache() -> Option<(tempfile::TempDir, Cache)> {
        if !rustix::process::geteuid().is_root() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        Some((dir, cache))
    }

    fn entries(cache: &Cache) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn unpacks_once_and_reuses() {
        let Some((_d, cache)) = cache() else { return };
        let image = ext_bytes(64, 65536);
        let packed = compress(&image, 19);
        let (_p, file, path) = file_with(&packed);
        let (first, entry) = cache.unpacked(&file, &path, 1 << 20).unwrap();
        let digest = format!("{:x}", Sha256::digest(&packed));
        assert_eq!(entry, cache.path().join(format!("{digest}.img")));
        assert_eq!(std::fs::read(&entry).unwrap(), image);
        let (second, _) = cache.unpacked(&file, &path, 1 << 20).unwrap();
        assert_eq!(
            first.metadata().unwrap().ino(),
            second.metadata().unwrap().ino()
        );
        assert_eq!(entries(&cache), [format!("{digest}.img")]);
    }

    /// A stream without a declared size (written through `zstd::Encoder`, as `zstd -` does from
    /// a pipe) is stopped at the maximum, and nothing is left.
    #[test]
    fn stops_at_the_maximum() {
        let Some((_d, cache)) = cache() else { return };
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder.write_all(&ext_bytes(256, 256 * 1024)).unwrap();
        let packed = encoder.finish().unwrap();
        let (_p, file, path) = file_with(&packed);
        let header = frame_header(&file, &path).unwrap();
        assert_eq!(header.declared, None);
        assert!(header.checksum);
        let err = cache.unpacked(&file, &path, 100 * 1024).unwrap_err();
        assert!(
            matches!(err, PackedError::TooLarge { limit: 102400, .. }),
            "{err}"
        );
        assert!(entries(&cache).is_empty(), "{:?}", entries(&cache));
    }

    #[test]
    fn refuses_damage_and_leaves_nothing() {
        let Some((_d, cache)) = cache() else { return };
        let image = ext_bytes(64, 65536);
        let packed = compress(&image, 3);
        // Cut short.
        let (_p, file, path) = file_with(&packed[..packed.len() / 2]);
        let err = cache.unpacked(&file, &path, 1 << 20).unwrap_err();
        assert!(matches!(err, PackedError::Corrupt { .. }), "{err}");
        // Trailing bytes.
        let mut trailing = packed.clone();
        trailing.extend_from_slice(b"junk");
        let (_p, file, path) = file_with(&trailing);
        let err = cache.unpacked(&file, &path, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("after the zstd frame"), "{err}");
        // No checksum.
        let unchecked = zstd::encode_all(&image[..], 3).unwrap();
        let (_p, file, path) = file_with(&unchecked);
        let err = cache.unpacked(&file, &path, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("no content checksum"), "{err}");
        // Not a filesystem.
        let packed = compress(&[7u8; 65536], 3);
        let (_p, file, path) = file_with(&packed);
        let err = cache.unpacked(&file, &path, 1 << 20).unwrap_err();
        assert!(matches!(err, PackedError::NotExt { .. }), "{err}");
        assert!(entries(&cache).is_empty(), "{:?}", entries(&cache));
    }
}
