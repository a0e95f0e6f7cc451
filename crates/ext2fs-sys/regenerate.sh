#!/usr/bin/env bash
# Regenerates src/bindings.rs from the system libext2fs headers (Debian: libext2fs-dev).
# Needs bindgen-cli (`cargo install bindgen-cli`) and libclang (Debian: libclang1-14 or later).
# Only the functions, types and constants crashcart-imgbuild uses are kept, so the committed
# file stays small enough to review by hand.
set -euo pipefail
cd "$(dirname "$0")"
cflags=$(pkg-config --cflags ext2fs com_err)
# libclang without its own resource dir (Debian's libclang1 alone) needs the compiler's
# freestanding headers (stddef.h) from gcc.
gcc_include=$(gcc -print-file-name=include 2>/dev/null || true)
[ -n "$gcc_include" ] && cflags="$cflags -isystem $gcc_include"
# Declare bitops.h's inline helpers as the plain exported functions they also are.
cflags="$cflags -DNO_INLINE_FUNCS"
bindgen wrapper.h \
    --output src/bindings.rs \
    --rust-target 1.85 \
    --no-doc-comments \
    --use-core \
    --default-enum-style consts \
    --allowlist-function 'ext2fs_(initialize|close_free|close2|free|allocate_tables|new_inode|new_block2|inode_alloc_stats2|block_alloc_stats_range|find_first_set_block_bitmap2|test_block_bitmap2|test_inode_bitmap2|write_inode_full|read_inode_full|dirhash2|add_journal_inode2|default_journal_size|xattrs_open|xattrs_read|xattrs_write|xattrs_close|xattr_set|free_mem|group_of_blk2|blocks_count|free_blocks_count)' \
    --allowlist-function 'error_message|initialize_ext2_error_table' \
    --allowlist-var 'unix_io_manager' \
    --allowlist-var 'EXT2_(FLAG_RW|FLAG_64BITS|FLAG_FLUSH_NO_SYNC|ROOT_INO|JOURNAL_INO|GOOD_OLD_FIRST_INO|FLAGS_UNSIGNED_HASH|HASH_HALF_MD4|HASH_HALF_MD4_UNSIGNED|INDEX_FL|FEATURE_.*|ET_BLOCK_ALLOC_FAIL|ET_INODE_ALLOC_FAIL|ET_DIR_NO_SPACE|ET_EA_NO_SPACE|ET_TOOSMALL|DYNAMIC_REV|MKJOURNAL_LAZYINIT|MKJOURNAL_NO_MNT_CHECK|NDIR_BLOCKS|N_BLOCKS|FLAGS_SIGNED_HASH)' \
    --allowlist-var 'EXT3_FEATURE_.*|EXT4_FEATURE_.*|EXT4_EXTENTS_FL' \
    --allowlist-type 'ext2_inode_large|ext2_super_block|struct_ext2_filsys' \
    -- $cflags
