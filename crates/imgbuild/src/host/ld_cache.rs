//! Reader for glibc's `/etc/ld.so.cache`, the soname → path table `ldconfig` writes and the
//! dynamic loader consults after `RUNPATH`.
//!
//! Only the "new" format (`glibc-ld.so.cache1.1`, glibc 2.32+ writes nothing else, older
//! ones append it after the libc5-era table) is read; see glibc's `sysdeps/generic/dl-cache.h`.
//! Entries pointing into `glibc-hwcaps/` subdirectories are ranked last: they are tuned for
//! this host's CPU, and the image may run on another one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
/// `magic[17] version[3] nlibs len_strings flags pad[3] extension_offset unused[3]`.
const NEW_HEADER_LEN: usize = 48;
/// `flags:i32 key:u32 value:u32 osversion:u32 hwcap:u64`.
const NEW_ENTRY_LEN: usize = 24;
/// `magic[11]` padded, then `nlibs:u32`.
const OLD_HEADER_LEN: usize = 16;
/// `flags:i32 key:u32 value:u32`.
const OLD_ENTRY_LEN: usize = 12;

/// The soname → candidate paths table, in the cache's order with hwcaps entries last.
#[derive(Debug, Default)]
pub struct LdCache {
    entries: HashMap<String, Vec<PathBuf>>,
}

impl LdCache {
    /// Reads the host's cache; a missing or unreadable cache is an empty one, as for the
    /// loader.
    pub fn load(path: &Path) -> LdCache {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| LdCache::parse(&bytes))
            .unwrap_or_default()
    }

    /// Parses a cache image; `None` when it is not in a format we know.
    pub fn parse(bytes: &[u8]) -> Option<LdCache> {
        let start = if bytes.starts_with(NEW_MAGIC) {
            0
        } else if bytes.starts_with(OLD_MAGIC) {
            let old_count = read_u32(bytes, OLD_MAGIC.len() + 1)? as usize;
            let end = OLD_HEADER_LEN.checked_add(old_count.checked_mul(OLD_ENTRY_LEN)?)?;
            // glibc aligns the new table to its own alignment (8, for the u64 hwcap).
            end.next_multiple_of(8)
        } else {
            return None;
        };
        let table = bytes.get(start..)?;
        if !table.starts_with(NEW_MAGIC) {
            return None;
        }
        let count = read_u32(table, 20)? as usize;
        let mut normal: HashMap<String, Vec<PathBuf>> = HashMap::new();
        let mut hwcaps: Vec<(String, PathBuf)> = Vec::new();
        for i in 0..count {
            let entry = NEW_HEADER_LEN + i * NEW_ENTRY_LEN;
            // String offsets are relative to the start of the new-format table.
            let key = read_str(table, read_u32(table, entry + 4)? as usize)?;
            let value = read_str(table, read_u32(table, entry + 8)? as usize)?;
            let hwcap = read_u64(table, entry + 16)?;
            let pair = (key.to_string(), PathBuf::from(value));
            if hwcap == 0 {
                normal.entry(pair.0).or_default().push(pair.1);
            } else {
                hwcaps.push(pair);
            }
        }
        for (key, value) in hwcaps {
            normal.entry(key).or_default().push(value);
        }
        Some(LdCache { entries: normal })
    }

    /// Candidate paths for `soname`, best first.
    pub fn lookup(&self, soname: &str) -> &[PathBuf] {
        self.entries.get(soname).map_or(&[], Vec::as_slice)
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn read_str(bytes: &[u8], at: usize) -> Option<&str> {
    let tail = bytes.get(at..)?;
    let len = tail.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&tail[..len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a new-format cache in memory.
    fn cache_image(entries: &[(&str, &str, u64)]) -> Vec<u8> {
        let strings_at = NEW_HEADER_LEN + entries.len() * NEW_ENTRY_LEN;
        let mut strings = Vec::new();
        let mut table = Vec::new();
        for (key, value, hwcap) in entries {
            let key_at = strings_at + strings.len();
            strings.extend_from_slice(key.as_bytes());
            strings.push(0);
            let value_at = strings_at + strings.len();
            strings.extend_from_slice(value.as_bytes());
            strings.push(0);
            table.extend_from_slice(&0x0303i32.to_ne_bytes());
            table.extend_from_slice(&(key_at as u32).to_ne_bytes());
            table.extend_from_slice(&(value_at as u32).to_ne_bytes());
            table.extend_from_slice(&0u32.to_ne_bytes());
            table.extend_from_slice(&hwcap.to_ne_bytes());
        }
        let mut image = NEW_MAGIC.to_vec();
        image.extend_from_slice(&(entries.len() as u32).to_ne_bytes());
        image.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
        image.resize(NEW_HEADER_LEN, 0);
        image.extend(table);
        image.extend(strings);
        image
    }

    #[test]
    fn hwcaps_entries_rank_last() {
        let image = cache_image(&[
            (
                "libz.so.1",
                "/usr/lib/glibc-hwcaps/x86-64-v3/libz.so.1",
                1 << 62,
            ),
            ("libz.so.1", "/usr/lib/libz.so.1", 0),
            ("libc.so.6", "/usr/lib/libc.so.6", 0),
        ]);
        let cache = LdCache::parse(&image).unwrap();
        assert_eq!(
            cache.lookup("libz.so.1"),
            [
                PathBuf::from("/usr/lib/libz.so.1"),
                PathBuf::from("/usr/lib/glibc-hwcaps/x86-64-v3/libz.so.1")
            ]
        );
        assert_eq!(
            cache.lookup("libc.so.6"),
            [PathBuf::from("/usr/lib/libc.so.6")]
        );
        assert!(cache.lookup("libnope.so").is_empty());
    }

    #[test]
    fn rejects_garbage() {
        assert!(LdCache::parse(b"not a cache at all").is_none());
        assert!(LdCache::parse(&NEW_MAGIC[..10]).is_none());
    }

    #[test]
    fn reads_this_hosts_cache_when_present() {
        let path = Path::new("/etc/ld.so.cache");
        if !path.exists() {
            return;
        }
        let cache = LdCache::parse(&std::fs::read(path).unwrap()).expect("host cache parses");
        assert!(
            cache.lookup("libc.so.6").iter().any(|p| p.exists()),
            "libc.so.6 is in every glibc host's cache"
        );
    }
}
