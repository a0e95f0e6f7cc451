//! The content digest, computed on hashing threads while the main thread writes.
//!
//! BLAKE3 rather than SHA-256: SHA-256 of every byte cost more CPU than copying it into the
//! image (with SHA-NI), BLAKE3 a quarter of that. Still, the writer hands each chunk it has
//! written to a hashing thread and carries on with the next; files up to `INLINE_MAX` it
//! hashes itself. A file's content hash is the BLAKE3 of its bytes (holes read as zeros: what
//! `b3sum` prints for the file), whatever the input made sparse.
//! Files go to the threads in turn (one per core, at most `MAX_THREADS`, so several files
//! hash at once); the chunk buffers come back through a small pool, which bounds memory to a
//! few chunks however large the tree. A file's record (type, mode, owner, xattrs, size, BLAKE3
//! of its contents) lands in a numbered slot; the digest walks every path in name order with
//! its record, so it depends on neither input order nor image layout.

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
    inline: Option<(blake3::Hasher, u64)>,
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
        self.inline = (size <= INLINE_MAX).then(|| (blake3::Hasher::new(), 0));
    }

    /// Hands `buf[..len]`, the bytes of the current file at `offset`, to the thread. Chunks
    /// come in file order; what lies between them is a hole.
    pub fn data(&mut self, offset: u64, buf: Vec<u8>, len: usize) {
        match &mut self.inline {
            Some((hasher, hashed)) => {
                if len > 0 {
                    hash_zeros(hasher, offset.saturating_sub(*hashed));
                    hasher.update(&buf[..len]);
                    *hashed = offset + len as u64;
                }
                self.spare.push(buf);
            }
            None => self.send(Msg::Data { offset, buf, len }),
        }
    }

    /// Ends the current file; its record is ready or will be in the returned slot.
    pub fn end(&mut self, kind: u8, attrs: &Attributes, size: u64) -> Record {
        if let Some((mut hasher, hashed)) = self.inline.take() {
            hash_zeros(&mut hasher, size.saturating_sub(hashed));
            return Record::Ready(entry_record(
                kind,
                attrs,
                size,
                hasher.finalize().as_bytes(),
            ));
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

/// Feeds `n` zero bytes (a hole) to `hasher`.
fn hash_zeros(hasher: &mut blake3::Hasher, mut n: u64) {
    static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
    while n > 0 {
        let step = n.min(ZEROS.len() as u64) as usize;
        hasher.update(&ZEROS[..step]);
        n -= step as u64;
    }
}

fn hash_loop(rx: Receiver<Msg>, pool: Sender<Vec<u8>>) {
    let mut content = blake3::Hasher::new();
    // Bytes of the current file hashed so far; a gap before the next chunk is a hole.
    let mut hashed: u64 = 0;
    let mut finished: Vec<(usize, [u8; 32])> = Vec::new();
    for msg in rx {
        match msg {
            Msg::Data { offset, buf, len } => {
                if len > 0 {
                    hash_zeros(&mut content, offset.saturating_sub(hashed));
                    // One large update per chunk lets BLAKE3 hash its 1 KiB chunks in parallel
                    // SIMD lanes.
                    content.update(&buf[..len]);
                    hashed = offset + len as u64;
                }
                // The writer may be gone (error path); then the buffer is simply dropped.
                let _ = pool.send(buf);
            }
            Msg::End {
                slot,
                kind,
                attrs,
                size,
            } => {
                hash_zeros(&mut content, size.saturating_sub(hashed));
                let hash = content.finalize();
                content.reset();
                hashed = 0;
                finished.push((slot, entry_record(kind, &attrs, size, hash.as_bytes())));
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

    fn record_of(chunks: &[&[u8]]) -> [u8; 32] {
        let mut h = ContentHasher::start(8192);
        let total: usize = chunks.iter().map(|c| c.len()).sum();
        h.begin(total as u64);
        let mut offset = 0;
        for c in chunks {
            let mut b = h.buffer();
            b.extend_from_slice(c);
            h.data(offset, b, c.len());
            offset += c.len() as u64;
        }
        let r = h.end(b'f', &Attributes::default(), offset);
        h.resolve(r)
    }

    #[test]
    fn large_files_hash_on_threads_like_small_ones_inline() {
        let data: Vec<u8> = (0..INLINE_MAX as usize + 4096)
            .map(|i| (i % 253) as u8)
            .collect();
        let threaded = record_of(&[&data[..100_000], &data[100_000..]]);
        let want = entry_record(
            b'f',
            &Attributes::default(),
            data.len() as u64,
            blake3::hash(&data).as_bytes(),
        );
        assert_eq!(threaded, want);
        assert_eq!(
            record_of(&[&data[..1000]]),
            entry_record(
                b'f',
                &Attributes::default(),
                1000,
                blake3::hash(&data[..1000]).as_bytes()
            )
        );
    }

    #[test]
    fn chunking_does_not_change_the_record() {
        let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
        let whole = record_of(&[&data]);
        let split = record_of(&[&data[..4096], &data[4096..]]);
        assert_eq!(whole, split);
    }

    #[test]
    fn holes_hash_as_zeros() {
        let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8 | 1).collect();
        let mut full = data.clone();
        full[4096..8192].fill(0);
        let mut h = ContentHasher::start(8192);
        h.begin(full.len() as u64);
        for (offset, part) in [(0u64, &data[..4096]), (8192, &data[8192..])] {
            let mut b = h.buffer();
            b.extend_from_slice(part);
            h.data(offset, b, part.len());
        }
        let r = h.end(b'f', &Attributes::default(), full.len() as u64);
        let sparse = h.resolve(r);
        assert_eq!(sparse, record_of(&[&full]), "a hole is its zeros");
        let want = entry_record(
            b'f',
            &Attributes::default(),
            full.len() as u64,
            blake3::hash(&full).as_bytes(),
        );
        assert_eq!(sparse, want, "the content part is the file's BLAKE3");
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
