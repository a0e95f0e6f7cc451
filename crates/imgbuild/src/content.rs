//! Where a regular file's bytes come from: an open file (its holes found with `SEEK_DATA`
//! and never read), a stream of announced length (a tar member), a stream with a map of its
//! data (a GNU sparse tar member: the holes skipped, not read as zeros), or bytes the builder
//! made.
//! An input shorter than it said is an error naming it, never a file padded with zeros.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::ext2::BLOCK_SIZE;

/// Why an input's bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Reading an input file failed.
    #[error("cannot read {}", path.display())]
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
}

/// Where a regular file's bytes come from.
pub enum Content<'a> {
    /// An open file: holes are skipped without reading them.
    File(&'a File),
    /// A stream of exactly `size` bytes (a tar member).
    Stream(&'a mut dyn Read),
    /// A file of `size` bytes read in order from a stream that knows where its data lies.
    Mapped(&'a mut dyn Mapped),
    /// Bytes the builder generated.
    Bytes(&'a [u8]),
}

/// A file read in order whose data lies in known chunks, zeros elsewhere (a GNU sparse tar
/// member).
pub trait Mapped: Read {
    /// The data chunks, offset and length, in order.
    fn chunks(&self) -> &[(u64, u64)];
    /// Moves on to file offset `to` without reading: everything before it is hole.
    fn skip_hole(&mut self, to: u64) -> std::io::Result<()>;
}

impl Content<'_> {
    /// The block-aligned ranges of a file of `size` bytes (at `path`, for messages) that hold
    /// data, in order: all of it unless an open file has holes.
    pub fn data_segments(&self, size: u64, path: &Path) -> Result<Vec<(u64, u64)>, ContentError> {
        match self {
            Content::File(f) => data_segments(f, size, path),
            Content::Mapped(m) => Ok(mapped_segments(m.chunks(), size)),
            _ => Ok(vec![(0, size)]),
        }
    }

    /// Reads exactly `buf.len()` bytes at `pos` of an input of `size` bytes.
    pub fn fill(
        &mut self,
        buf: &mut [u8],
        pos: u64,
        path: &Path,
        size: u64,
    ) -> Result<(), ContentError> {
        match self {
            Content::File(f) => read_full(buf, pos, path, size, |chunk, at| f.read_at(chunk, at)),
            Content::Stream(r) => read_full(buf, pos, path, size, |chunk, _| r.read(chunk)),
            Content::Mapped(m) => {
                m.skip_hole(pos).map_err(|source| ContentError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                read_full(buf, pos, path, size, |chunk, _| m.read(chunk))
            }
            Content::Bytes(b) => {
                buf.copy_from_slice(&b[pos as usize..pos as usize + buf.len()]);
                Ok(())
            }
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
) -> Result<(), ContentError> {
    let mut done = 0;
    while done < buf.len() {
        let at = pos + done as u64;
        let n = read(&mut buf[done..], at).map_err(|source| ContentError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            return Err(ContentError::ShortInput {
                path: path.to_path_buf(),
                got: at,
                want: size,
            });
        }
        done += n;
    }
    Ok(())
}

/// The block-aligned ranges of a file of `size` bytes holding `chunks` (offset, length).
fn mapped_segments(chunks: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let bs = u64::from(BLOCK_SIZE);
    let mut segments: Vec<(u64, u64)> = Vec::new();
    for &(offset, len) in chunks.iter().filter(|c| c.1 > 0) {
        let a = offset / bs * bs;
        let b = (offset + len).next_multiple_of(bs).min(size);
        match segments.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => segments.push((a, b)),
        }
    }
    segments
}

/// The block-aligned ranges of `f` that hold data (everything when the file is not sparse).
fn data_segments(f: &File, size: u64, path: &Path) -> Result<Vec<(u64, u64)>, ContentError> {
    use std::os::unix::fs::MetadataExt;
    let bs = u64::from(BLOCK_SIZE);
    let meta = f.metadata().map_err(|source| ContentError::Read {
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
    fn mapped_chunks_become_block_aligned_segments() {
        let bs = u64::from(BLOCK_SIZE);
        assert_eq!(
            mapped_segments(&[(10, 5), (100, 0), (bs + 1, 2), (10 * bs, 3)], 10 * bs + 3),
            vec![(0, 2 * bs), (10 * bs, 10 * bs + 3)]
        );
        assert!(mapped_segments(&[(5, 0)], 1 << 40).is_empty());
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
}
