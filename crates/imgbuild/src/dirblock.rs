//! Directory contents as ext2 blocks: linear for small directories, an htree index (what the
//! kernel's `dir_index` uses) for anything longer than one block.
//!
//! The builder writes each directory once, complete, so it lays the blocks out itself:
//! adding names one by one through `ext2fs_link` scans the whole directory for free space on
//! every call, which is quadratic in the number of entries. Here a directory of n names costs
//! one sort and one pass.

/// `file_type` byte of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum FileType {
    /// Regular file.
    Regular = 1,
    /// Directory.
    Directory = 2,
    /// Character device.
    CharDevice = 3,
    /// Block device.
    BlockDevice = 4,
    /// Named pipe.
    Fifo = 5,
    /// Unix socket.
    Socket = 6,
    /// Symbolic link.
    Symlink = 7,
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// The name (1..=255 bytes, no `/` or NUL).
    pub name: &'a [u8],
    /// Inode it points at.
    pub ino: u32,
    /// Type of that inode.
    pub kind: FileType,
}

/// A directory laid out as blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirBlocks {
    /// `block_size` bytes each, logical block 0 first.
    pub blocks: Vec<Vec<u8>>,
    /// Whether block 0 is an htree root (the inode then needs `EXT2_INDEX_FL`).
    pub indexed: bool,
}

/// `hash_version` recorded in the htree root: half-MD4 (the superblock's unsigned-hash flag
/// tells readers which variant).
const HASH_HALF_MD4: u8 = 1;

fn entry_len(name_len: usize) -> usize {
    (8 + name_len).next_multiple_of(4)
}

/// Appends a directory entry; `rec_len` is its own length (the last one is stretched later).
fn push_entry(block: &mut Vec<u8>, ino: u32, name: &[u8], kind: u8, rec_len: usize) {
    block.extend_from_slice(&ino.to_le_bytes());
    block.extend_from_slice(&(rec_len as u16).to_le_bytes());
    block.push(name.len() as u8);
    block.push(kind);
    block.extend_from_slice(name);
    block.resize(block.len() + (rec_len - 8 - name.len()), 0);
}

/// Packs entries into blocks in the given order; `first` entries (`.`/`..`) open block 0.
/// Returns the blocks; the last entry of each block reaches the end of it.
fn pack(entries: &[(u32, &[u8], u8)], block_size: usize) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut block: Vec<u8> = Vec::with_capacity(block_size);
    let mut last_start = 0;
    for &(ino, name, kind) in entries {
        let len = entry_len(name.len());
        if block.len() + len > block_size {
            stretch_last(&mut block, last_start, block_size);
            blocks.push(std::mem::replace(
                &mut block,
                Vec::with_capacity(block_size),
            ));
        }
        last_start = block.len();
        push_entry(&mut block, ino, name, kind, len);
    }
    if !block.is_empty() {
        stretch_last(&mut block, last_start, block_size);
        blocks.push(block);
    }
    blocks
}

fn stretch_last(block: &mut Vec<u8>, last_start: usize, block_size: usize) {
    let rec_len = block_size - last_start;
    block[last_start + 4..last_start + 6].copy_from_slice(&(rec_len as u16).to_le_bytes());
    block.resize(block_size, 0);
}

/// Lays out directory `ino` (parent `parent`) holding `entries` (sorted by name by the caller;
/// that order is kept in linear directories). `hash` gives the htree hash of a name.
pub fn layout(
    ino: u32,
    parent: u32,
    entries: &[DirEntry<'_>],
    block_size: usize,
    hash: impl Fn(&[u8]) -> u32,
) -> DirBlocks {
    let dir = FileType::Directory as u8;
    let mut linear: Vec<(u32, &[u8], u8)> = vec![(ino, b".", dir), (parent, b"..", dir)];
    linear.extend(entries.iter().map(|e| (e.ino, e.name, e.kind as u8)));
    let blocks = pack(&linear, block_size);
    if blocks.len() <= 1 {
        return DirBlocks {
            blocks,
            indexed: false,
        };
    }
    indexed(ino, parent, entries, block_size, hash)
}

fn indexed(
    ino: u32,
    parent: u32,
    entries: &[DirEntry<'_>],
    block_size: usize,
    hash: impl Fn(&[u8]) -> u32,
) -> DirBlocks {
    let mut hashed: Vec<(u32, &DirEntry<'_>)> = entries.iter().map(|e| (hash(e.name), e)).collect();
    hashed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(b.1.name)));

    // Leaves: entries in hash order, each leaf remembers its first hash (with bit 0 set when
    // it continues a run of equal hashes from the previous leaf, as the kernel marks it).
    let mut leaves: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut start = 0;
    while start < hashed.len() {
        let mut used = 0;
        let mut end = start;
        while end < hashed.len() && used + entry_len(hashed[end].1.name.len()) <= block_size {
            used += entry_len(hashed[end].1.name.len());
            end += 1;
        }
        let chunk: Vec<(u32, &[u8], u8)> = hashed[start..end]
            .iter()
            .map(|(_, e)| (e.ino, e.name, e.kind as u8))
            .collect();
        let mut first = hashed[start].0;
        if start > 0 && hashed[start - 1].0 == first {
            first |= 1;
        }
        let block = pack(&chunk, block_size).pop().expect("one leaf");
        leaves.push((first, block));
        start = end;
    }

    let root_limit = (block_size - 32) / 8;
    let node_limit = (block_size - 8) / 8;
    let two_levels = leaves.len() > root_limit;
    assert!(
        leaves.len() <= root_limit * node_limit,
        "directory beyond a two-level htree"
    );

    // Logical blocks: 0 root, then index nodes (two levels only), then leaves.
    let node_count = if two_levels {
        leaves.len().div_ceil(node_limit)
    } else {
        0
    };
    let first_leaf = 1 + node_count as u32;
    let leaf_refs: Vec<(u32, u32)> = leaves
        .iter()
        .enumerate()
        .map(|(i, (h, _))| (*h, first_leaf + i as u32))
        .collect();

    let mut root = Vec::with_capacity(block_size);
    push_entry(&mut root, ino, b".", FileType::Directory as u8, 12);
    push_entry(&mut root, parent, b"..", FileType::Directory as u8, 12);
    root[16..18].copy_from_slice(&((block_size - 12) as u16).to_le_bytes());
    root.extend_from_slice(&0u32.to_le_bytes()); // reserved_zero
    root.extend_from_slice(&[HASH_HALF_MD4, 8, u8::from(two_levels), 0]);

    let mut blocks = Vec::with_capacity(1 + node_count + leaves.len());
    if two_levels {
        let groups: Vec<&[(u32, u32)]> = leaf_refs.chunks(node_limit).collect();
        let node_refs: Vec<(u32, u32)> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g[0].0, 1 + i as u32))
            .collect();
        push_index(&mut root, root_limit, &node_refs);
        root.resize(block_size, 0);
        blocks.push(root);
        for group in groups {
            let mut node = Vec::with_capacity(block_size);
            node.extend_from_slice(&0u32.to_le_bytes());
            node.extend_from_slice(&(block_size as u16).to_le_bytes());
            node.extend_from_slice(&[0, 0]);
            push_index(&mut node, node_limit, group);
            node.resize(block_size, 0);
            blocks.push(node);
        }
    } else {
        push_index(&mut root, root_limit, &leaf_refs);
        root.resize(block_size, 0);
        blocks.push(root);
    }
    blocks.extend(leaves.into_iter().map(|(_, b)| b));
    DirBlocks {
        blocks,
        indexed: true,
    }
}

/// Appends a dx count/limit header and entries; the first entry's hash is implied (0) and its
/// slot holds the count and limit instead.
fn push_index(buf: &mut Vec<u8>, limit: usize, refs: &[(u32, u32)]) {
    buf.extend_from_slice(&(limit as u16).to_le_bytes());
    buf.extend_from_slice(&(refs.len() as u16).to_le_bytes());
    buf.extend_from_slice(&refs[0].1.to_le_bytes());
    for &(hash, block) in &refs[1..] {
        buf.extend_from_slice(&hash.to_le_bytes());
        buf.extend_from_slice(&block.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(block: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < block.len() {
            let rec = u16::from_le_bytes([block[off + 4], block[off + 5]]) as usize;
            let len = block[off + 6] as usize;
            out.push(block[off + 8..off + 8 + len].to_vec());
            off += rec;
        }
        assert_eq!(off, block.len(), "entries cover the block exactly");
        out
    }

    #[test]
    fn small_directory_is_one_linear_block() {
        let e = [DirEntry {
            name: b"bin",
            ino: 12,
            kind: FileType::Directory,
        }];
        let d = layout(11, 2, &e, 4096, |_| 0);
        assert!(!d.indexed);
        assert_eq!(d.blocks.len(), 1);
        assert_eq!(
            names(&d.blocks[0]),
            vec![b".".to_vec(), b"..".to_vec(), b"bin".to_vec()]
        );
    }

    #[test]
    fn empty_directory_has_dot_entries() {
        let d = layout(11, 2, &[], 1024, |_| 0);
        assert_eq!(names(&d.blocks[0]), vec![b".".to_vec(), b"..".to_vec()]);
    }

    #[test]
    fn large_directory_is_indexed_and_sorted_by_hash() {
        let owned: Vec<Vec<u8>> = (0..2000)
            .map(|i| format!("file-{i:05}").into_bytes())
            .collect();
        let entries: Vec<DirEntry<'_>> = owned
            .iter()
            .enumerate()
            .map(|(i, n)| DirEntry {
                name: n,
                ino: 100 + i as u32,
                kind: FileType::Regular,
            })
            .collect();
        // A toy hash: the numeric suffix reversed, so hash order differs from name order.
        let hash = |n: &[u8]| {
            let s = std::str::from_utf8(&n[5..]).unwrap();
            s.chars().rev().collect::<String>().parse::<u32>().unwrap() << 1
        };
        let d = layout(11, 2, &entries, 1024, hash);
        assert!(d.indexed);
        let root = &d.blocks[0];
        assert_eq!(root[28], HASH_HALF_MD4);
        let levels = root[30];
        let count = u16::from_le_bytes([root[34], root[35]]) as usize;
        assert!(count > 1);
        let mut seen = 0;
        let mut last = 0;
        // Index nodes (two levels only) sit between the root and the leaves.
        let leaf_start = if levels == 1 { 1 + count } else { 1 };
        if levels == 0 {
            assert_eq!(d.blocks.len() - 1, count, "one root entry per leaf");
        }
        for leaf in &d.blocks[leaf_start..] {
            for n in names(leaf) {
                let h = hash(&n);
                assert!(h >= last, "leaves in hash order");
                last = h;
                seen += 1;
            }
        }
        assert_eq!(seen, 2000);
    }
}
