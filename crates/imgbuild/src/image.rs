//! The image writer: takes entries from any input (directory walk, closure, tar stream) and
//! puts them into the filesystem.
//!
//! File bytes go straight from the input into the image file with `pwrite`, in runs of
//! contiguous blocks that libext2fs allocates (so its bitmaps stay the single truth about
//! which block is used); all-zero blocks become holes, so sparse files stay sparse and a
//! file's blocks do not depend on how its input stored the zeros. Directories are laid out at
//! the end, when every name is known. Everything that varies between runs — timestamps,
//! owners, UUID, hash seed, directory order, inode numbers — is fixed by the inputs and the
//! options, so the same inputs give the same image bytes.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::attributes::Attributes;
use crate::blockmap::{BlockMap, MapError, Node, Run};
use crate::confine::{Confinement, Next, ELF_MAGIC};
use crate::digest::{entry_record, ContentHasher, Record};
use crate::dirblock::{self, DirEntry, FileType};
use crate::ext2::{
    self, Ext2Error, Filesystem, FsKind, Geometry, InodeRecord, BLOCK_SIZE, JOURNAL_BLOCKS,
};
use crate::progress::Progress;
use crate::relocate::{self, Rewriter};
use crate::tree::{DirId, Tree, TreeError, ROOT};
use crashcart_layout::Relocation;

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
    /// Writing the image file failed.
    #[error("cannot write {}: {source}", image.display())]
    Image {
        /// The image file.
        image: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Reading an input file failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The input file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The input ended before the size it announced.
    #[error("{} ended after {got} of {want} bytes", path.display())]
    ShortInput {
        /// The input file.
        path: PathBuf,
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        want: u64,
    },
    /// Name clash or bad path.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The block map of a file cannot be built.
    #[error("{}: {source}", path.display())]
    Map {
        /// Path in the image.
        path: PathBuf,
        /// Why.
        source: MapError,
    },
    /// A hard link to a path that is not (yet) a file in the image.
    #[error("hard link {} points at {}, which is not a file written before it", path.display(), target.display())]
    LinkTarget {
        /// The link.
        path: PathBuf,
        /// What it names.
        target: PathBuf,
    },
    /// A symlink target longer than a block.
    #[error("{}: symlink target of {len} bytes is longer than a block", path.display())]
    LongSymlink {
        /// Path in the image.
        path: PathBuf,
        /// Target length.
        len: usize,
    },
}

impl WriteError {
    /// True when the filesystem in the image has no block or inode left.
    pub fn is_image_full(&self) -> bool {
        matches!(self, WriteError::Ext2(e) if e.is_alloc_failure())
    }

    /// True when the disk holding the image is full.
    pub fn is_disk_full(&self) -> bool {
        let enospc = Some(libc_enospc());
        match self {
            WriteError::Ext2(e) => i32::try_from(e.code).ok() == enospc,
            WriteError::Image { source, .. } => source.raw_os_error() == enospc,
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
    /// Every timestamp (SOURCE_DATE_EPOCH).
    pub time: u32,
    /// Keep input owners instead of making everything 0:0.
    pub keep_owner: bool,
    /// Store directory rewrite for contents and symlink targets of the inputs it is switched
    /// on for ([`ImageWriter::set_relocating`]).
    pub relocation: Option<Relocation>,
    /// Container paths cut out of every ELF file written, from any input ([`crate::confine`]).
    pub confinement: Confinement,
}

/// Where a regular file's bytes come from.
pub enum Content<'a> {
    /// An open file: holes are skipped without reading them.
    File(&'a File),
    /// A stream of exactly `size` bytes (a tar member).
    Stream(&'a mut dyn Read),
    /// Bytes the builder generated.
    Bytes(&'a [u8]),
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
    file: File,
    image: PathBuf,
    map: BlockMap,
    opts: WriteOptions,
    tree: Tree,
    /// Where the next allocation starts looking: keeps the image sequential.
    goal: u64,
    /// Hashes file contents off the write path; owns the chunk buffers.
    hasher: ContentHasher,
    totals: Totals,
    /// Inputs' (device, inode) of multiply-linked files → image inode and its record.
    links: HashMap<(u64, u64), (u32, Record)>,
    progress: Progress,
    relocating: bool,
    /// Device and inode of the image file, so that a walk never copies it into itself.
    own_id: Option<(u64, u64)>,
}

fn default_dir_attrs() -> Attributes {
    Attributes {
        perm: 0o755,
        ..Attributes::default()
    }
}

impl ImageWriter {
    /// Lays out a filesystem of `geometry` in `file` (at `image`, already sized) and creates
    /// the root and `lost+found`.
    pub fn create(
        file: File,
        image: &Path,
        geometry: Geometry,
        opts: WriteOptions,
        progress: Progress,
    ) -> Result<ImageWriter, WriteError> {
        let mut fs = Filesystem::create(image, geometry, opts.time)?;
        // Placed first, in the middle of the empty filesystem as mke2fs does, so it is
        // contiguous; the data is allocated around it.
        fs.add_journal(JOURNAL_BLOCKS)?;
        let map = match opts.kind {
            FsKind::Ext3 => BlockMap::Indirect {
                block_size: BLOCK_SIZE,
            },
            FsKind::Ext4 => BlockMap::Extents {
                block_size: BLOCK_SIZE,
            },
        };
        let tree = Tree::new(ext2fs_sys::EXT2_ROOT_INO, default_dir_attrs());
        let mut writer = ImageWriter {
            fs,
            file,
            image: image.to_path_buf(),
            map,
            opts,
            tree,
            goal: 0,
            hasher: ContentHasher::start(CHUNK),
            totals: Totals::default(),
            links: HashMap::new(),
            progress,
            relocating: false,
            own_id: None,
        };
        writer.own_id = {
            use std::os::unix::fs::MetadataExt;
            writer.file.metadata().ok().map(|m| (m.dev(), m.ino()))
        };
        let origin = writer.tree.add_origin("the builder".into());
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

    /// Applies the relocation (if any) to what is written next: on for closure and tar inputs,
    /// off for directories and for what the builder generates.
    pub fn set_relocating(&mut self, on: bool) {
        self.relocating = on;
    }

    /// The relocation in force for the entry being written.
    fn active_relocation(&self) -> Option<Relocation> {
        self.opts.relocation.clone().filter(|_| self.relocating)
    }

    /// Whether (`dev`, `ino`) is the image file being written.
    pub fn is_own_file(&self, dev: u64, ino: u64) -> bool {
        self.own_id == Some((dev, ino))
    }

    /// Registers an input by name (used in error messages about it).
    pub fn add_origin(&mut self, name: String) -> usize {
        self.tree.add_origin(name)
    }

    /// Whether the image already has something at `path`.
    pub fn exists(&self, path: &Path) -> bool {
        self.tree.lookup(path).is_some()
    }

    /// Names in the directory at `path` (empty when there is none).
    pub fn names_in(&self, path: &Path) -> Vec<Vec<u8>> {
        match self.tree.lookup(path) {
            Some(child) => child
                .dir
                .map(|d| self.tree.dir(d).children.keys().cloned().collect())
                .unwrap_or_default(),
            None => Vec::new(),
        }
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
        let (parent, name) = self.parent_of(path, origin)?;
        let fs = &mut self.fs;
        self.tree
            .declare_dir(parent, name, attrs, origin, &mut |p: &Path| {
                fs.new_inode(true, p).map_err(WriteError::from)
            })?;
        Ok(())
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
        let (parent, name) = self.parent_of(path, origin)?;
        self.tree.check_free(parent, name, origin)?;
        let image_path = self.tree.child_path(parent, name);
        if let Some(key) = link_key {
            if let Some(&(ino, record)) = self.links.get(&key) {
                self.fs.add_link(ino, &image_path)?;
                self.tree
                    .insert(parent, name, ino, FileType::Regular, origin, record)?;
                self.totals.files += 1;
                return Ok(());
            }
        }
        let attrs = self.owned(attrs);
        let ino = self.fs.new_inode(false, &image_path)?;
        self.hasher.begin(size);
        let placed = self.write_content(&image_path, size, content)?;
        let (block, blocks, flags) = self.finish_map(&image_path, &placed)?;
        let record = InodeRecord {
            mode: S_IFREG | (attrs.perm & 0o7777),
            uid: attrs.uid,
            gid: attrs.gid,
            size,
            time: self.opts.time,
            links: 1,
            blocks,
            flags,
            block,
        };
        self.fs.write_inode(ino, &record, &image_path)?;
        self.fs.set_xattrs(ino, &attrs.xattrs, &image_path)?;
        let digest = self.hasher.end(b'f', &attrs, size);
        self.tree
            .insert(parent, name, ino, FileType::Regular, origin, digest)?;
        if let Some(key) = link_key {
            self.links.insert(key, (ino, digest));
        }
        self.totals.files += 1;
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
            .filter(|c| c.dir.is_none())
            .ok_or_else(|| WriteError::LinkTarget {
                path: path.to_path_buf(),
                target: target.to_path_buf(),
            })?;
        let (parent, name) = self.parent_of(path, origin)?;
        self.tree.check_free(parent, name, origin)?;
        let image_path = self.tree.child_path(parent, name);
        self.fs.add_link(existing.ino, &image_path)?;
        self.tree.insert(
            parent,
            name,
            existing.ino,
            existing.kind,
            origin,
            existing.record,
        )?;
        self.totals.files += 1;
        Ok(())
    }

    /// Writes a symbolic link (its target relocated when a relocation is set).
    pub fn symlink(
        &mut self,
        path: &Path,
        attrs: Attributes,
        target: &[u8],
        origin: usize,
    ) -> Result<(), WriteError> {
        let (parent, name) = self.parent_of(path, origin)?;
        self.tree.check_free(parent, name, origin)?;
        let image_path = self.tree.child_path(parent, name);
        let mut target = target.to_vec();
        if let Some(r) = self.active_relocation() {
            relocate::apply(&r, &mut target);
        }
        if target.len() >= BLOCK_SIZE as usize {
            return Err(WriteError::LongSymlink {
                path: image_path,
                len: target.len(),
            });
        }
        let attrs = self.owned(attrs);
        let ino = self.fs.new_inode(false, &image_path)?;
        let (block, blocks, flags) = if target.len() <= FAST_SYMLINK_MAX {
            let mut raw = [0u8; 60];
            raw[..target.len()].copy_from_slice(&target);
            let mut block = [0u32; 15];
            for (w, b) in block.iter_mut().zip(raw.chunks_exact(4)) {
                *w = u32::from_le_bytes(b.try_into().expect("4 bytes"));
            }
            (block, 0, 0)
        } else {
            let placed = self.write_blocks(&image_path, &[target.clone()])?;
            self.finish_map(&image_path, &placed)?
        };
        let record = InodeRecord {
            mode: S_IFLNK | 0o777,
            uid: attrs.uid,
            gid: attrs.gid,
            size: target.len() as u64,
            time: self.opts.time,
            links: 1,
            blocks,
            flags,
            block,
        };
        self.fs.write_inode(ino, &record, &image_path)?;
        self.fs.set_xattrs(ino, &attrs.xattrs, &image_path)?;
        let digest = Record::Ready(entry_record(
            b'l',
            &attrs,
            0,
            blake3::hash(&target).as_bytes(),
        ));
        self.tree
            .insert(parent, name, ino, FileType::Symlink, origin, digest)?;
        self.totals.files += 1;
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
        let (parent, name) = self.parent_of(path, origin)?;
        self.tree.check_free(parent, name, origin)?;
        let image_path = self.tree.child_path(parent, name);
        let attrs = self.owned(attrs);
        let ino = self.fs.new_inode(false, &image_path)?;
        let mut block = [0u32; 15];
        let (fmt, kind, rdev) = match special {
            Special::CharDevice(r) => (S_IFCHR, FileType::CharDevice, r),
            Special::BlockDevice(r) => (S_IFBLK, FileType::BlockDevice, r),
            Special::Fifo => (S_IFIFO, FileType::Fifo, 0),
            Special::Socket => (S_IFSOCK, FileType::Socket, 0),
        };
        if matches!(special, Special::CharDevice(_) | Special::BlockDevice(_)) {
            encode_rdev(rdev, &mut block);
        }
        let record = InodeRecord {
            mode: fmt | (attrs.perm & 0o7777),
            uid: attrs.uid,
            gid: attrs.gid,
            time: self.opts.time,
            links: 1,
            block,
            ..InodeRecord::default()
        };
        self.fs.write_inode(ino, &record, &image_path)?;
        self.fs.set_xattrs(ino, &attrs.xattrs, &image_path)?;
        let digest = Record::Ready(entry_record(kind as u8 + b'0', &attrs, rdev, &[0; 32]));
        self.tree.insert(parent, name, ino, kind, origin, digest)?;
        self.totals.files += 1;
        Ok(())
    }

    /// Totals so far.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// The content digest: BLAKE3 over every path, depth first in name order, with what is
    /// recorded about it (type, mode, owner, xattrs, size, BLAKE3 of the contents or the link
    /// target). Independent of input order and of the image layout.
    pub fn digest(&mut self) -> String {
        let mut h = blake3::Hasher::new();
        let mut path = Vec::new();
        digest_dir(&self.tree, &mut self.hasher, ROOT, &mut path, &mut h);
        format!("blake3:{}", h.finalize().to_hex())
    }

    /// Streams `content` into newly allocated blocks, skipping all-zero blocks, and hands each
    /// written chunk to the digest thread; returns where its blocks went.
    ///
    /// The bytes pass the relocation (when on), then, in ELF files, the confinement; each may
    /// hold back the tail of a chunk until it has seen the next one. Only bytes the
    /// relocation has settled go on to the confinement, so it never sees a store path that
    /// may still change.
    fn write_content(
        &mut self,
        path: &Path,
        size: u64,
        mut content: Content<'_>,
    ) -> Result<Placed, WriteError> {
        let bs = BLOCK_SIZE as u64;
        let mut placed = Placed::default();
        let relocation = self.active_relocation();
        let rewriter = relocation.as_ref().map(Rewriter::new);
        let confinement = self.opts.confinement.clone();
        let strings = confinement.rewriter();
        let segments = match &content {
            Content::File(f) => data_segments(f, size, path)?,
            _ => vec![(0, size)],
        };
        // Decided on the first bytes: a file whose first block is a hole is no ELF file.
        let mut elf = false;
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
                    fill(&mut content, &mut buf[old..], read_pos, path, size)?;
                    if read_pos == 0 {
                        elf = buf.starts_with(ELF_MAGIC);
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
                    self.write_data(path, pending, &buf[..done], true, &mut placed)?;
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
        Ok(placed)
    }

    /// Writes `blocks` (each at most a block) as consecutive logical blocks from 0, none
    /// skipped: directory and symlink contents.
    fn write_blocks(&mut self, path: &Path, blocks: &[Vec<u8>]) -> Result<Placed, WriteError> {
        let bs = BLOCK_SIZE as usize;
        let mut joined = Vec::with_capacity(blocks.len() * bs);
        for b in blocks {
            joined.extend_from_slice(b);
            joined.resize(joined.len().next_multiple_of(bs), 0);
        }
        let mut placed = Placed::default();
        self.write_data(path, 0, &joined, false, &mut placed)?;
        Ok(placed)
    }

    /// Places `data` (starting at block-aligned file offset `offset`) in the image.
    fn write_data(
        &mut self,
        path: &Path,
        offset: u64,
        data: &[u8],
        skip_zero: bool,
        placed: &mut Placed,
    ) -> Result<(), WriteError> {
        let bs = BLOCK_SIZE as usize;
        let first_lblk = offset / bs as u64;
        let blocks: Vec<&[u8]> = data.chunks(bs).collect();
        let mut i = 0;
        while i < blocks.len() {
            if skip_zero && is_zero(blocks[i]) {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < blocks.len() && !(skip_zero && is_zero(blocks[j])) {
                j += 1;
            }
            // Blocks i..j are data: allocate them as few runs as the free space allows, each
            // preceded by the indirect blocks it is the first to need.
            let mut done = i;
            while done < j {
                let lblk = first_lblk + done as u64;
                self.place_map_nodes(path, lblk, placed)?;
                let want = ((j - done) as u64).min(self.map.span_end(lblk) - lblk);
                let (pblk, got) = self.fs.allocate_run(self.goal, want, path)?;
                let got = got as usize;
                let bytes = &data[done * bs..((done + got) * bs).min(data.len())];
                self.file
                    .write_all_at(bytes, pblk * bs as u64)
                    .map_err(|source| WriteError::Image {
                        image: self.image.clone(),
                        source,
                    })?;
                push_run(
                    &mut placed.runs,
                    Run {
                        logical: first_lblk + done as u64,
                        physical: pblk,
                        len: got as u64,
                    },
                );
                self.goal = pblk + got as u64;
                done += got;
            }
            i = j;
        }
        Ok(())
    }

    /// Allocates the indirect blocks logical block `lblk` needs and does not have yet.
    fn place_map_nodes(
        &mut self,
        path: &Path,
        lblk: u64,
        placed: &mut Placed,
    ) -> Result<(), WriteError> {
        let nodes = self.map.nodes_for(lblk).map_err(|source| WriteError::Map {
            path: path.to_path_buf(),
            source,
        })?;
        for node in nodes {
            if let std::collections::btree_map::Entry::Vacant(slot) = placed.nodes.entry(node) {
                let (pblk, _) = self.fs.allocate_run(self.goal, 1, path)?;
                slot.insert(pblk);
                self.goal = pblk + 1;
            }
        }
        Ok(())
    }

    /// Allocates (extent leaves) and writes the block map of a file; returns `i_block`, blocks
    /// held, flags.
    fn finish_map(
        &mut self,
        path: &Path,
        placed: &Placed,
    ) -> Result<([u32; 15], u64, u32), WriteError> {
        let map_err = |source| WriteError::Map {
            path: path.to_path_buf(),
            source,
        };
        let runs = &placed.runs;
        let needed = self.map.meta_blocks(runs).map_err(map_err)?;
        // ext3's indirect blocks were placed with the data, in `Node` order.
        let mut meta: Vec<u64> = placed.nodes.values().copied().collect();
        while (meta.len() as u64) < needed {
            let (pblk, got) = self
                .fs
                .allocate_run(self.goal, needed - meta.len() as u64, path)?;
            meta.extend(pblk..pblk + got);
            self.goal = pblk + got;
        }
        let built = self.map.build(runs, &meta).map_err(map_err)?;
        for b in &built.blocks {
            self.file
                .write_all_at(&b.data, b.physical * u64::from(BLOCK_SIZE))
                .map_err(|source| WriteError::Image {
                    image: self.image.clone(),
                    source,
                })?;
        }
        let data: u64 = runs.iter().map(|r| r.len).sum();
        let flags = match self.map {
            BlockMap::Extents { .. } => ext2fs_sys::EXT4_EXTENTS_FL,
            BlockMap::Indirect { .. } => 0,
        };
        Ok((built.i_block, data + needed, flags))
    }

    /// Lays out every directory, sets the identity derived from `digest` (unless `uuid` is
    /// given), writes all metadata and closes the filesystem. Returns the image file.
    pub fn finish(mut self, uuid: Option<[u8; 16]>) -> Result<File, WriteError> {
        let digest = self.digest();
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
        let blocks = self.fs.blocks_count();
        self.fs.close()?;
        ext2::stamp_write_time(&self.file, blocks, self.opts.time).map_err(|source| {
            WriteError::Image {
                image: self.image.clone(),
                source,
            }
        })?;
        Ok(self.file)
    }

    fn write_dir(&mut self, id: DirId, seed: &[u32; 4]) -> Result<(), WriteError> {
        let dir = self.tree.dir(id);
        let path = self.tree.path_of(id);
        let parent_ino = self.tree.dir(dir.parent).ino;
        let entries: Vec<DirEntry<'_>> = dir
            .children
            .iter()
            .map(|(name, c)| DirEntry {
                name,
                ino: c.ino,
                kind: c.kind,
            })
            .collect();
        let fs = &self.fs;
        let laid = dirblock::layout(dir.ino, parent_ino, &entries, BLOCK_SIZE as usize, |n| {
            fs.dir_hash(n, seed)
        });
        let ino = dir.ino;
        let attrs = dir.attrs.clone();
        let links = 2 + self.tree.subdirs(id);
        let placed = self.write_blocks(&path, &laid.blocks)?;
        let (block, blocks, mut flags) = self.finish_map(&path, &placed)?;
        if laid.indexed {
            flags |= ext2fs_sys::EXT2_INDEX_FL;
        }
        let record = InodeRecord {
            mode: S_IFDIR | (attrs.perm & 0o7777),
            uid: attrs.uid,
            gid: attrs.gid,
            size: laid.blocks.len() as u64 * u64::from(BLOCK_SIZE),
            time: self.opts.time,
            links: u16::try_from(links).unwrap_or(1),
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
    tree: &Tree,
    hasher: &mut ContentHasher,
    id: DirId,
    path: &mut Vec<u8>,
    h: &mut blake3::Hasher,
) {
    let dir = tree.dir(id);
    h.update(if path.is_empty() { b"/" } else { path });
    h.update(&[0]);
    h.update(&entry_record(b'd', &dir.attrs, 0, &[0; 32]));
    for (name, child) in &dir.children {
        let len = path.len();
        path.push(b'/');
        path.extend_from_slice(name);
        match child.dir {
            Some(sub) => digest_dir(tree, hasher, sub, path, h),
            None => {
                h.update(path);
                h.update(&[0]);
                h.update(&hasher.resolve(child.record));
            }
        }
        path.truncate(len);
    }
}

/// Where a file's blocks went: its data runs and (ext3) its indirect blocks.
#[derive(Debug, Default)]
struct Placed {
    runs: Vec<Run>,
    nodes: BTreeMap<Node, u64>,
}

/// Appends a run, merging it with the previous one when both continue each other.
fn push_run(runs: &mut Vec<Run>, run: Run) {
    if let Some(last) = runs.last_mut() {
        if last.logical + last.len == run.logical && last.physical + last.len == run.physical {
            last.len += run.len;
            return;
        }
    }
    runs.push(run);
}

/// Whether a block (or the tail of one) is all zero bytes.
fn is_zero(block: &[u8]) -> bool {
    static ZERO: [u8; BLOCK_SIZE as usize] = [0; BLOCK_SIZE as usize];
    // A comparison with a zero block compiles to memcmp, the fastest scan available.
    block == &ZERO[..block.len()]
}

/// Reads exactly `buf.len()` bytes at `pos` from `content`.
fn fill(
    content: &mut Content<'_>,
    buf: &mut [u8],
    pos: u64,
    path: &Path,
    size: u64,
) -> Result<(), WriteError> {
    match content {
        Content::File(f) => read_full(buf, pos, path, size, |chunk, at| f.read_at(chunk, at)),
        Content::Stream(r) => read_full(buf, pos, path, size, |chunk, _| r.read(chunk)),
        Content::Bytes(b) => {
            buf.copy_from_slice(&b[pos as usize..pos as usize + buf.len()]);
            Ok(())
        }
    }
}

/// Fills `buf` (the input's bytes from `pos` on) by calling `read(chunk, offset)` until it is
/// full; an input that ends early (shorter than its `size` said) is an error.
fn read_full(
    buf: &mut [u8],
    pos: u64,
    path: &Path,
    size: u64,
    mut read: impl FnMut(&mut [u8], u64) -> std::io::Result<usize>,
) -> Result<(), WriteError> {
    let mut done = 0;
    while done < buf.len() {
        let at = pos + done as u64;
        let n = read(&mut buf[done..], at).map_err(|source| WriteError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            return Err(WriteError::ShortInput {
                path: path.to_path_buf(),
                got: at,
                want: size,
            });
        }
        done += n;
    }
    Ok(())
}

/// The block-aligned ranges of `f` that hold data (everything when the file is not sparse).
fn data_segments(f: &File, size: u64, path: &Path) -> Result<Vec<(u64, u64)>, WriteError> {
    use std::os::unix::fs::MetadataExt;
    let bs = u64::from(BLOCK_SIZE);
    let meta = f.metadata().map_err(|source| WriteError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if size == 0 {
        return Ok(Vec::new());
    }
    if meta.blocks() * 512 >= size {
        return Ok(vec![(0, size)]);
    }
    let mut segments: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match rustix::fs::seek(f, rustix::fs::SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            // No SEEK_DATA on this filesystem: read it all, zero blocks still become holes.
            Err(_) => return Ok(vec![(0, size)]),
        };
        let end = match rustix::fs::seek(f, rustix::fs::SeekFrom::Hole(start)) {
            Ok(e) => e.min(size),
            Err(_) => size,
        };
        let a = start / bs * bs;
        let b = end.next_multiple_of(bs).min(size);
        match segments.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => segments.push((a, b)),
        }
        pos = end;
    }
    Ok(segments)
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

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_are_not_read() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(10 << 20).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"middle", 5 << 20).unwrap();
        let segments = data_segments(&f, 10 << 20, Path::new("sparse")).unwrap();
        // Filesystems report data at their own granularity; what matters is that the holes
        // between the two islands are left out and everything stays block-aligned.
        assert!(segments.len() >= 2, "{segments:?}");
        let covered: u64 = segments.iter().map(|(a, b)| b - a).sum();
        assert!(covered < 2 << 20, "{segments:?}");
        assert!(segments.iter().all(|(a, _)| a % u64::from(BLOCK_SIZE) == 0));
        assert_eq!(segments[0].0, 0);
    }

    #[test]
    fn dense_file_is_one_segment() {
        let f = tempfile::tempfile().unwrap();
        f.write_all_at(&[7u8; 10_000], 0).unwrap();
        assert_eq!(
            data_segments(&f, 10_000, Path::new("dense")).unwrap(),
            vec![(0, 10_000)]
        );
    }

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

    #[test]
    fn runs_merge_only_when_both_sides_continue() {
        let mut runs = Vec::new();
        push_run(
            &mut runs,
            Run {
                logical: 0,
                physical: 10,
                len: 2,
            },
        );
        push_run(
            &mut runs,
            Run {
                logical: 2,
                physical: 12,
                len: 3,
            },
        );
        push_run(
            &mut runs,
            Run {
                logical: 5,
                physical: 20,
                len: 1,
            },
        );
        push_run(
            &mut runs,
            Run {
                logical: 7,
                physical: 21,
                len: 1,
            },
        );
        assert_eq!(
            runs,
            vec![
                Run {
                    logical: 0,
                    physical: 10,
                    len: 5
                },
                Run {
                    logical: 5,
                    physical: 20,
                    len: 1
                },
                Run {
                    logical: 7,
                    physical: 21,
                    len: 1
                },
            ]
        );
    }
}
