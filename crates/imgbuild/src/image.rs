//! The image writer: takes entries from any input (directory walk, closure, tar stream) and
//! puts them into the filesystem. Every new name takes the same path (a free slot, an inode,
//! its contents, its inode record and xattrs, the name, the count); a hard link only adds the
//! name. Each input is registered with the relocation that applies to it, if any.
//!
//! File bytes go straight from the input ([`crate::content`]) through the relocation and the
//! confinement into the image file with `pwrite` ([`crate::placement`]), in runs of
//! contiguous blocks that libext2fs allocates (so its bitmaps stay the single truth about
//! which block is used); all-zero blocks become holes, so sparse files stay sparse and a
//! file's blocks do not depend on how its input stored the zeros. Directories are laid out at
//! the end, when every name is known. Everything that varies between runs — timestamps,
//! owners, UUID, hash seed, directory order, inode numbers — is fixed by the inputs and the
//! options, so the same inputs give the same image bytes.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crashcart_layout::Relocation;

use crate::attributes::Attributes;
use crate::confine::{Confinement, Next, ELF_MAGIC};
use crate::content::{Content, ContentError};
use crate::digest::{entry_record, ContentHasher, Record};
use crate::dirblock::{self, DirEntry, FileType};
use crate::ext2::{
    self, Ext2Error, Filesystem, FsKind, Geometry, InodeRecord, BLOCK_SIZE, JOURNAL_BLOCKS,
};
use crate::limits::{self, XattrProblem};
use crate::placement::{BlockFields, PlaceError, Placed, Placement};
use crate::progress::Progress;
use crate::relocate::{self, Rewriter};
use crate::tree::{Child, DirId, ListError, Named, Tree, TreeError, ROOT};

/// Bytes read from an input per step: large sequential writes, bounded memory.
const CHUNK: usize = 1 << 20;
/// Longest symlink target kept inside the inode ("fast" symlink).
const FAST_SYMLINK_MAX: usize = 59;
/// `lost+found` mode, as mke2fs makes it.
const LOST_FOUND_PERM: u32 = 0o700;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;
const S_IFIFO: u32 = 0o010000;
const S_IFSOCK: u32 = 0o140000;

/// Errors while writing entries into the image.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// libext2fs refused.
    #[error(transparent)]
    Ext2(#[from] Ext2Error),
    /// Placing blocks failed.
    #[error(transparent)]
    Place(#[from] PlaceError),
    /// Reading the input failed.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// Writing the image file failed.
    #[error("cannot write {}", image.display())]
    Image {
        /// The image file.
        image: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Name clash or bad path.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// A hard link to a path that is not (yet) a file in the image.
    #[error("hard link {} points at {}, which is not a file written before it", path.display(), target.display())]
    LinkTarget {
        /// The link.
        path: PathBuf,
        /// What it names.
        target: PathBuf,
    },
    /// A symlink target ext cannot hold as given: empty (e2fsck rejects it) or with a NUL byte.
    #[error("{}: symlink target {problem}", path.display())]
    BadSymlink {
        /// Path in the image.
        path: PathBuf,
        /// What is wrong with the target.
        problem: &'static str,
    },
    /// Extended attributes ext cannot give back as given ([`limits::check_xattrs`]): a name
    /// too long, with a NUL byte or in no namespace Linux reads, an ACL ext does not store
    /// exactly, or more bytes than the inode and one attribute block hold.
    #[error("{}: {}{problem}", path.display(), xattr_label(name))]
    BadXattr {
        /// Path in the image.
        path: PathBuf,
        /// The attribute's name, lossily decoded; empty when the problem is their sum.
        name: String,
        /// What is wrong with it.
        problem: XattrProblem,
    },
    /// A device number or owner ext cannot hold ([`limits`]).
    #[error("{}: {problem}", path.display())]
    Unrepresentable {
        /// Path in the image.
        path: PathBuf,
        /// What cannot be stored.
        problem: String,
    },
    /// A directory with more subdirectories than ext3 can count.
    #[error("{}: {subdirs} subdirectories are more than ext3 counts (at most {}); use --fs ext4", path.display(), ext2::LINK_MAX - 2)]
    TooManySubdirs {
        /// Path in the image.
        path: PathBuf,
        /// How many it has.
        subdirs: usize,
    },
    /// The scratch file holding the directory tree's names failed.
    #[error("cannot use the scratch file of the directory tree (next to the output)")]
    Spill(#[source] std::io::Error),
    /// A symlink target longer than a block.
    #[error("{}: symlink target of {len} bytes is longer than a block", path.display())]
    LongSymlink {
        /// Path in the image.
        path: PathBuf,
        /// Target length.
        len: usize,
    },
}

impl From<ListError> for WriteError {
    fn from(e: ListError) -> Self {
        match e {
            ListError::Tree(e) => WriteError::Tree(e),
            ListError::Spill(e) => WriteError::Spill(e),
        }
    }
}

impl WriteError {
    /// True when the filesystem in the image has no block or inode left.
    pub fn is_image_full(&self) -> bool {
        matches!(
            self,
            WriteError::Ext2(e) | WriteError::Place(PlaceError::Ext2(e)) if e.is_alloc_failure()
        )
    }

    /// True when the disk holding the image is full.
    pub fn is_disk_full(&self) -> bool {
        let enospc = Some(libc_enospc());
        match self {
            WriteError::Ext2(e) | WriteError::Place(PlaceError::Ext2(e)) => {
                i32::try_from(e.code).ok() == enospc
            }
            WriteError::Image { source, .. }
            | WriteError::Spill(source)
            | WriteError::Place(PlaceError::Image { source, .. }) => {
                source.raw_os_error() == enospc
            }
            _ => false,
        }
    }
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

/// How entries are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// ext3 or ext4.
    pub kind: FsKind,
    /// Every timestamp (SOURCE_DATE_EPOCH), at most [`FsKind::max_time`] of `kind`.
    pub time: u64,
    /// Keep input owners instead of making everything 0:0.
    pub keep_owner: bool,
    /// Container paths cut out of every ELF file written, from any input ([`crate::confine`]).
    pub confinement: Confinement,
}

/// What a special file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// Character device with its `st_rdev`.
    CharDevice(u64),
    /// Block device with its `st_rdev`.
    BlockDevice(u64),
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// Totals for the manifest and the summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Non-directory entries (hard links count once per name).
    pub files: u64,
    /// Bytes of regular file contents.
    pub bytes: u64,
}

/// A filesystem being filled.
pub struct ImageWriter {
    fs: Filesystem,
    placement: Placement,
    image: PathBuf,
    opts: WriteOptions,
    tree: Tree,
    /// The relocation of each input (by origin), applied to its contents and symlink targets.
    relocations: Vec<Option<Relocation>>,
    /// Files whose contents the relocation changed.
    relocated_files: u64,
    /// Compressed files of relocated inputs whose unpacked contents name the store.
    unrewritable: Vec<PathBuf>,
    /// Hashes file contents off the write path; owns the chunk buffers.
    hasher: ContentHasher,
    totals: Totals,
    /// Inputs' (device, inode) of multiply-linked files → image inode and its record.
    links: HashMap<(u64, u64), (u32, Record)>,
    progress: Progress,
    /// Device and inode of the image file, so that a walk never copies it into itself.
    own_id: Option<(u64, u64)>,
}

/// A name claimed for a new entry: its directory, its name there, its image path.
struct Slot<'p> {
    parent: DirId,
    name: &'p [u8],
    path: PathBuf,
}

/// What writing an entry's contents gives its inode and the digest.
struct Body {
    size: u64,
    blocks: BlockFields,
    record: Record,
}

fn default_dir_attrs() -> Attributes {
    Attributes {
        perm: 0o755,
        ..Attributes::default()
    }
}

impl ImageWriter {
    /// Lays out a filesystem of `geometry` in `file` (at `image`, already sized) and creates
    /// the root and `lost+found`. The names of the tree are kept in `scratch`, an empty
    /// unnamed file ([`Tree`]).
    pub fn create(
        file: File,
        scratch: File,
        image: &Path,
        geometry: Geometry,
        opts: WriteOptions,
        progress: Progress,
    ) -> Result<ImageWriter, WriteError> {
        let mut fs = Filesystem::create(image, geometry, opts.time)?;
        // Placed first, in the middle of the empty filesystem as mke2fs does, so it is
        // contiguous; the data is allocated around it.
        fs.add_journal(JOURNAL_BLOCKS)?;
        let own_id = {
            use std::os::unix::fs::MetadataExt;
            file.metadata().ok().map(|m| (m.dev(), m.ino()))
        };
        let placement = Placement::new(file, image, opts.kind);
        let tree = Tree::new(ext2fs_sys::EXT2_ROOT_INO, default_dir_attrs(), scratch);
        let mut writer = ImageWriter {
            fs,
            placement,
            image: image.to_path_buf(),
            opts,
            tree,
            relocations: Vec::new(),
            relocated_files: 0,
            unrewritable: Vec::new(),
            hasher: ContentHasher::start(CHUNK),
            totals: Totals::default(),
            links: HashMap::new(),
            progress,
            own_id,
        };
        let origin = writer.add_origin("the builder".into());
        writer.dir(
            Path::new("lost+found"),
            Attributes {
                perm: LOST_FOUND_PERM,
                ..Attributes::default()
            },
            origin,
        )?;
        Ok(writer)
    }

    /// Whether input owners are kept (`--keep-owner`) rather than made root.
    pub fn keeps_owner(&self) -> bool {
        self.opts.keep_owner
    }

    /// Whether (`dev`, `ino`) is the image file being written.
    pub fn is_own_file(&self, dev: u64, ino: u64) -> bool {
        self.own_id == Some((dev, ino))
    }

    /// Registers an input by name (used in error messages about it), written as it is.
    pub fn add_origin(&mut self, name: String) -> usize {
        self.add_input(name, None)
    }

    /// Registers an input by name whose contents and symlink targets pass `relocation`
    /// (closure and tar inputs, built for the relocation's FROM).
    pub fn add_input(&mut self, name: String, relocation: Option<Relocation>) -> usize {
        let origin = self.tree.add_origin(name);
        debug_assert_eq!(origin, self.relocations.len());
        self.relocations.push(relocation);
        origin
    }

    /// Whether the image already has something at `path`.
    pub fn exists(&mut self, path: &Path) -> Result<bool, WriteError> {
        Ok(self.tree.lookup(path).map_err(WriteError::Spill)?.is_some())
    }

    /// Names in the directory at `path` (empty when there is none).
    pub fn names_in(&mut self, path: &Path) -> Result<Vec<Vec<u8>>, WriteError> {
        match self.tree.lookup(path).map_err(WriteError::Spill)? {
            Some(Child { dir: Some(d), .. }) => {
                Ok(self.tree.children(d)?.into_iter().map(|n| n.name).collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// Refuses what ext would not give back as given, before anything is written: owners
    /// (when kept) and extended attributes.
    fn check_attrs(path: &Path, attrs: &Attributes, kind: FileType) -> Result<(), WriteError> {
        for (what, id) in [("uid", attrs.uid), ("gid", attrs.gid)] {
            if let Some(problem) = limits::owner_problem(what, u64::from(id)) {
                return Err(WriteError::Unrepresentable {
                    path: path.to_path_buf(),
                    problem,
                });
            }
        }
        let file_or_dir = matches!(kind, FileType::Regular | FileType::Directory);
        limits::check_xattrs(&attrs.xattrs, file_or_dir).map_err(|(name, problem)| {
            WriteError::BadXattr {
                path: path.to_path_buf(),
                name: String::from_utf8_lossy(&name).into_owned(),
                problem,
            }
        })
    }

    /// Owner as written: the input's with `--keep-owner`, root otherwise.
    fn owned(&self, mut attrs: Attributes) -> Attributes {
        if !self.opts.keep_owner {
            attrs.uid = 0;
            attrs.gid = 0;
        }
        attrs.xattrs.sort();
        attrs
    }

    fn parent_of<'p>(
        &mut self,
        path: &'p Path,
        origin: usize,
    ) -> Result<(DirId, &'p [u8]), WriteError> {
        let (names, name) = self.tree.split(path, origin)?;
        let fs = &mut self.fs;
        let id = self
            .tree
            .walk(&names, origin, &default_dir_attrs(), &mut |p: &Path| {
                fs.new_inode(true, p).map_err(WriteError::from)
            })?;
        Ok((id, name))
    }

    /// Declares a directory (merging with one another input already declared).
    pub fn dir(&mut self, path: &Path, attrs: Attributes, origin: usize) -> Result<(), WriteError> {
        let attrs = self.owned(attrs);
        if path.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::CurDir
            )
        }) {
            // An input's top directory is the image root, which stays 0755 root:root whatever
            // the input's mode (often a 0700 temporary directory): every container user must be
            // able to reach the tools.
            return Ok(());
        }
        Self::check_attrs(path, &attrs, FileType::Directory)?;
        let (parent, name) = self.parent_of(path, origin)?;
        let fs = &mut self.fs;
        self.tree
            .declare_dir(parent, name, attrs, origin, &mut |p: &Path| {
                fs.new_inode(true, p).map_err(WriteError::from)
            })?;
        Ok(())
    }

    /// Claims the name `path` for `origin`: its directory (made on the way), free.
    fn slot<'p>(&mut self, path: &'p Path, origin: usize) -> Result<Slot<'p>, WriteError> {
        let (parent, name) = self.parent_of(path, origin)?;
        self.tree.check_free(parent, name, origin)?;
        let path = self.tree.child_path(parent, name);
        Ok(Slot { parent, name, path })
    }

    /// Adds `slot` as a further name of inode `ino`.
    fn link(
        &mut self,
        slot: Slot<'_>,
        ino: u32,
        kind: FileType,
        record: Record,
        origin: usize,
    ) -> Result<(), WriteError> {
        self.fs.add_link(ino, &slot.path)?;
        self.tree
            .insert(slot.parent, slot.name, ino, kind, origin, record)?;
        self.totals.files += 1;
        Ok(())
    }

    /// The steps of every new non-directory inode: owner, inode, contents (`write`, handed the
    /// image path and the attributes as written), inode record, xattrs, name, count. Returns
    /// the inode and its digest record.
    fn new_entry(
        &mut self,
        slot: Slot<'_>,
        kind: FileType,
        mode: u32,
        attrs: Attributes,
        origin: usize,
        write: impl FnOnce(&mut Self, &Path, &Attributes) -> Result<Body, WriteError>,
    ) -> Result<(u32, Record), WriteError> {
        let attrs = self.owned(attrs);
        Self::check_attrs(&slot.path, &attrs, kind)?;
        let ino = self.fs.new_inode(false, &slot.path)?;
        let body = write(self, &slot.path, &attrs)?;
        let record = InodeRecord {
            mode,
            uid: attrs.uid,
            gid: attrs.gid,
            size: body.size,
            time: self.opts.time,
            links: 1,
            blocks: body.blocks.blocks,
            flags: body.blocks.flags,
            block: body.blocks.block,
        };
        self.fs.write_inode(ino, &record, &slot.path)?;
        self.fs.set_xattrs(ino, &attrs.xattrs, &slot.path)?;
        self.tree
            .insert(slot.parent, slot.name, ino, kind, origin, body.record)?;
        self.totals.files += 1;
        Ok((ino, body.record))
    }

    /// Writes a regular file of `size` bytes. `link_key` is the input's (device, inode) when
    /// the input has further names for it; a later call with the same key becomes a hard link.
    pub fn file(
        &mut self,
        path: &Path,
        attrs: Attributes,
        size: u64,
        content: Content<'_>,
        link_key: Option<(u64, u64)>,
        origin: usize,
    ) -> Result<(), WriteError> {
        let slot = self.slot(path, origin)?;
        if let Some(&(ino, record)) = link_key.and_then(|key| self.links.get(&key)) {
            return self.link(slot, ino, FileType::Regular, record, origin);
        }
        if let Some(problem) = limits::file_size_problem(self.opts.kind, size) {
            return Err(WriteError::Unrepresentable {
                path: slot.path,
                problem,
            });
        }
        let mode = S_IFREG | (attrs.perm & 0o7777);
        let (ino, record) = self.new_entry(
            slot,
            FileType::Regular,
            mode,
            attrs,
            origin,
            |w, path, attrs| {
                w.hasher.begin(size);
                let placed = w.write_content(path, size, content, origin)?;
                let blocks = w.placement.finish_map(&mut w.fs, path, &placed)?;
                Ok(Body {
                    size,
                    blocks,
                    record: w.hasher.end(b'f', attrs, size),
                })
            },
        )?;
        if let Some(key) = link_key {
            self.links.insert(key, (ino, record));
        }
        self.totals.bytes += size;
        self.progress.file_done();
        Ok(())
    }

    /// Adds `path` as a further name of the file already at `target` (tar hard links).
    pub fn hard_link(
        &mut self,
        path: &Path,
        target: &Path,
        origin: usize,
    ) -> Result<(), WriteError> {
        let existing = self
            .tree
            .lookup(target)
            .map_err(WriteError::Spill)?
            .filter(|c| c.dir.is_none())
            .ok_or_else(|| WriteError::LinkTarget {
                path: path.to_path_buf(),
                target: target.to_path_buf(),
            })?;
        let slot = self.slot(path, origin)?;
        self.link(slot, existing.ino, existing.kind, existing.record, origin)
    }

    /// Writes a symbolic link (its target relocated when its input is).
    pub fn symlink(
        &mut self,
        path: &Path,
        attrs: Attributes,
        target: &[u8],
        origin: usize,
    ) -> Result<(), WriteError> {
        let slot = self.slot(path, origin)?;
        let mut target = target.to_vec();
        if let Some(r) = &self.relocations[origin] {
            relocate::apply(r, &mut target);
        }
        let problem = if target.is_empty() {
            Some("is empty")
        } else if target.contains(&0) {
            Some("contains a NUL byte")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(WriteError::BadSymlink {
                path: slot.path,
                problem,
            });
        }
        if target.len() >= BLOCK_SIZE as usize {
            return Err(WriteError::LongSymlink {
                path: slot.path,
                len: target.len(),
            });
        }
        let kind = FileType::Symlink;
        self.new_entry(
            slot,
            kind,
            S_IFLNK | 0o777,
            attrs,
            origin,
            |w, path, attrs| {
                let blocks = if target.len() <= FAST_SYMLINK_MAX {
                    let mut raw = [0u8; 60];
                    raw[..target.len()].copy_from_slice(&target);
                    let mut block = [0u32; 15];
                    for (w, b) in block.iter_mut().zip(raw.chunks_exact(4)) {
                        *w = u32::from_le_bytes(b.try_into().expect("4 bytes"));
                    }
                    BlockFields {
                        block,
                        blocks: 0,
                        flags: 0,
                    }
                } else {
                    let placed = w
                        .placement
                        .write_blocks(&mut w.fs, path, &[target.clone()])?;
                    w.placement.finish_map(&mut w.fs, path, &placed)?
                };
                let hash = blake3::hash(&target);
                Ok(Body {
                    size: target.len() as u64,
                    blocks,
                    record: Record::Ready(entry_record(b'l', attrs, 0, hash.as_bytes())),
                })
            },
        )?;
        Ok(())
    }

    /// Writes a device node, FIFO or socket.
    pub fn special(
        &mut self,
        path: &Path,
        attrs: Attributes,
        special: Special,
        origin: usize,
    ) -> Result<(), WriteError> {
        let slot = self.slot(path, origin)?;
        let (fmt, kind, rdev) = match special {
            Special::CharDevice(r) => (S_IFCHR, FileType::CharDevice, r),
            Special::BlockDevice(r) => (S_IFBLK, FileType::BlockDevice, r),
            Special::Fifo => (S_IFIFO, FileType::Fifo, 0),
            Special::Socket => (S_IFSOCK, FileType::Socket, 0),
        };
        if matches!(special, Special::CharDevice(_) | Special::BlockDevice(_)) {
            let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
            if let Some(problem) = limits::device_problem(major.into(), minor.into()) {
                return Err(WriteError::Unrepresentable {
                    path: slot.path,
                    problem,
                });
            }
        }
        let mode = fmt | (attrs.perm & 0o7777);
        self.new_entry(slot, kind, mode, attrs, origin, |_, _, attrs| {
            let mut block = [0u32; 15];
            if matches!(special, Special::CharDevice(_) | Special::BlockDevice(_)) {
                encode_rdev(rdev, &mut block);
            }
            Ok(Body {
                size: 0,
                blocks: BlockFields {
                    block,
                    blocks: 0,
                    flags: 0,
                },
                record: Record::Ready(entry_record(kind as u8 + b'0', attrs, rdev, &[0; 32])),
            })
        })?;
        Ok(())
    }

    /// Totals so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// How many files' contents a relocation rewrote so far.
    pub fn relocated_files(&self) -> u64 {
        self.relocated_files
    }

    /// Compressed files (gzip, xz, zip) of relocated inputs that name the store directory
    /// once unpacked, which the relocation cannot rewrite: image paths, in writing order.
    pub fn unrewritable(&self) -> &[PathBuf] {
        &self.unrewritable
    }

    /// The content digest: BLAKE3 over every path, depth first in name order, with what is
    /// recorded about it (type, mode, owner, xattrs, size, BLAKE3 of the contents or the link
    /// target). Independent of input order and of the image layout.
    /// Two names that clash anywhere in the tree are found here, as an error.
    pub fn digest(&mut self) -> Result<String, WriteError> {
        let mut h = blake3::Hasher::new();
        let mut path = Vec::new();
        digest_dir(&mut self.tree, &mut self.hasher, ROOT, &mut path, &mut h)?;
        Ok(format!("blake3:{}", h.finalize().to_hex()))
    }

    /// Streams `content` into newly allocated blocks, skipping all-zero blocks, and hands each
    /// written chunk to the digest thread; returns where its blocks went.
    ///
    /// The bytes pass the relocation of input `origin` (if any), then, in ELF files, the confinement; each may
    /// hold back the tail of a chunk until it has seen the next one. Only bytes the
    /// relocation has settled go on to the confinement, so it never sees a store path that
    /// may still change.
    fn write_content(
        &mut self,
        path: &Path,
        size: u64,
        mut content: Content<'_>,
        origin: usize,
    ) -> Result<Placed, WriteError> {
        let bs = BLOCK_SIZE as u64;
        let mut placed = Placed::default();
        let relocation = self.relocations[origin].clone();
        let rewriter = relocation.as_ref().map(Rewriter::new);
        let confinement = self.opts.confinement.clone();
        let strings = confinement.rewriter();
        let segments = content.data_segments(size, path)?;
        // Decided on the first bytes: a file whose first block is a hole is no ELF file.
        let mut elf = false;
        let mut compressed = None;
        // `buf` holds file bytes [pending, pending + buf.len()) read but not yet written.
        let mut buf = self.hasher.buffer();
        let mut pending = 0;
        for (start, end) in segments {
            pending = start;
            let mut read_pos = start;
            // The relocation's settled bytes at the front of `buf`.
            let mut settled = 0;
            // The byte before `buf` is NUL: the hole before a segment, or what was written.
            let mut after_nul = start > 0;
            loop {
                if read_pos < end {
                    let room = CHUNK.saturating_sub(buf.len()).max(bs as usize);
                    let want = ((end - read_pos) as usize).min(room);
                    let old = buf.len();
                    buf.resize(old + want, 0);
                    content.fill(&mut buf[old..], read_pos, path, size)?;
                    if read_pos == 0 {
                        elf = buf.starts_with(ELF_MAGIC);
                        compressed = crate::compressed::format(&buf);
                    }
                    read_pos += want as u64;
                }
                let more = read_pos < end;
                let relocated = match &rewriter {
                    Some(rw) if more => rw.rewrite(&mut buf, settled),
                    Some(rw) => {
                        rw.rewrite(&mut buf, settled);
                        buf.len()
                    }
                    None => buf.len(),
                };
                let mut done = if elf {
                    let next = if more || relocated < buf.len() {
                        Next::Pending
                    } else if end < size {
                        Next::Nul
                    } else {
                        Next::End
                    };
                    strings.rewrite(&mut buf[..relocated], after_nul, next)
                } else {
                    relocated
                };
                if more {
                    // Whole blocks only; the rest waits for the next read.
                    done = done / bs as usize * bs as usize;
                }
                if done > 0 {
                    self.placement.write_data(
                        &mut self.fs,
                        path,
                        pending,
                        &buf[..done],
                        true,
                        &mut placed,
                    )?;
                    self.progress.bytes(done as u64);
                    after_nul = buf[done - 1] == 0;
                    settled = relocated - done;
                    let mut next = self.hasher.buffer();
                    next.extend_from_slice(&buf[done..]);
                    self.hasher
                        .data(pending, std::mem::replace(&mut buf, next), done);
                    pending += done as u64;
                } else {
                    settled = relocated;
                }
                if !more && buf.is_empty() {
                    break;
                }
            }
        }
        // Back to the pool.
        self.hasher.data(pending, buf, 0);
        if rewriter.as_ref().is_some_and(Rewriter::matched) {
            self.relocated_files += 1;
        }
        if let (Some(relocation), Some(format), Content::File(file)) =
            (&relocation, compressed, &content)
        {
            if crate::compressed::holds(file, format, relocation.from.as_bytes()) {
                self.unrewritable.push(path.to_path_buf());
            }
        }
        Ok(placed)
    }

    /// Lays out every directory, sets the identity derived from `digest` (unless `uuid` is
    /// given), writes all metadata and closes the filesystem. Returns the image file.
    pub fn finish(mut self, uuid: Option<[u8; 16]>) -> Result<File, WriteError> {
        let digest = self.digest()?;
        let uuid = uuid.unwrap_or_else(|| derive_uuid(&digest));
        let seed_bytes = blake3::hash(&[b"hash-seed".as_slice(), &uuid].concat());
        let mut seed = [0u32; 4];
        for (w, b) in seed.iter_mut().zip(seed_bytes.as_bytes().chunks_exact(4)) {
            *w = u32::from_le_bytes(b.try_into().expect("4 bytes"));
        }
        self.fs.set_identity(uuid, seed);
        for id in 0..self.tree.dirs().len() {
            self.write_dir(id, &seed)?;
        }
        let superblocks = self.fs.superblock_offsets();
        self.fs.close()?;
        let file = self.placement.into_file();
        ext2::stamp_write_time(&file, &superblocks, self.opts.time).map_err(|source| {
            WriteError::Image {
                image: self.image.clone(),
                source,
            }
        })?;
        Ok(file)
    }

    fn write_dir(&mut self, id: DirId, seed: &[u32; 4]) -> Result<(), WriteError> {
        let children = self.tree.children(id)?;
        let dir = self.tree.dir(id);
        let path = self.tree.path_of(id);
        let parent_ino = self.tree.dir(dir.parent).ino;
        let entries: Vec<DirEntry<'_>> = children
            .iter()
            .map(|n| DirEntry {
                name: &n.name,
                ino: n.child.ino,
                kind: n.child.kind,
            })
            .collect();
        let fs = &self.fs;
        let laid = dirblock::layout(dir.ino, parent_ino, &entries, BLOCK_SIZE as usize, |n| {
            fs.dir_hash(n, seed)
        });
        let ino = dir.ino;
        let attrs = dir.attrs.clone();
        let subdirs = self.tree.subdirs(id);
        let links = match u16::try_from(2 + subdirs) {
            Ok(n) if u32::from(n) <= ext2::LINK_MAX => n,
            _ if self.opts.kind == FsKind::Ext4 => 1, // dir_nlink: "more than LINK_MAX"
            _ => return Err(WriteError::TooManySubdirs { path, subdirs }),
        };
        let placed = self
            .placement
            .write_blocks(&mut self.fs, &path, &laid.blocks)?;
        let BlockFields {
            block,
            blocks,
            mut flags,
        } = self.placement.finish_map(&mut self.fs, &path, &placed)?;
        if laid.indexed {
            flags |= ext2fs_sys::EXT2_INDEX_FL;
        }
        let record = InodeRecord {
            mode: S_IFDIR | (attrs.perm & 0o7777),
            uid: attrs.uid,
            gid: attrs.gid,
            size: laid.blocks.len() as u64 * u64::from(BLOCK_SIZE),
            time: self.opts.time,
            links,
            blocks,
            flags,
            block,
        };
        self.fs.write_inode(ino, &record, &path)?;
        self.fs.set_xattrs(ino, &attrs.xattrs, &path)?;
        Ok(())
    }
}

/// Adds directory `id` (at `path`) and everything below it to the digest.
fn digest_dir(
    tree: &mut Tree,
    hasher: &mut ContentHasher,
    id: DirId,
    path: &mut Vec<u8>,
    h: &mut blake3::Hasher,
) -> Result<(), WriteError> {
    h.update(if path.is_empty() { b"/" } else { path });
    h.update(&[0]);
    h.update(&entry_record(b'd', &tree.dir(id).attrs, 0, &[0; 32]));
    for Named { name, child } in tree.children(id)? {
        let len = path.len();
        path.push(b'/');
        path.extend_from_slice(&name);
        match child.dir {
            Some(sub) => digest_dir(tree, hasher, sub, path, h)?,
            None => {
                h.update(path);
                h.update(&[0]);
                h.update(&hasher.resolve(child.record));
            }
        }
        path.truncate(len);
    }
    Ok(())
}

/// `"extended attribute NAME: "`, or nothing when the problem is all of them together.
fn xattr_label(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!("extended attribute {name:?}: ")
    }
}

/// `i_block` encoding of a device number (old 16-bit form when it fits, as the kernel does).
fn encode_rdev(rdev: u64, block: &mut [u32; 15]) {
    let major = ((rdev >> 8) & 0xfff) as u32 | ((rdev >> 32) & !0xfff) as u32;
    let minor = (rdev & 0xff) as u32 | ((rdev >> 12) & !0xff) as u32;
    if major < 256 && minor < 256 {
        block[0] = (major << 8) | minor;
    } else {
        block[1] = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
    }
}

/// A version-4-shaped UUID taken from the content digest.
fn derive_uuid(digest: &str) -> [u8; 16] {
    let h = blake3::hash(&[b"uuid:".as_slice(), digest.as_bytes()].concat());
    let mut u = [0u8; 16];
    u.copy_from_slice(&h.as_bytes()[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_kernel_encodings() {
        let mut old = [0u32; 15];
        encode_rdev((8 << 8) | 1, &mut old);
        assert_eq!(old[0], 0x0801, "major 8 minor 1 fits the old form");
        let mut new = [0u32; 15];
        // major 300, minor 70000 as glibc's makedev encodes them.
        let rdev = ((300u64 & 0xfff) << 8) | (70000 & 0xff) | ((70000u64 & !0xff) << 12);
        encode_rdev(rdev, &mut new);
        assert_eq!(old[1], 0);
        assert_eq!(new[0], 0);
        assert_eq!(
            new[1],
            (70000 & 0xff) | (300 << 8) | ((70000 & !0xff) << 12)
        );
    }
}
