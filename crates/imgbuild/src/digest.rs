//! The content digest, computed on a second thread while the main thread writes.
//!
//! Hashing every byte with SHA-256 costs more CPU than copying it into the image, so the
//! writer hands each chunk it has written to a hashing thread and carries on with the next.
//! Files go to the threads in turn (one per core, so two files hash at once on two cores); the
//! chunk buffers come back through a small pool, which bounds memory to a few chunks however
//! large the tree. A file's record (type, mode, owner, xattrs, size, SHA-256 of its non-zero
//! blocks and their positions) lands in a numbered slot; the digest sorts every path with its
//! record and hashes the list, so it depends on neither input order nor image layout.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use crate::ext2::BLOCK_SIZE;
use crate::tree::Attributes;

/// Chunk buffers in circulation per hashing thread (plus two for the writer).
const POOL_PER_THREAD: usize = 2;
/// Most hashing threads, whatever the core count.
const MAX_THREADS: usize = 4;

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
    /// Slot of the file being written; it also picks the thread (slot modulo threads).
    next_slot: usize,
    slots: Vec<Option<[u8; 32]>>,
}

impl ContentHasher {
    /// Starts one thread per core (at most [`MAX_THREADS`]) with buffers of `chunk` bytes.
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
            next_slot: 0,
            slots: Vec::new(),
        }
    }

    /// An empty buffer from the pool (waits while all are being hashed).
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.pool.recv().expect("digest thread alive");
        b.clear();
        b
    }

    /// Hands `buf[..len]`, the bytes of the current file at `offset`, to the thread.
    pub fn data(&mut self, offset: u64, buf: Vec<u8>, len: usize) {
        self.send(Msg::Data { offset, buf, len });
    }

    /// Ends the current file; its record will be in the returned slot.
    pub fn end(&mut self, kind: u8, attrs: &Attributes, size: u64) -> Record {
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
    let bs = BLOCK_SIZE as usize;
    let mut content = Sha256::new();
    let mut finished: Vec<(usize, [u8; 32])> = Vec::new();
    for msg in rx {
        match msg {
            Msg::Data { offset, buf, len } => {
                let first = offset / bs as u64;
                for (i, block) in buf[..len].chunks(bs).enumerate() {
                    if !crate::image::is_zero(block) {
                        content.update((first + i as u64).to_le_bytes());
                        content.update(block);
                    }
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
                let hash = content.finalize_reset();
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
    let mut h = Sha256::new();
    h.update([kind]);
    h.update(attrs.perm.to_le_bytes());
    h.update(attrs.uid.to_le_bytes());
    h.update(attrs.gid.to_le_bytes());
    h.update(size.to_le_bytes());
    for (k, v) in &attrs.xattrs {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k);
        h.update((v.len() as u64).to_le_bytes());
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
    fn chunking_does_not_change_the_record() {
        let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
        let whole = record_of(&[&data]);
        let split = record_of(&[&data[..4096], &data[4096..]]);
        assert_eq!(whole, split);
    }

    #[test]
    fn zero_blocks_count_by_position_only() {
        let mut a = vec![0u8; 2 * 4096];
        a[4096] = 1;
        let mut b = vec![0u8; 2 * 4096];
        b[0] = 1;
        assert_ne!(record_of(&[&a]), record_of(&[&b]), "positions matter");
    }

    #[test]
    fn many_files_resolve_in_any_order() {
        let mut h = ContentHasher::start(4096);
        let mut records = Vec::new();
        for i in 0..20u8 {
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
