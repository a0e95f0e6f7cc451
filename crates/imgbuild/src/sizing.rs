//! How big the image must be: a pass over the inputs' metadata (no contents are read) that
//! bounds the blocks and inodes the writer will use, then the smallest ext3 geometry that
//! holds them plus `--headroom`.
//!
//! Every figure is an upper bound (all-zero blocks and in-inode xattrs only save space), so an
//! image sized here never runs out while being written.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::ext2::{layout_of, Ext2Error, FsKind, Geometry, BLOCK_SIZE, INODE_SIZE, JOURNAL_BLOCKS};
use crate::input::InputError;
use crate::limits::needs_xattr_block;

const BS: u64 = BLOCK_SIZE as u64;
/// The smallest image computed: 16 MiB.
const MIN_BLOCKS: u64 = 4096;
/// Inodes reserved by ext2 (1..=10), `lost+found`, `.crashcartrc`, `.crashcart/` and its
/// manifest, and a margin.
const FIXED_INODES: u64 = 32;

/// What the inputs will need, accumulated entry by entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// Non-directory entries.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Bytes of file contents the writer will read (the progress bar's total).
    pub bytes: u64,
    /// Data blocks of files and slow symlinks.
    data_blocks: u64,
    /// Indirect / extent blocks.
    map_blocks: u64,
    /// Bytes of directory entries.
    dir_bytes: u64,
    /// Store paths (for the manifest's size).
    pub store_paths: u64,
    /// Entries whose extended attributes do not fit in the inode (a block each).
    xattr_blocks: u64,
}

fn entry_bytes(name_len: usize) -> u64 {
    (8 + name_len as u64).next_multiple_of(4)
}

/// Indirect blocks an ext3 file of `blocks` data blocks needs (an upper bound also for
/// extent trees).
fn map_blocks_for(blocks: u64) -> u64 {
    let p = BS / 4;
    if blocks <= 12 {
        0
    } else if blocks <= 12 + p {
        1
    } else {
        let rest = blocks - 12 - p;
        2 + rest.div_ceil(p) + rest.div_ceil(p * p)
    }
}

impl Estimate {
    /// Counts a directory named with `name_len` bytes.
    pub fn dir(&mut self, name_len: usize) {
        self.dirs += 1;
        self.dir_bytes += entry_bytes(name_len);
    }

    /// Counts a regular file of `size` bytes.
    pub fn file(&mut self, name_len: usize, size: u64) {
        self.files += 1;
        self.bytes += size;
        let blocks = size.div_ceil(BS);
        self.data_blocks += blocks;
        self.map_blocks += map_blocks_for(blocks);
        self.dir_bytes += entry_bytes(name_len);
    }

    /// Counts a sparse file of `size` bytes with data only in `chunks` (offset, length).
    pub fn sparse_file(&mut self, name_len: usize, size: u64, chunks: &[(u64, u64)]) {
        self.files += 1;
        self.bytes += size;
        let blocks: u64 = chunks
            .iter()
            .filter(|&&(_, len)| len > 0)
            .map(|&(offset, len)| (offset + len).div_ceil(BS) - offset / BS)
            .sum();
        self.data_blocks += blocks;
        // Each chunk may open a new branch of up to three indirect blocks.
        self.map_blocks += map_blocks_for(blocks) + 3 * chunks.len() as u64;
        self.dir_bytes += entry_bytes(name_len);
    }

    /// Counts a symlink, device, FIFO or hard link.
    pub fn other(&mut self, name_len: usize, symlink_target_len: usize) {
        self.files += 1;
        if symlink_target_len > 59 {
            self.data_blocks += 1;
        }
        self.dir_bytes += entry_bytes(name_len);
    }

    /// Counts generated content (`.crashcartrc`, the manifest) of `size` bytes.
    pub fn generated(&mut self, size: u64) {
        self.file(16, size);
    }

    /// Inodes the image needs.
    pub fn inodes(&self) -> u64 {
        self.files + self.dirs + FIXED_INODES
    }

    /// Blocks the content needs, before filesystem overhead.
    pub fn content_blocks(&self) -> u64 {
        // A directory takes whole blocks, so at most one block more than its entries fill
        // ("." and ".." included); big ones are packed to ~90% and indexed, with at most one
        // index block per leaf. Two more for the root and lost+found.
        let entries = self.dir_bytes + 24 * self.dirs;
        let dir_blocks = self.dirs + 2 + 2 * (entries * 10 / 9).div_ceil(BS);
        self.data_blocks + self.map_blocks + dir_blocks + self.xattr_blocks
    }

    /// The smallest geometry that holds this content plus `headroom_percent`.
    ///
    /// The metadata (inode tables, bitmaps, superblock and descriptor backups) is what
    /// libext2fs lays out for the candidate size ([`layout_of`]), not a model of it: with many
    /// inodes it shrinks the groups below 32,768 blocks, which multiplies bitmaps and backups.
    pub fn geometry(&self, kind: FsKind, headroom_percent: u32) -> Result<Geometry, Ext2Error> {
        let content = self.content_blocks();
        let content = content + content * u64::from(headroom_percent) / 100 + 16;
        let inodes = u32::try_from(self.inodes()).unwrap_or(u32::MAX);
        // All but the metadata: content, the journal and its map block, and a margin.
        let payload = content + u64::from(JOURNAL_BLOCKS) + 64;
        let inodes_per_block = BS / u64::from(INODE_SIZE);
        let mut blocks = (payload + u64::from(inodes).div_ceil(inodes_per_block)).max(MIN_BLOCKS);
        loop {
            let layout = layout_of(&Geometry {
                blocks,
                inodes,
                kind,
            })?;
            let need = payload + layout.metadata;
            if layout.blocks >= need {
                return Ok(Geometry {
                    blocks: layout.blocks,
                    inodes,
                    kind,
                });
            }
            blocks = if layout.blocks < blocks {
                // libext2fs dropped a last group too small for its own metadata (less than
                // 50 blocks past it): give that group room to stay.
                blocks + 3 + layout.inode_blocks_per_group + layout.descriptor_blocks + 50
            } else {
                need.max(blocks + 1)
            };
        }
    }

    /// Counts the tree at `source` (which may be a file or symlink itself, followed with
    /// `follow_root`). Further names of a multiply-linked file (seen in `linked`) take no
    /// blocks.
    pub fn add_tree(
        &mut self,
        source: &Path,
        linked: &mut HashSet<(u64, u64)>,
        follow_root: bool,
    ) -> Result<(), InputError> {
        let walk = walkdir::WalkDir::new(source)
            .follow_links(false)
            .follow_root_links(follow_root);
        for entry in walk {
            let entry = entry.map_err(|e| InputError::Unreadable {
                path: e.path().unwrap_or(source).to_path_buf(),
                source: e.into(),
            })?;
            let meta = crate::input::entry_metadata(&entry, follow_root)?;
            let name_len = entry.file_name().as_bytes().len();
            let ft = meta.file_type();
            let further_name =
                ft.is_file() && meta.nlink() > 1 && !linked.insert((meta.dev(), meta.ino()));
            if !further_name && has_xattr_block(entry.path()) {
                self.xattr_blocks += 1;
            }
            if ft.is_dir() {
                self.dir(name_len);
            } else if further_name {
                self.other(name_len, 0);
            } else if ft.is_file() {
                // Sparse files only need (and only have read) their allocated blocks.
                self.file(name_len, meta.len().min(meta.blocks() * 512));
            } else {
                self.other(name_len, meta.len() as usize);
            }
        }
        Ok(())
    }

    /// Counts the members of a tar stream (reading past their contents).
    pub fn add_tar(
        &mut self,
        stream: Box<dyn Read>,
        origin: &str,
        store_dir: &[u8],
    ) -> Result<(), InputError> {
        let tar_err = |source| InputError::Tar {
            origin: origin.to_string(),
            source,
        };
        // Directories counted so far, by image path: a tar need not have a member for each
        // directory (`tar cf x.tar d/f` has none), and the writer makes the missing ones.
        let mut dirs: HashSet<Vec<u8>> = HashSet::new();
        let mut archive = tar::Archive::new(stream);
        let mut global = Vec::new();
        for entry in archive.entries().map_err(tar_err)? {
            let mut entry = entry.map_err(tar_err)?;
            if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(tar_err)?;
                global.extend(crate::pax::global_records(&data).map_err(tar_err)?);
                continue;
            }
            let mut pax = crate::pax::MemberPax::of(&mut entry, &global)
                .map_err(|e| {
                    let member = entry.path_bytes();
                    crate::pax::named(Path::new(std::ffi::OsStr::from_bytes(&member)), e)
                })
                .map_err(tar_err)?;
            let member = (pax.sparse.as_ref().and_then(|s| s.name.clone()))
                .or_else(|| pax.path.clone())
                .unwrap_or_else(|| entry.path_bytes().into_owned());
            let name_len = member
                .rsplit(|&b| b == b'/')
                .find(|s| !s.is_empty())
                .map_or(1, <[u8]>::len);
            let target = crate::input::tar_target(&member, store_dir);
            if target.parent() == Some(Path::new("store")) {
                self.store_paths += 1;
            }
            let kind = entry.header().entry_type();
            let names: Vec<&[u8]> = target
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(n) => Some(n.as_bytes()),
                    _ => None,
                })
                .collect();
            let parents = names.len().saturating_sub(1);
            for depth in 1..=parents {
                if dirs.insert(names[..depth].join(&b'/')) {
                    self.dir(names[depth - 1].len());
                }
            }
            // A directory member after its children was counted as their parent already.
            let new_dir = kind == tar::EntryType::Directory && dirs.insert(names.join(&b'/'));
            if kind != tar::EntryType::Link {
                let mut xattrs = pax.xattrs.clone();
                xattrs.sort();
                if needs_xattr_block(&xattrs) {
                    self.xattr_blocks += 1;
                }
            }
            match kind {
                tar::EntryType::Directory => {
                    if new_dir {
                        self.dir(name_len);
                    }
                }
                // A further name of a file already counted.
                tar::EntryType::Link => self.other(name_len, 0),
                tar::EntryType::Regular | tar::EntryType::Continuous if pax.sparse.is_some() => {
                    let sparse = pax.sparse.take().expect("matched");
                    let size = sparse.size;
                    let stored = entry.size();
                    let file = sparse
                        .open(&mut entry, stored)
                        .map_err(|e| crate::pax::named(&target, e))
                        .map_err(tar_err)?;
                    self.sparse_file(name_len, size, file.chunks());
                }
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => self.file(name_len, entry.size()),
                tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
                _ => {
                    let target = match &pax.linkpath {
                        Some(link) => link.len(),
                        None => entry.link_name_bytes().map_or(0, |l| l.len()),
                    };
                    self.other(name_len, target);
                }
            }
        }
        Ok(())
    }
}

/// Whether the extended attributes of `path` take a block of their own in the image. A file
/// without any (most) costs one `llistxattr` with a small buffer on the stack; attributes that
/// cannot be read count as none (the writer then reports the error).
fn has_xattr_block(path: &Path) -> bool {
    let mut small = [0u8; 256];
    match rustix::fs::llistxattr(path, &mut small) {
        Ok(0) | Err(rustix::io::Errno::NOTSUP) => false,
        _ => crate::input::read_xattrs(path).is_ok_and(|x| needs_xattr_block(&x)),
    }
}

/// Parses `--size`: bytes with an optional K, M, G or T suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 64M"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn directories_a_tar_only_implies_are_counted_once() {
        let tar_of = |with_dirs: bool| {
            let mut b = tar::Builder::new(Vec::new());
            for i in 0..50 {
                if with_dirs {
                    let mut h = tar::Header::new_ustar();
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, format!("d{i}/"), std::io::empty())
                        .unwrap();
                }
                let mut h = tar::Header::new_ustar();
                h.set_size(2);
                b.append_data(&mut h, format!("d{i}/e/f"), &b"x\n"[..])
                    .unwrap();
            }
            b.into_inner().unwrap()
        };
        let count = |with_dirs: bool| {
            let mut e = Estimate::default();
            e.add_tar(Box::new(std::io::Cursor::new(tar_of(with_dirs))), "t", b"")
                .unwrap();
            e
        };
        assert_eq!(count(false).dirs, 100);
        assert_eq!(count(true), count(false));
    }

    #[test]
    fn geometry_stays_close_to_the_content() {
        let mut e = Estimate::default();
        for _ in 0..10_000 {
            e.file(12, 100_000);
        }
        let g = e.geometry(FsKind::Ext3, 2).unwrap();
        let data = 10_000 * 100_000u64.div_ceil(BS);
        assert!(g.blocks > data);
        assert!(
            (g.blocks as f64) < data as f64 * 1.10,
            "{} blocks for {} data blocks",
            g.blocks,
            data
        );
        assert!(u64::from(g.inodes) >= 10_000);
    }

    #[test]
    fn big_attributes_are_measured() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(!has_xattr_block(&f));
        if rustix::fs::lsetxattr(
            &f,
            "user.big",
            &[b'v'; 500],
            rustix::fs::XattrFlags::empty(),
        )
        .is_err()
        {
            return; // no user xattrs on this filesystem: nothing to measure
        }
        assert!(has_xattr_block(&f));
        let mut e = Estimate::default();
        let mut linked = HashSet::new();
        e.add_tree(dir.path(), &mut linked, true).unwrap();
        assert_eq!(e.xattr_blocks, 1);
    }

    #[test]
    fn indirect_overhead_is_bounded() {
        assert_eq!(map_blocks_for(12), 0);
        assert_eq!(map_blocks_for(13), 1);
        assert_eq!(map_blocks_for(12 + 1024 + 1), 2 + 1 + 1);
    }
}
