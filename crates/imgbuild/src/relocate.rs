//! `--relocate FROM=TO`: rewrite a store directory to an equal-length one in file contents and
//! symlink targets while they are written.
//!
//! Because FROM and TO have the same length every offset stays where it was: ELF tables,
//! string lengths and checksums-by-position are untouched, only the bytes of the path change.
//! Contents arrive in chunks, so a match may span two of them; [`Rewriter`] holds back the
//! last `len(FROM) - 1` bytes of each chunk until it has seen the next one.

use memchr::memmem::Finder;

use crashcart_layout::Relocation;

/// Replaces every occurrence of FROM in `bytes` (a complete value, e.g. a symlink target).
pub fn apply(relocation: &Relocation, bytes: &mut [u8]) {
    let finder = Finder::new(relocation.from.as_bytes());
    replace_all(&finder, relocation.to.as_bytes(), bytes);
}

/// Replaces matches left to right, without overlaps; returns where the last match ended.
fn replace_all(finder: &Finder<'_>, to: &[u8], bytes: &mut [u8]) -> usize {
    let n = to.len();
    let mut pos = 0;
    let mut last_end = 0;
    while let Some(i) = finder.find(&bytes[pos..]) {
        let at = pos + i;
        bytes[at..at + n].copy_from_slice(to);
        pos = at + n;
        last_end = pos;
    }
    last_end
}

/// Streaming replacement over a file's chunks.
pub struct Rewriter<'a> {
    finder: Finder<'a>,
    to: &'a [u8],
    /// Whether any occurrence was replaced so far.
    matched: std::cell::Cell<bool>,
}

impl<'a> Rewriter<'a> {
    /// A rewriter for `relocation`.
    pub fn new(relocation: &'a Relocation) -> Rewriter<'a> {
        Rewriter {
            finder: Finder::new(relocation.from.as_bytes()),
            to: relocation.to.as_bytes(),
            matched: std::cell::Cell::new(false),
        }
    }

    /// Whether any call replaced something (the file's contents changed).
    pub fn matched(&self) -> bool {
        self.matched.get()
    }

    /// Rewrites `buf` in place, where `buf` holds the carry of the previous call followed by
    /// new bytes. Returns how many leading bytes are final; the rest (fewer than `len(FROM)`
    /// bytes) must be carried to the front of the next call, or are final at end of file.
    ///
    /// `settled` leading bytes of `buf` were returned final by the previous call but carried
    /// anyway (the writer drains whole blocks only): they are not searched again, because a
    /// replacement followed by new bytes may spell FROM once more.
    pub fn rewrite(&self, buf: &mut [u8], settled: usize) -> usize {
        let ended = replace_all(&self.finder, self.to, &mut buf[settled..]);
        if ended > 0 {
            self.matched.set(true);
        }
        let last_end = settled + ended;
        let hold = self.to.len() - 1;
        buf.len().saturating_sub(hold).max(last_end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reloc() -> Relocation {
        Relocation::new("/nix/store", "/dev/.cart").unwrap()
    }

    /// Feeds `input` to a rewriter in chunks of `size`, the way the writer does.
    fn stream(input: &[u8], size: usize) -> Vec<u8> {
        let r = reloc();
        let rw = Rewriter::new(&r);
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for chunk in input.chunks(size) {
            buf.extend_from_slice(chunk);
            let done = rw.rewrite(&mut buf, 0);
            out.extend_from_slice(&buf[..done]);
            buf.drain(..done);
        }
        out.extend_from_slice(&buf);
        out
    }

    #[test]
    fn matches_across_every_chunk_boundary_are_replaced() {
        let input = b"xx/nix/store/abc-bash/bin/bash\0/nix/store/def\0tail/nix/stor".to_vec();
        let want = b"xx/dev/.cart/abc-bash/bin/bash\0/dev/.cart/def\0tail/nix/stor".to_vec();
        for size in 1..=input.len() {
            assert_eq!(stream(&input, size), want, "chunk size {size}");
        }
    }

    #[test]
    fn replacement_is_not_rescanned() {
        // After "/q/x" became "/x/q", "/q/x" appears across the replacement and the rest; it
        // is not an occurrence of the input and must stay.
        let r = Relocation::new("/q/x", "/x/q").unwrap();
        let mut v = b"/q/x/x".to_vec();
        apply(&r, &mut v);
        assert_eq!(v, b"/x/q/x");
        for size in 1..=6 {
            let rw = Rewriter::new(&r);
            let mut out = Vec::new();
            let mut buf = Vec::new();
            for chunk in b"/q/x/x".chunks(size) {
                buf.extend_from_slice(chunk);
                let done = rw.rewrite(&mut buf, 0);
                out.extend_from_slice(&buf[..done]);
                buf.drain(..done);
            }
            out.extend_from_slice(&buf);
            assert_eq!(out, b"/x/q/x", "chunk size {size}");
        }
    }

    #[test]
    fn settled_bytes_are_not_searched_again() {
        // "/q/x" became "/x/q"; the writer carried it (block rounding) and the next bytes are
        // "/x": "/x/q/x" holds "/q/x" at 2, which is not an occurrence of the input.
        let r = Relocation::new("/q/x", "/x/q").unwrap();
        let rw = Rewriter::new(&r);
        let mut buf = b"/q/x".to_vec();
        let done = rw.rewrite(&mut buf, 0);
        assert_eq!((done, buf.as_slice()), (4, b"/x/q".as_slice()));
        buf.extend_from_slice(b"/x");
        rw.rewrite(&mut buf, done);
        assert_eq!(buf, b"/x/q/x");
    }

    #[test]
    fn symlink_target_is_rewritten() {
        let mut t = b"/nix/store/x-coreutils/bin/ls".to_vec();
        apply(&reloc(), &mut t);
        assert_eq!(t, b"/dev/.cart/x-coreutils/bin/ls");
    }
}
