//! What ext2/3/4, as the builder writes it and Linux reads it, can hold exactly: device
//! numbers, owners, extended attribute names, values and the room for them, POSIX ACLs, file
//! sizes.
//!
//! Every check here answers "would this value come back unchanged?". A value that would not
//! (a device major cut to 12 bits, an owner that is `(uid_t)-1`, an attribute the kernel does
//! not list, an ACL entry id ext does not store) is refused by the writer, naming the entry,
//! rather than stored altered. The figures follow the kernel (`new_encode_dev`,
//! `ext4_acl_to_disk`, `xattr_permission`, `ext4_max_size`) and libext2fs 1.47
//! (`ext2fs_xattr_set`, which the writer calls). Names are checked in `tree`, link counts in
//! `ext2`.

use crate::ext2::{FsKind, BLOCK_SIZE, INODE_EXTRA_ISIZE, INODE_SIZE};

/// Largest device major ext stores: the kernel's `new_encode_dev` keeps 12 bits.
pub const DEV_MAJOR_MAX: u32 = (1 << 12) - 1;
/// Largest device minor ext stores: 20 bits.
pub const DEV_MINOR_MAX: u32 = (1 << 20) - 1;
/// `(uid_t)-1`: no file can belong to it (the kernel reads it as "invalid" and shows the
/// overflow id instead), so an input that says so cannot be written as it is.
pub const NO_ID: u32 = u32::MAX;

/// Room for attributes inside an inode as libext2fs counts it: what follows the large-inode
/// fields, less the attribute magic and the closing empty entry.
pub const IN_INODE_XATTR_SPACE: usize = INODE_SIZE as usize - 128 - INODE_EXTRA_ISIZE as usize - 8;
/// Room for attributes in the one attribute block a file may have: the block less its 32-byte
/// header and the closing empty entry. Without `ea_inode` (which the builder does not enable)
/// no value is stored anywhere else.
pub const XATTR_BLOCK_SPACE: usize = BLOCK_SIZE as usize - 32 - 4;

/// The name prefixes ext stores as an index (libext2fs's table, most specific first) and
/// whether Linux lists an attribute stored under it. Prefixes the kernel has no handler for
/// (`system.` other than the ACLs, `system.richacl`) would be written and never read back.
const NAMESPACES: &[(&[u8], bool)] = &[
    (b"gnu.", true),
    (b"system.posix_acl_default", true),
    (b"system.posix_acl_access", true),
    (b"system.richacl", false),
    (b"security.", true),
    (b"trusted.", true),
    (b"system.", false),
    (b"user.", true),
];

/// POSIX ACL xattr header and entry, as `getxattr` returns them (little-endian).
const ACL_XATTR_VERSION: u32 = 2;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

/// Why a file's extended attributes cannot be stored as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrProblem {
    /// Longer than the kernel's `XATTR_NAME_MAX` (libext2fs would cut the length to a byte).
    LongName,
    /// A NUL byte in the name.
    NulInName,
    /// A prefix Linux does not list (not `user.`, `trusted.`, `security.`, the ACLs, `gnu.`).
    Namespace,
    /// A `user.` attribute on something other than a regular file or a directory: the kernel
    /// lists it but never reads it back (`xattr_permission`).
    UserOnSpecial,
    /// A `system.posix_acl_*` value that is not an ACL ext stores exactly.
    Acl(&'static str),
    /// One attribute larger than the attribute block holds.
    TooBig {
        /// Bytes it takes (entry, name and value, padded).
        needs: usize,
    },
    /// Together they need more than the inode and one attribute block hold.
    TooMany {
        /// Bytes they take in all.
        needs: usize,
    },
}

impl std::fmt::Display for XattrProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XattrProblem::LongName => f.write_str("a name longer than 255 bytes"),
            XattrProblem::NulInName => f.write_str("a name with a NUL byte"),
            XattrProblem::Namespace => f.write_str(
                "not in a namespace Linux reads from ext (user., trusted., security., \
                 system.posix_acl_access, system.posix_acl_default, gnu.)",
            ),
            XattrProblem::UserOnSpecial => f.write_str(
                "a user. attribute on a symlink, device, FIFO or socket, which Linux never reads \
                 back",
            ),
            XattrProblem::Acl(what) => write!(f, "not a POSIX ACL ext can store: {what}"),
            XattrProblem::TooBig { needs } => write!(
                f,
                "{needs} bytes with its name, more than ext's xattr block holds \
                 ({XATTR_BLOCK_SPACE} bytes; large xattrs in inodes, ea_inode, are not supported)"
            ),
            XattrProblem::TooMany { needs } => write!(
                f,
                "the file's extended attributes take {needs} bytes, more than the inode \
                 ({IN_INODE_XATTR_SPACE} bytes) and ext's one xattr block \
                 ({XATTR_BLOCK_SPACE} bytes) hold"
            ),
        }
    }
}

/// The name as ext stores it: the namespace index's prefix taken off; `None` when no index
/// fits or Linux would not list it.
fn stored_name(name: &[u8]) -> Option<&[u8]> {
    let (prefix, listed) = NAMESPACES.iter().find(|(p, _)| name.starts_with(p))?;
    listed.then(|| &name[prefix.len()..])
}

/// Whether `name` is a POSIX ACL, whose value ext stores in its own shorter encoding.
fn is_acl(name: &[u8]) -> bool {
    name == b"system.posix_acl_access" || name == b"system.posix_acl_default"
}

/// The size of ACL `value` in ext's encoding (`ext4_acl_to_disk`), or why it has none that
/// gives `value` back: the kernel rebuilds the `getxattr` form with `ACL_UNDEFINED_ID` in the
/// entries that carry no id, so any other id there would not survive.
pub fn acl_disk_size(value: &[u8]) -> Result<usize, &'static str> {
    let Some((header, entries)) = value.split_first_chunk::<4>() else {
        return Err("shorter than its header");
    };
    if u32::from_le_bytes(*header) != ACL_XATTR_VERSION {
        return Err("not version 2");
    }
    if entries.is_empty() || entries.len() % 8 != 0 {
        return Err("not a whole number of entries");
    }
    let mut size = 4;
    for entry in entries.chunks_exact(8) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let id = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        size += match tag {
            ACL_USER | ACL_GROUP => 8,
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER if id == ACL_UNDEFINED_ID => 4,
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {
                return Err("an owner, group, mask or other entry with an id")
            }
            _ => return Err("an unknown entry tag"),
        };
    }
    Ok(size)
}

/// Bytes an attribute takes where it is stored: a 16-byte entry with the stored name, padded
/// to 4, and the value, padded to 4 (`EXT2_EXT_ATTR_LEN` + `EXT2_EXT_ATTR_SIZE`).
fn entry_bytes(stored_name_len: usize, value_len: usize) -> usize {
    (16 + stored_name_len).next_multiple_of(4) + value_len.next_multiple_of(4)
}

/// Checks that `xattrs` (sorted by name, the order the writer sets them in) come back from
/// the image unchanged. Returns the offending name (empty when it is their sum) and why not.
///
/// Placement follows `ext2fs_xattr_set`: each attribute goes into the inode while it fits
/// there, else into the block. `file_or_dir` says whether the inode is a regular file or a
/// directory (the only ones whose `user.` attributes Linux reads).
pub fn check_xattrs(
    xattrs: &[(Vec<u8>, Vec<u8>)],
    file_or_dir: bool,
) -> Result<(), (Vec<u8>, XattrProblem)> {
    let mut sizes = Vec::with_capacity(xattrs.len());
    for (name, value) in xattrs {
        let fail = |problem| Err((name.clone(), problem));
        if name.len() > 255 {
            return fail(XattrProblem::LongName);
        }
        if name.contains(&0) {
            return fail(XattrProblem::NulInName);
        }
        let Some(stored) = stored_name(name) else {
            return fail(XattrProblem::Namespace);
        };
        if !file_or_dir && name.starts_with(b"user.") {
            return fail(XattrProblem::UserOnSpecial);
        }
        let value_len = if is_acl(name) {
            match acl_disk_size(value) {
                Ok(n) => n,
                Err(what) => return fail(XattrProblem::Acl(what)),
            }
        } else {
            value.len()
        };
        let needs = entry_bytes(stored.len(), value_len);
        if needs > XATTR_BLOCK_SPACE {
            return fail(XattrProblem::TooBig { needs });
        }
        sizes.push(needs);
    }
    let (mut in_inode, mut in_block) = (IN_INODE_XATTR_SPACE, XATTR_BLOCK_SPACE);
    for &needs in &sizes {
        if needs <= in_inode {
            in_inode -= needs;
        } else if needs <= in_block {
            in_block -= needs;
        } else {
            let needs = sizes.iter().sum();
            return Err((Vec::new(), XattrProblem::TooMany { needs }));
        }
    }
    Ok(())
}

/// Whether `xattrs` (sorted by name) take an attribute block besides the inode, as
/// [`check_xattrs`] places them; attributes it refuses count as none (the build stops there).
pub fn needs_xattr_block(xattrs: &[(Vec<u8>, Vec<u8>)]) -> bool {
    let mut in_inode = IN_INODE_XATTR_SPACE;
    for (name, value) in xattrs {
        let Some(stored) = stored_name(name) else {
            continue;
        };
        let len = if is_acl(name) {
            acl_disk_size(value).unwrap_or(0)
        } else {
            value.len()
        };
        let needs = entry_bytes(stored.len(), len);
        if needs <= in_inode {
            in_inode -= needs;
        } else {
            return true;
        }
    }
    false
}

/// Why device number `major:minor` cannot be stored, if it cannot.
pub fn device_problem(major: u64, minor: u64) -> Option<String> {
    if major > u64::from(DEV_MAJOR_MAX) {
        Some(format!(
            "device major {major} is more than ext stores (at most {DEV_MAJOR_MAX}, 12 bits)"
        ))
    } else if minor > u64::from(DEV_MINOR_MAX) {
        Some(format!(
            "device minor {minor} is more than ext stores (at most {DEV_MINOR_MAX}, 20 bits)"
        ))
    } else {
        None
    }
}

/// The largest file the kernel reads whole from an image of `kind`. Past it, reads end early
/// and seeks fail: a larger file would look cut.
///
/// ext4 files are extent-mapped: `s_maxbytes` (`ext4_max_size` with `huge_file`), 2³² − 1
/// blocks, as extents start at a 32-bit block. ext3 files are block-mapped and the builder's
/// ext3 has no `huge_file`, so `s_bitmap_maxbytes` (`ext4_max_bitmap_size`, Linux 5.14 on)
/// applies: data and map blocks together at most 2³² − 1 sectors of 512 bytes.
pub fn max_file_size(kind: FsKind) -> u64 {
    let bs = u64::from(BLOCK_SIZE);
    match kind {
        FsKind::Ext4 => ((1u64 << 32) - 1) * bs,
        FsKind::Ext3 => {
            let ppb = bs / 4; // block numbers per map block
            let mut left = ((1u64 << 32) - 1) / (bs / 512);
            let mut blocks = left;
            // Map blocks needed to address `left` blocks: indirect, double, triple.
            left -= 12 + ppb;
            let mut meta = 1 + 1 + ppb;
            left -= ppb * ppb;
            meta += 1 + left.div_ceil(ppb) + left.div_ceil(ppb * ppb);
            blocks -= meta;
            blocks * bs
        }
    }
}

/// Why a regular file of `size` bytes cannot be stored in an image of `kind`, if it cannot.
pub fn file_size_problem(kind: FsKind, size: u64) -> Option<String> {
    let max = max_file_size(kind);
    (size > max).then(|| match kind {
        FsKind::Ext3 => format!(
            "{size} bytes is more than an ext3 file holds ({max} bytes); --fs ext4 holds up to {}",
            max_file_size(FsKind::Ext4)
        ),
        FsKind::Ext4 => format!("{size} bytes is more than an ext4 file holds ({max} bytes)"),
    })
}

/// Why owner `id` (`what` is "uid" or "gid") cannot be stored, if it cannot: ext holds 32 bits
/// (16 in the inode, 16 in `l_i_uid_high`/`l_i_gid_high`, read by every kernel mounting without
/// `nouid32`), and `(uid_t)-1` is no owner.
pub fn owner_problem(what: &str, id: u64) -> Option<String> {
    if id > u64::from(u32::MAX) {
        Some(format!("{what} {id} is more than ext stores (32 bits)"))
    } else if id == u64::from(NO_ID) {
        Some(format!(
            "{what} {id} is (uid_t)-1, which no Linux file can belong to"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for &(tag, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&7u16.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn acls_ext_stores_exactly_and_ones_it_does_not() {
        let u = ACL_UNDEFINED_ID;
        let good = acl(&[
            (ACL_USER_OBJ, u),
            (ACL_USER, 1000),
            (ACL_GROUP_OBJ, u),
            (ACL_OTHER, u),
        ]);
        assert_eq!(acl_disk_size(&good), Ok(4 + 4 + 8 + 4 + 4));
        assert!(acl_disk_size(&acl(&[])).is_err(), "no entries");
        assert!(
            acl_disk_size(&acl(&[(ACL_USER_OBJ, 0)])).is_err(),
            "id lost"
        );
        assert!(acl_disk_size(&acl(&[(0x40, u)])).is_err(), "unknown tag");
        assert!(acl_disk_size(&good[..good.len() - 1]).is_err(), "cut");
        assert!(acl_disk_size(b"\x01\0\0\0").is_err(), "version");
        assert!(acl_disk_size(b"ab").is_err());
    }

    #[test]
    fn attributes_fill_the_inode_then_one_block() {
        let x = |name: &str, len: usize| (name.as_bytes().to_vec(), vec![b'v'; len]);
        // The largest value of "user.a" the block holds: 4060 - (16 + 1 → 20).
        assert_eq!(check_xattrs(&[x("user.a", 4040)], true), Ok(()));
        assert!(matches!(
            check_xattrs(&[x("user.a", 4041)], true),
            Err((n, XattrProblem::TooBig { needs: 4064 })) if n == b"user.a"
        ));
        // 88 bytes in the inode, 4060 in the block: two of 2040 + 20 do not fit.
        assert!(matches!(
            check_xattrs(&[x("user.a", 2040), x("user.b", 2040)], true),
            Err((n, XattrProblem::TooMany { needs: 4120 })) if n.is_empty()
        ));
        assert_eq!(
            check_xattrs(&[x("user.a", 68), x("user.b", 4040)], true),
            Ok(())
        );
        assert!(!needs_xattr_block(&[x("user.a", 68)]));
        assert!(needs_xattr_block(&[x("user.a", 69)]));
        assert!(needs_xattr_block(&[x("user.a", 68), x("user.b", 0)]));
        assert!(matches!(
            check_xattrs(&[x("nope.a", 1)], true),
            Err((_, XattrProblem::Namespace))
        ));
        assert!(matches!(
            check_xattrs(&[x("user.a", 1)], false),
            Err((_, XattrProblem::UserOnSpecial))
        ));
        assert_eq!(check_xattrs(&[x("trusted.a", 1)], false), Ok(()));
        assert!(matches!(
            check_xattrs(&[x("system.foo", 1)], true),
            Err((_, XattrProblem::Namespace))
        ));
    }

    #[test]
    fn file_sizes_follow_the_kernel_s_maxbytes() {
        // ext4_max_size(12, huge_file): 0xffffffff blocks. ext4_max_bitmap_size(12, no
        // huge_file): 0x1fffffff blocks less 524,801 map blocks (checked: truncate on a kernel ext3 mount).
        assert_eq!(max_file_size(FsKind::Ext4), 17_592_186_040_320);
        assert_eq!(max_file_size(FsKind::Ext3), 536_346_110 * 4096);
        assert!(file_size_problem(FsKind::Ext3, 536_346_110 * 4096).is_none());
        assert!(file_size_problem(FsKind::Ext3, 536_346_110 * 4096 + 1).is_some());
        assert!(file_size_problem(FsKind::Ext4, 17_592_186_040_321).is_some());
    }

    #[test]
    fn device_numbers_and_owners_at_their_limits() {
        assert_eq!(device_problem(4095, 1_048_575), None);
        assert!(device_problem(4096, 0).is_some());
        assert!(device_problem(0, 1 << 20).is_some());
        assert_eq!(owner_problem("uid", u64::from(u32::MAX) - 1), None);
        assert!(owner_problem("uid", u64::from(u32::MAX)).is_some());
        assert!(owner_problem("gid", 1 << 32).is_some());
    }
}
