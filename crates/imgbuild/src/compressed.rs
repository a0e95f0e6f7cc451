//! Compressed files of a relocated input (gzip, xz, zip): `--relocate` rewrites the store
//! directory in a file's bytes, and inside a compressed file those bytes are not the text a
//! program will read. Such a file still names the old store once unpacked (and a zip member
//! stored uncompressed has been rewritten behind its checksum's back). The writer looks inside
//! the compressed files it wrote and the build warns about those naming the store.

use std::fs::File;
use std::io::{BufReader, Read, Seek, Write};

use memchr::memmem::Finder;

/// Bytes unpacked from one file before giving up looking (a bound on the time spent on a
/// huge or hostile archive; the warning is advice, never a failure).
const MAX_UNPACKED: u64 = 256 << 20;

/// A compression format recognised by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `1f 8b`.
    Gzip,
    /// `fd 37 7a 58 5a 00`.
    Xz,
    /// `PK 03 04`.
    Zip,
}

/// The format of a file starting with `head`, if compressed.
pub fn format(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Format::Gzip)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Format::Xz)
    } else if head.starts_with(b"PK\x03\x04") {
        Some(Format::Zip)
    } else {
        None
    }
}

/// Whether the unpacked contents of `file` (in `format`) hold `needle`. A file that does not
/// unpack cleanly counts for what was unpacked before the error.
pub fn holds(file: &File, format: Format, needle: &[u8]) -> bool {
    let Ok(mut file) = file.try_clone() else {
        return false;
    };
    if file.rewind().is_err() {
        return false;
    }
    let mut search = Search::new(needle);
    match format {
        Format::Gzip => {
            let mut decoder = flate2::read::MultiGzDecoder::new(BufReader::new(file));
            let _ = std::io::copy(&mut (&mut decoder).take(MAX_UNPACKED), &mut search);
        }
        Format::Xz => {
            let mut input = BufReader::new(file);
            let _ = lzma_rs::xz_decompress(&mut input, &mut search);
        }
        Format::Zip => {
            let Ok(mut archive) = zip::ZipArchive::new(BufReader::new(file)) else {
                return false;
            };
            for index in 0..archive.len() {
                if search.found || search.seen >= MAX_UNPACKED {
                    break;
                }
                if let Ok(member) = archive.by_index(index) {
                    let mut member = member.take(MAX_UNPACKED);
                    search.carry.clear();
                    let _ = std::io::copy(&mut member, &mut search);
                }
            }
        }
    }
    search.found
}

/// A sink that looks for `needle` across the chunks written to it, and refuses more bytes
/// once found or once [`MAX_UNPACKED`] were seen (which stops the unpacking).
struct Search<'a> {
    finder: Finder<'a>,
    /// The last `needle.len() - 1` bytes seen, which a match may start in.
    carry: Vec<u8>,
    found: bool,
    seen: u64,
}

impl<'a> Search<'a> {
    fn new(needle: &'a [u8]) -> Search<'a> {
        Search {
            finder: Finder::new(needle),
            carry: Vec::new(),
            found: false,
            seen: 0,
        }
    }
}

impl Write for Search<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.found || self.seen >= MAX_UNPACKED {
            return Err(std::io::Error::other("search over"));
        }
        self.seen += buf.len() as u64;
        let keep = self.finder.needle().len().saturating_sub(1);
        self.carry.extend_from_slice(buf);
        if self.finder.find(&self.carry).is_some() {
            self.found = true;
        }
        let drop = self.carry.len().saturating_sub(keep);
        self.carry.drain(..drop);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn formats_by_magic() {
        assert_eq!(format(&gzip(b"x")), Some(Format::Gzip));
        assert_eq!(format(b"\xfd7zXZ\0rest"), Some(Format::Xz));
        assert_eq!(format(b"PK\x03\x04rest"), Some(Format::Zip));
        assert_eq!(format(b"\x7fELF"), None);
    }

    #[test]
    fn a_store_path_inside_gzip_is_found_across_chunks() {
        let mut data = vec![b'a'; 100_000];
        data.extend_from_slice(b"/nix/store/abc-hello/bin/hello");
        let f = file_with(&gzip(&data));
        assert!(holds(&f, Format::Gzip, b"/nix/store"));
        let f = file_with(&gzip(b"no store here"));
        assert!(!holds(&f, Format::Gzip, b"/nix/store"));
        // Split across two writes.
        let mut s = Search::new(b"/nix/store");
        s.write_all(b"xx/nix/s").unwrap();
        s.write_all(b"tore").unwrap();
        assert!(s.found);
    }

    #[test]
    fn xz_and_zip_members_are_looked_into() {
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &b"see /nix/store/x-y"[..], &mut xz).unwrap();
        assert!(holds(&file_with(&xz), Format::Xz, b"/nix/store"));

        let mut zip_bytes = std::io::Cursor::new(Vec::new());
        {
            let mut w = zip::ZipWriter::new(&mut zip_bytes);
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            w.start_file("a.txt", options).unwrap();
            w.write_all(b"nothing").unwrap();
            w.start_file("b.txt", options).unwrap();
            w.write_all(b"path /nix/store/q-r").unwrap();
            w.finish().unwrap();
        }
        let bytes = zip_bytes.into_inner();
        assert!(holds(&file_with(&bytes), Format::Zip, b"/nix/store"));
        assert!(!holds(&file_with(&bytes), Format::Zip, b"/gnu/store"));
    }

    #[test]
    fn every_chunking_finds_what_the_whole_holds() {
        let needle = b"/nix/store";
        for text in [
            &b"xx/nix/store/a"[..],
            b"/nix/stor/nix/store",
            b"/nix/stor e/nix/stor",
            b"/nix/store",
        ] {
            let whole = Finder::new(needle).find(text).is_some();
            for size in 1..=text.len() {
                let mut search = Search::new(needle);
                for chunk in text.chunks(size) {
                    // Refused once found: that stops the unpacking.
                    if search.write_all(chunk).is_err() {
                        break;
                    }
                }
                assert_eq!(
                    search.found,
                    whole,
                    "{:?} in chunks of {size}",
                    String::from_utf8_lossy(text)
                );
            }
        }
    }

    #[test]
    fn garbage_after_the_magic_is_not_a_match() {
        assert!(!holds(
            &file_with(b"\x1f\x8bgarbage /nix/store"),
            Format::Gzip,
            b"/nix/store"
        ));
        assert!(!holds(
            &file_with(b"PK\x03\x04/nix/store"),
            Format::Zip,
            b"/nix/store"
        ));
    }
}
