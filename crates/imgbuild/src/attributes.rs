//! What an input says about an inode besides its type and contents: permission bits, owner
//! and extended attributes. The writer stores them, the digest covers them, the namespace
//! keeps them for directories; none of those needs the others to name them.

/// Extended attributes: (name, value) pairs sorted by name.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// Who the metadata of an inode belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Attributes {
    /// Permission bits, including setuid, setgid and sticky (`0o7777` mask).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: Xattrs,
}
