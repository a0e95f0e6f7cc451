//! Block placement: where a file's bytes go in the image and the block map that finds them.
//!
//! Every allocation starts at the block after the previous one, so files lie in the image in
//! the order they are written, each as few contiguous runs as the free space allows. Data is
//! `pwrite`n straight into the image file; libext2fs only hands out the blocks
//! ([`Filesystem::allocate_run`]). ext3's indirect blocks are allocated just before the first
//! data block that needs them (as the kernel would), extent leaves and index blocks after the
//! data; the map itself is built in memory ([`BlockMap`]) and written once the file is complete.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::blockmap::{BlockMap, MapError, Node, Run};
use crate::digest::is_zero;
use crate::ext2::{Ext2Error, Filesystem, FsKind, BLOCK_SIZE};

/// Why blocks could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// libext2fs refused (no free block, typically).
    #[error(transparent)]
    Ext2(#[from] Ext2Error),
    /// Writing the image file failed.
    #[error("cannot write {}", image.display())]
    Image {
        /// The image file.
        image: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The block map of a file cannot be built.
    #[error("{}", path.display())]
    Map {
        /// Path in the image.
        path: PathBuf,
        /// Why.
        source: MapError,
    },
}

/// Where a file's blocks went: its data runs and (ext3) its indirect blocks.
#[derive(Debug, Default)]
pub struct Placed {
    runs: Vec<Run>,
    nodes: BTreeMap<Node, u64>,
}

/// What an inode records about its blocks, once they are placed.
#[derive(Debug, Clone, Copy)]
pub struct BlockFields {
    /// `i_block`: the map's root.
    pub block: [u32; 15],
    /// Blocks held, data and map.
    pub blocks: u64,
    /// `EXT4_EXTENTS_FL` for extent-mapped files.
    pub flags: u32,
}

/// The image file and the allocation cursor.
pub struct Placement {
    file: File,
    image: PathBuf,
    map: BlockMap,
    /// Where the next allocation starts looking: keeps the image sequential.
    goal: u64,
}

impl Placement {
    /// Places blocks in `file` (at `image`, for messages), mapped as `kind` maps files.
    pub fn new(file: File, image: &Path, kind: FsKind) -> Placement {
        let map = match kind {
            FsKind::Ext3 => BlockMap::Indirect {
                block_size: BLOCK_SIZE,
            },
            FsKind::Ext4 => BlockMap::Extents {
                block_size: BLOCK_SIZE,
            },
        };
        Placement {
            file,
            image: image.to_path_buf(),
            map,
            goal: 0,
        }
    }

    /// The image file, placement done.
    pub fn into_file(self) -> File {
        self.file
    }

    fn write_at(&self, bytes: &[u8], block: u64) -> Result<(), PlaceError> {
        self.file
            .write_all_at(bytes, block * u64::from(BLOCK_SIZE))
            .map_err(|source| PlaceError::Image {
                image: self.image.clone(),
                source,
            })
    }

    /// Writes `blocks` (each at most a block) as consecutive logical blocks from 0, none
    /// skipped: directory and symlink contents.
    pub fn write_blocks(
        &mut self,
        fs: &mut Filesystem,
        path: &Path,
        blocks: &[Vec<u8>],
    ) -> Result<Placed, PlaceError> {
        let bs = BLOCK_SIZE as usize;
        let mut joined = Vec::with_capacity(blocks.len() * bs);
        for b in blocks {
            joined.extend_from_slice(b);
            joined.resize(joined.len().next_multiple_of(bs), 0);
        }
        let mut placed = Placed::default();
        self.write_data(fs, path, 0, &joined, false, &mut placed)?;
        Ok(placed)
    }

    /// Places `data` (starting at block-aligned file offset `offset`) in the image; with
    /// `skip_zero`, all-zero blocks become holes.
    pub fn write_data(
        &mut self,
        fs: &mut Filesystem,
        path: &Path,
        offset: u64,
        data: &[u8],
        skip_zero: bool,
        placed: &mut Placed,
    ) -> Result<(), PlaceError> {
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
                self.place_map_nodes(fs, path, lblk, placed)?;
                let want = ((j - done) as u64).min(self.map.span_end(lblk) - lblk);
                let (pblk, got) = fs.allocate_run(self.goal, want, path)?;
                let got = got as usize;
                self.write_at(&data[done * bs..((done + got) * bs).min(data.len())], pblk)?;
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
        fs: &mut Filesystem,
        path: &Path,
        lblk: u64,
        placed: &mut Placed,
    ) -> Result<(), PlaceError> {
        let nodes = self.map.nodes_for(lblk).map_err(|source| PlaceError::Map {
            path: path.to_path_buf(),
            source,
        })?;
        for node in nodes {
            if let std::collections::btree_map::Entry::Vacant(slot) = placed.nodes.entry(node) {
                let (pblk, _) = fs.allocate_run(self.goal, 1, path)?;
                slot.insert(pblk);
                self.goal = pblk + 1;
            }
        }
        Ok(())
    }

    /// Allocates (extent tree blocks) and writes the block map of a file.
    pub fn finish_map(
        &mut self,
        fs: &mut Filesystem,
        path: &Path,
        placed: &Placed,
    ) -> Result<BlockFields, PlaceError> {
        let map_err = |source| PlaceError::Map {
            path: path.to_path_buf(),
            source,
        };
        let runs = &placed.runs;
        let needed = self.map.meta_blocks(runs).map_err(map_err)?;
        // ext3's indirect blocks were placed with the data, in `Node` order.
        let mut meta: Vec<u64> = placed.nodes.values().copied().collect();
        while (meta.len() as u64) < needed {
            let (pblk, got) = fs.allocate_run(self.goal, needed - meta.len() as u64, path)?;
            meta.extend(pblk..pblk + got);
            self.goal = pblk + got;
        }
        let built = self.map.build(runs, &meta).map_err(map_err)?;
        for b in &built.blocks {
            self.write_at(&b.data, b.physical)?;
        }
        let data: u64 = runs.iter().map(|r| r.len).sum();
        let flags = match self.map {
            BlockMap::Extents { .. } => ext2fs_sys::EXT4_EXTENTS_FL,
            BlockMap::Indirect { .. } => 0,
        };
        Ok(BlockFields {
            block: built.i_block,
            blocks: data + needed,
            flags,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
