//! crashcart-imgbuild: write the tool image through libext2fs.
