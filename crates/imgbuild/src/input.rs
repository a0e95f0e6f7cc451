//! Inputs that feed the image writer: directory trees (`--dir`, closure store paths, the host
//! bundle's staging directory) and tar streams (`--tar`).
//!
//! Directory trees are walked in byte order of names, so inode numbers and block placement
//! depend only on the tree. A tar stream is written in stream order, entry by entry, without
//! unpacking anything to disk; `tar --sort=name` gives the same order as a walk, and then the
//! same image.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crashcart_layout::STORE_DIR;

use crate::attributes::{Attributes, Xattrs};
use crate::content::{Content, Mapped};
use crate::image::{ImageWriter, Special, WriteError};
use crate::limits;
use crate::pax::{self, named, MemberPax, PaxRecoder, SparseReader};

/// Regular files opened and read ahead of the one being written.
const READ_AHEAD_FILES: usize = 8;

/// Errors reading an input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The input does not exist or cannot be read.
    #[error("cannot read input {}", path.display())]
    Unreadable {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An input provides a path the builder writes itself.
    #[error("an input provides /{}, which crashcart-imgbuild writes itself", .0.display())]
    Reserved(PathBuf),
    /// A `--dir` that is not a directory.
    #[error("--dir {}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The tar stream is malformed.
    #[error("{origin}: bad tar stream")]
    Tar {
        /// Which input.
        origin: String,
        /// The parser's error.
        source: std::io::Error,
    },
    /// A tar member type crashcart cannot place.
    #[error("{origin}: unsupported tar entry {} (type {kind:?})", path.display())]
    TarEntry {
        /// Which input.
        origin: String,
        /// The member.
        path: PathBuf,
        /// Its type byte.
        kind: u8,
    },
    /// Writing into the image failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn unreadable(path: &Path) -> impl FnOnce(std::io::Error) -> InputError + '_ {
    move |source| InputError::Unreadable {
        path: path.to_path_buf(),
        source,
    }
}

/// Extended attributes of `path` (not following symlinks), sorted by name. Attributes the
/// caller may not read (e.g. `trusted.*` when unprivileged) are not listed by the kernel.
pub fn read_xattrs(path: &Path) -> Result<Xattrs, InputError> {
    let io = |e: rustix::io::Errno| std::io::Error::from_raw_os_error(e.raw_os_error());
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(unreadable(path)(io(e))),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 256];
        let got = loop {
            match rustix::fs::lgetxattr(path, name, &mut value) {
                Ok(n) => break Some(n),
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 16, 0),
                // Removed between list and get.
                Err(rustix::io::Errno::NODATA) => break None,
                Err(e) => return Err(unreadable(path)(io(e))),
            }
        };
        if let Some(n) = got {
            value.truncate(n);
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// What kind of tree an input is, which decides what of its files' attributes is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeKind {
    /// A `--dir` (or the `--host` staging tree): a symlink at its root is followed (a
    /// directory given as a link to it), every attribute kept: mode, owner, xattrs.
    Dir,
    /// A nix store path: only what nix itself gives store files gets into the image, so that
    /// the same store path makes the same image on any host. nix records a file's type, its
    /// executable bit and symlink targets; whatever else the host put on the files (an SELinux
    /// label in `security.selinux`, `user.*` attributes, a mode changed by hand) is dropped:
    /// modes are nix's canonical ones (0444, or 0555 when executable), no xattrs.
    StorePath,
}

/// The mode nix gives a store file of mode `mode` (not a symlink): read-only for all, and
/// executable for all when the owner could execute it.
pub fn canonical_store_mode(mode: u32) -> u32 {
    0o444 | if mode & 0o100 != 0 { 0o111 } else { 0 }
}

/// Writes the tree at `source` into the image at `prefix` (empty for the root). `source` may
/// itself be a file or a symlink (a store path can be); `kind` says whether a symlink there is
/// followed and which attributes are kept.
pub fn add_tree(
    writer: &mut ImageWriter,
    source: &Path,
    prefix: &Path,
    origin: usize,
    kind: TreeKind,
) -> Result<(), InputError> {
    let follow_root = kind == TreeKind::Dir;
    let walk = walkdir::WalkDir::new(source)
        .follow_links(false)
        .follow_root_links(follow_root)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    // The next few regular files are opened early and their reading started (WILLNEED), so
    // the disk works on them while the current one is copied.
    let mut ahead: VecDeque<(
        walkdir::Result<walkdir::DirEntry>,
        Option<std::io::Result<File>>,
    )> = VecDeque::with_capacity(READ_AHEAD_FILES + 1);
    let mut walk = walk.into_iter();
    loop {
        while ahead.len() <= READ_AHEAD_FILES {
            let Some(entry) = walk.next() else { break };
            let opened = match &entry {
                Ok(e) if e.file_type().is_file() => Some(File::open(e.path()).inspect(|f| {
                    // Advice only: a failure changes nothing but speed.
                    let _ = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::WillNeed);
                })),
                _ => None,
            };
            ahead.push_back((entry, opened));
        }
        let Some((entry, opened)) = ahead.pop_front() else {
            break;
        };
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(source).to_path_buf();
            InputError::Unreadable {
                path,
                source: e.into(),
            }
        })?;
        let path = entry.path();
        let rel = path
            .strip_prefix(source)
            .expect("walk stays under its root");
        let target = if rel.as_os_str().is_empty() {
            prefix.to_path_buf()
        } else {
            prefix.join(rel)
        };
        let meta = entry_metadata(&entry, follow_root)?;
        if writer.is_own_file(meta.dev(), meta.ino()) {
            // `-o` inside an input directory: never copy the image into itself.
            continue;
        }
        add_entry(writer, path, &target, &meta, opened, origin, kind)?;
    }
    Ok(())
}

/// The entry's own metadata, or for a followed root symlink, its target's.
pub fn entry_metadata(
    entry: &walkdir::DirEntry,
    follow_root: bool,
) -> Result<std::fs::Metadata, InputError> {
    let path = entry.path();
    if entry.depth() == 0 && follow_root {
        return std::fs::metadata(path).map_err(unreadable(path));
    }
    entry.metadata().map_err(|e| InputError::Unreadable {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

fn add_entry(
    writer: &mut ImageWriter,
    path: &Path,
    target: &Path,
    meta: &std::fs::Metadata,
    opened: Option<std::io::Result<File>>,
    origin: usize,
    kind: TreeKind,
) -> Result<(), InputError> {
    let ft = meta.file_type();
    let attrs = match kind {
        TreeKind::Dir => Attributes {
            perm: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            xattrs: read_xattrs(path)?,
        },
        TreeKind::StorePath => Attributes {
            perm: if ft.is_symlink() {
                0o777
            } else {
                canonical_store_mode(meta.mode())
            },
            uid: meta.uid(),
            gid: meta.gid(),
            xattrs: Vec::new(),
        },
    };
    if ft.is_dir() {
        writer.dir(target, attrs, origin)?;
    } else if ft.is_file() {
        let file = opened
            .unwrap_or_else(|| File::open(path))
            .map_err(unreadable(path))?;
        let key = (meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
        writer.file(target, attrs, meta.len(), Content::File(&file), key, origin)?;
    } else if ft.is_symlink() {
        let link = std::fs::read_link(path).map_err(unreadable(path))?;
        writer.symlink(target, attrs, link.as_os_str().as_bytes(), origin)?;
    } else {
        let special = if ft.is_char_device() {
            Special::CharDevice(meta.rdev())
        } else if ft.is_block_device() {
            Special::BlockDevice(meta.rdev())
        } else if ft.is_fifo() {
            Special::Fifo
        } else {
            Special::Socket
        };
        writer.special(target, attrs, special, origin)?;
    }
    Ok(())
}

impl<R: Read> Mapped for SparseReader<R> {
    fn chunks(&self) -> &[(u64, u64)] {
        SparseReader::chunks(self)
    }

    fn skip_hole(&mut self, to: u64) -> std::io::Result<()> {
        SparseReader::skip_hole(self, to)
    }
}

/// Opens a tar input (`-` is stdin), undoes gzip when the stream starts with its magic, and
/// re-encodes PAX records the tar crate would misread ([`PaxRecoder`]).
pub fn open_tar(reader: Box<dyn Read>) -> Result<Box<dyn Read>, std::io::Error> {
    let mut buffered = BufReader::with_capacity(1 << 20, reader);
    let head = buffered.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        let tar = flate2::read::MultiGzDecoder::new(buffered);
        Ok(Box::new(PaxRecoder::new(tar)))
    } else {
        Ok(Box::new(PaxRecoder::new(buffered)))
    }
}

/// Where a tar member lands in the image: members under the store directory (`nix/store/…`,
/// as `tar -c /nix/store/…` writes them) go under `store/`, everything else at its path.
pub fn tar_target(member: &[u8], store_dir: &[u8]) -> PathBuf {
    let mut rel = member;
    loop {
        if let Some(r) = rel.strip_prefix(b"./") {
            rel = r;
        } else if let Some(r) = rel.strip_prefix(b"/") {
            rel = r;
        } else {
            break;
        }
    }
    let store = store_dir.strip_prefix(b"/").unwrap_or(store_dir);
    if !store.is_empty() {
        if let Some(rest) = rel.strip_prefix(store) {
            if rest.is_empty() || rest.starts_with(b"/") {
                return Path::new("store")
                    .join(OsStr::from_bytes(rest.strip_prefix(b"/").unwrap_or(rest)));
            }
        }
    }
    PathBuf::from(OsStr::from_bytes(rel))
}

/// Whether a member names the archive root or a directory on the way to the store directory.
fn is_store_ancestor(member: &[u8], store_dir: &[u8]) -> bool {
    let trimmed: &[u8] = {
        let mut m = member;
        while let Some(r) = m.strip_prefix(b"./").or_else(|| m.strip_prefix(b"/")) {
            m = r;
        }
        let m = m.strip_suffix(b"/").unwrap_or(m);
        if m == b"." {
            b""
        } else {
            m
        }
    };
    let store = store_dir.strip_prefix(b"/").unwrap_or(store_dir);
    trimmed.is_empty()
        || trimmed == store
        || (store.starts_with(trimmed) && store.get(trimmed.len()) == Some(&b'/'))
}

/// A device member's major and minor: its PAX `SCHILY.devmajor`/`devminor` records, else its
/// header fields (octal, or GNU base-256); 0 for a header without them (v7).
fn device_numbers(
    header: &tar::Header,
    pax_major: Option<u64>,
    pax_minor: Option<u64>,
) -> std::io::Result<(u64, u64)> {
    let raw = header.as_bytes();
    let has_fields = header.as_ustar().is_some() || header.as_gnu().is_some();
    let field = |pax: Option<u64>, range: std::ops::Range<usize>, what: &str| match pax {
        Some(n) => Ok(n),
        None if !has_fields => Ok(0),
        None => pax::numeric_field(&raw[range]).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("malformed device {what} field"),
            )
        }),
    };
    Ok((
        field(pax_major, 329..337, "major")?,
        field(pax_minor, 337..345, "minor")?,
    ))
}

/// Writes every member of a tar stream into the image as it is read.
pub fn add_tar(
    writer: &mut ImageWriter,
    stream: Box<dyn Read>,
    store_dir: &[u8],
    origin: usize,
    origin_name: &str,
) -> Result<(), InputError> {
    let tar_err = |source: std::io::Error| InputError::Tar {
        origin: origin_name.to_string(),
        source,
    };
    let mut archive = tar::Archive::new(stream);
    // Records of the global PAX headers so far, in force for every later member.
    let mut global = Vec::new();
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(tar_err)?;
            global.extend(pax::global_records(&data).map_err(tar_err)?);
            continue;
        }
        let MemberPax {
            path,
            linkpath,
            xattrs,
            sparse,
            uid,
            gid,
            devmajor,
            devminor,
        } = MemberPax::of(&mut entry, &global)
            .map_err(|e| named(Path::new(OsStr::from_bytes(&entry.path_bytes())), e))
            .map_err(tar_err)?;
        // A GNU sparse file's real name, else a path only the PAX reader could read.
        let member = (sparse.as_ref().and_then(|s| s.name.clone()))
            .or(path)
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        if is_store_ancestor(&member, store_dir) {
            continue; // `.`, `nix/`, `nix/store/`: the image root and its store/ directory
        }
        let target = tar_target(&member, store_dir);
        let header = entry.header().clone();
        // Owners ext cannot hold are refused only when they would be kept (`--keep-owner`).
        let owner = |what: &str, pax: Option<u64>, field: std::io::Result<u64>| {
            let id = match pax {
                Some(id) => id,
                None => field.map_err(tar_err)?,
            };
            if !writer.keeps_owner() {
                return Ok(0);
            }
            u32::try_from(id).map_err(|_| {
                InputError::Write(WriteError::Unrepresentable {
                    path: Path::new("/").join(&target),
                    problem: limits::owner_problem(what, id).unwrap_or_default(),
                })
            })
        };
        let mut attrs = Attributes {
            perm: header.mode().map_err(tar_err)? & 0o7777,
            uid: owner("uid", uid, header.uid())?,
            gid: owner("gid", gid, header.gid())?,
            xattrs,
        };
        if target.starts_with(STORE_DIR) {
            // A store path's files, as a closure input would give them (TreeKind::StorePath).
            attrs.xattrs.clear();
            attrs.perm = if header.entry_type() == tar::EntryType::Symlink {
                0o777
            } else {
                canonical_store_mode(attrs.perm)
            };
        }
        let link_name = || {
            linkpath.clone().unwrap_or_else(|| {
                entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default()
            })
        };
        let kind = header.entry_type();
        let rdev = || -> Result<u64, InputError> {
            let (major, minor) = device_numbers(&header, devmajor, devminor)
                .map_err(|e| named(&target, e))
                .map_err(tar_err)?;
            // Numbers past 32 bits cannot even be encoded in a dev_t; the writer refuses those
            // past ext's 12 and 20 bits.
            let fits = |n: u64| u32::try_from(n).ok();
            match (fits(major), fits(minor)) {
                (Some(major), Some(minor)) => Ok(rustix::fs::makedev(major, minor)),
                _ => Err(InputError::Write(WriteError::Unrepresentable {
                    path: Path::new("/").join(&target),
                    problem: limits::device_problem(major, minor).unwrap_or_default(),
                })),
            }
        };
        match kind {
            tar::EntryType::Directory => writer.dir(&target, attrs, origin)?,
            tar::EntryType::Regular | tar::EntryType::Continuous if sparse.is_some() => {
                let sparse = sparse.expect("matched");
                let size = sparse.size;
                let stored = entry.size();
                let mut file = sparse
                    .open(&mut entry, stored)
                    .map_err(|e| named(&target, e))
                    .map_err(tar_err)?;
                writer.file(
                    &target,
                    attrs,
                    size,
                    Content::Mapped(&mut file),
                    None,
                    origin,
                )?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = entry.size();
                writer.file(
                    &target,
                    attrs,
                    size,
                    Content::Stream(&mut entry),
                    None,
                    origin,
                )?;
            }
            tar::EntryType::Symlink => {
                let link = link_name();
                writer.symlink(&target, attrs, &link, origin)?;
            }
            tar::EntryType::Link => {
                let link = link_name();
                writer.hard_link(&target, &tar_target(&link, store_dir), origin)?;
            }
            tar::EntryType::Char => {
                let special = Special::CharDevice(rdev()?);
                writer.special(&target, attrs, special, origin)?
            }
            tar::EntryType::Block => {
                let special = Special::BlockDevice(rdev()?);
                writer.special(&target, attrs, special, origin)?
            }
            tar::EntryType::Fifo => writer.special(&target, attrs, Special::Fifo, origin)?,
            // Headers that only describe the next member; the tar crate applies them.
            tar::EntryType::XHeader => {}
            other => {
                return Err(InputError::TarEntry {
                    origin: origin_name.to_string(),
                    path: target,
                    kind: other.as_byte(),
                })
            }
        }
    }
    // The rest of the stream after the tar's end: read to its end, so a gzip stream's CRC and
    // length are checked and trailing garbage is refused, as GNU tar does.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(tar_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_members_land_under_store() {
        let s = b"/nix/store";
        assert_eq!(
            tar_target(b"nix/store/abc-bash/bin/bash", s),
            Path::new("store/abc-bash/bin/bash")
        );
        assert_eq!(
            tar_target(b"/nix/store/abc-bash", s),
            Path::new("store/abc-bash")
        );
        assert_eq!(tar_target(b"./bin/busybox", s), Path::new("bin/busybox"));
        assert_eq!(
            tar_target(b"nix/storefront/x", s),
            Path::new("nix/storefront/x")
        );
        for top in [
            b"./".as_slice(),
            b".",
            b"nix/",
            b"nix",
            b"/nix/store/",
            b"nix/store",
        ] {
            assert!(
                is_store_ancestor(top, s),
                "{}",
                String::from_utf8_lossy(top)
            );
        }
        assert!(!is_store_ancestor(b"nix/store/abc", s));
        assert!(!is_store_ancestor(b"bin", s));
    }

    #[test]
    fn makedev_matches_the_kernel_encoding() {
        use rustix::fs::makedev;
        assert_eq!(makedev(1, 3), 0x103);
        assert_eq!(
            makedev(259, 70000),
            (70000 & 0xff) | (259 << 8) | ((70000 & !0xff) << 12)
        );
    }
}
