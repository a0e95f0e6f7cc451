//! crashcart-imgbuild: write crashcart's tool image through libext2fs, without root.

pub mod host;
pub mod nix;
