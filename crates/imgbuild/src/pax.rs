//! PAX extended headers read by their length prefix, as POSIX defines them.
//!
//! A PAX record is `LEN key=value\n` with `LEN` counting the whole record, so a value may hold
//! newlines (a binary xattr value, a file name). The tar crate splits records at newlines
//! instead: it calls such a header malformed, and stops reading it, so a `size` record after
//! it would be lost. [`PaxRecoder`] sits between the (decompressed) stream and the tar crate:
//! it parses each local PAX header by length and re-encodes every record the crate would
//! misread as one it reads whole, `crashcart.hex.HEXKEY=HEXVALUE`; [`MemberPax`] decodes them
//! again. Everything else passes through byte for byte, streamed.
//!
//! GNU tar's PAX sparse formats (0.0, 0.1 and 1.0) are read here too, since the tar crate
//! hands them over as plain members of the stored data: [`Sparse`] holds the map and the real
//! name and size, [`SparseReader`] gives the file back with its holes, and lets the writer skip
//! them. An old GNU sparse member (`S`, `tar -S` in the default format) is rewritten into a
//! PAX 1.0 one on the way (its map moved into the data), so its holes are skipped too instead
//! of being read as zeros from the tar crate.

use std::io::{self, Read};

/// Key prefix of a record [`PaxRecoder`] re-encoded (also applied to input records that
/// happen to start with it, so that decoding is unambiguous).
const ESCAPED: &[u8] = b"crashcart.hex.";
const BLOCK: usize = 512;

/// A tar stream with its local PAX headers re-encoded for the tar crate.
pub struct PaxRecoder<R> {
    inner: R,
    /// Rewritten bytes to hand out before reading on.
    pending: Vec<u8>,
    at: usize,
    /// Bytes of the current member to copy through unread.
    copy: u64,
    /// A `size` record of the last PAX header: the next member's real size.
    pax_size: Option<u64>,
    /// Past the end-of-archive block, or a header this reader cannot follow: the tar crate
    /// sees the rest as it is and judges it.
    passthrough: bool,
    /// The last header was a local PAX header (it describes the next member).
    after_pax: bool,
}

impl<R: Read> PaxRecoder<R> {
    /// Recodes the tar stream `inner`.
    pub fn new(inner: R) -> PaxRecoder<R> {
        PaxRecoder {
            inner,
            pending: Vec::new(),
            at: 0,
            copy: 0,
            pax_size: None,
            passthrough: false,
            after_pax: false,
        }
    }

    /// Reads up to `len` bytes (fewer only at the end of the stream).
    fn read_up_to(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len.min(1 << 20));
        (&mut self.inner).take(len as u64).read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// Reads the next header and decides what follows it.
    fn next_header(&mut self) -> io::Result<()> {
        let header = self.read_up_to(BLOCK)?;
        self.at = 0;
        if header.len() < BLOCK || header.iter().all(|&b| b == 0) {
            self.passthrough = true;
            self.pending = header;
            return Ok(());
        }
        let Some(size) = field_size(&header) else {
            self.passthrough = true;
            self.pending = header;
            return Ok(());
        };
        let padded = size.next_multiple_of(BLOCK as u64);
        let after_pax = std::mem::replace(&mut self.after_pax, header[156] == b'x');
        match header[156] {
            b'x' => {
                let data = self.read_up_to(padded as usize)?;
                let records = &data[..(size as usize).min(data.len())];
                let complete = data.len() as u64 == padded;
                match complete.then(|| recode(records)).flatten() {
                    // A length that runs past the header, a record not ending in a newline or
                    // without `=`: GNU tar refuses these ("Malformed extended header"), and the
                    // tar crate would read some of them otherwise.
                    None if complete => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "malformed PAX extended header",
                        ))
                    }
                    Some((records, pax_size)) => {
                        self.pax_size = pax_size;
                        let mut header = header;
                        set_size(&mut header, records.len() as u64);
                        self.pending = header;
                        self.pending.extend_from_slice(&records);
                        let len = self.pending.len().next_multiple_of(BLOCK);
                        self.pending.resize(len, 0);
                    }
                    None => {
                        // Cut short: the tar crate reports the truncated archive.
                        self.passthrough = true;
                        self.pending = header;
                        self.pending.extend_from_slice(&data);
                    }
                }
            }
            // Global headers and GNU long names describe no data size of the next member.
            b'g' | b'L' | b'K' => {
                self.pending = header;
                self.copy = padded;
            }
            // An old GNU sparse member: extension blocks of its map (each flagging whether
            // another follows) come before the data and are not counted in its size.
            // Handed over as a PAX 1.0 sparse member of the same map and data, which the tar
            // crate passes through as stored, so the holes are skipped rather than read as
            // zeros; left as it is after a PAX header of its own (the crate keeps one only).
            b'S' => {
                let mut more = header[482] != 0;
                let mut extensions = Vec::new();
                while more {
                    let block = self.read_up_to(BLOCK)?;
                    more = block.len() == BLOCK && block[504] != 0;
                    extensions.push(block);
                }
                let size = self.pax_size.take().unwrap_or(size);
                self.copy = size.next_multiple_of(BLOCK as u64);
                match (!after_pax)
                    .then(|| old_gnu_sparse_as_pax(&header, &extensions, size))
                    .flatten()
                {
                    Some(converted) => self.pending = converted,
                    None => {
                        self.pending = header;
                        self.pending.extend(extensions.concat());
                    }
                }
            }
            _ => {
                let size = self.pax_size.take().unwrap_or(size);
                self.pending = header;
                self.copy = size.next_multiple_of(BLOCK as u64);
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for PaxRecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.at < self.pending.len() {
                let n = buf.len().min(self.pending.len() - self.at);
                buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
                self.at += n;
                return Ok(n);
            }
            if self.passthrough {
                return self.inner.read(buf);
            }
            if self.copy > 0 {
                let want = buf
                    .len()
                    .min(usize::try_from(self.copy).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                self.copy -= n as u64;
                if n == 0 {
                    self.passthrough = true;
                }
                return Ok(n);
            }
            self.next_header()?;
            if self.pending.is_empty() {
                return Ok(0);
            }
        }
    }
}

/// The size field of a header.
fn field_size(header: &[u8]) -> Option<u64> {
    numeric_field(&header[124..136])
}

/// A numeric header field: octal digits (space or NUL padded, empty for 0), or base-256 when
/// its high bit is set (GNU tar's form for values octal cannot hold); `None` when it is
/// neither or overflows 64 bits.
pub fn numeric_field(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut v: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let digits = std::str::from_utf8(field).ok()?;
    let digits = digits.trim_matches(|c| c == ' ' || c == '\0');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

/// Writes `size` (octal) into a header and recomputes its checksum.
fn set_size(header: &mut [u8], size: u64) {
    header[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// An old GNU sparse member's header (`S`), its map's extension blocks and the size of its
/// stored data, as the headers of a PAX 1.0 sparse member (a PAX header with the map's
/// format and the real size, a regular member whose data opens with the map); the stored
/// data follows unchanged. `None` when the map cannot be read: the tar crate judges it.
fn old_gnu_sparse_as_pax(header: &[u8], extensions: &[Vec<u8>], stored: u64) -> Option<Vec<u8>> {
    // Map entries: offset and length, 12 bytes each; one whose length is empty ends the map.
    let mut chunks = Vec::new();
    let mut take = |entries: &[u8]| -> Option<bool> {
        for entry in entries.chunks_exact(24) {
            if entry[12] == 0 {
                return Some(false);
            }
            chunks.push((numeric_field(&entry[..12])?, numeric_field(&entry[12..])?));
        }
        Some(true)
    };
    let mut more = take(&header[386..482])?;
    for block in extensions {
        if block.len() != BLOCK {
            return None;
        }
        if more {
            more = take(&block[..504])?;
        }
    }
    let real_size = numeric_field(&header[483..495])?;
    let mut records = record(b"GNU.sparse.major", b"1");
    records.extend(record(b"GNU.sparse.minor", b"0"));
    records.extend(record(
        b"GNU.sparse.realsize",
        real_size.to_string().as_bytes(),
    ));
    let mut pax = vec![0u8; BLOCK];
    pax[..14].copy_from_slice(b"././@PaxHeader");
    pax[100..108].copy_from_slice(b"0000644\0");
    pax[156] = b'x';
    pax[257..265].copy_from_slice(b"ustar\x0000");
    set_size(&mut pax, records.len() as u64);
    records.resize(records.len().next_multiple_of(BLOCK), 0);
    let mut map = format!("{}\n", chunks.len());
    for (offset, len) in &chunks {
        map.push_str(&format!("{offset}\n{len}\n"));
    }
    let mut map = map.into_bytes();
    map.resize(map.len().next_multiple_of(BLOCK), 0);
    let member_size = map.len() as u64 + stored;
    if member_size >= 1 << 33 {
        return None; // past what the octal size field holds
    }
    let mut member = header.to_vec();
    member[156] = b'0';
    set_size(&mut member, member_size);
    Some([pax, records, member, map].concat())
}

/// Splits PAX header data into its records by their length prefixes.
fn records(mut data: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let mut out = Vec::new();
    // GNU tar and the tar crate accept NUL padding after the last record.
    while !data.is_empty() && data.iter().any(|&b| b != 0) {
        let space = data.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return None;
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=')?;
        out.push((&record[..eq], &record[eq + 1..]));
        data = &data[len..];
    }
    Some(out)
}

/// One `LEN key=value\n` record, `LEN` counting its own digits.
fn record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} ").into_bytes();
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// Re-encodes PAX header data for the tar crate; with the `size` record it holds.
fn recode(data: &[u8]) -> Option<(Vec<u8>, Option<u64>)> {
    let mut out = Vec::with_capacity(data.len());
    let mut size = None;
    for (key, value) in records(data)? {
        if key == b"size" {
            size = Some(std::str::from_utf8(value).ok()?.parse().ok()?);
        }
        if key.contains(&b'\n') || value.contains(&b'\n') || key.starts_with(ESCAPED) {
            let mut escaped = ESCAPED.to_vec();
            escaped.extend_from_slice(hex(key).as_bytes());
            out.extend_from_slice(&record(&escaped, hex(value).as_bytes()));
        } else {
            out.extend_from_slice(&record(key, value));
        }
    }
    Some((out, size))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// What a member's PAX header says, records re-encoded by [`PaxRecoder`] decoded.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MemberPax {
    /// A `path` the tar crate could not read (it holds a newline).
    pub path: Option<Vec<u8>>,
    /// A `linkpath` the tar crate could not read.
    pub linkpath: Option<Vec<u8>>,
    /// `SCHILY.xattr.` records: name and value.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// A GNU sparse file's `GNU.sparse.*` records.
    pub sparse: Option<Sparse>,
    /// `uid`, which overrides the header's.
    pub uid: Option<u64>,
    /// `gid`, which overrides the header's.
    pub gid: Option<u64>,
    /// `SCHILY.devmajor` (libarchive and star write it for numbers ustar cannot hold).
    pub devmajor: Option<u64>,
    /// `SCHILY.devminor`.
    pub devminor: Option<u64>,
}

/// A GNU sparse file described in PAX records: formats 0.0 (`offset`/`numbytes` pairs), 0.1
/// (`map`) and 1.0 (the map opens the member's data).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sparse {
    /// The file's real size.
    pub size: u64,
    /// Its real name (0.1 and 1.0 store the member as `GNUSparseFile.N/NAME`).
    pub name: Option<Vec<u8>>,
    /// Data chunks, offset and length, as the records list them (0.x).
    chunks: Vec<(u64, u64)>,
    /// An offset waiting for its `numbytes` record (0.0).
    offset: Option<u64>,
    /// 1.0: the map is in the data.
    map_in_data: bool,
}

fn sparse_err(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed GNU sparse member: {what}"),
    )
}

fn number(text: &[u8]) -> io::Result<u64> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| sparse_err("not a number"))
}

impl Sparse {
    /// Applies one `GNU.sparse.` record (`key` without the prefix).
    fn record(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        match key {
            b"major" => self.map_in_data = number(value)? == 1,
            b"size" | b"realsize" => self.size = number(value)?,
            b"name" => self.name = Some(value.to_vec()),
            b"offset" => self.offset = Some(number(value)?),
            b"numbytes" => {
                let offset = self.offset.take().ok_or_else(|| sparse_err("numbytes"))?;
                self.chunks.push((offset, number(value)?));
            }
            b"map" => {
                let numbers = value
                    .split(|&b| b == b',')
                    .map(number)
                    .collect::<io::Result<Vec<u64>>>()?;
                if numbers.len() % 2 != 0 {
                    return Err(sparse_err("odd map"));
                }
                self.chunks = numbers.chunks(2).map(|p| (p[0], p[1])).collect();
            }
            _ => {}
        }
        Ok(())
    }

    /// The file of this map over `data`, the member's `stored` bytes (for 1.0 the map is read
    /// from their start first). The map must list data in order, inside the file, and account
    /// for every stored byte.
    pub fn open<R: Read>(self, mut data: R, stored: u64) -> io::Result<SparseReader<R>> {
        let mut chunks = self.chunks;
        let mut stored = stored;
        if self.map_in_data {
            // Decimal lines: the count, then offset and length per chunk, padded to a block.
            let mut text = Vec::new();
            let mut numbers = Vec::new();
            loop {
                let mut block = [0u8; BLOCK];
                data.read_exact(&mut block)
                    .map_err(|_| sparse_err("map cut short"))?;
                stored = stored
                    .checked_sub(BLOCK as u64)
                    .ok_or_else(|| sparse_err("map past the data"))?;
                text.extend_from_slice(&block);
                numbers.clear();
                let mut lines = text.split(|&b| b == b'\n');
                let complete = text.iter().filter(|&&b| b == b'\n').count();
                for line in lines.by_ref().take(complete) {
                    numbers.push(number(line)?);
                }
                let wanted = numbers
                    .first()
                    .map(|&n| n.saturating_mul(2).saturating_add(1));
                if wanted.is_some_and(|w| numbers.len() as u64 >= w) {
                    break;
                }
            }
            let count = numbers[0] as usize;
            chunks = numbers[1..1 + 2 * count]
                .chunks(2)
                .map(|p| (p[0], p[1]))
                .collect();
        }
        let mut end = 0u64;
        let mut total = 0u64;
        for &(offset, len) in &chunks {
            let chunk_end = offset.checked_add(len).ok_or_else(|| sparse_err("map"))?;
            if offset < end || chunk_end > self.size {
                return Err(sparse_err("chunks out of order or past the size"));
            }
            end = chunk_end;
            total += len;
        }
        if total != stored {
            return Err(sparse_err("map and data sizes differ"));
        }
        Ok(SparseReader {
            data,
            chunks,
            next: 0,
            pos: 0,
            size: self.size,
        })
    }
}

/// `error` about the member at `path` (the tar crate's errors do not name it).
pub fn named(path: &std::path::Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("/{}: {error}", path.display()))
}

/// A sparse file read back whole: zeros in the holes, the member's data in the chunks.
pub struct SparseReader<R> {
    data: R,
    chunks: Vec<(u64, u64)>,
    next: usize,
    pos: u64,
    size: u64,
}

impl<R> SparseReader<R> {
    /// The data chunks: offset and length.
    pub fn chunks(&self) -> &[(u64, u64)] {
        &self.chunks
    }

    /// Moves on to `to` without producing the zeros before it: everything from here to `to`
    /// must be hole.
    pub fn skip_hole(&mut self, to: u64) -> io::Result<()> {
        if to == self.pos {
            return Ok(());
        }
        while let Some(&(offset, len)) = self.chunks.get(self.next) {
            if self.pos < offset + len {
                break;
            }
            self.next += 1;
        }
        let until = self.chunks.get(self.next).map_or(self.size, |c| c.0);
        if to < self.pos || to > until {
            return Err(sparse_err("skip over data"));
        }
        self.pos = to;
        Ok(())
    }
}

impl<R: Read> Read for SparseReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(&(offset, len)) = self.chunks.get(self.next) {
            if self.pos < offset {
                break;
            }
            let left = offset + len - self.pos;
            if left == 0 {
                self.next += 1;
                continue;
            }
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = self.data.read(&mut buf[..want])?;
            if n == 0 && want > 0 {
                return Err(sparse_err("data cut short"));
            }
            self.pos += n as u64;
            return Ok(n);
        }
        let until = self.chunks.get(self.next).map_or(self.size, |c| c.0);
        let n = buf
            .len()
            .min(usize::try_from(until - self.pos).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.pos += n as u64;
        Ok(n)
    }
}

/// A PAX number: decimal digits only, as POSIX defines `uid`, `gid` and the like. An empty
/// value (which POSIX makes "no value") gives `None`.
fn pax_number(key: &[u8], value: &[u8]) -> io::Result<Option<u64>> {
    if value.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(value)
        .ok()
        .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "PAX record {}={:?} is not a number of at most 64 bits",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(value)
                ),
            )
        })
}

/// The records of a global PAX header (`g`), which apply to every member after it. Records
/// that name or size one member (`path`, `linkpath`, `size`, `GNU.sparse.*`) are refused:
/// applied to every member they would make no sense. So are extended attributes: POSIX
/// applies them to every later member, GNU tar 1.34 ignores them; either reading would
/// surprise someone, and neither may happen silently.
pub fn global_records(data: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed global PAX header");
    let mut out = Vec::new();
    for (key, value) in records(data).ok_or_else(malformed)? {
        if matches!(key, b"path" | b"linkpath" | b"size")
            || key.starts_with(b"GNU.sparse.")
            || key.starts_with(b"SCHILY.xattr.")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "global PAX record {} is not supported",
                    String::from_utf8_lossy(key)
                ),
            ));
        }
        out.push((key.to_vec(), value.to_vec()));
    }
    Ok(out)
}

impl MemberPax {
    /// Reads the PAX records of `entry`, after the `global` ones in force.
    pub fn of<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        global: &[(Vec<u8>, Vec<u8>)],
    ) -> io::Result<MemberPax> {
        let mut pax = MemberPax::default();
        for (key, value) in global {
            pax.apply(key, value.clone())?;
        }
        let Some(exts) = entry.pax_extensions()? else {
            return Ok(pax);
        };
        for ext in exts {
            let ext = ext?;
            let (key, value) = match ext.key_bytes().strip_prefix(ESCAPED) {
                Some(key) => {
                    let bad = || io::Error::other("malformed pax extension");
                    let key = unhex(key).ok_or_else(bad)?;
                    let value = unhex(ext.value_bytes()).ok_or_else(bad)?;
                    match key.as_slice() {
                        b"path" => pax.path = Some(value.clone()),
                        b"linkpath" => pax.linkpath = Some(value.clone()),
                        _ => {}
                    }
                    (key, value)
                }
                None => (ext.key_bytes().to_vec(), ext.value_bytes().to_vec()),
            };
            pax.apply(&key, value)?;
        }
        Ok(pax)
    }

    /// Applies one record; a later one of the same key wins, as in GNU tar.
    fn apply(&mut self, key: &[u8], value: Vec<u8>) -> io::Result<()> {
        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            self.xattrs.retain(|(n, _)| n != name);
            self.xattrs.push((name.to_vec(), value));
        } else if let Some(key) = key.strip_prefix(b"GNU.sparse.") {
            self.sparse
                .get_or_insert_with(Sparse::default)
                .record(key, &value)?;
        } else {
            let slot = match key {
                b"uid" => &mut self.uid,
                b"gid" => &mut self.gid,
                b"SCHILY.devmajor" => &mut self.devmajor,
                b"SCHILY.devminor" => &mut self.devminor,
                _ => return Ok(()),
            };
            *slot = pax_number(key, &value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_split_by_length_not_by_line() {
        let mut data = record(b"SCHILY.xattr.user.bin", b"a\nb\0c");
        data.extend_from_slice(&record(b"size", b"12"));
        let parsed = records(&data).unwrap();
        assert_eq!(
            parsed,
            vec![
                (b"SCHILY.xattr.user.bin".as_slice(), b"a\nb\0c".as_slice()),
                (b"size".as_slice(), b"12".as_slice()),
            ]
        );
        let (recoded, size) = recode(&data).unwrap();
        assert_eq!(size, Some(12));
        assert!(!recoded.split(|&b| b == b'\n').any(|l| l.contains(&b'\0')));
        assert_eq!(records(&recoded).unwrap().len(), 2);
        // A length that does not end at a newline is not PAX.
        assert!(records(b"5 a=b\n").is_none());
    }

    #[test]
    fn sizes_read_octal_and_base_256() {
        let mut header = [0u8; 512];
        header[124..136].copy_from_slice(b"00000001750\0");
        assert_eq!(field_size(&header), Some(1000));
        header[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(field_size(&header), Some(258));
    }

    #[test]
    fn sparse_maps_expand_and_bad_ones_are_refused() {
        let sparse = |map: &[u8], size: &[u8]| {
            let mut s = Sparse::default();
            s.record(b"size", size).unwrap();
            s.record(b"map", map).unwrap();
            s
        };
        let mut out = Vec::new();
        sparse(b"2,3,8,2", b"12")
            .open(&b"abcde"[..], 5)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"\0\0abc\0\0\0de\0\0");
        // 1.0: the map opens the data, padded to a block.
        let mut data = b"1\n4\n2\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"xy");
        let mut v1 = Sparse::default();
        v1.record(b"major", b"1").unwrap();
        v1.record(b"realsize", b"7").unwrap();
        let mut out = Vec::new();
        v1.open(&data[..], 514)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"\0\0\0\0xy\0");
        for (map, size, stored) in [
            (&b"8,2,2,3"[..], &b"12"[..], 5),
            (b"2,3,8,2", b"9", 5),
            (b"2,3,8,2", b"12", 6),
        ] {
            assert!(sparse(map, size).open(&b"abcdef"[..], stored).is_err());
        }
    }
}
