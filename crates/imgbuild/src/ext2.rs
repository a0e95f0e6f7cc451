//! The one place that calls libext2fs: a filesystem handle that frees itself on `Drop`.
//!
//! libext2fs owns the metadata — superblock, group descriptors, bitmaps, inode tables,
//! extended-attribute blocks and the journal — and writes it through its own block cache. The
//! builder owns the bytes of files, directories and block maps and writes them itself at the
//! blocks this handle hands out ([`Filesystem::allocate_run`]), in large sequential writes,
//! instead of block by block through the library's cache. The two never touch the same block:
//! a block is marked in the library's bitmap before the builder writes it.
//!
//! Every error names the operation and the path it was for (the image, or the file inside it
//! being written), plus libext2fs's own message.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::Once;

use ext2fs_sys as sys;

/// Block size of every image: the page size, which any kernel mounts.
pub const BLOCK_SIZE: u32 = 4096;
/// Blocks in the ext3 journal: the smallest jbd2 accepts; the image is mounted read-only.
pub const JOURNAL_BLOCKS: u32 = 1024;
/// On-disk inode size: room for nanosecond-free timestamps past 2038 and small in-inode xattrs.
pub const INODE_SIZE: u16 = 256;
/// `i_extra_isize` for [`INODE_SIZE`] inodes: the fields of `ext2_inode_large` past the first 128
/// bytes.
pub const INODE_EXTRA_ISIZE: u16 = (std::mem::size_of::<sys::ext2_inode_large>() - 128) as u16;

/// A failed libext2fs call.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {message}", path.display())]
pub struct Ext2Error {
    /// What was being done (`"allocate blocks for"`, `"write inode of"`, ...).
    pub op: &'static str,
    /// The image file, or the path inside the image being written.
    pub path: PathBuf,
    /// The `errcode_t` libext2fs returned.
    pub code: i64,
    /// libext2fs's message for `code`.
    pub message: String,
}

impl Ext2Error {
    /// True when the filesystem ran out of blocks or inodes (the image is too small).
    pub fn is_alloc_failure(&self) -> bool {
        [
            sys::EXT2_ET_BLOCK_ALLOC_FAIL,
            sys::EXT2_ET_INODE_ALLOC_FAIL,
            sys::EXT2_ET_DIR_NO_SPACE,
        ]
        .iter()
        .any(|&c| i64::from(c) == self.code)
    }
}

impl Ext2Error {
    /// True when a file's extended attributes do not fit in its inode and one attribute
    /// block: a matter of the attributes, not of the image's size.
    pub fn is_xattr_overflow(&self) -> bool {
        self.code == i64::from(sys::EXT2_ET_EA_NO_SPACE)
    }

    /// True when an inode would get more names than its 16-bit link count holds.
    pub fn is_link_overflow(&self) -> bool {
        self.op == LINK_OP && self.code == 0
    }
}

fn check(code: sys::errcode_t, op: &'static str, path: &Path) -> Result<(), Ext2Error> {
    if code == 0 {
        return Ok(());
    }
    Err(Ext2Error {
        op,
        path: path.to_path_buf(),
        code,
        message: error_message(code),
    })
}

fn error_message(code: sys::errcode_t) -> String {
    static TABLE: Once = Once::new();
    // SAFETY: registers libext2fs's static error table with com_err; Once makes it happen once.
    TABLE.call_once(|| unsafe { sys::initialize_ext2_error_table() });
    // SAFETY: error_message returns a pointer to a NUL-terminated string that is either static
    // or in a static buffer; we copy it out at once.
    let msg = unsafe { sys::error_message(code) };
    if msg.is_null() {
        return format!("libext2fs error {code}");
    }
    // SAFETY: non-null and NUL-terminated, per com_err's contract (checked above).
    unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned()
}

/// The large inode as the `struct ext2_inode *` the `_full` calls take (they use the size
/// argument to know how much of it to read or write).
fn inode_ptr(raw: &mut sys::ext2_inode_large) -> *mut sys::ext2_inode {
    (raw as *mut sys::ext2_inode_large).cast()
}

/// Which ext flavour the image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// Journal and block-mapped files (what the seed built).
    Ext3,
    /// ext3 plus extent-mapped files.
    Ext4,
}

impl FsKind {
    /// The last second the image's timestamps hold. ext3's inode times are signed 32-bit
    /// seconds (2038-01-19 03:14:07 UTC); ext4 extends them with the two epoch bits of the large
    /// inode's `_extra` fields (2446-05-10 22:38:55 UTC).
    pub fn max_time(self) -> u64 {
        let signed_32 = i32::MAX as u64;
        match self {
            FsKind::Ext3 => signed_32,
            FsKind::Ext4 => (3 << 32) | signed_32,
        }
    }
}

/// The most links an inode keeps count of (`EXT4_LINK_MAX`). A directory with more
/// subdirectories holds a link count of 1 under ext4's `dir_nlink` ("many"); ext3 has no such
/// escape.
pub const LINK_MAX: u32 = 65_000;

/// [`Ext2Error::op`] of a link count that would overflow its 16 bits.
const LINK_OP: &str = "link";

/// An inode time as ext4 stores it: the low 32 bits (read as signed), and the `_extra` word
/// whose two low bits extend them past 2038 (zero nanoseconds: reproducible).
fn inode_time(time: u64) -> (u32, u32) {
    let low = time as u32;
    let epoch = ((time as i64 - i64::from(low as i32)) >> 32) as u32 & 3;
    (low, epoch)
}

/// Size and shape of a new filesystem.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Total blocks of [`BLOCK_SIZE`].
    pub blocks: u64,
    /// Inodes to create room for (libext2fs rounds up to fill inode-table blocks).
    pub inodes: u32,
    /// ext3 or ext4.
    pub kind: FsKind,
}

/// An inode as the builder describes it; [`Filesystem::write_inode`] lays it out.
#[derive(Debug, Clone, Default)]
pub struct InodeRecord {
    /// File type and permission bits (`S_IFREG | 0o4755`, ...).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// atime, ctime and mtime, in seconds (at most [`FsKind::max_time`]).
    pub time: u64,
    /// Hard link count.
    pub links: u16,
    /// Blocks held, in [`BLOCK_SIZE`] units (data plus block-map blocks).
    pub blocks: u64,
    /// `i_flags` (`EXT2_INDEX_FL`, `EXT4_EXTENTS_FL`).
    pub flags: u32,
    /// `i_block`: block map, extent root, fast symlink target or device number.
    pub block: [u32; 15],
}

/// An open, writable filesystem inside an image file. Dropping it without [`Filesystem::close`]
/// releases the library's memory without writing the metadata.
pub struct Filesystem {
    fs: sys::ext2_filsys,
    image: PathBuf,
    /// Every timestamp the builder writes.
    time: u64,
}

/// The superblock fields the builder chooses for `geometry`; libext2fs derives the rest.
fn superblock_params(geometry: &Geometry) -> sys::ext2_super_block {
    // SAFETY: ext2_super_block is plain old data; all-zero is the "use defaults" value that
    // ext2fs_initialize expects for every field we do not set.
    let mut param: sys::ext2_super_block = unsafe { std::mem::zeroed() };
    param.s_blocks_count = geometry.blocks as u32;
    param.s_blocks_count_hi = (geometry.blocks >> 32) as u32;
    param.s_inodes_count = geometry.inodes;
    param.s_log_block_size = BLOCK_SIZE.trailing_zeros() - 10;
    param.s_rev_level = sys::EXT2_DYNAMIC_REV;
    param.s_inode_size = INODE_SIZE;
    // A read-only tool image: nothing is reserved for root.
    param.s_r_blocks_count = 0;
    param.s_feature_compat = sys::EXT2_FEATURE_COMPAT_EXT_ATTR | sys::EXT2_FEATURE_COMPAT_DIR_INDEX;
    param.s_feature_incompat = sys::EXT2_FEATURE_INCOMPAT_FILETYPE;
    param.s_feature_ro_compat =
        sys::EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER | sys::EXT2_FEATURE_RO_COMPAT_LARGE_FILE;
    if geometry.kind == FsKind::Ext4 {
        param.s_feature_incompat |= sys::EXT3_FEATURE_INCOMPAT_EXTENTS;
        param.s_feature_ro_compat |=
            sys::EXT4_FEATURE_RO_COMPAT_HUGE_FILE | sys::EXT4_FEATURE_RO_COMPAT_DIR_NLINK;
    }
    param
}

/// What libext2fs lays out for a geometry, before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Blocks of the filesystem (libext2fs drops a last group too small for its own metadata).
    pub blocks: u64,
    /// Blocks its metadata takes: superblocks and their backups, group descriptors, bitmaps,
    /// inode tables.
    pub metadata: u64,
    /// Blocks per group (fewer than 32,768 when the inodes would not fit in that many groups).
    pub blocks_per_group: u64,
    /// Inode-table blocks per group.
    pub inode_blocks_per_group: u64,
    /// Group descriptor blocks.
    pub descriptor_blocks: u64,
}

/// Asks libext2fs which layout it gives `geometry`: the same `ext2fs_initialize` the writer
/// calls, on `/dev/null`, then freed without writing.
pub fn layout_of(geometry: &Geometry) -> Result<Layout, Ext2Error> {
    let mut param = superblock_params(geometry);
    let name = c"/dev/null";
    let mut fs: sys::ext2_filsys = ptr::null_mut();
    // SAFETY: as in `Filesystem::create`; nothing is written to /dev/null before ext2fs_free.
    let rc = unsafe {
        sys::ext2fs_initialize(
            name.as_ptr(),
            sys::EXT2_FLAG_64BITS as i32,
            &mut param,
            sys::unix_io_manager,
            &mut fs,
        )
    };
    check(rc, "lay out a filesystem of", Path::new("/dev/null"))?;
    // SAFETY: `fs` is a valid handle and its superblock lives until ext2fs_free below.
    let layout = unsafe {
        let sb = &*(*fs).super_;
        let blocks = u64::from(sb.s_blocks_count) | u64::from(sb.s_blocks_count_hi) << 32;
        let free = u64::from(sb.s_free_blocks_count) | u64::from(sb.s_free_blocks_hi) << 32;
        Layout {
            blocks,
            metadata: blocks - free,
            blocks_per_group: u64::from(sb.s_blocks_per_group),
            inode_blocks_per_group: u64::from((*fs).inode_blocks_per_group),
            descriptor_blocks: (*fs).desc_blocks,
        }
    };
    // SAFETY: a live handle, not used after this; ext2fs_free writes nothing.
    unsafe { sys::ext2fs_free(fs) };
    Ok(layout)
}

impl Filesystem {
    /// Lays out a new filesystem in the existing file `image` (already sized by the caller).
    ///
    /// `time` becomes every superblock timestamp; nothing is taken from the clock.
    pub fn create(image: &Path, geometry: Geometry, time: u64) -> Result<Filesystem, Ext2Error> {
        let name = CString::new(image.as_os_str().as_bytes()).map_err(|_| Ext2Error {
            op: "create filesystem in",
            path: image.to_path_buf(),
            code: 0,
            message: "path contains a NUL byte".into(),
        })?;
        let mut param = superblock_params(&geometry);
        let mut fs: sys::ext2_filsys = ptr::null_mut();
        // SAFETY: `name` and `param` outlive the call; unix_io_manager is the library's static
        // manager for files; on success `fs` receives an owned handle that Drop frees.
        let rc = unsafe {
            sys::ext2fs_initialize(
                name.as_ptr(),
                (sys::EXT2_FLAG_RW | sys::EXT2_FLAG_64BITS) as i32,
                &mut param,
                sys::unix_io_manager,
                &mut fs,
            )
        };
        check(rc, "create filesystem in", image)?;
        let mut this = Filesystem {
            fs,
            image: image.to_path_buf(),
            time,
        };
        {
            let sb = this.super_mut();
            // Superblock times are unsigned, with a high byte past 2106.
            let (low, high) = (time as u32, (time >> 32) as u8);
            sb.s_mkfs_time = low;
            sb.s_mkfs_time_hi = high;
            sb.s_wtime = low;
            sb.s_wtime_hi = high;
            sb.s_mtime = 0;
            sb.s_lastcheck = low;
            sb.s_lastcheck_hi = high;
            sb.s_max_mnt_count = -1; // never force a check of a read-only image
            sb.s_def_hash_version = sys::EXT2_HASH_HALF_MD4 as u8;
            // One hash flavour for every platform (the library defaults to the host's char
            // signedness); dir_hash computes the unsigned one.
            sb.s_flags &= !sys::EXT2_FLAGS_SIGNED_HASH;
            sb.s_flags |= sys::EXT2_FLAGS_UNSIGNED_HASH;
        }
        // SAFETY: `this.fs` is a valid handle; `now` is a plain field the library reads instead
        // of time(2) when non-zero.
        unsafe { (*this.fs).now = time as i64 };
        // SAFETY: valid handle, freshly initialized, tables not yet placed.
        let rc = unsafe { sys::ext2fs_allocate_tables(this.fs) };
        check(rc, "place inode tables in", image)?;
        this.reserve_special_inodes();
        Ok(this)
    }

    fn super_mut(&mut self) -> &mut sys::ext2_super_block {
        // SAFETY: a valid handle always points at its superblock, which lives as long as the
        // handle; &mut self makes this the only reference.
        unsafe { &mut *(*self.fs).super_ }
    }

    fn super_ref(&self) -> &sys::ext2_super_block {
        // SAFETY: as in super_mut; shared borrow of self.
        unsafe { &*(*self.fs).super_ }
    }

    /// Marks inodes 1..first_ino (bad blocks, root, journal, ...) as used, as mke2fs does, so
    /// that [`Filesystem::new_inode`] starts handing out ordinary inodes.
    fn reserve_special_inodes(&mut self) {
        let first = self.super_ref().s_first_ino;
        for ino in 1..first {
            // SAFETY: valid handle; ino is within the inode count (reserved inodes always are).
            unsafe {
                if sys::ext2fs_test_inode_bitmap2((*self.fs).inode_map, ino) == 0 {
                    sys::ext2fs_inode_alloc_stats2(
                        self.fs,
                        ino,
                        1,
                        i32::from(ino == sys::EXT2_ROOT_INO),
                    );
                }
            }
        }
    }

    /// Byte offsets of the primary superblock and of every backup, as this filesystem lays them
    /// out: the superblock's own blocks per group (fewer than 32,768 when inodes are dense),
    /// the handle's group count, and the backup groups its features choose (what
    /// `ext2fs_bg_has_super` computes; that function is not in our bindings).
    pub fn superblock_offsets(&self) -> Vec<u64> {
        let sb = self.super_ref();
        let per_group = u64::from(sb.s_blocks_per_group);
        let first = u64::from(sb.s_first_data_block);
        let sparse = sb.s_feature_ro_compat & sys::EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER != 0;
        let sparse2 = sb.s_feature_compat & sys::EXT4_FEATURE_COMPAT_SPARSE_SUPER2 != 0;
        let backup_bgs = sb.s_backup_bgs;
        // SAFETY: a valid handle; group_desc_count is a plain field set by ext2fs_initialize.
        let groups = unsafe { (*self.fs).group_desc_count };
        let has_super = |g: u32| {
            if sparse2 {
                backup_bgs.contains(&g)
            } else {
                !sparse || has_super_backup(u64::from(g))
            }
        };
        let mut offsets = vec![1024];
        for group in (1..groups).filter(|&g| has_super(g)) {
            offsets.push((first + u64::from(group) * per_group) * u64::from(BLOCK_SIZE));
        }
        offsets
    }

    /// Total blocks in the filesystem.
    pub fn blocks_count(&self) -> u64 {
        let sb = self.super_ref();
        u64::from(sb.s_blocks_count) | (u64::from(sb.s_blocks_count_hi) << 32)
    }

    /// Allocates the next free inode (lowest number first, so the order of calls decides the
    /// numbers and the image is reproducible).
    pub fn new_inode(&mut self, is_dir: bool, path: &Path) -> Result<u32, Ext2Error> {
        let mut ino = 0;
        // SAFETY: valid handle; `ino` is a valid out-pointer; a null map means fs->inode_map.
        let rc = unsafe { sys::ext2fs_new_inode(self.fs, 0, 0, ptr::null_mut(), &mut ino) };
        check(rc, "allocate an inode for", path)?;
        // SAFETY: valid handle; `ino` was just found free.
        unsafe { sys::ext2fs_inode_alloc_stats2(self.fs, ino, 1, i32::from(is_dir)) };
        Ok(ino)
    }

    /// Allocates up to `want` contiguous free blocks at or after `goal` (wrapping to the start)
    /// and marks them used. Returns (first block, count), count ≥ 1.
    pub fn allocate_run(
        &mut self,
        goal: u64,
        want: u64,
        path: &Path,
    ) -> Result<(u64, u64), Ext2Error> {
        let total = self.blocks_count();
        let goal = if goal >= total { 0 } else { goal };
        let mut start = 0;
        // SAFETY: valid handle; `start` is a valid out-pointer; a null map means fs->block_map.
        let rc = unsafe { sys::ext2fs_new_block2(self.fs, goal, ptr::null_mut(), &mut start) };
        check(rc, "allocate blocks for", path)?;
        let last = (start + want.max(1) - 1).min(total - 1);
        let mut used = 0;
        // SAFETY: valid handle and block bitmap; start..=last lies within the filesystem.
        let rc = unsafe {
            sys::ext2fs_find_first_set_block_bitmap2((*self.fs).block_map, start, last, &mut used)
        };
        let end = if rc == 0 { used } else { last + 1 };
        let count = end - start;
        // SAFETY: valid handle; the range was just found free and lies within the filesystem.
        unsafe { sys::ext2fs_block_alloc_stats_range(self.fs, start, count as u32, 1) };
        Ok((start, count))
    }

    /// Writes inode `ino` as described by `record`.
    pub fn write_inode(
        &mut self,
        ino: u32,
        record: &InodeRecord,
        path: &Path,
    ) -> Result<(), Ext2Error> {
        // SAFETY: ext2_inode_large is plain old data; zero is the value of every field we do not
        // set (no generation, no project, no nanoseconds: reproducible).
        let mut raw: sys::ext2_inode_large = unsafe { std::mem::zeroed() };
        raw.i_mode = record.mode as u16;
        raw.i_uid = record.uid as u16;
        raw.i_gid = record.gid as u16;
        raw.osd2.linux2.l_i_uid_high = (record.uid >> 16) as u16;
        raw.osd2.linux2.l_i_gid_high = (record.gid >> 16) as u16;
        raw.i_size = record.size as u32;
        raw.i_size_high = (record.size >> 32) as u32;
        let (time, extra) = inode_time(record.time);
        raw.i_atime = time;
        raw.i_ctime = time;
        raw.i_mtime = time;
        raw.i_atime_extra = extra;
        raw.i_ctime_extra = extra;
        raw.i_mtime_extra = extra;
        raw.i_links_count = record.links;
        let sectors = record.blocks * u64::from(BLOCK_SIZE / 512);
        raw.i_blocks = sectors as u32;
        raw.osd2.linux2.l_i_blocks_hi = (sectors >> 32) as u16;
        raw.i_flags = record.flags;
        raw.i_block = record.block;
        raw.i_extra_isize = INODE_EXTRA_ISIZE;
        // SAFETY: valid handle; `raw` is a full ext2_inode_large and its size is passed.
        let rc = unsafe {
            sys::ext2fs_write_inode_full(
                self.fs,
                ino,
                inode_ptr(&mut raw),
                std::mem::size_of::<sys::ext2_inode_large>() as i32,
            )
        };
        check(rc, "write inode of", path)
    }

    /// Changes an inode the library or the builder already wrote.
    fn update_inode(
        &mut self,
        ino: u32,
        path: &Path,
        change: impl FnOnce(&mut sys::ext2_inode_large) -> Result<(), Ext2Error>,
    ) -> Result<(), Ext2Error> {
        // SAFETY: plain old data, filled by the read below.
        let mut raw: sys::ext2_inode_large = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<sys::ext2_inode_large>() as i32;
        // SAFETY: valid handle; `raw` has room for `size` bytes.
        let rc = unsafe { sys::ext2fs_read_inode_full(self.fs, ino, inode_ptr(&mut raw), size) };
        check(rc, "read inode of", path)?;
        change(&mut raw)?;
        // SAFETY: as above, writing back what was read with the change applied.
        let rc = unsafe { sys::ext2fs_write_inode_full(self.fs, ino, inode_ptr(&mut raw), size) };
        check(rc, "write inode of", path)
    }

    /// Adds one to the link count of an inode already written (a further hard link).
    pub fn add_link(&mut self, ino: u32, path: &Path) -> Result<(), Ext2Error> {
        self.update_inode(ino, path, |raw| {
            raw.i_links_count = raw.i_links_count.checked_add(1).ok_or(Ext2Error {
                op: LINK_OP,
                path: path.to_path_buf(),
                code: 0,
                message: "more names than an ext inode counts (65535)".into(),
            })?;
            Ok(())
        })
    }

    /// Stores extended attributes on inode `ino` (already written), in the inode when they fit
    /// and in an attribute block otherwise.
    pub fn set_xattrs(
        &mut self,
        ino: u32,
        xattrs: &[(Vec<u8>, Vec<u8>)],
        path: &Path,
    ) -> Result<(), Ext2Error> {
        if xattrs.is_empty() {
            return Ok(());
        }
        let mut handle: *mut sys::ext2_xattr_handle = ptr::null_mut();
        // SAFETY: valid handle; `handle` is a valid out-pointer, closed below on every path.
        let rc = unsafe { sys::ext2fs_xattrs_open(self.fs, ino, &mut handle) };
        check(rc, "open extended attributes of", path)?;
        let result = (|| {
            // SAFETY: `handle` is open; reading loads the inode's existing attributes so that
            // writing keeps them.
            let rc = unsafe { sys::ext2fs_xattrs_read(handle) };
            check(rc, "read extended attributes of", path)?;
            for (name, value) in xattrs {
                let key = CString::new(name.clone()).map_err(|_| Ext2Error {
                    op: "set extended attribute of",
                    path: path.to_path_buf(),
                    code: 0,
                    message: "attribute name contains a NUL byte".into(),
                })?;
                // SAFETY: `handle` is open; key is NUL-terminated; value points at value.len()
                // readable bytes; the library copies both.
                let rc = unsafe {
                    sys::ext2fs_xattr_set(handle, key.as_ptr(), value.as_ptr().cast(), value.len())
                };
                check(rc, "set extended attribute of", path)?;
            }
            // SAFETY: `handle` is open; writing stores the attributes set above.
            let rc = unsafe { sys::ext2fs_xattrs_write(handle) };
            check(rc, "write extended attributes of", path)
        })();
        // SAFETY: `handle` is open and not used after this.
        let rc = unsafe { sys::ext2fs_xattrs_close(&mut handle) };
        result?;
        check(rc, "close extended attributes of", path)
    }

    /// The htree hash of a directory entry name under `seed` (what the kernel computes to find
    /// the name in an indexed directory).
    pub fn dir_hash(&self, name: &[u8], seed: &[u32; 4]) -> u32 {
        let mut hash = 0;
        let mut minor = 0;
        // SAFETY: name points at name.len() bytes (≤ 255); seed at 4 words; out-pointers valid.
        // half-MD4 without a charset cannot fail.
        unsafe {
            sys::ext2fs_dirhash2(
                sys::EXT2_HASH_HALF_MD4_UNSIGNED as i32,
                name.as_ptr().cast(),
                name.len() as i32,
                ptr::null(),
                0,
                seed.as_ptr(),
                &mut hash,
                &mut minor,
            );
        }
        hash
    }

    /// Sets the volume UUID and the directory hash seed.
    pub fn set_identity(&mut self, uuid: [u8; 16], hash_seed: [u32; 4]) {
        let sb = self.super_mut();
        sb.s_uuid = uuid;
        sb.s_hash_seed = hash_seed;
    }

    /// Adds an ext3 journal of `blocks` blocks (not zeroed: the image file starts zeroed).
    pub fn add_journal(&mut self, blocks: u32) -> Result<(), Ext2Error> {
        let flags = sys::EXT2_MKJOURNAL_LAZYINIT | sys::EXT2_MKJOURNAL_NO_MNT_CHECK;
        // SAFETY: valid handle; goal ~0 lets the library choose the middle of the filesystem.
        let rc = unsafe { sys::ext2fs_add_journal_inode2(self.fs, blocks, !0, flags as i32) };
        let image = self.image.clone();
        check(rc, "add a journal to", &image)?;
        // The library stamps the journal inode from the clock when its "now" is 0.
        let (time, extra) = inode_time(self.time);
        self.update_inode(sys::EXT2_JOURNAL_INO, &image, |raw| {
            raw.i_atime = time;
            raw.i_ctime = time;
            raw.i_mtime = time;
            raw.i_crtime = time;
            raw.i_atime_extra = extra;
            raw.i_ctime_extra = extra;
            raw.i_mtime_extra = extra;
            raw.i_crtime_extra = extra;
            Ok(())
        })
    }

    /// Writes all metadata and closes the filesystem.
    ///
    /// Without fsync: the image is a build output under a temporary name, like a compiler's,
    /// and waiting for the disk buys nothing before it is renamed into place (mke2fs syncs
    /// because it writes devices). Write errors, ENOSPC included, still surface here.
    pub fn close(mut self) -> Result<(), Ext2Error> {
        let image = self.image.clone();
        let fs = std::mem::replace(&mut self.fs, ptr::null_mut());
        // SAFETY: `fs` is a valid handle that nothing else refers to any more (self.fs is null,
        // so Drop does nothing); ext2fs_close2 writes the metadata and frees it on success.
        let rc = unsafe { sys::ext2fs_close2(fs, sys::EXT2_FLAG_FLUSH_NO_SYNC as i32) };
        if rc != 0 {
            // SAFETY: on failure ext2fs_close2 leaves the handle allocated; free it once.
            unsafe { sys::ext2fs_free(fs) };
        }
        check(rc, "write filesystem metadata to", &image)
    }
}

impl Drop for Filesystem {
    fn drop(&mut self) {
        if !self.fs.is_null() {
            // SAFETY: a live handle that was not closed; ext2fs_free releases it without writing.
            unsafe { sys::ext2fs_free(self.fs) };
        }
    }
}

/// Whether group `g` holds a superblock backup under `sparse_super` (0, 1, powers of 3, 5, 7).
pub fn has_super_backup(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&base| {
        let mut n = base;
        while n < g {
            n *= base;
        }
        n == g
    })
}

/// Sets `s_wtime` of every superblock copy at `offsets` (from
/// [`Filesystem::superblock_offsets`]) to `time`.
///
/// libext2fs stamps the last write time from the clock when its notion of "now" is 0, which is
/// exactly the `SOURCE_DATE_EPOCH` default; the superblocks of ext3 images carry no checksum,
/// so the field is simply rewritten in place. The magic is checked as a last guard: a block
/// that is not a superblock is never written.
pub fn stamp_write_time(file: &File, offsets: &[u64], time: u64) -> std::io::Result<()> {
    const S_WTIME: u64 = 0x30;
    const S_MAGIC: usize = 0x38;
    const S_WTIME_HI: u64 = 0x274;
    for &offset in offsets {
        let mut sb = [0u8; 1024];
        file.read_exact_at(&mut sb, offset)?;
        if sb[S_MAGIC..S_MAGIC + 2] != 0xEF53u16.to_le_bytes() {
            return Err(std::io::Error::other(format!(
                "no superblock at byte {offset} of the image"
            )));
        }
        file.write_all_at(&(time as u32).to_le_bytes(), offset + S_WTIME)?;
        file.write_all_at(&[(time >> 32) as u8], offset + S_WTIME_HI)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inode_times_past_2038_carry_epoch_bits() {
        assert_eq!(inode_time(0), (0, 0));
        assert_eq!(inode_time(i32::MAX as u64), (i32::MAX as u32, 0));
        assert_eq!(inode_time(1 << 31), (1 << 31, 1));
        assert_eq!(inode_time(4_102_444_800), (4_102_444_800, 1)); // 2100-01-01
        assert_eq!(inode_time(1 << 32), (0, 1));
        assert_eq!(inode_time(FsKind::Ext4.max_time()), (i32::MAX as u32, 3));
    }

    #[test]
    fn backups_follow_sparse_super() {
        let with: Vec<u64> = (0..30).filter(|&g| has_super_backup(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27]);
    }
}
