//! Where a file's blocks are: the ext3 indirect block map and the ext4 extent tree, built in
//! memory from the runs the writer allocated.
//!
//! libext2fs can set a mapping one block at a time (`ext2fs_bmap2`), but each call rereads and
//! rewrites an indirect block through its cache. The builder knows every block of a file once
//! its data is written, so it lays the whole map out at once: [`BlockMap::meta_blocks`] says how
//! many map blocks to allocate, [`BlockMap::build`] fills `i_block` and those blocks.

use std::collections::BTreeMap;

/// `i_block` slots that point straight at data.
const DIRECT: u64 = 12;
/// Most blocks one extent can cover (longer runs are split).
const MAX_EXTENT_LEN: u64 = 32_768;
/// Extents (or index entries) that fit in `i_block` after the header.
const EXTENTS_IN_INODE: usize = 4;
const EXTENT_MAGIC: u16 = 0xF30A;
/// The deepest extent tree the kernel reads (`EXT4_MAX_EXTENT_DEPTH`).
const MAX_EXTENT_DEPTH: usize = 5;

/// A run of a file's logical blocks placed at consecutive physical blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First logical block in the file.
    pub logical: u64,
    /// First physical block in the image.
    pub physical: u64,
    /// Number of blocks.
    pub len: u64,
}

/// A block-map block to write: its contents at the physical block handed to [`BlockMap::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapBlock {
    /// Physical block number.
    pub physical: u64,
    /// `block_size` bytes.
    pub data: Vec<u8>,
}

/// Why a file's map cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MapError {
    /// Beyond what an ext3 triple-indirect map addresses.
    #[error("file too large for an ext3 block map")]
    TooLarge,
    /// More extents than the deepest tree the kernel reads holds.
    #[error("file too fragmented for an extent tree ({0} extents)")]
    TooFragmented(usize),
}

/// The mapping scheme of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockMap {
    /// ext2/ext3 direct, indirect, double and triple indirect blocks.
    Indirect {
        /// Bytes per block.
        block_size: u32,
    },
    /// ext4 extents.
    Extents {
        /// Bytes per block.
        block_size: u32,
    },
}

/// The result of [`BlockMap::build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltMap {
    /// The inode's `i_block`.
    pub i_block: [u32; 15],
    /// Map blocks to write.
    pub blocks: Vec<MapBlock>,
}

/// Position of an indirect block in an ext3 map; the derived order is the order
/// [`BlockMap::build`] expects their physical blocks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    /// The single-indirect block (`i_block[12]`).
    Ind,
    /// The double-indirect block (`i_block[13]`).
    Dind,
    /// The n-th indirect block under the double-indirect one.
    DindInd(u64),
    /// The triple-indirect block (`i_block[14]`).
    Tind,
    /// The n-th double-indirect block under the triple-indirect one.
    TindDind(u64),
    /// An indirect block under a double-indirect one under the triple-indirect one.
    TindDindInd(u64, u64),
}

impl BlockMap {
    fn per_block(block_size: u32) -> u64 {
        u64::from(block_size / 4)
    }

    /// How many map blocks `runs` need (allocate that many, pass them to [`BlockMap::build`]).
    pub fn meta_blocks(&self, runs: &[Run]) -> Result<u64, MapError> {
        match *self {
            BlockMap::Indirect { block_size } => {
                Ok(indirect_nodes(runs, Self::per_block(block_size))?.len() as u64)
            }
            BlockMap::Extents { block_size } => {
                let levels = extent_levels(extents(runs).len(), block_size)?;
                Ok(levels.iter().sum::<usize>() as u64)
            }
        }
    }

    /// The indirect blocks logical block `lblk` needs, outermost first (ext3; none for
    /// extents, whose blocks are placed when the file is complete). Allocating them just before
    /// the first data block they map puts them where the kernel would: inline with the data.
    pub fn nodes_for(&self, lblk: u64) -> Result<Vec<Node>, MapError> {
        match *self {
            BlockMap::Indirect { block_size } => {
                let Place { leaf, parents, .. } = place(lblk, Self::per_block(block_size))?;
                Ok(parents.into_iter().flatten().chain(leaf).collect())
            }
            BlockMap::Extents { .. } => Ok(Vec::new()),
        }
    }

    /// The first logical block after `lblk` that hangs off a different indirect block (so a
    /// run of data can stop there and let [`BlockMap::nodes_for`] place the next one).
    pub fn span_end(&self, lblk: u64) -> u64 {
        match *self {
            BlockMap::Indirect { block_size } => {
                let p = Self::per_block(block_size);
                if lblk < DIRECT {
                    DIRECT
                } else {
                    let x = lblk - DIRECT;
                    let offset = if x < p { x } else { (x - p) % p };
                    lblk + (p - offset)
                }
            }
            BlockMap::Extents { .. } => u64::MAX,
        }
    }

    /// Lays out the map of `runs` (sorted by logical block, not overlapping) using the map
    /// blocks `meta` (exactly [`BlockMap::meta_blocks`] of them; for ext3 the blocks of the
    /// [`Node`]s the runs need, in `Node` order).
    pub fn build(&self, runs: &[Run], meta: &[u64]) -> Result<BuiltMap, MapError> {
        match *self {
            BlockMap::Indirect { block_size } => build_indirect(runs, meta, block_size),
            BlockMap::Extents { block_size } => build_extents(runs, meta, block_size),
        }
    }
}

/// Where logical block `lblk` hangs: the chain of indirect nodes and the slot in the last one
/// (or `None` and the `i_block` slot for direct blocks).
/// Where one logical block hangs in an indirect map.
struct Place {
    /// The indirect block holding its pointer (`None`: `i_block` itself).
    leaf: Option<Node>,
    /// The blocks above that leaf.
    parents: [Option<Node>; 2],
    /// Slot of the pointer in the leaf.
    slot: usize,
}

fn place(lblk: u64, p: u64) -> Result<Place, MapError> {
    let at = |leaf, parents, slot: u64| Place {
        leaf: Some(leaf),
        parents,
        slot: slot as usize,
    };
    if lblk < DIRECT {
        return Ok(Place {
            leaf: None,
            parents: [None, None],
            slot: lblk as usize,
        });
    }
    let x = lblk - DIRECT;
    if x < p {
        return Ok(at(Node::Ind, [None, None], x));
    }
    let x = x - p;
    if x < p * p {
        let i1 = x / p;
        return Ok(at(Node::DindInd(i1), [Some(Node::Dind), None], x % p));
    }
    let x = x - p * p;
    if x < p * p * p {
        let i1 = x / (p * p);
        let i2 = (x / p) % p;
        return Ok(at(
            Node::TindDindInd(i1, i2),
            [Some(Node::Tind), Some(Node::TindDind(i1))],
            x % p,
        ));
    }
    Err(MapError::TooLarge)
}

fn indirect_nodes(runs: &[Run], p: u64) -> Result<BTreeMap<Node, ()>, MapError> {
    let mut nodes = BTreeMap::new();
    for run in runs {
        let mut lblk = run.logical;
        let end = run.logical + run.len;
        while lblk < end {
            let Place { leaf, parents, .. } = place(lblk, p)?;
            if let Some(leaf) = leaf {
                nodes.insert(leaf, ());
            }
            for parent in parents.into_iter().flatten() {
                nodes.insert(parent, ());
            }
            // Jump to the first block of the next leaf node (or the next block when direct).
            lblk = match leaf {
                None => lblk + 1,
                Some(_) => {
                    let x = lblk - DIRECT;
                    let offset_in_leaf = if x < p { x } else { (x - p) % p };
                    lblk + (p - offset_in_leaf)
                }
            };
        }
    }
    Ok(nodes)
}

fn build_indirect(runs: &[Run], meta: &[u64], block_size: u32) -> Result<BuiltMap, MapError> {
    let p = BlockMap::per_block(block_size);
    let nodes = indirect_nodes(runs, p)?;
    assert_eq!(nodes.len(), meta.len(), "map blocks allocated as counted");
    let phys: BTreeMap<Node, u64> = nodes.keys().copied().zip(meta.iter().copied()).collect();
    let mut contents: BTreeMap<Node, Vec<u8>> = nodes
        .keys()
        .map(|&n| (n, vec![0u8; block_size as usize]))
        .collect();
    let mut i_block = [0u32; 15];
    let mut set = |node: Option<Node>, slot: usize, value: u64, i_block: &mut [u32; 15]| match node
    {
        None => i_block[slot] = value as u32,
        Some(n) => {
            let buf = contents.get_mut(&n).expect("node counted");
            buf[slot * 4..slot * 4 + 4].copy_from_slice(&(value as u32).to_le_bytes());
        }
    };
    for run in runs {
        for i in 0..run.len {
            let Place { leaf, slot, .. } = place(run.logical + i, p)?;
            set(leaf, slot, run.physical + i, &mut i_block);
        }
    }
    // Link the tree: roots into i_block, inner nodes into their parents.
    for (&node, &pblk) in &phys {
        match node {
            Node::Ind => i_block[12] = pblk as u32,
            Node::Dind => i_block[13] = pblk as u32,
            Node::Tind => i_block[14] = pblk as u32,
            Node::DindInd(i1) => set(Some(Node::Dind), i1 as usize, pblk, &mut i_block),
            Node::TindDind(i1) => set(Some(Node::Tind), i1 as usize, pblk, &mut i_block),
            Node::TindDindInd(i1, i2) => {
                set(Some(Node::TindDind(i1)), i2 as usize, pblk, &mut i_block)
            }
        }
    }
    let blocks = contents
        .into_iter()
        .map(|(node, data)| MapBlock {
            physical: phys[&node],
            data,
        })
        .collect();
    Ok(BuiltMap { i_block, blocks })
}

/// Runs split to the longest an extent may be.
fn extents(runs: &[Run]) -> Vec<Run> {
    let mut out = Vec::new();
    for run in runs {
        let mut done = 0;
        while done < run.len {
            let len = (run.len - done).min(MAX_EXTENT_LEN);
            out.push(Run {
                logical: run.logical + done,
                physical: run.physical + done,
                len,
            });
            done += len;
        }
    }
    out
}

fn header(entries: usize, max: usize, depth: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0..2].copy_from_slice(&EXTENT_MAGIC.to_le_bytes());
    h[2..4].copy_from_slice(&(entries as u16).to_le_bytes());
    h[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    h[6..8].copy_from_slice(&depth.to_le_bytes());
    h
}

fn extent_entry(run: &Run) -> [u8; 12] {
    let mut e = [0u8; 12];
    e[0..4].copy_from_slice(&(run.logical as u32).to_le_bytes());
    e[4..6].copy_from_slice(&(run.len as u16).to_le_bytes());
    e[6..8].copy_from_slice(&((run.physical >> 32) as u16).to_le_bytes());
    e[8..12].copy_from_slice(&(run.physical as u32).to_le_bytes());
    e
}

fn index_entry(logical: u64, leaf: u64) -> [u8; 12] {
    let mut e = [0u8; 12];
    e[0..4].copy_from_slice(&(logical as u32).to_le_bytes());
    e[4..8].copy_from_slice(&(leaf as u32).to_le_bytes());
    e[8..10].copy_from_slice(&((leaf >> 32) as u16).to_le_bytes());
    e
}

/// Blocks per level of the extent tree over `n` extents, leaves first; the root in `i_block`
/// is not counted. Empty when the extents fit in the inode. Every node but the last of a level
/// is full, so a tree over the same extents is always laid out the same way.
fn extent_levels(n: usize, block_size: u32) -> Result<Vec<usize>, MapError> {
    // Leaf extents and index entries are both 12 bytes, after a 12-byte header.
    let per_block = (block_size as usize - 12) / 12;
    let mut levels = Vec::new();
    let mut entries = n;
    while entries > EXTENTS_IN_INODE {
        if levels.len() == MAX_EXTENT_DEPTH {
            return Err(MapError::TooFragmented(n));
        }
        entries = entries.div_ceil(per_block);
        levels.push(entries);
    }
    Ok(levels)
}

fn build_extents(runs: &[Run], meta: &[u64], block_size: u32) -> Result<BuiltMap, MapError> {
    let all = extents(runs);
    let levels = extent_levels(all.len(), block_size)?;
    assert_eq!(
        levels.iter().sum::<usize>(),
        meta.len(),
        "map blocks allocated as counted"
    );
    let per_block = (block_size as usize - 12) / 12;
    // Each level as (first logical block, 12-byte entry) pairs, built from the one below; map
    // blocks are taken leaves first, then each index level in turn.
    let mut entries: Vec<(u64, [u8; 12])> = all
        .iter()
        .map(|run| (run.logical, extent_entry(run)))
        .collect();
    let mut free = meta.iter().copied();
    let mut blocks = Vec::new();
    for (depth, &nodes) in levels.iter().enumerate() {
        let mut parents = Vec::with_capacity(nodes);
        for chunk in entries.chunks(per_block) {
            let pblk = free.next().expect("map blocks counted");
            let mut data = Vec::with_capacity(block_size as usize);
            data.extend_from_slice(&header(chunk.len(), per_block, depth as u16));
            for (_, entry) in chunk {
                data.extend_from_slice(entry);
            }
            data.resize(block_size as usize, 0);
            blocks.push(MapBlock {
                physical: pblk,
                data,
            });
            parents.push((chunk[0].0, index_entry(chunk[0].0, pblk)));
        }
        entries = parents;
    }
    let mut root = Vec::with_capacity(60);
    root.extend_from_slice(&header(
        entries.len(),
        EXTENTS_IN_INODE,
        levels.len() as u16,
    ));
    for (_, entry) in &entries {
        root.extend_from_slice(entry);
    }
    root.resize(60, 0);
    let mut i_block = [0u32; 15];
    for (slot, word) in i_block.iter_mut().zip(root.chunks_exact(4)) {
        *slot = u32::from_le_bytes(word.try_into().expect("4 bytes"));
    }
    Ok(BuiltMap { i_block, blocks })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u32 = 4096;

    fn word(block: &[u8], slot: usize) -> u32 {
        u32::from_le_bytes(block[slot * 4..slot * 4 + 4].try_into().unwrap())
    }

    #[test]
    fn small_file_uses_direct_blocks_only() {
        let map = BlockMap::Indirect { block_size: BS };
        let runs = [Run {
            logical: 0,
            physical: 100,
            len: 12,
        }];
        assert_eq!(map.meta_blocks(&runs).unwrap(), 0);
        let built = map.build(&runs, &[]).unwrap();
        assert_eq!(built.i_block[..12], (100..112).collect::<Vec<u32>>()[..]);
        assert_eq!(built.i_block[12..], [0, 0, 0]);
    }

    #[test]
    fn thirteenth_block_needs_one_indirect_block() {
        let map = BlockMap::Indirect { block_size: BS };
        let runs = [Run {
            logical: 0,
            physical: 100,
            len: 13,
        }];
        assert_eq!(map.meta_blocks(&runs).unwrap(), 1);
        let built = map.build(&runs, &[500]).unwrap();
        assert_eq!(built.i_block[12], 500);
        assert_eq!(word(&built.blocks[0].data, 0), 112);
        assert_eq!(word(&built.blocks[0].data, 1), 0);
    }

    #[test]
    fn double_indirect_counts_and_links() {
        let map = BlockMap::Indirect { block_size: BS };
        // 12 direct + 1024 indirect + 1025 in the double-indirect range: two leaves.
        let runs = [Run {
            logical: 0,
            physical: 1000,
            len: 12 + 1024 + 1025,
        }];
        assert_eq!(map.meta_blocks(&runs).unwrap(), 1 + 1 + 2);
        let built = map.build(&runs, &[10, 11, 12, 13]).unwrap();
        // Order: Ind, Dind, DindInd(0), DindInd(1).
        assert_eq!(built.i_block[12], 10);
        assert_eq!(built.i_block[13], 11);
        let dind = &built.blocks[1];
        assert_eq!(dind.physical, 11);
        assert_eq!(word(&dind.data, 0), 12);
        assert_eq!(word(&dind.data, 1), 13);
        assert_eq!(word(&built.blocks[3].data, 0), 1000 + 12 + 1024 + 1024);
    }

    #[test]
    fn sparse_file_maps_only_written_blocks() {
        let map = BlockMap::Indirect { block_size: BS };
        let far = 12 + 1024 + 5 * 1024 + 7;
        let runs = [
            Run {
                logical: 0,
                physical: 50,
                len: 1,
            },
            Run {
                logical: far,
                physical: 60,
                len: 1,
            },
        ];
        // Dind and one leaf under it; no single-indirect block.
        assert_eq!(map.meta_blocks(&runs).unwrap(), 2);
        let built = map.build(&runs, &[70, 71]).unwrap();
        assert_eq!(built.i_block[12], 0);
        assert_eq!(built.i_block[13], 70);
        assert_eq!(word(&built.blocks[0].data, 5), 71);
        assert_eq!(word(&built.blocks[1].data, 7), 60);
    }

    #[test]
    fn nodes_come_outermost_first_and_spans_end_at_leaf_boundaries() {
        let map = BlockMap::Indirect { block_size: BS };
        assert!(map.nodes_for(5).unwrap().is_empty());
        assert_eq!(map.span_end(5), 12);
        assert_eq!(map.nodes_for(12).unwrap(), vec![Node::Ind]);
        assert_eq!(map.span_end(12), 12 + 1024);
        let first_dind = 12 + 1024;
        assert_eq!(
            map.nodes_for(first_dind + 1500).unwrap(),
            vec![Node::Dind, Node::DindInd(1)]
        );
        assert_eq!(map.span_end(first_dind + 1500), first_dind + 2048);
        let first_tind = first_dind + 1024 * 1024;
        assert_eq!(
            map.nodes_for(first_tind).unwrap(),
            vec![Node::Tind, Node::TindDind(0), Node::TindDindInd(0, 0)]
        );
        let ext = BlockMap::Extents { block_size: BS };
        assert!(ext.nodes_for(100_000).unwrap().is_empty());
        assert_eq!(ext.span_end(7), u64::MAX);
    }

    #[test]
    fn triple_indirect_is_reached() {
        let map = BlockMap::Indirect { block_size: BS };
        let p = 1024u64;
        let lblk = 12 + p + p * p + 3;
        let runs = [Run {
            logical: lblk,
            physical: 9,
            len: 1,
        }];
        assert_eq!(map.meta_blocks(&runs).unwrap(), 3);
        let built = map.build(&runs, &[1, 2, 3]).unwrap();
        assert_eq!(built.i_block[14], 1);
        assert_eq!(word(&built.blocks[2].data, 3), 9);
    }

    #[test]
    fn few_extents_live_in_the_inode() {
        let map = BlockMap::Extents { block_size: BS };
        let runs = [Run {
            logical: 0,
            physical: 1 << 33,
            len: 40_000,
        }];
        assert_eq!(map.meta_blocks(&runs).unwrap(), 0);
        let built = map.build(&runs, &[]).unwrap();
        assert_eq!(built.i_block[0] & 0xffff, 0xF30A);
        assert_eq!(built.i_block[0] >> 16, 2, "split at 32768 blocks");
        // First extent: logical 0, len 32768, start_hi 2, start_lo 0.
        assert_eq!(built.i_block[3], 0);
        assert_eq!(built.i_block[4] & 0xffff, 32_768);
        assert_eq!(built.i_block[4] >> 16, 2);
        assert_eq!(built.i_block[5], 0);
    }

    #[test]
    fn many_extents_get_a_leaf_block() {
        let map = BlockMap::Extents { block_size: BS };
        let runs: Vec<Run> = (0..10)
            .map(|i| Run {
                logical: i * 2,
                physical: 100 + i * 3,
                len: 1,
            })
            .collect();
        assert_eq!(map.meta_blocks(&runs).unwrap(), 1);
        let built = map.build(&runs, &[7]).unwrap();
        assert_eq!(built.i_block[1] >> 16, 1, "depth 1");
        assert_eq!(built.i_block[4], 7, "index points at the leaf");
        assert_eq!(
            u16::from_le_bytes([built.blocks[0].data[2], built.blocks[0].data[3]]),
            10
        );
    }

    #[test]
    fn more_extents_than_four_leaves_hold_get_an_index_level() {
        let map = BlockMap::Extents { block_size: BS };
        // 340 extents per leaf: 1,361 extents need 5 leaves, more than the inode's 4 slots.
        let runs: Vec<Run> = (0..1361)
            .map(|i| Run {
                logical: i * 2,
                physical: 10_000 + i * 2,
                len: 1,
            })
            .collect();
        assert_eq!(map.meta_blocks(&runs).unwrap(), 5 + 1);
        let meta: Vec<u64> = (100..106).collect();
        let built = map.build(&runs, &meta).unwrap();
        assert_eq!(built.i_block[0] >> 16, 1, "one entry in the root");
        assert_eq!(built.i_block[1] >> 16, 2, "depth 2");
        assert_eq!(built.i_block[4], 105, "root points at the index block");
        let index = &built.blocks[5];
        assert_eq!(index.physical, 105);
        assert_eq!(u16::from_le_bytes([index.data[2], index.data[3]]), 5);
        assert_eq!(u16::from_le_bytes([index.data[6], index.data[7]]), 1);
        // The second index entry: first logical block of leaf 1, leaf at block 101.
        assert_eq!(word(&index.data, 6), 340 * 2);
        assert_eq!(word(&index.data, 7), 101);
        let last_leaf = &built.blocks[4];
        assert_eq!(
            u16::from_le_bytes([last_leaf.data[2], last_leaf.data[3]]),
            1
        );
    }
}
