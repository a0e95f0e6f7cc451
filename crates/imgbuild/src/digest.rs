//! The content digest, computed on hashing threads while the main thread writes.
//!
//! A file's content hash ([`DIGEST_SCHEME`], `blake3-nonzero-4k-v2`) is the BLAKE3 of, for
//! each 4096-byte block of the file (block `i` holding bytes `4096·i ..`, the last one padded
//! with zeros to 4096 bytes) that is not all zeros, `i` as a little-endian `u64` followed by
//! the block's 4096 bytes; then the file's size as a little-endian `u64`. So its cost is that
//! of the data, not of the apparent size (a 1 TiB file with 4 KiB of data hashes 4 KiB), and it
//! does not depend on how the input stored the zeros: a hole, a sparse tar member and explicit
//! zero bytes give the same hash. (Plain BLAKE3 of all the bytes, which this replaces, mixes
//! each 1 KiB chunk's position into it, so no run of zeros can be skipped.) README shows how
//! to compute it for a file outside an image.
//!
//! BLAKE3 rather than SHA-256: SHA-256 of every byte cost more CPU than copying it into the
//! image (with SHA-NI), BLAKE3 a quarter of that. Still, the writer hands each chunk it has
//! written to a hashing thread and carries on with the next; files up to `INLINE_MAX` it
//! hashes itself. Holes never reach the hasher; all-zero blocks are skipped by the same test
//! the writer uses to leave them out of the image ([`is_zero`]). Blocks are copied with their
//! numbers into a staging buffer and hashed in large updates, which keeps BLAKE3's SIMD lanes
//! full.
//! Files go to the threads in turn (one per core, at most `MAX_THREADS`, so several files
//! hash at once); the chunk buffers come back through a small pool, which bounds memory to a
//! few chunks however large the tree. A file's record (type, mode, owner, xattrs, size, content
//! hash) lands in a numbered slot; the digest walks every path in name order with its record,
//! so it depends on neither input order nor image layout.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use crate::attributes::Attributes;

/// Chunk buffers in circulation per hashing thread (plus two for the writer).
const POOL_PER_THREAD: usize = 2;
/// Most hashing threads, whatever the core count.
const MAX_THREADS: usize = 4;
/// Files up to this size are hashed by the writer itself: handing them to a thread costs more
/// (a wake-up per file) than hashing them.
const INLINE_MAX: u64 = 256 * 1024;

pub use crashcart_layout::DIGEST_SCHEME;

/// The block size of the content hash (fixed by [`DIGEST_SCHEME`], whatever the image's).
pub const HASH_BLOCK: usize = 4096;
/// Numbered blocks are collected up to about this many bytes per BLAKE3 update.
const STAGING: usize = 64 * 1024;

/// Whether a block (or the tail of one) is all zero bytes.
pub fn is_zero(block: &[u8]) -> bool {
    static ZERO: [u8; HASH_BLOCK] = [0; HASH_BLOCK];
    // A comparison with a zero block compiles to memcmp, the fastest scan available.
    block.chunks(HASH_BLOCK).all(|b| b == &ZERO[..b.len()])
}

/// The content hash of one file ([`DIGEST_SCHEME`]), fed its data in file order; what lies
/// between the pieces it is given is zeros.
pub struct ContentHash {
    hasher: blake3::Hasher,
    /// Numbered blocks not hashed yet.
    staging: Vec<u8>,
    /// The bytes so far of block `partial_index`, when data ended inside it.
    partial: Vec<u8>,
    partial_index: u64,
}

impl Default for ContentHash {
    fn default() -> Self {
        ContentHash::new()
    }
}

impl ContentHash {
    /// An empty file's state.
    pub fn new() -> ContentHash {
        ContentHash {
            hasher: blake3::Hasher::new(),
            staging: Vec::with_capacity(STAGING + HASH_BLOCK + 8),
            partial: Vec::with_capacity(HASH_BLOCK),
            partial_index: 0,
        }
    }

    /// Adds `data`, the file's bytes at `offset` (after every byte given before).
    pub fn update(&mut self, mut offset: u64, mut data: &[u8]) {
        let hb = HASH_BLOCK as u64;
        while !data.is_empty() {
            let index = offset / hb;
            let within = (offset % hb) as usize;
            if !self.partial.is_empty() && index != self.partial_index {
                self.finish_partial();
            }
            if self.partial.is_empty() && within == 0 && data.len() >= HASH_BLOCK {
                let whole = data.len() / HASH_BLOCK * HASH_BLOCK;
                for (i, block) in data[..whole].chunks_exact(HASH_BLOCK).enumerate() {
                    self.block(index + i as u64, block);
                }
                offset += whole as u64;
                data = &data[whole..];
                continue;
            }
            // Part of a block: kept until the block is complete or the file moves past it.
            if self.partial.is_empty() {
                self.partial_index = index;
            }
            // Bytes skipped inside the block read as zeros.
            self.partial.resize(within, 0);
            let take = (HASH_BLOCK - within).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            offset += take as u64;
            data = &data[take..];
            if self.partial.len() == HASH_BLOCK {
                self.finish_partial();
            }
        }
    }

    fn finish_partial(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        let mut block = std::mem::take(&mut self.partial);
        block.resize(HASH_BLOCK, 0);
        self.block(self.partial_index, &block);
        block.clear();
        self.partial = block;
    }

    fn block(&mut self, index: u64, block: &[u8]) {
        if is_zero(block) {
            return;
        }
        self.staging.extend_from_slice(&index.to_le_bytes());
        self.staging.extend_from_slice(block);
        if self.staging.len() >= STAGING {
            self.hasher.update(&self.staging);
            self.staging.clear();
        }
    }

    /// The hash of a file of `size` bytes, everything given; the state is ready for the next.
    pub fn finish(&mut self, size: u64) -> [u8; 32] {
        self.finish_partial();
        self.staging.extend_from_slice(&size.to_le_bytes());
        self.hasher.update(&self.staging);
        self.staging.clear();
        let hash = self.hasher.finalize().into();
        self.hasher.reset();
        hash
    }
}

/// A file's record: ready, or being computed in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// Computed.
    Ready([u8; 32]),
    /// Computed by the hashing thread into this slot.
    Slot(usize),
}

enum Msg {
    /// Bytes of the current file starting at file offset `offset`; `buf[..len]` counts.
    Data {
        offset: u64,
        buf: Vec<u8>,
        len: usize,
    },
    /// The current file is complete: finish its record into `slot`.
    End {
        slot: usize,
        kind: u8,
        attrs: Attributes,
        size: u64,
    },
    /// Send every finished slot so far.
    Report(Sender<Vec<(usize, [u8; 32])>>),
}

/// The hashing threads and the pool of chunk buffers.
pub struct ContentHasher {
    workers: Vec<(SyncSender<Msg>, JoinHandle<()>)>,
    pool: Receiver<Vec<u8>>,
    /// Buffers the writer holds between small files (taken from the pool, so still bounded).
    spare: Vec<Vec<u8>>,
    /// The current file is small and hashed here: its state and bytes hashed so far.
    inline: Option<ContentHash>,
    /// Slot of the file being written; it also picks the thread (slot modulo threads).
    next_slot: usize,
    slots: Vec<Option<[u8; 32]>>,
}

impl ContentHasher {
    /// Starts one thread per core (at most `MAX_THREADS`) with buffers of `chunk` bytes.
    pub fn start(chunk: usize) -> ContentHasher {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, MAX_THREADS);
        let (pool_tx, pool) = mpsc::channel();
        for _ in 0..2 + POOL_PER_THREAD * threads {
            pool_tx
                .send(Vec::with_capacity(chunk))
                .expect("pool receiver alive");
        }
        let workers = (0..threads)
            .map(|i| {
                let (tx, rx) = mpsc::sync_channel::<Msg>(POOL_PER_THREAD * 2);
                let pool_tx = pool_tx.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("content-digest-{i}"))
                    .spawn(move || hash_loop(rx, pool_tx))
                    .expect("spawn a digest thread");
                (tx, thread)
            })
            .collect();
        ContentHasher {
            workers,
            pool,
            spare: Vec::new(),
            inline: None,
            next_slot: 0,
            slots: Vec::new(),
        }
    }

    /// An empty buffer from the pool (waits while all are being hashed).
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = match self.spare.pop() {
            Some(b) => b,
            None => self.pool.recv().expect("digest thread alive"),
        };
        b.clear();
        b
    }

    /// Starts a file of `size` bytes: small ones are hashed on the calling thread.
    pub fn begin(&mut self, size: u64) {
        self.inline = (size <= INLINE_MAX).then(ContentHash::new);
    }

    /// Hands `buf[..len]`, the bytes of the current file at `offset`, to the thread. Chunks
    /// come in file order; what lies between them is a hole.
    pub fn data(&mut self, offset: u64, buf: Vec<u8>, len: usize) {
        match &mut self.inline {
            Some(hash) => {
                hash.update(offset, &buf[..len]);
                self.spare.push(buf);
            }
            None => self.send(Msg::Data { offset, buf, len }),
        }
    }

    /// Ends the current file; its record is ready or will be in the returned slot.
    pub fn end(&mut self, kind: u8, attrs: &Attributes, size: u64) -> Record {
        if let Some(mut hash) = self.inline.take() {
            return Record::Ready(entry_record(kind, attrs, size, &hash.finish(size)));
        }
        let slot = self.next_slot;
        self.send(Msg::End {
            slot,
            kind,
            attrs: attrs.clone(),
            size,
        });
        // The next file goes to the next thread.
        self.next_slot += 1;
        Record::Slot(slot)
    }

    /// Sends to the thread of the current file.
    fn send(&mut self, msg: Msg) {
        let worker = self.next_slot % self.workers.len();
        self.workers[worker]
            .0
            .send(msg)
            .expect("digest thread alive");
    }

    /// The value of `record`, waiting for the thread when it is still being computed.
    pub fn resolve(&mut self, record: Record) -> [u8; 32] {
        match record {
            Record::Ready(r) => r,
            Record::Slot(s) => {
                if self.slots.get(s).copied().flatten().is_none() {
                    let replies: Vec<_> = self
                        .workers
                        .iter()
                        .map(|(tx, _)| {
                            let (reply, rx) = mpsc::channel();
                            tx.send(Msg::Report(reply)).expect("digest thread alive");
                            rx
                        })
                        .collect();
                    for rx in replies {
                        for (slot, value) in rx.recv().expect("digest thread alive") {
                            if self.slots.len() <= slot {
                                self.slots.resize(slot + 1, None);
                            }
                            self.slots[slot] = Some(value);
                        }
                    }
                }
                self.slots[s].expect("slot finished before it is resolved")
            }
        }
    }
}

impl Drop for ContentHasher {
    fn drop(&mut self) {
        for (tx, thread) in self.workers.drain(..) {
            drop(tx);
            let _ = thread.join();
        }
    }
}

fn hash_loop(rx: Receiver<Msg>, pool: Sender<Vec<u8>>) {
    let mut content = ContentHash::new();
    let mut finished: Vec<(usize, [u8; 32])> = Vec::new();
    for msg in rx {
        match msg {
            Msg::Data { offset, buf, len } => {
                content.update(offset, &buf[..len]);
                // The writer may be gone (error path); then the buffer is simply dropped.
                let _ = pool.send(buf);
            }
            Msg::End {
                slot,
                kind,
                attrs,
                size,
            } => {
                let hash = content.finish(size);
                finished.push((slot, entry_record(kind, &attrs, size, &hash)));
            }
            Msg::Report(reply) => {
                let _ = reply.send(std::mem::take(&mut finished));
            }
        }
    }
}

/// What the digest records about one entry.
pub fn entry_record(kind: u8, attrs: &Attributes, size: u64, content: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[kind]);
    h.update(&attrs.perm.to_le_bytes());
    h.update(&attrs.uid.to_le_bytes());
    h.update(&attrs.gid.to_le_bytes());
    h.update(&size.to_le_bytes());
    for (k, v) in &attrs.xattrs {
        h.update(&(k.len() as u64).to_le_bytes());
        h.update(k);
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    }
    h.update(content);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheme as README states it, over a file's whole contents.
    fn spec(file: &[u8]) -> [u8; 32] {
        let mut input = Vec::new();
        for (i, block) in file.chunks(HASH_BLOCK).enumerate() {
            let mut block = block.to_vec();
            block.resize(HASH_BLOCK, 0);
            if block.iter().any(|&b| b != 0) {
                input.extend_from_slice(&(i as u64).to_le_bytes());
                input.extend_from_slice(&block);
            }
        }
        input.extend_from_slice(&(file.len() as u64).to_le_bytes());
        blake3::hash(&input).into()
    }

    /// The record of a file given as (offset, bytes) pieces, through the hasher.
    fn record_of_pieces(size: u64, pieces: &[(u64, &[u8])]) -> [u8; 32] {
        let mut h = ContentHasher::start(1 << 20);
        h.begin(size);
        for (offset, c) in pieces {
            let mut b = h.buffer();
            b.extend_from_slice(c);
            h.data(*offset, b, c.len());
        }
        let r = h.end(b'f', &Attributes::default(), size);
        h.resolve(r)
    }

    fn record_of(chunks: &[&[u8]]) -> [u8; 32] {
        let mut offset = 0;
        let mut pieces = Vec::new();
        for c in chunks {
            pieces.push((offset, *c));
            offset += c.len() as u64;
        }
        record_of_pieces(offset, &pieces)
    }

    fn want(file: &[u8]) -> [u8; 32] {
        entry_record(b'f', &Attributes::default(), file.len() as u64, &spec(file))
    }

    fn noise(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8 | 1).collect()
    }

    #[test]
    fn large_files_hash_on_threads_like_small_ones_inline_and_as_specified() {
        let data = noise(INLINE_MAX as usize + 4096 + 17);
        assert_eq!(
            record_of(&[&data[..100_000], &data[100_000..]]),
            want(&data)
        );
        assert_eq!(record_of(&[&data[..1000]]), want(&data[..1000]));
        assert_eq!(record_of(&[]), want(&[]));
    }

    #[test]
    fn empty_and_known_answers() {
        // An empty file: only its size.
        assert_eq!(spec(&[]), *blake3::hash(&0u64.to_le_bytes()).as_bytes());
        let mut h = ContentHash::new();
        assert_eq!(h.finish(0), spec(&[]));
        // "a": block 0, padded, then the size 1.
        let mut input = 0u64.to_le_bytes().to_vec();
        input.push(b'a');
        input.resize(8 + HASH_BLOCK, 0);
        input.extend_from_slice(&1u64.to_le_bytes());
        h.update(0, b"a");
        assert_eq!(h.finish(1), *blake3::hash(&input).as_bytes());
    }

    #[test]
    fn matches_the_readme_recipe() {
        // Values printed by README's Python recipe (the `blake3` package from PyPI): a file of
        // 13,288 bytes `i % 251 + 1` with bytes 4096..8192 zeroed, and 1 MiB of zeros.
        let mut file: Vec<u8> = (0..3 * 4096 + 1000).map(|i| (i % 251) as u8 + 1).collect();
        file[4096..8192].fill(0);
        let hex = |h: [u8; 32]| blake3::Hash::from(h).to_hex().to_string();
        assert_eq!(
            hex(spec(&file)),
            "493762238eec07902ed2d2bed9f3cbf98e1d9817caff5583719977aaed7a56a5"
        );
        let mut h = ContentHash::new();
        h.update(0, &file[..4096]);
        h.update(8192, &file[8192..]);
        assert_eq!(hex(h.finish(file.len() as u64)), hex(spec(&file)));
        assert_eq!(
            hex(h.finish(1 << 20)),
            "ea5ec10034ca504a53672fc603f3b23ce6c2aa982d201072f3a35387dbfb6f42"
        );
    }

    #[test]
    fn chunking_does_not_change_the_record() {
        let data = noise(3 * 4096 + 100);
        let whole = record_of(&[&data]);
        assert_eq!(whole, record_of(&[&data[..4096], &data[4096..]]));
        assert_eq!(
            whole,
            record_of(&[&data[..5], &data[5..9000], &data[9000..]])
        );
        assert_eq!(whole, want(&data));
    }

    #[test]
    fn holes_and_zero_blocks_hash_alike() {
        let data = noise(5 * 4096 + 10);
        let mut full = data.clone();
        full[4096..3 * 4096].fill(0);
        // The same file: dense with explicit zeros, with a hole, and with the zeros in a piece.
        let dense = record_of(&[&full]);
        let sparse = record_of_pieces(
            full.len() as u64,
            &[(0, &full[..4096]), (3 * 4096, &full[3 * 4096..])],
        );
        let zeros = [0u8; 2 * 4096];
        let explicit = record_of_pieces(
            full.len() as u64,
            &[
                (0, &full[..4096]),
                (4096, &zeros),
                (3 * 4096, &full[3 * 4096..]),
            ],
        );
        assert_eq!(dense, sparse);
        assert_eq!(dense, explicit);
        assert_eq!(dense, want(&full));
        assert_ne!(dense, want(&data), "the zeros count");
        // Trailing holes count through the size.
        let mut longer = full.clone();
        longer.resize(full.len() + 4096 * 1000, 0);
        let tail = record_of_pieces(longer.len() as u64, &[(0, &full)]);
        assert_eq!(tail, want(&longer));
        assert_ne!(tail, dense);
    }

    #[test]
    fn a_huge_sparse_file_hashes_its_data_only() {
        // 1 TiB with 4 KiB of data at the end: the hash needs only that block and the size.
        let size = 1u64 << 40;
        let block = noise(4096);
        let got = record_of_pieces(size, &[(size - 4096, &block)]);
        let mut input = ((size - 4096) / 4096).to_le_bytes().to_vec();
        input.extend_from_slice(&block);
        input.extend_from_slice(&size.to_le_bytes());
        let content = blake3::hash(&input);
        assert_eq!(
            got,
            entry_record(b'f', &Attributes::default(), size, content.as_bytes())
        );
    }

    #[test]
    fn many_files_resolve_in_any_order() {
        let mut h = ContentHasher::start(4096);
        let mut records = Vec::new();
        for i in 0..20u8 {
            h.begin(1);
            let mut b = h.buffer();
            b.push(i + 1);
            h.data(0, b, 1);
            records.push(h.end(b'f', &Attributes::default(), 1));
        }
        let last = h.resolve(records[19]);
        let first = h.resolve(records[0]);
        assert_ne!(first, last);
    }
}
