/* The libext2fs API surface crashcart-imgbuild uses; regenerate.sh feeds this to bindgen. */
#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>
#include <ext2fs/ext2_err.h>
#include <et/com_err.h>
